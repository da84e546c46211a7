"""Loading of the task's environment (SPEC section 3): env files, envdir, precedence.

Pure functions over mappings: nothing here touches ``os.environ``.

>>> merge([{"A": "1", "B": "1"}, {"B": "2"}], {"C": "3"}, {"C": "4"})
{'A': '1', 'B': '2', 'C': '4'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from supervisor.errors import ConfigError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Marks a variable that an empty envdir file unsets.
UNSET = None

EnvLayer = dict[str, "str | None"]


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file.") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}.") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{what} {path}, line {line}: not valid UTF-8.") from None


def load_env_file(path: str, context: Mapping[str, str] | None = None) -> EnvLayer:
    """Parse one dotenv / shell-format file with python-dotenv.

    ``${VAR}`` and ``${VAR:-default}`` are expanded outside single quotes, from the file's
    earlier lines and then ``context``, as python-dotenv does. A malformed line or name is a
    ``ConfigError`` naming the file and the line.
    """
    import io

    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    text = _read_text(path, "Env file")
    values: EnvLayer = {}
    scope: dict[str, str | None] = dict(context or {})
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts the blank lines before a binding into it: report the
        # line the binding itself starts on.
        original = binding.original.string
        line = binding.original.line + len(original) - len(original.lstrip("\n"))
        if binding.error:
            raise ConfigError(
                f"Env file {path}, line {line}: malformed line (expected KEY=value)."
            )
        if binding.key is None:
            continue  # comment or blank line
        if not NAME.fullmatch(binding.key):
            raise ConfigError(
                f"Env file {path}, line {line}: invalid variable name "
                f"{binding.key!r} (names match [A-Za-z_][A-Za-z0-9_]*)."
            )
        value = binding.value
        if value is None:
            # ``KEY`` alone, without ``=``: python-dotenv's "declared, no value".
            raise ConfigError(
                f"Env file {path}, line {line}: {binding.key} has no '=value'."
            )
        if _interpolates(original, binding.key):
            value = "".join(atom.resolve(scope) for atom in parse_variables(value))
        values[binding.key] = value
        scope[binding.key] = value
    return values


def _interpolates(original: str, key: str) -> bool:
    """Single-quoted values are literal, as in a shell."""
    after = original.split("=", 1)[1] if "=" in original else ""
    return not after.lstrip().startswith("'")


def load_envdir(path: str) -> EnvLayer:
    """Read a daemontools envdir: one file per variable.

    The value is the file's first line with trailing spaces and tabs removed and NUL bytes
    turned into newlines; an empty file unsets the variable (value ``None``).
    """
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        raise ConfigError(f"Env dir {path} does not exist.") from None
    except NotADirectoryError:
        raise ConfigError(f"Env dir {path} is not a directory.") from None
    except OSError as exc:
        raise ConfigError(f"Env dir {path} cannot be read: {exc.strerror}.") from None
    values: EnvLayer = {}
    for entry in names:
        if entry.startswith("."):
            continue
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            continue
        if not NAME.fullmatch(entry):
            raise ConfigError(
                f"Env dir {path}: file {entry!r} is not a valid variable name "
                "(names match [A-Za-z_][A-Za-z0-9_]*)."
            )
        try:
            with open(full, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise ConfigError(f"Env dir file {full} cannot be read: {exc.strerror}.") from None
        if raw == b"":
            values[entry] = UNSET
            continue
        first = raw.split(b"\n", 1)[0].rstrip(b" \t").replace(b"\0", b"\n")
        try:
            values[entry] = first.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"Env dir file {full}: not valid UTF-8.") from None
    return values


def merge(
    files: Iterable[EnvLayer], envdir: EnvLayer | None, process: Mapping[str, str]
) -> dict[str, str]:
    """Files in order (later wins), then the envdir, then the process environment."""
    env: dict[str, str] = {}
    for layer in [*files, envdir or {}]:
        for key, value in layer.items():
            if value is UNSET:
                env.pop(key, None)
            else:
                env[key] = value
    env.update(process)
    return env


def split_paths(value: str | None) -> list[str]:
    """``CC_TASK_ENV_FILES`` and ``CC_TASK_MASK`` are ``:``-separated lists."""
    if not value:
        return []
    return [part for part in value.split(":") if part.strip()]


def load(
    process: Mapping[str, str], extra_files: Iterable[str] = ()
) -> dict[str, str]:
    """The merged environment of SPEC section 3, from the launcher's own environment.

    ``CC_TASK_ENV_FILES`` and ``CC_TASK_ENV_DIR`` come from the process environment;
    ``extra_files`` (``--env-file``) come after ``CC_TASK_ENV_FILES``.
    """
    from_variable = split_paths(process.get("CC_TASK_ENV_FILES"))
    paths = [*from_variable, *extra_files]
    layers: list[EnvLayer] = []
    context: dict[str, str] = dict(process)
    for index, path in enumerate(paths):
        try:
            layer = load_env_file(path, context={**_flatten(layers), **context})
        except ConfigError as exc:
            exc.variable = "CC_TASK_ENV_FILES" if index < len(from_variable) else "--env-file"
            raise
        layers.append(layer)
    envdir_path = process.get("CC_TASK_ENV_DIR")
    try:
        envdir = load_envdir(envdir_path) if envdir_path else None
    except ConfigError as exc:
        exc.variable = "CC_TASK_ENV_DIR"
        raise
    return merge(layers, envdir, process)


def _flatten(layers: list[EnvLayer]) -> dict[str, str]:
    out: dict[str, str] = {}
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None})
    return out
