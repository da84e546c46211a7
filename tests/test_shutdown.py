"""The shutdown step (SPEC section 12): last, after ``task.finished`` and the status file,
whatever happened before; ``CC_TASK_SHUTDOWN_COMMAND`` replaces the action; it never
changes the exit status.

Nothing here can power the machine off: the command form only runs a command; the
action tests run inside a PID namespace (where reboot(2) only ends the namespace) and/or
a mount namespace whose poweroff/systemctl binaries are fakes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ShutdownProbe
from helpers import CC_TASK, Launches, make_env, run_cc_task


def supervisor_events(records: list[dict[str, object]]) -> list[object]:
    return [r.get("event") for r in records if r.get("source") == "supervisor"]


@pytest.mark.parametrize(("command", "status"), [("echo done", 0), ("exit 3", 3),
                                                 ("kill -TERM $$", 143)])
def test_shutdown_command_runs_last_after_any_run(
        command: str, status: int, shutdown_probe: ShutdownProbe) -> None:
    result = run_cc_task(["--command", command], env=shutdown_probe.env)
    assert result.returncode == status, result
    assert shutdown_probe.lines() == ["report-written"]
    names = supervisor_events(result.records)
    assert names[-1] == "shutdown.started", names
    assert names.index("task.finished") < names.index("shutdown.started")
    started = result.events("shutdown.started")[0]
    assert started["command"] is True


def test_shutdown_command_after_configuration_error(shutdown_probe: ShutdownProbe,
                                                    marker: Path) -> None:
    result = run_cc_task([], env={**shutdown_probe.env,
                                  "CC_RUN_COMMAND": f"touch {marker}; if"})
    assert result.returncode == 125, result
    assert not marker.exists()
    assert shutdown_probe.lines() == ["report-written"]
    names = supervisor_events(result.records)
    assert names == ["config.invalid", "task.finished", "shutdown.started"], names


def test_failing_shutdown_command_does_not_change_the_status(tmp_path: Path) -> None:
    result = run_cc_task(["--command", "exit 5"],
                         env={"CC_TASK_SHUTDOWN_COMMAND": f"touch {tmp_path}/ran; exit 9"})
    assert result.returncode == 5, result
    assert (tmp_path / "ran").exists()


def test_shutdown_command_gets_the_launcher_environment(tmp_path: Path) -> None:
    """It runs from the launcher, after the task: variables of env files reach it too."""
    (tmp_path / "app.env").write_text("FROM_FILE=file-value\n")
    out = tmp_path / "seen"
    result = run_cc_task(["--command", "true", "--env-file", str(tmp_path / "app.env")],
                         env={"CC_TASK_SHUTDOWN_COMMAND": f'echo "$PROCESS_VALUE" > {out}',
                              "PROCESS_VALUE": "process-value"})
    assert result.returncode == 0, result
    assert out.read_text() == "process-value\n"


def test_shutdown_command_output_does_not_break_the_json_stream(tmp_path: Path) -> None:
    """SPEC section 8: in json format every line of stdout is a JSON record. The shutdown
    command's own output must not be written raw in between (run_cc_task parses every
    stdout line strictly)."""
    result = run_cc_task(["--command", "true"],
                         env={"CC_TASK_SHUTDOWN_COMMAND": "echo bye; echo bye-err >&2"})
    assert result.returncode == 0, result
    assert result.events("shutdown.started")


def test_no_shutdown_event_when_the_action_is_none() -> None:
    cases: list[dict[str, str | None]] = [
        {"CC_TASK_SHUTDOWN": "none"}, {"CC_TASK_SHUTDOWN": "auto"}, {"CC_TASK_SHUTDOWN": None},
        {"CC_TASK_SHUTDOWN": "", "CC_TASK_SHUTDOWN_COMMAND": " "},
    ]
    for env in cases:
        result = run_cc_task(["--command", "true"], env=env)
        assert result.returncode == 0, (env, result)
        assert not result.events("shutdown.started"), (env, result.records)


def test_shutdown_option_overrides_the_variable(tmp_path: Path) -> None:
    result = run_cc_task(["check", "--command", "true", "--shutdown", "halt"],
                         env={"CC_TASK_SHUTDOWN": "reboot"})
    assert json.loads(result.stdout)["CC_TASK_SHUTDOWN"] == "halt"


# -- the actions themselves, in namespaces -----------------------------------------------

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
"""
REAL_TOOLS = ("poweroff", "reboot", "halt", "shutdown", "systemctl", "telinit")


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
                            "mount --bind /bin/true /bin/true && echo $$"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0 and probe.stdout.strip() == b"1"


