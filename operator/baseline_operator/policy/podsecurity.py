"""Pod Security Admission labels: levels, their order, and comparing label sets."""

from __future__ import annotations

from collections.abc import Mapping

PSA_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")
LEVEL_RANK = {"privileged": 0, "baseline": 1, "restricted": 2}


def level_key(mode: str) -> str:
    return f"{PSA_PREFIX}{mode}"


def version_key(mode: str) -> str:
    return f"{PSA_PREFIX}{mode}-version"


def rank(level: str | None) -> int:
    """How strict a level is; an absent or unknown level counts as privileged."""
    return LEVEL_RANK.get(level or "privileged", 0)


def merge_stricter(labels: Mapping[str, str], other: Mapping[str, str]) -> dict[str, str]:
    """`labels`, with each mode raised to `other`'s level (and version) where that is stricter."""
    merged = dict(labels)
    for mode in MODES:
        theirs = other.get(level_key(mode))
        if theirs is None or rank(theirs) <= rank(merged.get(level_key(mode))):
            continue
        merged[level_key(mode)] = theirs
        if version_key(mode) in other:
            merged[version_key(mode)] = other[version_key(mode)]
        else:
            merged.pop(version_key(mode), None)
    return merged


def enforce_raised(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Would applying `wanted` make the enforced level stricter (or pin a different version)?"""
    before, after = current.get(level_key("enforce")), wanted.get(level_key("enforce"))
    if after is None:
        return False
    if rank(after) > rank(before):
        return True
    return rank(after) == rank(before) and current.get(version_key("enforce")) != wanted.get(
        version_key("enforce")
    )
