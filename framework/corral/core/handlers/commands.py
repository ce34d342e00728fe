"""API commands: submit, kill and scale a job, and the checks the API runs first.

The ``check_*`` functions raise the ``views`` errors a user should see (NotFound,
Conflict, AlreadyExists) before a command is queued; the ``on_*`` handlers never raise:
a command that no longer applies when its turn comes leaves a note instead.
"""

from __future__ import annotations

from corral.core import events as ev
from corral.core.elastic import MANUAL_REASON
from corral.core.handlers import lifecycle as lc
from corral.core.handlers.context import Ctx
from corral.core.job_state import JobInput, job_transition
from corral.core.model import JobSpec, TaskKey, TaskKind
from corral.core.state import CoreState, Job, Slot
from corral.core.views import AlreadyExists, Conflict, NotFound


def job_or_raise(st: CoreState, key: str) -> Job:
    job = st.jobs.get(key)
    if job is None:
        raise NotFound(f"no job {key}")
    return job


def check_submit(st: CoreState, spec: JobSpec, request_id: str) -> Job | None:
    """The existing job for a repeated request id; None if the submit will create the
    job; raises AlreadyExists if another request owns a live job of that key."""
    job = st.jobs.get(spec.key)
    if job is None:
        return None
    if job.request_id == request_id:
        return job
    if not job.phase.terminal:
        raise AlreadyExists(f"job {spec.key} already exists (request {job.request_id})")
    return None


def check_scale(st: CoreState, key: str, workers: int) -> None:
    job = job_or_raise(st, key)
    if not job.active():
        raise Conflict(f"job {key} is {job.phase.value.lower()}; it cannot be scaled")
    lo, hi = job.spec.workers.min, job.spec.workers.max
    if not lo <= workers <= hi:
        raise Conflict(f"workers must be within {lo}..{hi} for job {key} (got {workers})")


def check_kill(st: CoreState, key: str) -> None:
    job = job_or_raise(st, key)
    if job.phase.terminal:
        raise Conflict(f"job {key} already ended {job.phase.value}; there is nothing to kill")


def on_submit(st: CoreState, e: ev.SubmitJob, ctx: Ctx) -> None:
    spec = e.spec
    old = st.jobs.get(spec.key)
    if old is not None and old.request_id == e.request_id:
        ctx.note(f"submit {spec.key}: request {e.request_id} already applied")
        return
    if old is not None and not old.phase.terminal:
        ctx.note(f"submit {spec.key} rejected: job exists (request {old.request_id})")
        return
    base = 0
    if old is not None:
        base = max(s.attempts for s in old.slots())
    job = Job(spec=spec, request_id=e.request_id, seq=st.next_seq(), submitted_at=ctx.now,
              desired=spec.workers.initial,
              master=Slot(TaskKey(spec.key, TaskKind.MASTER), attempts=base),
              attempt_base=base, version=old.version if old is not None else 0)
    st.add_job(job)
    lc.settle(st, ctx, job, job.master)
    lc.refresh_spare(st, ctx, job)
    lc.resize(st, ctx, job)
    ctx.note(f"submitted {spec.key} ({spec.workers.initial} workers)")


def on_kill(st: CoreState, e: ev.KillJob, ctx: Ctx) -> None:
    job = st.jobs.get(e.key)
    if job is None:
        ctx.note(f"kill {e.key} ignored: no such job")
        return
    phase, outcome = job_transition(job.phase, JobInput.KILL_REQUESTED)
    if not outcome.applied:
        ctx.note(f"kill {e.key} {outcome.why}")
        return
    job.phase = phase
    job.message = "killed by request"
    st.mark_changed(job, durable=True)
    for slot in list(job.slots()):
        lc.unwant(st, ctx, job, slot)
    lc.maybe_killed(st, ctx, job)


def on_scale(st: CoreState, e: ev.ScaleJob, ctx: Ctx) -> None:
    try:
        check_scale(st, e.key, e.workers)
    except (NotFound, Conflict) as err:
        ctx.note(f"scale ignored: {err}")
        return
    lc.set_target(st, ctx, st.jobs[e.key], e.workers, MANUAL_REASON)
