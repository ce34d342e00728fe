"""The Mesos session: subscription, disconnection, the reconciliation gate, and effects
the shell could not carry out.

After every (re)subscription Corral follows Mesos' reconciliation advice: explicit
reconciliation of every task it knows, re-asked with backoff for those not answered yet,
then one implicit reconciliation (Mesos reports every task of ours it knows, so unknown
ones are adopted or killed). Until the explicit round is answered (or ``gate_deadline``
passes) the *gate* is closed: offers are held, not placed, so a new leader never places a
second master into a slot whose first one it has not heard about yet.

An effect the shell could not deliver comes back as ``EffectFailed``: an ACCEPT that may
not have reached Mesos makes its attempts reconcile (``SEND_FAILED``), a KILL is retried,
a failed SUPPRESS/REVIVE or inverse-offer accept is asked again.
"""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.handlers import lifecycle as lc
from corral.core.handlers.context import Ctx
from corral.core.slot_state import Input
from corral.core.state import CoreState
from corral.core.task_state import TaskState


def on_subscribed(st: CoreState, e: ev.Subscribed, ctx: Ctx) -> None:
    s = st.session
    st.framework_id = e.framework_id
    s.subscribed, s.down_since, s.problem = True, None, ""
    s.suppressed = False  # a fresh subscription is not suppressed; re-evaluated after
    s.held = []
    _touch_pending(st)
    tasks = {a.task_id: a.agent_id for a in st.unsettled_attempts()}
    ctx.note(f"subscribed as {e.framework_id}; reconciling {len(tasks)} tasks"
             + (" (implicit)" if not tasks else ""))
    if not tasks:
        s.awaiting = None
        _implicit(st, ctx)
        return
    ctx.emit(fx.Reconcile(tuple(sorted(tasks.items()))))
    s.awaiting = tasks
    s.gate_started = ctx.now
    s.gate_round = 0
    s.gate_next = ctx.now + ctx.config.gate_backoff[0]


def on_disconnected(st: CoreState, e: ev.Disconnected, ctx: Ctx) -> None:
    s = st.session
    problem = e.reason or "the connection to the Mesos master was lost"
    if s.subscribed or s.problem != problem:
        ctx.note(f"not connected to the Mesos master: {problem}")
    if s.subscribed or s.down_since is None:
        s.down_since = ctx.now
    s.subscribed = False
    s.problem = problem
    s.held = []       # offers of a broken subscription are void
    s.awaiting = None
    _touch_pending(st)


def _touch_pending(st: CoreState) -> None:
    """Pending slots' reasons follow the session (not connected, reconciling): their
    jobs' views change with it."""
    for key in st.pending_jobs:
        st.mark_changed(st.jobs[key])


def answered(st: CoreState, ctx: Ctx, task_id: str) -> None:
    """A status update arrived for ``task_id``: one fewer to wait for."""
    s = st.session
    if s.awaiting is None:
        return
    s.awaiting.pop(task_id, None)
    if not s.awaiting:
        open_gate(st, ctx, "every task answered")


def gate_tick(st: CoreState, ctx: Ctx) -> None:
    """Ask again for tasks not answered yet, backing off; open at the deadline."""
    s = st.session
    if s.awaiting is None or ctx.now < s.gate_next:
        return
    cfg = ctx.config
    if ctx.now - s.gate_started >= cfg.gate_deadline:
        ctx.note(f"reconciliation: no answer for {len(s.awaiting)} tasks after "
                 f"{ctx.now - s.gate_started:.0f}s; going on")
        open_gate(st, ctx, "deadline")
        return
    ctx.emit(fx.Reconcile(tuple(sorted(s.awaiting.items()))))
    s.gate_round += 1
    s.gate_next = ctx.now + cfg.gate_backoff[min(s.gate_round, len(cfg.gate_backoff) - 1)]


