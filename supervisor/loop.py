"""The event loop: one selector owns the child pipes, the signal wakeup socket and the
deadlines; the child's exit arrives as SIGCHLD, handed to the one reaper.

Signal handlers only record (``signals.SignalQueue``); the loop dispatches them here, in
order, to whoever runs a phase (``on_signal``).
"""

from __future__ import annotations

import selectors
import signal
import time
from collections.abc import Callable

from supervisor.reaper import Reaper
from supervisor.signals import SignalQueue

Callback = Callable[[int], None]


class Loop:
    def __init__(
        self,
        queue: SignalQueue,
        reaper: Reaper,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.reaper = reaper
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.selector.register(queue.reader, selectors.EVENT_READ, None)
        self.on_signal: Callback | None = None
        self.ignored: list[int] = []  # signals that arrived with no one to handle them

    def add_reader(self, fd: int, callback: Callback) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        self.selector.unregister(fd)

    def run_once(self, timeout: float | None) -> None:
        """Wait for one batch of events (at most ``timeout`` seconds) and dispatch it."""
        if timeout is not None and timeout < 0:
            timeout = 0
        for key, _ in self.selector.select(timeout):
            if key.data is not None:
                key.data(key.fd)
        self.dispatch_signals()

    def dispatch_signals(self) -> None:
        for signum in self.queue.drain():
            if signum == signal.SIGCHLD:
                continue  # the reap below handles it
            if self.on_signal is not None:
                self.on_signal(signum)
            else:
                self.ignored.append(signum)
        # Cheap when nothing exited; also catches a SIGCHLD coalesced with another.
        self.reaper.reap()

    def wait(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Run the loop for ``seconds`` or until ``until()`` is true."""
        deadline = self.clock() + seconds
        while not (until and until()):
            left = deadline - self.clock()
            if left <= 0:
                return
            self.run_once(left)

    def close(self) -> None:
        self.selector.close()
