"""The record stream (SPEC section 8): joining each message plus a newline unless partial
gives back the exact text the task wrote; long lines are split, invalid UTF-8 is replaced
and flagged; ``seq`` counts every record 1, 2, 3...; times are RFC 3339 UTC with
microseconds."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import Result, run_cc_task

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
DEFAULT_MAX_LINE = 16384


def cat_files(tmp_path: Path, stdout: bytes, stderr: bytes = b"",
              env: dict[str, str | None] | None = None) -> Result:
    """Run a task writing exactly these bytes on its stdout and stderr."""
    (tmp_path / "out.bin").write_bytes(stdout)
    (tmp_path / "err.bin").write_bytes(stderr)
    result = run_cc_task(["--command", f"cat {tmp_path}/out.bin; cat {tmp_path}/err.bin >&2"],
                         env=env)
    assert result.returncode == 0, result
    return result


def command_records(result: Result, stream: str | None = None) -> list[dict[str, Any]]:
    return [r for r in result.records if r.get("source") == "command"
            and (stream is None or r["stream"] == stream)]


def check_sizes(result: Result, max_line: int) -> None:
    """Every record holds at most ``max_line`` bytes of the task's output. A replaced
    invalid byte grows to three (U+FFFD), so for flagged records count characters: each
    stands for at least one byte of output."""
    for r in command_records(result):
        size = len(r["message"]) if r.get("invalid_utf8") else len(r["message"].encode())
        assert size <= max_line, (size, r)


def test_100kb_line_is_split_into_partial_records(tmp_path: Path) -> None:
    line = bytes(random.Random(1).choice(b"abcdefghij0123456789") for _ in range(100_000))
    data = b"before\n" + line + b"\nafter\n"
    result = cat_files(tmp_path, data)
    assert result.output_text() == data
    check_sizes(result, DEFAULT_MAX_LINE)
    records = command_records(result)
    pieces = [r for r in records if r["message"] not in ("before", "after")]
    assert len(pieces) == -(-100_000 // DEFAULT_MAX_LINE)  # ceil: 7 records
    assert all(r.get("partial") is True for r in pieces[:-1])
    assert "partial" not in pieces[-1] or pieces[-1]["partial"] is False
    assert all(len(r["message"]) == DEFAULT_MAX_LINE for r in pieces[:-1])
    rep = result.report()
    assert rep["output"]["stdout_bytes"] == len(data)
    assert rep["output"]["stdout_lines"] == 3


def test_last_line_without_newline_is_partial(tmp_path: Path) -> None:
    result = cat_files(tmp_path, b"one\ntwo", b"err without newline")
    assert result.output_text() == b"one\ntwo"
    assert result.output_text(stream="stderr") == b"err without newline"
    last = command_records(result, "stdout")[-1]
    assert last["message"] == "two" and last["partial"] is True
    assert command_records(result, "stderr")[-1]["partial"] is True


@pytest.mark.parametrize("data", [
    b"carriage\rreturn\r\nwindows line\r\n\r\n",
    b"\n\n\nempty lines\n\n",
    b"\n",
    b"",
    b"tabs\tand \x1b[31mescapes\x1b[0m and \x00 NUL and \x7f\n",
    b"trailing spaces   \n   \n",
], ids=["cr", "empty-lines", "one-newline", "nothing", "controls", "spaces"])
def test_exact_text_round_trip(tmp_path: Path, data: bytes) -> None:
    result = cat_files(tmp_path, data, data)
    assert result.output_text() == data
    assert result.output_text(stream="stderr") == data
    assert len(command_records(result, "stdout")) == data.count(b"\n") + (
        0 if data.endswith(b"\n") or not data else 1)


def test_utf8_multibyte_never_split_inside_a_character(tmp_path: Path) -> None:
    text = "é日本語🎉ü€𝄞" * 40 + "\n" + "x" * 15 + "日" + "\n" + "🎉" * 9 + "\n"
    data = text.encode()
    result = cat_files(tmp_path, data, data, env={"CC_TASK_LOG_MAX_LINE": "16"})
    for stream in ("stdout", "stderr"):
        assert result.output_text(stream=stream) == data
    check_sizes(result, 16)
    for r in command_records(result):
        assert "\ufffd" not in r["message"], r
        assert "invalid_utf8" not in r, r
    # "x"*15 + a 3-byte character: the character moves to the next record.
    messages = [r["message"] for r in command_records(result, "stdout")]
    assert "x" * 15 in messages


@pytest.mark.parametrize("max_line", [16, 17, 18, 19, 64])
def test_every_cut_position_in_multibyte_text(tmp_path: Path, max_line: int) -> None:
    # Prefixes of 0..4 ASCII bytes shift every 4-byte character across each cut position.
    data = b"".join(("a" * k + "🎉" * 20 + "\n").encode() for k in range(5))
    result = cat_files(tmp_path, data, env={"CC_TASK_LOG_MAX_LINE": str(max_line)})
    assert result.output_text() == data
    check_sizes(result, max_line)
    assert not any("\ufffd" in r["message"] for r in command_records(result))


def test_invalid_utf8_is_replaced_and_flagged(tmp_path: Path) -> None:
    data = b"good line\nbad \xff\xfe bytes\ntruncated \xe6\x97\nlatin-1 caf\xe9\nok again\n"
    result = cat_files(tmp_path, data)
    records = {r["message"]: r for r in command_records(result)}
    assert records["good line"].get("invalid_utf8") is None
    assert records["ok again"].get("invalid_utf8") is None
    for raw in data.splitlines()[1:4]:
        message = raw.decode("utf-8", "replace")
        assert "\ufffd" in message
        assert records[message]["invalid_utf8"] is True, records
    assert result.output_text() == data.decode("utf-8", "replace").encode()


def test_every_byte_value(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4 + b"\n"
    result = cat_files(tmp_path, data, env={"CC_TASK_LOG_MAX_LINE": "100"})
    check_sizes(result, 100)
    text = result.output_text()
    # Newlines are where they were; the rest decodes per record with replacement.
    assert text.count(b"\n") == data.count(b"\n")
    assert any(r.get("invalid_utf8") for r in command_records(result))
    assert result.report()["output"]["stdout_bytes"] == len(data)


def test_seq_time_and_schema_across_all_records(tmp_path: Path) -> None:
    command = ("for i in $(seq 1 200); do echo out $i; echo err $i >&2; done; "
               "printf '%0040000d' 0")
    before = dt.datetime.now(dt.UTC)
    result = run_cc_task(["--command", command])
    after = dt.datetime.now(dt.UTC)
    assert [r["seq"] for r in result.records] == list(range(1, len(result.records) + 1))
    times = []
    for r in result.records:
        assert TIME.fullmatch(r["time"]), r
        times.append(dt.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%f%z"))
        assert r["level"] in ("debug", "info", "warning", "error")
        assert isinstance(r["message"], str)
        assert r["source"] in ("command", "supervisor")
        if r["source"] == "command":
            assert r["level"] == "info"
            assert r["stream"] in ("stdout", "stderr")
            assert "event" not in r
            assert set(r) <= {"time", "level", "source", "stream", "seq", "message", "partial",
                              "invalid_utf8"}, r
        else:
            assert isinstance(r["event"], str)
    assert times == sorted(times)
    assert before - dt.timedelta(seconds=1) <= times[0] and times[-1] <= after + dt.timedelta(
        seconds=1)
    # Order within each stream is kept, nothing dropped or duplicated.
    out = result.output_text().split(b"\n")
    assert out[:200] == [f"out {i}".encode() for i in range(1, 201)]
    assert out[200] == b"0" * 40000
    assert result.output_text(stream="stderr") == b"".join(
        f"err {i}\n".encode() for i in range(1, 201))


def test_events_of_a_run_in_order() -> None:
    result = run_cc_task(["--command", "echo hi"])
    names = [r["event"] for r in result.records if r["source"] == "supervisor"]
    assert names[0] == "config.loaded"
    assert names.index("command.started") < names.index("command.finished") \
        < names.index("task.finished")
    assert names[-1] == "task.finished"
    started = result.events("command.started")[0]
    assert isinstance(started["pid"], int) and started["pid"] == result.report()["pid"]
    finished = result.events("command.finished")[0]
    assert finished["exit_code"] == 0 and finished["signal"] is None
    assert isinstance(finished["duration_seconds"], float)
    output = [r for r in result.records if r["source"] == "command"]
    assert started["seq"] < output[0]["seq"] < finished["seq"]


def test_platform_ids_on_events() -> None:
    result = run_cc_task(["--command", "true"], env={
        "APP_ID": "app_1234", "INSTANCE_ID": "inst-5678", "CC_DEPLOYMENT_ID": "dep-9"})
    for r in result.records:
        if r["source"] == "supervisor":
            assert (r["app_id"], r["instance_id"], r["deployment_id"]) == (
                "app_1234", "inst-5678", "dep-9"), r
    rep = result.report()
    assert (rep["app_id"], rep["instance_id"], rep["deployment_id"]) == (
        "app_1234", "inst-5678", "dep-9")


def test_many_lines_nothing_dropped(tmp_path: Path) -> None:
    result = run_cc_task(["--command", "seq 1 100000; seq 1 50000 >&2"], timeout=120)
    assert result.output_text() == b"".join(b"%d\n" % i for i in range(1, 100001))
    assert result.output_text(stream="stderr") == b"".join(b"%d\n" % i for i in range(1, 50001))
    rep = result.report()
    assert rep["output"]["stdout_lines"] == 100000
    assert rep["output"]["stderr_lines"] == 50000
    assert [r["seq"] for r in result.records] == list(range(1, len(result.records) + 1))


def test_output_of_background_job_is_logged_until_bash_exits() -> None:
    result = run_cc_task(["--command", "(echo from-subshell) & wait; echo done"])
    assert result.output_text() == b"from-subshell\ndone\n"
