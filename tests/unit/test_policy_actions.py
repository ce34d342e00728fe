"""The whole policy in the running core: which workers a smaller target stops (preemption
victims by least work lost within a budget, retirees that lose least), right-sized new
launches, all visible in the job's view, and the policy's memory across a failover."""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.elastic import Elastic
from corral.core.fairness import RolePolicy
from corral.core.intent import restore
from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool
from corral.core.policy import PolicyConfig
from corral.core.resources import Resources
from corral.core.rightsizing import RightSizingConfig
from corral.core.scaling import ScalingConfig
from corral.core.scheduler import Scheduler
from corral.store.records import decode_job, decode_shard, encode_job, encode_shards, head_of
from tests.unit.test_scheduler import KEY, Harness, launches, of, started

FAST = PolicyConfig(scaling=ScalingConfig(target_duration_s=60.0, cooldown_up_s=0.0,
                                          cooldown_down_s=0.0, hysteresis=0.0,
                                          max_step_down=100, max_step_up=100))


def checkpoint(h: Harness, tid: str, seq: int) -> None:
    h(ev.ExecutorMessage("S1", tid, {"kind": "checkpoint", "task_id": tid,
                                     "uri": "file:///ck", "seq": seq}), dt=0.0)


def progress(h: Harness, tid: str, done: int, total: int, dt: float) -> None:
    h(ev.ExecutorMessage("S1", tid, {"kind": "progress", "task_id": tid, "done": done,
                                     "total": total, "backlog": total - done, "rerun": 0}),
      dt=dt)


def running(h: Harness, workers: int, **kw: object) -> tuple[str, dict[int, str]]:
    master, ws = started(h, workers=workers, **kw)
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING")
    return master, {t.key.index: t.task_id for t in ws}


def test_scaling_down_retires_the_workers_that_lose_least_and_says_why() -> None:
    h = Harness()
    _, ws = running(h, 4, lo=1, hi=8)
    h(ev.Tick(), dt=60)
    checkpoint(h, ws[1], 1)      # worker-1 and worker-2 checkpointed just now
    checkpoint(h, ws[2], 1)
    out = h(ev.ScaleJob(KEY, 2), dt=1)
    assert sorted(k.task_id for k in of(out, fx.KillTask)) == sorted([ws[1], ws[2]])
    view = h.s.view(KEY)
    assert view.policy.retired == 2 and view.policy.preempted == 0
    why = {a.slot: a.why for a in view.policy.recent}
    assert set(why) == {"worker-1", "worker-2"}
    assert why["worker-1"].startswith("target 4 -> 2: scaled by request; loses least: 1s "
                                      "since its last checkpoint"), why
    job = h.s.state.jobs[KEY]
    assert job.wanted_indexes() == [0, 3] and job.holes == {1, 2}
    # Growing again refills the holes first, with new attempts of those slots once the
    # killed ones are gone.
    h(ev.ScaleJob(KEY, 3), dt=1)
    assert job.wanted_indexes() == [0, 1, 3]
    h.status(ws[1], "TASK_KILLED")
    h.status(ws[2], "TASK_KILLED")
    (t,) = launches(h.offers(2))
    assert t.key.index == 1 and t.attempt == 2
    h.s.validate()


def two_roles(budget: int = 20) -> tuple[Harness, Elastic]:
    """Role 'ml' holds the whole cluster (10 cpus); role 'cv' arrives wanting half."""
    el = Elastic(roles={"ml": RolePolicy(), "cv": RolePolicy()},
                 config=PolicyConfig(scaling=FAST.scaling, preemption_budget=budget,
                                     min_share_diff=0.05), interval=5.0)
    h = Harness(elastic=el)
    return h, el


def spec(role: str, workers: int, hi: int) -> JobSpec:
    t = TaskTemplate("x", Resources(1, 256))
    return JobSpec(role, "e", "j", master=t, workers=WorkerPool(t, 1, hi, workers),
                   kill_grace_seconds=5.0)


