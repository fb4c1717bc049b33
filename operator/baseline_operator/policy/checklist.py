"""The workload hardening checklist: what a Pod (or a pod template) does that it should not.

Pure functions over plain manifests (dicts as parsed from YAML or read from the API
server). The same checklist serves the operator's workload audit and the offline
`audit` command. Seven checks mirror the admission rules that a baseline renders
as CEL (ADMISSION_CHECK_IDS); their semantics here must stay identical to those
rules, so that `audit` in CI predicts what admission will refuse.

Input is untrusted: any field may be missing, null or of the wrong type, and a
malformed field reads as absent rather than raising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from baseline_operator.api.resource import SecurityBaseline


class Severity(StrEnum):
    """How bad a finding is; compares by rank (LOW < MEDIUM < HIGH < CRITICAL)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)

    # str's own comparisons would order alphabetically ("critical" < "high").
    def __lt__(self, other: str) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: str) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: str) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: str) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_SEVERITY_ORDER: tuple[Severity, ...] = (
    Severity.LOW,
    Severity.MEDIUM,
    Severity.HIGH,
    Severity.CRITICAL,
)


@dataclass(frozen=True, slots=True)
class Waiver:
    """An active BaselineException that waives a check for a pod: its name and expiry."""

    exception: str
    expires: str  # RFC 3339, as the exception says


FAIL = "fail"
SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    check_id: str
    severity: Severity
    container: str | None  # None when the finding is about the pod as a whole
    message: str
    remediation: str
    waived_by: Waiver | None = None  # set when an active exception covers the finding

    @property
    def result(self) -> str:
        """`skip` when an active exception waives it (PolicyReport's word), else `fail`."""
        return FAIL if self.waived_by is None else SKIP


def registry_prefixes(entries: Iterable[str]) -> tuple[str, ...]:
    """The image prefixes that `allowedRegistries` entries stand for, matched on a boundary.

    An entry that ends with `/` is a prefix as written. Any other entry names a host (with
    its port, if it names one) or a host and path exactly, and stands for itself followed by
    `/`: `registry.example.com` admits `registry.example.com/x`, but neither
    `registry.example.com.evil.test/x`, `registry.example.com:5000/x` nor
    `registry.example.com:5000evil/x`; `ghcr.io/acme` admits `ghcr.io/acme/x`, not
    `ghcr.io/acme-evil/x`. The admission CEL tests the same prefixes.
    """
    return tuple(entry if entry.endswith("/") else f"{entry}/" for entry in entries)


@dataclass(frozen=True)
class ChecklistConfig:
    """The parts of the checklist a baseline configures; the rest is fixed."""

    allowed_registries: tuple[str, ...] = ()  # allowedRegistries entries; empty allows any
    required_labels: tuple[str, ...] = ()

    @cached_property
    def image_prefixes(self) -> tuple[str, ...]:
        """What an image must start with: see registry_prefixes."""
        return registry_prefixes(self.allowed_registries)

    @classmethod
    def from_baseline(cls, baseline: SecurityBaseline | None) -> ChecklistConfig:
        """From spec.admission; without a baseline, the restricted checks alone."""
        admission = baseline.spec.admission if baseline is not None else None
        if admission is None:
            return cls()
        return cls(
            allowed_registries=tuple(admission.allowed_registries),
            required_labels=tuple(admission.required_labels),
        )


@dataclass(frozen=True)
class Check:
    """A checklist item as people read it (docs, SARIF rules)."""

    id: str
    name: str
    severity: Severity
    summary: str
    remediation: str


