"""The offline `audit` command: workload manifests against the hardening checklist, for CI.

Reads files, directories and stdin (the output of `helm template` or `kustomize
build` may hold thousands of documents), runs the checklist on every Pod and pod
template, and prints a table, a JSON document or a SARIF 2.1.0 log. Documents
stream through one at a time; only findings are kept, because the table needs
its column widths and every format its summary before the first line is written.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, TextIO
from urllib.parse import quote

import yaml

from baseline_operator.api.resource import InvalidBaseline, SecurityBaseline, parse_baseline
from baseline_operator.policy.checklist import (
    CHECK_IDS,
    CHECKS,
    ChecklistConfig,
    Finding,
    Severity,
    apply_waivers,
    iter_pod_findings,
    pod_template_of,
)
from baseline_operator.policy.exceptions import ActiveException, ExceptionVerdict, waivers_for

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
    """The run cannot proceed (bad options, a bad baseline, a cap reached). Exit code 2."""


class AuditLimitError(AuditInputError):
    """The input went past a run-wide cap (objects, findings); nothing is reported."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one run reads, so that hostile input cannot exhaust memory or time.

    Peak memory is about 60 times the largest document (libyaml's nodes with their marks,
    and the objects built from them) plus about 350 bytes per finding kept.
    """

    max_document_bytes: int = 4 * 1024 * 1024  # one YAML document or JSON value
    # Nodes (maps, lists, scalars) of one document, estimated from above before parsing:
    # memory follows nodes more than bytes (`[{},{},...]` is a node per 3 bytes).
    max_document_nodes: int = 500_000
    max_objects: int = 50_000  # objects read in the run, List items counted one by one
    max_findings: int = 500_000  # findings kept for the report
    # Nodes a YAML document may reach through aliases beyond its own: anchors reused a few
    # times (`<<: *defaults`) are fine; aliases of aliases that multiply are not.
    max_alias_nodes: int = 10_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Document:
    """One object read from the input, and where it was found."""

    source: str  # the path as given ('-' for stdin)
    line: int | None  # 1-based line where its content starts, when known
    body: Any


@dataclass(frozen=True)
class InputProblem:
    """A file, or a document in it, that cannot be audited; the run goes on without it."""

    source: str
    message: str  # one line, starting with the file (and line) it is about


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
    findings: list[LocatedFinding] = field(default_factory=list)  # failed and skipped
    objects: int = 0  # every non-empty document (List items counted one by one)
    workloads: int = 0  # the objects that carry a pod spec
    problems: list[InputProblem] = field(default_factory=list)  # input that was skipped
    exceptions: bool = False  # exceptions were given (--exceptions): show results

    @property
    def failed(self) -> list[LocatedFinding]:
        return [located for located in self.findings if located.finding.waived_by is None]

    @property
    def skipped(self) -> int:
        """Findings an active exception waives (result `skip`)."""
        return sum(1 for located in self.findings if located.finding.waived_by is not None)

    def by_severity(self) -> dict[Severity, int]:
        """Counts of failed findings per severity, most severe first."""
        counts = dict.fromkeys(sorted(Severity, reverse=True), 0)
        for located in self.failed:
            counts[located.finding.severity] += 1
        return counts

    def fails(self, threshold: Severity | None) -> bool:
        if threshold is None:
            return False
        return any(located.finding.severity >= threshold for located in self.failed)


# ----------------------------------------------------------------------------
# Reading


def _shown(source: str) -> str:
    return "<stdin>" if source == STDIN else source


def _one_line(text: str) -> str:
    return " ".join(text.split())


def expand_paths(paths: Iterable[str]) -> Iterator[str | InputProblem]:
    """Files as given, the manifests under directories (recursively, sorted), '-' as is;
    a path that does not exist is a problem, and the others are still read."""
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
            yield InputProblem(path, f"{path}: no such file or directory")


Item = Document | InputProblem


def read_documents(path: str, stdin: TextIO, limits: Limits = DEFAULT_LIMITS) -> Iterator[Item]:
    """The objects in one file ('-': stdin), one at a time, `kind: List` items expanded.

    A document that cannot be read (invalid, too large, aliases that multiply) is yielded as
    an InputProblem, and reading goes on with the next document where the format allows it
    (YAML: the next `---`; a JSON stream cannot be resynchronised, so it stops there).
    """
    if path == STDIN:
        binary = getattr(stdin, "buffer", None)
        lines = _binary_lines(binary) if binary is not None else _encoded_lines(stdin)
        yield from _yaml_documents(path, lines, limits)
        return
    try:
        with open(path, "rb") as stream:
            if path.lower().endswith(".json"):
                yield from _json_documents(path, stream, limits)
            else:
                yield from _yaml_documents(path, _binary_lines(stream), limits)
    except OSError as exc:
        yield InputProblem(path, f"{path}: cannot read: {exc.strerror}")


# YAML is read one document at a time: the stream is cut at document markers (`---` and
# `...` at the start of a line, which YAML forbids inside any content), each piece is capped
# in bytes before it is parsed, and libyaml parses each piece on its own. A document that is
# too large is skipped without being held in memory.
_READ_SIZE = 64 * 1024
_DOCUMENT_START = re.compile(rb"---(?:[ \t\r\n]|$)")
_DOCUMENT_END = re.compile(rb"\.\.\.(?:[ \t\r\n]|$)")


def _binary_lines(stream: IO[bytes]) -> Callable[[int], bytes]:
    return stream.readline


def _encoded_lines(stream: IO[str]) -> Callable[[int], bytes]:
    def readline(limit: int) -> bytes:
        return stream.readline(limit).encode("utf-8", "surrogateescape")

    return readline


@dataclass
class _Piece:
    first_line: int  # 0-based line of the file where the piece starts
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False
    has_content: bool = False  # a document has started (a `---` or a content line)


def _pieces(readline: Callable[[int], bytes], limit: int) -> Iterator[_Piece]:
    """The stream cut into documents; a piece over `limit` bytes keeps no content."""
    piece = _Piece(0)
    line = 0  # 0-based line being read
    at_line_start = True
    while True:
        chunk = readline(_READ_SIZE if piece.too_large else limit - piece.size + 1)
        if not chunk:
            break
        starts_line = at_line_start
        at_line_start = chunk.endswith(b"\n")
        ends_piece = False
        # startswith first: the regular expressions run on marker lines only.
        if starts_line and chunk.startswith(b"---") and _DOCUMENT_START.match(chunk):
            if piece.has_content:
                yield piece
                piece = _Piece(line)
            piece.has_content = True
        elif starts_line and chunk.startswith(b"...") and _DOCUMENT_END.match(chunk):
            ends_piece = True
        elif starts_line and not piece.has_content:
            stripped = chunk.strip()
            piece.has_content = bool(stripped) and stripped[:1] not in (b"#", b"%")
        if not piece.too_large:
            piece.size += len(chunk)
            if piece.size > limit:
                piece.too_large = True
                piece.parts = []
            else:
                piece.parts.append(chunk)
        if at_line_start:
            line += 1
        if ends_piece:
            yield piece
            piece = _Piece(line)
    if piece.has_content or piece.parts:
        yield piece


def _yaml_documents(
    source: str, readline: Callable[[int], bytes], limits: Limits
) -> Iterator[Item]:
    shown = _shown(source)
    try:
        for piece in _pieces(readline, limits.max_document_bytes):
            where = f"{shown}:{piece.first_line + 1}"
            if piece.too_large:
                yield InputProblem(
                    source,
                    f"{where}: document larger than {limits.max_document_bytes} bytes"
                    " (--max-document-bytes)",
                )
                continue
            data = b"".join(piece.parts)
            if _node_bound(data) > limits.max_document_nodes:
                yield _too_many_nodes(source, where, limits)
                continue
            yield from _yaml_piece(source, data, piece.first_line, limits)
    except OSError as exc:
        yield InputProblem(source, f"{shown}: cannot read: {exc.strerror}")
    except UnicodeError as exc:
        yield InputProblem(source, f"{shown}: not readable as text: {_one_line(str(exc))}")


def _node_bound(data: bytes | str) -> int:
    """At least as many as the nodes of a YAML or JSON document: every node but the first
    follows one of these characters (counted in C: milliseconds for megabytes)."""
    if isinstance(data, str):
        return 1 + sum(data.count(mark) for mark in "\n,[{-:?")
    return 1 + sum(data.count(mark) for mark in (b"\n", b",", b"[", b"{", b"-", b":", b"?"))


def _too_many_nodes(source: str, where: str, limits: Limits) -> InputProblem:
    return InputProblem(
        source,
        f"{where}: document of more than {limits.max_document_nodes} nodes (maps, lists and"
        " values; --max-document-nodes)",
    )


def _yaml_piece(source: str, data: bytes, offset: int, limits: Limits) -> Iterator[Item]:
    shown = _shown(source)
    # What yaml.safe_load_all does, keeping each document's node for its line number.
    loader = _Loader(data)
    try:
        while loader.check_node():
            node = loader.get_node()
            # Aliases need an anchor (`&`) and a reference (`*`): most documents have neither.
            if node is not None and b"&" in data and b"*" in data:
                refused = _alias_problem(node, data, limits.max_alias_nodes)
                if refused is not None:
                    anchor_line, problem = refused
                    yield InputProblem(source, f"{shown}:{anchor_line + offset}: {problem}")
                    continue
            yield from _expand(source, loader.construct_document(node), node, None, offset)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1 + offset}" if mark is not None else f":{offset + 1}"
        problem = exc.problem or exc.context or "malformed document"
        yield InputProblem(source, f"{shown}{line}: invalid YAML: {_one_line(problem)}")
    except yaml.reader.ReaderError as exc:
        problem = f"{exc.reason} at byte {exc.position}"
        yield InputProblem(source, f"{shown}:{offset + 1}: not readable as text: {problem}")
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: an integer of more digits than Python converts (sys.int_info).
        yield InputProblem(
            source, f"{shown}:{offset + 1}: invalid YAML: {_one_line(str(exc)) or type(exc)}"
        )
    finally:
        loader.dispose()


_ANCHOR = re.compile(r"&([^\s\[\]{},]+)")


def _alias_problem(root: yaml.Node, data: bytes, budget: int) -> tuple[int, str] | None:
    """Why the aliases of a document are refused (line in `data`, reason), or None.

    Counts the nodes the document expands to, each alias counted as a copy of its anchor,
    without expanding anything (the composed nodes are shared); refuses a recursive alias,
    and aliases that add more than `budget` nodes.
    """
    sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
    uses: dict[int, int] = {}  # id(node) -> times it is reached again through an alias
    nodes: dict[int, yaml.Node] = {}
    pending: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            pending.discard(key)
            continue
        if key in sizes or key in pending:
            if key in pending:
                return _anchor_line(node), f"recursive YAML alias {_alias_name(node, data)}"
            uses[key] = uses.get(key, 0) + 1
            continue
        nodes[key] = node
        pending.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(children))
    added = sum(sizes[key] * count for key, count in uses.items())
    if added <= budget:
        return None
    worst = max(uses, key=lambda key: sizes[key] * uses[key])
    node = nodes[worst]
    return (
        _anchor_line(node),
        f"YAML aliases expand to more than {budget} nodes (alias {_alias_name(node, data)}"
        f" used {uses[worst]} times); refusing to expand them",
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _anchor_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _alias_name(node: yaml.Node, data: bytes) -> str:
    mark = node.start_mark
    lines = data.split(b"\n", mark.line + 1)
    text = lines[mark.line].decode("utf-8", "replace") if mark.line < len(lines) else ""
    found = _ANCHOR.match(text, mark.column)
    return f"*{found.group(1)}" if found else f"(anchored at column {mark.column + 1})"


def _json_documents(source: str, stream: IO[bytes], limits: Limits) -> Iterator[Item]:
    """A JSON value, or several one after the other (as kubectl reads them); YAML parsers
    refuse some valid JSON (tab indentation), so JSON is read as JSON."""
    decoder = json.JSONDecoder()
    text_of = codecs.getincrementaldecoder("utf-8-sig")()
    limit = limits.max_document_bytes
    buffer = ""
    line = 1  # line of buffer[0]
    eof = False
    want = _READ_SIZE
    while True:
        start = len(buffer) - len(buffer.lstrip(" \t\r\n"))
        line += buffer.count("\n", 0, start)
        buffer = buffer[start:]
        if not buffer and eof:
            return
        complete = None
        if buffer:
            try:
                complete = decoder.raw_decode(buffer)
            except json.JSONDecodeError as exc:
                if eof or len(buffer) > limit:
                    yield _json_problem(source, line, exc, len(buffer) > limit, limit)
                    return
            except (ValueError, RecursionError) as exc:
                yield InputProblem(source, f"{source}:{line}: invalid JSON: {_one_line(str(exc))}")
                return
        if complete is None:  # more to read
            try:
                chunk = stream.read(want)
                buffer += text_of.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                yield InputProblem(source, f"{source}: invalid JSON: {_one_line(str(exc))}")
                return
            eof = not chunk
            want = max(want, len(buffer))  # doubling: each value is parsed O(log n) times
            if want > _READ_SIZE and _node_bound(buffer) > limits.max_document_nodes:
                yield _too_many_nodes(source, f"{source}:{line}", limits)
                return
            continue
        body, end = complete
        if end > limit:
            yield InputProblem(
                source,
                f"{source}:{line}: document larger than {limit} bytes (--max-document-bytes)",
            )
            return
        yield from _expand(source, body, None, line, 0)
        line += buffer.count("\n", 0, end)
        buffer = buffer[end:]


def _json_problem(
    source: str, line: int, exc: json.JSONDecodeError, too_large: bool, limit: int
) -> InputProblem:
    if too_large:
        return InputProblem(
            source, f"{source}:{line}: document larger than {limit} bytes (--max-document-bytes)"
        )
    return InputProblem(source, f"{source}:{line + exc.lineno - 1}: invalid JSON: {exc.msg}")


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


def _expand(
    source: str, body: Any, node: yaml.Node | None, line: int | None, offset: int
) -> Iterator[Document]:
    """The objects of one document, nested `kind: List` items expanded in order, without
    recursion (nesting is bounded by the parser, but not by Python's stack)."""
    stack: list[Iterator[tuple[Any, yaml.Node | None, int | None]]] = [iter([(body, node, line)])]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        body, node, line = entry
        if body is None:  # an empty document, or `---` at the end of a file
            continue
        if node is not None:
            line = node.start_mark.line + 1 + offset
        if not _is_list(body):
            yield Document(source, line, body)
            continue
        item_nodes = _item_nodes(node)
        stack.append(
            (item, item_nodes[index] if index < len(item_nodes) else None, None)
            for index, item in enumerate(body["items"])
        )


def load_checklist_config(baseline_file: str, stdin: TextIO) -> ChecklistConfig:
    """The checklist configuration of the one SecurityBaseline in a file."""
    return ChecklistConfig.from_baseline(load_baseline(baseline_file, stdin))


def load_baseline(baseline_file: str, stdin: TextIO) -> SecurityBaseline:
    """The one SecurityBaseline in a file."""
    documents = []
    for item in read_documents(baseline_file, stdin):
        if isinstance(item, InputProblem):
            raise AuditInputError(item.message)
        documents.append(item.body)
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
    return baseline


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


@dataclass(frozen=True)
class _Covered:
    """A workload's findings (report.findings[start:end]) that exceptions may waive."""

    start: int
    end: int
    namespace: str
    labels: Mapping[str, Any]


def audit_documents(
    documents: Iterable[Item],
    config: ChecklistConfig,
    limits: Limits = DEFAULT_LIMITS,
    exceptions: Sequence[ActiveException] | None = None,
    default_namespace: str | None = None,
) -> AuditReport:
    """Run the checklist on every workload in the stream; keep only the findings.

    With `exceptions` (those in force), a finding they cover is kept as skipped, naming the
    exception: a workload is in its `metadata.namespace` (else `default_namespace`), whose
    labels come from the Namespace objects of the stream (none when it holds none).

    Raises AuditLimitError when the stream holds more objects, or yields more findings,
    than `limits` allow.
    """
    report = AuditReport(exceptions=exceptions is not None)
    covered: list[_Covered] = []
    namespace_labels: dict[str, Mapping[str, str]] = {}
    for document in documents:
        if isinstance(document, InputProblem):
            report.problems.append(document)
            continue
        report.objects += 1
        if report.objects > limits.max_objects:
            raise AuditLimitError(
                f"{_shown(document.source)}: more than {limits.max_objects} objects"
                " (List items counted one by one; --max-objects)"
            )
        body = document.body
        if exceptions and isinstance(body, Mapping) and body.get("kind") == "Namespace":
            _remember_namespace(body, namespace_labels)
        template = pod_template_of(body) if isinstance(body, Mapping) else None
        if template is None:
            continue
        report.workloads += 1
        ref = None
        start = len(report.findings)
        for finding in iter_pod_findings(*template, config):
            if len(report.findings) >= limits.max_findings:
                raise AuditLimitError(
                    f"{_shown(document.source)}: more than {limits.max_findings} findings"
                    " (--max-findings)"
                )
            ref = ref or object_ref(body)
            report.findings.append(LocatedFinding(document.source, document.line, ref, finding))
        if exceptions and ref is not None:
            namespace = ref.namespace or default_namespace
            labels = _mapping(template[0].get("labels"))
            if namespace is not None:
                covered.append(_Covered(start, len(report.findings), namespace, labels))
    if exceptions:
        _waive(report, covered, exceptions, namespace_labels)
    return report


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _remember_namespace(body: Mapping[str, Any], known: dict[str, Mapping[str, str]]) -> None:
    metadata = _mapping(body.get("metadata"))
    name = metadata.get("name")
    if isinstance(name, str):
        labels = _mapping(metadata.get("labels"))
        known[name] = {str(key): str(value) for key, value in labels.items()}


def _waive(
    report: AuditReport,
    covered: Iterable[_Covered],
    exceptions: Sequence[ActiveException],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> None:
    """Mark the findings the active exceptions cover as skipped (policy.exceptions decides)."""
    for workload in covered:
        labels = namespace_labels.get(workload.namespace, {})
        waivers = waivers_for(exceptions, workload.namespace, labels, workload.labels)
        if not waivers:
            continue
        located = report.findings[workload.start : workload.end]
        waived = apply_waivers((item.finding for item in located), waivers)
        report.findings[workload.start : workload.end] = [
            LocatedFinding(item.source, item.line, item.object, finding)
            for item, finding in zip(located, waived, strict=True)
        ]


# ----------------------------------------------------------------------------
# Output


def summary_line(report: AuditReport) -> str:
    skipped = ""
    if report.problems:
        unread = len({problem.source for problem in report.problems})
        skipped = f"; {_count(unread, 'input')} not audited, see the errors"
    waived = ""
    if report.skipped:
        waived = f"; {report.skipped} skipped by exceptions"
    failed = report.failed
    if not failed:
        workloads = _count(report.workloads, "workload")
        return f"no findings in {workloads} ({report.objects} objects read{skipped}){waived}"
    severities = ", ".join(
        f"{count} {severity}" for severity, count in report.by_severity().items() if count
    )
    affected = len({(located.source, located.line, located.object) for located in failed})
    return (
        f"{_count(len(failed), 'finding')} ({severities}) in {affected} of"
        f" {_count(report.workloads, 'workload')} ({report.objects} objects read{skipped})"
        f"{waived}"
    )


def _waived_text(finding: Finding) -> str:
    waiver = finding.waived_by
    assert waiver is not None
    return f"[skip: exception {waiver.exception}, expires {waiver.expires}]"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def render_table(report: AuditReport) -> str:
    """A row per finding; with exceptions, a RESULT column (fail or skip) first, and a
    skipped finding's message names the exception and its expiry."""
    header: tuple[str, ...] = ("SEVERITY", "CHECK", "OBJECT", "CONTAINER", "MESSAGE")
    if report.exceptions:
        header = ("RESULT", *header)
    rows: list[tuple[str, ...]] = []
    for located in report.findings:
        finding = located.finding
        message = finding.message
        if finding.waived_by is not None:
            message = f"{message} {_waived_text(finding)}"
        row: tuple[str, ...] = (
            str(finding.severity),
            finding.check_id,
            str(located.object),
            finding.container or "-",
            message,
        )
        rows.append((finding.result, *row) if report.exceptions else row)
    lines = []
    if rows:
        last = len(header) - 1
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(last)]
        for row in [header, *rows]:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*padded, row[last]]))
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def _json_finding(located: LocatedFinding) -> dict[str, Any]:
    finding = located.finding
    entry: dict[str, Any] = {
        "check": finding.check_id,
        "result": finding.result,
        "severity": str(finding.severity),
        "object": {
            "kind": located.object.kind,
            "namespace": located.object.namespace,
            "name": located.object.name,
        },
        "container": finding.container,
        "message": finding.message,
        "remediation": finding.remediation,
        "location": {"path": located.source, "line": located.line},
    }
    if finding.waived_by is not None:
        entry["exception"] = {
            "name": finding.waived_by.exception,
            "expires": finding.waived_by.expires,
        }
    return entry


