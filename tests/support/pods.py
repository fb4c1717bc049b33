"""Pods for the workload-audit tests: one that passes every hardening check, one that fails
many (against allowedRegistries [registry.example.com/] and requiredLabels [app])."""

from __future__ import annotations

from typing import Any


def pod(name: str, *, hardened: bool, namespace: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.example.com/app:1.0"}
    labels = {"app": name}
    if hardened:
        container["securityContext"] = {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container["resources"] = {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"memory": "64Mi"},
        }
    else:
        container["image"] = "docker.io/library/nginx:latest"
        container["securityContext"] = {"privileged": True}
        labels = {}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [container]},
    }
