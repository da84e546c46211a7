"""The command line (SPEC section 1) and bash semantics of the command (section 5):
``;``, ``&&``, ``||``, pipes, subshells and here-documents behave as under ``bash -c``;
``check``, ``env``, ``--help``, ``--version``, usage errors; text format and a terminal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import CC_TASK, make_env, run_cc_task

ANSI = re.compile(rb"\x1b\[")

# (command, expected stdout, expected exit status), each checked against bash -c itself.
SHELL_CASES = [
    ("echo a; echo b", b"a\nb\n", 0),
    ("false; echo after", b"after\n", 0),
    ("echo a; false", b"a\n", 1),
    ("true && echo yes", b"yes\n", 0),
    ("false && echo yes", b"", 1),
    ("false || echo no", b"no\n", 0),
    ("true || echo no", b"", 0),
    ("false || (exit 7)", b"", 7),
    ("echo x && false || echo recovered", b"x\nrecovered\n", 0),
    ("printf 'b\\na\\nc\\n' | sort", b"a\nb\nc\n", 0),
    ("echo hi | false", b"", 1),
    ("false | true", b"", 0),
    ("set -o pipefail; false | true", b"", 1),
    ("(echo sub; exit 3)", b"sub\n", 3),
    ("(exit 4); echo $?", b"4\n", 0),
    ("x=outer; (x=inner); echo $x", b"outer\n", 0),
    ("cat <<EOF\nline one\n$((1+2))\nEOF", b"line one\n3\n", 0),
    ("cat <<'EOF'\n$HOME stays\nEOF", b"$HOME stays\n", 0),
    ("{ echo grouped; exit 5; }", b"grouped\n", 5),
    ("for i in 1 2 3; do echo $i; done", b"1\n2\n3\n", 0),
    ("f() { return 9; }; f", b"", 9),
    ("exit 42", b"", 42),
    ("echo $0", b"bash\n", 0),
]


@pytest.mark.parametrize(("command", "stdout", "status"), SHELL_CASES,
                         ids=[c[0][:30] for c in SHELL_CASES])
def test_shell_semantics_match_bash_c(command: str, stdout: bytes, status: int) -> None:
    reference = subprocess.run(["bash", "--noprofile", "--norc", "-c", command],
                               capture_output=True, stdin=subprocess.DEVNULL)
    # The table is checked against bash itself, so it cannot drift from bash.
    assert (reference.stdout, reference.returncode) == (stdout, status)
    result = run_cc_task(["--command", command])
    assert result.returncode == status, result
    assert result.output_text() == stdout, result
    assert result.report()["exit_status"] == status
    assert result.report()["exit_code"] == status


def test_run_subcommand_is_the_default(tmp_path: Path) -> None:
    explicit = run_cc_task(["run", "--command", "echo via-run"])
    assert explicit.returncode == 0, explicit
    assert explicit.output_text() == b"via-run\n"


def test_command_from_variable_and_option_wins() -> None:
    result = run_cc_task(["--command", "echo option"],
                         env={"CC_RUN_COMMAND": "echo variable"})
    assert result.output_text() == b"option\n", result
    result = run_cc_task([], env={"CC_RUN_COMMAND": "echo variable"})
    assert result.output_text() == b"variable\n", result


def test_stdin_is_dev_null() -> None:
    # Even when the launcher's own stdin has data, the task reads /dev/null.
    result = run_cc_task(["--command", "cat; echo end"], input=b"should not be seen\n")
    assert result.output_text() == b"end\n", result


def test_workdir_variable_and_app_home(tmp_path: Path) -> None:
    work = tmp_path / "work"
    home = tmp_path / "apphome"
    work.mkdir()
    home.mkdir()
    result = run_cc_task(["--command", "pwd"], env={"CC_TASK_WORKDIR": str(work),
                                                   "APP_HOME": str(home)})
    assert result.output_text() == f"{work}\n".encode(), result
    result = run_cc_task(["--command", "pwd"], env={"APP_HOME": str(home)})
    assert result.output_text() == f"{home}\n".encode(), result
    # APP_HOME that is not a directory: the current directory.
    result = run_cc_task(["--command", "pwd"], env={"APP_HOME": str(tmp_path / "nope")},
                         cwd=work)
    assert result.output_text() == f"{work}\n".encode(), result


def test_help_lists_every_variable() -> None:
    result = run_cc_task(["--help"])
    assert result.returncode == 0
    out = result.stdout.decode()
    for variable in (
        "CC_RUN_COMMAND", "CC_PRE_RUN_HOOK", "CC_RUN_SUCCEEDED_HOOK", "CC_RUN_FAILED_HOOK",
        "CC_TROUBLESHOOT", "CC_TASK_TROUBLESHOOT_DELAY", "CC_TASK_TIMEOUT",
        "CC_TASK_IDLE_TIMEOUT", "CC_TASK_KILL_GRACE", "CC_TASK_STOP_SIGNAL",
        "CC_TASK_ENV_FILES", "CC_TASK_ENV_DIR", "CC_TASK_WORKDIR", "CC_TASK_USER",
        "CC_TASK_LOG_FORMAT", "CC_TASK_LOG_MAX_LINE", "CC_TASK_MASK", "CC_TASK_STATUS_FILE",
        "CC_TASK_HOOKS_DIR", "CC_TASK_HOOK_TIMEOUT", "CC_TASK_METRICS_PORT",
        "CC_METRICS_PROMETHEUS_PATH", "CC_METRICS_PROMETHEUS_USER",
        "CC_METRICS_PROMETHEUS_PASSWORD", "CC_TASK_METRICS_LINGER",
        "CC_TASK_PUSHGATEWAY_URL", "CC_TASK_METRICS_TEXTFILE", "CC_TASK_SHUTDOWN",
        "CC_TASK_SHUTDOWN_COMMAND",
    ):
        assert variable in out, variable
    for option in ("--command", "--env-file", "--timeout", "--idle-timeout", "--kill-grace",
                   "--log-format", "--status-file", "--shutdown", "--metrics-port",
                   "--user", "--interactive", "--version"):
        assert option in out, option
    for word in ("check", "env"):
        assert word in out


def test_version() -> None:
    import supervisor

    result = run_cc_task(["--version"])
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"cc-task {supervisor.__version__}"


@pytest.mark.parametrize("args", [["--bogus"], ["--command"], ["run", "--nope", "x"],
                                  ["check", "--frobnicate"]])
def test_usage_error_exits_2(args: list[str], marker: Path) -> None:
    result = run_cc_task([*args], env={"CC_RUN_COMMAND": f"touch {marker}"})
    assert result.returncode == 2, result
    assert "usage" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_python_dash_m_works() -> None:
    import sys

    proc = subprocess.run([sys.executable, "-m", "supervisor", "--command", "echo pym"],
                          env=make_env("pym", {}), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(r.get("message") == "pym" and r.get("source") == "command" for r in records)


# -- check ---------------------------------------------------------------------------


def test_check_prints_configuration_and_runs_nothing(marker: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("CC_TASK_TIMEOUT=1m30s\nCC_TASK_KILL_GRACE=500ms\n")
    result = run_cc_task(
        ["check", "--command", f"touch {marker}", "--env-file", str(env_file)],
        env={"CC_TASK_STOP_SIGNAL": "int", "CC_METRICS_PROMETHEUS_PASSWORD": "hunter2hunter",
             "CC_TASK_SHUTDOWN_COMMAND": f"touch {tmp_path / 'shutdown'}"})
    assert result.returncode == 0, result
    config = json.loads(result.stdout)
    assert config["CC_RUN_COMMAND"] == f"touch {marker}"
    assert config["CC_TASK_TIMEOUT"] == 90
    assert config["CC_TASK_KILL_GRACE"] == 0.5
    assert config["CC_TASK_STOP_SIGNAL"] == "SIGINT"
    assert "hunter2hunter" not in result.stdout.decode()
    assert config["CC_METRICS_PROMETHEUS_PASSWORD"] == "***"
    assert not marker.exists()
    # check runs nothing, not even the shutdown step.
    assert not (tmp_path / "shutdown").exists()


@pytest.mark.parametrize("env", [
    {"CC_RUN_COMMAND": ""},
    {"CC_RUN_COMMAND": "echo ("},
    {"CC_RUN_COMMAND": "true", "CC_TASK_TIMEOUT": "soon"},
])
def test_check_error_exits_125(env: dict[str, str]) -> None:
    result = run_cc_task(["check"], env=env)
    assert result.returncode == 125, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == b""


# -- env -----------------------------------------------------------------------------


def test_env_prints_sorted_environment_with_secrets_masked(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=file value\nDB_PASSWORD=s3cr3t-password\n"
                        "export API_TOKEN='tok-123456789'\nSHORT_SECRET=abc\n")
    result = run_cc_task(["env", "--env-file", str(env_file)],
                         env={"PLAIN": "visible", "CC_RUN_COMMAND": "true"})
    assert result.returncode == 0, result
    text = result.stdout.decode()
    lines = text.splitlines()
    keys = [line.split("=", 1)[0] for line in lines]
    assert keys == sorted(keys)
    assert "FROM_FILE=file value" in lines
    assert "PLAIN=visible" in lines
    assert "DB_PASSWORD=***" in lines
    assert "API_TOKEN=***" in lines
    assert "s3cr3t-password" not in text and "tok-123456789" not in text
    # Values shorter than 6 characters are left alone (SPEC section 8).
    assert "SHORT_SECRET=abc" in lines
    run_id = dict(line.split("=", 1) for line in lines)["CC_TASK_RUN_ID"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        run_id)
    assert "CC_TASK_ATTEMPT=1" in lines


def test_env_with_broken_env_file_exits_125(tmp_path: Path) -> None:
    result = run_cc_task(["env", "--env-file", str(tmp_path / "missing.env")])
    assert result.returncode == 125, result
    assert str(tmp_path / "missing.env") in result.stderr
    assert "Traceback" not in result.stderr


# -- text format ---------------------------------------------------------------------


def test_text_format_passes_output_through_and_marks_events() -> None:
    command = "echo out; echo err >&2; printf 'no newline'"
    result = run_cc_task(["--log-format", "text", "--command", command])
    assert result.returncode == 0, result
    assert result.stdout == b"out\nno newline"
    err_lines = result.stderr.splitlines()
    assert "err" in err_lines
    events = [line for line in err_lines if line != "err"]
    assert events, result.stderr
    assert all(line.startswith("cc-task:") for line in events), events
    assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr.encode())
    assert "{" not in result.stderr


def test_text_format_from_variable_and_no_color() -> None:
    result = run_cc_task(["--command", "echo hi"],
                         env={"CC_TASK_LOG_FORMAT": "TEXT", "NO_COLOR": "1"})
    assert result.stdout == b"hi\n", result
    assert not ANSI.search(result.stderr.encode())


def test_auto_format_is_json_when_stdout_is_a_pipe() -> None:
    result = run_cc_task(["--command", "echo hi"], env={"CC_TASK_LOG_FORMAT": "auto"})
    assert result.output_text() == b"hi\n"  # records parsed: every line was JSON


@pytest.mark.skipif(shutil.which("script") is None, reason="script(1) from util-linux needed")
@pytest.mark.parametrize("no_color", [False, True])
def test_at_a_terminal_output_is_readable_text(no_color: bool) -> None:
    """The issue's acceptance check: at a terminal, readable text and exit status 1."""
    env = make_env("tty", {"CC_TASK_LOG_FORMAT": None, "TERM": "xterm"})
    if no_color:
        env["NO_COLOR"] = "1"
    proc = subprocess.run(
        ["script", "-qfec", f"{CC_TASK} --command 'echo hi && false'", "/dev/null"],
        env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    # script(1) -e returns the child's exit status.
    assert proc.returncode == 1, proc
    text = proc.stdout.replace(b"\r\n", b"\n")
    plain = re.sub(rb"\x1b\[[0-9;]*m", b"", text)
    lines = plain.decode().splitlines()
    assert "hi" in lines, lines
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert any(line.startswith("cc-task:") for line in lines), lines
    if no_color:
        assert not ANSI.search(text), text
    assert "exit" in plain.decode() and "1" in plain.decode()


def test_exit_status_passes_through_os_level_wait(tmp_path: Path) -> None:
    """``cc-task`` is a real process whose status a shell sees (not only Python's view)."""
    proc = subprocess.run(["bash", "-c", f"{CC_TASK} --command 'exit 77' >/dev/null; echo $?"],
                          env=make_env("sh", {}), capture_output=True, timeout=60)
    assert proc.stdout == b"77\n"


def test_launcher_descriptors_not_inherited() -> None:
    # bash's own descriptors, listed by a child ls (``; true`` keeps bash from exec-ing
    # ls, whose directory descriptor would show up): only 0, 1 and 2.
    result = run_cc_task(["--command", "ls /proc/$$/fd; true"])
    fds = sorted(int(x) for x in result.output_text().split())
    assert fds == [0, 1, 2], (fds, result)


def test_os_environ_is_not_leaked_by_the_test_harness() -> None:
    # The harness's clean environment: a variable of the test process is not seen.
    os.environ["CCT_SHOULD_NOT_LEAK"] = "1"
    try:
        result = run_cc_task(["--command", 'echo "${CCT_SHOULD_NOT_LEAK:-unset}"'])
    finally:
        del os.environ["CCT_SHOULD_NOT_LEAK"]
    assert result.output_text() == b"unset\n"


def test_signal_mask_and_ignored_signals_are_reset_in_the_task() -> None:
    """Started from a parent that blocks and ignores signals (a common state under some
    init systems and CI runners), the task still gets a clean slate (SPEC section 5)."""
    import signal
    import sys

    blocked = {signal.SIGALRM, signal.SIGUSR2, signal.SIGTERM}
    ignored = {signal.SIGPIPE, signal.SIGTTOU, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
    wrapper = (
        "import os, signal, sys\n"
        f"signal.pthread_sigmask(signal.SIG_BLOCK, {sorted(int(s) for s in blocked)})\n"
        f"for s in {sorted(int(s) for s in ignored)}: signal.signal(s, signal.SIG_IGN)\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    command = 'grep -E "^Sig(Blk|Ign):" /proc/$$/status; true'
    proc = subprocess.run([sys.executable, "-c", wrapper, CC_TASK, "--command", command],
                          env=make_env("sigmask", {}), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    masks = dict(r["message"].split(":\t") for r in records if r.get("source") == "command")
    blk, ign = int(masks["SigBlk"], 16), int(masks["SigIgn"], 16)
    for sig in blocked:
        assert not blk & (1 << (sig - 1)), f"{sig.name} still blocked in the task"
    for sig in ignored:
        assert not ign & (1 << (sig - 1)), f"{sig.name} still ignored in the task"


def test_check_masks_secret_values_inside_other_settings() -> None:
    result = run_cc_task(["check", "--command", "curl -u admin:Sup3rSecretValue https://x"],
                         env={"DB_PASSWORD": "Sup3rSecretValue"})
    assert result.returncode == 0, result
    assert b"Sup3rSecretValue" not in result.stdout
    assert "***" in json.loads(result.stdout)["CC_RUN_COMMAND"]
