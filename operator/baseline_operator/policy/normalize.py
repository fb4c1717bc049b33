"""What an object does, per kind: its essence after the API server's defaulting.

Drift is judged on the essence, not on the keys the operator happened to send: a
live object is in place when its essence equals the desired object's, exactly.
The essence of a kind is *all* of what makes it act (a NetworkPolicy's whole spec,
a Role's rules, a RoleBinding's roleRef and subjects, ...), so a field another
field manager added inside it (a `namespaceSelector: {}` on a peer, a default-deny
`podSelector` narrowed to no pod, one more subject) makes it differ, while what
the server fills in by itself (protocol TCP, policyTypes, a subject's apiGroup,
"1024Mi" for "1Gi") does not. Bookkeeping (uid, resourceVersion, managedFields,
status, annotations other than a ServiceAccount's) is never part of it.

Defaults are applied to both sides the same way, so a default the server did not
apply (an older server, the in-process emulator) is no drift either. Where a
default is not certain (the External Secrets Operator's CRD has changed between
versions), a value equal to the default is dropped rather than added: a field
that is absent and a field holding its default compare equal either way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from baseline_operator.api.fields import parse_quantity
from baseline_operator.policy.names import (
    ARGOCD_TRACKING_KEYS,
    BASELINE_KEY,
    DESIRED_HASH_KEY,
    MANAGED_BY_KEY,
)
from baseline_operator.policy.objects import Body

RBAC_GROUP = "rbac.authorization.k8s.io"
# Annotations that say nothing about what a ServiceAccount does.
_BOOKKEEPING_ANNOTATION_PREFIXES = ("kubectl.kubernetes.io/",)
_BOOKKEEPING_ANNOTATIONS = frozenset({DESIRED_HASH_KEY, *ARGOCD_TRACKING_KEYS})


# ----------------------------------------------------------------------------- helpers


def _map(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _compact(node: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None, {} or []: absent and empty mean the same here."""
    return {key: value for key, value in node.items() if value not in (None, {}, [])}


def quantity(value: Any) -> str:
    """A quantity in one canonical spelling ("0.5", "500m" -> "0.5"; "1Gi" -> "1073741824")."""
    try:
        number = parse_quantity(value)
    except ValueError:
        return str(value)
    normal = number.normalize()
    if normal == normal.to_integral_value():
        return str(normal.quantize(Decimal(1)))
    return format(normal, "f")


def _resources(value: Any) -> dict[str, str]:
    return {str(key): quantity(amount) for key, amount in _map(value).items()}


def selector(value: Any) -> dict[str, Any]:
    """A LabelSelector: empty parts dropped, so {} and {matchLabels: {}} compare equal."""
    node = _map(value)
    expressions = [
        _compact(
            {
                "key": item.get("key"),
                "operator": item.get("operator"),
                "values": _list(item.get("values")),
            }
        )
        for item in map(_map, _list(node.get("matchExpressions")))
    ]
    return _compact({"matchLabels": _map(node.get("matchLabels")), "matchExpressions": expressions})


def _operator_labels(body: Body) -> dict[str, str]:
    labels = _map(_map(body.get("metadata")).get("labels"))
    return {key: labels[key] for key in (MANAGED_BY_KEY, BASELINE_KEY) if key in labels}


# ----------------------------------------------------------------------------- per kind


def _service_account(body: Body) -> dict[str, Any]:
    annotations = {
        key: value
        for key, value in _map(_map(body.get("metadata")).get("annotations")).items()
        if key not in _BOOKKEEPING_ANNOTATIONS
        and not key.startswith(_BOOKKEEPING_ANNOTATION_PREFIXES)
    }
    return _compact(
        {
            "annotations": annotations,
            "automountServiceAccountToken": body.get("automountServiceAccountToken"),
            "imagePullSecrets": _list(body.get("imagePullSecrets")),
            "secrets": _list(body.get("secrets")),
        }
    )


