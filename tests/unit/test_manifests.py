"""The operator's own deployment: least-privilege RBAC, a hardened pod, complete kustomizations.

The YAML under manifests/ is read directly: no cluster and no kubectl. RBAC rules are
evaluated the way the API server's authorizer does (a request is allowed when one rule
matches its group, resource, verb and, where a rule names them, resource name).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from baseline_operator.policy.checklist import ChecklistConfig, check_object
from baseline_operator.policy.names import (
    MANAGED_BY_VALUE,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
)
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    EVENT,
    NAMESPACE,
    NAMESPACED_KINDS,
    POD,
    SECURITY_BASELINE,
    Kind,
)
from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import make_baseline

Body = dict[str, Any]

REPO = Path(__file__).parents[2]
BASE = REPO / "manifests" / "base"
ARGOCD = REPO / "manifests" / "argocd"
CRD_NAME = "securitybaselines.security.baseline.dev"
LEASE_NAME = "baseline-operator-leader"  # controller/leader.py
WRITE_VERBS = frozenset({"create", "patch", "delete"})
CLUSTER_SCOPED = (
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
READ_VERBS = frozenset({"get", "list", "watch"})


# --- loading -------------------------------------------------------------------------------


def _load(path: Path) -> list[Body]:
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def _kustomization(directory: Path) -> Body:
    (document,) = _load(directory / "kustomization.yaml")
    return document


def _listed_files(directory: Path) -> list[Path]:
    """Files named in the kustomization's resources and patches (directories excluded)."""
    kustomization = _kustomization(directory)
    entries = [*kustomization.get("resources", []), *kustomization.get("components", [])]
    entries += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    return [directory / entry for entry in entries]


def _rendered(directory: Path) -> list[Body]:
    """Every object a kustomization lists, following directories into their kustomizations."""
    documents: list[Body] = []
    for path in _listed_files(directory):
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), f"{path} holds no kustomization.yaml"
            documents += _rendered(path)
        else:
            documents += _load(path)
    return documents


def _own_objects() -> list[Body]:
    """The objects of manifests/base's own files (the root kustomization adds the CRD)."""
    return [doc for path in _listed_files(BASE) if path.is_file() for doc in _load(path)]


def _one(kind: str, name: str) -> Body:
    found = [
        obj for obj in _own_objects() if obj["kind"] == kind and obj["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"manifests/base holds {len(found)} {kind} {name}"
    return found[0]


def _deployment() -> Body:
    return _one("Deployment", "baseline-operator")


def _pod_spec() -> Body:
    spec: Body = _deployment()["spec"]["template"]["spec"]
    return spec


# --- RBAC evaluation -----------------------------------------------------------------------


def _rules(kind: str) -> list[Body]:
    return [rule for obj in _own_objects() if obj["kind"] == kind for rule in obj["rules"]]


def _allows(
    rules: list[Body], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    """Whether any rule grants the request (resourceNames, when set, restrict to those names)."""
    for rule in rules:
        names = rule.get("resourceNames")
        if (
            group in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            and (not names or name in names)
        ):
            return True
    return False


def _cluster_allows(kind: Kind, verb: str, subresource: str = "", name: str | None = None) -> bool:
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    return _allows(_rules("ClusterRole"), kind.group, resource, verb, name)


def _all_rules() -> Iterator[tuple[str, Body]]:
    for obj in _own_objects():
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                yield f"{obj['kind']} {obj['metadata']['name']}", rule


# --- Pod Security Standards, restricted profile (every check of the `latest` version) -------

_RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})


def psa_restricted_violations(pod_spec: Body, annotations: Body | None = None) -> list[str]:
    """Why Pod Security Admission would refuse this pod in a `restricted` namespace."""
    problems: list[str] = []
    pod_security = pod_spec.get("securityContext") or {}
    containers = [
        container
        for list_name in ("containers", "initContainers", "ephemeralContainers")
        for container in pod_spec.get(list_name) or []
    ]
    problems += [
        f"{field} is set" for field in ("hostNetwork", "hostPID", "hostIPC") if pod_spec.get(field)
    ]
    for volume in pod_spec.get("volumes") or []:
        volume_types = set(volume) - {"name"}
        if not volume_types <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} is {sorted(volume_types)}")
    for sysctl in pod_security.get("sysctls") or []:
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            problems.append(f"AppArmor profile {value}")
    for context in (pod_security, *(c.get("securityContext") or {} for c in containers)):
        problems += _context_violations(context)
    for container in containers:
        problems += _container_violations(container, pod_security)
    return problems


