"""Validation before anything runs (SPEC section 4): every bad input gives exit 125, one
sentence on stderr naming the variable (or the env file and line), no traceback, a
``config.invalid`` event, no command run; the report is still written and the shutdown
step still runs, after ``task.finished``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ShutdownProbe
from helpers import CC_TASK, make_env, run_cc_task

MAX_COMMAND = 131072


@dataclass
class Case:
    """A bad input. ``{tmp}`` in env values, args and file contents is the test's
    tmp_path; ``{touch}`` is a command creating the marker file."""

    id: str
    env: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()  # what the sentence must name (all of them)


def _long_command(size: int, marker: Path | None = None) -> bytes:
    """A command of ``size`` bytes (``{marker}`` left as is when no marker is given)."""
    head = b"touch " + (str(marker).encode() if marker else b"{marker}") + b"; : "
    return head + b"x" * (size - len(head))


CASES: list[Case] = [
    # CC_RUN_COMMAND itself.
    Case("unset", env={"CC_RUN_COMMAND": None}, names=("CC_RUN_COMMAND",)),
    Case("empty", env={"CC_RUN_COMMAND": ""}, names=("CC_RUN_COMMAND",)),
    Case("whitespace", env={"CC_RUN_COMMAND": " \t\n  \n"}, names=("CC_RUN_COMMAND",)),
    Case("comments", env={"CC_RUN_COMMAND": "# touch {marker}\n   # nothing else\n"},
         names=("CC_RUN_COMMAND",)),
    Case("empty-option", args=["--command", ""], names=("CC_RUN_COMMAND",)),
    Case("syntax-paren", env={"CC_RUN_COMMAND": "touch {marker}; echo ("},
         names=("CC_RUN_COMMAND",)),
    Case("syntax-if", env={"CC_RUN_COMMAND": "touch {marker}\nif true; then echo x"},
         names=("CC_RUN_COMMAND",)),
    Case("syntax-quote", env={"CC_RUN_COMMAND": "touch {marker}; echo 'open"},
         names=("CC_RUN_COMMAND",)),
    # Over 131072 bytes: too long for one argv or environment string (MAX_ARG_STRLEN is
    # 131072 bytes with the NUL), so it arrives through an env file, as on the platform.
    Case("too-long", env={"CC_RUN_COMMAND": None},
         files={"cmd.env": b"CC_RUN_COMMAND='" + _long_command(MAX_COMMAND + 1) + b"'\n"},
         args=["--env-file", "{tmp}/cmd.env"], names=("CC_RUN_COMMAND", "131072")),
    # A NUL byte cannot travel in argv or the environment (C strings), nor in an envdir
    # (NUL becomes a newline there): a raw NUL byte inside an env file's value can.
    Case("nul-byte", env={"CC_RUN_COMMAND": None},
         files={"nul.env": b'CC_RUN_COMMAND="touch {marker}\x00; true"\n'},
         args=["--env-file", "{tmp}/nul.env"], names=("CC_RUN_COMMAND", "NUL")),
    # Durations.
    *[Case(f"{var}={value}", env={var: value}, names=(var,))
      for var in ("CC_TASK_TIMEOUT", "CC_TASK_IDLE_TIMEOUT", "CC_TASK_KILL_GRACE",
                  "CC_TASK_TROUBLESHOOT_DELAY", "CC_TASK_HOOK_TIMEOUT",
                  "CC_TASK_METRICS_LINGER")
      for value in ("soon",)],
    *[Case(f"timeout={value}", env={"CC_TASK_TIMEOUT": value}, names=("CC_TASK_TIMEOUT",))
      for value in ("-5", "10x", "1.5.3s", "ms", "5 s", "1h-2m", "inf", "nan", "1e3")],
    Case("--timeout", args=["--timeout", "later"], names=("CC_TASK_TIMEOUT",)),
    Case("--kill-grace", args=["--kill-grace", "30sec"], names=("CC_TASK_KILL_GRACE",)),
    Case("--idle-timeout", args=["--idle-timeout", "x"], names=("CC_TASK_IDLE_TIMEOUT",)),
    # Booleans.
    *[Case(f"troubleshoot={value}", env={"CC_TROUBLESHOOT": value}, names=("CC_TROUBLESHOOT",))
      for value in ("maybe", "2", "yess", "tru")],
    # Choices and numbers.
    Case("log-format", env={"CC_TASK_LOG_FORMAT": "xml"}, names=("CC_TASK_LOG_FORMAT",)),
    Case("--log-format", args=["--log-format", "yaml"], names=("CC_TASK_LOG_FORMAT",)),
    *[Case(f"max-line={value}", env={"CC_TASK_LOG_MAX_LINE": value},
           names=("CC_TASK_LOG_MAX_LINE",))
      for value in ("abc", "0", "15", "-1", "1e3", "16k")],
    *[Case(f"stop-signal={value}", env={"CC_TASK_STOP_SIGNAL": value},
           names=("CC_TASK_STOP_SIGNAL",))
      for value in ("SIGFOO", "0", "99", "TERMINATE", "-15")],
    Case("shutdown", env={"CC_TASK_SHUTDOWN": "explode"}, names=("CC_TASK_SHUTDOWN",)),
    Case("--shutdown", args=["--shutdown", "off"], names=("CC_TASK_SHUTDOWN",)),
    *[Case(f"metrics-port={value}", env={"CC_TASK_METRICS_PORT": value},
           names=("CC_TASK_METRICS_PORT",))
      for value in ("0", "65536", "http", "-1", "80.5")],
    Case("--metrics-port", args=["--metrics-port", "99999"], names=("CC_TASK_METRICS_PORT",)),
    Case("prometheus-port", env={"CC_TASK_METRICS_PORT": "auto",
                                 "CC_METRICS_PROMETHEUS_PORT": "nine"},
         names=("CC_METRICS_PROMETHEUS_PORT",)),
    Case("workdir", env={"CC_TASK_WORKDIR": "{tmp}/no-such-dir"}, names=("CC_TASK_WORKDIR",)),
    Case("user", env={"CC_TASK_USER": "no-such-user-cct"}, names=("CC_TASK_USER",)),
    # Env files and envdir: the sentence names the file (and the line).
    Case("missing-env-file", env={"CC_TASK_ENV_FILES": "{tmp}/missing.env"},
         names=("{tmp}/missing.env",)),
    Case("missing-env-file-option", args=["--env-file", "{tmp}/missing.env"],
         names=("{tmp}/missing.env",)),
    # Root reads any file whatever its mode, so "unreadable" is shown honestly by paths
    # that cannot be read as a file by anyone: a directory, and a path through a file.
    Case("env-file-is-directory", env={"CC_TASK_ENV_FILES": "{tmp}"}, names=("{tmp}",)),
    Case("env-file-enotdir", files={"plain": b"A=1\n"},
         env={"CC_TASK_ENV_FILES": "{tmp}/plain/x.env"}, names=("{tmp}/plain/x.env",)),
    Case("env-file-not-utf8", files={"latin.env": b"OK=1\nNAME=caf\xe9\n"},
         env={"CC_TASK_ENV_FILES": "{tmp}/latin.env"}, names=("{tmp}/latin.env", "line 2")),
    *[Case(f"env-line-{i}", files={"bad.env": b"OK=1\n\n# comment\n" + line + b"\nLATER=2\n"},
           env={"CC_TASK_ENV_FILES": "{tmp}/bad.env"}, names=("{tmp}/bad.env", "line 4"))
      for i, line in enumerate([b"not a valid line", b'K="unterminated', b"K='x' trailing",
                                b"=value", b"JUSTANAME"])],
    *[Case(f"env-name-{i}", files={"bad.env": b"OK=1\n" + line + b"\n"},
           env={"CC_TASK_ENV_FILES": "{tmp}/bad.env"}, names=("{tmp}/bad.env", "line 2"))
      for i, line in enumerate([b"1ABC=x", b"A-B=x", b"A.B=x", b"export 9=x"])],
    Case("second-env-file-bad", files={"good.env": b"A=1\n", "bad.env": b"A=1\nB C=2\n"},
         env={"CC_TASK_ENV_FILES": "{tmp}/good.env:{tmp}/bad.env"},
         names=("{tmp}/bad.env", "line 2")),
    Case("missing-env-dir", env={"CC_TASK_ENV_DIR": "{tmp}/no-envdir"},
         names=("{tmp}/no-envdir",)),
    Case("env-dir-is-file", files={"plain": b"x\n"}, env={"CC_TASK_ENV_DIR": "{tmp}/plain"},
         names=("{tmp}/plain",)),
    Case("env-dir-bad-name", files={"envdir/BAD-NAME": b"x\n"},
         env={"CC_TASK_ENV_DIR": "{tmp}/envdir"}, names=("BAD-NAME",)),
    # A malformed value that arrives from an env file is caught the same way.
    Case("bad-value-from-env-file", files={"app.env": b"CC_TASK_TIMEOUT=whenever\n"},
         env={"CC_TASK_ENV_FILES": "{tmp}/app.env"}, names=("CC_TASK_TIMEOUT",)),
]


def _fill(text: str, tmp: Path, marker: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{marker}", str(marker))


def _run_case(case: Case, tmp_path: Path, marker: Path, probe: ShutdownProbe):  # type: ignore[no-untyped-def]
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.replace(b"{marker}", str(marker).encode()))
    env: dict[str, str | None] = {"CC_RUN_COMMAND": f"touch {marker}", **probe.env}
    for key, value in case.env.items():
        env[key] = None if value is None else _fill(value, tmp_path, marker)
    args = [_fill(a, tmp_path, marker) for a in case.args]
    return run_cc_task(args, env=env)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_configuration_error(case: Case, tmp_path: Path, marker: Path,
                                            shutdown_probe: ShutdownProbe) -> None:
    result = _run_case(case, tmp_path, marker, shutdown_probe)
    assert result.returncode == 125, result
    # One sentence for a person, naming what is wrong; never a traceback.
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1, result.stderr
    sentence = lines[0]
    assert sentence.endswith("."), sentence
    for name in case.names:
        assert _fill(name, tmp_path, marker) in sentence, sentence
    # The log: a config.invalid event, no command, then the report, then the shutdown.
    invalid = result.events("config.invalid")
    assert len(invalid) == 1, result.records
    assert invalid[0]["level"] == "error"
    assert invalid[0]["message"] in sentence
    assert not result.events("command.started")
    assert not [r for r in result.records if r.get("source") in ("command", "hook")]
    assert not marker.exists(), "the command ran"
    rep = result.report()
    assert rep["result"] == "config-error" and rep["exit_status"] == 125
    assert rep["exit_code"] is None and rep["pid"] is None
    status = json.loads(shutdown_probe.status_file.read_bytes())
    assert status["result"] == "config-error" and status["exit_status"] == 125
    assert status["run_id"] == rep["run_id"]
    assert shutdown_probe.lines() == ["report-written"], "shutdown step did not run once"
    names = [r.get("event") for r in result.records if r.get("source") == "supervisor"]
    assert names.index("config.invalid") < names.index("task.finished") \
        < names.index("shutdown.started"), names


@pytest.mark.parametrize("size", [MAX_COMMAND - 1, MAX_COMMAND - 8, 120_000])
def test_command_up_to_131071_bytes_runs(size: int, tmp_path: Path, marker: Path) -> None:
    """Linux caps one argv or environment string at 131072 bytes *including* its NUL
    (MAX_ARG_STRLEN): a command up to 131071 bytes runs as ``bash -c``'s argument, and the
    launcher leaves an over-long ``CC_RUN_COMMAND`` out of the task's environment."""
    env_file = tmp_path / "cmd.env"
    command = _long_command(size, marker)
    assert len(command) == size
    env_file.write_bytes(b"CC_RUN_COMMAND='" + command + b"'\n")
    result = run_cc_task(["--env-file", str(env_file)])
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    # The report carries the command cut to 512 bytes.
    assert len(result.report()["command"].encode()) <= 512