def _rule(rule: Any) -> dict[str, Any]:
    node = _map(rule)
    return _compact(
        {
            key: _list(node.get(key))
            for key in ("apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs")
        }
    )


def _role(body: Body) -> dict[str, Any]:
    return {"rules": [_rule(rule) for rule in _list(body.get("rules"))]}


def _subject(subject: Any) -> dict[str, Any]:
    node = _map(subject)
    kind = node.get("kind")
    group = node.get("apiGroup") or ("" if kind == "ServiceAccount" else RBAC_GROUP)
    return _compact(
        {"kind": kind, "name": node.get("name"), "namespace": node.get("namespace")}
    ) | {"apiGroup": group}


def _role_binding(body: Body) -> dict[str, Any]:
    ref = _map(body.get("roleRef"))
    return {
        "roleRef": {
            "apiGroup": ref.get("apiGroup") or RBAC_GROUP,
            "kind": ref.get("kind"),
            "name": ref.get("name"),
        },
        "subjects": [_subject(subject) for subject in _list(body.get("subjects"))],
    }


def _peer(peer: Any) -> dict[str, Any]:
    node = _map(peer)
    result: dict[str, Any] = {}
    # Presence matters: a namespaceSelector of {} selects every namespace, none only this one.
    for key in ("podSelector", "namespaceSelector"):
        if key in node and node[key] is not None:
            result[key] = selector(node[key])
    if node.get("ipBlock") is not None:
        block = _map(node["ipBlock"])
        result["ipBlock"] = _compact(
            {"cidr": block.get("cidr"), "except": _list(block.get("except"))}
        )
    return result


def _port(port: Any) -> dict[str, Any]:
    node = _map(port)
    return _compact(
        {
            "protocol": node.get("protocol") or "TCP",
            "port": node.get("port"),
            "endPort": node.get("endPort"),
        }
    )


def _traffic(rule: Any, peers: str) -> dict[str, Any]:
    node = _map(rule)
    return {
        peers: [_peer(peer) for peer in _list(node.get(peers))],
        "ports": [_port(port) for port in _list(node.get("ports"))],
    }


def _network_policy(body: Body) -> dict[str, Any]:
    spec = _map(body.get("spec"))
    ingress = [_traffic(rule, "from") for rule in _list(spec.get("ingress"))]
    egress = [_traffic(rule, "to") for rule in _list(spec.get("egress"))]
    types = _list(spec.get("policyTypes"))
    if not types:  # the server's default: Ingress, and Egress when there are egress rules
        types = ["Ingress", "Egress"] if egress else ["Ingress"]
    return {
        "podSelector": selector(spec.get("podSelector")),
        "policyTypes": sorted(types),
        "ingress": ingress,
        "egress": egress,
    }


def _limit_item(item: Any) -> dict[str, Any]:
    node = _map(item)
    values = {
        key: _resources(node.get(key))
        for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")
    }
    if node.get("type") == "Container":
        # The server's defaulting of a Container limit (SetDefaults_LimitRangeItem).
        for key, value in values["max"].items():
            values["default"].setdefault(key, value)
        for key, value in values["default"].items():
            values["defaultRequest"].setdefault(key, value)
        for key, value in values["min"].items():
            values["defaultRequest"].setdefault(key, value)
    return _compact({"type": node.get("type"), **values})


def _limit_range(body: Body) -> dict[str, Any]:
    spec = _map(body.get("spec"))
    return {"limits": [_limit_item(item) for item in _list(spec.get("limits"))]}


def _resource_quota(body: Body) -> dict[str, Any]:
    spec = _map(body.get("spec"))
    return _compact(
        {
            "hard": _resources(spec.get("hard")),
            "scopes": sorted(_list(spec.get("scopes"))),
            "scopeSelector": _map(spec.get("scopeSelector")),
        }
    )


def _without_defaults(node: Any, defaults: Mapping[str, Any]) -> Any:
    """`node` with every field equal to its default dropped (paths: "a.b", "list[].c")."""
    result = json.loads(json.dumps(node))
    for path, default in defaults.items():
        _drop(result, path.split("."), default)
    return result