def _context_violations(context: Body) -> list[str]:
    """Checks that apply alike to the pod's and each container's securityContext."""
    problems = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("windowsOptions.hostProcess")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in _SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"seLinuxOptions {selinux}")
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in _PROFILE_TYPES:
        problems.append(f"appArmorProfile {apparmor}")
    if context.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in _PROFILE_TYPES:
        problems.append(f"seccompProfile {seccomp}")
    return problems


def _container_violations(container: Body, pod_security: Body) -> list[str]:
    name = container["name"]
    security = container.get("securityContext") or {}
    problems = []
    if security.get("privileged"):
        problems.append(f"{name}: privileged")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    capabilities = security.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append(f"{name}: capabilities do not drop ALL")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        problems.append(f"{name}: adds capabilities {capabilities['add']}")
    run_as_non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if run_as_non_root is not True:
        problems.append(f"{name}: runAsNonRoot is not true")
    seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
    if seccomp.get("type") not in _PROFILE_TYPES:
        problems.append(f"{name}: no RuntimeDefault or Localhost seccomp profile")
    if security.get("procMount", "Default") != "Default":
        problems.append(f"{name}: procMount {security['procMount']}")
    problems += [
        f"{name}: hostPort {port['hostPort']}"
        for port in container.get("ports") or []
        if port.get("hostPort")
    ]
    return problems


# --- kustomizations ------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [REPO, BASE, ARGOCD], ids=["root", "base", "argocd"])
def test_every_entry_a_kustomization_lists_exists(directory: Path) -> None:
    for path in _listed_files(directory):
        assert path.exists(), f"{path.relative_to(REPO)} is listed but missing"
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), (
                f"{path.relative_to(REPO)}/ is listed as a resource but holds no"
                " kustomization.yaml, so kustomize cannot build it"
            )
        else:
            assert _load(path), f"{path.relative_to(REPO)} holds no YAML document"


@pytest.mark.parametrize("directory", [BASE, ARGOCD], ids=["base", "argocd"])
def test_every_yaml_file_is_listed(directory: Path) -> None:
    """A manifest nobody lists is silently never deployed."""
    listed = {path.resolve() for path in _listed_files(directory)}
    for path in directory.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            where = path.relative_to(REPO)
            assert path.resolve() in listed, f"{where} is not in kustomization.yaml"


def test_the_root_brings_the_crds_first_for_argocd() -> None:
    crds = [obj for obj in _rendered(REPO) if obj["kind"] == "CustomResourceDefinition"]
    names = sorted(crd["metadata"]["name"] for crd in crds)
    assert names == sorted([CRD_NAME, "baselineexceptions.security.baseline.dev"])
    assert {obj["kind"] for obj in _rendered(REPO)} >= {"Deployment", "ClusterRole"}
    for name in names:
        patched = [
            patch
            for patch in _kustomization(REPO).get("patches", [])
            if yaml.safe_load(patch.get("patch", "{}")).get("metadata", {}).get("name") == name
        ]
        annotations = yaml.safe_load(patched[0]["patch"])["metadata"]["annotations"]
        assert int(annotations["argocd.argoproj.io/sync-wave"]) < 0, name


