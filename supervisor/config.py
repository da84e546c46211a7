"""The configuration of SPEC section 2, as a pydantic model read from the merged environment.

Every knob is an environment variable; a command-line option wins over it. A malformed
value is a ``ConfigError`` whose sentence names the variable and the fault.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from supervisor import durations, signals
from supervisor.errors import ConfigError

MAX_COMMAND_BYTES = 131072
MIN_LOG_MAX_LINE = 16

ShutdownAction = Literal["auto", "none", "poweroff", "reboot", "halt"]
LogFormat = Literal["auto", "json", "text"]

_DURATIONS = (
    "troubleshoot_delay", "timeout", "idle_timeout", "kill_grace", "hook_timeout",
    "metrics_linger",
)


class Settings(BaseModel):
    """Resolved configuration. Field aliases are the variables' names."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_command: str | None = Field(None, alias="CC_RUN_COMMAND")
    pre_run_hook: str | None = Field(None, alias="CC_PRE_RUN_HOOK")
    succeeded_hook: str | None = Field(None, alias="CC_RUN_SUCCEEDED_HOOK")
    failed_hook: str | None = Field(None, alias="CC_RUN_FAILED_HOOK")
    troubleshoot: bool = Field(False, alias="CC_TROUBLESHOOT")
    troubleshoot_delay: float | None = Field(900.0, alias="CC_TASK_TROUBLESHOOT_DELAY")
    timeout: float | None = Field(None, alias="CC_TASK_TIMEOUT")
    idle_timeout: float | None = Field(None, alias="CC_TASK_IDLE_TIMEOUT")
    kill_grace: float | None = Field(30.0, alias="CC_TASK_KILL_GRACE")
    stop_signal: int = Field(int(signal.SIGTERM), alias="CC_TASK_STOP_SIGNAL")
    env_files: str | None = Field(None, alias="CC_TASK_ENV_FILES")
    env_dir: str | None = Field(None, alias="CC_TASK_ENV_DIR")
    workdir: str | None = Field(None, alias="CC_TASK_WORKDIR")
    user: str | None = Field(None, alias="CC_TASK_USER")
    log_format: LogFormat = Field("auto", alias="CC_TASK_LOG_FORMAT")
    log_max_line: int = Field(16384, alias="CC_TASK_LOG_MAX_LINE", ge=MIN_LOG_MAX_LINE)
    mask: str | None = Field(None, alias="CC_TASK_MASK")
    status_file: str | None = Field(None, alias="CC_TASK_STATUS_FILE")
    hooks_dir: str = Field("/etc/cc-task/hooks", alias="CC_TASK_HOOKS_DIR")
    hook_timeout: float | None = Field(300.0, alias="CC_TASK_HOOK_TIMEOUT")
    metrics_port: int | None = Field(None, alias="CC_TASK_METRICS_PORT")
    metrics_path: str = Field("/metrics", alias="CC_METRICS_PROMETHEUS_PATH")
    metrics_user: str | None = Field(None, alias="CC_METRICS_PROMETHEUS_USER")
    metrics_password: str | None = Field(None, alias="CC_METRICS_PROMETHEUS_PASSWORD")
    metrics_linger: float | None = Field(None, alias="CC_TASK_METRICS_LINGER")
    pushgateway_url: str | None = Field(None, alias="CC_TASK_PUSHGATEWAY_URL")
    metrics_textfile: str | None = Field(None, alias="CC_TASK_METRICS_TEXTFILE")
    shutdown: ShutdownAction = Field("auto", alias="CC_TASK_SHUTDOWN")
    shutdown_command: str | None = Field(None, alias="CC_TASK_SHUTDOWN_COMMAND")
    # Not variables: command-line only, or taken from the platform's variables.
    interactive: bool = Field(False, alias="--interactive")
    app_home: str | None = Field(None, alias="APP_HOME")
    prometheus_port: str | None = Field(None, alias="CC_METRICS_PROMETHEUS_PORT")

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        if value is None or isinstance(value, (int, float)):
            return value
        return durations.parse_duration(str(value))

    @field_validator("troubleshoot", "interactive", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        return durations.parse_bool(None if value is None else str(value))

    @field_validator("stop_signal", mode="before")
    @classmethod
    def _signal(cls, value: Any) -> int:
        if isinstance(value, int):
            return value
        if value is None or not str(value).strip():
            return int(signal.SIGTERM)
        return signals.parse(str(value))

    @field_validator("log_format", "shutdown", mode="before")
    @classmethod
    def _choice(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or "auto"
        return value

    @field_validator("log_max_line", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return 16384
            if not text.isdigit():
                raise ValueError("is not a whole number of bytes")
            return int(text)
        return value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("", "off", "none"):
            return None
        if text == "auto":
            return -1  # resolved against CC_METRICS_PROMETHEUS_PORT in ``load``
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError("is not a TCP port between 1 and 65535, or 'auto'")
        return int(text)

    @field_validator(
        "pre_run_hook", "succeeded_hook", "failed_hook", "status_file", "user", "workdir",
        "env_dir", "env_files", "pushgateway_url", "metrics_textfile", "shutdown_command",
        "mask", mode="before",
    )
    @classmethod
    def _optional(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # -- derived values -------------------------------------------------------------

    @property
    def cwd(self) -> str:
        """``CC_TASK_WORKDIR``, else ``$APP_HOME`` if it is a directory, else the cwd."""
        if self.workdir:
            return self.workdir
        if self.app_home and os.path.isdir(self.app_home):
            return self.app_home
        return os.getcwd()

    def masked_names(self) -> list[str]:
        from supervisor.environ import split_paths

        return split_paths(self.mask)

    def public(self) -> dict[str, Any]:
        """The resolved configuration keyed by variable, for ``cc-task check``."""
        data = self.model_dump(by_alias=True)
        for key in ("--interactive", "APP_HOME", "CC_METRICS_PROMETHEUS_PORT"):
            data.pop(key, None)
        data["CC_TASK_STOP_SIGNAL"] = signals.name(self.stop_signal)
        data["CC_TASK_WORKDIR"] = self.cwd
        return data


#: Variables of SPEC section 2 read by ``Settings`` (aliases), for --help and ``check``.
VARIABLES = tuple(
    f.alias for f in Settings.model_fields.values() if f.alias and f.alias.startswith("CC_")
)
_FIELDS_BY_ALIAS = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}


def _describe(error: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[str, str]:
    alias = str(error["loc"][0]) if error.get("loc") else "configuration"
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    if error.get("type") == "literal_error":
        field = Settings.model_fields[_FIELDS_BY_ALIAS[alias]]
        choices = getattr(field.annotation, "__args__", ())
        message = "is not one of " + ", ".join(map(str, choices))
    elif error.get("type") == "greater_than_equal":
        message = f"must be at least {error.get('ctx', {}).get('ge')}"
    value = data.get(alias)
    shown = "" if value is None else f"={value!r}"
    if alias == "--interactive":
        return alias, f"Invalid --interactive: {message}."
    return alias, f"Invalid {alias}{shown}: {message}."


def load(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Validate the configuration; on error raise ``ConfigError`` with a fallback.

    The fallback (``error.fallback``) is the configuration with every malformed value
    replaced by its default, so that the report and the shutdown action can still follow
    a configuration error (SPEC section 4).
    """
    data: dict[str, Any] = {k: env[k] for k in _FIELDS_BY_ALIAS if k in env}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        alias, sentence = _describe(errors[0], data)
        bad = {str(e["loc"][0]) for e in errors if e.get("loc")}
        error = ConfigError(sentence, variable=alias)
        error.fallback = Settings.model_validate(  # type: ignore[attr-defined]
            {k: v for k, v in data.items() if k not in bad}
        )
        raise error from None
    if settings.metrics_port == -1:
        port = (settings.prometheus_port or "").strip() or "9100"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            error = ConfigError(
                f"Invalid CC_METRICS_PROMETHEUS_PORT={port!r} (used by "
                "CC_TASK_METRICS_PORT=auto): is not a TCP port between 1 and 65535.",
                variable="CC_METRICS_PROMETHEUS_PORT",
            )
            error.fallback = settings.model_copy(update={"metrics_port": None})  # type: ignore[attr-defined]
            raise error
        settings = settings.model_copy(update={"metrics_port": int(port)})
    return settings


def validate(settings: Settings) -> None:
    """Checks that need the system: the command, the working directory, the user."""
    check_command(settings.run_command)
    cwd = settings.cwd
    if not os.path.isdir(cwd):
        raise ConfigError(
            f"Invalid CC_TASK_WORKDIR={cwd!r}: is not a directory.", variable="CC_TASK_WORKDIR"
        )


def check_command(command: str | None, variable: str = "CC_RUN_COMMAND") -> str:
    """Reject a missing or broken command (SPEC section 4) before anything runs."""
    import subprocess

    if command is None:
        raise ConfigError(f"{variable} is not set: there is no command to run.", variable)
    if not command.strip():
        raise ConfigError(f"{variable} is empty: there is no command to run.", variable)
    if "\0" in command:
        raise ConfigError(f"{variable} contains a NUL byte.", variable)
    size = len(command.encode("utf-8", "surrogateescape"))
    if size > MAX_COMMAND_BYTES:
        raise ConfigError(
            f"{variable} is {size} bytes long; the limit is {MAX_COMMAND_BYTES}.", variable
        )
    if all(not line.strip() or line.lstrip().startswith("#") for line in command.splitlines()):
        raise ConfigError(f"{variable} holds only comments: there is no command to run.", variable)
    try:
        # The script goes through stdin: an argument is limited to 131071 bytes.
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-n", "-s"],
            input=command.encode("utf-8", "surrogateescape"), capture_output=True, timeout=30,
        )
    except FileNotFoundError:
        return command  # no bash: reported as start-failed (127) when the command runs
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"{variable} could not be checked with bash -n: {exc}.", variable
        ) from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        first = detail[0] if detail else "bash -n failed"
        first = first.removeprefix("bash: -c: ").removeprefix("bash: ")
        first = first.removeprefix("-s: ").removeprefix("bash: line ")
        raise ConfigError(f"{variable} has a syntax error: {first}.", variable)
    return command
