"""`kubectl get sbl` and `kubectl get sbl -o wide`: the columns, read off a real status.

The printer columns' JSONPaths are evaluated (the subset kubectl's columns use: dotted
fields and one `[?(@.type=="X")]` filter) over a baseline whose status comes from the
operator's own status builder, and each path is checked against the CRD's schema.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from baseline_operator.api.crd import build_crd, printer_columns
from baseline_operator.policy.status import BaselineFacts, Outcome, Result, build_status

Body = dict[str, Any]
_STEP = re.compile(r'\.([A-Za-z]+)(?:\[\?\(@\.([A-Za-z]+)=="([^"]+)"\)\])?')


def _evaluate(path: str, obj: Body) -> Any:
    """A printer column's JSONPath over an object; None where kubectl prints <none>."""
    value: Any = obj
    consumed = 0
    for match in _STEP.finditer(path):
        assert match.start() == consumed, f"unsupported JSONPath {path}"
        consumed = match.end()
        field, key, wanted = match.groups()
        value = value.get(field) if isinstance(value, dict) else None
        if key is not None:
            found = [item for item in value or [] if item.get(key) == wanted]
            value = found[0] if found else None
    assert consumed == len(path), f"unsupported JSONPath {path}"
    return value


def _schema_at(path: str) -> Body:
    """The schema node a column's path leads to (filters step into the list's items)."""
    node: Body = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for match in _STEP.finditer(path):
        field, key, _ = match.groups()
        if field == "metadata":
            return {"type": "object"}  # ObjectMeta: the server's own schema
        node = node["properties"][field]
        if key is not None:
            node = node["items"]
            assert key in node["properties"], path
    return node


def _baseline() -> Body:
    facts = BaselineFacts(
        3,
        audit_mode=False,
        outcomes={
            "shop": Outcome(Result.COMPLIANT, 3),
            "reports": Outcome(Result.COMPLIANT, 3),
            "batch": Outcome(Result.SUPERSEDED, 3, "Superseded", "LimitRange held by org"),
            "payments": Outcome(Result.CONFLICTED, 3, "Conflicted", "NetworkPolicy exists"),
        },
    )
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": "production", "generation": 3, "creationTimestamp": "2026-01-01"},
        "spec": {"namespaceSelector": {}, "mode": "Enforce", "priority": 100},
        "status": build_status(facts, None, "2026-01-01T00:00:00Z"),
    }


def _columns(wide: bool) -> dict[str, Any]:
    obj = _baseline()
    return {
        column["name"]: _evaluate(column["jsonPath"], obj)
        for column in printer_columns()
        if wide or column.get("priority", 0) == 0
    }


def test_kubectl_get_shows_mode_counts_and_ready() -> None:
    assert _columns(wide=False) == {
        "Mode": "Enforce",
        "Selected": 4,
        "Compliant": 2,  # a superseded namespace is counted apart
        "Ready": "False",
        "Age": "2026-01-01",
    }


def test_wide_adds_priority_conflicted_and_the_reason_of_ready() -> None:
    assert _columns(wide=True) == {
        "Mode": "Enforce",
        "Priority": 100,
        "Selected": 4,
        "Compliant": 2,  # a superseded namespace is counted apart
        "Conflicted": 1,
        "Ready": "False",
        "Reason": "Conflicted",
        "Age": "2026-01-01",
    }


def test_the_crd_carries_these_columns() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["additionalPrinterColumns"] == printer_columns()


@pytest.mark.parametrize("column", printer_columns(), ids=lambda column: column["name"])
def test_each_column_reads_a_field_of_the_schema_with_its_type(column: Body) -> None:
    node = _schema_at(column["jsonPath"])
    if column["type"] == "date":
        assert column["jsonPath"] == ".metadata.creationTimestamp"
    else:
        assert node["type"] == column["type"], (column, node)
