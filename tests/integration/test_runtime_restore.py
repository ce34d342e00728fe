"""Export a core's intent, carry it through the store's JSON codec, restore a fresh core.

Pure (no ZooKeeper): what a new leader rebuilds from the records a previous leader wrote,
and how reconciliation answers then move the restored jobs.
"""

from __future__ import annotations

from dataclasses import replace

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.intent import RestoreError, TaskIntent, restore
from corral.core.scheduler import Scheduler
from corral.core.slot_state import Life
from corral.core.views import JobState
from corral.runtime.persist import batch_for, intents_from
from corral.store import StoredState
from corral.store import records as rec
from tests.unit.test_scheduler import KEY, Harness, launches, make_spec, of, started


def through_store(core: Scheduler) -> list:
    """Export every job, encode and decode it as the store would, back to intents."""
    jobs = {}
    for key in core.job_keys():
        intent = core.intent(key)
        assert intent is not None
        path = f"/corral/state/jobs/{key.replace('/', '.')}"
        head, _, _ = rec.decode_job(path, key, rec.encode_job(key, intent, 1, 1))
        assert head == rec.head_of(intent)
        tasks = {t.task_id: t for t in intent.tasks}
        shard = rec.decode_shard(path + "/t", b"".join(rec.encode_shards(tasks, 200_000))
                                 or b'{"format":1,"tasks":{}}')
        progress = rec.decode_progress(path + "/p", rec.encode_progress(intent.progress))
        jobs[key] = replace(head, tasks=tuple(shard[t] for t in sorted(shard)),
                            progress=progress)
    return intents_from(StoredState("fw-1", jobs, 1))


def fresh(core: Scheduler) -> Harness:
    h = Harness()
    h.now = 100.0
    restore(h.s, core.framework_id, through_store(core), now=h.now)
    return h


def test_restored_job_waits_for_reconciliation_then_runs() -> None:
    old = Harness()
    master, workers = started(old, workers=2)
    old.s.handle(ev.ScaleJob(KEY, 3), 1.0)
    h = fresh(old.s)
    v = h.s.view(KEY)
    assert v.desired_workers == 3 and v.request_id == "req-1"
    assert v.state is JobState.PENDING
    assert {t.task_id for t in v.tasks} >= {master, *(w.task_id for w in workers)}
    # Subscribing reconciles exactly the tasks that may be alive.
    out = h(ev.Subscribed("fw-1"))
    (r,) = of(out, fx.Reconcile)
    assert {tid for tid, _ in r.tasks} == {master, *(w.task_id for w in workers)}
    h.status(master, "TASK_RUNNING")
    assert h.s.view(KEY).state is JobState.RUNNING
    # Offers wait until every restored task is answered (a new leader never places a
    # second task into a slot it has not heard about yet).
    assert launches(h.offers(1)) == []
    out = [e for w in workers for e in h.status(w.task_id, "TASK_RUNNING")]
    # The last answer opens the gate: the held offer is placed at once. The master's
    # address survives with its port, so new workers are told where it is.
    launched = launches(out)
    assert [t.key.index for t in launched] == [2]
    env = dict(launched[0].env)
    assert env["CORRAL_MASTER_ADDRESS"].startswith("host1:")


def test_task_ids_are_never_reused_after_restore() -> None:
    old = Harness()
    master, workers = started(old, workers=1)
    w = workers[0].task_id
    old.status(w, "TASK_FAILED", message="boom")
    h = fresh(old.s)
    h(ev.Subscribed("fw-1"))
    h.status(master, "TASK_RUNNING")
    h.now += 10  # past the restart backoff
    (again,) = launches(h.offers(1))
    assert again.task_id != w and again.attempt == 2
    # The failure still counts against the restart limit.
    slot = h.s.state.jobs[KEY].workers[0]
    assert slot.failures == 1