_CHECK_LIST: tuple[Check, ...] = (
    Check(
        "privileged",
        "PrivilegedContainer",
        Severity.CRITICAL,
        "A container runs privileged, with every capability and access to the host's devices.",
        "Remove securityContext.privileged (or set it to false); grant only the specific"
        " capability the container needs.",
    ),
    Check(
        "host-namespaces",
        "HostNamespaces",
        Severity.HIGH,
        "The pod shares the node's network, process or IPC namespace.",
        "Remove hostNetwork, hostPID and hostIPC from the pod spec (or set them to false);"
        " expose ports through a Service instead.",
    ),
    Check(
        "host-path",
        "HostPathVolume",
        Severity.HIGH,
        "The pod mounts a directory or file of the node (a hostPath volume).",
        "Replace the hostPath volume with an emptyDir, a ConfigMap or Secret, or a"
        " PersistentVolumeClaim.",
    ),
    Check(
        "allowed-registries",
        "UntrustedRegistry",
        Severity.HIGH,
        "A container image does not come from an allowed registry (host, or host and path).",
        "Pull the image from one of the baseline's allowedRegistries (mirror it there first).",
    ),
    Check(
        "required-labels",
        "MissingRequiredLabel",
        Severity.MEDIUM,
        "The pod (or the workload's pod template) lacks a label the baseline requires.",
        "Add the label to the pod's metadata.labels (for a workload: its pod template's"
        " metadata.labels).",
    ),
    Check(
        "resource-requests",
        "MissingResourceRequests",
        Severity.MEDIUM,
        "A container does not request both cpu and memory.",
        "Set resources.requests.cpu and resources.requests.memory on every container and"
        " init container.",
    ),
    Check(
        "run-as-non-root",
        "RunAsRoot",
        Severity.HIGH,
        "A container may run as root: runAsNonRoot is not true, or runAsUser is 0.",
        "Set securityContext.runAsNonRoot: true (pod or container) and a non-zero runAsUser;"
        " build the image with a non-root USER.",
    ),
    Check(
        "privilege-escalation",
        "PrivilegeEscalation",
        Severity.MEDIUM,
        "A container's process may gain more privileges than its parent (setuid binaries).",
        "Set securityContext.allowPrivilegeEscalation: false on every container.",
    ),
    Check(
        "capabilities",
        "Capabilities",
        Severity.MEDIUM,
        "A container keeps Linux capabilities: it does not drop ALL, or adds more than"
        " NET_BIND_SERVICE.",
        "Set securityContext.capabilities.drop: [ALL]; add back at most NET_BIND_SERVICE.",
    ),
    Check(
        "read-only-root-filesystem",
        "WritableRootFilesystem",
        Severity.LOW,
        "A container can write to its root filesystem.",
        "Set securityContext.readOnlyRootFilesystem: true; mount an emptyDir where the"
        " program must write (e.g. /tmp).",
    ),
    Check(
        "seccomp-profile",
        "SeccompProfile",
        Severity.MEDIUM,
        "A container runs without a seccomp profile (RuntimeDefault or Localhost).",
        "Set securityContext.seccompProfile.type: RuntimeDefault on the pod (or on each"
        " container).",
    ),
    Check(
        "host-port",
        "HostPort",
        Severity.MEDIUM,
        "A container binds a port on the node (hostPort).",
        "Remove hostPort from the container's ports; expose it through a Service.",
    ),
    Check(
        "resource-limits",
        "MissingMemoryLimit",
        Severity.LOW,
        "A container has no memory limit.",
        "Set resources.limits.memory on every container and init container (cpu limits are"
        " optional: they throttle rather than protect).",
    ),
    Check(
        "image-tag",
        "UnpinnedImage",
        Severity.MEDIUM,
        "A container image has no tag, or the tag latest, so what runs can change unseen.",
        "Reference the image by an immutable version tag, or better by digest (image@sha256:...).",
    ),
)

CHECKS: Mapping[str, Check] = {check.id: check for check in _CHECK_LIST}
CHECK_IDS: tuple[str, ...] = tuple(check.id for check in _CHECK_LIST)
# The checks that the admission rules (CEL) enforce too, with the same semantics.
ADMISSION_CHECK_IDS: frozenset[str] = frozenset(
    {
        "privileged",
        "host-namespaces",
        "host-path",
        "allowed-registries",
        "required-labels",
        "resource-requests",
        "run-as-non-root",
    }
)

WORKLOAD_KINDS: frozenset[str] = frozenset(
    {
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
        # Nothing runs from a PodTemplate itself, but controllers and people copy it into
        # pods, so the offline audit checks it like any other pod template.
        "PodTemplate",
    }
)

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# Ephemeral containers cannot declare resources, so the resource checks skip them.
_RESOURCE_CONTAINER_LISTS = ("containers", "initContainers")
_CONTAINER_WORDS = {
    "containers": "container",
    "initContainers": "init container",
    "ephemeralContainers": "ephemeral container",
}
_ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Checks of Linux-only securityContext fields, which the API server forbids a Windows pod
# (spec.os.name: windows) to set; Pod Security exempts such pods from them, and so do we.
_LINUX_ONLY_CHECKS = frozenset(
    {"privilege-escalation", "capabilities", "read-only-root-filesystem", "seccomp-profile"}
)
_ALLOWED_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})

