"""Shared builders for unit tests: baselines made from wire-format dicts, as users write them."""

from __future__ import annotations

from typing import Any

from baseline_operator.api.resource import SecurityBaseline, parse_baseline
from baseline_operator.policy.objects import DesiredObject


def baseline_body(name: str, **spec: Any) -> dict[str, Any]:
    """A SecurityBaseline body; `spec` uses the wire (camelCase) keys. Selects every namespace."""
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {}, **spec},
    }


def make_baseline(name: str, **spec: Any) -> SecurityBaseline:
    return parse_baseline(baseline_body(name, **spec))


def by_name(objects: list[DesiredObject] | tuple[DesiredObject, ...]) -> dict[str, dict[str, Any]]:
    """Bodies keyed by "Kind name", for asserting one object at a time."""
    return {f"{item.ref.kind.kind} {item.ref.name}": item.body for item in objects}