def test_lost_tasks_are_relaunched_and_unwanted_ones_killed() -> None:
    old = Harness()
    master, _ = started(old, workers=2)
    h = fresh(old.s)
    h(ev.Subscribed("fw-1"))
    # Mesos no longer knows the master: lost, relaunched, never a job failure.
    h.status(master, "TASK_LOST", reason="REASON_RECONCILIATION")
    assert h.s.state.jobs[KEY].master.failures == 0
    for tid, _ in h.s.task_ids_to_reconcile():
        h.status(tid, "TASK_RUNNING")
    (m2,) = launches(h.offers(1))
    assert m2.task_id.endswith(".master.2")
    # A live task of ours that no slot wants is killed.
    stray = "corral.ml.prod.train.worker-7.1"
    out = h.status(stray, "TASK_RUNNING")
    assert [k.task_id for k in of(out, fx.KillTask)] == [stray]


def test_kill_in_progress_survives_failover() -> None:
    old = Harness()
    master, workers = started(old, workers=1)
    old(ev.KillJob(KEY))
    h = fresh(old.s)
    h(ev.Subscribed("fw-1"))
    out = h.status(master, "TASK_RUNNING")
    assert [k.task_id for k in of(out, fx.KillTask)] == [master]
    h.status(master, "TASK_KILLED")
    h.status(workers[0].task_id, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.KILLED


def test_finished_jobs_and_completed_workers_stay_done() -> None:
    old = Harness()
    master, workers = started(old, workers=2)
    old.status(workers[0].task_id, "TASK_FINISHED")
    h = fresh(old.s)
    h(ev.Subscribed("fw-1"))
    h.status(master, "TASK_RUNNING")
    h.status(workers[1].task_id, "TASK_RUNNING")
    assert h.s.state.jobs[KEY].workers[0].vacancy is Life.COMPLETED
    assert launches(h.offers(1)) == []
    old.status(master, "TASK_FINISHED")
    done = fresh(old.s)
    assert done.s.view(KEY).state is JobState.FINISHED
    # The worker still being killed when the master finished is reconciled and killed.
    assert done.s.task_ids_to_reconcile() == [(workers[1].task_id, "S1")]
    out = done.status(workers[1].task_id, "TASK_RUNNING")
    assert [k.task_id for k in of(out, fx.KillTask)] == [workers[1].task_id]


def test_batch_carries_every_changed_job_and_the_framework_id() -> None:
    h = Harness()
    started(h, workers=2)
    h(ev.SubmitJob(make_spec(1, name="other"), "req-2"))
    batch = batch_for(h.s, {KEY, "ml/prod/other", "ml/prod/gone"}, "fw-1")
    assert batch.framework_id == "fw-1"
    assert set(batch.jobs) == {KEY, "ml/prod/other", "ml/prod/gone"}
    assert batch.jobs["ml/prod/gone"] is None
    mine = batch.jobs[KEY]
    assert mine is not None and len(mine.tasks) == 3


def test_restore_refuses_a_busy_core_or_foreign_tasks() -> None:
    h = Harness()
    started(h, workers=1)
    intents = through_store(h.s)
    try:
        restore(h.s, "fw-1", intents)
    except RestoreError as e:
        assert "fresh" in str(e)
    else:
        raise AssertionError("restored into a busy core")
    bad = intents[0]
    wrong = replace(bad, tasks=(TaskIntent("corral.x.y.z.master.1", "S1"),))
    try:
        restore(Scheduler(), "fw-1", [wrong])
    except RestoreError as e:
        assert "not one of this job's" in str(e)
    else:
        raise AssertionError("restored a task of another job")


def test_versions_never_go_backwards_across_a_failover() -> None:
    old = Harness()
    master, _workers = started(old, workers=2)
    for _ in range(30):  # a chatty term: many view changes, few of them stored
        old(ev.ExecutorMessage("S1", master, {"kind": "progress", "task_id": master,
                                               "done": _, "total": 100}))
    before = old.s.view(KEY).version
    h = Harness(term=2)
    h.now = 100.0
    restore(h.s, "fw-1", through_store(old.s), now=h.now)
    assert h.s.view(KEY).version > before
    h(ev.Subscribed("fw-1"))
    out = h.status(master, "TASK_RUNNING", source="SOURCE_MASTER",
                   reason="REASON_RECONCILIATION", uuid=None)
    assert out and h.s.view(KEY).version > before
    # A healthy task answered by reconciliation shows no reason (nothing is wrong).
    assert h.s.view(KEY).tasks[0].reason is None
