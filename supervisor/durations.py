"""Parsing of durations and booleans as SPEC section 2 defines them. A leaf module.

>>> parse_duration("1m30s")
90.0
>>> parse_duration("500ms")
0.5
>>> parse_duration("0") is None
True
>>> parse_bool("Yes")
True
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)", re.ASCII)
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+", re.ASCII)
_BARE = re.compile(_NUMBER, re.ASCII)

DURATION_HELP = "a duration such as 90, 90s, 500ms, 1m30s or 1.5h (0 disables)"
BOOL_HELP = "true/false, 1/0, yes/no or on/off"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_duration(text: str | None) -> float | None:
    """Seconds as a float, or ``None`` when disabled (``0``, empty or unset).

    Raises ``ValueError`` with a sentence fit for a person when the text is malformed.
    """
    if text is None:
        return None
    value = text.strip().lower()
    if value == "":
        return None
    if _BARE.fullmatch(value):
        seconds = float(value)
    elif _WHOLE.fullmatch(value):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    else:
        raise ValueError(f"is not {DURATION_HELP}")
    if not math.isfinite(seconds):
        raise ValueError(f"is not {DURATION_HELP}")
    return seconds if seconds > 0 else None


def parse_bool(text: str | None, default: bool = False) -> bool:
    """A boolean in any case; empty or unset gives ``default``."""
    if text is None or text.strip() == "":
        return default
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"is not a boolean ({BOOL_HELP})")


def format_seconds(seconds: float) -> str:
    """A short human form for messages: ``1.5s``, ``2m``, ``90ms``."""
    if 0 < seconds < 1:
        return f"{_plain(seconds * 1000)}ms"
    if seconds < 120 or seconds % 60:
        return f"{_plain(seconds)}s"
    if seconds < 7200 or seconds % 3600:
        return f"{_plain(seconds / 60)}m"
    return f"{_plain(seconds / 3600)}h"


def _plain(value: float) -> str:
    """A number without exponent, so that ``parse_duration`` reads it back."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
