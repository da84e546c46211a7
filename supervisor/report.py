"""The report (SPEC section 10): one JSON object of at most 4096 bytes.

>>> r = build(result="success", exit_status=0, command="true", run_id="x")
>>> len(encode(r)) <= MAX_BYTES
True
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from supervisor.masking import Masker

SCHEMA = 1
MAX_BYTES = 4096  # the /dev/termination-log convention
COMMAND_BYTES = 512
TAIL_LINES = 80
TAIL_BYTES = 2048


def rfc3339(t: float | None) -> str | None:
    if t is None or t <= 0:
        return None
    second = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + \
        f".{int((t - second) * 1_000_000):06d}Z"


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def tail_lines(records: Iterable[bytes], masker: Masker | None = None) -> list[str]:
    """The last records as text: at most 80 lines and 2048 bytes, newest kept."""
    out: list[str] = []
    size = 0
    for raw in reversed(list(records)[-TAIL_LINES:]):
        line = raw.decode("utf-8", "replace")
        if masker:
            line = masker.mask_text(line)
        n = len(line.encode()) + 1
        if size + n > TAIL_BYTES:
            room = TAIL_BYTES - size - 1
            if room > 0 and not out:
                out.append(_cut(line, room))
            break
        out.append(line)
        size += n
    out.reverse()
    return out


def build(
    *,
    result: str,
    exit_status: int,
    command: str | None,
    run_id: str,
    exit_code: int | None = None,
    signal: str | None = None,
    timed_out: bool = False,
    killed: bool = False,
    started_at: float | None = None,
    finished_at: float | None = None,
    duration_seconds: float = 0.0,
    pid: int | None = None,
    output: Mapping[str, int] | None = None,
    cpu_seconds: float | None = None,
    max_rss_bytes: int | None = None,
    hooks: Mapping[str, Mapping[str, Any]] | None = None,
    tail: list[str] | None = None,
    platform: Mapping[str, str | None] | None = None,
    masker: Masker | None = None,
) -> dict[str, Any]:
    masker = masker or Masker()
    platform = platform or {}
    return {
        "schema": SCHEMA,
        "result": result,
        "exit_status": exit_status,
        "exit_code": exit_code,
        "signal": signal,
        "timed_out": timed_out,
        "killed": killed,
        "run_id": run_id,
        "started_at": rfc3339(started_at),
        "finished_at": rfc3339(finished_at),
        "duration_seconds": round(duration_seconds, 6),
        "command": _cut(masker.mask_text(command), COMMAND_BYTES) if command else command,
        "pid": pid,
        "output": {
            "stdout_lines": 0, "stderr_lines": 0, "stdout_bytes": 0, "stderr_bytes": 0,
            **(output or {}),
        },
        "resources": {"cpu_seconds": cpu_seconds, "max_rss_bytes": max_rss_bytes},
        "hooks": dict(hooks or {}),
        "tail": list(tail or []),
        "app_id": platform.get("app_id"),
        "deployment_id": platform.get("deployment_id"),
        "instance_id": platform.get("instance_id"),
    }


def encode(report: Mapping[str, Any]) -> bytes:
    """The report as JSON, shortened so that it fits in 4096 bytes with a final newline
    (the tail goes first, then the command)."""
    limit = MAX_BYTES - 1
    data = orjson.dumps(report)
    if len(data) <= limit:
        return data
    shrunk = dict(report)
    tail = list(shrunk.get("tail") or [])
    while tail and len(data) > limit:
        tail.pop(0)
        shrunk["tail"] = tail
        data = orjson.dumps(shrunk)
    if len(data) > limit and shrunk.get("command"):
        over = len(data) - limit
        size = len(shrunk["command"].encode())
        shrunk["command"] = _cut(shrunk["command"], max(0, size - over - 8))
        data = orjson.dumps(shrunk)
    return data


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    import tempfile  # only runs with a status file need it

    fd, tmp = tempfile.mkstemp(prefix=".cc-task-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
