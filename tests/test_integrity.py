"""Nothing is lost: every byte the task writes reaches the log, in order (SPEC 8, issue 5)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "CC_TASK_SHUTDOWN": "none", "CC_TASK_LOG_FORMAT": "json"}
    env.update(extra or {})
    return env


def _join(lines: list[bytes], stream: str = "stdout") -> tuple[bytes, bool]:
    """Rebuild a stream from the records; also say whether any record was flagged invalid."""
    out = bytearray()
    invalid = False
    for line in lines:
        rec = json.loads(line)
        if rec.get("source") != "command" or rec.get("stream") != stream:
            continue
        out += rec["message"].encode("utf-8", "surrogatepass")
        if not rec.get("partial"):
            out += b"\n"
        invalid = invalid or bool(rec.get("invalid_utf8"))
    return bytes(out), invalid


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000) | st.text(max_size=1500).map(lambda s: s.encode()),
       max_line=st.sampled_from([16, 40, 16384]))
def test_random_bytes_round_trip_through_the_real_launcher(data: bytes, max_line: int) -> None:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        proc = subprocess.run(["cc-task", "--command", f"cat {f.name}"], capture_output=True,
                              env=_env({"CC_TASK_LOG_MAX_LINE": str(max_line)}), timeout=60)
    finally:
        os.unlink(f.name)
    assert proc.returncode == 0, proc.stderr
    joined, invalid = _join(proc.stdout.splitlines())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert invalid, "invalid UTF-8 must be flagged"
        expected = data.decode("utf-8", "replace")
        if max_line == 16384:  # no cut in these inputs: exactly Python's replacement
            assert joined.decode() == expected
        else:
            # A cut inside an invalid sequence may turn one U+FFFD into two; everything
            # else is exact (cuts never split a valid sequence).
            assert joined.decode().replace("\ufffd", "") == expected.replace("\ufffd", "")
    else:
        assert not invalid
        assert joined == text.encode()


def test_a_million_lines_none_lost_none_duplicated(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with out.open("wb") as f:
        proc = subprocess.run(["cc-task", "--command", "seq 1000000"], stdout=f,
                              stderr=subprocess.PIPE, env=_env(), timeout=120)
    assert proc.returncode == 0
    expected = 1
    seq = 0
    with out.open("rb") as f:
        for line in f:
            rec = json.loads(line)
            seq += 1
            assert rec["seq"] == seq
            if rec.get("source") == "command":
                assert rec["message"] == str(expected)
                expected += 1
    assert expected == 1_000_001


def test_interleaved_streams_keep_their_own_order() -> None:
    cmd = "for i in $(seq 5000); do echo out$i; echo err$i >&2; done"
    proc = subprocess.run(["cc-task", "--command", cmd], capture_output=True, env=_env(),
                          timeout=60)
    lines = proc.stdout.splitlines()
    out, _ = _join(lines, "stdout")
    err, _ = _join(lines, "stderr")
    assert out == b"".join(b"out%d\n" % i for i in range(1, 5001))
    assert err == b"".join(b"err%d\n" % i for i in range(1, 5001))


def test_slow_reader_slows_the_task_and_loses_nothing() -> None:
    # The launcher's stdout is a pipe read in small slices: writes block, the task waits.
    # (The pauses make the reader slow on purpose; nothing is synchronised on them.)
    with subprocess.Popen(["cc-task", "--command", "seq 200000"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=_env()) as proc:
        assert proc.stdout is not None
        chunks = []
        while True:
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunks) < 300:
                time.sleep(0.002)
        assert proc.wait(timeout=60) == 0
    joined, _ = _join(b"".join(chunks).splitlines())
    assert joined == b"".join(b"%d\n" % i for i in range(1, 200001))


def test_closed_stdout_the_task_completes_and_the_report_is_written(tmp_path: Path) -> None:
    status = tmp_path / "report.json"
    marker = tmp_path / "done"
    shutdown = tmp_path / "shutdown"
    r, w = os.pipe()
    os.close(r)  # EPIPE on the launcher's first write
    try:
        proc = subprocess.run(
            ["cc-task", "--command", f"seq 100000; touch {marker}"], stdout=w,
            stderr=subprocess.PIPE, timeout=60,
            env=_env({"CC_TASK_STATUS_FILE": str(status),
                      "CC_TASK_SHUTDOWN_COMMAND": f"touch {shutdown}"}))
    finally:
        os.close(w)
    assert proc.returncode == 0
    assert marker.exists() and shutdown.exists()
    report = json.loads(status.read_text())
    assert report["result"] == "success"
    assert report["output"]["stdout_lines"] == 100000
    assert b"stdout is closed" in proc.stderr
    assert b"Traceback" not in proc.stderr
