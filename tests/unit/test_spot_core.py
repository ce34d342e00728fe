"""Spot loss, notice, revocation and over-provisioning decisions of the pure core.

Every scenario drives ``Scheduler.handle`` with events and checks the effects and the
job's view: which slot is replaced where, which messages go to which task, what each
loss cost and how long its recovery took.
"""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.model import (
    JobSpec,
    Offer,
    RestartPolicy,
    TaskTemplate,
    Tier,
    WorkerPool,
)
from corral.core.resources import Resources
from corral.core.scheduler import Scheduler
from corral.core.spot import OverProvision
from corral.core.views import JobState

KEY = "ml/prod/spot"
MARKETS = {"S1": "spot-a", "S2": "spot-b", "S3": "spot-c", "S4": "on-demand"}


def make_spec(workers: int = 2, *, hi: int = 8, labels: tuple = (), tier: Tier = Tier.PREFERRED,
              **kw: object) -> JobSpec:
    return JobSpec(
        "ml", "prod", "spot",
        master=TaskTemplate("run-master", Resources(1, 256), ports=1),
        workers=WorkerPool(TaskTemplate("run-worker", Resources(1, 256)), 0, hi, workers),
        checkpoint_uri="file:///ck", checkpoint_interval_seconds=5.0, kill_grace_seconds=2.0,
        restart=RestartPolicy(max_failures=1, backoff_seconds=1.0, backoff_max_seconds=2.0),
        labels=labels, tier=tier, **kw)  # type: ignore[arg-type]


class Harness:
    def __init__(self, **kw: object) -> None:
        self.s = Scheduler(**kw)  # type: ignore[arg-type]
        self.now = 1000.0
        self.n = 0

    def __call__(self, event: ev.Event, dt: float = 0.1) -> list[fx.Effect]:
        self.now += dt
        return self.s.handle(event, self.now)

    def offer(self, agent: str, cpus: float = 8, revocable: float = 0,
              unavailable_at: float | None = None) -> Offer:
        self.n += 1
        return Offer(f"O{self.n}", agent, f"host-{agent}", Resources(cpus, 8192 if cpus else 0),
                     revocable=Resources(revocable, 8192 if revocable else 0),
                     ports=((31000, 31099),), attributes=(("market", MARKETS[agent]),),
                     unavailable_at=unavailable_at)

    def offers(self, *agents: str, **kw: object) -> list[fx.Effect]:
        return self(ev.OffersReceived(tuple(self.offer(a, **kw) for a in agents)))  # type: ignore[arg-type]

    def status(self, task_id: str, state: str, agent: str, dt: float = 0.1,
               **kw: object) -> list[fx.Effect]:
        self.n += 1
        kw.setdefault("uuid", f"u{self.n}")
        return self(ev.StatusUpdate(task_id, state, agent, executor_id=task_id,
                                    **kw), dt)  # type: ignore[arg-type]

    def checkpoint(self, task_id: str, agent: str, seq: int) -> list[fx.Effect]:
        return self(ev.ExecutorMessage(agent, task_id, {"kind": "checkpoint", "task_id": task_id,
                                                        "uri": "file:///ck/x", "seq": seq}))


def launches(out: list[fx.Effect]) -> list[tuple[str, fx.TaskLaunch]]:
    return [(e.agent_id, t) for e in out if isinstance(e, fx.LaunchTasks) for t in e.tasks]


def of(out: list[fx.Effect], kind: type) -> list:
    return [e for e in out if isinstance(e, kind)]


def running_job(h: Harness, workers: int = 2, spec: JobSpec | None = None,
                master_on: str = "S4") -> tuple[str, dict[int, tuple[str, str]]]:
    """Submit; master on ``master_on``; workers on S1.. S3; all RUNNING.
    Returns the master's task id and {index: (task id, agent)}."""
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec or make_spec(workers), "r1"))
    ((_, m),) = launches(h.offers(master_on))
    h.status(m.task_id, "TASK_RUNNING", master_on)
    ws: dict[int, tuple[str, str]] = {}
    for agent, t in launches(h.offers("S1", "S2", "S3", cpus=2)):
        h.status(t.task_id, "TASK_RUNNING", agent)
        ws[t.key.index] = (t.task_id, agent)
    assert len(ws) == workers
    return m.task_id, ws


