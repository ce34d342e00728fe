"""What operators see of the core: figures for metrics, and the details the web UI shows.

Pure reads of ``CoreState`` through its public fields and indexes, each bounded by an
index rather than by the number of tasks: jobs (O(jobs)), the tally (O(distinct role,
tier, kind, life)), pending slots (O(pending), from the pending index), agents
(O(agents)). Only ``job_detail`` walks tasks, of one job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core import cost
from corral.core.job_state import public_state
from corral.core.model import TaskKind
from corral.core.slot_state import Life
from corral.core.state import CoreState, Job
from corral.core.views import WHY_BUDGET, WHY_MESOS, WHY_OFFERS, WHY_RECONCILING


def jobs_by_state(st: CoreState) -> Counter[tuple[str, str]]:
    """(role, public state) -> jobs."""
    out: Counter[tuple[str, str]] = Counter()
    for job in st.jobs.values():
        out[(job.spec.role, public_state(job.phase, job.master_running()).value)] += 1
    return out


def pending_by_why(st: CoreState) -> Counter[tuple[str, str]]:
    """(why code, veto check or "") -> pending slots. A slot with vetoes counts once
    under each check that ruled agents out."""
    out: Counter[tuple[str, str]] = Counter()
    s = st.session
    session_code = WHY_RECONCILING if s.gated else (
        WHY_MESOS if not s.subscribed and s.down_since is not None else None)
    for key in st.pending_jobs:
        job = st.jobs[key]
        for tk in job.pending:
            if job.cost.held:
                out[(WHY_BUDGET, "")] += 1
                continue
            if session_code is not None:
                out[(session_code, "")] += 1
                continue
            slot = job.slot_if(tk)
            why = slot.why if slot is not None else None
            if why is None:
                out[(WHY_OFFERS, "")] += 1
            elif not why.vetoes:
                out[(why.code, "")] += 1
            else:
                for v in why.vetoes:
                    out[(why.code, v.check)] += 1
    return out


@dataclass(frozen=True, slots=True)
class RoleFigures:
    """One role now: its workers, what its running tasks hold, the usage of its active
    jobs and of its finished jobs the core still holds."""

    role: str
    jobs_active: int = 0
    jobs_done: int = 0
    workers_desired: int = 0
    workers_running: int = 0
    allocation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cpus, mem...
    usage: Mapping[tuple[str, str], list[float]] = field(default_factory=dict)
    usage_done: Mapping[tuple[str, str], list[float]] = field(default_factory=dict)

    def usage_all(self) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        cost.add_usage(out, self.usage)
        cost.add_usage(out, self.usage_done)
        return out


@dataclass(slots=True)
class _Acc:
    jobs: int = 0
    done: int = 0
    desired: int = 0
    alloc: list[float] = field(default_factory=lambda: [0.0] * 4)
    usage: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    usage_done: dict[tuple[str, str], list[float]] = field(default_factory=dict)


def role_figures(st: CoreState, now: float) -> dict[str, RoleFigures]:
    """Per role: active jobs, desired and running workers, held resources, usage."""
    running: Counter[str] = Counter()
    for (role, _tier, kind, life), n in st.tally.items():
        if kind == TaskKind.WORKER.value and life in (Life.RUNNING.value,
                                                      Life.DRAINING.value):
            running[role] += n
    acc: dict[str, _Acc] = {}
    for job in st.jobs.values():
        r = acc.setdefault(job.spec.role, _Acc())
        if job.active():
            r.jobs += 1
            r.desired += job.desired
        elif job.phase.terminal:
            r.done += 1
        for i, x in enumerate(cost.running_resources(job)):
            r.alloc[i] += x
        cost.add_usage(r.usage if not job.phase.terminal else r.usage_done,
                       job.cost.totals(now))
    out: dict[str, RoleFigures] = {}
    for role in set(acc) | set(running):
        r = acc.get(role) or _Acc()
        out[role] = RoleFigures(role=role, jobs_active=r.jobs, jobs_done=r.done,
                                workers_desired=r.desired,
                                workers_running=running.get(role, 0),
                                allocation=(r.alloc[0], r.alloc[1], r.alloc[2], r.alloc[3]),
                                usage=r.usage, usage_done=r.usage_done)
    return out


def checkpoint_ages(st: CoreState, now: float) -> dict[str, float]:
    """Active jobs that ever checkpointed -> seconds since their latest checkpoint."""
    out: dict[str, float] = {}
    for job in st.jobs.values():
        at = job.cost.last_checkpoint
        if at is not None and job.active():
            out[job.key] = max(0.0, now - at)
    return out


@dataclass(frozen=True, slots=True)
class AgentFigures:
    agent_id: str
    hostname: str
    market: str
    attributes: Mapping[str, str]
    tasks: int
    held: tuple[float, float, float, float]       # cpus, mem, disk, gpus (non-revocable)
    revocable: tuple[float, float, float, float]
    lost: bool
    draining_at: float | None


def agents(st: CoreState, attribute: str, default_market: str) -> list[AgentFigures]:
    out = []
    for a in sorted(st.agents.values(), key=lambda a: a.agent_id):
        res, rev = a.held.pools()
        out.append(AgentFigures(
            agent_id=a.agent_id, hostname=a.hostname,
            market=a.attributes.get(attribute) or default_market,
            attributes=dict(a.attributes), tasks=len(a.tasks),
            held=(res.cpus, res.mem, res.disk, res.gpus),
            revocable=(rev.cpus, rev.mem, rev.disk, rev.gpus), lost=a.lost,
            draining_at=a.drain[0] if a.drain is not None else None))
    return out


@dataclass(frozen=True, slots=True)
class SlotDetail:
    """What the job page shows of a slot beyond its ``TaskView``."""

    slot: str
    market: str | None              # the current (or last) attempt's agent's market
    checkpoint_age: float | None    # seconds since the slot's latest checkpoint
    checkpoint_seq: int | None


def job_detail(st: CoreState, job: Job, attribute: str, default_market: str,
               now: float) -> list[SlotDetail]:
    out = []
    for slot in job.slots():
        att = slot.current or slot.last
        market = None
        if att is not None and att.agent_id:
            agent = st.agents.get(att.agent_id)
            market = (agent.attributes.get(attribute) if agent is not None else None) \
                or default_market
        ck = slot.checkpoint
        out.append(SlotDetail(slot.label, market,
                              max(0.0, now - ck[2]) if ck is not None else None,
                              ck[1] if ck is not None else None))
    return out
