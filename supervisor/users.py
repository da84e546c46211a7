"""``CC_TASK_USER``: the account hooks and command run as when the launcher is root."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from supervisor.errors import ConfigError


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def environ(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def resolve(spec: str) -> Account:
    """An account by name or numeric uid; unknown is a configuration error."""
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, OverflowError):
        raise ConfigError(
            f"Invalid CC_TASK_USER={spec!r}: no such user on this machine.", "CC_TASK_USER"
        ) from None
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)
