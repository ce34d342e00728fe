"""Between the core's intents (``core.restore``) and the store's records (``corral.store``).

``batch_for(core, keys, framework_id)`` exports the changed jobs of one loop turn into one
``Batch``; ``intents_from(state)`` turns a loaded ``StoredState`` into what
``core.restore.restore`` takes. Nothing here talks to ZooKeeper.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.core.job_state import JobPhase
from corral.core.restore import JobIntent, SlotIntent, TaskIntent, export_job
from corral.core.scheduler import Scheduler
from corral.core.views import JobState
from corral.store import Batch, JobRecord, SlotRecord, StoredState, TaskRecord


def _slot_label(task_id: str) -> str:
    # corral.<role>.<env>.<name>.<slot label>.<attempt>
    return task_id.split(".")[-2]


def record_of(intent: JobIntent) -> tuple[JobRecord, dict[str, TaskRecord], dict[str, int]]:
    killing = intent.phase is JobPhase.KILLING
    state = JobState.PENDING if killing else JobState(intent.phase.value)
    record = JobRecord(
        spec=intent.spec, desired_workers=intent.desired, state=state,
        request_id=intent.request_id, killing=killing,
        slots={k: SlotRecord(v.attempts, v.failures, v.completed)
               for k, v in intent.slots.items()},
        submitted_at=intent.submitted_at, finished_at=intent.finished_at,
        message=intent.message, target_reason=intent.target_reason,
    )
    tasks = {
        t.task_id: TaskRecord(agent_id=t.agent_id, slot=_slot_label(t.task_id),
                              attempt=int(t.task_id.rsplit(".", 1)[1]),
                              hostname=t.hostname, ports=t.ports)
        for t in intent.tasks
    }
    return record, tasks, dict(intent.progress)


def batch_for(core: Scheduler, keys: Iterable[str], framework_id: str | None = None) -> Batch:
    """One batch with the current intent of every job in ``keys`` (gone jobs deleted)."""
    batch = Batch()
    if framework_id:
        batch.set_framework_id(framework_id)
    for key in sorted(set(keys)):
        intent = export_job(core, key)
        if intent is None:
            batch.delete_job(key)
            continue
        record, tasks, progress = record_of(intent)
        batch.put_job(record).put_tasks(key, tasks).put_progress(key, progress)
    return batch


def intents_from(state: StoredState) -> list[JobIntent]:
    out = []
    for job in state.jobs.values():
        r = job.record
        phase = JobPhase.KILLING if r.killing else JobPhase(r.state.value)
        out.append(JobIntent(
            spec=r.spec, request_id=r.request_id, desired=r.desired_workers, phase=phase,
            tasks=tuple(TaskIntent(tid, t.agent_id, t.hostname, t.ports)
                        for tid, t in sorted(job.tasks.items())),
            slots={k: SlotIntent(v.attempts, v.failures, v.completed)
                   for k, v in r.slots.items()},
            progress=dict(job.progress), submitted_at=r.submitted_at,
            finished_at=r.finished_at, message=r.message, target_reason=r.target_reason,
        ))
    return out
