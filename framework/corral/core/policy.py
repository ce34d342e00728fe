"""The elastic worker policy: one pure function combining load, SLA, fairness and sizing.

``compute_targets`` takes every job's demand, the cluster capacity, the roles' policies,
the previous ``PolicyState`` and ``now``, and returns a ``Target`` per job (worker count,
the reason that bound it, its fair share, deadline risk, workers to retire gracefully,
the size of new workers), the preemptions to perform now, and the next ``PolicyState``.

Steps, each a named function below:

1. ``_desire``: load target (dampened, clamped to min/max) and deadline need per job.
2. ``_segments``: each role's demand as prioritised segments; deadline needs protected.
3. ``fairness.allocate``: weighted DRF with quotas, per pool (revocable jobs only use
   revocable capacity; everything else the non-revocable capacity).
4. ``_preempt``: if fair allocations cannot be met from free capacity, preempt over-share
   workers within each victim role's budget and above a minimum share difference.
5. ``_targets``: final counts, reasons, retirements and deadline risk.

Reasons (``Target.reason``): ``load``, ``deadline``, ``min``, ``max``, ``share``, ``quota``,
``hold`` (kept above fair share because a preemption was not allowed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from corral.core.fairness import (
    DEFAULT_ROLE,
    TIER_ORDER,
    Candidate,
    RoleAllocation,
    RolePolicy,
    Segment,
    Vec,
    allocate,
    choose_victims,
    to_res,
    vec,
)
from corral.core.model import JobSpec, Tier
from corral.core.resources import Resources
from corral.core.rightsizing import RightSizingConfig, rightsize
from corral.core.scaling import (
    ScaleMemory,
    ScalingConfig,
    WorkerState,
    choose_retirees,
    clamp,
    dampen,
    load_workers,
    remember,
)
from corral.core.sla import SlaConfig, miss_reason, sla_need

ZERO = Resources()
_NO_MEMORY = ScaleMemory()


@dataclass(frozen=True, slots=True)
class JobDemand:
    """Everything the policy knows about one job at this pass.

    ``workers``: the running workers (any sequence: the policy reads it only for the
    jobs it shrinks or preempts, so a caller may compute it on first use);
    ``running_count``: how many run, if known without ``workers`` (-1: its length).
    ``backlog``/``throughput_per_worker``: as reported
    by the job (throughput 0 means not measured yet). ``deadline``: absolute time.
    ``remaining_work``: work left until done (defaults to the backlog).
    ``measured_per_worker``: measured usage per worker (the right-sizing percentile of
    the executors' samples); ``peak_per_worker``: the most any worker was seen to use;
    ``running_resources``: what a running worker holds on average (None: the reservation).
    ``wanted_workers``: the workers the job's own framework asks for (a Dask scheduler's
    adaptive target, ``core.workload``); when set it replaces the backlog/throughput
    estimate as the load target, and ``load_detail`` says why in the target's reason.
    """

    key: str
    role: str
    worker_resources: Resources
    tier: Tier = Tier.PREFERRED
    priority: int = 0
    min_workers: int = 0
    max_workers: int = 1
    initial_workers: int = 1
    master_resources: Resources = ZERO
    workers: Sequence[WorkerState] = ()
    running_count: int = -1
    backlog: float = 0.0
    throughput_per_worker: float = 0.0
    deadline: float | None = None
    remaining_work: float | None = None
    measured_per_worker: Resources | None = None
    peak_per_worker: Resources | None = None
    running_resources: Resources | None = None
    submitted_at: float = 0.0
    wanted_workers: int | None = None
    load_detail: str = ""

    @property
    def held_per_worker(self) -> Resources:
        """What one running worker holds (right-sized ones hold less than reserved)."""
        return self.running_resources or self.worker_resources

    @property
    def running(self) -> int:
        return self.running_count if self.running_count >= 0 else len(self.workers)

    @classmethod
    def from_spec(cls, spec: JobSpec, submitted_at: float, **observed: object) -> JobDemand:
        """A demand from a submitted spec plus observed fields (workers, backlog, ...)."""
        deadline = (submitted_at + spec.deadline_seconds
                    if spec.deadline_seconds is not None else None)
        return cls(
            key=spec.key, role=spec.role, worker_resources=spec.workers.template.resources,
            tier=spec.tier, priority=spec.priority, min_workers=spec.workers.min,
            max_workers=spec.workers.max, initial_workers=spec.workers.initial,
            master_resources=spec.master.resources, deadline=deadline,
            submitted_at=submitted_at, **observed,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    scaling: ScalingConfig = ScalingConfig()
    sla: SlaConfig = SlaConfig()
    rightsizing: RightSizingConfig = RightSizingConfig()
    sla_enabled: bool = True
    preemption_enabled: bool = True
    preemption_budget: int = 20  # preemptions per victim role per window
    preemption_window_s: float = 3600.0
    min_share_diff: float = 0.05  # weighted dominant share gap before preempting
    prefer_spot: bool = True  # workers go to spot agents first (``elastic.SPOT``)


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy carries between passes (persisted by the shell if it wishes)."""

    desired: Mapping[str, int] = field(default_factory=dict)
    memory: Mapping[str, ScaleMemory] = field(default_factory=dict)
    preemptions: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    job: str
    workers: int
    reason: str
    detail: str
    fair_share: float  # the job's dominant share of its pool at the target
    role_share: float  # the role's weighted dominant share of its fair allocation
    deadline_risk: str | None = None
    retire: tuple[str, ...] = ()
    worker_resources: Resources = ZERO  # size for new workers (right-sized)