def _drop(node: Any, path: list[str], default: Any) -> None:
    if not isinstance(node, dict) or not path:
        return
    head, rest = path[0], path[1:]
    if head.endswith("[]"):
        for item in _list(node.get(head[:-2])):
            _drop(item, rest, default)
        return
    if not rest:
        if head in node and node[head] == default:
            del node[head]
        return
    _drop(node.get(head), rest, default)
    if node.get(head) == {}:
        del node[head]


# What the External Secrets Operator's CRD (external-secrets.io/v1) defaults.
_EXTERNAL_SECRET_DEFAULTS: dict[str, Any] = {
    "refreshInterval": "1h",
    "secretStoreRef.kind": "SecretStore",
    "target.creationPolicy": "Owner",
    "target.deletionPolicy": "Retain",
    "data[].remoteRef.conversionStrategy": "Default",
    "data[].remoteRef.decodingStrategy": "None",
    "data[].remoteRef.metadataPolicy": "None",
    "dataFrom[].extract.conversionStrategy": "Default",
    "dataFrom[].extract.decodingStrategy": "None",
    "dataFrom[].extract.metadataPolicy": "None",
}


def _external_secret(body: Body) -> dict[str, Any]:
    spec = _without_defaults(_map(body.get("spec")), _EXTERNAL_SECRET_DEFAULTS)
    return {"spec": spec}


# What the API server defaults on admission policies and their bindings.
_MATCH_DEFAULTS: dict[str, Any] = {
    "matchPolicy": "Equivalent",
    "namespaceSelector": {},
    "objectSelector": {},
    "resourceRules[].scope": "*",
    "excludeResourceRules[].scope": "*",
}
_POLICY_DEFAULTS: dict[str, Any] = {
    "failurePolicy": "Fail",
    **{f"matchConstraints.{path}": value for path, value in _MATCH_DEFAULTS.items()},
}
_BINDING_DEFAULTS: dict[str, Any] = {
    **{f"matchResources.{path}": value for path, value in _MATCH_DEFAULTS.items()},
    "paramRef.parameterNotFoundAction": "Deny",
}


def _admission_policy(body: Body) -> dict[str, Any]:
    return {"spec": _without_defaults(_map(body.get("spec")), _POLICY_DEFAULTS)}


def _admission_policy_binding(body: Body) -> dict[str, Any]:
    return {"spec": _without_defaults(_map(body.get("spec")), _BINDING_DEFAULTS)}


def _anything(body: Body) -> dict[str, Any]:
    """A kind without its own rule (a PolicyReport): every field but metadata and status."""
    return {key: value for key, value in body.items() if key not in ("metadata", "status")}


_BY_KIND: dict[str, Callable[[Body], dict[str, Any]]] = {
    "ServiceAccount": _service_account,
    "Role": _role,
    "RoleBinding": _role_binding,
    "NetworkPolicy": _network_policy,
    "LimitRange": _limit_range,
    "ResourceQuota": _resource_quota,
    "ExternalSecret": _external_secret,
    "ValidatingAdmissionPolicy": _admission_policy,
    "ValidatingAdmissionPolicyBinding": _admission_policy_binding,
}


def essence(kind: str, body: Body) -> dict[str, Any]:
    """What an object of `kind` does (and the operator's own labels on it), after defaulting."""
    shape = _BY_KIND.get(kind, _anything)(body)
    return {"kind": kind, "labels": _operator_labels(body), **shape}


def digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def essence_digest(kind: str, body: Body) -> str:
    """A digest of `essence`: two objects do the same iff their digests are equal."""
    return digest(essence(kind, body))


def field_digests(kind: str, body: Body) -> dict[str, str]:
    """A digest per top-level field of the essence, for fields the operator sets on an
    object it does not own (the default ServiceAccount's automountServiceAccountToken)."""
    return {key: digest(value) for key, value in essence(kind, body).items() if key != "kind"}


__all__ = ["essence", "essence_digest", "field_digests", "quantity", "selector"]
