"""Driving the slot lifecycle table: inputs in, the table's edge applied, its actions done.

Every change of a slot's or an attempt's ``Life`` goes through ``drive`` (attempts) or
``settle`` (vacant slots); both look the edge up in ``slot_state.EDGES`` and carry out
its actions here, in one fixed order (``_ORDER``). The job-wide consequences (the job's
own lifecycle table, ``job_state``) are applied here too: a master up or down, a job
finished, given up or killed, and a job's worker target changing (``set_target``,
``apply_decision``: the policy's decisions; ``resize`` chooses which workers a smaller
target stops — the preemption victims and retirees the policy named, else those that lose
least — and records why).

Timers are armed on entering a state that waits for something (``LAUNCHED``: the staging
timeout; ``RECONCILING``: the reconciliation timeout; ``BACKOFF``: the restart backoff;
a detached ``DRAINING`` worker: its deadline) and by every KILL (the kill timeout). A
timer carries the attempt's edge count (or the slot's vacancy count) when armed, so one
that fires after the state moved on is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from corral.core import accounting as acct
from corral.core import cost, workload
from corral.core import effects as fx
from corral.core.elastic import Decision, at_risk
from corral.core.handlers.context import Ctx
from corral.core.job_state import JobInput, JobPhase, job_transition
from corral.core.memory import PREEMPTED, RETIRED, PolicyAction
from corral.core.model import TaskKey, TaskKind
from corral.core.resources import Resources
from corral.core.slot_state import Action, Edge, Input, Life, settle_input, step
from corral.core.spot import OverProvision, spare_workers
from corral.core.state import OVERPROVISION_LABEL, Attempt, CoreState, Job, Slot, TimerKind
from corral.core.task_state import Cause, TaskState, classify, describe_failure

# The order actions are carried out in, whatever order an edge lists them.
_ORDER = (
    Action.PERSIST, Action.SEND_DRAIN, Action.ASK_RETIRE, Action.KILL, Action.RETRY_KILL,
    Action.RECONCILE,
    Action.COUNT_NOTICE, Action.COUNT_LOSS, Action.ADD_WORK_LOST, Action.RECOVERED,
    Action.MASTER_DOWN, Action.COUNT_FAILURE, Action.MASTER_UP, Action.FINISH_JOB,
    Action.COMPLETE, Action.DETACH,
)


def slot_of(job: Job, key: TaskKey) -> Slot:
    """The job's slot ``key``, created (vacant, EMPTY) if it does not exist yet."""
    if key.kind is TaskKind.MASTER:
        return job.master
    s = job.workers.get(key.index)
    if s is None:
        s = job.workers[key.index] = Slot(key, attempts=job.attempt_base)
    return s


def input_for(att: Attempt, state: TaskState, agent_lost: bool) -> Input | None:
    """The lifecycle input a Mesos state (already applied to ``att``) means."""
    if state in (TaskState.LAUNCHED, TaskState.STARTING, TaskState.KILLING):
        return Input.CONFIRMED
    if state is TaskState.RUNNING:
        return Input.STARTED
    if state is TaskState.UNREACHABLE:
        return Input.LOST
    if not state.terminal:
        return None
    requested = att.life is Life.KILL_SENT or (
        att.life is Life.DRAINING and att.key.kind is TaskKind.MASTER)
    cause = classify(state, att.reason, kill_requested=requested, agent_lost=agent_lost)
    return {Cause.SUCCEEDED: Input.SUCCEEDED, Cause.KILLED: Input.KILLED,
            Cause.JOB_FAILURE: Input.FAILED, Cause.INFRASTRUCTURE: Input.LOST}[cause]