_EMPTY: Mapping[str, Any] = {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def pod_template_of(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(pod metadata, pod spec) of a Pod, a PodTemplate or a workload's pod template; None
    otherwise."""
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    if kind == "Pod":
        pod: Mapping[str, Any] = obj
    elif kind == "PodTemplate":
        pod = _mapping(obj.get("template"))
    elif kind == "CronJob":
        job_spec = _mapping(_mapping(_mapping(obj.get("spec")).get("jobTemplate")).get("spec"))
        pod = _mapping(job_spec.get("template"))
    else:
        pod = _mapping(_mapping(obj.get("spec")).get("template"))
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return None
    return _mapping(pod.get("metadata")), spec


@dataclass(frozen=True, slots=True)
class _Container:
    list_name: str  # containers | initContainers | ephemeralContainers
    name: str
    body: Mapping[str, Any]

    @property
    def security(self) -> Mapping[str, Any]:
        return _mapping(self.body.get("securityContext"))

    @property
    def label(self) -> str:
        return f"{_CONTAINER_WORDS[self.list_name]} {self.name}"

    @property
    def image(self) -> str:
        image = self.body.get("image")
        return image if isinstance(image, str) else ""


def _containers(spec: Mapping[str, Any]) -> list[_Container]:
    found: list[_Container] = []
    for list_name in _CONTAINER_LISTS:
        for index, body in enumerate(_sequence(spec.get(list_name))):
            container = _mapping(body)
            name = container.get("name")
            shown = name if isinstance(name, str) and name else f"{list_name}[{index}]"
            found.append(_Container(list_name, shown, container))
    return found


@dataclass(frozen=True)
class _Pod:
    labels: Mapping[str, Any]
    spec: Mapping[str, Any]
    security: Mapping[str, Any]  # the pod-level securityContext
    containers: list[_Container]
    config: ChecklistConfig
    windows: bool  # spec.os.name: windows
    user_namespace: bool  # spec.hostUsers: false

    def effective(self, container: _Container, field: str) -> Any:
        """A securityContext field as the kubelet reads it: the container's, else the pod's."""
        value = container.security.get(field)
        return value if value is not None else self.security.get(field)


def _finding(check_id: str, container: _Container | None, message: str) -> Finding:
    check = CHECKS[check_id]
    name = container.name if container is not None else None
    return Finding(check_id, check.severity, name, message, check.remediation)


def _check_privileged(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        if container.security.get("privileged") is True:
            yield _finding("privileged", container, f"{container.label} runs privileged")


def _check_host_namespaces(pod: _Pod) -> Iterator[Finding]:
    namespaces = ("hostNetwork", "hostPID", "hostIPC")
    shared = [field for field in namespaces if pod.spec.get(field) is True]
    if shared:
        listed = ", ".join(shared)
        yield _finding("host-namespaces", None, f"the pod shares the node's namespaces: {listed}")


def _check_host_path(pod: _Pod) -> Iterator[Finding]:
    for index, volume in enumerate(_sequence(pod.spec.get("volumes"))):
        body = _mapping(volume)
        if body.get("hostPath") is not None:
            path = _mapping(body["hostPath"]).get("path")
            name = body.get("name") or f"volumes[{index}]"
            where = f" ({path})" if isinstance(path, str) else ""
            yield _finding("host-path", None, f"volume {name} is a hostPath{where}")


def _check_allowed_registries(pod: _Pod) -> Iterator[Finding]:
    entries = pod.config.allowed_registries
    if not entries:
        return
    prefixes = pod.config.image_prefixes
    for container in pod.containers:
        if not container.image.startswith(prefixes):
            yield _finding(
                "allowed-registries",
                container,
                f"{container.label} image {container.image!r} is not from an allowed registry"
                f" ({', '.join(entries)})",
            )


def _check_required_labels(pod: _Pod) -> Iterator[Finding]:
    for key in pod.config.required_labels:
        if key not in pod.labels:
            yield _finding("required-labels", None, f"the pod lacks the required label {key}")


def _check_resource_requests(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        if container.list_name not in _RESOURCE_CONTAINER_LISTS:
            continue
        requests = _mapping(_mapping(container.body.get("resources")).get("requests"))
        missing = [name for name in ("cpu", "memory") if requests.get(name) is None]
        if missing:
            yield _finding(
                "resource-requests",
                container,
                f"{container.label} does not request {' and '.join(missing)}",
            )


def _is_uid_zero(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


def _check_run_as_non_root(pod: _Pod) -> Iterator[Finding]:
    if pod.user_namespace:
        # Root in a user namespace is not root on the node: Pod Security (policy 1.35+)
        # skips its runAsNonRoot and runAsUser checks for such pods.
        return
    # A bad pod-level value is refused by Pod Security even when every container overrides it.
    pod_reasons = []
    if pod.security.get("runAsNonRoot") is False:
        pod_reasons.append("runAsNonRoot: false")
    if _is_uid_zero(pod.security.get("runAsUser")):
        pod_reasons.append("runAsUser: 0")
    if pod_reasons:
        yield _finding(
            "run-as-non-root",
            None,
            f"the pod's securityContext sets {' and '.join(pod_reasons)}",
        )
    for container in pod.containers:
        reasons = []
        if pod.effective(container, "runAsNonRoot") is not True:
            reasons.append("runAsNonRoot is not true")
        if _is_uid_zero(pod.effective(container, "runAsUser")):
            reasons.append("runAsUser is 0")
        if reasons:
            yield _finding(
                "run-as-non-root",
                container,
                f"{container.label} may run as root: {' and '.join(reasons)}",
            )


def _check_privilege_escalation(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        if container.security.get("allowPrivilegeEscalation") is not False:
            yield _finding(
                "privilege-escalation",
                container,
                f"{container.label} does not set allowPrivilegeEscalation: false",
            )


def _check_capabilities(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        capabilities = _mapping(container.security.get("capabilities"))
        reasons = []
        if "ALL" not in _sequence(capabilities.get("drop")):
            reasons.append("does not drop ALL")
        added = [
            str(name)
            for name in _sequence(capabilities.get("add"))
            if name not in _ALLOWED_ADDED_CAPABILITIES
        ]
        if added:
            reasons.append(f"adds {', '.join(added)}")
        if reasons:
            yield _finding("capabilities", container, f"{container.label} {' and '.join(reasons)}")


def _check_read_only_root_filesystem(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        if container.security.get("readOnlyRootFilesystem") is not True:
            yield _finding(
                "read-only-root-filesystem",
                container,
                f"{container.label} does not set readOnlyRootFilesystem: true",
            )


def _check_seccomp_profile(pod: _Pod) -> Iterator[Finding]:
    pod_profile = pod.security.get("seccompProfile")
    if isinstance(pod_profile, Mapping):
        # Refused by Pod Security even when every container sets a profile of its own.
        profile_type = pod_profile.get("type")
        if profile_type not in _ALLOWED_SECCOMP_TYPES:
            shown = f"type {profile_type}" if isinstance(profile_type, str) else "without a type"
            yield _finding(
                "seccomp-profile",
                None,
                f"the pod's seccomp profile is {shown}, not RuntimeDefault or Localhost",
            )
    for container in pod.containers:
        profile_type = _mapping(pod.effective(container, "seccompProfile")).get("type")
        if profile_type not in _ALLOWED_SECCOMP_TYPES:
            shown = f"type {profile_type}" if isinstance(profile_type, str) else "none"
            yield _finding(
                "seccomp-profile",
                container,
                f"{container.label} seccomp profile is {shown}, not RuntimeDefault or Localhost",
            )


def _check_host_port(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        host_ports = [
            str(port["hostPort"])
            for port in map(_mapping, _sequence(container.body.get("ports")))
            if port.get("hostPort") not in (None, 0)
        ]
        if host_ports:
            yield _finding(
                "host-port",
                container,
                f"{container.label} binds host port {', '.join(host_ports)}",
            )


def _check_resource_limits(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        if container.list_name not in _RESOURCE_CONTAINER_LISTS:
            continue
        limits = _mapping(_mapping(container.body.get("resources")).get("limits"))
        if limits.get("memory") is None:
            yield _finding("resource-limits", container, f"{container.label} has no memory limit")


def image_tag_problem(image: str) -> str | None:
    """Why an image reference is not pinned (no tag, or latest); None when it is."""
    if "@" in image:
        return None  # a digest pins the content, whatever the tag says
    # The tag follows the last ':' after the last '/'; a ':' before it is a registry port.
    last_segment = image.rpartition("/")[2]
    _, colon, tag = last_segment.partition(":")
    if not colon or not tag:
        return "has no tag"
    if tag == "latest":
        return "uses the tag latest"
    return None


def _check_image_tag(pod: _Pod) -> Iterator[Finding]:
    for container in pod.containers:
        problem = image_tag_problem(container.image)
        if problem is not None:
            yield _finding(
                "image-tag", container, f"{container.label} image {container.image!r} {problem}"
            )


# In CHECK_IDS order, which makes the order of findings the documented one.
_CHECK_FUNCTIONS: Mapping[str, Callable[[_Pod], Iterator[Finding]]] = {
    "privileged": _check_privileged,
    "host-namespaces": _check_host_namespaces,
    "host-path": _check_host_path,
    "allowed-registries": _check_allowed_registries,
    "required-labels": _check_required_labels,
    "resource-requests": _check_resource_requests,
    "run-as-non-root": _check_run_as_non_root,
    "privilege-escalation": _check_privilege_escalation,
    "capabilities": _check_capabilities,
    "read-only-root-filesystem": _check_read_only_root_filesystem,
    "seccomp-profile": _check_seccomp_profile,
    "host-port": _check_host_port,
    "resource-limits": _check_resource_limits,
    "image-tag": _check_image_tag,
}
assert tuple(_CHECK_FUNCTIONS) == CHECK_IDS
_WINDOWS_CHECK_FUNCTIONS = tuple(
    check for check_id, check in _CHECK_FUNCTIONS.items() if check_id not in _LINUX_ONLY_CHECKS
)


def check_pod(
    metadata: Mapping[str, Any],
    spec: Mapping[str, Any],
    config: ChecklistConfig,
    waivers: Mapping[str, Waiver] | None = None,
) -> list[Finding]:
    """Every checklist finding for one pod spec, in check order, then container order;
    a finding of a check in `waivers` (check id -> the exception that covers this pod, see
    policy.exceptions.waivers_for) is marked skipped by it."""
    findings = iter_pod_findings(metadata, spec, config)
    if not waivers:
        return list(findings)
    return apply_waivers(findings, waivers)


def apply_waivers(findings: Iterable[Finding], waivers: Mapping[str, Waiver]) -> list[Finding]:
    """The findings, those of a waived check marked with the exception that waives it."""
    return [
        finding
        if (waiver := waivers.get(finding.check_id)) is None
        else replace(finding, waived_by=waiver)
        for finding in findings
    ]


def iter_pod_findings(
    metadata: Mapping[str, Any], spec: Mapping[str, Any], config: ChecklistConfig
) -> Iterator[Finding]:
    """check_pod, one finding at a time: a caller with a budget can stop early."""
    windows = _mapping(spec.get("os")).get("name") == "windows"
    pod = _Pod(
        labels=_mapping(metadata.get("labels")),
        spec=spec,
        security=_mapping(spec.get("securityContext")),
        containers=_containers(spec),
        config=config,
        windows=windows,
        user_namespace=spec.get("hostUsers") is False,
    )
    checks = _WINDOWS_CHECK_FUNCTIONS if windows else _CHECK_FUNCTIONS.values()
    for check in checks:
        yield from check(pod)


def check_object(
    obj: Mapping[str, Any],
    config: ChecklistConfig,
    waivers: Mapping[str, Waiver] | None = None,
) -> list[Finding]:
    """Findings for a Pod or a workload's pod template; [] for anything else."""
    template = pod_template_of(obj)
    if template is None:
        return []
    metadata, spec = template
    return check_pod(metadata, spec, config, waivers)
