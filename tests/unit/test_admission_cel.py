"""The admission policies' CEL, evaluated: same verdicts as the checklist, and tamper protection.

The expressions run in `common-expression-language` (import `cel`, the Rust CEL
interpreter). It is chosen over cel-python because, like the API server's cel-go, it
raises on `has(a.b.c)` when `a.b` is missing (cel-python answers false): a missing
`has()` guard is an evaluation error, which a policy with failurePolicy Fail turns into
a refusal, and these tests must see it. The harness mirrors how the API server runs a
ValidatingAdmissionPolicy: every matchCondition must be true, then the variables in
order, then each validation; a failing validation's message comes from its
messageExpression. Any evaluation error fails the test.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline_operator.api.spec import AdmissionSection
from baseline_operator.policy.admission import (
    render_cluster_objects,
    workload_rules,
)
from baseline_operator.policy.checklist import ADMISSION_CHECK_IDS, ChecklistConfig, check_object
from baseline_operator.policy.objects import VALIDATING_ADMISSION_POLICY
from tests.unit.conftest import make_baseline

ROOT = Path(__file__).parents[2]
CORPUS = sorted((ROOT / "tests/corpus/pods").glob("*.yaml"))
OPERATOR = "system:serviceaccount:baseline-operator-system:baseline-operator"
SOMEONE = "jane@example.com"
# The configuration the corpus's `# expect:` lines assume (tests/corpus/pods/README.md).
CORPUS_REGISTRIES = ["registry.example.com/"]
CORPUS_LABELS = ["app"]
ALL_RULES = {
    "denyPrivileged": True,
    "denyHostNamespaces": True,
    "denyHostPath": True,
    "requireResourceRequests": True,
    "requireRunAsNonRoot": True,
}


# ----------------------------------------------------------------------------
# The harness


def _join(items: list[Any], separator: str = "") -> str:
    """`<list<string>>.join([separator])` of the CEL strings extension, which every
    Kubernetes version enables and the interpreter lacks; like the original, only for
    lists of strings."""
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"join() needs a list of strings, got {items!r}")
    return separator.join(items)


@cache
def _program(expression: str) -> Any:
    return cel.compile(expression)


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    return _program(expression).execute(cel.Context(activation, {"join": _join}))


# What kubectl sends: `kubectl edit` patches with its own field manager, `kubectl delete`
# asks for background propagation and no precondition.
KUBECTL_OPTIONS = {
    "UPDATE": {
        "kind": "PatchOptions",
        "apiVersion": "meta.k8s.io/v1",
        "fieldManager": "kubectl-edit",
    },
    "DELETE": {
        "kind": "DeleteOptions",
        "apiVersion": "meta.k8s.io/v1",
        "propagationPolicy": "Background",
    },
    "CREATE": {
        "kind": "CreateOptions",
        "apiVersion": "meta.k8s.io/v1",
        "fieldManager": "kubectl-create",
    },
}


@dataclass(frozen=True)
class Request:
    operation: str
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None = None
    username: str = SOMEONE
    options: Mapping[str, Any] | None = None
    namespace: str = "team-a"
    namespace_labels: Mapping[str, str] | None = None  # the Namespace object's labels


@dataclass
class Verdict:
    matched: bool
    failed: list[int] = field(default_factory=list)  # indexes of the failing validations
    messages: list[str] = field(default_factory=list)


def evaluate_policy(policy: Mapping[str, Any], request: Request) -> Verdict:
    """What the API server decides for one request, as the index of every failed validation."""
    spec = policy["spec"]
    namespace_metadata: dict[str, Any] = {"name": request.namespace}
    if request.namespace_labels is not None:
        namespace_metadata["labels"] = dict(request.namespace_labels)
    activation: dict[str, Any] = {
        "object": request.object,
        "oldObject": request.old_object,
        # The API server passes the Namespace of a namespaced request (null otherwise).
        "namespaceObject": {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": namespace_metadata,
        },
        "request": {
            "namespace": request.namespace,
            "operation": request.operation,
            "userInfo": {"username": request.username},
            "options": (
                request.options
                if request.options is not None
                else KUBECTL_OPTIONS.get(request.operation)
            ),
        },
        "params": None,
    }
    for condition in spec.get("matchConditions", []):
        result = _evaluate(condition["expression"], activation)
        assert isinstance(result, bool), condition["name"]
        if not result:
            return Verdict(matched=False)
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        variables[variable["name"]] = _evaluate(
            variable["expression"], {**activation, "variables": variables}
        )
    activation["variables"] = variables
    verdict = Verdict(matched=True)
    for index, validation in enumerate(spec["validations"]):
        result = _evaluate(validation["expression"], activation)
        assert isinstance(result, bool), validation["expression"]
        if result:
            continue
        verdict.failed.append(index)
        message = validation["message"]
        if "messageExpression" in validation:
            message = _evaluate(validation["messageExpression"], activation)
            # The server falls back to `message` for anything else; these must never need it.
            assert isinstance(message, str), validation["messageExpression"]
            assert message.strip(), validation["messageExpression"]
            assert "\n" not in message
        verdict.messages.append(message)
    return verdict


def test_the_evaluator_is_strict_about_missing_intermediate_fields() -> None:
    """The property the evaluator was chosen for: a has() without its guard is an error."""
    with pytest.raises(Exception, match="spec"):
        _evaluate("has(object.spec.containers)", {"object": {"metadata": {}}})
    assert _evaluate("has(object.spec.containers)", {"object": {"spec": {}}}) is False


def test_join_shim_behaves_like_the_strings_extension() -> None:
    assert _evaluate("['a', 'b'].join(', ')", {}) == "a, b"
    assert _evaluate("[].join('/')", {}) == ""
    assert _evaluate("['a', 'b'].join()", {}) == "ab"
    with pytest.raises(Exception, match="strings"):
        _evaluate("[1].join()", {})


# ----------------------------------------------------------------------------
# Workload rules


def policies_of(admission: dict[str, Any], protect: bool = False) -> dict[str, dict[str, Any]]:
    baseline = make_baseline("prod", admission=admission, protectGeneratedObjects=protect)
    return {
        item.ref.name: item.body
        for item in render_cluster_objects(baseline, OPERATOR)
        if item.ref.kind == VALIDATING_ADMISSION_POLICY
    }


@dataclass(frozen=True)
class WorkloadPolicy:
    body: dict[str, Any]
    check_ids: tuple[str, ...]  # the checklist check of each validation, by index

    @classmethod
    def of(cls, registries: list[str], labels: list[str]) -> WorkloadPolicy:
        admission = {**ALL_RULES, "allowedRegistries": registries, "requiredLabels": labels}
        body = policies_of(admission)["prod-workload-rules"]
        rules = workload_rules(AdmissionSection.model_validate(admission))
        assert body["spec"]["validations"] == [rule.validation for rule in rules]
        return cls(body, tuple(rule.check_id for rule in rules))

    def refused_for(self, obj: Mapping[str, Any]) -> set[str]:
        verdict = evaluate_policy(self.body, Request("CREATE", obj))
        assert verdict.matched
        return {self.check_ids[index] for index in verdict.failed}

    def messages_for(self, obj: Mapping[str, Any]) -> dict[str, str]:
        verdict = evaluate_policy(self.body, Request("CREATE", obj))
        return {
            self.check_ids[index]: message
            for index, message in zip(verdict.failed, verdict.messages, strict=True)
        }


CORPUS_POLICY = WorkloadPolicy.of(CORPUS_REGISTRIES, CORPUS_LABELS)
CORPUS_CONFIG = ChecklistConfig(tuple(CORPUS_REGISTRIES), tuple(CORPUS_LABELS))


def test_all_seven_rules_are_rendered_once_each() -> None:
    assert sorted(CORPUS_POLICY.check_ids) == sorted(ADMISSION_CHECK_IDS)


def _corpus_object(path: Path) -> dict[str, Any]:
    (obj,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert isinstance(obj, dict)
    return obj


def _expected(path: Path) -> set[str]:
    listed = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
    return set() if listed == "none" else {item.strip() for item in listed.split(",")}


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_cel_refuses_exactly_what_the_corpus_expects(path: Path) -> None:
    assert CORPUS_POLICY.refused_for(_corpus_object(path)) == _expected(path)


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_cel_and_the_checklist_agree_on_the_corpus(path: Path) -> None:
    obj = _corpus_object(path)
    findings = {finding.check_id for finding in check_object(obj, CORPUS_CONFIG)}
    assert CORPUS_POLICY.refused_for(obj) == findings & ADMISSION_CHECK_IDS


# Random pod specs, built from the fields the seven rules read, wrapped in every kind the
# policy matches; absent, explicit false and explicit true are all drawn.
_IMAGES = [
    "registry.example.com/team/web:1.0",
    "registry.example.com.evil.test/web:1.0",
    "registry.example.com:5000/web:1.0",
    "registry.example.com:5000evil/web:1.0",
    "mirror.test/registry.example.com/web:1.0",
    "ghcr.io/acme/tool@sha256:abc",
    "ghcr.io/acme-evil/tool:1",
    "busybox",
    "busy/box:1",
    None,
]
# allowedRegistries entries, with and without the trailing slash, with and without a port.
_PREFIXES = [
    "registry.example.com/",
    "registry.example.com",
    "registry.example.com:5000",
    "ghcr.io/acme/",
    "ghcr.io/acme",
    "busy",
]
_optional_bool = st.sampled_from([None, False, True])


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    """The API server never sends a null for an unset field: it omits the field."""
    return {key: value for key, value in values.items() if value is not None}


@st.composite
def _security_contexts(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    return _without_none(
        {
            "privileged": draw(_optional_bool),
            "runAsNonRoot": draw(_optional_bool),
            "runAsUser": draw(st.sampled_from([None, 0, 1000])),
        }
    )


@st.composite
def _containers(draw: st.DrawFn, prefix: str, resources: bool) -> list[dict[str, Any]]:
    containers = []
    for index in range(draw(st.integers(0, 2))):
        container = _without_none(
            {
                "name": f"{prefix}{index}",
                "image": draw(st.sampled_from(_IMAGES)),
                "securityContext": draw(_security_contexts()),
            }
        )
        if resources and draw(st.booleans()):
            requests = draw(st.sets(st.sampled_from(["cpu", "memory", "ephemeral-storage"])))
            container["resources"] = {"requests": dict.fromkeys(sorted(requests), "1")}
        containers.append(container)
    return containers


@st.composite
def _pod_templates(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": draw(_containers("c", resources=True))}
    for key, containers in (
        ("initContainers", draw(_containers("i", resources=True))),
        ("ephemeralContainers", draw(_containers("e", resources=False))),
    ):
        if containers:
            spec[key] = containers
    if draw(st.booleans()):
        spec["securityContext"] = _without_none(
            {
                "runAsNonRoot": draw(_optional_bool),
                "runAsUser": draw(st.sampled_from([None, 0, 1000])),
                "seccompProfile": draw(
                    st.sampled_from([None, {"type": "RuntimeDefault"}, {"type": "Unconfined"}])
                ),
            }
        )
    host_users = draw(_optional_bool)  # false: a user namespace
    if host_users is not None:
        spec["hostUsers"] = host_users
    os_name = draw(st.sampled_from([None, "linux", "windows"]))
    if os_name is not None:
        spec["os"] = {"name": os_name}
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        value = draw(_optional_bool)
        if value is not None:
            spec[host_field] = value
    volumes = draw(st.lists(st.sampled_from(["hostPath", "emptyDir"]), max_size=2))
    if volumes:
        spec["volumes"] = [
            {"name": f"v{index}", volume: {"path": "/var"} if volume == "hostPath" else {}}
            for index, volume in enumerate(volumes)
        ]
    template: dict[str, Any] = {"spec": spec}
    labels = draw(st.none() | st.dictionaries(st.sampled_from(["app", "team"]), st.just("x")))
    if labels is not None:
        labels_key_omitted = not labels and draw(st.booleans())
        template["metadata"] = {} if labels_key_omitted else {"labels": labels}
    return template


def _wrapped(kind: str, template: dict[str, Any]) -> dict[str, Any]:
    api_versions = {"Pod": "v1", "ReplicationController": "v1", "Job": "batch/v1"}
    obj: dict[str, Any] = {
        "apiVersion": api_versions.get(kind, "batch/v1" if kind == "CronJob" else "apps/v1"),
        "kind": kind,
        "metadata": {"name": "w", "namespace": "team-a", "labels": {"app": "w"}},
    }
    if kind == "Pod":
        obj["metadata"] = {**obj["metadata"], **template.get("metadata", {})}
        if "labels" not in template.get("metadata", {}):
            del obj["metadata"]["labels"]
        obj["spec"] = template["spec"]
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {"template": template}
    return obj


_KINDS = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(_KINDS),
    template=_pod_templates(),
    registries=st.lists(st.sampled_from(_PREFIXES), unique=True),
    labels=st.lists(st.sampled_from(["app", "team"]), unique=True),
)
def test_cel_and_the_checklist_agree_on_any_pod(
    kind: str, template: dict[str, Any], registries: list[str], labels: list[str]
) -> None:
    obj = _wrapped(kind, template)
    policy = WorkloadPolicy.of(registries, labels)
    findings = check_object(obj, ChecklistConfig(tuple(registries), tuple(labels)))
    assert policy.refused_for(obj) == {finding.check_id for finding in findings} & (
        ADMISSION_CHECK_IDS
    )


@pytest.mark.parametrize(
    ("entry", "image", "allowed"),
    [
        ("registry.example.com", "registry.example.com/team/web:1", True),
        ("registry.example.com", "registry.example.com.evil.test/x", False),
        ("registry.example.com", "registry.example.com:5000evil/x", False),
        ("registry.example.com", "registry.example.com:5000/x", False),
        ("registry.example.com:5000", "registry.example.com:5000/x", True),
        ("registry.example.com:5000", "registry.example.com:5000evil/x", False),
        ("registry.example.com/", "registry.example.com.evil.test/x", False),
        ("ghcr.io/acme", "ghcr.io/acme/tool:1", True),
        ("ghcr.io/acme", "ghcr.io/acme-evil/tool:1", False),
    ],
)
def test_registries_match_on_a_host_and_path_boundary(
    entry: str, image: str, allowed: bool
) -> None:
    policy = WorkloadPolicy.of([entry], [])
    pod = _pod()
    pod["spec"]["containers"][0]["image"] = image
    refused = "allowed-registries" in policy.refused_for(pod)
    assert refused is not allowed
    findings = check_object(pod, ChecklistConfig((entry,), ()))
    assert ("allowed-registries" in {finding.check_id for finding in findings}) is refused
    if refused:  # the message names the entry as the baseline wrote it
        assert policy.messages_for(pod)["allowed-registries"] == (
            f"container images must come from {entry}: app ({image})"
        )


@pytest.mark.parametrize(
    ("spec", "refused"),
    [
        ({"securityContext": {"runAsNonRoot": False}}, True),
        ({"securityContext": {"runAsUser": 0}}, True),
        ({"securityContext": {"runAsNonRoot": False}, "hostUsers": False}, False),
        ({"securityContext": {"runAsNonRoot": False}, "hostUsers": True}, True),
        ({"securityContext": {}, "hostUsers": False}, False),
        ({"securityContext": {}, "os": {"name": "windows"}}, True),  # not a Linux-only field
    ],
)
def test_pod_level_root_refused_even_when_containers_override_unless_user_namespace(
    spec: dict[str, Any], refused: bool
) -> None:
    pod = _pod(**spec)
    pod["spec"]["containers"][0]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000}
    pod["spec"]["containers"].append({**pod["spec"]["containers"][0], "name": "side"})
    if not spec["securityContext"]:
        pod["spec"]["containers"][1] = {"name": "side", "image": "registry.example.com/x:1"}
    messages = CORPUS_POLICY.messages_for(pod)
    assert ("run-as-non-root" in messages) is refused
    findings = {finding.check_id for finding in check_object(pod, CORPUS_CONFIG)}
    assert ("run-as-non-root" in findings) is refused
    if refused and spec["securityContext"]:
        assert messages["run-as-non-root"].endswith(": pod")  # every container overrides it


def _pod(**spec: Any) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "registry.example.com/team/web:1.0",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [container],
            **spec,
        },
    }


def test_a_compliant_pod_passes() -> None:
    assert CORPUS_POLICY.refused_for(_pod()) == set()


def test_messages_name_what_breaks_the_rule() -> None:
    pod = _pod(
        hostPID=True,
        hostIPC=True,
        volumes=[{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}],
        initContainers=[
            {"name": "setup", "image": "busybox", "securityContext": {"privileged": True}}
        ],
        ephemeralContainers=[{"name": "debug", "image": "registry.example.com/debug:1"}],
    )
    del pod["metadata"]["labels"]
    pod["spec"]["securityContext"] = {"runAsUser": 0}
    assert CORPUS_POLICY.messages_for(pod) == {
        "privileged": "containers must not run privileged: setup",
        "host-namespaces": "pods must not share the node's network, PID or IPC namespace:"
        " hostPID, hostIPC",
        "host-path": "hostPath volumes are not allowed: root",
        "allowed-registries": "container images must come from registry.example.com/:"
        " setup (busybox)",
        "required-labels": "pods and pod templates must carry the labels app: app",
        "resource-requests": "containers and init containers must request cpu and memory: setup",
        "run-as-non-root": "containers must run as non-root (runAsNonRoot: true, runAsUser not 0):"
        " pod, app, setup, debug",  # the pod's own runAsUser: 0 is named too
    }


def test_every_failure_on_the_corpus_has_a_message_naming_a_culprit() -> None:
    for path in CORPUS:
        for check_id, message in CORPUS_POLICY.messages_for(_corpus_object(path)).items():
            _, _, culprits = message.partition(": ")
            assert culprits, f"{path.name} {check_id}: {message}"


# ----------------------------------------------------------------------------
# Updates: judged only when the pod template changes


def _deployment(template_spec: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": template_spec},
        },
    }


ROOT_SPEC = {"containers": [{"name": "app", "image": "registry.example.com/web:1"}]}


def _update(old: dict[str, Any], new: dict[str, Any]) -> Verdict:
    return evaluate_policy(CORPUS_POLICY.body, Request("UPDATE", new, old))


def test_scaling_a_workload_that_predates_the_baseline_is_not_judged() -> None:
    old = _deployment(ROOT_SPEC, replicas=3)
    assert CORPUS_POLICY.refused_for(old)  # it breaks rules...
    verdict = _update(old, _deployment(ROOT_SPEC, replicas=1))
    assert not verdict.matched  # ...but scaling it down is not refused


def test_changing_a_pod_template_is_judged() -> None:
    old = _deployment(ROOT_SPEC)
    new = copy.deepcopy(old)
    new["spec"]["template"]["metadata"]["annotations"] = {"restartedAt": "now"}
    verdict = _update(old, new)
    assert verdict.matched
    assert {CORPUS_POLICY.check_ids[index] for index in verdict.failed} == {
        "resource-requests",
        "run-as-non-root",
    }


def test_cron_job_updates_are_judged_by_the_job_template() -> None:
    old = _wrapped("CronJob", {"metadata": {"labels": {"app": "x"}}, "spec": ROOT_SPEC})
    rescheduled = copy.deepcopy(old)
    rescheduled["spec"]["schedule"] = "0 4 * * *"
    assert not _update(old, rescheduled).matched
    retemplated = copy.deepcopy(old)
    retemplated["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] = {}
    assert _update(old, retemplated).matched


def test_pod_updates_are_judged_by_spec_and_labels_only() -> None:
    old = _pod()
    finalized = copy.deepcopy(old)
    finalized["metadata"]["finalizers"] = []
    finalized["metadata"]["annotations"] = {"note": "x"}
    assert not _update(old, finalized).matched
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"tier": "web"}
    verdict = _update(old, relabelled)
    assert [CORPUS_POLICY.check_ids[index] for index in verdict.failed] == ["required-labels"]


def test_updating_a_pod_without_labels_reads_them_as_empty() -> None:
    old = _pod()
    del old["metadata"]["labels"]
    annotated = copy.deepcopy(old)
    annotated["metadata"]["annotations"] = {"note": "x"}
    assert not _update(old, annotated).matched
    assert _update(old, _pod()).matched


def test_a_debug_container_added_to_a_running_pod_is_judged() -> None:
    """`kubectl debug` updates pods/ephemeralcontainers with the whole Pod as the object."""
    old = _pod()
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [
        {
            "name": "debug",
            "image": "registry.example.com/debug:1",
            "securityContext": {"privileged": True},
        }
    ]
    verdict = _update(old, new)
    assert verdict.messages == ["containers must not run privileged: debug"]


# Tamper protection (`<baseline>-protect`) is tested in tests/unit/test_tamper_cel.py.