def drive(st: CoreState, ctx: Ctx, att: Attempt, inp: Input) -> Edge | None:
    """Apply ``inp`` to attempt ``att``; None (and a note) if the table has no edge."""
    edge = step(att.key.kind, att.life, inp)
    if edge is None:
        if att.life is not Life.ENDED:
            ctx.note(f"{att.task_id}: {inp.value} ignored in {att.life.value}")
        return None
    job = att.job
    slot = slot_of(job, att.key)
    st.move(slot, att, edge.next)
    _arm_on_entry(st, ctx, att)
    was = cost.before(job)
    for action in _ORDER:
        if action in edge.actions:
            _do(st, ctx, action, job, slot, att, inp)
    cost.after_edge(st, ctx.config.cost, att, was, edge.actions, ctx.now)
    if att.life is Life.ENDED:
        if slot.current is att:
            st.vacate(slot, Life.COMPLETED if Action.COMPLETE in edge.actions else Life.EMPTY)
            settle(st, ctx, job, slot)
        elif not att.live:
            st.retire_done(slot, att)
        st.forget_attempt(att)
    elif slot.current is not att and not att.live:
        st.retire_done(slot, att)
    return edge


def settle(st: CoreState, ctx: Ctx, job: Job, slot: Slot) -> None:
    """Move a vacant slot to the vacancy its conditions call for (EMPTY, BACKOFF,
    WAITING or PENDING); a COMPLETED slot stays completed."""
    if slot.current is not None or slot.vacancy is Life.COMPLETED:
        return
    inp = settle_input(
        slot.vacancy, wanted=job.wants(slot.key), in_backoff=ctx.now < slot.backoff_until,
        needs_master=slot.key.kind is TaskKind.WORKER and not job.master_running())
    edge = step(slot.key.kind, slot.vacancy, inp)
    if edge is None:
        return  # already where the conditions put it
    st.move(slot, None, edge.next)
    if edge.next is Life.BACKOFF:
        st.add_timer(slot.backoff_until, TimerKind.BACKOFF, slot=slot.key, token=slot.vacated)


def unwant(st: CoreState, ctx: Ctx, job: Job, slot: Slot, gentle: bool = False) -> None:
    """The job no longer wants this slot: its attempts are killed, its vacancy EMPTY.

    ``gentle`` (a scale-down, not the job's end): a worker its framework can retire is
    retired through the job's master instead (``Input.RETIRE``), and attempts already
    draining finish draining by their deadline."""
    for att in list(slot.retiring.values()):
        if not (gentle and att.life is Life.DRAINING):
            drive(st, ctx, att, Input.UNWANTED)
    cur = slot.current
    if cur is not None:
        if gentle and can_retire(job, cur):
            cur.deadline = ctx.now + workload.RETIRE_SECONDS + \
                job.spec.kill_grace_seconds + ctx.config.drain_margin_seconds
            drive(st, ctx, cur, Input.RETIRE)
        else:
            drive(st, ctx, cur, Input.UNWANTED)
    settle(st, ctx, job, slot)


def can_retire(job: Job, att: Attempt) -> bool:
    """Whether the job's master can retire running worker ``att`` through its framework
    (Dask, with Corral's own workers)."""
    return (att.key.kind is TaskKind.WORKER and att.life is Life.RUNNING
            and _retires_through(job, att))


def _retires_through(job: Job, att: Attempt) -> bool:
    master = job.master.current
    return (workload.retires_through_master(job.spec) and att.mesos is TaskState.RUNNING
            and master is not None and master.life is Life.RUNNING
            and master.mesos is TaskState.RUNNING and bool(master.executor_id)
            and bool(master.agent_id))


def _ask_retire(st: CoreState, ctx: Ctx, job: Job, att: Attempt) -> bool:
    """Tell the job's master to retire ``att`` before its deadline's kill (False: it
    cannot be told, so the worker is told to drain itself instead)."""
    master = job.master.current
    if att.deadline is None or master is None or not _retires_through(job, att):
        return False
    assert master.agent_id is not None and master.executor_id is not None
    by = att.deadline - job.spec.kill_grace_seconds - ctx.config.drain_margin_seconds
    ctx.emit(fx.SendMessage(master.agent_id, master.executor_id,
                            workload.retire_message([att.task_id], by)))
    ctx.note(f"asked the master of {job.key} to retire {att.task_id} by {by:.0f}")
    return True


