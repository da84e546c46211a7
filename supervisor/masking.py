"""Secret masking (SPEC section 8): which values are secrets, and their replacement.

Masking works on bytes, before output is split into records, so that a secret is caught
whole; the line splitter holds back ``Masker.holdback`` bytes at a cut for the same reason.

>>> m = Masker.from_env({"DB_PASSWORD": "hunter22", "USER": "bob"})
>>> m.mask_text("login bob:hunter22")
'login bob:***'
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable, Mapping

MASK = "***"
MIN_SECRET_LENGTH = 6
_NAME_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "PRIVATE", "CREDENTIAL", "API_KEY", "_KEY")
_ALWAYS = frozenset({"CLEVER_TOKEN", "CLEVER_SECRET"})


def is_secret_name(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a variable's value is a secret by its name alone."""
    upper = name.upper()
    return upper in _ALWAYS or name in set(extra) or any(m in upper for m in _NAME_MARKERS)


def url_password(value: str) -> str | None:
    """The password of a URL-valued variable (``postgresql://u:p@host/db``), if any."""
    if "://" not in value or "@" not in value:
        return None
    try:
        parts = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return None
    if not parts.password:
        return None
    return urllib.parse.unquote(parts.password)


def forms(secret: str) -> set[bytes]:
    """Every form of one secret that must not appear: each line, URL-encoded, base64."""
    out: set[bytes] = set()
    values = [secret, *secret.splitlines()]
    for value in values:
        value = value.strip("\r")
        if len(value) < MIN_SECRET_LENGTH:
            continue
        raw = value.encode("utf-8", "surrogateescape")
        out.add(raw)
        out.add(urllib.parse.quote(value, safe="").encode())
        out.add(urllib.parse.quote_plus(value, safe="").encode())
        out.add(urllib.parse.quote(value, safe="/:").encode())
        b64 = base64.b64encode(raw)
        out.add(b64)
        out.add(b64.rstrip(b"="))
        out.add(base64.urlsafe_b64encode(raw).rstrip(b"="))
    return {f for f in out if len(f) >= MIN_SECRET_LENGTH}


class Masker:
    """Replaces every form of every secret with ``***``; a no-op when there are none."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        all_forms: set[bytes] = set()
        for secret in secrets:
            all_forms |= forms(secret)
        ordered = sorted(all_forms, key=len, reverse=True)  # longest first wins
        self.secrets = tuple(ordered)
        self.holdback = max((len(f) for f in ordered), default=1) - 1
        if ordered:
            self._bytes_re: re.Pattern[bytes] | None = re.compile(
                b"|".join(re.escape(f) for f in ordered)
            )
            text_forms = sorted(
                {f.decode("utf-8", "surrogateescape") for f in ordered}, key=len, reverse=True
            )
            self._text_re: re.Pattern[str] | None = re.compile(
                "|".join(re.escape(f) for f in text_forms)
            )
        else:
            self._bytes_re = None
            self._text_re = None

    def __bool__(self) -> bool:
        return self._bytes_re is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra_names: Iterable[str] = ()) -> Masker:
        extra = list(extra_names)
        secrets = []
        for name, value in env.items():
            if not value:
                continue
            if is_secret_name(name, extra):
                secrets.append(value)
            password = url_password(value)
            if password:
                secrets.append(password)
        return cls(secrets)

    def mask_bytes(self, data: bytes) -> bytes:
        if self._bytes_re is None:
            return data
        return self._bytes_re.sub(b"***", data)

    def mask_text(self, text: str) -> str:
        if self._text_re is None:
            return text
        return self._text_re.sub(MASK, text)

    def mask_obj(self, value: object) -> object:
        """Mask every string inside nested dicts and lists (reports, event fields)."""
        if self._text_re is None:
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict):
            return {k: self.mask_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_obj(v) for v in value]
        return value
