"""The simulator's report: deterministic figures of one run, plus wall-clock timing apart.

``build_report`` returns a plain dict. Everything under it except the ``timing`` key is a
function of the scenario, policy and seed alone (same seed, byte-identical JSON); floats
are rounded so platform noise in the last bits cannot leak in. ``timing`` holds wall-clock
figures (time in the scheduler core, events per second) and is left out of JSON unless
asked for.

What the scheduler did is read from the scheduler's own state at the end (the workers its
policy preempted and retired): the report never recomputes a decision.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.sim.engine import Simulation

SERIES_POINTS = 60


def _r(x: float, nd: int = 6) -> float:
    return round(x, nd) if math.isfinite(x) else 0.0


def build_report(sim: Simulation) -> dict[str, Any]:
    sc, s = sim.sc, sim.stats
    arrived = [j for j in sim.jobs.values() if j.submitted]
    finished = [j for j in arrived if j.done_at is not None]
    jct = [j.done_at - j.arrival for j in finished if j.done_at is not None]
    with_deadline = [j for j in arrived if j.deadline is not None]
    met = sum(1 for j in with_deadline
              if j.done_at is not None and j.deadline is not None and j.done_at <= j.deadline)
    unresolved = sum(1 for j in with_deadline
                     if j.done_at is None and (j.deadline or 0) > sc.horizon_s)
    missed = len(with_deadline) - met - unresolved
    resolved = met + missed
    jains = [j for _, j in s.jain]
    step = max(1, len(s.jain) // SERIES_POINTS)
    cycles: dict[str, int | None] = {}
    for role, first in sorted(s.role_first_seen.items()):
        if first <= 0:
            continue  # only roles that arrive into a running cluster
        cycles[role] = s.role_cycles.get(role) if role in s.role_fair_at else None
    new_role_cycles = [c for c in cycles.values() if c is not None]
    hours = sc.horizon_s / 3600.0
    core_jobs = sim.sched.state.jobs.values()
    preempted = sum(j.preempted for j in core_jobs)
    retired = sum(j.retired for j in core_jobs)
    done = s_done(sim)
    report: dict[str, Any] = {
        "scenario": sc.name,
        "policy": sim.policy_name,
        "seed": sim.seed,
        "horizon_s": sc.horizon_s,
        "agents": sum(g.count for g in sc.agents),
        "roles": len(sc.roles),
        "ticks": s.ticks,
        "jobs": {
            "arrived": len(arrived),
            "finished": len(finished),
            "mean_completion_s": _r(sum(jct) / len(jct), 3) if jct else None,
        },
        "utilization": _r(s.cpu_seconds / s.capacity_seconds) if s.capacity_seconds else 0.0,
        "cost": {
            "total": _r(s.cost, 4),
            "all_on_demand": _r(s.on_demand_cost, 4),
            "ratio_to_on_demand": _r(s.cost / s.on_demand_cost) if s.on_demand_cost else None,
            "spot_cpu_fraction": _r(s.spot_cpu_seconds / s.cpu_seconds) if s.cpu_seconds
            else 0.0,
        },
        "fairness": {
            "jain_mean": _r(sum(jains) / len(jains)) if jains else None,
            "jain_min": _r(min(jains)) if jains else None,
            "cycles_to_fair_new_roles": cycles,
            "max_cycles_to_fair": max(new_role_cycles) if new_role_cycles else None,
            "series": [[_r(t, 3), _r(j)] for t, j in s.jain[::step]],
        },
        "deadlines": {
            "jobs": len(with_deadline),
            "met": met,
            "missed": missed,
            "unresolved": unresolved,
            "met_fraction": _r(met / resolved) if resolved else None,
        },
        "preemptions": {
            "count": preempted,
            "per_hour": _r(preempted / hours) if hours else 0.0,
        },
        "retired": retired,
        "spot": {
            "terminations": s.spot_terminations,
            "with_notice": s.noticed,
            "revocations": s.revocations,
        },
        "rightsizing": {
            "worker_launches": s.launched,
            "cpus_per_worker_vs_spec": _r(s.launched_cpus / s.spec_cpus) if s.spec_cpus
            else None,
        },
        "work": {
            "done": _r(done, 3),
            "lost": _r(s.work_lost, 3),
            "lost_fraction": _r(s.work_lost / (done + s.work_lost))
            if done + s.work_lost > 0 else 0.0,
        },
        "mesos": {
            "core_events": s.handled,
            "unacknowledged_updates": s.unacked,
        },
        "timing": {
            "core_seconds": s.core_seconds,
            "core_events_per_second": s.handled / s.core_seconds if s.core_seconds else None,
        },
    }
    return report


def s_done(sim: Simulation) -> float:
    """Work units done and kept (processed minus lost) over every job."""
    total = 0.0
    for j in sim.jobs.values():
        processed = j.done + (j.rate * (sim.now - j.mark) if j.rate > 0 else 0.0)
        total += min(j.work, processed - j.lost)
    return total
