"""BaselineExceptions in the running operator, on the emulator, on a clock the test controls:
create -> active (admission policy admits, Pod Security enforce lowered, findings skip) ->
expiry warning -> expired (all restored), delete -> ended at once, restart -> no Event twice,
and an exception that expired while the operator was down ends at start."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from baseline_operator.api.exception import format_time
from baseline_operator.api.kinds import BASELINE_EXCEPTION
from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.admission import render_cluster_objects
from baseline_operator.policy.exceptions import ActiveException
from baseline_operator.policy.objects import EVENT, POD, POLICY_REPORT, VALIDATING_ADMISSION_POLICY
from baseline_operator.policy.workloads import POLICY_REPORT_NAME
from tests.support.cluster import Cluster, Operator, baseline, eventually, running_operator
from tests.support.pods import pod

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
SPEC: dict[str, Any] = {
    "podSecurity": {"enforce": "restricted", "warn": "restricted"},
    "workloadAudit": {"enabled": True},
    "admission": {"denyPrivileged": True, "allowedRegistries": ["registry.example.com/"]},
    "exceptions": {"expiryWarning": "10m"},
}


class Clock:
    """The operator's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def exception(name: str, expires: datetime, **spec: Any) -> dict[str, Any]:
    spec.setdefault("baseline", "prod")
    spec.setdefault("namespaces", ["team-a"])
    spec.setdefault("reason", "a legacy image runs privileged until its next release")
    spec["expires"] = format_time(expires)
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {"name": name},
        "spec": spec,
    }


async def setup(cluster: Cluster) -> None:
    await cluster.create_namespace("team-a", env="prod")
    await cluster.create_namespace("team-b", env="prod")
    await cluster.kube.create(POD, "team-a", pod("legacy", hardened=False, namespace="team-a"))
    await cluster.create_baseline(baseline(**copy.deepcopy(SPEC)))


async def exception_status(cluster: Cluster, name: str) -> dict[str, Any]:
    body = await cluster.get(BASELINE_EXCEPTION, None, name)
    return dict((body or {}).get("status") or {})


async def events(cluster: Cluster, kind: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        event
        for event in await cluster.list(EVENT, "default")
        if event["involvedObject"]["kind"] == kind
        and event["involvedObject"]["name"] == name
        and event["reason"] == reason
    ]


async def workload_policy(cluster: Cluster) -> dict[str, Any]:
    body = await cluster.get(VALIDATING_ADMISSION_POLICY, None, "prod-workload-rules")
    assert body is not None
    return dict(body["spec"])


def rendered_policy(operator: Operator, active: list[ActiveException]) -> dict[str, Any]:
    """What the workload-rules policy must be with these exceptions in force."""
    objects = render_cluster_objects(
        parse_baseline(baseline(**copy.deepcopy(SPEC))),
        operator.options.operator_username,
        operator.options.eso_username,
        exceptions=active,
    )
    (policy,) = [
        item
        for item in objects
        if item.ref.kind == VALIDATING_ADMISSION_POLICY and "workload" in item.ref.name
    ]
    return dict(policy.body["spec"])


async def skipped_in_report(cluster: Cluster) -> list[dict[str, Any]]:
    report = await cluster.get(POLICY_REPORT, "team-a", POLICY_REPORT_NAME)
    return [r for r in (report or {}).get("results", []) if r["result"] == "skip"]


