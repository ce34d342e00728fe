"""The policies the simulator compares: Corral's and four baselines, all plugged into the
same scheduler core through ``core.elastic.PolicyHooks``.

Every policy runs on the same core (the same placement, lifecycle, spot notices, spare
workers and reconciliation) and the same fake Mesos; they differ only in what the hooks
answer: the jobs' targets (``step``), the order pending jobs are placed in (``order``) and
agent attributes a job's tasks must have (``constraints``).

* ``corral``: ``core.elastic.Elastic`` as ``corral scheduler`` runs it (load, deadlines,
  weighted DRF across roles with preemption by least work lost, right-sizing).
* ``fifo``: first come, first served with backfill: static sizes; pending jobs are
  placed in submission order, a later job taking what an earlier one cannot use.

Static sizes (``fifo``, ``drf``, ``uniform-progress``): every job runs at the most workers
it asks for (``workers.max``). Without elasticity that is what a user must ask for to get
through the job's busiest phase and meet its deadline; its starting size (``initial``)
would leave most of the cluster idle in these scenarios.
* ``drf``: Mesos' default allocator across roles (as if each role were a Mesos role with
  its own framework): static sizes, no elasticity, no preemption; pending jobs are placed
  lowest role dominant share first (weighted), progressively: each job's pending tasks
  raise its role's share before the next job is ordered. Mesos offers one agent at a time
  to the lowest-share role; ordering a whole offer round at once is the approximation.
* ``dask-adaptive``: Dask's ``Adaptive`` per job: ``target = ceil(backlog work /
  target_duration)`` (its ``adaptive_target``: queued occupancy over the target duration),
  within the job's bounds, up at once, down only after ``wait_count`` consecutive lower
  recommendations; no cross-job fairness (each job's cluster asks on its own, placed first
  come first served), no deadlines, no preemption.
* ``uniform-progress``: "Can't Be Late" (Wu et al., NSDI'24) for deadline jobs on spot:
  static sizes; a deadline job runs on spot agents while its progress is at or ahead of a
  uniform schedule to its deadline (progress = elapsed / deadline), and switches to
  on-demand agents when it falls behind or when the time left no longer covers its
  remaining work plus a restart (the paper's safety net): its spot workers are retired
  (as many per pass as its minimum allows) and relaunched on on-demand; back ahead, new
  workers go to spot again (running ones stay). Jobs without a deadline run anywhere
  (the core's default spread).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from corral.core.elastic import MANUAL_REASON, Decision, Elastic, PolicyBase, measured_rate
from corral.core.fairness import RolePolicy, vec
from corral.core.model import Constraints, TaskKind
from corral.core.policyfile import policy_config
from corral.core.scaling import clamp, load_workers

if TYPE_CHECKING:
    from corral.core.elastic import PolicyHooks
    from corral.core.state import CoreState, Job
    from corral.sim.scenario import Scenario

POLICIES = ("corral", "fifo", "drf", "dask-adaptive", "uniform-progress")


def _by_submission(st: CoreState, keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: st.jobs[k].seq)


def _workers(job: Job) -> int:
    """The job's workers Corral counts as running or starting (not being stopped)."""
    return sum(1 for s in job.workers.values()
               if s.current is not None and s.current.live and s.current.life.active)


STATIC_REASON = "static: the most workers the job asks for"


def static_sizes(st: CoreState) -> list[Decision]:
    """Every job at its ``workers.max``: without elasticity a user asks for the workers
    the job needs at its busiest (and its deadline), not for a starting size."""
    return [Decision(j.key, j.spec.workers.max, STATIC_REASON) for j in st.active_jobs()
            if j.target_reason not in (STATIC_REASON, MANUAL_REASON)]


@dataclass(slots=True)
class Fifo(PolicyBase):
    """Static sizes, submission order with backfill."""

    name: str = "fifo"

    def order(self, st: CoreState, keys: list[str]) -> list[str]:
        return _by_submission(st, keys)

    def step(self, st: CoreState, now: float) -> list[Decision]:
        return static_sizes(st)


