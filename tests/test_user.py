"""``CC_TASK_USER``: as root, hooks and command run as that account (uid, gid,
supplementary groups, ``HOME``, ``USER``, ``LOGNAME``); an unknown user is a
configuration error, 125, and nothing runs.
"""

from __future__ import annotations

import os
import pwd

import pytest
from helpers import Launches, alive, poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

IDENTITY = 'echo "uid $(id -u) gid $(id -g) groups $(id -G) home $HOME user $USER logname $LOGNAME"'


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody on this machine")


def expected(entry: pwd.struct_passwd) -> str:
    groups = " ".join(str(g) for g in sorted(set(os.getgrouplist(entry.pw_name,
                                                                   entry.pw_gid))))
    return (f"uid {entry.pw_uid} gid {entry.pw_gid} groups {groups} home {entry.pw_dir} "
            f"user {entry.pw_name} logname {entry.pw_name}")


def normalise(line: str) -> str:
    """``id -G`` prints the groups in the process's order: sort them."""
    head, _, rest = line.partition(" groups ")
    groups, _, tail = rest.partition(" home ")
    return f"{head} groups {' '.join(sorted(groups.split(), key=int))} home {tail}"


@pytest.mark.parametrize("how", ["name", "uid", "option"])
def test_command_runs_as_nobody(launch: Launches, how: str) -> None:
    entry = nobody()
    env = {"CC_TASK_WORKDIR": "/tmp", "HOME": "/root", "USER": "root", "LOGNAME": "root"}
    args = ["--command", IDENTITY]
    if how == "name":
        env["CC_TASK_USER"] = "nobody"
    elif how == "uid":
        env["CC_TASK_USER"] = str(entry.pw_uid)
    else:
        args = ["--user", "nobody", *args]
    run = launch(args, env=env)
    assert run.finish() == 0, run.dump()
    lines = run.lines()
    assert len(lines) == 1, run.dump()
    assert normalise(lines[0]) == expected(entry)
    assert " 0 " not in f" {lines[0].split(' groups ')[1].split(' home ')[0]} ", (
        "root's group 0 leaked into the supplementary groups")


def test_hooks_run_as_the_user_too(launch: Launches) -> None:
    entry = nobody()
    run = launch(["--command", "id -u"], env={
        "CC_TASK_USER": "nobody", "CC_TASK_WORKDIR": "/tmp",
        "CC_PRE_RUN_HOOK": "echo pre $(id -u) $(id -G)",
        "CC_RUN_SUCCEEDED_HOOK": "echo post $(id -u) $USER",
    })
    assert run.finish() == 0, run.dump()
    hook_lines = [r["message"] for r in run.records if r.get("source") == "hook"]
    groups = " ".join(str(g) for g in os.getgrouplist(entry.pw_name, entry.pw_gid))
    assert f"pre {entry.pw_uid} {groups}" in hook_lines, run.dump()
    assert f"post {entry.pw_uid} nobody" in hook_lines, run.dump()
    assert run.lines() == [str(entry.pw_uid)]


def test_the_user_cannot_regain_root(launch: Launches) -> None:
    """The real, effective and saved ids are all dropped."""
    entry = nobody()
    run = launch(["--command", "grep -E '^(Uid|Gid):' /proc/self/status"],
                 env={"CC_TASK_USER": "nobody", "CC_TASK_WORKDIR": "/tmp"})
    assert run.finish() == 0, run.dump()
    uid_line, gid_line = run.lines()
    assert uid_line.split()[1:] == [str(entry.pw_uid)] * 4
    assert gid_line.split()[1:] == [str(entry.pw_gid)] * 4


def test_signals_and_leftovers_still_work_as_nobody(launch: Launches) -> None:
    """The launcher stays root: it can signal and kill what the user's task starts."""
    run = launch(["--kill-grace", "1s", "--command",
                  '( (trap "" TERM; echo df $BASHPID; exec sleep 1005) & ) & sleep 0.3; exit 0'],
                 env={"CC_TASK_USER": "nobody", "CC_TASK_WORKDIR": "/tmp"})
    df = int(run.wait_line("df ", exact=False)["message"].split()[1])
    launch.track(df, "sleep 1005")
    assert run.finish(timeout=20) == 0, run.dump()
    assert run.events("leftovers.killed"), run.dump()
    assert poll(lambda: not alive(df, "sleep 1005"), 3)


@pytest.mark.parametrize("user", ["no-such-user-cc-task", "4000000000"])
def test_unknown_user_is_a_configuration_error(launch: Launches, user: str) -> None:
    run = launch(["--command", "echo should not run"], env={
        "CC_TASK_USER": user, "CC_PRE_RUN_HOOK": "echo hook should not run"})
    assert run.finish() == 125, run.dump()
    assert run.lines() == []
    assert not [r for r in run.records if r.get("source") == "hook"]
    invalid = run.events("config.invalid")
    assert invalid and invalid[0].get("variable") == "CC_TASK_USER", run.dump()
    assert "CC_TASK_USER" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.report["result"] == "config-error"


def test_check_rejects_an_unknown_user(launch: Launches) -> None:
    run = launch(["check", "--command", "true"], env={"CC_TASK_USER": "no-such-user-cc-task"})
    assert run.finish() == 125, run.dump()
    assert "CC_TASK_USER" in run.stderr
