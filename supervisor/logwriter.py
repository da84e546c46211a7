"""The one log writer: one ordered stream, one ``seq``, two paths (SPEC section 8).

Launcher events go through python-json-logger (a ``logging.Logger`` of our own, never the
root logger). Task output takes a fast path with the same schema: one timestamp per read,
records formatted from a per-stream template and encoded by orjson in batches. A
``LogRecord`` per output line would cost about forty times more.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from pythonjsonlogger.json import JsonFormatter

from supervisor.masking import Masker

#: Flush the buffer once it holds this much, whatever the loop does.
FLUSH_BYTES = 256 * 1024

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_COLOURS = {"debug": "\033[2m", "info": "\033[36m", "warning": "\033[33m", "error": "\033[31m"}
_RESET = "\033[0m"


class Clock:
    """RFC 3339 UTC timestamps with microseconds, the date part cached per second."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self._second = -1
        self._prefix = ""

    def stamp(self, at: float | None = None) -> str:
        t = self.now() if at is None else at
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1_000_000):06d}Z"


class Sink:
    """Blocking writes to a descriptor; a closed reader (EPIPE) turns it into a drain.

    When the reader is slow, writes block and the task, whose pipes are then not read,
    is slowed down too: backpressure without loss.
    """

    def __init__(self, fd: int, on_broken: Callable[[OSError], None] | None = None) -> None:
        self.fd = fd
        self.broken = False
        self.dropped = 0
        self.on_broken = on_broken

    def write(self, data: bytes) -> None:
        if self.broken:
            self.dropped += len(data)
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # Inherited O_NONBLOCK descriptor: wait until it is writable.
                select.select([], [self.fd], [])
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF, errno.EIO, errno.ENOSPC,
                                 errno.ECONNRESET):
                    self.broken = True
                    self.dropped += len(view)
                    if self.on_broken is not None:
                        self.on_broken(exc)
                    return
                raise
            view = view[n:]


