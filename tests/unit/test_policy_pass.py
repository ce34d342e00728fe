"""Unit tests of one full policy pass: reasons, preemption, deadlines, retirement."""

from __future__ import annotations

from corral.core.fairness import RolePolicy
from corral.core.model import Tier
from corral.core.policy import JobDemand, PolicyConfig, PolicyState, compute_targets
from corral.core.resources import Resources
from corral.core.scaling import ScalingConfig, WorkerState

UNIT = Resources(cpus=1, mem=1024)
CAP = Resources(cpus=40, mem=40 * 1024)
FAST = PolicyConfig(scaling=ScalingConfig(cooldown_up_s=0, cooldown_down_s=0, max_step_up=1000,
                                          max_step_down=1000, hysteresis=0.0))


def workers(prefix: str, n: int, age: float = 10.0) -> tuple[WorkerState, ...]:
    return tuple(WorkerState(f"{prefix}-{i}", i, checkpoint_age_s=age + i) for i in range(n))


def job(key: str, running: int = 0, backlog: float = 1e9, **kw: object) -> JobDemand:
    role = key.split("/")[0]
    fields = dict(max_workers=100, throughput_per_worker=1.0)
    fields.update(kw)
    return JobDemand(key, role, UNIT, workers=workers(key, running), backlog=backlog,
                     **fields)  # type: ignore[arg-type]


def test_single_job_gets_load_target_with_reason() -> None:
    r = compute_targets([job("a/e/x", backlog=6000)], CAP, {}, PolicyState(), 0.0, FAST)
    t = r.targets["a/e/x"]
    assert (t.workers, t.reason) == (10, "load")  # 6000 / (1 * 600 s)
    assert t.fair_share == 0.25


def test_min_and_max_reasons() -> None:
    r = compute_targets([job("a/e/x", backlog=0, min_workers=3), job("b/e/y", max_workers=5)],
                        CAP, {}, PolicyState(), 0.0, FAST)
    assert (r.targets["a/e/x"].workers, r.targets["a/e/x"].reason) == (3, "min")
    assert (r.targets["b/e/y"].workers, r.targets["b/e/y"].reason) == (5, "max")


def test_load_scale_down_retires_the_workers_that_lose_least() -> None:
    # Worker i last checkpointed 10 + i seconds ago: the low indexes lose least.
    j = job("a/e/x", running=10, backlog=3000)  # wants 5
    r = compute_targets([j], CAP, {}, PolicyState(), 0.0, FAST)
    t = r.targets["a/e/x"]
    assert t.workers == 5 and t.retire == tuple(f"a/e/x-{i}" for i in (0, 1, 2, 3, 4))
    assert r.preemptions == ()


def test_equal_roles_split_and_preempt_least_work_lost() -> None:
    a = job("a/e/x", running=40)
    b = job("b/e/y")
    r = compute_targets([a, b], CAP, {}, PolicyState(), 0.0, FAST)
    assert r.targets["a/e/x"].workers == 20 and r.targets["b/e/y"].workers == 20
    assert r.targets["a/e/x"].reason == "share"
    victims = [v for p in r.preemptions for v in p.victims]
    # Freshest checkpoints first: workers 0..19 have ages 10..29.
    assert victims == [f"a/e/x-{i}" for i in range(20)]
    assert r.role_shares == {"a": 0.5, "b": 0.5}


def test_preemption_budget_holds_over_share_workers() -> None:
    cfg = PolicyConfig(scaling=FAST.scaling, preemption_budget=5, preemption_window_s=100)
    a, b = job("a/e/x", running=40), job("b/e/y")
    r = compute_targets([a, b], CAP, {}, PolicyState(), 0.0, cfg)
    assert sum(len(p.victims) for p in r.preemptions) == 5
    t = r.targets["a/e/x"]
    assert (t.workers, t.reason) == (35, "hold")
    # Same window: no budget left. After the window: five more.
    a2 = job("a/e/x", running=35)
    r2 = compute_targets([a2, b], CAP, {}, r.state, 50.0, cfg)
    assert r2.preemptions == ()
    r3 = compute_targets([a2, b], CAP, {}, r2.state, 150.0, cfg)
    assert sum(len(p.victims) for p in r3.preemptions) == 5


def test_min_share_difference_prevents_churn() -> None:
    cfg = PolicyConfig(scaling=FAST.scaling, min_share_diff=0.2)
    a, b = job("a/e/x", running=22), job("b/e/y", running=18)
    r = compute_targets([a, b], CAP, {}, PolicyState(), 0.0, cfg)
    assert r.preemptions == ()  # 0.55 vs 0.45 is within 0.2
    assert r.targets["a/e/x"].reason == "hold"


def test_preferred_never_preempted_below_guarantee() -> None:
    roles = {"a": RolePolicy(guarantee=Resources(cpus=30, mem=30 * 1024))}
    a, b = job("a/e/x", running=40), job("b/e/y")
    r = compute_targets([a, b], CAP, roles, PolicyState(), 0.0, FAST)
    assert sum(len(p.victims) for p in r.preemptions) == 10
    assert r.targets["a/e/x"].workers == 30


def test_revocable_pool_is_separate() -> None:
    rev = job("a/e/rev", running=20, tier=Tier.REVOCABLE)
    pe = job("a/e/pe", running=40, tier=Tier.PREEMPTIBLE)
    b = job("b/e/y")
    r = compute_targets([rev, pe, b], CAP, {}, PolicyState(), 0.0, FAST,
                        revocable_capacity=Resources(cpus=20, mem=20 * 1024))
    # Revocable work lives in its own pool, untouched by main-pool contention.
    assert r.targets["a/e/rev"].workers == 20
    assert [p.job for p in r.preemptions] == ["a/e/pe"]


