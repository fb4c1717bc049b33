"""A BaselineException on a real API server: a covered pod is admitted while it is active and
refused once it expires, without any restart, and the Pod Security label follows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from baseline_operator.api.exception import format_time
from baseline_operator.api.kinds import BASELINE_EXCEPTION
from baseline_operator.policy.objects import POD, SERVICE_ACCOUNT, VALIDATING_ADMISSION_POLICY
from tests.e2e.conftest import E2E, Answer, attempt, eventually, object_path

pytestmark = pytest.mark.e2e

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
# Long enough for the operator to see the exception and the API server to load the policy,
# short enough for a test.
LIFETIME = timedelta(seconds=20)


def privileged_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "legacy"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/legacy:1.0",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }


async def dry_run_pod(e2e: E2E, namespace: str) -> Answer:
    return await attempt(
        e2e.kube,
        "POST",
        object_path(POD, namespace, "")[:-1],
        privileged_pod("legacy"),
        [("dryRun", "All")],
    )


async def test_a_covered_pod_is_admitted_until_the_exception_expires(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("legacy", env="prod")

    async def account() -> bool:
        return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default") is not None

    await eventually(account, what=f"the default ServiceAccount of {namespace}")
    body = e2e.baseline_body(
        podSecurity={"enforce": "restricted", "warn": "restricted"},
        admission={"denyPrivileged": True, "validationActions": ["Deny"]},
    )
    baseline = await e2e.create_baseline(body)
    policy = f"{baseline}-workload-rules"

    async with e2e.operator() as operator:

        async def refused() -> Answer | None:
            answer = await dry_run_pod(e2e, namespace)
            return answer if answer.status in (403, 422) else None

        async def restricted() -> bool:
            return (await e2e.cluster.labels(namespace)).get(ENFORCE) == "restricted"

        await eventually(restricted, what="enforce=restricted")
        await eventually(refused, what="the privileged pod refused before any exception")
        await operator.settled()

        name = e2e.name("legacy-privileged")
        # RFC 3339 in whole seconds, as the exception stores it.
        expires = (datetime.now(UTC) + LIFETIME).replace(microsecond=0)
        e2e.track(BASELINE_EXCEPTION, name)
        await e2e.kube.create(
            BASELINE_EXCEPTION,
            None,
            {
                "apiVersion": "security.baseline.dev/v1alpha1",
                "kind": "BaselineException",
                "metadata": {"name": name},
                "spec": {
                    "baseline": baseline,
                    "namespaces": [namespace],
                    "checks": ["privileged"],
                    "podSecurity": {"enforce": "privileged"},
                    "reason": "the legacy agent needs a privileged container until it is rebuilt",
                    "expires": format_time(expires),
                },
            },
        )

        async def admitted() -> Answer | None:
            answer = await dry_run_pod(e2e, namespace)
            return answer if answer.status == 201 else None

        await eventually(admitted, limit=15, what="the covered pod admitted")
        labels = await e2e.cluster.labels(namespace)
        assert labels[ENFORCE] == "privileged" and labels[WARN] == "restricted"
        exception = await e2e.cluster.get(BASELINE_EXCEPTION, None, name)
        assert exception is not None
        assert exception["status"]["state"] == "Active"
        assert datetime.now(UTC) < expires, "the exception expired before it was checked"

        # Nobody touches anything: at the expiry the operator takes the exception back.
        await eventually(refused, what="the privileged pod refused after the expiry")
        assert datetime.now(UTC) >= expires
        await eventually(restricted, what="enforce=restricted again")

        async def expired() -> bool:
            found = await e2e.cluster.get(BASELINE_EXCEPTION, None, name)
            return (found or {}).get("status", {}).get("state") == "Expired"

        await eventually(expired, what="the exception's status Expired")

        # The workload rules are rewritten on their own (the cluster-scoped objects' pass,
        # beside the exception's status and the namespace's labels): not necessarily first.
        async def rules_without_it() -> bool:
            rules = await e2e.cluster.get(VALIDATING_ADMISSION_POLICY, None, policy)
            assert rules is not None
            spec = json.dumps(rules["spec"])
            return name not in spec and "exception0" not in spec

        await eventually(rules_without_it, what="the workload rules without the exception")
