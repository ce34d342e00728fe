"""Properties of the scheduler under random event sequences, with ``validate()`` (every
invariant of the core's state) after each event: offers never over-committed and always
answered (or held while reconciling), never two live masters per job, active workers never
above the target, every update acknowledged, and duplicate (reconciliation) updates
change nothing. The sequences mix offers, status updates in every Mesos state, scaling,
kills, lost agents, inverse offers and their rescinds, unavailability windows, offer
rescinds, executor messages (progress, checkpoints, garbage), effects the shell failed to
carry out, re-subscriptions, and the elastic policy's passes over two roles (targets,
preemption victims, retirees, holes in the wanted workers, right-sized launches)."""

from __future__ import annotations

from collections import Counter

from hypothesis import event, given, settings
from hypothesis import strategies as st

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.elastic import Elastic
from corral.core.model import JobSpec, Offer, RestartPolicy, TaskKind, TaskTemplate, WorkerPool
from corral.core.placement.pool import milli
from corral.core.policy import PolicyConfig
from corral.core.resources import Resources
from corral.core.rightsizing import RightSizingConfig
from corral.core.scaling import ScalingConfig
from corral.core.scheduler import Scheduler
from corral.core.slot_state import Life
from corral.core.task_state import MESOS_STATES

ROLE = {0: "r", 1: "r", 2: "q"}
REASONS = [None, "REASON_AGENT_REMOVED", "REASON_COMMAND_EXECUTOR_FAILED",
           "REASON_EXECUTOR_TERMINATED", "REASON_CONTAINER_PREEMPTED"]
MARKETS = ["spot-a", "spot-b", "on-demand"]


def spec(j: int, workers: int) -> JobSpec:
    t = TaskTemplate("x", Resources(1, 256), ports=1)
    # Two roles, so the policy's fairness preempts across them.
    return JobSpec(ROLE[j], "e", f"j{j}", master=t, workers=WorkerPool(t, 0, 6, workers),
                   restart=RestartPolicy(max_failures=2, backoff_seconds=1,
                                         backoff_max_seconds=4))


# Every Mesos state, with RUNNING over-represented so jobs get going.
STATES = [*MESOS_STATES, "TASK_RUNNING", "TASK_RUNNING", "TASK_RUNNING"]

offers_action = st.tuples(st.just("offers"), st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([0.5, 1, 2, 3, 8]), st.booleans()),
    min_size=1, max_size=4))
action = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.integers(0, 4)),
    offers_action, offers_action,
    st.tuples(st.just("status"), st.integers(0, 50), st.sampled_from(STATES),
              st.sampled_from(REASONS)),
    st.tuples(st.just("status"), st.integers(0, 50), st.just("TASK_RUNNING"), st.none()),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 3, 20, 45])),
    st.tuples(st.just("scale"), st.integers(0, 2), st.integers(0, 6)),
    st.tuples(st.just("kill"), st.integers(0, 2)),
    st.tuples(st.just("lost"), st.integers(0, 3)),
    st.tuples(st.just("inverse"), st.integers(0, 3), st.sampled_from([5.0, 30.0])),
    st.tuples(st.just("unrescind"), st.integers(0, 5)),
    st.tuples(st.just("rescind"), st.integers(0, 30)),
    st.tuples(st.just("message"), st.integers(0, 50),
              st.sampled_from(["progress", "checkpoint", "usage", "junk"]),
              st.integers(-1, 500)),
    st.tuples(st.just("failed"), st.integers(0, 30)),
    st.tuples(st.just("resubscribe"),),
    st.tuples(st.just("disconnect"),),
)


def check_offers(out: list[fx.Effect], offers: list[Offer], gated: bool) -> None:
    by_id = {o.id: o for o in offers}
    used_ids: list[str] = []
    for e in out:
        if isinstance(e, fx.LaunchTasks | fx.DeclineOffers):
            used_ids += list(e.offer_ids)
        if isinstance(e, fx.LaunchTasks):
            mine = [by_id[i] for i in e.offer_ids if i in by_id]
            assert {o.agent_id for o in mine} <= {e.agent_id}
            for pool in (False, True):
                offered = sum((milli(o.revocable if pool else o.resources) for o in mine), 0)
                used = sum((milli(t.resources) for t in e.tasks if t.revocable == pool), 0)
                assert (used <= offered).all()
            ports = [p for t in e.tasks for p in t.ports]
            assert len(ports) == len(set(ports))
    if not gated:
        # Every offer is answered exactly once: accepted or declined, never held.
        assert sorted(i for i in used_ids if i in by_id) == sorted(by_id)


def check_state(s: Scheduler) -> None:
    s.validate()
    active_masters: Counter[str] = Counter()
    active_workers: Counter[str] = Counter()
    for att in s.state.attempts.values():
        if att.live and att.life.active:
            job = s.state.jobs[att.key.job]
            if att.key.kind is TaskKind.MASTER:
                active_masters[att.key.job] += 1
            else:
                active_workers[att.key.job] += 1
                assert job.wants(att.key)
    assert all(n <= 1 for n in active_masters.values())
    for job, n in active_workers.items():
        assert n <= s.state.jobs[job].effective_workers()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=3),
       st.lists(action, min_size=15, max_size=90), st.booleans())
