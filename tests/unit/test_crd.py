"""The checked-in CRD is the generator's output, and the generator emits a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from baseline_operator.api.crd import build_crd
from baseline_operator.cli import main

CRD_FILE = Path(__file__).parents[2] / "crds" / "securitybaselines.security.baseline.dev.yaml"


def test_checked_in_crd_equals_generator_output() -> None:
    result = CliRunner().invoke(main, ["crd", "--kind", "SecurityBaseline"])
    assert result.exit_code == 0
    assert CRD_FILE.read_text() == result.output, (
        "crds/ is stale: regenerate it with `baseline-operator crd --kind SecurityBaseline`"
    )


def test_crd_prints_exactly_what_crds_holds() -> None:
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0
    files = sorted(CRD_FILE.parent.glob("*.yaml"))
    assert "".join(path.read_text() for path in files) == result.output


def test_crd_names_follow_the_design() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "securitybaselines.security.baseline.dev"
    assert spec["group"] == "security.baseline.dev"
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == "SecurityBaseline"
    assert spec["names"]["shortNames"] == ["sbl"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    # The wide columns and their order are tests/unit/test_printer_columns.py's business.
    assert {"Mode", "Selected", "Compliant", "Ready", "Age"} <= set(columns)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, child in node.get("properties", {}).items():
            found.extend(_walk(child, f"{path}.{key}"))
        if "items" in node:
            found.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text
    assert "$defs" not in text
    for path, node in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
            continue
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        assert node.get("type") != "null", path
        if (
            node["type"] == "object" and path != ".metadata"
        ):  # the server supplies metadata's schema
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), path
            assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert "items" in node, path


def test_cel_rules_have_bounded_inputs() -> None:
    # The API server estimates CEL cost from maxItems/maxLength/maxProperties;
    # unbounded lists and strings under a rule make it refuse the CRD.
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, path


def test_api_reference_is_generated_from_the_schema() -> None:
    from baseline_operator.api.reference import render_reference

    reference = (CRD_FILE.parents[1] / "docs" / "api.md").read_text()
    assert reference == render_reference(), (
        "docs/api.md is stale: python -m baseline_operator.api.reference > docs/api.md"
    )
    assert "`spec.networkPolicy.ingress[].ports[].port`" in reference


def test_every_spec_list_map_and_string_is_bounded_and_says_so() -> None:
    # Issue 8, item 5: every input a CEL rule can reach is bounded, and `kubectl explain`
    # shows the cap in the description (a user meets it before the server's cost check).
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in _walk(spec, "spec"):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node, path
        caps = {"maxItems": "items", "maxProperties": "entries"}
        for key, word in caps.items():
            if key in node and node.get("description"):
                assert f"{node[key]} {word}" in node["description"], path
