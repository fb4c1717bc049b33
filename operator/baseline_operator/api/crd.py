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


def build_crd() -> Schema:
    """The complete apiextensions.k8s.io/v1 CustomResourceDefinition."""
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
        "x-kubernetes-validations": [
            {
                "rule": "size(self.metadata.name) <= 63",
                "message": "metadata.name must be at most 63 characters: it becomes a label key",
            },
            {
                "rule": f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
                "message": (
                    "metadata.name must be a DNS-1123 label (lower-case letters, digits, '-')"
                ),
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "baseline-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["security"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


__all__ = ["API_VERSION", "build_crd", "model_schema", "printer_columns", "to_structural"]