def ml_fills_the_cluster(budget: int) -> tuple[Harness, fx.TaskLaunch, list[fx.TaskLaunch]]:
    """Role ml's job runs its master and 9 workers on the one 10-cpu agent."""
    h, _ = two_roles(budget=budget)
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec("ml", 9, 9), "a"))
    (m,) = launches(h(ev.OffersReceived((Offer("O1", "S1", "h1", Resources(10, 10_000)),))))
    h.status(m.task_id, "TASK_RUNNING")
    ws = launches(h(ev.OffersReceived((Offer("O2", "S1", "h1", Resources(9, 9_000)),))))
    assert len(ws) == 9
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING")
    return h, m, ws


def test_preemption_takes_victims_by_least_work_lost_within_the_budget() -> None:
    h, m, ws = ml_fills_the_cluster(budget=2)
    progress(h, m.task_id, 0, 10**6, dt=1)
    h(ev.Tick(), dt=5)
    h(ev.Tick(), dt=200)
    # Two workers checkpoint right before the newcomer's pass: they lose least.
    by_index = {t.key.index: t.task_id for t in ws}
    checkpoint(h, by_index[4], 3)
    checkpoint(h, by_index[7], 3)
    h(ev.SubmitJob(spec("cv", 4, 4), "b"))
    out = h(ev.Tick(), dt=6)
    killed = {k.task_id for k in of(out, fx.KillTask)}
    # The budget allows two victims this window, the two that lose least.
    assert killed == {by_index[4], by_index[7]}, killed
    view = h.s.view("ml/e/j")
    assert view.policy.preempted == 2
    assert all(a.kind == "preempted" and "above its fair share" in a.why
               and "since its last checkpoint" in a.why for a in view.policy.recent)
    # The budget is spent: no more victims this window, however unfair.
    out = h(ev.Tick(), dt=6)
    assert not {k.task_id for k in of(out, fx.KillTask)} - killed
    assert "hold" in h.s.view("ml/e/j").target_reason
    h.s.validate()


def usage(h: Harness, tid: str, cpus: float, mem: float) -> None:
    h(ev.ExecutorMessage("S1", tid, {"kind": "usage", "task_id": tid,
                                     "cpu_percent": cpus * 100, "cpu_seconds": 1.0,
                                     "rss_mb": mem}), dt=0.0)


def test_right_sizing_changes_new_launches_within_the_band_never_below_use() -> None:
    cfg = PolicyConfig(scaling=FAST.scaling, rightsizing=RightSizingConfig(min_samples=4))
    h = Harness(elastic=Elastic(config=cfg, interval=5.0))
    master, ws = running(h, 2, lo=1, hi=4)
    progress(h, master, 0, 10**6, dt=1)
    h(ev.Tick(), dt=5)
    # Reserved 1 cpu / 512 MiB; used about 0.3 cpus (one sample at 0.55) and 200 MiB.
    for cpus in (0.3, 0.3, 0.3, 0.55, 0.3, 0.3):
        for tid in ws.values():
            usage(h, tid, cpus, 200)
    h(ev.Tick(), dt=6)
    view = h.s.view(KEY)
    # p95 of the samples is 0.55 (12 samples, rank 12): * 1.2 = 0.66 cpus; memory 240.
    assert (view.policy.worker_cpus, view.policy.worker_mem) == (0.66, 256.0)
    assert view.policy.size_reason == (
        "right-sized to 0.66 cpus from 1, 256 MiB from 512: used 0.55 cpus, 200 MiB p95 "
        "of 12 samples"), view.policy.size_reason
    # More samples like these change the words (the count) but not the size: no store
    # write for that.
    for tid in ws.values():
        usage(h, tid, 0.3, 200)
    out = h(ev.Tick(), dt=6)
    assert fx.PersistJob(KEY) not in out
    assert "of 14 samples" in h.s.view(KEY).policy.size_reason
    # A replacement is launched at the new size; running workers keep theirs.
    h.status(ws[0], "TASK_LOST", reason="REASON_AGENT_REMOVED")
    (t,) = launches(h.offers(2))
    assert t.key.index == 0 and t.resources == Resources(0.66, 256)
    # A worker seen using more than the measured size lifts the next size to that use.
    for _ in range(4):
        usage(h, ws[1], 0.9, 200)
    h(ev.Tick(), dt=6)
    assert h.s.view(KEY).policy.worker_cpus == 1.0   # 0.9 p95 * 1.2, capped at the spec
    h.s.validate()


