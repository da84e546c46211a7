"""Driving the installed ``cc-task`` console script as a black box, for every test file.

Contract:

- ``run_cc_task(args, env=None, cwd=None, timeout=60, input=None) -> Result`` runs
  ``cc-task`` to completion in a *clean* environment: ``PATH``, ``HOME``, ``LANG``, a
  per-run ``CCT_TEST_TAG`` (used to find and kill anything left behind), then
  ``CC_TASK_SHUTDOWN=none`` and ``CC_TASK_LOG_FORMAT=json`` as defaults, then ``env``
  (which overrides all of these; a value of ``None`` removes a variable).
- ``Result.records`` holds the JSON records of stdout, parsed strictly: a stdout line
  that is not a JSON object fails the test at once. Parsing happens when the run is a
  JSON run (``run`` with json format); pass ``json_output=False``/``True`` to force it.
- ``events(records, name)``, ``output_text(records, source, stream)``, ``report(records)``
  read the record stream.
- ``start_cc_task(...) -> Background`` starts a run in the background; its
  ``wait_for(predicate, timeout)`` returns the first record (new or already seen)
  matching ``predicate`` or fails the test at the deadline. ``kill()`` (also called by
  the ``cc_task_bg`` fixture of conftest.py at teardown) SIGKILLs cc-task and every
  process carrying its tag.

Nothing here sleeps to synchronise: waits are on output or on polling with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TAG_VARIABLE = "CCT_TEST_TAG"

#: Defaults every run gets unless ``env`` says otherwise: never power the machine off,
#: and machine-readable logs even though stdout is a pipe anyway.
DEFAULT_ENV: dict[str, str] = {"CC_TASK_SHUTDOWN": "none", "CC_TASK_LOG_FORMAT": "json"}


def cc_task_path() -> str:
    """The console script installed next to the running Python (a venv's, or pyenv's),
    else the first ``cc-task`` on ``PATH``. Calling the real script, not a pyenv shim,
    keeps the clean environment working and saves a bash start per run."""
    beside = os.path.join(os.path.dirname(sys.executable), "cc-task")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("cc-task")
    if found is None:
        raise RuntimeError("cc-task is not installed: pip install -e '.[test]'")
    return found


CC_TASK = cc_task_path()


def base_env(tag: str) -> dict[str, str]:
    """PATH (with cc-task's folder first), HOME, LANG and the cleanup tag."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    folder = os.path.dirname(CC_TASK)
    return {
        "PATH": f"{folder}:{path}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        TAG_VARIABLE: tag,
    }


def make_env(tag: str, env: Mapping[str, str | None] | None) -> dict[str, str]:
    """The environment of one run; see the module docstring for the layering."""
    full: dict[str, str | None] = {**base_env(tag), **DEFAULT_ENV, **(env or {})}
    return {k: v for k, v in full.items() if v is not None}


def parse_records(stdout: bytes) -> list[dict[str, Any]]:
    """One JSON object per line; anything else fails the test loudly."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(stdout.split(b"\n"), 1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise AssertionError(
                f"stdout line {number} is not JSON ({exc}): {line[:300]!r}"
            ) from None
        if not isinstance(record, dict):
            raise AssertionError(f"stdout line {number} is not a JSON object: {line[:300]!r}")
        records.append(record)
    if stdout and not stdout.endswith(b"\n"):
        raise AssertionError(f"stdout does not end with a newline: {stdout[-200:]!r}")
    return records


def _is_json_run(args: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether stdout should hold JSON records: a ``run`` in json format."""
    if args and args[0] in ("check", "env"):
        return False
    if "--help" in args or "-h" in args or "--version" in args:
        return False
    fmt = env.get("CC_TASK_LOG_FORMAT", "auto")
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            fmt = args[i + 1]
        elif arg.startswith("--log-format="):
            fmt = arg.split("=", 1)[1]
    # auto is json since stdout is a pipe here; a malformed value falls back to auto.
    return fmt.strip().lower() != "text"


@dataclass
class Result:
    """A finished run of cc-task."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: str
    records: list[dict[str, Any]] = field(default_factory=list)
    tag: str = ""

    def events(self, name: str) -> list[dict[str, Any]]:
        return events(self.records, name)

    def report(self) -> dict[str, Any]:
        return report(self.records)

    def output_text(self, source: str = "command", stream: str = "stdout") -> bytes:
        return output_text(self.records, source, stream)

    def __repr__(self) -> str:  # what pytest shows when an assertion fails
        return (f"Result(args={self.args!r}, returncode={self.returncode}, "
                f"stderr={self.stderr[-2000:]!r}, stdout={self.stdout[-3000:]!r})")


def run_cc_task(
    args: Sequence[str],
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60,
    input: bytes | None = None,
    json_output: bool | None = None,
    allow_leftovers: bool = False,
) -> Result:
    """Run ``cc-task *args`` to completion; see the module docstring.

    Processes carrying the run's tag after cc-task exited are killed, and fail the test
    unless ``allow_leftovers`` (SPEC section 5: none survives the task)."""
    tag = uuid.uuid4().hex
    full_env = make_env(tag, env)
    try:
        proc = subprocess.run(
            [CC_TASK, *args], env=full_env, cwd=cwd, timeout=timeout,
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        kill_tagged(tag)
        raise
    # Whatever the launcher failed to stop must not outlive the test. A process SIGKILLed
    # by the launcher just before it exited may take a moment to become a zombie.
    if not wait_until(lambda: not tagged_pids(tag), 2.0):
        leftovers = kill_tagged(tag)
    else:
        leftovers = []
    result = Result(list(args), proc.returncode, proc.stdout,
                    proc.stderr.decode("utf-8", "replace"), tag=tag)
    if leftovers and not allow_leftovers:
        raise AssertionError(f"processes outlived cc-task (killed now): {leftovers}; {result!r}")
    if json_output is None:
        json_output = _is_json_run(list(args), full_env)
    if json_output:
        result.records = parse_records(proc.stdout)
    return result


# -- reading records -----------------------------------------------------------------


def events(records: Iterable[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """The launcher events called ``name``, in order."""
    return [dict(r) for r in records if r.get("source") == "supervisor" and r.get("event") == name]


def output_text(
    records: Iterable[Mapping[str, Any]], source: str = "command", stream: str = "stdout"
) -> bytes:
    """The bytes a stream carried: each message (UTF-8) plus ``\\n`` unless partial."""
    parts: list[bytes] = []
    for r in records:
        if r.get("source") == source and r.get("stream") == stream:
            parts.append(r["message"].encode("utf-8"))
            if not r.get("partial"):
                parts.append(b"\n")
    return b"".join(parts)


def report(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The report of the (only) ``task.finished`` event."""
    finished = events(records, "task.finished")
    assert len(finished) == 1, f"expected one task.finished event, got {finished!r}"
    rep = finished[0].get("report")
    assert isinstance(rep, dict), f"task.finished has no report: {finished[0]!r}"
    return rep


# -- processes left behind -------------------------------------------------------------


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries ``CCT_TEST_TAG=tag`` (zombies excluded)."""
    needle = f"{TAG_VARIABLE}={tag}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read() + b"\0"
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue  # gone, or a kernel thread
        if state != b"Z" and (data.startswith(needle) or b"\0" + needle in data):
            found.append(pid)
    return found


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every process carrying ``tag``; return their pids."""
    pids = tagged_pids(tag)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- background runs -------------------------------------------------------------------

_EOF = object()


class Background:
    """A cc-task running in the background, its stdout read line by line by a thread.

    ``records`` grows as records arrive; ``wait_for`` blocks on new lines, not on sleeps.
    Stdout must be JSON (the default format); stderr is collected as text.
    """

    def __init__(self, proc: subprocess.Popen[bytes], tag: str, args: list[str]) -> None:
        self.proc = proc
        self.tag = tag
        self.args = args
        self.records: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._lines: queue.Queue[object] = queue.Queue()
        self._eof = False
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass  # closed by kill() during teardown
        finally:
            self._lines.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self._stderr.append(chunk)
        except OSError:
            pass  # closed by kill() during teardown

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def _take(self, block_for: float) -> bool:
        """Move one line into ``records``; False on timeout or end of stream."""
        if self._eof:
            return False
        try:
            item = self._lines.get(timeout=max(block_for, 0.0))
        except queue.Empty:
            return False
        if item is _EOF:
            self._eof = True
            return False
        assert isinstance(item, bytes)
        self.raw.append(item)
        self.records.extend(parse_records(item))
        return True

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        """The first record satisfying ``predicate``; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for record in self.records[checked:]:
                if predicate(record):
                    return record
            checked = len(self.records)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no awaited record within {timeout}s; records={self.records!r} "
                    f"stderr={self.stderr!r}")
            if not self._take(remaining) and self._eof:
                raise AssertionError(
                    f"cc-task's stdout ended without the awaited record; "
                    f"records={self.records!r} stderr={self.stderr!r}")

    def wait_for_event(self, name: str, timeout: float = 20) -> dict[str, Any]:
        return self.wait_for(
            lambda r: r.get("source") == "supervisor" and r.get("event") == name, timeout)

    def wait_for_output(self, message: str, timeout: float = 20) -> dict[str, Any]:
        return self.wait_for(
            lambda r: r.get("source") == "command" and r.get("message") == message, timeout)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        """Wait for cc-task to exit, then read the rest of its stdout; its exit status."""
        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._take(deadline - time.monotonic())
        for t in self._threads:
            t.join(timeout=max(deadline - time.monotonic(), 0.1))
        return code

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> list[int]:
        """SIGKILL cc-task and everything carrying its tag (teardown)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        killed = kill_tagged(self.tag)
        # With every writer gone the readers see end of file: let them finish first.
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return killed


def start_cc_task(
    args: Sequence[str],
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Background:
    """Start ``cc-task *args`` in the background, in a session of its own (so that signals
    sent to the test's process group do not reach it), with the environment of
    ``run_cc_task``. Always pair with ``kill()`` (the ``cc_task_bg`` fixture does)."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [CC_TASK, *args], env=make_env(tag, env), cwd=cwd, stdin=stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    return Background(proc, tag, list(args))
