"""NetworkPolicies rendered from spec.networkPolicy: exact bodies of every kind of policy."""

from __future__ import annotations

from typing import Any

import pytest

from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import by_name, make_baseline

LABELS = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}


def _policies(**network_policy: Any) -> dict[str, dict[str, Any]]:
    baseline = make_baseline("prod", networkPolicy=network_policy)
    return by_name(render_namespace_objects(baseline, "shop"))


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop", "labels": LABELS},
        "spec": _stated(spec),
    }


def _stated(spec: dict[str, Any]) -> dict[str, Any]:
    """Both rule lists are always stated (empty when there are none)."""
    return {"ingress": [], "egress": [], **spec}


@pytest.mark.parametrize(
    ("deny", "types"),
    [
        (["Ingress"], ["Ingress"]),
        (["Egress"], ["Egress"]),
        (["Egress", "Ingress"], ["Ingress", "Egress"]),
    ],
)
def test_default_deny_lists_the_denied_directions_ingress_first(
    deny: list[str], types: list[str]
) -> None:
    policies = _policies(defaultDeny=deny)
    assert policies == {
        "NetworkPolicy prod-default-deny": _policy(
            "prod-default-deny", {"podSelector": {}, "policyTypes": types}
        )
    }


def test_rules_added_to_a_generated_policy_show_as_drift() -> None:
    """An empty rule list is stated, so an allow-all rule someone adds is drift to repair."""
    from baseline_operator.policy.normalize import essence_digest

    body = _policies(defaultDeny=["Ingress"])["NetworkPolicy prod-default-deny"]
    as_served = {**body, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    widened = {**body, "spec": {**as_served["spec"], "ingress": [{}]}}
    assert essence_digest("NetworkPolicy", as_served) == essence_digest("NetworkPolicy", body)
    assert essence_digest("NetworkPolicy", widened) != essence_digest("NetworkPolicy", body)


def test_no_default_deny_without_directions() -> None:
    assert _policies(defaultDeny=[]) == {}
    assert _policies() == {}


def test_allow_dns_reaches_cluster_dns_on_port_53_udp_and_tcp() -> None:
    policies = _policies(allowDNS=True)
    assert policies["NetworkPolicy prod-allow-dns"] == _policy(
        "prod-allow-dns",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
    )


def test_allow_same_namespace_speaks_about_egress_only_where_egress_is_denied() -> None:
    ingress_only = _policies(allowSameNamespace=True, defaultDeny=["Ingress"])
    assert ingress_only["NetworkPolicy prod-allow-same-namespace"]["spec"] == _stated(
        {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        }
    )
    both = _policies(allowSameNamespace=True, defaultDeny=["Ingress", "Egress"])
    assert both["NetworkPolicy prod-allow-same-namespace"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
        "egress": [{"to": [{"podSelector": {}}]}],
    }


def test_ingress_rule_renders_peers_ports_and_pod_selector_in_wire_form() -> None:
    rule = {
        "name": "from-frontend",
        "podSelector": {"matchLabels": {"app": "api"}},
        "from": [
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]
                },
                "podSelector": {"matchExpressions": [{"key": "frontend", "operator": "Exists"}]},
            },
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            {"ipBlock": {"cidr": "192.168.0.0/24"}},
        ],
        "ports": [
            {"port": 3000},
            {"protocol": "UDP", "port": 8000, "endPort": 8100},
            {"port": "http"},
        ],
    }
    policies = _policies(ingress=[rule])
    assert policies["NetworkPolicy prod-ingress-from-frontend"] == _policy(
        "prod-ingress-from-frontend",
        {
            "podSelector": {"matchLabels": {"app": "api"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": "team", "operator": "In", "values": ["a", "b"]}
                                ]
                            },
                            "podSelector": {
                                "matchExpressions": [{"key": "frontend", "operator": "Exists"}]
                            },
                        },
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                        {"ipBlock": {"cidr": "192.168.0.0/24"}},
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": 3000},
                        {"protocol": "UDP", "port": 8000, "endPort": 8100},
                        {"protocol": "TCP", "port": "http"},
                    ],
                }
            ],
        },
    )


def test_egress_rule_renders_destinations_and_ports() -> None:
    rule = {
        "name": "to-database",
        "to": [{"podSelector": {"matchLabels": {"app": "database"}}}],
        "ports": [{"port": 5432}],
    }
    policies = _policies(egress=[rule])
    assert policies["NetworkPolicy prod-egress-to-database"]["spec"] == _stated(
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": {"app": "database"}}}],
                    "ports": [{"protocol": "TCP", "port": 5432}],
                }
            ],
        }
    )


def test_rules_without_peers_or_ports_omit_the_keys() -> None:
    policies = _policies(
        ingress=[{"name": "anyone", "ports": [{"port": 443}]}],
        egress=[{"name": "anywhere", "to": [{"namespaceSelector": {}}]}],
    )
    assert policies["NetworkPolicy prod-ingress-anyone"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 443}]}
    ]
    # An empty selector stays: {} means "all namespaces", not "no selector".
    assert policies["NetworkPolicy prod-egress-anywhere"]["spec"]["egress"] == [
        {"to": [{"namespaceSelector": {}}]}
    ]
    bare = _policies(ingress=[{"name": "open"}])
    assert bare["NetworkPolicy prod-ingress-open"]["spec"]["ingress"] == [{}]


def test_every_section_renders_its_own_policy() -> None:
    policies = _policies(
        defaultDeny=["Ingress", "Egress"],
        allowDNS=True,
        allowSameNamespace=True,
        ingress=[{"name": "a"}, {"name": "b"}],
        egress=[{"name": "a"}],
    )
    assert sorted(policies) == [
        "NetworkPolicy prod-allow-dns",
        "NetworkPolicy prod-allow-same-namespace",
        "NetworkPolicy prod-default-deny",
        "NetworkPolicy prod-egress-a",
        "NetworkPolicy prod-ingress-a",
        "NetworkPolicy prod-ingress-b",
    ]


def test_long_rule_names_are_shortened_stably_and_kept_apart() -> None:
    first, second = "x" * 62 + "a", "x" * 62 + "b"
    names = sorted(_policies(ingress=[{"name": first}, {"name": second}]))
    again = sorted(_policies(ingress=[{"name": first}, {"name": second}]))
    assert names == again
    assert len(set(names)) == 2
    assert all(len(name.removeprefix("NetworkPolicy ")) <= 63 for name in names)
