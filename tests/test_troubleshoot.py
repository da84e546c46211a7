"""``CC_TROUBLESHOOT`` (SPEC sections 2 and 12): debug-level events, and after a failed
run a ``shutdown.delayed`` event and a wait of ``CC_TASK_TROUBLESHOOT_DELAY`` before the
shutdown action; SIGTERM ends the wait; the exit status stays the task's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from helpers import Launches, Timeout


def troubleshoot(delay: str, **extra: str) -> dict[str, str]:
    return {"CC_TROUBLESHOOT": "true", "CC_TASK_TROUBLESHOOT_DELAY": delay, **extra}


def test_sigterm_ends_the_troubleshoot_wait(launch: Launches, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown-ran"
    run = launch(["--command", "echo failing; exit 3"], env=troubleshoot(
        "30s", CC_TASK_SHUTDOWN_COMMAND=f"touch '{marker}'"))
    delayed = run.wait_event("shutdown.delayed", timeout=10)
    assert delayed["delay_seconds"] == 30
    # The report comes first: someone troubleshooting can read it during the wait.
    order = [r.get("event") for r in run.records if r.get("event")]
    assert order.index("task.finished") < order.index("shutdown.delayed")
    assert not marker.exists(), "the shutdown action ran before the wait"
    with pytest.raises(Timeout):  # it really waits
        run.wait_for(lambda r: r.get("event") == "shutdown.started", timeout=1.0)
    assert run.proc.poll() is None
    sent = time.monotonic()
    run.send(signal.SIGTERM)
    status = run.finish(timeout=10)
    assert time.monotonic() - sent < 2.0, "SIGTERM did not end the wait promptly"
    assert status == 3, run.dump()  # the task's status, not 143
    assert run.events("shutdown.started"), run.dump()
    assert marker.exists(), "the shutdown action did not run after the wait"
    assert run.report["exit_status"] == 3


def test_short_delay_ends_by_itself(launch: Launches) -> None:
    run = launch(["--command", "exit 5"], env=troubleshoot("1s"))
    run.wait_event("shutdown.delayed")
    began = time.monotonic()
    status = run.finish(timeout=10)
    waited = time.monotonic() - began
    assert status == 5, run.dump()
    assert 0.8 <= waited < 3.0, f"waited {waited:.2f}s for a 1 s delay"


def test_no_delay_after_a_successful_task(launch: Launches) -> None:
    run = launch(["--command", "echo fine"], env=troubleshoot("30s"))
    status = run.finish(timeout=10)
    assert status == 0, run.dump()
    assert not run.events("shutdown.delayed")
    assert run.elapsed is not None and run.elapsed < 5


def test_no_delay_without_troubleshoot(launch: Launches) -> None:
    run = launch(["--command", "exit 1"], env={"CC_TASK_TROUBLESHOOT_DELAY": "30s"})
    assert run.finish(timeout=10) == 1, run.dump()
    assert not run.events("shutdown.delayed")


def test_delay_after_a_timeout(launch: Launches) -> None:
    """A timed-out run is a failed run: the delay applies and the status stays 124."""
    run = launch(["--timeout", "500ms", "--command", "exec sleep 30"],
                 env=troubleshoot("30s"))
    run.wait_event("shutdown.delayed", timeout=10)
    run.send(signal.SIGTERM)
    assert run.finish(timeout=10) == 124, run.dump()


def test_delay_after_a_configuration_error(launch: Launches) -> None:
    """Configuration errors are failed runs too (SPEC section 12)."""
    run = launch(["--command", "echo 'unterminated"], env=troubleshoot("30s"))
    run.wait_event("shutdown.delayed", timeout=10)
    run.send(signal.SIGTERM)
    assert run.finish(timeout=10) == 125, run.dump()
    assert run.events("config.invalid")


def test_debug_events_appear_with_troubleshoot(launch: Launches) -> None:
    """The same run (it leaves an orphan to reap) logs debug records only with
    CC_TROUBLESHOOT."""
    command = "(sleep 0.1 &); sleep 0.3; echo done"
    quiet = launch(["--command", command])
    assert quiet.finish() == 0, quiet.dump()
    assert not [r for r in quiet.records if r.get("level") == "debug"], quiet.dump()
    loud = launch(["--command", command], env=troubleshoot("30s"))
    assert loud.finish() == 0, loud.dump()
    debug = [r for r in loud.records if r.get("level") == "debug"]
    assert debug, loud.dump()
    assert all(r.get("source") == "supervisor" and r.get("event") for r in debug)
