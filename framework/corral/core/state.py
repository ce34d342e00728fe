"""The scheduler core's state: jobs, slots, attempts and agents, and the one funnel that
changes them.

``CoreState`` owns every fact the core keeps. Handlers (``core.handlers``) read it through
its public read API and change it only through its mutators — ``add_job``,
``add_attempt``, ``set_mesos`` (an attempt's Mesos state: liveness, per-agent
tallies), ``move`` (a slot's or attempt's ``Life``: the pending index and timers),
``mark_changed`` — which keep the derived indexes (live tasks per job and agent, pending
slots per job, timers) and the changed/durable bookkeeping in one place. ``validate``
checks every invariant; the property tests call it after each event.

Vocabulary (see also ``slot_state``): a *job* has a master *slot* and worker slots by
index; each launch into a slot is an *attempt* (one Mesos task id). An attempt is *live*
while Mesos may hold resources for it (``task_state.LIVE``) and *active* while Corral
counts it as filling its slot (``slot_state.ACTIVE``). A *retiring* attempt was detached
from its slot (a worker draining beside its replacement) or replaced after being written
off; it stays known until it ends. *Changed*: the job's view changed (watchers wake);
*durable*: its stored intent changed (the shell persists it before acting).

Like the rest of the core: no I/O, no clock, no randomness. Time arrives as ``now``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.core import accounting as acct
from corral.core import tally as tl
from corral.core.cost import BudgetState, JobCost
from corral.core.job_state import JobPhase
from corral.core.memory import EMPTY_MEMORY, PolicyAction, PolicyMemory
from corral.core.model import JobSpec, TaskKey, TaskKind, TaskTemplate
from corral.core.resources import ZERO, Resources
from corral.core.slot_state import Life
from corral.core.task_state import TaskState
from corral.core.views import Progress, Why
from corral.core.workload import LoadReport

ENDED_KEPT = 10_000  # ended jobs waiting to be taken for the history, at most
# The job label asking for spare workers: the safety multiple of the over-provisioning rule.
OVERPROVISION_LABEL = "overprovision"


@dataclass(slots=True, eq=False)
class Attempt:
    """One Mesos task Corral launched (or adopted) for a slot."""

    job: Job
    key: TaskKey
    number: int
    task_id: str
    resources: Resources               # what it holds on its agent while live
    life: Life = Life.LAUNCHED         # Corral's view (slot_state)
    mesos: TaskState = TaskState.LAUNCHED  # Mesos' view (task_state)
    agent_id: str | None = None
    hostname: str | None = None
    executor_id: str | None = None
    ports: tuple[int, ...] = ()
    revocable: bool = False
    reason: str | None = None
    message: str = ""
    launched_at: float = 0.0
    heard_at: float = 0.0              # the last status update about it
    running_since: float | None = None
    deadline: float | None = None      # DRAINING: when its agent goes away
    edges: int = 0                     # edges applied; timers armed earlier are stale
    kills: int = 0                     # KILLs sent (the retry interval backs off)

    @property
    def live(self) -> bool:
        return self.mesos.live


@dataclass(slots=True, eq=False)
class Slot:
    """A task position of a job; ``current`` is the attempt filling it, if any."""

    key: TaskKey
    vacancy: Life = Life.EMPTY         # the slot's state while it has no current attempt
    current: Attempt | None = None
    retiring: dict[str, Attempt] = field(default_factory=dict)  # detached, still live
    attempts: int = 0                  # attempts ever made (task ids are never reused)
    failures: int = 0                  # the job's own failures; infrastructure never counts
    backoff_until: float = 0.0
    last_failure: str = ""
    why: Why | None = None             # why a vacant slot is not placed (placement's vetoes)
    checkpoint: tuple[str, int, float] | None = None   # uri, seq, when
    vacated: int = 0                   # times the slot became vacant (stale backoff timers)
    last: Attempt | None = None        # the attempt that last left the slot (for views)

    @property
    def state(self) -> Life:
        return self.current.life if self.current is not None else self.vacancy

    @property
    def label(self) -> str:
        return self.key.label()


@dataclass(slots=True, eq=False)
class Job:
    spec: JobSpec
    request_id: str
    seq: int
    submitted_at: float
    desired: int
    master: Slot
    # A resubmitted key continues the attempt numbering of the job it replaces, so a task
    # id is never reused while an old task might still be alive.
    attempt_base: int = 0
    workers: dict[int, Slot] = field(default_factory=dict)
    phase: JobPhase = JobPhase.PENDING
    finished_at: float | None = None
    message: str = ""
    target_reason: str = "initial"
    version: int = 0
    master_address: str | None = None
    live: set[str] = field(default_factory=set)          # task ids of live attempts
    pending: dict[TaskKey, None] = field(default_factory=dict)  # slots in PENDING, ordered
    progress: dict[str, Progress] = field(default_factory=dict)
    usage: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    accounting: acct.JobAccounting = field(default_factory=acct.JobAccounting)
    terminations: list[float] = field(default_factory=list)   # times, for over-provisioning
    recovery_times: deque[tuple[float, float]] = field(       # (when, seconds it took)
        default_factory=lambda: deque(maxlen=100))
    spare: int = 0
    spare_reason: str = ""
    # The worker indexes the job wants: [0, span) except the holes (workers retired or
    # preempted while higher indexes ran on). ``lifecycle.resize`` keeps
    # span - len(holes) == effective_workers().
    span: int = 0
    holes: set[int] = field(default_factory=set)
    policy: PolicyMemory = EMPTY_MEMORY                # the elastic policy's memory
    actions: deque[PolicyAction] = field(                # workers the policy stopped, why
        default_factory=lambda: deque(maxlen=50))
    preempted: int = 0                                   # totals of ``actions`` by kind
    retired: int = 0
    load: LoadReport | None = None   # the master's latest load report (core.workload)
    cost: JobCost = field(default_factory=JobCost)   # resource-time by market (core.cost)
    key: str = field(init=False)   # spec.key, read on every hot path (a spec never changes key)
    # The workers the policy counts as running (a worker slot's current attempt, live and
    # not being stopped) and what they hold (cpus, mem, disk, gpus), kept by the mutators
    # so a policy pass costs O(jobs), not O(tasks).
    held_workers: int = 0
    held_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    # ``progress`` summed (done, total, backlog, rerun), kept by set/drop_progress.
    progress_sum: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    # Live attempts per agent (all kinds, and workers only), kept with ``live``: what
    # placement spreads a job's tasks by, read without walking the job.
    on_agent: dict[str, int] = field(default_factory=dict)
    workers_on: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = self.spec.key

    def active(self) -> bool:
        return self.phase in (JobPhase.PENDING, JobPhase.RUNNING)

    def master_running(self) -> bool:
        cur = self.master.current
        return cur is not None and cur.mesos is TaskState.RUNNING

    def effective_workers(self) -> int:
        """Desired workers plus the spare ones over-provisioning keeps, within the spec."""
        return min(self.spec.workers.max, self.desired + self.spare) \
            if self.spare else self.desired

    def wants(self, key: TaskKey) -> bool:
        """Whether the job wants a task in this slot now."""
        if not self.active():
            return False
        return key.kind is TaskKind.MASTER or (
            key.index < self.span and key.index not in self.holes)

    def wanted_indexes(self) -> list[int]:
        """The worker indexes the job wants, ascending (empty once it is over)."""
        if not self.active():
            return []
        return [i for i in range(self.span) if i not in self.holes]

    def slots(self) -> Iterator[Slot]:
        yield self.master
        yield from self.workers.values()

    def slot_if(self, key: TaskKey) -> Slot | None:
        return self.master if key.kind is TaskKind.MASTER else self.workers.get(key.index)

    def template(self, key: TaskKey) -> TaskTemplate:
        return self.spec.master if key.kind is TaskKind.MASTER else self.spec.workers.template

    def progress_total(self) -> Progress:
        """The master's (latest attempt's) report if it sent one, else the sum of the
        workers' reports."""
        master = self.master.current or self.master.last
        if master is not None and master.task_id in self.progress:
            return self.progress[master.task_id]
        return Progress(*self.progress_sum)


