#!/usr/bin/env python3
"""A child program for the real-process tests (in the spirit of tini's and dumb-init's).

Contract, one flushed line each on stdout:

- ``ready <pid>`` once every handler is installed and every requested child started
  (tests wait for it before they send anything);
- ``child <kind> <pid>`` for each child started with ``--spawn`` (before ``ready``);
- ``signal <NAME>`` for each signal received (e.g. ``signal SIGTERM``).

By default every catchable signal of ``HANDLED`` is printed and otherwise ignored, so
the program survives SIGTERM (a TERM-ignoring task); it exits 0 after ``--lifetime``
seconds (a bound, so that nothing it starts can outlive a broken test for long).

Options:

- ``--exit-on SIG``: after printing SIG, exit with 128+N (a shell-like handler).
- ``--raise-on SIG``: after printing SIG, restore its default action and re-raise it,
  so the process dies *from* the signal (wait status WIFSIGNALED).
- ``--ignore SIG``: set SIG_IGN for SIG (nothing printed, nothing received).
- ``--spawn KIND``: start ``sleep <seconds>`` as ``background`` (a plain child),
  ``setsid`` (a child in a new session) or ``doublefork`` (a grandchild, re-parented
  when its parent exits, that ignores SIGTERM). Repeatable.
- ``--exit-after SECONDS``: exit 0 after that long (after ``ready``).
- ``--code N``: the exit status used by ``--exit-after``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from types import FrameType

HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGCONT,
    signal.SIGWINCH,
)


def say(line: str) -> None:
    """One line, written with a single ``write`` so that lines never interleave."""
    os.write(1, (line + "\n").encode())


def parse_signal(text: str) -> int:
    value = text.strip().upper()
    if value.isdigit():
        return int(value)
    if not value.startswith("SIG"):
        value = "SIG" + value
    return int(signal.Signals[value])


def spawn(kind: str, seconds: str) -> int:
    """Start one ``sleep`` of the given kind; returns its pid."""
    argv = ["sleep", seconds]
    if kind == "background":
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL).pid
    if kind == "setsid":
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True).pid
    if kind != "doublefork":
        raise SystemExit(f"sigchild: unknown spawn kind {kind!r}")
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_end)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(write_end)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # survives exec
            os.execvp("sleep", argv)
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        pid = int(f.read())
    os.waitpid(middle, 0)
    return pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit-on", action="append", default=[], type=parse_signal)
    parser.add_argument("--raise-on", action="append", default=[], type=parse_signal)
    parser.add_argument("--ignore", action="append", default=[], type=parse_signal)
    parser.add_argument("--spawn", action="append", default=[],
                        choices=("background", "setsid", "doublefork"))
    parser.add_argument("--spawn-seconds", default="1000")
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--code", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()

    def handler(signum: int, frame: FrameType | None) -> None:
        say(f"signal {signal.Signals(signum).name}")
        if signum in args.exit_on:
            sys.stdout.flush()
            os._exit(128 + signum)
        if signum in args.raise_on:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in HANDLED:
        signal.signal(sig, handler)
    for sig in args.exit_on + args.raise_on:
        signal.signal(sig, handler)
    for sig in args.ignore:
        signal.signal(sig, signal.SIG_IGN)
    # A child of ours that exits must not stay a zombie in the tests' process checks.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for kind in args.spawn:
        say(f"child {kind} {spawn(kind, args.spawn_seconds)}")
    say(f"ready {os.getpid()}")
    started = time.monotonic()
    end = started + (args.exit_after if args.exit_after is not None else args.lifetime)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return args.code if args.exit_after is not None else 0
        # Handlers run between sleeps; PEP 475 resumes the sleep after each one.
        time.sleep(min(left, 0.5))


if __name__ == "__main__":
    sys.exit(main())
