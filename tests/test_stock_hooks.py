"""The stock hooks of ``hooks/`` (SPEC section 9, issue 4), run by a real cc-task with
``CC_TASK_HOOKS_DIR`` pointing at the repository's folder, against a real HTTP server
on 127.0.0.1; and the hook scripts run directly, to see their own raw output.
"""

from __future__ import annotations

import base64
import importlib.machinery
import importlib.util
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import Result, run_cc_task

REPO = Path(__file__).resolve().parent.parent
HOOKS = REPO / "hooks"
WEBHOOK = HOOKS / "lib" / "cc-task-webhook"
DIAGNOSTICS = HOOKS / "failed.d" / "50-diagnostics"
#: Fast retries for tests; the defaults (1s doubling) are for real receivers.
FAST = {"CC_TASK_WEBHOOK_BACKOFF": "100ms", "CC_TASK_WEBHOOK_TIMEOUT": "2s",
        "CC_TASK_KILL_GRACE": "2s"}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: answers ``statuses`` in turn (then 200), records requests."""

    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str = "/hook", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                state.requests.append(Received("POST", self.path, dict(self.headers), body))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_task(command: str, env: dict[str, str], **kwargs: Any) -> Result:
    full = {"CC_TASK_HOOKS_DIR": str(HOOKS), "CC_RUN_COMMAND": command, **env}
    return run_cc_task([], env=full, **kwargs)


def hook_messages(res: Result, name: str) -> list[str]:
    """Output lines of the folder hook ``name``, found through its hook.started path."""
    messages: list[str] = []
    current: str | None = None
    for r in res.records:
        if r.get("event") == "hook.started":
            current = r.get("path")
        elif r.get("event") == "hook.finished":
            current = None
        elif r.get("source") == "hook" and current and current.endswith("/" + name):
            messages.append(r["message"])
    return messages


def hook_finished(res: Result, name: str) -> dict[str, Any]:
    found = [e for e in res.events("hook.finished") if str(e.get("path", "")).endswith(name)]
    assert len(found) == 1, res
    return found[0]


def run_webhook(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    return subprocess.run([str(WEBHOOK)], env={**base, **env}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# -- webhook: through cc-task ------------------------------------------------------------


@pytest.mark.parametrize(("command", "status", "result"),
                         [("echo done", 0, "success"), ("echo broke; exit 3", 3, "exit-code")])
def test_webhook_posts_the_report(receiver: Receiver, command: str, status: int,
                                  result: str) -> None:
    res = run_task(command, {"CC_TASK_WEBHOOK_URL": receiver.url(), **FAST})
    assert res.returncode == status, res
    assert len(receiver.requests) == 1, res
    req = receiver.requests[0]
    assert req.method == "POST" and req.path == "/hook"
    assert req.headers["Content-Type"] == "application/json"
    body = json.loads(req.body)
    assert (body["result"], body["exit_status"]) == (result, status)
    assert body["run_id"] == res.report()["run_id"]
    assert req.headers["X-CC-Task-Run-Id"] == body["run_id"]
    assert body["tail"] == [command.split(";")[0][5:]]
    phase = "succeeded" if status == 0 else "failed"
    done = hook_finished(res, f"{phase}.d/90-webhook")
    assert done["exit_status"] == 0 and done["hook"] == phase
    assert any("delivered (HTTP 200" in m for m in hook_messages(res, "90-webhook"))


def test_webhook_without_url_does_nothing(receiver: Receiver) -> None:
    res = run_task("true", {"CC_TASK_WEBHOOK_URL": ""})
    assert res.returncode == 0, res
    assert receiver.requests == []
    assert hook_messages(res, "90-webhook") == [
        "cc-task-webhook: CC_TASK_WEBHOOK_URL is not set: no notification sent"]
    assert hook_finished(res, "succeeded.d/90-webhook")["exit_status"] == 0


def test_webhook_retries_after_a_server_error(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    res = run_task("exit 2", {"CC_TASK_WEBHOOK_URL": receiver.url(), **FAST})
    assert res.returncode == 2, res
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # the same report each time
    assert hook_finished(res, "failed.d/90-webhook")["exit_status"] == 0
    lines = hook_messages(res, "90-webhook")
    assert sum("HTTP 500" in m or "HTTP 503" in m for m in lines) == 2
    assert "delivered (HTTP 200, attempt 3/3" in lines[-1]


def test_webhook_does_not_retry_a_client_error(receiver: Receiver) -> None:
    receiver.statuses = [404]
    res = run_task("true", {"CC_TASK_WEBHOOK_URL": receiver.url(), **FAST})
    assert res.returncode == 0, res
    assert len(receiver.requests) == 1
    done = hook_finished(res, "succeeded.d/90-webhook")
    assert done["exit_status"] == 1 and done["level"] == "warning"
    assert res.report()["hooks"]["succeeded"]["exit_status"] == 1


def test_webhook_gives_up_in_bounded_time_on_a_closed_port() -> None:
    port = closed_port()
    started = time.monotonic()
    res = run_task("exit 3", {"CC_TASK_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook", **FAST})
    elapsed = time.monotonic() - started
    assert res.returncode == 3, res  # the task's status is unchanged
    done = hook_finished(res, "failed.d/90-webhook")
    assert done["exit_status"] == 1 and done["level"] == "warning"
    lines = hook_messages(res, "90-webhook")
    assert sum("refused" in m for m in lines) == 3, lines
    assert "giving up" in lines[-1]
    assert elapsed < 10  # three attempts and two short backoffs
    assert res.report()["hooks"]["failed"]["exit_status"] == 1


def test_webhook_bounds_a_receiver_that_never_answers() -> None:
    """The connection is accepted by the kernel (listen backlog) but nothing answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        proc = run_webhook({"CC_TASK_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                            "CC_TASK_REPORT_FILE": os.devnull,
                            "CC_TASK_WEBHOOK_TIMEOUT": "300ms",
                            "CC_TASK_WEBHOOK_BACKOFF": "50ms",
                            "CC_TASK_WEBHOOK_DEADLINE": "2s"})
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc
    assert proc.stderr.count("timed out") == 3, proc
    assert 0.9 <= elapsed < 3, elapsed


