"""Spawning one child: the command or a hook (SPEC section 5).

``bash --noprofile --norc -c CMD`` in its own session and process group, stdin from
/dev/null, stdout and stderr through pipes, signal mask and dispositions reset (see
``signals.capture_signals``), no launcher descriptor inherited (``close_fds`` and PEP 446).
``subprocess.Popen`` only forks and execs here: its status is collected by the reaper,
never by ``Popen.wait``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor import exitcodes
from supervisor.cgroup import TaskCgroup
from supervisor.users import Account

#: Linux's limit on one argv or environment string, its NUL included.
MAX_ARG_STRLEN = 131072


def bash_argv(command: str) -> list[str]:
    return ["bash", "--noprofile", "--norc", "-c", command]


class StartFailed(Exception):
    """bash could not be executed (126) or was not found (127)."""

    def __init__(self, exit_status: int, message: str) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.message = message


@dataclass
class Child:
    pid: int
    pgid: int
    stdout: int | None  # read ends of the pipes, non-blocking; None when interactive
    stderr: int | None
    popen: subprocess.Popen[bytes] = field(repr=False)
    in_cgroup: bool = False

    def mark_reaped(self, exit_status: int) -> None:
        # Keeps Popen.__del__ and subprocess._cleanup from calling waitpid on a pid
        # the reaper already collected (and that may be reused).
        self.popen.returncode = exit_status


def foreground(pgid: int) -> None:
    """Make ``pgid`` the foreground job of the launcher's terminal, if it has one.

    SIGTTOU is blocked meanwhile: a background process calling ``tcsetpgrp`` gets it.
    The child may have been stopped by SIGTTIN before this: SIGCONT wakes it.
    """
    import signal

    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(fd)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGCONT)


def spawn(
    argv: list[str],
    env: Mapping[str, str],
    cwd: str,
    account: Account | None = None,
    interactive: bool = False,
    cgroup: TaskCgroup | None = None,
) -> Child:
    """Start ``argv``; raise ``StartFailed`` when it cannot be executed."""
    out_r = out_w = err_r = err_w = -1
    if not interactive:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
    entered = False
    try:
        if cgroup is not None:
            # The child is born in the task's cgroup: no window where it could fork
            # outside. Python's Popen has no CLONE_INTO_CGROUP, so move ourselves there
            # around the fork, then back.
            with contextlib.suppress(OSError):
                cgroup.enter()
                entered = True
        popen = subprocess.Popen(
            argv,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=None if interactive else out_w,
            stderr=None if interactive else err_w,
            env=dict(env),
            cwd=cwd,
            # Interactive: stay in the terminal's session (the task keeps its controlling
            # terminal) but in a group of its own, made the foreground job below.
            start_new_session=not interactive,
            process_group=0 if interactive else None,
            close_fds=True,
            restore_signals=True,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=list(account.groups) if account else None,
        )
    except FileNotFoundError as exc:
        for fd in (out_r, err_r):
            if fd >= 0:
                os.close(fd)
        if exc.filename and exc.filename == cwd:
            raise StartFailed(exitcodes.CANNOT_EXECUTE,
                              f"cannot enter the working directory {cwd}") from None
        raise StartFailed(exitcodes.NOT_FOUND, f"{argv[0]} was not found") from None
    except OSError as exc:
        for fd in (out_r, err_r):
            if fd >= 0:
                os.close(fd)
        hint = ""
        if exc.errno == errno.E2BIG:
            hint = f" (Linux limits one argument to {MAX_ARG_STRLEN - 1} bytes)"
        raise StartFailed(exitcodes.CANNOT_EXECUTE,
                          f"{argv[0]} could not be executed: {exc.strerror}{hint}") from None
    finally:
        if entered and cgroup is not None:
            cgroup.leave()
        for fd in (out_w, err_w):
            if fd >= 0:
                os.close(fd)
    if not interactive:
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
    else:
        foreground(popen.pid)
    return Child(popen.pid, popen.pid, out_r if not interactive else None,
                 err_r if not interactive else None, popen, in_cgroup=entered)
