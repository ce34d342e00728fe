"""The pure call builders' edge cases (RecordIO framing: tests/unit/test_executor_codecs.py)."""

from __future__ import annotations

from corral.mesos import calls


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
