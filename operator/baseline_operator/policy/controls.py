"""The posture of a namespace as controls a team can read: one result per control a
baseline holds there (pass, fail with the reason, skip), for its PolicyReport.

A control is one thing a baseline promises in the namespace: each Pod Security mode, the
default deny, each allow rule, each RBAC binding and role, the default ServiceAccount's
token setting, each ExternalSecret, the LimitRange and ResourceQuota, and the admission
policies. Its result comes from the reconcile that just ran: what failed or stands in
the way, what another baseline holds, what Audit mode only reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from baseline_operator.api.sharing import shared_str
from baseline_operator.policy.objects import DesiredObject, ObjectRef

PASS = "pass"
FAIL = "fail"
SKIP = "skip"

_RULES = {
    "NetworkPolicy": "network-policy",
    "Role": "rbac-role",
    "RoleBinding": "rbac-binding",
    "ServiceAccount": "service-account",
    "LimitRange": "limit-range",
    "ResourceQuota": "resource-quota",
    "ExternalSecret": "external-secret",
}


@dataclass(frozen=True, slots=True)
class ControlResult:
    baseline: str
    rule: str
    result: str
    # Empty for an object in place: its message is made when the report is written, not
    # kept for every object of every namespace (thousands of them, all alike).
    message: str
    ref: ObjectRef | None = None  # the object the control is, if it is one

    def wire(self, namespace: str) -> dict[str, object]:
        """As a PolicyReport result."""
        result: dict[str, object] = {
            "policy": self.baseline,
            "rule": self.rule,
            "result": self.result,
            "message": (self.message or f"{self.ref} is in place")[:1024],
            "source": "baseline-operator",
            "category": "posture",
            "scored": True,
        }
        if self.ref is not None:
            result["resources"] = [
                {
                    "apiVersion": self.ref.kind.api_version,
                    "kind": self.ref.kind.kind,
                    "namespace": namespace,
                    "name": self.ref.name,
                }
            ]
        return result


def rule_of(item: DesiredObject) -> str:
    kind = item.ref.kind.kind
    if kind == "ServiceAccount" and item.baseline is None:
        return "default-service-account-token"
    return _RULES.get(kind, kind.lower())


def control_results(
    baseline: str,
    objects: Iterable[DesiredObject],
    pod_security: Mapping[str, str],
    problems: Mapping[ObjectRef, str],
    held_elsewhere: Sequence[str] = (),
    pod_security_problems: Sequence[str] = (),
    admission_problem: str | None = None,
    has_admission: bool = False,
) -> list[ControlResult]:
    """The controls of one Enforce baseline in a namespace after a reconcile.

    `objects` are what the baseline wants there (its own, and the default ServiceAccount's
    field); `problems` what failed or stands in the way, by object; `held_elsewhere` what a
    higher-priority baseline holds instead; `pod_security` the modes and levels it sets.
    """
    results: list[ControlResult] = []
    for mode, level in sorted(pod_security.items()):
        problem = next((p for p in pod_security_problems if f"/{mode}=" in p), None)
        results.append(
            ControlResult(
                baseline,
                shared_str(f"pod-security-{mode}"),
                FAIL if problem else PASS,
                problem or shared_str(f"pod-security.kubernetes.io/{mode}={level}"),
            )
        )
    for item in sorted(objects, key=lambda desired: desired.ref):
        problem = problems.get(item.ref)
        results.append(
            ControlResult(
                baseline,
                rule_of(item),
                FAIL if problem else PASS,
                problem or "",
                _kept_ref(item.ref),
            )
        )
    for held in held_elsewhere:
        results.append(ControlResult(baseline, "held-by-another-baseline", SKIP, held))
    if has_admission:
        results.append(
            ControlResult(
                baseline,
                "admission-policies",
                FAIL if admission_problem else PASS,
                admission_problem or "the baseline's admission policies are in force",
            )
        )
    return results


def _kept_ref(ref: ObjectRef) -> ObjectRef:
    """The reference a kept result holds, its names shared: the controls of every
    namespace are kept, and their object names repeat in each."""
    namespace = shared_str(ref.namespace) if ref.namespace else ref.namespace
    return ObjectRef(ref.kind, namespace, shared_str(ref.name))


def audit_results(baseline: str, outcome_message: str, compliant: bool) -> list[ControlResult]:
    """An Audit-mode baseline holds nothing: one result says what enforcing would change."""
    return [
        ControlResult(
            baseline,
            "audit-mode",
            SKIP,
            "Audit mode: nothing is enforced here"
            + ("" if compliant else f"; enforcing would {outcome_message.removeprefix('would ')}"),
        )
    ]