def kill(st: CoreState, ctx: Ctx, att: Attempt) -> None:
    """Send a KILL and arm its timeout (grace plus the retry interval, backing off)."""
    att.kills += 1
    grace = att.job.spec.kill_grace_seconds
    ctx.emit(fx.KillTask(att.task_id, att.agent_id, grace))
    cfg = ctx.config
    wait = min(cfg.kill_retry_seconds * 2 ** (att.kills - 1), cfg.kill_retry_max)
    st.add_timer(ctx.now + grace + wait, TimerKind.KILL, task_id=att.task_id, token=att.edges)


def _arm_on_entry(st: CoreState, ctx: Ctx, att: Attempt) -> None:
    cfg = ctx.config
    if att.life is Life.RECONCILING:
        st.add_timer(ctx.now + cfg.reconcile_timeout, TimerKind.RECONCILE,
                     task_id=att.task_id, token=att.edges)
    elif att.life is Life.DRAINING and att.key.kind is TaskKind.WORKER \
            and att.deadline is not None:
        at = att.deadline - att.job.spec.kill_grace_seconds - cfg.drain_margin_seconds
        st.add_timer(at, TimerKind.DEADLINE, task_id=att.task_id, token=att.edges)


def arm_staging(st: CoreState, ctx: Ctx, att: Attempt) -> None:
    st.add_timer(ctx.now + ctx.config.staging_timeout, TimerKind.STAGING,
                 task_id=att.task_id, token=att.edges)


# ------------------------------------------------------------------ actions

def _do(st: CoreState, ctx: Ctx, action: Action, job: Job, slot: Slot, att: Attempt,
        inp: Input) -> None:
    if action is Action.PERSIST:
        st.mark_changed(job, durable=True)
    elif action is Action.KILL:
        kill(st, ctx, att)
    elif action is Action.RETRY_KILL:
        st.add_timer(ctx.now + ctx.config.send_retry_seconds, TimerKind.KILL,
                     task_id=att.task_id, token=att.edges)
    elif action is Action.RECONCILE:
        ctx.emit(fx.Reconcile(((att.task_id, att.agent_id),)))
    elif action is Action.SEND_DRAIN:
        # A Dask worker is retired by its master (its results move first); any other
        # task checkpoints and winds down when its executor is told.
        retired = att.key.kind is TaskKind.WORKER and _ask_retire(st, ctx, job, att)
        if not retired and att.agent_id and att.executor_id:
            ctx.emit(fx.SendMessage(att.agent_id, att.executor_id,
                                    {"kind": "drain", "deadline": att.deadline}))
    elif action is Action.ASK_RETIRE:
        _ask_retire(st, ctx, job, att)
    elif action is Action.COUNT_NOTICE:
        job.accounting.lost(slot.label, att.task_id, acct.NOTICE, ctx.now, 0.0)
        job.terminations.append(ctx.now)
        refresh_spare(st, ctx, job)
        st.mark_changed(job)
    elif action is Action.COUNT_LOSS:
        _count_loss(st, ctx, job, slot, att)
    elif action is Action.ADD_WORK_LOST:
        job.accounting.add_work(slot.label, att.task_id, ctx.now, _work_lost(ctx, slot, att))
        st.mark_changed(job)
    elif action is Action.RECOVERED:
        _recovered(st, ctx, job, att)
    elif action is Action.MASTER_DOWN:
        _master_down(st, ctx, job, att, inp)
    elif action is Action.COUNT_FAILURE:
        _count_failure(st, ctx, job, slot, att)
    elif action is Action.MASTER_UP:
        master_up(st, ctx, job, att)
    elif action is Action.FINISH_JOB:
        finish(st, ctx, job, JobInput.MASTER_FINISHED, "master finished")
    elif action is Action.COMPLETE:
        pass  # the vacancy after the attempt leaves is COMPLETED (see ``drive``)
    elif action is Action.DETACH:
        st.vacate(slot, Life.EMPTY)
        settle(st, ctx, job, slot)


def _work_lost(ctx: Ctx, slot: Slot, att: Attempt) -> float:
    ckpt = slot.checkpoint[2] if slot.checkpoint else None
    return acct.work_lost(ctx.now, att.running_since, ckpt)


