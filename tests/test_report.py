"""The report (SPEC section 10): every field with its type, at most 4096 bytes, the
command cut to 512 bytes, the tail shortened to fit, and the status file written
atomically (temporary file, then rename)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from helpers import run_cc_task

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

FIELDS = {"schema", "result", "exit_status", "exit_code", "signal", "timed_out", "killed",
          "run_id", "started_at", "finished_at", "duration_seconds", "command", "pid",
          "output", "resources", "hooks", "tail", "app_id", "deployment_id", "instance_id"}


def _time(value: str) -> dt.datetime:
    assert TIME.fullmatch(value), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_schema(rep: dict[str, Any]) -> None:
    """Every field of SPEC section 10, with its type."""
    assert FIELDS <= set(rep), FIELDS - set(rep)
    assert rep["schema"] == 1
    assert rep["result"] in ("success", "exit-code", "signal", "timeout", "idle-timeout",
                             "pre-run-failed", "config-error", "start-failed")
    assert type(rep["exit_status"]) is int and 0 <= rep["exit_status"] <= 255
    assert rep["exit_code"] is None or type(rep["exit_code"]) is int
    assert rep["signal"] is None or (isinstance(rep["signal"], str)
                                     and rep["signal"].startswith("SIG"))
    assert type(rep["timed_out"]) is bool and type(rep["killed"]) is bool
    assert UUID4.fullmatch(rep["run_id"])
    assert _time(rep["started_at"]) <= _time(rep["finished_at"])
    assert isinstance(rep["duration_seconds"], (int, float)) and rep["duration_seconds"] >= 0
    assert rep["command"] is None or isinstance(rep["command"], str)
    assert rep["pid"] is None or type(rep["pid"]) is int
    assert set(rep["output"]) == {"stdout_lines", "stderr_lines", "stdout_bytes",
                                  "stderr_bytes"}
    assert all(type(v) is int and v >= 0 for v in rep["output"].values())
    assert set(rep["resources"]) == {"cpu_seconds", "max_rss_bytes"}
    assert isinstance(rep["hooks"], dict)
    assert isinstance(rep["tail"], list) and all(isinstance(x, str) for x in rep["tail"])
    for key in ("app_id", "deployment_id", "instance_id"):
        assert rep[key] is None or isinstance(rep[key], str)


def test_report_fields_of_a_successful_run(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    result = run_cc_task(["--command", "echo one; echo two >&2; printf three",
                          "--status-file", str(status)])
    assert result.returncode == 0, result
    rep = result.report()
    check_schema(rep)
    assert rep["result"] == "success"
    assert (rep["exit_status"], rep["exit_code"], rep["signal"]) == (0, 0, None)
    assert (rep["timed_out"], rep["killed"]) == (False, False)
    assert rep["command"] == "echo one; echo two >&2; printf three"
    assert rep["pid"] == result.events("command.started")[0]["pid"]
    assert rep["output"] == {"stdout_lines": 2, "stderr_lines": 1, "stdout_bytes": 9,
                             "stderr_bytes": 4}
    assert rep["tail"] == ["one", "two", "three"]
    assert rep["hooks"] == {}
    assert isinstance(rep["resources"]["cpu_seconds"], (int, float))
    assert type(rep["resources"]["max_rss_bytes"]) is int
    assert rep["resources"]["max_rss_bytes"] > 0
    # The logged report and the status file say the same.
    assert json.loads(status.read_bytes()) == rep


def test_report_of_a_failed_run() -> None:
    result = run_cc_task(["--command", "echo failing >&2; exit 3"])
    rep = result.report()
    check_schema(rep)
    assert (rep["result"], rep["exit_status"], rep["exit_code"]) == ("exit-code", 3, 3)
    assert rep["tail"] == ["failing"]
    assert result.events("task.finished")[0]["level"] == "warning"


def test_report_of_a_signal_death() -> None:
    result = run_cc_task(["--command", "kill -USR1 $$"])
    rep = result.report()
    check_schema(rep)
    assert (rep["result"], rep["exit_status"], rep["exit_code"], rep["signal"]) == (
        "signal", 138, None, "SIGUSR1")


def test_duration_is_measured(tmp_path: Path) -> None:
    result = run_cc_task(["--command", "sleep 0.3"])
    rep = result.report()
    assert 0.3 <= rep["duration_seconds"] < 10
    elapsed = (_time(rep["finished_at"]) - _time(rep["started_at"])).total_seconds()
    assert abs(elapsed - rep["duration_seconds"]) < 0.05


def test_report_fits_4096_bytes_with_huge_lines_and_command(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    filler = "#" + "c" * 20000 + "\n"  # a long comment: the command stays valid
    # No single quote inside: the env file holds it in single quotes.
    command = filler + 'for i in $(seq 1 100); do printf "%03d%03000d\\n" $i 0; done'
    (tmp_path / "cmd.env").write_text(f"CC_RUN_COMMAND='{command}'\n")
    result = run_cc_task(["--env-file", str(tmp_path / "cmd.env"), "--status-file", str(status)],
                         env={"CC_RUN_COMMAND": None})
    assert result.returncode == 0, result
    data = status.read_bytes()
    assert len(data) <= 4096, len(data)
    rep = json.loads(data)
    check_schema(rep)
    assert len(rep["command"].encode()) <= 512
    assert command.startswith(rep["command"])
    # The tail keeps the newest output; the logged report is within the limit too.
    assert rep["tail"], rep
    assert rep["tail"][-1].startswith("100")
    assert len(json.dumps(result.report(), separators=(",", ":")).encode()) <= 4096
    assert rep == result.report()


def test_tail_is_at_most_80_lines_and_2048_bytes() -> None:
    result = run_cc_task(["--command", "seq 1 500"])
    tail = result.report()["tail"]
    assert tail == [str(i) for i in range(421, 501)]
    result = run_cc_task(["--command", "for i in $(seq 1 50); do printf '%0100d\\n' $i; done"])
    tail = result.report()["tail"]
    assert sum(len(line.encode()) + 1 for line in tail) <= 2048
    assert tail[-1] == f"{50:0100d}"
    assert len(tail) >= 19  # 20 lines of 101 bytes would be 2020 bytes


def test_command_cut_at_512_bytes_keeps_valid_utf8(tmp_path: Path) -> None:
    command = "true # " + "é" * 600
    result = run_cc_task(["--command", command])
    cut = result.report()["command"]
    assert len(cut.encode()) <= 512
    assert len(cut.encode()) >= 509
    assert command.startswith(cut)


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    status = folder / "status.json"
    status.write_text("old content")
    old_inode = status.stat().st_ino
    result = run_cc_task(["--command", "echo new"], env={"CC_TASK_STATUS_FILE": str(status)})
    assert result.returncode == 0
    # A rename put a new file in place: a reader never sees a half-written report.
    assert status.stat().st_ino != old_inode
    assert json.loads(status.read_bytes())["tail"] == ["new"]
    assert status.read_bytes().endswith(b"}\n") or status.read_bytes().endswith(b"}")
    assert os.listdir(folder) == ["status.json"], "a temporary file was left behind"
    assert status.stat().st_mode & 0o777 == 0o644


def test_status_file_folder_is_created(tmp_path: Path) -> None:
    status = tmp_path / "a" / "b" / "status.json"
    result = run_cc_task(["--command", "true", "--status-file", str(status)])
    assert result.returncode == 0
    assert json.loads(status.read_bytes())["result"] == "success"


def test_unwritable_status_file_does_not_change_the_exit_status(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cc_task(["--command", "exit 4", "--status-file", str(blocker / "status.json")])
    assert result.returncode == 4, result
    assert "Traceback" not in result.stderr
    errors = [r for r in result.records if r.get("level") == "error"]
    assert errors and str(blocker) in errors[0]["message"]


def test_report_of_a_start_failure(tmp_path: Path) -> None:
    """bash not found: start-failed, 127 (SPEC section 7)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A PATH with the launcher's Python but no bash: cc-task is run by its absolute path.
    import sys

    os.symlink(sys.executable, bin_dir / "python3")
    result = run_cc_task(["--command", "true"], env={"PATH": str(bin_dir)})
    assert result.returncode == 127, result
    rep = result.report()
    check_schema(rep)
    assert rep["result"] == "start-failed"
    assert rep["exit_status"] == 127
    assert "Traceback" not in result.stderr