async def test_lifecycle_on_a_clock_the_test_controls(cluster: Cluster) -> None:
    await setup(cluster)
    async with running_operator(cluster) as operator:
        await operator.settled()
        clock = Clock()
        operator.runtime.clock = clock
        operator.runtime.exceptions.wake()
        await operator.settled()
        assert (await cluster.labels("team-a"))[ENFORCE] == "restricted"
        without = await workload_policy(cluster)
        assert without == rendered_policy(operator, [])
        assert (await cluster.status("prod"))["workloads"]["skipped"] == 0

        expires = clock.now + timedelta(hours=1)
        body = exception(
            "legacy-privileged",
            expires,
            checks=["privileged", "allowed-registries"],
            podSecurity={"enforce": "privileged"},
        )
        await cluster.kube.create(BASELINE_EXCEPTION, None, copy.deepcopy(body))

        async def active() -> bool:
            return (await exception_status(cluster, "legacy-privileged")).get("state") == "Active"

        await eventually(active)
        await operator.settled()
        # Pod Security: enforce lowered in the covered namespace only; warn stays.
        labels = await cluster.labels("team-a")
        assert labels[ENFORCE] == "privileged" and labels[WARN] == "restricted"
        assert (await cluster.labels("team-b"))[ENFORCE] == "restricted"
        # Admission: the policy is the one rendered with the exception in force.
        (in_force,) = operator.runtime.view.active_exceptions("prod")
        assert in_force.name == "legacy-privileged"
        assert await workload_policy(cluster) == rendered_policy(operator, [in_force])
        assert await workload_policy(cluster) != without
        # Findings it covers are skip, naming it and its expiry; the rest still fail.
        status = await cluster.status("prod")
        assert status["workloads"]["skipped"] == 2
        assert status["exceptions"] == {
            "active": 1,
            "invalid": 0,
            "nextExpiry": format_time(expires),
        }
        (listed,) = status["nonCompliantWorkloads"]
        assert "privileged" not in listed["checks"] and "image-tag" in listed["checks"]
        skipped = await skipped_in_report(cluster)
        assert {r["rule"] for r in skipped} == {"privileged", "allowed-registries"}
        assert all(
            r["properties"] == {"exception": "legacy-privileged", "expires": format_time(expires)}
            for r in skipped
        )
        conditions = {
            c["type"]: c
            for c in (await exception_status(cluster, "legacy-privileged"))["conditions"]
        }
        assert conditions["Active"]["status"] == "True"
        assert conditions["Active"]["observedGeneration"] == 1
        # An hour away, with a ten-minute warning: no warning yet.
        assert "ExpiringSoon" not in conditions
        assert (
            await events(cluster, "BaselineException", "legacy-privileged", "ExpiryWarning") == []
        )

        # Into the warning window: one warning, on the exception and on the baseline.
        clock.now = expires - timedelta(minutes=5)
        operator.runtime.exceptions.wake()

        async def warned() -> bool:
            return bool(
                await events(cluster, "BaselineException", "legacy-privileged", "ExpiryWarning")
            )

        await eventually(warned)
        await operator.settled()
        assert len(await events(cluster, "SecurityBaseline", "prod", "ExpiryWarning")) == 1
        assert (await cluster.labels("team-a"))[ENFORCE] == "privileged"  # still in force
        operator.runtime.exceptions.wake()
        await operator.settled()
        assert (
            len(await events(cluster, "BaselineException", "legacy-privileged", "ExpiryWarning"))
            == 1
        )

        # Past the expiry: everything is restored, without a restart.
        clock.now = expires + timedelta(seconds=1)
        operator.runtime.exceptions.wake()

        async def restored() -> bool:
            return (await cluster.labels("team-a")).get(ENFORCE) == "restricted"

        await eventually(restored)
        await operator.settled()
        assert await workload_policy(cluster) == without
        status = await cluster.status("prod")
        assert status["workloads"]["skipped"] == 0
        assert status["exceptions"] == {"active": 0, "invalid": 0}
        assert await skipped_in_report(cluster) == []
        exception_state = await exception_status(cluster, "legacy-privileged")
        assert exception_state["state"] == "Expired"
        assert len(await events(cluster, "BaselineException", "legacy-privileged", "Expired")) == 1
        assert len(await events(cluster, "SecurityBaseline", "prod", "Expired")) == 1


async def test_deleting_an_exception_ends_it_at_once(cluster: Cluster) -> None:
    await setup(cluster)
    async with running_operator(cluster) as operator:
        await operator.settled()
        body = exception(
            "whole-namespace",
            datetime.now(UTC) + timedelta(days=30),
            podSecurity={"enforce": "baseline"},
            checks=["privileged"],
        )
        await cluster.kube.create(BASELINE_EXCEPTION, None, copy.deepcopy(body))

        async def lowered() -> bool:
            return (await cluster.labels("team-a")).get(ENFORCE) == "baseline"

        await eventually(lowered)
        await operator.settled()
        assert await workload_policy(cluster) != rendered_policy(operator, [])

        await cluster.delete(BASELINE_EXCEPTION, None, "whole-namespace")

        async def restored() -> bool:
            return (await cluster.labels("team-a")).get(ENFORCE) == "restricted"

        await eventually(restored)
        await operator.settled()
        assert await workload_policy(cluster) == rendered_policy(operator, [])
        assert operator.runtime.view.active_exceptions("prod") == ()
        assert "exceptions" not in await cluster.status("prod")


