"""The offline `audit` command: workload manifests against the hardening checklist, for CI.

Reads files, directories and stdin (the output of `helm template` or `kustomize
build` may hold thousands of documents), runs the checklist on every Pod and pod
template, and prints a table, a JSON document or a SARIF 2.1.0 log. Documents
stream through one at a time; only findings are kept, because the table needs
its column widths and every format its summary before the first line is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import quote

import yaml

from baseline_operator.api.resource import InvalidBaseline, parse_baseline
from baseline_operator.policy.checklist import (
    CHECK_IDS,
    CHECKS,
    ChecklistConfig,
    Finding,
    Severity,
    check_pod,
    pod_template_of,
)

OUTPUT_FORMATS = ("table", "json", "sarif")
STDIN = "-"
TOOL_NAME = "baseline-operator"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
_MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
# libyaml parses several times faster than the pure-Python parser, with the same results.
_Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class AuditInputError(Exception):
    """Input that cannot be audited (missing file, bad YAML, bad baseline). Exit code 2."""


@dataclass(frozen=True)
class Document:
    """One object read from the input, and where it was found."""

    source: str  # the path as given ('-' for stdin)
    line: int | None  # 1-based line where its content starts, when known
    body: Any


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class LocatedFinding:
    source: str
    line: int | None
    object: ObjectRef
    finding: Finding


@dataclass
class AuditReport:
    findings: list[LocatedFinding] = field(default_factory=list)
    objects: int = 0  # every non-empty document (List items counted one by one)
    workloads: int = 0  # the objects that carry a pod spec

    def by_severity(self) -> dict[Severity, int]:
        """Finding counts per severity, most severe first."""
        counts = dict.fromkeys(sorted(Severity, reverse=True), 0)
        for located in self.findings:
            counts[located.finding.severity] += 1
        return counts

    def fails(self, threshold: Severity | None) -> bool:
        if threshold is None:
            return False
        return any(located.finding.severity >= threshold for located in self.findings)


# ----------------------------------------------------------------------------
# Reading


def _shown(source: str) -> str:
    return "<stdin>" if source == STDIN else source


def expand_paths(paths: Iterable[str]) -> Iterator[str]:
    """Files as given, the manifests under directories (recursively, sorted), '-' as is."""
    for path in paths:
        if path == STDIN:
            yield path
        elif os.path.isdir(path):
            root = Path(path)
            found = sorted(
                file.relative_to(root)
                for file in root.rglob("*")
                if file.suffix.lower() in _MANIFEST_SUFFIXES and file.is_file()
            )
            for relative in found:
                yield os.path.join(path, relative.as_posix())
        elif os.path.isfile(path):
            yield path
        else:
            raise AuditInputError(f"{path}: no such file or directory")


def read_documents(path: str, stdin: TextIO) -> Iterator[Document]:
    """The objects in one file ('-': stdin), one at a time, `kind: List` items expanded."""
    if path == STDIN:
        yield from _yaml_documents(path, stdin)
        return
    try:
        with open(path, "rb") as stream:
            if path.lower().endswith(".json"):
                yield from _json_documents(path, stream)
            else:
                yield from _yaml_documents(path, stream)
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read: {exc.strerror}") from None


def _yaml_documents(source: str, stream: IO[str] | IO[bytes]) -> Iterator[Document]:
    # What yaml.safe_load_all does, keeping each document's node for its line number.
    loader = _Loader(stream)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield from _expand(source, loader.construct_document(node), node, None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "malformed document"
        raise AuditInputError(f"{_shown(source)}{line}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        problem = f"{exc.reason} at byte {exc.position}"
        raise AuditInputError(f"{_shown(source)}: not readable as text: {problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = " ".join(str(exc).split())  # the message must stay on one line
        raise AuditInputError(f"{_shown(source)}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def _json_documents(source: str, stream: IO[bytes]) -> Iterator[Document]:
    # YAML parsers refuse some valid JSON (tab indentation), so JSON is read as JSON.
    try:
        body = json.load(stream)
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise AuditInputError(f"{source}: invalid JSON: {exc}") from None
    yield from _expand(source, body, None, 1)


def _is_list(body: Any) -> bool:
    """`kind: List` (kubectl get -o yaml) or a typed list (DeploymentList ...)."""
    if not isinstance(body, Mapping):
        return False
    kind = body.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(body.get("items"), list)


def _item_nodes(node: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "items" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    return []


def _expand(source: str, body: Any, node: yaml.Node | None, line: int | None) -> Iterator[Document]:
    if body is None:  # an empty document, or `---` at the end of a file
        return
    if node is not None:
        line = node.start_mark.line + 1
    if not _is_list(body):
        yield Document(source, line, body)
        return
    item_nodes = _item_nodes(node)
    for index, item in enumerate(body["items"]):
        item_node = item_nodes[index] if index < len(item_nodes) else None
        yield from _expand(source, item, item_node, None)


def load_checklist_config(baseline_file: str, stdin: TextIO) -> ChecklistConfig:
    """The checklist configuration of the one SecurityBaseline in a file."""
    documents = [document.body for document in read_documents(baseline_file, stdin)]
    shown = _shown(baseline_file)
    if len(documents) != 1:
        raise AuditInputError(
            f"{shown}: expected one SecurityBaseline, found {len(documents)} documents"
        )
    try:
        baseline = parse_baseline(documents[0])
    except InvalidBaseline as exc:
        errors = "; ".join(str(error) for error in exc.errors)
        raise AuditInputError(f"{shown}: not a valid SecurityBaseline: {errors}") from None
    return ChecklistConfig.from_baseline(baseline)


# ----------------------------------------------------------------------------
# Auditing


def object_ref(body: Mapping[str, Any]) -> ObjectRef:
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = metadata.get("namespace")
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    return ObjectRef(
        kind=str(body.get("kind")),
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        name=str(name),
    )


def audit_documents(documents: Iterable[Document], config: ChecklistConfig) -> AuditReport:
    """Run the checklist on every workload in the stream; keep only the findings."""
    report = AuditReport()
    for document in documents:
        report.objects += 1
        body = document.body
        template = pod_template_of(body) if isinstance(body, Mapping) else None
        if template is None:
            continue
        report.workloads += 1
        findings = check_pod(*template, config)
        if findings:
            ref = object_ref(body)
            report.findings.extend(
                LocatedFinding(document.source, document.line, ref, finding) for finding in findings
            )
    return report


# ----------------------------------------------------------------------------
# Output


def summary_line(report: AuditReport) -> str:
    if not report.findings:
        workloads = _count(report.workloads, "workload")
        return f"no findings in {workloads} ({report.objects} objects read)"
    severities = ", ".join(
        f"{count} {severity}" for severity, count in report.by_severity().items() if count
    )
    affected = len({(located.source, located.line, located.object) for located in report.findings})
    return (
        f"{_count(len(report.findings), 'finding')} ({severities}) in {affected} of"
        f" {_count(report.workloads, 'workload')} ({report.objects} objects read)"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def render_table(report: AuditReport) -> str:
    header = ("SEVERITY", "CHECK", "OBJECT", "CONTAINER", "MESSAGE")
    rows = [
        (
            str(located.finding.severity),
            located.finding.check_id,
            str(located.object),
            located.finding.container or "-",
            located.finding.message,
        )
        for located in report.findings
    ]
    lines = []
    if rows:
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
        for row in [header, *rows]:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*padded, row[4]]))
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport, fail_on: Severity | None) -> str:
    document = {
        "findings": [
            {
                "check": located.finding.check_id,
                "severity": str(located.finding.severity),
                "object": {
                    "kind": located.object.kind,
                    "namespace": located.object.namespace,
                    "name": located.object.name,
                },
                "container": located.finding.container,
                "message": located.finding.message,
                "remediation": located.finding.remediation,
                "location": {"path": located.source, "line": located.line},
            }
            for located in report.findings
        ],
        "summary": {
            "objects": report.objects,
            "workloads": report.workloads,
            "findings": len(report.findings),
            "bySeverity": {str(severity): n for severity, n in report.by_severity().items()},
            "failOn": str(fail_on) if fail_on is not None else None,
            "failed": report.fails(fail_on),
        },
    }
    return json.dumps(document, indent=2) + "\n"


# SARIF has three levels; GitHub code scanning ranks security results by this score.
_SARIF_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
}
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
}


def _tool_version() -> str:
    try:
        return version(TOOL_NAME)
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _sarif_rule(check_id: str) -> dict[str, Any]:
    check = CHECKS[check_id]
    return {
        "id": check.id,
        "name": check.name,
        "shortDescription": {"text": check.summary},
        "fullDescription": {"text": check.summary},
        "help": {"text": check.remediation},
        "defaultConfiguration": {"level": _SARIF_LEVELS[check.severity]},
        "properties": {
            "security-severity": _SECURITY_SEVERITY[check.severity],
            "severity": str(check.severity),
            "tags": ["security", "kubernetes"],
        },
    }


def _sarif_location(located: LocatedFinding) -> dict[str, Any]:
    ref = located.object
    qualified = f"{ref.kind}/{ref.name}"
    if ref.namespace:
        qualified = f"{ref.namespace}/{qualified}"
    location: dict[str, Any] = {}
    if located.source != STDIN:
        physical: dict[str, Any] = {
            "artifactLocation": {"uri": quote(located.source.replace(os.sep, "/"))}
        }
        if located.line is not None:
            physical["region"] = {"startLine": located.line}
        location["physicalLocation"] = physical
    location["logicalLocations"] = [
        {"name": ref.name, "fullyQualifiedName": qualified, "kind": "resource"}
    ]
    return location


def render_sarif(report: AuditReport) -> dict[str, Any]:
    """A SARIF 2.1.0 log: one run, a rule per check, a result per finding."""
    rule_index = {check_id: index for index, check_id in enumerate(CHECK_IDS)}
    results = []
    for located in report.findings:
        finding = located.finding
        container = f" (container {finding.container})" if finding.container else ""
        results.append(
            {
                "ruleId": finding.check_id,
                "ruleIndex": rule_index[finding.check_id],
                "level": _SARIF_LEVELS[finding.severity],
                "message": {"text": f"{located.object}{container}: {finding.message}"},
                "locations": [_sarif_location(located)],
            }
        )
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": _tool_version(),
                        "rules": [_sarif_rule(check_id) for check_id in CHECK_IDS],
                    }
                },
                "results": results,
            }
        ],
    }


# ----------------------------------------------------------------------------
# The command


def run_audit(
    paths: Sequence[str],
    baseline_file: str | None,
    output: str,
    fail_on: Severity | None,
    stdin: TextIO,
    stdout: TextIO,
) -> int:
    """Audit the inputs and print the report; 1 when a finding reaches fail_on, else 0.

    Raises AuditInputError for input that cannot be audited; nothing is printed then.
    """
    if output not in OUTPUT_FORMATS:
        raise AuditInputError(f"unknown output format {output!r}: use {', '.join(OUTPUT_FORMATS)}")
    if not paths:
        raise AuditInputError("nothing to audit: give -f PATH (a file, a directory or - for stdin)")
    if baseline_file == STDIN and STDIN in paths:
        raise AuditInputError("stdin cannot hold both the baseline and the manifests")
    config = (
        load_checklist_config(baseline_file, stdin)
        if baseline_file is not None
        else ChecklistConfig.from_baseline(None)
    )
    documents = (
        document for path in expand_paths(paths) for document in read_documents(path, stdin)
    )
    report = audit_documents(documents, config)
    if output == "table":
        stdout.write(render_table(report))
    elif output == "json":
        stdout.write(render_json(report, fail_on))
    else:
        stdout.write(json.dumps(render_sarif(report), indent=2) + "\n")
    return 1 if report.fails(fail_on) else 0
