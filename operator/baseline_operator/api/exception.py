"""The BaselineException resource: a narrow, reviewed, expiring relaxation of one baseline.

A BaselineException is kept apart from the SecurityBaseline so that RBAC and Git
review can separate who sets the posture from who grants exceptions. What the
schema can refuse (no reason, no expiry, an unknown check id, both or neither of
namespaces and namespaceSelector) it refuses, in the models and, as CEL, in the
CRD; what it cannot (an expiry beyond the baseline's maxDuration, a baseline that
does not exist) the operator reports as `Invalid` in the exception's status
(`policy.exceptions` decides).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from baseline_operator.api.base import ApiModel, cel
from baseline_operator.api.fields import DNSLabel
from baseline_operator.api.resource import InvalidBaseline, SpecError, _errors_from
from baseline_operator.api.spec import LabelSelector, PodSecurityLevel
from baseline_operator.api.status import Condition

EXCEPTION_KIND = "BaselineException"
EXCEPTION_PLURAL = "baselineexceptions"
EXCEPTION_SINGULAR = "baselineexception"
EXCEPTION_SHORT_NAME = "sbx"


# The checklist's check ids (policy.checklist.CHECK_IDS, in the same order: a test says so),
# listed here because the API layer may not import the policy layer.
class CheckId(StrEnum):
    """A hardening check of the checklist, by id (docs/checks.md)."""

    PRIVILEGED = "privileged"
    HOST_NAMESPACES = "host-namespaces"
    HOST_PATH = "host-path"
    ALLOWED_REGISTRIES = "allowed-registries"
    REQUIRED_LABELS = "required-labels"
    RESOURCE_REQUESTS = "resource-requests"
    RUN_AS_NON_ROOT = "run-as-non-root"
    PRIVILEGE_ESCALATION = "privilege-escalation"
    CAPABILITIES = "capabilities"
    READ_ONLY_ROOT_FILESYSTEM = "read-only-root-filesystem"
    SECCOMP_PROFILE = "seccomp-profile"
    HOST_PORT = "host-port"
    RESOURCE_LIMITS = "resource-limits"
    IMAGE_TAG = "image-tag"


# RFC 3339 as the API server's `format: date-time` reads it: a date, `T`, a time with
# optional fractions of a second, and `Z` or an offset (a timezone is required).
RFC3339_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (timezone required) as an aware datetime in UTC."""
    if not re.fullmatch(RFC3339_PATTERN, value):
        raise ValueError(f"{value!r} is not an RFC 3339 time such as 2026-03-31T00:00:00Z")
    text = value.replace("t", "T").replace("z", "Z")
    try:
        moment = datetime.fromisoformat(text.replace(":60", ":59"))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an RFC 3339 time: {exc}") from None
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """UTC, seconds precision, `Z`: how the API server writes metav1.Time."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_time(value: str) -> str:
    parse_time(value)
    return value


Rfc3339 = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_check_time),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN, "maxLength": 64}
    ),
]
Text = Annotated[str, StringConstraints(max_length=1024)]


class ExceptionPodSecurity(ApiModel):
    enforce: PodSecurityLevel = Field(
        description=(
            "The Pod Security enforce level the namespaces hold while the exception is"
            " active: privileged or baseline (a level at or above the baseline's own changes"
            " nothing). audit and warn stay at the baseline's levels, so the gap stays visible."
        )
    )


_NAMESPACE_FORMS = "exactly one of namespaces and namespaceSelector must be set"
_WAIVES_SOMETHING = "an exception must waive checks or set podSecurity.enforce (or both)"
_POD_SECURITY_IS_PER_NAMESPACE = (
    "podSecurity cannot be combined with workloadSelector: the Pod Security label applies to"
    " the whole namespace"
)


class BaselineExceptionSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.namespaces) != has(self.namespaceSelector)",
                    _NAMESPACE_FORMS,
                ),
                cel(
                    "(has(self.checks) && size(self.checks) > 0) || has(self.podSecurity)",
                    _WAIVES_SOMETHING,
                ),
                cel(
                    "!has(self.podSecurity) || !has(self.workloadSelector)",
                    _POD_SECURITY_IS_PER_NAMESPACE,
                    ".podSecurity",
                ),
            ]
        }
    )

    baseline: DNSLabel = Field(
        description="The name of the SecurityBaseline this exception relaxes."
    )
    namespaces: list[DNSLabel] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The namespaces it applies to, by name (or namespaceSelector, not both).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "The namespaces it applies to, by their labels (or namespaces, not both)."
            " Admission reads the namespace's labels when a workload is created or changed."
        ),
    )
    workload_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Narrows the exception to pods whose labels match (for a controller: the labels"
            " of its pod template); omitted means every pod of the namespaces."
        ),
    )
    checks: list[CheckId] = Field(
        default_factory=list,
        max_length=len(CheckId),
        description=(
            "The hardening checks it waives, by the checklist's ids (docs/checks.md):"
            " admission admits what they would refuse and the workload audit reports their"
            " findings as skip."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    pod_security: ExceptionPodSecurity | None = Field(
        default=None,
        description="A lower Pod Security enforce level for the namespaces while it is active.",
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Why the exception is needed (required, non-empty)."
    )
    ticket: Text | None = Field(
        default=None, description="A ticket or change request that tracks it (a URL or an id)."
    )
    owner: Text | None = Field(
        default=None, description="Who is accountable for ending it (a team or a person)."
    )
    expires: Rfc3339 = Field(
        description=(
            "When it ends, in RFC 3339 (2026-03-31T00:00:00Z); at most the baseline's"
            " exceptions.maxDuration after its creation (90 days by default), or it is Invalid."
        )
    )

    @model_validator(mode="after")
    def _cross_field(self) -> BaselineExceptionSpec:
        if (self.namespaces is None) == (self.namespace_selector is None):
            raise ValueError(_NAMESPACE_FORMS)
        if not self.checks and self.pod_security is None:
            raise ValueError(_WAIVES_SOMETHING)
        if self.pod_security is not None and self.workload_selector is not None:
            raise ValueError(_POD_SECURITY_IS_PER_NAMESPACE)
        seen: set[str] = set()
        for check in self.checks:
            if check in seen:
                raise ValueError(f"checks: {check.value!r} appears more than once")
            seen.add(check)
        if self.namespaces is not None and len(set(self.namespaces)) != len(self.namespaces):
            raise ValueError("namespaces: a namespace appears more than once")
        return self

    @property
    def expires_at(self) -> datetime:
        return parse_time(self.expires)


class ExceptionState(StrEnum):
    ACTIVE = "Active"
    EXPIRED = "Expired"
    INVALID = "Invalid"


class BaselineExceptionStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this status describes."
    )
    state: ExceptionState | None = Field(
        default=None, description="Active, Expired or Invalid (the condition that is True)."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Active (it is in force), Expired (its time has passed) and Invalid (it waives"
            " nothing: reason BeyondMaxDuration, BaselineNotFound or InvalidSpec)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ExceptionMeta(ApiModel):
    """The part of metadata the operator reads; everything else is kept as it is."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="The exception's name."
    )
    generation: int | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None


