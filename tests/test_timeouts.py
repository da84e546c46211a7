"""Overall and idle timeouts, the stop signal, the grace and SIGKILL (SPEC sections 6, 7).

Real cc-task, real bash, real processes: every wait is on a record or a bounded poll.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import Launches, alive, poll, sigchild


def test_timeout_stops_a_normal_task_with_124(launch: Launches) -> None:
    run = launch(["--timeout", "1s", "--kill-grace", "10s", "--command",
                  sigchild("--raise-on", "TERM")])
    run.wait_ready()
    status = run.finish()
    assert status == 124, run.dump()
    rep = run.report
    assert rep["result"] == "timeout"
    assert rep["exit_status"] == 124
    assert rep["timed_out"] is True
    assert rep["killed"] is False  # it died on SIGTERM: no SIGKILL was needed
    assert rep["signal"] == "SIGTERM"
    assert "signal SIGTERM" in run.lines()
    reached = run.events("timeout.reached")
    assert len(reached) == 1 and reached[0]["kind"] == "overall"
    assert not run.events("command.killed")
    # It stopped after the second and long before the grace.
    assert 0.9 <= rep["duration_seconds"] < 5, rep


def test_timeout_with_a_term_ignoring_task_needs_sigkill(launch: Launches) -> None:
    run = launch(["--timeout", "1s", "--kill-grace", "1s", "--command", sigchild()])
    run.wait_ready()
    reached = run.wait_event("timeout.reached", timeout=5)
    t_reached = time.monotonic()
    run.wait_line("signal SIGTERM", timeout=5)
    killed = run.wait_event("command.killed", timeout=5)
    t_killed = time.monotonic()
    status = run.finish()
    assert status == 124, run.dump()
    rep = run.report
    assert rep["result"] == "timeout"
    assert rep["timed_out"] is True
    assert rep["killed"] is True
    assert rep["signal"] == "SIGKILL"
    assert reached["kind"] == "overall"
    assert killed["signal"] == "SIGKILL"
    # SIGKILL after the grace of 1 s, not before, and not much after.
    assert 0.8 <= t_killed - t_reached < 3.0
    # The stop signal is followed by SIGCONT, so that a stopped task can act on it.
    assert "signal SIGCONT" in run.lines()


def test_output_written_while_stopping_is_kept(launch: Launches) -> None:
    command = ("trap 'echo stopping now; echo cleanup on stderr >&2; exit 3' TERM; "
               "echo started; while :; do sleep 0.05; done")
    run = launch(["--timeout", "1s", "--kill-grace", "10s", "--command", command])
    status = run.finish()
    assert status == 124, run.dump()
    assert "started" in run.lines("stdout")
    assert "stopping now" in run.lines("stdout")
    assert "cleanup on stderr" in run.lines("stderr")
    rep = run.report
    assert rep["exit_code"] == 3  # bash's own code, while the launcher says 124
    assert rep["killed"] is False
    assert "stopping now" in rep["tail"]


def test_stop_is_polled_not_slept(launch: Launches) -> None:
    """Grace 20 s, the task dies at once on SIGTERM: the whole run takes well under 2 s
    beyond the timeout."""
    started = time.monotonic()
    run = launch(["--timeout", "500ms", "--kill-grace", "20s", "--command",
                  "echo go; exec sleep 30"])
    status = run.finish(timeout=25)
    wall = time.monotonic() - started
    assert status == 124, run.dump()
    assert run.report["killed"] is False
    assert wall < 2.0, f"the run took {wall:.2f}s: the launcher slept out the grace?"


def test_stop_is_polled_after_a_forwarded_sigterm(launch: Launches) -> None:
    run = launch(["--kill-grace", "20s", "--command", sigchild("--raise-on", "TERM")])
    run.wait_ready()
    sent = time.monotonic()
    run.send(signal.SIGTERM)
    status = run.finish(timeout=25)
    assert time.monotonic() - sent < 2.0
    assert status == 143, run.dump()


def test_idle_timeout(launch: Launches) -> None:
    run = launch(["--idle-timeout", "1s", "--kill-grace", "5s", "--command",
                  "echo one; echo two; exec sleep 30"])
    status = run.finish()
    assert status == 124, run.dump()
    rep = run.report
    assert rep["result"] == "idle-timeout"
    assert rep["timed_out"] is True
    reached = run.events("timeout.reached")
    assert len(reached) == 1 and reached[0]["kind"] == "idle", run.dump()
    assert run.lines() == ["one", "two"]
    assert 0.9 <= rep["duration_seconds"] < 4


def test_output_resets_the_idle_timer(launch: Launches) -> None:
    """Output every 0.2 s for 2 s with an idle timeout of 1 s: never idle, succeeds."""
    run = launch(["--idle-timeout", "1s", "--command",
                  "for i in $(seq 10); do echo tick $i; sleep 0.2; done"])
    status = run.finish()
    assert status == 0, run.dump()
    assert run.report["result"] == "success"
    assert run.report["timed_out"] is False
    assert not run.events("timeout.reached")
    assert run.lines() == [f"tick {i}" for i in range(1, 11)]


def test_stderr_output_also_resets_the_idle_timer(launch: Launches) -> None:
    run = launch(["--idle-timeout", "1s", "--command",
                  "for i in $(seq 8); do echo tick $i >&2; sleep 0.25; done"])
    assert run.finish() == 0, run.dump()


@pytest.mark.parametrize("stop", ["SIGINT", "USR1", "10"])
def test_stop_signal_is_the_one_sent(launch: Launches, stop: str) -> None:
    expected = {"SIGINT": "SIGINT", "USR1": "SIGUSR1", "10": "SIGUSR1"}[stop]
    run = launch(["--timeout", "1s", "--kill-grace", "10s", "--command",
                  sigchild("--exit-on", expected)],
                 env={"CC_TASK_STOP_SIGNAL": stop})
    run.wait_ready()
    status = run.finish()
    assert status == 124, run.dump()
    received = [line for line in run.lines() if line.startswith("signal ")]
    assert received and received[0] == f"signal {expected}", run.dump()
    assert "signal SIGTERM" not in received
    assert run.report["killed"] is False
    reached = run.events("timeout.reached")
    assert reached and expected in reached[0]["message"]


def test_timeout_reaches_the_children_of_a_bash_that_did_not_exec(
        launch: Launches) -> None:
    """The stop signal goes to the process group, not only to bash."""
    run = launch(["--timeout", "1s", "--kill-grace", "10s", "--command",
                  sigchild("--exit-on", "TERM") + "; echo after"])
    run.wait_ready()
    status = run.finish()
    assert status == 124, run.dump()
    assert "signal SIGTERM" in run.lines()
    assert run.report["killed"] is False


def test_timeout_bounds_a_task_that_stops_itself_on_sigcont(
        launch: Launches) -> None:
    """A task stopped with SIGSTOP still gets the stop signal acted on (SIGCONT follows)."""
    run = launch(["--timeout", "1s", "--kill-grace", "10s", "--command",
                  "trap 'echo got term; exit 5' TERM; echo go; kill -STOP $$; echo resumed"])
    status = run.finish()
    assert status == 124, run.dump()
    assert "got term" in run.lines(), run.dump()
    assert run.report["killed"] is False


def test_timeout_kills_a_term_ignoring_grandchild_after_bash_died(
        launch: Launches) -> None:
    """bash dies on the stop signal; its TERM-ignoring child is a leftover, killed after
    the grace; the status is still 124."""
    command = ("(trap '' TERM; echo child $BASHPID; exec sleep 1006) & "
               "exec sleep 30")
    run = launch(["--timeout", "1s", "--kill-grace", "1s", "--command", command])
    child = int(run.wait_line("child ", exact=False)["message"].split()[1])
    launch.track(child, "sleep 1006")
    status = run.finish(timeout=20)
    assert status == 124, run.dump()
    rep = run.report
    assert rep["result"] == "timeout" and rep["timed_out"] is True
    assert rep["killed"] is True
    assert run.events("command.killed")
    assert poll(lambda: not alive(child, "sleep 1006"), 3)
    assert run.elapsed is not None and run.elapsed < 6


@pytest.mark.parametrize("option", ["--timeout", "--idle-timeout"])
def test_a_deadline_after_bash_exited_does_not_turn_the_run_into_a_timeout(
        launch: Launches, option: str, tmp_path: Path) -> None:
    """The task is over when bash exits (SPEC section 5): bash exits 0 at once, leaving a
    TERM-ignoring process whose grace (3 s) outlasts the deadline (1 s). The leftover is
    killed after the grace, but the status is bash's 0 (SPEC section 7), not 124."""
    command = ('(trap "" TERM; touch "$D/trapped"; exec sleep 1008) & '
               'while [ ! -e "$D/trapped" ]; do sleep 0.01; done; echo bash leaves; exit 0')
    run = launch([option, "1s", "--kill-grace", "3s", "--command", command],
                 env={"D": str(tmp_path)})
    status = run.finish(timeout=20)
    rep = run.report
    assert run.events("leftovers.killed"), run.dump()
    assert not run.events("timeout.reached"), run.dump()
    assert status == 0, run.dump()
    assert rep["result"] == "success" and rep["timed_out"] is False


def test_output_without_newline_also_resets_the_idle_timer(launch: Launches) -> None:
    run = launch(["--idle-timeout", "1s", "--command",
                  "for i in $(seq 8); do printf .; sleep 0.25; done"])
    assert run.finish() == 0, run.dump()
    assert run.lines() == ["........"]
