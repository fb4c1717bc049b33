"""The examples the docs point at: the fleet (docs/fleet.md) and the cluster's own
configuration beside the baselines (docs/maturity.md), read and judged without a cluster.

- Every YAML file under manifests/argocd, manifests/fleet and manifests/cluster parses.
- The ApplicationSets have the shape Argo CD needs: a cluster generator, Go templates
  that only use what that generator provides, source paths that exist for every overlay.
- The fleet's baselines, and every overlay built by kustomize, are valid SecurityBaselines.
- The audit Policy never logs a Secret's body; RBAC and posture changes are logged in full.
- The EncryptionConfiguration encrypts Secrets with a real provider before identity.
- The Falco rules key on the label the operator stamps; the image policy is well formed.
- Every `spec.` field and every manifests/ path the docs name exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.api.crd import build_crd
from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.names import APPLIED_PREFIX, OPERATOR_NAMESPACE

Body = dict[str, Any]

REPO = Path(__file__).parents[2]
MANIFESTS = REPO / "manifests"
FLEET_ARGOCD = MANIFESTS / "argocd" / "fleet"
FLEET = MANIFESTS / "fleet"
OVERLAYS = FLEET / "overlays"
CLUSTER = MANIFESTS / "cluster"
DOCS = REPO / "docs"
LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _documents(path: Path) -> list[Body]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _yaml_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.yaml"))


def _one(path: Path) -> Body:
    (document,) = _documents(path)
    return document


# --- every file parses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    _yaml_files(MANIFESTS / "argocd", FLEET, CLUSTER),
    ids=lambda path: str(path.relative_to(MANIFESTS)),
)
def test_every_yaml_file_parses_into_typed_documents(path: Path) -> None:
    documents = _documents(path)
    assert documents, f"{path} holds no document"
    if path.name == "falco-rules.yaml":  # a Falco rules file: a list of items
        (items,) = documents
        assert isinstance(items, list) and items
        return
    for document in documents:
        assert isinstance(document, dict)
        assert document.get("apiVersion") and document.get("kind"), path


def _kustomizations() -> list[Path]:
    return sorted(
        path.parent
        for path in [*FLEET_ARGOCD.rglob("kustomization.yaml"), *FLEET.rglob("kustomization.yaml")]
    )


@pytest.mark.parametrize("directory", _kustomizations(), ids=lambda path: path.name)
def test_fleet_kustomizations_list_what_exists_and_every_file_beside_them(directory: Path) -> None:
    kustomization = _one(directory / "kustomization.yaml")
    listed = {(directory / entry).resolve() for entry in kustomization.get("resources", [])}
    for path in listed:
        assert path.exists(), f"{directory}: {path} is listed but missing"
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), path
    for path in directory.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path} is not in its kustomization"


# --- the ApplicationSets --------------------------------------------------------------------


def _fleet_objects(kind: str) -> list[Body]:
    return [
        document
        for path in sorted(FLEET_ARGOCD.glob("*.yaml"))
        for document in _documents(path)
        if document.get("kind") == kind
    ]


def _application_sets() -> dict[str, Body]:
    return {item["metadata"]["name"]: item for item in _fleet_objects("ApplicationSet")}


# What the cluster generator gives a Go template, for a cluster declared by a Secret.
_CLUSTER_PARAMETERS = {".name", ".nameNormalized", ".server", ".metadata.labels"}
_EXPRESSION = re.compile(r"\{\{(.*?)\}\}")
_OVERLAY_PATH = re.compile(
    r'^manifests/fleet/overlays/\{\{ index \.metadata\.labels "([^"]+)" \| default "([^"]+)" \}\}$'
)


def _template_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _template_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _template_strings(value)
    elif isinstance(node, str) and "{{" in node:
        yield node


def test_the_fleet_is_two_application_sets_over_the_cluster_generator() -> None:
    sets = _application_sets()
    assert set(sets) == {"baseline-operator", "security-baselines"}
    (project,) = _fleet_objects("AppProject")
    for name, application_set in sets.items():
        spec = application_set["spec"]
        assert spec["goTemplate"] is True, name
        assert "missingkey=error" in spec.get("goTemplateOptions", []), name
        (generator,) = spec["generators"]
        assert set(generator) == {"clusters"}, name
        # A selector skips the secretless local cluster, so .metadata.labels always exists.
        assert generator["clusters"]["selector"]["matchLabels"], name
        template = spec["template"]["spec"]
        assert template["project"] == project["metadata"]["name"]
        assert template["destination"] == {
            "server": "{{ .server }}",
            "namespace": OPERATOR_NAMESPACE,
        }
        assert template["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert "ServerSideApply=true" in template["syncPolicy"]["syncOptions"]
        for text in _template_strings(spec["template"]):
            for expression in _EXPRESSION.findall(text):
                code = re.sub(r'"[^"]*"', '""', expression)  # string literals are no fields
                used = set(re.findall(r"\.[A-Za-z][\w.]*", code))
                assert used <= _CLUSTER_PARAMETERS, (name, expression)


def test_each_cluster_gets_one_application_of_each_with_a_valid_name() -> None:
    for application_set in _application_sets().values():
        name = application_set["spec"]["template"]["metadata"]["name"]
        rendered = name.replace("{{ .nameNormalized }}", "prod-eu-1.example.com")
        assert "{{" not in rendered and DNS_SUBDOMAIN.match(rendered), name


def test_the_operator_application_set_deploys_the_root_kustomization() -> None:
    source = _application_sets()["baseline-operator"]["spec"]["template"]["spec"]["source"]
    assert source["path"] == "."
    root = _one(REPO / "kustomization.yaml")
    assert "crds/securitybaselines.security.baseline.dev.yaml" in root["resources"]
    assert "manifests/base" in root["resources"]


def test_the_baselines_application_set_finds_an_overlay_for_every_cluster() -> None:
    spec = _application_sets()["security-baselines"]["spec"]["template"]["spec"]
    match = _OVERLAY_PATH.match(spec["source"]["path"])
    assert match is not None, spec["source"]["path"]
    label, default = match.groups()
    assert label == "security.baseline.dev/overlay"
    assert (OVERLAYS / default / "kustomization.yaml").is_file()
    overlays = sorted(path.name for path in OVERLAYS.iterdir() if path.is_dir())
    assert len(overlays) >= 3
    for overlay in overlays:
        # a cluster Secret's label value names it, so it must be one
        assert LABEL_VALUE.match(overlay), overlay
        assert (OVERLAYS / overlay / "kustomization.yaml").is_file(), overlay
    options = spec["syncPolicy"]["syncOptions"]
    assert "SkipDryRunOnMissingResource=true" in options  # the CRD comes from the other one


def _root_kinds() -> set[tuple[str, str]]:
    """(group, kind) of every object the root kustomization deploys."""
    kinds: set[tuple[str, str]] = set()

    def visit(directory: Path) -> None:
        for entry in _one(directory / "kustomization.yaml").get("resources", []):
            path = directory / entry
            if path.is_dir():
                visit(path)
            else:
                for document in _documents(path):
                    kinds.add((document["apiVersion"].rpartition("/")[0], document["kind"]))

    visit(REPO)
    return kinds


def test_the_fleet_project_admits_exactly_what_the_applications_deploy() -> None:
    (project,) = _fleet_objects("AppProject")
    spec = project["spec"]
    admitted = {
        (item["group"], item["kind"])
        for key in ("clusterResourceWhitelist", "namespaceResourceWhitelist")
        for item in spec[key]
    }
    assert admitted == _root_kinds() | {("security.baseline.dev", "SecurityBaseline")}
    assert spec["destinations"] == [{"server": "*", "namespace": OPERATOR_NAMESPACE}]


# --- the fleet's baselines ------------------------------------------------------------------


def test_the_shared_baselines_are_valid() -> None:
    names = []
    for path in sorted((FLEET / "baselines").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in _documents(path):
            names.append(parse_baseline(document).name)
    assert sorted(names) == ["org-wide", "production"]


def _kubectl() -> str | None:
    return shutil.which("kubectl", path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin")


@pytest.mark.parametrize(
    "overlay", sorted(path.name for path in OVERLAYS.iterdir() if path.is_dir())
)
def test_every_overlay_builds_into_valid_baselines(overlay: str) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl (kustomize) is not installed: the test extra provides it")
    built = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    documents = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    baselines = {parse_baseline(document).name: document for document in documents}
    assert sorted(baselines) == ["org-wide", "production"]
    production = baselines["production"]["spec"]
    if overlay == "staging":
        assert production["mode"] == "Audit"
        assert production["admission"]["validationActions"] == ["Warn", "Audit"]
    elif overlay == "prod-eu-1":
        assert production["excludeNamespaces"] == ["legacy-billing"]
        assert production["admission"]["allowedRegistries"][0] == "registry.eu.example.com/"
    else:
        base = _one(FLEET / "baselines" / "production.yaml")
        assert production == base["spec"]


# --- the audit Policy -----------------------------------------------------------------------

LEVELS = ["None", "Metadata", "Request", "RequestResponse"]
ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


def _audit_policy() -> Body:
    return _one(CLUSTER / "audit-policy.yaml")


def _matches_resource(rule: Body, group: str, resource: str) -> bool:
    """The API server's GroupResources matching (an empty resource list: the whole group)."""
    if rule.get("nonResourceURLs"):
        return False
    if "resources" not in rule:
        return True
    for entry in rule["resources"]:
        if entry.get("group", "") != group:
            continue
        names = entry.get("resources") or []
        if not names or "*" in names or resource in names:
            return True
        base, _, sub = resource.partition("/")
        if sub and (f"{base}/*" in names or f"*/{sub}" in names):
            return True
    return False


