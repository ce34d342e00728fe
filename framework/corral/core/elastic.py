"""The policy the scheduler core calls, and Corral's own: the elastic policy.

The core talks to one *policy object* through ``PolicyHooks``: it reports what offers
showed (``observe_offers``, ``observe_launch``) and what executors measured
(``observe_usage``), asks at every tick for ``Decision``s (``step``), and asks two
placement questions: in which order pending jobs are placed (``order``) and whether a
job's tasks must go on agents with particular attributes (``constraints``). The timers
handler applies the decisions through ``lifecycle.apply_decision``: the job's new target,
the workers to preempt or retire first, and the policy's new memory of the job. Placement
itself is always the core's (``core.placement``); a policy only orders and constrains it.
The simulator's baselines (``corral.sim.baselines``) are other implementations of the same
hooks.

``Elastic`` is Corral's policy. ``core.policy.compute_targets`` is a pure function of
job demands, capacity and role policies; this class owns what the scheduler must remember
to call it: the capacity Corral can use (estimated per agent from offers plus what our own
tasks hold there — a framework never sees a Mesos cluster's total), each job's measured
throughput (from the progress its master reports through the SDK), its workers' usage
samples (for right-sizing), and the preemption window. Every ``interval`` seconds of
``now`` it runs one pass. Per-job memory (cooldowns, the load target, the measured rate,
preemptions suffered, the right-sized worker reservation) lives in the job
(``Job.policy``, ``core.memory``) and is persisted with its intent, so it survives a
failover; the usage samples and the offered capacity are measured again by a new leader.

A job scaled by hand (``corral scale``) is pinned: the policy leaves its target alone.
The size a job is submitted with counts as its first scaling decision, so the policy's
cooldowns run from submission. Like the scheduler it is deterministic: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Protocol, overload

from corral.core import accounting as acct
from corral.core.fairness import RolePolicy
from corral.core.memory import PolicyMemory
from corral.core.model import Constraints, Offer, TaskKind, Tier
from corral.core.policy import (
    JobDemand,
    PolicyConfig,
    PolicyResult,
    PolicyState,
    compute_targets,
)
from corral.core.resources import ZERO, Resources
from corral.core.rightsizing import explain, percentile
from corral.core.scaling import ScaleMemory, WorkerState
from corral.core.workload import usable_load

if TYPE_CHECKING:
    from corral.core.state import Agent, Attempt, CoreState, Job

MANUAL_REASON = "scaled by request"
# The agent attribute that marks a spot machine (localmesos sets it on its spot agents;
# label real spot agents the same way for Corral to put workers there first).
SPOT = ("spot", "true")
# A measured rate that moved by more than this fraction since it was last persisted is
# persisted again (smaller moves are kept in memory only: no store write per pass).
RATE_PERSIST_CHANGE = 0.2
# What the policy remembers that a new leader must see: everything but the measured rate
# and the wording of the size's reason, which move at every pass (``Elastic._durable``).
_MOVING = frozenset({"rate_at", "rate_done", "rate_per_s", "rate_measured", "size_reason"})
_DURABLE_FIELDS = tuple(f.name for f in fields(PolicyMemory) if f.name not in _MOVING)
# Changed agents folded into the capacity estimate per step of a split pass, so the compute
# step meets only the changes of about one tick (after a failover every agent changed:
# 50,000 of them cost ~100 ms at once).
_FOLD_PER_STEP = 10_000


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy pass decided for one job.

    ``workers``: the new target (None: keep it). ``preempt``: workers (task ids) to stop
    now for other roles' fair share, with ``preempt_reason``; ``retire``: workers the
    policy would retire first when the target falls. ``memory``: the policy's new memory
    of the job (None: unchanged); ``durable``: it must be written with the job's intent.
    """

    job: str
    workers: int | None = None
    reason: str = ""
    preempt: tuple[str, ...] = ()
    preempt_reason: str = ""
    retire: tuple[str, ...] = ()
    memory: PolicyMemory | None = None
    durable: bool = False


@dataclass(slots=True)
class _Pass:
    """A policy pass under way: the jobs it sizes and what it has learned of them."""

    jobs: list[Job]
    next: int = 0                      # jobs gathered so far; once computed, decided
    memories: dict[str, PolicyMemory] = field(default_factory=dict)
    sizes: dict[str, tuple[Resources | None, Resources | None, int]] = field(
        default_factory=dict)
    demands: dict[str, JobDemand] = field(default_factory=dict)
    desired: dict[str, int] = field(default_factory=dict)
    scale: dict[str, ScaleMemory] = field(default_factory=dict)
    victims: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    result: PolicyResult | None = None


