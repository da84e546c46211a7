"""Zombie factory for bench/bench.py: measures how fast PID 1 reaps orphaned zombies.

Usage: ``orphans.py N [ROUNDS]`` run as the task of a launcher that is PID 1 of a fresh
PID namespace (``unshare --pid --fork --mount-proc``).

Each round: a middle process forks N children that exit at once and are *not* reaped by
it, so N zombies pile up under it; when all N are zombies the middle exits. The kernel
then re-parents the N zombies to PID 1 in one go (no subreaper in between), and PID 1
gets SIGCHLD. We poll ``/proc`` (mounted for this namespace) until none of the N pids
is left: the elapsed time from the middle's death is PID 1's reaping time.

Prints one line per round:
``round <i> n=<N> seconds=<float> rate=<per second> create=<seconds to fork them>``.
"""

from __future__ import annotations

import os
import sys
import time


def _zombie(pid: int) -> bool:
    """True when /proc says pid is a zombie (state Z); False when it is gone or alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    # The state follows the last ')' (the command name may contain parentheses).
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"


def one_round(n: int) -> tuple[float, float]:
    """Create n orphaned zombies at once for PID 1.

    Returns (seconds to create them, seconds from their hand-over until all are reaped).
    """
    t0 = time.perf_counter()
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(r)
        pids = []
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            pids.append(pid)
        # Wait (bounded) until every child is a zombie, so they all reach PID 1 together.
        deadline = time.monotonic() + 30
        pending = list(pids)
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if not _zombie(p)]
        os.write(w, ("\n".join(map(str, pids)) + "\n").encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    zombies = {int(x) for x in b"".join(chunks).split()}
    # The middle is our child: reaping it is what hands its zombies to PID 1.
    os.waitpid(middle, 0)
    start = time.perf_counter()
    deadline = start + 60
    while time.perf_counter() < deadline:
        left = zombies.intersection(int(e) for e in os.listdir("/proc") if e.isdigit())
        if not left:
            return start - t0, time.perf_counter() - start
        zombies = left
    raise SystemExit(f"{len(zombies)} zombies not reaped after 60 s")


def main() -> None:
    n = int(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if os.getpid() == 1:
        raise SystemExit("orphans.py must run as the task of a PID 1 launcher, not as PID 1")
    for i in range(rounds):
        created, seconds = one_round(n)
        print(
            f"round {i} n={n} seconds={seconds:.6f} rate={n / seconds:.0f} create={created:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
