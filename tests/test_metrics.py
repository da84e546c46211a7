"""Metrics (SPEC section 11, issue 6): the scrape endpoint, the linger, the Pushgateway
push, the textfile, and the lazy import of prometheus-client.

Real servers: ``/usr/bin/prometheus`` and ``/usr/bin/prometheus-pushgateway`` (Debian
packages ``prometheus`` and ``prometheus-pushgateway``) are started by the fixtures on
free loopback ports with temporary storage, and stopped at teardown. Nothing sleeps to
synchronise: waits are on cc-task's records or on polling with a deadline.
"""

from __future__ import annotations

import base64
import errno
import http.server
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Launch, Launches, make_env, run_cc_task
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = "/usr/bin/prometheus"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers -------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, auth: tuple[str, str] | None = None,
             timeout: float = 5) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(port: int, auth: tuple[str, str] | None = None, path: str = "/metrics") -> Samples:
    status, _, body = http_get(f"http://127.0.0.1:{port}{path}", auth)
    assert status == 200, body
    return parse(body)


def final_scrape(port: int, auth: tuple[str, str] | None = None) -> Samples:
    """Scrape until the final values are there. ``task.finished`` comes just before they
    are set: the first scrape that shows them is the one that ends the linger."""
    samples: Samples = poll(lambda: (s := scrape(port, auth)) and
                            value(s, "cc_task_exit_status") is not None and s,
                            10, "the final values")
    return samples


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy ``check()``, polling every 0.1 s; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def release(fifo: Path, timeout: float = 10) -> None:
    """Let a command blocked in ``read < fifo`` go on (it may not have opened it yet)."""
    def try_open() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return None

    fd = poll(try_open, timeout, f"a reader on {fifo}")
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def finished(run: Launch, timeout: float = 20) -> dict[str, Any]:
    report: dict[str, Any] = run.wait_event("task.finished", timeout)["report"]
    return report


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            return http_get(url, timeout=1)[0] == 200
        except OSError:
            return False

    poll(ready, timeout, url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An empty hooks folder, so that a machine's stock hooks play no part."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    return {"CC_TASK_HOOKS_DIR": str(hooks)}


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "go.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.access(PUSHGATEWAY, os.X_OK):
        pytest.fail(f"{PUSHGATEWAY} is missing: apt-get install prometheus-pushgateway")
    port = free_port()
    log = (tmp_path_factory.mktemp("pushgateway") / "log").open("wb")
    proc = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", proc)
        yield url
    finally:
        stop(proc)
        log.close()


def start_prometheus(tmp_path: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: cc-task\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n")
    port = free_port()
    storage = tmp_path / "tsdb"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """``prometheus(port)`` starts a server scraping 127.0.0.1:port every second."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        proc, url = start_prometheus(tmp_path, target_port)
        procs.append(proc)
        wait_ready(f"{url}/-/ready", proc)
        return url

    yield start
    for proc in procs:
        stop(proc)


# -- values during the run -------------------------------------------------------------


def test_values_during_the_run(launch: Launches, env: dict[str, str], fifo: Path) -> None:
    port = free_port()
    command = (f"trap 'echo got-usr1' USR1; for i in 1 2 3 4 5; do echo line$i; done; "
               f"read -r _ < {shlex.quote(str(fifo))}; echo after")
    run = launch(["--command", command],
                 env={**env, "CC_TASK_METRICS_PORT": str(port)})
    run.wait_line("line5", timeout=20)
    samples = poll(lambda: (s := scrape(port)) and
                   value(s, "cc_task_output_lines_total", stream="stdout") == 5 and s,
                   10, "5 stdout lines in the metrics")
    assert value(samples, "cc_task_state", state="running") == 1
    for other in ("starting", "pre_run", "stopping", "post_run", "finished"):
        assert value(samples, "cc_task_state", state=other) == 0
    assert value(samples, "cc_task_output_bytes_total", stream="stdout") == 30
    assert value(samples, "cc_task_output_lines_total", stream="stderr") == 0
    assert value(samples, "cc_task_info", app_id="", deployment_id="", instance_id="",
                 version=_version()) == 1
    assert value(samples, "cc_task_start_time_seconds") is not None
    # Not known yet: absent, never a 0 that would read as a success.
    for name in ("cc_task_exit_status", "cc_task_end_time_seconds",
                 "cc_task_last_success_time_seconds", "cc_task_duration_seconds"):
        assert value(samples, name) is None, name
    assert value(samples, "cc_task_timeouts_total", kind="overall") == 0

    run.send(signal.SIGUSR1)
    run.wait_event("signal.forwarded", timeout=20)
    samples = scrape(port)
    assert value(samples, "cc_task_signals_forwarded_total", signal="SIGUSR1") == 1

    release(fifo)
    assert run.finish() == 0


def test_zombies_reaped_are_counted(launch: Launches, env: dict[str, str],
                                    fifo: Path) -> None:
    port = free_port()
    # The inner bash exits at once: its sleep is orphaned, re-parented to the launcher
    # (a subreaper) and reaped by it when it ends.
    command = ("bash -c 'sleep 0.2 & exit 0'; echo forked; "
               f"read -r _ < {shlex.quote(str(fifo))}")
    run = launch(["--command", command], env={**env, "CC_TASK_METRICS_PORT": str(port)})
    run.wait_line("forked", timeout=20)
    poll(lambda: value(scrape(port), "cc_task_zombies_reaped_total") == 1, 10,
         "cc_task_zombies_reaped_total 1")
    release(fifo)
    assert run.finish() == 0


def test_hook_output_is_not_the_commands(launch: Launches, env: dict[str, str]) -> None:
    port = free_port()
    run = launch(["--command", "echo one; echo two >&2; exit 3"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_TASK_METRICS_LINGER": "30",
        "CC_PRE_RUN_HOOK": "echo pre; echo pre", "CC_RUN_FAILED_HOOK": "echo failed; exit 2"})
    rep = finished(run)
    samples = final_scrape(port)
    assert run.finish(10) == 3
    assert value(samples, "cc_task_output_lines_total", stream="stdout") == \
        rep["output"]["stdout_lines"] == 1
    assert value(samples, "cc_task_output_lines_total", stream="stderr") == 1
    assert value(samples, "cc_task_hook_exit_status", hook="pre-run") == 0
    assert value(samples, "cc_task_hook_exit_status", hook="failed") == 2
    assert value(samples, "cc_task_hook_duration_seconds", hook="failed") == \
        pytest.approx(rep["hooks"]["failed"]["duration_seconds"])


# -- the endpoint --------------------------------------------------------------------


def test_basic_auth(launch: Launches, env: dict[str, str], fifo: Path) -> None:
    port = free_port()
    run = launch(["--command", f"echo ready; read -r _ < {shlex.quote(str(fifo))}"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_METRICS_PROMETHEUS_PATH": "/m",
        "CC_METRICS_PROMETHEUS_USER": "scraper",
        "CC_METRICS_PROMETHEUS_PASSWORD": "s3cret-pass"})
    run.wait_line("ready", timeout=20)
    url = f"http://127.0.0.1:{port}/m"
    status, headers, _ = http_get(url)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic realm=")
    assert http_get(url, ("scraper", "wrong"))[0] == 401
    assert http_get(url, ("other", "s3cret-pass"))[0] == 401
    status, _, body = http_get(url, ("scraper", "s3cret-pass"))
    assert status == 200
    assert value(parse(body), "cc_task_state", state="running") == 1
    assert http_get(f"http://127.0.0.1:{port}/metrics", ("scraper", "s3cret-pass"))[0] == 404
    release(fifo)
    assert run.finish() == 0


def test_the_listening_socket_does_not_leak_into_the_task(env: dict[str, str]) -> None:
    port = free_port()
    result = run_cc_task(["--command", "ls -l /proc/$$/fd /proc/self/fd"],
                         env={**env, "CC_TASK_METRICS_PORT": str(port)})
    assert result.returncode == 0, result
    listing = result.output_text().decode()
    assert "pipe:" in listing  # the listing is there: stdout is the launcher's pipe
    assert "socket:" not in listing, listing


def test_port_in_use_is_a_configuration_error(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cc_task(["--command", f"touch {shlex.quote(str(marker))}"],
                             env={**env, "CC_TASK_METRICS_PORT": str(port)})
    assert result.returncode == 125, result
    assert not marker.exists()
    (invalid,) = result.events("config.invalid")
    assert "CC_TASK_METRICS_PORT" in invalid["message"] and str(port) in invalid["message"]
    assert "Traceback" not in result.stderr


def test_port_in_use_on_loopback_only(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cc_task(["--command", f"touch {shlex.quote(str(marker))}"],
                             env={**env, "CC_TASK_METRICS_PORT": str(port)})
    assert result.returncode == 125, result
    assert not marker.exists()


@pytest.mark.parametrize("port", ["70000", "0", "http"])
def test_port_out_of_range(env: dict[str, str], tmp_path: Path, port: str) -> None:
    marker = tmp_path / "ran"
    result = run_cc_task(["--command", f"touch {shlex.quote(str(marker))}"],
                         env={**env, "CC_TASK_METRICS_PORT": port})
    assert result.returncode == 125, result
    assert not marker.exists()
    (invalid,) = result.events("config.invalid")
    assert "CC_TASK_METRICS_PORT" in invalid["message"]


# -- the linger ----------------------------------------------------------------------


def test_linger_ends_right_after_the_final_scrape(launch: Launches,
                                                  env: dict[str, str]) -> None:
    port = free_port()
    run = launch(["--command", "sleep 30"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_TASK_METRICS_LINGER": "60",
        "CC_TASK_TIMEOUT": "0.3", "CC_TASK_KILL_GRACE": "5"})
    rep = finished(run)
    assert rep["exit_status"] == 124
    assert run.proc.poll() is None  # still serving
    samples = final_scrape(port)
    scraped = time.monotonic()
    assert run.finish(10) == 124
    assert time.monotonic() - scraped < 3, "the launcher went on lingering after a scrape"
    assert value(samples, "cc_task_exit_status") == 124
    assert value(samples, "cc_task_state", state="finished") == 1
    assert value(samples, "cc_task_state", state="running") == 0
    assert value(samples, "cc_task_timeouts_total", kind="overall") == 1
    assert value(samples, "cc_task_duration_seconds") == pytest.approx(rep["duration_seconds"])
    assert value(samples, "cc_task_last_success_time_seconds") is None
    assert value(samples, "cc_task_end_time_seconds") >= value(  # type: ignore[operator]
        samples, "cc_task_start_time_seconds")
    assert value(samples, "cc_task_cpu_seconds") is not None


def test_linger_runs_out_without_a_scrape(env: dict[str, str]) -> None:
    port = free_port()
    begun = time.monotonic()
    result = run_cc_task(["--command", "true"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_TASK_METRICS_LINGER": "1.5"})
    took = time.monotonic() - begun
    assert result.returncode == 0, result
    assert 1.5 <= took < 10, took


def test_sigterm_ends_the_linger(launch: Launches, env: dict[str, str]) -> None:
    port = free_port()
    run = launch(["--command", "true"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_TASK_METRICS_LINGER": "60"})
    finished(run)
    run.send(signal.SIGTERM)
    signalled = time.monotonic()
    run.finish(10)
    assert time.monotonic() - signalled < 3


def test_a_real_prometheus_stores_the_final_exit_status(
        launch: Launches, env: dict[str, str], prometheus: Callable[[int], str]) -> None:
    port = free_port()
    api = prometheus(port)
    run = launch(["--command", "echo working; exit 3"], env={
        **env, "CC_TASK_METRICS_PORT": str(port), "CC_TASK_METRICS_LINGER": "30",
        "INSTANCE_ID": "prom-test"})
    finished(run)
    ended = time.monotonic()
    assert run.finish(40) == 3
    # Prometheus scrapes every second: the linger of 30 s ends at its first scrape.
    assert time.monotonic() - ended < 10

    query = urllib.parse.urlencode(
        {"query": 'last_over_time(cc_task_exit_status{job="cc-task"}[5m])'})

    def stored() -> list[Any]:
        status, _, body = http_get(f"{api}/api/v1/query?{query}")
        assert status == 200, body
        return json.loads(body)["data"]["result"]  # type: ignore[no-any-return]

    (series,) = poll(stored, 20, "cc_task_exit_status in Prometheus")
    assert float(series["value"][1]) == 3
    assert series["metric"]["instance"] == f"127.0.0.1:{port}"


# -- the Pushgateway -----------------------------------------------------------------


def pushed(gateway: str, instance: str) -> Samples:
    """The samples the Pushgateway holds for job cc-task and this instance."""
    _, _, body = http_get(f"{gateway}/metrics")
    found: Samples = {}
    for (name, labels), v in parse(body).items():
        d = dict(labels)
        if d.pop("job", None) == "cc-task" and d.pop("instance", None) == instance:
            found[(name, frozenset(d.items()))] = v
    return found


def test_pushgateway_keeps_the_last_success_after_a_failure(
        env: dict[str, str], pushgateway: str) -> None:
    instance = f"test-{uuid.uuid4().hex[:8]}"
    common = {**env, "CC_TASK_PUSHGATEWAY_URL": pushgateway, "INSTANCE_ID": instance}
    ok = run_cc_task(["--command", "echo fine"], env=common)
    assert ok.returncode == 0, ok
    (event,) = ok.events("metrics.pushed")
    assert event["instance"] == instance and event["attempts"] == 1
    first = pushed(pushgateway, instance)
    assert value(first, "cc_task_exit_status") == 0
    success = value(first, "cc_task_last_success_time_seconds")
    assert success is not None
    assert success == pytest.approx(value(first, "cc_task_end_time_seconds"))
    assert value(first, "cc_task_state", state="finished") == 1
    assert value(first, "cc_task_output_lines_total", stream="stdout") == 1
    assert value(first, "cc_task_info", app_id="", deployment_id="", instance_id=instance,
                 version=_version()) == 1

    failed = run_cc_task(["--command", "exit 7"], env=common)
    assert failed.returncode == 7, failed
    assert failed.events("metrics.pushed")
    second = pushed(pushgateway, instance)
    assert value(second, "cc_task_exit_status") == 7
    assert value(second, "cc_task_last_success_time_seconds") == success
    assert value(second, "cc_task_end_time_seconds") > success  # type: ignore[operator]


def test_unreachable_pushgateway(env: dict[str, str]) -> None:
    closed = free_port()
    begun = time.monotonic()
    result = run_cc_task(["--command", "exit 5"], env={
        **env, "CC_TASK_PUSHGATEWAY_URL": f"http://pusher:pw-9f8e7d6c@127.0.0.1:{closed}"})
    took = time.monotonic() - begun
    assert result.returncode == 5, result
    assert took < 15, took
    (event,) = result.events("metrics.push_failed")
    assert event["level"] == "warning"
    assert event["attempts"] == 3
    assert "pw-9f8e7d6c" not in result.stdout.decode() + result.stderr
    assert f"pusher:***@127.0.0.1:{closed}" in event["message"]
    assert result.report()["exit_status"] == 5


def test_pushgateway_credentials_become_basic_auth(env: dict[str, str]) -> None:
    """urllib ignores a URL's user:password: the launcher must send them as a header."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(("POST", self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = run_cc_task(["--command", "true"], env={
            **env, "CC_TASK_PUSHGATEWAY_URL": f"http://pusher:p%40ss-word@127.0.0.1:{port}/pg",
            "INSTANCE_ID": "i-42"})
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result
    token = base64.b64encode(b"pusher:p@ss-word").decode()
    assert seen == [("POST", "/pg/metrics/job/cc-task/instance/i-42", f"Basic {token}")]
    (event,) = result.events("metrics.pushed")
    assert "p%40ss-word" not in event["message"] and "p@ss-word" not in event["message"]