class _EventFormatter(JsonFormatter):
    """python-json-logger with the record schema of SPEC section 8."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__(json_serializer=_dumps_str, reserved_attrs=_RESERVED)
        self.writer = writer

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_record["time"] = self.writer.clock.stamp(record.created)
        log_record["level"] = record.levelname.lower()
        log_record["source"] = "supervisor"
        log_record["seq"] = record.__dict__["seq"]
        log_record["event"] = record.__dict__.get("event")
        log_record["message"] = record.getMessage()
        fields = record.__dict__.get("fields") or {}
        log_record.update(fields)
        log_record.update(self.writer.static)

    def process_log_record(self, log_record: dict[str, Any]) -> dict[str, Any]:
        masked = self.writer.masker.mask_obj(log_record)
        assert isinstance(masked, dict)
        return masked


def _dumps_str(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


_RESERVED = list(
    set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
    | {"message", "asctime", "seq", "event", "fields", "taskName"}
)


class _Handler(logging.Handler):
    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self.writer._emit_event(record, self.format(record))


class LogWriter:
    """Owns ``seq`` and the output descriptors. One per run; not thread-safe by design
    (the event loop is the only writer)."""

    def __init__(
        self,
        fmt: str = "json",
        *,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        masker: Masker | None = None,
        static: Mapping[str, str] | None = None,
        debug: bool = False,
        colour: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.format = fmt
        self.stdout = stdout or Sink(1)
        if self.stdout.on_broken is None:
            self.stdout.on_broken = self._stdout_broken
        self.stderr = stderr or Sink(2)
        self.masker = masker or Masker()
        self.static = dict(static or {})
        self.clock = clock or Clock()
        self.colour = colour
        self.seq = 0
        self._buf: list[bytes] = []
        self._size = 0
        self._templates: dict[tuple[str, str, str | None], bytes] = {}
        self.logger = logging.Logger("cc-task", logging.DEBUG if debug else logging.INFO)
        handler = _Handler(self)
        handler.setFormatter(_EventFormatter(self) if fmt == "json" else logging.Formatter())
        self.logger.addHandler(handler)
        self.logger.propagate = False

    # -- events ---------------------------------------------------------------------

    def event(self, event: str, message: str, level: str = "info", **fields: Any) -> None:
        """A launcher event: ``event`` name, human ``message``, data as ``fields``."""
        lvl = _LEVELS[level]
        if not self.logger.isEnabledFor(lvl):
            return
        self.logger.log(lvl, "%s", message, extra={"event": event, "fields": fields,
                                                   "seq": self.seq + 1})

    def set_debug(self, debug: bool) -> None:
        self.logger.setLevel(logging.DEBUG if debug else logging.INFO)

    def _emit_event(self, record: logging.LogRecord, formatted: str) -> None:
        self.seq += 1
        if self.format == "json":
            self._append(formatted.encode() + b"\n")
            return
        level = record.levelname.lower()
        text = self.masker.mask_text(record.getMessage())
        label = "cc-task: error:" if level == "error" else "cc-task:"
        if self.colour:
            line = f"{_COLOURS[level]}{label}{_RESET} {text}\n"
        else:
            line = f"{label} {text}\n"
        self.flush()
        self.stderr.write(line.encode("utf-8", "replace"))

    # -- task output ----------------------------------------------------------------

    def output(
        self,
        source: str,
        stream: str,
        phase: str | None,
        records: Sequence[bytes],
        partial: Sequence[int] = (),
    ) -> None:
        """Log ``records`` (lines without newline) of one read, in order."""
        if not records:
            return
        if self.format != "json":
            self._text_output(stream, records, partial)
            return
        key = (source, stream, phase)
        head = self._templates.get(key)
        stamp = self.clock.stamp()
        if head is None or head[9:36] != stamp.encode():
            hook = f',"hook":"{phase}"' if phase else ""
            head = (f'{{"time":"{stamp}","level":"info","source":"{source}",'
                    f'"stream":"{stream}"{hook},"seq":').encode()
            self._templates[key] = head
        seq = self.seq
        dumps = orjson.dumps
        if not partial:
            try:
                out = [b'%s%d,"message":%s}\n' % (head, seq + i, dumps(r.decode()))
                       for i, r in enumerate(records, 1)]
            except UnicodeDecodeError:
                out = self._slow(head, seq, records, partial)
        else:
            out = self._slow(head, seq, records, partial)
        self.seq = seq + len(records)
        chunk = b"".join(out)
        self._buf.append(chunk)
        self._size += len(chunk)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def _slow(self, head: bytes, seq: int, records: Sequence[bytes],
              partial: Sequence[int]) -> list[bytes]:
        parts = set(partial)
        out = []
        for i, r in enumerate(records):
            extra = b""
            try:
                text = r.decode()
            except UnicodeDecodeError:
                text = r.decode("utf-8", "replace")
                extra = b',"invalid_utf8":true'
            if i in parts:
                extra += b',"partial":true'
            out.append(b'%s%d,"message":%s%s}\n' % (head, seq + i + 1, orjson.dumps(text), extra))
        return out

    def _text_output(self, stream: str, records: Sequence[bytes],
                     partial: Sequence[int]) -> None:
        self.seq += len(records)
        if partial:
            parts = set(partial)
            data = b"".join(r if i in parts else r + b"\n" for i, r in enumerate(records))
        else:
            data = b"\n".join(records) + b"\n"
        self.flush()
        (self.stderr if stream == "stderr" else self.stdout).write(data)

    # -- plumbing -------------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            self._size = 0
            self.stdout.write(data)

    def _stdout_broken(self, exc: OSError) -> None:
        # The task goes on: the report, the status file and the shutdown still follow.
        self.stderr.write(f"cc-task: stdout is closed ({exc.strerror}): records are no "
                          "longer written; the task goes on\n".encode())

    def error(self, sentence: str) -> None:
        """One sentence for a person on stderr (configuration errors)."""
        self.flush()
        text = self.masker.mask_text(sentence)
        prefix = "\033[31mcc-task: error:\033[0m" if self.colour else "cc-task: error:"
        self.stderr.write(f"{prefix} {text}\n".encode("utf-8", "replace"))
