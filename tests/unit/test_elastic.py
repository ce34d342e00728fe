"""The elastic policy wired into the scheduler: targets follow measured load and carry
their reason and fair share; a job scaled by hand is left alone."""

from __future__ import annotations

import pytest

from corral.core import effects as fx
from corral.core import elastic
from corral.core import events as ev
from corral.core.elastic import MANUAL_REASON, Elastic
from corral.core.fairness import RolePolicy
from corral.core.model import Offer, TaskKind
from corral.core.policy import PolicyConfig
from corral.core.resources import Resources
from corral.core.scaling import ScalingConfig
from tests.unit.test_scheduler import KEY, Harness, launches, make_spec, of, started

FAST = PolicyConfig(scaling=ScalingConfig(target_duration_s=60.0, cooldown_up_s=0.0,
                                          cooldown_down_s=0.0))


def progress(h: Harness, master: str, done: int, total: int, dt: float) -> None:
    h(ev.ExecutorMessage("S1", master, {"kind": "progress", "task_id": master, "done": done,
                                        "total": total, "backlog": total - done,
                                        "rerun": 0}), dt=dt)


def run_workers(h: Harness, ws: list) -> None:
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING")


def test_load_grows_the_target_and_says_why() -> None:
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    master, ws = started(h, workers=2, lo=1, hi=8)
    run_workers(h, ws)
    # 2 workers clear 1 unit/s each; 600 units left need 600 / (1 * 60) = 10 -> max 8.
    progress(h, master, 0, 1000, dt=1)
    h(ev.Tick(), dt=5)
    progress(h, master, 10, 1000, dt=5)
    h(ev.Tick(), dt=0.1)
    progress(h, master, 400, 1000, dt=195)
    h(ev.Tick(), dt=0.1)
    view = h.s.view(KEY)
    assert view.desired_workers == 8
    assert view.target_reason.startswith("max:"), view.target_reason
    assert "fair share" in view.target_reason
    # New workers are placed on the next offers.
    assert len(launches(h.offers(2))) == 6


def nearly_done(config: PolicyConfig) -> tuple[Harness, str]:
    """A 4-worker job (min 1) that reports 98 of 100 units done after a policy pass."""
    h = Harness(elastic=Elastic(config=config, interval=5.0))
    master, ws = started(h, workers=4, lo=1, hi=8)
    run_workers(h, ws)
    progress(h, master, 0, 100, dt=1)
    h(ev.Tick(), dt=5)
    progress(h, master, 98, 100, dt=10)
    h(ev.Tick(), dt=0.1)
    return h, master


def test_small_backlog_shrinks_the_job_to_its_minimum() -> None:
    h, _ = nearly_done(FAST)
    view = h.s.view(KEY)
    assert view.desired_workers == 1
    assert view.target_reason.startswith(("min:", "load:")), view.target_reason


def test_submission_starts_the_shrink_cooldown() -> None:
    slow = PolicyConfig(scaling=ScalingConfig(target_duration_s=60.0, cooldown_up_s=0.0,
                                              cooldown_down_s=120.0))
    h, master = nearly_done(slow)
    view = h.s.view(KEY)
    assert view.desired_workers == 4, view.target_reason      # submitted < 120 s ago
    assert "cooldown" in view.target_reason, view.target_reason
    progress(h, master, 99, 100, dt=110)
    h(ev.Tick(), dt=0.1)
    assert h.s.view(KEY).desired_workers == 1                 # now it may shrink


def test_a_job_that_reports_no_load_keeps_its_size() -> None:
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    _master, ws = started(h, workers=4, lo=1, hi=8)
    run_workers(h, ws)
    for _ in range(5):
        h(ev.Tick(), dt=30)
    view = h.s.view(KEY)
    assert view.desired_workers == 4, view.target_reason
    assert view.target_reason.startswith("load: no load reported"), view.target_reason


def test_capacity_counts_launched_resources_once() -> None:
    el = Elastic(config=FAST, interval=5.0)
    h = Harness(elastic=el)
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(2), "req-1"))
    # One agent of 8 cpus: the master takes 1, its next offer is the 7 left, and the two
    # workers take 2 of those.
    (m,) = launches(h(ev.OffersReceived((Offer("O1", "S1", "h1", Resources(8, 8192),
                                               ports=((31000, 31099),)),))))
    h.status(m.task_id, "TASK_RUNNING")
    assert el.capacity(h.s.state)[0].cpus == 8
    ws = launches(h(ev.OffersReceived((Offer("O2", "S1", "h1", Resources(7, 7680),
                                             ports=((31001, 31099),)),))))
    assert len(ws) == 2
    total, revocable = el.capacity(h.s.state)
    assert (total.cpus, total.mem) == (8, 8192), total        # the agent, counted once
    assert revocable.is_empty()


def test_manual_scale_pins_the_target() -> None:
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    master, ws = started(h, workers=2, lo=1, hi=8)
    run_workers(h, ws)
    h(ev.ScaleJob(KEY, 3))
    progress(h, master, 0, 100, dt=1)
    h(ev.Tick(), dt=5)
    progress(h, master, 98, 100, dt=10)
    h(ev.Tick(), dt=6)
    view = h.s.view(KEY)
    assert view.desired_workers == 3 and view.target_reason == "scaled by request"


def test_no_offers_seen_means_no_pass() -> None:
    el = Elastic(config=FAST, interval=5.0)
    h = Harness(elastic=el)
    h(ev.Subscribed("fw-1"))
    from tests.unit.test_scheduler import make_spec

    h(ev.SubmitJob(make_spec(2), "req-1"))
    h(ev.Tick(), dt=10)
    view = h.s.view(KEY)
    assert view.desired_workers == 2 and view.target_reason == "initial"
    assert el.capacity(h.s.state)[0].is_empty()