# -- the textfile --------------------------------------------------------------------


def test_textfile_is_written_and_keeps_the_last_success(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    path = folder / "cc-task.prom"
    common = {**env, "CC_TASK_METRICS_TEXTFILE": str(path)}
    assert run_cc_task(["--command", "echo a; echo b"], env=common).returncode == 0
    first = parse(path.read_text())
    assert value(first, "cc_task_exit_status") == 0
    assert value(first, "cc_task_output_lines_total", stream="stdout") == 2
    success = value(first, "cc_task_last_success_time_seconds")
    assert success is not None

    assert run_cc_task(["--command", "exit 1"], env=common).returncode == 1
    second = parse(path.read_text())
    assert value(second, "cc_task_exit_status") == 1
    assert value(second, "cc_task_last_success_time_seconds") == success
    assert sorted(p.name for p in folder.iterdir()) == ["cc-task.prom"]  # no temp files


def test_textfile_that_cannot_be_written_is_a_warning(env: dict[str, str],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "missing-folder" / "cc-task.prom"
    result = run_cc_task(["--command", "exit 6"],
                         env={**env, "CC_TASK_METRICS_TEXTFILE": str(path)})
    assert result.returncode == 6, result
    (event,) = result.events("metrics.push_failed")
    assert event["level"] == "warning" and event["target"] == "textfile"


# -- the lazy import -----------------------------------------------------------------


def _imports(env: dict[str, str], extra: dict[str, str]) -> str:
    tag = uuid.uuid4().hex
    full = make_env(tag, {**env, **extra})
    argv = [sys.executable, "-X", "importtime", "-m", "supervisor", "--command", "true"]
    proc = subprocess.run(argv, env=full, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc
    return proc.stderr.decode()


def test_prometheus_client_is_imported_only_when_a_feature_is_on(
        env: dict[str, str], tmp_path: Path) -> None:
    assert "prometheus_client" not in _imports(env, {})
    textfile = str(tmp_path / "x.prom")
    assert "prometheus_client" in _imports(env, {"CC_TASK_METRICS_TEXTFILE": textfile})


def _version() -> str:
    from supervisor import __version__

    return __version__


# -- in process: the registry itself ---------------------------------------------------


class _FakeLoop:
    """What ``finish`` needs of a loop when there is neither push nor linger."""

    on_signal = None


def _metrics(**variables: Any) -> Any:
    from supervisor.config import Settings
    from supervisor.logwriter import LogWriter, Sink
    from supervisor.metrics import Metrics

    devnull = os.open(os.devnull, os.O_WRONLY)
    writer = LogWriter("json", stdout=Sink(devnull), stderr=Sink(devnull))
    settings = Settings.model_validate(variables)
    return Metrics(settings, {"app_id": "app_1", "instance_id": "i-1"}, writer, "9.9")


def test_registry_counts_the_commands_output_only() -> None:
    from supervisor.states import State, Timeout

    m = _metrics()
    get = m.registry.get_sample_value
    assert get("cc_task_state", {"state": "starting"}) == 1
    m.state(State.PRE_RUN)
    m.output("stdout", 4, 40)  # a pre-run hook's output
    m.state(State.RUNNING)
    m.output("stdout", 2, 12)
    m.output("stderr", 1, 5)
    m.stopping()
    m.output("stdout", 1, 3)  # the command still writes while it stops
    m.timeout(Timeout.IDLE)
    m.signal_forwarded(signal.SIGTERM)
    m.state(State.POST_RUN)
    m.output("stdout", 9, 90)  # a post-run hook's output
    m.zombie_reaped()
    assert get("cc_task_output_lines_total", {"stream": "stdout"}) == 3
    assert get("cc_task_output_bytes_total", {"stream": "stdout"}) == 15
    assert get("cc_task_output_lines_total", {"stream": "stderr"}) == 1
    assert get("cc_task_timeouts_total", {"kind": "idle"}) == 1
    assert get("cc_task_signals_forwarded_total", {"signal": "SIGTERM"}) == 1
    assert get("cc_task_zombies_reaped_total") == 1
    assert get("cc_task_state", {"state": "post_run"}) == 1
    assert get("cc_task_state", {"state": "stopping"}) == 0
    assert get("cc_task_info", {"app_id": "app_1", "deployment_id": "",
                                "instance_id": "i-1", "version": "9.9"}) == 1
    assert get("cc_task_exit_status") is None


def test_finish_sets_the_final_values_from_the_report() -> None:
    m = _metrics()
    get = m.registry.get_sample_value
    m.finish({"exit_status": 0, "started_at": "2024-01-02T03:04:05.500000Z",
              "finished_at": "2024-01-02T03:04:07.000000Z", "duration_seconds": 1.5,
              "resources": {"cpu_seconds": 0.25, "max_rss_bytes": 1048576},
              "hooks": {"succeeded": {"exit_status": 3, "duration_seconds": 0.125}}},
             _FakeLoop())
    end = 1704164647.0
    assert get("cc_task_start_time_seconds") == end - 1.5
    assert get("cc_task_end_time_seconds") == end
    assert get("cc_task_last_success_time_seconds") == end
    assert get("cc_task_duration_seconds") == 1.5
    assert get("cc_task_exit_status") == 0
    assert get("cc_task_cpu_seconds") == 0.25
    assert get("cc_task_max_rss_bytes") == 1048576
    assert get("cc_task_hook_exit_status", {"hook": "succeeded"}) == 3
    assert get("cc_task_hook_duration_seconds", {"hook": "succeeded"}) == 0.125
    assert get("cc_task_state", {"state": "finished"}) == 1

    failed = _metrics()
    failed.finish({"exit_status": 1, "resources": {}}, _FakeLoop())
    assert failed.registry.get_sample_value("cc_task_exit_status") == 1
    assert failed.registry.get_sample_value("cc_task_last_success_time_seconds") is None
    assert failed.registry.get_sample_value("cc_task_cpu_seconds") is None


def test_the_listening_socket_is_not_inheritable() -> None:
    m = _metrics(CC_TASK_METRICS_PORT=free_port())
    m.start()
    try:
        assert m.port is not None
        assert m._server.socket.get_inheritable() is False
        assert http_get(f"http://127.0.0.1:{m.port}/metrics")[0] == 200
    finally:
        m.close()
    m.close()  # idempotent