class Held:
    """Resources our live attempts hold on one agent, per pool, as plain floats."""

    __slots__ = ("cpus", "disk", "gpus", "mem", "rcpus", "rdisk", "rgpus", "rmem")

    def __init__(self) -> None:
        self.cpus = self.mem = self.disk = self.gpus = 0.0
        self.rcpus = self.rmem = self.rdisk = self.rgpus = 0.0

    def add(self, r: Resources, revocable: bool, sign: float) -> None:
        if revocable:
            self.rcpus += sign * r.cpus
            self.rmem += sign * r.mem
            self.rdisk += sign * r.disk
            self.rgpus += sign * r.gpus
        else:
            self.cpus += sign * r.cpus
            self.mem += sign * r.mem
            self.disk += sign * r.disk
            self.gpus += sign * r.gpus

    def pools(self) -> tuple[Resources, Resources]:
        return (Resources(max(self.cpus, 0), max(self.mem, 0), max(self.disk, 0),
                          max(self.gpus, 0)),
                Resources(max(self.rcpus, 0), max(self.rmem, 0), max(self.rdisk, 0),
                          max(self.rgpus, 0)))


@dataclass(slots=True, eq=False)
class Agent:
    """What Corral knows of one Mesos agent."""

    agent_id: str
    hostname: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    lost: bool = False                   # Mesos said it is gone; cleared by its next offer
    tasks: set[str] = field(default_factory=set)   # our live attempts there
    # The most ``tasks`` held since the set was last rebuilt: a set never shrinks its
    # table, so one that fell to a quarter of it is rebuilt (``CoreState._set_live``).
    tasks_peak: int = 0
    held: Held = field(default_factory=Held)
    drain: tuple[float, float | None] | None = None  # maintenance window (start, end)
    inverse_offers: set[str] = field(default_factory=set)