def test_own_objects_carry_no_argocd_tracking_or_generated_object_label() -> None:
    """Argo CD sets its tracking marks itself; the operator's managed-by value marks what it
    generates, and its own deployment is not something it generated."""
    for obj in _own_objects():
        labels = obj["metadata"].get("labels") or {}
        assert "app.kubernetes.io/instance" not in labels
        assert labels.get("app.kubernetes.io/managed-by") != MANAGED_BY_VALUE


# --- namespace -----------------------------------------------------------------------------


def test_operator_namespace_enforces_restricted_pod_security() -> None:
    labels = _one("Namespace", OPERATOR_NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"


def test_namespaced_objects_live_in_the_operator_namespace() -> None:
    for obj in _own_objects():
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == OPERATOR_NAMESPACE, obj["kind"]


# --- RBAC ----------------------------------------------------------------------------------


def test_no_wildcard_anywhere_in_the_operators_rbac() -> None:
    for where, rule in _all_rules():
        assert "nonResourceURLs" not in rule, where
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            for value in rule.get(field, []):
                assert "*" not in value, f"{where}: {field} contains {value!r}"


def test_no_rule_names_secrets() -> None:
    for where, rule in _all_rules():
        for resource in rule["resources"]:
            assert resource.split("/")[0] != "secrets", f"{where} grants {rule['verbs']} on secrets"


def test_no_impersonation_and_no_cluster_role_writes() -> None:
    for where, rule in _all_rules():
        assert "impersonate" not in rule["verbs"], where
        if "rbac.authorization.k8s.io" in rule["apiGroups"]:
            assert not {"clusterroles", "clusterrolebindings"} & set(rule["resources"]) or (
                rule["verbs"] == ["bind"] and rule.get("resourceNames")
            ), f"{where}: {rule}"


@pytest.mark.parametrize("kind", [*NAMESPACED_KINDS, *CLUSTER_KINDS], ids=lambda kind: kind.kind)
def test_every_kind_the_operator_generates_can_be_watched_and_written(kind: Kind) -> None:
    for verb in READ_VERBS | WRITE_VERBS:
        assert _cluster_allows(kind, verb), f"cannot {verb} {kind.plural}.{kind.group}"


def test_namespaces_are_read_and_labelled_but_never_created_or_deleted() -> None:
    for verb in READ_VERBS | {"patch"}:
        assert _cluster_allows(NAMESPACE, verb)
    for verb in ("create", "update", "delete", "deletecollection"):
        assert not _cluster_allows(NAMESPACE, verb)


def test_baselines_are_read_and_patched_but_never_created_or_deleted() -> None:
    for verb in (*READ_VERBS, "patch", "update"):
        assert _cluster_allows(SECURITY_BASELINE, verb)
    for verb in ("get", "patch", "update"):
        assert _cluster_allows(SECURITY_BASELINE, verb, subresource="status")
    for verb in ("create", "delete", "deletecollection"):
        assert not _cluster_allows(SECURITY_BASELINE, verb)


def test_pods_are_read_only_and_events_can_be_posted() -> None:
    assert all(_cluster_allows(POD, verb) for verb in READ_VERBS)
    assert not any(_cluster_allows(POD, verb) for verb in ("create", "patch", "update", "delete"))
    assert not _cluster_allows(POD, "create", subresource="exec")
    assert _cluster_allows(EVENT, "create")
    assert _allows(_rules("ClusterRole"), "events.k8s.io", "events", "create")


def test_external_crds_can_be_discovered_and_policy_reports_written() -> None:
    rules = _rules("ClusterRole")
    crds = "customresourcedefinitions"
    assert all(_allows(rules, "apiextensions.k8s.io", crds, verb) for verb in READ_VERBS)
    assert not _allows(rules, "apiextensions.k8s.io", crds, "create")
    for verb in READ_VERBS | WRITE_VERBS:
        assert _allows(rules, "wgpolicyk8s.io", "policyreports", verb)


def test_escalate_and_bind_are_granted_only_where_needed() -> None:
    rbac = "rbac.authorization.k8s.io"
    for where, rule in _all_rules():
        special = {"escalate", "bind"} & set(rule["verbs"])
        if special:
            assert where == "ClusterRole baseline-operator"
            assert rule["apiGroups"] == [rbac]
            assert rule["resources"] in (["roles"], ["clusterroles"])
            if rule["resources"] == ["clusterroles"]:
                assert rule["verbs"] == ["bind"]
                assert sorted(rule["resourceNames"]) == ["admin", "view"]
    rules = _rules("ClusterRole")
    assert _allows(rules, rbac, "roles", "escalate")
    assert not _allows(rules, rbac, "clusterroles", "escalate")
    assert not _allows(rules, rbac, "clusterroles", "bind", name="cluster-admin")


def test_every_role_a_generated_binding_refers_to_can_be_bound() -> None:
    """RoleBindings to ClusterRoles the operator does not hold need `bind` on exactly those."""
    subjects = [{"kind": "Group", "name": "team"}]
    baseline = make_baseline(
        "full",
        rbac={
            "admins": subjects,
            "deployers": subjects,
            "viewers": subjects,
            "serviceAccounts": [
                {
                    "name": "app",
                    "rules": [
                        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
                    ],
                }
            ],
        },
    )
    role_refs = [
        item.body["roleRef"]
        for item in render_namespace_objects(baseline, "team-a")
        if item.ref.kind.kind == "RoleBinding"
    ]
    assert {ref["kind"] for ref in role_refs} == {"Role", "ClusterRole"}
    rules = _rules("ClusterRole")
    for ref in role_refs:
        resource = "clusterroles" if ref["kind"] == "ClusterRole" else "roles"
        assert _allows(rules, "rbac.authorization.k8s.io", resource, "bind", ref["name"]), ref


def test_leader_election_is_limited_to_its_lease_in_its_namespace() -> None:
    role = _one("Role", "baseline-operator")
    rules = role["rules"]
    assert role["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert _allows(rules, "coordination.k8s.io", "leases", "create")
    for verb in ("get", "update"):
        assert _allows(rules, "coordination.k8s.io", "leases", verb, LEASE_NAME)
        assert not _allows(rules, "coordination.k8s.io", "leases", verb, "someone-elses-lease")
    assert not _allows(rules, "coordination.k8s.io", "leases", "delete", LEASE_NAME)
    assert _allows(rules, "", "events", "create")


def test_leader_lease_name_matches_the_controller() -> None:
    from baseline_operator.controller.leader import LEASE_NAME as CONTROLLER_LEASE_NAME

    assert CONTROLLER_LEASE_NAME == LEASE_NAME


@pytest.mark.parametrize(
    ("binding_kind", "role_kind"),
    [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")],
)
def test_roles_are_bound_to_the_operators_service_account(
    binding_kind: str, role_kind: str
) -> None:
    binding = _one(binding_kind, "baseline-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role_kind,
        "name": "baseline-operator",
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": OPERATOR_SERVICE_ACCOUNT,
            "namespace": OPERATOR_NAMESPACE,
        },
    ]
    _one(role_kind, "baseline-operator")
    account = _one("ServiceAccount", OPERATOR_SERVICE_ACCOUNT)
    assert account["automountServiceAccountToken"] is True
    assert _pod_spec()["serviceAccountName"] == OPERATOR_SERVICE_ACCOUNT


# --- the Deployment ------------------------------------------------------------------------


def test_pod_passes_pod_security_restricted() -> None:
    template = _deployment()["spec"]["template"]
    annotations = template["metadata"].get("annotations")
    assert psa_restricted_violations(template["spec"], annotations) == []


def _set(path: str, value: Any) -> Callable[[Body], None]:
    """A mutation that sets a dotted path (list indices as numbers) in a pod spec."""

    def mutate(spec: Body) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        target: Any = spec
        for part in parents:
            target = target[part] if isinstance(part, int) else target.setdefault(part, {})
        target[last] = value

    return mutate


_UNRESTRICTED: dict[str, Callable[[Body], None]] = {
    "host network": _set("hostNetwork", True),
    "privileged": _set("containers.0.securityContext.privileged", True),
    "escalation": _set("containers.0.securityContext.allowPrivilegeEscalation", True),
    "keeps capabilities": _set("containers.0.securityContext.capabilities.drop", []),
    "adds SYS_ADMIN": _set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]),
    "may run as root": _set("securityContext.runAsNonRoot", False),
    "uid 0": _set("containers.0.securityContext.runAsUser", 0),
    "unconfined seccomp": _set("securityContext.seccompProfile.type", "Unconfined"),
    "host path": _set("volumes.0", {"name": "tmp", "hostPath": {"path": "/"}}),
    "host port": _set("containers.0.ports.0.hostPort", 8080),
    "unsafe sysctl": _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
    "unmasked proc": _set("containers.0.securityContext.procMount", "Unmasked"),
    "selinux user": _set("securityContext.seLinuxOptions", {"user": "system_u"}),
    "init container": _set("initContainers", [{"name": "init", "image": "busybox:1.36"}]),
}


