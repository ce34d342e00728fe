"""StateStore against a real ZooKeeper: round trips, batching, sharding, fencing,
corruption and idempotent retries."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException

from corral.core.intent import JobIntent, TaskIntent
from corral.core.job_state import JobPhase
from corral.core.spec import parse_job_spec
from corral.store.connection import close, connect
from corral.store.election import Deposed, Elected, LeaderElection
from corral.store.errors import Fenced, StateCorrupt, StoreError
from corral.store.layout import epoch_path, framework_id_path, jobs_dir
from corral.store.state import Batch, StateStore
from tests.zk import ZooKeeperServer, expire_session

pytestmark = pytest.mark.zk


def spec(name: str, workers: int = 8) -> Any:
    return parse_job_spec({"role": "ml", "name": name, "master": {"command": "python m.py"},
                           "workers": {"command": "python w.py", "max": workers}})


def tasks_for(name: str, n: int, agent: str = "agent") -> tuple[TaskIntent, ...]:
    """``n`` tasks of job ``name``, in task id order (as the store loads them)."""
    return tuple(sorted((TaskIntent(f"corral.ml.default.{name}.worker-{i}.0",
                                    f"{agent}-{i % 7}-S1") for i in range(n)),
                        key=lambda t: t.task_id))


def job(s: Any, desired: int, *, phase: JobPhase = JobPhase.PENDING, request_id: str = "",
        tasks: tuple[TaskIntent, ...] = (), progress: dict[str, int] | None = None
        ) -> JobIntent:
    return JobIntent(spec=s, request_id=request_id, desired=desired, phase=phase,
                     tasks=tasks, progress=progress or {})


class Counting:
    """Wraps a KazooClient and counts the ZooKeeper round trips a store makes."""

    SINGLE = ("create", "set", "delete", "get", "get_children", "exists", "ensure_path")

    def __init__(self, client: KazooClient) -> None:
        self._client = client
        self.calls: dict[str, int] = {}
        self.fail_after_commit = 0  # raise ConnectionLoss after this many commits succeed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*a: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            result = attr(*a, **kw)
            if name == "transaction":
                return _CountingTxn(self, result)
            return result

        return counted

    def singles(self) -> int:
        return sum(self.calls.get(n, 0) for n in self.SINGLE)


class _CountingTxn:
    def __init__(self, owner: Counting, tx: Any) -> None:
        self._owner, self._tx = owner, tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def commit(self) -> Any:
        self._owner.calls["commit"] = self._owner.calls.get("commit", 0) + 1
        results = self._tx.commit()
        if self._owner.fail_after_commit > 0:
            # The transaction went through but the reply "got lost".
            self._owner.fail_after_commit -= 1
            raise ConnectionLoss()
        return results


def wait_connected(client: KazooClient, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.exists("/")
            return
        except KazooException:
            assert time.monotonic() < deadline, "client did not reconnect"
            time.sleep(0.05)


class Replica:
    def __init__(self, url: str, identity: str, **store_kw: Any) -> None:
        self.client, address = connect(url, session_timeout=1.5, connect_within=10)
        self.root = address.path
        self.counting = Counting(self.client)
        self.election = LeaderElection(self.client, self.root, identity)
        self.store = StateStore(self.counting, self.root, **store_kw)  # type: ignore[arg-type]

    def lead(self) -> Elected:
        self.election.join()
        ev = self.election.events.get(timeout=10)
        assert isinstance(ev, Elected)
        self.store.adopt(ev.fence)
        self.store.load()
        return ev

    def close(self) -> None:
        self.election.close()
        close(self.client)


@pytest.fixture
def replicas(zk_url: str) -> Iterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(identity: str = "a", **kw: Any) -> Replica:
        r = Replica(zk_url, identity, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_state_round_trips_to_another_replica(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    assert a.lead().epoch == 1
    assert a.store.load().jobs == {}
    s1, s2 = spec("one"), spec("two")
    one_intent = job(s1, 3, phase=JobPhase.RUNNING, request_id="req-1",
                     tasks=tasks_for("one", 4), progress={"worker-0": 7, "master": 2})
    batch = Batch().set_framework_id("fw-0001").put_job(one_intent).put_job(job(s2, 1))
    stats = a.store.write(batch)
    assert stats.transactions == 1

    b = replicas("b")
    loaded = b.store.load()
    assert loaded.framework_id == "fw-0001" and loaded.epoch == 1
    one = loaded.jobs[s1.key]
    assert one == one_intent
    assert loaded.jobs[s2.key].tasks == () and loaded.jobs[s2.key].phase is JobPhase.PENDING

    # Updates: scale one, drop a task, delete two.
    a.store.put_jobs([replace(one_intent, desired=5, tasks=tasks_for("one", 3))])
    a.store.delete_job(s2.key)
    again = b.store.load()
    assert set(again.jobs) == {s1.key}
    assert again.jobs[s1.key].desired == 5
    assert again.jobs[s1.key].tasks == tasks_for("one", 3)
    assert again.jobs[s1.key].progress == {"worker-0": 7, "master": 2}
    with pytest.raises(ValueError, match="desired workers"):
        a.store.put_job(job(s2, -1))


def test_writes_are_batched_into_few_transactions(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    a.lead()
    batch = Batch()
    intents = {}
    for j in range(20):
        s = spec(f"job{j}", workers=64)
        intents[s.key] = job(s, 50, tasks=tasks_for(f"job{j}", 50))
        batch.put_job(intents[s.key])
    a.counting.calls.clear()
    stats = a.store.write(batch)
    # 1,000 tasks + 20 jobs: one or two multi round trips, never one per task or job.
    assert stats.transactions <= 2
    assert a.counting.calls == {"transaction": stats.transactions,
                                "commit": stats.transactions}
    assert a.counting.singles() == 0
    loaded = replicas("b").store.load()
    assert sum(len(j.tasks) for j in loaded.jobs.values()) == 1000

    # Re-writing unchanged state costs nothing; changing one job costs one transaction.
    a.counting.calls.clear()
    assert a.store.write(batch).transactions == 0
    three = intents["ml/default/job3"]
    stats = a.store.put_job(replace(three, progress={"worker-1": 4}))
    assert (stats.transactions, stats.ops) == (1, 1)  # only the progress znode is rewritten


def _all_znodes(client: KazooClient, path: str) -> Iterator[tuple[str, bytes]]:
    data, _ = client.get(path)
    yield path, data
    for child in client.get_children(path):
        yield from _all_znodes(client, f"{path}/{child}")


def test_huge_task_lists_are_sharded_and_load_back_intact(
    replicas: Callable[..., Replica],
) -> None:
    # Small limits keep the test fast while exercising the same splitting code.
    a = replicas("a", shard_bytes=16 * 1024, max_txn_bytes=48 * 1024)
    a.lead()
    s = spec("big", workers=10000)
    big = tasks_for("big", 6000)
    stats = a.store.write(Batch().put_job(job(s, 6000, tasks=big)))
    assert stats.transactions > 3  # more than one transaction's worth: written ahead
    sizes = {p: len(d) for p, d in _all_znodes(a.client, a.root)}
    assert max(sizes.values()) <= 16 * 1024
    shards = [p for p in sizes if "/tasks-" in p]
    assert len(shards) > 20
    assert replicas("b").store.load().jobs[s.key].tasks == big

    # Shrinking replaces the shards: the old generation is gone.
    a.store.put_job(job(s, 6000, tasks=tasks_for("big", 10)))
    node = f"{jobs_dir(a.root)}/ml.default.big"
    assert sorted(a.client.get_children(node)) == ["progress", "tasks-2-0000"]
    assert replicas("c").store.load().jobs[s.key].tasks == tasks_for("big", 10)


def test_default_limits_keep_every_znode_under_one_megabyte(
    replicas: Callable[..., Replica],
) -> None:
    a = replicas("a")
    a.lead()
    s = spec("huge", workers=10000)
    huge = tuple(sorted((TaskIntent(f"corral.ml.default.huge.worker-{i}.{i}", "x" * 60)
                         for i in range(15000)), key=lambda t: t.task_id))  # ~2.3 MB of JSON
    a.store.write(Batch().put_job(job(s, 10000, tasks=huge)))
    sizes = [len(d) for _, d in _all_znodes(a.client, a.root)]
    assert sum(sizes) > 2_000_000 and max(sizes) <= 200 * 1024
    assert replicas("b").store.load().jobs[s.key].tasks == huge


def test_deposed_leaders_late_write_is_fenced(
    replicas: Callable[..., Replica], zk_server: ZooKeeperServer
) -> None:
    a, b = replicas("a"), replicas("b")
    a.lead()
    s = spec("j")
    a.store.put_job(job(s, 1))
    b.election.join()
    old_fence = a.store.fence

    # a's session dies; b is elected and bumps the epoch. a has not noticed yet (its store
    # still holds the old fence) and writes late.
    expire_session(a.client, zk_server.hosts)
    ev = b.election.events.get(timeout=10)
    assert isinstance(ev, Elected) and ev.epoch == 2
    b.store.adopt(ev.fence)
    assert b.store.load().jobs[s.key].desired == 1
    assert a.store.fence == old_fence  # nobody told a's store: the stale leader's view
    wait_connected(a.client)  # a late write travels on a's new session
    with pytest.raises(Fenced, match="newer leader"):
        a.store.put_job(job(s, 99))
    assert a.store.fence is None
    with pytest.raises(Fenced, match="holds no fence"):
        a.store.put_job(job(s, 99))

    b.store.put_job(job(s, 2))
    assert replicas("c").store.load().jobs[s.key].desired == 2


def test_write_after_resigning_is_fenced_by_the_lease(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    a.lead()
    a.election.resign()  # the runtime has not yet dropped the store's fence
    assert a.store.fence is not None
    with pytest.raises(Fenced, match="lease"):
        a.store.save_framework_id("fw-late")
    assert replicas("b").store.load().framework_id is None


def test_a_lost_reply_is_retried_idempotently(replicas: Callable[..., Replica]) -> None:
    a = replicas("a", shard_bytes=8 * 1024, max_txn_bytes=24 * 1024)
    a.lead()
    s1, s2 = spec("x"), spec("y")
    a.store.write(Batch().put_job(job(s1, 1, tasks=tasks_for("x", 5))))
    # Each commit "loses" its reply once: the store must re-read and finish without
    # creating anything twice.
    a.counting.fail_after_commit = 3
    batch = (Batch().put_job(job(s2, 2, tasks=tasks_for("y", 800)))
             .put_job(job(s1, 1, tasks=tasks_for("x", 3))).set_framework_id("fw-9"))
    a.store.write(batch)
    assert a.counting.fail_after_commit == 0
    loaded = replicas("b").store.load()
    assert loaded.framework_id == "fw-9"
    assert loaded.jobs[s1.key].tasks == tasks_for("x", 3)
    assert loaded.jobs[s2.key].tasks == tasks_for("y", 800)
    # No stray shard generations were left behind for the job written twice.
    node = f"{jobs_dir(a.root)}/ml.default.x"
    assert len([c for c in a.client.get_children(node) if c.startswith("tasks-")]) == 1


def test_orphan_shards_from_an_interrupted_write_are_ignored_then_removed(
    replicas: Callable[..., Replica],
) -> None:
    a = replicas("a")
    a.lead()
    s = spec("o")
    a.store.write(Batch().put_job(job(s, 1, tasks=tasks_for("o", 2))))
    node = f"{jobs_dir(a.root)}/ml.default.o"
    a.client.create(f"{node}/tasks-7-0000", b"{half written")  # a crash mid-split
    assert a.store.load().jobs[s.key].tasks == tasks_for("o", 2)
    a.store.put_job(job(s, 1, tasks=tasks_for("o", 1)))
    assert "tasks-7-0000" not in a.client.get_children(node)
    assert a.store.load().jobs[s.key].tasks == tasks_for("o", 1)


JOB = "ml.default.c"


@pytest.mark.parametrize("where, data, words", [
    (JOB, b"\xff\xfe", "not valid JSON"),
    (JOB, b'{"format": 2}', "unknown format version 2"),
    (f"{JOB}/progress", b'{"format":1,"progress":{"worker-0":-3}}', "non-negative"),
    (f"{JOB}/tasks-1-0000", b'{"format":1,"tasks":[]}', "wrong type"),
    (f"{JOB}/surprise", b"", "unexpected znode"),
    ("ml.default", b"{}", "unexpected znode"),
    ("FRAMEWORK", b"fw-1", "not valid JSON"),
    ("EPOCH", b"one", "epoch must be a decimal number"),
])
def test_corrupted_znodes_are_refused_naming_the_path(
    replicas: Callable[..., Replica], where: str, data: bytes, words: str
) -> None:
    a = replicas("a")
    a.lead()
    s = spec("c")
    a.store.write(Batch().put_job(job(s, 1, tasks=tasks_for("c", 3)))
                  .set_framework_id("fw-1"))
    path = {"FRAMEWORK": framework_id_path(a.root), "EPOCH": epoch_path(a.root)}.get(
        where, f"{jobs_dir(a.root)}/{where}")
    if a.client.exists(path):
        a.client.set(path, data)
    else:
        a.client.create(path, data)
    with pytest.raises(StateCorrupt) as e:
        replicas("b").store.load()
    assert e.value.path == path and str(e.value).startswith(f"{path}: ")
    assert words in str(e.value)


def test_missing_shard_is_corrupt(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    a.lead()
    s = spec("m")
    a.store.write(Batch().put_job(job(s, 1, tasks=tasks_for("m", 3))))
    shard = f"{jobs_dir(a.root)}/ml.default.m/tasks-1-0000"
    a.client.delete(shard)
    with pytest.raises(StateCorrupt, match="missing task shard") as e:
        a.store.load()
    assert e.value.path == shard


def test_writes_need_a_fence_and_a_load(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    with pytest.raises(Fenced):
        a.store.save_framework_id("fw")
    a.election.join()
    ev = a.election.events.get(timeout=10)
    assert isinstance(ev, Elected)
    a.store.adopt(ev.fence)
    with pytest.raises(StoreError, match="load"):
        a.store.save_framework_id("fw")


def test_async_wrappers_do_not_block_the_loop(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    a.lead()
    s = spec("async")

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await a.store.write_async(Batch().put_job(job(s, 4)))
        state = await a.store.load_async()
        t.cancel()
        assert state.jobs[s.key].desired == 4
        return ticks

    assert asyncio.run(main()) > 0


def test_events_queue_is_thread_safe_without_a_loop(replicas: Callable[..., Replica]) -> None:
    a = replicas("a")
    assert isinstance(a.election.events, queue.Queue)


def test_zookeeper_restart_keeps_state_and_the_leader_resumes_under_a_new_epoch(
    replicas: Callable[..., Replica], zk_server: ZooKeeperServer
) -> None:
    a = replicas("a")
    first = a.lead()
    s = spec("r")
    a.store.write(Batch().set_framework_id("fw-r").put_job(job(s, 3, tasks=tasks_for("r", 10))))

    zk_server.restart()
    deposed = a.election.events.get(timeout=10)
    assert deposed == Deposed("ZooKeeper connection suspended")
    a.store.drop_fence()  # what the runtime does on Deposed
    again = a.election.events.get(timeout=20)
    assert isinstance(again, Elected) and again.epoch == first.epoch + 1
    a.store.adopt(again.fence)
    state = a.store.load()
    assert state.framework_id == "fw-r" and state.epoch == again.epoch
    assert state.jobs[s.key].tasks == tasks_for("r", 10)
    a.store.put_job(job(s, 4, tasks=tasks_for("r", 10)))
    assert replicas("b").store.load().jobs[s.key].desired == 4
