#!/usr/bin/env python3
"""cc-task benchmark suite: cc-task side by side with bash, python, tini and dumb-init.

Usage::

    python3 bench/bench.py [--quick] [--only NAME ...] [--json OUT.json]
                           [--markdown OUT.md] [--cc-task PATH]

Sections (``--only`` takes these names): ``startup``, ``throughput``, ``masked``, ``rss``,
``idle``, ``sigterm``, ``grace``, ``reap``. Every section prints an aligned table with a
ratio column (cc-task / peer), then a summary of the goals of issues 3 and 5 with
pass/fail. ``--quick`` runs fewer repetitions and smaller inputs (under ~2 minutes);
a full run takes a few minutes. Methods are described in docs/performance.md.

The script never powers anything off: every cc-task run gets ``CC_TASK_SHUTDOWN=none``,
including the PID 1 runs inside a PID namespace. It is not part of the pytest suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # orjson ships with cc-task; plain json keeps the bench usable without it.
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the machine
    _loads = json.loads

HERE = Path(__file__).resolve().parent
SIGTASK = HERE / "sigtask.py"
ORPHANS = HERE / "orphans.py"
NAIVE = HERE / "naive_jsonlogger.py"
# The interpreter running the bench is the real one (a pyenv shim execs it), so the
# helper tasks and the "python3 -c pass" row never pay the shim's bash start-up.
PYTHON = sys.executable
SECTIONS = ("startup", "throughput", "masked", "rss", "idle", "sigterm", "grace", "reap")

GOAL_STARTUP_MS = 150.0
GOAL_LINES = 600_000.0
GOAL_LINES_MASKED = 400_000.0
GOAL_RSS_MB = 60.0
GOAL_IDLE_CPU_MS = 20.0


# --------------------------------------------------------------------------- helpers


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: Sequence[float]) -> float:
    """90th percentile (inclusive method); the single value when there is only one."""
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or x != x:  # None or NaN
        return "n/a"
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


@dataclass
class Table:
    """An aligned text table that can also render as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.headers, *self.rows]) for i in range(len(self.headers))
        ]
        line = "  ".join("-" * w for w in widths)

        def row(cells: list[str]) -> str:
            # First column left-aligned (names), figures right-aligned.
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        out = [f"\n== {self.title}", row(self.headers), line, *map(row, self.rows)]
        out += [f"   {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        out.append(
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"
        )
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


@dataclass
class Run:
    """One finished process: wall seconds, its wait4 rusage figures, exit status."""

    wall: float
    cpu: float  # ru_utime + ru_stime of the process and its reaped descendants, seconds
    maxrss_kb: int  # wait4 ru_maxrss: max over the process and its reaped descendants
    status: int
    stderr: bytes = b""


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The inherited environment without any CC_* knob, plus JSON logs and no shutdown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CC_", "BENCH_SECRET_"))}
    env["CC_TASK_LOG_FORMAT"] = "json"
    env["CC_TASK_SHUTDOWN"] = "none"  # never power anything off, PID 1 or not
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL, check: bool = True
) -> Run:
    """Run argv to completion; rusage comes from wait4 on that very pid."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        err.seek(0)
        errout = err.read()
    r = Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, p.returncode, errout)
    if check and r.status != 0:
        raise RuntimeError(f"{argv!r} exited {r.status}: {errout.decode(errors='replace')[-500:]}")
    return r


def vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run_peak_rss(
    argv: Sequence[str], env: dict[str, str], interval: float = 0.002
) -> tuple[Run, int]:
    """Run argv; return (Run, peak VmHWM in kB of that process alone).

    VmHWM is the process's own resident high-water mark (children excluded, unlike
    wait4's ru_maxrss). It vanishes once the process is a zombie, so it is polled every
    `interval` seconds until wait4 reports the exit; being a high-water mark, the last
    reading misses only growth in the final `interval` of the process's life.
    """
    t0 = time.perf_counter()
    p = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hwm = 0
    while True:
        v = vm_hwm_kb(p.pid)
        if v is not None:
            hwm = max(hwm, v)
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(interval)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {p.returncode}")
    return Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, p.returncode), hwm


class LineReader:
    """Reads lines from a child's stdout with a deadline (no blocking forever)."""

    def __init__(self, p: subprocess.Popen[bytes]) -> None:
        assert p.stdout is not None
        self.fd = p.stdout.fileno()
        self.buf = b""
        self.eof = False

    def next_line(self, deadline: float) -> bytes | None:
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line from the child in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    self.eof = True
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


