"""Reading SecurityBaselines from files, and the offline `render` and `validate` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from baseline_operator.api.resource import (
    API_VERSION,
    KIND,
    InvalidBaseline,
    SecurityBaseline,
    parse_baseline,
)
from baseline_operator.api.spec import Mode
from baseline_operator.policy.admission import render_cluster_objects
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
from baseline_operator.policy.select import selects


class InputError(Exception):
    """Input that cannot be read at all: a missing file, bad YAML, a wrong kind. Exit code 2."""


@dataclass(frozen=True)
class Document:
    source: str
    index: int  # 0-based position in a multi-document stream
    body: Any

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index + 1})" if self.index else self.source


def read_documents(path: str, stdin: IO[str] | None = None) -> Iterator[Document]:
    """The non-empty YAML documents of a file ('-' for stdin), one at a time."""
    if path == "-":
        if stdin is None:
            raise InputError("reading from stdin is not possible here")
        stream: IO[str] = stdin
        source = "<stdin>"
    else:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"{path}: no such file")
        stream = file.open(encoding="utf-8")
        source = path
    try:
        for index, body in enumerate(yaml.safe_load_all(stream)):
            if body is not None:
                yield Document(source, index, body)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise InputError(f"{source}: not a UTF-8 text file") from None
    finally:
        if stream is not stdin:
            stream.close()


def _check_kind(document: Document) -> None:
    body = document.body
    if not isinstance(body, Mapping):
        raise InputError(
            f"{document.where}: expected a SecurityBaseline, found a {type(body).__name__}"
        )
    if body.get("kind") != KIND or body.get("apiVersion") != API_VERSION:
        raise InputError(
            f"{document.where}: expected kind {KIND} ({API_VERSION}),"
            f" found {body.get('kind')!r} ({body.get('apiVersion')!r})"
        )


class InvalidBaselineInFile(InvalidBaseline):
    """An InvalidBaseline that knows which file, document and baseline it came from."""

    def __init__(self, where: str, errors: InvalidBaseline) -> None:
        super().__init__(errors.errors)
        self.where = where


def load_baselines(path: str, stdin: IO[str] | None = None) -> list[SecurityBaseline]:
    """Every baseline in a file; InputError for unreadable input, InvalidBaseline for bad specs."""
    baselines: list[SecurityBaseline] = []
    for document in read_documents(path, stdin):
        _check_kind(document)
        try:
            baselines.append(parse_baseline(document.body))
        except InvalidBaseline as exc:
            where = f"{document.where}: baseline {_name_of(document.body)}"
            raise InvalidBaselineInFile(where, exc) from None
    if not baselines:
        raise InputError(f"{path}: no SecurityBaseline in it")
    return baselines


@dataclass(frozen=True)
class ValidationReport:
    source: str
    name: str
    errors: tuple[str, ...]


def validate_file(path: str, stdin: IO[str] | None = None) -> list[ValidationReport]:
    """A report per baseline in the file, listing every error with its field path."""
    reports: list[ValidationReport] = []
    for document in read_documents(path, stdin):
        _check_kind(document)
        name = _name_of(document.body)
        try:
            parse_baseline(document.body)
            errors: tuple[str, ...] = ()
        except InvalidBaseline as exc:
            errors = tuple(str(error) for error in exc.errors)
        reports.append(ValidationReport(document.where, name, errors))
    if not reports:
        raise InputError(f"{path}: no SecurityBaseline in it")
    return reports


def _name_of(body: Any) -> str:
    metadata = body.get("metadata") if isinstance(body, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(name) if name else "<unnamed>"


def parse_labels(text: str | None) -> dict[str, str]:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'}."""
    labels: dict[str, str] = {}
    if not text:
        return labels
    for pair in text.split(","):
        key, sep, value = pair.strip().partition("=")
        if not sep or not key:
            raise InputError(f"--labels: {pair!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def assumed_labels(baselines: Sequence[SecurityBaseline]) -> dict[str, str]:
    """Labels under which a namespace is selected by every baseline's matchLabels."""
    labels: dict[str, str] = {}
    for baseline in baselines:
        labels.update(baseline.spec.namespace_selector.match_labels)
    return labels


def operator_username(namespace: str = OPERATOR_NAMESPACE) -> str:
    return f"system:serviceaccount:{namespace}:{OPERATOR_SERVICE_ACCOUNT}"


def render_objects(
    baselines: Sequence[SecurityBaseline], namespace: str, labels: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """What the operator would write for these baselines in one namespace.

    Returns the objects (the namespace's labels as a Namespace object first, then
    the namespaced objects, then cluster-scoped admission policies) and notes for
    people (baselines that do not select the namespace, superseded claims).
    """
    notes: list[str] = []
    chosen = []
    for baseline in baselines:
        if selects(baseline, namespace, labels):
            chosen.append(baseline)
            if baseline.spec.mode is Mode.AUDIT:
                notes.append(
                    f"baseline {baseline.name} is in Audit mode: the operator reports these"
                    " objects as what would change, and writes none of them"
                )
        else:
            notes.append(f"baseline {baseline.name} does not select namespace {namespace}")
    plan = plan_namespace(namespace, chosen)
    objects: list[dict[str, Any]] = []
    if chosen:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": dict(sorted(plan.labels.items()))},
            }
        )
    objects.extend(desired.body for desired in plan.objects)
    for baseline in chosen:
        objects.extend(
            desired.body for desired in render_cluster_objects(baseline, operator_username())
        )
    notes.extend(supersession.message for supersession in plan.superseded)
    return objects, notes


def dump(objects: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
