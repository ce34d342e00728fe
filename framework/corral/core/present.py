"""Read-only views of the core's state, as the API and CLI show them.

``job_view`` turns one job into a frozen ``JobView``: its state, its slots (the master,
every worker slot the job wants now, and any other slot still holding a live or
completed attempt), what the policy did to it (right-sized size, workers preempted or
retired and why), each slot with Corral's lifecycle state and, for a slot that is not
running, *why* as data (``views.Why``). Session-wide reasons (Corral is not subscribed to
Mesos, or is reconciling after subscribing) override placement's vetoes for every
pending slot: they are what the slot really waits for; a job held by its role's budget
(``core.cost``) says so first.
"""

from __future__ import annotations

from corral.core.cost import PriceTable, job_cost
from corral.core.job_state import public_state
from corral.core.model import TaskKind
from corral.core.slot_state import Life
from corral.core.state import CoreState, Job, Slot
from corral.core.views import (
    WHY_BACKOFF,
    WHY_BUDGET,
    WHY_MASTER,
    WHY_MESOS,
    WHY_OFFERS,
    WHY_RECONCILING,
    JobView,
    PolicyActionView,
    PolicyView,
    Resilience,
    TaskView,
    Why,
)


def job_view(st: CoreState, job: Job, prices: PriceTable | None = None) -> JobView:
    """``prices``: with a table, the view carries the job's cost up to the core's latest
    event (``core.cost``)."""
    tasks = [_task_view(st, job, job.master)]
    for index in sorted(job.workers):
        slot = job.workers[index]
        shown = job.wants(slot.key) or slot.vacancy is Life.COMPLETED or (
            slot.current is not None and slot.current.live)
        if shown:
            tasks.append(_task_view(st, job, slot))
    return JobView(
        key=job.key, spec=job.spec, state=public_state(job.phase, job.master_running()),
        desired_workers=job.desired, tasks=tuple(tasks), progress=job.progress_total(),
        submitted_at=job.submitted_at, finished_at=job.finished_at, message=job.message,
        target_reason=job.target_reason, request_id=job.request_id,
        version=(st.term << 32) + job.version, resilience=_resilience(job),
        cost=job_cost(job, prices, max(st.last_now, job.cost.at or 0.0))
        if prices is not None else None,
        policy=_policy(job),
    )


def _policy(job: Job) -> PolicyView:
    size = job.policy.worker_size
    return PolicyView(
        worker_cpus=size.cpus if size else 0.0, worker_mem=size.mem if size else 0.0,
        size_reason=job.policy.size_reason, preempted=job.preempted, retired=job.retired,
        recent=tuple(PolicyActionView(a.at, a.kind, a.slot, a.task_id, a.why)
                     for a in job.actions))


def _resilience(job: Job) -> Resilience:
    a = job.accounting
    return Resilience(
        losses=a.losses, recoveries=a.recoveries,
        work_lost_seconds=round(a.work_lost_seconds, 3),
        recovery_seconds_total=round(a.recovery_seconds_total, 3),
        recovery_seconds_max=round(a.recovery_seconds_max, 3),
        spare_workers=job.spare, spare_reason=job.spare_reason, recent=tuple(a.recent))


def _session_why(st: CoreState) -> Why | None:
    s = st.session
    if s.gated:
        return Why(WHY_RECONCILING, f"reconciling with Mesos after subscribing "
                                    f"({len(s.awaiting or {})} task(s) not answered yet)")
    if not s.subscribed and s.down_since is not None:
        return Why(WHY_MESOS, f"not connected to the Mesos master: {s.problem}")
    return None


def _why(st: CoreState, job: Job, slot: Slot) -> Why | None:
    state = slot.vacancy
    if state is Life.BACKOFF:
        return Why(WHY_BACKOFF, f"restart backoff after failure {slot.failures}; "
                                f"last: {slot.last_failure}", until=slot.backoff_until)
    if state is Life.WAITING:
        return Why(WHY_MASTER, "master not running yet")
    if state is Life.PENDING:
        if job.cost.held:
            return Why(WHY_BUDGET, job.cost.held)
        return _session_why(st) or slot.why or Why(WHY_OFFERS, "waiting for an offer")
    return None


def _task_view(st: CoreState, job: Job, slot: Slot) -> TaskView:
    cur = slot.current
    if cur is not None:
        return TaskView(
            slot=slot.label, task_id=cur.task_id, state=cur.mesos.mesos_name,
            agent_id=cur.agent_id, hostname=cur.hostname, reason=cur.reason,
            message=cur.message or None, attempt=cur.number, revocable=cur.revocable,
            life=cur.life.value)
    last = slot.last
    if last is not None and (slot.vacancy is Life.COMPLETED or not job.active()):
        # Done for good (a completed worker, or any slot of a job that is over): the
        # attempt that last filled it.
        return TaskView(
            slot=slot.label, task_id=last.task_id, state=last.mesos.mesos_name,
            agent_id=last.agent_id, hostname=last.hostname, reason=last.reason,
            message=last.message or None, attempt=last.number, revocable=last.revocable,
            life=slot.vacancy.value)
    why = _why(st, job, slot) if job.active() else None
    if why is None and slot.key.kind is TaskKind.MASTER and job.active():
        why = Why(WHY_OFFERS, "waiting for an offer")
    return TaskView(
        slot=slot.label, task_id=None, state="PENDING",
        reason=last.reason if last else None,
        message=slot.last_failure or (last.message if last else None) or None,
        why=why, attempt=slot.attempts, life=slot.vacancy.value)
