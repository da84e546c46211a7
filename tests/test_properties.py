"""Property tests (hypothesis) of the two parsers everything else rests on: durations
(SPEC section 2) and the line splitter (SPEC section 8)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from supervisor.durations import format_seconds, parse_bool, parse_duration
from supervisor.lines import LineSplitter

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# -- durations -------------------------------------------------------------------------

integers = st.integers(min_value=0, max_value=10_000)
decimals = st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}")
numbers = st.one_of(integers.map(str), decimals)
parts = st.lists(st.tuples(numbers, st.sampled_from(sorted(UNITS))), min_size=1, max_size=4)


def _case(text: str, data: st.DataObject) -> str:
    return "".join(c.upper() if data.draw(st.booleans()) else c for c in text)


@SETTINGS
@given(parts, st.data())
@example([("1", "h"), ("2", "m"), ("3", "s")], None)
@example([("500", "ms")], None)
@example([("1.5", "h")], None)
def test_duration_of_parts(parts: list[tuple[str, str]], data: st.DataObject | None) -> None:
    text = "".join(n + u for n, u in parts)
    if data is not None:
        text = _case(text, data)
        text = data.draw(st.sampled_from(["", " ", "\t"])) + text + data.draw(
            st.sampled_from(["", " ", "\n"]))
    expected = sum(float(n) * UNITS[u] for n, u in parts)
    got = parse_duration(text)
    if expected == 0:
        assert got is None  # 0 disables, whatever its spelling
    else:
        assert got is not None and math.isclose(got, expected, rel_tol=1e-9), (text, got)


@SETTINGS
@given(numbers)
@example("90")
@example("0")
@example("0.0")
def test_bare_number_is_seconds(text: str) -> None:
    got = parse_duration(text)
    if float(text) == 0:
        assert got is None
    else:
        assert got == float(text)


@SETTINGS
@given(st.floats(min_value=0.001, max_value=1e7, allow_nan=False, allow_infinity=False))
def test_format_then_parse_round_trips(seconds: float) -> None:
    """What the launcher prints in messages reads back as (nearly) the same duration."""
    text = format_seconds(seconds)
    got = parse_duration(text)
    assert got is not None and math.isclose(got, seconds, rel_tol=1e-5), (seconds, text, got)


@pytest.mark.parametrize("text", ["90", "90s", "500ms", "1m30s", "1.5h", "2h", "1h2m3s"])
def test_spec_examples(text: str) -> None:
    assert parse_duration(text) == {"90": 90, "90s": 90, "500ms": 0.5, "1m30s": 90,
                                    "1.5h": 5400, "2h": 7200, "1h2m3s": 3723}[text]


@pytest.mark.parametrize("text", ["", "   ", "0", "0s", "0ms", "0h0m"])
def test_disabled(text: str) -> None:
    assert parse_duration(text) is None
    assert parse_duration(None) is None


GARBAGE = st.text(alphabet="abcefgijklnopqrtuvwxyz!@#$%^&*()_+-=,;:/ ", min_size=1, max_size=5)


@SETTINGS
@given(st.one_of(st.just(""), parts.map(lambda p: "".join(n + u for n, u in p)),
                 numbers), GARBAGE, st.data())
def test_garbage_is_rejected(valid: str, junk: str, data: st.DataObject) -> None:
    assume(junk.strip())  # surrounding blanks are allowed
    position = data.draw(st.integers(0, len(valid)))
    text = valid[:position] + junk + valid[position:]
    assume(text.strip() and text.strip() != valid.strip())
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-5", "5x", "1.5.3s", "ms", "h", "5 s", "1h-2m", "inf",
                                  "nan", "1e3", "1_000", "٣", "+5", "s5", "1m 30s", "."])
def test_rejected_examples(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@SETTINGS
@given(st.sampled_from(["true", "false", "1", "0", "yes", "no", "on", "off"]), st.data())
def test_booleans_any_case(word: str, data: st.DataObject) -> None:
    assert parse_bool(_case(word, data)) is (word in ("true", "1", "yes", "on"))


@SETTINGS
@given(st.text(min_size=1, max_size=8))
def test_bool_garbage_is_rejected(text: str) -> None:
    assume(text.strip() and text.strip().lower() not in
           {"true", "false", "1", "0", "yes", "no", "on", "off"})
    with pytest.raises(ValueError):
        parse_bool(text)


# -- the line splitter -------------------------------------------------------------------


def split_all(data: bytes, cuts: list[int], max_line: int) -> list[tuple[bytes, bool]]:
    """Feed ``data`` in chunks ending at ``cuts``; return (record, partial) pairs."""
    splitter = LineSplitter(max_line)
    out: list[tuple[bytes, bool]] = []
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        if end <= start:
            continue
        records, partial = splitter.feed(data[start:end])
        marks = set(partial)
        out.extend((r, i in marks) for i, r in enumerate(records))
        start = end
    records, partial = splitter.flush()
    marks = set(partial)
    out.extend((r, i in marks) for i, r in enumerate(records))
    assert splitter.pending == 0
    return out


def join(records: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(r if partial else r + b"\n" for r, partial in records)


# Bytes rich in newlines and UTF-8 lead/continuation bytes, with long runs.
raw_bytes = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from([b"\n", b"a", b"\xc3\xa9", b"\xe6\x97\xa5", b"\xf0\x9f\x8e\x89",
                              b"\xff", b"\x80", b"\r", b"x" * 40]), max_size=300).map(b"".join),
)
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                max_size=600).map(lambda s: s.encode())
long_texts = st.lists(st.sampled_from(["é", "日", "🎉", "a", "\n", "語" * 7]),
                      max_size=400).map(lambda parts: "".join(parts).encode())


@st.composite
def chunked(draw: st.DrawFn, data_strategy: st.SearchStrategy[bytes]) -> tuple[
        bytes, list[int], int]:
    data = draw(data_strategy)
    cuts = draw(st.lists(st.integers(0, max(len(data), 0)), max_size=20))
    max_line = draw(st.one_of(st.integers(16, 40), st.integers(41, 5000)))
    return data, cuts, max_line


@SETTINGS
@given(chunked(raw_bytes))
def test_splitter_joins_back_to_the_input(case: tuple[bytes, list[int], int]) -> None:
    data, cuts, max_line = case
    records = split_all(data, cuts, max_line)
    assert join(records) == data
    for record, _partial in records:
        assert len(record) <= max_line
        assert b"\n" not in record


@SETTINGS
@given(st.one_of(chunked(texts), chunked(long_texts)))
def test_splitter_never_cuts_inside_a_character(case: tuple[bytes, list[int], int]) -> None:
    data, cuts, max_line = case
    records = split_all(data, cuts, max_line)
    assert join(records) == data
    for record, _partial in records:
        assert len(record) <= max_line
        record.decode("utf-8")  # raises if a character was cut


@SETTINGS
@given(chunked(raw_bytes))
def test_chunking_does_not_change_complete_lines(case: tuple[bytes, list[int], int]) -> None:
    """Lines that fit in ``max_line`` come out whole, however the pipe reads split them."""
    data, cuts, max_line = case
    whole = split_all(data, [], max_line)
    pieces = split_all(data, cuts, max_line)
    lines = data.split(b"\n")[:-1]  # the complete lines
    short = [line for line in lines if len(line) <= max_line]
    for records in (whole, pieces):
        complete = [r for r, partial in records if not partial]
        for line in short:
            assert line in complete


@SETTINGS
@given(st.integers(16, 300), st.integers(0, 2000))
def test_long_line_pieces_are_full_size(max_line: int, length: int) -> None:
    data = b"z" * length + b"\n"
    records = split_all(data, [], max_line)
    sizes = [len(r) for r, _ in records]
    assert all(size == max_line for size in sizes[:-1])
    assert [p for _, p in records] == [True] * (len(records) - 1) + [False]
