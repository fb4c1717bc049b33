"""Where the API server is and how to authenticate: the in-cluster files or a kubeconfig.

The operator reads these itself, without the official `kubernetes` package: kopf imports
that package's `kubernetes.client` (every model, ~15 MiB of memory) whenever it is
installed, and the operator needed it only to read these files. The result is the
`Endpoint` of the operator's own client; `connection_info` gives kopf's client the same.

A kubeconfig is read as kubectl reads it: KUBECONFIG may list several files, merged (the
first file to name a cluster, user or context wins; current-context comes from the first
file that sets one), and relative paths in a file are relative to its directory. Supported:
a cluster's server, certificate-authority(-data) and insecure-skip-tls-verify; a user's
token, tokenFile, username/password, client-certificate(-data)/client-key(-data) and exec
credential plugins. Whatever else would change how to connect (auth-provider, proxy-url,
tls-server-name, impersonation) is refused with a `KubeconfigError`, never ignored.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import yaml

from baseline_operator.kube.client import Endpoint

# The User-Agent of the operator's requests, when set (e.g. to tell replicas apart in the
# API server's audit log); otherwise aiohttp's own.
USER_AGENT_ENV = "BASELINE_OPERATOR_USER_AGENT"
# What the kubelet mounts into a pod: the ServiceAccount's token (rotated in place) and
# the cluster's CA.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How long a token read from a file is used before the file is read again (a rotated
# in-cluster token is valid for an hour at least; the kubelet rotates it well before then).
TOKEN_REREAD = 60.0
# An exec plugin's token is renewed this long before it expires, and the plugin may take
# this long. It runs on the event loop (the request waits for its header), so rarely.
EXEC_RENEW_BEFORE = 60.0
EXEC_TIMEOUT = 60.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_CONFIG_EXTENSION = "client.authentication.k8s.io/exec"
# Kubeconfig fields that change how to connect and that this module does not implement.
UNSUPPORTED = {
    "auth-provider": "use an exec credential plugin instead (kubectl dropped auth providers)",
    "proxy-url": "let the operator reach the API server without a proxy",
    "tls-server-name": "use a server URL whose host the API server's certificate names",
    "as": "give the user itself the permissions (impersonation is not supported)",
    "as-uid": "give the user itself the permissions (impersonation is not supported)",
    "as-groups": "give the user itself the permissions (impersonation is not supported)",
    "as-user-extra": "give the user itself the permissions (impersonation is not supported)",
}

Clock = Callable[[], float]
Entry = Mapping[str, Any]


class KubeconfigError(ValueError):
    """The connection settings cannot be read, or use a form the operator does not support."""


def load_endpoint(
    headers: Mapping[str, str] | None = None, *, clock: Clock = time.time
) -> Endpoint:
    """In a pod, its ServiceAccount's credentials; elsewhere, the kubeconfig's."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(headers, clock)
    return load_kubeconfig(headers=headers, clock=clock)


def _in_cluster(headers: Mapping[str, str] | None, clock: Clock) -> Endpoint:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not port:
        raise KubeconfigError(
            "KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not: in a pod the"
            " kubelet sets both; elsewhere unset KUBERNETES_SERVICE_HOST to use a kubeconfig"
        )
    where = "the pod's ServiceAccount (automountServiceAccountToken must not be false)"
    token = _reread(_existing(SERVICE_ACCOUNT_DIR / "token", where), clock)
    return Endpoint(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_file=str(_existing(SERVICE_ACCOUNT_DIR / "ca.crt", where)),
        authorization=lambda: f"Bearer {token()}",
        headers=_with_user_agent(headers),
    )


def load_kubeconfig(
    path: str | None = None,
    context: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    clock: Clock = time.time,
) -> Endpoint:
    """The endpoint of a kubeconfig's context (default: its current-context).

    `path` None: the files KUBECONFIG lists, else ~/.kube/config. A failing exec plugin or
    an unreadable token file fails here, not at the first request.
    """
    config = _merged(_kubeconfig_paths(path))
    name = context or config.current_context
    if not name:
        raise KubeconfigError(
            f"the kubeconfig ({config.files}) sets no current-context:"
            " choose one with `kubectl config use-context NAME`"
        )
    chosen, _ = _named(config.contexts, name, "context", config.files)
    cluster, cluster_directory = _named(
        config.clusters, chosen.get("cluster"), f"cluster of context {name!r}", config.files
    )
    endpoint = _cluster_endpoint(
        cluster, cluster_directory, f"kubeconfig cluster {chosen['cluster']!r}"
    )
    endpoint = replace(endpoint, headers=_with_user_agent(headers))
    if not chosen.get("user"):
        return endpoint
    user, user_directory = _named(
        config.users, chosen["user"], f"user of context {name!r}", config.files
    )
    return _with_user(
        endpoint, cluster, user, user_directory, f"kubeconfig user {chosen['user']!r}", clock
    )


