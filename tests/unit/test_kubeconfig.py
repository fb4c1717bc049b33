"""Reading connection settings without the official client (kube/config.py): each
supported kubeconfig form, the in-cluster files, exec plugins, and every refused form
failing with one clear error. Temporary files only, no network."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from baseline_operator.cli import main
from baseline_operator.kube import config
from baseline_operator.kube.config import (
    TOKEN_REREAD,
    KubeconfigError,
    connection_info,
    endpoint_for,
    load_endpoint,
    load_kubeconfig,
)


@pytest.fixture(autouse=True)
def _outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "KUBECONFIG",
        config.USER_AGENT_ENV,
    ):
        monkeypatch.delenv(name, raising=False)


class Clock:
    """Time that moves only when a test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def kubeconfig(
    path: Path,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
) -> Path:
    """A kubeconfig of one context, `main`, joining cluster `c` and user `u`."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://api.example:6443"}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "main",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed certificate and its key, PEM (made with openssl: the
    `cryptography` package is not among the test dependencies)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(reason="openssl is not installed (needed to make a test certificate)")
    directory = tmp_path_factory.mktemp("pki")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=baseline-test",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (directory / "cert.pem").read_text(), (directory / "key.pem").read_text()


# --------------------------------------------------------------------- users


def test_a_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user={"token": "abc"})
    endpoint = load_kubeconfig(str(path))
    assert endpoint.server == "https://api.example:6443"
    assert endpoint.authorization() == "Bearer abc"
    assert (endpoint.ca_file, endpoint.ca_data, endpoint.insecure) == (None, None, False)
    info = connection_info(endpoint)
    assert (info.server, info.scheme, info.token) == ("https://api.example:6443", "Bearer", "abc")


def test_a_token_file_is_read_again_after_the_interval(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    clock = Clock()
    endpoint = load_kubeconfig(
        str(kubeconfig(tmp_path / "config", user={"tokenFile": str(token)})), clock=clock
    )
    assert endpoint.authorization() == "Bearer one"
    token.write_text("two\n")
    clock.now += TOKEN_REREAD - 1
    assert endpoint.authorization() == "Bearer one"  # not read per request
    clock.now += 1
    assert endpoint.authorization() == "Bearer two"
    assert connection_info(endpoint).token == "two"


def test_a_token_wins_over_a_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file")
    path = kubeconfig(tmp_path / "config", user={"token": "inline", "tokenFile": str(token)})
    assert load_kubeconfig(str(path)).authorization() == "Bearer inline"


def test_basic_auth(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user={"username": "alice", "password": "s3cret"})
    endpoint = load_kubeconfig(str(path))
    assert endpoint.authorization() == "Basic " + b64("alice:s3cret")
    info = connection_info(endpoint)
    assert (info.scheme, info.token) == ("Basic", b64("alice:s3cret"))
    assert config.token_username(endpoint) is None  # not a bearer token


def test_no_user_means_no_credentials(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://k:6443/"}}],
                "contexts": [{"name": "anon", "context": {"cluster": "c"}}],
                "current-context": "anon",
            }
        )
    )
    endpoint = load_kubeconfig(str(path))
    assert endpoint.server == "https://k:6443"
    assert endpoint.authorization() is None
    assert connection_info(endpoint).token is None


# --------------------------------------------------------------------- TLS


def test_certificate_authority_data(tmp_path: Path, certificate: tuple[str, str]) -> None:
    cert, _ = certificate
    cluster = {"server": "https://k:6443", "certificate-authority-data": b64(cert)}
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", cluster=cluster)))
    assert (endpoint.ca_data, endpoint.ca_file) == (cert, None)
    context = endpoint.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert "baseline-test" in str(context.get_ca_certs())  # the one CA it trusts
    assert len(context.get_ca_certs()) == 1
    info = connection_info(endpoint)
    assert (info.ca_data, info.ca_path) == (cert, None)
    assert isinstance(info.as_ssl_context(), ssl.SSLContext)  # what kopf's client builds


def test_a_certificate_authority_file_and_insecure(
    tmp_path: Path, certificate: tuple[str, str]
) -> None:
    (tmp_path / "ca.crt").write_text(certificate[0])
    cluster = {"server": "https://k:6443", "certificate-authority": str(tmp_path / "ca.crt")}
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", cluster=cluster)))
    assert endpoint.ca_file == str(tmp_path / "ca.crt")
    assert connection_info(endpoint).ca_path == str(tmp_path / "ca.crt")
    insecure = {"server": "https://k:6443", "insecure-skip-tls-verify": True}
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "other", cluster=insecure)))
    assert endpoint.insecure and connection_info(endpoint).insecure
    assert endpoint.ssl_context() is False


def _private(path: str) -> None:
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700, path


def test_client_certificate_data_is_written_to_private_files(
    tmp_path: Path, certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    user = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", user=user)))
    assert endpoint.certificate_file and endpoint.key_file
    assert Path(endpoint.certificate_file).read_text() == cert
    assert Path(endpoint.key_file).read_text() == key
    _private(endpoint.certificate_file)
    _private(endpoint.key_file)
    assert isinstance(endpoint.ssl_context(), ssl.SSLContext)  # load_cert_chain accepted them
    info = connection_info(endpoint)
    assert (info.certificate_path, info.private_key_path) == (
        endpoint.certificate_file,
        endpoint.key_file,
    )
    assert endpoint.authorization() is None


def test_relative_paths_are_relative_to_the_kubeconfig(
    tmp_path: Path, certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    home = tmp_path / "kube"
    home.mkdir()
    (home / "ca.crt").write_text(cert)
    (home / "client.crt").write_text(cert)
    (home / "client.key").write_text(key)
    (tmp_path / "token").write_text("relative")
    path = kubeconfig(
        home / "config",
        cluster={"server": "https://k:6443", "certificate-authority": "ca.crt"},
        user={
            "client-certificate": "client.crt",
            "client-key": "./client.key",
            "tokenFile": "../token",
        },
    )
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the working directory must not matter
    endpoint = load_kubeconfig(str(path))
    assert endpoint.ca_file == str(home / "ca.crt")
    assert endpoint.certificate_file == str(home / "client.crt")
    assert endpoint.key_file == str(home / "client.key")
    assert endpoint.authorization() == "Bearer relative"
    assert isinstance(endpoint.ssl_context(), ssl.SSLContext)


# --------------------------------------------------------------------- KUBECONFIG


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first"
    first.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "shared", "cluster": {"server": "https://first"}}],
                "users": [{"name": "me", "user": {"token": "first-token"}}],
                "contexts": [{"name": "one", "context": {"cluster": "shared", "user": "me"}}],
            }
        )
    )
    second = tmp_path / "second"
    second.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "shared", "cluster": {"server": "https://second"}},
                    {"name": "own", "cluster": {"server": "https://own"}},
                ],
                "users": [{"name": "me", "user": {"token": "second-token"}}],
                "contexts": [
                    {"name": "one", "context": {"cluster": "own", "user": "me"}},
                    {"name": "two", "context": {"cluster": "own", "user": "me"}},
                ],
                "current-context": "two",
            }
        )
    )
    third = tmp_path / "third"
    kubeconfig(third)  # sets current-context `main`, too late
    missing = tmp_path / "missing"  # skipped, as kubectl skips it
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, (first, missing, second, third))))

    # current-context: the first file that sets one (the second, not the third)
    current = load_endpoint()
    assert current.server == "https://own"
    assert current.authorization() == "Bearer first-token"  # the first file's user `me`
    # the first file to name a context or cluster wins
    assert load_kubeconfig(context="one").server == "https://first"
    assert load_kubeconfig(context="main").server == "https://api.example:6443"


def test_without_kubeconfig_the_home_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeconfigError, match=r"cannot read the kubeconfig .*\.kube/config"):
        load_endpoint()
    kubeconfig(tmp_path / ".kube" / "config", user={"token": "home"})
    assert load_endpoint().authorization() == "Bearer home"


def test_the_user_agent_and_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(kubeconfig(tmp_path / "config", user={"token": "t"}))
    assert load_kubeconfig(path).headers == {}
    monkeypatch.setenv(config.USER_AGENT_ENV, "replica-a")
    assert load_kubeconfig(path, headers={"X-Test": "1"}).headers == {
        "User-Agent": "replica-a",
        "X-Test": "1",
    }
    assert endpoint_for("http://127.0.0.1:8000/").headers == {"User-Agent": "replica-a"}


def test_a_plain_http_endpoint() -> None:
    endpoint = endpoint_for("http://127.0.0.1:8000/")
    assert endpoint.server == "http://127.0.0.1:8000"
    assert endpoint.authorization() is None
    assert endpoint.ssl_context() is False
    assert connection_info(endpoint).server == "http://127.0.0.1:8000"


# --------------------------------------------------------------------- in a pod


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("first-token")
    (directory / "ca.crt").write_text("not read until a connection")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_DIR", directory)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return directory


def test_in_a_pod_the_service_account(pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # not read in a pod
    clock = Clock()
    endpoint = load_endpoint(clock=clock)
    assert endpoint.server == "https://10.96.0.1:443"
    assert endpoint.ca_file == str(pod / "ca.crt")
    assert endpoint.authorization() == "Bearer first-token"
    (pod / "token").write_text("rotated")  # the kubelet rotates it in place
    clock.now += TOKEN_REREAD / 2
    assert endpoint.authorization() == "Bearer first-token"
    clock.now += TOKEN_REREAD / 2
    assert endpoint.authorization() == "Bearer rotated"


def test_in_a_pod_an_ipv6_service_host(pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1")
    assert load_endpoint().server == "https://[fd00:10:96::1]:443"


def test_in_a_pod_without_a_token(pod: Path) -> None:
    (pod / "token").unlink()
    with pytest.raises(KubeconfigError, match="automountServiceAccountToken"):
        load_endpoint()


def test_in_a_pod_without_a_port(pod: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT")
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_PORT"):
        load_endpoint()


# --------------------------------------------------------------------- exec plugins

PLUGIN = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    state = Path(sys.argv[1])
    runs = int(state.read_text()) + 1 if state.exists() else 1
    state.write_text(str(runs))
    state.with_suffix(".info").write_text(os.environ["KUBERNETES_EXEC_INFO"])
    if os.environ.get("PLUGIN_FAIL"):
        print("the identity provider said no", file=sys.stderr)
        sys.exit(3)
    if os.environ.get("PLUGIN_GARBAGE"):
        print("not json")
        sys.exit(0)
    status = {"token": f"{os.environ.get('PLUGIN_PREFIX', 'token')}-{runs}"}
    if os.environ.get("PLUGIN_EXPIRES"):
        status["expirationTimestamp"] = os.environ["PLUGIN_EXPIRES"]
    if os.environ.get("PLUGIN_CERT"):
        status = {
            "clientCertificateData": Path(os.environ["PLUGIN_CERT"]).read_text(),
            "clientKeyData": Path(os.environ["PLUGIN_KEY"]).read_text(),
        }
    api = json.loads(os.environ["KUBERNETES_EXEC_INFO"])["apiVersion"]
    print(json.dumps({"apiVersion": api, "kind": "ExecCredential", "status": status}))
    """
)
EXPIRES = datetime(2033, 5, 18, 3, 33, 20, tzinfo=UTC)