def render_json(report: AuditReport, fail_on: Severity | None) -> str:
    document = {
        "findings": [_json_finding(located) for located in report.findings],
        "summary": {
            "objects": report.objects,
            "workloads": report.workloads,
            "findings": len(report.failed),
            "skipped": report.skipped,
            "bySeverity": {str(severity): n for severity, n in report.by_severity().items()},
            "failOn": str(fail_on) if fail_on is not None else None,
            "failed": report.fails(fail_on) or bool(report.problems),
            "errors": [problem.message for problem in report.problems],
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
        result: dict[str, Any] = {
            "ruleId": finding.check_id,
            "ruleIndex": rule_index[finding.check_id],
            "level": _SARIF_LEVELS[finding.severity],
            "message": {"text": f"{located.object}{container}: {finding.message}"},
            "locations": [_sarif_location(located)],
        }
        if finding.waived_by is not None:
            # A waived finding is a suppressed result: code scanning shows it as dismissed.
            waiver = finding.waived_by
            result["suppressions"] = [
                {
                    "kind": "external",
                    "status": "accepted",
                    "justification": f"BaselineException {waiver.exception}, expires"
                    f" {waiver.expires}",
                }
            ]
            result["properties"] = {
                "result": finding.result,
                "exception": waiver.exception,
                "expires": waiver.expires,
            }
        results.append(result)
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
                # Inputs that could not be read: the run is incomplete, and says why.
                "invocations": [
                    {
                        "executionSuccessful": not report.problems,
                        "toolExecutionNotifications": [
                            {"level": "error", "message": {"text": problem.message}}
                            for problem in report.problems
                        ],
                    }
                ],
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
    stderr: TextIO | None = None,
    limits: Limits = DEFAULT_LIMITS,
    exceptions_paths: Sequence[str] = (),
    at: datetime | None = None,
    default_namespace: str | None = None,
) -> int:
    """Audit the inputs and print the report: 1 when a finding reaches fail_on, else 0; 2 when
    some input could not be audited (each problem is a line on stderr, the report covers the
    rest).

    With `exceptions_paths` (files or directories of BaselineExceptions, which need the
    baseline), the findings that exceptions in force at `at` (default: now) cover are
    reported as skipped, naming the exception and its expiry, and do not fail the run.

    Raises AuditInputError when the run cannot proceed (bad options, baseline or exception,
    a run-wide cap reached); nothing is printed on stdout then.
    """
    if output not in OUTPUT_FORMATS:
        raise AuditInputError(f"unknown output format {output!r}: use {', '.join(OUTPUT_FORMATS)}")
    if not paths:
        raise AuditInputError("nothing to audit: give -f PATH (a file, a directory or - for stdin)")
    if baseline_file == STDIN and STDIN in paths:
        raise AuditInputError("stdin cannot hold both the baseline and the manifests")
    if exceptions_paths and baseline_file is None:
        raise AuditInputError("--exceptions needs --baseline: an exception relaxes one baseline")
    if STDIN in exceptions_paths and (STDIN in paths or baseline_file == STDIN):
        raise AuditInputError("stdin can hold only one of the baseline, exceptions and manifests")
    baseline = load_baseline(baseline_file, stdin) if baseline_file is not None else None
    config = ChecklistConfig.from_baseline(baseline)
    errors = stderr if stderr is not None else _DiscardErrors()
    active: list[ActiveException] | None = None
    if exceptions_paths and baseline is not None:
        verdicts = _exceptions_in_force(baseline, exceptions_paths, stdin, at)
        active = [verdict for verdict in verdicts if isinstance(verdict, ActiveException)]
        for verdict in verdicts:
            if isinstance(verdict, ExceptionVerdict):
                errors.write(
                    f"note: BaselineException {verdict.name} is {verdict.state.value}"
                    f" ({verdict.reason.value}): {verdict.message}\n"
                )
    report = audit_documents(
        _read_all(paths, stdin, limits, errors), config, limits, active, default_namespace
    )
    if output == "table":
        stdout.write(render_table(report))
    elif output == "json":
        stdout.write(render_json(report, fail_on))
    else:
        stdout.write(json.dumps(render_sarif(report), indent=2) + "\n")
    if report.problems:
        return 2
    return 1 if report.fails(fail_on) else 0


def _exceptions_in_force(
    baseline: SecurityBaseline, paths: Sequence[str], stdin: TextIO, at: datetime | None
) -> list[ActiveException | ExceptionVerdict]:
    """The exceptions of the baseline in force at `at`, and the verdict on each that is not."""
    from baseline_operator.offline.exceptions import (  # noqa: PLC0415
        ExceptionInputError,
        judge_exceptions,
        read_exceptions,
    )

    try:
        read = read_exceptions(paths, stdin)
    except ExceptionInputError as exc:
        raise AuditInputError(str(exc)) from None
    judged = judge_exceptions(baseline, read, at or datetime.now(UTC))
    not_in_force: list[ActiveException | ExceptionVerdict] = [
        verdict for verdict in judged.verdicts if not verdict.active
    ]
    return [*judged.active, *not_in_force]


class _DiscardErrors:
    def write(self, text: str) -> int:
        return len(text)


def _read_all(paths: Sequence[str], stdin: TextIO, limits: Limits, errors: Any) -> Iterator[Item]:
    """Every document of every path; each problem is also written to `errors` at once, so
    that it is seen even when a cap stops the run later."""
    for path in expand_paths(paths):
        items = [path] if isinstance(path, InputProblem) else read_documents(path, stdin, limits)
        for item in items:
            if isinstance(item, InputProblem):
                errors.write(f"error: {item.message}\n")
            yield item
