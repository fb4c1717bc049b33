"""The API reference (docs/api.md), written from the generated CRD schema.

The reference is generated so that it cannot drift from the schema the API
server enforces; a test fails when docs/api.md differs from this output.
Regenerate with `python -m baseline_operator.api.reference > docs/api.md`.
"""

from __future__ import annotations

from typing import Any

from baseline_operator.api.crd import build_crd, build_exception_crd

Schema = dict[str, Any]


def _type_of(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type_of(node['additionalProperties'])}"
    return str(kind)


def _rules(node: Schema) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("maxProperties", "max entries"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    if node.get("x-kubernetes-list-type") == "set":
        parts.append("unique items")
    for rule in node.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule['message']}")
    return "; ".join(parts).replace("|", "\\|")


def _rows(node: Schema, path: str, required: bool, rows: list[str]) -> None:
    description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
    mark = " (required)" if required else ""
    rows.append(f"| `{path}`{mark} | {_type_of(node)} | {description} | {_rules(node)} |")
    target = node
    suffix = ""
    if node.get("type") == "array":
        target, suffix = node.get("items", {}), "[]"
    elif isinstance(node.get("additionalProperties"), dict):
        target, suffix = node["additionalProperties"], ".*"
    for name, child in target.get("properties", {}).items():
        _rows(child, f"{path}{suffix}.{name}", name in target.get("required", []), rows)


def _sections(root: Schema, heading: str) -> list[str]:
    lines: list[str] = []
    for section in ("spec", "status"):
        rows: list[str] = []
        _rows(root["properties"][section], section, section == "spec", rows)
        lines += [
            "",
            f"{heading} {section}",
            "",
            "| field | type | description | validation |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    return lines


def _rules_at_root(node: Schema) -> list[str]:
    """The object-level rules of a spec (or the root): they name no single field."""
    return [f"- {rule['message']}" for rule in node.get("x-kubernetes-validations", [])]


def render_reference() -> str:
    version = build_crd()["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        "# API reference: SecurityBaseline (security.baseline.dev/v1alpha1)",
        "",
        "Generated from the CRD schema (`python -m baseline_operator.api.reference`);"
        " `kubectl explain securitybaselines.spec` shows the same descriptions.",
        "Cluster-scoped; short name `sbl`. Rules the schema cannot express (CIDR"
        " containment, the order of LimitRange quantities) are checked by the operator,"
        " which reports `Ready=False, reason=InvalidSpec` and writes nothing.",
        "",
    ]
    lines += _rules_at_root(root)
    lines += _sections(root, "##")
    exception = build_exception_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines += [
        "",
        "# BaselineException (security.baseline.dev/v1alpha1)",
        "",
        "Cluster-scoped; short name `sbx`; see [exceptions](exceptions.md)."
        " `kubectl explain baselineexceptions.spec` shows the same descriptions."
        " Rules the schema cannot express (an expiry beyond the baseline's"
        " `exceptions.maxDuration` after creation, a baseline that does not exist) are"
        " checked by the operator, which marks the exception `Invalid` and lets it waive"
        " nothing.",
    ]
    lines += _sections(exception, "###")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_reference(), end="")
