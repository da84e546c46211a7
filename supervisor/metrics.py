"""Prometheus metrics of SPEC section 11: a scrape endpoint, a linger, a push, a textfile.

``Metrics`` is the runner's ``Observer``: the loop thread updates live figures (state,
output, forwarded signals, timeouts, zombies) while the HTTP thread serves them; at the
end ``finish(report, loop)`` sets the final figures from the report, pushes them
(push-add), writes the textfile and lingers until a scrape has read them.

Everything sits on the instance's own ``CollectorRegistry``; prometheus-client is imported
here only, and this module only when a metrics feature is on (it costs ~40 ms).

Metrics whose value is not known yet (exit status, end time, duration, resources, last
success) are absent rather than 0 until ``finish``: a 0 exit status while the task still
runs would read as a success.

>>> from supervisor.config import Settings
>>> from supervisor.logwriter import LogWriter
>>> m = Metrics(Settings(), {"instance_id": "i-1"}, LogWriter(), "1.0")
>>> m.output("stdout", 2, 10)
>>> m.registry.get_sample_value("cc_task_output_lines_total", {"stream": "stdout"})
0.0
>>> m.state(State.RUNNING); m.output("stdout", 2, 10)
>>> m.registry.get_sample_value("cc_task_output_lines_total", {"stream": "stdout"})
2.0
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import errno
import hmac
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    make_wsgi_app,
    pushadd_to_gateway,
    write_to_textfile,
)
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    basic_auth_handler,
    default_handler,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from supervisor import signals
from supervisor.config import Settings
from supervisor.errors import ConfigError
from supervisor.logwriter import LogWriter
from supervisor.loop import Loop
from supervisor.runner import Observer
from supervisor.states import State, Timeout

#: The Pushgateway's grouping key: ``job`` and ``instance``.
PUSH_JOB = "cc-task"
#: One push attempt may take this long (connect and answer).
PUSH_TIMEOUT_SECONDS = 5.0
#: Waits before the second and the third attempt: at most 3 x 5 s + 1.5 s in all.
PUSH_BACKOFF_SECONDS = (0.5, 1.0)
#: A scraper that connects and then says nothing gives up its thread after this long.
HTTP_TIMEOUT_SECONDS = 10.0
REALM = "cc-task"

#: errno values meaning "no IPv6 here": fall back to an IPv4-only listener.
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Metrics(Observer):
    """The run's metrics on an own registry; see the module docstring for the life cycle.

    ``start()`` may raise ``ConfigError`` (port in use or not bindable); nothing else
    raises: a failed push or textfile is a warning event, never a changed exit status.
    """

    def __init__(self, settings: Settings, platform: Mapping[str, str | None],
                 writer: LogWriter, version: str) -> None:
        self.settings = settings
        self.platform = dict(platform)
        self.writer = writer
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._info = Gauge("cc_task_info", "The task: 1, with the platform's identifiers.",
                           ["app_id", "deployment_id", "instance_id", "version"], registry=r)
        self._info.labels(
            app_id=self.platform.get("app_id") or "",
            deployment_id=self.platform.get("deployment_id") or "",
            instance_id=self.platform.get("instance_id") or "",
            version=version,
        ).set(1)
        self._state = Gauge("cc_task_state", "1 for the launcher's current state, else 0.",
                            ["state"], registry=r)
        self._lines = Counter("cc_task_output_lines", "Lines the command wrote, per stream.",
                              ["stream"], registry=r)
        self._bytes = Counter("cc_task_output_bytes", "Bytes the command wrote, per stream.",
                              ["stream"], registry=r)
        for stream in ("stdout", "stderr"):
            self._lines.labels(stream=stream)
            self._bytes.labels(stream=stream)
        self._signals = Counter("cc_task_signals_forwarded",
                                "Signals forwarded to the task's process group.",
                                ["signal"], registry=r)
        self._timeouts = Counter("cc_task_timeouts", "Deadlines reached, per kind.",
                                 ["kind"], registry=r)
        for kind in Timeout:
            self._timeouts.labels(kind=kind.value)
        self._zombies = Counter("cc_task_zombies_reaped",
                                "Orphaned processes the launcher reaped.", registry=r)
        self._hook_duration = Gauge("cc_task_hook_duration_seconds",
                                    "Time spent in the hooks of a phase.", ["hook"], registry=r)
        self._hook_status = Gauge("cc_task_hook_exit_status",
                                  "Exit status of the hooks of a phase (the first failure).",
                                  ["hook"], registry=r)
        # Known only later: registered on first use, so that they are absent until then.
        self._late: dict[str, Gauge] = {}
        self._current = State.STARTING
        self._command_phase = False
        self.state(State.STARTING)

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._credentials = _credentials(settings.metrics_user, settings.metrics_password)
        self._final = threading.Event()  # final values are set
        self._final_lock = threading.Lock()
        self._scraped = threading.Event()  # a scrape read them
        self._wake_lock = threading.Lock()
        self._wake_fd: int | None = None  # write end of a pipe the loop waits on
        self.terminated = False  # a terminating signal arrived during ``finish``

    # -- live values (the loop thread) ----------------------------------------------

    def state(self, state: State) -> None:
        """Enter ``state``: its gauge becomes 1, every other one 0."""
        self._current = state
        if state is State.RUNNING:
            self._command_phase = True
            self._gauge("cc_task_start_time_seconds").set(time.time())
        elif state in (State.POST_RUN, State.FINISHED):
            self._command_phase = False
        for s in State:
            self._state.labels(state=s.value).set(1 if s is state else 0)

    def output(self, stream: str, lines: int, nbytes: int) -> None:
        # The runner reports hooks' output too; the metric, like the report, counts the
        # command's output only, i.e. what arrives between RUNNING and POST_RUN.
        if not self._command_phase:
            return
        if lines:
            self._lines.labels(stream=stream).inc(lines)
        if nbytes:
            self._bytes.labels(stream=stream).inc(nbytes)

    def signal_forwarded(self, signum: int) -> None:
        self._signals.labels(signal=signals.name(signum)).inc()

    def timeout(self, kind: Timeout) -> None:
        self._timeouts.labels(kind=kind.value).inc()

    def stopping(self) -> None:
        self.state(State.STOPPING)

    def zombie_reaped(self) -> None:
        self._zombies.inc()

    def hook_finished(self, phase: str, exit_status: int, duration_seconds: float) -> None:
        """A phase's hooks so far (optional live update; ``finish`` sets the final ones)."""
        self._hook_status.labels(hook=phase).set(exit_status)
        self._hook_duration.labels(hook=phase).set(duration_seconds)

    # -- the endpoint -----------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``CC_TASK_METRICS_PORT`` (all interfaces) when it is set.

        Raises ``ConfigError`` when the port cannot be bound. The listening socket, like
        every socket Python makes, is close-on-exec: the task never inherits it.
        """
        port = self.settings.metrics_port
        if not port:
            return
        app = self._app(make_wsgi_app(self.registry))
        try:
            server = _bind(port, app)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "the port is already in use"
            else:
                why = f"cannot listen on it ({exc.strerror or exc})"
            raise ConfigError(f"Invalid CC_TASK_METRICS_PORT={port}: {why}.",
                              variable="CC_TASK_METRICS_PORT") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.2}, name="cc-task-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int | None:
        """The port actually bound (useful with port 0 in tests)."""
        if self._server is None:
            return None
        return self._server.server_port

    def _app(self, metrics_app: WSGIApp) -> WSGIApp:
        path = self.settings.metrics_path or "/metrics"

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != path:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [f"not found: the metrics are at {path}\n".encode()]
            if not self._authorized(environ.get("HTTP_AUTHORIZATION")):
                start_response("401 Unauthorized", [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
                ])
                return [b"401 Unauthorized\n"]
            answer: list[Any] = []
            # Under the lock that ``_set_final`` holds: a body shows either none or all
            # of the final values, and counts as the final scrape exactly when it has them.
            with self._final_lock:
                final = self._final.is_set()
                body = b"".join(metrics_app(environ, lambda s, h, e=None: answer.extend((s, h))))
            status, headers = answer
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            if not (final and status.startswith("200")):
                return [body]
            return self._then_mark(body)

        return app

    def _then_mark(self, body: bytes) -> Iterator[bytes]:
        # wsgiref resumes the iterator only once the body was written to the socket: the
        # scrape counts when the scraper has it, so lingering ends after it, not before.
        yield body
        self._scraped.set()
        self._wake()

    def _authorized(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._credentials)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_fd is not None:
                with contextlib.suppress(OSError):  # full pipe: the loop wakes anyway
                    os.write(self._wake_fd, b"\0")

    # -- the end ----------------------------------------------------------------------

    def finish(self, report: Mapping[str, Any], loop: Loop) -> None:
        """Final values, then push, textfile and linger (SPEC section 12). Never raises.

        A terminating signal during the push retries or the linger cuts them short; the
        task's own handling of that signal (``loop.on_signal``) still runs.
        """
        previous = loop.on_signal

        def on_signal(signum: int) -> None:
            if previous is not None:
                previous(signum)
            if signum in signals.TERMINATING:
                self.terminated = True

        loop.on_signal = on_signal
        try:
            success = self._set_final(report)
            if self.settings.pushgateway_url:
                self._push(self.settings.pushgateway_url, loop)
            if self.settings.metrics_textfile:
                self._write_textfile(self.settings.metrics_textfile, success)
            self._linger(loop)
        finally:
            loop.on_signal = previous

    def _set_final(self, report: Mapping[str, Any]) -> bool:
        """Set the report's figures, all at once for a scraper; True on success."""
        with self._final_lock:
            return self._set_final_values(report)

    def _set_final_values(self, report: Mapping[str, Any]) -> bool:
        started = _epoch(report.get("started_at"))
        ended = _epoch(report.get("finished_at")) or time.time()
        if started is not None:
            self._gauge("cc_task_start_time_seconds").set(started)
        self._gauge("cc_task_end_time_seconds").set(ended)
        duration = report.get("duration_seconds")
        if isinstance(duration, (int, float)):
            self._gauge("cc_task_duration_seconds").set(duration)
        resources = report.get("resources") or {}
        if resources.get("cpu_seconds") is not None:
            self._gauge("cc_task_cpu_seconds").set(resources["cpu_seconds"])
        if resources.get("max_rss_bytes") is not None:
            self._gauge("cc_task_max_rss_bytes").set(resources["max_rss_bytes"])
        for phase, hook in (report.get("hooks") or {}).items():
            self.hook_finished(phase, hook.get("exit_status", 0),
                               hook.get("duration_seconds", 0.0))
        status = report.get("exit_status")
        success = status == 0
        if isinstance(status, int):
            self._gauge("cc_task_exit_status").set(status)
        # Only a success creates this gauge: a failed run pushes nothing under its name,
        # so push-add keeps the Pushgateway's previous success time.
        if success:
            self._gauge("cc_task_last_success_time_seconds").set(ended)
        self.state(State.FINISHED)
        self._final.set()
        return success

    def _push(self, url: str, loop: Loop) -> None:
        target, shown, handler = _gateway(url)
        instance = self.platform.get("instance_id") or socket.gethostname()
        attempts = 0
        error = ""
        for attempt in range(1 + len(PUSH_BACKOFF_SECONDS)):
            if attempt:
                loop.wait(PUSH_BACKOFF_SECONDS[attempt - 1], until=lambda: self.terminated)
                if self.terminated:
                    break
            attempts += 1
            try:
                pushadd_to_gateway(target, job=PUSH_JOB, registry=self.registry,
                                   grouping_key={"instance": instance},
                                   timeout=PUSH_TIMEOUT_SECONDS, handler=handler)
            except OSError as exc:  # refused, timed out, HTTP 4xx/5xx: worth a retry
                error = _describe(exc)
                continue
            except Exception as exc:  # a malformed URL: retrying will not help
                error = _describe(exc)
                break
            self.writer.event("metrics.pushed", f"metrics pushed to {shown}",
                              target="pushgateway", url=shown, job=PUSH_JOB,
                              instance=instance, attempts=attempts)
            return
        self.writer.event("metrics.push_failed",
                          f"could not push metrics to {shown} after {attempts} "
                          f"attempt{'s' if attempts != 1 else ''}: {error}",
                          level="warning", target="pushgateway", url=shown, job=PUSH_JOB,
                          instance=instance, attempts=attempts, error=error)

    def _write_textfile(self, path: str, success: bool) -> None:
        """Write atomically; after a failure keep the file's previous success time."""
        collector: Collector = self.registry
        if not success:
            kept = _previous_success(path)
            if kept is not None:
                extra = CollectorRegistry(auto_describe=True)
                Gauge("cc_task_last_success_time_seconds", _HELP[
                    "cc_task_last_success_time_seconds"], registry=extra).set(kept)
                collector = _Joined(self.registry, extra)
        try:
            write_to_textfile(path, collector)
        except OSError as exc:
            self.writer.event("metrics.push_failed", f"could not write the metrics textfile "
                              f"{path}: {exc.strerror or exc}", level="warning",
                              target="textfile", path=path, error=_describe(exc))
            return
        self.writer.event("metrics.pushed", f"metrics written to {path}", level="debug",
                          target="textfile", path=path)

    def _linger(self, loop: Loop) -> None:
        """Serve until a scrape has read the final values, or the linger runs out.

        The HTTP thread wakes the loop through a pipe; meanwhile the loop goes on handling
        signals and reaping orphans.
        """
        linger = self.settings.metrics_linger
        if not linger or self._server is None or self._scraped.is_set() or self.terminated:
            return
        read_fd, write_fd = os.pipe()  # close-on-exec, like every fd Python opens
        os.set_blocking(write_fd, False)
        loop.add_reader(read_fd, _drain)
        with self._wake_lock:
            self._wake_fd = write_fd
        try:
            loop.wait(linger, until=lambda: self._scraped.is_set() or self.terminated)
        finally:
            with self._wake_lock:
                self._wake_fd = None
            loop.remove_reader(read_fd)
            os.close(read_fd)
            os.close(write_fd)

    @property
    def scraped_after_finish(self) -> bool:
        return self._scraped.is_set()

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    # -- helpers ----------------------------------------------------------------------

    def _gauge(self, name: str) -> Gauge:
        gauge = self._late.get(name)
        if gauge is None:
            gauge = Gauge(name, _HELP[name], registry=self.registry)
            self._late[name] = gauge
        return gauge


