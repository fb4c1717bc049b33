"""Before raising Pod Security enforcement, the operator reports the pods it would reject,
in the API server's own words (a server-side dry run of the label change)."""

from __future__ import annotations

from typing import Any

import pytest

from baseline_operator.policy.objects import (
    EVENT,
    NAMESPACE,
    POD,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
)
from tests.e2e.conftest import (
    E2E,
    attempt,
    eventually,
    kubectl,
    list_items,
    object_path,
)

pytestmark = pytest.mark.e2e

ENFORCE = "pod-security.kubernetes.io/enforce"


def pod(name: str, **security: Any) -> dict[str, Any]:
    """A pod that never runs here (no nodes), but exists, and breaks `restricted`."""
    container: dict[str, Any] = {"name": "app", "image": "registry.example.com/team/web:1.0"}
    if security:
        container["securityContext"] = security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container]},
    }


async def namespace_with_pods(e2e: E2E, suffix: str, group: str) -> str:
    namespace = await e2e.create_namespace(suffix, group=group)

    async def account() -> bool:
        return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default") is not None

    await eventually(account, what=f"the default ServiceAccount of {namespace}")
    await e2e.kube.create(POD, namespace, pod("plain"))
    await e2e.kube.create(POD, namespace, pod("privileged", privileged=True))
    return namespace


async def what_kubectl_warns(e2e: E2E, namespace: str) -> list[str]:
    """What `kubectl label --dry-run=server --overwrite ns X enforce=restricted` warns."""
    shown = kubectl(
        "label",
        "--dry-run=server",
        "--overwrite",
        "namespace",
        namespace,
        f"{ENFORCE}=restricted",
    )
    if shown is not None:
        assert shown.returncode == 0, shown.stderr
        return [
            line.removeprefix("Warning: ")
            for line in shown.stderr.splitlines()
            if line.startswith("Warning: ")
        ]
    # No kubectl: the request it makes (a merge patch of the label, as a dry run).
    answer = await attempt(
        e2e.kube,
        "PATCH",
        object_path(NAMESPACE, None, namespace),
        {"metadata": {"labels": {ENFORCE: "restricted"}}},
        [("dryRun", "All")],
        content_type="application/merge-patch+json",
    )
    assert answer.status == 200, answer.message
    return list(answer.warnings)


async def preview_of(e2e: E2E, baseline: str, namespace: str) -> dict[str, Any]:
    async def reported() -> dict[str, Any] | None:
        for entry in (await e2e.cluster.status(baseline)).get("podSecurityPreview", []):
            if entry["namespace"] == namespace:
                return dict(entry)
        return None

    # The status is written a second after the namespaces settle: ten is plenty.
    return await eventually(reported, limit=10, what=f"status.podSecurityPreview of {baseline}")


async def preview_events(e2e: E2E, namespace: str) -> list[dict[str, Any]]:
    async def posted() -> list[dict[str, Any]]:
        return [
            event
            for event in await list_items(
                e2e.kube, EVENT, fieldSelector=f"involvedObject.name={namespace}"
            )
            if event["reason"] == "PodSecurityPreview"
            and event["involvedObject"]["kind"] == "Namespace"
        ]

    return await eventually(posted, what=f"a PodSecurityPreview Event on {namespace}")


async def raise_enforcement(e2e: E2E, mode: str) -> tuple[str, str, list[str]]:
    """A namespace with pods that break `restricted`, what kubectl warns about them, and a
    baseline (not yet seen by an operator) that raises enforcement to `restricted`."""
    namespace = await namespace_with_pods(e2e, "a", group="a")
    expected = await what_kubectl_warns(e2e, namespace)
    assert any("plain" in warning for warning in expected), expected
    assert any("privileged" in warning for warning in expected), expected
    body = e2e.baseline_body(
        selector={"matchLabels": {"group": "a"}}, podSecurity={"enforce": "restricted"}, mode=mode
    )
    return namespace, await e2e.create_baseline(body), expected


@pytest.mark.parametrize("mode", ["Enforce", "Audit"])
async def test_an_event_previews_the_pods_enforcement_would_reject(e2e: E2E, mode: str) -> None:
    namespace, _, expected = await raise_enforcement(e2e, mode)
    async with e2e.operator() as operator:
        (event, *_) = await preview_events(e2e, namespace)
        assert event["type"] == "Warning"
        assert "enforce level restricted would reject running pods" in event["message"]
        assert all(warning in event["message"] for warning in expected), event["message"]
        # `kubectl describe namespace` shows no Events at all; `kubectl events` finds these.
        shown = kubectl("events", "--all-namespaces", "--for", f"namespace/{namespace}")
        if shown is not None:
            assert shown.returncode == 0, shown.stderr
            assert "PodSecurityPreview" in shown.stdout

        await operator.settled()
        labels = await e2e.cluster.labels(namespace)
        assert labels.get(ENFORCE) == ("restricted" if mode == "Enforce" else None)


@pytest.mark.parametrize("mode", ["Enforce", "Audit"])
async def test_the_status_previews_the_pods_enforcement_would_reject(e2e: E2E, mode: str) -> None:
    namespace, name, expected = await raise_enforcement(e2e, mode)
    async with e2e.operator():
        preview = await preview_of(e2e, name, namespace)
        assert preview == {"namespace": namespace, "level": "restricted", "warnings": expected}


async def test_raising_enforcement_by_an_edit_previews_too(e2e: E2E) -> None:
    """A namespace already compliant with a baseline: the edit that raises its enforce
    level is news, and the preview is posted although nothing else changed."""
    namespace = await namespace_with_pods(e2e, "a", group="a")
    expected = await what_kubectl_warns(e2e, namespace)
    body = e2e.baseline_body(
        selector={"matchLabels": {"group": "a"}}, podSecurity={"enforce": "baseline"}
    )
    name = await e2e.create_baseline(body)
    async with e2e.operator() as operator:

        async def baseline_enforced() -> bool:
            return (await e2e.cluster.labels(namespace)).get(ENFORCE) == "baseline"

        await eventually(baseline_enforced, what="enforce=baseline")
        await operator.settled()
        await e2e.cluster.merge_patch(
            SECURITY_BASELINE, None, name, {"spec": {"podSecurity": {"enforce": "restricted"}}}
        )

        async def restricted_previews() -> list[dict[str, Any]]:
            return [
                event
                for event in await preview_events(e2e, namespace)
                if "enforce level restricted" in event["message"]
            ]

        (event,) = await eventually(restricted_previews, what="the preview of restricted")
        assert all(warning in event["message"] for warning in expected), event["message"]