def test_lost_worker_replaced_elsewhere_same_index_with_cost_and_recovery() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    h.checkpoint(tid, agent, 1)
    ckpt_at = h.now
    h(ev.Tick(), 3.0)
    h(ev.AgentLost(agent))
    out = h.status(tid, "TASK_LOST", agent, reason="REASON_AGENT_REMOVED")
    detected = h.now
    assert not of(out, fx.KillTask)
    others = [a for a in ("S1", "S2", "S3") if a != agent]
    placed = launches(h.offers(*others))
    ((where, new),) = placed
    assert where != agent and new.key.index == 0 and new.attempt == 2
    env = dict(new.env)
    assert env["CORRAL_CHECKPOINT_URI"] == f"file:///ck/{KEY}/worker-0"   # restores index 0's state
    view = h.s.view(KEY)
    r = view.resilience
    assert r.losses == 1 and r.recoveries == 0
    (loss,) = r.recent
    assert loss.kind == "lost" and loss.slot == "worker-0" and loss.task_id == tid
    assert abs(loss.work_lost_seconds - (detected - ckpt_at)) < 1e-6
    h.status(new.task_id, "TASK_RUNNING", where, dt=0.4)
    r = h.s.view(KEY).resilience
    assert r.recoveries == 1
    assert r.recent[0].recovery_seconds is not None
    assert abs(r.recent[0].recovery_seconds - (h.now - detected)) < 1e-6
    assert r.recent[0].replacement_task_id == new.task_id
    # Infrastructure loss never counts: five more losses and the job is still running.
    cur, at = new.task_id, where
    for _ in range(5):
        h.status(cur, "TASK_GONE", at)
        ((at, nxt),) = launches(h.offers("S1", "S2", "S3"))
        h.status(nxt.task_id, "TASK_RUNNING", at)
        cur = nxt.task_id
    view = h.s.view(KEY)
    assert view.state is JobState.RUNNING and view.resilience.losses == 6
    assert view.resilience.recoveries == 6


def test_lost_before_running_work_is_zero_and_outage_keeps_first_detection() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[1]
    h.status(tid, "TASK_LOST", agent)
    t0 = h.now
    ((a2, new),) = launches(h.offers("S3" if agent != "S3" else "S2"))
    h.status(new.task_id, "TASK_LOST", a2)       # lost again before it ever ran
    ((a3, newer),) = launches(h.offers("S1"))
    h.status(newer.task_id, "TASK_RUNNING", a3, dt=1.0)
    r = h.s.view(KEY).resilience
    assert r.losses == 2 and r.recoveries == 1
    (rec,) = r.recent                              # one outage of worker-1
    assert rec.recovery_seconds is not None and abs(rec.recovery_seconds - (h.now - t0)) < 1e-6


def test_revoked_revocable_worker_is_rescheduled_not_failed() -> None:
    h = Harness()
    spec = make_spec(1, tier=Tier.REVOCABLE)
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(spec, "r1"))
    ((ma, m),) = launches(h.offers("S4"))
    assert not m.revocable                           # masters never use revocable resources
    h.status(m.task_id, "TASK_RUNNING", ma)
    # Only non-revocable resources on offer: a revocable-tier worker must wait.
    assert launches(h.offers("S1")) == []
    pending = h.s.view(KEY).tasks[1].pending_reason or ""
    assert "revocable tier needs revocable resources" in pending
    ((wa, w),) = launches(h.offers("S2", cpus=0, revocable=4))
    assert w.revocable
    h.status(w.task_id, "TASK_RUNNING", wa)
    for n in range(3):                               # more than max_failures=1
        h.status(w.task_id, "TASK_FAILED", wa, reason="REASON_CONTAINER_PREEMPTED",
                 source="SOURCE_AGENT")
        ((wa, w),) = launches(h.offers("S3", cpus=0, revocable=4))
        assert w.key.index == 0 and w.revocable and w.attempt == n + 2
        h.status(w.task_id, "TASK_RUNNING", wa)
    view = h.s.view(KEY)
    assert view.state is JobState.RUNNING
    assert [x.kind for x in view.resilience.recent] == ["revoked"] * 3


