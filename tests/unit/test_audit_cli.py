"""The offline `audit` command: inputs, output formats, exit codes, streaming."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.offline.audit import (
    DEFAULT_LIMITS,
    AuditInputError,
    AuditLimitError,
    Limits,
    audit_documents,
    expand_paths,
    read_documents,
    run_audit,
)
from baseline_operator.policy.checklist import ChecklistConfig, Severity

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "tests/corpus/manifests"

HARDENED_POD = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Pod
    metadata: {name: NAME, namespace: team-a, labels: {app: web}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: registry.example.com/team/web:1.0.0
          resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 16Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
    """
)
# Breaks exactly one LOW check: the root filesystem is writable.
LOW_ONLY_POD = HARDENED_POD.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
# Breaks privileged (CRITICAL) and nothing else.
PRIVILEGED_POD = HARDENED_POD.replace(
    "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: true\n        privileged: true"
)
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"
BASELINE = textwrap.dedent(
    """\
    apiVersion: security.baseline.dev/v1alpha1
    kind: SecurityBaseline
    metadata: {name: prod}
    spec:
      namespaceSelector: {}
      admission:
        allowedRegistries: [trusted.example.org/]
        requiredLabels: [team]
    """
)


def pod(name: str, template: str = HARDENED_POD) -> str:
    return template.replace("NAME", name)


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def audit(
    paths: list[str],
    *,
    output: str = "json",
    baseline: str | None = None,
    fail_on: Severity | None = Severity.HIGH,
    stdin: str = "",
) -> tuple[int, str]:
    out = io.StringIO()
    code = run_audit(paths, baseline, output, fail_on, io.StringIO(stdin), out)
    return code, out.getvalue()


def audit_json(paths: list[str], **options: Any) -> tuple[int, dict[str, Any]]:
    code, text = audit(paths, output="json", **options)
    return code, json.loads(text)


def checks_by_object(report: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["object"]["name"], []).append(finding["check"])
    return found


# ----------------------------------------------------------------------------
# Inputs


def test_a_file_with_several_documents(tmp_path: Path) -> None:
    text = "---\n".join([pod("clean"), SERVICE, pod("writable", LOW_ONLY_POD), "", "# nothing\n"])
    path = write(tmp_path, "app.yaml", text)
    code, report = audit_json([path])
    assert code == 0
    assert checks_by_object(report) == {"writable": ["read-only-root-filesystem"]}
    assert report["summary"]["objects"] == 3  # the empty documents are not objects
    assert report["summary"]["workloads"] == 2  # the Service is skipped
    location = report["findings"][0]["location"]
    assert location["path"] == path
    lines = text.splitlines()
    assert lines[location["line"] - 1 : location["line"] + 2] == [
        "apiVersion: v1",
        "kind: Pod",
        "metadata: {name: writable, namespace: team-a, labels: {app: web}}",
    ]


def test_document_lines_point_at_the_objects_first_line(tmp_path: Path) -> None:
    text = f"# leading comment\n{pod('a', LOW_ONLY_POD)}---\n\n# about b\n{pod('b', LOW_ONLY_POD)}"
    path = write(tmp_path, "two.yaml", text)
    _, report = audit_json([path])
    lines = text.splitlines()
    located = {f["object"]["name"]: f["location"]["line"] for f in report["findings"]}
    assert lines[located["a"] - 1] == "apiVersion: v1"
    assert lines[located["b"] - 1] == "apiVersion: v1"
    assert located["a"] == 2
    assert located["b"] < len(lines)
    assert located["b"] > located["a"]


def test_a_directory_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", pod("b", LOW_ONLY_POD))
    write(tmp_path, "a/z.yml", pod("az", LOW_ONLY_POD))
    write(tmp_path, "a/deeper/y.json", json.dumps(yaml.safe_load(pod("ay", LOW_ONLY_POD))))
    write(tmp_path, "c.txt", pod("ignored", LOW_ONLY_POD))
    write(tmp_path, "README.md", "# not a manifest\n")
    directory = str(tmp_path)
    assert list(expand_paths([directory])) == [
        f"{directory}/a/deeper/y.json",
        f"{directory}/a/z.yml",
        f"{directory}/b.yaml",
    ]
    _, report = audit_json([directory])
    assert [f["object"]["name"] for f in report["findings"]] == ["ay", "az", "b"]
    assert report["findings"][0]["location"] == {"path": f"{directory}/a/deeper/y.json", "line": 1}


