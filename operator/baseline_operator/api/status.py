"""The `status` of a SecurityBaseline: what the operator found and did."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from baseline_operator.api.base import ApiModel

# Lists in status are bounded so that a large cluster cannot grow the object without end.
MAX_REPORTED = 20

ConditionReason = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024
    ),
]
ShortText = Annotated[str, StringConstraints(max_length=1024)]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: Annotated[
        str,
        StringConstraints(
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            max_length=316,
        ),
    ] = Field(description="Ready, Degraded or Conflicted.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation the condition was computed for."
    )
    last_transition_time: str = Field(
        description="When the status last changed (not when it was last checked).",
        json_schema_extra={"format": "date-time"},
    )
    reason: ConditionReason = Field(description="A CamelCase word for the cause.")
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="What happened, for people."
    )


class NamespaceCounts(ApiModel):
    selected: int = Field(default=0, ge=0, description="Namespaces the baseline applies to.")
    compliant: int = Field(default=0, ge=0, description="Namespaces that hold the posture.")
    drifted: int = Field(
        default=0,
        ge=0,
        description="Namespaces that differ from the posture (Audit mode: would change).",
    )
    failed: int = Field(default=0, ge=0, description="Namespaces where a write failed.")
    conflicted: int = Field(
        default=0,
        ge=0,
        description="Namespaces where an object the operator did not make holds a wanted name.",
    )
    superseded: int = Field(
        default=0,
        ge=0,
        description="Namespaces where a higher-priority baseline holds what only one can hold.",
    )


class NamespaceReport(ApiModel):
    namespace: ShortText = Field(description="The namespace.")
    reason: ConditionReason = Field(
        description="ApplyFailed, Conflicted, Superseded, Drifted or WouldChange."
    )
    message: ShortText = Field(description="What is wrong, for people.")


class WorkloadCounts(ApiModel):
    pods: int = Field(default=0, ge=0, description="Pods checked.")
    non_compliant_pods: int = Field(default=0, ge=0, description="Pods with findings.")
    findings: int = Field(default=0, ge=0, description="Failing findings over all pods.")
    skipped: int = Field(
        default=0,
        ge=0,
        description=(
            "Findings an active BaselineException waives (reported as skip, with the"
            " exception's name and expiry, in the namespace's PolicyReport)."
        ),
    )


class WorkloadReport(ApiModel):
    namespace: ShortText = Field(description="The pod's namespace.")
    pod: ShortText = Field(description="The pod's name.")
    checks: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=32, description="Ids of the checks the pod fails."
    )


class PodSecurityPreview(ApiModel):
    namespace: ShortText = Field(description="The namespace whose enforce level would rise.")
    level: ShortText = Field(description="The enforce level that was tried.")
    warnings: list[ShortText] = Field(
        default_factory=list,
        max_length=MAX_REPORTED,
        description="The API server's warnings about existing pods the level would reject.",
    )


class ExceptionCounts(ApiModel):
    active: int = Field(default=0, ge=0, description="BaselineExceptions of it in force now.")
    invalid: int = Field(
        default=0,
        ge=0,
        description="BaselineExceptions naming it that are Invalid (they waive nothing).",
    )
    next_expiry: str | None = Field(
        default=None,
        description="When the next active exception expires (absent when none is active).",
        json_schema_extra={"format": "date-time"},
    )


class SecurityBaselineStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Degraded and Conflicted.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    namespaces: NamespaceCounts | None = Field(
        default=None, description="How many selected namespaces are in which state."
    )
    non_compliant: list[NamespaceReport] = Field(
        default_factory=list,
        max_length=MAX_REPORTED,
        description=f"Up to {MAX_REPORTED} namespaces that are not compliant, and why.",
    )
    workloads: WorkloadCounts | None = Field(
        default=None, description="Pods checked against the hardening checklist."
    )
    non_compliant_workloads: list[WorkloadReport] = Field(
        default_factory=list,
        max_length=MAX_REPORTED,
        description=f"Up to {MAX_REPORTED} pods that fail hardening checks.",
    )
    exceptions: ExceptionCounts | None = Field(
        default=None, description="The BaselineExceptions that name this baseline."
    )
    pod_security_preview: list[PodSecurityPreview] = Field(
        default_factory=list,
        max_length=MAX_REPORTED,
        description=(
            "Namespaces whose existing pods the wanted enforce level would reject, with the"
            " API server's warnings."
        ),
    )