def _count_loss(st: CoreState, ctx: Ctx, job: Job, slot: Slot, att: Attempt) -> None:
    """An infrastructure loss of ``att``: accounting and the over-provisioning rule."""
    kind = acct.loss_kind(att.reason, att.mesos)
    ctx.note(f"{att.task_id} lost ({att.mesos.mesos_name}, {att.reason}); "
             f"relaunching {slot.label}")
    job.accounting.lost(slot.label, att.task_id, kind, ctx.now, _work_lost(ctx, slot, att))
    job.terminations.append(ctx.now)
    refresh_spare(st, ctx, job)
    st.mark_changed(job)


def _recovered(st: CoreState, ctx: Ctx, job: Job, att: Attempt) -> None:
    before = job.accounting.recoveries
    job.accounting.running(att.key.label(), att.task_id, ctx.now)
    if job.accounting.recoveries != before:
        last = next((r for r in reversed(job.accounting.recent)
                     if r.replacement_task_id == att.task_id), None)
        if last is not None and last.recovery_seconds is not None:
            job.recovery_times.append((ctx.now, last.recovery_seconds))
        st.mark_changed(job)


def _count_failure(st: CoreState, ctx: Ctx, job: Job, slot: Slot, att: Attempt) -> None:
    slot.failures += 1
    slot.last_failure = describe_failure(att.mesos, att.reason, att.message)
    st.mark_changed(job, durable=True)
    limit = job.spec.restart.max_failures
    if slot.failures > limit:
        finish(st, ctx, job, JobInput.GAVE_UP,
               f"{slot.label} failed {slot.failures} times; last: {slot.last_failure}")
        return
    r = job.spec.restart
    delay = min(r.backoff_seconds * 2 ** (slot.failures - 1), r.backoff_max_seconds)
    slot.backoff_until = ctx.now + delay
    ctx.note(f"{slot.label} of {job.key} failed ({slot.last_failure}); "
             f"retry {slot.failures}/{limit} in {delay:g}s")


def master_up(st: CoreState, ctx: Ctx, job: Job, att: Attempt) -> None:
    """The master runs: the job is RUNNING, its address known, its workers may start (and
    the live ones are told where the master now is)."""
    host = att.hostname or st.hostname_of(att.agent_id) or "unknown"
    address = f"{host}:{att.ports[0]}" if att.ports else host
    job.master_address = address
    phase, outcome = job_transition(job.phase, JobInput.MASTER_RUNNING)
    job.phase = phase
    if outcome.applied:
        job.message = f"master running at {address}"
    st.mark_changed(job, durable=True)
    for index in sorted(job.workers):
        slot = job.workers[index]
        # A draining worker still needs the master to hand in its last result.
        for w in (slot.current, *slot.retiring.values()):
            if w is not None and w.live and w.agent_id and w.executor_id:
                ctx.emit(fx.SendMessage(w.agent_id, w.executor_id,
                                        {"kind": "master_address", "address": address}))
        settle(st, ctx, job, slot)


def _master_down(st: CoreState, ctx: Ctx, job: Job, att: Attempt, inp: Input) -> None:
    if inp is Input.KILLED:
        message = (f"master moved off draining agent {att.agent_id}; "
                   "relaunching from its checkpoint")
    elif inp is Input.FAILED:
        message = (f"master failed ({describe_failure(att.mesos, att.reason, att.message)});"
                   " restarting")
    else:
        message = f"master lost ({att.mesos.mesos_name}); relaunching"
    job.master_address = None
    phase, outcome = job_transition(job.phase, JobInput.MASTER_LOST)
    if outcome.applied:
        job.phase = phase
        job.message = message
    st.mark_changed(job, durable=True)
    for slot in job.workers.values():
        settle(st, ctx, job, slot)


def finish(st: CoreState, ctx: Ctx, job: Job, what: JobInput, message: str) -> None:
    """The job ends (master finished, gave up): every slot becomes unwanted."""
    phase, outcome = job_transition(job.phase, what)
    if not outcome.applied:
        ctx.note(f"{job.key}: {outcome.why}")
        return
    job.phase = phase
    job.message = message
    job.finished_at = ctx.now
    st.mark_changed(job, durable=True)
    st.finished(job)
    for slot in list(job.slots()):
        unwant(st, ctx, job, slot)
    ctx.note(f"{job.key} {phase.value}: {message}")


