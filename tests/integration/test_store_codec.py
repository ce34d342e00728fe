"""Pure parts of the store: zk:// URLs, record encoding, sharding and validation."""

from __future__ import annotations

import json

import pytest

from corral.core.intent import JobIntent, SlotIntent, TaskIntent
from corral.core.job_state import JobPhase
from corral.core.spec import parse_job_spec
from corral.store import records as rec
from corral.store.errors import StateCorrupt
from corral.store.layout import job_key_from_node, job_node_name
from corral.store.state import Batch
from corral.store.zkurl import ZkAddress, parse_zk_url

SPEC = parse_job_spec({"role": "ml", "name": "train", "master": {"command": "m"},
                       "workers": {"command": "w", "max": 8}})


def job(desired: int, phase: JobPhase = JobPhase.PENDING, request_id: str = "",
        **kw: object) -> JobIntent:
    return JobIntent(SPEC, request_id, desired, phase, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("url, hosts, path", [
    ("zk://h1:2181,h2:2182/corral", "h1:2181,h2:2182", "/corral"),
    ("zk://127.0.0.1:2181", "127.0.0.1:2181", "/corral"),
    ("zk://zk.example.com/a/b/", "zk.example.com:2181", "/a/b"),
    ("zk://h1, h2:3000/x", "h1:2181,h2:3000", "/x"),
])
def test_parse_zk_url(url: str, hosts: str, path: str) -> None:
    assert parse_zk_url(url) == ZkAddress(hosts, path)


@pytest.mark.parametrize("url, words", [
    ("http://h:2181/x", "looks like zk://"),
    ("zk:///corral", "no hosts"),
    ("zk://h:99999/x", "port '99999'"),
    ("zk://h:abc/x", "port 'abc'"),
    ("zk://h1,,h2/x", "empty host"),
    ("zk://bad_host!/x", "not a valid host"),
    ("zk://u:p@h/x", "credentials"),
    ("zk://h/a/../b", "not a valid znode path"),
])
def test_parse_zk_url_rejects_with_a_reason(url: str, words: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_zk_url(url)
    assert words in str(e.value)


def test_job_node_names_round_trip_and_reject_non_keys() -> None:
    assert job_node_name("ml/prod/train") == "ml.prod.train"
    assert job_key_from_node("ml.prod.train") == "ml/prod/train"
    assert job_key_from_node("zzz") is None
    with pytest.raises(ValueError):
        job_node_name("ml/train")


def test_shards_respect_the_size_limit_and_round_trip() -> None:
    tasks = {f"corral.ml.default.train.worker-{i}.{i % 3}":
             TaskIntent(f"corral.ml.default.train.worker-{i}.{i % 3}", f"agent-{i % 17}-S0",
                        f"host-{i % 17}", (31000 + i % 100,)) for i in range(3000)}
    shards = rec.encode_shards(tasks, 8 * 1024)
    assert len(shards) > 10
    assert all(len(s) <= 8 * 1024 for s in shards)
    # The format keeps each task's slot and attempt, derived from its id.
    first = json.loads(shards[0])["tasks"]
    some = next(iter(first))
    assert first[some]["slot"] == some.split(".")[-2]
    assert first[some]["attempt"] == int(some.split(".")[-1])
    back: dict[str, TaskIntent] = {}
    for s in shards:
        back.update(rec.decode_shard("/p", s))
    assert back == tasks
    assert rec.encode_shards({}, 8 * 1024) == []


@pytest.mark.parametrize("phase", list(JobPhase))
def test_job_record_round_trips(phase: JobPhase) -> None:
    head = job(3, phase, "req-1", slots={"master": SlotIntent(2, 1, False),
                                         "worker-3": SlotIntent(1, 0, True)},
               submitted_at=12.5, finished_at=99.0, message="m", target_reason="load")
    data = rec.encode_job(SPEC.key, head, 4, 2)
    assert rec.decode_job("/p", SPEC.key, data) == (head, 4, 2)


def test_a_killing_job_keeps_the_stored_format() -> None:
    doc = json.loads(rec.encode_job(SPEC.key, job(1, JobPhase.KILLING), 1, 0))
    assert (doc["state"], doc["killing"]) == ("PENDING", True)


def _job_doc(**over: object) -> bytes:
    doc = json.loads(rec.encode_job(SPEC.key, job(1), 1, 0))
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("data, words", [
    (b"{nope", "not valid JSON"),
    (b"[1]", "expected a JSON object"),
    (_job_doc(format=2), "unknown format version 2"),
    (_job_doc(key="ml/default/other"), "does not match"),
    (_job_doc(spec={"role": "ml"}), "stored spec is invalid"),
    (_job_doc(desired_workers=-1), "must not be negative"),
    (_job_doc(desired_workers="3"), "wrong type"),
    (_job_doc(state="NAPPING"), "unknown job state"),
    (_job_doc(tasks={"gen": 1}), "missing field 'shards'"),
])
def test_bad_job_records_are_corrupt_with_the_path(data: bytes, words: str) -> None:
    with pytest.raises(StateCorrupt) as e:
        rec.decode_job("/corral/state/jobs/ml.default.train", SPEC.key, data)
    assert str(e.value).startswith("/corral/state/jobs/ml.default.train: ")
    assert words in str(e.value)


def test_bad_shards_and_progress_are_corrupt() -> None:
    with pytest.raises(StateCorrupt, match="attempt must be"):
        rec.decode_shard("/s", b'{"format":1,"tasks":{"t":{"agent_id":"a","slot":"m",'
                               b'"attempt":-1}}}')
    with pytest.raises(StateCorrupt, match="agent_id and slot"):
        rec.decode_shard("/s", b'{"format":1,"tasks":{"t":{"slot":"m","attempt":0}}}')
    with pytest.raises(StateCorrupt, match="non-negative integer"):
        rec.decode_progress("/p", b'{"format":1,"progress":{"worker-0":"x"}}')
    with pytest.raises(StateCorrupt, match="framework_id is empty"):
        rec.decode_framework_id("/f", b'{"format":1,"framework_id":""}')


def test_batch_rejects_bad_input_early() -> None:
    b = Batch()
    with pytest.raises(ValueError, match="desired workers"):
        b.put_job(job(-1))
    with pytest.raises(ValueError, match="listed twice"):
        b.put_job(job(1, tasks=(TaskIntent("t", "a"), TaskIntent("t", "b"))))
    with pytest.raises(ValueError, match="integer >= 0"):
        b.put_job(job(1, progress={"master": -1}))
    with pytest.raises(ValueError, match="not a job key"):
        b.delete_job("nope")
    b.delete_job(SPEC.key)
    assert b.jobs[SPEC.key] is None
    # The later change of the same job wins.
    b.put_job(job(1))
    assert b.jobs[SPEC.key] == job(1)
