"""cc-task as PID 1 of a PID namespace (SPEC section 5): it reaps every zombie, keeps the
task's status, handles signals explicitly (the kernel applies no default action to PID
1) and never exits before its shutdown action.

Safety: every launch has ``CC_TASK_SHUTDOWN=none`` (``helpers.DEFAULT_ENV``) or a
``CC_TASK_SHUTDOWN_COMMAND``; as PID 1 ``auto`` would mean ``reboot(2)``, which in a PID
namespace only ends the namespace, but no test relies on that.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import Launch, Launches, alive, children_of, cmdline, poll, sigchild

NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc"]


def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run([*NAMESPACE, "true"], capture_output=True, timeout=10)
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(),
                                reason="cannot create a PID namespace here")


def host_pid(run: Launch) -> int:
    """The pid of the namespace's PID 1 (cc-task) as the host sees it: unshare's child."""
    found: list[int] = []

    def ready() -> bool:
        found[:] = children_of(run.proc.pid)
        return bool(found)
    assert poll(ready, 10), "unshare has no child"
    return found[0]


# Double-forks 1000 short-lived processes: each `sleep` is orphaned (its subshell exits
# at once, long before the sleep ends; with a `true` the subshell often reaps it first)
# and re-parented to PID 1. Then a bounded poll for zombies inside the
# namespace (only the namespace's processes are in its /proc).
ORPHANS = r"""
echo "pid1 $(tr '\0' ' ' < /proc/1/cmdline)"
for i in $(seq 1000); do (sleep 0.2 &); done
for j in $(seq 250); do
  z=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l)
  [ "$z" -eq 0 ] && break
  sleep 0.02
done
echo "zombies $z"
exit 7
"""


def test_pid1_reaps_1000_orphans_and_keeps_the_task_status(launch: Launches) -> None:
    run = launch(["--command", ORPHANS], prefix=NAMESPACE,
                 env={"CC_TROUBLESHOOT": "true", "CC_TASK_TROUBLESHOOT_DELAY": "0"})
    status = run.finish(timeout=90)
    assert status == 7, run.dump()
    lines = run.lines()
    pid1 = next(line for line in lines if line.startswith("pid1 "))
    assert "cc-task" in pid1 or "supervisor" in pid1, f"PID 1 is not cc-task: {pid1}"
    assert "zombies 0" in lines, run.dump()
    rep = run.report
    assert rep["exit_status"] == 7 and rep["exit_code"] == 7 and rep["result"] == "exit-code"
    reaped = run.events("zombie.reaped")
    assert len(reaped) >= 1000, f"only {len(reaped)} zombie.reaped events"
    # The task's own pid is never reported as an orphan: its status was not stolen.
    assert rep["pid"] not in {r["pid"] for r in reaped}
    # Shutdown none is respected as PID 1: no action, and the namespace was not rebooted
    # (reboot(2) would have ended it with a signal, not status 7).
    assert not run.events("shutdown.started")


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_pid1_exits_with_the_task_status(launch: Launches, code: int) -> None:
    run = launch(["--command", f"(sleep 0.1 &); exit {code}"], prefix=NAMESPACE)
    assert run.finish(timeout=20) == code, run.dump()
    assert run.report["exit_status"] == code


def test_pid1_forwards_sigterm_sent_from_outside(launch: Launches) -> None:
    run = launch(["--kill-grace", "10s", "--command",
                  sigchild("--raise-on", "TERM") + "; echo not reached"],
                 prefix=NAMESPACE)
    run.wait_ready()
    pid = host_pid(run)
    assert "cc-task" in cmdline(pid) or "supervisor" in cmdline(pid)
    os.kill(pid, signal.SIGTERM)
    run.wait_line("signal SIGTERM")
    status = run.finish(timeout=20)
    received = run.events("signal.received")
    assert received and received[0]["signal"] == "SIGTERM", run.dump()
    assert run.events("signal.forwarded")
    rep = run.report
    assert status == rep["exit_status"], run.dump()
    # bash did not exec; it died from the group's SIGTERM too, or saw the child die.
    assert status == 143, run.dump()


def test_pid1_handles_sigint_and_sighup_explicitly(launch: Launches) -> None:
    """Signals the kernel would drop for PID 1 without a handler reach the task."""
    run = launch(["--kill-grace", "10s", "--command", sigchild("--exit-on", "INT")],
                 prefix=NAMESPACE)
    run.wait_ready()
    pid = host_pid(run)
    os.kill(pid, signal.SIGHUP)
    run.wait_line("signal SIGHUP")
    os.kill(pid, signal.SIGUSR2)
    run.wait_line("signal SIGUSR2")
    os.kill(pid, signal.SIGINT)
    run.wait_line("signal SIGINT")
    assert run.finish(timeout=20) == 130, run.dump()


def test_pid1_runs_the_shutdown_command_before_it_exits(launch: Launches,
                                                        tmp_path: Path) -> None:
    marker = tmp_path / "shutdown-ran"
    run = launch(["--command", "exit 3"], prefix=NAMESPACE, env={
        "CC_TASK_SHUTDOWN": "poweroff",
        "CC_TASK_SHUTDOWN_COMMAND": f"sleep 0.3; touch '{marker}'",
    })
    assert run.finish(timeout=20) == 3, run.dump()
    # unshare returned only after PID 1 exited, and PID 1 only after the action ended.
    assert marker.exists(), run.dump()
    assert run.events("shutdown.started")


def test_pid1_leftovers_are_gone(launch: Launches) -> None:
    """As PID 1, a double fork that ignores SIGTERM is still killed after the grace."""
    command = ('( (trap "" TERM; echo df $BASHPID; exec sleep 1004) & ) & '
               "sleep 0.3; exit 0")
    run = launch(["--kill-grace", "1s", "--command", command], prefix=NAMESPACE)
    status = run.finish(timeout=20)
    assert status == 0, run.dump()
    assert run.events("leftovers.killed"), run.dump()
    assert run.events("command.killed"), run.dump()
    # The namespace is gone with its PID 1; nothing named sleep 1004 is left on the host.
    assert poll(lambda: not any(alive(p, "sleep 1004")
                                      for p in map(int, filter(str.isdigit,
                                                               os.listdir("/proc")))), 3)
