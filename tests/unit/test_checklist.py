"""The workload hardening checklist: every check, both ways, and the shared pod corpus."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.checklist import (
    ADMISSION_CHECK_IDS,
    CHECK_IDS,
    CHECKS,
    WORKLOAD_KINDS,
    ChecklistConfig,
    Finding,
    Severity,
    check_object,
    check_pod,
    image_tag_problem,
    pod_template_of,
    registry_prefixes,
)

ROOT = Path(__file__).parents[2]
CORPUS = sorted((ROOT / "tests/corpus/pods").glob("*.yaml"))
# The configuration the corpus's `# expect:` lines assume (tests/corpus/pods/README.md).
CORPUS_CONFIG = ChecklistConfig(
    allowed_registries=("registry.example.com/",), required_labels=("app",)
)
RESTRICTED = ChecklistConfig()
IMAGE = "registry.example.com/team/web:1.4.2"


def hardened_container(name: str = "app", image: str = IMAGE) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def hardened_spec() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [hardened_container()],
    }


def ids(findings: list[Finding]) -> list[str]:
    return [finding.check_id for finding in findings]


def findings_for(spec: dict[str, Any], config: ChecklistConfig = RESTRICTED) -> list[Finding]:
    return check_pod({"labels": {"app": "web"}}, spec, config)


def test_a_hardened_pod_passes_every_check() -> None:
    assert findings_for(hardened_spec(), CORPUS_CONFIG) == []


# ----------------------------------------------------------------------------
# Severity and check metadata


def test_severities_order_by_rank_not_alphabet() -> None:
    assert Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Severity.CRITICAL > Severity.HIGH >= Severity.HIGH
    assert Severity.MEDIUM <= Severity.HIGH
    assert not Severity.CRITICAL < Severity.HIGH  # "critical" < "high" as strings
    assert sorted([Severity.HIGH, Severity.LOW, Severity.CRITICAL, Severity.MEDIUM]) == [
        Severity.LOW,
        Severity.MEDIUM,
        Severity.HIGH,
        Severity.CRITICAL,
    ]
    assert max(Severity) is Severity.CRITICAL


def test_severities_are_their_lowercase_names() -> None:
    assert [str(severity) for severity in Severity] == ["low", "medium", "high", "critical"]
    assert Severity("high") is Severity.HIGH


def test_every_check_is_described_with_a_stable_kebab_case_id() -> None:
    assert list(CHECKS) == list(CHECK_IDS)
    assert set(CHECK_IDS) >= ADMISSION_CHECK_IDS
    for check_id, check in CHECKS.items():
        assert check_id == check.id
        assert check_id == check_id.lower()
        assert " " not in check_id
        assert check.summary
        assert check.remediation
        assert check.name.isidentifier()


# ----------------------------------------------------------------------------
# One test per check: what trips it, and the nearest thing that does not.


def with_security(field: str, value: Any, container: int = 0) -> dict[str, Any]:
    spec = hardened_spec()
    spec["containers"][container]["securityContext"][field] = value
    return spec


@pytest.mark.parametrize("list_name", ["containers", "initContainers", "ephemeralContainers"])
def test_privileged_in_every_container_list(list_name: str) -> None:
    spec = hardened_spec()
    extra = hardened_container("extra")
    extra["securityContext"]["privileged"] = True
    spec.setdefault(list_name, []).append(extra)
    findings = [f for f in findings_for(spec) if f.check_id == "privileged"]
    assert [(f.container, f.severity) for f in findings] == [("extra", Severity.CRITICAL)]


@pytest.mark.parametrize("value", [False, None, "true"])
def test_privileged_only_when_exactly_true(value: Any) -> None:
    assert "privileged" not in ids(findings_for(with_security("privileged", value)))


@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces(field: str) -> None:
    spec = hardened_spec()
    spec[field] = True
    findings = findings_for(spec)
    assert ids(findings) == ["host-namespaces"]
    assert findings[0].container is None
    assert field in findings[0].message
    assert findings[0].severity is Severity.HIGH
    spec[field] = False
    assert findings_for(spec) == []


def test_host_namespaces_is_one_finding_naming_all_shared() -> None:
    spec = hardened_spec() | {"hostNetwork": True, "hostPID": True, "hostIPC": True}
    (finding,) = findings_for(spec)
    assert all(name in finding.message for name in ("hostNetwork", "hostPID", "hostIPC"))


def test_host_path_names_the_volume() -> None:
    spec = hardened_spec()
    spec["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "sock", "hostPath": {"path": "/var/run/x.sock"}},
        {"name": "root", "hostPath": {"path": "/"}},
    ]
    findings = findings_for(spec)
    assert ids(findings) == ["host-path", "host-path"]
    assert "sock" in findings[0].message
    assert "root" in findings[1].message
    assert {f.container for f in findings} == {None}


def test_no_host_path_without_host_path_volumes() -> None:
    spec = hardened_spec()
    spec["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "c", "configMap": {"name": "c"}},
    ]
    assert findings_for(spec) == []


@pytest.mark.parametrize("list_name", ["containers", "initContainers", "ephemeralContainers"])
def test_allowed_registries_in_every_container_list(list_name: str) -> None:
    config = ChecklistConfig(allowed_registries=("registry.example.com/", "mirror.example.org/"))
    spec = hardened_spec()
    spec.setdefault(list_name, []).append(hardened_container("other", "elsewhere.example.net/x:1"))
    spec["containers"].append(hardened_container("mirrored", "mirror.example.org/x:1"))
    findings = [f for f in findings_for(spec, config) if f.check_id == "allowed-registries"]
    assert [(f.container, f.severity) for f in findings] == [("other", Severity.HIGH)]


@pytest.mark.parametrize(
    ("entry", "image", "allowed"),
    [
        ("registry.example.com/", "registry.example.com/team/web:1", True),
        ("registry.example.com/", "registry.example.com.attacker.test/web:1", False),
        ("registry.example.com/", "registry.example.com:5000/web:1", False),
        ("registry.example.com/", "REGISTRY.EXAMPLE.COM/web:1", False),
        ("registry.example.com/", "web:1", False),
        # Without a trailing slash: that host exactly, then '/'.
        ("registry.example.com", "registry.example.com/team/web:1", True),
        ("registry.example.com", "registry.example.com.evil.test/x", False),
        ("registry.example.com", "registry.example.com:5000evil/x", False),
        ("registry.example.com", "registry.example.com:5000/x", False),  # port not named
        ("registry.example.com", "registry.example.com", False),
        ("registry.example.com", "registry.example.comx/y", False),
        # A port only when the entry names it.
        ("registry.example.com:5000", "registry.example.com:5000/x:1", True),
        ("registry.example.com:5000", "registry.example.com:50000/x:1", False),
        ("registry.example.com:5000", "registry.example.com:5000evil/x", False),
        ("registry.example.com:5000", "registry.example.com/x:1", False),
        # Host and path: that path segment exactly.
        ("ghcr.io/acme", "ghcr.io/acme/tool:1", True),
        ("ghcr.io/acme", "ghcr.io/acme-evil/tool:1", False),
        ("ghcr.io/acme", "ghcr.io/acme:1", False),
        ("ghcr.io/acme/", "ghcr.io/acme/tool:1", True),
        ("ghcr.io/acme/", "ghcr.io/acmetool:1", False),
    ],
)
def test_allowed_registries_match_on_a_host_and_path_boundary(
    entry: str, image: str, allowed: bool
) -> None:
    config = ChecklistConfig(allowed_registries=(entry,))
    spec = hardened_spec()
    spec["containers"][0]["image"] = image
    assert ("allowed-registries" not in ids(findings_for(spec, config))) is allowed


def test_registry_prefixes_add_the_boundary_to_entries_without_one() -> None:
    entries = ("registry.example.com", "registry.example.com:5000", "ghcr.io/acme", "quay.io/")
    assert registry_prefixes(entries) == (
        "registry.example.com/",
        "registry.example.com:5000/",
        "ghcr.io/acme/",
        "quay.io/",
    )
    config = ChecklistConfig(allowed_registries=entries)
    assert config.image_prefixes == registry_prefixes(entries)
    spec = hardened_spec()
    spec["containers"][0]["image"] = "elsewhere.example.net/x:1"
    (finding,) = findings_for(spec, config)
    assert finding.message.endswith(f"({', '.join(entries)})")  # the entries as written


def test_allowed_registries_is_off_without_prefixes() -> None:
    spec = hardened_spec()
    spec["containers"][0]["image"] = "elsewhere.example.net/x:1"
    assert findings_for(spec, RESTRICTED) == []


def test_required_labels_one_finding_per_missing_key() -> None:
    config = ChecklistConfig(required_labels=("app", "team", "tier"))
    findings = check_pod({"labels": {"team": "a"}}, hardened_spec(), config)
    assert ids(findings) == ["required-labels", "required-labels"]
    assert ["app" in findings[0].message, "tier" in findings[1].message] == [True, True]
    assert {(f.container, f.severity) for f in findings} == {(None, Severity.MEDIUM)}
    labelled = {"labels": {"app": "", "team": "a", "tier": "x"}}
    assert check_pod(labelled, hardened_spec(), config) == []


def test_required_labels_without_a_labels_map() -> None:
    config = ChecklistConfig(required_labels=("app",))
    assert ids(check_pod({}, hardened_spec(), config)) == ["required-labels"]
    assert check_pod({}, hardened_spec(), RESTRICTED) == []


@pytest.mark.parametrize(
    ("resources", "missing"),
    [
        (None, "cpu and memory"),
        ({}, "cpu and memory"),
        ({"requests": {"cpu": "1"}}, "memory"),
        ({"requests": {"memory": "1Gi"}}, "cpu"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "cpu and memory"),
    ],
)
@pytest.mark.parametrize("list_name", ["containers", "initContainers"])
def test_resource_requests(resources: Any, missing: str, list_name: str) -> None:
    spec = hardened_spec()
    container = hardened_container("extra")
    container["resources"] = resources
    spec.setdefault(list_name, []).append(container)
    findings = [f for f in findings_for(spec) if f.check_id == "resource-requests"]
    assert [f.container for f in findings] == ["extra"]
    assert findings[0].message.endswith(f"does not request {missing}")


def test_ephemeral_containers_need_no_resources() -> None:
    spec = hardened_spec()
    container = hardened_container("debug")
    del container["resources"]
    spec["ephemeralContainers"] = [container]
    assert findings_for(spec) == []


@pytest.mark.parametrize(
    ("pod_context", "container_context", "reported"),
    [
        ({"runAsNonRoot": True}, {}, []),
        ({}, {"runAsNonRoot": True}, []),
        ({}, {}, ["app"]),
        ({"runAsNonRoot": False}, {}, [None, "app"]),
        ({"runAsNonRoot": True}, {"runAsNonRoot": False}, ["app"]),  # the container's value wins
        # ...but a bad pod-level value is refused by restricted even when overridden.
        ({"runAsNonRoot": False}, {"runAsNonRoot": True}, [None]),
        ({"runAsNonRoot": True, "runAsUser": 0}, {}, [None, "app"]),
        ({"runAsNonRoot": True}, {"runAsUser": 0}, ["app"]),
        ({"runAsNonRoot": True, "runAsUser": 0}, {"runAsUser": 1000}, [None]),
        ({"runAsNonRoot": True, "runAsUser": 1000}, {"runAsUser": 0}, ["app"]),
        ({"runAsNonRoot": "true"}, {}, ["app"]),  # a string is not true (nor explicitly false)
        ({"runAsNonRoot": True, "runAsUser": False}, {}, []),  # false is not uid 0
    ],
)
def test_run_as_non_root_precedence(
    pod_context: dict[str, Any], container_context: dict[str, Any], reported: list[str | None]
) -> None:
    """Findings per container (effective values), and one for the pod (None) when its own
    securityContext says runAsNonRoot: false or runAsUser: 0."""
    spec = hardened_spec()
    spec["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}, **pod_context}
    spec["containers"][0]["securityContext"].update(container_context)
    findings = findings_for(spec)
    assert set(ids(findings)) <= {"run-as-non-root"}
    assert [finding.container for finding in findings] == reported
    assert all(finding.severity is Severity.HIGH for finding in findings)


def test_a_bad_pod_level_value_is_reported_when_every_container_overrides_it() -> None:
    spec = hardened_spec()
    spec["securityContext"] = {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "seccompProfile": {"type": "Unconfined"},
    }
    spec["containers"].append(hardened_container("side"))
    for container in spec["containers"]:
        container["securityContext"].update(
            runAsNonRoot=True, runAsUser=1000, seccompProfile={"type": "RuntimeDefault"}
        )
    findings = findings_for(spec)
    assert [(f.check_id, f.container) for f in findings] == [
        ("run-as-non-root", None),
        ("seccomp-profile", None),
    ]
    assert findings[0].message == (
        "the pod's securityContext sets runAsNonRoot: false and runAsUser: 0"
    )
    assert findings[1].message == (
        "the pod's seccomp profile is type Unconfined, not RuntimeDefault or Localhost"
    )


@pytest.mark.parametrize("host_users", [False, True, None, "false"])
def test_user_namespaces_relax_run_as_non_root(host_users: Any) -> None:
    """hostUsers: false (a user namespace) skips runAsNonRoot and runAsUser, as Pod Security
    policy 1.35+ does; nothing else is relaxed."""
    spec = {
        "securityContext": {"runAsNonRoot": False, "runAsUser": 0},
        "containers": [{"name": "app", "image": IMAGE, "securityContext": {"runAsUser": 0}}],
    }
    if host_users is not None:
        spec["hostUsers"] = host_users
    checks = set(ids(findings_for(spec)))
    assert ("run-as-non-root" in checks) is (host_users is not False)
    assert {"privilege-escalation", "capabilities", "seccomp-profile"} <= checks


LINUX_ONLY = {
    "privilege-escalation",
    "capabilities",
    "read-only-root-filesystem",
    "seccomp-profile",
}


@pytest.mark.parametrize("os_name", ["windows", "linux", None, "Windows"])
def test_windows_pods_are_exempt_from_linux_only_fields(os_name: str | None) -> None:
    """The API server forbids a Windows pod to set these fields, and Pod Security exempts
    it (policy 1.25+): no finding; every other check still runs."""
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "mcr.microsoft.com/windows/nanoserver"}],
        "initContainers": [{"name": "init", "image": IMAGE}],
        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
        "hostNetwork": True,
    }
    if os_name is not None:
        spec["os"] = {"name": os_name}
    checks = set(ids(findings_for(spec)))
    exempt = os_name == "windows"  # the API's value is lower case; anything else is Linux
    assert checks.isdisjoint(LINUX_ONLY) is exempt
    assert {"run-as-non-root", "host-namespaces", "image-tag", "resource-limits"} <= checks


@pytest.mark.parametrize("list_name", ["initContainers", "ephemeralContainers"])
def test_run_as_non_root_for_init_and_ephemeral_containers(list_name: str) -> None:
    spec = hardened_spec()
    spec["securityContext"].pop("runAsNonRoot")
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = True
    spec[list_name] = [hardened_container("side")]
    findings = [f for f in findings_for(spec) if f.check_id == "run-as-non-root"]
    assert [f.container for f in findings] == ["side"]


@pytest.mark.parametrize(("value", "reported"), [(False, False), (True, True), (None, True)])
def test_privilege_escalation(value: Any, reported: bool) -> None:
    spec = with_security("allowPrivilegeEscalation", value)
    assert ids(findings_for(spec)) == (["privilege-escalation"] if reported else [])


@pytest.mark.parametrize(
    ("capabilities", "reported"),
    [
        ({"drop": ["ALL"]}, False),
        ({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, False),
        ({"drop": ["ALL"], "add": ["NET_ADMIN"]}, True),
        ({"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}, True),
        ({"drop": ["NET_RAW"]}, True),
        ({"drop": ["all"]}, True),
        ({}, True),
        (None, True),
    ],
)
def test_capabilities(capabilities: Any, reported: bool) -> None:
    findings = findings_for(with_security("capabilities", capabilities))
    assert ids(findings) == (["capabilities"] if reported else [])


def test_capabilities_message_names_what_is_added() -> None:
    (finding,) = findings_for(with_security("capabilities", {"add": ["SYS_ADMIN"]}))
    assert "does not drop ALL" in finding.message
    assert "SYS_ADMIN" in finding.message


@pytest.mark.parametrize(("value", "reported"), [(True, False), (False, True), (None, True)])
def test_read_only_root_filesystem(value: Any, reported: bool) -> None:
    findings = findings_for(with_security("readOnlyRootFilesystem", value))
    assert ids(findings) == (["read-only-root-filesystem"] if reported else [])
    if reported:
        assert findings[0].severity is Severity.LOW


@pytest.mark.parametrize(
    ("pod_profile", "container_profile", "reported"),
    [
        ({"type": "RuntimeDefault"}, None, False),
        ({"type": "Localhost", "localhostProfile": "p.json"}, None, False),
        (None, {"type": "RuntimeDefault"}, False),
        (None, None, True),
        ({"type": "Unconfined"}, None, True),
        ({"type": "RuntimeDefault"}, {"type": "Unconfined"}, True),  # the container's wins
        # A bad pod-level profile is refused by restricted even when overridden.
        ({"type": "Unconfined"}, {"type": "RuntimeDefault"}, True),
        ({}, {"type": "RuntimeDefault"}, True),  # a pod-level profile without a type
        ("Unconfined", {"type": "RuntimeDefault"}, False),  # malformed: read as absent
    ],
)
def test_seccomp_profile_precedence(
    pod_profile: Any, container_profile: Any, reported: bool
) -> None:
    spec = hardened_spec()
    spec["securityContext"].pop("seccompProfile")
    if pod_profile is not None:
        spec["securityContext"]["seccompProfile"] = pod_profile
    if container_profile is not None:
        spec["containers"][0]["securityContext"]["seccompProfile"] = container_profile
    assert set(ids(findings_for(spec))) == ({"seccomp-profile"} if reported else set())


def test_host_port() -> None:
    spec = hardened_spec()
    spec["containers"][0]["ports"] = [
        {"containerPort": 8080},
        {"containerPort": 8443, "hostPort": 0},
        {"containerPort": 9090, "hostPort": 9090},
    ]
    findings = findings_for(spec)
    assert ids(findings) == ["host-port"]
    assert "9090" in findings[0].message
    assert "8443" not in findings[0].message


@pytest.mark.parametrize(
    ("limits", "reported"),
    [({"memory": "1Gi"}, False), ({"cpu": "1"}, True), ({}, True), (None, True)],
)
@pytest.mark.parametrize("list_name", ["containers", "initContainers"])
def test_resource_limits_need_memory_only(limits: Any, reported: bool, list_name: str) -> None:
    spec = hardened_spec()
    container = hardened_container("extra")
    container["resources"]["limits"] = limits
    spec.setdefault(list_name, []).append(container)
    assert ids(findings_for(spec)) == (["resource-limits"] if reported else [])


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("registry.example.com/web:1.2", None),
        ("registry.example.com/web@sha256:" + "0" * 64, None),
        ("registry.example.com/web:latest@sha256:" + "0" * 64, None),
        ("registry.example.com:5000/web:1.2", None),
        ("registry.example.com/web", "has no tag"),
        ("registry.example.com:5000/web", "has no tag"),
        ("web", "has no tag"),
        ("web:", "has no tag"),
        ("web:latest", "uses the tag latest"),
        ("registry.example.com/team/web:latest", "uses the tag latest"),
    ],
)
def test_image_tag_problem(image: str, problem: str | None) -> None:
    assert image_tag_problem(image) == problem


@pytest.mark.parametrize("list_name", ["containers", "initContainers", "ephemeralContainers"])
def test_image_tag_in_every_container_list(list_name: str) -> None:
    spec = hardened_spec()
    spec.setdefault(list_name, []).append(hardened_container("floating", "registry.example.com/x"))
    findings = findings_for(spec)
    assert [(f.check_id, f.container) for f in findings] == [("image-tag", "floating")]


# ----------------------------------------------------------------------------
# Order and robustness


def test_findings_come_in_check_order_then_container_order() -> None:
    bare = {"name": "", "image": "elsewhere.example.net/x"}
    spec = {
        "hostPID": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [dict(bare, name="a", ports=[{"hostPort": 1}]), dict(bare, name="b")],
        "initContainers": [dict(bare, name="i", securityContext={"privileged": True})],
        "ephemeralContainers": [dict(bare, name="e")],
    }
    findings = check_pod({}, spec, CORPUS_CONFIG)
    order = [CHECK_IDS.index(f.check_id) for f in findings]
    assert order == sorted(order)
    assert set(ids(findings)) == set(CHECK_IDS)  # this pod breaks every check
    per_check = [f.container for f in findings if f.check_id == "image-tag"]
    assert per_check == ["a", "b", "i", "e"]
    assert [f.container for f in findings if f.check_id == "resource-requests"] == ["a", "b", "i"]


def test_unnamed_containers_are_named_by_position() -> None:
    spec = hardened_spec()
    spec["initContainers"] = [{"image": IMAGE}]
    assert {f.container for f in findings_for(spec)} == {"initContainers[0]"}


def test_every_finding_carries_its_checks_severity_and_remediation() -> None:
    spec = {"hostNetwork": True, "containers": [{"name": "x", "image": "x"}]}
    findings = check_pod({}, spec, ChecklistConfig(("registry.example.com/",), ("app",)))
    for finding in findings:
        assert finding.severity is CHECKS[finding.check_id].severity
        assert finding.remediation == CHECKS[finding.check_id].remediation


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "containers",
                    "initContainers",
                    "ephemeralContainers",
                    "securityContext",
                    "privileged",
                    "runAsNonRoot",
                    "runAsUser",
                    "capabilities",
                    "drop",
                    "add",
                    "volumes",
                    "hostPath",
                    "resources",
                    "requests",
                    "limits",
                    "ports",
                    "hostPort",
                    "image",
                    "name",
                    "seccompProfile",
                    "type",
                    "hostNetwork",
                    "labels",
                    "spec",
                    "template",
                    "jobTemplate",
                    "metadata",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


@given(spec=json_values, metadata=json_values, kind=st.sampled_from(sorted(WORKLOAD_KINDS)))
def test_malformed_manifests_never_raise(spec: Any, metadata: Any, kind: str) -> None:
    config = ChecklistConfig(("registry.example.com/",), ("app",))
    obj = {"kind": kind, "metadata": metadata, "spec": spec}
    findings = check_object(obj, config)
    assert all(f.check_id in CHECKS for f in findings)
    if isinstance(spec, dict):
        check_pod(metadata if isinstance(metadata, dict) else {}, spec, config)


# ----------------------------------------------------------------------------
# Pod templates of every workload kind


def pod_template() -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": hardened_spec()}


API_VERSIONS = {
    "Pod": "v1",
    "ReplicationController": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "PodTemplate": "v1",
}


def wrapped(kind: str, template: dict[str, Any]) -> dict[str, Any]:
    """A workload of this kind around a pod template (a Pod is the template itself)."""
    head = {"apiVersion": API_VERSIONS[kind], "kind": kind}
    if kind == "Pod":
        return head | template
    if kind == "PodTemplate":
        return head | {"template": template}
    if kind == "CronJob":
        job = {"spec": {"template": template}}
        return head | {"spec": {"schedule": "@daily", "jobTemplate": job}}
    return head | {"spec": {"template": template}}


def test_every_workload_kind_is_covered() -> None:
    assert set(API_VERSIONS) == WORKLOAD_KINDS


@pytest.mark.parametrize("kind", sorted(API_VERSIONS))
def test_pod_template_of_every_workload_kind(kind: str) -> None:
    template = pod_template()
    metadata, spec = pod_template_of(wrapped(kind, template)) or ({}, {})
    assert metadata == template["metadata"]
    assert spec == template["spec"]


@pytest.mark.parametrize("kind", sorted(API_VERSIONS))
def test_check_object_reads_the_template_of_every_workload_kind(kind: str) -> None:
    template = pod_template()
    template["spec"]["hostNetwork"] = True
    del template["metadata"]["labels"]["app"]
    obj = wrapped(kind, template)
    if kind != "Pod":
        obj["metadata"] = {"labels": {"app": "web"}}  # on the workload: does not count
    assert ids(check_object(obj, ChecklistConfig(required_labels=("app",)))) == [
        "host-namespaces",
        "required-labels",
    ]


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Service", "spec": {"template": {"spec": {}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"spec": "x"}},
        {"apiVersion": "v1", "kind": "PodTemplate", "spec": {"template": {"spec": {}}}},
        {"apiVersion": "v1", "kind": "PodTemplate", "template": {"spec": ["nonsense"]}},
        {"kind": "Deployment", "spec": {}},
        {"kind": "Deployment", "spec": {"template": {"spec": "nonsense"}}},
        {"kind": "CronJob", "spec": {"template": {"spec": {"hostPID": True}}}},
        {"kind": "Pod"},
        {},
    ],
)
def test_non_workloads_have_no_template_and_no_findings(obj: dict[str, Any]) -> None:
    assert pod_template_of(obj) is None
    assert check_object(obj, ChecklistConfig(required_labels=("app",))) == []


def test_a_pod_template_object_is_checked() -> None:
    obj = {"apiVersion": "v1", "kind": "PodTemplate", "template": {"spec": {"hostPID": True}}}
    assert "host-namespaces" in ids(check_object(obj, RESTRICTED))


def test_workload_kinds_are_group_agnostic() -> None:
    obj = wrapped("Deployment", pod_template())
    obj["apiVersion"] = "extensions/v1beta1"
    obj["spec"]["template"]["spec"]["hostIPC"] = True
    assert ids(check_object(obj, RESTRICTED)) == ["host-namespaces"]


def test_check_object_does_not_modify_its_input() -> None:
    obj = wrapped("CronJob", pod_template())
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].append({"name": "x"})
    before = copy.deepcopy(obj)
    check_object(obj, CORPUS_CONFIG)
    assert obj == before


# ----------------------------------------------------------------------------
# Configuration from a baseline


def baseline(admission: dict[str, Any] | None) -> Any:
    spec: dict[str, Any] = {"namespaceSelector": {}}
    if admission is not None:
        spec["admission"] = admission
    return parse_baseline(
        {
            "apiVersion": "security.baseline.dev/v1alpha1",
            "kind": "SecurityBaseline",
            "metadata": {"name": "prod"},
            "spec": spec,
        }
    )


def test_config_from_a_baseline_reads_its_admission_section() -> None:
    config = ChecklistConfig.from_baseline(
        baseline(
            {"allowedRegistries": ["registry.example.com/"], "requiredLabels": ["app", "team"]}
        )
    )
    assert config == ChecklistConfig(("registry.example.com/",), ("app", "team"))


def test_config_without_admission_or_baseline_is_the_restricted_default() -> None:
    assert ChecklistConfig.from_baseline(baseline(None)) == RESTRICTED
    assert ChecklistConfig.from_baseline(baseline({"denyPrivileged": True})) == RESTRICTED
    assert ChecklistConfig.from_baseline(None) == RESTRICTED


# ----------------------------------------------------------------------------
# The shared corpus (also evaluated against the admission CEL rules)


def expected_admission_checks(path: Path) -> set[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    listed = first.removeprefix("# expect: ").strip()
    return set() if listed == "none" else {item.strip() for item in listed.split(",")}


def test_the_corpus_is_large_and_covers_every_admission_check() -> None:
    assert len(CORPUS) >= 20
    covered = set().union(*(expected_admission_checks(path) for path in CORPUS))
    assert covered == ADMISSION_CHECK_IDS
    assert any(not expected_admission_checks(path) for path in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_corpus_expectations_hold(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert len(documents) == 1, "one object per corpus file"
    (obj,) = documents
    assert pod_template_of(obj) is not None
    found = {f.check_id for f in check_object(obj, CORPUS_CONFIG)} & ADMISSION_CHECK_IDS
    assert found == expected_admission_checks(path)
