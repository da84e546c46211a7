"""The shutdown action's choice and its command form, with an injected runner (a fake is
fine for this unit logic; tests/test_shutdown.py proves the contract with real runs)."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor import shutdown


@pytest.mark.parametrize(("action", "pid", "expected"), [
    ("auto", 1, "poweroff"), ("auto", 4242, "none"), ("none", 1, "none"),
    ("reboot", 4242, "reboot"), ("halt", 1, "halt"), ("poweroff", 4242, "poweroff"),
])
def test_resolve(action: str, pid: int, expected: str) -> None:
    assert shutdown.resolve(action, pid) == expected


class FakeRun:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, argv: list[str], **kwargs: Any) -> None:
        self.calls.append((argv, kwargs))
        if self.fail is not None:
            raise self.fail


def test_command_replaces_the_action_and_writes_to_stderr() -> None:
    run = FakeRun()
    assert shutdown.perform("poweroff", "touch /x", run=run) is None
    assert len(run.calls) == 1
    argv, kwargs = run.calls[0]
    assert argv == ["bash", "--noprofile", "--norc", "-c", "touch /x"]
    assert kwargs["stdout"] == 2  # stdout is the record stream


def test_none_does_nothing() -> None:
    run = FakeRun()
    assert shutdown.perform("none", None, run=run) is None
    assert run.calls == []


def test_a_failing_action_is_a_sentence_not_an_exception() -> None:
    run = FakeRun(fail=FileNotFoundError(2, "No such file or directory"))
    problem = shutdown.perform("none", "true", run=run)
    assert problem is not None and "failed" in problem
