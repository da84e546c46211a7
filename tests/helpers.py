"""Driving the installed ``cc-task`` console script as a black box, for every test file.

Contract:

- ``run_cc_task(args, env=None, cwd=None, timeout=60, input=None) -> Result`` runs
  ``cc-task`` to completion in a *clean* environment (``make_env``): ``PATH``, ``HOME``,
  ``LANG``, a per-run ``CCT_TEST_TAG`` (used to find and kill anything left behind), then
  the defaults of ``DEFAULT_ENV`` (no shutdown, JSON logs, no machine hooks), then
  ``env`` (which overrides all of these; a value of ``None`` removes a variable).
- ``Result.records`` holds the JSON records of stdout, parsed strictly by
  ``parse_records``: a stdout line that is not a JSON object fails the test at once.
  Parsing happens when the run is a JSON run (``run`` with json format); pass
  ``json_output=False``/``True`` to force it.
- ``events(records, name)``, ``output_text(records, source, stream)``, ``report(records)``
  read the record stream.
- ``Launches`` (the ``launch`` fixture of conftest.py) starts runs in the background:
  ``launch(args, env=None, prefix=(), cwd=None) -> Launch``, same environment as
  ``run_cc_task``, optionally under a prefix such as ``unshare ...``. A ``Launch`` reads
  its records as they come; ``wait_for``, ``wait_event``, ``wait_line`` and ``wait_ready``
  return the first matching record (new or already seen) or raise ``Timeout`` at the
  deadline; ``send`` signals it; ``finish`` waits for its exit and every record. At
  teardown ``Launches.close`` kills every launch's whole process tree, every process
  carrying its tag, the task cgroups of the launchers it killed, and the pids given to
  ``track``.
- ``sigchild(*args)`` is the command line of the helper child ``tests/sigchild.py``.

Nothing here sleeps to synchronise: waits are on output or on polling with a deadline.
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
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
PYTHON = sys.executable
SIGCHILD = str(TESTS / "sigchild.py")
TAG_VARIABLE = "CCT_TEST_TAG"

#: Defaults every run gets unless ``env`` says otherwise: never power the machine off,
#: machine-readable logs even though stdout is a pipe anyway, and a hooks folder that
#: does not exist, so that a machine's ``/etc/cc-task/hooks`` never plays a part.
DEFAULT_ENV: dict[str, str] = {
    "CC_TASK_SHUTDOWN": "none",
    "CC_TASK_LOG_FORMAT": "json",
    "CC_TASK_HOOKS_DIR": os.path.join(tempfile.gettempdir(), "cc-task-tests-no-hooks"),
}


def cc_task_path() -> str:
    """The console script installed next to the running Python (a venv's, or pyenv's),
    else the first ``cc-task`` on ``PATH``. Calling the real script, not a pyenv shim,
    keeps the clean environment working, saves a bash start per run and makes the pid
    the test sees the launcher's own from the start."""
    beside = os.path.join(os.path.dirname(PYTHON), "cc-task")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("cc-task")
    if found is None:
        raise RuntimeError("cc-task is not installed: pip install -e '.[test]'")
    return found


CC_TASK = cc_task_path()


def sigchild(*args: str) -> str:
    """A shell command line running the helper child with ``args``."""
    return " ".join([PYTHON, SIGCHILD, *args])


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


def is_json_run(args: Sequence[str], env: Mapping[str, str]) -> bool:
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
    proc = subprocess.Popen(
        [CC_TASK, *args], env=full_env, cwd=cwd,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc, tag)
        proc.communicate()
        raise
    # Whatever the launcher failed to stop must not outlive the test. A process SIGKILLed
    # by the launcher just before it exited may take a moment to become a zombie.
    if not poll(lambda: not tagged_pids(tag), 2.0):
        leftovers = kill_tagged(tag)
    else:
        leftovers = []
    result = Result(list(args), proc.returncode, stdout,
                    stderr.decode("utf-8", "replace"), tag=tag)
    if leftovers and not allow_leftovers:
        raise AssertionError(f"processes outlived cc-task (killed now): {leftovers}; {result!r}")
    if json_output is None:
        json_output = is_json_run(list(args), full_env)
    if json_output:
        result.records = parse_records(stdout)
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


# -- background runs -------------------------------------------------------------------


class Timeout(AssertionError):
    """A record a test waited for did not come in time (or stdout ended without it)."""