def _level(
    group: str, resource: str, verb: str, user: str = "alice", groups: tuple[str, ...] = ()
) -> str:
    """The level the first matching rule gives a resource request (as the API server does)."""
    for rule in _audit_policy()["rules"]:
        if "users" in rule and user not in rule["users"]:
            continue
        if "userGroups" in rule and not set(groups) & set(rule["userGroups"]):
            continue
        if "verbs" in rule and verb not in rule["verbs"]:
            continue
        if _matches_resource(rule, group, resource):
            return str(rule["level"])
    return "None"


def test_the_audit_policy_is_an_audit_policy() -> None:
    policy = _audit_policy()
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    assert all(rule["level"] in LEVELS for rule in policy["rules"])
    assert "RequestReceived" in policy["omitStages"]
    assert set(policy["rules"][-1]) == {"level"}  # a catch-all closes it


SECRET_LIKE = [
    ("", "secrets"),
    ("", "serviceaccounts/token"),
    ("authentication.k8s.io", "tokenreviews"),
    ("external-secrets.io", "externalsecrets"),
]


@pytest.mark.parametrize(("group", "resource"), SECRET_LIKE)
def test_secrets_are_audited_at_metadata_and_never_with_their_bodies(
    group: str, resource: str
) -> None:
    for verb in ALL_VERBS:
        for user, groups in [
            ("alice", ("system:authenticated",)),
            ("system:serviceaccount:baseline-operator-system:baseline-operator", ()),
            ("system:node:worker-1", ("system:nodes",)),
            ("system:kube-proxy", ()),
        ]:
            level = _level(group, resource, verb, user, groups)
            assert level == "Metadata", (group, resource, verb, user, level)


