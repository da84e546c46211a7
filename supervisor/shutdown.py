"""The shutdown action (SPEC section 12), run last, whatever happened before.

As PID 1: ``sync()`` then the ``reboot(2)`` system call (there is no init to ask).
Otherwise ``systemctl poweroff`` (etc.) where systemd runs, else ``poweroff``.
``CC_TASK_SHUTDOWN_COMMAND`` replaces the action. Tests inject the action or use the
command form: nothing in the test suite powers the machine off.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable

_REBOOT_CMDS = {
    "poweroff": 0x4321FEDC,  # LINUX_REBOOT_CMD_POWER_OFF
    "reboot": 0x01234567,  # LINUX_REBOOT_CMD_RESTART
    "halt": 0xCDEF0123,  # LINUX_REBOOT_CMD_HALT
}


def resolve(action: str, pid: int | None = None) -> str:
    """``auto`` is ``poweroff`` when PID 1, else ``none``."""
    if action == "auto":
        return "poweroff" if (pid if pid is not None else os.getpid()) == 1 else "none"
    return action


def describe(action: str, command: str | None) -> str:
    if command:
        return "CC_TASK_SHUTDOWN_COMMAND"
    return action


def perform(action: str, command: str | None = None,
            run: Callable[..., object] = subprocess.run) -> str | None:
    """Carry out the action; return an error sentence, or None. Never raises.

    The shutdown command's output goes to stderr: stdout is the launcher's record stream.
    """
    try:
        if command:
            run(["bash", "--noprofile", "--norc", "-c", command], stdin=subprocess.DEVNULL,
                stdout=2, timeout=300)
            return None
        if action == "none":
            return None
        if os.getpid() == 1:
            os.sync()
            libc = ctypes.CDLL(None, use_errno=True)
            cmd = _REBOOT_CMDS[action]
            if libc.reboot(ctypes.c_int(cmd - (1 << 32) if cmd >= 1 << 31 else cmd)) != 0:
                return f"reboot({action}) failed: {os.strerror(ctypes.get_errno())}"
            return None
        if os.path.isdir("/run/systemd/system"):
            run(["systemctl", action], stdin=subprocess.DEVNULL, timeout=120)
        else:
            run([action], stdin=subprocess.DEVNULL, timeout=120)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"shutdown action {action} failed: {exc}"
