"""Running one child to its end: the command or a hook (SPEC sections 5 and 6).

``Runner.run(spec)`` spawns bash, streams its output, enforces the overall and idle
deadlines, forwards signals, stops with the stop signal, a bounded grace and SIGKILL,
kills what the child leaves behind and drains the pipes within a bound. Everything is an
event of the one loop; nothing sleeps waiting for something that could be waited on.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from supervisor import exitcodes, proctree, signals
from supervisor.cgroup import TaskCgroup
from supervisor.durations import format_seconds
from supervisor.lines import LineSplitter
from supervisor.logwriter import LogWriter
from supervisor.loop import Loop
from supervisor.masking import Masker
from supervisor.process import Child, StartFailed, spawn
from supervisor.reaper import Exit
from supervisor.states import Timeout
from supervisor.users import Account

#: After bash and every leftover are gone, how long to wait for the pipes' end of file
#: (a process outside the launcher's view may still hold them).
DRAIN_SECONDS = 2.0
#: How often to look at leftovers while waiting for them to go.
POLL_SECONDS = 0.02
READ_SIZE = 65536
TAIL_LINES = 80


class Observer:
    """Live figures of the run, for metrics. The default does nothing."""

    def output(self, stream: str, lines: int, nbytes: int) -> None: ...
    def signal_forwarded(self, signum: int) -> None: ...
    def timeout(self, kind: Timeout) -> None: ...
    def stopping(self) -> None: ...


@dataclass
class Spec:
    """What to run and under which rules."""

    command: str
    env: Mapping[str, str]
    cwd: str
    source: str = "command"  # or "hook"
    phase: str | None = None  # the hook's phase
    path: str | None = None  # a folder hook's file
    argv: list[str] | None = None  # default: bash -c command
    account: Account | None = None
    interactive: bool = False
    timeout: float | None = None
    idle_timeout: float | None = None
    kill_grace: float | None = 30.0
    stop_signal: int = int(signal.SIGTERM)
    timeout_kind: Timeout = Timeout.OVERALL


@dataclass
class StreamCount:
    lines: int = 0
    bytes: int = 0


@dataclass
class Outcome:
    """How one child ended."""

    exit_status: int
    exit_code: int | None = None
    signal: int | None = None
    timeout: Timeout | None = None
    killed: bool = False
    pid: int | None = None
    started_at: float = 0.0  # wall clock
    finished_at: float = 0.0
    duration: float = 0.0
    cpu_seconds: float | None = None
    max_rss_bytes: int | None = None
    start_error: str | None = None
    leftovers: int = 0
    output: dict[str, StreamCount] = field(
        default_factory=lambda: {"stdout": StreamCount(), "stderr": StreamCount()}
    )


class Runner:
    """Runs children one at a time on the shared loop, logging through the writer."""

    def __init__(
        self,
        loop: Loop,
        writer: LogWriter,
        masker: Masker,
        max_line: int,
        observer: Observer | None = None,
        use_cgroup: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.writer = writer
        self.masker = masker
        self.max_line = max_line
        self.observer = observer or Observer()
        self.use_cgroup = use_cgroup
        self.wall = wall
        self.tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
        self.run_id = ""
        self._count = 0

    def run(self, spec: Spec) -> Outcome:
        self._count += 1
        return _Run(self, spec, f"cc-task-{os.getpid()}-{self.run_id[:8]}-{self._count}").execute()


class _Run:
    """The state of one child while it runs. Deadlines are monotonic times or None."""

    def __init__(self, runner: Runner, spec: Spec, cgroup_name: str) -> None:
        self.r = runner
        self.spec = spec
        self.cgroup_name = cgroup_name
        self.clock = runner.loop.clock
        self.child: Child | None = None
        self.cgroup: TaskCgroup | None = None
        self.exit: Exit | None = None
        self.open_fds: dict[int, tuple[str, LineSplitter]] = {}
        self.outcome = Outcome(exit_status=exitcodes.CONFIG)
        self.deadline: float | None = None
        self.idle_deadline: float | None = None
        self.kill_at: float | None = None
        self.drain_until: float | None = None
        self.first_terminating: int | None = None
        self.leftover_pids: set[int] = set()
        self.leftovers_done = False
        self.is_command = spec.source == "command"

    # -- life cycle -----------------------------------------------------------------

    def execute(self) -> Outcome:
        spec = self.spec
        if self.r.use_cgroup:
            self.cgroup = TaskCgroup.create(self.cgroup_name)
        self.r.writer.flush()  # the launcher's records come before the task's output
        now = self.clock()
        self.outcome.started_at = self.r.wall()
        try:
            self.child = spawn(spec.argv or _bash(spec.command), spec.env, spec.cwd,
                               spec.account, spec.interactive, self.cgroup)
        except StartFailed as exc:
            if self.cgroup:
                self.cgroup.remove()
            self.outcome.exit_status = exc.exit_status
            self.outcome.start_error = exc.message
            self.outcome.finished_at = self.r.wall()
            return self.outcome
        if self.cgroup and not self.child.in_cgroup:
            self.cgroup.remove()
            self.cgroup = None
        self.outcome.pid = self.child.pid
        self.r.loop.reaper.watch(self.child.pid, self._on_exit)
        for fd, stream in ((self.child.stdout, "stdout"), (self.child.stderr, "stderr")):
            if fd is not None:
                self.open_fds[fd] = (stream, LineSplitter(self.r.max_line, self.r.masker))
                self.r.loop.add_reader(fd, self._on_readable)
        if spec.timeout:
            self.deadline = now + spec.timeout
        if spec.idle_timeout and not spec.interactive:
            # Interactive output goes straight to the terminal: nothing to measure.
            self.idle_deadline = now + spec.idle_timeout
        self._started_event()
        previous = self.r.loop.on_signal
        self.r.loop.on_signal = self._on_signal
        try:
            while not self._done():
                self.r.loop.run_once(self._next_wakeup())
                self.r.writer.flush()
                self._check_deadlines()
        finally:
            self.r.loop.on_signal = previous
            self._close_pipes()
        self._finish()
        return self.outcome

    def _started_event(self) -> None:
        assert self.child is not None
        spec = self.spec
        if self.is_command:
            self.r.writer.event("command.started", f"command started (pid {self.child.pid})",
                                pid=self.child.pid, run_id=self.r.run_id)
        else:
            self.r.writer.event("hook.started", f"{spec.phase} hook started"
                                + (f": {spec.path}" if spec.path else ""),
                                hook=spec.phase, pid=self.child.pid,
                                **({"path": spec.path} if spec.path else {}))

    def _done(self) -> bool:
        if self.exit is None:
            return False
        if not self.leftovers_done:
            self._check_leftovers()
            if not self.leftovers_done:
                return False
        return not self.open_fds

    def _next_wakeup(self) -> float | None:
        now = self.clock()
        times = [t for t in (self.deadline, self.idle_deadline, self.kill_at, self.drain_until)
                 if t is not None]
        wake = min(times) - now if times else None
        if self.exit is not None and not self.leftovers_done:
            wake = POLL_SECONDS if wake is None else min(wake, POLL_SECONDS)
        return wake

    # -- events of the loop ---------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._end(fd)
            return
        self._ingest(fd, data)
        if self.idle_deadline is not None and self.spec.idle_timeout:
            self.idle_deadline = self.clock() + self.spec.idle_timeout

    def _ingest(self, fd: int, data: bytes) -> None:
        """Count, split, mask and log one read of a pipe."""
        stream, splitter = self.open_fds[fd]
        count = self.outcome.output[stream]
        lines = data.count(b"\n")
        count.lines += lines
        count.bytes += len(data)
        self.r.observer.output(stream, lines, len(data))
        self._log(stream, *splitter.feed(data))

    def _end(self, fd: int) -> None:
        """End of a stream: what was held back is a last line without newline."""
        stream, splitter = self.open_fds[fd]
        last, last_partial = splitter.flush()
        if last:
            self.outcome.output[stream].lines += 1
            self.r.observer.output(stream, 1, 0)
        self._log(stream, last, last_partial)
        self._close(fd)

    def _log(self, stream: str, records: list[bytes], partial: Sequence[int]) -> None:
        if not records:
            return
        self.r.writer.output(self.spec.source, stream, self.spec.phase, records, partial)
        if self.is_command:
            self.r.tail.extend(records[-TAIL_LINES:])

    def _on_exit(self, exit_: Exit) -> None:
        self.exit = exit_
        status, code, sig = exitcodes.from_wait_status(exit_.status)
        assert self.child is not None
        self.child.mark_reaped(status)
        self.outcome.exit_status = status
        self.outcome.exit_code = code
        self.outcome.signal = sig
        self.outcome.finished_at = self.r.wall()
        self.leftover_pids.clear()
        # The task is over when bash exits: its deadlines no longer apply; leftovers only
        # get the stop signal and the grace.
        self.deadline = self.idle_deadline = None

    def _on_signal(self, signum: int) -> None:
        name = signals.name(signum)
        self.r.writer.event("signal.received", f"received {name}", signal=name)
        if signum not in signals.FORWARDED:
            return
        if (signum in signals.TERMINATING and self.first_terminating == signum
                and self.kill_at is not None and self.outcome.killed is False):
            self._kill(reason=f"a second {name} during the grace")
            return
        self._signal_group(signum)
        self.r.writer.event("signal.forwarded", f"forwarded {name} to the task's process group",
                            signal=name, pgid=self.child.pgid if self.child else None)
        self.r.observer.signal_forwarded(signum)
        if signum in signals.TERMINATING and self.first_terminating is None:
            self.first_terminating = signum
            self._start_grace()

    def _check_deadlines(self) -> None:
        now = self.clock()
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self._timed_out(self.spec.timeout_kind, self.spec.timeout)
        if self.idle_deadline is not None and now >= self.idle_deadline:
            self.idle_deadline = None
            self._timed_out(Timeout.IDLE, self.spec.idle_timeout)
        if self.kill_at is not None and now >= self.kill_at:
            self._kill()
        if self.drain_until is not None and now >= self.drain_until and self.open_fds:
            # Something outside the launcher's view still holds the pipes: the drain is
            # bounded, what was written until now is logged by ``_close_pipes``.
            self._close_pipes()

    # -- stopping -------------------------------------------------------------------

    def _timed_out(self, kind: Timeout, seconds: float | None) -> None:
        self.outcome.timeout = kind
        self.deadline = self.idle_deadline = None
        what = {"overall": "timeout", "idle": "idle timeout", "hook": "hook timeout"}[kind.value]
        self.r.writer.event(
            "timeout.reached",
            f"{what} of {format_seconds(seconds or 0)} reached: "
            f"sending {signals.name(self.spec.stop_signal)}",
            level="warning", kind=kind.value, timeout_seconds=seconds,
            **({"hook": self.spec.phase} if self.spec.phase else {}),
        )
        self.r.observer.timeout(kind)
        self._signal_group(self.spec.stop_signal)
        self._signal_group(signal.SIGCONT)
        self._start_grace()

    def _start_grace(self) -> None:
        self.r.observer.stopping()
        if self.kill_at is None:
            grace = self.spec.kill_grace or 0.0
            self.kill_at = self.clock() + grace

    def _signal_group(self, signum: int) -> None:
        if self.child is None or self.exit is not None and not self._group_alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pgid, signum)

    def _group_alive(self) -> bool:
        if self.child is None:
            return False
        try:
            os.killpg(self.child.pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _kill(self, reason: str = "still running after the grace") -> None:
        """SIGKILL everything that is left of the child."""
        self.kill_at = None
        targets = self._leftovers() if self.exit is not None else None
        if self.exit is None or targets:
            self.outcome.killed = True
            what = "command" if self.is_command else f"{self.spec.phase} hook"
            if self.exit is not None:
                what = f"processes left behind by the {what}"
            self.r.writer.event("command.killed",
                                f"{what}: {reason}; sent SIGKILL",
                                level="warning", signal="SIGKILL",
                                **({"hook": self.spec.phase} if self.spec.phase else {}))
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pgid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # -- leftovers and drain ---------------------------------------------------------

    def _leftovers(self) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.pids()
        return proctree.descendants(os.getpid())

    def _check_leftovers(self) -> None:
        pids = self._leftovers()
        if not pids:
            self.leftovers_done = True
            self.kill_at = None
            if self.leftover_pids:
                n = len(self.leftover_pids)
                self.outcome.leftovers = n
                self.r.writer.event("leftovers.killed",
                                    f"{n} process(es) left behind by the task were stopped",
                                    count=n, pids=sorted(self.leftover_pids)[:50],
                                    **({"hook": self.spec.phase} if self.spec.phase else {}))
            if self.open_fds and self.drain_until is None:
                self.drain_until = self.clock() + DRAIN_SECONDS
            return
        new = set(pids) - self.leftover_pids
        if new:
            for pid in new:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, self.spec.stop_signal)
                    os.kill(pid, signal.SIGCONT)
            self.leftover_pids |= new
            self._start_grace()

    def _close(self, fd: int) -> None:
        self.open_fds.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self.r.loop.remove_reader(fd)
        os.close(fd)

    def _close_pipes(self) -> None:
        for fd in list(self.open_fds):
            # Whatever is still readable now, then what was held back.
            with contextlib.suppress(OSError):
                while data := os.read(fd, READ_SIZE):
                    self._ingest(fd, data)
            self._end(fd)
        self.r.writer.flush()

    # -- the end --------------------------------------------------------------------

    def _finish(self) -> None:
        out = self.outcome
        assert self.exit is not None
        if self.spec.interactive:
            from supervisor.process import foreground

            foreground(os.getpgrp())  # take the terminal back
        out.duration = max(0.0, out.finished_at - out.started_at)
        if out.timeout is not None:
            out.exit_status = exitcodes.TIMEOUT
        rusage = self.exit.rusage
        out.cpu_seconds = rusage.ru_utime + rusage.ru_stime
        out.max_rss_bytes = rusage.ru_maxrss * 1024
        if self.cgroup is not None:
            cpu = self.cgroup.cpu_seconds()
            rss = self.cgroup.max_rss_bytes()
            if cpu is not None:
                out.cpu_seconds = cpu
            if rss is not None:
                out.max_rss_bytes = rss
            self.cgroup.remove()
        out.cpu_seconds = round(out.cpu_seconds, 6)
        if self.is_command:
            sig = signals.name(out.signal) if out.signal else None
            self.r.writer.event(
                "command.finished",
                f"command finished: {_describe(out)} after {out.duration:.3f}s",
                level="info" if out.exit_status == 0 else "warning",
                exit_code=out.exit_code, signal=sig, exit_status=out.exit_status,
                duration_seconds=round(out.duration, 6),
            )
        else:
            self.r.writer.event(
                "hook.finished",
                f"{self.spec.phase} hook finished: {_describe(out)} after {out.duration:.3f}s",
                level="info" if out.exit_status == 0 else "warning",
                hook=self.spec.phase, exit_status=out.exit_status, exit_code=out.exit_code,
                signal=signals.name(out.signal) if out.signal else None,
                duration_seconds=round(out.duration, 6),
                **({"path": self.spec.path} if self.spec.path else {}),
            )


def _bash(command: str) -> list[str]:
    from supervisor.process import bash_argv

    return bash_argv(command)


def _describe(out: Outcome) -> str:
    if out.timeout is not None:
        return f"{out.timeout.value} timeout (exit status {out.exit_status})"
    if out.signal:
        return f"killed by {signals.name(out.signal)} (exit status {out.exit_status})"
    return f"exit code {out.exit_code}"

