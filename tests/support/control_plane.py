"""A throwaway Kubernetes control plane on loopback, from real binaries (the envtest pattern).

Given a directory holding `etcd`, `kube-apiserver` and `kube-controller-manager`
(any kube-apiserver 1.30+), `ControlPlane` starts them in a temporary directory on
free loopback ports, with:

- a self-signed CA and serving certificate (openssl);
- static bearer tokens: an admin in `system:masters`, a plain user in no group
  (`tenant`, for RBAC and namespace-editor cases), and one for the controller manager;
- `--authorization-mode Node,RBAC`, service-account issuer and keys, and the
  admission plugins real clusters run (NamespaceLifecycle, ServiceAccount,
  PodSecurity, LimitRanger, ResourceQuota; ValidatingAdmissionPolicy is built in);
- optionally an audit log of every request (`audit=True`), so tests can count
  requests by user;
- the controllers the operator depends on (namespace deletion, garbage collection,
  default ServiceAccounts and tokens, aggregated ClusterRoles, quota, VAP status),
  each with its own ServiceAccount credentials, as in a real cluster.

Everything is stopped and removed when the context ends, also when a test fails.
`python -m tests.support.control_plane --assets DIR` starts one and prints a
kubeconfig path, for benchmarks and manual runs; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ASSETS_ENV = "BASELINE_E2E_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "resourcequota-controller",
    "root-ca-certificate-publisher-controller",
    "validatingadmissionpolicy-status-controller",
)
ADMIN_USER = "e2e-admin"
TENANT_USER = "tenant"
READY_LIMIT = 120.0


@dataclass(frozen=True)
class Credentials:
    user: str
    token: str


@dataclass(frozen=True)
class RunningControlPlane:
    """What a started control plane offers its users."""

    url: str
    ca_file: Path
    admin: Credentials
    tenant: Credentials
    kubeconfig: Path  # the admin's
    audit_log: Path | None
    directory: Path

    def kubeconfig_for(self, credentials: Credentials, name: str) -> Path:
        """A kubeconfig for another user of this control plane."""
        path = self.directory / f"{name}.kubeconfig"
        path.write_text(_kubeconfig(self.url, self.ca_file, credentials.token, name))
        return path


def missing_binaries(assets: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(assets / name, os.X_OK)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and the service-account keys."""
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-nodes", "-key", "ca.key", "-subj", "/CN=e2e-ca",
        "-days", "2", "-out", "ca.crt", cwd=directory,
    )  # fmt: skip
    _openssl("genrsa", "-out", "server.key", "2048", cwd=directory)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


def _kubeconfig(url: str, ca_file: Path, token: str, user: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "e2e", "cluster": {"server": url, "certificate-authority": str(ca_file)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        },
        indent=2,
    )


