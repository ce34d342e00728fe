"""Properties of the scheduler under random event sequences: offers never over-committed,
never two live masters per job, live workers never above the target, and duplicate
(reconciliation) updates change nothing."""

from __future__ import annotations

from collections import Counter

from hypothesis import event, given, settings
from hypothesis import strategies as st

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.model import JobSpec, Offer, RestartPolicy, TaskKind, TaskTemplate, WorkerPool
from corral.core.placement.pool import milli
from corral.core.resources import Resources
from corral.core.scheduler import Scheduler
from corral.core.task_state import MESOS_STATES, TaskState

REASONS = [None, "REASON_AGENT_REMOVED", "REASON_COMMAND_EXECUTOR_FAILED",
           "REASON_EXECUTOR_TERMINATED", "REASON_CONTAINER_PREEMPTED"]


def spec(j: int, workers: int) -> JobSpec:
    t = TaskTemplate("x", Resources(1, 256), ports=1)
    return JobSpec("r", "e", f"j{j}", master=t, workers=WorkerPool(t, 0, 6, workers),
                   restart=RestartPolicy(max_failures=2, backoff_seconds=1,
                                         backoff_max_seconds=4))


# Every Mesos state, with RUNNING over-represented so jobs get going.
STATES = [*MESOS_STATES, "TASK_RUNNING", "TASK_RUNNING", "TASK_RUNNING"]

offers_action = st.tuples(st.just("offers"), st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([0.5, 1, 2, 3, 8])), min_size=1, max_size=4))
action = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.integers(0, 4)),
    offers_action, offers_action,
    st.tuples(st.just("status"), st.integers(0, 50), st.sampled_from(STATES),
              st.sampled_from(REASONS)),
    st.tuples(st.just("status"), st.integers(0, 50), st.just("TASK_RUNNING"), st.none()),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 3, 20])),
    st.tuples(st.just("scale"), st.integers(0, 2), st.integers(0, 6)),
    st.tuples(st.just("kill"), st.integers(0, 2)),
    st.tuples(st.just("lost"), st.integers(0, 3)),
)


def check_offers(out: list[fx.Effect], offers: list[Offer]) -> None:
    by_id = {o.id: o for o in offers}
    used_ids: list[str] = []
    for e in out:
        if isinstance(e, fx.LaunchTasks | fx.DeclineOffers):
            used_ids += list(e.offer_ids)
        if isinstance(e, fx.LaunchTasks):
            mine = [by_id[i] for i in e.offer_ids]
            assert {o.agent_id for o in mine} == {e.agent_id}
            for pool in (False, True):
                offered = sum((milli(o.revocable if pool else o.resources) for o in mine), 0)
                used = sum((milli(t.resources) for t in e.tasks if t.revocable == pool), 0)
                assert (used <= offered).all()
            ports = [p for t in e.tasks for p in t.ports]
            assert len(ports) == len(set(ports))
    # Every offer is answered exactly once: accepted or declined, never held.
    assert sorted(used_ids) == sorted(by_id)


def check_state(s: Scheduler) -> None:
    live_masters: Counter[str] = Counter()
    live_workers: Counter[str] = Counter()
    for att in s._tasks.values():
        if att.state.live and att.kill_sent_at is None:
            if att.key.kind is TaskKind.MASTER:
                live_masters[att.key.job] += 1
            else:
                live_workers[att.key.job] += 1
                assert att.key.index < s.jobs[att.key.job].desired
    assert all(n <= 1 for n in live_masters.values())
    for job, n in live_workers.items():
        assert n <= s.jobs[job].desired


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=3),
       st.lists(action, min_size=15, max_size=80))
def test_random_runs_keep_invariants(initial: list[int], actions: list) -> None:
    s = Scheduler()
    now = 0.0
    s.handle(ev.Subscribed("fw"), now)
    for j, workers in enumerate(initial):
        s.handle(ev.SubmitJob(spec(j, workers), f"first{j}"), now)
    n_offer = 0
    for a in actions:
        now += 0.1
        offers: list[Offer] = []
        if a[0] == "submit":
            e: ev.Event = ev.SubmitJob(spec(a[1], a[2]), f"req{a[1]}-{a[2]}")
        elif a[0] == "offers":
            for agent, cpus in a[1]:
                n_offer += 1
                offers.append(Offer(f"O{n_offer}", f"S{agent}", f"h{agent}",
                                    Resources(cpus, 2048), ports=((100, 102),)))
            e = ev.OffersReceived(tuple(offers))
        elif a[0] == "status":
            ids = sorted(s._tasks)
            if not ids:
                continue
            att = s._tasks[ids[a[1] % len(ids)]]
            e = ev.StatusUpdate(att.task_id, a[2], att.agent_id, reason=a[3],
                                uuid=f"u{now}")
        elif a[0] == "tick":
            now += a[1]
            e = ev.Tick()
        elif a[0] == "scale":
            e = ev.ScaleJob(f"r/e/j{a[1]}", a[2])
        elif a[0] == "kill":
            e = ev.KillJob(f"r/e/j{a[1]}")
        else:
            e = ev.AgentLost(f"S{a[1]}")
        out = s.handle(e, now)
        if offers:
            check_offers(out, offers)
        if isinstance(e, ev.StatusUpdate):
            assert fx.Acknowledge(e.agent_id, e.task_id, e.uuid) in out
        check_state(s)
        launched = [t.key for x in out if isinstance(x, fx.LaunchTasks) for t in x.tasks]
        assert len(launched) == len(set(launched))

    event(f"tasks launched: {min(len(s._tasks), 8)}")
    # Reconciling (twice) answers every task with the state we already hold: no change.
    before = s.views()
    for _ in range(2):
        for att in list(s._tasks.values()):
            if att.state is TaskState.PENDING:
                continue
            out = s.handle(ev.StatusUpdate(att.task_id, att.state.mesos_name, att.agent_id,
                                           source="SOURCE_MASTER",
                                           reason="REASON_RECONCILIATION"), now)
            # Only a kill may follow (a task we wrote off that Mesos still reports live).
            assert all(isinstance(x, fx.KillTask) for x in out)
    assert s.views() == before
