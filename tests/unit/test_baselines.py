"""The simulator's baselines behind the core's policy hooks: DRF's placement order, Dask's
scale-down after consecutive lower recommendations, and uniform progress moving a deadline
job from spot to on-demand agents when it falls behind."""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.model import JobSpec, Offer, TaskKind, TaskTemplate, WorkerPool
from corral.core.resources import Resources
from corral.sim.baselines import DaskAdaptive, Drf, UniformProgress
from tests.unit.test_scheduler import Harness, launches, of

SPOT = (("market", "spot"), ("spot", "true"))
ON_DEMAND = (("market", "on-demand"),)


def spec(role: str, name: str, workers: int, hi: int | None = None,
         deadline: float | None = None) -> JobSpec:
    t = TaskTemplate("x", Resources(1, 256))
    return JobSpec(role, "e", name, master=t,
                   workers=WorkerPool(t, 1, hi or workers, workers),
                   deadline_seconds=deadline, kill_grace_seconds=1.0)


def offer(h: Harness, agent: str, cpus: float, attrs: tuple = ()) -> list:
    h.n += 1
    return h(ev.OffersReceived((Offer(f"O{h.n}", agent, agent, Resources(cpus, 10_000),
                                      attributes=attrs),)))


def test_drf_places_the_lowest_share_role_first() -> None:
    h = Harness(elastic=Drf())
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec("a", "one", 2), "1"))
    for t in launches(offer(h, "S1", 3)):   # role a's master and two workers
        h.status(t.task_id, "TASK_RUNNING", "S1")
    h(ev.SubmitJob(spec("a", "two", 2), "2"))
    h(ev.SubmitJob(spec("b", "three", 2), "3"))
    # a holds 3 cpus, b nothing: b's job is ordered first although submitted last.
    st = h.s.state
    assert h.s.elastic.order(st, ["a/e/two", "b/e/three"]) == ["b/e/three", "a/e/two"]
    (m,) = launches(offer(h, "S2", 1))     # one cpu: one master, b's
    assert m.key.job == "b/e/three"


def test_dask_adaptive_shrinks_only_after_consecutive_lower_recommendations() -> None:
    h = Harness(elastic=DaskAdaptive(target_duration_s=60.0, interval=5.0, wait_count=3))
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec("a", "j", 4, hi=8), "1"))
    (m,) = launches(offer(h, "S1", 8))
    h.status(m.task_id, "TASK_RUNNING")
    for t in launches(offer(h, "S1", 7)):
        h.status(t.task_id, "TASK_RUNNING")

    def report(done: int, dt: float) -> None:
        h(ev.ExecutorMessage("S1", m.task_id, {"kind": "progress", "task_id": m.task_id,
                                               "done": done, "total": 1000,
                                               "backlog": max(0, 1000 - done),
                                               "rerun": 0}), dt=dt)

    report(0, 1)
    h(ev.Tick(), dt=5)
    report(990, 10)                        # 10 units left at ~25/s per worker: wants 1
    targets = []
    for _ in range(3):
        h(ev.Tick(), dt=5)
        targets.append(h.s.view("a/e/j").desired_workers)
    assert targets == [4, 4, 1], targets


def test_uniform_progress_moves_a_late_deadline_job_to_on_demand() -> None:
    up = UniformProgress(interval=5.0)
    h = Harness(elastic=up)
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec("a", "d", 2, deadline=100.0), "1"))
    job = h.s.state.jobs["a/e/d"]
    # Ahead of schedule (nothing elapsed): spot only; an on-demand offer is not used.
    assert up.constraints(h.s.state, job, TaskKind.WORKER).attributes == (("market", "spot"),)
    assert not launches(offer(h, "OD", 8, ON_DEMAND))
    for t in launches(offer(h, "SP", 8, SPOT)):
        h.status(t.task_id, "TASK_RUNNING", "SP")
    ws = launches(offer(h, "SP", 7, SPOT))
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING", "SP")
    h(ev.ExecutorMessage("SP", job.master.current.task_id, {
        "kind": "progress", "task_id": job.master.current.task_id, "done": 1,
        "total": 100, "backlog": 99, "rerun": 0}), dt=1)
    # 40% of the time to the deadline gone, 1% done: behind. Its spot workers go, as many
    # at a time as its minimum (1) allows, and come back on on-demand agents.
    on_demand: set[int] = set()
    for _ in range(4):
        out = h(ev.Tick(), dt=5 if on_demand else 40)
        for k in of(out, fx.KillTask):
            h.status(k.task_id, "TASK_KILLED", "SP")
        h(ev.Tick(), dt=5)
        assert not launches(offer(h, "SP", 8, SPOT))
        for t in launches(offer(h, "OD", 8, ON_DEMAND)):
            h.status(t.task_id, "TASK_RUNNING", "OD")
            on_demand.add(t.key.index)
    assert up.constraints(h.s.state, job, TaskKind.WORKER).attributes == (
        ("market", "on-demand"),)
    assert on_demand == {0, 1}
    agents = {s.current.agent_id for s in job.workers.values() if s.current is not None}
    assert agents == {"OD"}