def maybe_killed(st: CoreState, ctx: Ctx, job: Job) -> None:
    """A kill is complete once nothing of the job is live on any agent."""
    if job.phase is JobPhase.KILLING and not job.live:
        phase, _ = job_transition(job.phase, JobInput.ALL_TASKS_TERMINAL)
        job.phase = phase
        job.finished_at = ctx.now
        st.mark_changed(job, durable=True)
        st.finished(job)


def set_target(st: CoreState, ctx: Ctx, job: Job, workers: int, reason: str,
               named: Mapping[str, tuple[str, str]] | None = None) -> None:
    """Change the desired worker count (clamped to the spec's bounds). ``named``: workers
    to stop first if the count falls (task id -> (action kind, why)), e.g. the policy's
    preemption victims; the rest are chosen by ``drop_order``."""
    workers = max(job.spec.workers.min, min(job.spec.workers.max, workers))
    if workers == job.desired and reason == job.target_reason and not named:
        return
    before = job.desired
    job.desired = workers
    job.target_reason = reason
    st.mark_changed(job, durable=True)
    if workers == before and not named:
        return  # only the reason changed: no slot to add or stop (resizing is O(workers))
    why = f"target {before} -> {workers}: {reason}" if workers != before else reason
    resize(st, ctx, job, named, why)


def apply_decision(st: CoreState, ctx: Ctx, job: Job, d: Decision) -> None:
    """A policy pass's decision for ``job``: its memory first (a right-sized reservation
    applies to the launches the new target makes), then its target and the workers to
    stop first: the preemption victims, then the policy's retirees."""
    if d.memory is not None:
        st.set_policy(job, d.memory, d.durable)
    if d.workers is None:
        return
    named: dict[str, tuple[str, str]] = {}
    for tid in d.preempt:
        named[tid] = (PREEMPTED, d.preempt_reason)
    for tid in d.retire:
        named.setdefault(tid, (RETIRED, d.reason))
    set_target(st, ctx, job, d.workers, d.reason, named)


def launch_resources(job: Job, key: TaskKey) -> Resources:
    """What a new attempt of slot ``key`` reserves: a worker's right-sized size once the
    policy measured one, else the spec's."""
    if key.kind is TaskKind.WORKER and job.policy.worker_size is not None:
        return job.policy.worker_size
    return job.template(key).resources


def resize(st: CoreState, ctx: Ctx, job: Job,
           named: Mapping[str, tuple[str, str]] | None = None, why: str = "") -> None:
    """Bring the wanted worker slots in line with the effective count.

    Growing wants the lowest indexes not wanted yet (holes left by earlier retirements
    first). Shrinking stops the slots ``drop_order`` ranks first; each worker stopped is
    recorded with why (``corral status``). Slots no longer wanted are made so through the
    lifecycle table (``unwant``: an attempt gets ``Input.UNWANTED`` and is killed with the
    job's grace, so the SDK's ``on_terminate`` can checkpoint); wanted ones are settled.
    """
    if not job.active():
        for index in sorted(job.workers, reverse=True):
            _unwant_slot(st, ctx, job, job.workers[index], gentle=False)
        return
    n = job.effective_workers()
    current = job.wanted_indexes()
    if len(current) > n:
        order = drop_order(job, current, named or {}, ctx.now)
        dropped = order[:len(current) - n]
        gone = set(dropped)
        keep = [i for i in current if i not in gone]
        for i in dropped:
            _record_drop(st, ctx, job, i, named or {}, why)
    elif len(current) < n:
        have = set(current)
        add: list[int] = []
        i = 0
        while len(add) < n - len(current):
            if i not in have:
                add.append(i)
            i += 1
        keep = sorted(current + add)
    else:
        keep = current
    job.span = keep[-1] + 1 if keep else 0
    job.holes = set(range(job.span)).difference(keep)
    for index in sorted(job.workers, reverse=True):
        slot = job.workers[index]
        if not job.wants(slot.key):
            _unwant_slot(st, ctx, job, slot, gentle=True)
    for index in keep:
        settle(st, ctx, job, slot_of(job, TaskKey(job.key, TaskKind.WORKER, index)))