@dataclass(slots=True)
class Drf(PolicyBase):
    """Static sizes, lowest weighted role dominant share placed first."""

    name: str = "drf"
    roles: Mapping[str, RolePolicy] = field(default_factory=dict)

    def step(self, st: CoreState, now: float) -> list[Decision]:
        return static_sizes(st)

    def order(self, st: CoreState, keys: list[str]) -> list[str]:
        total, _ = self.capacity(st)
        cap = vec(total)
        if not any(cap):
            return _by_submission(st, keys)

        def share(v: list[float], role: str) -> float:
            w = self.roles[role].weight if role in self.roles else 1.0
            return max((x / c for x, c in zip(v, cap, strict=True) if c > 0),
                       default=0.0) / (w or 1.0)

        held: dict[str, list[float]] = {}
        for job in st.active_jobs():
            h = held.setdefault(job.spec.role, [0.0, 0.0, 0.0, 0.0])
            m = job.master.current
            master_live = m is not None and m.live
            n = len(job.live) - (1 if master_live else 0)
            for i, (a, b) in enumerate(zip(vec(job.spec.master.resources),
                                           vec(job.spec.workers.template.resources),
                                           strict=True)):
                h[i] += a * master_live + b * n
        queue: dict[str, list[str]] = {}
        for k in _by_submission(st, keys):
            queue.setdefault(st.jobs[k].spec.role, []).append(k)
        heap = [(share(held.get(r, [0.0] * 4), r), r) for r in sorted(queue)]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            _, role = heapq.heappop(heap)
            k = queue[role].pop(0)
            out.append(k)
            job = st.jobs[k]
            h = held.setdefault(role, [0.0, 0.0, 0.0, 0.0])
            for key in job.pending:
                for i, x in enumerate(vec(job.template(key).resources)):
                    h[i] += x
            if queue[role]:
                heapq.heappush(heap, (share(h, role), role))
        return out


@dataclass(slots=True)
class DaskAdaptive(PolicyBase):
    """Dask's adaptive target per job, first come first served."""

    name: str = "dask-adaptive"
    target_duration_s: float = 600.0
    interval: float = 5.0
    wait_count: int = 3
    smoothing: float = 0.5
    _below: dict[str, int] = field(default_factory=dict)
    _last: float | None = None

    def order(self, st: CoreState, keys: list[str]) -> list[str]:
        return _by_submission(st, keys)

    def step(self, st: CoreState, now: float) -> list[Decision]:
        if self._last is not None and now - self._last < self.interval:
            return []
        self._last = now
        out: list[Decision] = []
        for job in st.active_jobs():
            mem = measured_rate(job.policy, job.progress_total().done, now, self.smoothing) \
                if job.progress else job.policy
            n = _workers(job)
            per_worker = mem.rate_per_s / n if mem.rate_measured and n else 0.0
            p = job.progress_total()
            backlog = float(p.backlog or max(0, p.total - p.done)) if job.progress \
                else math.nan
            raw = load_workers(backlog, per_worker, self.target_duration_s)
            w = job.spec.workers
            current = job.desired
            target = current if raw is None else clamp(raw, w.min, w.max)
            if target < current:
                below = self._below.get(job.key, 0) + 1
                self._below[job.key] = below
                if below < self.wait_count:
                    target = current
                else:
                    self._below[job.key] = 0
            else:
                self._below[job.key] = 0
            pinned = job.target_reason == MANUAL_REASON
            out.append(Decision(job.key, None if pinned else target,
                                f"dask adaptive: load wants {raw}", memory=mem))
        return out


