"""Exit statuses of the launcher (SPEC section 7): bash's N for every N in 0..255, and
128+S when the task dies from signal S."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import Result, run_cc_task


def _exit_with(code: int) -> tuple[int, Result]:
    return code, run_cc_task(["--command", f"exit {code}"])


def test_every_exit_status_0_to_255() -> None:
    """One run per status, run concurrently: each is a whole cc-task process, so the
    cost is Python's start-up, which overlaps well (about 0.2 s of CPU each)."""
    workers = max(4, 2 * (os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_exit_with, range(256)))
    wrong: list[object] = []
    for code, result in results:
        rep = result.report()
        expected_result = "success" if code == 0 else "exit-code"
        if (result.returncode, rep["exit_status"], rep["exit_code"], rep["signal"],
                rep["result"]) != (code, code, code, None, expected_result):
            wrong.append((code, result.returncode, rep))
        finished = result.events("command.finished")
        if len(finished) != 1 or finished[0]["exit_code"] != code:
            wrong.append((code, finished))
    assert not wrong, wrong[:5]


def test_exit_status_beyond_255_wraps_as_in_bash() -> None:
    result = run_cc_task(["--command", "exit 257"])
    assert result.returncode == 1, result


SIGNALS = [signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGQUIT, signal.SIGALRM, signal.SIGABRT, signal.SIGSEGV,
           signal.SIGPIPE]


def _kill_self(sig: signal.Signals) -> str:
    """A command whose shell dies from ``sig`` (``ulimit -c 0``: no core file)."""
    name = sig.name.removeprefix("SIG")
    if sig == signal.SIGQUIT:
        # bash ignores SIGQUIT in itself, as a plain ``bash -c 'kill -QUIT $$'`` shows:
        # a shell that does not (dash, exec'd in bash's place) dies from it.
        return f"ulimit -c 0; echo before; exec sh -c 'kill -{name} $$; echo after'"
    return f"ulimit -c 0; echo before; kill -{name} $$; echo after"


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_signal_death_is_128_plus_n(sig: signal.Signals, tmp_path: Path) -> None:
    # The task dies from the signal whatever the launcher itself ignores or handles
    # (dispositions are reset to defaults in the child, SPEC section 5).
    result = run_cc_task(["--command", _kill_self(sig)], cwd=tmp_path)
    assert result.returncode == 128 + sig, result
    assert result.output_text() == b"before\n"
    rep = result.report()
    assert rep["exit_status"] == 128 + sig
    assert rep["result"] == "signal"
    assert rep["signal"] == sig.name
    assert rep["exit_code"] is None
    finished = result.events("command.finished")
    assert finished[0]["signal"] == sig.name and finished[0]["exit_code"] is None


def test_child_killed_by_signal_is_bash_exit_code() -> None:
    """bash reports a child's signal death as exit code 128+S: it is an exit code then,
    and the launcher passes it on as is."""
    result = run_cc_task(["--command", "bash -c 'kill -TERM $$'; exit $?"])
    assert result.returncode == 143, result
    rep = result.report()
    assert (rep["result"], rep["exit_code"], rep["signal"]) == ("exit-code", 143, None)


def test_last_command_of_a_pipeline_decides() -> None:
    result = run_cc_task(["--command", "kill -TERM $$ | true"])
    # The subshell that ran kill got its own $$ (bash's): bash itself died.
    assert result.returncode == 143, result


def test_command_not_found_is_127_from_bash() -> None:
    result = run_cc_task(["--command", "definitely-not-a-command-cct"])
    assert result.returncode == 127, result
    assert b"not found" in result.output_text(stream="stderr")
    assert result.report()["result"] == "exit-code"


def test_not_executable_is_126_from_bash(tmp_path: Path) -> None:
    script = os.path.join(tmp_path, "script.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho no\n")
    os.chmod(script, 0o644)
    result = run_cc_task(["--command", script])
    assert result.returncode == 126, result