@dataclass(frozen=True, slots=True)
class Preemption:
    job: str
    role: str
    victims: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class PolicyResult:
    targets: Mapping[str, Target]
    preemptions: tuple[Preemption, ...]
    state: PolicyState
    role_shares: Mapping[str, float]


@dataclass(slots=True)
class _Desire:
    """Per-job working values of one pass (mutable scratch, never returned)."""

    job: JobDemand
    load: int  # dampened, clamped load target
    demand: int  # what the job asks fairness for
    reason: str
    detail: str
    need: int | None = None  # deadline need
    need_risk: str | None = None
    base: int = 0
    new_size: Resources = ZERO  # right-sized reservation for workers not yet running
    running: int = 0
    has_master: bool = False
    emitted: int = 0  # worker units already put in segments this pass


def compute_targets(
    jobs: Sequence[JobDemand], capacity: Resources, roles: Mapping[str, RolePolicy],
    state: PolicyState, now: float, config: PolicyConfig = PolicyConfig(),
    revocable_capacity: Resources = ZERO,
) -> PolicyResult:
    """One full policy pass. Pure: same inputs, same result."""
    desires = [_desire(j, state, now, config) for j in jobs]
    pools = {
        "main": ([d for d in desires if d.job.tier is not Tier.REVOCABLE], capacity),
        "revocable": ([d for d in desires if d.job.tier is Tier.REVOCABLE], revocable_capacity),
    }
    window = _prune_window(state.preemptions, now, config.preemption_window_s)
    allocations: dict[str, dict[str, RoleAllocation]] = {}
    preemptions: list[Preemption] = []
    victims_by_job: dict[str, set[str]] = {}
    for pool in ("revocable", "main"):  # revocable first: the cheapest work to lose
        ds, cap = pools[pool]
        alloc = allocate(_segments(ds), cap, roles, DEFAULT_ROLE)
        allocations[pool] = alloc
        if config.preemption_enabled:
            pre = _preempt(ds, alloc, cap, roles, window, now, config)
            for p in pre:
                victims_by_job.setdefault(p.job, set()).update(p.victims)
            preemptions.extend(pre)
    targets: dict[str, Target] = {}
    role_shares: dict[str, float] = {}
    for pool, (ds, cap) in pools.items():
        capv = vec(cap)
        room: dict[str, list[float] | None] = {}
        for role, ra in allocations[pool].items():
            role_shares[role] = max(role_shares.get(role, 0.0), ra.share)
            limit = roles.get(role, DEFAULT_ROLE).limit
            room[role] = (None if limit is None else
                          [a - b for a, b in zip(vec(limit), vec(ra.resources), strict=True)])
        for d in ds:
            targets[d.job.key] = _target(d, allocations[pool][d.job.role], capv,
                                         victims_by_job.get(d.job.key, set()), now, config,
                                         roles, room[d.job.role])
    new_state = PolicyState(
        desired={d.job.key: d.load for d in desires},
        memory={d.job.key: remember(state.memory.get(d.job.key, _NO_MEMORY), d.base,
                                    d.load, now) for d in desires},
        preemptions=window,
    )
    return PolicyResult(targets, tuple(preemptions), new_state, role_shares)


