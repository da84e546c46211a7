"""Environment loading (SPEC section 3): env file formats, envdir rules, precedence, and
the variables the launcher adds (CC_TASK_RUN_ID, CC_TASK_ATTEMPT), all as the command
itself sees them."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path

from helpers import Result, run_cc_task

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def show(*names: str) -> str:
    """A command printing each variable as ``NAME=<base64 of its value>`` or ``NAME unset``
    (base64 keeps multi-line values and trailing blanks intact)."""
    return ("for n in " + " ".join(names) + "; do "
            'if [ -n "${!n+x}" ]; then '
            'printf \'%s=%s\\n\' "$n" "$(printf %s "${!n}" | base64 -w0)"; '
            'else echo "$n unset"; fi; done')


def seen(result: Result) -> dict[str, str | None]:
    """What ``show`` printed, decoded."""
    assert result.returncode == 0, result
    values: dict[str, str | None] = {}
    for line in result.output_text().decode().splitlines():
        if line.endswith(" unset"):
            values[line.split()[0]] = None
        else:
            name, encoded = line.split("=", 1)
            values[name] = base64.b64decode(encoded).decode()
    return values


def run_with_files(tmp_path: Path, files: Mapping[str, str | bytes], names: list[str],
                   env: dict[str, str | None] | None = None,
                   args: list[str] | None = None) -> dict[str, str | None]:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
    return seen(run_cc_task([*(args or []), "--command", show(*names)], env=env))


ENV_FILE = r"""# a comment line, then a blank line

export EXPORTED=yes
PLAIN=plain value
SQ='single $HOME \n ${PLAIN}'
DQ="tab\there \"quoted\" back\\slash"
NL="first\nsecond"
ML="line one
line two
  line three"
INLINE=value # a trailing comment
   # an indented comment
