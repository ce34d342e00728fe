"""The job history against real databases: SQLite files and a PostgreSQL server from
Debian's package (``tests/pg.py``), including an outage while records are written."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from corral.observe.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryRecord,
    HistoryStore,
    HistoryWriter,
    Query,
    open_database,
)
from tests.pg import PostgresServer


def rec(i: int, role: str = "ml", state: str = "FINISHED", cost: float = 1.0,
        finished: float | None = None) -> HistoryRecord:
    t = 1_000_000.0 + i
    return HistoryRecord(
        job_key=f"{role}/prod/job-{i}", submitted_at=t, role=role, state=state,
        finished_at=finished if finished is not None else t + 60, recorded_at=t + 61,
        tier="preferred", message=f"job {i}", tasks=3, attempts=3, losses=i % 2,
        work_lost_seconds=1.5, cost_total=cost, cost_useful=cost * 0.8,
        cost_lost=cost * 0.2, currency="USD", cost_on_demand=cost * 2, cpu_hours=0.5,
        record={"key": f"{role}/prod/job-{i}", "tasks": [{"slot": "master"}]})


def exercise(url: str) -> None:
    """The same checks on any database: migrate, write, first write wins, query."""
    db = open_database(url)
    writer = HistoryWriter(db)
    writer.start()
    try:
        for i in range(30):
            writer.put(rec(i, role="ml" if i % 3 else "ads",
                           state="FAILED" if i % 5 == 0 else "FINISHED"))
        # A poorer copy of a record already written (a new leader re-recording) loses.
        writer.put(HistoryRecord(**{**rec(1).to_dict(), "message": "restored copy",
                                    "record": {}}))
        assert writer.flush(15.0), writer.last_error
    finally:
        writer.stop()
    store = HistoryStore(db)
    store.open()
    try:
        everything = store.query(Query(limit=1000))
        assert len(everything) == 30
        assert [r.finished_at for r in everything] == sorted(
            (r.finished_at for r in everything), reverse=True)
        again = store.get("ml/prod/job-1", None)
        assert again is not None and again.message == "job 1"
        assert again.record["tasks"] == [{"slot": "master"}]
        failed = store.query(Query(state="FAILED", limit=100))
        assert {r.job_key for r in failed} == {f"{'ml' if i % 3 else 'ads'}/prod/job-{i}"
                                               for i in range(0, 30, 5)}
        # A principal that may see only "ads" sees only its jobs; nothing for no role.
        ads = store.query(Query(roles=frozenset({"ads"}), limit=100))
        assert ads and all(r.role == "ads" for r in ads)
        assert store.query(Query(roles=frozenset(), limit=100)) == []
        assert store.get("ml/prod/job-1", frozenset({"ads"})) is None
        recent = store.query(Query(since=1_000_000.0 + 80, limit=100))
        assert {r.job_key for r in recent} == {f"{'ml' if i % 3 else 'ads'}/prod/job-{i}"
                                               for i in range(20, 30)}
        # Pages: strictly older than the last row seen.
        page1 = store.query(Query(limit=10))
        page2 = store.query(Query(limit=10, before=(page1[-1].finished_at or 0,
                                                    page1[-1].job_key)))
        assert not {r.job_key for r in page1} & {r.job_key for r in page2}
        costs = {c.role: c for c in store.costs(Query())}
        assert costs["ml"].jobs == 20 and costs["ml"].total == pytest.approx(20.0)
        assert costs["ads"].savings == pytest.approx(10.0)
    finally:
        store.close()


def test_sqlite_history(tmp_path: Path) -> None:
    exercise(f"sqlite:///{tmp_path}/h/history.db")
    conn = sqlite3.connect(tmp_path / "h" / "history.db")
    assert conn.execute("SELECT version FROM corral_schema").fetchone() == (SCHEMA_VERSION,)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/history.db"
    HistoryStore(open_database(url)).open()
    conn = sqlite3.connect(tmp_path / "history.db")
    conn.execute("UPDATE corral_schema SET version = 99")
    conn.commit()
    with pytest.raises(HistoryError, match="schema version 99"):
        HistoryStore(open_database(url)).open()


def test_bad_urls_are_named() -> None:
    for bad in ("mysql://x", "sqlite://relative.db", "sqlite:///", "postgresql:///db"):
        with pytest.raises(HistoryError):
            open_database(bad)


def test_postgresql_history(pg_url: str) -> None:
    exercise(pg_url)


def test_postgresql_outage_loses_no_record_and_never_blocks_put(
        pg_server: PostgresServer, pg_url: str) -> None:
    db = open_database(pg_url)
    writer = HistoryWriter(db, retry_min=0.05, retry_max=0.5)
    writer.start()
    try:
        writer.put(rec(0))
        assert writer.flush(15.0)
        pg_server.stop()
        slowest = 0.0
        for i in range(1, 201):               # job completions during the outage
            started = time.perf_counter()
            writer.put(rec(i))
            slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.5)
        assert writer.backlog == 200 and writer.failures >= 1, writer.last_error
        assert slowest < 0.05                 # put never waits for the database
        pg_server.start()
        assert writer.flush(30.0), writer.last_error
        assert writer.dropped == 0
    finally:
        writer.stop()
        if not pg_server.running:
            pg_server.start()
    store = HistoryStore(db)
    store.open()
    try:
        got = store.query(Query(limit=1000))
        assert {r.job_key for r in got} == {f"ml/prod/job-{i}" for i in range(201)}
    finally:
        store.close()


def test_a_full_backlog_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    dropped: list[int] = []
    writer = HistoryWriter(open_database(f"sqlite:///{tmp_path}/h.db"), max_backlog=5,
                           on_dropped=dropped.append)
    # Not started: nothing drains the queue.
    for i in range(8):
        writer.put(rec(i))
    assert writer.backlog == 5 and writer.dropped == 3 and sum(dropped) == 3


def test_job_completions_during_an_outage_reach_postgresql_and_never_wait(
        pg_server: PostgresServer, pg_url: str) -> None:
    """The shell's path: a real core finishes jobs, the observer queues their records;
    PostgreSQL is down meanwhile. Nothing the loop does waits on it, nothing is lost."""
    from corral.core import effects as fx
    from corral.core import events as ev
    from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool
    from corral.core.resources import Resources
    from corral.core.scheduler import Scheduler
    from corral.observe.observer import Observer

    obs = Observer(history=open_database(pg_url))
    obs.start()
    core = Scheduler()
    now = [1000.0]
    slowest = [0.0]

    def handle(event: ev.Event) -> list[fx.Effect]:
        now[0] += 0.1
        started = time.perf_counter()
        out = core.handle(event, now[0])
        obs.after_turn(core, {e.key for e in out if isinstance(e, fx.JobChanged)})
        slowest[0] = max(slowest[0], time.perf_counter() - started)
        return out

    def complete(i: int) -> None:
        spec = JobSpec("ml", "prod", f"j{i}", master=TaskTemplate("m", Resources(1, 64)),
                       workers=WorkerPool(TaskTemplate("w", Resources(1, 64)), 0, 1, 0))
        handle(ev.SubmitJob(spec, f"r{i}"))
        out = handle(ev.OffersReceived((Offer(f"o{i}", "a", "h", Resources(4, 4096)),)))
        (tid,) = [t.task_id for e in out if isinstance(e, fx.LaunchTasks) for t in e.tasks]
        handle(ev.StatusUpdate(tid, "TASK_RUNNING", "a", executor_id=tid, uuid=f"{i}a"))
        handle(ev.StatusUpdate(tid, "TASK_FINISHED", "a", executor_id=tid, uuid=f"{i}b"))

    try:
        handle(ev.Subscribed("fw"))
        complete(0)
        pg_server.stop()
        slowest[0] = 0.0
        for i in range(1, 51):
            complete(i)
        assert slowest[0] < 0.25, slowest[0]      # no turn waited for the database
        assert obs.writer is not None and obs.writer.backlog >= 50
        pg_server.start()
        assert obs.writer.flush(30.0), obs.writer.last_error
    finally:
        obs.stop()
        if not pg_server.running:
            pg_server.start()
    store = HistoryStore(open_database(pg_url))
    store.open()
    try:
        got = {r.job_key for r in store.query(Query(limit=1000))}
        assert got == {f"ml/prod/j{i}" for i in range(51)}
    finally:
        store.close()