def test_random_runs_keep_invariants(initial: list[int], actions: list, elastic: bool) -> None:
    policy = Elastic(config=PolicyConfig(scaling=ScalingConfig(
        target_duration_s=10.0, cooldown_up_s=0.0, cooldown_down_s=5.0),
        rightsizing=RightSizingConfig(min_samples=2), preemption_budget=3,
        min_share_diff=0.0), interval=5.0)
    s = Scheduler(elastic=policy if elastic else None, staging_timeout=30.0,
                  reconcile_timeout=20.0)
    now = 0.0
    s.handle(ev.Subscribed("fw"), now)
    for j, workers in enumerate(initial):
        s.handle(ev.SubmitJob(spec(j, workers), f"first{j}"), now)
    n_offer = 0
    sent: list[fx.Effect] = []
    for a in actions:
        now += 0.1
        offers: list[Offer] = []
        ids = sorted(s.state.attempts)
        if a[0] == "submit":
            e: ev.Event = ev.SubmitJob(spec(a[1], a[2]), f"req{a[1]}-{a[2]}")
        elif a[0] == "offers":
            for agent, cpus, notice in a[1]:
                n_offer += 1
                offers.append(Offer(
                    f"O{n_offer}", f"S{agent}", f"h{agent}", Resources(cpus, 2048),
                    revocable=Resources(1, 512) if agent == 3 else Resources(),
                    ports=((100, 102),), attributes=(("market", MARKETS[agent % 3]),),
                    unavailable_at=now + 20 if notice and agent == 2 else None))
            e = ev.OffersReceived(tuple(offers))
        elif a[0] == "status":
            if not ids:
                continue
            att = s.state.attempts[ids[a[1] % len(ids)]]
            e = ev.StatusUpdate(att.task_id, a[2], att.agent_id, reason=a[3],
                                uuid=f"u{now}")
        elif a[0] == "tick":
            now += a[1]
            e = ev.Tick()
        elif a[0] == "scale":
            e = ev.ScaleJob(f"{ROLE[a[1]]}/e/j{a[1]}", a[2])
        elif a[0] == "kill":
            e = ev.KillJob(f"{ROLE[a[1]]}/e/j{a[1]}")
        elif a[0] == "lost":
            e = ev.AgentLost(f"S{a[1]}")
        elif a[0] == "inverse":
            e = ev.InverseOffersReceived((ev.InverseOffer(
                f"I{a[1]}", f"S{a[1]}", f"h{a[1]}", now + a[2], 60.0),))
        elif a[0] == "unrescind":
            e = ev.InverseOfferRescinded(f"I{a[1]}")
        elif a[0] == "rescind":
            e = ev.OfferRescinded(f"O{a[1]}")
        elif a[0] == "message":
            if not ids:
                continue
            tid = ids[a[1] % len(ids)]
            data: dict = {"kind": a[2], "task_id": tid}
            if a[2] == "progress":
                data.update(done=a[3], total=500, backlog=max(0, 500 - a[3]), rerun=0)
            elif a[2] == "checkpoint":
                data.update(uri="file:///ck", seq=a[3])
            elif a[2] == "usage":
                data.update(cpu_percent=a[3], rss_mb=a[3] * 2)
            e = ev.ExecutorMessage("S0", tid, data)
        elif a[0] == "failed":
            calls = [x for x in sent if isinstance(x, fx.LaunchTasks | fx.KillTask)]
            if not calls:
                continue
            e = ev.EffectFailed(calls[a[1] % len(calls)], "connection refused")
        elif a[0] == "resubscribe":
            e = ev.Subscribed("fw")
        else:
            e = ev.Disconnected("connection refused")
        gated = s.state.session.gated
        out = s.handle(e, now)
        sent += out
        if offers:
            check_offers(out, offers, gated)
        if isinstance(e, ev.StatusUpdate):
            assert fx.Acknowledge(e.agent_id, e.task_id, e.uuid) in out
        check_state(s)
        launched = [t.key for x in out if isinstance(x, fx.LaunchTasks) for t in x.tasks]
        assert len(launched) == len(set(launched))

    event(f"tasks launched: {min(len(s.state.attempts), 8)}")
    event(f"drained: {any(a.life is Life.DRAINING for a in s.state.attempts.values())}")
    event(f"policy stopped workers: {any(j.actions for j in s.state.jobs.values())}")
    event(f"holes: {any(j.holes for j in s.state.jobs.values())}")
    # Reconciliation answers every task with the state we already hold. The first round
    # may finish a reconciliation in progress (the gate opens); after that, answering
    # again (twice) changes nothing and only kills what Corral wrote off.
    def answer_all() -> list[fx.Effect]:
        effects: list[fx.Effect] = []
        for att in list(s.state.attempts.values()):
            if att.mesos.terminal or att.life in (Life.LAUNCHED, Life.RECONCILING):
                continue
            effects += s.handle(ev.StatusUpdate(
                att.task_id, att.mesos.mesos_name, att.agent_id, source="SOURCE_MASTER",
                reason="REASON_RECONCILIATION"), now)
            check_state(s)
        return effects

    answer_all()
    before = s.views()
    for _ in range(2):
        out = answer_all()
        assert all(isinstance(x, fx.KillTask) for x in out), out
    assert s.views() == before