_HELP = {
    "cc_task_start_time_seconds": "When the command started, in seconds since the epoch.",
    "cc_task_end_time_seconds": "When the command ended, in seconds since the epoch.",
    "cc_task_duration_seconds": "How long the command ran.",
    "cc_task_exit_status": "The launcher's exit status (SPEC section 7).",
    "cc_task_last_success_time_seconds": "When the task last ended with exit status 0.",
    "cc_task_cpu_seconds": "CPU time (user + system) of the task's processes.",
    "cc_task_max_rss_bytes": "Peak resident memory of the task's largest process.",
}


class _Joined(Collector):
    """Several collectors as one, for ``write_to_textfile``."""

    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Any]:
        for part in self.parts:
            yield from part.collect()


class _Server(ThreadingWSGIServer):
    """Dual-stack (IPv6 and IPv4) listener on every interface; quiet."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would resolve the host's FQDN: a DNS lookup that can
        # take seconds on a VM without DNS, for a name nobody reads.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper hanging up is not worth a traceback on the launcher's stderr


class _Server4(_Server):
    address_family = socket.AF_INET


class _Handler(WSGIRequestHandler):
    timeout = HTTP_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not the task's logs


def _bind(port: int, app: WSGIApp) -> _Server:
    server: _Server
    try:
        server = _Server(("::", port), _Handler)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        server = _Server4(("0.0.0.0", port), _Handler)
    server.set_app(app)
    return server


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 512)


def _credentials(user: str | None, password: str | None) -> bytes | None:
    if user is None and password is None:
        return None
    return f"{user or ''}:{password or ''}".encode()


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _gateway(url: str) -> tuple[str, str, Callable[..., Callable[[], None]]]:
    """The URL without credentials, the same for logs (password masked), and a handler.

    urllib does not take credentials from a URL: they go into a basic-auth header.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.netloc.rpartition("@")[2]
    target = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if parts.username is None and parts.password is None:
        return target, target, default_handler
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    shown = urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}", parts.path,
                        parts.query, parts.fragment))

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return target, shown, handler


def _describe(exc: BaseException) -> str:
    if hasattr(exc, "code") and hasattr(exc, "reason"):  # urllib's HTTPError
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    if isinstance(reason, str) and reason:
        return reason
    return str(exc) or type(exc).__name__


def _previous_success(path: str) -> float | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            if family.name == "cc_task_last_success_time_seconds":
                for sample in family.samples:
                    return float(sample.value)
    except ValueError:
        return None  # not ours, or damaged: nothing to keep
    return None
