"""render_namespace_objects as a whole: order, metadata, ownership, empty sections."""

from __future__ import annotations

from pathlib import Path

import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.names import managed_labels
from baseline_operator.policy.objects import ObjectRef, Ownership
from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import make_baseline

PRODUCTION = Path(__file__).parents[2] / "manifests/examples/production.yaml"


def _production() -> object:
    return yaml.safe_load(PRODUCTION.read_text())


def test_the_production_example_renders_every_section_sorted_by_ref() -> None:
    baseline = parse_baseline(_production())
    objects = render_namespace_objects(baseline, "shop")
    assert [str(item.ref) for item in objects] == [
        "LimitRange shop/production-limits",
        "ResourceQuota shop/production-quota",
        "ServiceAccount shop/app-sa",
        "ExternalSecret shop/db-credentials",
        "NetworkPolicy shop/production-allow-dns",
        "NetworkPolicy shop/production-allow-same-namespace",
        "NetworkPolicy shop/production-default-deny",
        "NetworkPolicy shop/production-egress-to-database",
        "NetworkPolicy shop/production-ingress-from-frontend",
        "Role shop/production-deployer",
        "Role shop/production-sa.app-sa",
        "RoleBinding shop/production-admins",
        "RoleBinding shop/production-deployers",
        "RoleBinding shop/production-sa.app-sa",
        "RoleBinding shop/production-viewers",
    ]
    assert [item.ref for item in objects] == sorted(item.ref for item in objects)


def test_every_object_is_owned_labelled_and_has_nothing_else_in_metadata() -> None:
    objects = render_namespace_objects(parse_baseline(_production()), "shop")
    for item in objects:
        assert item.ownership is Ownership.OBJECT
        assert item.baseline == "production"
        assert item.ref == ObjectRef.of(item.body)
        assert item.body["metadata"] == {
            "name": item.ref.name,
            "namespace": "shop",
            "labels": managed_labels("production"),
        }


def test_argo_cd_tracking_on_the_baseline_is_not_copied() -> None:
    body = _production()
    assert isinstance(body, dict)
    body["metadata"]["labels"] = {"app.kubernetes.io/instance": "platform"}
    body["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "platform:x"}
    for item in render_namespace_objects(parse_baseline(body), "shop"):
        assert item.body["metadata"]["labels"] == managed_labels("production")
        assert "annotations" not in item.body["metadata"]


def test_bodies_share_no_mutable_parts() -> None:
    baseline = make_baseline("prod", networkPolicy={"allowDNS": True, "defaultDeny": ["Egress"]})
    first = render_namespace_objects(baseline, "a")
    first[0].body["metadata"]["labels"]["extra"] = "x"
    first[0].body["spec"]["podSelector"]["matchLabels"] = {"x": "y"}
    second = render_namespace_objects(baseline, "a")
    assert "extra" not in second[0].body["metadata"]["labels"]
    assert second[0].body["spec"]["podSelector"] == {}
    assert "extra" not in first[1].body["metadata"]["labels"]


def test_a_baseline_with_no_namespaced_sections_renders_nothing() -> None:
    baseline = make_baseline(
        "psa-only",
        podSecurity={"enforce": "restricted"},
        networkPolicy={},
        rbac={},
        externalSecrets=[],
        resources={},
        admission={"denyPrivileged": True},
    )
    assert render_namespace_objects(baseline, "shop") == []
