"""One active replica: leader election on a coordination.k8s.io/v1 Lease.

A replica acts only while it holds the Lease `baseline-operator-leader` in the
operator's namespace. It renews the Lease well within its duration; if it
cannot renew in time it stops acting (the process exits and is restarted),
so two replicas never write at once for longer than clock skew allows.
Updates carry the resourceVersion they read, so two replicas racing for an
expired Lease cannot both win.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.objects import LEASE, NAMESPACE, ObjectRef

log = structlog.get_logger(__name__)

LEASE_NAME = "baseline-operator-leader"
_MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_MICRO_TIME)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for pattern in (_MICRO_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def claim(
    lease: dict[str, Any] | None, identity: str, duration: int, now: datetime
) -> dict[str, Any] | None:
    """The Lease spec to write to become (or stay) leader, or None while another holds it."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    expired = renewed is None or now > renewed + timedelta(seconds=held_for)
    if holder and holder != identity and not expired:
        return None
    transitions = int(spec.get("leaseTransitions") or 0)
    taking_over = holder != identity
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": format_time(now)
        if taking_over
        else spec.get("acquireTime", format_time(now)),
        "renewTime": format_time(now),
        "leaseTransitions": transitions + 1 if taking_over and holder else transitions,
    }


@dataclass
class LeaderElector:
    kube: KubeApi
    namespace: str
    identity: str
    duration: int = 15
    renew_every: float = 5.0

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(LEASE, self.namespace, LEASE_NAME)

    async def try_lead(self) -> bool:
        lease = await self.kube.get(self.ref)
        spec = claim(lease, self.identity, self.duration, datetime.now(UTC))
        if spec is None:
            return False
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if lease is None:
                await self._create_lease(body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                await self.kube.replace(self.ref, body)
        except ApiError as exc:
            if exc.conflict or exc.already_exists:  # another replica wrote first
                return False
            raise
        return True

    async def _create_lease(self, body: dict[str, Any]) -> None:
        try:
            await self.kube.create(LEASE, self.namespace, body)
        except ApiError as exc:
            if not exc.not_found:
                raise
            # Run from a workstation before manifests/base was applied, the operator's own
            # namespace may not exist yet: make it, restricted like the one the manifests make.
            log.info("creating the operator's namespace", namespace=self.namespace)
            await self.kube.create(
                NAMESPACE,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": self.namespace,
                        "labels": {
                            f"pod-security.kubernetes.io/{mode}": "restricted"
                            for mode in ("enforce", "audit", "warn")
                        },
                    },
                },
            )
            await self.kube.create(LEASE, self.namespace, body)

    async def acquire(self) -> None:
        logged = False
        while True:
            try:
                if await self.try_lead():
                    log.info("leading", identity=self.identity, lease=LEASE_NAME)
                    return
            except ApiError as exc:
                log.warning("leader election failed", error=str(exc))
            if not logged:
                log.info("waiting for leadership", identity=self.identity)
                logged = True
            await asyncio.sleep(self.renew_every)

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew until renewal fails for longer than the lease lasts; then set `lost`."""
        last_renewal = asyncio.get_running_loop().time()
        while not lost.is_set():
            await asyncio.sleep(self.renew_every)
            try:
                if await self.try_lead():
                    last_renewal = asyncio.get_running_loop().time()
                    continue
                log.error("leadership taken by another replica")
                lost.set()
            except ApiError as exc:
                log.warning("lease renewal failed", error=str(exc))
                if (
                    asyncio.get_running_loop().time() - last_renewal
                    > self.duration - self.renew_every
                ):
                    log.error("lease could not be renewed in time; stepping down")
                    lost.set()
