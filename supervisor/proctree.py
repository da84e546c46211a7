"""The process tree under the launcher, read from ``/proc``: the fallback way to find
what the task left behind when no cgroup can be created. With ``PR_SET_CHILD_SUBREAPER``
(or as PID 1) orphans are re-parented to the launcher, so every leftover stays a
descendant of it, also after a double fork or ``setsid``.
"""

from __future__ import annotations

import ctypes
import os

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> bool:
    """Make orphans of the task our children instead of PID 1's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except OSError:
        return False


def _parent(pid: str) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    if len(rest) < 2:
        return None
    return int(rest[1]), rest[0].decode()


def descendants(root: int) -> list[int]:
    """Pids of every live (not zombie) process below ``root``."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _parent(entry)
        if info is None:
            continue
        ppid, state = info
        pid = int(entry)
        children.setdefault(ppid, []).append(pid)
        states[pid] = state
    out: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if states.get(pid) != "Z":
            out.append(pid)
        stack.extend(children.get(pid, []))
    return out