class PolicyHooks(Protocol):
    """The interface between the scheduler core and its policy object."""

    name: str
    last_shares: dict[str, float]   # each role's fair share after the latest pass

    def capacity(self, st: CoreState) -> tuple[Resources, Resources]: ...

    def observe_offers(self, offers: Sequence[Offer]) -> None: ...

    def observe_launch(self, agent_id: str, taken: Resources, revocable: bool) -> None: ...

    def observe_usage(self, att: Attempt, cpus: float, mem: float) -> None: ...

    def step(self, st: CoreState, now: float) -> list[Decision]: ...

    def order(self, st: CoreState, keys: list[str]) -> list[str]: ...

    def constraints(self, st: CoreState, job: Job, kind: TaskKind) -> Constraints | None: ...


class RunningWorkers(Sequence[WorkerState]):
    """A job's running workers as the policy sees them, built on first use: most passes
    never look at them one by one, and building them is O(workers)."""

    __slots__ = ("_items", "_job", "_now")

    def __init__(self, job: Job, now: float) -> None:
        self._job, self._now = job, now
        self._items: tuple[WorkerState, ...] | None = None

    def _all(self) -> tuple[WorkerState, ...]:
        if self._items is None:
            out = []
            for index, slot in sorted(self._job.workers.items()):
                att = slot.current
                if att is None or not att.live or not att.life.active:
                    continue  # nothing there, or being stopped (a kill sent)
                ckpt = slot.checkpoint[2] if slot.checkpoint else None
                out.append(WorkerState(att.task_id, index, checkpoint_age_s=acct.work_lost(
                    self._now, att.running_since, ckpt)))
            self._items = tuple(out)
        return self._items

    @overload
    def __getitem__(self, i: int) -> WorkerState: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[WorkerState]: ...

    def __getitem__(self, i: int | slice) -> WorkerState | Sequence[WorkerState]:
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[WorkerState]:
        return iter(self._all())


def _less(r: Resources, taken: Resources) -> Resources:
    """``r - taken``, never below zero (one value built, not two: runs per launch)."""
    return Resources(max(r.cpus - taken.cpus, 0.0), max(r.mem - taken.mem, 0.0),
                     max(r.disk - taken.disk, 0.0), max(r.gpus - taken.gpus, 0.0))


def _contribution(offered: tuple[Resources, Resources] | None,
                  agent: Agent | None) -> tuple[float, ...] | None:
    """One agent's part of the capacity (cpus, mem, disk, gpus; then revocable): what it
    offers plus what our tasks hold there; None if it is lost or has nothing."""
    if agent is not None and agent.lost:
        return None
    o, r = offered or (ZERO, ZERO)
    if agent is None:
        out = (o.cpus, o.mem, o.disk, o.gpus, r.cpus, r.mem, r.disk, r.gpus)
    else:
        # Spelled out: this runs for every changed agent (all of them after a failover).
        h = agent.held
        out = (o.cpus + (h.cpus if h.cpus > 0 else 0.0),
               o.mem + (h.mem if h.mem > 0 else 0.0),
               o.disk + (h.disk if h.disk > 0 else 0.0),
               o.gpus + (h.gpus if h.gpus > 0 else 0.0),
               r.cpus + (h.rcpus if h.rcpus > 0 else 0.0),
               r.mem + (h.rmem if h.rmem > 0 else 0.0),
               r.disk + (h.rdisk if h.rdisk > 0 else 0.0),
               r.gpus + (h.rgpus if h.rgpus > 0 else 0.0))
    return out if any(out) else None


