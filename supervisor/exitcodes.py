"""Exit statuses of the launcher (SPEC section 7).

A leaf module: imports nothing from the package.
"""

from __future__ import annotations

SUCCESS = 0
USAGE = 2  # unknown option, missing argument (argparse's convention)
TIMEOUT = 124  # overall or idle timeout, whatever the task did after the stop signal
CONFIG = 125  # configuration error, or the launcher itself failed
CANNOT_EXECUTE = 126  # bash could not be executed
NOT_FOUND = 127  # bash was not found
SIGNAL_BASE = 128  # the task died from signal S: 128 + S


def from_wait_status(status: int) -> tuple[int, int | None, int | None]:
    """Turn a raw ``waitpid`` status into ``(exit_status, exit_code, signal)``.

    >>> from_wait_status(0)
    (0, 0, None)
    >>> from_wait_status(15)  # killed by SIGTERM
    (143, None, 15)
    """
    import os

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return SIGNAL_BASE + sig, None, sig
    code = os.waitstatus_to_exitcode(status)
    return code, code, None