# ---------------------------------------------------------------- step 1: desire

def _desire(j: JobDemand, state: PolicyState, now: float, cfg: PolicyConfig) -> _Desire:
    lo, hi = j.min_workers, max(j.min_workers, j.max_workers)
    # Without memory (new job, or a new leader) start from what runs, else the initial size.
    fallback = j.running if j.running > 0 else j.initial_workers
    base = state.desired.get(j.key, clamp(fallback, lo, hi))
    raw, said = _load_target(j, cfg)
    if raw is None:
        wanted = base
        note = "no load reported" if math.isnan(j.backlog) else "throughput not measured yet"
    else:
        damp = dampen(raw, base, state.memory.get(j.key, _NO_MEMORY), now, cfg.scaling)
        wanted, note = damp.workers, (f"{said}, {damp.note}" if damp.note else said)
    load = clamp(wanted, lo, hi)
    if raw is not None and raw > hi and load == hi:
        reason, detail = "max", f"{note}; job maximum {hi}"
    elif load > wanted:
        reason, detail = "min", f"{note}; job minimum {lo}"
    else:
        reason, detail = "load", note
    d = _Desire(j, load, load, reason, detail, base=base,
                new_size=rightsize(j.worker_resources, j.measured_per_worker, cfg.rightsizing,
                                   j.peak_per_worker),
                running=j.running, has_master=not j.master_resources.is_empty())
    if cfg.sla_enabled and j.deadline is not None:
        remaining = j.remaining_work if j.remaining_work is not None else j.backlog
        need = sla_need(remaining, j.throughput_per_worker, j.deadline, now, hi, cfg.sla)
        d.need, d.need_risk = need.workers, need.risk
        if need.workers is not None and need.workers > d.demand:
            d.demand = clamp(need.workers, lo, hi)
            d.reason = "deadline"
            d.detail = f"needs {need.workers} to finish by the deadline; {note}"
    return d


def _load_target(j: JobDemand, cfg: PolicyConfig) -> tuple[int | None, str]:
    """Workers the job's load asks for, and the words for it: the framework's own count
    when it reports one, else backlog over measured throughput."""
    if j.wanted_workers is not None:
        return j.wanted_workers, j.load_detail or f"job wants {j.wanted_workers}"
    raw = load_workers(j.backlog, j.throughput_per_worker, cfg.scaling.target_duration_s)
    return raw, f"load wants {raw}"


# ---------------------------------------------------------------- step 2: segments

def _order(d: _Desire) -> tuple[int, int, float, str]:
    # Preferred before preemptible at equal priority, so the preemptible job is the one
    # left over its fair allocation and therefore the one preempted.
    j = d.job
    return (-j.priority, -TIER_ORDER[j.tier], j.submitted_at, j.key)


def _segments(desires: Sequence[_Desire]) -> dict[str, list[Segment]]:
    """Each role's demand in priority order: deadline needs (protected), then every job's
    master and minimum, then per priority level the running workers, then new ones."""
    by_role: dict[str, list[_Desire]] = {}
    for d in desires:
        d.emitted = 0
        by_role.setdefault(d.job.role, []).append(d)
    out: dict[str, list[Segment]] = {}
    for role, ds in by_role.items():
        ds.sort(key=_order)
        segs: list[Segment] = []
        sla = [d for d in ds if d.need]
        if sla:
            sla.sort(key=lambda d: (d.job.deadline, d.job.key))
            for d in sla:
                if d.has_master:
                    segs.append(Segment(d.job.key, d.job.master_resources, 1, True))
                _add_workers(segs, d, min(d.need or 0, d.demand), True)
        for d in ds:
            if d.need:
                continue
            if d.has_master:
                segs.append(Segment(d.job.key, d.job.master_resources, 1, False))
            _add_workers(segs, d, min(d.job.min_workers, d.demand), False)
        # At each priority level, workers that already run come before new ones, so
        # equal-priority jobs keep what they have instead of one growing by preempting
        # another (churn that loses work for nothing).
        i, n = 0, len(ds)
        while i < n:
            prio, k = ds[i].job.priority, i
            while k < n and ds[k].job.priority == prio:
                k += 1
            level = ds[i:k]
            for d in level:
                _add_workers(segs, d, min(d.demand, d.running) - d.emitted, False)
            for d in level:
                _add_workers(segs, d, d.demand - d.emitted, False)
            i = k
        out[role] = segs
    return out


