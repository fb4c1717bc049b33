"""The offline commands: clear output, exit codes, and one clear line for unreadable input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from baseline_operator.cli import main

ROOT = Path(__file__).parents[2]
PRODUCTION = str(ROOT / "manifests/examples/production.yaml")
INVALID = str(ROOT / "tests/corpus/invalid/netpol-port-zero.yaml")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_render_prints_every_object_for_the_namespace() -> None:
    code, out, err = run("render", "-f", PRODUCTION, "--namespace", "shop")
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    kinds = [obj["kind"] for obj in objects]
    assert kinds[0] == "Namespace"
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "LimitRange",
        "ResourceQuota",
        "ExternalSecret",
        "ValidatingAdmissionPolicy",
    } <= set(kinds)
    assert all(obj["metadata"].get("namespace") in (None, "shop") for obj in objects)
    assert "labels env=production" in err


def test_render_json_and_labels_that_do_not_select() -> None:
    code, out, err = run("render", "-f", PRODUCTION, "--labels", "env=dev", "-o", "json")
    assert code == 0
    assert json.loads(out) == {"apiVersion": "v1", "kind": "List", "items": []}
    assert "does not select namespace demo" in err


def test_render_of_an_invalid_baseline_lists_errors_and_fails() -> None:
    code, out, err = run("render", "-f", INVALID)
    assert code == 1
    assert out == ""
    assert "spec.networkPolicy.ingress[0].ports[0].port" in err


def test_validate_reports_valid_and_invalid_baselines() -> None:
    code, out, _ = run("validate", "-f", PRODUCTION)
    assert (code, out.strip()) == (0, f"{PRODUCTION}: baseline production is valid")
    code, _, err = run("validate", "-f", INVALID)
    assert code == 1
    assert "baseline broken is invalid" in err
    assert "spec.networkPolicy.ingress[0].ports[0].port: port 0 is outside 1-65535" in err


def test_validate_reads_stdin_and_every_document() -> None:
    two = Path(PRODUCTION).read_text() + "\n---\n" + Path(INVALID).read_text()
    code, out, err = run("validate", "-f", "-", stdin=two)
    assert code == 1
    assert "production is valid" in out
    assert "broken is invalid" in err


@pytest.mark.parametrize(
    ("stdin", "path", "message"),
    [
        (None, "/no/such/file.yaml", "/no/such/file.yaml: no such file"),
        ("a: [1, 2\n", "-", "<stdin>:2: invalid YAML"),
        ("apiVersion: v1\nkind: Pod\n", "-", "expected kind SecurityBaseline"),
        ("", "-", "no SecurityBaseline in it"),
        ("- 1\n- 2\n", "-", "expected a SecurityBaseline, found a list"),
    ],
    ids=["missing", "bad-yaml", "wrong-kind", "empty", "not-a-mapping"],
)
@pytest.mark.parametrize("command", ["validate", "render"])
def test_unreadable_input_is_one_line_and_exit_2(
    command: str, stdin: str | None, path: str, message: str
) -> None:
    code, out, err = run(command, "-f", path, stdin=stdin)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err
    assert "Traceback" not in err


def test_crd_command_prints_the_crd() -> None:
    code, out, _ = run("crd")
    assert code == 0
    kinds = [document["kind"] for document in yaml.safe_load_all(out)]
    assert kinds == ["CustomResourceDefinition"] * 2


def test_the_demo_embeds_the_examples_unchanged() -> None:
    embedded = ROOT / "operator/baseline_operator/demo/examples"
    examples = ROOT / "manifests/examples"
    assert sorted(p.name for p in embedded.glob("*.yaml")) == sorted(
        p.name for p in examples.glob("*.yaml")
    )
    for path in examples.glob("*.yaml"):
        assert (embedded / path.name).read_text() == path.read_text()