@dataclass
class Launcher:
    """How to start a command string under one launcher."""

    name: str
    wrap: Callable[[str], list[str]]  # shell command string -> argv
    direct: Callable[[list[str]], list[str]]  # argv of a program -> argv (no bash)
    json_logs: bool = False

    def message(self, line: bytes) -> tuple[str | None, dict[str, Any] | None]:
        """(task output line or None, event record or None) for one stdout line."""
        if not self.json_logs:
            return line.decode(errors="replace"), None
        try:
            rec = _loads(line)
        except ValueError:
            return None, None
        if rec.get("source") == "command":
            return rec.get("message"), None
        return None, rec


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.cc, self.cc_note, self.cc_shim = resolve_cc_task(args.cc_task)
        self.results: dict[str, Any] = {"quick": self.quick, "cc_task": self.cc}
        self.tables: list[Table] = []
        self.goals: list[tuple[str, str, str, bool | None]] = []
        self.have_tini = shutil.which("tini") is not None
        self.have_dumb = shutil.which("dumb-init") is not None
        cc = self.cc
        self.l_cc = Launcher(
            "cc-task",
            lambda c: [cc, "--command", c],
            lambda a: [cc, "--command", " ".join(map(shq, a))],
            json_logs=True,
        )
        self.l_tini = Launcher(
            "tini",
            lambda c: ["tini", "-s", "--", "bash", "-c", c],
            lambda a: ["tini", "-s", "--", *a],
        )
        self.l_dumb = Launcher(
            "dumb-init", lambda c: ["dumb-init", "bash", "-c", c], lambda a: ["dumb-init", *a]
        )
        self.peers = [
            x for x, ok in ((self.l_tini, self.have_tini), (self.l_dumb, self.have_dumb)) if ok
        ]

    # -- output

    def show(self, t: Table) -> None:
        self.tables.append(t)
        print(t.text(), flush=True)

    def goal(self, name: str, target: str, measured: str, ok: bool | None) -> None:
        self.goals.append((name, target, measured, ok))

    # -- 1. startup

    def startup(self) -> None:
        n = 10 if self.quick else 30
        env = base_env()
        cmds: list[tuple[str, list[str]]] = [
            ("cc-task --command true", [self.cc, "--command", "true"])
        ]
        if self.cc_shim and self.cc_shim != self.cc:
            cmds.append(("cc-task via PATH shim", [self.cc_shim, "--command", "true"]))
        cmds += [
            ("bash -c true", ["bash", "-c", "true"]),
            ("python3 -c pass", [PYTHON, "-c", "pass"]),
        ]
        if self.have_tini:
            cmds.append(("tini -s -- true", ["tini", "-s", "--", "true"]))
        if self.have_dumb:
            cmds.append(("dumb-init true", ["dumb-init", "true"]))
        walls: dict[str, list[float]] = {k: [] for k, _ in cmds}
        cpus: dict[str, list[float]] = {k: [] for k, _ in cmds}
        for _, argv in cmds:  # warm the page cache once
            run(argv, env)
        for _ in range(n):  # interleaved, so drift hits every row alike
            for k, argv in cmds:
                r = run(argv, env)
                walls[k].append(r.wall * 1000)
                cpus[k].append(r.cpu * 1000)
        cc_med = median(walls[cmds[0][0]])
        t = Table(
            f"1. Startup overhead, {n} runs each (ms)",
            ["command", "median", "p90", "min", "cpu median", "cc-task / this"],
        )
        for k, _ in cmds:
            t.add(
                k,
                fmt(median(walls[k])),
                fmt(p90(walls[k])),
                fmt(min(walls[k])),
                fmt(median(cpus[k])),
                ratio(cc_med, median(walls[k])),
            )
        over = cc_med - median(walls["bash -c true"])
        t.notes.append(
            f"cc-task minus bash -c true (medians): {over:.1f} ms "
            f"(goal <= {GOAL_STARTUP_MS:.0f} ms)"
        )
        t.notes.append(
            "wall time from Popen to wait4, stdout to /dev/null, "
            "CC_TASK_LOG_FORMAT=json; cpu = user+sys from wait4 (incl. children)"
        )
        self.show(t)
        self.results["startup"] = {
            k: {
                "median_ms": median(walls[k]),
                "p90_ms": p90(walls[k]),
                "min_ms": min(walls[k]),
                "cpu_median_ms": median(cpus[k]),
                "runs_ms": walls[k],
            }
            for k, _ in cmds
        }
        self.results["startup"]["cc_minus_bash_ms"] = over
        self.goal(
            "startup over bash -c true",
            f"<= {GOAL_STARTUP_MS:.0f} ms",
            f"{over:.0f} ms",
            over <= GOAL_STARTUP_MS,
        )

    # -- 2./3. throughput

    def _throughput(self, masked: bool) -> None:
        lines = 1_000_000
        reps = 3 if self.quick else 5
        naive_lines = 50_000 if self.quick else 200_000
        extra: dict[str, str] = {}
        if masked:
            # 20 secrets of 24 characters, auto-masked by name (contains SECRET).
            extra = {f"BENCH_SECRET_{i:02d}": secrets.token_urlsafe(18) for i in range(1, 21)}
        env = base_env(extra)
        rows: list[tuple[str, Callable[[], float], int]] = [
            (
                "cc-task JSON > /dev/null",
                lambda: run([self.cc, "--command", f"seq {lines}"], env).wall,
                lines,
            ),
        ]
        if not masked:
            rows.append(
                (
                    "seq alone > /dev/null (no launcher)",
                    lambda: run(["seq", str(lines)], env).wall,
                    lines,
                )
            )
            if self.have_tini:
                rows.append(
                    (
                        "tini -s -- seq (passthrough)",
                        lambda: run(["tini", "-s", "--", "seq", str(lines)], env).wall,
                        lines,
                    )
                )
            if self.have_dumb:
                rows.append(
                    (
                        "dumb-init seq (passthrough)",
                        lambda: run(["dumb-init", "seq", str(lines)], env).wall,
                        lines,
                    )
                )
        mask_flag = " --mask" if masked else ""
        naive_cmd = f"seq {naive_lines} | {shq(PYTHON)} {shq(str(NAIVE))}{mask_flag}"
        rows.append(
            (
                f"naive python-json-logger{' + replace' if masked else ''} "
                f"({naive_lines // 1000}k lines)",
                lambda: run(["bash", "-c", naive_cmd], env).wall,
                naive_lines,
            )
        )
        walls: dict[str, list[float]] = {k: [] for k, _, _ in rows}
        trues: list[float] = []
        for _ in range(reps):
            # A `cc-task --command true` right before each cc-task run: its start-up and exit,
            # measured under the same load, give the figure net of start-up.
            trues.append(run([self.cc, "--command", "true"], env).wall)
            for k, fn, _ in rows:
                walls[k].append(fn())
        cc_key = rows[0][0]
        cc_rate = lines / median(walls[cc_key])
        cc_true = median(trues)
        cc_net = lines / max(
            median([w - t for w, t in zip(walls[cc_key], trues, strict=True)]), 1e-9
        )
        title = (
            "3. Throughput of seq 1000000 with 20 secrets masked"
            if masked
            else "2. Throughput of seq 1000000"
        )
        t = Table(
            f"{title}, {reps} runs each",
            ["command", "wall median s", "wall p90 s", "lines/s (median)", "cc-task / this"],
        )
        for k, _, n in rows:
            rate = n / median(walls[k])
            t.add(
                k, fmt(median(walls[k]), 3), fmt(p90(walls[k]), 3), fmt(rate), ratio(cc_rate, rate)
            )
        integrity = self._integrity(env, lines, list(extra.values()))
        t.notes.append(
            f"cc-task lines/s net of start-up and exit (median of run - paired `true` run, "
            f"`true` median {cc_true * 1000:.0f} ms): "
            f"{cc_net:,.0f}"
        )
        t.notes.append(f"integrity (separate run, JSON read from a pipe): {integrity['verdict']}")
        if masked:
            ref = self.results.get("throughput", {}).get("cc_lines_per_s")
            if ref:
                t.notes.append(f"masked / unmasked cc-task throughput: {cc_rate / ref:.2f}")
        self.show(t)
        key = "masked" if masked else "throughput"
        self.results[key] = {
            "walls_s": walls,
            "cc_lines_per_s": cc_rate,
            "cc_lines_per_s_net_of_startup": cc_net,
            "integrity": integrity,
        }
        goal = GOAL_LINES_MASKED if masked else GOAL_LINES
        self.goal(
            "lines/s, 20 secrets masked" if masked else "lines/s, JSON records",
            f">= {goal:,.0f}",
            f"{cc_rate:,.0f} (net {cc_net:,.0f})",
            cc_rate >= goal,
        )
        short = (
            f"{integrity['count']:,}, {integrity['out_of_order']} out of order, "
            f"{integrity['seq_gaps']} seq gaps"
        )
        if masked:
            short += f", {integrity['leaked']} leaks"
        self.goal(
            "no line lost" + (" (masked)" if masked else ""),
            "1,000,000 in order",
            short,
            integrity["ok"],
        )

    def _integrity(
        self, env: dict[str, str], lines: int, secret_values: list[str]
    ) -> dict[str, Any]:
        """Run cc-task on `seq lines` into a pipe; check every line arrives once, in order."""
        cmd = f"seq {lines}"
        if secret_values:
            # One line that must come out masked, after the counted ones.
            cmd += '; echo "tail $BENCH_SECRET_07 end"'
        p = subprocess.Popen(
            [self.cc, "--command", cmd],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert p.stdout is not None
        expect = 1
        count = 0
        out_of_order = 0
        seq_gaps = 0
        last_seq = 0
        leaked = 0
        masked_tail = False
        reported_lines = None
        raw_secrets = [s.encode() for s in secret_values]
        for line in p.stdout:
            if raw_secrets and any(s in line for s in raw_secrets):
                leaked += 1
            rec = _loads(line)
            s = rec.get("seq", 0)
            if s != last_seq + 1:
                seq_gaps += 1
            last_seq = s
            if rec.get("source") == "command":
                msg = rec.get("message")
                if msg.startswith("tail "):
                    masked_tail = msg == "tail *** end"
                    continue
                count += 1
                if msg != str(expect):
                    out_of_order += 1
                expect += 1
            elif rec.get("event") == "task.finished":
                reported_lines = rec["report"]["output"]["stdout_lines"]
        status = p.wait()
        ok = (
            count == lines
            and out_of_order == 0
            and seq_gaps == 0
            and leaked == 0
            and status == 0
            and (masked_tail or not secret_values)
        )
        verdict = (
            f"{count:,} command records, {out_of_order} out of order, {seq_gaps} seq gaps, "
            f"report stdout_lines={reported_lines}"
        )
        if secret_values:
            verdict += f", {leaked} lines with a raw secret, echoed secret masked: {masked_tail}"
        verdict = ("OK: " if ok else "FAIL: ") + verdict
        return {
            "ok": ok,
            "verdict": verdict,
            "count": count,
            "out_of_order": out_of_order,
            "seq_gaps": seq_gaps,
            "leaked": leaked,
        }

    def throughput(self) -> None:
        self._throughput(masked=False)

    def masked(self) -> None:
        self._throughput(masked=True)

    # -- 4. peak RSS

    def rss(self) -> None:
        gib = 256 if self.quick else 1024
        a99 = "a" * 99
        scenarios = [
            ("1M lines (seq 1000000)", "seq 1000000"),
            (f"{gib} MiB in 100-byte lines", f"yes {a99} | head -c {gib}M"),
            ("one 50 MB line, no newline", "head -c 50M /dev/zero | tr '\\0' x"),
        ]
        env = base_env()
        launchers = [self.l_cc, *self.peers]
        t = Table(
            "4. Peak RSS of the launcher process alone (VmHWM, MB)",
            [
                "output",
                *[f"{lc.name} MB" for lc in launchers],
                *[f"{lc.name} s" for lc in launchers],
                "cc-task incl. children MB",
                *[f"cc-task / {lc.name}" for lc in self.peers],
            ],
        )
        res: dict[str, Any] = {}
        worst = 0.0
        for label, cmd in scenarios:
            mb: dict[str, float] = {}
            secs: dict[str, float] = {}
            cc_all = 0.0
            for lc in launchers:
                r, hwm = run_peak_rss(lc.wrap(cmd), env)
                mb[lc.name] = hwm / 1024
                secs[lc.name] = r.wall
                if lc is self.l_cc:
                    cc_all = r.maxrss_kb / 1024
            worst = max(worst, mb["cc-task"])
            t.add(
                label,
                *[fmt(mb[lc.name]) for lc in launchers],
                *[fmt(secs[lc.name], 2) for lc in launchers],
                fmt(cc_all),
                *[ratio(mb["cc-task"], mb[lc.name]) for lc in self.peers],
            )
            res[label] = {"vmhwm_mb": mb, "wall_s": secs, "cc_wait4_maxrss_mb": cc_all}
        check = self._long_line_integrity(env)
        t.notes.append(
            "VmHWM polled every 2 ms from /proc/<launcher pid>/status until wait4; "
            "'incl. children' is wait4 ru_maxrss (max over launcher, bash, the pipeline)"
        )
        t.notes.append(f"50 MB line integrity (cc-task, separate run): {check['verdict']}")
        self.show(t)
        res["long_line_integrity"] = check
        self.results["rss"] = res
        self.goal(
            "peak RSS of the launcher",
            f"<= {GOAL_RSS_MB:.0f} MB",
            f"{worst:.1f} MB",
            worst <= GOAL_RSS_MB,
        )
        self.goal(
            "50 MB line intact",
            "50 MiB joined back exactly",
            f"{'OK' if check['ok'] else 'FAIL'}, {check['records']:,} records",
            check["ok"],
        )

    def _long_line_integrity(self, env: dict[str, str]) -> dict[str, Any]:
        size = 50 * 1024 * 1024
        p = subprocess.Popen(
            [self.cc, "--command", "head -c 50M /dev/zero | tr '\\0' x"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert p.stdout is not None
        total = 0
        records = 0
        bad = 0
        partial_end = None
        for line in p.stdout:
            rec = _loads(line)
            if rec.get("source") != "command":
                continue
            msg = rec["message"]
            records += 1
            total += len(msg)
            if msg.strip("x"):
                bad += 1
            partial_end = bool(rec.get("partial"))
        status = p.wait()
        # No newline at the end: the last record must be partial too (SPEC section 8), or a
        # reader joining the records would add a newline the task never wrote.
        ok = total == size and bad == 0 and status == 0 and partial_end is True
        return {
            "ok": ok,
            "verdict": f"{'OK' if ok else 'FAIL'}: {total:,} bytes in {records:,} "
            f"records, last record partial={partial_end}",
            "records": records,
        }

    # -- 5. idle CPU

    def idle(self) -> None:
        sleeps = [5] if self.quick else [5, 10]
        reps = 1 if self.quick else 3
        n_true = 5 if self.quick else 9
        env = base_env()
        launchers = [self.l_cc, *self.peers]
        cmds = ["true", *[f"sleep {s}" for s in sleeps]]
        cpu: dict[tuple[str, str], list[float]] = {}
        # The short runs first, one at a time on a quiet machine.
        for _ in range(n_true):
            for lc in launchers:
                cpu.setdefault((lc.name, "true"), []).append(run(lc.wrap("true"), env).cpu * 1000)
            cpu.setdefault(("bare", "true"), []).append(run(["bash", "-c", "true"], env).cpu * 1000)
        # The idle runs overlap (they sleep), but each starts only once the previous one's
        # task is running, so no two start-ups compete for the CPU.
        procs: list[tuple[str, str, subprocess.Popen[bytes]]] = []
        samples: list[tuple[float, str, subprocess.Popen[bytes], float, int]] = []
        for _ in range(reps):
            for lc in launchers:
                for c in cmds[1:]:
                    p = subprocess.Popen(
                        lc.wrap(c), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
                    )
                    procs.append((lc.name, c, p))
                    if wait_for_descendant(p.pid, "sleep", 15):
                        # Launcher-only CPU while the task sleeps: sampled from schedstat
                        # 0.5 s before the sleep ends, so the launcher is surely alive.
                        t_a = time.monotonic()
                        due = t_a + float(c.split()[1]) - 0.5
                        samples.append((due, lc.name, p, t_a, launcher_cpu_ns(p.pid)))
            for c in cmds[1:]:  # the task alone, to subtract what bash+sleep cost
                procs.append(("bare", c, subprocess.Popen(["bash", "-c", c], env=env)))
        idle_rate: dict[str, list[float]] = {}
        for due, name, p, t_a, cpu_a in sorted(samples, key=lambda x: x[0]):
            time.sleep(max(0.0, due - time.monotonic()))
            cpu_b, t_b = launcher_cpu_ns(p.pid), time.monotonic()
            # ms of launcher CPU per 5 s of the task sleeping
            idle_rate.setdefault(name, []).append((cpu_b - cpu_a) / 1e6 / (t_b - t_a) * 5)
        for name, c, p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu.setdefault((name, c), []).append((ru.ru_utime + ru.ru_stime) * 1000)
        headers = ["launcher", "cpu ms: true"]
        for s in sleeps:
            headers += [f"sleep {s}", f"sleep {s} - true"]
        headers += [
            f"launcher's own ({cmds[1]} - true - bare)",
            "sampled while idle, per 5 s",
            "cc-task / this (sampled)",
        ]
        t = Table(
            f"5. Launcher CPU (user+sys, ms) over an idle task, median of {reps} (true: {n_true})",
            headers,
        )
        deltas: dict[str, dict[str, float]] = {}
        rows_by_name: dict[str, list[str]] = {}
        for name in [lc.name for lc in launchers] + ["bare"]:
            base = median(cpu[(name, "true")])
            row: list[str] = [name if name != "bare" else "bash -c (no launcher)", fmt(base)]
            deltas[name] = {}
            for c in cmds[1:]:
                m = median(cpu[(name, c)])
                deltas[name][c] = m - base
                row += [fmt(m), fmt(m - base)]
            rows_by_name[name] = row
        bare = deltas["bare"][cmds[1]]
        for name, row in rows_by_name.items():
            own = deltas[name][cmds[1]] - bare if name != "bare" else float("nan")
            row.append(fmt(own))
            row.append(fmt(median(idle_rate[name]), 2) if name in idle_rate else "n/a")
            cc_idle = median(idle_rate.get("cc-task", []))
            peer_idle = median(idle_rate.get(name, []))
            # Both figures are near zero for a well-behaved launcher: a ratio of two noise
            # readings means nothing, so below 0.05 ms it is not shown.
            row.append(ratio(cc_idle, peer_idle) if peer_idle >= 0.05 else "n/a (~0)")
            t.add(*row)
        t.notes.append(
            "cpu = ru_utime + ru_stime from wait4 on the launcher (includes bash and "
            "the task, which cost the same with and without sleeping, so the "
            "difference is the launcher's own idle cost); runs of true one at a time, "
            "sleeping runs started one after the other"
        )
        t.notes.append(
            "sampled: the launcher's own threads only (/proc/<pid>/task/*/schedstat), from the "
            "moment the sleep process exists until 0.5 s before it ends, scaled to 5 s; "
            "the wait4 differences are dominated by the +-10 ms spread of cc-task's start-up"
        )
        self.show(t)
        self.results["idle"] = {
            "cpu_ms": {f"{k[0]}|{k[1]}": v for k, v in cpu.items()},
            "delta_ms": deltas,
            "sampled_idle_ms_per_5s": idle_rate,
        }
        d5 = deltas["cc-task"]["sleep 5"]
        own5 = d5 - deltas["bare"]["sleep 5"]
        self.goal(
            "launcher CPU, sleep 5 - true",
            f"<= {GOAL_IDLE_CPU_MS:.0f} ms",
            f"{d5:.1f} ms (own {own5:.1f}, sampled idle "
            f"{median(idle_rate.get('cc-task', [float('nan')])):.2f})",
            d5 <= GOAL_IDLE_CPU_MS,
        )

    # -- 6. SIGTERM latency

    def _start_sigtask(
        self,
        lc: Launcher,
        mode: str,
        extra: list[str] | None = None,
    ) -> tuple[subprocess.Popen[bytes], LineReader, int, list[dict[str, Any]]]:
        """Start sigtask under lc and wait for its ready line.

        Returns (launcher process, its line reader, the task's pid, events seen so far).
        """
        argv = lc.direct([PYTHON, str(SIGTASK), mode])
        if extra:
            argv = argv[:1] + extra + argv[1:]
        p = subprocess.Popen(argv, env=base_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        reader = LineReader(p)
        deadline = time.monotonic() + 15
        events: list[dict[str, Any]] = []
        seen: list[bytes] = []
        while True:
            line = reader.next_line(deadline)
            if line is None:
                status = p.wait(10)
                raise RuntimeError(
                    f"{lc.name} {argv!r} exited {status} before the task was "
                    f"ready; its output: {b'|'.join(seen)[-2000:]!r}"
                )
            seen.append(line)
            msg, ev = lc.message(line)
            if ev:
                events.append(ev)
            if msg and msg.startswith("ready pid="):
                return p, reader, int(msg.split("=", 1)[1]), events

    def sigterm(self) -> None:
        n = 8 if self.quick else 20
        launchers = [self.l_cc, *self.peers]
        lat: dict[str, list[float]] = {lc.name: [] for lc in launchers}
        tail: dict[str, list[float]] = {lc.name: [] for lc in launchers}
        for _ in range(n):
            for lc in launchers:
                p, reader, task_pid, _ = self._start_sigtask(lc, "handle")
                task_fd = os.pidfd_open(task_pid)
                launcher_fd = os.pidfd_open(p.pid)
                sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                os.kill(p.pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                got = None
                while got is None:
                    line = reader.next_line(deadline)
                    if line is None:
                        break
                    msg, _ = lc.message(line)
                    if msg and msg.startswith("term "):
                        got = int(msg.split()[1])
                # How long the launcher lingers once its task is gone (drain, report...).
                select.select([task_fd], [], [], 10)
                task_gone = time.monotonic()
                select.select([launcher_fd], [], [], 10)
                tail[lc.name].append((time.monotonic() - task_gone) * 1000)
                os.close(task_fd)
                os.close(launcher_fd)
                while reader.next_line(deadline) is not None:
                    pass
                p.wait(10)
                if got is None:
                    raise RuntimeError(f"{lc.name}: the task's handler never ran")
                lat[lc.name].append((got - sent) / 1e6)
        cc_med = median(lat["cc-task"])
        t = Table(
            f"6. SIGTERM to the launcher -> task's handler runs, {n} runs (ms)",
            [
                "launcher",
                "median",
                "p90",
                "max",
                "cc-task / this",
                "launcher exit after task exit, median",
                "p90",
            ],
        )
        for lc in launchers:
            xs = lat[lc.name]
            t.add(
                lc.name,
                fmt(median(xs), 3),
                fmt(p90(xs), 3),
                fmt(max(xs), 3),
                ratio(cc_med, median(xs)),
                fmt(median(tail[lc.name]), 2),
                fmt(p90(tail[lc.name]), 2),
            )
        t.notes.append(
            "task: bench/sigtask.py (Python handler reads CLOCK_MONOTONIC first "
            "thing); start = CLOCK_MONOTONIC just before os.kill(launcher, SIGTERM)"
        )
        t.notes.append(
            "exit after task exit: from the task's pidfd to the launcher's pidfd "
            "becoming readable (for cc-task: drain, command.finished, report)"
        )
        self.show(t)
        self.results["sigterm"] = {
            k: {
                "median_ms": median(v),
                "p90_ms": p90(v),
                "runs_ms": v,
                "exit_after_task_ms": tail[k],
            }
            for k, v in lat.items()
        }

    # -- 7. SIGKILL precision against the grace

    def grace(self) -> None:
        n = 3 if self.quick else 10
        grace_s = 1.0
        kinds: dict[str, list[tuple[float, float]]] = {
            "SIGTERM from the bench": [],
            "--timeout 0.5s": [],
        }
        for _ in range(n):
            for kind in kinds:
                extra = ["--kill-grace", "1s"]
                if kind.startswith("--timeout"):
                    extra += ["--timeout", "0.5s"]
                p, reader, task_pid, events = self._start_sigtask(self.l_cc, "ignore", extra)
                pidfd = os.pidfd_open(task_pid)
                stop_ns: int | None = None
                if kind.startswith("SIGTERM"):
                    stop_ns = time.time_ns()
                    os.kill(p.pid, signal.SIGTERM)
                ready, _, _ = select.select([pidfd], [], [], 10)
                death_ns = time.time_ns()
                death_mono = time.monotonic()
                os.close(pidfd)
                if not ready:
                    p.kill()
                    raise RuntimeError("cc-task never killed the TERM-ignoring task")
                deadline = time.monotonic() + 10
                while (line := reader.next_line(deadline)) is not None:
                    _, ev = self.l_cc.message(line)
                    if ev:
                        events.append(ev)
                p.wait(10)
                exit_after = time.monotonic() - death_mono
                if stop_ns is None:
                    reached = [e for e in events if e.get("event") == "timeout.reached"]
                    if not reached:
                        raise RuntimeError("no timeout.reached event")
                    stop_ns = rfc3339_ns(reached[0]["time"])
                kinds[kind].append(((death_ns - stop_ns) / 1e9, exit_after))
        t = Table(
            f"7. Stop signal -> SIGKILL of a TERM-ignoring task, grace {grace_s:.0f} s, {n} runs",
            [
                "launcher / stop",
                "stop->death median s",
                "error median ms",
                "error p90 ms",
                "error max ms",
                "launcher exit after death ms",
            ],
        )
        res: dict[str, Any] = {}
        for kind, xs in kinds.items():
            errs = [(d - grace_s) * 1000 for d, _ in xs]
            ex = [e * 1000 for _, e in xs]
            t.add(
                f"cc-task, {kind}",
                fmt(median([d for d, _ in xs]), 4),
                fmt(median(errs), 2),
                fmt(p90(errs), 2),
                fmt(max(errs), 2),
                fmt(median(ex), 2),
            )
            res[kind] = {"errors_ms": errs, "exit_after_death_ms": ex}
        for lc in self.peers:
            survived = self._peer_no_grace(lc)
            t.add(
                f"{lc.name}, SIGTERM from the bench",
                "never" if survived else "died?",
                "n/a (no grace)",
                "",
                "",
                "",
            )
            res[lc.name] = {"task_survived_2s": survived}
        t.notes.append(
            "death = the task's pidfd becomes readable; stop = when the bench sent "
            "SIGTERM, or the time field of the timeout.reached event; error = "
            "(death - stop) - grace"
        )
        t.notes.append(
            "tini and dumb-init forward the signal and wait: they have no grace and "
            "no SIGKILL, the TERM-ignoring task keeps running (checked for 2 s)"
        )
        self.show(t)
        self.results["grace"] = res

    def _peer_no_grace(self, lc: Launcher) -> bool:
        p, _, task_pid, _ = self._start_sigtask(lc, "ignore")
        pidfd = os.pidfd_open(task_pid)
        os.kill(p.pid, signal.SIGTERM)
        ready, _, _ = select.select([pidfd], [], [], 2.0)
        os.close(pidfd)
        try:
            os.kill(task_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)
        return not ready

    # -- 8. zombies reaped as PID 1

    def reap(self) -> None:
        n, rounds = (1000, 2) if self.quick else (2000, 3)
        if os.geteuid() != 0 or not shutil.which("unshare"):
            t = Table("8. Zombies reaped per second as PID 1", ["launcher", "result"])
            t.add("all", "skipped: needs root and unshare(1)")
            self.show(t)
            return
        ns = ["unshare", "--pid", "--fork", "--mount-proc"]
        task = [PYTHON, str(ORPHANS), str(n), str(rounds)]
        argvs: list[tuple[Launcher, list[str]]] = [
            (self.l_cc, ns + [self.cc, "--command", " ".join(map(shq, task))])
        ]
        if self.have_tini:
            argvs.append((self.l_tini, ns + ["tini", "--", *task]))  # PID 1: no -s needed
        if self.have_dumb:
            argvs.append((self.l_dumb, ns + ["dumb-init", *task]))
        env = base_env()  # CC_TASK_SHUTDOWN=none: cc-task is PID 1 here
        per: dict[str, list[float]] = {}
        walls: dict[str, float] = {}
        for lc, argv in argvs:
            t0 = time.perf_counter()
            out = subprocess.run(
                argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=300
            )
            walls[lc.name] = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(
                    f"{lc.name} as PID 1 exited {out.returncode}: {out.stderr[-500:]!r}"
                )
            secs = []
            for line in out.stdout.splitlines():
                msg, _ = lc.message(line)
                if msg and msg.startswith("round "):
                    secs.append(float(msg.split("seconds=")[1].split()[0]))
            if len(secs) != rounds:
                raise RuntimeError(f"{lc.name}: expected {rounds} rounds, got {secs}")
            per[lc.name] = secs
        cc_rate = n / median(per["cc-task"])
        t = Table(
            f"8. {n} orphaned zombies handed to PID 1 at once, {rounds} rounds",
            [
                "PID 1",
                "reap median ms",
                "reap max ms",
                "zombies/s (median)",
                "exit status",
                "cc-task / this",
            ],
        )
        for lc, _ in argvs:
            xs = per[lc.name]
            rate = n / median(xs)
            t.add(
                lc.name,
                fmt(median(xs) * 1000, 1),
                fmt(max(xs) * 1000, 1),
                fmt(rate),
                "0",
                ratio(cc_rate, rate),
            )
        t.notes.append(
            "bench/orphans.py: a middle process forks N children that exit, waits until "
            "all are zombies, exits; the task reaps it and polls /proc until the N pids "
            "are gone (poll resolution ~1-3 ms per /proc scan)"
        )
        self.show(t)
        self.results["reap"] = {
            k: {"seconds": v, "rate_median": n / median(v), "wall_s": walls[k]}
            for k, v in per.items()
        }

    # -- report

    def machine(self) -> dict[str, Any]:
        model = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        mem_kb = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
        info = {
            "cpu": model,
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cc_task": self.cc,
            "cc_task_note": self.cc_note,
            "cc_task_version": version([self.cc, "--version"]),
            "tini": version(["tini", "--version"]) if self.have_tini else "absent",
            "dumb_init": version(["dumb-init", "--version"]) if self.have_dumb else "absent",
            "loadavg_at_start": tuple(round(x, 2) for x in os.getloadavg()),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        return info

    def summary(self) -> Table:
        t = Table("Goals (issues 3 and 5)", ["goal", "target", "measured", "verdict"])
        for name, target, measured, ok in self.goals:
            t.add(name, target, measured, "n/a" if ok is None else ("PASS" if ok else "FAIL"))
        return t


def launcher_cpu_ns(pid: int) -> int:
    """CPU time in ns of all threads of pid alone (children excluded); 0 once it is gone."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def wait_for_descendant(pid: int, comm: str, timeout: float) -> bool:
    """Poll (bounded) until a descendant of pid runs a program named comm."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo, seen = [pid], set()
        while todo:
            p = todo.pop()
            seen.add(p)
            try:
                with open(f"/proc/{p}/comm") as f:
                    if p != pid and f.read().strip() == comm:
                        return True
                for tid in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{tid}/children") as f:
                        todo += [int(c) for c in f.read().split() if int(c) not in seen]
            except OSError:
                continue
        time.sleep(0.005)
    return False


def rfc3339_ns(s: str) -> int:
    """'2026-12-04T16:38:54.944048Z' -> nanoseconds since the epoch."""
    d = dt.datetime.strptime(s.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1000


def shq(s: str) -> str:
    import shlex

    return shlex.quote(s)


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "absent"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def is_shim(path: str) -> bool:
    """True for a shell-script wrapper (a pyenv shim) rather than a Python console script."""
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return first.startswith(b"#!") and b"python" not in first


def resolve_cc_task(explicit: str | None) -> tuple[str, str, str | None]:
    """(path used, how it was chosen, the PATH entry when it is a shim) for cc-task.

    A pyenv shim is a bash script that adds tens of milliseconds per start; the bench
    measures the launcher, so it resolves the shim to the real console script (the one
    next to the interpreter running this bench, else `pyenv which cc-task`).
    """
    if explicit:
        return explicit, "given with --cc-task", None
    found = shutil.which("cc-task")
    if found and not is_shim(found):
        return found, "first cc-task on PATH", None
    candidate = Path(sys.prefix) / "bin" / "cc-task"
    if candidate.exists() and not is_shim(str(candidate)):
        return str(candidate), f"{found} is a shim; used {sys.prefix}/bin/cc-task", found
    try:
        out = subprocess.run(
            ["pyenv", "which", "cc-task"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip(), f"{found} is a shim; used `pyenv which cc-task`", found
    except OSError:
        pass
    if found:
        return found, "cc-task on PATH (a shim; could not resolve it)", None
    raise SystemExit("cc-task not found: install it or pass --cc-task PATH")


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs (< ~2 min)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="NAME",
        help=f"run only these sections: {', '.join(SECTIONS)}",
    )
    ap.add_argument("--json", metavar="OUT", help="write all figures as JSON here")
    ap.add_argument("--markdown", metavar="OUT", help="write the tables as Markdown here")
    ap.add_argument("--cc-task", metavar="PATH", help="the cc-task executable to measure")
    args = ap.parse_args(list(argv) if argv is not None else None)
    b = Bench(args)
    info = b.machine()
    b.results["machine"] = info
    print("cc-task benchmark" + (" (quick)" if b.quick else ""))
    for k, v in info.items():
        print(f"  {k}: {v}")
    t0 = time.perf_counter()
    for name in SECTIONS:
        if args.only and name not in args.only:
            continue
        getattr(b, name)()
    summary = b.summary()
    print(summary.text())
    elapsed = time.perf_counter() - t0
    print(f"\n(bench took {elapsed:.0f} s)")
    b.results["elapsed_s"] = elapsed
    info["loadavg_at_end"] = tuple(round(x, 2) for x in os.getloadavg())
    print(f"load average at the end: {info['loadavg_at_end']}")
    b.results["goals"] = [
        {"goal": g, "target": t, "measured": m, "pass": ok} for g, t, m, ok in b.goals
    ]
    if args.json:
        Path(args.json).write_text(json.dumps(b.results, indent=1, default=str) + "\n")
    if args.markdown:
        md = ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
        md += [t.markdown() for t in [*b.tables, summary]]
        Path(args.markdown).write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
