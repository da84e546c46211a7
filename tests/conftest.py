"""Shared fixtures of the test suite. Reusable functions live in ``tests/helpers.py``
(import them as ``from helpers import run_cc_task, ...``: pytest puts ``tests/`` on
``sys.path`` since the folder is not a package).

Fixtures:

- ``cc_task_bg``: a factory with ``start_cc_task``'s signature; every run it started is
  SIGKILLed, with all the processes it left behind, at teardown.
- ``marker``: a path (not yet existing) that a command may create to prove it ran.
- ``shutdown_probe``: an environment whose ``CC_TASK_SHUTDOWN_COMMAND`` records, in a
  file, that the shutdown step ran, and whether the status file already existed then.
"""

from __future__ import annotations

import contextlib
import shlex
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Background, start_cc_task

# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching, which
# imports libcst, which imports mypy_extensions.TypedDict and so raises a
# DeprecationWarning; filterwarnings=error turns that into an INTERNALERROR that hides the
# falsifying example. Import it once here, warnings silenced, so the later import is a
# cache hit.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore")
    import hypothesis.extra._patching  # noqa: F401


@pytest.fixture
def cc_task_bg() -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: Any, **kwargs: Any) -> Background:
        run = start_cc_task(*args, **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "command-ran"


@dataclass
class ShutdownProbe:
    """``env`` makes the shutdown step append a line to ``path`` instead of acting."""

    path: Path
    status_file: Path
    env: dict[str, str]

    def ran(self) -> bool:
        return self.path.exists()

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


@pytest.fixture
def shutdown_probe(tmp_path: Path) -> ShutdownProbe:
    path = tmp_path / "shutdown-ran"
    status = tmp_path / "status.json"
    # The line says whether the report was already written when the shutdown ran.
    command = (f"if [ -e {shlex.quote(str(status))} ]; then echo report-written; "
               f"else echo no-report; fi >> {shlex.quote(str(path))}")
    env = {
        "CC_TASK_SHUTDOWN_COMMAND": command,
        "CC_TASK_STATUS_FILE": str(status),
        # The command form replaces the action: even "poweroff" would not act.
        "CC_TASK_SHUTDOWN": "none",
    }
    return ShutdownProbe(path, status, env)
