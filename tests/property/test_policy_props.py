"""Hypothesis properties of the elastic worker policy."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.core.fairness import RolePolicy, Segment, allocate
from corral.core.model import Tier
from corral.core.policy import JobDemand, PolicyConfig, PolicyState, compute_targets
from corral.core.resources import Resources
from corral.core.scaling import ScaleMemory, ScalingConfig, WorkerState, clamp, dampen

FAST = ScalingConfig(cooldown_up_s=0, cooldown_down_s=0, max_step_up=1000, max_step_down=1000,
                     hysteresis=0.0)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

units = st.builds(Resources, cpus=st.sampled_from([0.5, 1, 2, 4]),
                  mem=st.sampled_from([256, 1024, 4096]))
tiers = st.sampled_from(list(Tier))


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[JobDemand], Resources, dict[str, RolePolicy]]:
    n_roles = draw(st.integers(1, 4))
    roles: dict[str, RolePolicy] = {}
    cap = Resources(cpus=draw(st.integers(8, 64)), mem=draw(st.integers(8, 64)) * 1024)
    for r in range(n_roles):
        limit = None
        if draw(st.booleans()):
            limit = Resources(cpus=draw(st.integers(2, 40)), mem=draw(st.integers(2, 40)) * 1024)
        g = Resources()
        if draw(st.booleans()):
            g = Resources(cpus=draw(st.integers(0, 8)), mem=draw(st.integers(0, 8)) * 1024)
        roles[f"r{r}"] = RolePolicy(weight=draw(st.sampled_from([1.0, 2.0])), guarantee=g,
                                    limit=limit)
    jobs = []
    for i in range(draw(st.integers(1, 8))):
        role = f"r{draw(st.integers(0, n_roles - 1))}"
        lo = draw(st.integers(0, 3))
        hi = draw(st.integers(lo, 30))
        running = draw(st.integers(0, hi))
        key = f"{role}/e/j{i}"
        ages = draw(st.lists(st.one_of(st.none(), st.floats(0, 1000)), min_size=running,
                             max_size=running))
        deadline = draw(st.one_of(st.none(), st.floats(10, 5000)))
        jobs.append(JobDemand(
            key, role, draw(units), tier=draw(tiers), priority=draw(st.integers(0, 2)),
            min_workers=lo, max_workers=hi, initial_workers=lo,
            workers=tuple(WorkerState(f"{key}-{k}", k, checkpoint_age_s=a)
                          for k, a in enumerate(ages)),
            backlog=draw(st.floats(0, 1e6)), throughput_per_worker=draw(st.floats(0, 50)),
            deadline=deadline,
        ))
    return jobs, cap, roles


def _role_use(jobs: list[JobDemand], counts: dict[str, int]) -> dict[str, Resources]:
    out: dict[str, Resources] = {}
    for j in jobs:
        out[j.role] = out.get(j.role, Resources()) + j.worker_resources.scale(counts[j.key])
    return out


@SETTINGS
@given(scenario())
def test_no_role_above_hard_quota(s: tuple) -> None:
    jobs, cap, roles = s
    r = compute_targets(jobs, cap, roles, PolicyState(), 0.0,
                        PolicyConfig(scaling=FAST), revocable_capacity=cap)
    counts = {k: t.workers for k, t in r.targets.items()}
    for pool in (True, False):
        sub = [j for j in jobs if (j.tier is Tier.REVOCABLE) == pool]
        for role, use in _role_use(sub, counts).items():
            limit = roles[role].limit
            assert limit is None or use.fits(limit), (role, use, limit)


@SETTINGS
@given(scenario())
def test_targets_within_job_bounds(s: tuple) -> None:
    jobs, cap, roles = s
    r = compute_targets(jobs, cap, roles, PolicyState(), 0.0, revocable_capacity=cap)
    for j in jobs:
        t = r.targets[j.key]
        assert t.workers <= j.max_workers
        if t.reason in ("load", "min", "max", "deadline"):
            assert j.min_workers <= t.workers
        assert set(t.retire) <= {w.task_id for w in j.workers}
        victims = sum(len(p.victims) for p in r.preemptions if p.job == j.key)
        if t.workers < j.running:
            # Every worker above the target is accounted for: retired or preempted.
            assert t.workers == j.running - len(t.retire) - victims
        else:
            assert not t.retire and victims == 0


@SETTINGS
@given(st.integers(0, 500), st.integers(0, 500), st.integers(0, 20), st.integers(0, 40),
       st.floats(0, 1000))
def test_dampened_clamped_scaling_stays_in_bounds(
    desired: int, current: int, lo: int, span: int, since: float,
) -> None:
    cfg = ScalingConfig()
    hi = lo + span
    mem = ScaleMemory(last_up_at=0.0)
    d = dampen(desired, current, mem, since, cfg)
    n = clamp(d.workers, lo, hi)
    assert lo <= n <= hi
    assert abs(d.workers - current) <= max(cfg.max_step_up, cfg.max_step_down)


@SETTINGS
@given(scenario())
def test_preferred_never_preempted_below_guarantee(s: tuple) -> None:
    jobs, cap, roles = s
    r = compute_targets(jobs, cap, roles, PolicyState(), 0.0,
                        PolicyConfig(scaling=FAST, min_share_diff=0.0))
    by_key = {j.key: j for j in jobs}
    main = [j for j in jobs if j.tier is not Tier.REVOCABLE]
    running = _role_use(main, {j.key: j.running for j in main})
    lost: dict[str, Resources] = {}
    preferred_hit = set()
    for p in r.preemptions:
        j = by_key[p.job]
        if j.tier is Tier.REVOCABLE:
            continue  # the revocable pool has no guarantees
        lost[p.role] = lost.get(p.role, Resources()) + j.worker_resources.scale(len(p.victims))
        if j.tier is Tier.PREFERRED:
            preferred_hit.add(p.role)
    for role in preferred_hit:
        assert roles[role].guarantee.fits(running[role] - lost[role])


@SETTINGS
@given(scenario(), st.integers(1, 5), st.lists(st.floats(1, 200), min_size=3, max_size=8))
def test_preemptions_never_exceed_budget(s: tuple, budget: int, steps: list[float]) -> None:
    jobs, cap, roles = s
    window = 300.0
    cfg = PolicyConfig(scaling=FAST, preemption_budget=budget, preemption_window_s=window,
                       min_share_diff=0.0)
    state, now = PolicyState(), 0.0
    log: list[tuple[float, str]] = []
    for dt in steps:
        r = compute_targets(jobs, cap, roles, state, now, cfg, revocable_capacity=cap)
        log.extend((now, p.role) for p in r.preemptions for _ in p.victims)
        state, now = r.state, now + dt
    for t0, role in log:
        in_window = [t for t, rl in log if rl == role and t0 - window < t <= t0]
        assert len(in_window) <= budget


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 4), st.integers(0, 5), st.sampled_from([1.0, 2.0]))
def test_equal_weights_shares_converge(n_roles: int, size: int, first: int, cpus: float) -> None:
    """Start with one role holding everything; within a few passes all roles are even."""
    cap = Resources(cpus=48, mem=48 * 1024)
    unit = Resources(cpus=cpus, mem=1024)
    cfg = PolicyConfig(scaling=FAST, preemption_budget=10_000, min_share_diff=0.0)
    running = {f"r{i}/e/j": 0 for i in range(n_roles)}
    hog = f"r{first % n_roles}/e/j"
    running[hog] = int(48 // cpus)
    state = PolicyState()
    for step in range(4):
        jobs = [JobDemand(k, k.split("/")[0], unit, max_workers=100, backlog=1e9,
                          throughput_per_worker=1.0,
                          workers=tuple(WorkerState(f"{k}-{i}", i) for i in range(n)))
                for k, n in running.items()]
        r = compute_targets(jobs, cap, {}, state, float(step), cfg)
        state = r.state
        # The shell applies the result: victims go, then targets fill free capacity.
        running = {k: t.workers for k, t in r.targets.items()}
    shares = [Resources(cpus=cpus * n, mem=1024 * n).dominant_share(cap) for n in running.values()]
    assert max(shares) - min(shares) <= unit.dominant_share(cap) + 1e-9


@SETTINGS
@given(st.dictionaries(st.sampled_from("abcdef"), st.tuples(units, st.integers(0, 80)),
                       min_size=1),
       st.integers(4, 100))
def test_allocation_fits_capacity_and_is_work_conserving(demands: dict, cpus: int) -> None:
    cap = Resources(cpus=cpus, mem=cpus * 1024)
    segs = {r: [Segment(f"{r}/e/j", u, n)] for r, (u, n) in demands.items()}
    out = allocate(segs, cap, {})
    total = Resources()
    for r, ra in out.items():
        total = total + ra.resources
        assert ra.granted[f"{r}/e/j"] <= demands[r][1]
    assert total.fits(cap)
    # Work-conserving: every role left short could not fit one more of its units.
    for r, ra in out.items():
        if ra.stopped_by is not None:
            assert not (total + demands[r][0]).fits(cap)
