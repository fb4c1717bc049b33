"""What a real API server refuses, what the operator refuses, and what `kubectl explain` shows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import SECURITY_BASELINE, ObjectRef
from tests.e2e.conftest import (
    CRD_FILE,
    E2E,
    NAMESPACES_AND_GENERATED,
    SPEC,
    Run,
    converged_on,
    eventually,
    kubectl,
    server_side_apply,
)
from tests.support.corpus import EXAMPLES, INVALID, expectations

pytestmark = pytest.mark.e2e


TEXTS = {path: path.read_text() for path in [*INVALID, *EXAMPLES]}
SCHEMA_REFUSES = [path for path in INVALID if expectations(path).get("refused-by") != "operator"]
OPERATOR_REFUSES = [path for path in INVALID if expectations(path).get("refused-by") == "operator"]


def renamed(body: dict[str, Any], run: Run) -> dict[str, Any]:
    """The body under a name of this run, unless its name is what the file is about."""
    body = copy.deepcopy(body)
    name = body["metadata"]["name"]
    if len(name) <= 40 and name.replace("-", "").isalnum() and name.islower():
        body["metadata"]["name"] = f"{run.prefix}-{name}"
    return body


@pytest.mark.parametrize("path", SCHEMA_REFUSES, ids=lambda path: path.stem)
async def test_the_server_refuses_what_the_schema_can_check(
    run: Run, admin: KubeApi, path: Path
) -> None:
    expected = expectations(path)
    body = renamed(yaml.safe_load(TEXTS[path]), run)
    answer = await server_side_apply(admin, SECURITY_BASELINE, body, dry_run=True)
    # Server-side apply answers 500 for two list-map items with one key ("failed to create
    # typed patch object ... duplicate entries"), where a create answers 422.
    assert answer.status in (400, 422, 500), (answer.status, answer.message)
    assert expected["error"] in answer.message, answer.message


@pytest.mark.parametrize("path", OPERATOR_REFUSES, ids=lambda path: path.stem)
async def test_what_only_the_operator_checks_passes_the_server(
    run: Run, admin: KubeApi, path: Path
) -> None:
    body = renamed(yaml.safe_load(TEXTS[path]), run)
    answer = await server_side_apply(admin, SECURITY_BASELINE, body, dry_run=True)
    assert answer.status in (200, 201), answer.message


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
async def test_the_examples_are_accepted(run: Run, admin: KubeApi, path: Path) -> None:
    for document in yaml.safe_load_all(TEXTS[path]):
        body = renamed(document, run)
        answer = await server_side_apply(admin, SECURITY_BASELINE, body, dry_run=True)
        assert answer.status in (200, 201), answer.message
        assert answer.warnings == ()


async def test_an_invalid_spec_is_reported_and_changes_nothing(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**SPEC)
    name = await e2e.create_baseline(body)
    ref = ObjectRef(SECURITY_BASELINE, None, name)
    async with e2e.operator() as operator:
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await operator.settled()
        made = await e2e.owned_refs(name)
        labels = await e2e.cluster.labels(namespace)
        before = await e2e.snapshot()

        for generation, path in enumerate(OPERATOR_REFUSES, start=2):
            expected = expectations(path)
            stored = await e2e.kube.get(ref)
            assert stored is not None
            stored["spec"] = yaml.safe_load(TEXTS[path])["spec"]
            stored["spec"]["namespaceSelector"] = body["spec"]["namespaceSelector"]
            await e2e.kube.replace(ref, stored)

            async def refused(generation: int = generation) -> dict[str, Any]:
                ready = await e2e.cluster.condition(name, "Ready")
                current = ready.get("observedGeneration") == generation
                return ready if current and ready.get("reason") == "InvalidSpec" else {}

            ready = await eventually(refused, what=f"InvalidSpec for {path.stem}")
            assert ready["status"] == "False"
            assert expected["error"] in ready["message"], (path.stem, ready["message"])
            await operator.settled()

        assert await e2e.writes_since(before, NAMESPACES_AND_GENERATED) == {}
        assert await e2e.owned_refs(name) == made
        assert await e2e.cluster.labels(namespace) == labels
        status = await e2e.cluster.status(name)
        assert status["namespaces"]["compliant"] == 1  # what was applied before still holds

        # Deleting a baseline whose spec is invalid still removes what it made.
        await e2e.delete_baselines()
        assert await e2e.owned_refs(name) == set()
        assert applied_label(name) not in await e2e.cluster.labels(namespace)


def _described(schema: dict[str, Any], path: str = "") -> dict[str, str]:
    """Every description in a schema, by property path."""
    found = {path or ".": schema["description"]} if "description" in schema else {}
    for key, child in (schema.get("properties") or {}).items():
        found |= _described(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        found |= _described(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found |= _described(schema["additionalProperties"], f"{path}{{}}")
    return found


async def test_the_openapi_document_carries_every_description(admin: KubeApi) -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    group = crd["spec"]["group"]
    wanted = _described(version["schema"]["openAPIV3Schema"])
    # The server publishes its own standard text for apiVersion, kind and metadata.
    wanted = {
        path: text
        for path, text in wanted.items()
        if not path.startswith((".metadata", ".apiVersion", ".kind"))
    }
    assert len(wanted) > 100

    index = (await admin.request("GET", "/openapi/v3")).body["paths"]
    location = index[f"apis/{group}/{version['name']}"]["serverRelativeURL"]
    path, _, query = location.partition("?")
    pairs = [tuple(pair.split("=", 1)) for pair in query.split("&") if pair]
    document = (await admin.request("GET", path, query=pairs)).body
    reversed_group = ".".join(reversed(group.split(".")))
    schema = document["components"]["schemas"][
        f"{reversed_group}.{version['name']}.SecurityBaseline"
    ]
    published = _described(schema)
    missing = {path: text for path, text in wanted.items() if published.get(path) != text}
    assert missing == {}

    # What `kubectl explain` reads: discovery names the resource, its short name and category.
    discovery = (await admin.request("GET", f"/apis/{group}/{version['name']}")).body
    (resource,) = [item for item in discovery["resources"] if item["name"] == "securitybaselines"]
    assert resource["shortNames"] == ["sbl"]
    assert "security" in resource["categories"]


async def test_kubectl_explain_shows_the_descriptions(run: Run) -> None:
    shown = kubectl("explain", "sbl.spec.podSecurity")
    if shown is None:
        pytest.skip(reason="no kubectl (set BASELINE_E2E_KUBECTL or put kubectl on PATH)")
    assert shown.returncode == 0, shown.stderr
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    description = spec["properties"]["podSecurity"]["description"]
    assert " ".join(description.split()[:6]) in " ".join(shown.stdout.split())
    for field in spec["properties"]["podSecurity"]["properties"]:
        assert field in shown.stdout