_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started by `start()` (a context)."""

    def __init__(self, assets: Path, *, audit: bool = False, verbose: bool = False) -> None:
        self.assets = assets.resolve()
        self.audit = audit
        self.verbose = verbose
        self._processes: list[subprocess.Popen[bytes]] = []
        self._directory = Path()

    @contextlib.contextmanager
    def start(self) -> Iterator[RunningControlPlane]:
        missing = missing_binaries(self.assets)
        if missing:
            raise FileNotFoundError(f"{self.assets} lacks executable {', '.join(missing)}")
        directory = Path(tempfile.mkdtemp(prefix="baseline-e2e-"))
        try:
            yield self._start(directory)
        finally:
            self.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def stop(self) -> None:
        # Killed, not terminated: everything is thrown away, and a graceful kube-apiserver
        # shutdown waits for its watches to drain.
        for process in reversed(self._processes):
            if process.poll() is None:
                process.kill()
            process.wait()
        self._processes.clear()

    def _spawn(self, directory: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (directory / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [str(self.assets / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,  # a Ctrl-C meant for pytest reaches the teardown, not these
        )
        self._processes.append(process)
        return process

    def _start(self, directory: Path) -> RunningControlPlane:
        self._directory = directory
        _certificates(directory)
        admin = Credentials(ADMIN_USER, secrets.token_hex(16))
        tenant = Credentials(TENANT_USER, secrets.token_hex(16))
        controller_token = secrets.token_hex(16)
        (directory / "tokens.csv").write_text(
            f'{admin.token},{admin.user},uid-admin,"system:masters"\n'
            f"{tenant.token},{tenant.user},uid-tenant\n"
            f"{controller_token},system:kube-controller-manager,uid-kcm\n"
        )

        etcd_client, etcd_peer = free_port(), free_port()
        etcd = self._spawn(
            directory,
            "etcd",
            [
                "--data-dir", str(directory / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # a throwaway store: durability buys nothing here
                "--quota-backend-bytes", str(4 * 1024**3),
            ],
        )  # fmt: skip
        self._wait_for(etcd, "etcd", lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"))

        port = free_port()
        url = f"https://127.0.0.1:{port}"
        audit_log = directory / "audit.log" if self.audit else None
        apiserver_args = [
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            "--secure-port", str(port),
            "--tls-cert-file", str(directory / "server.crt"),
            "--tls-private-key-file", str(directory / "server.key"),
            "--client-ca-file", str(directory / "ca.crt"),
            "--token-auth-file", str(directory / "tokens.csv"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(directory / "sa.pub"),
            "--service-account-signing-key-file", str(directory / "sa.key"),
            "--api-audiences", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--allow-privileged=true",
            "--endpoint-reconciler-type", "none",
            "--enable-admission-plugins",
            "NamespaceLifecycle,ServiceAccount,PodSecurity,LimitRanger,ResourceQuota",
            "--enable-priority-and-fairness=false",
        ]  # fmt: skip
        if audit_log is not None:
            (directory / "audit-policy.yaml").write_text(_AUDIT_POLICY)
            apiserver_args += [
                "--audit-policy-file", str(directory / "audit-policy.yaml"),
                "--audit-log-path", str(audit_log),
                "--audit-log-format", "json",
                "--audit-log-mode", "blocking",
            ]  # fmt: skip
        apiserver = self._spawn(directory, "kube-apiserver", apiserver_args)
        context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
        self._wait_for(
            apiserver,
            "kube-apiserver",
            lambda: _http_ok(f"{url}/readyz", context=context, token=admin.token),
        )

        (directory / "kcm.kubeconfig").write_text(
            _kubeconfig(url, directory / "ca.crt", controller_token, "kube-controller-manager")
        )
        self._spawn(
            directory,
            "kube-controller-manager",
            [
                "--kubeconfig", str(directory / "kcm.kubeconfig"),
                "--leader-elect=false",
                "--secure-port", "0",
                "--use-service-account-credentials=true",
                "--service-account-private-key-file", str(directory / "sa.key"),
                "--root-ca-file", str(directory / "ca.crt"),
                "--controllers", ",".join(CONTROLLERS),
                "--concurrent-namespace-syncs", "4",
                # Each controller's client is held to 20 requests/s by default: thousands of
                # new namespaces then wait minutes for their default ServiceAccounts, with the
                # machine idle. Nothing measured here depends on that pace.
                "--kube-api-qps", "500",
                "--kube-api-burst", "1000",
            ],
        )  # fmt: skip

        kubeconfig = directory / "admin.kubeconfig"
        kubeconfig.write_text(_kubeconfig(url, directory / "ca.crt", admin.token, admin.user))
        running = RunningControlPlane(
            url=url,
            ca_file=directory / "ca.crt",
            admin=admin,
            tenant=tenant,
            kubeconfig=kubeconfig,
            audit_log=audit_log,
            directory=directory,
        )
        self._wait_for(
            apiserver,
            "the aggregated ClusterRoles and the default ServiceAccount",
            lambda: _controllers_working(url, context, admin.token),
        )
        return running

    def _wait_for(self, process: subprocess.Popen[bytes], what: str, ready: object) -> None:
        deadline = time.monotonic() + READY_LIMIT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}: {self._tail()}")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready within {READY_LIMIT:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        """The last lines each process logged: why a start failed."""
        lines = []
        for process in self._processes:
            name = Path(str(process.args[0])).name  # type: ignore[index]
            log = self._directory / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            lines.append(f"--- {name}:\n" + "\n".join(text.splitlines()[-15:]))
        return "\n".join(lines)


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _get_json(url: str, context: ssl.SSLContext, token: str) -> dict[str, object] | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as answer:
            body: dict[str, object] = json.loads(answer.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _controllers_working(url: str, context: ssl.SSLContext, token: str) -> bool:
    """The controller manager is at work: `admin` has its aggregated rules, and `default`
    holds its ServiceAccount (tests rely on both from the first moment)."""
    admin = _get_json(f"{url}/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", context, token)
    account = _get_json(f"{url}/api/v1/namespaces/default/serviceaccounts/default", context, token)
    return bool(admin and admin.get("rules") and account and account.get("metadata"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default=os.environ.get(ASSETS_ENV), help="binaries directory")
    parser.add_argument("--audit", action="store_true", help="write an audit log of requests")
    arguments = parser.parse_args()
    if not arguments.assets:
        parser.error(f"--assets or {ASSETS_ENV} must name the directory of the binaries")
    plane = ControlPlane(Path(arguments.assets), audit=arguments.audit)
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with plane.start() as running:
        print(running.kubeconfig, flush=True)
        print(f"tenant token: {running.tenant.token}", file=sys.stderr, flush=True)
        while not stopped:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