@dataclass(slots=True)
class UniformProgress(PolicyBase):
    """"Can't Be Late": deadline jobs on spot until they fall behind a uniform schedule."""

    name: str = "uniform-progress"
    interval: float = 5.0
    attribute: str = "market"
    spot: str = "spot"
    on_demand: str = "on-demand"
    restart_s: float = 60.0
    smoothing: float = 0.5
    _mode: dict[str, str] = field(default_factory=dict)
    _restore: dict[str, int] = field(default_factory=dict)
    _last: float | None = None

    def order(self, st: CoreState, keys: list[str]) -> list[str]:
        return _by_submission(st, keys)

    def constraints(self, st: CoreState, job: Job, kind: TaskKind) -> Constraints | None:
        if job.spec.deadline_seconds is None:
            return None
        mode = self._mode.get(job.key, self.spot)
        return replace(job.spec.constraints, attributes=((self.attribute, mode),))

    def _behind(self, job: Job, per_worker: float, now: float) -> bool:
        deadline_s = job.spec.deadline_seconds or 0.0
        if deadline_s <= 0:
            return False
        p = job.progress_total()
        elapsed = (now - job.submitted_at) / deadline_s
        # No report yet (the job has not run) is no progress at all.
        if (p.done / p.total if p.total > 0 else 0.0) < elapsed:
            return True
        if p.total <= 0:
            return False
        # The safety net: switch while on-demand can still finish the remaining work.
        left = max(0, p.total - p.done)
        n = max(1, job.spec.workers.initial)
        if per_worker <= 0:
            return False
        return job.submitted_at + deadline_s - now <= left / (per_worker * n) + self.restart_s

    def step(self, st: CoreState, now: float) -> list[Decision]:
        out = static_sizes(st)
        if self._last is not None and now - self._last < self.interval:
            return out
        self._last = now
        for job in st.active_jobs():
            if job.spec.deadline_seconds is None:
                continue
            mem = measured_rate(job.policy, job.progress_total().done, now, self.smoothing) \
                if job.progress else job.policy
            n = _workers(job)
            per_worker = mem.rate_per_s / n if mem.rate_measured and n else 0.0
            back = self._restore.pop(job.key, None)
            if back is not None:
                out.append(Decision(job.key, back, "uniform progress: relaunch on "
                                    f"{self._mode.get(job.key, self.spot)}", memory=mem))
                continue
            mode = self.on_demand if self._behind(job, per_worker, now) else self.spot
            self._mode[job.key] = mode
            if mode == self.on_demand:
                # Move the job's spot workers (as many as its minimum allows per pass).
                movers = tuple(sorted(
                    s.current.task_id for s in job.workers.values()
                    if s.current is not None and s.current.live and s.current.life.active
                    and st.agents.get(s.current.agent_id or "") is not None
                    and st.agents[s.current.agent_id or ""].attributes.get(self.attribute)
                    == self.spot))
                k = min(len(movers), job.desired - job.spec.workers.min)
                if k > 0:
                    self._restore[job.key] = job.spec.workers.max
                    out.append(Decision(job.key, job.desired - k,
                                        "uniform progress: behind schedule, moving to "
                                        "on-demand", retire=movers[:k], memory=mem))
                    continue
            out.append(Decision(job.key, memory=mem))
        return out


def make_policy(name: str, sc: Scenario) -> PolicyHooks:
    """A fresh policy object by name (one of ``POLICIES``), configured from ``sc``."""
    if name == "corral":
        return Elastic(roles=sc.roles, config=policy_config(sc.policy, sc.target_duration_s),
                       interval=sc.interval_s)
    if name == "fifo":
        return Fifo()
    if name == "drf":
        return Drf(roles=sc.roles)
    if name == "dask-adaptive":
        return DaskAdaptive(target_duration_s=sc.target_duration_s, interval=sc.interval_s)
    if name == "uniform-progress":
        return UniformProgress(interval=sc.interval_s)
    raise ValueError(f"unknown policy {name!r} (expected one of: {', '.join(POLICIES)})")
