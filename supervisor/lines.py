"""Cutting a byte stream into log records (SPEC section 8).

A record is a line without its newline. A line longer than ``max_line`` bytes becomes
several records, all but the last marked partial; a last line without a newline is a
partial record too. Joining each record plus ``\\n`` unless partial gives back the exact
bytes written. Secrets are masked before any cut, and a cut inside an unfinished line
holds back ``masker.holdback`` bytes, so a secret is never split between two records.

>>> s = LineSplitter(16)
>>> s.feed(b"one\\ntw")
([b'one'], ())
>>> s.feed(b"o\\n")
([b'two'], ())
"""

from __future__ import annotations

from supervisor.masking import Masker

_NO_PARTIAL: tuple[int, ...] = ()


def _utf8_cut(data: bytes, cut: int) -> int:
    """Move ``cut`` back (at most 3 bytes) so it does not fall inside a UTF-8 sequence."""
    for back in range(4):
        pos = cut - back
        if pos <= 0:
            break
        if data[pos] & 0xC0 != 0x80:
            return pos
    return cut


def _pieces(data: bytes, max_line: int) -> list[bytes]:
    out = []
    start = 0
    while len(data) - start > max_line:
        cut = _utf8_cut(data, start + max_line)
        if cut <= start:
            cut = start + max_line
        out.append(data[start:cut])
        start = cut
    out.append(data[start:])
    return out


class LineSplitter:
    """Turns ``feed(chunk)`` calls into records; see the module docstring.

    ``feed`` and ``flush`` return ``(records, partial_indices)``: the records as bytes, and
    the indices of those that are partial, usually empty, which keeps the common path
    free of per-line tuples.
    """

    def __init__(self, max_line: int, masker: Masker | None = None) -> None:
        self.max_line = max_line
        self.masker = masker if masker else None
        self._hold = self.masker.holdback if self.masker else 0
        self._rest = b""

    def feed(self, data: bytes) -> tuple[list[bytes], tuple[int, ...] | list[int]]:
        buf = self._rest + data if self._rest else data
        last = buf.rfind(b"\n")
        if last == -1:
            complete, rest = b"", buf
        elif last == len(buf) - 1:
            complete, rest = buf, b""
        else:
            complete, rest = buf[: last + 1], buf[last + 1 :]
        records: list[bytes] = []
        partial: tuple[int, ...] | list[int] = _NO_PARTIAL
        if complete:
            if self.masker:
                complete = self.masker.mask_bytes(complete)
            records = complete.split(b"\n")
            records.pop()
            if max(map(len, records)) > self.max_line:
                records, partial = self._split_long(records)
        if len(rest) > self.max_line + self._hold:
            if self.masker:
                rest = self.masker.mask_bytes(rest)
            pieces = _pieces(rest, self.max_line)
            # Keep enough at the end that a secret starting before the cut is whole.
            keep = b""
            while pieces and len(keep) < self._hold + 1:
                keep = pieces.pop() + keep
            if pieces:
                if not isinstance(partial, list):
                    partial = []
                base = len(records)
                records.extend(pieces)
                partial.extend(range(base, base + len(pieces)))
            rest = keep
        self._rest = rest
        return records, partial

    def _split_long(self, lines: list[bytes]) -> tuple[list[bytes], list[int]]:
        records: list[bytes] = []
        partial: list[int] = []
        for line in lines:
            if len(line) <= self.max_line:
                records.append(line)
                continue
            pieces = _pieces(line, self.max_line)
            partial.extend(range(len(records), len(records) + len(pieces) - 1))
            records.extend(pieces)
        return records, partial

    def flush(self) -> tuple[list[bytes], list[int]]:
        """At end of stream: what is left is a last line without newline (partial)."""
        rest, self._rest = self._rest, b""
        if not rest:
            return [], []
        if self.masker:
            rest = self.masker.mask_bytes(rest)
        pieces = _pieces(rest, self.max_line)
        return pieces, list(range(len(pieces)))

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the end of their line."""
        return len(self._rest)