def plugin_user(
    tmp_path: Path, api: str = "client.authentication.k8s.io/v1", **env: str
) -> dict[str, Any]:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    return {
        "exec": {
            "apiVersion": api,
            "command": sys.executable,
            "args": [str(script), str(tmp_path / "runs")],
            "env": [{"name": name, "value": value} for name, value in env.items()],
            "interactiveMode": "Never",
        }
    }


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def exec_info(tmp_path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((tmp_path / "runs.info").read_text())
    return info


@pytest.mark.parametrize(
    "api", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_an_exec_token_is_kept_until_it_nearly_expires(tmp_path: Path, api: str) -> None:
    user = plugin_user(tmp_path, api, PLUGIN_EXPIRES=EXPIRES.isoformat().replace("+00:00", "Z"))
    clock = Clock(EXPIRES.timestamp() - 3600)
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", user=user)), clock=clock)
    assert runs(tmp_path) == 1  # run at load: a failing plugin fails the start
    assert endpoint.authorization() == "Bearer token-1"
    clock.now = EXPIRES.timestamp() - config.EXEC_RENEW_BEFORE - 1
    assert endpoint.authorization() == "Bearer token-1"
    assert runs(tmp_path) == 1
    clock.now = EXPIRES.timestamp() - config.EXEC_RENEW_BEFORE
    assert endpoint.authorization() == "Bearer token-2"
    assert runs(tmp_path) == 2
    info = exec_info(tmp_path)
    assert info == {"apiVersion": api, "kind": "ExecCredential", "spec": {"interactive": False}}


def test_an_exec_token_without_expiry_is_kept(tmp_path: Path) -> None:
    user = plugin_user(tmp_path, PLUGIN_PREFIX="forever")
    clock = Clock()
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", user=user)), clock=clock)
    clock.now += 365 * 86400
    assert endpoint.authorization() == "Bearer forever-1"
    assert connection_info(endpoint).token == "forever-1"
    assert runs(tmp_path) == 1


def test_an_exec_plugin_is_given_the_cluster(tmp_path: Path, certificate: tuple[str, str]) -> None:
    user = plugin_user(tmp_path)
    user["exec"]["provideClusterInfo"] = True
    cluster = {
        "server": "https://k:6443",
        "certificate-authority-data": b64(certificate[0]),
        "extensions": [
            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "k8s"}}
        ],
    }
    load_kubeconfig(str(kubeconfig(tmp_path / "config", cluster=cluster, user=user)))
    assert exec_info(tmp_path)["spec"] == {
        "interactive": False,
        "cluster": {
            "server": "https://k:6443",
            "certificate-authority-data": b64(certificate[0]),
            "config": {"audience": "k8s"},
        },
    }