def test_webhook_overall_deadline_cuts_attempts() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        proc = run_webhook({"CC_TASK_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                            "CC_TASK_REPORT_FILE": os.devnull,
                            "CC_TASK_WEBHOOK_ATTEMPTS": "10",
                            "CC_TASK_WEBHOOK_TIMEOUT": "5s",
                            "CC_TASK_WEBHOOK_DEADLINE": "1s"})
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc
    assert "deadline" in proc.stderr
    assert elapsed < 2.5, elapsed


SECRET_PW = "s3cretpw"
SECRET_TOKEN = "t0kenVALUE42"


def test_webhook_never_prints_url_secrets(receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500]
    url = receiver.url(f"/hook?token={SECRET_TOKEN}", userinfo=f"user:{SECRET_PW}@")
    res = run_task("exit 1", {"CC_TASK_WEBHOOK_URL": url, **FAST})
    assert res.returncode == 1, res
    # The receiver got the credentials and the query string...
    assert len(receiver.requests) == 3
    req = receiver.requests[0]
    assert req.path == f"/hook?token={SECRET_TOKEN}"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(
        f"user:{SECRET_PW}".encode()).decode()
    # ...and the safe form of the URL is what the logs show.
    lines = hook_messages(res, "90-webhook")
    assert any(f"http://127.0.0.1:{receiver.port}/hook failed: HTTP 500" in m for m in lines)
    assert hook_finished(res, "failed.d/90-webhook")["exit_status"] == 1
    everything = res.stdout.decode() + res.stderr
    for secret in (SECRET_PW, SECRET_TOKEN, "user:"):
        assert secret not in everything


