"""Nothing the task leaves behind survives it, and the drain is bounded (SPEC section 5).

Both ways of finding leftovers are tested: the task's cgroup v2 group (the default where
a writable cgroup2 is mounted) and the fallback (child subreaper and process tree),
forced honestly by running cc-task in a mount namespace where a tmpfs hides the cgroup2
mount, so that ``/proc/self/mountinfo`` shows none.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from helpers import PYTHON, Launch, Launches, alive, cmdline, poll, sigchild


def cgroup2_mount() -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split(" ")[4]
    return None


MOUNT = cgroup2_mount()


def cgroup_usable() -> bool:
    """What the launcher needs: a cgroup2 mount where a child group can be made."""
    if MOUNT is None:
        return False
    own = next((line[3:].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.startswith("0::")), None)
    if own is None:
        return False
    probe = Path(MOUNT, own.lstrip("/"), f"cc-task-test-probe-{time.monotonic_ns()}")
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def no_cgroup_prefix() -> list[str]:
    """Run cc-task where /proc/self/mountinfo shows no cgroup2 (a private mount namespace
    with a tmpfs over the mount point)."""
    assert MOUNT is not None
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs none '{MOUNT}' && exec \"$@\"", "sh"]


PATHS = {
    "cgroup": pytest.param("cgroup", marks=pytest.mark.skipif(
        not cgroup_usable(), reason="no writable cgroup2 mount on this machine")),
    "fallback": pytest.param("fallback", marks=pytest.mark.skipif(
        MOUNT is None, reason="no cgroup2 mount to hide (the default is the fallback)")),
}


def start(launch: Launches, path: str, args: list[str],
          env: dict[str, str] | None = None) -> Launch:
    prefix = no_cgroup_prefix() if path == "fallback" else []
    return launch(args, env=env, prefix=prefix)


# The three kinds of leftovers. Each prints its pid once it is set up; bash waits for
# the double fork's file so that its TERM trap is in place before bash exits.
THREE_KINDS = r"""
echo "cg $(grep '^0::' /proc/self/cgroup)"
sleep 1000 & echo "background $!"
setsid sleep 1001 & echo "setsid $!"
( (trap "" TERM; echo $BASHPID > "$D/df"; exec sleep 1002) & ) &
while [ ! -s "$D/df" ]; do sleep 0.01; done
echo "doublefork $(cat "$D/df")"
exit 0
"""


def pids_from(run: Launch) -> dict[str, int]:
    out = {}
    for line in run.lines():
        m = re.fullmatch(r"(background|setsid|doublefork) (\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


@pytest.mark.parametrize("path", PATHS.values())
def test_three_kinds_of_leftovers_are_gone(launch: Launches, path: str,
                                           tmp_path: Path) -> None:
    run = start(launch, path, ["--kill-grace", "1s", "--command", THREE_KINDS],
                env={"D": str(tmp_path)})
    # Learn the pids as early as possible, so that teardown can kill them on failure.
    run.wait_line("doublefork ", exact=False, timeout=15)
    pids = pids_from(run)
    markers = {"background": "sleep 1000", "setsid": "sleep 1001", "doublefork": "sleep 1002"}
    for kind, pid in pids.items():
        launch.track(pid, markers[kind])
    assert set(pids) == set(markers), run.dump()
    status = run.finish(timeout=20)
    assert status == 0, run.dump()  # bash's status: leftovers do not change it

    cg = next(line for line in run.lines() if line.startswith("cg "))
    if path == "cgroup":
        assert "cc-task-" in cg, f"the task did not run in its own cgroup: {cg}"
    else:
        assert "cc-task-" not in cg, f"the fallback was not in effect: {cg}"

    stopped = run.events("leftovers.killed")
    assert len(stopped) == 1, run.dump()
    assert stopped[0]["count"] >= 3
    assert set(pids.values()) <= set(stopped[0]["pids"]), stopped
    # The double fork ignores SIGTERM: SIGKILL after the grace was needed.
    assert run.events("command.killed"), run.dump()
    assert run.report["killed"] is True
    for kind, pid in pids.items():
        assert poll(lambda pid=pid, kind=kind: not alive(pid, markers[kind]), 3), (
            f"{kind} leftover {pid} survived the task: {cmdline(pid)}")


@pytest.mark.parametrize("path", PATHS.values())
def test_leftovers_get_the_stop_signal_and_their_output_is_logged(
        launch: Launches, path: str, tmp_path: Path) -> None:
    """A background job with a TERM trap: it gets SIGTERM after bash exits and what it
    prints then is in the log; no SIGKILL is needed and the run does not wait the grace."""
    command = ("(trap 'echo job got TERM; exit 0' TERM; echo job $BASHPID; touch \"$D/trap\"; "
               "while :; do sleep 0.05; done) & "
               "while [ ! -e \"$D/trap\" ]; do sleep 0.01; done; echo bash leaves")
    run = start(launch, path, ["--kill-grace", "20s", "--command", command],
                env={"D": str(tmp_path)})
    job = int(run.wait_line("job ", exact=False)["message"].split()[1])
    launch.track(job, "bash")
    status = run.finish(timeout=25)
    assert status == 0, run.dump()
    lines = run.lines()
    assert "job got TERM" in lines, run.dump()
    assert lines.index("bash leaves") < lines.index("job got TERM")
    assert run.events("leftovers.killed")[0]["count"] >= 1
    assert not run.events("command.killed")
    assert run.report["killed"] is False
    assert run.elapsed is not None and run.elapsed < 5, "the launcher slept out the grace"


@pytest.mark.parametrize("path", PATHS.values())
def test_a_leftover_from_the_helper_child_is_gone(launch: Launches, path: str) -> None:
    """The same with processes started by Python (fork/setsid/double fork)."""
    run = start(launch, path, ["--kill-grace", "1s", "--command", sigchild(
        "--spawn", "background", "--spawn", "setsid", "--spawn", "doublefork",
        "--spawn-seconds", "1003", "--exit-after", "0")])
    run.wait_ready()
    assert run.finish(timeout=20) == 0, run.dump()
    pids = [int(line.split()[2]) for line in run.lines() if line.startswith("child ")]
    assert len(pids) == 3
    for pid in pids:
        launch.track(pid, "sleep 1003")
    assert set(pids) <= set(run.events("leftovers.killed")[0]["pids"])
    for pid in pids:
        assert poll(lambda pid=pid: not alive(pid, "sleep 1003"), 3)


@pytest.mark.parametrize("path", PATHS.values())
def test_background_writer_does_not_hang_the_launcher(launch: Launches,
                                                      path: str) -> None:
    """A writer holding the pipes open after bash exits: stopped, its ticks logged."""
    command = ("(while :; do echo tick; sleep 0.1; done) & "
               "while [ ! -e /proc/$!/status ]; do sleep 0.01; done; sleep 0.5; exit 4")
    run = start(launch, path, ["--kill-grace", "5s", "--command", command])
    status = run.finish(timeout=20)
    assert status == 4, run.dump()
    assert run.lines().count("tick") >= 3, run.dump()
    assert run.events("leftovers.killed"), run.dump()
    # The writer dies on SIGTERM at once: no grace, no drain bound waited out.
    assert run.elapsed is not None and run.elapsed < 3.0


@pytest.mark.parametrize("path", PATHS.values())
def test_term_ignoring_writer_is_killed_after_the_grace(launch: Launches,
                                                        path: str) -> None:
    """It keeps writing during the grace; that output is logged, then SIGKILL."""
    command = ("(trap '' TERM; while :; do echo tick; sleep 0.1; done) & "
               "sleep 0.3; echo bash leaves; exit 0")
    run = start(launch, path, ["--kill-grace", "1s", "--command", command])
    status = run.finish(timeout=20)
    assert status == 0, run.dump()
    lines = run.lines()
    after = lines[lines.index("bash leaves") + 1:]
    assert after.count("tick") >= 5, "nothing written during the grace was logged"
    assert run.events("command.killed")
    assert run.report["killed"] is True
    # Grace 1 s, then at most the drain bound of a few seconds.
    assert run.elapsed is not None and 1.0 <= run.elapsed < 6.0


@pytest.mark.skipif(not cgroup_usable(), reason="no writable cgroup2 mount")
def test_drain_is_bounded_when_a_writer_escaped_the_launchers_view(
        launch: Launches) -> None:
    """A root task can move a writer out of its cgroup: the launcher cannot see or stop
    it, but the drain after bash exits is still bounded and what came is logged."""
    assert MOUNT is not None
    command = (f"(echo $BASHPID > '{MOUNT}/cgroup.procs'; echo escaped $BASHPID; "
               "while :; do echo tick; sleep 0.1; done) & "
               "sleep 0.5; exit 0")
    run = launch(["--kill-grace", "1s", "--command", command])
    escaped = int(run.wait_line("escaped ", exact=False)["message"].split()[1])
    launch.track(escaped, "bash")
    status = run.finish(timeout=30)
    assert status == 0, run.dump()
    assert run.lines().count("tick") >= 3
    assert run.elapsed is not None and run.elapsed < 8.0, "the drain was not bounded"
    # Once the launcher closed its end, the writer dies of SIGPIPE on its next echo.
    assert poll(lambda: not alive(escaped, "bash"), 5)


@pytest.mark.parametrize("path", PATHS.values())
def test_end_of_output_is_not_the_end_of_the_task(launch: Launches, path: str) -> None:
    """A task that closes stdout and stderr and goes on: its exit, not the pipes' end,
    ends it."""
    run = start(launch, path, ["--command", "echo bye; exec >&- 2>&-; sleep 1; exit 3"])
    assert run.finish(timeout=20) == 3, run.dump()
    assert run.lines() == ["bye"]
    assert run.report["duration_seconds"] >= 0.9


@pytest.mark.parametrize("path", PATHS.values())
def test_report_resources(launch: Launches, path: str) -> None:
    """CPU time and peak memory of the task's processes (a child bash waited for)."""
    burn = (f"{PYTHON} -c 'import time; x = bytearray(80_000_000); "
            "e = time.process_time() + 0.4\nwhile time.process_time() < e: pass'")
    run = start(launch, path, ["--command", f"{burn}; echo done"])
    assert run.finish(timeout=20) == 0, run.dump()
    resources = run.report["resources"]
    assert resources["cpu_seconds"] >= 0.35, resources
    assert resources["max_rss_bytes"] >= 80_000_000, resources
    assert resources["max_rss_bytes"] < 2_000_000_000, resources