def test_an_exec_client_certificate(tmp_path: Path, certificate: tuple[str, str]) -> None:
    (tmp_path / "c.pem").write_text(certificate[0])
    (tmp_path / "k.pem").write_text(certificate[1])
    user = plugin_user(
        tmp_path, PLUGIN_CERT=str(tmp_path / "c.pem"), PLUGIN_KEY=str(tmp_path / "k.pem")
    )
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", user=user)))
    assert endpoint.certificate_file and endpoint.key_file
    assert Path(endpoint.certificate_file).read_text() == certificate[0]
    _private(endpoint.certificate_file)
    _private(endpoint.key_file)
    assert endpoint.authorization() is None
    assert isinstance(endpoint.ssl_context(), ssl.SSLContext)


def test_a_relative_exec_command_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    home = tmp_path / "kube"
    home.mkdir()
    wrapper = home / "plugin.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    user = plugin_user(tmp_path)
    user["exec"]["command"] = "./plugin.sh"
    endpoint = load_kubeconfig(str(kubeconfig(home / "config", user=user)))
    assert endpoint.authorization() == "Bearer token-1"


# --------------------------------------------------------------------- refused


def refused(
    tmp_path: Path,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    contexts: list[dict[str, Any]] | None = None,
    current_context: str = "main",
) -> str:
    path = kubeconfig(tmp_path / "config", cluster=cluster, user=user)
    if contexts is not None or current_context != "main":
        body = yaml.safe_load(path.read_text())
        body["contexts"] = contexts or body["contexts"]
        body["current-context"] = current_context
        path.write_text(yaml.safe_dump(body))
    with pytest.raises(KubeconfigError) as error:
        load_kubeconfig(str(path))
    message = str(error.value)
    assert "\n" not in message
    return message