@dataclass(slots=True)
class PolicyBase:
    """Defaults every policy shares: the capacity estimate from offers, no usage
    interest, the core's placement order and no extra constraints."""

    name: str = "base"
    last_shares: dict[str, float] = field(default_factory=dict)  # role -> fair share
    _offered: dict[str, tuple[Resources, Resources]] = field(default_factory=dict)
    # The capacity estimate, kept per agent and in total so a pass costs only the agents
    # that changed since the last one (offers, launches, held resources, lost flags).
    _contrib: dict[str, tuple[float, ...]] = field(default_factory=dict)
    _total: list[float] = field(default_factory=lambda: [0.0] * 8)
    _dirty: set[str] = field(default_factory=set)

    def observe_offers(self, offers: Sequence[Offer]) -> None:
        """Remember what each agent offers now (non-revocable, revocable)."""
        by_agent: dict[str, tuple[Resources, Resources]] = {}
        for o in offers:
            res, rev = by_agent.get(o.agent_id, (ZERO, ZERO))
            by_agent[o.agent_id] = (res + o.resources, rev + o.revocable)
        self._offered.update(by_agent)
        self._dirty.update(by_agent)

    def observe_launch(self, agent_id: str, taken: Resources, revocable: bool) -> None:
        """``taken`` of the agent's offer went to a task of ours: from now on it counts as
        held by that task, so it leaves the offered amount (counting it twice would make
        the cluster look bigger than it is until the agent's next offer)."""
        res, rev = self._offered.get(agent_id, (ZERO, ZERO))
        if revocable:
            rev = _less(rev, taken)
        else:
            res = _less(res, taken)
        self._offered[agent_id] = (res, rev)
        self._dirty.add(agent_id)

    def observe_usage(self, att: Attempt, cpus: float, mem: float) -> None:
        return None

    def capacity(self, st: CoreState) -> tuple[Resources, Resources]:
        """(non-revocable, revocable) capacity: last offers plus what our tasks hold on
        every agent not reported lost. Only agents that changed since the last call are
        looked at again (O(changes), not O(agents))."""
        self.fold_changes(st)
        t = [max(x, 0.0) for x in self._total]   # float residue of many adds never < 0
        return Resources(*t[:4]), Resources(*t[4:])

    def fold_changes(self, st: CoreState, limit: int | None = None) -> None:
        """Bring the capacity estimate up to date with the agents changed since (at most
        ``limit`` of them; the rest stay to be folded)."""
        dirty = self._dirty
        dirty |= st.take_touched_agents()
        n = len(dirty) if limit is None else min(limit, len(dirty))
        total = self._total
        contrib, offered, agents = self._contrib, self._offered, st.agents
        for _ in range(n):
            agent_id = dirty.pop()
            new = _contribution(offered.get(agent_id), agents.get(agent_id))
            old = contrib.pop(agent_id, None)
            if new is not None:
                contrib[agent_id] = new
                for i, x in enumerate(new):
                    total[i] += x
            if old is not None:
                for i, x in enumerate(old):
                    total[i] -= x

    def step(self, st: CoreState, now: float) -> list[Decision]:
        return []

    def order(self, st: CoreState, keys: list[str]) -> list[str]:
        return keys

    def constraints(self, st: CoreState, job: Job, kind: TaskKind) -> Constraints | None:
        return None


def measured_rate(m: PolicyMemory, done: int, now: float, smoothing: float) -> PolicyMemory:
    """``m`` with the job's rate updated from its progress count ``done`` at ``now``
    (exponentially smoothed units per second; measured again from a count that went
    back, e.g. after a new master)."""
    if m.rate_at is None or done < m.rate_done:
        return replace(m, rate_at=now, rate_done=done, rate_per_s=0.0, rate_measured=False)
    dt = now - m.rate_at
    if dt > 0 and done > m.rate_done:
        sample = (done - m.rate_done) / dt
        per_s = sample if not m.rate_measured else (
            smoothing * sample + (1 - smoothing) * m.rate_per_s)
        return replace(m, rate_at=now, rate_done=done, rate_per_s=per_s, rate_measured=True)
    return m


def at_risk(att: Attempt, now: float) -> float:
    """Seconds of work stopping ``att`` now would lose: since its slot's last checkpoint
    or its start, whichever is later (0 while it is not running yet)."""
    slot = att.job.slot_if(att.key)
    ckpt = slot.checkpoint[2] if slot is not None and slot.checkpoint else None
    return acct.work_lost(now, att.running_since, ckpt)