@dataclass
class _Kubeconfig:
    """Several kubeconfig files merged: each named entry with the directory of its file."""

    files: str = ""
    clusters: dict[str, tuple[Entry, Path]] = field(default_factory=dict)
    users: dict[str, tuple[Entry, Path]] = field(default_factory=dict)
    contexts: dict[str, tuple[Entry, Path]] = field(default_factory=dict)
    current_context: str | None = None


def _kubeconfig_paths(path: str | None) -> list[Path]:
    if path is not None:
        return [Path(path)]
    variable = os.environ.get("KUBECONFIG", "")
    listed = [Path(item).expanduser() for item in variable.split(os.pathsep) if item]
    if not listed:
        return [Path.home() / ".kube" / "config"]
    present = [item for item in listed if item.exists()]  # kubectl skips missing files too
    if not present:
        raise KubeconfigError(
            f"no file KUBECONFIG names exists ({variable}): point it at a kubeconfig"
        )
    return present


def _merged(paths: list[Path]) -> _Kubeconfig:
    config = _Kubeconfig(files=os.pathsep.join(map(str, paths)))
    for path in paths:
        data = _read(path)
        directory = path.absolute().parent
        for section, key, named in (
            ("clusters", "cluster", config.clusters),
            ("users", "user", config.users),
            ("contexts", "context", config.contexts),
        ):
            items = data.get(section) or []
            if not isinstance(items, list):
                raise KubeconfigError(f"{path}: {section} must be a list")
            for item in items:
                if not (
                    isinstance(item, dict)
                    and isinstance(item.get("name"), str)
                    and isinstance(item.get(key) or {}, dict)
                ):
                    raise KubeconfigError(
                        f"{path}: every entry of {section} needs a name and a {key} mapping"
                    )
                named.setdefault(item["name"], (item.get(key) or {}, directory))
        if config.current_context is None and data.get("current-context"):
            config.current_context = str(data["current-context"])
    return config


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeconfigError(
            f"cannot read the kubeconfig {path}: {exc.strerror or exc}; set KUBECONFIG to"
            " a kubeconfig, or run in a pod"
        ) from exc
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path} is not a kubeconfig: it is not YAML") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or data.get("kind", "Config") != "Config":
        raise KubeconfigError(
            f"{path} is not a kubeconfig (a mapping of kind Config with clusters, users and"
            " contexts)"
        )
    return data


def _named(
    entries: dict[str, tuple[Entry, Path]], name: Any, what: str, files: str
) -> tuple[Entry, Path]:
    if not isinstance(name, str) or name not in entries:
        raise KubeconfigError(
            f"the {what}, {name!r}, is not in the kubeconfig ({files}):"
            " add it, or choose another context"
        )
    return entries[name]


def _cluster_endpoint(cluster: Entry, directory: Path, where: str) -> Endpoint:
    _refuse_unsupported(cluster, where)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"{where} has no server: set it to the API server's URL")
    ca_data = _data(cluster, "certificate-authority-data", where)
    return Endpoint(
        server=server.rstrip("/"),
        # The data wins over the file, as in kubectl.
        ca_file=None if ca_data else _path(cluster, "certificate-authority", directory, where),
        ca_data=ca_data,
        insecure=cluster.get("insecure-skip-tls-verify") is True,
    )


def _with_user(
    endpoint: Endpoint, cluster: Entry, user: Entry, directory: Path, where: str, clock: Clock
) -> Endpoint:
    """The endpoint authenticated as the kubeconfig user."""
    _refuse_unsupported(user, where)
    certificate = _file_or_data(user, "client-certificate", directory, where)
    key = _file_or_data(user, "client-key", directory, where)
    authorization = _authorization(user, directory, where, clock)
    if user.get("exec"):
        plugin = _ExecPlugin(
            user["exec"], directory, where, _cluster_info(endpoint, cluster), clock
        )
        authorization = plugin.authorization
        if certificate is None and key is None:
            certificate, key = plugin.client_certificate()
    if bool(certificate) != bool(key):
        raise KubeconfigError(
            f"{where} has a client certificate without its key, or a key without its"
            " certificate: set both client-certificate(-data) and client-key(-data)"
        )
    return replace(
        endpoint, certificate_file=certificate, key_file=key, authorization=authorization
    )