def test_webhook_own_output_has_no_secret(receiver: Receiver, tmp_path: Path) -> None:
    """Without cc-task's masking in between: the hook itself never prints them."""
    report = tmp_path / "report.json"
    report.write_text('{"result": "exit-code"}\n')
    for statuses, code in (([], 0), ([500, 500, 500], 1), ([401], 1)):
        receiver.statuses = list(statuses)
        url = receiver.url(f"/h?token={SECRET_TOKEN}", userinfo=f"user:{SECRET_PW}@")
        proc = run_webhook({"CC_TASK_WEBHOOK_URL": url, "CC_TASK_REPORT_FILE": str(report),
                            "CC_TASK_WEBHOOK_BACKOFF": "10ms"})
        assert proc.returncode == code, proc
        out = proc.stdout + proc.stderr
        assert f"http://127.0.0.1:{receiver.port}/h" in out
        assert SECRET_PW not in out and SECRET_TOKEN not in out and "user" not in out


def test_webhook_over_https(tmp_path: Path) -> None:
    """TLS: a certificate that does not verify fails at once; a trusted one delivers."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    report = tmp_path / "report.json"
    report.write_text('{"result": "success"}\n')
    env = {"CC_TASK_WEBHOOK_URL": f"https://127.0.0.1:{server.server_address[1]}/in",
           "CC_TASK_REPORT_FILE": str(report), "CC_TASK_WEBHOOK_BACKOFF": "10ms"}
    try:
        untrusted = run_webhook(env)
        trusted = run_webhook({**env, "SSL_CERT_FILE": str(cert)})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert untrusted.returncode == 1, untrusted
    assert untrusted.stderr.count("CERTIFICATE_VERIFY_FAILED") == 1, untrusted
    assert "not retried" in untrusted.stderr
    assert trusted.returncode == 0, trusted
    assert "delivered (HTTP 204" in trusted.stdout
    assert bodies == [b'{"result": "success"}\n']


@pytest.mark.parametrize(("env", "message"), [
    ({"CC_TASK_WEBHOOK_URL": "ftp://example.invalid/x"}, "http:// or https://"),
    ({"CC_TASK_WEBHOOK_URL": "http://127.0.0.1:notaport/x"}, "not a valid URL"),
    ({"CC_TASK_WEBHOOK_URL": "http://127.0.0.1:1/x", "CC_TASK_WEBHOOK_ATTEMPTS": "x"},
     "whole number"),
    ({"CC_TASK_WEBHOOK_URL": "http://127.0.0.1:1/x", "CC_TASK_WEBHOOK_TIMEOUT": "soon"},
     "not a duration"),
    ({"CC_TASK_WEBHOOK_URL": "http://127.0.0.1:1/x"}, "CC_TASK_REPORT_FILE is not set"),
])
def test_webhook_usage_errors(env: dict[str, str], message: str) -> None:
    proc = run_webhook(env)
    assert proc.returncode == 2, proc
    assert message in proc.stderr


def test_webhook_only_on_failures(receiver: Receiver) -> None:
    env = {"CC_TASK_WEBHOOK_URL": receiver.url(), "CC_TASK_WEBHOOK_ON": "failed", **FAST}
    ok = run_task("true", env)
    assert ok.returncode == 0 and receiver.requests == [], ok
    bad = run_task("exit 4", env)
    assert bad.returncode == 4, bad
    assert [json.loads(r.body)["exit_status"] for r in receiver.requests] == [4]


# -- diagnostics -----------------------------------------------------------------------


def test_diagnostics_on_failure(tmp_path: Path) -> None:
    res = run_task("echo line-one; echo line-two >&2; exit 5",
                   {"CC_TASK_WORKDIR": str(tmp_path)})
    assert res.returncode == 5, res
    assert hook_finished(res, "failed.d/50-diagnostics")["exit_status"] == 0
    lines = hook_messages(res, "50-diagnostics")
    assert lines[0].startswith("== cc-task diagnostics: result exit-code, exit status 5 "
                               "(exit code 5)")
    assert any(m.startswith("memory: total ") and "available" in m for m in lines), lines
    assert any(m.startswith("swap: ") for m in lines)
    assert any(m.startswith("disk /: ") and "free of" in m for m in lines), lines
    assert sum(m.startswith("oom: ") for m in lines) >= 1, lines
    assert lines[-2:] == ["tail| line-one", "tail| line-two"]
    # Diagnostics come before the notification (name order: 50 < 90).
    paths = [e.get("path", "") for e in res.events("hook.started")]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["50-diagnostics", "90-webhook"]


def test_diagnostics_after_a_timeout(tmp_path: Path) -> None:
    res = run_task("echo started; exec sleep 30", {"CC_TASK_TIMEOUT": "500ms",
                                                   "CC_TASK_KILL_GRACE": "2s"})
    assert res.returncode == 124, res
    lines = hook_messages(res, "50-diagnostics")
    assert lines[0].startswith("== cc-task diagnostics: result timeout, exit status 124 "
                               "(killed by SIGTERM, timed out)")
    assert lines[-1] == "tail| started"


def test_no_diagnostics_on_success() -> None:
    res = run_task("true", {})
    assert res.returncode == 0, res
    assert hook_messages(res, "50-diagnostics") == []
    assert [e.get("path", "").rsplit("/", 1)[-1] for e in res.events("hook.started")] == [
        "90-webhook"]


def test_diagnostics_without_report_or_kernel_log_access(tmp_path: Path) -> None:
    """Run as an unprivileged user with no report: still exit 0 and print every section."""
    setpriv = "/usr/bin/setpriv"
    if not (os.geteuid() == 0 and os.path.exists(setpriv)):
        pytest.skip("needs root and setpriv to drop privileges")
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         str(DIAGNOSTICS)],
        env={"PATH": "/usr/bin:/bin", "CC_TASK_RESULT": "exit-code", "CC_TASK_EXIT_STATUS": "1",
             "CC_TASK_EXIT_CODE": "1", "CC_TASK_REPORT_FILE": str(tmp_path / "missing.json")},
        cwd="/", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc
    out = proc.stdout
    assert "result exit-code, exit status 1 (exit code 1)" in out
    assert "memory: total" in out and "disk /:" in out
    assert "oom: " in out
    assert "report: cannot read" in out


def load_diagnostics() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("cc_task_diagnostics", str(DIAGNOSTICS))
    spec = importlib.util.spec_from_loader("cc_task_diagnostics", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_diagnostics_finds_oom_kills_through_dmesg(monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/kmsg refused (dmesg_restrict): the dmesg fallback's OOM lines are shown."""
    diag = load_diagnostics()

    def refused() -> list[str]:
        raise PermissionError(1, "Operation not permitted")

    log = ["[   1.0] eth0: link up",
           "[ 100.5] python3 invoked oom-killer: gfp_mask=0x140cca, order=0",
           "[ 100.6] Out of memory: Killed process 4242 (python3) total-vm:9000000kB",
           "[ 100.7] oom_reaper: reaped process 4242 (python3)"]
    monkeypatch.setattr(diag, "read_kmsg", refused)
    monkeypatch.setattr(diag, "read_dmesg", lambda: log)
    buf = io.StringIO()
    with redirect_stdout(buf):
        diag.oom_section()
    assert buf.getvalue().splitlines() == [
        "oom: the kernel log has 3 OOM line(s); the last ones:",
        *(f"oom: {line}" for line in log[1:])]

    monkeypatch.setattr(diag, "read_dmesg", lambda: None)
    buf = io.StringIO()
    with redirect_stdout(buf):
        diag.oom_section()
    assert buf.getvalue().startswith("oom: cannot read the kernel log (/dev/kmsg: Operation "
                                     "not permitted; dmesg unavailable or not permitted)")


def test_diagnostics_reads_kmsg_without_blocking() -> None:
    """The real /dev/kmsg: read to its end and return, never wait for new records."""
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here")
    diag = load_diagnostics()
    started = time.monotonic()
    try:
        lines = diag.read_kmsg()
    except PermissionError:
        pytest.skip("reading /dev/kmsg is not permitted here")
    assert time.monotonic() - started < 5
    assert isinstance(lines, list)
