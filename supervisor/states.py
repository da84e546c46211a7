"""Shared vocabulary: task states, results and hook phases. A leaf module."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """The launcher's life cycle, one gauge each in ``cc_task_state``."""

    STARTING = "starting"
    PRE_RUN = "pre_run"
    RUNNING = "running"
    STOPPING = "stopping"
    POST_RUN = "post_run"
    FINISHED = "finished"


class Result(enum.StrEnum):
    """The report's ``result`` and the hooks' ``CC_TASK_RESULT``."""

    SUCCESS = "success"
    EXIT_CODE = "exit-code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    IDLE_TIMEOUT = "idle-timeout"
    PRE_RUN_FAILED = "pre-run-failed"
    CONFIG_ERROR = "config-error"
    START_FAILED = "start-failed"


class Phase(enum.StrEnum):
    """Hook phases, with the folder each one reads under ``CC_TASK_HOOKS_DIR``."""

    PRE_RUN = "pre-run"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def folder(self) -> str:
        return f"{self.value}.d"


class Timeout(enum.StrEnum):
    """Kinds of deadline, the ``kind`` label of ``cc_task_timeouts_total``."""

    OVERALL = "overall"
    IDLE = "idle"
    HOOK = "hook"