def test_preferred_job_never_lands_on_revocable() -> None:
    h = Harness()
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(make_spec(1), "r1"))
    assert launches(h.offers("S1", cpus=0, revocable=8)) == []
    ((_, m),) = launches(h.offers("S2"))
    assert not m.revocable


def test_inverse_offer_moves_worker_before_deadline_and_accepts_when_drained() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    deadline = h.now + 120
    out = h(ev.InverseOffersReceived((ev.InverseOffer("IO1", agent, None, deadline, 60),)))
    assert fx.SendMessage(agent, tid, {"kind": "drain", "deadline": deadline}) in out
    assert not of(out, fx.KillTask) and not of(out, fx.AcceptInverseOffers)
    view = h.s.view(KEY)
    assert view.resilience.recent[0].kind == "notice"
    # The replacement goes elsewhere at once, long before the deadline.
    placed = launches(h.offers(agent, *[a for a in ("S1", "S2", "S3") if a != agent]))
    ((where, new),) = placed
    assert where != agent and new.key.index == 0 and new.attempt == 2
    # The drained attempt may keep reporting: it is not killed as a stray.
    assert not of(h.status(tid, "TASK_RUNNING", agent), fx.KillTask)
    h.status(new.task_id, "TASK_RUNNING", where)
    # It finishes its last chunk and exits 0: the slot is NOT done, the new attempt is.
    out = h.status(tid, "TASK_FINISHED", agent)
    assert of(out, fx.AcceptInverseOffers) == [fx.AcceptInverseOffers(("IO1",))]
    view = h.s.view(KEY)
    w0 = next(t for t in view.tasks if t.slot == "worker-0")
    assert w0.task_id == new.task_id and w0.state == "TASK_RUNNING"
    r = view.resilience
    assert r.losses == 1 and r.recoveries == 1 and r.work_lost_seconds == 0.0
    # Nothing more goes to the draining agent.
    assert launches(h.offers(agent)) == []


def test_drained_task_killed_ahead_of_deadline_if_still_running() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[1]
    deadline = h.now + 10
    h(ev.InverseOffersReceived((ev.InverseOffer("IO1", agent, None, deadline, None),)))
    kills: list[fx.KillTask] = []
    for _ in range(20):
        kills += of(h(ev.Tick(), 0.5), fx.KillTask)
        if kills:
            break
    # Killed at deadline - grace (2 s) - margin (1 s), so SIGTERM leaves time to checkpoint.
    assert kills == [fx.KillTask(tid, agent, 2.0)]
    assert deadline - 3.0 <= h.now < deadline - 2.0


def test_master_notice_kills_then_relaunches_never_two_masters() -> None:
    h = Harness()
    m, ws = running_job(h, master_on="S4")
    deadline = h.now + 60
    out = h(ev.InverseOffersReceived((ev.InverseOffer("IO1", "S4", None, deadline, None),)))
    assert fx.SendMessage("S4", m, {"kind": "drain", "deadline": deadline}) in out
    assert of(out, fx.KillTask) == [fx.KillTask(m, "S4", 2.0)]
    # While the old master still lives (checkpointing in its grace), no second master.
    assert launches(h.offers("S1", "S2", "S3")) == []
    h.status(m, "TASK_KILLING", "S4")
    assert launches(h.offers("S1", "S2", "S3")) == []
    h.status(m, "TASK_KILLED", "S4")
    ((where, m2),) = launches(h.offers("S4", "S1", "S2", "S3"))
    assert where != "S4" and m2.attempt == 2
    assert dict(m2.env)["CORRAL_CHECKPOINT_URI"] == f"file:///ck/{KEY}/master"
    out = h.status(m2.task_id, "TASK_RUNNING", where)
    told = {e.executor_id for e in of(out, fx.SendMessage)
            if e.data["kind"] == "master_address"}
    assert told == {t for t, _ in ws.values()}          # workers pointed at the new master
    assert not of(out, fx.KillTask)                     # the job is not restarted
    view = h.s.view(KEY)
    assert view.state is JobState.RUNNING
    assert all(t.attempt == 1 for t in view.tasks if t.slot.startswith("worker"))