@pytest.mark.parametrize("mutation", _UNRESTRICTED.values(), ids=_UNRESTRICTED.keys())
def test_restricted_check_catches_each_weakening(mutation: Callable[[Body], None]) -> None:
    """The check above can fail: every single weakening of the pod is reported."""
    spec = copy.deepcopy(_pod_spec())
    mutation(spec)
    assert psa_restricted_violations(spec)


def test_pod_passes_the_operators_own_hardening_checklist() -> None:
    """It must pass its own baseline."""
    assert check_object(_deployment(), ChecklistConfig()) == []


def test_only_tmp_is_writable() -> None:
    (container,) = _pod_spec()["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert [volume["name"] for volume in _pod_spec()["volumes"]] == ["tmp"]
    assert "emptyDir" in _pod_spec()["volumes"][0]


def test_pod_runs_as_the_user_the_image_declares() -> None:
    user_lines = [
        line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    uid, _, gid = user_lines[-1].removeprefix("USER ").partition(":")
    pod_security = _pod_spec()["securityContext"]
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(uid), int(gid))
    assert int(uid) != 0
    assert pod_security["fsGroup"] == int(gid)


def test_dockerfile_pins_its_base_and_enters_the_cli() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    name, _, tag = base.group(1).partition(":")
    assert name == "python"
    assert tag.startswith("3.11.")
    assert "slim" in tag
    assert 'ENTRYPOINT ["baseline-operator"]' in text
    for variable in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert variable in text


def test_two_replicas_share_one_lease_identity_scheme() -> None:
    deployment = _deployment()
    assert deployment["spec"]["replicas"] == 2
    (container,) = _pod_spec()["containers"]
    env = {item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"] for item in container["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def _run_arguments() -> list[str]:
    (container,) = _pod_spec()["containers"]
    assert container["command"] == ["baseline-operator"]
    arguments: list[str] = container["args"]
    return arguments


def test_run_arguments_are_options_the_cli_accepts() -> None:
    from baseline_operator.cli import run

    arguments = _run_arguments()
    assert arguments[0] == "run"
    substituted = [arg.replace("$(POD_NAMESPACE)", OPERATOR_NAMESPACE) for arg in arguments[1:]]
    context = run.make_context("run", substituted)
    assert context.params["namespace"] == OPERATOR_NAMESPACE
    assert context.params["liveness"] is not None


def test_liveness_probe_asks_the_endpoint_the_operator_serves() -> None:
    arguments = _run_arguments()
    served = urlsplit(arguments[arguments.index("--liveness") + 1])
    (container,) = _pod_spec()["containers"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert probe["path"] == served.path
    assert ports[probe["port"]] == served.port
    assert served.hostname == "0.0.0.0"  # the kubelet probes the pod IP, not loopback


def test_resources_are_requested_and_memory_is_limited() -> None:
    (container,) = _pod_spec()["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_image_tag_follows_the_package_version() -> None:
    (container,) = _pod_spec()["containers"]
    project_version = version("baseline-operator")
    assert container["image"] == f"baseline-operator:{project_version}"
    images = {image["name"]: image for image in _kustomization(BASE)["images"]}
    assert images["baseline-operator"]["newTag"] == project_version


def test_selectors_match_the_pod_labels() -> None:
    deployment = _deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "baseline-operator"
    assert pod_labels["app.kubernetes.io/component"] == "controller"
    budget = _one("PodDisruptionBudget", "baseline-operator")
    for selector in (deployment["spec"]["selector"], budget["spec"]["selector"]):
        assert selector["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


# --- Argo CD -------------------------------------------------------------------------------


def _argocd_objects(kind: str) -> list[Body]:
    return [obj for obj in _rendered(ARGOCD) if obj["kind"] == kind]


def test_argocd_applications_sync_server_side_from_paths_that_exist() -> None:
    applications = _argocd_objects("Application")
    assert applications
    projects = {project["metadata"]["name"] for project in _argocd_objects("AppProject")}
    for application in applications:
        spec = application["spec"]
        assert spec["project"] in projects
        assert (REPO / spec["source"]["path"]).is_dir(), spec["source"]["path"]
        assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]


def test_argocd_project_admits_exactly_what_the_applications_deploy() -> None:
    (project,) = _argocd_objects("AppProject")
    spec = project["spec"]
    cluster_kinds = {(item["group"], item["kind"]) for item in spec["clusterResourceWhitelist"]}
    namespaced_kinds = {
        (item["group"], item["kind"]) for item in spec["namespaceResourceWhitelist"]
    }
    wanted_cluster = {
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        (SECURITY_BASELINE.group, SECURITY_BASELINE.kind),
    }
    wanted_namespaced = set()
    for obj in _own_objects():
        group = obj["apiVersion"].rpartition("/")[0]
        if obj["kind"] in CLUSTER_SCOPED:
            wanted_cluster.add((group, obj["kind"]))
        else:
            wanted_namespaced.add((group, obj["kind"]))
    assert cluster_kinds == wanted_cluster
    assert namespaced_kinds == wanted_namespaced
    assert all("*" not in value for pair in cluster_kinds | namespaced_kinds for value in pair)


# --- The ceiling on the operator's own writes (admission-ceiling.yaml) ---------------------


def test_the_ceiling_policy_watches_every_namespaced_kind_the_operator_writes() -> None:
    policy = _one("ValidatingAdmissionPolicy", "baseline-operator-ceiling")
    binding = _one("ValidatingAdmissionPolicyBinding", "baseline-operator-ceiling")
    assert binding["spec"]["policyName"] == "baseline-operator-ceiling"
    assert binding["spec"]["validationActions"] == ["Deny"]
    covered = {
        (group, resource)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if {"CREATE", "UPDATE", "DELETE"} <= set(rule["operations"])
    }
    for kind in NAMESPACED_KINDS:
        assert (kind.group, kind.plural) in covered, kind.kind


def test_the_ceiling_policy_names_the_operators_service_account() -> None:
    policy = _one("ValidatingAdmissionPolicy", "baseline-operator-ceiling")
    (condition,) = policy["spec"]["matchConditions"]
    username = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    assert f"'{username}'" in condition["expression"]
    bound = [
        subject
        for obj in _own_objects()
        if obj["kind"] == "ClusterRoleBinding"
        for subject in obj["subjects"]
    ]
    assert {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT} | {
        "namespace": OPERATOR_NAMESPACE
    } in bound


def test_the_operators_namespace_is_one_it_may_not_write_generated_objects_in() -> None:
    policy = _one("ValidatingAdmissionPolicy", "baseline-operator-ceiling")
    first = " ".join(policy["spec"]["validations"][0]["expression"].split())
    for namespace in ("kube-system", "kube-public", "kube-node-lease", OPERATOR_NAMESPACE):
        assert f"'{namespace}'" in first
