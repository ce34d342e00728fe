"""The scheduler core's entry point: ``handle(event, now) -> effects``, and its read API.

``Scheduler`` dispatches each event to the handler of its concern (``core.handlers``:
commands, offers, status, maintenance, messages, session, timers), each a small function
of the state (``core.state``), the event and a context collecting effects. Before the
event, due timers fire; after it, inverse offers are accepted where nothing of ours is
left and offers are suppressed or revived. The changed and durable jobs become
``JobChanged`` and ``PersistJob`` effects at the end, once per job.

It is a mutable object with a deterministic ``handle`` (docs/decisions/0002): no I/O, no
clock (``now`` is an argument), no global randomness, so the runtime, the simulator and
the tests drive the same object. ``handle`` never raises on bad input: a command that no
longer applies produces no effects and a note. The API calls ``check_submit`` /
``check_scale`` / ``check_kill`` first, which raise the ``views`` errors a user should see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corral.core import cost, readout
from corral.core import effects as fx
from corral.core import events as ev
from corral.core.elastic import PolicyHooks
from corral.core.handlers import commands, maintenance, messages, offers, session, status, timers
from corral.core.handlers.context import CoreConfig, Ctx
from corral.core.intent import JobIntent, export_job
from corral.core.model import JobSpec
from corral.core.present import job_view
from corral.core.resources import ZERO, Resources
from corral.core.spot import OverProvision
from corral.core.state import CoreState
from corral.core.views import JobView

Handler = Callable[[CoreState, Any, Ctx], None]

_HANDLERS: dict[type, Handler] = {
    ev.SubmitJob: commands.on_submit,
    ev.KillJob: commands.on_kill,
    ev.ScaleJob: commands.on_scale,
    ev.OffersReceived: offers.on_offers,
    ev.OfferRescinded: offers.on_rescinded,
    ev.StatusUpdate: status.on_status,
    ev.InverseOffersReceived: maintenance.on_inverse_offers,
    ev.InverseOfferRescinded: maintenance.on_inverse_rescinded,
    ev.AgentLost: maintenance.on_agent_lost,
    ev.ExecutorExited: maintenance.on_executor_exited,
    ev.ExecutorMessage: messages.on_message,
    ev.Subscribed: session.on_subscribed,
    ev.Disconnected: session.on_disconnected,
    ev.EffectFailed: session.on_effect_failed,
    ev.FrameworkRemoved: session.on_framework_removed,
    ev.Tick: timers.on_tick,
    ev.SpendReported: cost.on_spend_reported,
}


class Scheduler:
    """Corral's decisions. Feed it events with ``handle``; carry out what it returns."""

    def __init__(
        self, *, executor_overhead: Resources = ZERO, refuse_short: float = 5.0,
        refuse_long: float = 30.0, reconcile_interval: float = 600.0,
        kill_retry_seconds: float = 30.0, elastic: PolicyHooks | None = None,
        overprovision: OverProvision | None = None, default_spread: str | None = "market",
        drain_margin_seconds: float = 1.0, term: int = 0, **timeouts: Any,
    ) -> None:
        """``elastic``: the policy object (``core.elastic``: Corral's ``Elastic``, or a
        simulator baseline; None keeps every job at the size it asks for).
        ``overprovision``: the spare-worker rule (``core.spot``); its multiple is the
        default for jobs without an ``overprovision`` label (None: 0, i.e. off unless a
        job asks). ``default_spread``: the agent attribute workers spread over when a job
        names none (the spot market). ``term``: the leadership term (a job's version
        starts above every version an earlier term showed). ``timeouts``: the rest of
        ``CoreConfig`` (staging_timeout, reconcile_timeout, stale_after, ...)."""
        self.config = CoreConfig(
            executor_overhead=executor_overhead, refuse_short=refuse_short,
            refuse_long=refuse_long, reconcile_interval=reconcile_interval,
            kill_retry_seconds=kill_retry_seconds, default_spread=default_spread,
            drain_margin_seconds=drain_margin_seconds,
            overprovision=overprovision if overprovision is not None
            else OverProvision(multiple=0.0), **timeouts)
        self.elastic = elastic
        self.state = CoreState(term=term)
        self._deferred: list[fx.Effect] = []

    # ------------------------------------------------------------------ entry point

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Apply one event at time ``now``; return the effects to carry out, in order."""
        ctx = self.context(now)
        ctx.out, self._deferred = self._deferred, []
        st = self.state
        st.last_now = max(st.last_now, now)
        timers.fire_due(st, ctx)
        handler = _HANDLERS.get(type(event))
        if handler is None:
            ctx.note(f"ignored unknown event {type(event).__name__}")
        else:
            handler(st, event, ctx)
        maintenance.accept_inverse_offers(st, ctx)
        cost.after_event(st, self.config.cost, now, isinstance(event, ev.Tick))
        wants = bool(st.pending_jobs)
        if wants and st.session.suppressed:
            ctx.emit(fx.Revive())
            st.session.suppressed = False
        elif not wants and not st.session.suppressed:
            ctx.emit(fx.Suppress())
            st.session.suppressed = True
        changed, durable = st.take_changes()
        return [*ctx.out, *(fx.JobChanged(k) for k in changed),
                *(fx.PersistJob(k) for k in durable)]

    def context(self, now: float) -> Ctx:
        """A handling context at ``now`` (``restore`` fills the core through one)."""
        return Ctx(now=now, config=self.config, state=self.state, elastic=self.elastic)

    def defer(self, ctx: Ctx) -> None:
        """Effects produced outside ``handle`` (restore) go out with the next event."""
        self._deferred.extend(ctx.out)

    # ------------------------------------------------------------------ API checks

    def check_submit(self, spec: JobSpec, request_id: str) -> JobView | None:
        """The existing view for a repeated request id; None if the submit will create
        the job; raises AlreadyExists if another request owns a live job of that key."""
        job = commands.check_submit(self.state, spec, request_id)
        return None if job is None else job_view(self.state, job)

    def check_scale(self, key: str, workers: int) -> None:
        commands.check_scale(self.state, key, workers)

    def check_kill(self, key: str) -> None:
        commands.check_kill(self.state, key)

    # ------------------------------------------------------------------ reading

    @property
    def framework_id(self) -> str | None:
        return self.state.framework_id

    @property
    def notes(self) -> Any:
        return self.state.notes

    def reconciled(self) -> bool:
        """Subscribed, and explicit reconciliation after subscribing is finished."""
        return self.state.session.subscribed and not self.state.session.gated

    def view(self, key: str) -> JobView:
        return job_view(self.state, commands.job_or_raise(self.state, key),
                        self.config.cost.prices)

    def views(self) -> list[JobView]:
        prices = self.config.cost.prices
        return [job_view(self.state, j, prices) for j in self.state.jobs.values()]

    def job_keys(self) -> list[str]:
        return list(self.state.jobs)

    def live_specs(self, role: str) -> list[JobSpec]:
        """The specs of the role's jobs that are not over (for admission quotas)."""
        return [j.spec for j in self.state.jobs.values()
                if j.spec.role == role and not j.phase.terminal]

    def target_workers(self, key: str) -> int:
        """The desired worker count of a job."""
        return commands.job_or_raise(self.state, key).desired

    def intent(self, key: str) -> JobIntent | None:
        """The job's durable intent now (None: no such job)."""
        job = self.state.jobs.get(key)
        return None if job is None else export_job(job, self.state.attempts,
                                                   self.config.executor_overhead)

    def task_ids_to_reconcile(self) -> list[tuple[str, str | None]]:
        """Every attempt Mesos may still hold, as (task id, agent id)."""
        return [(a.task_id, a.agent_id) for a in self.state.unsettled_attempts()]

    def lost_agents(self) -> frozenset[str]:
        """Agents Mesos reported lost and that have not offered since."""
        return self.state.lost_agents()

    def drain_notes(self) -> list[tuple[float, str]]:
        out = list(self.state.notes)
        self.state.notes.clear()
        return out

    # ------------------------------------------------------------------ observation
    # What the metrics page, the web UI and the job history read (``core.readout``).

    def tally(self) -> list[tuple[tuple[str, str, str, str], int]]:
        """((role, tier, kind, life), count) of live slots and attempts."""
        return list(self.state.tally.items())

    def jobs_by_state(self) -> dict[tuple[str, str], int]:
        return dict(readout.jobs_by_state(self.state))

    def pending_by_why(self) -> dict[tuple[str, str], int]:
        return dict(readout.pending_by_why(self.state))

    def role_figures(self, now: float) -> dict[str, readout.RoleFigures]:
        return readout.role_figures(self.state, now)

    def fair_shares(self) -> dict[str, float]:
        """Each role's fair share of the pool, from the latest elastic pass."""
        return dict(self.elastic.last_shares) if self.elastic is not None else {}

    def capacity(self) -> tuple[Resources, Resources]:
        """(non-revocable, revocable) capacity as the elastic policy estimates it."""
        return self.elastic.capacity(self.state) if self.elastic is not None else (ZERO, ZERO)

    def checkpoint_ages(self, now: float) -> dict[str, float]:
        return readout.checkpoint_ages(self.state, now)

    def counters(self) -> dict[str, float]:
        """Monotonic counts of this core: ``loss:<kind>``, ``recoveries``,
        ``work_lost_seconds``."""
        return dict(self.state.counters)

    def offers_held(self) -> int:
        """Offers held while reconciling after a subscription."""
        return len(self.state.session.held)

    def agents(self) -> list[readout.AgentFigures]:
        c = self.config.cost
        return readout.agents(self.state, c.attribute, c.default_market)

    def job_detail(self, key: str, now: float) -> list[readout.SlotDetail]:
        c = self.config.cost
        return readout.job_detail(self.state, commands.job_or_raise(self.state, key),
                                  c.attribute, c.default_market, now)

    def job_usage(self, key: str, now: float) -> dict[tuple[str, str], list[float]]:
        """The job's cost ledger usage up to ``now`` (``core.cost``)."""
        return commands.job_or_raise(self.state, key).cost.totals(now)

    def progress_sample(self, key: str) -> tuple[int, int, int] | None:
        """(done, total, running workers) of a job now; None if there is no such job."""
        job = self.state.jobs.get(key)
        if job is None:
            return None
        p = job.progress_total()
        return p.done, p.total, job.cost.n_workers

    def runs(self) -> set[tuple[str, float]]:
        """(key, submitted_at) of every job in the core (the history's key of a job)."""
        return {(j.key, j.submitted_at) for j in self.state.jobs.values()}

    def take_ended(self, now: float) -> list[tuple[JobView, dict[str, Any]]]:
        """Jobs that ended and hold nothing any more (their ledger is final), each once:
        their view and stored usage, for the job history. Jobs still killing tasks wait."""
        out: list[tuple[JobView, dict[str, Any]]] = []
        keep = []
        prices = self.config.cost.prices
        for job in self.state.take_ended():
            if job.live:
                keep.append(job)
                continue
            job.cost.fold(max(now, job.cost.at or 0.0), job.desired)
            out.append((job_view(self.state, job, prices), job.cost.stored()))
            self.state.let_go(job)   # a job already retired or replaced: freed now
        self.state.ended.extend(keep)
        return out

    def validate(self) -> None:
        """Check every invariant of the state (raises ``state.InvariantError``)."""
        self.state.validate()
