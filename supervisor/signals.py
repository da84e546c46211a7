"""Signal tables and the handler context manager. Handlers only record; the loop acts.

The kernel applies no default action to PID 1, so every signal the launcher must act on
gets an explicit handler here, also when it is not PID 1.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import socket
from collections.abc import Iterable, Iterator
from types import FrameType

#: Signals forwarded to the task's process group (SPEC section 6).
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: Forwarded signals after which the grace timer starts.
TERMINATING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP})


def name(signum: int) -> str:
    """``SIGTERM`` for 15; ``SIG37`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def parse(text: str) -> int:
    """A signal from its name (``TERM``, ``SIGTERM``, any case) or number."""
    value = text.strip().upper()
    if value.isdigit():
        num = int(value)
        if 0 < num < signal.NSIG:
            return num
        raise ValueError(f"is not a signal number between 1 and {signal.NSIG - 1}")
    if not value.startswith("SIG"):
        value = "SIG" + value
    try:
        sig = signal.Signals[value]
    except KeyError:
        raise ValueError("is not a signal name such as SIGTERM or a number") from None
    return int(sig)


class SignalQueue:
    """Signals received, in order, plus a socket the event loop can wait on.

    ``signal.set_wakeup_fd`` makes the C-level handler write to the socket even while the
    loop is blocked in ``select``; the Python handler only appends to the queue.
    """

    def __init__(self) -> None:
        self._queue: collections.deque[int] = collections.deque()
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._queue.append(signum)

    def drain(self) -> list[int]:
        """Signals received since the last call (also empties the wakeup socket)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self.reader.recv(4096):
                pass
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        return items

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stands for SIG_IGN in the launcher; ``exec`` resets it to SIG_DFL in the task."""


@contextlib.contextmanager
def capture_signals(handled: Iterable[int]) -> Iterator[SignalQueue]:
    """Install recording handlers for ``handled`` and restore everything on exit.

    Also: unblock every signal (a parent may have left some blocked, and children inherit
    the mask), and replace inherited SIG_IGN dispositions with a no-op handler, so that
    the task starts with default dispositions as SPEC section 5 requires (an ignored
    disposition survives ``exec``; a handler does not).
    """
    queue = SignalQueue()
    previous: dict[int, signal._HANDLER] = {}
    old_mask = signal.pthread_sigmask(signal.SIG_SETMASK, set())
    old_fd = signal.set_wakeup_fd(queue._writer.fileno(), warn_on_full_buffer=False)
    handled = set(handled)
    try:
        for sig in range(1, signal.NSIG):
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                current = signal.getsignal(sig)
            except (OSError, ValueError):
                continue
            if sig in handled:
                previous[sig] = current
                signal.signal(sig, queue._handler)
            elif current is signal.SIG_IGN and sig not in (signal.SIGPIPE, signal.SIGXFSZ):
                # SIGPIPE and SIGXFSZ: Python ignores them itself, subprocess restores them.
                previous[sig] = current
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, _ignore)
        yield queue
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, handler)
        signal.set_wakeup_fd(old_fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        queue.close()
