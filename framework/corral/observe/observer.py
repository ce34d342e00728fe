"""``Observer``: the process-wide sink the scheduler shell reports to, read by the HTTP
routes.

One per scheduler process, across leadership terms (``RuntimeConfig.observer``). The
shell calls ``decided`` after each event the core handled (decision latency, placements,
offers), ``loop_lag`` from its ticker, ``stored`` after each store write, and
``after_turn`` after each loop turn (jobs that ended go to the history queue; progress
samples for the job page's chart). Everything here is cheap and never blocks: the
database is written by the history thread.

``backend`` is the ``JobBackend`` the process serves (a ``SchedulerService``, or an HA
``Replica``); ``service()`` is the acting leader's service, or None.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.cost import PriceTable
from corral.observe.history import (
    Database,
    HistoryRecord,
    HistoryStore,
    HistoryWriter,
    record_from,
)
from corral.observe.metrics import CoreCollector, Instruments

if TYPE_CHECKING:
    from corral.core.scheduler import Scheduler
    from corral.runtime.service import SchedulerService

log = logging.getLogger("corral.observe")

SAMPLES_KEPT = 120          # progress points per job (older ones are thinned, not dropped)
SAMPLE_EVERY = 2.0          # seconds between a job's progress points at first
PRUNE_EVERY = 60.0


class Progression:
    """A job's progress over time: at most ``SAMPLES_KEPT`` points (time, done, total,
    running workers), thinned by half when full so the whole run stays covered."""

    __slots__ = ("every", "points")

    def __init__(self) -> None:
        self.points: deque[tuple[float, int, int, int]] = deque()
        self.every = SAMPLE_EVERY

    def add(self, t: float, done: int, total: int, workers: int) -> None:
        if self.points and t - self.points[-1][0] < self.every:
            if (done, total, workers) == self.points[-1][1:]:
                return
            self.points[-1] = (self.points[-1][0], done, total, workers)
            return
        self.points.append((t, done, total, workers))
        if len(self.points) > SAMPLES_KEPT:
            kept = list(self.points)[::2]
            self.points = deque(kept)
            self.every *= 2


class Observer:
    """See the module."""

    def __init__(self, *, history: Database | None = None, prices: PriceTable | None = None,
                 clock: Callable[[], float] = time.time,
                 max_backlog: int = 100_000) -> None:
        self.clock = clock
        self.prices = prices
        self.registry = CollectorRegistry()
        self.m = Instruments(self.registry)
        self.registry.register(CoreCollector(
            core=self.core, now=clock, leader=self.leadership,
            currency=lambda: prices.currency if prices else "", prices=lambda: self.prices))
        self.backend: Any = None
        self.history_db = history
        self.writer: HistoryWriter | None = None
        self.store: HistoryStore | None = None
        if history is not None:
            self.writer = HistoryWriter(
                history, max_backlog=max_backlog,
                on_written=self._written, on_failure=lambda _: self.m.history_failures.inc(),
                on_dropped=self.m.history_dropped.inc)
            self.store = HistoryStore(history)
            self.m.history_backlog.set_function(lambda: self.writer.backlog
                                                if self.writer else 0)
        self.progress: dict[str, Progression] = {}
        self._pruned_at = 0.0
        self.terms_started = 0

    # --------------------------------------------------------------- life

    def start(self) -> None:
        """Open the history (migrating its schema) and start its writer thread. Raises if
        the database cannot be opened at all (a wrong URL, a newer schema); a database
        that is only down now is retried by the writer."""
        if self.store is not None and self.writer is not None:
            try:
                self.store.open()
            except Exception as exc:
                from corral.observe.history import HistoryError

                if isinstance(exc, HistoryError) or (
                        self.history_db is not None and self.history_db.dialect == "sqlite"):
                    raise HistoryError(f"cannot open the job history "
                                       f"{self.history_db.describe() if self.history_db else ''}"
                                       f": {exc}") from None
                log.warning("job history %s not reachable yet (%s); records queue until "
                            "it is", self.history_db.describe() if self.history_db else "",
                            exc)
            self.writer.start()

    def stop(self, flush_seconds: float = 5.0) -> None:
        if self.writer is not None:
            self.writer.stop(flush_seconds)
        if self.store is not None:
            self.store.close()

    def _written(self, n: int, seconds: float) -> None:
        self.m.history_written.inc(n)
        self.m.history_write.observe(seconds)

    # --------------------------------------------------------------- reading the backend

    def service(self) -> SchedulerService | None:
        """The acting leader's service in this process, if any."""
        b = self.backend
        svc = getattr(b, "service", b) if b is not None and hasattr(b, "identity") else b
        return svc if svc is not None and getattr(svc, "acting", False) else None

    def core(self) -> Scheduler | None:
        svc = self.service()
        return svc.core if svc is not None else None

    def leadership(self) -> tuple[bool, int]:
        b = self.backend
        terms = int(getattr(b, "terms", 0)) if b is not None and hasattr(b, "identity") \
            else self.terms_started
        return self.service() is not None, terms

    # --------------------------------------------------------------- the shell reports

    def decided(self, event: ev.Event, seconds: float, effects: list[fx.Effect]) -> None:
        self.m.decision.labels(type(event).__name__).observe(seconds)
        if isinstance(event, ev.OffersReceived):
            self.m.offers.labels("received").inc(len(event.offers))
        for e in effects:
            if isinstance(e, fx.LaunchTasks):
                for t in e.tasks:
                    self.m.placements.labels(t.key.kind.value).inc()
            elif isinstance(e, fx.DeclineOffers):
                self.m.offers.labels("declined").inc(len(e.offer_ids))

    def loop_lag(self, seconds: float) -> None:
        self.m.loop_lag.observe(max(0.0, seconds))

    def stored(self, seconds: float, store: str) -> None:
        self.m.store_write.labels(store).observe(seconds)

    def after_turn(self, core: Scheduler, changed: set[str]) -> None:
        """Record ended jobs and sample the progress of the jobs that changed."""
        now = self.clock()
        for view, usage in core.take_ended(now):
            self.record(view, usage, now)
        for key in changed:
            sample = core.progress_sample(key)
            if sample is not None:
                self.progress.setdefault(key, Progression()).add(now, *sample)
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            live = set(core.job_keys())
            for key in [k for k in self.progress if k not in live]:
                del self.progress[key]

    async def spend_outside(self, core: Scheduler, budgets: Any, now: float
                            ) -> tuple[tuple[str, float], ...]:
        """Per budgeted role: the cost of its jobs finished within its window that the
        core no longer holds (read from the history in a thread)."""
        import asyncio

        store = self.store
        if store is None:
            return ()
        inside = core.runs()
        out = []
        for role, budget in sorted(budgets.items()):
            rows = await asyncio.to_thread(store.spend, role, now - budget.window_s)
            out.append((role, sum(c for key, sub, c in rows if (key, sub) not in inside)))
        return tuple(out)

    def record(self, view: Any, usage: dict[str, Any], now: float) -> HistoryRecord | None:
        """Queue a finished job's record for the history (None without a history)."""
        if self.writer is None:
            return None
        samples = self.progress.get(view.key)
        extra = {"progress_samples": [list(p) for p in samples.points]} if samples else {}
        rec = record_from(view, usage, now, extra)
        self.writer.put(rec)
        return rec
