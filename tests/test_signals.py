"""Signals sent to cc-task reach the task's process group (SPEC section 6).

The helper child (``sigchild.py``) prints ``ready <pid>`` then ``signal <NAME>`` for each
signal it gets: every test waits for ``ready`` before sending, and for the child's own
line afterwards, so nothing depends on timing.
"""

from __future__ import annotations

import signal
import time

import pytest
from helpers import PYTHON, Launches, Timeout, alive, sigchild

FORWARDED = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"]


@pytest.mark.parametrize("name", FORWARDED)
def test_signal_reaches_a_task_that_bash_exec_d(launch: Launches, name: str) -> None:
    """``bash -c 'python3 sigchild.py'`` execs: the child is the group leader."""
    signum = int(signal.Signals[name])
    run = launch(["--kill-grace", "10s", "--command", sigchild("--exit-on", name)])
    child = run.wait_ready()
    started = run.wait_event("command.started")
    assert started["pid"] == child  # bash exec'd the helper
    run.send(signum)
    run.wait_line(f"signal {name}")
    status = run.finish()
    assert status == 128 + signum, run.dump()
    rep = run.report
    assert rep["exit_status"] == status
    assert rep["exit_code"] == 128 + signum  # the helper exited with 128+N itself
    assert rep["killed"] is False
    received = run.events("signal.received")
    forwarded = run.events("signal.forwarded")
    assert [r["signal"] for r in received] == [name], run.dump()
    assert [r["signal"] for r in forwarded] == [name], run.dump()
    assert forwarded[0]["pgid"] == started["pid"]


@pytest.mark.parametrize("name", FORWARDED)
def test_signal_reaches_the_child_of_a_bash_that_did_not_exec(
        launch: Launches, name: str) -> None:
    """``python3 sigchild.py; echo done``: bash stays the parent; the signal goes to the
    whole group, so the helper itself gets it."""
    signum = int(signal.Signals[name])
    run = launch(["--kill-grace", "10s", "--command",
                  sigchild("--exit-on", name) + "; echo done"])
    child = run.wait_ready()
    started = run.wait_event("command.started")
    assert started["pid"] != child  # bash did not exec
    run.send(signum)
    run.wait_line(f"signal {name}")
    status = run.finish()
    rep = run.report
    assert rep["exit_status"] == status, run.dump()
    assert not alive(child, "sigchild"), "the helper outlived the run"
    assert [r["signal"] for r in run.events("signal.forwarded")][:1] == [name]
    assert [r["signal"] for r in run.events("signal.received")][:1] == [name]


def test_raised_signal_gives_128_plus_n(launch: Launches) -> None:
    """A task that dies *from* the forwarded signal: 128+N and the report names it."""
    run = launch(["--kill-grace", "10s", "--command", sigchild("--raise-on", "TERM")])
    run.wait_ready()
    run.send(signal.SIGTERM)
    assert run.finish() == 143, run.dump()
    rep = run.report
    assert rep["result"] == "signal"
    assert rep["signal"] == "SIGTERM"
    assert rep["exit_code"] is None
    assert rep["killed"] is False


def test_non_terminating_signals_start_no_grace(launch: Launches) -> None:
    """USR1 twice: forwarded twice, nothing killed; the task then ends by itself."""
    run = launch(["--kill-grace", "1s", "--command", sigchild("--exit-on", "TERM")])
    child = run.wait_ready()
    run.send(signal.SIGUSR1)
    run.wait_line("signal SIGUSR1")
    run.send(signal.SIGUSR1)
    run.wait_for(lambda r: len([x for x in run.records
                                if x.get("message") == "signal SIGUSR1"]) >= 2,
                 what="the second SIGUSR1 line")
    # Well past the 1 s grace: a USR1 must not have started it.
    with pytest.raises(Timeout):
        run.wait_event("command.killed", timeout=1.5)
    assert alive(child, "sigchild"), run.dump()
    run.send(signal.SIGTERM)
    assert run.finish() == 143, run.dump()
    assert run.report["killed"] is False