def test_policy_memory_and_holes_survive_a_failover() -> None:
    cfg = PolicyConfig(scaling=FAST.scaling, rightsizing=RightSizingConfig(min_samples=2))
    old = Harness(elastic=Elastic(config=cfg, interval=5.0))
    master, ws = running(old, 4, lo=1, hi=8)
    for tid in ws.values():
        usage(old, tid, 0.2, 100)
    progress(old, master, 0, 10**6, dt=1)
    old(ev.Tick(), dt=5)
    progress(old, master, 500, 10**6, dt=100)
    old(ev.Tick(), dt=1)
    checkpoint(old, ws[0], 1)
    old(ev.ScaleJob(KEY, 3), dt=1)    # retires worker-0 (it loses least): a hole at 0
    job = old.s.state.jobs[KEY]
    assert job.holes == {0}
    mem = job.policy
    assert mem.rate_measured and mem.worker_size is not None and mem.last_up_at is not None
    # The intent through the store's codec, as a new leader reads it.
    intent = old.s.intent(KEY)
    assert intent is not None
    head, _, _ = decode_job("/jobs/x", KEY, encode_job(KEY, intent, 1, 1))
    tasks = decode_shard("/jobs/x/t0", encode_shards({t.task_id: t for t in intent.tasks},
                                                      100_000)[0])
    assert head == head_of(intent)
    new = Scheduler(elastic=Elastic(config=cfg, interval=5.0))
    restore(new, "fw", [type(head)(**{**{f: getattr(head, f) for f in head.__slots__},
                                      "tasks": tuple(tasks.values())})], now=old.now)
    restored = new.state.jobs[KEY]
    assert restored.policy == mem
    assert restored.holes == {0} and restored.wanted_indexes() == [1, 2, 3]
    # The new leader stops only the worker the old one was retiring (its kill may not
    # have been carried out); the workers above the hole are kept.
    out = new.handle(ev.Subscribed("fw"), old.now + 1)
    assert [k.task_id for k in of(out, fx.KillTask)] == [ws[0]]
    new.validate()


def test_old_records_without_policy_or_holes_still_load() -> None:
    h = Harness()
    running(h, 2)
    intent = h.s.intent(KEY)
    assert intent is not None
    doc = encode_job(KEY, intent, 1, 1)
    assert b'"policy"' not in doc and b'"holes"' not in doc   # nothing new written
    head, _, _ = decode_job("/jobs/x", KEY, doc)
    assert head.policy.is_empty() and head.holes == ()


def test_a_new_leader_counts_the_preemptions_its_predecessor_made() -> None:
    h, _, _ = ml_fills_the_cluster(budget=2)
    h(ev.Tick(), dt=5)
    h(ev.SubmitJob(spec("cv", 4, 4), "b"))
    h(ev.Tick(), dt=6)
    assert h.s.view("ml/e/j").policy.preempted == 2          # the budget, spent
    # A new leader restores both jobs; its first pass must not preempt again.
    new_el = Elastic(roles={"ml": RolePolicy(), "cv": RolePolicy()},
                     config=PolicyConfig(scaling=FAST.scaling, preemption_budget=2),
                     interval=5.0)
    new = Scheduler(elastic=new_el)
    restore(new, "fw", [h.s.intent("ml/e/j"), h.s.intent("cv/e/j")], now=h.now)
    now = h.now + 1
    new.handle(ev.Subscribed("fw"), now)
    for att in list(new.state.attempts.values()):
        if att.live:
            new.handle(ev.StatusUpdate(att.task_id, "TASK_RUNNING", "S1",
                                       reason="REASON_RECONCILIATION"), now)
    new.handle(ev.OffersReceived((Offer("O9", "S1", "h1", Resources(1, 1000)),)), now)
    out = new.handle(ev.Tick(), now + 6)
    assert len(new_el.window["ml"]) == 2                       # seeded from the jobs
    assert not [k for k in of(out, fx.KillTask) if k.task_id.startswith("corral.ml.")]
    new.validate()
