"""The CustomResourceDefinition, generated from the pydantic models.

pydantic emits JSON Schema 2020-12; the API server wants a *structural*
OpenAPI v3 schema: no `$ref`, no `type: null`, `anyOf` only in the
integer-or-string form, no `additionalProperties: false` beside
`properties`, no `propertyNames`. `to_structural` rewrites one into the
other, and `build_crd` wraps it in the CRD with the names from DESIGN.md.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from baseline_operator.api.exception import (
    EXCEPTION_KIND,
    EXCEPTION_PLURAL,
    EXCEPTION_SHORT_NAME,
    EXCEPTION_SINGULAR,
    BaselineExceptionSpec,
    BaselineExceptionStatus,
)
from baseline_operator.api.fields import DNS_LABEL_PATTERN
from baseline_operator.api.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
)
from baseline_operator.api.spec import SecurityBaselineSpec
from baseline_operator.api.status import SecurityBaselineStatus

Schema = dict[str, Any]

# Keywords of JSON Schema that the API server's structural schema keeps as they are.
_KEPT = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "anyOf",
    "nullable",
}


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI schema of one model (spec or status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return to_structural(raw, definitions)


def to_structural(node: Schema, definitions: dict[str, Schema]) -> Schema:
    node = _resolve(node, definitions)

    # Optional[X] arrives as anyOf [X, {type: null}]: an absent field is the structural way.
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [_resolve(branch, definitions) for branch in node["anyOf"]]
        non_null = [branch for branch in branches if branch.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express this union in a structural schema: {node}")
        merged = {key: value for key, value in node.items() if key != "anyOf"}
        return to_structural({**non_null[0], **merged}, definitions)

    result: Schema = {}
    for key, value in node.items():
        if key == "properties":
            result[key] = {name: to_structural(child, definitions) for name, child in value.items()}
        elif key == "items":
            result[key] = to_structural(value, definitions)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result[key] = to_structural(value, definitions)
            # `false` (pydantic's extra="forbid") is implied by `properties`: the server prunes.
        elif key == "patternProperties":
            # pydantic writes a dict with constrained keys as {key pattern: value schema}.
            ((pattern, child),) = value.items()
            result["additionalProperties"] = to_structural(child, definitions)
            key_schema = {**node.get("propertyNames", {}), "pattern": pattern}
            result.setdefault("x-kubernetes-validations", []).append(_key_rule(key_schema))
        elif key == "propertyNames":
            if "patternProperties" not in node:
                result.setdefault("x-kubernetes-validations", []).append(_key_rule(value))
        elif key == "default":
            if isinstance(value, str | int | bool | float):
                result[key] = value
        elif key == "const":
            result["enum"] = [value]
        elif key == "x-kubernetes-validations":
            result.setdefault(key, []).extend(value)
        elif key.startswith("x-kubernetes-") or key in _KEPT:
            result[key] = copy.deepcopy(value)
        # title, $schema, examples ... carry nothing the server uses.

    if "properties" in result:
        result["type"] = "object"
    if (
        result.get("type") == "object"
        and "properties" not in result
        and ("additionalProperties" not in result)
    ):
        result["x-kubernetes-preserve-unknown-fields"] = True
    return result


def document_caps(node: Schema) -> Schema:
    """Say every list's, map's and string's cap in its description, where `kubectl explain`
    shows it: the caps keep the cost of the CEL rules bounded, and a user meets them."""
    description = node.get("description")
    caps = []
    if "maxItems" in node:
        caps.append(f"at most {node['maxItems']} items")
    if "maxProperties" in node:
        caps.append(f"at most {node['maxProperties']} entries")
    if "maxLength" in node and node.get("type") == "string" and "enum" not in node:
        caps.append(f"at most {node['maxLength']} characters")
    if description and caps and "at most" not in description.lower():
        text = ", ".join(caps)
        node["description"] = f"{description.rstrip().rstrip('.')}. {text[0].upper()}{text[1:]}."
    for child in node.get("properties", {}).values():
        document_caps(child)
    if isinstance(node.get("items"), dict):
        document_caps(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        document_caps(node["additionalProperties"])
    return node


def _resolve(node: Schema, definitions: dict[str, Schema]) -> Schema:
    """Inline `$ref` (and pydantic's allOf-of-one-ref) keeping the referring node's keys."""
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_resolve(inner, definitions), **node}
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        target = copy.deepcopy(definitions[name])
        node = {**_resolve(target, definitions), **node}
    return node


def _key_rule(key_schema: Schema) -> dict[str, str]:
    """Map keys: JSON Schema's propertyNames becomes a CEL rule over the keys."""
    pattern = key_schema.get("pattern")
    max_length = key_schema.get("maxLength")
    checks = []
    if pattern:
        checks.append(f"k.matches({json.dumps(pattern)})")
    if max_length:
        checks.append(f"size(k) <= {max_length}")
    return {
        "rule": f"self.all(k, {' && '.join(checks) or 'true'})",
        "message": f"every key must match {pattern} and be at most {max_length} characters",
    }


def printer_columns() -> list[Schema]:
    """What `kubectl get sbl` shows; `priority: 1` columns only with `-o wide`."""
    ready = '.status.conditions[?(@.type=="Ready")]'
    wide = {"priority": 1}
    return [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority", **wide},
        {"name": "Selected", "type": "integer", "jsonPath": ".status.namespaces.selected"},
        {"name": "Compliant", "type": "integer", "jsonPath": ".status.namespaces.compliant"},
        {
            "name": "Conflicted",
            "type": "integer",
            "jsonPath": ".status.namespaces.conflicted",
            **wide,
        },
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason", **wide},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


_NAME_RULES: list[Schema] = [
    {
        "rule": "size(self.metadata.name) <= 63",
        "message": "metadata.name must be at most 63 characters: it becomes a label key",
    },
    {
        "rule": f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
        "message": ("metadata.name must be a DNS-1123 label (lower-case letters, digits, '-')"),
    },
]


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_name: str,
    root: Schema,
    columns: list[Schema],
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "baseline-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short_name],
                "categories": ["security"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def build_crd() -> Schema:
    """The SecurityBaseline CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec_schema = document_caps(model_schema(SecurityBaselineSpec))
    spec_schema["description"] = (
        "The security posture every selected namespace must hold. Sections that are"
        " omitted are not managed."
    )
    status_schema = model_schema(SecurityBaselineStatus)
    status_schema["description"] = "What the operator found and did."
    root: Schema = {
        "type": "object",
        "description": (
            "A security posture (Pod Security labels, network policies, RBAC, external"
            " secrets, resource defaults, admission rules) that the operator keeps in every"
            " namespace the baseline selects."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "security.baseline.dev/v1alpha1"},
            "kind": {"type": "string", "description": "SecurityBaseline"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": copy.deepcopy(_NAME_RULES),
    }
    return _crd(
        kind=KIND,
        plural=PLURAL,
        singular=SINGULAR,
        short_name=SHORT_NAME,
        root=root,
        columns=printer_columns(),
    )


def exception_printer_columns() -> list[Schema]:
    """What `kubectl get sbx` shows."""
    return [
        {"name": "Baseline", "type": "string", "jsonPath": ".spec.baseline"},
        {"name": "Namespaces", "type": "string", "jsonPath": ".spec.namespaces"},
        # A string, not a date: kubectl shows a date column as an age, and an age of a
        # moment in the future is "<invalid>".
        {"name": "Expires", "type": "string", "jsonPath": ".spec.expires"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Reason", "type": "string", "jsonPath": ".spec.reason", "priority": 1},
    ]


def build_exception_crd() -> Schema:
    """The BaselineException CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec_schema = document_caps(model_schema(BaselineExceptionSpec))
    spec_schema["description"] = (
        "What the exception waives (checks, a lower Pod Security enforce level), where"
        " (namespaces, workloads), why, and until when."
    )
    status_schema = model_schema(BaselineExceptionStatus)
    status_schema["description"] = "Whether the operator holds the exception in force."
    root: Schema = {
        "type": "object",
        "description": (
            "A narrow, reviewed, expiring exception to one SecurityBaseline: named checks"
            " waived, or a lower Pod Security enforce level, for named namespaces (optionally"
            " only matching workloads) until it expires."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "security.baseline.dev/v1alpha1"},
            "kind": {"type": "string", "description": EXCEPTION_KIND},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return _crd(
        kind=EXCEPTION_KIND,
        plural=EXCEPTION_PLURAL,
        singular=EXCEPTION_SINGULAR,
        short_name=EXCEPTION_SHORT_NAME,
        root=root,
        columns=exception_printer_columns(),
    )


# The kinds `baseline-operator crd --kind` knows, and the file in crds/ each is checked into.
CRD_BUILDERS = {KIND: build_crd, EXCEPTION_KIND: build_exception_crd}
CRD_FILES = {
    KIND: f"{PLURAL}.{GROUP}.yaml",
    EXCEPTION_KIND: f"{EXCEPTION_PLURAL}.{GROUP}.yaml",
}


__all__ = [
    "API_VERSION",
    "CRD_BUILDERS",
    "CRD_FILES",
    "build_crd",
    "build_exception_crd",
    "exception_printer_columns",
    "model_schema",
    "printer_columns",
    "to_structural",
]