def test_several_paths_keep_the_order_given(tmp_path: Path) -> None:
    first = write(tmp_path, "z.yaml", pod("z", LOW_ONLY_POD))
    second = write(tmp_path, "a.yaml", pod("a", LOW_ONLY_POD))
    _, report = audit_json([first, second])
    assert [f["object"]["name"] for f in report["findings"]] == ["z", "a"]


def test_stdin(tmp_path: Path) -> None:
    stdin = pod("from-stdin", PRIVILEGED_POD) + "---\n" + SERVICE
    code, report = audit_json(["-"], stdin=stdin)
    assert code == 1
    assert checks_by_object(report) == {"from-stdin": ["privileged"]}
    assert report["findings"][0]["location"] == {"path": "-", "line": 1}


def test_stdin_and_files_together(tmp_path: Path) -> None:
    path = write(tmp_path, "f.yaml", pod("from-file", LOW_ONLY_POD))
    _, report = audit_json([path, "-"], stdin=pod("from-stdin", LOW_ONLY_POD))
    assert list(checks_by_object(report)) == ["from-file", "from-stdin"]


def test_list_items_are_expanded_with_their_own_lines(tmp_path: Path) -> None:
    items = [yaml.safe_load(pod("one", LOW_ONLY_POD)), yaml.safe_load(SERVICE)]
    items.append(
        {
            "apiVersion": "apps/v1",
            "kind": "DeploymentList",
            "items": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "nested"},
                    "spec": {"template": yaml.safe_load(pod("x", LOW_ONLY_POD))},
                },
            ],
        }
    )
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)
    path = write(tmp_path, "list.yaml", text)
    _, report = audit_json([path])
    assert checks_by_object(report) == {
        "one": ["read-only-root-filesystem"],
        "nested": ["read-only-root-filesystem"],
    }
    assert report["summary"]["objects"] == 3
    lines = text.splitlines()
    for finding in report["findings"]:
        line = lines[finding["location"]["line"] - 1]
        assert line.lstrip("- ").startswith("apiVersion:"), line


def test_kubectl_get_list_from_the_corpus() -> None:
    _, report = audit_json([str(MANIFESTS / "kubectl-get-list.yaml")])
    assert report["summary"]["workloads"] == 2
    assert set(checks_by_object(report)) == {"debug-shell"}


def test_the_manifest_corpus() -> None:
    code, report = audit_json([str(MANIFESTS)])
    assert code == 1
    found = checks_by_object(report)
    # Hardened workloads pass; the others report what they break.
    assert "orders" not in found  # kustomize output
    assert "db-migrate" not in found  # Job
    assert found["frontend"] == ["read-only-root-filesystem"]
    assert found["report-mailer"][0] == "run-as-non-root"
    assert "image-tag" in found["report-mailer"]
    assert {"privileged", "host-namespaces", "host-path"} <= set(found["log-shipper"])
    assert "privileged" in found["cache"]  # the StatefulSet's init container
    assert "image-tag" not in found["cache"]  # digest-pinned
    assert {"release-name-webshop", "release-name-webshop-test-connection"} <= set(found)
    kinds = {f["object"]["kind"] for f in report["findings"]}
    assert kinds == {"CronJob", "DaemonSet", "Deployment", "Pod", "StatefulSet"}


