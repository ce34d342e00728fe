"""The scheduler's Prometheus metrics, through the standard ``prometheus_client`` library.

Two kinds of family live in one ``CollectorRegistry``:

- instruments the shell updates as things happen (histograms of decision latency per
  event type, event-loop lag and store write latency; counters of placements and offers;
  the history writer's counters), and
- a collector that reads the leading core at each scrape (``CoreCollector``): jobs by
  state and role, tasks by state and tier, pending tasks by why and veto check, workers
  desired and running, fair share and allocation per role, losses, recoveries and work
  lost (monotonic across leadership terms of this process), leader status, checkpoint
  age per job, cost per role and category. Each read is bounded by an index of the core
  (``core.readout``), never a walk over every task.

Every family name starts with ``corral_``; docs/operations.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from corral.core.scheduler import Scheduler

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESOURCES = ("cpus", "mem", "disk", "gpus")


class Instruments:
    """The families the shell updates directly."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.decision = Histogram(
            "corral_decision_seconds", "Time the core took to handle one event, by event type",
            ["event"], buckets=LATENCY_BUCKETS, registry=r)
        self.loop_lag = Histogram(
            "corral_event_loop_lag_seconds",
            "How late the scheduler's event loop woke for its tick", buckets=LAG_BUCKETS,
            registry=r)
        self.store_write = Histogram(
            "corral_store_write_seconds",
            "Latency of one batch write of job intent to the store (ZooKeeper in HA mode)",
            ["store"], buckets=LATENCY_BUCKETS, registry=r)
        self.placements = Counter(
            "corral_placements", "Tasks launched on offers", ["kind"], registry=r)
        self.offers = Counter(
            "corral_offers", "Offers received and declined", ["outcome"], registry=r)
        self.history_written = Counter(
            "corral_history_records_written", "Job records written to the history", registry=r)
        self.history_failures = Counter(
            "corral_history_write_failures", "Failed attempts to write the history", registry=r)
        self.history_dropped = Counter(
            "corral_history_records_dropped",
            "Job records dropped because the history backlog was full", registry=r)
        self.history_write = Histogram(
            "corral_history_write_seconds", "Latency of one batch write to the history",
            buckets=LATENCY_BUCKETS, registry=r)
        self.history_backlog = Gauge(
            "corral_history_backlog", "Job records waiting to be written to the history",
            registry=r)