def test_terminating_signal_starts_the_grace(launch: Launches) -> None:
    """A TERM-ignoring task gets SIGKILL one grace after the forwarded SIGTERM."""
    run = launch(["--kill-grace", "1s", "--command", sigchild()])
    run.wait_ready()
    run.send(signal.SIGTERM)
    run.wait_line("signal SIGTERM")
    sent = time.monotonic()
    run.wait_event("command.killed", timeout=5)
    assert 0.7 <= time.monotonic() - sent < 3.0
    status = run.finish()
    assert status == 137, run.dump()
    rep = run.report
    assert rep["killed"] is True
    assert rep["signal"] == "SIGKILL"
    assert rep["result"] == "signal"


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_double_signal_kills_at_once(launch: Launches, name: str) -> None:
    """The double Ctrl-C: the first SIGINT is forwarded and starts a 30 s grace; the
    second kills at once. The task died from SIGKILL: 137 (SPEC section 7)."""
    signum = signal.Signals[name]
    run = launch(["--kill-grace", "30s", "--command", sigchild()])
    child = run.wait_ready()
    run.send(signum)
    run.wait_line(f"signal {name}")
    run.wait_event("signal.forwarded", signal=name)
    assert alive(child, "sigchild")
    assert not run.events("command.killed")
    second = time.monotonic()
    run.send(signum)
    status = run.finish(timeout=10)
    assert time.monotonic() - second < 2.0, f"the second {name} did not kill at once"
    rep = run.report
    assert rep["killed"] is True, run.dump()
    assert rep["signal"] == "SIGKILL"
    assert rep["result"] == "signal"
    assert status == rep["exit_status"] == 137
    assert len(run.events("command.killed")) == 1
    # Only the first one was forwarded; the helper printed it once.
    assert [r["signal"] for r in run.events("signal.forwarded")] == [name]
    assert run.lines().count(f"signal {name}") == 1
    received = run.events("signal.received")
    assert {r["signal"] for r in received} == {name} and len(received) >= 2, run.dump()
    assert not alive(child, "sigchild")


def test_a_different_second_signal_is_forwarded_not_fatal(launch: Launches) -> None:
    """SIGINT then SIGTERM: both forwarded; the kill waits for the grace."""
    run = launch(["--kill-grace", "2s", "--command", sigchild()])
    run.wait_ready()
    run.send(signal.SIGINT)
    run.wait_line("signal SIGINT")
    first = time.monotonic()
    run.send(signal.SIGTERM)
    run.wait_line("signal SIGTERM")
    run.wait_event("command.killed", timeout=6)
    assert time.monotonic() - first >= 1.5, "SIGTERM after SIGINT killed at once"
    assert run.finish() == 137, run.dump()
    assert [r["signal"] for r in run.events("signal.forwarded")] == ["SIGINT", "SIGTERM"]


def test_signal_names_in_events(launch: Launches) -> None:
    """``signal.received`` comes before ``signal.forwarded`` and both name the signal."""
    run = launch(["--command", sigchild("--exit-on", "HUP")])
    run.wait_ready()
    run.send(signal.SIGHUP)
    assert run.finish() == 128 + signal.SIGHUP, run.dump()
    events = [(r["event"], r.get("signal")) for r in run.records
              if r.get("event", "").startswith("signal.")]
    assert events == [("signal.received", "SIGHUP"), ("signal.forwarded", "SIGHUP")]
    received = run.records.index(run.events("signal.received")[0])
    line = next(i for i, r in enumerate(run.records) if r.get("message") == "signal SIGHUP")
    assert received < line


# Starts cc-task the way a careless parent would: forwarded signals ignored (as `nohup`
# or a non-interactive shell's `&` leave them), SIGTERM and SIGINT blocked.
HOSTILE_PARENT = [PYTHON, "-c", (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"), ]


def test_task_starts_with_default_signal_mask_and_dispositions(
        launch: Launches) -> None:
    run = launch(["--command", "exec grep -E '^Sig(Blk|Ign):' /proc/self/status"],
                 prefix=HOSTILE_PARENT)
    assert run.finish() == 0, run.dump()
    assert sorted(run.lines()) == ["SigBlk:\t0000000000000000",
                                   "SigIgn:\t0000000000000000"], run.dump()


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_forwarding_works_under_a_hostile_parent(launch: Launches, name: str) -> None:
    """Inherited SIG_IGN and blocked signals neither stop the launcher from forwarding
    nor the task from dying of the signal's default action."""
    signum = signal.Signals[name]
    run = launch(["--kill-grace", "10s", "--command", "echo go; exec sleep 30"],
                 prefix=HOSTILE_PARENT)
    run.wait_line("go")
    run.send(signum)
    assert run.finish(timeout=10) == 128 + signum, run.dump()
    assert run.report["signal"] == name
    assert run.report["killed"] is False
