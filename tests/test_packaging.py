"""What packaging/build.py delivers (SPEC section 13): wheel + sdist, the shiv executable,
the Debian package and its systemd unit. Outputs are cached in packaging/out/ between
runs (rebuilt when sources, hooks or packaging files change)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "packaging" / "out"
VERSION = subprocess.run([sys.executable, "-c", "import supervisor; print(supervisor.__version__)"],
                         capture_output=True, text=True, cwd=REPO).stdout.strip()

pytestmark = pytest.mark.timeout(600)  # a cold build makes a venv and downloads wheels


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    proc = subprocess.run([sys.executable, str(REPO / "packaging" / "build.py"),
                           "dist", "shiv", "deb"], capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-4000:]
    paths = [Path(line) for line in proc.stdout.split()]
    wheel, pyz, deb = paths
    sdist = OUT / "dist" / f"cc_task-{VERSION}.tar.gz"
    return {"wheel": wheel, "sdist": sdist, "pyz": pyz, "deb": deb}


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_wheel_and_sdist_carry_the_package(built: dict[str, Path]) -> None:
    assert built["wheel"].name == f"cc_task-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        entry_points = whl.read(f"cc_task-{VERSION}.dist-info/entry_points.txt").decode()
        metadata = whl.read(f"cc_task-{VERSION}.dist-info/METADATA").decode()
    assert "supervisor/cli.py" in names and "supervisor/task.py" in names
    assert "cc-task = supervisor.cli:main" in entry_points
    for dep in ("pydantic", "python-dotenv", "python-json-logger", "orjson"):
        assert f"Requires-Dist: {dep}" in metadata, dep
    assert "extra == \"metrics\"" in metadata
    with tarfile.open(built["sdist"]) as sdist:
        members = sdist.getnames()
    assert f"cc_task-{VERSION}/pyproject.toml" in members
    assert f"cc_task-{VERSION}/supervisor/cli.py" in members


def test_wheel_installs_into_a_fresh_venv(built: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(built["wheel"])],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    proc = subprocess.run([str(venv / "bin/cc-task"), "--version"], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert VERSION in proc.stdout
    run = subprocess.run([str(venv / "bin/cc-task"), "--log-format", "json", "--shutdown",
                          "none", "--command", "echo from-venv; exit 4"], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 4, run.stderr
    assert any(r.get("message") == "from-venv" for r in records(run.stdout))


def _bare_python(tmp_path: Path) -> list[str]:
    """A python3.11 that cannot import the dependencies: Debian's own if there is one,
    else this interpreter in isolated mode without site-packages."""
    for candidate in (["/usr/bin/python3.11", "-I"], ["/usr/bin/python3", "-I"]):
        exe = candidate[0]
        if not os.access(exe, os.X_OK):
            continue
        probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return candidate
    return [sys.executable, "-I", "-S"]


def test_shiv_executable_runs_a_task_without_installed_dependencies(
        built: dict[str, Path], tmp_path: Path) -> None:
    python = _bare_python(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "shiv")}
    bare = subprocess.run([*python, "-c", "import pydantic"], capture_output=True, env=env)
    assert bare.returncode != 0, f"{python} already has pydantic: the test would prove nothing"
    proc = subprocess.run([*python, str(built["pyz"]), "--log-format", "json", "--shutdown",
                           "none", "--command", "echo hi"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    recs = records(proc.stdout)
    assert [r["message"] for r in recs if r.get("source") == "command"] == ["hi"]
    (finished,) = [r for r in recs if r.get("event") == "task.finished"]
    assert finished["report"]["exit_status"] == 0
    failing = subprocess.run([*python, str(built["pyz"]), "--shutdown", "none",
                              "--command", "exit 6"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert failing.returncode == 6, failing.stderr
    assert built["pyz"].read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(built["pyz"], os.X_OK)


def _deb_listing(deb: Path) -> list[str]:
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[5].removeprefix(".") for line in out.splitlines()]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_deb_installs_launcher_dependencies_hooks_and_unit(built: dict[str, Path]) -> None:
    paths = _deb_listing(built["deb"])
    for required in ("/usr/bin/cc-task", "/opt/cc-task/", "/opt/cc-task/lib/supervisor/cli.py",
                     "/etc/cc-task/hooks/", "/etc/cc-task/hooks/pre-run.d/",
                     "/etc/cc-task/hooks/succeeded.d/", "/etc/cc-task/hooks/failed.d/",
                     "/lib/systemd/system/cc-task.service"):
        assert required in paths, required
    for dep in ("pydantic/", "pydantic_core/", "dotenv/", "pythonjsonlogger/", "orjson/",
                "prometheus_client/"):
        assert f"/opt/cc-task/lib/{dep}" in paths, dep
    assert any(p.startswith("/opt/cc-task/lib/pydantic_core/_pydantic_core.cpython-311")
               for p in paths)
    assert any(p.endswith(".cpython-311.pyc") for p in paths)  # precompiled
    stock = sorted(str(p.relative_to(REPO / "hooks")) for p in (REPO / "hooks").rglob("*")
                   if p.is_file())
    for hook in stock:
        assert f"/etc/cc-task/hooks/{hook}" in paths, hook
    fields = subprocess.run(["dpkg-deb", "-f", str(built["deb"]), "Package", "Version",
                             "Architecture", "Depends"], capture_output=True, text=True,
                            check=True).stdout
    assert "Package: cc-task" in fields and f"Version: {VERSION}-1" in fields
    assert "python3.11" in fields and "bash" in fields


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_deb_payload_runs_on_debian_python(built: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(built["deb"]), str(root)], check=True)
    launcher = (root / "usr/bin/cc-task").read_text()
    assert launcher.startswith("#!/usr/bin/python3.11 -I\n")
    assert 'sys.path.insert(0, "/opt/cc-task/lib")' in launcher
    python = _bare_python(tmp_path)
    # The launcher, with the extracted tree's path instead of /opt/cc-task/lib.
    script = launcher.replace("/opt/cc-task/lib", str(root / "opt/cc-task/lib"))
    proc = subprocess.run([*python, "-c", script, "--log-format", "json", "--shutdown", "none",
                           "--command", "echo from-deb"], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert any(r.get("message") == "from-deb" for r in records(proc.stdout))
    conffiles = subprocess.run(["dpkg-deb", "-I", str(built["deb"]), "conffiles"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert "/etc/cc-task/hooks/failed.d/50-diagnostics" in conffiles or not (
        REPO / "hooks/failed.d/50-diagnostics").exists()


def _unit(path: Path) -> dict[str, list[str]]:
    """The unit's settings, each key with all its values (systemd allows repeats)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def test_systemd_unit_runs_the_task_once_and_lets_cc_task_power_off() -> None:
    unit = _unit(REPO / "packaging" / "cc-task.service")
    assert unit["Service.Type"] == ["exec"]
    assert unit["Service.ExecStart"] == ["/usr/bin/cc-task run"]
    assert unit["Service.Restart"] == ["no"]
    assert unit["Service.StandardOutput"] == ["journal+console"]
    assert unit["Service.StandardError"] == ["journal+console"]
    assert unit["Service.TimeoutStartSec"] == ["infinity"]
    assert "CC_TASK_SHUTDOWN=poweroff" in unit["Service.Environment"]
    assert all(f.startswith("-") for f in unit["Service.EnvironmentFile"])  # optional
    assert unit["Install.WantedBy"] == ["multi-user.target"]
