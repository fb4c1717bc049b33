"""ExternalSecrets rendered from spec.externalSecrets."""

from __future__ import annotations

from typing import Any

from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import by_name, make_baseline


def _secrets(namespace: str, *secrets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    baseline = make_baseline("prod", externalSecrets=list(secrets))
    return by_name(render_namespace_objects(baseline, namespace))


def test_external_secret_body() -> None:
    secrets = _secrets(
        "shop",
        {
            "name": "db-credentials",
            "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
            "refreshInterval": "15m",
            "data": [
                {"secretKey": "password", "remoteRef": {"key": "{namespace}/db/password"}},
                {
                    "secretKey": "user",
                    "remoteRef": {
                        "key": "db",
                        "property": "{namespace}-user",
                        "version": "v-{namespace}",
                    },
                },
            ],
        },
    )
    assert secrets == {
        "ExternalSecret db-credentials": {
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {
                "name": "db-credentials",
                "namespace": "shop",
                "labels": {
                    "app.kubernetes.io/managed-by": "baseline-operator",
                    "security.baseline.dev/baseline": "prod",
                },
            },
            "spec": {
                "refreshInterval": "15m",
                "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "target": {"name": "db-credentials", "creationPolicy": "Owner"},
                "data": [
                    {"secretKey": "password", "remoteRef": {"key": "shop/db/password"}},
                    {
                        "secretKey": "user",
                        "remoteRef": {"key": "db", "property": "shop-user", "version": "v-shop"},
                    },
                ],
            },
        }
    }


def test_defaults_fill_refresh_interval_and_store_kind() -> None:
    secrets = _secrets(
        "team-b",
        {
            "name": "api-key",
            "secretStoreRef": {"name": "local"},
            "data": [{"secretKey": "key", "remoteRef": {"key": "{namespace}/{namespace}"}}],
        },
    )
    spec = secrets["ExternalSecret api-key"]["spec"]
    assert spec["refreshInterval"] == "1h"
    assert spec["secretStoreRef"] == {"name": "local", "kind": "SecretStore"}
    # Every occurrence of the placeholder is replaced.
    assert spec["data"] == [{"secretKey": "key", "remoteRef": {"key": "team-b/team-b"}}]


def test_external_secrets_keep_their_given_name() -> None:
    long_subdomain = "credentials." + "x" * 60
    secrets = _secrets(
        "shop",
        {
            "name": long_subdomain,
            "secretStoreRef": {"name": "vault"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}],
        },
    )
    body = secrets[f"ExternalSecret {long_subdomain}"]
    assert body["spec"]["target"]["name"] == long_subdomain


def test_no_external_secrets_render_nothing() -> None:
    assert _secrets("shop") == {}
