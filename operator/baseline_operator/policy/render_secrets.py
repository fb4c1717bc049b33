"""ExternalSecrets (External Secrets Operator) of one baseline in one namespace.

Bodies are returned without namespace and labels; `policy.render` stamps those.
An ExternalSecret keeps the name the spec gives, and so does the Secret it makes:
workloads refer to the Secret by that name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baseline_operator.api.spec import ExternalSecretData, ExternalSecretSpec
from baseline_operator.policy.objects import EXTERNAL_SECRET, Body

NAMESPACE_PLACEHOLDER = "{namespace}"


def render_external_secrets(secrets: Sequence[ExternalSecretSpec], namespace: str) -> list[Body]:
    return [_external_secret(secret, namespace) for secret in secrets]


def _external_secret(secret: ExternalSecretSpec, namespace: str) -> Body:
    return {
        "apiVersion": EXTERNAL_SECRET.api_version,
        "kind": EXTERNAL_SECRET.kind,
        "metadata": {"name": secret.name},
        "spec": {
            "refreshInterval": secret.refresh_interval,
            "secretStoreRef": {
                "name": secret.secret_store_ref.name,
                "kind": secret.secret_store_ref.kind.value,
            },
            # Owner: the generated Secret goes away with its ExternalSecret.
            "target": {"name": secret.name, "creationPolicy": "Owner"},
            "data": [_data_wire(item, namespace) for item in secret.data],
        },
    }


def _data_wire(item: ExternalSecretData, namespace: str) -> dict[str, Any]:
    remote = item.remote_ref
    remote_ref: dict[str, Any] = {"key": _in_namespace(remote.key, namespace)}
    if remote.property is not None:
        remote_ref["property"] = _in_namespace(remote.property, namespace)
    if remote.version is not None:
        remote_ref["version"] = _in_namespace(remote.version, namespace)
    return {"secretKey": item.secret_key, "remoteRef": remote_ref}


def _in_namespace(text: str, namespace: str) -> str:
    return text.replace(NAMESPACE_PLACEHOLDER, namespace)
