"""A SecurityBaseline as the operator holds it: parsed once per change, with the reasons
it cannot be parsed, and the few fields read even from an invalid spec."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from baseline_operator.api.resource import (
    BaselineMeta,
    InvalidBaseline,
    SecurityBaseline,
    parse_spec,
)
from baseline_operator.api.spec import CleanupPolicy, Mode
from baseline_operator.policy.render import too_many_objects

# Set to a generation, it lets that generation remove the posture from more namespaces
# than the brake allows (or lets a deletion of a baseline that holds many go ahead).
ACKNOWLEDGE_REMOVAL = "security.baseline.dev/acknowledge-removal"


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain-dict copy of a (kopf) body."""
    copied: dict[str, Any] = json.loads(json.dumps(body, default=_unwrap))
    return copied


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass(frozen=True)
class BaselineEntry:
    """A SecurityBaseline as last seen, parsed (or the reasons it cannot be)."""

    name: str
    uid: str | None
    generation: int
    deleting: bool
    baseline: SecurityBaseline | None
    errors: tuple[str, ...]
    # Read even from an invalid spec, so that deleting an invalid baseline still cleans up
    # the way it asked.
    cleanup_policy: CleanupPolicy
    status: Mapping[str, Any] = field(compare=False, hash=False)
    # The generation whose removal of posture someone acknowledged (the annotation
    # ACKNOWLEDGE_REMOVAL), releasing the brake on mass removal for it.
    removal_acknowledged: int | None = None
    resource_version: str | None = field(default=None, compare=False, hash=False)

    @property
    def removal_acknowledged_now(self) -> bool:
        if self.removal_acknowledged is None:
            return False
        if self.deleting:
            # Deleting a custom resource raises its generation: an acknowledgement written
            # before the deletion names the one before.
            return self.removal_acknowledged in (self.generation, self.generation - 1)
        return self.removal_acknowledged == self.generation

    @property
    def valid(self) -> bool:
        return self.baseline is not None

    @property
    def audit_mode(self) -> bool:
        return self.baseline is not None and self.baseline.spec.mode is Mode.AUDIT

    @property
    def enforcing(self) -> bool:
        """Valid, in Enforce mode and not being deleted: the operator acts on its behalf."""
        return self.baseline is not None and not self.deleting and not self.audit_mode

    def leaving(self) -> BaselineEntry:
        """The same baseline, as its finalizer sees it: being deleted."""
        return dataclasses.replace(self, deleting=True)

    @property
    def trigger(self) -> tuple[Any, ...]:
        """What, when it changes, means every namespace must be looked at again."""
        return (self.uid, self.generation, self.deleting, self.removal_acknowledged_now)


def baseline_entry(body: Mapping[str, Any]) -> BaselineEntry:
    raw = plain(body)
    metadata = raw.get("metadata") or {}
    name = metadata.get("name", "")
    errors: tuple[str, ...] = ()
    baseline: SecurityBaseline | None = None
    try:
        spec = parse_spec(raw.get("spec"))
        baseline = SecurityBaseline(
            api_version="security.baseline.dev/v1alpha1",
            kind="SecurityBaseline",
            metadata=BaselineMeta(
                name=name, uid=metadata.get("uid"), generation=metadata.get("generation")
            ),
            spec=spec,
        )
    except InvalidBaseline as exc:
        errors = tuple(str(error) for error in exc.errors)
    except ValueError as exc:  # the name itself (the CRD normally refuses it)
        errors = (f"metadata.name: {exc}",)
    if baseline is not None and (excess := too_many_objects(baseline)) is not None:
        baseline, errors = None, (excess,)
    return BaselineEntry(
        name=name,
        uid=metadata.get("uid"),
        generation=int(metadata.get("generation") or 0),
        deleting=bool(metadata.get("deletionTimestamp")),
        baseline=baseline,
        errors=errors,
        cleanup_policy=(
            baseline.spec.cleanup_policy if baseline is not None else _lenient_cleanup(raw)
        ),
        status=raw.get("status") or {},
        removal_acknowledged=_acknowledged(metadata.get("annotations")),
        resource_version=metadata.get("resourceVersion"),
    )


def _acknowledged(annotations: Any) -> int | None:
    value = (annotations or {}).get(ACKNOWLEDGE_REMOVAL) if isinstance(annotations, dict) else None
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def _lenient_cleanup(raw: Mapping[str, Any]) -> CleanupPolicy:
    spec = raw.get("spec")
    value = spec.get("cleanupPolicy") if isinstance(spec, Mapping) else None
    return CleanupPolicy.ORPHAN if value == CleanupPolicy.ORPHAN.value else CleanupPolicy.DELETE
