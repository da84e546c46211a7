"""Naive baseline for bench/bench.py: one logging.LogRecord per line via python-json-logger.

Usage: ``naive_jsonlogger.py [--mask]`` reads lines from stdin (a pipe) and writes one JSON
record per line to stdout with the launcher's output-record fields. ``--mask`` replaces
the value of every environment variable named ``BENCH_SECRET_*`` with ``***`` first (the
straightforward str.replace loop). This is what the launcher's fast path is measured
against; it is deliberately the obvious implementation, not a tuned one.
"""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter


def main() -> None:
    mask = "--mask" in sys.argv[1:]
    secrets = [v for k, v in os.environ.items() if k.startswith("BENCH_SECRET_")] if mask else []
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level"},
        )
    )
    logger = logging.getLogger("naive")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    seq = 0
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\n").decode("utf-8", "replace")
        for secret in secrets:
            line = line.replace(secret, "***")
        seq += 1
        logger.info(line, extra={"source": "command", "stream": "stdout", "seq": seq})


if __name__ == "__main__":
    main()
