"""The `baseline-operator` command line.

Offline commands (crd, render, validate, audit) need no cluster. `run` starts the
operator on the current kubeconfig or in-cluster config; `demo` starts it against
an in-process API emulator. Heavy imports (kopf, the API client, the emulator)
happen inside the commands that need them, so offline commands start fast.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import yaml

from baseline_operator.api.crd import CRD_BUILDERS, CRD_FILES
from baseline_operator.api.resource import InvalidBaseline
from baseline_operator.offline.baselines import (
    InputError,
    InvalidBaselineInFile,
    assumed_labels,
    dump,
    load_baselines,
    parse_labels,
    render_objects,
    validate_file,
)
from baseline_operator.policy.admission import EXTERNAL_SECRETS_USERNAME
from baseline_operator.policy.names import OPERATOR_NAMESPACE

# What only `demo` imports: the `demo` extra of the distribution.
DEMO_MODULES = frozenset({"kmock", "jsonpatch", "attrs", "kubernetes"})


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="baseline-operator")
def main() -> None:
    """Make every selected namespace converge on a declared security posture."""


@main.command()
@click.option(
    "--kind",
    type=click.Choice([*CRD_BUILDERS, "all"]),
    default="all",
    show_default=True,
    help="Which CustomResourceDefinition; all: every one, in the order of their files in crds/.",
)
def crd(kind: str) -> None:
    """Print the CustomResourceDefinitions. Each is one YAML document opening with `---`,
    exactly as its file in crds/ holds it, so `cat crds/*.yaml` is what `crd` prints."""
    kinds = sorted(CRD_BUILDERS, key=lambda name: CRD_FILES[name]) if kind == "all" else [kind]
    click.echo(
        "".join("---\n" + yaml.safe_dump(CRD_BUILDERS[name](), sort_keys=False) for name in kinds),
        nl=False,
    )


@main.command()
@click.option("-f", "--filename", "path", required=True, help="Baseline file ('-' for stdin).")
@click.option("--namespace", default="demo", show_default=True, help="Namespace to render for.")
@click.option(
    "--labels",
    default=None,
    help="The namespace's labels, k=v,... (default: labels that every baseline's"
    " matchLabels select).",
)
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml")
def render(path: str, namespace: str, labels: str | None, output: str) -> None:
    """Print what the operator would write in a namespace."""
    try:
        baselines = load_baselines(path, sys.stdin)
        namespace_labels = parse_labels(labels) if labels is not None else assumed_labels(baselines)
    except InputError as exc:
        _fail(str(exc))
    except InvalidBaseline as exc:
        where = exc.where if isinstance(exc, InvalidBaselineInFile) else path
        for error in exc.errors:
            click.echo(f"{where}: {error}", err=True)
        sys.exit(1)
    if labels is None:
        shown = ",".join(f"{key}={value}" for key, value in namespace_labels.items()) or "none"
        click.echo(f"# namespace {namespace}, labels {shown} (set them with --labels)", err=True)
    objects, notes = render_objects(baselines, namespace, namespace_labels)
    for note in notes:
        click.echo(f"# {note}", err=True)
    click.echo(dump(objects, output), nl=False)


@main.command()
@click.option("-f", "--filename", "path", required=True, help="Baseline file ('-' for stdin).")
def validate(path: str) -> None:
    """Check baselines and report every error with its field path."""
    try:
        reports = validate_file(path, sys.stdin)
    except InputError as exc:
        _fail(str(exc))
    failed = False
    for report in reports:
        if report.errors:
            failed = True
            click.echo(f"{report.source}: baseline {report.name} is invalid:", err=True)
            for error in report.errors:
                click.echo(f"  {error}", err=True)
        else:
            click.echo(f"{report.source}: baseline {report.name} is valid")
    sys.exit(1 if failed else 0)


@main.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    help="File or directory of manifests ('-' for stdin); repeatable.",
)
@click.option("--baseline", "baseline_file", default=None, help="Check against this baseline.")
@click.option(
    "--exceptions",
    "exceptions_paths",
    multiple=True,
    help="File or directory of BaselineExceptions of the baseline; repeatable. Findings"
    " they cover while in force are reported as skip.",
)
@click.option(
    "--at",
    "at_time",
    default=None,
    metavar="TIME",
    help="Judge the exceptions at this moment (RFC 3339, e.g. 2026-03-31T00:00:00Z; default: now).",
)
@click.option(
    "--namespace",
    "default_namespace",
    default=None,
    help="The namespace of objects that name none (for --exceptions).",
)
@click.option("-o", "--output", type=click.Choice(["table", "json", "sarif"]), default="table")
@click.option(
    "--fail-on",
    type=click.Choice(["low", "medium", "high", "critical", "never"]),
    default="high",
    show_default=True,
    help="Exit 1 when a finding has at least this severity.",
)
@click.option(
    "--max-document-bytes",
    type=click.IntRange(min=1),
    default=4 * 1024 * 1024,
    show_default=True,
    help="Skip (and report) a YAML document or JSON value larger than this.",
)
@click.option(
    "--max-document-nodes",
    type=click.IntRange(min=1),
    default=500_000,
    show_default=True,
    help="Skip (and report) a document of more maps, lists and values than this.",
)
@click.option(
    "--max-objects",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Stop (exit 2) past this many objects, List items counted one by one.",
)
@click.option(
    "--max-findings",
    type=click.IntRange(min=1),
    default=500_000,
    show_default=True,
    help="Stop (exit 2) past this many findings.",
)
def audit(
    paths: tuple[str, ...],
    baseline_file: str | None,
    exceptions_paths: tuple[str, ...],
    at_time: str | None,
    default_namespace: str | None,
    output: str,
    fail_on: str,
    max_document_bytes: int,
    max_document_nodes: int,
    max_objects: int,
    max_findings: int,
) -> None:
    """Check workload manifests against the hardening checklist (for CI).

    With --exceptions, findings that BaselineExceptions in force (--at) waive are reported
    as skip with the exception's name and expiry, as the operator reports them; a
    namespaceSelector reads the labels of the Namespace objects among the manifests.

    Exit 0: no finding reaches --fail-on; 1: one does; 2: some input could not be audited
    (each reason on stderr; the report covers the rest) or a cap was reached.
    """
    from baseline_operator.api.exception import parse_time  # noqa: PLC0415
    from baseline_operator.offline.audit import (  # noqa: PLC0415
        AuditInputError,
        Limits,
        run_audit,
    )
    from baseline_operator.policy.checklist import Severity  # noqa: PLC0415

    try:
        at = parse_time(at_time) if at_time is not None else None
    except ValueError as exc:
        _fail(f"--at: {exc}")

    threshold = None if fail_on == "never" else Severity(fail_on)
    limits = Limits(
        max_document_bytes=max_document_bytes,
        max_document_nodes=max_document_nodes,
        max_objects=max_objects,
        max_findings=max_findings,
    )
    try:
        code = run_audit(
            list(paths),
            baseline_file,
            output,
            threshold,
            sys.stdin,
            sys.stdout,
            sys.stderr,
            limits,
            exceptions_paths=exceptions_paths,
            at=at,
            default_namespace=default_namespace,
        )
    except AuditInputError as exc:
        _fail(str(exc))
    sys.exit(code)


@main.command()
@click.option(
    "--namespace",
    envvar="POD_NAMESPACE",
    default=OPERATOR_NAMESPACE,
    show_default=True,
    help="The operator's own namespace (never selected; holds its leader Lease).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v: debug, -vv: kopf debug).")
@click.option(
    "--liveness",
    default=None,
    help="Serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option(
    "--resync-seconds",
    type=click.IntRange(min=10),
    default=300,
    show_default=True,
    help="How often every namespace is checked again for drift.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=16,
    show_default=True,
    help="Namespaces reconciled at once (their requests share the request budget).",
)
@click.option(
    "--workload-audit/--no-workload-audit",
    default=True,
    show_default=True,
    help="Watch pods for baselines with workloadAudit.enabled (off: pods are not watched).",
)
@click.option(
    "--leader-election/--no-leader-election",
    default=True,
    show_default=True,
    help="Hold a Lease so that only one replica acts.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=1, max=300),
    default=30.0,
    show_default=True,
    help="Seconds one API request may take before it is given up and retried.",
)
@click.option(
    "--metrics-address",
    default="0.0.0.0:8081",
    show_default=True,
    help="Serve Prometheus metrics at http://ADDRESS/metrics (empty: not served).",
)
@click.option(
    "--request-budget",
    type=click.IntRange(min=1, max=256),
    default=8,
    show_default=True,
    help="API requests in flight at once (watches and the leader Lease are outside it).",
)
@click.option(
    "--username",
    default=None,
    help="The user the operator runs as, which tamper protection lets through (default: the"
    " ServiceAccount token's subject, else what the API server says).",
)
@click.option(
    "--eso-username",
    default=EXTERNAL_SECRETS_USERNAME,
    show_default=True,
    help="The External Secrets Operator's user, which tamper protection lets change its own"
    " finalizers on generated ExternalSecrets.",
)
def run(
    namespace: str,
    verbose: int,
    liveness: str | None,
    resync_seconds: int,
    workers: int,
    workload_audit: bool,
    leader_election: bool,
    request_budget: int,
    username: str | None,
    metrics_address: str,
    eso_username: str,
    request_timeout: float,
) -> None:
    """Run the operator against the current kubeconfig or in-cluster config."""
    from baseline_operator.controller.main import run_operator  # noqa: PLC0415
    from baseline_operator.controller.options import OperatorOptions  # noqa: PLC0415
    from baseline_operator.kube.config import KubeconfigError  # noqa: PLC0415

    options = OperatorOptions(
        namespace=namespace,
        verbosity=verbose,
        liveness=liveness,
        resync_seconds=resync_seconds,
        workers=workers,
        request_budget=request_budget,
        metrics_address=metrics_address,
        request_timeout=request_timeout,
        leader_election=leader_election,
        workload_audit=workload_audit,
        username=username,
        eso_username=eso_username,
    )
    try:
        code = run_operator(options)
    except KubeconfigError as exc:
        _fail(str(exc))
    sys.exit(code)


@main.command()
@click.option(
    "--namespaces",
    default=8,
    show_default=True,
    type=click.IntRange(1, 500),
    help="How many namespaces the demo creates.",
)
def demo(namespaces: int) -> None:
    """Show the operator converging namespaces, against an in-process API emulator."""
    try:
        from baseline_operator.demo.run import run_demo  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        # The emulator is the `demo` extra, not a runtime dependency (the image lacks it).
        if (exc.name or "").partition(".")[0] not in DEMO_MODULES:
            raise
        _fail(
            f"the demo needs the in-process API emulator ({exc.name} is not installed);"
            " install the demo extra: pip install 'baseline-operator[demo]'"
            " (from a checkout: pip install -e '.[demo]')"
        )

    sys.exit(run_demo(namespaces))


if __name__ == "__main__":  # pragma: no cover
    main()