class TimerKind(StrEnum):
    BACKOFF = "backoff"          # a slot's restart backoff ends (ref: job key, slot key)
    STAGING = "staging"          # a launch got no word from Mesos (ref: task id)
    RECONCILE = "reconcile"      # explicit reconciliation of one attempt went unanswered
    KILL = "kill"                # a kill was not confirmed
    DEADLINE = "deadline"        # a draining worker must stop now


@dataclass(frozen=True, slots=True)
class Timer:
    at: float
    seq: int
    kind: TimerKind
    task_id: str = ""
    slot: TaskKey | None = None
    token: int = 0                 # attempt.edges / slot.vacated when armed


@dataclass(slots=True)
class Session:
    """The Mesos subscription as the core sees it, and the reconciliation gate."""

    subscribed: bool = False
    down_since: float | None = None     # not subscribed since (None: never was, or is)
    problem: str = "not subscribed to the Mesos master yet"
    # The gate: after each subscription, explicit reconciliation of every task we know;
    # offers are held (not placed) until every one is answered or the deadline passes.
    awaiting: dict[str, str | None] | None = None   # task id -> agent id
    gate_started: float = 0.0
    gate_next: float = 0.0
    gate_round: int = 0
    held: list[Any] = field(default_factory=list)   # Offer values held while gated
    last_implicit: float | None = None
    last_stale_check: float = 0.0
    suppressed: bool = False

    @property
    def gated(self) -> bool:
        return self.awaiting is not None


class InvariantError(AssertionError):
    """``CoreState.validate`` found the state inconsistent (a bug in the core)."""