def test_capacity_counts_offers_and_our_tasks_but_not_lost_agents() -> None:
    el = Elastic(config=FAST, interval=5.0)
    h = Harness(elastic=el)
    started(h, workers=2)  # master on S1 (1 cpu), then workers on S1 (2 cpus)
    h.offers(2, cpus=4)
    total, _ = el.capacity(h.s.state)
    # S1's last offer had 8 cpus, 2 of which the workers took; it holds 3 of ours; S2
    # offers 4.
    assert total.cpus == (8 - 2) + 3 + 4
    h(ev.AgentLost("S2"))
    assert el.capacity(h.s.state)[0].cpus == (8 - 2) + 3


def test_quota_limits_the_target() -> None:
    from corral.core.resources import Resources

    roles = {"ml": RolePolicy(weight=1.0, limit=Resources(cpus=4, mem=1e9, disk=1e9, gpus=1e9))}
    h = Harness(elastic=Elastic(roles=roles, config=FAST, interval=5.0))
    master, ws = started(h, workers=2, lo=1, hi=8)
    run_workers(h, ws)
    progress(h, master, 0, 10_000, dt=1)
    h(ev.Tick(), dt=5)
    progress(h, master, 100, 10_000, dt=50)
    h(ev.Tick(), dt=0.1)
    view = h.s.view(KEY)
    # 4 cpus: the master (1) and three 1-cpu workers.
    assert view.desired_workers == 3, view.target_reason
    assert view.target_reason.startswith("quota:")


NAMES = [f"j{i}" for i in range(5)]


def five_nearly_done(per_step: int) -> Harness:
    """Five 4-worker jobs (min 1) that each report 98 of 100 units done after a pass."""
    h = Harness(elastic=Elastic(config=FAST, interval=5.0, jobs_per_step=per_step))
    h(ev.Subscribed("fw-1"))
    for n in NAMES:
        h(ev.SubmitJob(make_spec(4, lo=1, hi=8, name=n), f"r-{n}"))
    masters: dict[str, tuple[str, str]] = {}
    for _ in range(2):   # the masters, then (once they run) the workers
        for launch in of(h.offers(1, 2, 3, 4), fx.LaunchTasks):
            for t in launch.tasks:
                h.status(t.task_id, "TASK_RUNNING", launch.agent_id)
                if t.key.kind is TaskKind.MASTER:
                    masters[t.key.job] = (t.task_id, launch.agent_id)
    assert len(masters) == 5
    assert all(t.state == "TASK_RUNNING" for k in masters for t in h.s.view(k).tasks)
    for done in (0, 98):
        for tid, agent in masters.values():
            h(ev.ExecutorMessage(agent, tid, {"kind": "progress", "task_id": tid,
                                              "done": done, "total": 100,
                                              "backlog": 100 - done, "rerun": 0}),
              dt=10 if done else 1)
        h(ev.Tick(), dt=5)
        for _ in range(6):       # a split pass goes on over the next ticks
            h(ev.Tick(), dt=0.01)
    return h


def test_a_pass_split_across_ticks_decides_what_one_pass_decides() -> None:
    whole, split = five_nearly_done(1000), five_nearly_done(2)
    for n in NAMES:
        a, b = whole.s.view(f"ml/prod/{n}"), split.s.view(f"ml/prod/{n}")
        assert a.desired_workers == b.desired_workers == 1, (a.target_reason, b.target_reason)
        assert a.target_reason == b.target_reason


def test_a_split_pass_takes_a_share_per_tick_and_skips_what_changed() -> None:
    h = five_nearly_done(2)
    policy = h.s.elastic
    assert isinstance(policy, Elastic)
    steps = []
    for _ in range(6):
        h(ev.Tick(), dt=5 if not steps else 0.01)
        p = policy._pass
        steps.append(None if p is None else (p.next, p.result is not None))
        if len(steps) == 2:
            h(ev.KillJob("ml/prod/j4"), dt=0.01)     # ends while its demand is gathered
        if len(steps) == 4:
            h(ev.ScaleJob("ml/prod/j3", 5), dt=0.01)  # scaled by hand before its decision
    # Gathered two jobs per tick, computed, then decided two per tick.
    assert steps == [(2, False), (4, False), (5, False), (0, True), (2, True), None]
    assert [h.s.view(f"ml/prod/j{i}").desired_workers for i in range(4)] == [1, 1, 1, 5]
    assert h.s.view("ml/prod/j3").target_reason == MANUAL_REASON
    h.s.validate()


def test_a_new_leaders_first_pass_waits_for_the_capacity_to_catch_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When more agents changed than one tick folds (a failover: all of them), the first
    pass waits while the capacity estimate catches up a share per tick."""
    monkeypatch.setattr(elastic, "_FOLD_PER_STEP", 2)
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    policy = h.s.elastic
    assert isinstance(policy, Elastic)
    started(h, workers=1)
    h.offers(2, 3, 4, 5, 6)                  # six agents changed in all
    backlog = []
    for _ in range(4):
        h(ev.Tick(), dt=1)
        backlog.append((len(policy._dirty) + len(h.s.state.touched_agents),
                        policy._last_pass is not None))
    assert backlog == [(4, False), (2, False), (0, True), (0, True)]
    assert policy.capacity(h.s.state)[0].cpus >= 8 * 6   # all six agents counted