def test_offer_unavailability_is_a_notice() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    out = h(ev.OffersReceived((h.offer(agent, unavailable_at=h.now + 30),)))
    assert any(isinstance(e, fx.SendMessage) and e.executor_id == tid
               and e.data["kind"] == "drain" for e in out)
    assert not launches(out)
    ((where, new),) = launches(h.offers(*[a for a in ("S1", "S2", "S3") if a != agent]))
    assert new.key.index == 0 and where != agent


def test_drain_agent_kill_is_infrastructure() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    for _ in range(3):
        h.status(tid, "TASK_KILLED", agent, reason="REASON_AGENT_DRAINING")
        ((agent, new),) = launches(h.offers("S1", "S2", "S3"))
        h.status(new.task_id, "TASK_RUNNING", agent)
        tid = new.task_id
    assert h.s.view(KEY).state is JobState.RUNNING


def test_workers_spread_over_markets_by_default() -> None:
    h = Harness()
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(make_spec(3), "r1"))
    ((ma, m),) = launches(h.offers("S4"))
    h.status(m.task_id, "TASK_RUNNING", ma)
    placed = launches(h.offers("S1", "S2", "S3"))
    assert sorted(a for a, _ in placed) == ["S1", "S2", "S3"]   # one per spot market


def test_overprovision_keeps_spares_from_termination_peak() -> None:
    h = Harness(overprovision=OverProvision(multiple=1.5, horizon_seconds=60,
                                            default_lead_seconds=5))
    spec = make_spec(2, hi=6, labels=())
    _, ws = running_job(h, spec=spec)
    view = h.s.view(KEY)
    assert view.resilience.spare_workers == 0
    assert "no terminations" in view.resilience.spare_reason
    # Two losses within one lead time: peak 2 x 1.5 = 3 spare workers.
    (t0, a0), (t1, a1) = ws[0], ws[1]
    h.status(t0, "TASK_LOST", a0)
    h.status(t1, "TASK_LOST", a1)
    view = h.s.view(KEY)
    assert view.resilience.spare_workers == 3
    assert "2 termination(s)" in view.resilience.spare_reason
    placed = launches(h.offers("S1", "S2", "S3"))
    assert sorted(t.key.index for _, t in placed) == [0, 1, 2, 3, 4]
    # Within workers.max: desired 2 + 3 spare = 5 <= 6; the cap would show otherwise.
    for a, t in placed:
        h.status(t.task_id, "TASK_RUNNING", a)
    # After the horizon the spares go: the workers that lose least, here the ones that
    # keep checkpointing (0, 2, 4); the others never did.
    tids = {t.key.index: (a, t.task_id) for a, t in placed}
    kills: list[fx.KillTask] = []
    for n in range(20):
        for i in (0, 2, 4):
            a, tid = tids[i]
            h(ev.ExecutorMessage(a, tid, {"kind": "checkpoint", "task_id": tid,
                                          "uri": "file:///ck", "seq": n}), 0.0)
        kills += of(h(ev.Tick(), 5.0), fx.KillTask)
    assert sorted({k.task_id.rsplit(".", 2)[1] for k in kills}) == [
        "worker-0", "worker-2", "worker-4"]
    view = h.s.view(KEY)
    assert view.resilience.spare_workers == 0
    assert sorted(a.slot for a in view.policy.recent) == ["worker-0", "worker-2", "worker-4"]
    assert all(a.kind == "retired" and "since its last checkpoint" in a.why
               for a in view.policy.recent)
    # The job keeps workers 1 and 3: indexes 0 and 2 are holes until it grows again.
    job = h.s.state.jobs[KEY]
    assert job.wanted_indexes() == [1, 3]


def test_overprovision_label_and_cap() -> None:
    h = Harness()                      # default multiple 0: off unless the job asks
    _, ws = running_job(h, spec=make_spec(2, hi=3, labels=(("overprovision", "2"),)))
    h.status(ws[0][0], "TASK_LOST", ws[0][1])
    r = h.s.view(KEY).resilience
    assert r.spare_workers == 1 and "capped at 1" in r.spare_reason
    h2 = Harness()
    _, ws = running_job(h2, spec=make_spec(2, hi=3))
    h2.status(ws[0][0], "TASK_LOST", ws[0][1])
    assert h2.s.view(KEY).resilience.spare_workers == 0