def _add_workers(segs: list[Segment], d: _Desire, n: int, protected: bool) -> None:
    """Append ``n`` more worker units of ``d``: running ones at their reservation, new
    ones at the right-sized reservation they will be launched with."""
    if n <= 0:
        return
    done = d.emitted
    d.emitted = done + n
    old = d.running - done
    if old >= n:
        segs.append(Segment(d.job.key, d.job.held_per_worker, n, protected))
        return
    if old > 0:
        segs.append(Segment(d.job.key, d.job.held_per_worker, old, protected))
    else:
        old = 0
    segs.append(Segment(d.job.key, d.new_size, n - old, protected))


def _granted_workers(d: _Desire, ra: RoleAllocation) -> int:
    g = ra.granted.get(d.job.key, 0)
    return max(0, g - (0 if d.job.master_resources.is_empty() else 1))


# ---------------------------------------------------------------- step 4: preemption

def _prune_window(
    log: Mapping[str, tuple[float, ...]], now: float, window_s: float,
) -> dict[str, tuple[float, ...]]:
    out = {}
    for role, times in log.items():
        kept = tuple(t for t in times if t > now - window_s)
        if kept:
            out[role] = kept
    return out


def _preempt(
    ds: Sequence[_Desire], alloc: Mapping[str, RoleAllocation], cap: Resources,
    roles: Mapping[str, RolePolicy], window: dict[str, tuple[float, ...]], now: float,
    cfg: PolicyConfig,
) -> list[Preemption]:
    """Preempt over-share workers when starved roles cannot be served from free capacity.

    Mutates ``window`` (this pass's copy) with the preemptions it decides.
    """
    running: dict[str, list[float]] = {}
    for d in ds:
        j = d.job
        r = running.setdefault(j.role, [0.0, 0.0, 0.0, 0.0])
        w, m, n = vec(j.held_per_worker), vec(j.master_resources), j.running
        for i in range(4):  # tuples, not Resources: this runs for every job every pass
            r[i] += w[i] * n + m[i]
    capv = vec(cap)
    used = [sum(r[i] for r in running.values()) for i in range(4)]
    deficit = [0.0, 0.0, 0.0, 0.0]
    starved_shares = []
    for role, ra in alloc.items():
        fair, cur = vec(ra.resources), running.get(role, [0.0] * 4)
        gap = [max(0.0, f - c) for f, c in zip(fair, cur, strict=True)]
        if any(g > 1e-6 for g in gap):
            starved_shares.append(_wshare(cur, capv, roles.get(role, DEFAULT_ROLE)))
            deficit = [a + b for a, b in zip(deficit, gap, strict=True)]
    need = [max(0.0, n - (c - u)) for n, c, u in zip(deficit, capv, used, strict=True)]
    if not starved_shares or all(x <= 1e-6 for x in need):
        return []
    starved = min(starved_shares)
    over: dict[str, list[_Desire]] = {}
    for d in ds:
        if d.job.running > _granted_workers(d, alloc[d.job.role]):
            over.setdefault(d.job.role, []).append(d)
    order = sorted(over, key=lambda r: (-_wshare(running[r], capv, roles.get(r, DEFAULT_ROLE)),
                                        r))
    out: list[Preemption] = []
    for role in order:
        pol = roles.get(role, DEFAULT_ROLE)
        if _wshare(running[role], capv, pol) - starved < cfg.min_share_diff:
            continue
        left = cfg.preemption_budget - len(window.get(role, ()))
        if left <= 0:
            continue
        cands: list[Candidate] = []
        per_job: dict[str, int] = {}
        for d in over[role]:
            j = d.job
            # Only workers above what the job would keep on load alone are fair game;
            # load-driven excess is retired gracefully instead.
            per_job[j.key] = min(j.running, d.demand) - _granted_workers(d, alloc[role])
            cands.extend(Candidate(w.task_id, j.key, role, j.tier, j.held_per_worker,
                                   w.checkpoint_age_s, w.index) for w in j.workers)
        victims = choose_victims(cands, to_res(need), to_res(running[role]), pol.guarantee,
                                 left, per_job)
        if not victims:
            continue
        window[role] = window.get(role, ()) + (now,) * len(victims)
        by_job: dict[str, list[str]] = {}
        for v in victims:
            by_job.setdefault(v.job, []).append(v.task_id)
            need = [max(0.0, a - b) for a, b in zip(need, vec(v.resources), strict=True)]
        for job, ids in sorted(by_job.items()):
            out.append(Preemption(job, role, tuple(ids),
                                  f"role {role} above its fair share; starved roles waiting"))
        if all(x <= 1e-6 for x in need):
            break
    return out


