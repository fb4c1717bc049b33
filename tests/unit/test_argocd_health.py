"""The Argo CD health check, run in a real Lua runtime over statuses the operator writes.

manifests/argocd/health/securitybaseline.lua is the one copy of the script: the argocd-cm
snippet beside it embeds it verbatim, and docs/argocd.md quotes that snippet verbatim.
Argo CD runs health checks in gopher-lua (Lua 5.1, a sandbox without os/io/require); the
test runs the script in Lua 5.1 and 5.4 with those libraries removed, over statuses built
by policy/status.py's `build_status` for every reason it can emit, and over what Argo CD
itself hands a check (no status yet, an older observedGeneration, a deletion under way).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import lua51, lua54

from baseline_operator.policy import status as status_module
from baseline_operator.policy.status import BaselineFacts, Outcome, Result, build_status

REPO = Path(__file__).parents[2]
HEALTH = REPO / "manifests" / "argocd" / "health"
SCRIPT = HEALTH / "securitybaseline.lua"
ARGOCD_CM = HEALTH / "argocd-cm.yaml"
KEY = "resource.customizations.health.security.baseline.dev_SecurityBaseline"
NOW = "2026-01-01T00:00:00Z"
# What Argo CD's sandbox does not offer a health check.
UNSAFE_GLOBALS = ("os", "io", "require", "dofile", "loadfile", "load", "debug", "package")

Body = dict[str, Any]


def _lua_table(runtime: Any, value: Any) -> Any:
    """JSON-shaped Python data as Lua values (lists 1-based; None left out, as JSON null)."""
    if isinstance(value, dict):
        return runtime.table_from(
            {key: _lua_table(runtime, item) for key, item in value.items() if item is not None}
        )
    if isinstance(value, list):
        return runtime.table_from([_lua_table(runtime, item) for item in value])
    return value


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def _runner(module: ModuleType) -> Callable[[Body], Health]:
    script = SCRIPT.read_text()

    def run(obj: Body) -> Health:
        runtime = module.LuaRuntime(unpack_returned_tuples=True)
        for name in UNSAFE_GLOBALS:
            runtime.execute(f"{name} = nil")
        runtime.globals().obj = _lua_table(runtime, obj)
        result = runtime.execute(script)
        assert result is not None, "the check returned nothing"
        health = dict(result.items())
        assert set(health) == {"status", "message"}, health
        return Health(str(health["status"]), str(health["message"]))

    return run


@pytest.fixture(params=[lua51, lua54], ids=["lua5.1", "lua5.4"])
def check(request: pytest.FixtureRequest) -> Callable[[Body], Health]:
    return _runner(request.param)


def baseline(status: Body | None, generation: int = 2, **metadata: Any) -> Body:
    body: Body = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": "production", "generation": generation, **metadata},
        "spec": {"namespaceSelector": {"matchLabels": {"env": "production"}}},
    }
    if status is not None:
        body["status"] = status
    return body


def built(facts: BaselineFacts, previous: Body | None = None) -> Body:
    return build_status(facts, previous, NOW)


def enforce(generation: int = 2, **outcomes: Outcome) -> BaselineFacts:
    return BaselineFacts(generation, audit_mode=False, outcomes=outcomes)


def ok(generation: int = 2) -> Outcome:
    return Outcome(Result.COMPLIANT, generation)


FOREIGN = (
    "NetworkPolicy payments/production-default-deny exists and was not made by baseline-operator"
)


@dataclass(frozen=True)
class Case:
    facts: BaselineFacts
    health: str
    message: str  # a fragment the message must contain
    previous: BaselineFacts | None = None


# Every reason build_status emits, from the facts that produce it in a cluster.
CASES: dict[str, Case] = {
    "converged": Case(
        enforce(shop=ok(), web=ok()), "Healthy", "all 2 namespaces selected hold the posture"
    ),
    "converged-superseded": Case(
        enforce(
            shop=ok(),
            batch=Outcome(Result.SUPERSEDED, 2, "Superseded", "LimitRange held by org-wide"),
        ),
        "Healthy",
        "1 with parts held by a higher-priority baseline",
    ),
    "no-namespaces-selected": Case(enforce(), "Healthy", "the baseline selects no namespace"),
    "audited": Case(
        BaselineFacts(
            2,
            audit_mode=True,
            outcomes={"staging": Outcome(Result.DRIFTED, 2, "WouldChange", "would create 4")},
        ),
        "Healthy",
        "Audit mode: 1 namespace selected, 1 would change",
    ),
    "reconciling": Case(
        enforce(shop=ok(2), web=ok(1)),
        "Progressing",
        "1 of 2 namespaces reconciled for generation 2",
    ),
    "drifted": Case(
        enforce(shop=ok(), web=Outcome(Result.DRIFTED, 2, "Drifted", "NetworkPolicy edited")),
        "Progressing",
        "1 of 2 namespaces does not hold the posture",
    ),
    "apply-failed": Case(
        enforce(
            shop=ok(),
            web=Outcome(Result.FAILED, 2, "ApplyFailed", "403 Forbidden: networkpolicies"),
        ),
        "Degraded",
        "writes failed in 1 namespace: web: 403 Forbidden: networkpolicies",
    ),
    "conflicted": Case(
        enforce(shop=ok(), payments=Outcome(Result.CONFLICTED, 2, "Conflicted", FOREIGN)),
        "Degraded",
        f"payments: {FOREIGN}",
    ),
    "admission-policy-failed": Case(
        BaselineFacts(
            2,
            audit_mode=False,
            outcomes={"shop": ok()},
            cluster_problem="ValidatingAdmissionPolicy production-admission: 422 Invalid",
        ),
        "Degraded",
        "admission policies: ValidatingAdmissionPolicy production-admission: 422 Invalid",
    ),
    "removal-held": Case(
        BaselineFacts(
            3,
            audit_mode=False,
            outcomes={"shop": ok(3)},
            removal_held="generation 3 would remove the posture of baseline production from"
            " 40 of the 50 namespaces that hold it",
        ),
        "Degraded",
        "would remove the posture of baseline production from 40 of the 50",
    ),
    "invalid-spec": Case(
        BaselineFacts(2, audit_mode=False, spec_errors=("spec.priority: must be at most 1000",)),
        "Degraded",
        "invalid spec, nothing written: spec.priority: must be at most 1000",
        previous=enforce(1, shop=ok(1)),
    ),
}


def _status_of(case: Case) -> Body:
    previous = built(case.previous) if case.previous is not None else None
    return built(case.facts, previous)


@pytest.mark.parametrize("name", sorted(CASES))
def test_health_of_every_status_the_operator_writes(
    name: str, check: Callable[[Body], Health]
) -> None:
    case = CASES[name]
    status = _status_of(case)
    health = check(baseline(status, generation=case.facts.generation))
    assert health.status == case.health, (name, health, status["conditions"])
    assert case.message in health.message, (name, health)


def _emitted_reasons() -> set[str]:
    """Every reason string policy/status.py can put in a condition (read from its source)."""
    tree = ast.parse(Path(status_module.__file__).read_text())
    reasons: set[str] = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "set_condition"
            ):
                argument = node.args[3]
                sources = (
                    assigned.get(argument.id, []) if isinstance(argument, ast.Name) else [argument]
                )
                for source in sources:
                    reasons |= {
                        constant.value
                        for constant in ast.walk(source)
                        if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
                    }
    return reasons


def test_the_cases_cover_every_reason_the_status_builder_emits() -> None:
    emitted = _emitted_reasons()
    assert {"Converged", "ApplyFailed", "ForeignObject", "AsExpected"} <= emitted  # sanity
    seen = {
        condition["reason"]
        for case in CASES.values()
        for condition in _status_of(case)["conditions"]
    }
    assert emitted == seen, f"not exercised: {sorted(emitted - seen)}"


# --- what Argo CD hands the check -----------------------------------------------------------


def test_no_status_yet_is_progressing(check: Callable[[Body], Health]) -> None:
    assert check(baseline(None)) == Health(
        "Progressing", "Waiting for the operator to report status"
    )
    assert check(baseline({"observedGeneration": 2})).status == "Progressing"


def test_an_older_observed_generation_is_progressing_whatever_the_conditions_say(
    check: Callable[[Body], Health],
) -> None:
    status = _status_of(CASES["converged"])  # Ready=True for generation 2
    assert check(baseline(status, generation=3)) == Health(
        "Progressing", "Waiting for the operator to observe generation 3"
    )
    failed = _status_of(CASES["apply-failed"])  # a failure of an older generation
    assert check(baseline(failed, generation=3)).status == "Progressing"
    without = {key: value for key, value in status.items() if key != "observedGeneration"}
    assert check(baseline(without, generation=1)).status == "Progressing"


def test_a_deletion_under_way_is_progressing(check: Callable[[Body], Health]) -> None:
    status = _status_of(CASES["converged"])
    health = check(baseline(status, deletionTimestamp=NOW, finalizers=["x"]))
    assert health == Health(
        "Progressing", "Being deleted: the operator removes what the baseline generated"
    )


def test_a_missing_or_unknown_ready_condition_is_progressing(
    check: Callable[[Body], Health],
) -> None:
    status = _status_of(CASES["converged"])
    others = [c for c in status["conditions"] if c["type"] != "Ready"]
    assert check(baseline({**status, "conditions": others})) == Health(
        "Progressing", "Waiting for the Ready condition"
    )
    unknown = [
        {**c, "status": "Unknown"} if c["type"] == "Ready" else c for c in status["conditions"]
    ]
    assert check(baseline({**status, "conditions": unknown})).status == "Progressing"


def test_an_empty_message_falls_back_to_the_reason(check: Callable[[Body], Health]) -> None:
    status = _status_of(CASES["apply-failed"])
    quiet = [{**c, "message": ""} for c in status["conditions"]]
    assert check(baseline({**status, "conditions": quiet})) == Health("Degraded", "ApplyFailed")


# --- one script, quoted verbatim --------------------------------------------------------------


def test_the_argocd_cm_snippet_embeds_the_script_verbatim() -> None:
    (config_map,) = [doc for doc in yaml.safe_load_all(ARGOCD_CM.read_text()) if doc]
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert config_map["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/part-of": "argocd"},
    }
    assert config_map["data"] == {KEY: SCRIPT.read_text()}


def _fenced_blocks(markdown: str) -> Iterator[str]:
    for match in re.finditer(r"^```[a-z]*\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL):
        yield match.group(1)


def test_the_docs_quote_the_snippet_verbatim() -> None:
    docs = (REPO / "docs" / "argocd.md").read_text()
    quoted = [block for block in _fenced_blocks(docs) if KEY in block]
    assert quoted == [ARGOCD_CM.read_text()], "docs/argocd.md must quote argocd-cm.yaml as it is"
    assert "manifests/argocd/health/securitybaseline.lua" in docs


def _deciding_reason(status: Body) -> str:
    """The condition the check decides on: Degraded when it is True, else Ready."""
    conditions = {condition["type"]: condition for condition in status["conditions"]}
    if conditions["Degraded"]["status"] == "True":
        return str(conditions["Degraded"]["reason"])
    return str(conditions["Ready"]["reason"])


def test_the_docs_table_gives_the_health_of_each_reason() -> None:
    docs = (REPO / "docs" / "argocd.md").read_text()
    section = docs.split("## Health of a SecurityBaseline", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not set(line) <= set("|- ")
    ]
    for name, case in CASES.items():
        reason = _deciding_reason(_status_of(case))
        found = [row for row in rows if f"`{reason}`" in row[0]]
        assert len(found) == 1, f"{name}: the docs table has {len(found)} rows for {reason}"
        assert found[0][1] == case.health, (name, found[0])