SERVER = {"server": "https://k:6443"}


@pytest.mark.parametrize(
    ("where", "field", "value", "advice"),
    [
        ("user", "auth-provider", {"name": "oidc"}, "exec credential plugin"),
        ("cluster", "proxy-url", "http://proxy:3128", "without a proxy"),
        ("cluster", "tls-server-name", "kubernetes", "certificate names"),
        ("user", "as", "someone-else", "impersonation"),
        ("user", "as-groups", ["system:masters"], "impersonation"),
    ],
)
def test_unsupported_fields_are_refused(
    tmp_path: Path, where: str, field: str, value: Any, advice: str
) -> None:
    if where == "user":
        message = refused(tmp_path, user={"token": "t", field: value})
        assert message.startswith("kubeconfig user 'u' sets " + field)
    else:
        message = refused(tmp_path, cluster={**SERVER, field: value})
        assert message.startswith("kubeconfig cluster 'c' sets " + field)
    assert advice in message


def test_missing_context_cluster_and_user(tmp_path: Path) -> None:
    assert "sets no current-context" in refused(tmp_path, current_context="")
    assert "the context, 'elsewhere', is not in" in refused(tmp_path, current_context="elsewhere")
    contexts = [{"name": "main", "context": {"cluster": "gone", "user": "u"}}]
    assert "cluster of context 'main', 'gone', is not in" in refused(tmp_path, contexts=contexts)
    contexts = [{"name": "main", "context": {"cluster": "c", "user": "gone"}}]
    assert "user of context 'main', 'gone', is not in" in refused(tmp_path, contexts=contexts)
    path = kubeconfig(tmp_path / "fine", user={"token": "t"})
    with pytest.raises(KubeconfigError, match="the context, 'nope', is not in"):
        load_kubeconfig(str(path), context="nope")