def _wshare(v: Sequence[float], cap: Sequence[float], pol: RolePolicy) -> float:
    s = 0.0
    for x, c in zip(v, cap, strict=True):
        if c > 0:
            s = max(s, x / c)
    return s / (pol.weight if pol.weight > 0 else 1.0)


# ---------------------------------------------------------------- step 5: targets

def _target(
    d: _Desire, ra: RoleAllocation, cap: Vec, victims: set[str], now: float,
    cfg: PolicyConfig, roles: Mapping[str, RolePolicy], room: list[float] | None,
) -> Target:
    """The job's final target. ``room`` (mutated) is what its role may still hold under
    its hard limit; None when the role has no limit."""
    j = d.job
    granted = _granted_workers(d, ra)
    reason, detail = d.reason, d.detail
    retire: tuple[str, ...] = ()
    workers = granted
    if granted < d.demand:
        why = ra.stopped_by or "share"
        reason = why
        limit = roles.get(j.role, DEFAULT_ROLE).limit
        detail = (f"granted {granted} of {d.demand} wanted: role {j.role} "
                  + (f"at its limit {_fmt(limit)}" if why == "quota" else "at its fair share"))
    running = d.running
    if running > granted:
        load_excess = max(0, running - d.demand)
        share_excess = running - load_excess - granted
        kept = max(0, share_excess - len(victims))
        if kept and room is not None:
            # A hard limit is never exceeded: over-limit workers retire like load excess.
            fit = _units_in(room, vec(j.held_per_worker), kept)
            for i, x in enumerate(vec(j.held_per_worker)):
                room[i] -= x * fit
            load_excess += kept - fit
            kept = fit
        if kept:
            reason = "hold"
            detail += f"; {kept} over-share workers kept (preemption not allowed now)"
        remaining = [w for w in j.workers if w.task_id not in victims]
        retire = choose_retirees(remaining, load_excess)
        workers = granted + kept
    risk = d.need_risk
    if risk is None and d.need is not None and j.deadline is not None:
        remaining_work = j.remaining_work if j.remaining_work is not None else j.backlog
        risk = miss_reason(remaining_work, j.throughput_per_worker, workers, d.need,
                           j.deadline, now, ra.stopped_by or "capacity")
    return Target(j.key, workers, reason, detail,
                  _job_share(j.worker_resources, j.master_resources, workers, cap), ra.share,
                  risk, retire, d.new_size)


def _job_share(w: Resources, m: Resources, n: int, cap: Vec) -> float:
    """Dominant share of ``n`` workers of size ``w`` plus a master ``m``, inline because
    it runs for every job every pass."""
    s = 0.0
    for x, c in ((w.cpus * n + m.cpus, cap[0]), (w.mem * n + m.mem, cap[1]),
                 (w.disk * n + m.disk, cap[2]), (w.gpus * n + m.gpus, cap[3])):
        if c > 0 and x / c > s:
            s = x / c
    return s


def _units_in(room: Sequence[float], unit: Sequence[float], most: int) -> int:
    n = most
    for r, u in zip(room, unit, strict=True):
        if u > 0:
            n = min(n, max(0, int((r + 1e-6) // u)))
    return n


def _fmt(r: Resources | None) -> str:
    if r is None:
        return "none"
    return ", ".join(f"{k}={v:g}" for k, v in r.as_dict().items() if v)