def test_report_fits_4096_bytes_when_json_escaping_inflates(tmp_path: Path) -> None:
    """Control characters take six bytes each in JSON (\\u0001): a tail of 2048 bytes and
    a command of 512 bytes would make a report of about 15 KB unless shortened."""
    status = tmp_path / "status.json"
    command = ("for i in $(seq 1 79); do head -c 20 /dev/zero | tr '\\0' '\\1'; echo; done; "
               "echo end; # " + "\x02" * 600)
    result = run_cc_task(["--command", command, "--status-file", str(status)])
    assert result.returncode == 0, result
    data = status.read_bytes()
    assert len(data) <= 4096, len(data)
    rep = json.loads(data)
    check_schema(rep)
    assert 0 < len(rep["tail"]) < 80
    assert command.startswith(rep["command"])
    assert len(rep["command"].encode()) <= 512
    # Shortened from the oldest: the newest line survives.
    assert rep["tail"] and rep["tail"][-1] == "end"
    assert rep == result.report()


def test_status_file_option_wins_over_the_variable(tmp_path: Path) -> None:
    by_option, by_variable = tmp_path / "option.json", tmp_path / "variable.json"
    result = run_cc_task(["--command", "true", "--status-file", str(by_option)],
                         env={"CC_TASK_STATUS_FILE": str(by_variable)})
    assert result.returncode == 0, result
    assert by_option.exists() and not by_variable.exists()