def test_a_command_of_exactly_131072_bytes_cannot_start(tmp_path: Path, marker: Path) -> None:
    """SPEC section 4 rejects commands *longer* than 131072 bytes, so one of exactly 131072
    passes validation; but no exec can carry it as one argument (131071 bytes at most): it
    ends as start-failed (126) with a sentence that says why, and nothing runs."""
    env_file = tmp_path / "cmd.env"
    env_file.write_bytes(b"CC_RUN_COMMAND='" + _long_command(MAX_COMMAND, marker) + b"'\n")
    result = run_cc_task(["--env-file", str(env_file)])
    assert result.returncode == 126, result.stderr
    assert "131071 bytes" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.report()["result"] == "start-failed"
    assert not marker.exists()


def test_no_hook_runs_after_a_configuration_error(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    (hooks / "failed.d").mkdir(parents=True)
    folder_hook = hooks / "failed.d" / "10-mark"
    folder_hook.write_text(f"#!/bin/sh\ntouch {tmp_path}/folder-hook\n")
    folder_hook.chmod(0o755)
    result = run_cc_task([], env={
        "CC_RUN_COMMAND": "echo (", "CC_TASK_HOOKS_DIR": str(hooks),
        "CC_PRE_RUN_HOOK": f"touch {tmp_path}/pre",
        "CC_RUN_FAILED_HOOK": f"touch {tmp_path}/failed",
    })
    assert result.returncode == 125, result
    assert not result.events("hook.started")
    assert not any((tmp_path / name).exists() for name in ("pre", "failed", "folder-hook"))


def test_malformed_shutdown_with_command_still_runs_the_command(
        shutdown_probe: ShutdownProbe, marker: Path) -> None:
    env = {**shutdown_probe.env, "CC_TASK_SHUTDOWN": "sideways",
           "CC_RUN_COMMAND": f"touch {marker}"}
    result = run_cc_task([], env=env)
    assert result.returncode == 125
    assert shutdown_probe.lines() == ["report-written"]


def _can_unshare_pid() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", "echo $$"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0 and probe.stdout.strip() == b"1"


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs unshare --pid (root)")
def test_malformed_shutdown_falls_back_to_auto_which_is_poweroff_as_pid1(tmp_path: Path) -> None:
    """As PID 1 of a new PID namespace, ``auto`` means poweroff: there the reboot(2)
    system call only ends the namespace (its init dies from SIGINT, reboot(2) man page),
    never the machine. Seeing that death proves the malformed value fell back to ``auto``
    and not to ``none``."""
    env = make_env("pid1", {"CC_TASK_SHUTDOWN": "explode", "CC_RUN_COMMAND": "true"})
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", CC_TASK],
                          env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    started = [r for r in records if r.get("event") == "shutdown.started"]
    assert started and started[0]["action"] == "poweroff", records
    assert any(r.get("event") == "config.invalid" for r in records)
    # unshare passes its child's death by SIGINT on, by dying from SIGINT itself.
    assert proc.returncode in (-2, 130), proc


def test_malformed_shutdown_falls_back_to_auto_which_is_none_when_not_pid1() -> None:
    result = run_cc_task([], env={"CC_TASK_SHUTDOWN": "explode", "CC_RUN_COMMAND": "true"})
    assert result.returncode == 125
    assert not result.events("shutdown.started"), result.records


def test_every_error_sentence_is_masked(tmp_path: Path) -> None:
    """A secret that ends up in the faulty value is not echoed back in clear."""
    env_file = tmp_path / "app.env"
    env_file.write_text("DB_PASSWORD=pa55word-very-secret\nCC_TASK_TIMEOUT=${DB_PASSWORD}\n")
    result = run_cc_task(["--env-file", str(env_file), "--command", "true"])
    assert result.returncode == 125, result
    assert "pa55word-very-secret" not in result.stderr
    assert b"pa55word-very-secret" not in result.stdout


def test_valid_edge_values_are_accepted(tmp_path: Path) -> None:
    """The other side of the table: legal spellings are not rejected."""
    env = {
        "CC_TASK_TIMEOUT": "1.5h", "CC_TASK_IDLE_TIMEOUT": "0", "CC_TASK_KILL_GRACE": "",
        "CC_TASK_HOOK_TIMEOUT": "90", "CC_TASK_TROUBLESHOOT_DELAY": "1m30s",
        "CC_TASK_METRICS_LINGER": "500ms", "CC_TROUBLESHOOT": "OFF",
        "CC_TASK_LOG_FORMAT": "JSON", "CC_TASK_LOG_MAX_LINE": "16",
        "CC_TASK_STOP_SIGNAL": "int", "CC_TASK_SHUTDOWN": "None",
        "CC_TASK_WORKDIR": str(tmp_path),
    }
    result = run_cc_task(["--command", "echo ok"], env=env)
    assert result.returncode == 0, result
    assert result.output_text() == b"ok\n"
    for spelling in ("SIGTERM", "TERM", "15", "sigusr1"):
        check = run_cc_task(["check", "--command", "true"], env={"CC_TASK_STOP_SIGNAL": spelling})
        assert check.returncode == 0, check
    for spelling in ("TRUE", "yes", "On", "1", "false", "No", "0", "off"):
        check = run_cc_task(["check", "--command", "true"], env={"CC_TROUBLESHOOT": spelling})
        assert check.returncode == 0, check
        assert json.loads(check.stdout)["CC_TROUBLESHOOT"] is (
            spelling.lower() in ("true", "yes", "on", "1"))


def test_config_error_with_unwritable_status_file_still_exits_125(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cc_task([], env={"CC_RUN_COMMAND": "", "CC_TASK_STATUS_FILE":
                                  str(blocker / "status.json")})
    assert result.returncode == 125, result
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == ["file"]


def test_text_format_says_the_error_once(marker: Path) -> None:
    """A person at a terminal (text format: events on stderr) reads the sentence once,
    not once as the error and again as the config.invalid event."""
    result = run_cc_task(["--log-format", "text", "--timeout", "soon", "--command",
                          f"touch {marker}"])
    assert result.returncode == 125, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("CC_TASK_TIMEOUT") == 1, result.stderr
    assert not marker.exists()
