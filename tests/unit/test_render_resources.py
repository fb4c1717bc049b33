"""The LimitRange and ResourceQuota rendered from spec.resources."""

from __future__ import annotations

from typing import Any

from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import by_name, make_baseline

META_LABELS = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}


def _objects(**resources: Any) -> dict[str, dict[str, Any]]:
    return by_name(render_namespace_objects(make_baseline("prod", resources=resources), "shop"))


def test_limit_range_holds_only_the_given_keys_as_strings() -> None:
    objects = _objects(
        limitRange={"defaultRequest": {"cpu": "250m", "memory": "256Mi"}, "default": {"cpu": 1}}
    )
    assert objects == {
        "LimitRange prod-limits": {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "prod-limits", "namespace": "shop", "labels": META_LABELS},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "1"},
                        "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
                    }
                ]
            },
        }
    }


def test_limit_range_with_every_key() -> None:
    objects = _objects(
        limitRange={
            "min": {"cpu": "10m"},
            "defaultRequest": {"cpu": "100m"},
            "default": {"cpu": "200m"},
            "max": {"cpu": 2},
            "maxLimitRequestRatio": {"cpu": 4},
        }
    )
    assert objects["LimitRange prod-limits"]["spec"]["limits"] == [
        {
            "type": "Container",
            "default": {"cpu": "200m"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "2"},
            "min": {"cpu": "10m"},
            "maxLimitRequestRatio": {"cpu": "4"},
        }
    ]


def test_quota_hard_limits_are_strings() -> None:
    objects = _objects(
        quota={"hard": {"pods": 50, "requests.cpu": "20", "requests.memory": "40Gi"}}
    )
    assert objects == {
        "ResourceQuota prod-quota": {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "prod-quota", "namespace": "shop", "labels": META_LABELS},
            "spec": {"hard": {"pods": "50", "requests.cpu": "20", "requests.memory": "40Gi"}},
        }
    }


def test_each_part_renders_on_its_own() -> None:
    assert list(_objects(quota={"hard": {"pods": "5"}})) == ["ResourceQuota prod-quota"]
    assert list(_objects(limitRange={"max": {"memory": "1Gi"}})) == ["LimitRange prod-limits"]
    assert _objects() == {}