@pytest.mark.parametrize("path", PATHS.values())
def test_double_sigterm_while_leftovers_are_stopped(launch: Launches, path: str,
                                                    tmp_path: Path) -> None:
    """bash is gone and a TERM-trapping leftover is in its 30 s grace: a first SIGTERM to
    the launcher reaches it, a second one kills it at once."""
    command = ("(trap 'echo leftover got TERM' TERM; touch \"$D/trap\"; "
               "while :; do sleep 0.05; done) & "
               'while [ ! -e "$D/trap" ]; do sleep 0.01; done; echo bash leaves; exit 6')
    run = start(launch, path, ["--kill-grace", "30s", "--command", command],
                env={"D": str(tmp_path)})
    run.wait_line("leftover got TERM")  # the launcher's own stop signal: grace running

    def got(n: int) -> bool:
        return run.lines().count("leftover got TERM") >= n
    run.send(signal.SIGTERM)
    run.wait_for(lambda r: got(2), what="the forwarded SIGTERM line")
    second = time.monotonic()
    run.send(signal.SIGTERM)
    status = run.finish(timeout=10)
    assert time.monotonic() - second < 2.0, "the second SIGTERM did not kill at once"
    assert status == 6, run.dump()  # bash's status (SPEC section 7)
    assert run.events("command.killed")
    assert run.events("leftovers.killed")