def test_preemptible_preempted_before_preferred() -> None:
    pref = job("a/e/pref", running=20, tier=Tier.PREFERRED)
    pe = job("a/e/pe", running=20, tier=Tier.PREEMPTIBLE)
    r = compute_targets([pref, pe, job("b/e/y")], CAP, {}, PolicyState(), 0.0, FAST)
    assert {p.job for p in r.preemptions} == {"a/e/pe"}
    assert r.targets["a/e/pref"].workers == 20 and r.targets["a/e/pe"].workers == 0


def test_deadline_job_gets_need_ahead_of_share() -> None:
    # b's deadline job needs 30 workers (3000 units, 1/s, 100 s, no margin) of 40.
    cfg = PolicyConfig(scaling=FAST.scaling, sla=FAST.sla.__class__(margin=0.0, startup_s=0))
    a = job("a/e/x")
    d = job("b/e/dl", backlog=3000, deadline=100.0, max_workers=40)
    r = compute_targets([a, d], CAP, {}, PolicyState(), 0.0, cfg)
    t = r.targets["b/e/dl"]
    assert (t.workers, t.reason, t.deadline_risk) == (30, "deadline", None)


def test_deadline_miss_flagged_with_quota_reason() -> None:
    cfg = PolicyConfig(scaling=FAST.scaling, sla=FAST.sla.__class__(margin=0.0, startup_s=0))
    roles = {"b": RolePolicy(limit=Resources(cpus=10, mem=10 * 1024))}
    d = job("b/e/dl", backlog=3000, deadline=100.0, max_workers=40)
    r = compute_targets([d], CAP, roles, PolicyState(), 0.0, cfg)
    t = r.targets["b/e/dl"]
    assert (t.workers, t.reason) == (10, "quota")
    assert t.deadline_risk is not None and "quota" in t.deadline_risk


def test_quota_excess_retires_not_holds() -> None:
    roles = {"a": RolePolicy(limit=Resources(cpus=10, mem=10 * 1024))}
    r = compute_targets([job("a/e/x", running=15)], CAP, roles, PolicyState(), 0.0, FAST)
    t = r.targets["a/e/x"]
    assert (t.workers, t.reason, len(t.retire)) == (10, "quota", 5)


def test_state_forgets_finished_jobs_and_is_deterministic() -> None:
    jobs = [job("a/e/x", running=40), job("b/e/y")]
    r1 = compute_targets(jobs, CAP, {}, PolicyState(), 0.0)
    r2 = compute_targets(jobs, CAP, {}, PolicyState(), 0.0)
    assert r1 == r2
    r3 = compute_targets(jobs[1:], CAP, {}, r1.state, 10.0)
    assert set(r3.state.desired) == {"b/e/y"}


def test_cooldown_remembered_across_passes() -> None:
    cfg = PolicyConfig(scaling=ScalingConfig(cooldown_up_s=60, max_step_up=100))
    r1 = compute_targets([job("a/e/x", backlog=6000)], CAP, {}, PolicyState(), 0.0, cfg)
    assert r1.targets["a/e/x"].workers == 10
    r2 = compute_targets([job("a/e/x", backlog=12000)], CAP, {}, r1.state, 30.0, cfg)
    assert r2.targets["a/e/x"].workers == 10 and "cooldown" in r2.targets["a/e/x"].detail
    r3 = compute_targets([job("a/e/x", backlog=12000)], CAP, {}, r2.state, 61.0, cfg)
    assert r3.targets["a/e/x"].workers == 20


def test_demand_from_submitted_spec() -> None:
    from corral.core.spec import parse_job_spec

    spec = parse_job_spec({
        "role": "ml", "environment": "prod", "name": "resnet", "tier": "preemptible",
        "priority": 2, "deadline_seconds": 3600,
        "master": {"command": "m", "cpus": 1, "mem": 512},
        "workers": {"command": "w", "cpus": 2, "mem": 2048, "min": 1, "max": 8, "initial": 2},
    })
    d = JobDemand.from_spec(spec, submitted_at=100.0, backlog=9600.0,
                            throughput_per_worker=1.0)
    assert (d.key, d.role, d.tier, d.priority) == ("ml/prod/resnet", "ml", Tier.PREEMPTIBLE, 2)
    assert (d.min_workers, d.max_workers, d.initial_workers, d.deadline) == (1, 8, 2, 3700.0)
    t = compute_targets([d], CAP, {}, PolicyState(), 100.0, FAST).targets[d.key]
    assert (t.workers, t.reason) == (8, "max")  # 9600 / 600 s wants 16, above the maximum


def test_equal_priority_sibling_does_not_grow_at_the_others_expense() -> None:
    """Role a must give 20 workers to b; its job x must not grow meanwhile by taking
    running workers from its sibling y (that would preempt more than b needs)."""
    x = job("a/e/x", running=10, submitted_at=0.0)
    y = job("a/e/y", running=30, submitted_at=1.0)
    b = job("b/e/z")
    r = compute_targets([x, y, b], CAP, {}, PolicyState(), 0.0, FAST)
    assert r.targets["a/e/x"].workers == 10 and r.targets["a/e/y"].workers == 10
    assert [(p.job, len(p.victims)) for p in r.preemptions] == [("a/e/y", 20)]
    assert r.targets["b/e/z"].workers == 20
