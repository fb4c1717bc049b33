"""Connecting to the API server: the official client and kopf from one configuration."""

from __future__ import annotations

import base64
import json
import os
import time

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from baseline_operator.kube.client import Endpoint

# The User-Agent of the operator's requests, when set (e.g. to tell replicas apart in the
# API server's audit log); otherwise aiohttp's own.
USER_AGENT_ENV = "BASELINE_OPERATOR_USER_AGENT"


def load_configuration() -> k8s.Configuration:
    """In-cluster configuration when running in a pod, else the current kubeconfig."""
    configuration = k8s.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    return configuration


def configuration_for(url: str) -> k8s.Configuration:
    """A configuration for a plain-HTTP API server (the in-process emulator)."""
    configuration = k8s.Configuration()
    configuration.host = url.rstrip("/")
    configuration.verify_ssl = False
    return configuration


# How long a read bearer token is used before it is read again (a rotated in-cluster token
# is valid for an hour at least; the kubelet rotates it well before it expires).
TOKEN_REREAD = 60.0


def endpoint_of(
    configuration: k8s.Configuration, headers: dict[str, str] | None = None
) -> Endpoint:
    """The operator's client settings from a loaded kubeconfig or in-cluster configuration."""

    cached: list[tuple[float, str | None]] = []

    def authorization() -> str | None:
        # Read again at most every TOKEN_REREAD seconds (the configuration's refresh hook
        # re-reads a rotated in-cluster token, and re-parses the kubeconfig: too costly to do
        # per request).
        now = time.monotonic()
        if not cached or now - cached[0][0] > TOKEN_REREAD:
            value = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
            cached[:] = [(now, str(value) if value else None)]
        return cached[0][1]

    return Endpoint(
        server=configuration.host,
        ca_file=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        certificate_file=configuration.cert_file or None,
        key_file=configuration.key_file or None,
        authorization=authorization,
        headers=_with_user_agent(headers or {}),
    )


def _with_user_agent(headers: dict[str, str]) -> dict[str, str]:
    agent = os.environ.get(USER_AGENT_ENV)
    return {"User-Agent": agent, **headers} if agent else dict(headers)


def token_username(configuration: k8s.Configuration) -> str | None:
    """The user a ServiceAccount token names (its `sub` claim), read without a request.

    The token is the operator's own; the API server verifies it on every request, this
    only reads who it says it is.
    """
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    token = token.removeprefix("Bearer ").strip()
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) and subject else None


def connection_info(configuration: k8s.Configuration) -> kopf.ConnectionInfo:
    """The same endpoint and credentials for kopf's own client."""
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    scheme = None
    if token:
        scheme, _, token = token.partition(" ") if " " in token else ("Bearer", "", token)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token or None,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
    )
