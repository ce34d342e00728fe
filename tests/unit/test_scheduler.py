"""Scheduler scenarios: the whole job lifecycle driven through ``handle``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.model import (
    JobSpec,
    Offer,
    RestartPolicy,
    TaskTemplate,
    WorkerPool,
)
from corral.core.resources import Resources
from corral.core.scheduler import Scheduler
from corral.core.views import AlreadyExists, Conflict, JobState, NotFound

KEY = "ml/prod/train"


def make_spec(workers: int = 2, *, lo: int = 0, hi: int = 8, name: str = "train",
              max_failures: int = 3, ckpt: str | None = "file:///ck", **kw) -> JobSpec:
    return JobSpec(
        "ml", "prod", name,
        master=TaskTemplate("run-master", Resources(1, 512), ports=1, env=(("A", "1"),)),
        workers=WorkerPool(TaskTemplate("run-worker", Resources(1, 512), ports=1), lo, hi,
                           workers),
        checkpoint_uri=ckpt, kill_grace_seconds=7.0,
        restart=RestartPolicy(max_failures=max_failures, backoff_seconds=2.0,
                              backoff_max_seconds=5.0), **kw)


def offer(i: int, cpus: float = 8, agent: str | None = None) -> Offer:
    return Offer(f"O{i}", agent or f"S{i}", f"host{i}", Resources(cpus, 8192),
                 ports=((31000, 31099),))


class Harness:
    def __init__(self, **kw) -> None:
        self.s = Scheduler(**kw)
        self.now = 0.0
        self.n = 0
        self.log: list[fx.Effect] = []

    def __call__(self, event: ev.Event, dt: float = 0.1) -> list[fx.Effect]:
        self.now += dt
        out = self.s.handle(event, self.now)
        self.log += out
        return out

    def offers(self, *agents: int, cpus: float = 8) -> list[fx.Effect]:
        self.n += 1
        return self(ev.OffersReceived(tuple(
            Offer(f"O{self.n}-{a}", f"S{a}", f"host{a}", Resources(cpus, 8192),
                  ports=((31000, 31099),)) for a in agents)))

    def status(self, task_id: str, state: str, agent: str = "S1", **kw) -> list[fx.Effect]:
        self.n += 1
        kw.setdefault("uuid", f"u{self.n}")
        return self(ev.StatusUpdate(task_id, state, agent, **kw))


def launches(out: list[fx.Effect]) -> list[fx.TaskLaunch]:
    return [t for e in out if isinstance(e, fx.LaunchTasks) for t in e.tasks]


def of(out: list[fx.Effect], kind: type) -> list:
    return [e for e in out if isinstance(e, kind)]


def started(h: Harness, workers: int = 2, **kw) -> tuple[str, list[fx.TaskLaunch]]:
    """Submit, place and run the master, place the workers."""
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(workers, **kw), "req-1"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_RUNNING")
    ws = launches(h.offers(1))
    return m.task_id, ws


def test_full_lifecycle() -> None:
    h = Harness()
    out = h(ev.Subscribed("fw-1"))
    assert of(out, fx.Reconcile) == [fx.Reconcile(())] and of(out, fx.Suppress)
    out = h(ev.SubmitJob(make_spec(2), "req-1"))
    assert of(out, fx.Revive) and fx.JobChanged(KEY) in out
    assert h.s.view(KEY).state is JobState.PENDING

    out = h.offers(1, 2)
    (m,) = launches(out)
    assert m.task_id == "corral.ml.prod.train.master.1" and m.attempt == 1
    env = dict(m.env)
    assert env["CORRAL_TASK_ROLE"] == "master" and env["CORRAL_JOB"] == KEY
    assert env["CORRAL_PORT"] == str(m.ports[0]) and env["CORRAL_ATTEMPT"] == "1"
    assert env["CORRAL_CHECKPOINT_URI"] == f"file:///ck/{KEY}/master" and env["A"] == "1"
    assert "CORRAL_MASTER_ADDRESS" not in env and m.grace_seconds == 7.0
    launched_agent = of(out, fx.LaunchTasks)[0].agent_id
    assert of(out, fx.DeclineOffers)[0].offer_ids == (
        "O1-2" if launched_agent == "S1" else "O1-1",)
    view = h.s.view(KEY)
    assert [t.pending_reason for t in view.tasks[1:]] == ["master not running yet"] * 2

    out = h.status(m.task_id, "TASK_RUNNING", launched_agent)
    assert of(out, fx.Acknowledge)[0].task_id == m.task_id and of(out, fx.Revive)
    assert h.s.view(KEY).state is JobState.RUNNING

    ws = launches(h.offers(1))
    assert sorted(t.key.index for t in ws) == [0, 1]
    for t in ws:
        env = dict(t.env)
        assert env["CORRAL_MASTER_ADDRESS"] == f"host{launched_agent[1:]}:{m.ports[0]}"
        assert env["CORRAL_WORKER_INDEX"] == str(t.key.index)
        assert env["CORRAL_CHECKPOINT_URI"] == f"file:///ck/{KEY}/worker-{t.key.index}"
        h.status(t.task_id, "TASK_RUNNING")

    out = h.status(m.task_id, "TASK_FINISHED", launched_agent)
    kills = of(out, fx.KillTask)
    assert sorted(k.task_id for k in kills) == sorted(t.task_id for t in ws)
    assert all(k.grace_seconds == 7.0 for k in kills)
    view = h.s.view(KEY)
    assert view.state is JobState.FINISHED and view.finished_at == h.now
    for t in ws:
        h.status(t.task_id, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.FINISHED
    assert h.s.task_ids_to_reconcile() == []


def test_worker_lost_is_relaunched_same_index_without_counting() -> None:
    h = Harness()
    _, ws = started(h)
    w0 = next(t for t in ws if t.key.index == 0)
    h.status(w0.task_id, "TASK_RUNNING")
    for attempt in (2, 3, 4, 5, 6):
        h.status(f"corral.ml.prod.train.worker-0.{attempt - 1}", "TASK_LOST",
                       reason="REASON_AGENT_REMOVED")
        (new,) = launches(h.offers(2))
        assert new.key == w0.key and new.attempt == attempt
        assert new.task_id == f"corral.ml.prod.train.worker-0.{attempt}"
        assert dict(new.env)["CORRAL_ATTEMPT"] == str(attempt)
    assert h.s.view(KEY).state is JobState.RUNNING


def test_unreachable_worker_relaunched_and_killed_if_it_returns() -> None:
    h = Harness()
    _, ws = started(h)
    w0 = next(t for t in ws if t.key.index == 0)
    h.status(w0.task_id, "TASK_RUNNING")
    h.status(w0.task_id, "TASK_UNREACHABLE", reason="REASON_AGENT_REMOVED")
    (new,) = launches(h.offers(2))
    assert new.attempt == 2
    out = h.status(w0.task_id, "TASK_RUNNING", reason="REASON_AGENT_REREGISTERED")
    assert of(out, fx.KillTask) == [fx.KillTask(w0.task_id, "S1", 7.0)]


def test_job_failures_backoff_then_failed() -> None:
    h = Harness()
    _, ws = started(h, max_failures=2)
    tid = next(t for t in ws if t.key.index == 1).task_id
    delays = []
    for n in (1, 2):
        h.status(tid, "TASK_FAILED", message="Command exited with status 1: boom")
        view = h.s.view(KEY)
        w1 = view.tasks[2]
        assert w1.state == "PENDING" and "restart backoff" in (w1.pending_reason or "")
        assert launches(h.offers(2)) == []        # still backing off
        t0 = h.now
        while not (got := launches(h(ev.Tick(), 0.5) + h.offers(2))):
            assert h.now - t0 < 10
        delays.append(h.now - t0)
        (new,) = got
        assert new.key.index == 1 and new.attempt == n + 1
        tid = new.task_id
    assert delays[0] < delays[1]                  # doubling backoff
    out = h.status(tid, "TASK_FAILED", message="Command exited with status 1: boom")
    view = h.s.view(KEY)
    assert view.state is JobState.FAILED
    assert view.message == ("worker-1 failed 3 times; last: exit code 1: "
                            "Command exited with status 1: boom")
    killed = {k.task_id for k in of(out, fx.KillTask)}
    assert "corral.ml.prod.train.master.1" in killed and len(killed) == 2


def test_task_error_and_exit_127_count_as_failures() -> None:
    h = Harness()
    h(ev.SubmitJob(make_spec(0, max_failures=1), "r"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_ERROR", reason="REASON_TASK_INVALID", uuid=None)
    h(ev.Tick(), 10)
    (m2,) = launches(h.offers(1))
    h.status(m2.task_id, "TASK_FAILED", message="sh: nope: not found; exit code 127")
    view = h.s.view(KEY)
    assert view.state is JobState.FAILED and "master failed 2 times" in view.message
    assert "exit code 127" in view.message


def test_master_lost_relaunched_and_workers_told_new_address() -> None:
    h = Harness()
    m, ws = started(h)
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING")
    h.status(m, "TASK_LOST", reason="REASON_AGENT_REMOVED", uuid=None)
    assert h.s.view(KEY).state is JobState.PENDING
    (m2,) = launches(h.offers(5))
    assert m2.attempt == 2 and m2.key.label() == "master"
    out = h.status(m2.task_id, "TASK_RUNNING", "S5")
    msgs = of(out, fx.SendMessage)
    assert sorted(x.executor_id for x in msgs) == sorted(t.task_id for t in ws)
    assert all(x.data == {"kind": "master_address", "address": f"host5:{m2.ports[0]}"}
               for x in msgs)
    assert h.s.view(KEY).state is JobState.RUNNING


def test_kill_job() -> None:
    h = Harness()
    m, ws = started(h)
    out = h(ev.KillJob(KEY))
    assert sorted(k.task_id for k in of(out, fx.KillTask)) == sorted(
        [m, *(t.task_id for t in ws)])
    assert h.s.view(KEY).state is JobState.RUNNING       # KILLING shows the prior state
    assert of(h(ev.KillJob(KEY)), fx.KillTask) == []    # no second round of kills
    for tid in [m, *(t.task_id for t in ws)][:-1]:
        h.status(tid, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.PENDING       # master gone, a worker still ends
    assert launches(h.offers(2)) == []                   # nothing relaunched while killing
    h.status(ws[-1].task_id, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.KILLED


def test_kill_before_launch_is_immediate_and_late_launch_is_killed() -> None:
    h = Harness()
    h(ev.SubmitJob(make_spec(), "r"))
    h(ev.KillJob(KEY))
    assert h.s.view(KEY).state is JobState.KILLED
    assert launches(h.offers(1)) == []


def test_kill_retried_after_grace() -> None:
    h = Harness()
    m, _ = started(h, workers=0)
    h(ev.KillJob(KEY))
    assert of(h(ev.Tick(), 5), fx.KillTask) == []
    assert of(h(ev.Tick(), 40), fx.KillTask) == [fx.KillTask(m, "S1", 7.0)]


def test_scale_up_and_down() -> None:
    h = Harness()
    _, ws = started(h, workers=2)
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING")
    h(ev.ScaleJob(KEY, 4))
    new = launches(h.offers(1))
    assert sorted(t.key.index for t in new) == [2, 3]
    for t in new:
        h.status(t.task_id, "TASK_RUNNING")
    out = h(ev.ScaleJob(KEY, 1))
    assert [k.task_id for k in of(out, fx.KillTask)] == [
        f"corral.ml.prod.train.worker-{i}.1" for i in (3, 2, 1)]
    assert h.s.view(KEY).desired_workers == 1
    for i in (1, 2, 3):
        h.status(f"corral.ml.prod.train.worker-{i}.1", "TASK_KILLED")
    assert launches(h.offers(1)) == []
    assert [t.slot for t in h.s.view(KEY).tasks] == ["master", "worker-0"]


def test_check_scale_and_submit_errors() -> None:
    h = Harness()
    h(ev.SubmitJob(make_spec(2, lo=1, hi=4), "r1"))
    with pytest.raises(Conflict):
        h.s.check_scale(KEY, 5)
    with pytest.raises(NotFound):
        h.s.check_scale("x/y/z", 1)
    with pytest.raises(NotFound):
        h.s.view("x/y/z")
    h.s.check_scale(KEY, 4)
    assert h.s.check_submit(make_spec(2, lo=1, hi=4), "r1").key == KEY
    with pytest.raises(AlreadyExists):
        h.s.check_submit(make_spec(), "r2")
    assert h(ev.ScaleJob(KEY, 9)) == []         # handle never raises; a note says why
    assert any("scale ignored" in n for _, n in h.s.notes)
    h(ev.KillJob(KEY))
    with pytest.raises(Conflict):
        h.s.check_scale(KEY, 2)


def test_check_kill_refuses_an_ended_job_but_not_one_being_killed() -> None:
    h = Harness()
    with pytest.raises(NotFound):
        h.s.check_kill(KEY)
    m, _ = started(h, workers=0)
    h.s.check_kill(KEY)
    h(ev.KillJob(KEY))
    h.s.check_kill(KEY)                    # still KILLING: asking again is harmless
    h.status(m, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.KILLED
    with pytest.raises(Conflict, match="already ended KILLED"):
        h.s.check_kill(KEY)


def test_submit_idempotent_by_request_id() -> None:
    h = Harness()
    h(ev.SubmitJob(make_spec(), "r1"))
    v1 = h.s.view(KEY)
    assert h(ev.SubmitJob(make_spec(), "r1")) == []
    assert h(ev.SubmitJob(make_spec(5), "r2")) == []
    assert h.s.view(KEY) == v1
    # Once terminal, the key may be reused; attempt numbers continue.
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_FINISHED")
    h(ev.SubmitJob(make_spec(0), "r3"))
    (m2,) = launches(h.offers(1))
    assert m2.attempt == 2 and h.s.view(KEY).request_id == "r3"


def test_acks_for_every_uuid_update() -> None:
    h = Harness()
    m, _ws = started(h)
    cases = [
        ev.StatusUpdate(m, "TASK_RUNNING", "S1", uuid="dup"),             # duplicate
        ev.StatusUpdate(m, "TASK_STARTING", "S1", uuid="stale"),          # reordered
        ev.StatusUpdate("corral.ml.prod.train.worker-0.77", "TASK_FAILED", "S1", uuid="unk"),
        ev.StatusUpdate("someone-else", "TASK_RUNNING", "S1", uuid="foreign"),
    ]
    for c in cases:
        out = h(c)
        assert of(out, fx.Acknowledge) == [fx.Acknowledge("S1", c.task_id, c.uuid)]
    assert of(h(ev.StatusUpdate(m, "TASK_RUNNING", "S1")), fx.Acknowledge) == []


def test_unknown_task_of_ours_unwanted_is_killed() -> None:
    h = Harness()
    started(h, workers=1)
    out = h.status("corral.ml.prod.train.worker-7.1", "TASK_RUNNING", "S3")
    assert fx.KillTask("corral.ml.prod.train.worker-7.1", "S3", 7.0) in out
    out = h.status("corral.other.env.job.master.1", "TASK_RUNNING", "S3")
    assert of(out, fx.KillTask)[0].grace_seconds == 0.0


def test_running_after_finished_is_ignored_and_killed() -> None:
    h = Harness()
    _m, ws = started(h, workers=1)
    h.status(ws[0].task_id, "TASK_FINISHED")
    v = h.s.view(KEY)
    out = h.status(ws[0].task_id, "TASK_RUNNING")
    assert of(out, fx.KillTask) and h.s.view(KEY).tasks == v.tasks
    assert launches(h.offers(2)) == []          # a finished worker is not relaunched


def test_offer_declines_and_refuse_seconds() -> None:
    h = Harness(refuse_short=5, refuse_long=30)
    h(ev.SubmitJob(make_spec(0), "r"))
    out = h(ev.OffersReceived((offer(1, cpus=0.5),)))
    assert of(out, fx.DeclineOffers) == [fx.DeclineOffers(("O1",), 5)]
    assert "insufficient cpus on agent S1" in h.s.view(KEY).tasks[0].pending_reason
    launches(h.offers(1))
    out = h(ev.OffersReceived((offer(2),)))
    assert of(out, fx.DeclineOffers) == [fx.DeclineOffers(("O2",), 30)]


def test_suppress_once_and_revive_when_work_appears() -> None:
    h = Harness()
    out = h(ev.Tick())
    assert of(out, fx.Suppress) and not of(h(ev.Tick()), fx.Suppress)
    out = h(ev.SubmitJob(make_spec(0), "r"))
    assert of(out, fx.Revive)
    assert of(h.offers(1), fx.Suppress)


def test_reconcile_on_subscribe_and_periodically() -> None:
    h = Harness(reconcile_interval=100)
    m, ws = started(h)
    out = h(ev.Subscribed("fw-1"))
    (rec,) = of(out, fx.Reconcile)
    assert sorted(rec.tasks) == sorted([(m, "S1"), *((t.task_id, "S1") for t in ws)])
    assert sorted(h.s.task_ids_to_reconcile()) == sorted(rec.tasks)
    # Mesos answers every task; the last answer ends explicit reconciliation, and an
    # implicit round follows at once.
    answers = [h.status(tid, "TASK_RUNNING" if tid == m else "TASK_STAGING", "S1",
                        source="SOURCE_MASTER", reason="REASON_RECONCILIATION", uuid=None)
               for tid, _ in rec.tasks]
    assert of(answers[-1], fx.Reconcile) == [fx.Reconcile(())]
    assert all(not of(a, fx.Reconcile) for a in answers[:-1])
    assert of(h(ev.Tick(), 50), fx.Reconcile) == []
    assert of(h(ev.Tick(), 60), fx.Reconcile) == [fx.Reconcile(())]


def test_executor_messages_progress() -> None:
    h = Harness()
    m, ws = started(h)
    out = h(ev.ExecutorMessage("S1", ws[0].task_id, {
        "kind": "progress", "task_id": ws[0].task_id, "done": 3, "total": 10,
        "backlog": 7, "rerun": 1}))
    assert fx.JobChanged(KEY) in out
    assert h.s.view(KEY).progress.done == 3
    h(ev.ExecutorMessage("S1", m, {"kind": "progress", "task_id": m, "done": 5,
                                   "total": 64, "backlog": 59, "rerun": 0}))
    assert h.s.view(KEY).progress.total == 64             # the master's report wins
    assert h(ev.ExecutorMessage("S1", m, {"kind": "progress", "task_id": m,
                                          "done": -1})) == []
    h(ev.ExecutorMessage("S1", m, {"kind": "usage", "task_id": m, "cpu_percent": 50.0}))
    h(ev.ExecutorMessage("S1", m, {"kind": "checkpoint", "task_id": m, "uri": "u", "seq": 2}))
    assert h.s.state.jobs[KEY].master.checkpoint == ("u", 2, h.now)


def test_inverse_offer_drains_agent_and_is_accepted_when_empty() -> None:
    h = Harness()
    m, ws = started(h, workers=1)
    out = h(ev.InverseOffersReceived((ev.InverseOffer("I1", "S1", "host1", h.now + 120, 60),)))
    assert of(out, fx.AcceptInverseOffers) == []
    h(ev.ScaleJob(KEY, 2))
    out = h.offers(1)
    assert launches(out) == []
    assert "draining" in h.s.view(KEY).tasks[2].pending_reason
    h.status(ws[0].task_id, "TASK_FAILED", reason="REASON_EXECUTOR_TERMINATED")
    out = h.status(m, "TASK_LOST", reason="REASON_AGENT_REMOVED")
    assert of(out, fx.AcceptInverseOffers) == [fx.AcceptInverseOffers(("I1",))]


def test_executor_terminated_on_lost_agent_is_not_counted() -> None:
    h = Harness()
    _m, ws = started(h, workers=1, max_failures=0)
    h(ev.AgentLost("S1"))
    h.status(ws[0].task_id, "TASK_FAILED", reason="REASON_EXECUTOR_TERMINATED")
    assert h.s.view(KEY).state is JobState.RUNNING
    assert launches(h.offers(2))[0].attempt == 2


def test_executor_overhead_reserved_in_placement() -> None:
    h = Harness(executor_overhead=Resources(0.5, 64))
    h(ev.SubmitJob(make_spec(0), "r"))
    assert launches(h(ev.OffersReceived((offer(1, cpus=1.2),)))) == []
    (m,) = launches(h(ev.OffersReceived((offer(2, cpus=1.5),))))
    assert m.resources == Resources(1, 512)


def masters_of(out: list[fx.Effect]) -> list[str]:
    return [t.key.job.rsplit("/", 1)[1] for t in launches(out)]


def test_an_offers_event_places_a_bounded_number_of_groups_and_resumes() -> None:
    """At most ``groups_per_offers`` groups per OFFERS event; the next event goes on where
    the last stopped, so jobs that cannot be placed at the head never starve the rest."""
    h = Harness(groups_per_offers=2)
    h(ev.Subscribed("fw-1"))
    names = [f"j{i}" for i in range(5)]
    for i, name in enumerate(names):
        big = Resources(64 if i < 2 else 1, 512)      # j0 and j1 fit on no agent
        h(ev.SubmitJob(replace(make_spec(0, name=name), master=TaskTemplate("m", big)),
                       f"r{i}"))
    out = h.offers(1, 2)
    assert launches(out) == []                        # j0 and j1 tried, nothing else
    assert of(out, fx.DeclineOffers)[0].refuse_seconds == 5.0   # more is pending
    assert h.s.view("ml/prod/j0").tasks[0].why      # why they wait is still said
    assert masters_of(h.offers(1, 2)) == ["j2", "j3"]
    assert masters_of(h.offers(1, 2)) == ["j4"]   # then j0 again: all tried
    assert h.s.state.offers_resume == "ml/prod/j1"
    h.s.validate()