def test_job_failure_still_counts_while_infra_does_not() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    h.status(tid, "TASK_LOST", agent)                 # infrastructure: free
    ((agent, w),) = launches(h.offers("S1", "S2", "S3"))
    h.status(w.task_id, "TASK_RUNNING", agent)
    h.status(w.task_id, "TASK_FAILED", agent, message="exit status 1")
    for _ in range(10):
        got = launches(h(ev.Tick(), 0.5) + h.offers("S1", "S2", "S3"))
        if got:
            break
    ((agent, w),) = got
    h.status(w.task_id, "TASK_RUNNING", agent)
    h.status(w.task_id, "TASK_FAILED", agent, message="exit status 1")
    view = h.s.view(KEY)
    assert view.state is JobState.FAILED
    assert "worker-0 failed 2 times" in view.message and "exit code 1" in view.message


def test_cancelled_unavailability_makes_the_agent_usable_again() -> None:
    h = Harness()
    h(ev.Subscribed("fw"))
    h(ev.SubmitJob(make_spec(0), "r1"))
    assert launches(h(ev.OffersReceived((h.offer("S1", unavailable_at=h.now + 30),)))) == []
    assert "draining" in (h.s.view(KEY).tasks[0].pending_reason or "")
    ((agent, _),) = launches(h.offers("S1"))          # same agent, window gone
    assert agent == "S1"


def test_spread_within_a_market_prefers_agents_without_the_job() -> None:
    from corral.core.model import TaskKey, TaskKind
    from corral.core.placement import JobFacts, PendingTask, PlacementFacts, place
    from corral.core.placement.types import Constraints

    spread = Constraints(spread_over="market")
    pending = [PendingTask(TaskKey(KEY, TaskKind.WORKER, i), Resources(1, 128),
                           constraints=spread) for i in range(4)]
    offers = [Offer(f"O{a}", a, a, Resources(8, 8192), attributes=(("market", m),))
              for a, m in (("A", "spot"), ("B", "spot"), ("C", "on-demand"), ("D", "spot"))]
    facts = PlacementFacts(jobs={KEY: JobFacts(master_running=True,
                                               tasks_per_agent={"D": 1},
                                               spread_counts={"spot": 1})})
    plan = place(pending, offers, facts)
    per_agent = {a: len(ts) for a, ts in plan.assignments.items()}
    # Markets balance (spot already holds one, on D): on-demand gets two, spot two more,
    # and within spot the agents without the job (A, B) take them, not a stack on D.
    assert per_agent.get("C", 0) == 2 and per_agent.get("A") == 1 and per_agent.get("B") == 1


def test_a_partitioned_worker_that_comes_back_is_killed_and_counted_once() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    h.status(tid, "TASK_UNREACHABLE", agent, reason="REASON_AGENT_REMOVED", uuid=None)
    ((where, new),) = launches(h.offers(*[a for a in ("S1", "S2", "S3") if a != agent]))
    h.status(new.task_id, "TASK_RUNNING", where)
    # The partition heals: Mesos reports the old task running again.
    out = h.status(tid, "TASK_RUNNING", agent, reason="REASON_AGENT_REREGISTERED", uuid=None)
    assert of(out, fx.KillTask) == [fx.KillTask(tid, agent, 2.0)]
    view = h.s.view(KEY)
    w0 = next(t for t in view.tasks if t.slot == "worker-0")
    assert w0.task_id == new.task_id                      # the replacement keeps the slot
    r = view.resilience
    assert r.losses == 1 and r.recoveries == 1            # nothing counted twice
    (loss,) = r.recent
    assert loss.kind == "unreachable" and loss.returned_at == h.now
    assert any("is back" in n for _, n in h.s.notes)
    h.status(tid, "TASK_KILLED", agent)
    assert h.s.view(KEY).resilience.losses == 1
    h.s.validate()