def _authorization(
    user: Entry, directory: Path, where: str, clock: Clock
) -> Callable[[], str | None]:
    """The Authorization header of a token (it wins over tokenFile, as in kubectl), a token
    file or a user name and password; None for a client certificate alone or an exec plugin."""
    ways = [
        way
        for way, fields in (
            ("a token", ("token", "tokenFile")),
            ("a user name", ("username", "password")),
            ("an exec plugin", ("exec",)),
        )
        if any(user.get(name) for name in fields)
    ]
    if len(ways) > 1:
        raise KubeconfigError(f"{where} sets {' and '.join(ways)}: keep one way to authenticate")
    if user.get("token"):
        return _constant(f"Bearer {user['token']}")
    if user.get("tokenFile"):
        token = _reread(_existing(directory / str(user["tokenFile"]), f"{where}, tokenFile"), clock)
        return lambda: f"Bearer {token()}"
    if user.get("username"):
        pair = f"{user['username']}:{user.get('password') or ''}".encode()
        return _constant(f"Basic {base64.b64encode(pair).decode()}")
    return _constant(None)


def _constant(value: str | None) -> Callable[[], str | None]:
    return lambda: value


def _refuse_unsupported(entry: Entry, where: str) -> None:
    for name, advice in UNSUPPORTED.items():
        if entry.get(name):
            raise KubeconfigError(
                f"{where} sets {name}, which the operator does not support: {advice}"
            )


def _path(entry: Entry, name: str, directory: Path, where: str) -> str | None:
    """A file the entry names, relative to its kubeconfig's directory."""
    value = entry.get(name)
    return str(_existing(directory / str(value), f"{where}, {name}")) if value else None


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise KubeconfigError(f"{where}: {path} does not exist or is not a file")
    return path


def _data(entry: Entry, name: str, where: str) -> str | None:
    """Base64-encoded PEM text the entry holds."""
    value = entry.get(name)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise KubeconfigError(f"{where}, {name}: not base64 of a PEM text") from exc


def _file_or_data(entry: Entry, name: str, directory: Path, where: str) -> str | None:
    """A file for a certificate or key held as a file or as data (ssl loads only files)."""
    data = _data(entry, f"{name}-data", where)
    return _private_file(data) if data else _path(entry, name, directory, where)


@functools.cache
def _private_directory() -> str:
    directory = tempfile.mkdtemp(prefix="baseline-operator-")  # mode 0700
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _private_file(text: str) -> str:
    """The text in a new file only this user may read (mode 0600), removed at exit."""
    descriptor, path = tempfile.mkstemp(suffix=".pem", dir=_private_directory())
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return path


def _reread(path: Path, clock: Clock) -> Callable[[], str]:
    """The token in a file, read now and again once TOKEN_REREAD seconds have passed."""
    read_at, token = clock(), _read_token(path)

    def current() -> str:
        nonlocal read_at, token
        if clock() - read_at >= TOKEN_REREAD:
            read_at, token = clock(), _read_token(path)
        return token

    return current


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise KubeconfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise KubeconfigError(f"the token file {path} is empty")
    return token


def _cluster_info(endpoint: Endpoint, cluster: Entry) -> dict[str, Any]:
    """The cluster as an exec plugin asking for it (provideClusterInfo) is told of it."""
    info: dict[str, Any] = {"server": endpoint.server}
    if endpoint.insecure:
        info["insecure-skip-tls-verify"] = True
    ca = endpoint.ca_data or (Path(endpoint.ca_file).read_text() if endpoint.ca_file else None)
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXEC_CONFIG_EXTENSION:
            info["config"] = extension.get("extension")
    return info