async def test_an_exception_of_a_deleted_or_missing_baseline_is_invalid(cluster: Cluster) -> None:
    await setup(cluster)
    async with running_operator(cluster) as operator:
        await operator.settled()
        body = exception(
            "elsewhere",
            datetime.now(UTC) + timedelta(days=1),
            baseline="nope",
            checks=["privileged"],
        )
        await cluster.kube.create(BASELINE_EXCEPTION, None, copy.deepcopy(body))

        async def invalid() -> bool:
            status = await exception_status(cluster, "elsewhere")
            return status.get("state") == "Invalid"

        await eventually(invalid)
        conditions = {
            c["type"]: c for c in (await exception_status(cluster, "elsewhere"))["conditions"]
        }
        assert conditions["Invalid"]["reason"] == "BaselineNotFound"
        assert operator.runtime.view.active_sets() == {}

        too_long = exception(
            "too-long", datetime.now(UTC) + timedelta(days=400), checks=["privileged"]
        )
        await cluster.kube.create(BASELINE_EXCEPTION, None, copy.deepcopy(too_long))

        async def beyond() -> bool:
            status = await exception_status(cluster, "too-long")
            return status.get("state") == "Invalid"

        await eventually(beyond)
        await operator.settled()
        assert (await cluster.status("prod"))["exceptions"] == {"active": 0, "invalid": 1}
        assert await workload_policy(cluster) == rendered_policy(operator, [])


async def test_restart_repeats_no_event_and_catches_up_on_expiry(cluster: Cluster) -> None:
    await setup(cluster)
    # The baseline warns 10 minutes ahead: an exception that expires in 5 is warned at once.
    expires = datetime.now(UTC) + timedelta(minutes=5)
    body = exception("soon", expires, podSecurity={"enforce": "baseline"})
    await cluster.kube.create(BASELINE_EXCEPTION, None, copy.deepcopy(body))
    async with running_operator(cluster) as operator:

        async def warned() -> bool:
            return bool(await events(cluster, "BaselineException", "soon", "ExpiryWarning"))

        await eventually(warned)
        await operator.settled()
        assert (await cluster.labels("team-a"))[ENFORCE] == "baseline"

    async with running_operator(cluster) as operator:
        await operator.settled()
        assert (await cluster.labels("team-a"))[ENFORCE] == "baseline"
        assert len(await events(cluster, "BaselineException", "soon", "ExpiryWarning")) == 1
        assert len(await events(cluster, "SecurityBaseline", "prod", "ExpiryWarning")) == 1

    # While the operator is down, the exception's time passes (its expiry is moved into the
    # past: the same verdict as a clock that moved on). It stays in force until the operator
    # is back, and ends as soon as it starts.
    past = datetime.now(UTC) - timedelta(seconds=1)
    await cluster.merge_patch(
        BASELINE_EXCEPTION, None, "soon", {"spec": {"expires": format_time(past)}}
    )
    assert (await cluster.labels("team-a"))[ENFORCE] == "baseline"
    async with running_operator(cluster) as operator:

        async def restored() -> bool:
            return (await cluster.labels("team-a")).get(ENFORCE) == "restricted"

        await eventually(restored)
        await operator.settled()
        assert (await exception_status(cluster, "soon"))["state"] == "Expired"
        assert len(await events(cluster, "BaselineException", "soon", "Expired")) == 1
        # A new generation inside the window is not warned again once it has expired.
        assert len(await events(cluster, "BaselineException", "soon", "ExpiryWarning")) == 1

    async with running_operator(cluster) as operator:
        await operator.settled()
        assert len(await events(cluster, "BaselineException", "soon", "Expired")) == 1
