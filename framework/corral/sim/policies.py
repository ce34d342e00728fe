"""The policies the simulator can run: Corral's, and three baselines for comparison.

* ``corral``: ``core.policy.compute_targets`` in full (load, weighted DRF with quotas and
  preemption, SLA, right-sizing) with spot-aware placement.
* ``drf``: Cook-like DRU fair share with preemption, no deadlines and no right-sizing,
  market-blind placement.
* ``adaptive``: Dask-like load-driven scaling per job, served first come first served,
  no fairness and no preemption.
* ``fifo``: static worker counts (the job's initial size), strict arrival order with
  head-of-line blocking, no scaling, no preemption.

Each policy is an object with ``decide(jobs, capacity, revocable, roles, now)`` returning
a ``PolicyResult``; baselines keep their own small state in the object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from corral.core.fairness import RolePolicy, vec
from corral.core.policy import (
    JobDemand,
    PolicyConfig,
    PolicyResult,
    PolicyState,
    Target,
    compute_targets,
)
from corral.core.policyfile import policy_config
from corral.core.resources import Resources
from corral.core.rightsizing import RightSizingConfig
from corral.core.scaling import (
    ScaleMemory,
    ScalingConfig,
    choose_retirees,
    clamp,
    dampen,
    load_workers,
    remember,
)

POLICIES = ("corral", "drf", "adaptive", "fifo")


@dataclass
class CorralPolicy:
    config: PolicyConfig
    spot_aware: bool = True
    name: str = "corral"
    state: PolicyState = field(default_factory=PolicyState)

    def decide(self, jobs: Sequence[JobDemand], capacity: Resources, revocable: Resources,
               roles: Mapping[str, RolePolicy], now: float) -> PolicyResult:
        r = compute_targets(jobs, capacity, roles, self.state, now, self.config, revocable)
        self.state = r.state
        return r


def _target(j: JobDemand, workers: int, reason: str, detail: str, retire: int,
            cap: Resources) -> Target:
    w, m = vec(j.worker_resources), vec(j.master_resources)
    share = max((w[i] * workers + m[i]) / c for i, c in enumerate(vec(cap)) if c > 0)
    return Target(j.key, workers, reason, detail, share, 0.0, None,
                  choose_retirees(j.workers, retire), j.worker_resources)


def _fits_after(free: list[float], need: Sequence[float]) -> bool:
    return all(f - n >= -1e-6 for f, n in zip(free, need, strict=True))


@dataclass
class FifoPolicy:
    """Static counts, strict arrival order: the first job that does not fit blocks the rest."""

    name: str = "fifo"
    spot_aware: bool = False
    admitted: set[str] = field(default_factory=set)

    def decide(self, jobs: Sequence[JobDemand], capacity: Resources, revocable: Resources,
               roles: Mapping[str, RolePolicy], now: float) -> PolicyResult:
        free = list(vec(capacity))
        targets: dict[str, Target] = {}
        order = sorted(jobs, key=lambda j: (j.submitted_at, j.key))
        blocked = False
        for j in order:
            n = clamp(j.initial_workers, j.min_workers, j.max_workers)
            need = [a * n + b for a, b in
                    zip(vec(j.worker_resources), vec(j.master_resources), strict=True)]
            if j.key not in self.admitted:
                if blocked or not _fits_after(free, need):
                    blocked = True
                    targets[j.key] = _target(j, 0, "fifo", "waiting in arrival order", 0,
                                             capacity)
                    continue
                self.admitted.add(j.key)
            free = [f - x for f, x in zip(free, need, strict=True)]
            targets[j.key] = _target(j, n, "fifo", "static size", 0, capacity)
        self.admitted &= {j.key for j in jobs}
        return PolicyResult(targets, (), PolicyState(), {})


@dataclass
class AdaptivePolicy:
    """Load-driven targets per job, granted greedily in arrival order (no fairness)."""

    scaling: ScalingConfig
    name: str = "adaptive"
    spot_aware: bool = False
    desired: dict[str, int] = field(default_factory=dict)
    memory: dict[str, ScaleMemory] = field(default_factory=dict)

    def decide(self, jobs: Sequence[JobDemand], capacity: Resources, revocable: Resources,
               roles: Mapping[str, RolePolicy], now: float) -> PolicyResult:
        free = list(vec(capacity))
        targets: dict[str, Target] = {}
        for j in sorted(jobs, key=lambda j: (j.submitted_at, j.key)):
            base = self.desired.get(j.key, j.running or j.initial_workers)
            raw = load_workers(j.backlog, j.throughput_per_worker, self.scaling.target_duration_s)
            want = base
            if raw is not None:
                want = dampen(raw, base, self.memory.get(j.key, ScaleMemory()), now,
                              self.scaling).workers
            want = clamp(want, j.min_workers, j.max_workers)
            self.memory[j.key] = remember(self.memory.get(j.key, ScaleMemory()), base, want, now)
            self.desired[j.key] = want
            w, m = vec(j.worker_resources), vec(j.master_resources)
            free = [f - x for f, x in zip(free, m, strict=True)]
            # Keep what runs (no preemption); grow only into what is still free.
            n = min(want, j.running)
            free = [f - x * n for f, x in zip(free, w, strict=True)]
            while n < want and _fits_after(free, w):
                free = [f - x for f, x in zip(free, w, strict=True)]
                n += 1
            targets[j.key] = _target(j, n, "load", f"load wants {raw}", j.running - n,
                                     capacity)
        live = {j.key for j in jobs}
        self.desired = {k: v for k, v in self.desired.items() if k in live}
        self.memory = {k: v for k, v in self.memory.items() if k in live}
        return PolicyResult(targets, (), PolicyState(), {})


def make_policy(name: str, target_duration_s: float, knobs: Mapping[str, float] | None = None
                ) -> CorralPolicy | FifoPolicy | AdaptivePolicy:
    """A fresh policy object by name (one of ``POLICIES``), with scenario ``knobs``."""
    cfg = policy_config(knobs, target_duration_s)
    scaling = cfg.scaling
    if name == "corral":
        return CorralPolicy(cfg)
    if name == "drf":
        return CorralPolicy(replace(cfg, sla_enabled=False,
                                    rightsizing=RightSizingConfig(enabled=False)),
                            spot_aware=False, name="drf")
    if name == "adaptive":
        return AdaptivePolicy(scaling)
    if name == "fifo":
        return FifoPolicy()
    raise ValueError(f"unknown policy {name!r} (expected one of: {', '.join(POLICIES)})")
