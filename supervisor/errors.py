"""Expected failures: each carries the exit status and one sentence for a person.

They are turned into exit statuses at the CLI edge only; a traceback is always a bug.
"""

from __future__ import annotations

from supervisor import exitcodes


class CcTaskError(Exception):
    """An expected failure of the launcher."""

    exit_status = exitcodes.CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CcTaskError):
    """A malformed variable, env file or command: exit 125, nothing runs."""

    exit_status = exitcodes.CONFIG

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class UsageError(CcTaskError):
    """A command-line usage error: exit 2."""

    exit_status = exitcodes.USAGE
