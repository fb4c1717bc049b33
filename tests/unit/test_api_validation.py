"""Invalid baselines are refused by the models and by the generated CRD, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.api.crd import build_crd
from baseline_operator.api.resource import InvalidBaseline, parse_baseline
from tests.support.corpus import EXAMPLES, INVALID, expectations
from tests.support.crd_schema import validate

SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_models_refuse_with_the_field_named(path: Path) -> None:
    expected = expectations(path)
    with pytest.raises(InvalidBaseline) as caught:
        parse_baseline(yaml.safe_load(path.read_text()))
    errors = caught.value.errors
    assert any(error.path.startswith(expected["error"]) for error in errors), errors
    if "message" in expected:
        assert any(expected["message"] in str(error) for error in errors), errors


@pytest.mark.parametrize(
    "path",
    [path for path in INVALID if expectations(path).get("refused-by") != "operator"],
    ids=lambda path: path.stem,
)
def test_crd_schema_refuses_with_the_field_named(path: Path) -> None:
    expected = expectations(path)
    errors = validate(yaml.safe_load(path.read_text()), SCHEMA)
    assert errors, "the CRD schema accepted an invalid baseline"
    # Rules at the root (on metadata.name) name the field in their message.
    assert any(
        where.startswith(expected["error"]) or message.startswith(expected["error"])
        for where, message in errors
    ), errors


@pytest.mark.parametrize(
    "path",
    [path for path in INVALID if expectations(path).get("refused-by") == "operator"],
    ids=lambda path: path.stem,
)
def test_rules_only_the_operator_checks_pass_the_schema(path: Path) -> None:
    # These reach the operator, which reports Ready=False reason=InvalidSpec and writes nothing.
    assert validate(yaml.safe_load(path.read_text()), SCHEMA) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_examples_are_valid_everywhere(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        parse_baseline(document)
        assert validate(document, SCHEMA) == []


def _spec(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": "b"},
        "spec": {"namespaceSelector": {}, **spec},
    }


@pytest.mark.parametrize("port", [1, 65535, "http", "web-8080", "h2c"], ids=str)
def test_valid_ports_are_accepted_by_both(port: object) -> None:
    body = _spec(networkPolicy={"ingress": [{"name": "r", "ports": [{"port": port}]}]})
    parse_baseline(body)
    assert validate(body, SCHEMA) == []


@pytest.mark.parametrize("port", [0, 65536, "8080", "-web", "web-", "a--b", "x" * 16, True])
def test_invalid_ports_are_refused_by_both(port: object) -> None:
    body = _spec(networkPolicy={"ingress": [{"name": "r", "ports": [{"port": port}]}]})
    with pytest.raises(InvalidBaseline):
        parse_baseline(body)
    assert validate(body, SCHEMA) != []


@pytest.mark.parametrize("quantity", ["500m", "1Gi", "2", 2, "0.5", "1e3", "100Ki"], ids=str)
def test_valid_quantities_are_accepted_by_both(quantity: object) -> None:
    body = _spec(resources={"quota": {"hard": {"requests.cpu": quantity}}})
    parse_baseline(body)
    assert validate(body, SCHEMA) == []


@pytest.mark.parametrize("quantity", ["", "1GB", "-1", -1, "1.2.3", "m", 1.5, True])
def test_invalid_quantities_are_refused_by_both(quantity: object) -> None:
    body = _spec(resources={"quota": {"hard": {"requests.cpu": quantity}}})
    with pytest.raises(InvalidBaseline):
        parse_baseline(body)
    assert validate(body, SCHEMA) != []


def test_every_schema_property_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in node.get("properties", {}).items():
            child_path = f"{path}.{name}"
            if not child.get("description") and child_path not in {".metadata"}:
                missing.append(child_path)
            walk(child, child_path)
        if "items" in node:
            walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + "{}")

    walk(SCHEMA, "")
    assert missing == []