def test_a_baseline_turns_on_registry_and_label_checks(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    assert audit_json([manifest])[1]["findings"] == []
    baseline = write(tmp_path, "baseline.yaml", BASELINE)
    code, report = audit_json([manifest], baseline=baseline)
    assert code == 1  # allowed-registries is HIGH
    assert checks_by_object(report) == {"web": ["allowed-registries", "required-labels"]}


def test_a_baseline_from_stdin(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    _, report = audit_json([manifest], baseline="-", stdin=BASELINE)
    assert checks_by_object(report) == {"web": ["allowed-registries", "required-labels"]}


# ----------------------------------------------------------------------------
# Bad input


def input_error(paths: list[str], **options: Any) -> str:
    out = io.StringIO()
    with pytest.raises(AuditInputError) as caught:
        run_audit(
            paths,
            options.get("baseline"),
            options.get("output", "table"),
            Severity.HIGH,
            io.StringIO(options.get("stdin", "")),
            out,
        )
    assert out.getvalue() == ""  # nothing half-printed
    message = str(caught.value)
    assert "\n" not in message
    return message


@dataclass
class Partial:
    """A run in which some input could not be read: the report of the rest, and the errors."""

    code: int
    report: dict[str, Any]
    errors: list[str]  # stderr, one line per problem, without the "error: " prefix


def partial(paths: list[str], *, limits: Limits = DEFAULT_LIMITS, stdin: str = "") -> Partial:
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(
        paths, None, "json", Severity.HIGH, io.StringIO(stdin), out, err, limits=limits
    )
    lines = err.getvalue().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    errors = [line.removeprefix("error: ") for line in lines]
    report = json.loads(out.getvalue())
    assert report["summary"]["errors"] == errors  # the report says it is incomplete, and why
    return Partial(code, report, errors)


def one_error(paths: list[str], **options: Any) -> str:
    run = partial(paths, **options)
    assert run.code == 2
    (message,) = run.errors
    return message


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    text = pod("fine") + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n"
    path = write(tmp_path, "broken.yaml", text)
    message = one_error([path])
    assert message.startswith(f"{path}:")
    line = int(message.split(":")[1])
    assert pod("fine").count("\n") < line <= text.count("\n") + 1
    assert "invalid YAML" in message


def test_the_documents_around_a_bad_one_are_still_audited(tmp_path: Path) -> None:
    bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n"
    text = "---\n".join([pod("before", PRIVILEGED_POD), bad, pod("after", PRIVILEGED_POD)])
    path = write(tmp_path, "mixed.yaml", text)
    run = partial([path])
    assert run.code == 2
    assert checks_by_object(run.report) == {"before": ["privileged"], "after": ["privileged"]}
    (message,) = run.errors
    markers = [number for number, line in enumerate(text.splitlines(), 1) if line == "---"]
    line = int(message.split(":")[1])
    assert markers[0] < line <= markers[1]  # in the bad document, or at its end
    assert "invalid YAML" in message
    after = next(f for f in run.report["findings"] if f["object"]["name"] == "after")
    assert text.splitlines()[after["location"]["line"] - 1] == "apiVersion: v1"


def test_bad_yaml_on_stdin() -> None:
    message = one_error(["-"], stdin="kind: Pod\n  bad: indentation\n")
    assert message.startswith("<stdin>:")
    assert "invalid YAML" in message


def test_bad_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", '{\n  "kind": "Pod",\n  "metadata": {,\n}\n')
    assert one_error([path]).startswith(f"{path}:3: invalid JSON")


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"kind: Pod\nname: \xff\xfe\x00\x01\n")
    assert one_error([str(path)]).startswith(f"{path}:1: not readable as text")


def test_a_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert one_error([missing]) == f"{missing}: no such file or directory"


def test_every_bad_file_is_named_and_the_good_ones_are_audited(tmp_path: Path) -> None:
    good = write(tmp_path, "a-good.yaml", pod("a", PRIVILEGED_POD))
    write(tmp_path, "b-bad.yaml", "kind: Pod\n  bad: indentation\n")
    write(tmp_path, "c-bad.json", "{")
    write(tmp_path, "d-good.json", json.dumps(yaml.safe_load(pod("d", PRIVILEGED_POD))))
    missing = str(tmp_path / "missing.yaml")
    run = partial([str(tmp_path), missing, good])
    assert run.code == 2  # not 1: an unread file outranks findings
    assert [error.split(":")[0] for error in run.errors] == [
        str(tmp_path / "b-bad.yaml"),
        str(tmp_path / "c-bad.json"),
        missing,
    ]
    assert sorted(checks_by_object(run.report)) == ["a", "d"]
    assert run.report["summary"]["objects"] == 3
    assert run.report["summary"]["failed"] is True


def test_the_table_says_the_run_is_incomplete(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "a: [\n")
    code, text = audit([str(tmp_path)], output="table")
    assert code == 2
    assert text.endswith("(0 objects read; 1 input not audited, see the errors)\n")


# ----------------------------------------------------------------------------
# Hostile input: every document, object count and alias expansion has a bound

LAUGHS = ROOT / "tests/corpus/hostile/nested-list-aliases.yaml"


def test_the_billion_laughs_file_is_refused_at_once_naming_the_alias() -> None:
    """Nine levels of `kind: List` whose items are ten aliases of the level below: 10^8 pods
    from under a kilobyte. It is refused before anything is expanded."""
    assert LAUGHS.stat().st_size < 1024
    started = time.monotonic()
    message = one_error([str(LAUGHS)])
    elapsed = time.monotonic() - started
    assert message.startswith(f"{LAUGHS}:")
    assert "YAML aliases expand to more than 10000 nodes (alias *l7 used 10 times)" in message
    assert elapsed < 5, elapsed  # a generous bound: it takes milliseconds


def test_the_billion_laughs_file_stays_in_bounded_memory_in_a_subprocess() -> None:
    """The whole command, under an address-space limit of 512 MiB: before the cap it went
    past 900 MB in 30 s. A subprocess, so that the limit cannot hurt the test runner."""
    script = textwrap.dedent(
        """
        import resource, sys
        limit = 512 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from baseline_operator.cli import main
        sys.argv = ["baseline-operator", "audit", "-f", sys.argv[1]]
        main()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(LAUGHS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "alias *l7" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_few_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
        - &base
          apiVersion: v1
          kind: Pod
          metadata: {name: one}
          spec:
            containers:
            - &app {name: app, image: x, securityContext: {privileged: true}}
        - <<: *base
          metadata: {name: two}
        - <<: *base
          metadata: {name: three}
          spec: {containers: [*app, *app]}
        """
    )
    path = write(tmp_path, "anchors.yaml", text)
    code, report = audit_json([path], fail_on=None)
    assert code == 0
    assert {
        name: checks.count("privileged") for name, checks in checks_by_object(report).items()
    } == {
        "one": 1,
        "two": 1,
        "three": 2,
    }


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = (
        "---\nkind: Pod\nmetadata: {name: ok}\n---\nkind: Pod\nspec: &loop {containers: [*loop]}\n"
    )
    path = write(tmp_path, "loop.yaml", text)
    run = partial([path])
    assert run.errors == [f"{path}:6: recursive YAML alias *loop"]
    assert run.report["summary"]["objects"] == 1


def test_a_document_over_the_size_cap_is_skipped_without_being_held(tmp_path: Path) -> None:
    limits = Limits(max_document_bytes=4096)
    big = pod("big").replace("team-a", "x" * 5000)
    one_line = "kind: Pod\nmetadata: {name: " + "y" * 10_000 + "}\n"  # no newline for long
    text = "---\n".join([pod("a", PRIVILEGED_POD), big, one_line, pod("b", PRIVILEGED_POD)])
    path = write(tmp_path, "big.yaml", text)
    run = partial([path], limits=limits)
    assert run.code == 2
    lines = text.splitlines()
    starts = [index + 1 for index, line in enumerate(lines) if line == "---"]
    assert run.errors == [
        f"{path}:{starts[0]}: document larger than 4096 bytes (--max-document-bytes)",
        f"{path}:{starts[1]}: document larger than 4096 bytes (--max-document-bytes)",
    ]
    assert sorted(checks_by_object(run.report)) == ["a", "b"]


def test_a_json_value_over_the_size_cap(tmp_path: Path) -> None:
    limits = Limits(max_document_bytes=4096)
    small = json.dumps({"kind": "Pod", "metadata": {"name": "a"}})
    big = json.dumps({"kind": "Pod", "metadata": {"name": "b" * 10_000}})
    path = write(tmp_path, "big.json", small + "\n" + big + "\n" + small)
    run = partial([path], limits=limits)
    assert run.errors == [f"{path}:2: document larger than 4096 bytes (--max-document-bytes)"]
    assert run.report["summary"]["objects"] == 1  # a JSON stream cannot resume after it


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_document_of_too_many_nodes_is_refused_before_parsing(
    tmp_path: Path, suffix: str
) -> None:
    """`[{},{},...]` is a node per three bytes: memory follows nodes, not bytes."""
    wide = json.dumps({"kind": "Pod", "spec": {"containers": [{}] * 100_000}})
    small = json.dumps(yaml.safe_load(pod("ok", PRIVILEGED_POD)))
    path = write(tmp_path, f"wide.{suffix}", small + "\n---\n" + wide if suffix == "yaml" else wide)
    run = partial([path], limits=Limits(max_document_nodes=50_000))
    assert run.errors == [
        f"{path}:{2 if suffix == 'yaml' else 1}: document of more than 50000 nodes"
        " (maps, lists and values; --max-document-nodes)"
    ]
    assert run.report["summary"]["objects"] == (1 if suffix == "yaml" else 0)


def test_the_object_cap_counts_list_items_and_stops_the_run(tmp_path: Path) -> None:
    items = [yaml.safe_load(pod(f"p{index}")) for index in range(6)]
    nested = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "List", "items": items[:3]},
            {"apiVersion": "v1", "kind": "PodList", "items": items[3:]},
        ],
    }
    path = write(tmp_path, "list.yaml", yaml.safe_dump(nested))
    assert partial([path], limits=Limits(max_objects=6)).report["summary"]["objects"] == 6
    out = io.StringIO()
    with pytest.raises(AuditLimitError) as caught:
        run_audit([path], None, "json", None, io.StringIO(), out, limits=Limits(max_objects=5))
    assert str(caught.value) == (
        f"{path}: more than 5 objects (List items counted one by one; --max-objects)"
    )
    assert out.getvalue() == ""  # no partial report


