"""A namespace's posture in its PolicyReport, read by a team that holds only `view` there.

The PolicyReport CRD (wgpolicyk8s.io/v1alpha2) is not part of a bare control plane: the
test installs a stand-in for the run (schema-less, as the kind's users read it) and
removes it at the end, so the other tests see a cluster without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.policy.objects import POLICY_REPORT, ROLE_BINDING
from baseline_operator.policy.workloads import POLICY_REPORT_NAME
from tests.e2e.conftest import (
    CLUSTER_ROLE,
    CRD_KIND,
    E2E,
    attempt,
    close,
    eventually,
    new_kube,
    object_path,
    served,
    stand_in_crd,
)
from tests.support.control_plane import TENANT_USER

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
VIEW_AGGREGATE = ROOT / "manifests/base/clusterrole-policyreports-view.yaml"
RBAC_GROUP = "rbac.authorization.k8s.io"


async def test_a_viewer_reads_the_posture_of_its_namespace(e2e: E2E) -> None:
    if e2e.run.tenant is None:
        pytest.skip(reason="needs the plain tenant user of a control plane the session started")
    if await served(e2e.kube, POLICY_REPORT):
        pytest.skip(reason="a PolicyReport CRD is installed here already; not replaced")
    crd = stand_in_crd(POLICY_REPORT)
    await e2e.kube.create(CRD_KIND, None, crd)
    aggregate = yaml.safe_load(VIEW_AGGREGATE.read_text())
    aggregate["metadata"]["name"] = e2e.name("policyreports-view")
    await e2e.kube.create(CLUSTER_ROLE, None, aggregate)
    e2e.track(CLUSTER_ROLE, aggregate["metadata"]["name"])
    viewer = new_kube(e2e.run.tenant)
    try:
        await eventually(lambda: served(e2e.kube, POLICY_REPORT), what="the stand-in CRD served")
        namespace = await e2e.create_namespace("a", env="prod")
        await e2e.kube.create(
            ROLE_BINDING,
            namespace,
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "team-view", "namespace": namespace},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": TENANT_USER}],
            },
        )
        body = e2e.baseline_body(
            podSecurity={"enforce": "baseline"},
            networkPolicy={"defaultDeny": ["Ingress"], "allowDNS": True},
        )
        name = await e2e.create_baseline(body)
        path = object_path(POLICY_REPORT, namespace, POLICY_REPORT_NAME)
        async with e2e.operator():

            async def read_as_viewer() -> dict[str, Any] | None:
                answer = await attempt(viewer, "GET", path)
                return answer.body if answer.status == 200 else None

            report = await eventually(read_as_viewer, what="the report readable by the viewer")
            results = {
                (r["rule"], (r.get("resources") or [{}])[0].get("name")): r["result"]
                for r in report["results"]
            }
            assert results[("pod-security-enforce", None)] == "pass"
            assert results[("network-policy", f"{name}-default-deny")] == "pass"
            assert results[("network-policy", f"{name}-allow-dns")] == "pass"
            assert report["summary"]["fail"] == 0
            # `view` reads; it does not write.
            refused = await attempt(viewer, "DELETE", path)
            assert refused.status == 403
    finally:
        await close(viewer)
        await attempt(e2e.kube, "DELETE", object_path(CRD_KIND, None, crd["metadata"]["name"]))

        async def unserved() -> bool:
            return not await served(e2e.kube, POLICY_REPORT)

        await eventually(unserved, what="the stand-in CRD gone")
