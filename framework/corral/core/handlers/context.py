"""What every handler gets besides the state: the time, the core's settings, and the list
the effects of one event collect in.

``Ctx`` is created by ``Scheduler.handle`` for one event and thrown away after it; the
handlers append effects with ``emit`` and notes with ``note``. ``CoreConfig`` holds the
core's settings (timeouts, offer refusal, the over-provisioning rule); it never changes during a
term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.core import effects as fx
from corral.core.cost import CostConfig
from corral.core.elastic import PolicyHooks
from corral.core.resources import ZERO, Resources
from corral.core.spot import OverProvision
from corral.core.state import CoreState


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The scheduler core's settings.

    ``staging_timeout``: a launched attempt with no status update for this long is
    reconciled explicitly; ``reconcile_timeout``: an explicit reconciliation of one
    attempt unanswered for this long writes the attempt off (replaced, an infrastructure
    loss). ``kill_retry_seconds``: a kill not confirmed within the job's grace plus this is
    sent again (with explicit reconciliation), backing off up to ``kill_retry_max``.
    ``stale_after``: a live attempt not heard of for this long is reconciled explicitly
    (checked every ``stale_check_interval``, at most ``stale_batch`` per check).
    ``reconcile_interval``: implicit reconciliation period. ``gate_deadline``: after a
    subscription, offers wait at most this long for explicit reconciliation to finish.
    ``finished_jobs_kept`` / ``finished_job_ttl``: finished jobs stay visible (GetJob,
    ListJobs) while among the newest this many and younger than this; then they leave
    the core and the store (a job's history belongs in the history store).
    ``cost``: the price table and role budgets (``core.cost``). ``timers_per_event``: at
    most this many due timers fire before one event; the rest fire before the next ones.
    ``groups_per_offers``: one OFFERS event places at most this many groups (a job's
    pending masters, or its pending workers), in placement order; the rest wait for the
    next offers (a round placing ~1,000 tasks of ~800 jobs held the loop ~200 ms).
    """

    executor_overhead: Resources = ZERO
    refuse_short: float = 5.0
    refuse_long: float = 30.0
    reconcile_interval: float = 600.0
    kill_retry_seconds: float = 30.0
    kill_retry_max: float = 300.0
    send_retry_seconds: float = 2.0
    staging_timeout: float = 30.0
    reconcile_timeout: float = 30.0
    stale_after: float = 900.0
    stale_check_interval: float = 60.0
    stale_batch: int = 1000
    timers_per_event: int = 5000   # timers fired before one event at most; the rest wait
    groups_per_offers: int = 200   # placement groups per OFFERS event at most
    gate_deadline: float = 60.0
    gate_backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    finished_jobs_kept: int = 1000
    finished_job_ttl: float = 24 * 3600.0
    default_spread: str | None = "market"
    drain_margin_seconds: float = 1.0
    overprovision: OverProvision = field(default_factory=lambda: OverProvision(multiple=0.0))
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass(slots=True)
class Ctx:
    """One event's handling: ``now``, the settings, the state and the effects so far."""

    now: float
    config: CoreConfig
    state: CoreState
    elastic: PolicyHooks | None = None   # the policy object (``core.elastic``)
    out: list[fx.Effect] = field(default_factory=list)

    def emit(self, effect: fx.Effect) -> None:
        self.out.append(effect)

    def note(self, text: str) -> None:
        self.state.note(self.now, text)
