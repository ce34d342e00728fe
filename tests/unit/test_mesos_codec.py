"""corral.mesos.codec: Mesos JSON <-> Corral values, with literal examples and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core import events as ev
from corral.core.model import Offer
from corral.core.resources import Resources
from corral.mesos.codec import (
    CodecError,
    decode_uuid,
    encode_uuid,
    executor_info_json,
    offer_allocation_role,
    offer_from_json,
    offers_from_event,
    port_ranges,
    ports_resource_json,
    scalar_resources_json,
    task_info_json,
    task_status_fields,
)
from corral.runtime.translate import OFFERS_PER_EVENT, event_from_mesos

Json = dict[str, Any]


def scalar(name: str, value: float, **extra: Any) -> Json:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*", **extra}


OFFER: Json = {
    "id": {"value": "20240101-0-O7"},
    "framework_id": {"value": "20240101-0-0000"},
    "agent_id": {"value": "20240101-0-S3"},
    "hostname": "agent3.example",
    "url": {"scheme": "http", "address": {"hostname": "agent3.example", "ip": "10.0.0.3",
                                          "port": 5051}, "path": "/slave(1)"},
    "resources": [
        scalar("cpus", 3.5), scalar("cpus", 0.5, reservations=[{"type": "STATIC", "role": "ml"}]),
        scalar("mem", 2048.0), scalar("disk", 10000.0), scalar("gpus", 1.0),
        scalar("cpus", 1.25, revocable={}), scalar("mem", 512.0, revocable={}),
        {"name": "ports", "type": "RANGES", "role": "*",
         "ranges": {"range": [{"begin": 31005, "end": 31010}, {"begin": 31000, "end": 31001}]}},
        {"name": "custom", "type": "SCALAR", "scalar": {"value": 9.0}, "role": "*"},
    ],
    "attributes": [
        {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
        {"name": "level", "type": "SCALAR", "scalar": {"value": 2.0}},
        {"name": "ratio", "type": "SCALAR", "scalar": {"value": 0.1254}},
        {"name": "zones", "type": "SET", "set": {"item": ["a", "b"]}},
        {"name": "slots", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 4}]}},
    ],
    "executor_ids": [{"value": "e1"}],
    "unavailability": {"start": {"nanoseconds": 1700000000500000000},
                       "duration": {"nanoseconds": 120000000000}},
    "allocation_info": {"role": "ml"},
}


def test_offer_from_json_literal() -> None:
    o = offer_from_json(OFFER)
    assert o == Offer(
        id="20240101-0-O7", agent_id="20240101-0-S3", hostname="agent3.example",
        resources=Resources(cpus=4.0, mem=2048, disk=10000, gpus=1),
        revocable=Resources(cpus=1.25, mem=512),
        ports=((31000, 31001), (31005, 31010)),
        attributes=(("rack", "r1"), ("level", "2"), ("ratio", "0.125"), ("zones", "{a,b}"),
                    ("slots", "[1-4]")),
        unavailable_at=1700000000.5,
    )
    assert offer_allocation_role(OFFER) == "ml"
    assert offers_from_event({"type": "OFFERS", "offers": {"offers": [OFFER, OFFER]}}) == [o, o]


def test_offer_minimal_and_bad() -> None:
    o = offer_from_json({"id": {"value": "o"}, "agent_id": {"value": "a"}})
    assert o.resources == Resources() and o.ports == () and o.unavailable_at is None
    assert offer_allocation_role({}) is None
    with pytest.raises(CodecError):
        offer_from_json({"id": {"value": "o"}})
    with pytest.raises(CodecError):
        offer_from_json({"id": {}, "agent_id": {"value": "a"}})
    with pytest.raises(CodecError):
        offer_from_json({"id": {"value": "o"}, "agent_id": {"value": "a"},
                         "attributes": [{"name": "x", "type": "BOGUS"}]})


def test_scalar_and_ports_resources_json() -> None:
    assert scalar_resources_json(Resources(cpus=1.5, mem=256), revocable=False) == [
        scalar("cpus", 1.5), scalar("mem", 256.0)]
    assert scalar_resources_json(Resources(gpus=1), revocable=True, role="ml",
                                 allocation_role="ml") == [
        {"name": "gpus", "type": "SCALAR", "scalar": {"value": 1.0}, "role": "ml",
         "allocation_info": {"role": "ml"}, "revocable": {}}]
    assert ports_resource_json([31002, 31000, 31001, 31007]) == {
        "name": "ports", "type": "RANGES", "role": "*",
        "ranges": {"range": [{"begin": 31000, "end": 31002}, {"begin": 31007, "end": 31007}]}}
    with pytest.raises(CodecError):
        ports_resource_json([])


def test_uuid_roundtrip_and_validation() -> None:
    raw = bytes(range(16))
    assert encode_uuid(raw) == "AAECAwQFBgcICQoLDA0ODw=="
    assert decode_uuid("AAECAwQFBgcICQoLDA0ODw==") == raw
    with pytest.raises(CodecError):
        decode_uuid("AAEC")  # 3 bytes
    with pytest.raises(CodecError):
        decode_uuid("not base64!")
    with pytest.raises(CodecError):
        encode_uuid(b"short")


def test_task_status_fields() -> None:
    status = {"task_id": {"value": "t1"}, "state": "TASK_FAILED",
              "agent_id": {"value": "S1"}, "executor_id": {"value": "e1"},
              "reason": "REASON_EXECUTOR_TERMINATED", "source": "SOURCE_AGENT",
              "message": "boom", "uuid": "AAECAwQFBgcICQoLDA0ODw==", "timestamp": 12.5,
              "data": "aGk=", "healthy": True}
    assert task_status_fields(status) == {
        "task_id": "t1", "state": "TASK_FAILED", "agent_id": "S1", "executor_id": "e1",
        "reason": "REASON_EXECUTOR_TERMINATED", "source": "SOURCE_AGENT", "message": "boom",
        "uuid": "AAECAwQFBgcICQoLDA0ODw==", "timestamp": 12.5, "data": b"hi"}
    master = task_status_fields({"task_id": {"value": "t2"}, "state": "TASK_LOST",
                                 "source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"})
    assert master["uuid"] is None and master["agent_id"] is None and master["data"] is None
    with pytest.raises(CodecError):
        task_status_fields({"state": "TASK_LOST"})


def test_executor_and_task_info_json() -> None:
    res = scalar_resources_json(Resources(cpus=0.1, mem=32), revocable=False)
    ex = executor_info_json("corral-exec-1", "corral executor", "python -m corral_executor",
                            {"B": "2", "A": "1"}, res, shutdown_grace_seconds=5)
    assert ex == {
        "executor_id": {"value": "corral-exec-1"}, "type": "CUSTOM", "name": "corral executor",
        "command": {"value": "python -m corral_executor", "shell": True, "environment": {
            "variables": [{"name": "A", "type": "VALUE", "value": "1"},
                          {"name": "B", "type": "VALUE", "value": "2"}]}},
        "resources": res, "shutdown_grace_period": {"nanoseconds": 5000000000}}
    assert "shutdown_grace_period" not in executor_info_json("e", "n", "c", {}, [])
    ti = task_info_json("t1", "job master", "S1", res, ex, b'{"k":1}',
                        labels={"job": "a/b/c"}, kill_grace_seconds=0.25)
    assert ti == {
        "name": "job master", "task_id": {"value": "t1"}, "agent_id": {"value": "S1"},
        "resources": res, "executor": ex, "data": "eyJrIjoxfQ==",
        "labels": {"labels": [{"key": "job", "value": "a/b/c"}]},
        "kill_policy": {"grace_period": {"nanoseconds": 250000000}}}
    bare = task_info_json("t2", "w", "S1", res, ex, b"")
    assert "labels" not in bare and "kill_policy" not in bare and "command" not in bare
    json.dumps(ti)  # JSON-serialisable as is


# --- properties -------------------------------------------------------------------------

amounts = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
names = st.sampled_from(["cpus", "mem", "disk", "gpus"])
resource = st.tuples(names, amounts, st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(resource, max_size=12),
       st.lists(st.tuples(st.integers(1, 65000), st.integers(0, 50)), max_size=5))
def test_offer_amounts_round_trip(entries: list[tuple[str, float, bool]],
                                  ranges: list[tuple[int, int]]) -> None:
    res: list[Json] = []
    for name, value, revocable in entries:
        r = scalar(name, value)
        if revocable:
            r["revocable"] = {}
        res.append(r)
    port_ranges_in = [(b, b + n) for b, n in ranges]
    if port_ranges_in:
        res.append({"name": "ports", "type": "RANGES", "ranges": {
            "range": [{"begin": b, "end": e} for b, e in port_ranges_in]}})
    o = offer_from_json({"id": {"value": "o"}, "agent_id": {"value": "a"}, "resources": res})
    for kind, got in ((False, o.resources), (True, o.revocable)):
        for name in ("cpus", "mem", "disk", "gpus"):
            want = sum(v for n, v, rv in entries if n == name and rv is kind)
            # Mesos keeps 3 decimals; Resources quantises the sum to the same grid.
            assert abs(getattr(got, name) - want) <= 0.0005 + 1e-9 * want
    assert o.ports == tuple(sorted(port_ranges_in))
    # And back: the JSON Corral would send for those amounts decodes to the same values.
    again = offer_from_json({"id": {"value": "o"}, "agent_id": {"value": "a"},
                             "resources": scalar_resources_json(o.resources, revocable=False)
                             + scalar_resources_json(o.revocable, revocable=True)})
    assert again.resources == o.resources and again.revocable == o.revocable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 65535), min_size=1, max_size=40))
def test_port_ranges_cover_exactly_the_ports(ports: list[int]) -> None:
    rs = port_ranges(ports)
    covered = [p for b, e in rs for p in range(b, e + 1)]
    assert covered == sorted(set(ports))
    # Ranges are maximal: neighbours never touch.
    assert all(rs[i][1] + 1 < rs[i + 1][0] for i in range(len(rs) - 1))
    back = ports_resource_json(ports)["ranges"]["range"]
    assert [(r["begin"], r["end"]) for r in back] == rs


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_uuid_round_trip(raw: bytes) -> None:
    assert decode_uuid(encode_uuid(raw)) == raw


def test_a_large_offers_event_becomes_core_events_of_at_most_a_thousand_offers() -> None:
    many = [{**OFFER, "id": {"value": f"O{i}"}} for i in range(2 * OFFERS_PER_EVENT + 500)]
    out = event_from_mesos({"type": "OFFERS", "offers": {"offers": many}})
    assert all(isinstance(e, ev.OffersReceived) for e in out)
    assert [len(e.offers) for e in out] == [OFFERS_PER_EVENT, OFFERS_PER_EVENT, 500]
    assert [o.id for e in out for o in e.offers] == [f"O{i}" for i in range(len(many))]
    assert event_from_mesos({"type": "OFFERS", "offers": {"offers": []}}) == \
        [ev.OffersReceived(())]