class Launch:
    """One ``cc-task`` running in the background, in a session of its own (so that
    signals sent to the test's process group do not reach it), stdin ``/dev/null``.

    A thread reads stdout line by line; the test's own thread moves lines into ``raw``
    and, for a JSON run (``is_json_run``), their records into ``records``, parsed
    strictly, whenever it waits. Stderr is collected as text. Start it through
    ``Launches``, which kills it at teardown.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str | None] | None = None,
                 prefix: Sequence[str] = (),
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.args = list(args)
        self.argv = [*prefix, CC_TASK, *args]
        self.tag = uuid.uuid4().hex
        full_env = make_env(self.tag, env)
        self.json = is_json_run(self.args, full_env)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=full_env, cwd=cwd, start_new_session=True,
        )
        self.records: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        #: Popen's status once finished: negative when cc-task died from a signal.
        self.returncode: int | None = None
        self.elapsed: float | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._eof = False
        self._stderr = bytearray()
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- reading ----------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        # A stream closed under us by ``kill`` ends the reading, never the test.
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(stream.fileno(), 65536):
                self._stderr += chunk

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def _keep(self, line: bytes | None) -> None:
        if line is None:
            self._eof = True
            return
        self.raw.append(line)
        if self.json:
            self.records.extend(parse_records(line))

    def _pump(self, deadline: float) -> bool:
        """Move one line from the reader; False on timeout or end of stream."""
        if self._eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            line = self._lines.get(timeout=left)
        except queue.Empty:
            return False
        self._keep(line)
        return not self._eof

    def _drain(self) -> None:
        while not self._eof:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._keep(line)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                 what: str = "a record") -> dict[str, Any]:
        """The first record (since the start) matching ``predicate``; waits up to
        ``timeout`` seconds for it to come, else raises ``Timeout`` with what came."""
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
                ended = "stdout ended" if self._eof else f"{timeout}s passed"
                raise Timeout(f"{ended} without {what}; records so far:\n"
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
        """The launcher event ``name`` whose fields have the values given."""
        def match(r: dict[str, Any]) -> bool:
            return (r.get("source") == "supervisor" and r.get("event") == name
                    and all(r.get(k) == v for k, v in fields.items()))
        return self.wait_for(match, timeout, f"event {name} {fields or ''}")

    def wait_ready(self, timeout: float = 15.0) -> int:
        """Waits for the helper child's ``ready <pid>`` line; returns that pid."""
        record = self.wait_line("ready ", timeout, exact=False)
        return int(record["message"].split()[1])

    # -- acting -----------------------------------------------------------------------

    def send(self, signum: int, pid: int | None = None) -> None:
        """Send ``signum`` to cc-task (or to ``pid``)."""
        os.kill(pid if pid is not None else self.proc.pid, signum)

    def finish(self, timeout: float = 30.0) -> int:
        """Waits for the launcher to exit and for all its records; returns its status as
        a shell would (128+N when it died from signal N; ``returncode`` keeps Popen's)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"cc-task still running after {timeout}s; records:\n"
                          + "\n".join(json.dumps(r) for r in self.records[-40:])) from None
        self.elapsed = time.monotonic() - self.started
        self.returncode = code
        # The task's leftovers may hold the pipes a moment longer: bounded joins.
        self._out.join(5)
        self._err.join(5)
        self._drain()
        return code if code >= 0 else 128 - code

    # -- reading the run --------------------------------------------------------------

    def events(self, name: str) -> list[dict[str, Any]]:
        return events(self.records, name)

    def lines(self, stream: str | None = None) -> list[str]:
        """The command's output lines, in order."""
        return [r["message"] for r in self.records if r.get("source") == "command"
                and (stream is None or r.get("stream") == stream)]

    @property
    def report(self) -> dict[str, Any]:
        """The report of the (only) ``task.finished`` event."""
        return report(self.records)

    def dump(self) -> str:
        """Everything, for assertion messages."""
        return ("\n".join(json.dumps(r) for r in self.records)
                + f"\nstderr: {self.stderr[-3000:]}")

    # -- teardown ---------------------------------------------------------------------

    def kill(self) -> list[int]:
        """Teardown: ``kill_tree``, then close the pipes; the pids killed."""
        killed = kill_tree(self.proc, self.tag)
        # With every writer gone the readers see end of file: let them finish first.
        self._out.join(2)
        self._err.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return killed


class Launches:
    """Starts launches for one test and kills them all (and tracked pids) at the end.

    The ``launch`` fixture of conftest.py is one; ``with Launches() as launch:`` too."""

    def __init__(self) -> None:
        self.started: list[Launch] = []
        self.strays: list[tuple[int, str]] = []

    def __call__(self, args: Sequence[str] = (),
                 env: Mapping[str, str | None] | None = None,
                 prefix: Sequence[str] = (),
                 cwd: str | os.PathLike[str] | None = None) -> Launch:
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


# -- teardown --------------------------------------------------------------------------


def kill_tree(proc: subprocess.Popen[bytes], tag: str) -> list[int]:
    """SIGKILL cc-task (``proc``, or the prefix it runs under), every process below it
    (also those in other sessions: the task runs in its own one), and every process
    carrying ``tag``; reap ``proc``; remove the task cgroups of the launchers killed.
    Returns the pids killed."""
    launchers = {proc.pid, *children_of(proc.pid)}  # unshare's child too
    killed: list[int] = []
    for _ in range(3):
        pids = descendants(proc.pid)
        if proc.poll() is None:
            pids.append(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.extend(pids)
        if not pids:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    killed.extend(kill_tagged(tag))
    remove_task_cgroups(launchers)
    return killed


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
        except OSError:
            continue  # gone, or a kernel thread
        info = stat(pid)
        if info is not None and info[0] != "Z" and (
                data.startswith(needle) or b"\0" + needle in data):
            found.append(pid)
    return found


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every process carrying ``tag``; return their pids."""
    pids = tagged_pids(tag)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


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
