"""What the image carries: the runtime dependencies, complete, and no demo emulator.

The `packaging` test installs the package the way the Dockerfile does (the files it
copies, `pip install .` without extras, not editable, into a fresh virtualenv) and runs
the CLI there as an unprivileged user with HOME=/tmp, as the Deployment does. Select it
alone with `pytest -m packaging`; deselect it with `-m "not packaging"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from baseline_operator.cli import DEMO_MODULES, main

REPO = Path(__file__).parents[2]
DOCKERFILE = REPO / "Dockerfile"
UNPRIVILEGED = 65532  # the Dockerfile's USER and the Deployment's runAsUser


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return match.group(0).lower().replace("_", "-")


# --- fast checks of the declarations --------------------------------------------------------


def test_the_emulator_is_the_demo_extra_and_not_a_runtime_dependency() -> None:
    project = _pyproject()["project"]
    runtime = {_requirement_name(item) for item in project["dependencies"]}
    extras = project["optional-dependencies"]
    demo = {_requirement_name(item) for item in extras["demo"]}
    assert "kmock" in demo
    assert "kmock" not in runtime
    assert "jsonpatch" not in runtime  # only the emulator imports it
    # kopf imports the official client's models whenever it is installed (kube/config.py)
    assert "kubernetes" not in runtime
    assert "kubernetes" in demo
    # the tests run the demo and the integration suite against the emulator
    assert "baseline-operator[demo]" in extras["test"]
    # what the CLI recognises as "the demo extra is missing" is what the extra installs
    assert {"kmock", "jsonpatch", "attrs", "kubernetes"} == set(DEMO_MODULES) == demo


def test_the_dockerfile_installs_the_package_without_extras() -> None:
    installs = re.findall(r"^RUN pip install (.*)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert installs == ["--no-cache-dir ."], installs


def test_demo_without_the_extra_exits_2_and_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "kmock", None)  # `import kmock` now fails
    for module in ("baseline_operator.demo.run", "baseline_operator.demo.emulator"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 2, result.output
    assert "pip install 'baseline-operator[demo]'" in result.output
    assert "kmock is not installed" in result.output


def test_demo_reraises_an_import_error_that_is_not_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "structlog", None)  # a runtime dependency gone
    monkeypatch.delitem(sys.modules, "baseline_operator.demo.run", raising=False)
    result = CliRunner().invoke(main, ["demo"])
    assert isinstance(result.exception, ModuleNotFoundError)
    assert result.exception.name == "structlog"


# --- the real install ------------------------------------------------------------------------


def _copied_by_the_dockerfile() -> list[str]:
    """The build context paths the build stage copies before `pip install .`."""
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *items, _destination = line.split()[1:]
            sources += items
    return sources


def _as_unprivileged(command: list[str]) -> list[str]:
    """The command run as uid/gid 65532 (no passwd entry needed) when the test runs as root."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [
            setpriv,
            f"--reuid={UNPRIVILEGED}",
            f"--regid={UNPRIVILEGED}",
            "--clear-groups",
            *command,
        ]
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "nobody", "--", *command]
    pytest.skip("running as root and neither setpriv nor runuser can drop privileges")


def _interpreter() -> str:
    """A Python >= 3.11 that the unprivileged user can run by path (a pyenv interpreter
    under root's home is not one): the test's own when it can, else the system's."""
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable))]
    candidates += [
        found
        for found in (
            shutil.which("python3.11", path="/usr/local/bin:/usr/bin"),
            shutil.which("python3", path="/usr/local/bin:/usr/bin"),
        )
        if found
    ]
    check = "import sys; assert sys.version_info >= (3, 11); import venv, ensurepip"
    for candidate in candidates:
        # Through a shell, so that the kernel resolves the path as the unprivileged user.
        probe = subprocess.run(
            _as_unprivileged(["/bin/sh", "-c", f'exec "$0" -c "{check}"', candidate]),
            capture_output=True,
            cwd="/",
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(reason=f"no Python >= 3.11 with venv an unprivileged user can run: {candidates}")


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh virtualenv holding the package as the image's build stage installs it."""
    # Not pytest's tmp_path: its parent is private to root, and the CLI runs as another user.
    root = Path(tempfile.mkdtemp(prefix="baseline-runtime-"))
    try:
        root.chmod(0o755)
        source = root / "src"
        source.mkdir()
        for item in _copied_by_the_dockerfile():
            origin = REPO / item
            if origin.is_dir():
                shutil.copytree(
                    origin,
                    source / item,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
                )
            else:
                shutil.copy2(origin, source / item)
        venv = root / "venv"
        subprocess.run([_interpreter(), "-m", "venv", str(venv)], check=True)
        # The Dockerfile's `pip install --no-cache-dir .`, less the flag that only keeps the
        # image small: the wheels pip already has make this test fast.
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "."],
            cwd=source,
            check=True,
            timeout=240,
        )
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(venv: Path, *command: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        _as_unprivileged(list(command)),
        env=environment,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.packaging
@pytest.mark.timeout(300)
def test_the_installed_cli_runs_as_an_unprivileged_user(installed: Path) -> None:
    assert "operator" in _copied_by_the_dockerfile()
    who = _run(installed, "id", "-u")
    assert who.returncode == 0 and who.stdout.strip() != "0", who

    top = _run(installed, "baseline-operator", "--help")
    assert top.returncode == 0, top.stderr
    for command in ("run", "crd", "render", "validate", "audit", "demo"):
        assert re.search(rf"^\s+{command}\s", top.stdout, re.MULTILINE), top.stdout

    run = _run(installed, "baseline-operator", "run", "--help")
    assert run.returncode == 0, run.stderr
    assert "--leader-election" in run.stdout

    crd = _run(installed, "baseline-operator", "crd")
    assert crd.returncode == 0, crd.stderr
    assert "kind: CustomResourceDefinition" in crd.stdout


@pytest.mark.packaging
@pytest.mark.timeout(300)
def test_every_runtime_module_imports_and_the_emulator_is_absent(installed: Path) -> None:
    """`run --help` imports nothing heavy; importing each module proves every dependency
    the operator reaches at runtime is installed (the demo aside: it is the extra)."""
    script = (
        "import importlib, pkgutil, baseline_operator\n"
        "names = [m.name for m in pkgutil.walk_packages(baseline_operator.__path__,"
        " 'baseline_operator.') if not m.name.startswith('baseline_operator.demo')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    imported = _run(installed, "python", "-c", script)
    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout.strip()) >= 20  # api, policy, kube, controller, offline, cli

    emulator = _run(installed, "python", "-c", "import kmock")
    assert emulator.returncode != 0
    assert "No module named 'kmock'" in emulator.stderr

    # nor the official client, which kopf would import whenever it is installed
    client = _run(installed, "python", "-c", "import kubernetes")
    assert client.returncode != 0
    assert "No module named 'kubernetes'" in client.stderr

    demo = _run(installed, "baseline-operator", "demo")
    assert demo.returncode == 2
    assert "pip install 'baseline-operator[demo]'" in demo.stderr