def test_a_cluster_without_a_server(tmp_path: Path) -> None:
    assert "has no server" in refused(tmp_path, cluster={"insecure-skip-tls-verify": True})


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
        "- just\n- a list\n",
        "clusters: {not: a list}\n",
        "clusters: [{cluster: {server: https://k}}]\n",
        "{ not yaml",
    ],
)
def test_a_file_that_is_not_a_kubeconfig(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(KubeconfigError, match=str(path)):
        load_kubeconfig(str(path))


def test_missing_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "certificate-authority: " in refused(
        tmp_path, cluster={**SERVER, "certificate-authority": "nowhere.crt"}
    )
    assert "tokenFile: " in refused(tmp_path, user={"tokenFile": "no-token"})
    assert "client-certificate: " in refused(
        tmp_path, user={"client-certificate": "c.crt", "client-key": "c.key"}
    )
    with pytest.raises(KubeconfigError, match="cannot read the kubeconfig"):
        load_kubeconfig(str(tmp_path / "absent"))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    with pytest.raises(KubeconfigError, match="no file KUBECONFIG names exists"):
        load_endpoint()


def test_broken_credentials(tmp_path: Path, certificate: tuple[str, str]) -> None:
    (tmp_path / "token").write_text("  \n")
    assert "is empty" in refused(tmp_path, user={"tokenFile": str(tmp_path / "token")})
    assert "without its key" in refused(
        tmp_path, user={"client-certificate-data": b64(certificate[0])}
    )
    assert "not base64" in refused(tmp_path, cluster={**SERVER, "certificate-authority-data": "%%"})
    assert "keep one way to authenticate" in refused(
        tmp_path, user={"token": "t", "username": "alice", "password": "p"}
    )
    assert "keep one way to authenticate" in refused(
        tmp_path, user={"tokenFile": "t", **plugin_user(tmp_path)}
    )


def test_broken_exec_plugins(tmp_path: Path) -> None:
    user = plugin_user(tmp_path, api="client.authentication.k8s.io/v1alpha1")
    assert "v1alpha1' is not supported" in refused(tmp_path, user=user)

    user = plugin_user(tmp_path)
    user["exec"]["env"] = {"PLUGIN_PREFIX": "a mapping, not a list"}
    assert "env a list of names and values" in refused(tmp_path, user=user)

    user = plugin_user(tmp_path)
    user["exec"]["interactiveMode"] = "Always"
    assert "needs a terminal" in refused(tmp_path, user=user)

    message = refused(tmp_path, user=plugin_user(tmp_path, PLUGIN_FAIL="1"))
    assert "failed (exit 3): the identity provider said no" in message

    message = refused(tmp_path, user=plugin_user(tmp_path, PLUGIN_GARBAGE="1"))
    assert "did not print an ExecCredential of client.authentication.k8s.io/v1" in message

    message = refused(tmp_path, user=plugin_user(tmp_path, PLUGIN_EXPIRES="next tuesday"))
    assert "expirationTimestamp 'next tuesday' is not RFC 3339" in message

    user = plugin_user(tmp_path)
    user["exec"].update(command="no-such-plugin-anywhere", installHint="brew install it")
    message = refused(tmp_path, user=user)
    assert "cannot run no-such-plugin-anywhere" in message
    assert "brew install it" in message


def test_an_exec_plugin_failing_at_renewal_raises_the_same_error(tmp_path: Path) -> None:
    user = plugin_user(tmp_path, PLUGIN_EXPIRES=EXPIRES.isoformat())
    clock = Clock(EXPIRES.timestamp() - 3600)
    endpoint = load_kubeconfig(str(kubeconfig(tmp_path / "config", user=user)), clock=clock)
    (tmp_path / "plugin.py").write_text("import sys\nsys.exit('revoked')\n")
    clock.now = EXPIRES.timestamp()
    with pytest.raises(KubeconfigError, match="revoked"):
        endpoint.authorization()


# --------------------------------------------------------------------- the command


def test_run_reports_a_broken_kubeconfig_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubeconfig(tmp_path / "config", user={"auth-provider": {"name": "gcp"}})
    monkeypatch.setenv("KUBECONFIG", str(path))
    result = CliRunner().invoke(main, ["run", "--no-leader-election"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [
        "error: kubeconfig user 'u' sets auth-provider, which the operator does not support:"
        f" {config.UNSUPPORTED['auth-provider']}"
    ]


def test_the_run_path_does_not_import_the_official_client(tmp_path: Path) -> None:
    """With `kubernetes` unimportable, the operator's modules import and read a kubeconfig
    (kopf imports the package only when it can)."""
    path = kubeconfig(tmp_path / "config", user={"token": "t"})
    script = (
        "import sys\n"
        "sys.modules['kubernetes'] = None\n"
        "import baseline_operator.cli, baseline_operator.controller.main\n"
        "from baseline_operator.kube.config import connection_info, load_kubeconfig\n"
        f"print(connection_info(load_kubeconfig({str(path)!r})).token)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "t"