REF=${PLAIN}-ref
DEFAULTED=${NOT_SET_ANYWHERE:-fallback}
FROM_PROCESS=${PROCESS_VALUE}
EMPTY=
EMPTY_QUOTED=""
EQUALS=a=b=c
URL=postgres://u:p@h:5432/db?x=1&y=2
"""


def test_env_file_formats(tmp_path: Path) -> None:
    names = ["EXPORTED", "PLAIN", "SQ", "DQ", "NL", "ML", "INLINE", "REF", "DEFAULTED",
             "FROM_PROCESS", "EMPTY", "EMPTY_QUOTED", "EQUALS", "URL"]
    got = run_with_files(tmp_path, {"app.env": ENV_FILE}, names,
                         env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env"),
                              "PROCESS_VALUE": "from the process"})
    assert got == {
        "EXPORTED": "yes",
        "PLAIN": "plain value",
        "SQ": "single $HOME \\n ${PLAIN}",  # single quotes: literal, no expansion
        "DQ": 'tab\there "quoted" back\\slash',
        "NL": "first\nsecond",
        "ML": "line one\nline two\n  line three",
        "INLINE": "value",
        "REF": "plain value-ref",
        "DEFAULTED": "fallback",
        "FROM_PROCESS": "from the process",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "EQUALS": "a=b=c",
        "URL": "postgres://u:p@h:5432/db?x=1&y=2",
    }


def test_env_file_with_crlf_line_ends(tmp_path: Path) -> None:
    got = run_with_files(tmp_path, {"win.env": b"A=one\r\nB='two'\r\n"}, ["A", "B"],
                         env={"CC_TASK_ENV_FILES": str(tmp_path / "win.env")})
    assert got == {"A": "one", "B": "two"}


def test_run_command_from_env_file(tmp_path: Path) -> None:
    """On the platform CC_RUN_COMMAND often arrives only in the injected files."""
    (tmp_path / "app.env").write_text(
        "GREETING=hello\nCC_RUN_COMMAND=\"echo \\\"$GREETING\\\" from the file; exit 3\"\n"
        "CC_TASK_LOG_MAX_LINE=64\n")
    result = run_cc_task([], env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env"),
                                  "CC_RUN_COMMAND": None})
    assert result.returncode == 3, result
    assert result.output_text() == b"hello from the file\n"
    # Configuration read from the file too: a 100-byte line is split at 64 bytes.
    result = run_cc_task(["--command", "printf '%0100d\\n' 0"],
                         env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env")})
    records = [r for r in result.records if r.get("source") == "command"]
    assert [len(r["message"]) for r in records] == [64, 36], records


def test_env_files_later_wins_and_option_files_come_last(tmp_path: Path) -> None:
    files = {
        "a.env": "X=a\nY=a\nZ=a\nW=a\nONLY_A=a\n",
        "b.env": "Y=b\nZ=b\nW=b\n",
        "c.env": "Z=c\nW=c\n",
        "d.env": "W=d\n",
    }
    got = run_with_files(
        tmp_path, files, ["X", "Y", "Z", "W", "ONLY_A"],
        env={"CC_TASK_ENV_FILES": f"{tmp_path}/a.env:{tmp_path}/b.env"},
        args=["--env-file", str(tmp_path / "c.env"), "--env-file", str(tmp_path / "d.env")])
    assert got == {"X": "a", "Y": "b", "Z": "c", "W": "d", "ONLY_A": "a"}


def test_expansion_sees_earlier_files(tmp_path: Path) -> None:
    got = run_with_files(tmp_path, {"a.env": "BASE=/srv\n", "b.env": "DATA=${BASE}/data\n"},
                         ["DATA"], env={"CC_TASK_ENV_FILES": f"{tmp_path}/a.env:{tmp_path}/b.env"})
    assert got == {"DATA": "/srv/data"}


def test_envdir_rules(tmp_path: Path) -> None:
    envdir = tmp_path / "envdir"
    files: dict[str, str | bytes] = {
        "envdir/FIRST_LINE": b"first\nsecond\nthird\n",
        "envdir/TRAILING": b"  lead kept, trail trimmed \t \t\n",
        "envdir/NUL": b"one\x00two\x00three",
        "envdir/NO_NEWLINE": b"bare",
        "envdir/BLANK_FIRST_LINE": b"\nignored\n",
        "envdir/UNSET_ME": b"",
        "envdir/NEW": b"new value\n",
        "app.env": "UNSET_ME=from the file\nKEPT=from the file\n",
    }
    got = run_with_files(
        tmp_path, files,
        ["FIRST_LINE", "TRAILING", "NUL", "NO_NEWLINE", "BLANK_FIRST_LINE", "UNSET_ME", "NEW",
         "KEPT"],
        env={"CC_TASK_ENV_DIR": str(envdir), "CC_TASK_ENV_FILES": str(tmp_path / "app.env")})
    assert got == {
        "FIRST_LINE": "first",
        "TRAILING": "  lead kept, trail trimmed",
        "NUL": "one\ntwo\nthree",
        "NO_NEWLINE": "bare",
        "BLANK_FIRST_LINE": "",
        "UNSET_ME": None,  # an empty file unsets what an env file set
        "NEW": "new value",
        "KEPT": "from the file",
    }


def test_precedence_files_then_envdir_then_process(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "app.env": "A=file\nB=file\nC=file\nD=file\n",
        "envdir/B": "envdir\n",
        "envdir/C": "envdir\n",
        "envdir/D": "",  # unsets the file's D, but cannot unset the process's
        "envdir/E": "",
    }
    got = run_with_files(
        tmp_path, files, ["A", "B", "C", "D", "E"],
        env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env"),
             "CC_TASK_ENV_DIR": str(tmp_path / "envdir"),
             "C": "process", "E": "process"})
    assert got == {"A": "file", "B": "envdir", "C": "process", "D": None, "E": "process"}


def test_process_environment_wins_for_configuration_too(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("CC_RUN_COMMAND=echo from-file\n")
    result = run_cc_task([], env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env"),
                                  "CC_RUN_COMMAND": "echo from-process"})
    assert result.output_text() == b"from-process\n"
    # ... and the command-line option wins over both.
    result = run_cc_task(["--command", "echo from-option"],
                         env={"CC_TASK_ENV_FILES": str(tmp_path / "app.env")})
    assert result.output_text() == b"from-option\n"


def test_env_files_and_dir_variables_come_from_the_process_environment(tmp_path: Path) -> None:
    """CC_TASK_ENV_FILES inside an env file does not chain-load another file."""
    (tmp_path / "first.env").write_text(f"CC_TASK_ENV_FILES={tmp_path}/second.env\nA=first\n")
    (tmp_path / "second.env").write_text("A=second\nB=second\n")
    got = run_with_files(tmp_path, {}, ["A", "B"],
                         env={"CC_TASK_ENV_FILES": str(tmp_path / "first.env")})
    assert got == {"A": "first", "B": None}


def test_run_id_and_attempt(tmp_path: Path) -> None:
    result = run_cc_task(["--command", 'echo "$CC_TASK_RUN_ID $CC_TASK_ATTEMPT"'])
    run_id, attempt = result.output_text().decode().split()
    assert UUID4.fullmatch(run_id), run_id
    assert attempt == "1"
    assert result.report()["run_id"] == run_id
    assert result.events("command.started")[0]["run_id"] == run_id
    other = run_cc_task(["--command", 'echo "$CC_TASK_RUN_ID"'])
    assert other.output_text().decode().strip() != run_id


def test_launcher_values_override_injected_run_id(tmp_path: Path) -> None:
    """A stale CC_TASK_RUN_ID from the environment must not pass for this run's."""
    result = run_cc_task(["--command", 'echo "$CC_TASK_RUN_ID"'],
                         env={"CC_TASK_RUN_ID": "stale", "CC_TASK_ATTEMPT": "7"})
    assert result.output_text().decode().strip() == result.report()["run_id"]
