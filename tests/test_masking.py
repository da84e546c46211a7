"""Secrets never reach a record, a report, an error message, `env` or `check` (SPEC 8)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from supervisor.lines import LineSplitter
from supervisor.masking import Masker

SECRET = "s3cr3t-Value-42"


def cc_task(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "CC_TASK_SHUTDOWN": "none", "CC_TASK_LOG_FORMAT": "json"}
    base.update(env or {})
    return subprocess.run(["cc-task", *args], env=base, capture_output=True, timeout=timeout)


def records(out: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def command_text(recs: list[dict[str, object]], stream: str = "stdout") -> str:
    parts = []
    for r in recs:
        if r.get("source") == "command" and r.get("stream") == stream:
            parts.append(str(r["message"]) + ("" if r.get("partial") else "\n"))
    return "".join(parts)


@pytest.mark.parametrize("name", [
    "DB_PASSWORD", "MY_SECRET", "GITHUB_TOKEN", "SSH_PRIVATE", "AWS_CREDENTIALS",
    "STRIPE_API_KEY", "SIGNING_KEY", "CLEVER_TOKEN", "CLEVER_SECRET",
])
def test_secret_names_are_masked_everywhere(name: str, tmp_path: Path) -> None:
    status = tmp_path / "report.json"
    proc = cc_task("--command", f'echo "value=${name}"; echo "${name}" >&2; exit 3',
                   env={name: SECRET, "CC_TASK_STATUS_FILE": str(status)})
    assert proc.returncode == 3
    assert SECRET.encode() not in proc.stdout + proc.stderr
    assert SECRET not in status.read_text()
    recs = records(proc.stdout)
    assert command_text(recs) == "value=***\n"
    assert command_text(recs, "stderr") == "***\n"
    report = json.loads(status.read_text())
    assert report["tail"][-2:] == ["value=***", "***"] or "***" in report["tail"]


def test_short_values_and_innocent_names_are_left_alone() -> None:
    proc = cc_task("--command", 'echo "$API_KEY $GREETING"',
                   env={"API_KEY": "abcde", "GREETING": SECRET})
    assert command_text(records(proc.stdout)) == f"abcde {SECRET}\n"


def test_cc_task_mask_adds_names() -> None:
    proc = cc_task("--command", 'echo "$PLAIN"', env={"PLAIN": SECRET, "CC_TASK_MASK": "PLAIN"})
    assert command_text(records(proc.stdout)) == "***\n"


def test_url_password_of_any_variable_is_masked() -> None:
    uri = "postgresql://user:Pa55-w0rd%40x@db.example:5432/app"
    proc = cc_task("--command", 'echo "$POSTGRESQL_ADDON_URI"; echo "Pa55-w0rd@x"',
                   env={"POSTGRESQL_ADDON_URI": uri})
    text = command_text(records(proc.stdout))
    assert "Pa55-w0rd" not in text
    assert text == "postgresql://user:***@db.example:5432/app\n***\n"


def test_multiline_urlencoded_and_base64_forms() -> None:
    secret = "first-line-secret\nsecond-line-secret"
    enc = urllib.parse.quote("first-line-secret", safe="")
    b64 = base64.b64encode(secret.encode()).decode()
    b64_line = base64.b64encode(b"second-line-secret").decode()
    cmd = (f'echo "$DEPLOY_KEY"; echo "x {enc} y"; echo "{b64}"; echo "{b64_line}"; '
           f'echo "{urllib.parse.quote(secret, safe="")}"')
    proc = cc_task("--command", cmd, env={"DEPLOY_KEY": secret})
    text = command_text(records(proc.stdout))
    # The two-line value is masked whole (one ***) when both lines arrive in one read of
    # the pipe, line by line (two ***) when a read ends between them: both hide it.
    assert text in ("***\nx *** y\n***\n***\n***\n", "***\n***\nx *** y\n***\n***\n***\n")


def test_secret_straddling_two_pipe_reads_is_masked() -> None:
    # The task writes half the secret, waits, then writes the rest: two reads of the pipe.
    half = len(SECRET) // 2
    cmd = (f"printf '%s' 'before {SECRET[:half]}'; sleep 0.3; "
           f"printf '%s\\n' '{SECRET[half:]} after'")
    proc = cc_task("--command", cmd, env={"THE_TOKEN": SECRET})
    recs = records(proc.stdout)
    assert command_text(recs) == "before *** after\n"
    assert SECRET.encode() not in proc.stdout


def test_secret_straddling_the_split_of_a_long_line_is_masked() -> None:
    # With CC_TASK_LOG_MAX_LINE=64 the secret would fall across a cut at byte 64.
    prefix = "a" * 58
    cmd = f"printf '%s%s%s\\n' '{prefix}' \"$THE_TOKEN\" '{'b' * 200}'"
    proc = cc_task("--command", cmd,
                   env={"THE_TOKEN": SECRET, "CC_TASK_LOG_MAX_LINE": "64"})
    recs = records(proc.stdout)
    parts = [r for r in recs if r.get("source") == "command"]
    assert len(parts) > 1 and all(len(str(r["message"]).encode()) <= 64 for r in parts)
    assert command_text(recs) == prefix + "***" + "b" * 200 + "\n"
    assert b"s3cr3t" not in proc.stdout


def test_secret_in_a_long_line_without_newline_across_reads() -> None:
    cmd = ("head -c 100000 /dev/zero | tr '\\0' x; printf '%s' \"$THE_TOKEN\"; "
           "sleep 0.2; head -c 50000 /dev/zero | tr '\\0' y")
    proc = cc_task("--command", cmd, env={"THE_TOKEN": SECRET})
    text = command_text(records(proc.stdout))
    assert text == "x" * 100000 + "***" + "y" * 50000
    assert SECRET.encode() not in proc.stdout


def test_error_messages_env_and_check_are_masked(tmp_path: Path) -> None:
    # A malformed value of a secret-named variable: the error names it, hides the value.
    proc = cc_task("--command", "true", env={"CC_TASK_TIMEOUT": SECRET, "X_TOKEN": SECRET})
    assert proc.returncode == 125
    assert SECRET.encode() not in proc.stderr + proc.stdout
    assert b"CC_TASK_TIMEOUT" in proc.stderr
    env_out = cc_task("env", env={"APP_SECRET": SECRET})
    assert env_out.returncode == 0
    assert b"APP_SECRET=***\n" in env_out.stdout
    assert SECRET.encode() not in env_out.stdout
    check = cc_task("check", "--command", f"echo {SECRET}", env={"APP_SECRET": SECRET,
                    "CC_METRICS_PROMETHEUS_PASSWORD": "metrics-pw-1"})
    assert check.returncode == 0
    assert SECRET.encode() not in check.stdout
    assert b"metrics-pw-1" not in check.stdout


def test_hook_output_and_events_are_masked() -> None:
    proc = cc_task("--command", f"echo {SECRET}", env={
        "CC_PRE_RUN_HOOK": 'echo "hook sees $THE_TOKEN"', "THE_TOKEN": SECRET,
        "CC_TASK_HOOKS_DIR": "/nonexistent"})
    assert proc.returncode == 0
    assert SECRET.encode() not in proc.stdout
    recs = records(proc.stdout)
    started = [r for r in recs if r.get("event") == "config.loaded"][0]
    assert started["command"] == "echo ***"
    report = [r for r in recs if r.get("event") == "task.finished"][0]["report"]
    assert isinstance(report, dict) and report["command"] == "echo ***"


def test_splitter_masks_across_any_chunking() -> None:
    masker = Masker([SECRET])
    data = (b"x" * 37 + SECRET.encode() + b"y" * 11 + b"\n") * 5 + SECRET.encode()
    for size in (1, 2, 3, 7, 16, 64):
        splitter = LineSplitter(16, masker)
        out = []
        for i in range(0, len(data), size):
            recs, partial = splitter.feed(data[i:i + size])
            out.append((recs, set(partial)))
        out.append(splitter.flush())
        joined = b"".join(
            r if i in set(p) else r + b"\n" for recs, p in out for i, r in enumerate(recs)
        )
        assert SECRET.encode() not in joined
        assert joined == data.replace(SECRET.encode(), b"***")