needs_namespaces = pytest.mark.skipif(not _namespaces_work(),
                                      reason="needs root and unshare --mount --pid")


def _sandboxed(tmp_path: Path, inner: str, env: dict[str, str | None]) -> tuple[
        subprocess.CompletedProcess[bytes], list[str]]:
    """Run ``inner`` (a shell command line) in new mount and PID namespaces where every
    real shutdown tool is bind-mounted over by a fake that logs its call, and where the
    fakes come first on PATH too."""
    fakes = tmp_path / "fakebin"
    fakes.mkdir()
    log = tmp_path / "calls.log"
    for tool in REAL_TOOLS:
        (fakes / tool).write_text(FAKE.format(log=log))
        (fakes / tool).chmod(0o755)
    binds = []
    for folder in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in REAL_TOOLS:
            path = os.path.join(folder, tool)
            if os.path.lexists(path):
                binds.append(f"mount --bind {fakes / tool} {os.path.realpath(path)} || exit 99")
    full_env = make_env("shutdown-ns", env)
    full_env["PATH"] = f"{fakes}:{full_env['PATH']}"
    script = "; ".join([*binds, inner])
    proc = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc",
                           "sh", "-c", script], env=full_env, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 99, proc
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@needs_namespaces
@pytest.mark.parametrize("action", ["poweroff", "reboot", "halt"])
def test_action_when_not_pid1_runs_the_system_tool(tmp_path: Path, action: str) -> None:
    # ``sh`` is PID 1 of the namespace and cc-task its child: the non-PID-1 path.
    proc, calls = _sandboxed(tmp_path, f"{CC_TASK} --command 'exit 6'; echo status=$?",
                             {"CC_TASK_SHUTDOWN": action})
    assert proc.stdout.rstrip().endswith(b"status=6"), proc
    assert len(calls) == 1, calls
    assert calls[0] in (f"systemctl {action}", f"{action} "), calls


@needs_namespaces
@pytest.mark.parametrize(("action", "death"), [("poweroff", 2), ("halt", 2), ("reboot", 1)])
def test_action_as_pid1_calls_reboot_2(tmp_path: Path, action: str, death: int) -> None:
    """As PID 1, sync() then reboot(2): in a PID namespace the kernel ends the namespace
    by killing its init with SIGINT (power off, halt) or SIGHUP (restart)."""
    proc, calls = _sandboxed(tmp_path, f"exec {CC_TASK} --command 'echo hi'",
                             {"CC_TASK_SHUTDOWN": action})
    assert calls == [], "PID 1 must call reboot(2), not a tool"
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    started = [r for r in records if r.get("event") == "shutdown.started"]
    assert started and started[0]["action"] == action, records
    # unshare passes the death on by dying from the same signal.
    assert proc.returncode in (-death, 128 + death), proc


@needs_namespaces
def test_auto_as_pid1_is_poweroff(tmp_path: Path) -> None:
    proc, calls = _sandboxed(tmp_path, f"exec {CC_TASK} --command true",
                             {"CC_TASK_SHUTDOWN": "auto"})
    assert calls == []
    assert proc.returncode in (-2, 130), proc


@needs_namespaces
def test_shutdown_command_replaces_the_action_even_as_pid1(tmp_path: Path) -> None:
    mark = tmp_path / "replaced"
    proc, calls = _sandboxed(tmp_path, f"exec {CC_TASK} --command 'exit 4'",
                             {"CC_TASK_SHUTDOWN": "poweroff",
                              "CC_TASK_SHUTDOWN_COMMAND": f"touch {mark}"})
    assert mark.exists()
    assert calls == []
    assert proc.returncode == 4, proc


def test_shutdown_command_runs_after_the_launcher_is_terminated(
        launch: Launches, shutdown_probe: ShutdownProbe) -> None:
    """SIGTERM to the launcher reaches the task; the report and shutdown still follow."""
    run = launch(["--command", "echo ready; sleep 60 & wait"], env=shutdown_probe.env)
    run.wait_line("ready", timeout=20)
    run.send(15)
    run.finish(timeout=30)
    assert run.returncode == 143, run.records
    assert run.wait_event("shutdown.started", timeout=20)
    assert shutdown_probe.lines() == ["report-written"]
    assert json.loads(shutdown_probe.status_file.read_bytes())["exit_status"] == 143