def open_gate(st: CoreState, ctx: Ctx, why: str) -> None:
    from corral.core.handlers import offers

    s = st.session
    took = ctx.now - s.gate_started
    s.awaiting = None
    _touch_pending(st)
    _implicit(st, ctx)
    ctx.note(f"reconciliation finished in {took:.3f}s ({why})")
    held, s.held = s.held, []
    if held:
        offers.decide(st, ctx, held)


def _implicit(st: CoreState, ctx: Ctx) -> None:
    ctx.emit(fx.Reconcile(()))
    st.session.last_implicit = ctx.now


def reconcile_tick(st: CoreState, ctx: Ctx) -> None:
    """Periodic reconciliation: implicit every ``reconcile_interval``, and explicit for
    live tasks not heard of for ``stale_after`` (bounded per check)."""
    s, cfg = st.session, ctx.config
    if not s.subscribed or s.gated:
        return
    if s.last_implicit is not None and ctx.now - s.last_implicit >= cfg.reconcile_interval:
        _implicit(st, ctx)
    if ctx.now - s.last_stale_check < cfg.stale_check_interval:
        return
    s.last_stale_check = ctx.now
    stale = st.stale_attempts(ctx.now - cfg.stale_after, cfg.stale_batch)
    if stale:
        for att in stale:
            att.heard_at = ctx.now  # asked now: not again before stale_after
            st.heard(att)
        ctx.emit(fx.Reconcile(tuple((a.task_id, a.agent_id) for a in stale)))
        ctx.note(f"reconciling {len(stale)} task(s) not heard of for "
                 f"{cfg.stale_after:g}s")


def on_effect_failed(st: CoreState, e: ev.EffectFailed, ctx: Ctx) -> None:
    eff = e.effect
    ctx.note(f"{type(eff).__name__} not carried out: {e.reason}")
    if isinstance(eff, fx.LaunchTasks):
        for t in eff.tasks:
            att = st.attempts.get(t.task_id)
            if att is not None:
                lc.drive(st, ctx, att, Input.SEND_FAILED)
    elif isinstance(eff, fx.KillTask):
        att = st.attempts.get(eff.task_id)
        if att is not None:
            # A stray (written off, then reported alive) has no edge here: reconciliation
            # reports it alive again, and that kills it again.
            lc.drive(st, ctx, att, Input.SEND_FAILED)
    elif isinstance(eff, (fx.Suppress, fx.Revive)):
        # Not known to have taken effect: flip our belief so the next event re-sends.
        st.session.suppressed = not st.session.suppressed
    elif isinstance(eff, fx.AcceptInverseOffers):
        st.inverse_accepted.difference_update(eff.ids)
    # DECLINE: the offers come back after Mesos' offer timeout or are rescinded.
    # ACKNOWLEDGE: Mesos resends the update. RECONCILE: the timeouts ask again.
    # MESSAGE: a lost drain message still ends in the deadline's kill.


def on_framework_removed(st: CoreState, e: ev.FrameworkRemoved, ctx: Ctx) -> None:
    """Mesos removed our framework (torn down, or no scheduler within the failover
    timeout): every task of it is gone. They are the infrastructure's losses, replaced
    under the fresh framework the shell registers next, never the jobs' failures."""
    ctx.note(f"Mesos removed framework {e.framework_id}: {e.reason}; "
             "every task of it is lost and will be replaced")
    st.framework_id = None
    st.session.subscribed = False
    st.session.problem = f"framework {e.framework_id} was removed by Mesos: {e.reason}"
    st.session.awaiting = None
    st.session.held = []
    for att in sorted(st.unsettled_attempts(), key=lambda a: a.task_id):
        att.reason = "REASON_FRAMEWORK_REMOVED"
        att.message = f"framework {e.framework_id} removed: {e.reason}"
        st.set_mesos(att, TaskState.LOST)
        inp = lc.input_for(att, TaskState.LOST, agent_lost=False)
        if inp is not None:
            lc.drive(st, ctx, att, inp)
        lc.maybe_killed(st, ctx, att.job)
