"""WatchJob deltas: whatever sequence of jobs the server sends, the client rebuilds each
one exactly, and a delta holds only the slots that changed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.watchdelta import DeltaDecoder, DeltaEncoder, slot_order

SLOTS = ["master", *(f"worker-{i}" for i in range(12))]
STATES = ["PENDING", "TASK_STAGING", "TASK_RUNNING", "TASK_KILLING"]


@st.composite
def jobs(draw: st.DrawFn) -> pb.Job:
    """A job with some of the slots, each with one task or (draining) two."""
    slots = sorted(draw(st.sets(st.sampled_from(SLOTS))), key=slot_order)
    job = pb.Job(key="r/e/n", version=draw(st.integers(1, 10**6)))
    for slot in slots:
        for n in range(draw(st.integers(1, 2))):
            job.tasks.append(pb.Task(slot=slot, state=draw(st.sampled_from(STATES)),
                                     attempt=n + 1))
    return job


def groups(job: pb.Job) -> dict[str, list[pb.Task]]:
    return {s: [t for t in job.tasks if t.slot == s] for s in {t.slot for t in job.tasks}}


@settings(max_examples=200, deadline=None)
@given(st.lists(jobs(), min_size=1, max_size=8))
def test_the_client_rebuilds_every_job_the_server_had(seq: list[pb.Job]) -> None:
    enc, dec = DeltaEncoder(), DeltaDecoder()
    prev: pb.Job | None = None
    for i, job in enumerate(seq):
        resp = enc.encode(job)
        assert resp.delta == (i > 0)
        assert dec.apply(resp) == job
        if prev is not None:
            # Only slots whose tasks changed are sent; removed ones are named.
            before, now = groups(prev), groups(job)
            sent = {t.slot for t in resp.job.tasks}
            assert sent == {s for s in now if before.get(s) != now[s]}
            assert set(resp.removed_slots) == set(before) - set(now)
        prev = job


def test_a_delta_before_the_whole_job_is_an_error() -> None:
    with pytest.raises(ValueError, match="before the whole job"):
        DeltaDecoder().apply(pb.WatchJobResponse(job=pb.Job(), delta=True))


def test_slots_are_ordered_master_then_workers_by_index() -> None:
    assert sorted(["worker-10", "worker-2", "master", "odd"], key=slot_order) == [
        "master", "worker-2", "worker-10", "odd"]
