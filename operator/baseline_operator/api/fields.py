"""Validated scalar types shared by the SecurityBaseline models.

Each type carries its own pattern and length limits, so that the same rule
shows up in the pydantic validation (the offline CLI, the operator) and in the
CRD schema generated from the models (the API server). The patterns are
written in the common subset of RE2 (Go, the API server) and Rust regex
(pydantic-core): no look-arounds, no back-references.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label or annotation key: an optional DNS-subdomain prefix and a name.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A non-negative resource quantity, as the API server's resource.Quantity parses it.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# An IANA service name (a named container port): no leading, trailing or double hyphen.
PORT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9]|-[a-z0-9])*$"
# A Go duration as the External Secrets Operator reads refreshInterval, e.g. 1h, 30m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
PSA_VERSION_PATTERN = r"^(latest|v1\.(0|[1-9][0-9]*))$"
CIDR_PATTERN = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
# Image reference prefix: a registry host (optionally with a port) and an optional path.
REGISTRY_PREFIX_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[-a-z0-9._/]*)?$"


def _check_qualified_name(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if len(name) > 63:
        raise ValueError(f"the name part of {value!r} is longer than 63 characters")
    if len(prefix) > 253:
        raise ValueError(f"the prefix of {value!r} is longer than 253 characters")
    return value


def _check_port_name(value: str) -> str:
    if not any(ch.isalpha() for ch in value):
        raise ValueError(f"named port {value!r} must contain at least one letter")
    return value


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR: {exc}") from None
    return value


DNSLabel = Annotated[
    str,
    StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63),
    Field(description="A DNS-1123 label: lower-case letters, digits and '-', at most 63."),
]
DNSSubdomain = Annotated[
    str,
    StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253),
]
QualifiedName = Annotated[
    str,
    StringConstraints(pattern=QUALIFIED_NAME_PATTERN, min_length=1, max_length=317),
    AfterValidator(_check_qualified_name),
]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
QuantityString = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]


def _validate_quantity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a quantity: a number or a string such as 500m, 1Gi or 2")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity {value} must not be negative")
        return value
    if len(value) > 64 or not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a quantity (expected e.g. 500m, 256Mi, 2)")
    return value


def _validate_port(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a port number (1-65535) or a port name")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is outside 1-65535")
        return value
    if len(value) > 15 or not re.fullmatch(PORT_NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a port name (at most 15 lower-case letters, digits and"
            " single inner hyphens)"
        )
    return _check_port_name(value)


# Integer-or-string in the CRD: the only `anyOf` form a structural schema allows for it.
# `pattern` applies to the string form, `minimum`/`maximum` to the integer form.
Quantity = Annotated[
    int | str,
    PlainValidator(_validate_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
        }
    ),
]
Port = Annotated[
    int | str,
    PlainValidator(_validate_port),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": PORT_NAME_PATTERN,
            "maxLength": 15,
            "minimum": 1,
            "maximum": 65535,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int || self.matches('[a-z]')",
                    "message": "a named port must contain at least one letter",
                }
            ],
        }
    ),
]
PortNumber = Annotated[int, Strict(), Field(ge=1, le=65535)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
PodSecurityVersion = Annotated[str, StringConstraints(pattern=PSA_VERSION_PATTERN, max_length=16)]
CIDR = Annotated[
    str, StringConstraints(pattern=CIDR_PATTERN, max_length=43), AfterValidator(_check_cidr)
]
RegistryPrefix = Annotated[
    str, StringConstraints(pattern=REGISTRY_PREFIX_PATTERN, min_length=1, max_length=253)
]


# Binary and decimal suffixes of resource.Quantity.
_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exponent>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)))?$"
)


def parse_quantity(value: Any) -> Decimal:
    """The numeric value of a Kubernetes quantity ("500m" -> 0.5, "1Gi" -> 1073741824)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a quantity")
    match = _QUANTITY_RE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity")
    number = Decimal(match["number"])
    if match["exponent"] is not None:
        return number * (Decimal(10) ** Decimal(match["exponent"]))
    return number * _QUANTITY_SUFFIXES[match["suffix"] or ""]
