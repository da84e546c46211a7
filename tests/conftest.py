"""Shared fixtures of the test suite. Reusable functions live in ``tests/helpers.py``
(import them as ``from helpers import run_cc_task, ...``: pytest puts ``tests/`` on
``sys.path`` since the folder is not a package).

Fixtures:

- ``launch``: a ``helpers.Launches``: ``launch(args, env=..., prefix=...)`` starts a
  cc-task in the background; at teardown every run it started is SIGKILLed with its
  whole process tree, every process carrying its tag and every pid given to ``launch.track``,
  and the task cgroups of the launchers killed are removed.
- ``marker``: a path (not yet existing) that a command may create to prove it ran.
- ``shutdown_probe``: an environment whose ``CC_TASK_SHUTDOWN_COMMAND`` records, in a
  file, that the shutdown step ran, and whether the status file already existed then.
"""

from __future__ import annotations

import contextlib
import shlex
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import Launches

# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching, which
# imports libcst, which imports mypy_extensions.TypedDict and so raises a
# DeprecationWarning; filterwarnings=error turns that into an INTERNALERROR that hides the
# falsifying example. Import it once here, warnings silenced, so the later import is a
# cache hit.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore")
    import hypothesis.extra._patching  # noqa: F401


@pytest.fixture
def launch() -> Iterator[Launches]:
    with Launches() as started:
        yield started


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
