"""The operator as the separate process it is in production, and what it did, from the
API server's audit log.

`OperatorProcesses` starts `baseline-operator run` in subprocesses (each with its own
POD_NAME, which names it in the leader Lease, and its own User-Agent, which names it in
the audit log), and can freeze (SIGSTOP), resume (SIGCONT) or kill -9 them; every
process it started is killed when the block ends, failures or not.

`AuditLog` reads the JSON lines a control plane started with `audit=True` writes
(tests/support/control_plane.py): one event per request once answered, with the verb,
the object, the user, the userAgent and the answer's status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from baseline_operator.controller.baselines import ACKNOWLEDGE_REMOVAL
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.kube.client import ApiError, Endpoint
from baseline_operator.kube.config import USER_AGENT_ENV
from baseline_operator.policy.objects import SECURITY_BASELINE
from tests.support.cluster import Cluster

# Set to keep the operator processes' logs (and kubeconfig) after the test.
KEEP_LOGS_ENV = "BASELINE_E2E_KEEP_LOGS"
# The verbs of the audit log that change something.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def kubeconfig_text(server: str, ca_file: str | None, token: str, *, insecure: bool = False) -> str:
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "operator"}}],
            "current-context": "e2e",
        }
    )


def _executable() -> list[str]:
    script = Path(sys.executable).parent / "baseline-operator"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from baseline_operator.cli import main; main()"]


@dataclass
class OperatorProcess:
    """One `baseline-operator run` process."""

    name: str  # its POD_NAME and User-Agent
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def user_agent(self) -> str:
        return self.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, limit: float = 20.0) -> int:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(limit)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class OperatorProcesses:
    """Starts operator processes against one cluster; `close()` kills every one left."""

    kubeconfig: Path
    namespace: str  # the operator's own namespace: its Lease
    username: str | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="operators-")))
    started: list[OperatorProcess] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, kubeconfig: str, namespace: str, username: str | None = None
    ) -> Iterator[OperatorProcesses]:
        directory = Path(tempfile.mkdtemp(prefix="operators-"))
        path = directory / "operator.kubeconfig"
        path.write_text(kubeconfig)
        processes = cls(path, namespace, username, directory)
        try:
            yield processes
        finally:
            processes.close()
            if not os.environ.get(KEEP_LOGS_ENV):
                shutil.rmtree(directory, ignore_errors=True)

    def start(
        self,
        name: str,
        *,
        resync_seconds: int = 3600,
        workers: int = OperatorOptions().workers,
        extra: Iterable[str] = (),
        environment: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        arguments = [
            *_executable(),
            "run",
            "--namespace",
            self.namespace,
            "--resync-seconds",
            str(resync_seconds),
            "--workers",
            str(workers),
            "--no-workload-audit",
            "--metrics-address",
            "",  # several operators on one machine: no port to share
            *extra,
        ]
        if self.username:
            arguments += ["--username", self.username]
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("KUBERNETES_") and key != USER_AGENT_ENV
        }
        env = {
            **inherited,
            "KUBECONFIG": str(self.kubeconfig),
            "POD_NAME": name,
            USER_AGENT_ENV: name,
            "PYTHONUNBUFFERED": "1",
            **(environment or {}),
        }
        log = self.directory / f"{name}.{len(self.started)}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                arguments,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for pytest does not reach it
            )
        started = OperatorProcess(name, process, log)
        self.started.append(started)
        return started

    def close(self) -> None:
        for started in self.started:
            with contextlib.suppress(ProcessLookupError):
                started.kill()

    def logs(self) -> str:
        """The end of every process's log (for a failure's message)."""
        return "\n".join(f"--- {p.name} (pid {p.pid}):\n{p.tail()}" for p in self.started)


# ----------------------------------------------------------------------------- audit log

NO_AUDIT_LOG = (
    "judging requests needs the API server's audit log: only a control plane the session"
    " starts (BASELINE_E2E_ASSETS) has one"
)


def parse_timestamp(text: str) -> datetime:
    # RFC 3339 with microseconds, e.g. 2026-01-01T12:00:00.123456Z
    return datetime.strptime(text.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditEvent:
    verb: str
    user: str
    user_agent: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    received: datetime

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        sub = f"/{self.subresource}" if self.subresource else ""
        return (
            f"{self.received.isoformat()} {self.user_agent} {self.verb} {self.resource}{sub} "
            f"{where}{self.name} -> {self.code}"
        )


def _event(raw: Mapping[str, Any]) -> AuditEvent | None:
    if raw.get("stage") != "ResponseComplete":
        return None
    ref = raw.get("objectRef") or {}
    return AuditEvent(
        verb=str(raw.get("verb") or ""),
        user=str((raw.get("user") or {}).get("username") or ""),
        user_agent=str(raw.get("userAgent") or ""),
        group=str(ref.get("apiGroup") or ""),
        resource=str(ref.get("resource") or ""),
        subresource=str(ref.get("subresource") or ""),
        namespace=str(ref.get("namespace") or ""),
        name=str(ref.get("name") or ""),
        code=int((raw.get("responseStatus") or {}).get("code") or 0),
        received=parse_timestamp(str(raw.get("requestReceivedTimestamp"))),
    )


@dataclass
class AuditLog:
    """The audit log from a mark on: `mark()` at a test's start, `events()` since then."""

    path: Path
    offset: int = 0

    def mark(self) -> AuditLog:
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def events(self) -> list[AuditEvent]:
        found = []
        with self.path.open("rb") as stream:
            stream.seek(self.offset)
            for line in stream:
                if not line.endswith(b"\n"):
                    break  # being written
                try:
                    raw = json.loads(line)
                except ValueError:
                    continue
                event = _event(raw) if isinstance(raw, dict) else None
                if event is not None:
                    found.append(event)
        return found

    def writes(
        self,
        *,
        user_agents: Iterable[str] | None = None,
        resources: Iterable[tuple[str, str]] | None = None,
        since: datetime | None = None,
    ) -> list[AuditEvent]:
        """Write requests (any answer), optionally only of some clients, on some (group,
        resource) pairs, received at or after `since`."""
        agents = set(user_agents) if user_agents is not None else None
        kinds = set(resources) if resources is not None else None
        return [
            event
            for event in self.events()
            if event.is_write
            and (agents is None or event.user_agent in agents)
            and (kinds is None or (event.group, event.resource) in kinds)
            and (since is None or event.received >= since)
        ]


