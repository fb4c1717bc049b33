"""NetworkPolicies of one baseline: a default deny and explicit allow rules, one policy each.

Bodies are returned without namespace and labels; `policy.render` stamps those.
Every policy is its own object named after the baseline, so policies of layered
baselines add up the way Kubernetes combines NetworkPolicies (a union of allows).
"""

from __future__ import annotations

from typing import Any

from baseline_operator.api.spec import (
    EgressRule,
    IngressRule,
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPeer,
    NetworkPolicySection,
    NetworkPort,
    PolicyType,
)
from baseline_operator.policy.names import object_name
from baseline_operator.policy.objects import NETWORK_POLICY, Body


def _cluster_dns() -> dict[str, Any]:
    """Egress to the cluster DNS, built afresh each time: bodies share no mutable parts."""
    return {
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


def render_network_policies(baseline: str, section: NetworkPolicySection | None) -> list[Body]:
    if section is None:
        return []
    denied = [kind.value for kind in PolicyType if kind in section.default_deny]
    policies: list[Body] = []
    if denied:
        policies.append(_policy(baseline, "default-deny", None, denied))
    if section.allow_dns:
        policies.append(
            _policy(
                baseline,
                "allow-dns",
                None,
                ["Egress"],
                egress=[_cluster_dns()],
            )
        )
    if section.allow_same_namespace:
        policies.append(_same_namespace(baseline, egress_denied="Egress" in denied))
    policies.extend(_ingress(baseline, rule) for rule in section.ingress)
    policies.extend(_egress(baseline, rule) for rule in section.egress)
    return policies


def _same_namespace(baseline: str, *, egress_denied: bool) -> Body:
    # An Egress-typed policy isolates the egress of every pod it selects, so the
    # same-namespace allowance only speaks about egress where egress is denied anyway.
    if not egress_denied:
        return _policy(
            baseline,
            "allow-same-namespace",
            None,
            ["Ingress"],
            ingress=[{"from": [{"podSelector": {}}]}],
        )
    return _policy(
        baseline,
        "allow-same-namespace",
        None,
        ["Ingress", "Egress"],
        ingress=[{"from": [{"podSelector": {}}]}],
        egress=[{"to": [{"podSelector": {}}]}],
    )


def _ingress(baseline: str, rule: IngressRule) -> Body:
    allowed: dict[str, Any] = {}
    if rule.from_:
        allowed["from"] = [peer_wire(peer) for peer in rule.from_]
    if rule.ports:
        allowed["ports"] = [port_wire(port) for port in rule.ports]
    return _policy(
        baseline, f"ingress-{rule.name}", rule.pod_selector, ["Ingress"], ingress=[allowed]
    )


def _egress(baseline: str, rule: EgressRule) -> Body:
    allowed: dict[str, Any] = {}
    if rule.to:
        allowed["to"] = [peer_wire(peer) for peer in rule.to]
    if rule.ports:
        allowed["ports"] = [port_wire(port) for port in rule.ports]
    return _policy(baseline, f"egress-{rule.name}", rule.pod_selector, ["Egress"], egress=[allowed])


def _policy(
    baseline: str,
    suffix: str,
    pod_selector: LabelSelector | None,
    policy_types: list[str],
    **rules: list[dict[str, Any]],
) -> Body:
    spec: dict[str, Any] = {
        "podSelector": {} if pod_selector is None else selector_wire(pod_selector),
        "policyTypes": policy_types,
        # Both rule lists are always stated, empty or not: a rule someone adds to a generated
        # policy widens access, and only a field the operator states is one it owns, checks
        # for drift and takes back on apply.
        "ingress": rules.get("ingress", []),
        "egress": rules.get("egress", []),
    }
    return {
        "apiVersion": NETWORK_POLICY.api_version,
        "kind": NETWORK_POLICY.kind,
        "metadata": {"name": object_name(baseline, suffix)},
        "spec": spec,
    }


def selector_wire(selector: LabelSelector) -> dict[str, Any]:
    """A label selector as the API server returns it: empty parts left out ({} selects all)."""
    wire: dict[str, Any] = {}
    if selector.match_labels:
        wire["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        wire["matchExpressions"] = [_requirement_wire(r) for r in selector.match_expressions]
    return wire


def _requirement_wire(requirement: LabelSelectorRequirement) -> dict[str, Any]:
    wire: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator.value}
    if requirement.values:
        wire["values"] = list(requirement.values)
    return wire


def peer_wire(peer: NetworkPeer) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        wire["namespaceSelector"] = selector_wire(peer.namespace_selector)
    if peer.pod_selector is not None:
        wire["podSelector"] = selector_wire(peer.pod_selector)
    if peer.ip_block is not None:
        wire["ipBlock"] = _ip_block_wire(peer.ip_block)
    return wire


def _ip_block_wire(block: IPBlock) -> dict[str, Any]:
    wire: dict[str, Any] = {"cidr": block.cidr}
    if block.except_:
        wire["except"] = list(block.except_)
    return wire


def port_wire(port: NetworkPort) -> dict[str, Any]:
    wire: dict[str, Any] = {"protocol": port.protocol.value}
    if port.port is not None:
        wire["port"] = port.port
    if port.end_port is not None:
        wire["endPort"] = port.end_port
    return wire
