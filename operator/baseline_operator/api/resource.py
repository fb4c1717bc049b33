"""The SecurityBaseline resource as a whole, and turning raw input into it.

`parse_baseline` is the one door through which a SecurityBaseline body (from a
file, from the API server) becomes a model: it either returns the model or
raises `InvalidBaseline` carrying every error with its field path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from baseline_operator.api.base import ApiModel
from baseline_operator.api.fields import DNSLabel
from baseline_operator.api.spec import SecurityBaselineSpec
from baseline_operator.api.status import SecurityBaselineStatus

GROUP = "security.baseline.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SecurityBaseline"
PLURAL = "securitybaselines"
SINGULAR = "securitybaseline"
SHORT_NAME = "sbl"


class BaselineMeta(ApiModel):
    """The part of metadata the operator reads; everything else is kept as it is."""

    model_config = ConfigDict(extra="allow")

    name: DNSLabel = Field(
        description="The baseline's name: a DNS-1123 label of at most 63 characters."
    )
    generation: int | None = None
    uid: str | None = None
    deletion_timestamp: str | None = None


class SecurityBaseline(ApiModel):
    api_version: Literal["security.baseline.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SecurityBaseline"]
    metadata: BaselineMeta
    spec: SecurityBaselineSpec
    status: SecurityBaselineStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


@dataclass(frozen=True)
class SpecError:
    """One reason a baseline is refused: where (a field path) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidBaseline(ValueError):
    """The input is not a valid SecurityBaseline; `errors` says every reason."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def parse_baseline(body: Any) -> SecurityBaseline:
    """Validate a raw SecurityBaseline body; raise InvalidBaseline with every error."""
    if not isinstance(body, dict):
        raise InvalidBaseline([SpecError("", "a SecurityBaseline must be a mapping")])
    # Read-only server fields (managedFields, resourceVersion ...) are not ours to judge.
    try:
        return SecurityBaseline.model_validate(body)
    except ValidationError as exc:
        raise InvalidBaseline(_errors_from(exc)) from None


def parse_spec(spec: Any) -> SecurityBaselineSpec:
    """Validate just a spec (as the operator reads it from a watched body)."""
    try:
        return SecurityBaselineSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidBaseline(_errors_from(exc, prefix=("spec",))) from None


def _errors_from(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[SpecError]:
    errors: list[SpecError] = []
    for error in exc.errors(include_url=False):
        path = format_path((*prefix, *error["loc"]))
        message = _message(error)
        spec_error = SpecError(path, message)
        if spec_error not in errors:
            errors.append(spec_error)
    return errors


def _message(error: Any) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "string_pattern_mismatch":
        value = error.get("input")
        message = f"{value!r} does not match {error['ctx']['pattern']}"
    elif kind == "literal_error" or kind == "enum":
        value = error.get("input")
        message = f"{value!r} is not allowed: {message.removeprefix('Input should be ')}"
    return message


def format_path(loc: tuple[str | int, ...]) -> str:
    """('spec', 'ingress', 0, 'ports') -> 'spec.ingress[0].ports'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text