def utc_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- the cluster side

ROLE_FILES = ("manifests/base/role.yaml", "manifests/base/rolebinding.yaml")


def operator_kubeconfig(endpoint: Endpoint) -> str:
    """A kubeconfig holding exactly what a token-only endpoint authenticates with (a
    bearer token; the same server and CA file)."""
    authorization = endpoint.authorization() or ""
    return kubeconfig_text(
        endpoint.server,
        endpoint.ca_file,
        authorization.removeprefix("Bearer ").strip(),
        insecure=endpoint.insecure,
    )


def role_bodies(root: Path, namespace: str, account_namespace: str) -> list[dict[str, Any]]:
    """The shipped Role and RoleBinding of the operator's own namespace (its Lease and
    Events there), for another namespace and a ServiceAccount living elsewhere."""
    bodies = []
    for relative in ROLE_FILES:
        body = yaml.safe_load((root / relative).read_text())
        body["metadata"]["namespace"] = namespace
        for subject in body.get("subjects") or []:
            subject["namespace"] = account_namespace
        bodies.append(body)
    return bodies


async def delete_baselines(cluster: Cluster, names: Iterable[str], limit: float | None) -> None:
    """Delete baselines meaning it (their removal acknowledged against the brake on mass
    removal, before the deletion and again after it: a deletion moves the generation) and
    wait until their finalizers are done (unless `limit` is None)."""
    names = list(names)

    async def acknowledge(name: str) -> None:
        stored = await cluster.get(SECURITY_BASELINE, None, name)
        if stored is not None:
            generation = str(stored["metadata"]["generation"])
            with contextlib.suppress(ApiError):
                await cluster.merge_patch(
                    SECURITY_BASELINE,
                    None,
                    name,
                    {"metadata": {"annotations": {ACKNOWLEDGE_REMOVAL: generation}}},
                )

    for name in names:
        await acknowledge(name)
        await cluster.delete(SECURITY_BASELINE, None, name)
        await acknowledge(name)
    if limit is None:
        return
    deadline = time.monotonic() + limit
    while any([await cluster.get(SECURITY_BASELINE, None, name) for name in names]):
        if time.monotonic() > deadline:
            raise AssertionError(f"the finalizers of {', '.join(names)} not done in {limit:.0f}s")
        await asyncio.sleep(0.2)
