"""Exporting a job's durable intent from the core, and restoring a fresh core from it.

Pure (no ZooKeeper here): the runtime turns ``JobIntent`` into store records and back.

What survives a failover is *intent*, not facts: the spec, the desired worker count, the
job's phase, per-slot counters (attempts so far, so a task id is never reused; failures
against the restart limit; completed workers), checkpoint markers, and every task that may
be alive (its id, agent, host and ports). Task *states* are not kept: a restored attempt
starts as ``LAUNCHED`` and Mesos tells the new leader the truth through reconciliation,
which then moves the job (a running master makes it RUNNING again; a task Mesos does not
know ends as lost and its slot is relaunched, never counted as the job's failure).

Restoring into a core that already has jobs is refused: a new leader always starts from a
fresh ``Scheduler`` and the stored state, never mixes the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from corral.core.job_state import JobPhase
from corral.core.model import JobSpec, TaskKey, TaskKind, parse_task_id
from corral.core.scheduler import Attempt, JobRecord, Scheduler, Slot
from corral.core.task_state import TaskState


@dataclass(frozen=True, slots=True)
class TaskIntent:
    """A task that may be alive: Mesos id, agent, and where it listens."""

    task_id: str
    agent_id: str
    hostname: str = ""
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SlotIntent:
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

    @property
    def key(self) -> str:
        return self.spec.key


class RestoreError(ValueError):
    """The intent cannot be restored (a task id that is not this job's, a busy core)."""


def export_job(core: Scheduler, key: str) -> JobIntent | None:
    """The durable intent of job ``key`` as the core holds it now (None: no such job)."""
    job = core.jobs.get(key)
    if job is None:
        return None
    slots = [job.master, *job.workers.values()]
    tasks = tuple(
        TaskIntent(a.task_id, a.agent_id or "", a.hostname or "", tuple(a.ports))
        for a in (core._tasks[tid] for tid in sorted(job.live))
    )
    counters = {
        s.key.label(): SlotIntent(s.attempts, s.failures, s.completed)
        for s in slots if s.attempts or s.failures or s.completed
    }
    progress = {s.key.label(): s.checkpoint[1] for s in slots if s.checkpoint is not None}
    return JobIntent(
        spec=job.spec, request_id=job.request_id, desired=job.desired, phase=job.phase,
        tasks=tasks, slots=counters, progress=progress, submitted_at=job.submitted_at,
        finished_at=job.finished_at, message=job.message, target_reason=job.target_reason,
    )


def restore(core: Scheduler, framework_id: str | None, jobs: Iterable[JobIntent]) -> int:
    """Load ``jobs`` into a fresh core; returns how many tasks it now waits to hear about.

    Jobs are ordered by submission time, so placement priority among equals is kept.
    """
    if core.jobs or core._tasks:
        raise RestoreError("restore needs a fresh scheduler core")
    core.framework_id = framework_id
    restored = 0
    for intent in sorted(jobs, key=lambda j: (j.submitted_at, j.key)):
        restored += _restore_job(core, intent)
    return restored


def _slot_key(job: str, label: str) -> TaskKey | None:
    if label == "master":
        return TaskKey(job, TaskKind.MASTER, 0)
    if label.startswith("worker-") and label[7:].isdigit():
        return TaskKey(job, TaskKind.WORKER, int(label[7:]))
    return None


def _restore_job(core: Scheduler, intent: JobIntent) -> int:
    key = intent.key
    # An active job restarts as PENDING: it becomes RUNNING again when reconciliation
    # reports its master running. A kill in progress stays a kill in progress.
    phase = intent.phase
    if phase is JobPhase.RUNNING:
        phase = JobPhase.PENDING
    core._seq += 1
    job = JobRecord(
        spec=intent.spec, request_id=intent.request_id, seq=core._seq,
        submitted_at=intent.submitted_at, desired=intent.desired,
        master=Slot(TaskKey(key, TaskKind.MASTER, 0)), phase=phase,
        finished_at=intent.finished_at, message=intent.message,
        target_reason=intent.target_reason or "initial",
    )
    core.jobs[key] = job
    for label, c in intent.slots.items():
        tk = _slot_key(key, label)
        if tk is None:
            raise RestoreError(f"{key}: unknown slot {label!r}")
        slot = job.slot(tk)
        slot.attempts, slot.failures, slot.completed = c.attempts, c.failures, c.completed
    for label, seq in intent.progress.items():
        tk = _slot_key(key, label)
        if tk is not None:
            job.slot(tk).checkpoint = ("", seq, intent.submitted_at)
    count = 0
    for t in intent.tasks:
        parsed = parse_task_id(t.task_id)
        if parsed is None or parsed[0].job != key:
            raise RestoreError(f"{key}: task {t.task_id!r} is not one of this job's")
        tk, n = parsed
        slot = job.slot(tk)
        slot.attempts = max(slot.attempts, n)
        att = Attempt(job=job, key=tk, attempt=n, task_id=t.task_id,
                      state=TaskState.LAUNCHED, agent_id=t.agent_id or None,
                      hostname=t.hostname or None, executor_id=t.task_id, ports=t.ports)
        if t.hostname and t.agent_id:
            core._agent_hosts.setdefault(t.agent_id, t.hostname)
        # The slot's newest attempt is its current one; an older live attempt (being
        # replaced) is left non-current, so once reported alive it is killed.
        if slot.current is None or slot.current.attempt < n:
            slot.current = att
        core._tasks[t.task_id] = att
        core._set_live(att, True)
        count += 1
    # A kill requested before the failover: every restored task is unwanted now, so each
    # one reconciliation reports alive is killed again; with none left the kill is done.
    if job.phase is JobPhase.KILLING and not job.live:
        job.phase = JobPhase.KILLED
        job.finished_at = job.finished_at or intent.submitted_at
    job.version = 1
    core._dirty.add(key)
    return count
