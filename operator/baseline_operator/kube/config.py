"""Connecting to the API server: the official client and kopf from one configuration."""

from __future__ import annotations

import os

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config


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


def api_client(configuration: k8s.Configuration, pool_size: int = 16) -> k8s.ApiClient:
    configuration.connection_pool_maxsize = pool_size
    # urllib3 would otherwise retry some 429/503 answers itself, out of the request budget's
    # sight; KubeApi retries with its own backoff instead.
    configuration.retries = False
    return k8s.ApiClient(configuration)


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
