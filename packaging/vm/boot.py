#!/usr/bin/env python3
"""Boot the cc-task VM once under QEMU (software emulation) and collect what came out.

    python3 packaging/vm/boot.py [--image DIR] [--timeout 90] [--env-file FILE]
                                 [-e KEY=VALUE ...]

The task's environment reaches the VM the way the platform injects it: as an env file,
``/etc/cc-task/task.env``, in a second cpio archive appended to the image's initramfs (the
kernel unpacks both). The console (first serial port) is QEMU's stdout; the report comes
out on the second serial port, written to a file. QEMU exits by itself when the guest
powers off (``-no-reboot`` also turns a panic's reboot into an exit), so the time bound
is only a safety net: reaching it is a failure. The CLI prints the console, then the
report, and exits 0 when the report says the task succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from build_image import env_archive  # noqa: E402

QEMU = "qemu-system-x86_64"
#: KVM is unusable on these machines (nested): TCG, one CPU, no default devices (no
#: network ROM to load), no display; QEMU exits instead of rebooting.
QEMU_ARGS = ["-accel", "tcg", "-machine", "pc", "-cpu", "max", "-smp", "1", "-m", "512",
             "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
KERNEL_ARGS = "console=ttyS0 panic=-1 rdinit=/init quiet"
#: The systemd variant: systemd is PID 1 and starts cc-task.service.
SYSTEMD_KERNEL_ARGS = ("console=ttyS0 panic=-1 rdinit=/usr/lib/systemd/systemd quiet "
                       "systemd.show_status=false")
REPORT_BEGIN = "----- cc-task report begin -----"
REPORT_END = "----- cc-task report end -----"


@dataclass
class Boot:
    """What one boot gave: QEMU's status, the console, the report, the time it took."""

    returncode: int | None  # None: QEMU was killed at the time bound
    console: str
    serial2: str
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def report(self) -> dict[str, Any] | None:
        """The report sent on the second serial port, or None if none arrived whole."""
        text = self.serial2.replace("\r\n", "\n")
        start = text.find(REPORT_BEGIN + "\n")
        end = text.find(REPORT_END, start)
        if start < 0 or end < 0:
            return None
        try:
            value = json.loads(text[start + len(REPORT_BEGIN) + 1:end])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def output(self, stream: str = "stdout") -> list[str]:
        return [r["message"] for r in self.records
                if r.get("source") == "command" and r.get("stream") == stream]


def json_records(console: str) -> list[dict[str, Any]]:
    """The JSON objects of the console, one per line, among kernel messages.

    A line may carry a prefix before its object: under systemd, records that reach the
    console through the kernel log read ``[   11.15] cc-task[107]: {...}``.
    """
    records = []
    for line in console.replace("\r", "").split("\n"):
        start = line.find("{")
        if start < 0:
            continue
        line = line[start:].strip()
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def env_file_text(env: Mapping[str, str]) -> str:
    """A dotenv file: ``KEY='value'``; single quotes: no expansion, ``\\'`` and ``\\\\``."""
    lines = []
    for key, value in env.items():
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        lines.append(f"{key}='{quoted}'")
    return "\n".join(lines) + "\n"


class Running:
    """A VM booting in the background; ``wait()`` collects it (parallel boots)."""

    def __init__(self, image: Path, env: Mapping[str, str] | None = None,
                 env_text: str | None = None, timeout: float = 90.0,
                 kernel_args: str = KERNEL_ARGS, initramfs: str = "initramfs.cpio") -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="cc-task-vm-")
        tmp = Path(self.tmp.name)
        text = env_text if env_text is not None else env_file_text(env or {})
        initrd = tmp / "initrd.cpio"
        with open(initrd, "wb") as out, open(image / initramfs, "rb") as base:
            while chunk := base.read(1 << 20):
                out.write(chunk)
            out.write(env_archive({"etc/cc-task/task.env": text.encode()}))
        self.serial2 = tmp / "serial2.txt"
        self.console = tmp / "console.txt"
        self.argv = [QEMU, *QEMU_ARGS, "-serial", "stdio", "-serial", f"file:{self.serial2}",
                     "-kernel", str(image / "vmlinux"), "-initrd", str(initrd),
                     "-append", kernel_args]
        self.timeout = timeout
        self.started = time.monotonic()
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT)

    def wait(self) -> Boot:
        left = self.timeout - (time.monotonic() - self.started)
        try:
            returncode: int | None = self.proc.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            returncode = None
        seconds = time.monotonic() - self.started
        console = self.console.read_bytes().decode("utf-8", "replace")
        serial2 = self.serial2.read_bytes().decode("utf-8", "replace") \
            if self.serial2.exists() else ""
        self.tmp.cleanup()
        return Boot(returncode, console, serial2, seconds, json_records(console))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def boot(image: Path, env: Mapping[str, str] | None = None, timeout: float = 90.0,
         env_text: str | None = None) -> Boot:
    """Boot once and wait for the VM to stop (or the time bound)."""
    return Running(image, env, env_text, timeout).wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(REPO / "packaging/out/vm"))
    p.add_argument("--timeout", type=float, default=90.0)
    p.add_argument("--env-file", help="the task's env file (dotenv format)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--systemd", action="store_true",
                   help="boot initramfs-systemd.cpio: systemd runs cc-task.service")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    text = Path(args.env_file).read_text() if args.env_file else ""
    text += env_file_text(env) if env else ""
    print("+ " + shlex.join([QEMU, *QEMU_ARGS, "..."]), file=sys.stderr)
    if args.systemd:
        result = Running(Path(args.image), env_text=text, timeout=args.timeout,
                         kernel_args=SYSTEMD_KERNEL_ARGS,
                         initramfs="initramfs-systemd.cpio").wait()
    else:
        result = boot(Path(args.image), timeout=args.timeout, env_text=text)
    sys.stdout.write(result.console)
    print(f"\n--- QEMU exit status {result.returncode} after {result.seconds:.1f}s"
          + (" (time bound reached, killed)" if result.timed_out else ""))
    report = result.report
    print("--- report from the second serial port:")
    print(json.dumps(report, indent=2) if report else "(none)")
    return 0 if report and report.get("exit_status") == 0 else 1


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