class _ExecPlugin:
    """An exec credential plugin: run once at start, again when its token nears expiry."""

    def __init__(
        self, spec: Any, directory: Path, where: str, cluster: dict[str, Any], clock: Clock
    ) -> None:
        self.where = f"{where}, exec"
        if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
            raise KubeconfigError(f"{self.where}: needs a command")
        if spec.get("apiVersion") not in EXEC_API_VERSIONS:
            raise KubeconfigError(
                f"{self.where}: apiVersion {spec.get('apiVersion')!r} is not supported: use"
                f" one of {', '.join(EXEC_API_VERSIONS)}"
            )
        env = spec.get("env") or []
        if not isinstance(spec.get("args") or [], list) or not (
            isinstance(env, list)
            and all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in env)
        ):
            raise KubeconfigError(
                f"{self.where}: args must be a list, and env a list of names and values"
            )
        if spec.get("interactiveMode") == "Always":
            raise KubeconfigError(
                f"{self.where}: interactiveMode Always needs a terminal, which the operator"
                " has not: use a plugin that runs without one"
            )
        self.spec, self.clock = spec, clock
        command = spec["command"]
        # A relative path (not a bare name looked up in PATH) is relative to the kubeconfig.
        self.command = str(directory / command) if os.sep in command else command
        info: dict[str, Any] = {"interactive": False}
        if spec.get("provideClusterInfo"):
            info["cluster"] = cluster
        self.info = {"apiVersion": spec["apiVersion"], "kind": "ExecCredential", "spec": info}
        self.status, self.expires = self._run()

    def authorization(self) -> str | None:
        if self.expires is not None and self.clock() >= self.expires - EXEC_RENEW_BEFORE:
            self.status, self.expires = self._run()
        token = self.status.get("token")
        return f"Bearer {token}" if token else None

    def client_certificate(self) -> tuple[str | None, str | None]:
        """Files of the certificate and key the plugin gave first (read once: a new one
        takes a restart)."""
        certificate = self.status.get("clientCertificateData")
        key = self.status.get("clientKeyData")
        if not certificate or not key:
            return None, None
        return _private_file(str(certificate)), _private_file(str(key))

    def _expires(self, status: Mapping[str, Any]) -> float | None:
        stamp = status.get("expirationTimestamp")
        if not stamp:
            return None
        try:
            moment = datetime.fromisoformat(str(stamp))
        except ValueError as exc:
            raise KubeconfigError(
                f"{self.where}: expirationTimestamp {stamp!r} is not RFC 3339"
            ) from exc
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

    def _run(self) -> tuple[Mapping[str, Any], float | None]:
        """The plugin's credential (its status) and when it expires."""
        environment = dict(os.environ)
        for variable in self.spec.get("env") or []:
            environment[variable["name"]] = str(variable.get("value") or "")
        environment["KUBERNETES_EXEC_INFO"] = json.dumps(self.info)
        command = [self.command, *map(str, self.spec.get("args") or [])]
        try:
            done = subprocess.run(
                command,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=EXEC_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            hint = self.spec.get("installHint") or "install it, or fix the path"
            raise KubeconfigError(
                f"{self.where}: cannot run {self.command}: {exc}; {hint}"
            ) from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise KubeconfigError(
                f"{self.where}: {self.command} failed (exit {done.returncode}): {last}"
            )
        status = self._status(done.stdout)
        return status, self._expires(status)

    def _status(self, output: str) -> Mapping[str, Any]:
        try:
            credential = json.loads(output)
        except ValueError:
            credential = None
        status = credential.get("status") if isinstance(credential, dict) else None
        if (
            not isinstance(credential, dict)
            or credential.get("apiVersion") != self.spec["apiVersion"]
            or credential.get("kind") != "ExecCredential"
            or not isinstance(status, dict)
        ):
            raise KubeconfigError(
                f"{self.where}: {self.command} did not print an ExecCredential of"
                f" {self.spec['apiVersion']} with a status"
            )
        if not status.get("token") and not (
            status.get("clientCertificateData") and status.get("clientKeyData")
        ):
            raise KubeconfigError(
                f"{self.where}: {self.command} gave neither a token nor a client certificate"
                " and key"
            )
        return status


def endpoint_for(url: str) -> Endpoint:
    """A plain-HTTP API server without credentials (the in-process emulator)."""
    return Endpoint(server=url.rstrip("/"), headers=_with_user_agent(None))


def _with_user_agent(headers: Mapping[str, str] | None) -> dict[str, str]:
    agent = os.environ.get(USER_AGENT_ENV)
    return {"User-Agent": agent, **(headers or {})} if agent else dict(headers or {})


def token_username(endpoint: Endpoint) -> str | None:
    """The user a ServiceAccount token names (its `sub` claim), read without a request.

    The token is the operator's own; the API server verifies it on every request, this
    only reads who it says it is.
    """
    scheme, _, token = (endpoint.authorization() or "").partition(" ")
    parts = token.strip().split(".")
    if scheme != "Bearer" or len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) and subject else None


def connection_info(endpoint: Endpoint) -> kopf.ConnectionInfo:
    """The same server and credentials for kopf's own client (called at each of its logins,
    so a rotated token is read afresh)."""
    scheme, _, token = (endpoint.authorization() or "").partition(" ")
    return kopf.ConnectionInfo(
        server=endpoint.server,
        ca_path=endpoint.ca_file,
        ca_data=endpoint.ca_data,
        insecure=endpoint.insecure,
        scheme=scheme or None,
        token=token or None,
        certificate_path=endpoint.certificate_file,
        private_key_path=endpoint.key_file,
    )
