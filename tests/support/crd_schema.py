"""A test-side model of how the API server validates an object against a CRD schema.

It covers what the generated schema uses: types (incl. integer-or-string),
enum, pattern, lengths, bounds, required, unknown fields (as kubectl's strict
field validation reports them), list-type set/map uniqueness, and CEL
`x-kubernetes-validations` evaluated with cel-python. It exists so the unit
tests can show, without a cluster, that the CRD refuses what the models refuse;
the e2e tests check the same against a real API server.
"""

from __future__ import annotations

import re
from typing import Any

import celpy

_CEL = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _CEL.program(_CEL.compile(rule))
    return _PROGRAMS[rule]


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """Every (field path, message) the server would refuse; [] when it accepts."""
    errors: list[tuple[str, str]] = []
    _check(value, schema, path, errors)
    return errors


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = schema.get("type")
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case None:
            return True
    raise AssertionError(f"unexpected type {expected}")


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[tuple[str, str]]) -> None:
    if not _type_ok(value, schema):
        errors.append((path, f"must be of type {schema.get('type', 'int-or-string')}"))
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append((path, f"Unsupported value: {value!r}"))
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append((path, f"should match {schema['pattern']!r}"))
        if len(value) > schema.get("maxLength", len(value)):
            errors.append((path, "Too long"))
        if len(value) < schema.get("minLength", 0):
            errors.append((path, "Too short"))
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append((path, f"should be greater than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((path, f"should be less than or equal to {schema['maximum']}"))
    if isinstance(value, list):
        _check_list(value, schema, path, errors)
    if isinstance(value, dict):
        _check_object(value, schema, path, errors)
    for rule in schema.get("x-kubernetes-validations", []):
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            where = path + rule.get("fieldPath", "")
            errors.append((where, rule["message"]))


def _check_list(
    value: list[Any], schema: dict[str, Any], path: str, errors: list[tuple[str, str]]
) -> None:
    if len(value) > schema.get("maxItems", len(value)):
        errors.append((path, "Too many items"))
    if len(value) < schema.get("minItems", 0):
        errors.append((path, "Too few items"))
    for index, item in enumerate(value):
        _check(item, schema.get("items", {}), f"{path}[{index}]", errors)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" and len({repr(item) for item in value}) != len(value):
        errors.append((path, "Duplicate value"))
    if list_type == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen = [tuple(item.get(key) for key in keys) for item in value if isinstance(item, dict)]
        if len(set(seen)) != len(seen):
            errors.append((path, "Duplicate value"))


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[tuple[str, str]]
) -> None:
    properties = schema.get("properties")
    for key in schema.get("required", []):
        if key not in value:
            errors.append((f"{path}.{key}", "Required value"))
    if len(value) > schema.get("maxProperties", len(value)):
        errors.append((path, "Too many properties"))
    if len(value) < schema.get("minProperties", 0):
        errors.append((path, "Too few properties"))
    for key, item in value.items():
        child_path = f"{path}.{key}" if path else key
        if properties is not None:
            if key in properties:
                _check(item, properties[key], child_path, errors)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append((child_path, "unknown field"))
        elif isinstance(schema.get("additionalProperties"), dict):
            _check(item, schema["additionalProperties"], child_path, errors)
