"""Time: the shell's one-second tick, and the timers every handled event fires first.

Timers (``state.TimerKind``) turn into lifecycle inputs when due: a restart backoff that
ended settles its slot; a launch without word from Mesos, an unanswered reconciliation,
an unconfirmed kill and a draining worker's deadline each drive their attempt. A timer
that no longer applies (its attempt moved on since it was armed) is dropped.

The tick also runs the periodic work: the policy pass (its decisions applied through
``lifecycle.apply_decision``: targets, preemptions, retirements, right-sized sizes),
reconciliation (the gate's re-asks, implicit and stale-task explicit rounds), the end of
maintenance windows, and the over-provisioning rule's decay.
"""

from __future__ import annotations

from corral.core import events as ev
from corral.core.handlers import lifecycle as lc
from corral.core.handlers import session
from corral.core.handlers.context import Ctx
from corral.core.slot_state import Input, Life
from corral.core.state import CoreState, Timer, TimerKind
from corral.core.task_state import TaskState

_INPUT = {
    TimerKind.STAGING: Input.STAGING_TIMEOUT,
    TimerKind.RECONCILE: Input.RECONCILE_TIMEOUT,
    TimerKind.KILL: Input.KILL_TIMEOUT,
    TimerKind.DEADLINE: Input.DEADLINE,
}


def fire_due(st: CoreState, ctx: Ctx) -> None:
    """Fire the timers due at ``ctx.now``, up to ``timers_per_event`` (called before each
    event is handled; a timeout is a lower bound, so one fired an event later is fine)."""
    for timer in st.due_timers(ctx.now, ctx.config.timers_per_event):
        _fire(st, ctx, timer)


def _fire(st: CoreState, ctx: Ctx, timer: Timer) -> None:
    if timer.kind is TimerKind.BACKOFF:
        job = st.jobs.get(timer.slot.job) if timer.slot is not None else None
        slot = job.slot_if(timer.slot) if job is not None and timer.slot else None
        if job is not None and slot is not None and slot.vacated == timer.token:
            lc.settle(st, ctx, job, slot)
        return
    att = st.attempts.get(timer.task_id)
    if att is None or att.edges != timer.token:
        return
    if timer.kind is TimerKind.RECONCILE and att.life is Life.RECONCILING:
        # Written off: whatever Mesos says later, a live report gets it killed.
        att.reason = "REASON_RECONCILIATION"
        att.message = f"no answer to reconciliation within {ctx.config.reconcile_timeout:g}s"
        st.set_mesos(att, TaskState.LOST)
    lc.drive(st, ctx, att, _INPUT[timer.kind])
    lc.maybe_killed(st, ctx, att.job)


def on_tick(st: CoreState, e: ev.Tick, ctx: Ctx) -> None:
    now = ctx.now
    if ctx.elastic is not None:
        for decision in ctx.elastic.step(st, now):
            job = st.jobs.get(decision.job)
            if job is not None and job.active():
                lc.apply_decision(st, ctx, job, decision)
    session.gate_tick(st, ctx)
    session.reconcile_tick(st, ctx)
    for agent in st.agents.values():
        if agent.drain is not None and agent.drain[1] is not None and now >= agent.drain[1]:
            agent.drain = None
    for job in st.active_jobs():
        if job.spare or job.terminations:
            lc.refresh_spare(st, ctx, job)
    cfg = ctx.config
    for key in st.retire_jobs(now, cfg.finished_jobs_kept, cfg.finished_job_ttl):
        ctx.note(f"{key} retired from the scheduler (finished; kept in the store no more)")
