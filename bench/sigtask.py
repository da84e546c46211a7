"""Signal helper task for bench/bench.py (not part of the launcher).

Usage: ``sigtask.py handle`` or ``sigtask.py ignore``.

Prints ``ready pid=<pid>`` (flushed) once its SIGTERM disposition is in place, then:

- ``handle``: on SIGTERM prints ``term <ns>`` where ``<ns>`` is
  ``time.clock_gettime_ns(CLOCK_MONOTONIC)`` taken first thing in the handler, and exits 0.
  CLOCK_MONOTONIC is system-wide on Linux, so the bench compares it with its own reading
  taken just before it sent the signal to the launcher.
- ``ignore``: ignores SIGTERM and sleeps until killed (the SIGKILL-after-grace test).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType


def _on_term(signum: int, frame: FrameType | None) -> None:
    # Read the clock before anything else: this is the moment the handler runs.
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    sys.stdout.write(f"term {now}\n")
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "handle"
    if mode == "handle":
        signal.signal(signal.SIGTERM, _on_term)
    elif mode == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(f"ready pid={os.getpid()}\n")
    sys.stdout.flush()
    while True:
        # pause() returns after each handled signal; the handler exits, so loop only
        # survives signals we do not care about.
        signal.pause()


if __name__ == "__main__":
    main()
