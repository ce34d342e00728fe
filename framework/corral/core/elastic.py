"""Elastic targets in the running scheduler: the policy pass, fed from the core's state.

``core.policy.compute_targets`` is a pure function of job demands, capacity and role
policies. This module owns what the scheduler must remember to call it: the capacity
Corral can use (estimated per agent from offers plus what our own tasks hold there —
a framework never sees a Mesos cluster's total), each job's measured throughput (from
the progress its master reports through the SDK), and the policy's own state between
passes. Every ``interval`` seconds of ``now`` it runs one pass and applies the targets
through the core's target setter with a reason a user can read in ``corral status``:
what bound the target (load, deadline, share, quota, min, max) and
the job's fair share.

A job scaled by hand (``corral scale``) is pinned: the policy leaves its target alone.
The size a job is submitted with counts as its first scaling decision, so the policy's
cooldowns run from submission: a job is not shrunk within ``cooldown_down_s`` of being
submitted (nor grown within ``cooldown_up_s``), however small its backlog looks at first.
Like the scheduler it is deterministic: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from corral.core.fairness import RolePolicy
from corral.core.model import Offer
from corral.core.policy import JobDemand, PolicyConfig, PolicyState, compute_targets
from corral.core.resources import ZERO, Resources
from corral.core.scaling import ScaleMemory, WorkerState
from corral.core.workload import usable_load

if TYPE_CHECKING:
    from corral.core.state import CoreState, Job

MANUAL_REASON = "scaled by request"


def _at_least_zero(r: Resources) -> Resources:
    return Resources(max(r.cpus, 0.0), max(r.mem, 0.0), max(r.disk, 0.0), max(r.gpus, 0.0))


@dataclass(slots=True)
class _Rate:
    """Exponentially smoothed work units per second of one job."""

    t: float
    done: int
    per_second: float = 0.0
    measured: bool = False


@dataclass(slots=True)
class Elastic:
    """The policy loop's memory; call ``observe_offers`` and ``step`` from the core."""

    roles: Mapping[str, RolePolicy] = field(default_factory=dict)
    config: PolicyConfig = field(default_factory=PolicyConfig)
    interval: float = 5.0
    smoothing: float = 0.5
    state: PolicyState = field(default_factory=PolicyState)
    _offered: dict[str, tuple[Resources, Resources]] = field(default_factory=dict)
    _rates: dict[str, _Rate] = field(default_factory=dict)
    _last_pass: float | None = None
    last_shares: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------ observations

    def observe_offers(self, offers: Sequence[Offer]) -> None:
        """Remember what each agent offers now (non-revocable, revocable)."""
        by_agent: dict[str, tuple[Resources, Resources]] = {}
        for o in offers:
            res, rev = by_agent.get(o.agent_id, (ZERO, ZERO))
            by_agent[o.agent_id] = (res + o.resources, rev + o.revocable)
        self._offered.update(by_agent)

    def observe_launch(self, agent_id: str, taken: Resources, revocable: bool) -> None:
        """``taken`` of the agent's offer went to a task of ours: from now on it counts as
        held by that task, so it leaves the offered amount (counting it twice would make
        the cluster look bigger than it is until the agent's next offer)."""
        res, rev = self._offered.get(agent_id, (ZERO, ZERO))
        if revocable:
            rev = _at_least_zero(rev - taken)
        else:
            res = _at_least_zero(res - taken)
        self._offered[agent_id] = (res, rev)

    def capacity(self, st: CoreState) -> tuple[Resources, Resources]:
        """(non-revocable, revocable) capacity: last offers plus what our tasks hold on
        every agent not reported lost."""
        total, total_rev = ZERO, ZERO
        for agent_id in set(self._offered) | {a for a, ag in st.agents.items() if ag.tasks}:
            agent = st.agents.get(agent_id)
            if agent is not None and agent.lost:
                continue
            o_res, o_rev = self._offered.get(agent_id, (ZERO, ZERO))
            h_res, h_rev = agent.held.pools() if agent is not None else (ZERO, ZERO)
            total, total_rev = total + o_res + h_res, total_rev + o_rev + h_rev
        return total, total_rev

    def _throughput(self, key: str, done: int, workers: int, now: float) -> float:
        rate = self._rates.get(key)
        if rate is None or done < rate.done:
            self._rates[key] = _Rate(now, done)
            return 0.0
        dt = now - rate.t
        if dt > 0 and done > rate.done:
            sample = (done - rate.done) / dt
            rate.per_second = sample if not rate.measured else (
                self.smoothing * sample + (1 - self.smoothing) * rate.per_second)
            rate.measured = True
            rate.t, rate.done = now, done
        return rate.per_second / workers if rate.measured and workers > 0 else 0.0

    # ------------------------------------------------------------ the pass

    def _demand(self, job: Job, now: float) -> JobDemand:
        workers = []
        for index, slot in sorted(job.workers.items()):
            att = slot.current
            if att is None or not att.live:
                continue
            age = None if slot.checkpoint is None else max(0.0, now - slot.checkpoint[2])
            workers.append(WorkerState(att.task_id, index, checkpoint_age_s=age))
        progress = job.progress_total()
        throughput = self._throughput(job.key, progress.done, len(workers), now)
        # A job that never reported progress has an unknown load, not an empty one: NaN
        # keeps it at its current size instead of shrinking it to its minimum.
        backlog = float(progress.backlog or max(0, progress.total - progress.done)) \
            if job.progress else math.nan
        master = job.master.current
        load = usable_load(job.load, master.task_id if master else None, now)
        return JobDemand.from_spec(
            job.spec, job.submitted_at, workers=tuple(workers), backlog=backlog,
            throughput_per_worker=throughput,
            wanted_workers=load.workers if load else None,
            load_detail=load.detail if load else "",
        )

    def _seed_memory(self, jobs: Sequence[Job]) -> None:
        """Jobs the policy has not sized yet: their submission is their last change."""
        fresh = {j.key: ScaleMemory(last_up_at=j.submitted_at) for j in jobs
                 if j.key not in self.state.memory}
        if fresh:
            self.state = replace(self.state, memory={**self.state.memory, **fresh})

    def step(self, st: CoreState, now: float) -> list[tuple[str, int, str]]:
        """One policy pass if ``interval`` has passed: ``(job, workers, reason)`` for
        every job the policy sizes (the core applies them)."""
        if self._last_pass is not None and now - self._last_pass < self.interval:
            return []
        self._last_pass = now
        jobs = st.active_jobs()
        for key in [k for k in self._rates if k not in st.jobs]:
            del self._rates[key]
        capacity, revocable = self.capacity(st)
        if not jobs or capacity.is_empty():
            return []  # nothing to size, or no offer seen yet: keep today's targets
        demands = [self._demand(j, now) for j in jobs]
        self._seed_memory(jobs)
        result = compute_targets(demands, capacity, self.roles, self.state, now, self.config,
                                 revocable_capacity=revocable)
        self.state = result.state
        self.last_shares = dict(result.role_shares)
        out: list[tuple[str, int, str]] = []
        for job in jobs:
            target = result.targets.get(job.key)
            if target is None or job.target_reason == MANUAL_REASON:
                continue
            reason = f"{target.reason}: {target.detail}; fair share {target.fair_share:.0%}"
            if target.deadline_risk:
                reason += f"; deadline at risk: {target.deadline_risk}"
            out.append((job.key, target.workers, reason))
        return out
