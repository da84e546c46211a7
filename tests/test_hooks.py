"""Hooks with a real cc-task and real processes (SPEC sections 7, 9, 10 and 12, issue 4).

The hooks are given both ways users give them: the Clever variables (``CC_PRE_RUN_HOOK``,
``CC_RUN_SUCCEEDED_HOOK``, ``CC_RUN_FAILED_HOOK``) and executables in a temporary
``CC_TASK_HOOKS_DIR`` with ``pre-run.d``, ``succeeded.d`` and ``failed.d``. Every run gets
its own hooks directory, so that a machine's ``/etc/cc-task/hooks`` never leaks in.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import Launch, Launches, Result, events, run_cc_task

#: Post-run hook that prints its CC_TASK_* variables as one JSON record, then the report.
DUMP_VARS = (
    "python3 -c 'import json, os; print(\"VARS \" + json.dumps({k: os.environ.get(k) "
    "for k in (\"CC_TASK_RESULT\", \"CC_TASK_EXIT_STATUS\", \"CC_TASK_EXIT_CODE\", "
    "\"CC_TASK_SIGNAL\", \"CC_TASK_DURATION_SECONDS\", \"CC_TASK_REPORT_FILE\")}))'; "
    'echo "REPORT $(cat "$CC_TASK_REPORT_FILE")"'
)


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    """An empty hooks directory with the three phase folders."""
    root = tmp_path / "hooks"
    for phase in ("pre-run.d", "succeeded.d", "failed.d"):
        (root / phase).mkdir(parents=True)
    return root


def write_hook(folder: Path, name: str, body: str, executable: bool = True) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def run(hooks: Path, env: Mapping[str, str | None] | None = None,
        command: str = "echo command-ran", **kwargs: Any) -> Result:
    full: dict[str, str | None] = {"CC_TASK_HOOKS_DIR": str(hooks), "CC_RUN_COMMAND": command,
                                   "CC_TASK_KILL_GRACE": "2s"}
    full.update(env or {})
    return run_cc_task([], env=full, **kwargs)


def hook_lines(records: list[dict[str, Any]], phase: str | None = None) -> list[str]:
    return [r["message"] for r in records
            if r.get("source") == "hook" and (phase is None or r.get("hook") == phase)]


def hook_value(records: list[dict[str, Any]], prefix: str, phase: str) -> Any:
    """The JSON printed after ``prefix`` by a hook of ``phase`` (exactly one such line)."""
    found = [m[len(prefix):] for m in hook_lines(records, phase) if m.startswith(prefix)]
    assert len(found) == 1, f"expected one {prefix!r} line from {phase}: {records!r}"
    return json.loads(found[0])


def seq_of(records: list[dict[str, Any]], pred: Callable[[dict[str, Any]], bool]) -> int:
    found = [r["seq"] for r in records if pred(r)]
    assert len(found) == 1, f"expected one matching record, got {found}: {records!r}"
    return int(found[0])


# -- phases and their order ----------------------------------------------------------


def test_phase_order_on_success(hooks_dir: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    res = run(hooks_dir, {
        "CC_PRE_RUN_HOOK": "echo pre-hook",
        "CC_RUN_SUCCEEDED_HOOK": "echo succeeded-hook",
        "CC_RUN_FAILED_HOOK": "echo failed-hook",
        "CC_TASK_STATUS_FILE": str(status_file),
    })
    assert res.returncode == 0, res
    recs = res.records
    pre = seq_of(recs, lambda r: r.get("message") == "pre-hook")
    cmd = seq_of(recs, lambda r: r.get("source") == "command" and r["message"] == "command-ran")
    post = seq_of(recs, lambda r: r.get("message") == "succeeded-hook")
    finished = seq_of(recs, lambda r: r.get("event") == "task.finished")
    assert pre < cmd < post < finished
    assert "failed-hook" not in hook_lines(recs)
    # Output records of hooks: source "hook", the phase in "hook", level info.
    for message, phase in (("pre-hook", "pre-run"), ("succeeded-hook", "succeeded")):
        rec = next(r for r in recs if r.get("message") == message)
        assert (rec["source"], rec["hook"], rec["stream"], rec["level"]) == (
            "hook", phase, "stdout", "info")
    cmd_rec = next(r for r in recs if r.get("source") == "command")
    assert "hook" not in cmd_rec
    # hook.started / hook.finished around each hook, with its phase and no path.
    started = [e["hook"] for e in res.events("hook.started")]
    assert started == ["pre-run", "succeeded"]
    for e in res.events("hook.started") + res.events("hook.finished"):
        assert "path" not in e
    # The final report has both phases, in the log and in the status file.
    for rep in (res.report(), json.loads(status_file.read_text())):
        assert set(rep["hooks"]) == {"pre-run", "succeeded"}
        for phase in ("pre-run", "succeeded"):
            assert rep["hooks"][phase]["exit_status"] == 0
            assert isinstance(rep["hooks"][phase]["duration_seconds"], float)
            assert 0 <= rep["hooks"][phase]["duration_seconds"] < 10


def test_phase_order_on_failure(hooks_dir: Path) -> None:
    res = run(hooks_dir, {
        "CC_PRE_RUN_HOOK": "echo pre-hook",
        "CC_RUN_SUCCEEDED_HOOK": "echo succeeded-hook",
        "CC_RUN_FAILED_HOOK": "echo failed-hook",
    }, command="echo command-ran; exit 3")
    assert res.returncode == 3, res
    recs = res.records
    pre = seq_of(recs, lambda r: r.get("message") == "pre-hook")
    cmd = seq_of(recs, lambda r: r.get("event") == "command.finished")
    post = seq_of(recs, lambda r: r.get("message") == "failed-hook")
    assert pre < cmd < post
    assert "succeeded-hook" not in hook_lines(recs)
    assert [e["hook"] for e in res.events("hook.finished")] == ["pre-run", "failed"]
    assert set(res.report()["hooks"]) == {"pre-run", "failed"}


# -- the variables of each result ------------------------------------------------------

RESULTS = {
    # name: (env, command, exit status, exit code, signal)
    "success": ({}, "echo hi", 0, "0", ""),
    "exit-code": ({}, "echo hi; exit 3", 3, "3", ""),
    "signal": ({}, "echo hi; kill -TERM $$", 143, "", "SIGTERM"),
    "timeout": ({"CC_TASK_TIMEOUT": "1s"}, "echo hi; exec sleep 30", 124, "", "SIGTERM"),
    "idle-timeout": ({"CC_TASK_IDLE_TIMEOUT": "1s"}, "echo hi; exec sleep 30", 124, "",
                     "SIGTERM"),
}


@pytest.mark.parametrize("result", sorted(RESULTS))
def test_post_run_variables(hooks_dir: Path, result: str) -> None:
    extra, command, status, code, sig = RESULTS[result]
    started = time.monotonic()
    res = run(hooks_dir, {"CC_RUN_SUCCEEDED_HOOK": DUMP_VARS, "CC_RUN_FAILED_HOOK": DUMP_VARS,
                          **extra}, command=command)
    elapsed = time.monotonic() - started
    assert res.returncode == status, res
    phase = "succeeded" if status == 0 else "failed"
    got = hook_value(res.records, "VARS ", phase)
    assert got["CC_TASK_RESULT"] == result
    assert got["CC_TASK_EXIT_STATUS"] == str(status)
    assert got["CC_TASK_EXIT_CODE"] == code
    assert got["CC_TASK_SIGNAL"] == sig
    duration = float(got["CC_TASK_DURATION_SECONDS"])
    assert 0 <= duration <= elapsed
    if "timeout" in result:
        assert duration >= 0.9
    # The report file: the report as it stood when the command ended (no post-run phase
    # yet), readable JSON that agrees with the variables; gone after the run.
    rep = hook_value(res.records, "REPORT ", phase)
    assert rep["result"] == result
    assert rep["exit_status"] == status
    assert rep["exit_code"] == (int(code) if code else None)
    assert rep["signal"] == (sig or None)
    assert rep["timed_out"] is ("timeout" in result)
    assert rep["tail"] == ["hi"]
    assert phase not in rep["hooks"]
    assert not os.path.exists(got["CC_TASK_REPORT_FILE"])
    final = res.report()
    assert final["result"] == result and final["exit_status"] == status
    assert final["hooks"][phase]["exit_status"] == 0


def test_failing_pre_run_hook_stops_the_task(hooks_dir: Path, marker: Path) -> None:
    write_hook(hooks_dir / "pre-run.d", "10-never", f"touch {marker}.folder")
    res = run(hooks_dir, {
        "CC_PRE_RUN_HOOK": "echo preparing; exit 4",
        "CC_RUN_SUCCEEDED_HOOK": "echo succeeded-hook",
        "CC_RUN_FAILED_HOOK": DUMP_VARS,
    }, command=f"touch {marker}")
    assert res.returncode == 4, res
    assert not marker.exists(), "the command ran after a failed pre-run hook"
    assert not Path(f"{marker}.folder").exists(), "a pre-run folder hook ran after a failure"
    assert res.events("command.started") == []
    got = hook_value(res.records, "VARS ", "failed")
    assert got["CC_TASK_RESULT"] == "pre-run-failed"
    assert got["CC_TASK_EXIT_STATUS"] == "4"
    assert got["CC_TASK_EXIT_CODE"] == ""
    assert got["CC_TASK_SIGNAL"] == ""
    rep = hook_value(res.records, "REPORT ", "failed")
    assert rep["result"] == "pre-run-failed"
    assert rep["hooks"]["pre-run"]["exit_status"] == 4
    assert "succeeded-hook" not in hook_lines(res.records)
    final = res.report()
    assert (final["result"], final["exit_status"]) == ("pre-run-failed", 4)
    assert final["hooks"]["pre-run"]["exit_status"] == 4
    assert final["hooks"]["failed"]["exit_status"] == 0


def test_failing_pre_run_folder_hook_stops_the_task(hooks_dir: Path, marker: Path) -> None:
    write_hook(hooks_dir / "pre-run.d", "10-fails", "exit 6")
    write_hook(hooks_dir / "pre-run.d", "20-never", f"touch {marker}.second")
    write_hook(hooks_dir / "failed.d", "10-report", 'echo "failed.d saw $CC_TASK_RESULT"')
    res = run(hooks_dir, command=f"touch {marker}")
    assert res.returncode == 6, res
    assert not marker.exists()
    assert not Path(f"{marker}.second").exists()
    assert hook_lines(res.records, "failed") == ["failed.d saw pre-run-failed"]


def test_no_hook_after_a_configuration_error(hooks_dir: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    for phase in ("pre-run", "succeeded", "failed"):
        write_hook(hooks_dir / f"{phase}.d", "10-mark", f"touch {marks}/{phase}.d")
    env = {"CC_TASK_TIMEOUT": "soon",
           "CC_PRE_RUN_HOOK": f"touch {marks}/pre", "CC_RUN_SUCCEEDED_HOOK": f"touch {marks}/ok",
           "CC_RUN_FAILED_HOOK": f"touch {marks}/failed"}
    res = run(hooks_dir, env, command=f"touch {marks}/command")
    assert res.returncode == 125, res
    assert sorted(os.listdir(marks)) == []
    assert res.events("hook.started") == [] and hook_lines(res.records) == []
    assert res.report()["result"] == "config-error"


# -- hook timeout ------------------------------------------------------------------------


def test_post_run_hook_timeout(hooks_dir: Path) -> None:
    started = time.monotonic()
    res = run(hooks_dir, {"CC_TASK_HOOK_TIMEOUT": "1s", "CC_TASK_KILL_GRACE": "1s",
                          "CC_RUN_SUCCEEDED_HOOK": "echo waiting; exec sleep 60"})
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res  # a post-run hook never changes the status
    assert elapsed < 10
    timeouts = res.events("timeout.reached")
    assert [(t["kind"], t.get("hook")) for t in timeouts] == [("hook", "succeeded")]
    rep = res.report()
    assert rep["result"] == "success" and rep["timed_out"] is False
    assert rep["hooks"]["succeeded"]["exit_status"] == 124
    assert 0.9 <= rep["hooks"]["succeeded"]["duration_seconds"] < 10
    finished = [e for e in res.events("hook.finished") if e["hook"] == "succeeded"]
    assert finished and all(e["level"] == "warning" for e in finished)


def test_pre_run_hook_timeout_aborts_the_task(hooks_dir: Path, marker: Path) -> None:
    started = time.monotonic()
    res = run(hooks_dir, {"CC_TASK_HOOK_TIMEOUT": "1s", "CC_TASK_KILL_GRACE": "1s",
                          "CC_PRE_RUN_HOOK": "exec sleep 60",
                          "CC_RUN_FAILED_HOOK": 'echo "failed: $CC_TASK_RESULT"'},
              command=f"touch {marker}")
    assert time.monotonic() - started < 10
    assert res.returncode == 124, res
    assert not marker.exists()
    assert hook_lines(res.records, "failed") == ["failed: pre-run-failed"]
    rep = res.report()
    assert (rep["result"], rep["exit_status"]) == ("pre-run-failed", 124)
    assert rep["hooks"]["pre-run"]["exit_status"] == 124


def test_hook_timeout_kills_a_hook_that_ignores_the_stop_signal(hooks_dir: Path) -> None:
    started = time.monotonic()
    res = run(hooks_dir, {"CC_TASK_HOOK_TIMEOUT": "500ms", "CC_TASK_KILL_GRACE": "500ms",
                          "CC_RUN_FAILED_HOOK": "trap '' TERM; echo stubborn; "
                                                "while :; do sleep 0.05; done"},
              command="exit 2")
    assert time.monotonic() - started < 10
    assert res.returncode == 2, res
    killed = [e for e in res.events("command.killed") if e.get("hook") == "failed"]
    assert killed, res
    assert res.report()["hooks"]["failed"]["exit_status"] == 124


# -- folders ----------------------------------------------------------------------------


def test_folder_hooks_run_in_name_order_after_the_variable(hooks_dir: Path) -> None:
    pre = hooks_dir / "pre-run.d"
    for name in ("20-b", "10-a", "30-c", "1-first"):
        write_hook(pre, name, f"echo {name}")
    write_hook(pre, "15-not-executable", "echo must-not-run", executable=False)
    (pre / "README").write_text("not a hook\n")
    (pre / "25-a-directory").mkdir()
    write_hook(hooks_dir / "succeeded.d", "50-after", "echo after")
    res = run(hooks_dir, {"CC_PRE_RUN_HOOK": "echo variable", "CC_TROUBLESHOOT": "true"})
    assert res.returncode == 0, res
    # Name order is byte order ("1-first" < "10-a"), after the variable's hook.
    assert hook_lines(res.records, "pre-run") == ["variable", "1-first", "10-a", "20-b", "30-c"]
    assert hook_lines(res.records, "succeeded") == ["after"]
    started = res.events("hook.started")
    assert [e.get("path") for e in started] == [
        None, *(str(pre / n) for n in ("1-first", "10-a", "20-b", "30-c")),
        str(hooks_dir / "succeeded.d" / "50-after")]
    finished = res.events("hook.finished")
    assert [(e["hook"], e.get("path")) for e in finished] == [
        (e["hook"], e.get("path")) for e in started]
    skipped = res.events("hook.skipped")
    assert sorted(e["path"] for e in skipped) == sorted(
        str(pre / n) for n in ("15-not-executable", "25-a-directory", "README"))
    assert all(e["level"] == "debug" and e["hook"] == "pre-run" for e in skipped)
    # Several hooks of one phase add up in the report.
    assert res.report()["hooks"]["pre-run"]["exit_status"] == 0


def test_skipped_hooks_are_not_logged_without_troubleshoot(hooks_dir: Path) -> None:
    write_hook(hooks_dir / "pre-run.d", "10-off", "echo must-not-run", executable=False)
    res = run(hooks_dir)
    assert res.returncode == 0, res
    assert res.events("hook.skipped") == []
    assert hook_lines(res.records) == []


def test_missing_hooks_dir_is_fine(tmp_path: Path) -> None:
    res = run(tmp_path / "no-such-dir")
    assert res.returncode == 0, res
    assert res.events("hook.started") == []


def test_failing_post_run_hooks_are_warnings(hooks_dir: Path) -> None:
    write_hook(hooks_dir / "failed.d", "10-fails", "exit 9")
    write_hook(hooks_dir / "failed.d", "20-still-runs", "echo still-runs")
    res = run(hooks_dir, {"CC_RUN_FAILED_HOOK": "exit 7"}, command="exit 3")
    assert res.returncode == 3, res
    assert hook_lines(res.records, "failed") == ["still-runs"]
    bad = [e for e in res.events("hook.finished") if e.get("exit_status") in (7, 9)]
    assert bad and all(e["level"] == "warning" for e in bad)
    rep = res.report()
    assert (rep["result"], rep["exit_status"]) == ("exit-code", 3)
    assert rep["hooks"]["failed"]["exit_status"] == 7  # the first failure of the phase


def test_failing_succeeded_hook_keeps_success(hooks_dir: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    res = run(hooks_dir, {"CC_RUN_SUCCEEDED_HOOK": "echo oops >&2; exit 5",
                          "CC_TASK_STATUS_FILE": str(status_file)})
    assert res.returncode == 0, res
    err = [r for r in res.records if r.get("source") == "hook" and r.get("stream") == "stderr"]
    assert [r["message"] for r in err] == ["oops"]
    for rep in (res.report(), json.loads(status_file.read_text())):
        assert (rep["result"], rep["exit_status"]) == ("success", 0)
        assert rep["hooks"]["succeeded"]["exit_status"] == 5


def test_folder_hook_that_cannot_start(hooks_dir: Path) -> None:
    """An executable with a missing interpreter: a warning with its path, status 126/127."""
    path = hooks_dir / "succeeded.d" / "10-broken"
    path.write_text("#!/no/such/interpreter\n")
    path.chmod(0o755)
    res = run(hooks_dir)
    assert res.returncode == 0, res
    warned = [e for e in res.events("hook.finished") if e.get("path") == str(path)]
    assert warned and warned[0]["level"] == "warning"
    assert res.report()["hooks"]["succeeded"]["exit_status"] in (126, 127)


# -- environment and directory -----------------------------------------------------------

#: ``env`` minus what bash itself sets differently for a script than for ``bash -c``.
SHOW = 'echo "PWD-IS $(pwd)"; env | LC_ALL=C sort | grep -v -e "^_=" -e "^SHLVL=" | sed "s/^/ENV /"'
POST_ONLY = {"CC_TASK_RESULT", "CC_TASK_EXIT_STATUS", "CC_TASK_EXIT_CODE", "CC_TASK_SIGNAL",
             "CC_TASK_DURATION_SECONDS", "CC_TASK_REPORT_FILE"}


def test_hooks_get_the_command_environment_and_directory(hooks_dir: Path,
                                                         tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    envfile = tmp_path / "app.env"
    envfile.write_text("FROM_FILE=loaded\n")
    write_hook(hooks_dir / "pre-run.d", "10-show", SHOW)
    res = run(hooks_dir, {"CC_TASK_WORKDIR": str(work), "CC_TASK_ENV_FILES": str(envfile),
                          "CC_PRE_RUN_HOOK": SHOW, "CC_RUN_SUCCEEDED_HOOK": SHOW,
                          "MY_SETTING": "some value"}, command=SHOW, cwd=str(tmp_path))
    assert res.returncode == 0, res

    def seen(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
        pwd = [r["message"][7:] for r in records if r["message"].startswith("PWD-IS ")]
        env = dict(r["message"][4:].split("=", 1) for r in records
                   if r["message"].startswith("ENV "))
        return pwd, env

    cmd_pwd, cmd_env = seen([r for r in res.records if r.get("source") == "command"])
    assert cmd_pwd == [str(work)]
    assert cmd_env["FROM_FILE"] == "loaded" and cmd_env["MY_SETTING"] == "some value"
    assert cmd_env["CC_TASK_RUN_ID"] == res.report()["run_id"]
    by_hook: dict[str, list[dict[str, Any]]] = {}
    for r in res.records:
        if r.get("source") == "hook":
            by_hook.setdefault(r["hook"], []).append(r)
    pre_records = by_hook["pre-run"]
    half = len(pre_records) // 2  # the variable's hook, then the folder's
    for records in (pre_records[:half], pre_records[half:]):
        pwd, env = seen(records)
        assert pwd == [str(work)]
        assert env == cmd_env
    pwd, env = seen(by_hook["succeeded"])
    assert pwd == [str(work)]
    assert set(env) - set(cmd_env) == POST_ONLY
    assert {k: v for k, v in env.items() if k not in POST_ONLY} == cmd_env


# -- signals during hooks -----------------------------------------------------------------


def _shutdown_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    mark = tmp_path / "shutdown-ran"
    return mark, {"CC_TASK_SHUTDOWN_COMMAND": f"touch {shlex.quote(str(mark))}",
                  "CC_TASK_SHUTDOWN": "none"}


def _hook_output(run: Launch, message: str) -> dict[str, Any]:
    return run.wait_for(lambda r: r.get("source") == "hook" and r.get("message") == message,
                        timeout=20)


def _terminate(run: Launch) -> int | None:
    """SIGTERM to cc-task, then its exit status as Popen has it (negative had it died
    from a signal, so that 143 means cc-task exited with 143)."""
    run.send(signal.SIGTERM)
    run.finish(timeout=20)
    return run.returncode


def test_sigterm_during_pre_run_hook(hooks_dir: Path, tmp_path: Path, marker: Path,
                                     launch: Launches) -> None:
    mark, env = _shutdown_env(tmp_path)
    status_file = tmp_path / "status.json"
    env.update({"CC_TASK_HOOKS_DIR": str(hooks_dir), "CC_RUN_COMMAND": f"touch {marker}",
                "CC_TASK_STATUS_FILE": str(status_file), "CC_TASK_KILL_GRACE": "5s",
                "CC_PRE_RUN_HOOK": "echo hook-ready; exec sleep 60",
                "CC_RUN_FAILED_HOOK": 'echo "failed: $CC_TASK_RESULT $CC_TASK_EXIT_STATUS"'})
    bg = launch([], env=env)
    _hook_output(bg, "hook-ready")
    sent = time.monotonic()
    code = _terminate(bg)
    assert time.monotonic() - sent < 4, "the hook was not stopped by the forwarded SIGTERM"
    assert code == 143, bg.stderr
    assert not marker.exists(), "the command ran after the pre-run hook was stopped"
    forwarded = events(bg.records, "signal.forwarded")
    assert forwarded and forwarded[0]["signal"] == "SIGTERM"
    pre_done = [e for e in events(bg.records, "hook.finished") if e["hook"] == "pre-run"]
    assert pre_done and pre_done[0]["signal"] == "SIGTERM" and pre_done[0]["exit_status"] == 143
    assert events(bg.records, "command.started") == []
    finished = events(bg.records, "task.finished")
    assert len(finished) == 1
    rep = finished[0]["report"]
    assert rep["exit_status"] == 143 and rep["result"] == "pre-run-failed"
    assert rep["hooks"]["pre-run"]["exit_status"] == 143
    assert json.loads(status_file.read_text())["exit_status"] == 143
    assert mark.exists(), "the shutdown action did not run"
    shutdown = events(bg.records, "shutdown.started")
    assert shutdown and shutdown[0]["seq"] > finished[0]["seq"]


def test_sigterm_during_post_run_hook(hooks_dir: Path, tmp_path: Path,
                                      launch: Launches) -> None:
    mark, env = _shutdown_env(tmp_path)
    env.update({"CC_TASK_HOOKS_DIR": str(hooks_dir), "CC_RUN_COMMAND": "exit 3",
                "CC_TASK_KILL_GRACE": "5s"})
    write_hook(hooks_dir / "failed.d", "10-slow", "echo hook-ready; exec sleep 60")
    write_hook(hooks_dir / "failed.d", "20-next", "echo next-hook-ran")
    bg = launch([], env=env)
    _hook_output(bg, "hook-ready")
    sent = time.monotonic()
    code = _terminate(bg)
    assert time.monotonic() - sent < 4
    assert code == 3, bg.stderr  # a post-run hook never changes the status
    rep = events(bg.records, "task.finished")[0]["report"]
    assert (rep["result"], rep["exit_status"]) == ("exit-code", 3)
    assert rep["hooks"]["failed"]["exit_status"] == 143
    # The remaining post-run hooks still run: a notification still goes out.
    assert [r["message"] for r in bg.records if r.get("source") == "hook"] == [
        "hook-ready", "next-hook-ran"]
    assert mark.exists()


def test_second_sigterm_kills_a_stubborn_hook(hooks_dir: Path, tmp_path: Path,
                                              launch: Launches) -> None:
    mark, env = _shutdown_env(tmp_path)
    env.update({"CC_TASK_HOOKS_DIR": str(hooks_dir), "CC_RUN_COMMAND": "true",
                "CC_TASK_KILL_GRACE": "60s",
                "CC_PRE_RUN_HOOK": "trap 'echo got-term' TERM; echo hook-ready; "
                                   "while :; do sleep 0.05; done"})
    bg = launch([], env=env)
    _hook_output(bg, "hook-ready")
    bg.send(signal.SIGTERM)
    _hook_output(bg, "got-term")
    sent = time.monotonic()
    code = _terminate(bg)
    assert time.monotonic() - sent < 4
    assert code == 137, bg.stderr
    assert [e.get("hook") for e in events(bg.records, "command.killed")] == ["pre-run"]
    assert mark.exists()


# -- launcher bugs found while writing these tests (left failing, reported) -------------


def test_relative_hooks_dir_with_another_workdir(tmp_path: Path) -> None:
    """A relative CC_TASK_HOOKS_DIR is the launcher's directory's, whatever CC_TASK_WORKDIR.

    The folder is listed relative to the launcher's current directory but the hook is
    executed by a relative path from the working directory: 127, "not found"."""
    (tmp_path / "hooks" / "succeeded.d").mkdir(parents=True)
    write_hook(tmp_path / "hooks" / "succeeded.d", "10-x", "echo relative-hook-ran")
    work = tmp_path / "work"
    work.mkdir()
    res = run(Path("hooks"), {"CC_TASK_WORKDIR": str(work)}, cwd=str(tmp_path))
    assert res.returncode == 0, res
    assert hook_lines(res.records, "succeeded") == ["relative-hook-ran"]
    assert res.report()["hooks"]["succeeded"]["exit_status"] == 0


def test_one_hook_finished_event_per_hook(hooks_dir: Path) -> None:
    """Each hook ends with exactly one hook.finished, with its path for a folder hook.

    A failing post-run hook currently gets a second hook.finished ("... failed (exit
    status N); the task's status is unchanged") without ``path``."""
    write_hook(hooks_dir / "failed.d", "10-fails", "exit 9")
    res = run(hooks_dir, {"CC_RUN_FAILED_HOOK": "exit 7"}, command="exit 3")
    assert res.returncode == 3, res
    started = [(e["hook"], e.get("path")) for e in res.events("hook.started")]
    finished = [(e["hook"], e.get("path")) for e in res.events("hook.finished")]
    assert finished == started