class BaselineException(ApiModel):
    api_version: Literal["security.baseline.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["BaselineException"]
    metadata: ExceptionMeta
    spec: BaselineExceptionSpec
    status: BaselineExceptionStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def created_at(self) -> datetime | None:
        """metadata.creationTimestamp, when the object has one (the API server sets it)."""
        stamp = self.metadata.creation_timestamp
        return parse_time(stamp) if stamp else None


class InvalidException(InvalidBaseline):
    """The input is not a valid BaselineException; `errors` says every reason."""


def parse_exception(body: Any) -> BaselineException:
    """Validate a raw BaselineException body; raise InvalidException with every error."""
    if not isinstance(body, dict):
        raise InvalidException([SpecError("", "a BaselineException must be a mapping")])
    try:
        return BaselineException.model_validate(body)
    except ValidationError as exc:
        raise InvalidException(_errors_from(exc)) from None


__all__ = [
    "EXCEPTION_KIND",
    "EXCEPTION_PLURAL",
    "EXCEPTION_SHORT_NAME",
    "EXCEPTION_SINGULAR",
    "BaselineException",
    "BaselineExceptionSpec",
    "BaselineExceptionStatus",
    "CheckId",
    "ExceptionMeta",
    "ExceptionPodSecurity",
    "ExceptionState",
    "InvalidException",
    "format_time",
    "parse_exception",
    "parse_time",
]
