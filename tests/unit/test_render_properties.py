"""Properties of rendering and layering over generated valid baselines."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import BASELINE_KEY, MANAGED_BY_KEY, MANAGED_BY_VALUE
from baseline_operator.policy.objects import Ownership
from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import baseline_body

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# DNS labels of every length up to the limit, with the longest ones well represented.
dns_labels = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9][-a-z0-9]{58,61}[a-z0-9]", fullmatch=True),
)
# Few names for what two baselines may both want, so that contests happen.
shared_names = st.sampled_from(["app-sa", "worker", "db", "cache"])
namespaces = st.sampled_from(["shop", "team-b", "n" * 63])
label_values = st.from_regex(r"([a-z0-9][-a-z0-9_.]{0,10}[a-z0-9])?", fullmatch=True)
selectors = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(st.sampled_from(["app", "tier", "team"]), label_values),
        "matchExpressions": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "key": st.sampled_from(["app", "example.com/role"]),
                        "operator": st.sampled_from(["In", "NotIn"]),
                        "values": st.lists(label_values, min_size=1, max_size=3),
                    }
                ),
                st.fixed_dictionaries(
                    {
                        "key": st.sampled_from(["app", "example.com/role"]),
                        "operator": st.sampled_from(["Exists", "DoesNotExist"]),
                    }
                ),
            ),
            max_size=2,
        ),
    },
)
peers = st.one_of(
    st.fixed_dictionaries({"podSelector": selectors}, optional={"namespaceSelector": selectors}),
    st.fixed_dictionaries({"namespaceSelector": selectors}),
    st.fixed_dictionaries({"ipBlock": st.just({"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]})}),
)
ports = st.one_of(
    st.fixed_dictionaries(
        {"port": st.integers(1, 65535)}, optional={"protocol": st.sampled_from(["TCP", "UDP"])}
    ),
    st.integers(1, 60000).map(lambda port: {"port": port, "endPort": port + 100}),
    st.just({"port": "http"}),
    st.just({"protocol": "UDP"}),
)


def _rules(peer_key: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    rule = st.fixed_dictionaries(
        {"name": dns_labels},
        optional={
            peer_key: st.lists(peers, max_size=2),
            "ports": st.lists(ports, max_size=2),
            "podSelector": selectors,
        },
    )
    return st.lists(rule, max_size=3, unique_by=lambda r: r["name"])


subjects = st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(["User", "Group"]), "name": dns_labels}),
    st.fixed_dictionaries(
        {"kind": st.just("ServiceAccount"), "name": dns_labels},
        optional={"namespace": dns_labels},
    ),
)
policy_rules = st.lists(
    st.fixed_dictionaries(
        {
            "apiGroups": st.sampled_from([[""], ["apps"], ["", "batch"]]),
            "resources": st.sampled_from([["pods"], ["configmaps", "pods/log"]]),
            "verbs": st.sampled_from([["get"], ["get", "list", "watch"]]),
        },
        optional={"resourceNames": st.lists(dns_labels, max_size=2)},
    ),
    max_size=2,
)
service_accounts = st.lists(
    st.fixed_dictionaries(
        {"name": st.one_of(shared_names, dns_labels)},
        optional={
            "automountServiceAccountToken": st.booleans(),
            "annotations": st.dictionaries(st.just("example.com/identity"), st.text(max_size=20)),
            "rules": policy_rules,
        },
    ),
    max_size=3,
    unique_by=lambda account: account["name"],
)
rbac = st.fixed_dictionaries(
    {},
    optional={
        "defaultServiceAccount": st.fixed_dictionaries(
            {}, optional={"automountServiceAccountToken": st.booleans()}
        ),
        "serviceAccounts": service_accounts,
        "admins": st.lists(subjects, max_size=2),
        "deployers": st.lists(subjects, max_size=2),
        "viewers": st.lists(subjects, max_size=2),
    },
)
external_secrets = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.one_of(shared_names, dns_labels),
            "secretStoreRef": st.fixed_dictionaries(
                {"name": st.just("vault")},
                optional={"kind": st.sampled_from(["SecretStore", "ClusterSecretStore"])},
            ),
            "data": st.just(
                [{"secretKey": "password", "remoteRef": {"key": "{namespace}/db/password"}}]
            ),
        },
        optional={"refreshInterval": st.sampled_from(["1h", "15m"])},
    ),
    max_size=2,
    unique_by=lambda secret: str(secret["name"]),
)
cpu = st.integers(1, 8)
resources = st.fixed_dictionaries(
    {},
    optional={
        "limitRange": st.one_of(
            cpu.map(lambda n: {"defaultRequest": {"cpu": f"{n * 100}m"}, "default": {"cpu": n}}),
            st.just({"max": {"memory": "1Gi"}}),
        ),
        "quota": st.dictionaries(
            st.sampled_from(["pods", "requests.cpu", "requests.memory"]),
            st.one_of(st.integers(0, 1000), st.just("40Gi")),
            min_size=1,
        ).map(lambda hard: {"hard": hard}),
    },
)
levels = st.sampled_from(["privileged", "baseline", "restricted"])
pod_security = st.fixed_dictionaries(
    {},
    optional={
        "enforce": levels,
        "audit": levels,
        "warn": levels,
    },
).flatmap(
    lambda chosen: st.fixed_dictionaries(
        {key: st.just(value) for key, value in chosen.items()},
        optional={f"{mode}Version": st.sampled_from(["latest", "v1.29"]) for mode in chosen},
    )
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(-2, 2),
        "podSecurity": pod_security,
        "networkPolicy": st.fixed_dictionaries(
            {},
            optional={
                "defaultDeny": st.sampled_from(
                    [[], ["Ingress"], ["Egress"], ["Egress", "Ingress"]]
                ),
                "allowDNS": st.booleans(),
                "allowSameNamespace": st.booleans(),
                "ingress": _rules("from"),
                "egress": _rules("to"),
            },
        ),
        "rbac": rbac,
        "externalSecrets": external_secrets,
        "resources": resources,
    },
)
baseline_bodies = st.builds(lambda name, spec: baseline_body(name, **spec), dns_labels, specs)


@settings(max_examples=150)
@given(body=baseline_bodies, namespace=namespaces)
def test_rendering_is_deterministic(body: dict[str, Any], namespace: str) -> None:
    first = render_namespace_objects(parse_baseline(body), namespace)
    second = render_namespace_objects(parse_baseline(body), namespace)
    assert first == second
    assert [item.body for item in first] == [item.body for item in second]


@settings(max_examples=150)
@given(body=baseline_bodies, namespace=namespaces)
def test_every_object_carries_both_managed_labels(body: dict[str, Any], namespace: str) -> None:
    baseline = parse_baseline(body)
    for item in render_namespace_objects(baseline, namespace):
        assert item.ownership is Ownership.OBJECT
        labels = item.body["metadata"]["labels"]
        assert labels[MANAGED_BY_KEY] == MANAGED_BY_VALUE
        assert labels[BASELINE_KEY] == baseline.name
        assert item.body["metadata"]["namespace"] == namespace


@settings(max_examples=150)
@given(body=baseline_bodies, namespace=namespaces)
def test_every_name_is_a_dns_label_and_unique(body: dict[str, Any], namespace: str) -> None:
    objects = render_namespace_objects(parse_baseline(body), namespace)
    for item in objects:
        if item.ref.kind.kind == "ExternalSecret":
            continue  # user-named: a DNS subdomain the spec gives, kept as it is
        assert len(item.ref.name) <= 63
        if item.ref.kind.kind in ("Role", "RoleBinding", "NetworkPolicy"):
            # <baseline>-sa.<account>: a DNS subdomain, whose dot no baseline name holds.
            assert DNS_SUBDOMAIN.fullmatch(item.ref.name), item.ref.name
        else:
            assert DNS_LABEL.fullmatch(item.ref.name), item.ref.name
    refs = [item.ref for item in objects]
    assert len(refs) == len(set(refs))


@settings(max_examples=100)
@given(
    bodies=st.lists(
        baseline_bodies, min_size=1, max_size=4, unique_by=lambda b: b["metadata"]["name"]
    ),
    namespace=namespaces,
    data=st.data(),
)
def test_the_plan_does_not_depend_on_input_order(
    bodies: list[dict[str, Any]], namespace: str, data: st.DataObject
) -> None:
    baselines = [parse_baseline(body) for body in bodies]
    shuffled = data.draw(st.permutations(baselines))
    plan = plan_namespace(namespace, baselines)
    again = plan_namespace(namespace, shuffled)
    assert again == plan
    assert [item.body for item in again.objects] == [item.body for item in plan.objects]
    # One object per ref, whatever the contests.
    refs = [item.ref for item in plan.objects]
    assert refs == sorted(set(refs))