def test_the_findings_cap_stops_the_run(tmp_path: Path) -> None:
    """Many containers in a few bytes each: findings, not documents, would fill memory."""
    spec = {"containers": [{}] * 50}
    path = write(tmp_path, "wide.json", json.dumps({"kind": "Pod", "spec": spec}))
    with pytest.raises(AuditLimitError, match="more than 100 findings"):
        run_audit(
            [path],
            None,
            "json",
            None,
            io.StringIO(),
            io.StringIO(),
            limits=Limits(max_findings=100),
        )


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("huge-int.yaml", "kind: Pod\nspec: {priority: " + "9" * 5000 + "}\n", "invalid YAML"),
        ("huge-int.json", '{"kind": "Pod", "n": ' + "9" * 5000 + "}", "invalid JSON"),
        ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "invalid JSON"),
        ("python.yaml", "kind: !!python/object/apply:os.system [true]\n", "invalid YAML"),
        ("utf16.json", '{"kind": "Pod"}'.encode("utf-16").decode("latin-1"), "invalid JSON"),
    ],
)
def test_hostile_documents_are_problems_not_crashes(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    message = one_error([str(path)])
    assert message.startswith(f"{path}:")
    assert problem in message


def test_an_invalid_baseline_lists_its_field_errors(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    broken = BASELINE.replace("namespaceSelector: {}", "namespaceSelector: {}\n  mode: Enforcing")
    broken = broken.replace("trusted.example.org/", "'Not A Prefix'")
    baseline = write(tmp_path, "baseline.yaml", broken)
    message = input_error([manifest], baseline=baseline)
    assert message.startswith(f"{baseline}: not a valid SecurityBaseline: ")
    assert "spec.mode" in message
    assert "spec.admission.allowedRegistries[0]" in message


def test_a_baseline_file_of_another_kind(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    baseline = write(tmp_path, "baseline.yaml", SERVICE)
    assert "not a valid SecurityBaseline" in input_error([manifest], baseline=baseline)


@pytest.mark.parametrize("text", ["", BASELINE + "---\n" + BASELINE])
def test_a_baseline_file_must_hold_exactly_one_document(tmp_path: Path, text: str) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    baseline = write(tmp_path, "baseline.yaml", text)
    assert "expected one SecurityBaseline" in input_error([manifest], baseline=baseline)


def test_a_missing_baseline_file(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", pod("web"))
    assert "cannot read" in input_error([manifest], baseline=str(tmp_path / "none.yaml"))


def test_stdin_cannot_be_both_baseline_and_manifests() -> None:
    assert "stdin" in input_error(["-"], baseline="-")


def test_no_paths_and_unknown_formats_are_refused() -> None:
    assert "nothing to audit" in input_error([])
    assert "unknown output format" in input_error(["-"], output="xml")


# ----------------------------------------------------------------------------
# Exit codes


@pytest.mark.parametrize(
    ("template", "fail_on", "code"),
    [
        (HARDENED_POD, Severity.LOW, 0),
        (LOW_ONLY_POD, Severity.LOW, 1),
        (LOW_ONLY_POD, Severity.MEDIUM, 0),
        (LOW_ONLY_POD, Severity.HIGH, 0),
        (PRIVILEGED_POD, Severity.HIGH, 1),
        (PRIVILEGED_POD, Severity.CRITICAL, 1),
        (PRIVILEGED_POD, None, 0),  # --fail-on never
    ],
)
def test_exit_code_follows_fail_on(
    tmp_path: Path, template: str, fail_on: Severity | None, code: int
) -> None:
    path = write(tmp_path, "pod.yaml", pod("x", template))
    for output in ("table", "json", "sarif"):
        assert audit([path], output=output, fail_on=fail_on)[0] == code


def test_high_findings_do_not_fail_at_critical(tmp_path: Path) -> None:
    path = write(tmp_path, "pod.yaml", pod("x", HARDENED_POD.replace("runAsNonRoot: true, ", "")))
    code, report = audit_json([path], fail_on=Severity.CRITICAL)
    assert checks_by_object(report) == {"x": ["run-as-non-root"]}
    assert code == 0
    assert audit([path], fail_on=Severity.HIGH)[0] == 1


# ----------------------------------------------------------------------------
# Output formats


def test_table_has_a_row_per_finding_and_a_summary(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.yaml", pod("p", PRIVILEGED_POD) + "---\n" + pod("w", LOW_ONLY_POD))
    code, text = audit([path], output="table")
    lines = text.splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "OBJECT", "CONTAINER", "MESSAGE"]
    assert lines[1].split()[:4] == ["critical", "privileged", "Pod/team-a/p", "app"]
    assert lines[2].split()[:4] == ["low", "read-only-root-filesystem", "Pod/team-a/w", "app"]
    assert lines[3] == "2 findings (1 critical, 1 low) in 2 of 2 workloads (2 objects read)"
    assert len(lines) == 4
    # The columns line up: every row has MESSAGE where the header has it.
    column = lines[0].index("MESSAGE")
    assert lines[1][column:].startswith("container app runs privileged")
    assert code == 1


def test_table_without_findings_is_the_summary_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "pod.yaml", pod("x") + "---\n" + SERVICE)
    assert audit([path], output="table") == (0, "no findings in 1 workload (2 objects read)\n")


def test_pod_level_findings_show_no_container(tmp_path: Path) -> None:
    path = write(tmp_path, "pod.yaml", pod("x").replace("spec:\n", "spec:\n  hostPID: true\n"))
    _, text = audit([path], output="table")
    assert text.splitlines()[1].split()[:4] == ["high", "host-namespaces", "Pod/team-a/x", "-"]


def test_json_document_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.yaml", pod("p", PRIVILEGED_POD) + "---\n" + pod("w", LOW_ONLY_POD))
    code, report = audit_json([path], fail_on=Severity.CRITICAL)
    assert list(report) == ["findings", "summary"]
    first = report["findings"][0]
    assert first == {
        "check": "privileged",
        "result": "fail",
        "severity": "critical",
        "object": {"kind": "Pod", "namespace": "team-a", "name": "p"},
        "container": "app",
        "message": "container app runs privileged",
        "remediation": first["remediation"],
        "location": {"path": path, "line": 1},
    }
    assert first["remediation"]
    assert report["summary"] == {
        "objects": 2,
        "workloads": 2,
        "findings": 2,
        "skipped": 0,
        "bySeverity": {"critical": 1, "high": 0, "medium": 0, "low": 1},
        "failOn": "critical",
        "failed": True,
        "errors": [],
    }
    assert code == 1


def test_json_output_is_stable(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.yaml", pod("p", PRIVILEGED_POD))
    assert audit([path])[1] == audit([path])[1]


def test_unnamespaced_objects_and_generated_names(tmp_path: Path) -> None:
    text = pod("x", LOW_ONLY_POD).replace("name: x, namespace: team-a", "generateName: job-")
    path = write(tmp_path, "pod.yaml", text)
    _, out = audit([path], output="table")
    assert out.splitlines()[1].split()[2] == "Pod/job-"


# ----------------------------------------------------------------------------
# The click command (wired by cli.py)


@pytest.fixture
def cli() -> Any:
    from baseline_operator.cli import main

    return main


def test_cli_exit_codes_and_stderr(cli: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    clean = write(tmp_path, "clean.yaml", pod("c"))
    risky = write(tmp_path, "risky.yaml", pod("r", PRIVILEGED_POD))
    result = runner.invoke(cli, ["audit", "-f", clean])
    assert (result.exit_code, result.stdout) == (0, "no findings in 1 workload (1 objects read)\n")
    result = runner.invoke(cli, ["audit", "-f", clean, "-f", risky, "-o", "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["summary"]["findings"] == 1
    result = runner.invoke(cli, ["audit", "-f", risky, "--fail-on", "never"])
    assert result.exit_code == 0
    result = runner.invoke(cli, ["audit", "-f", str(tmp_path / "missing.yaml"), "-f", risky])
    assert result.exit_code == 2  # the report of what was read, and the error
    assert "1 finding (1 critical) in 1 of 1 workload" in result.stdout
    assert result.stderr == f"error: {tmp_path / 'missing.yaml'}: no such file or directory\n"
    result = runner.invoke(cli, ["audit", "-f", risky, "--max-objects", "0"])
    assert result.exit_code == 2  # click refuses a cap below 1
    result = runner.invoke(cli, ["audit", "-f", risky, "-f", clean, "--max-objects", "1"])
    assert (result.exit_code, result.stdout) == (2, "")  # a cap stops the run: no report
    assert result.stderr == (
        f"error: {clean}: more than 1 objects (List items counted one by one; --max-objects)\n"
    )
    result = runner.invoke(cli, ["audit", "-f", "-", "-o", "sarif"], input=pod("s", PRIVILEGED_POD))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["version"] == "2.1.0"


def test_the_commands_caps_are_the_documented_defaults(cli: Any) -> None:
    options = {param.name: param.default for param in cli.commands["audit"].params}
    assert options["max_document_bytes"] == DEFAULT_LIMITS.max_document_bytes == 4 * 1024 * 1024
    assert options["max_document_nodes"] == DEFAULT_LIMITS.max_document_nodes == 500_000
    assert options["max_objects"] == DEFAULT_LIMITS.max_objects == 50_000
    assert options["max_findings"] == DEFAULT_LIMITS.max_findings == 500_000


# ----------------------------------------------------------------------------
# Streaming


def many_documents(count: int) -> str:
    # Mostly compliant Deployments (so few findings are kept), one in a hundred not.
    clean = yaml.safe_load(pod("web"))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "NAME", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": clean["metadata"], "spec": clean["spec"]},
        },
    }
    text = yaml.safe_dump(deployment, sort_keys=False)
    risky = text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    return "".join(
        "---\n" + (risky if index % 100 == 0 else text).replace("NAME", f"web-{index}")
        for index in range(count)
    )


def test_thousands_of_documents_stream_through(tmp_path: Path) -> None:
    count = 5000
    path = tmp_path / "big.yaml"
    path.write_text(many_documents(count))

    tracemalloc.start()
    try:
        with path.open() as stream:
            held = list(yaml.load_all(stream, Loader=yaml.CSafeLoader))
        holding_all, _ = tracemalloc.get_traced_memory()
        assert len(held) == count
        del held
        tracemalloc.reset_peak()
        baseline_memory, _ = tracemalloc.get_traced_memory()
        report = audit_documents(read_documents(str(path), io.StringIO()), ChecklistConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert report.objects == count
    assert report.workloads == count
    assert len(report.findings) == count // 100
    assert {located.finding.check_id for located in report.findings} == {
        "read-only-root-filesystem"
    }
    audit_peak = peak - baseline_memory
    # Streaming keeps about one document at a time, not all of them.
    assert audit_peak < (holding_all - baseline_memory) / 10, (audit_peak, holding_all)
