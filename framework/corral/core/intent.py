"""A job's durable intent: the one schema the core exports, the store keeps and a new
leader restores from.

What survives a failover is *intent*, not facts: the spec, the desired worker count and
which worker indexes it means (``holes``: indexes retired while higher ones ran on), the
job's phase, per-slot counters (attempts so far, so a task id is never reused; failures
against the restart limit; completed workers), checkpoint markers, the cost ledger's usage
(``core.cost``), the elastic policy's memory of the job (``core.memory``: cooldowns,
measured throughput, preemptions suffered, the right-sized worker reservation), and every
task that may be alive (its id, agent, host, ports, and what it holds if not its spec's
size). Task *states* are not kept: a restored attempt starts as ``LAUNCHED`` and Mesos
tells the new leader the truth through reconciliation (the gate after subscribing; and the
staging timeout for any it never answers), which then moves the job (a running master
makes it RUNNING again; a task Mesos does not know ends as lost and its slot is
relaunched, never counted as the job's failure).

``export_job`` reads the core through its public state; ``restore`` fills a fresh core
through the state's mutators. Restoring into a core that already has jobs is refused: a
new leader always starts from a fresh core and the stored state, never mixes the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.core.handlers import lifecycle as lc
from corral.core.handlers.context import Ctx
from corral.core.job_state import JobPhase
from corral.core.memory import EMPTY_MEMORY, PolicyMemory
from corral.core.model import JobSpec, TaskKey, TaskKind, parse_task_id
from corral.core.resources import ZERO, Resources
from corral.core.slot_state import Life
from corral.core.state import Attempt, Job, Slot
from corral.core.task_state import TaskState

if TYPE_CHECKING:  # the scheduler imports this module
    from corral.core.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class TaskIntent:
    """A task that may be alive: Mesos id, agent, and where it listens."""

    task_id: str
    agent_id: str
    hostname: str = ""
    ports: tuple[int, ...] = ()
    held: Resources | None = None   # what it holds on its agent, if not the spec's size


@dataclass(frozen=True, slots=True)
class SlotIntent:
    """Per-slot counters a new leader must continue."""

    attempts: int = 0
    failures: int = 0
    completed: bool = False


@dataclass(frozen=True, slots=True)
class JobIntent:
    """Everything about one job a new leader needs to carry on."""

    spec: JobSpec
    request_id: str
    desired: int
    phase: JobPhase
    tasks: tuple[TaskIntent, ...] = ()
    slots: Mapping[str, SlotIntent] = field(default_factory=dict)  # slot label -> counters
    progress: Mapping[str, int] = field(default_factory=dict)  # slot label -> checkpoint seq
    submitted_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    target_reason: str = ""
    # The cost ledger's usage: market -> category -> [cpu-s, MiB-s, MiB-s, gpu-s].
    cost: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)
    holes: tuple[int, ...] = ()      # worker indexes not wanted below the highest wanted
    policy: PolicyMemory = EMPTY_MEMORY  # the elastic policy's memory (``core.memory``)

    @property
    def key(self) -> str:
        return self.spec.key


class RestoreError(ValueError):
    """The intent cannot be restored (a task id that is not this job's, a busy core)."""


def slot_key(job: str, label: str) -> TaskKey | None:
    """The slot a label (``master``, ``worker-3``) names in ``job``; None if none."""
    if label == "master":
        return TaskKey(job, TaskKind.MASTER, 0)
    if label.startswith("worker-") and label[7:].isdigit():
        return TaskKey(job, TaskKind.WORKER, int(label[7:]))
    return None


def export_job(job: Job, attempts: Mapping[str, Attempt],
               overhead: Resources = ZERO) -> JobIntent:
    """The durable intent of ``job`` as the core holds it now (``overhead``: the executor
    overhead every attempt holds besides its task)."""
    tasks = tuple(
        TaskIntent(a.task_id, a.agent_id or "", a.hostname or "", tuple(a.ports),
                   None if a.resources == job.template(a.key).resources + overhead
                   else a.resources)
        for a in (attempts[tid] for tid in sorted(job.live))
    )
    counters = {
        s.label: SlotIntent(s.attempts, s.failures, s.vacancy is Life.COMPLETED)
        for s in job.slots() if s.attempts or s.failures or s.vacancy is Life.COMPLETED
    }
    progress = {s.label: s.checkpoint[1] for s in job.slots() if s.checkpoint is not None}
    return JobIntent(
        spec=job.spec, request_id=job.request_id, desired=job.desired, phase=job.phase,
        tasks=tasks, slots=counters, progress=progress, submitted_at=job.submitted_at,
        finished_at=job.finished_at, message=job.message, target_reason=job.target_reason,
        cost={m: {c: tuple(v) for c, v in cats.items()}
              for m, cats in job.cost.stored().items()},
        holes=tuple(sorted(job.holes)), policy=job.policy,
    )


def restore(sched: Scheduler, framework_id: str | None, jobs: Iterable[JobIntent],
            now: float = 0.0) -> int:
    """Load ``jobs`` into a fresh core; returns how many tasks it now waits to hear about.

    Jobs are ordered by submission time, so placement priority among equals is kept.
    """
    st = sched.state
    if st.jobs or st.attempts:
        raise RestoreError("restore needs a fresh scheduler core")
    st.framework_id = framework_id
    ctx = sched.context(now)
    restored = 0
    for intent in sorted(jobs, key=lambda j: (j.submitted_at, j.key)):
        restored += _restore_job(ctx, intent)
    sched.defer(ctx)
    return restored


def _restore_job(ctx: Ctx, intent: JobIntent) -> int:
    st = ctx.state
    key = intent.key
    # An active job restarts as PENDING: it becomes RUNNING again when reconciliation
    # reports its master running. A kill in progress stays a kill in progress.
    phase = JobPhase.PENDING if intent.phase is JobPhase.RUNNING else intent.phase
    job = Job(spec=intent.spec, request_id=intent.request_id, seq=st.next_seq(),
              submitted_at=intent.submitted_at, desired=intent.desired,
              master=Slot(TaskKey(key, TaskKind.MASTER, 0)), phase=phase,
              finished_at=intent.finished_at, message=intent.message,
              target_reason=intent.target_reason or "initial", policy=intent.policy)
    # The wanted workers as they were: resize below keeps these and grows or shrinks
    # from them to the effective count.
    holes = {h for h in intent.holes if h >= 0}
    job.span = intent.desired + len(holes)
    job.holes = {h for h in holes if h < job.span}
    while len(job.holes) < len(holes):  # holes above the span narrow it back
        holes = job.holes
        job.span = intent.desired + len(holes)
        job.holes = {h for h in holes if h < job.span}
    st.add_job(job)
    job.cost.load(intent.cost)
    job.cost.ran = bool(intent.cost)
    for label, c in intent.slots.items():
        tk = slot_key(key, label)
        if tk is None:
            raise RestoreError(f"{key}: unknown slot {label!r}")
        slot = lc.slot_of(job, tk)
        slot.attempts, slot.failures = c.attempts, c.failures
        if c.completed:
            st.move(slot, None, Life.COMPLETED)
    for label, seq in intent.progress.items():
        tk = slot_key(key, label)
        if tk is not None:
            lc.slot_of(job, tk).checkpoint = ("", seq, intent.submitted_at)
    newest: dict[TaskKey, Attempt] = {}
    restored: list[Attempt] = []
    for t in intent.tasks:
        parsed = parse_task_id(t.task_id)
        if parsed is None or parsed[0].job != key:
            raise RestoreError(f"{key}: task {t.task_id!r} is not one of this job's")
        tk, n = parsed
        slot = lc.slot_of(job, tk)
        slot.attempts = max(slot.attempts, n)
        held = t.held if t.held is not None else \
            job.template(tk).resources + ctx.config.executor_overhead
        att = Attempt(job=job, key=tk, number=n, task_id=t.task_id, resources=held,
                      life=Life.LAUNCHED, mesos=TaskState.LAUNCHED,
                      agent_id=t.agent_id or None, hostname=t.hostname or None,
                      executor_id=t.task_id, ports=t.ports, launched_at=ctx.now,
                      heard_at=ctx.now)
        if t.hostname and t.agent_id:
            agent = st.agent(t.agent_id)
            agent.hostname = agent.hostname or t.hostname
        st.add_attempt(att)
        st.heard(att)
        restored.append(att)
        if tk not in newest or newest[tk].number < n:
            newest[tk] = att
    for att in restored:
        slot = lc.slot_of(job, att.key)
        if job.active() and newest[att.key] is att and slot.vacancy is not Life.COMPLETED:
            # The slot's newest attempt is its current one, until Mesos says otherwise.
            st.fill(slot, att)
            lc.arm_staging(st, ctx, att)
        else:
            # Older attempts (being replaced) and those of a job being killed or over are
            # unwanted: written off, so any that Mesos reports alive is killed at once.
            st.move(slot, att, Life.ENDED)
    if job.phase is JobPhase.KILLING and not job.live:
        job.phase = JobPhase.KILLED
        job.finished_at = job.finished_at or intent.submitted_at
    if job.phase.terminal:
        st.finished(job)
    for slot in list(job.slots()):
        lc.settle(st, ctx, job, slot)
    lc.resize(st, ctx, job)
    return len(restored)
