"""A cgroup v2 group per task, when the launcher can create one (SPEC section 5).

The group lets the launcher find every process the task left behind (also daemons that
called ``setsid`` or double-forked), kill them all at once with ``cgroup.kill``, and read
their CPU time and peak memory. Where no cgroup2 mount is writable the launcher falls
back to the child-subreaper and the process tree (``proctree``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


def find_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The mount point of the cgroup2 hierarchy: ``/sys/fs/cgroup`` on a pure v2 host,
    ``/sys/fs/cgroup/unified`` on a hybrid one."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        if right.split(" ", 1)[0] == "cgroup2":
            fields = left.split(" ")
            if len(fields) >= 5:
                return fields[4].replace("\\040", " ")
    return None


def own_path(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """This process's path in the v2 hierarchy (the ``0::`` line)."""
    try:
        with open(proc_cgroup) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


@dataclass
class TaskCgroup:
    """``<own cgroup>/cc-task-<run id>``: the task's group; the launcher stays outside."""

    path: str
    home: str  # the launcher's own cgroup directory, to move back into

    @classmethod
    def create(cls, name: str) -> TaskCgroup | None:
        """Make the group, or ``None`` where cgroup v2 is missing or not writable."""
        mount = find_mount()
        own = own_path()
        if mount is None or own is None:
            return None
        home = os.path.join(mount, own.lstrip("/"))
        _remove_stale(home)
        path = os.path.join(home, name)
        try:
            os.mkdir(path)
        except OSError:
            return None
        group = cls(path, home)
        if not os.path.exists(os.path.join(path, "cgroup.procs")):
            group.remove()
            return None
        # Memory and CPU figures need the controllers on in the parent; this only works
        # where the parent has no processes of its own (or is the root): best effort.
        with contextlib.suppress(OSError):
            with open(os.path.join(home, "cgroup.subtree_control"), "w") as f:
                f.write("+memory +cpu")
        return group

    def enter(self) -> None:
        """Move the launcher into the group, so that the next child is born in it."""
        self._write("cgroup.procs", str(os.getpid()), self.path)

    def leave(self) -> None:
        """Move the launcher back home; its child stays in the group."""
        self._write("cgroup.procs", str(os.getpid()), self.home)

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> bool:
        """SIGKILL every process of the group (``cgroup.kill``, Linux 5.14)."""
        try:
            self._write("cgroup.kill", "1", self.path)
            return True
        except OSError:
            return False

    def cpu_seconds(self) -> float | None:
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1_000_000
        except (OSError, ValueError):
            pass
        return None

    def max_rss_bytes(self) -> int | None:
        try:
            with open(os.path.join(self.path, "memory.peak")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    @staticmethod
    def _write(name: str, value: str, where: str) -> None:
        with open(os.path.join(where, name), "w") as f:
            f.write(value)


def _remove_stale(home: str) -> None:
    """Remove empty groups left by a launcher that was SIGKILLed (``cc-task-<pid>-...``,
    that pid gone). ``rmdir`` fails on a group that still has processes: nothing is lost."""
    try:
        entries = os.listdir(home)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith("cc-task-"):
            continue
        pid = entry.split("-")[2] if entry.count("-") >= 3 else ""
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(home, entry))
