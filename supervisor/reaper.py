"""The one owner of ``waitpid``.

Every exit status of every child (and, as PID 1 or a subreaper, of every orphan) is
collected here and routed by pid. A ``subprocess.Popen`` whose status a ``waitpid(-1)``
stole would report exit code 0: so the launcher never calls ``Popen.wait`` or ``poll``
while the reaper runs. (Only the ``bash -n`` check, before the loop's first turn, and the
shutdown command, after its last, are waited on by ``subprocess.run``, by their own pid.)
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Exit:
    """One reaped process."""

    pid: int
    status: int  # raw wait status
    rusage: resource.struct_rusage


class Reaper:
    """Reaps with ``wait4(-1, WNOHANG)`` until nothing is left to reap.

    ``watch(pid, callback)`` routes that pid's exit to the callback; exits of other pids
    (orphans re-parented to PID 1 or to the subreaper) are counted as zombies reaped.
    """

    def __init__(self, on_orphan: Callable[[Exit], None] | None = None) -> None:
        self._watched: dict[int, Callable[[Exit], None]] = {}
        self.on_orphan = on_orphan
        self.orphans_reaped = 0

    def watch(self, pid: int, callback: Callable[[Exit], None]) -> None:
        self._watched[pid] = callback

    def reap(self) -> int:
        """Collect every exited child now; returns how many were reaped."""
        count = 0
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            count += 1
            exit_ = Exit(pid, status, rusage)
            callback = self._watched.pop(pid, None)
            if callback is not None:
                callback(exit_)
            else:
                self.orphans_reaped += 1
                if self.on_orphan is not None:
                    self.on_orphan(exit_)
        return count