class CoreCollector(Collector):
    """Reads the leading core at each scrape (see the module)."""

    def __init__(self, core: Callable[[], Scheduler | None], now: Callable[[], float],
                 leader: Callable[[], tuple[bool, int]],
                 currency: Callable[[], str], prices: Callable[[], Any]) -> None:
        self._core = core
        self._now = now
        self._leader = leader
        self._currency = currency
        self._prices = prices
        # Counters survive leadership terms: what earlier cores counted, plus this one.
        self._base: dict[str, float] = {}
        self._last_core: int | None = None
        self._last: dict[str, float] = {}

    def _counters(self, core: Scheduler | None) -> dict[str, float]:
        if core is None:
            return dict(self._base)
        if id(core) != self._last_core:
            for k, v in self._last.items():
                self._base[k] = self._base.get(k, 0.0) + v
            self._last_core = id(core)
        self._last = core.counters()
        out = dict(self._base)
        for k, v in self._last.items():
            out[k] = out.get(k, 0.0) + v
        return out

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected anew at every scrape

    def collect(self) -> Iterator[Metric]:
        from corral.core import cost

        core = self._core()
        now = self._now()
        leading, terms = self._leader()
        g = GaugeMetricFamily("corral_leader", "1 while this replica leads and acts")
        g.add_metric([], 1.0 if leading else 0.0)
        yield g
        c = CounterMetricFamily("corral_leadership_terms",
                                "Leadership terms this replica began (failovers to it)")
        c.add_metric([], float(terms))
        yield c
        counts = self._counters(core)
        losses = CounterMetricFamily("corral_losses", "Tasks lost to the infrastructure, or "
                                     "moved ahead of a notice, by kind", labels=["kind"])
        for kind in ("lost", "unreachable", "revoked", "notice"):
            losses.add_metric([kind], counts.get(f"loss:{kind}", 0.0))
        yield losses
        rec = CounterMetricFamily("corral_recoveries",
                                  "Lost slots whose replacement is running again")
        rec.add_metric([], counts.get("recoveries", 0.0))
        yield rec
        wl = CounterMetricFamily("corral_work_lost_seconds",
                                 "Task time redone after losses (since the last checkpoint)")
        wl.add_metric([], counts.get("work_lost_seconds", 0.0))
        yield wl
        if core is None:
            return
        jobs = GaugeMetricFamily("corral_jobs", "Jobs the scheduler holds, by role and state",
                                 labels=["role", "state"])
        for (role, state), n in sorted(core.jobs_by_state().items()):
            jobs.add_metric([role, state], n)
        yield jobs
        tasks = GaugeMetricFamily(
            "corral_tasks", "Slots and attempts by Corral's lifecycle state, tier and kind",
            labels=["state", "tier", "kind"])
        by: dict[tuple[str, str, str], int] = {}
        for (_role, tier, kind, life), n in core.tally():
            by[(life, tier, kind)] = by.get((life, tier, kind), 0) + n
        for (life, tier, kind), n in sorted(by.items()):
            tasks.add_metric([life, tier, kind], n)
        yield tasks
        pend = GaugeMetricFamily(
            "corral_pending_tasks", "Slots waiting to be placed, by why (code) and the "
            "feasibility check that vetoed them", labels=["why", "check"])
        for (why, check), n in sorted(core.pending_by_why().items()):
            pend.add_metric([why, check], n)
        yield pend
        figures = core.role_figures(now)
        shares = core.fair_shares()
        capacity, _ = core.capacity()
        desired = GaugeMetricFamily("corral_workers_desired",
                                    "Workers the role's active jobs want", labels=["role"])
        running = GaugeMetricFamily("corral_workers_running",
                                    "Workers of the role running (or draining)", labels=["role"])
        fair = GaugeMetricFamily("corral_role_fair_share",
                                 "The role's fair share of the pool (latest elastic pass)",
                                 labels=["role"])
        alloc = GaugeMetricFamily("corral_role_allocation_share",
                                  "The role's dominant share of the pool its running tasks "
                                  "hold", labels=["role"])
        held = GaugeMetricFamily("corral_role_allocation", "Resources the role's running "
                                 "tasks hold", labels=["role", "resource"])
        money = GaugeMetricFamily("corral_role_cost", "What the role's jobs in the scheduler "
                                  "cost, by category", labels=["role", "category", "currency"])
        hours = GaugeMetricFamily("corral_role_cpu_hours", "Cpu-hours of the role's jobs in "
                                  "the scheduler, by category", labels=["role", "category"])
        cap = (capacity.cpus, capacity.mem, capacity.disk, capacity.gpus)
        prices = self._prices()
        for role in sorted(set(figures) | set(shares)):
            f = figures.get(role)
            desired.add_metric([role], f.workers_desired if f else 0)
            running.add_metric([role], f.workers_running if f else 0)
            fair.add_metric([role], shares.get(role, 0.0))
            a = f.allocation if f else (0.0, 0.0, 0.0, 0.0)
            dominant = max((x / c for x, c in zip(a, cap, strict=True) if c > 0), default=0.0)
            alloc.add_metric([role], dominant)
            for name, x in zip(RESOURCES, a, strict=True):
                held.add_metric([role, name], x)
            if f is not None:
                view = cost.priced(f.usage_all(), prices)
                for cat in cost.CATEGORIES:
                    hours.add_metric([role, cat], view.cpu_hours.get(cat, 0.0))
                    if prices is not None:
                        money.add_metric([role, cat, view.currency], getattr(view, cat))
        yield from (desired, running, fair, alloc, held, money, hours)
        held_offers = GaugeMetricFamily("corral_offers_held",
                                        "Offers held while reconciling after subscribing")
        held_offers.add_metric([], core.offers_held())
        yield held_offers
        ages = GaugeMetricFamily("corral_checkpoint_age_seconds",
                                 "Seconds since the job's latest committed checkpoint",
                                 labels=["job"])
        for key, age in sorted(core.checkpoint_ages(now).items()):
            ages.add_metric([key], age)
        yield ages