@dataclass(slots=True)
class Elastic(PolicyBase):
    """Corral's policy: load, deadlines, weighted fairness with preemption, right-sizing."""

    name: str = "corral"
    roles: Mapping[str, RolePolicy] = field(default_factory=dict)
    config: PolicyConfig = field(default_factory=PolicyConfig)
    interval: float = 5.0
    smoothing: float = 0.5
    window: dict[str, tuple[float, ...]] = field(default_factory=dict)  # role -> times
    _usage: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    _spot: set[str] = field(default_factory=set)          # agents offered as spot
    _spot_room: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _at_risk: set[str] = field(default_factory=set)       # deadline jobs at risk
    _persisted_rate: dict[str, float] = field(default_factory=dict)
    # A pass over more active jobs than this is split across ticks (``step``).
    jobs_per_step: int = 1000
    _seeded: bool = False
    _last_pass: float | None = None
    _pass: _Pass | None = None

    # ------------------------------------------------------------ observations

    def observe_offers(self, offers: Sequence[Offer]) -> None:
        """As every policy, and: which agents are spot, and the room they offer."""
        if not self.config.prefer_spot:
            PolicyBase.observe_offers(self, offers)
            return
        for o in offers:
            if SPOT in o.attributes:
                self._spot.add(o.agent_id)
        before = {a: self._offered.get(a) for a in {o.agent_id for o in offers}
                  if a in self._spot}
        PolicyBase.observe_offers(self, offers)
        self._spot_moved(before)

    def observe_launch(self, agent_id: str, taken: Resources, revocable: bool) -> None:
        before = {agent_id: self._offered.get(agent_id)} if agent_id in self._spot else {}
        PolicyBase.observe_launch(self, agent_id, taken, revocable)
        self._spot_moved(before)

    def _spot_moved(self, before: Mapping[str, tuple[Resources, Resources] | None],
                    drop: bool = False) -> None:
        """Keep ``_spot_room`` (the room spot agents offered) in step with ``_offered``:
        ``before`` holds the entries as they were; ``drop``: they go away."""
        for agent_id, old in before.items():
            new = None if drop else self._offered.get(agent_id)
            for r, sign in ((old, -1.0), (new, 1.0)):
                if r is not None:
                    self._spot_room[0] += sign * r[0].cpus
                    self._spot_room[1] += sign * r[0].mem

    def _forget_lost(self, st: CoreState) -> None:
        """Agents Mesos reported lost no longer offer room (a replacement has a new id)."""
        gone = [a for a in self._spot if a in st.agents and st.agents[a].lost]
        if gone:
            self._spot_moved({a: self._offered.get(a) for a in gone}, drop=True)
            for a in gone:
                self._spot.discard(a)
                self._offered.pop(a, None)
                self._dirty.add(a)

    def constraints(self, st: CoreState, job: Job, kind: TaskKind) -> Constraints | None:
        """Workers go to spot agents first: while the spot agents' last offers had room
        for all of the job's pending workers, they may only go there. Masters (whose loss
        pauses the job) and deadline jobs at risk go wherever placement puts them."""
        if not self.config.prefer_spot or kind is not TaskKind.WORKER or not self._spot \
                or job.key in self._at_risk or job.spec.tier is Tier.REVOCABLE:
            return None  # (revocable workers go to oversubscribed resources anyway)
        size = job.policy.worker_size or job.spec.workers.template.resources
        n = sum(1 for key in job.pending if key.kind is TaskKind.WORKER)
        if self._spot_room[0] + 1e-6 < size.cpus * n or \
                self._spot_room[1] + 1e-6 < size.mem * n:
            return None
        c = job.spec.constraints
        if any(k == SPOT[0] for k, _ in c.attributes):
            return None  # the job chose for itself
        return replace(c, attributes=(*c.attributes, SPOT))

    def observe_usage(self, att: Attempt, cpus: float, mem: float) -> None:
        """One usage sample of a worker (cpus in use, resident MiB)."""
        if att.key.kind is not TaskKind.WORKER:
            return
        key = att.job.key
        samples = self._usage.get(key)
        if samples is None:
            samples = self._usage[key] = deque(maxlen=self.config.rightsizing.window)
        samples.append((cpus, mem))

    # ------------------------------------------------------------ the pass

    def _measured(self, job: Job) -> tuple[Resources | None, Resources | None, int]:
        """(percentile use per worker, peak use, samples) from the usage samples."""
        samples = self._usage.get(job.key)
        peak = job.policy.peak
        if not samples:
            return None, peak, 0
        cfg = self.config.rightsizing
        cpus = [c for c, _ in samples]
        mem = [m for _, m in samples]
        top = Resources(cpus=max(cpus), mem=max(mem))
        if peak is not None:
            top = Resources(cpus=max(top.cpus, peak.cpus), mem=max(top.mem, peak.mem))
        if len(samples) < cfg.min_samples:
            return None, top, len(samples)
        return (Resources(cpus=percentile(cpus, cfg.percentile),
                          mem=percentile(mem, cfg.percentile)), top, len(samples))

    def _demand(self, job: Job, memory: PolicyMemory, measured: Resources | None,
                peak: Resources | None, now: float) -> JobDemand:
        # The state keeps how many workers run and what they hold; the workers one by
        # one are built only if the pass asks (a job it shrinks or preempts from).
        n = job.held_workers
        per_worker = memory.rate_per_s / n if memory.rate_measured and n > 0 else 0.0
        progress = job.progress_total()
        # A job that never reported progress has an unknown load, not an empty one: NaN
        # keeps it at its current size instead of shrinking it to its minimum.
        backlog = float(progress.backlog or max(0, progress.total - progress.done)) \
            if job.progress else math.nan
        master = job.master.current
        load = usable_load(job.load, master.task_id if master else None, now)
        return JobDemand.from_spec(
            job.spec, job.submitted_at, workers=RunningWorkers(job, now), running_count=n,
            backlog=backlog,
            throughput_per_worker=per_worker, measured_per_worker=measured,
            peak_per_worker=peak,
            running_resources=Resources(*(x / n for x in job.held_sum)) if n else None,
            wanted_workers=load.workers if load else None,
            load_detail=load.detail if load else "",
        )

    def _seed_window(self, st: CoreState, now: float) -> None:
        """A new leader's first pass: the preemptions jobs remember count again."""
        horizon = now - self.config.preemption_window_s
        for job in st.jobs.values():
            kept = tuple(t for t in job.policy.preempted_at if t > horizon)
            if kept:
                role = job.spec.role
                self.window[role] = tuple(sorted(self.window.get(role, ()) + kept))
        self._seeded = True

    def step(self, st: CoreState, now: float) -> list[Decision]:
        """One policy pass if ``interval`` has passed: a ``Decision`` for every active job
        (the core applies them).

        A pass over more than ``jobs_per_step`` active jobs is split across calls (ticks),
        so no single event holds the loop for the whole pass: the jobs' demands are
        gathered ``jobs_per_step`` at a time, the targets computed at once in the next
        call, and the decisions handed out ``jobs_per_step`` at a time in the calls after
        (2,000 jobs: five calls, the runtime's ticks of a 5 s interval). A job
        that ended meanwhile drops out; one submitted meanwhile waits for the next pass;
        a job scaled by hand meanwhile keeps its target."""
        p = self._pass
        if p is None:
            if self._last_pass is not None and now - self._last_pass < self.interval:
                return []
            if self._last_pass is None and \
                    len(self._dirty) + len(st.touched_agents) > _FOLD_PER_STEP:
                # A new leader's first pass: every agent changed at once. The capacity
                # estimate catches up a share per tick first (at 50,000 agents, ~5
                # ticks), so no single tick folds them all.
                self.fold_changes(st, _FOLD_PER_STEP)
                return []
            p = self._pass = self._begin(st, now)
            if p is None:
                return []
        split = len(p.jobs) > self.jobs_per_step
        if p.result is None:
            if p.next < len(p.jobs):
                end = p.next + self.jobs_per_step if split else len(p.jobs)
                for j in p.jobs[p.next:end]:
                    self._gather(p, j, now)
                p.next = min(end, len(p.jobs))
                if split:
                    self.fold_changes(st, _FOLD_PER_STEP)
                    return []   # the targets in the next call
            if not self._compute(st, p, now):
                self._pass = None
                return []
            if split:
                return []   # the decisions from the next call
        end = p.next + self.jobs_per_step if split else len(p.jobs)
        if split:
            self.fold_changes(st, _FOLD_PER_STEP)
        out = [self._decide(p, job, now) for job in p.jobs[p.next:end]
               if st.jobs.get(job.key) is job and job.active()]
        p.next = end
        if p.next >= len(p.jobs):
            self._pass = None
        return out

    def _begin(self, st: CoreState, now: float) -> _Pass | None:
        self._last_pass = now
        jobs = st.active_jobs()
        active = {j.key for j in jobs}
        for key in [k for k in self._usage if k not in active]:
            del self._usage[key]
        for key in [k for k in self._persisted_rate if k not in active]:
            del self._persisted_rate[key]
        self._at_risk &= active
        return _Pass(jobs) if jobs else None

    def _gather(self, p: _Pass, j: Job, now: float) -> None:
        """What the pass must know of one job: its measured rate, usage and demand."""
        mem = measured_rate(j.policy, j.progress_total().done, now, self.smoothing) \
            if j.progress else j.policy
        p.memories[j.key] = mem
        size = p.sizes[j.key] = self._measured(j)
        p.demands[j.key] = self._demand(j, mem, size[0], size[1], now)
        if mem.load_target is not None:
            p.desired[j.key] = mem.load_target
        # A job the policy has not sized yet: its submission is its last change.
        p.scale[j.key] = ScaleMemory(mem.last_up_at, mem.last_down_at) \
            if mem.last_up_at is not None or mem.last_down_at is not None \
            else ScaleMemory(last_up_at=j.submitted_at)

    def _compute(self, st: CoreState, p: _Pass, now: float) -> bool:
        """The targets of the pass's jobs still active (False: no capacity seen yet;
        today's targets stay)."""
        capacity, revocable = self.capacity(st)
        if capacity.is_empty():
            return False
        if not self._seeded:
            self._seed_window(st, now)
        self._forget_lost(st)
        p.jobs = [j for j in p.jobs if st.jobs.get(j.key) is j and j.active()]
        state = PolicyState(desired=p.desired, memory=p.scale, preemptions=self.window)
        result = compute_targets([p.demands[j.key] for j in p.jobs], capacity, self.roles,
                                 state, now, self.config, revocable_capacity=revocable)
        self.window = dict(result.state.preemptions)
        self.last_shares = dict(result.role_shares)
        for v in result.preemptions:
            ids, _ = p.victims.get(v.job, ((), ""))
            p.victims[v.job] = (ids + v.victims, v.reason)
        p.result = result
        p.next = 0
        return True

    def _decide(self, p: _Pass, job: Job, now: float) -> Decision:
        result = p.result
        assert result is not None
        target = result.targets.get(job.key)
        mem = self._remember(job, p.memories[job.key], result.state.memory.get(job.key),
                             result.state.desired.get(job.key), target, p.sizes[job.key],
                             p.victims.get(job.key, ((), ""))[0], now)
        durable = self._durable(job, mem)
        if target is None or job.target_reason == MANUAL_REASON:
            return Decision(job.key, memory=mem, durable=durable)
        reason = f"{target.reason}: {target.detail}; fair share {target.fair_share:.0%}"
        if target.deadline_risk:
            reason += f"; deadline at risk: {target.deadline_risk}"
            self._at_risk.add(job.key)
        else:
            self._at_risk.discard(job.key)
        ids, why = p.victims.get(job.key, ((), ""))
        return Decision(job.key, target.workers, reason, preempt=ids, preempt_reason=why,
                        retire=target.retire, memory=mem, durable=durable)

    def _remember(self, job: Job, mem: PolicyMemory, scale: ScaleMemory | None,
                  load: int | None, target: object, size: tuple, preempted: tuple[str, ...],
                  now: float) -> PolicyMemory:
        measured, peak, samples = size
        horizon = now - self.config.preemption_window_s
        times = tuple(t for t in mem.preempted_at if t > horizon) + (now,) * len(preempted)
        worker_size, size_reason = mem.worker_size, mem.size_reason
        new_size = getattr(target, "worker_resources", None)
        reserved = job.spec.workers.template.resources
        if measured is not None and new_size is not None and self.config.rightsizing.enabled:
            worker_size = None if new_size == reserved else new_size
            size_reason = explain(reserved, new_size, measured, self.config.rightsizing,
                                  samples)
        up = scale.last_up_at if scale is not None else mem.last_up_at
        down = scale.last_down_at if scale is not None else mem.last_down_at
        load = load if load is not None else mem.load_target
        peak = peak if peak is not None else mem.peak
        if (up, down, load, times, worker_size, size_reason, peak) == (
                mem.last_up_at, mem.last_down_at, mem.load_target, mem.preempted_at,
                mem.worker_size, mem.size_reason, mem.peak):
            return mem   # most passes change nothing a job remembers: no new value
        return replace(mem, last_up_at=up, last_down_at=down, load_target=load,
                       preempted_at=times, worker_size=worker_size,
                       size_reason=size_reason, peak=peak)

    def _durable(self, job: Job, new: PolicyMemory) -> bool:
        """Whether the change is one a new leader must see (not a small rate move, not a
        new wording of the same size)."""
        old = job.policy
        # The rate and the words of the size's reason move at every pass: alone, they are
        # kept in memory and written with the job's next durable change.
        for name in _DURABLE_FIELDS:
            if getattr(new, name) != getattr(old, name):
                return True
        if new.rate_measured != old.rate_measured:
            self._persisted_rate[job.key] = new.rate_per_s
            return True
        last = self._persisted_rate.get(job.key)
        if new.rate_measured and (last is None or abs(new.rate_per_s - last)
                                  > RATE_PERSIST_CHANGE * max(last, 1e-9)):
            self._persisted_rate[job.key] = new.rate_per_s
            return True
        return False