def test_no_rule_that_logs_bodies_can_match_a_secret() -> None:
    """Whatever its users and verbs: order alone must not be what keeps Secrets safe."""
    for rule in _audit_policy()["rules"]:
        if rule["level"] in ("Request", "RequestResponse"):
            for group, resource in SECRET_LIKE:
                assert not _matches_resource(rule, group, resource), (rule, resource)


@pytest.mark.parametrize(
    ("group", "resource"),
    [
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("security.baseline.dev", "securitybaselines"),
        ("security.baseline.dev", "baselineexceptions"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
        ("", "namespaces"),
        ("networking.k8s.io", "networkpolicies"),
    ],
)
def test_rbac_and_posture_changes_are_logged_in_full(group: str, resource: str) -> None:
    for verb in ("create", "update", "patch", "delete"):
        assert _level(group, resource, verb) == "RequestResponse", (resource, verb)
    assert _level(group, resource, "get") == "Metadata"


def test_exec_into_a_pod_is_audited() -> None:
    assert _level("", "pods/exec", "create") == "Metadata"
    assert _level("", "pods", "create") == "Request"


# --- the EncryptionConfiguration ------------------------------------------------------------

REAL_PROVIDERS = {"kms", "aescbc", "aesgcm", "secretbox"}


def test_secrets_are_encrypted_first_by_a_real_provider_and_identity_comes_last() -> None:
    config = _one(CLUSTER / "encryption-configuration.yaml")
    assert (config["apiVersion"], config["kind"]) == (
        "apiserver.config.k8s.io/v1",
        "EncryptionConfiguration",
    )
    first = config["resources"][0]
    assert first["resources"][0] == "secrets"
    providers = [next(iter(provider)) for provider in first["providers"]]
    assert providers[0] in REAL_PROVIDERS, providers
    if "identity" in providers:
        assert providers.index("identity") == len(providers) - 1, providers
    for provider in first["providers"]:
        if "kms" in provider:
            assert provider["kms"]["apiVersion"] == "v2"
            assert provider["kms"]["endpoint"].startswith("unix://")
    # every resource entry names what it encrypts and ends with a usable provider list
    for entry in config["resources"]:
        assert entry["resources"] and entry["providers"]


# --- tools alongside: Falco and the sigstore policy-controller ------------------------------

FALCO_PRIORITIES = {
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "DEBUG",
}


def _baselines_in_manifests() -> set[str]:
    names = set()
    for path in [*(MANIFESTS / "examples").glob("*.yaml"), *(FLEET / "baselines").glob("*.yaml")]:
        for document in _documents(path):
            if document.get("kind") == "SecurityBaseline":
                names.add(document["metadata"]["name"])
    return names


def test_falco_rules_key_on_the_label_the_operator_stamps_on_namespaces() -> None:
    items: list[Body] = yaml.safe_load((CLUSTER / "falco-rules.yaml").read_text())
    macros = {item["macro"]: item["condition"] for item in items if "macro" in item}
    rules = [item for item in items if "rule" in item]
    assert len(rules) >= 2
    labels = set(re.findall(r"k8smeta\.ns\.label\[([^\]]+)\]", " ".join(macros.values())))
    assert labels, "no macro reads a namespace label"
    for label in labels:
        assert label.startswith(APPLIED_PREFIX), label
        assert label.removeprefix(APPLIED_PREFIX) in _baselines_in_manifests(), label
    for rule in rules:
        assert {"rule", "desc", "condition", "output", "priority"} <= set(rule), rule["rule"]
        assert rule["priority"] in FALCO_PRIORITIES
        assert any(macro in rule["condition"] for macro in macros), rule["rule"]
    plugins = [item for item in items if "required_plugin_versions" in item]
    assert plugins and plugins[0]["required_plugin_versions"][0]["name"] == "k8smeta"


def test_the_image_policy_verifies_keyless_signatures_of_the_allowed_registry() -> None:
    policy = _one(CLUSTER / "cluster-image-policy.yaml")
    assert (policy["apiVersion"], policy["kind"]) == (
        "policy.sigstore.dev/v1beta1",
        "ClusterImagePolicy",
    )
    globs = [image["glob"] for image in policy["spec"]["images"]]
    registries = _one(FLEET / "baselines" / "production.yaml")["spec"]["admission"][
        "allowedRegistries"
    ]
    assert all(any(glob.startswith(registry) for registry in registries) for glob in globs)
    (authority,) = policy["spec"]["authorities"]
    identity = authority["keyless"]["identities"][0]
    assert identity["issuer"].startswith("https://")
    re.compile(identity["subjectRegExp"])
    assert authority["ctlog"]["url"].startswith("https://")


# --- the docs name what exists --------------------------------------------------------------


def _schema_paths() -> set[str]:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths: set[str] = set()

    def walk(node: Body, prefix: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            path = f"{prefix}.{name}" if prefix else name
            paths.add(path)
            walk(child, path)
            if "items" in child:
                paths.add(f"{path}[]")
                walk(child["items"], f"{path}[]")

    walk(root, "")
    return paths


@pytest.mark.parametrize("name", ["maturity.md", "fleet.md", "argocd.md"])
def test_every_field_and_file_the_docs_name_exists(name: str) -> None:
    text = (DOCS / name).read_text()
    schema = _schema_paths()
    fields = set(re.findall(r"`((?:spec|status)\.[A-Za-z0-9_.\[\]]+)", text))
    for field in fields:
        assert field.rstrip(".") in schema, f"docs/{name} names {field}, not in the CRD"
    for path in set(re.findall(r"\b((?:manifests|crds|docs|tests)/[\w./<>-]*[\w/])", text)):
        if "<" in path:
            continue
        assert (REPO / path).exists(), f"docs/{name} names {path}, which does not exist"


MATURITY_STEPS = [
    "identity and rbac",
    "workload hardening",
    "secrets",
    "admission and policy as code",
    "network",
    "runtime detection",
    "audit logging",
    "encryption at rest",
    "image scanning and signing",
    "resource limits",
]


def test_the_maturity_guide_walks_every_step_in_order() -> None:
    headings = [
        line.lstrip("#").strip().lower()
        for line in (DOCS / "maturity.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    positions = []
    for step in MATURITY_STEPS:
        found = [index for index, heading in enumerate(headings) if step in heading]
        assert found, f"docs/maturity.md has no section for {step}: {headings}"
        positions.append(found[0])
    assert positions == sorted(positions)
