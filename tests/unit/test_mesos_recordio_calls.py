"""RecordIO framing under arbitrary chunking, and the pure call builders' edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.mesos import calls
from corral.mesos.recordio import Decoder, RecordIOError, encode


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_decoder_any_chunking_yields_the_records(records: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(r) for r in records)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    d = Decoder()
    out: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        out += d.feed(stream[prev:c])
        prev = c
    assert out == records
    assert d.pending == 0


def test_decoder_rejects_garbage_and_oversize() -> None:
    with pytest.raises(RecordIOError):
        Decoder().feed(b"12x\nabc")
    with pytest.raises(RecordIOError):
        Decoder(max_record=10).feed(b"11\n")
    with pytest.raises(RecordIOError):
        Decoder().feed(b"1" * 40)


def test_subscribe_first_time_and_resubscribe() -> None:
    info = {"user": "u", "name": "n", "id": {"value": "stale"}}
    assert calls.subscribe(info, None) == {
        "type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n"}}}
    assert calls.subscribe({"user": "u", "name": "n"}, "fw") == {
        "type": "SUBSCRIBE", "framework_id": {"value": "fw"},
        "subscribe": {"framework_info": {"user": "u", "name": "n", "id": {"value": "fw"}}}}
    assert info["id"] == {"value": "stale"}  # the caller's dict is not modified


def test_duration_and_filters() -> None:
    assert calls.duration(0.000000001) == {"nanoseconds": 1}
    assert calls.duration(2) == {"nanoseconds": 2000000000}
    assert calls.filters(None) is None
    assert calls.filters(5) == {"refuse_seconds": 5.0}
    assert calls.suppress("fw") == {"type": "SUPPRESS", "framework_id": {"value": "fw"}}
