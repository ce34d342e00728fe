"""The RecordIO codec (shared by the executor and the scheduler) and Mesos duration parsing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral_executor.durations import duration_env, parse_duration
from corral_executor.recordio import Decoder, RecordIOError, encode


@given(
    records=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_yields_the_same_records(records: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode(r) for r in records)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = Decoder()
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += decoder.feed(stream[a:b])
    assert out == records
    assert decoder.pending == 0


def test_bad_header_and_oversize_are_errors() -> None:
    with pytest.raises(RecordIOError, match="bad RecordIO"):
        Decoder().feed(b"12x\nabc")
    with pytest.raises(RecordIOError, match="exceeds"):
        Decoder(max_record=10).feed(b"11\n")
    with pytest.raises(RecordIOError, match="too long"):
        Decoder().feed(b"1" * 25)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2secs", 2.0), ("15mins", 900.0), ("250ms", 0.25), ("1.5hrs", 5400.0),
     ("1days", 86400.0), ("1weeks", 604800.0), ("100us", 1e-4), ("10ns", 1e-8)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "secs", "5 parsecs", "-1secs", "1e3secs"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Mesos duration"):
        parse_duration(text)


def test_duration_env_default() -> None:
    assert duration_env({}, "X", 3.0) == 3.0
    assert duration_env({"X": " "}, "X", 3.0) == 3.0
    assert duration_env({"X": "4secs"}, "X", 3.0) == 4.0
