"""Status updates: Mesos' word on an attempt, applied through both tables.

An update first moves the attempt's Mesos state (``task_state``: duplicates, stale and
reordered updates are ignored with a reason), then becomes a lifecycle input for Corral's
view (``slot_state``) through ``lifecycle.drive``. Every update with a uuid is
acknowledged, known or not: Mesos resends unacknowledged updates forever.

An update for a task id Corral has no record of is either one of ours that its slot
still wants (adopted, e.g. after a failover) or killed; ids Corral did not make are
killed without grace.
"""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.handlers import lifecycle as lc
from corral.core.handlers import session
from corral.core.handlers.context import Ctx
from corral.core.model import TaskKey, parse_task_id
from corral.core.slot_state import Input, Life
from corral.core.state import Attempt, CoreState, Job
from corral.core.task_state import TaskState, transition

_LIVE_MESOS = frozenset({"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"})


def on_status(st: CoreState, e: ev.StatusUpdate, ctx: Ctx) -> None:
    att = st.attempts.get(e.task_id)
    if att is None:
        _unknown_task(st, ctx, e)
    else:
        apply_status(st, ctx, att, e)
        lc.maybe_killed(st, ctx, att.job)
    if e.uuid is not None and e.agent_id is not None:
        # Always acknowledge, even stale or unknown updates: Mesos resends otherwise.
        ctx.emit(fx.Acknowledge(e.agent_id, e.task_id, e.uuid))
    session.answered(st, ctx, e.task_id)


def apply_status(st: CoreState, ctx: Ctx, att: Attempt, e: ev.StatusUpdate) -> None:
    att.heard_at = ctx.now
    st.heard(att)
    if e.agent_id:
        st.set_agent(att, e.agent_id)
        if att.hostname is None:
            att.hostname = st.hostname_of(e.agent_id)
    if e.executor_id:
        att.executor_id = e.executor_id
    new, outcome = transition(att.mesos, e.state)
    if not outcome.applied:
        if e.state in _LIVE_MESOS and att.mesos.terminal:
            # Mesos thinks it lives, we already wrote it off: make sure it is gone.
            ctx.note(f"{att.task_id}: {outcome.why}; killing it")
            lc.kill(st, ctx, att)
        elif e.state == att.mesos.mesos_name and att.life in (Life.LAUNCHED, Life.RECONCILING):
            # Nothing new about the task, but Mesos knows it: the launch is confirmed.
            lc.drive(st, ctx, att, Input.CONFIRMED)
        return
    # A reconciliation answer that a task lives says nothing about why: keep no reason.
    quiet = e.reason == "REASON_RECONCILIATION" and new.live
    att.reason = None if quiet else e.reason
    att.message = "" if quiet else e.message
    st.set_mesos(att, new)
    st.mark_changed(att.job)
    if new is TaskState.RUNNING and att.running_since is None:
        att.running_since = ctx.now
    if att.life is Life.ENDED and new.live:
        slot = att.job.slot_if(att.key)
        after = slot.current.task_id if slot is not None and slot.current else "its slot moved on"
        ctx.note(f"{att.task_id} is back ({e.state}, {e.reason}) after {after} replaced it; "
                 "killing it")
        if att.job.accounting.returned(att.task_id, ctx.now):
            st.mark_changed(att.job)
    agent = st.agents.get(att.agent_id or "")
    inp = lc.input_for(att, new, agent_lost=agent is not None and agent.lost)
    if inp is not None:
        lc.drive(st, ctx, att, inp)
    if att.life is Life.ENDED:
        st.forget_attempt(att)   # a stray written off earlier, now gone for good


def _unknown_task(st: CoreState, ctx: Ctx, e: ev.StatusUpdate) -> None:
    parsed = parse_task_id(e.task_id)
    if parsed is None:
        ctx.note(f"status {e.state} for {e.task_id}: not a Corral task")
        if e.state in _LIVE_MESOS:
            ctx.emit(fx.KillTask(e.task_id, e.agent_id, 0.0))
        return
    key, n = parsed
    job = st.jobs.get(key.job)
    if e.state not in _LIVE_MESOS:
        ctx.note(f"status {e.state} for unknown {e.task_id}: nothing to do")
        return
    if job is not None and n > job.attempt_base and _vacant_and_wanted(job, key):
        _adopt(st, ctx, job, key, n, e)
        return
    ctx.note(f"{e.task_id} is running but unwanted; killing it")
    grace = job.spec.kill_grace_seconds if job else 0.0
    ctx.emit(fx.KillTask(e.task_id, e.agent_id, grace))


def _vacant_and_wanted(job: Job, key: TaskKey) -> bool:
    slot = job.slot_if(key)
    if not job.wants(key):
        return False
    return slot is None or (slot.current is None and slot.vacancy is not Life.COMPLETED)


def _adopt(st: CoreState, ctx: Ctx, job: Job, key: TaskKey, n: int,
           e: ev.StatusUpdate) -> None:
    """A live task of ours we had no record of (e.g. after a failover) that its slot
    still wants: take it as the slot's attempt instead of killing working tasks."""
    slot = lc.slot_of(job, key)
    slot.attempts = max(slot.attempts, n)
    att = Attempt(job=job, key=key, number=n, task_id=e.task_id,
                  resources=job.template(key).resources + ctx.config.executor_overhead,
                  life=Life.LAUNCHED, mesos=TaskState.LAUNCHED, agent_id=e.agent_id,
                  hostname=st.hostname_of(e.agent_id), executor_id=e.executor_id or e.task_id,
                  launched_at=ctx.now, heard_at=ctx.now)
    st.add_attempt(att)
    st.heard(att)
    st.fill(slot, att)
    ctx.note(f"adopted {e.task_id} ({e.state})")
    apply_status(st, ctx, att, e)
