"""cc-task as PID 1 of a real Linux VM (QEMU, Debian's kernel): SPEC sections 12 and 13.

The image is built (or taken from the cache) by ``packaging/vm/build_image.py``; every
scenario boots it once with its own env file appended as a second cpio archive, two VMs
at a time (one per core; TCG uses one host thread per VM). From the host, each test
checks what a platform sees: the JSON records on the serial console, the report on the
second serial port, and QEMU exiting by itself because the guest powered off.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VM = REPO / "packaging" / "vm"
#: A VM that has not powered off by then is killed, and its test fails.
BOOT_BOUND = 120.0
PARALLEL = 2

pytestmark = [
    pytest.mark.timeout(900),  # a cold build downloads the kernel and the packages
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed (tests/run.sh installs it)"),
]

MESSAGE = "it's a \"quoted\" value with $dollars and spaces"

#: name -> the task's env file entries.
SCENARIOS: dict[str, dict[str, str]] = {
    "success": {
        "CC_RUN_COMMAND": 'echo "hello from the VM"; echo "ppid=$PPID pid1=$(cat /proc/1/comm)";'
                          ' echo "message=$MESSAGE"; echo "on stderr" >&2',
        "MESSAGE": MESSAGE,
    },
    "failure": {"CC_RUN_COMMAND": "echo failing; exit 3"},
    "timeout": {"CC_RUN_COMMAND": "echo sleeping; sleep 60", "CC_TASK_TIMEOUT": "2s",
                "CC_TASK_KILL_GRACE": "5s"},
    "missing-command": {"CC_TASK_TIMEOUT": "10s"},
    # No CC_TASK_SHUTDOWN_COMMAND: cc-task powers off by itself (sync + reboot(2)).
    "builtin-poweroff": {"CC_RUN_COMMAND": "echo bye", "CC_TASK_SHUTDOWN_COMMAND": ""},
}


#: Booted with systemd as PID 1 and cc-task.service as shipped (report: on the console).
SYSTEMD_SCENARIO = {"CC_RUN_COMMAND": 'echo "under systemd"; cat /proc/1/comm; exit 5'}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ccvm_{name}", VM / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _build(*args: str) -> Path:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(VM / "build_image.py"), *args],
                          capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"image ready in {time.monotonic() - started:.1f}s: {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


@pytest.fixture(scope="module")
def image() -> Path:
    _build("--systemd")  # the same folder; the systemd variant adds its own initramfs
    return _build()


@pytest.fixture(scope="module")
def boots(image: Path) -> Iterator[dict[str, Any]]:
    """Boot every scenario, ``PARALLEL`` at a time; yield name -> ``Boot``."""
    boot = _load("boot")
    running: list[Any] = []

    def one(name: str) -> Any:
        if name == "systemd":
            vm = boot.Running(image, SYSTEMD_SCENARIO, timeout=BOOT_BOUND,
                              kernel_args=boot.SYSTEMD_KERNEL_ARGS,
                              initramfs="initramfs-systemd.cpio")
        else:
            vm = boot.Running(image, SCENARIOS[name], timeout=BOOT_BOUND)
        running.append(vm)
        return vm.wait()

    names = ["systemd", *SCENARIOS]  # the longest boot first
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            results = dict(zip(names, pool.map(one, names), strict=True))
    finally:
        for vm in running:
            vm.kill()  # no QEMU outlives the tests
    total = time.monotonic() - started
    print("\n" + ", ".join(f"{n}: {b.seconds:.1f}s" for n, b in results.items())
          + f"; all boots {total:.1f}s")
    yield results


def _powered_off(b: Any) -> None:
    """QEMU exited by itself, because the guest powered off (not a panic, not the bound)."""
    assert not b.timed_out, f"the VM did not stop within {BOOT_BOUND}s:\n{b.console[-3000:]}"
    assert b.returncode == 0, b.console[-3000:]
    assert "Kernel panic" not in b.console, b.console[-3000:]
    assert "reboot: Power down" in b.console, b.console[-3000:]


def _finished(b: Any) -> dict[str, Any]:
    (event,) = b.events("task.finished")
    report: dict[str, Any] = event["report"]
    return report


def _seqs_in_order(b: Any) -> None:
    seqs = [r["seq"] for r in b.records if "seq" in r]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


def test_success_logs_on_console_and_report_on_second_port(boots: dict[str, Any]) -> None:
    b = boots["success"]
    _powered_off(b)
    _seqs_in_order(b)
    # The task's parent is PID 1, and PID 1 is cc-task (the env file's quotes survived).
    assert b.output("stdout") == ["hello from the VM", "ppid=1 pid1=cc-task",
                                  f"message={MESSAGE}"]
    assert b.output("stderr") == ["on stderr"]
    started = b.events("command.started")
    assert len(started) == 1 and started[0]["pid"] > 1
    report = b.report
    assert report is not None, f"no report on the second serial port: {b.serial2!r}"
    assert report["result"] == "success" and report["exit_status"] == 0
    assert report["exit_code"] == 0 and report["timed_out"] is False
    assert report["output"]["stdout_lines"] == 3 and report["output"]["stderr_lines"] == 1
    assert report == _finished(b)
    (shutdown,) = b.events("shutdown.started")
    assert shutdown["action"] == "poweroff" and shutdown["command"] is True


def test_failing_task_reports_its_exit_status(boots: dict[str, Any]) -> None:
    b = boots["failure"]
    _powered_off(b)
    assert b.output("stdout") == ["failing"]
    report = b.report
    assert report is not None, b.serial2
    assert report["result"] == "exit-code"
    assert report["exit_status"] == 3 and report["exit_code"] == 3
    assert report["tail"][-1] == "failing"
    (finished,) = b.events("command.finished")
    assert finished["exit_code"] == 3


def test_timeout_reports_124(boots: dict[str, Any]) -> None:
    b = boots["timeout"]
    _powered_off(b)
    assert b.output("stdout") == ["sleeping"]
    assert len(b.events("timeout.reached")) == 1
    report = b.report
    assert report is not None, b.serial2
    assert report["result"] == "timeout" and report["exit_status"] == 124
    assert report["timed_out"] is True and report["signal"] == "SIGTERM"
    # The stop was polled: the VM did not wait for the whole 60 s sleep or the grace.
    assert report["duration_seconds"] < 7, report


def test_missing_command_reports_125_and_still_powers_off(boots: dict[str, Any]) -> None:
    b = boots["missing-command"]
    _powered_off(b)
    (invalid,) = b.events("config.invalid")
    assert invalid["variable"] == "CC_RUN_COMMAND"
    assert b.events("command.started") == [] and b.events("hook.started") == []
    report = b.report
    assert report is not None, b.serial2
    assert report["result"] == "config-error" and report["exit_status"] == 125


def test_cc_task_powers_off_by_itself_as_pid1(boots: dict[str, Any]) -> None:
    """Without CC_TASK_SHUTDOWN_COMMAND, cc-task's own sync + reboot(2) stops the VM."""
    b = boots["builtin-poweroff"]
    _powered_off(b)
    assert b.output("stdout") == ["bye"]
    assert _finished(b)["exit_status"] == 0
    (shutdown,) = b.events("shutdown.started")
    assert shutdown["action"] == "poweroff" and shutdown["command"] is False
    assert b.report is None  # nothing wrote to the second port: only cc-task ran


def test_each_vm_stopped_within_the_bound(boots: dict[str, Any]) -> None:
    slow = {n: round(b.seconds, 1) for n, b in boots.items() if b.seconds > 60}
    assert not slow, f"VMs slower than 60 s from start to power-off: {slow}"


def test_systemd_unit_runs_the_task_and_powers_off(boots: dict[str, Any]) -> None:
    """systemd is PID 1 and starts cc-task.service as packaging/ ships it: the records reach
    the console, and cc-task's ``systemctl poweroff`` stops the VM after the report."""
    b = boots["systemd"]
    _powered_off(b)
    _seqs_in_order(b)
    assert b.output("stdout") == ["under systemd", "systemd"]
    report = _finished(b)
    assert report["result"] == "exit-code" and report["exit_status"] == 5
    (shutdown,) = b.events("shutdown.started")
    assert shutdown["action"] == "poweroff" and shutdown["command"] is False