class CoreState:
    """Every fact the core keeps, its indexes, and the mutators that keep them true."""

    def __init__(self, term: int = 0) -> None:
        self.framework_id: str | None = None
        self.jobs: dict[str, Job] = {}
        self.attempts: dict[str, Attempt] = {}
        self.agents: dict[str, Agent] = {}
        # Agents whose held resources or lost flag changed since the policy last looked
        # (``take_touched_agents``): its capacity estimate is kept up to date from them.
        self.touched_agents: set[str] = set()
        self.session = Session()
        self.pending_jobs: dict[str, None] = {}   # jobs with PENDING slots
        self.finished_jobs: dict[str, float] = {}  # terminal jobs, oldest first -> when
        self.inverse_offers: dict[str, str] = {}  # inverse offer id -> agent id
        self.inverse_accepted: set[str] = set()
        # Live attempts by when Corral last heard of them, oldest first.
        self._heard: dict[str, float] = {}
        # A heap of (at, seq, timer): tuples compare in C (a burst of 5,000 due timers
        # costs ~70,000 comparisons; a dataclass's generated ``__lt__`` made that ~20 ms).
        self.timers: list[tuple[float, int, Timer]] = []
        self.notes: deque[tuple[float, str]] = deque(maxlen=1000)
        self.term = term
        self._seq = 0
        self._timer_seq = 0
        self.changed: dict[str, None] = {}
        self.durable: dict[str, None] = {}
        self.tally = tl.Tally()          # slots and attempts by role, tier, kind, life
        # Jobs that reached a terminal phase, for the job history (the shell takes them
        # every turn; bounded, so a core nobody takes them from keeps no more).
        self.ended: deque[Job] = deque(maxlen=ENDED_KEPT)
        # Losses, recoveries (counts) and work lost (seconds), for metrics (core.cost).
        self.counters: defaultdict[str, float] = defaultdict(float)
        self.budget = BudgetState()      # role budgets (core.cost)
        self.last_now = 0.0              # ``now`` of the latest event handled
        # Where the next OFFERS event starts placing, after one that left pending groups
        # for later (``CoreConfig.groups_per_offers``); None: at the head of the order.
        self.offers_resume: str | None = None

    # ------------------------------------------------------------------ read API

    def job(self, key: str) -> Job | None:
        return self.jobs.get(key)

    def attempt(self, task_id: str) -> Attempt | None:
        return self.attempts.get(task_id)

    def agent(self, agent_id: str) -> Agent:
        a = self.agents.get(agent_id)
        if a is None:
            a = self.agents[agent_id] = Agent(agent_id)
        return a

    def hostname_of(self, agent_id: str | None) -> str | None:
        a = self.agents.get(agent_id or "")
        return a.hostname or None if a is not None else None

    def lost_agents(self) -> frozenset[str]:
        return frozenset(a.agent_id for a in self.agents.values() if a.lost)

    def draining_agents(self) -> dict[str, float]:
        return {a.agent_id: a.drain[0] for a in self.agents.values() if a.drain is not None}

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.active()]

    def unsettled_attempts(self) -> list[Attempt]:
        """Every attempt Mesos may still hold (what reconciliation asks about)."""
        return [a for a in self.attempts.values()
                if not a.mesos.terminal and a.mesos is not TaskState.PENDING]

    # ------------------------------------------------------------------ the funnel

    def mark_changed(self, job: Job, durable: bool = False) -> None:
        """The job's view changed (and, if ``durable``, its stored intent): once per event
        its version goes up, and the shell hears of it."""
        if self.jobs.get(job.key) is not job:
            return  # replaced by a resubmission under the same key: nothing to show
        if job.key not in self.changed:
            job.version += 1
            self.changed[job.key] = None
        if durable:
            self.durable[job.key] = None

    def set_policy(self, job: Job, memory: PolicyMemory, durable: bool) -> None:
        """The policy's new memory of ``job``; ``durable``: a change a new leader must
        know (written with the job's intent). A non-durable change (the measured rate
        moved a little) is kept without waking watchers or writing the store."""
        if memory is job.policy or memory == job.policy:
            return
        job.policy = memory
        if durable:
            self.mark_changed(job, durable=True)

    def record_action(self, job: Job, action: PolicyAction) -> None:
        """The policy stopped one of the job's workers (shown in its view)."""
        job.actions.append(action)
        if action.kind == "preempted":
            job.preempted += 1
        else:
            job.retired += 1
        self.mark_changed(job)

    def set_progress(self, job: Job, task_id: str, p: Progress) -> None:
        """Record a task's progress report (the job's view changes)."""
        self.drop_progress(job, task_id)
        job.progress[task_id] = p
        s = job.progress_sum
        s[0], s[1], s[2], s[3] = s[0] + p.done, s[1] + p.total, s[2] + p.backlog, \
            s[3] + p.rerun
        self.mark_changed(job)

    def drop_progress(self, job: Job, task_id: str) -> None:
        old = job.progress.pop(task_id, None)
        if old is not None:
            s = job.progress_sum
            s[0], s[1], s[2], s[3] = s[0] - old.done, s[1] - old.total, \
                s[2] - old.backlog, s[3] - old.rerun

    def set_agent_lost(self, agent_id: str, lost: bool) -> None:
        """Mesos said the agent is gone (``lost``), or it offered again."""
        agent = self.agent(agent_id)
        if agent.lost != lost:
            agent.lost = lost
            self.touched_agents.add(agent_id)

    def take_touched_agents(self) -> set[str]:
        out, self.touched_agents = self.touched_agents, set()
        return out

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add_job(self, job: Job) -> None:
        old = self.jobs.get(job.key)
        self.jobs[job.key] = job
        if old is not None and old is not job:
            self.let_go(old)   # resubmitted under the same key
        self.mark_changed(job, durable=True)

    def add_attempt(self, att: Attempt) -> None:
        """Register a new attempt (launched or adopted) and its liveness."""
        self.attempts[att.task_id] = att
        self.tally.attempt(att, att.life, 1)
        if att.live:
            self._set_live(att, True)
        self.mark_changed(att.job, durable=True)

    def set_mesos(self, att: Attempt, state: TaskState) -> None:
        """Record an attempt's Mesos state; liveness indexes follow."""
        was, held = att.live, _held_worker(att)
        att.mesos = state
        _count_held(att, held)
        if att.live != was:
            self._set_live(att, att.live)
            self.mark_changed(att.job, durable=True)

    def set_agent(self, att: Attempt, agent_id: str) -> None:
        """Learn an attempt's agent (a restored or adopted task reported from it)."""
        if att.agent_id == agent_id:
            return
        if att.live:
            self._set_live(att, False)
        att.agent_id = agent_id
        if att.live:
            self._set_live(att, True)

    def move(self, slot: Slot, att: Attempt | None, life: Life) -> None:
        """Set the ``Life`` of ``att`` (or of the vacant ``slot``); the pending index
        follows. Timers are armed by the lifecycle driver, which knows why."""
        job = att.job if att is not None else None
        if att is not None:
            if self.attempts.get(att.task_id) is att:
                self.tally.attempt(att, att.life, -1)
                self.tally.attempt(att, life, 1)
            held = _held_worker(att)
            att.life = life
            att.edges += 1
            _count_held(att, held)
        else:
            counted = slot.current is None and self._owned(slot)
            if counted:
                self._tally_vacancy(slot, -1)
            slot.vacancy = life
            if counted:
                self._tally_vacancy(slot, 1)
        owner = job or self.jobs.get(slot.key.job)
        if owner is not None:
            self._index_pending(owner, slot)
            self.mark_changed(owner)

    def fill(self, slot: Slot, att: Attempt) -> None:
        """``att`` becomes the slot's current attempt."""
        if slot.current is None and self._owned(slot):
            self._tally_vacancy(slot, -1)
        held = _held_worker(att)
        slot.current = att
        _count_held(att, held)
        slot.why = None
        self._index_pending(att.job, slot)

    def vacate(self, slot: Slot, vacancy: Life) -> Attempt | None:
        """The slot's current attempt leaves it (ended or detached)."""
        att = slot.current
        held = att is not None and _held_worker(att)
        slot.current = None
        if att is not None:
            _count_held(att, held)
        if att is None and self._owned(slot):
            self._tally_vacancy(slot, -1)
        slot.vacancy = vacancy
        slot.vacated += 1
        if self._owned(slot):
            self._tally_vacancy(slot, 1)
        job = self.jobs.get(slot.key.job)
        if att is not None:
            old, slot.last = slot.last, att
            if old is not None and old is not att and job is not None \
                    and old.task_id not in self.attempts:
                self.drop_progress(job, old.task_id)   # only the latest report is shown
        if att is not None and att.live and att.life is not Life.ENDED:
            slot.retiring[att.task_id] = att
        if job is not None:
            self._index_pending(job, slot)
            self.mark_changed(job, durable=True)
        return att

    def retire_done(self, slot: Slot, att: Attempt) -> None:
        """A retiring attempt is over (ended and no longer live)."""
        slot.retiring.pop(att.task_id, None)

    def forget_attempt(self, att: Attempt) -> None:
        """An attempt that ended and holds nothing leaves the core: a late update about it
        is handled as one about an unknown task of ours (ignored if terminal, adopted or
        killed if alive). The slot keeps it as ``last`` for its view."""
        if att.live or not att.mesos.terminal or self.attempts.get(att.task_id) is not att:
            return
        del self.attempts[att.task_id]
        self.tally.attempt(att, att.life, -1)
        self._heard.pop(att.task_id, None)
        job = att.job
        job.usage.pop(att.task_id, None)
        slot = job.slot_if(att.key)
        if slot is None or slot.last is not att:
            self.drop_progress(job, att.task_id)

    def finished(self, job: Job) -> None:
        """``job`` reached a terminal phase: it is retired after the retention rules."""
        self.finished_jobs[job.key] = job.finished_at or 0.0
        self.ended.append(job)

    def retire_jobs(self, now: float, keep: int, ttl: float) -> list[str]:
        """Remove finished jobs beyond the newest ``keep`` or older than ``ttl`` seconds,
        once nothing of them is live; they are deleted from the store (durable)."""
        out: list[str] = []
        excess = len(self.finished_jobs) - keep
        for key, at in list(self.finished_jobs.items()):
            if excess <= 0 and now - at <= ttl:
                break
            job = self.jobs.get(key)
            if job is not None and (job.live or not job.phase.terminal):
                if job.phase.terminal:
                    continue  # a kill still finishing: later
                del self.finished_jobs[key]   # resubmitted under the same key
                excess -= 1
                continue
            del self.finished_jobs[key]
            excess -= 1
            if job is None:
                continue
            for slot in job.slots():
                for att in (slot.current, slot.last, *slot.retiring.values()):
                    if att is not None and self.attempts.get(att.task_id) is att:
                        del self.attempts[att.task_id]
                        self.tally.attempt(att, att.life, -1)
                        self._heard.pop(att.task_id, None)
                if slot.current is None:
                    self._tally_vacancy(slot, -1)
            del self.jobs[key]
            self.pending_jobs.pop(key, None)
            self.durable[key] = None
            self.let_go(job)
            out.append(key)
        return out

    def let_go(self, job: Job) -> None:
        """Unlink a job the state no longer holds (retired, or replaced by a resubmission)
        once the history has taken it (``take_ended`` calls this too) and none of its
        attempts is still tracked.

        An attempt points at its job and a slot at its attempts: left alone, a dropped job
        is a reference cycle that only the cyclic garbage collector can free, a full pass
        later (and never, between full passes, in a process that freezes its heap: see
        ``corral.runtime.gcpolicy``). Unlinked, reference counting frees it at once."""
        if self.jobs.get(job.key) is job or job.live or job in self.ended:
            return
        slots = list(job.slots())
        for slot in slots:
            for att in (slot.current, slot.last, *slot.retiring.values()):
                if att is not None and self.attempts.get(att.task_id) is att:
                    return   # a late update may still reach it
        for slot in slots:
            slot.current = slot.last = None
            slot.retiring.clear()

    def heard(self, att: Attempt) -> None:
        """Corral just heard of ``att`` (``att.heard_at``): it goes to the back."""
        self._heard.pop(att.task_id, None)
        if not att.mesos.terminal:
            self._heard[att.task_id] = att.heard_at

    def stale_attempts(self, before: float, limit: int) -> list[Attempt]:
        """Up to ``limit`` unsettled attempts not heard of since ``before``, oldest first."""
        out: list[Attempt] = []
        dead: list[str] = []
        for tid, at in self._heard.items():
            if at >= before or len(out) >= limit:
                break
            att = self.attempts.get(tid)
            if att is None or att.mesos.terminal or att.mesos is TaskState.PENDING:
                dead.append(tid)
            else:
                out.append(att)
        for tid in dead:
            del self._heard[tid]
        return out

    def add_timer(self, at: float, kind: TimerKind, *, task_id: str = "",
                  slot: TaskKey | None = None, token: int = 0) -> None:
        self._timer_seq += 1
        heapq.heappush(self.timers, (at, self._timer_seq,
                                     Timer(at, self._timer_seq, kind, task_id, slot, token)))

    def next_timer_at(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        return self.timers[0][0] if self.timers else None

    def due_timers(self, now: float, limit: int) -> Iterator[Timer]:
        """Timers due at ``now``, earliest first, at most ``limit`` of them (the rest
        stay due for the next event: a burst of launches arms a burst of timers, and
        no single event should pay for all of them)."""
        while limit > 0 and self.timers and self.timers[0][0] <= now:
            limit -= 1
            yield heapq.heappop(self.timers)[2]

    def resume_offers_at(self, key: str | None) -> None:
        """The next OFFERS event starts placing at job ``key`` (None: at the head)."""
        self.offers_resume = key

    def note(self, now: float, text: str) -> None:
        self.notes.append((now, text))

    def take_changes(self) -> tuple[list[str], list[str]]:
        changed, durable = list(self.changed), list(self.durable)
        self.changed, self.durable = {}, {}
        return changed, durable

    def take_ended(self) -> list[Job]:
        """The jobs that ended since the last call (for the job history)."""
        out = list(self.ended)
        self.ended.clear()
        return out

    # ------------------------------------------------------------------ indexes

    def _owned(self, slot: Slot) -> bool:
        """Whether ``slot`` belongs to the job its key names now (not to a job that key
        was resubmitted over)."""
        job = self.jobs.get(slot.key.job)
        return job is not None and job.slot_if(slot.key) is slot

    def _tally_vacancy(self, slot: Slot, n: int) -> None:
        self.tally.vacancy(self.jobs[slot.key.job], slot, slot.vacancy, n)

    def _set_live(self, att: Attempt, live: bool) -> None:
        agent = self.agent(att.agent_id) if att.agent_id else None
        if agent is not None:
            self.touched_agents.add(agent.agent_id)
        job = att.job
        if live:
            if att.task_id not in job.live:
                job.live.add(att.task_id)
                if agent is not None:
                    _count_on(job, att, agent.agent_id, 1)
            if agent is not None and att.task_id not in agent.tasks:
                agent.tasks.add(att.task_id)
                agent.tasks_peak = max(agent.tasks_peak, len(agent.tasks))
                agent.held.add(att.resources, att.revocable, 1.0)
        else:
            if att.task_id in job.live:
                job.live.discard(att.task_id)
                if agent is not None:
                    _count_on(job, att, agent.agent_id, -1)
            if agent is not None and att.task_id in agent.tasks:
                agent.tasks.discard(att.task_id)
                agent.held.add(att.resources, att.revocable, -1.0)
                if agent.tasks_peak >= 8 and len(agent.tasks) <= agent.tasks_peak // 4:
                    agent.tasks = set(agent.tasks)
                    agent.tasks_peak = len(agent.tasks)

    def _index_pending(self, job: Job, slot: Slot) -> None:
        if slot.current is None and slot.vacancy is Life.PENDING:
            job.pending[slot.key] = None
        else:
            job.pending.pop(slot.key, None)
        if self.jobs.get(job.key) is not job:
            return  # a job its key was resubmitted over: its stray attempts only end
        if job.pending:
            self.pending_jobs[job.key] = None
        else:
            self.pending_jobs.pop(job.key, None)

    # ------------------------------------------------------------------ invariants

    def validate(self) -> None:
        """Raise ``InvariantError`` naming the first broken invariant."""
        problems = list(self._problems())
        if problems:
            raise InvariantError("; ".join(problems[:5]))

    def _problems(self) -> Iterator[str]:
        seen_live: set[str] = set()
        for key, job in self.jobs.items():
            if job.key != key:
                yield f"job {key} filed under the wrong key"
            for slot in job.slots():
                yield from self._slot_problems(job, slot)
            pending = {s.key for s in job.slots()
                       if s.current is None and s.vacancy is Life.PENDING}
            if pending != set(job.pending):
                yield f"{key}: pending index {sorted(job.pending)} != {sorted(pending)}"
            if bool(job.pending) != (key in self.pending_jobs):
                yield f"{key}: pending_jobs index out of date"
            live = {a.task_id for a in self.attempts.values() if a.job is job and a.live}
            if live != job.live:
                yield f"{key}: live index {sorted(job.live)} != {sorted(live)}"
            per_agent: dict[str, int] = defaultdict(int)
            workers_on: dict[str, int] = defaultdict(int)
            for tid in live:
                att = self.attempts[tid]
                if att.agent_id:
                    per_agent[att.agent_id] += 1
                    if att.key.kind is TaskKind.WORKER:
                        workers_on[att.agent_id] += 1
            if per_agent != job.on_agent or workers_on != job.workers_on:
                yield (f"{key}: per-agent counts {job.on_agent}/{job.workers_on} "
                       f"!= {dict(per_agent)}/{dict(workers_on)}")
            seen_live |= live
            if any(h >= job.span or h < 0 for h in job.holes):
                yield f"{key}: holes {sorted(job.holes)} outside the span {job.span}"
            if job.active() and job.span - len(job.holes) != job.effective_workers():
                yield (f"{key}: wants {job.span - len(job.holes)} workers, effective "
                       f"{job.effective_workers()}")
            sums = [sum(getattr(p, f) for p in job.progress.values())
                    for f in ("done", "total", "backlog", "rerun")]
            if sums != job.progress_sum:
                yield f"{key}: progress sum {job.progress_sum} != {sums}"
            n, h = 0, [0.0, 0.0, 0.0, 0.0]
            for slot in job.workers.values():
                if slot.current is not None and _held_worker(slot.current):
                    n += 1
                    r = slot.current.resources
                    h = [h[0] + r.cpus, h[1] + r.mem, h[2] + r.disk, h[3] + r.gpus]
            if n != job.held_workers or any(abs(x - y) > 1e-6
                                            for x, y in zip(h, job.held_sum, strict=True)):
                yield (f"{key}: held workers {job.held_workers} {job.held_sum} != "
                       f"{n} {h}")
            if job.phase.terminal and any(
                    s.current is not None and s.current.life.active for s in job.slots()):
                yield f"{key}: {job.phase.value} with an active attempt"
        for jk in self.pending_jobs:
            if jk not in self.jobs:
                yield f"pending_jobs names unknown job {jk}"
        tally = tl.expected(self.jobs.values(), self.attempts.values())
        if tally != self.tally.counts:
            yield f"tally {dict(self.tally.counts)} != {dict(tally)}"
        held: dict[str, tuple[Resources, Resources]] = {}
        for agent in self.agents.values():
            on = {t for t in agent.tasks}
            should = {a.task_id for a in self.attempts.values()
                      if a.live and a.agent_id == agent.agent_id}
            if on != should:
                yield f"agent {agent.agent_id}: task index {sorted(on)} != {sorted(should)}"
            res, rev = ZERO, ZERO
            for tid in should:
                a = self.attempts[tid]
                if a.revocable:
                    rev = rev + a.resources
                else:
                    res = res + a.resources
            held[agent.agent_id] = (res, rev)
            got = agent.held.pools()
            if any(abs(x - y) > 1e-6 for r1, r2 in zip(got, (res, rev), strict=True)
                   for x, y in zip(r1.as_dict().values(), r2.as_dict().values(), strict=True)):
                yield f"agent {agent.agent_id}: held {got} != {(res, rev)}"

    def _slot_problems(self, job: Job, slot: Slot) -> Iterator[str]:
        where = f"{job.key} {slot.label}"
        if slot.vacancy not in (Life.EMPTY, Life.BACKOFF, Life.WAITING, Life.PENDING,
                                Life.COMPLETED):
            yield f"{where}: vacancy {slot.vacancy} is not a vacancy state"
        cur = slot.current
        if cur is not None:
            if cur.life.vacancy or cur.life is Life.ENDED:
                yield f"{where}: current attempt in {cur.life}"
            if cur.key != slot.key or self.attempts.get(cur.task_id) is not cur:
                yield f"{where}: current attempt not registered for this slot"
        active = [a for a in (cur, *slot.retiring.values()) if a is not None and a.life.active]
        if len(active) > 1:
            yield f"{where}: {len(active)} active attempts"
        if slot.key.kind is TaskKind.MASTER:
            if slot.retiring and any(a.life is not Life.KILL_SENT and a.live
                                     for a in slot.retiring.values()):
                yield f"{where}: a master attempt retiring without a kill"
            overlap = [a for a in (cur, *slot.retiring.values())
                       if a is not None and a.life in (Life.LAUNCHED, Life.RECONCILING,
                                                        Life.STARTING, Life.RUNNING,
                                                        Life.DRAINING)]
            if len(overlap) > 1:
                yield f"{where}: master placed twice ({[a.task_id for a in overlap]})"
        for tid, a in slot.retiring.items():
            if a.key != slot.key or a is cur:
                yield f"{where}: retiring attempt {tid} misfiled"
            if a.life not in (Life.DRAINING, Life.KILL_SENT, Life.ENDED):
                yield f"{where}: retiring attempt {tid} in {a.life}"
        if cur is not None and cur.life.active and not job.wants(slot.key) and \
                cur.life is not Life.KILL_SENT:
            yield f"{where}: unwanted attempt {cur.task_id} still {cur.life}"


def _count_on(job: Job, att: Attempt, agent_id: str, n: int) -> None:
    """``att`` (live) arrives on (1) or leaves (-1) ``agent_id``: the job's counts."""
    tables = (job.on_agent, job.workers_on) if att.key.kind is TaskKind.WORKER \
        else (job.on_agent,)
    for table in tables:
        left = table.get(agent_id, 0) + n
        if left:
            table[agent_id] = left
        else:
            del table[agent_id]


def _held_worker(att: Attempt) -> bool:
    """Whether ``att`` is one of its job's held workers: the current attempt of a worker
    slot, live, and not being stopped (what the policy counts as running)."""
    if att.key.kind is not TaskKind.WORKER or not att.life.active or not att.mesos.live:
        return False
    slot = att.job.workers.get(att.key.index)
    return slot is not None and slot.current is att


def _count_held(att: Attempt, was: bool) -> None:
    """Bring the job's held-worker aggregate in line after a change to ``att``."""
    now = _held_worker(att)
    if now == was:
        return
    sign = 1.0 if now else -1.0
    job, r = att.job, att.resources
    job.held_workers += 1 if now else -1
    h = job.held_sum
    if job.held_workers == 0:
        h[:] = [0.0, 0.0, 0.0, 0.0]   # no float drift survives an empty job
        return
    h[0] += sign * r.cpus
    h[1] += sign * r.mem
    h[2] += sign * r.disk
    h[3] += sign * r.gpus
