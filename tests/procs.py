"""Driving a real ``cc-task`` from the real-process tests of issue 3.

``Launch`` starts ``cc-task`` (optionally under a prefix such as ``unshare ...``) in its own
session, reads its JSON records line by line on a thread, and lets a test wait for a
record with a deadline instead of sleeping. ``Launches`` is a context manager that kills
every process tree it started when the test ends, whatever happened.

Every launch gets ``CC_TASK_SHUTDOWN=none`` (a test must never power the machine off),
``CC_TASK_LOG_FORMAT=json`` and an empty hooks directory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SIGCHILD = str(TESTS / "sigchild.py")
PYTHON = sys.executable


def cc_task_argv() -> list[str]:
    """The console script; the real one next to this Python rather than a pyenv shim, so
    that the pid the test sees is the launcher's own from the start."""
    beside = Path(PYTHON).with_name("cc-task")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cc-task")
    return [found] if found else [PYTHON, "-m", "supervisor"]


def sigchild(*args: str) -> str:
    """A shell command line running the helper child with ``args``."""
    return " ".join([PYTHON, SIGCHILD, *args])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any CC_* knob, plus the safe defaults."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CC_", "APP_", "INSTANCE_")) and k not in ("NO_COLOR",)}
    env.update(
        CC_TASK_SHUTDOWN="none",
        CC_TASK_LOG_FORMAT="json",
        CC_TASK_HOOKS_DIR=os.path.join(tempfile.gettempdir(), "cc-task-tests-no-hooks"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class Timeout(AssertionError):
    """A record a test waited for did not come in time."""


class Launch:
    """One running ``cc-task``: its records as they come, its stderr, its exit."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None,
                 prefix: Sequence[str] = (), cwd: str | Path = REPO) -> None:
        self.argv = [*prefix, *cc_task_argv(), *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=base_env(env), cwd=str(cwd), start_new_session=True,
        )
        self.records: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._eof = False
        self._stderr = bytearray()
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()
        self.returncode: int | None = None
        self.elapsed: float | None = None

    # -- reading ----------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        # A stream closed under us by ``kill`` ends the reading, never the test.
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                self.raw.append(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"_unparsed": line.decode(errors="replace")}
                self._queue.put(record)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(stream.fileno(), 65536):
                self._stderr += chunk

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def _pump(self, deadline: float) -> bool:
        """Move one record from the reader to ``records``; False on timeout or EOF."""
        if self._eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            record = self._queue.get(timeout=left)
        except queue.Empty:
            return False
        if record is None:
            self._eof = True
            return False
        self.records.append(record)
        return True

    def _drain(self) -> None:
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                return
            if record is None:
                self._eof = True
                return
            self.records.append(record)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                 what: str = "a record") -> dict[str, Any]:
        """The first record (since the start) matching ``predicate``; waits up to
        ``timeout`` seconds for it to come, else fails the test with what came."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for record in self.records[checked:]:
                if predicate(record):
                    return record
            checked = len(self.records)
            if not self._pump(deadline):
                self._drain()
                for record in self.records[checked:]:
                    if predicate(record):
                        return record
                raise Timeout(f"no {what} within {timeout}s; records so far:\n"
                              + "\n".join(json.dumps(r) for r in self.records[-40:])
                              + f"\nstderr: {self.stderr[-2000:]}")

    def wait_line(self, text: str, timeout: float = 10.0, exact: bool = True) -> dict[str, Any]:
        """An output record of the command whose message is (or starts with) ``text``."""
        def match(r: dict[str, Any]) -> bool:
            msg = r.get("message", "")
            return r.get("source") == "command" and (msg == text if exact
                                                      else msg.startswith(text))
        return self.wait_for(match, timeout, f"output line {text!r}")

    def wait_event(self, name: str, timeout: float = 10.0,
                   **fields: Any) -> dict[str, Any]:
        def match(r: dict[str, Any]) -> bool:
            return r.get("event") == name and all(r.get(k) == v for k, v in fields.items())
        return self.wait_for(match, timeout, f"event {name} {fields or ''}")

    def wait_ready(self, timeout: float = 15.0) -> int:
        """Waits for the helper child's ``ready <pid>`` line; returns that pid."""
        record = self.wait_line("ready ", timeout, exact=False)
        return int(record["message"].split()[1])

    # -- acting -----------------------------------------------------------------------

    def send(self, signum: int, pid: int | None = None) -> None:
        os.kill(pid if pid is not None else self.proc.pid, signum)

    def finish(self, timeout: float = 30.0) -> int:
        """Waits for the launcher to exit and for all its records; returns its status as
        a shell would (128+N when it died from signal N)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"cc-task still running after {timeout}s; records:\n"
                          + "\n".join(json.dumps(r) for r in self.records[-40:])) from None
        self.elapsed = time.monotonic() - self.started
        self._out.join(5)
        self._err.join(5)
        self._drain()
        self.returncode = code if code >= 0 else 128 - code
        return self.returncode

    # -- reading the run --------------------------------------------------------------

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def lines(self, stream: str | None = None) -> list[str]:
        """The command's output lines, in order."""
        return [r["message"] for r in self.records if r.get("source") == "command"
                and (stream is None or r.get("stream") == stream)]

    @property
    def report(self) -> dict[str, Any]:
        finished = self.events("task.finished")
        assert finished, f"no task.finished event; stderr: {self.stderr[-2000:]}"
        report: dict[str, Any] = finished[-1]["report"]
        return report

    def dump(self) -> str:
        """Everything, for assertion messages."""
        return ("\n".join(json.dumps(r) for r in self.records)
                + f"\nstderr: {self.stderr[-3000:]}")

    # -- teardown ---------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the launcher and every process below it (also those in other sessions:
        the task runs in its own one)."""
        launchers = {self.proc.pid, *children_of(self.proc.pid)}  # unshare's child too
        for _ in range(3):
            pids = descendants(self.proc.pid)
            if self.proc.poll() is None:
                pids.append(self.proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        remove_task_cgroups(launchers)
        self._out.join(2)
        self._err.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Launches:
    """Starts launches for one test and kills them all (and stray pids) at the end."""

    def __init__(self) -> None:
        self.started: list[Launch] = []
        self.strays: list[tuple[int, str]] = []

    def __call__(self, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 prefix: Sequence[str] = (), cwd: str | Path = REPO) -> Launch:
        launch = Launch(args, env, prefix, cwd)
        self.started.append(launch)
        return launch

    def track(self, pid: int, marker: str) -> None:
        """Kill ``pid`` in teardown if it is still alive and its command line holds
        ``marker`` (so that a reused pid is never killed)."""
        self.strays.append((pid, marker))

    def close(self) -> None:
        for launch in self.started:
            launch.kill()
        for pid, marker in self.strays:
            if alive(pid, marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Launches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def launches() -> Iterator[Launches]:
    with Launches() as started:
        yield started


def remove_task_cgroups(launchers: set[int]) -> None:
    """A launcher killed with SIGKILL cannot remove its task's cgroup: do it for it
    (groups are named ``cc-task-<launcher pid>-...`` under the launcher's own group)."""
    mount = own = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                mount = left.split(" ")[4]
        own = next((line[3:].strip() for line in
                    Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::")), None)
    if mount is None or own is None:
        return
    home = Path(mount, own.lstrip("/"))
    for pid in launchers:
        for group in home.glob(f"cc-task-{pid}-*"):
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")
            poll(functools.partial(_empty, group), 2)
            with contextlib.suppress(OSError):
                group.rmdir()


def _empty(group: Path) -> bool:
    try:
        return not (group / "cgroup.procs").read_text().strip()
    except OSError:
        return True


# -- /proc ---------------------------------------------------------------------------


def stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int, marker: str) -> bool:
    """True when ``pid`` exists, is not a zombie, and runs a command line holding
    ``marker`` (a zombie or a reused pid does not count as the process still living)."""
    info = stat(pid)
    if info is None or info[0] in ("Z", "X"):
        return False
    return marker in cmdline(pid)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = stat(int(entry))
            if info is not None:
                children.setdefault(info[1], []).append(int(entry))
    out: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def children_of(pid: int) -> list[int]:
    return [p for p in descendants(pid) if (stat(p) or ("", -1))[1] == pid]


def poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """True as soon as ``predicate()`` is; False if it is still false after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