def drop_order(job: Job, indexes: Sequence[int], named: Mapping[str, tuple[str, str]],
               now: float) -> list[int]:
    """The worker indexes to stop first when a job shrinks: slots whose worker completed
    (they hold nothing), vacant slots and attempts already being stopped, attempts not
    running yet (highest index first),
    then the workers ``named`` by the policy in its order, then running workers by least
    work lost (the most recent checkpoint: ``elastic.at_risk``), then highest index."""
    rank_named = {tid: k for k, tid in enumerate(named)}

    def rank(i: int) -> tuple[int, float, int]:
        slot = job.workers.get(i)
        att = slot.current if slot is not None else None
        if att is None:
            return (0 if slot is not None and slot.vacancy is Life.COMPLETED else 1, 0.0, -i)
        if not att.life.active:
            return (1, 0.0, -i)  # already being stopped (a kill sent)
        if att.task_id in rank_named:
            return (3, float(rank_named[att.task_id]), -i)
        if att.mesos is not TaskState.RUNNING:
            return (2, 0.0, -i)
        return (4, at_risk(att, now), -i)

    return sorted(indexes, key=rank)


def _record_drop(st: CoreState, ctx: Ctx, job: Job, index: int,
                 named: Mapping[str, tuple[str, str]], why: str) -> None:
    slot = job.workers.get(index)
    att = slot.current if slot is not None else None
    if slot is None or att is None or not att.life.active:
        return  # nothing there, or already being stopped
    kind, reason = named.get(att.task_id, (RETIRED, why))
    if att.mesos is not TaskState.RUNNING:
        loss = "not running yet: loses nothing"
    else:
        ckpt = slot.checkpoint[2] if slot is not None and slot.checkpoint else None
        lost = at_risk(att, ctx.now)
        loss = (f"loses least: {lost:.0f}s since its last checkpoint" if ckpt is not None
                and ckpt >= (att.running_since or 0.0) else
                f"loses least: never checkpointed, running {lost:.0f}s")
    text = f"{reason}; {loss}" if reason else loss
    st.record_action(job, PolicyAction(ctx.now, kind, slot.label, att.task_id, text))
    ctx.note(f"{job.key}: {kind} {slot.label} ({att.task_id}): {text}")


def _unwant_slot(st: CoreState, ctx: Ctx, job: Job, slot: Slot, gentle: bool) -> None:
    """``unwant`` a slot that still has something to stop or a vacancy to leave
    (``gentle``: a scale-down, see ``unwant``)."""
    job.accounting.forget(slot.label)
    if slot.current is not None or any(a.life is Life.DRAINING
                                       for a in slot.retiring.values()) \
            or slot.vacancy in (Life.PENDING, Life.BACKOFF, Life.WAITING):
        unwant(st, ctx, job, slot, gentle=gentle)


def refresh_spare(st: CoreState, ctx: Ctx, job: Job) -> None:
    """Re-apply the over-provisioning rule; fewer spares stop the workers that lose
    least (``drop_order``)."""
    if not job.active():
        return
    now = ctx.now
    rule = rule_for(ctx, job)
    horizon = rule.horizon_seconds
    while job.terminations and now - job.terminations[0] > horizon:
        job.terminations.pop(0)
    recoveries = [took for when, took in job.recovery_times if now - when <= horizon]
    room = max(0, job.spec.workers.max - job.desired)
    sp = spare_workers(job.terminations, recoveries, now, rule, room)
    if sp.workers == job.spare and sp.reason == job.spare_reason:
        return
    job.spare, job.spare_reason = sp.workers, sp.reason
    st.mark_changed(job, durable=True)
    resize(st, ctx, job)


def rule_for(ctx: Ctx, job: Job) -> OverProvision:
    """The scheduler's rule, with the job's ``overprovision`` label as its multiple."""
    raw = dict(job.spec.labels).get(OVERPROVISION_LABEL)
    if raw is None:
        return ctx.config.overprovision
    try:
        return replace(ctx.config.overprovision, multiple=float(raw))
    except ValueError:
        ctx.note(f"{job.key}: label {OVERPROVISION_LABEL}={raw!r} is not a multiple >= 0; "
                 "using the default")
        return ctx.config.overprovision
