"""The cost ledger: what each job's tasks held, for how long, on which market, and why.

Vocabulary. *Usage* is resource-time: cpu-seconds, MiB-seconds of memory and disk,
gpu-seconds, per (market, category). An attempt is charged from the moment it runs
(``RUNNING``) until it ends, on its agent's *market* (the agent attribute the price table
names, ``market`` by default; revocable resources are the ``revocable`` market when the
table prices it). The *categories*:

- ``useful``: running time that produced work that stands;
- ``lost``: work redone after a loss to preemption or the spot market (the accounting's
  *work lost*, ``core.accounting``), moved out of ``useful`` when the loss is counted;
- ``checkpoint``: the seconds tasks spent writing checkpoints (the SDK times each one and
  the executor reports it), moved out of ``useful``;
- ``spare``: the share of worker time above the job's target (the spare workers the
  over-provisioning rule keeps against losses).

A *price table* (``corral scheduler --prices FILE``) turns usage into money, per market
and resource-hour; *savings* compare the job's cost with the same useful work (and
checkpoints) all on the on-demand market. Usage is what is stored (with the job's intent,
so it survives a failover) and prices are applied when it is shown, so the ledger is in
resource-time even without a table.

A job's ledger keeps running rates per market, so its totals at any ``now`` cost
O(markets), never a walk over its tasks; the ledger is folded (rates times elapsed time
added to usage) whenever one of its attempts starts or ends and at the end of every
event that changed the job (so a changed target splits useful from spare time exactly
where it changed).

*Budgets* (per role, in the policy file): a role whose spend within its window reaches
its amount gets its new jobs (those that never ran a task) held with the reason
``budget``; running jobs carry on. The spend counts the role's jobs in the core plus
what the shell reports for finished jobs only the job history still has
(``SpendReported``).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.core.resources import Resources

if TYPE_CHECKING:
    from corral.core.state import Attempt, CoreState, Job

USEFUL, LOST, CHECKPOINT, SPARE = "useful", "lost", "checkpoint", "spare"
CATEGORIES = (USEFUL, LOST, CHECKPOINT, SPARE)
DIMS = ("cpus", "mem", "disk", "gpus")      # usage vector: cpu-s, MiB-s, MiB-s, gpu-s
DEFAULT_MARKET = "on-demand"
REVOCABLE_MARKET = "revocable"
MAX_CHECKPOINT_SECONDS = 86400.0            # a reported checkpoint time above this is bad
PERSIST_EVERY = 300.0                       # seconds of running between stored ledgers
BUDGET_CHECK_EVERY = 10.0                   # seconds between budget checks (on ticks)
# Ledgers stored per check at most: jobs started together would otherwise all be due in
# the same tick (2,000 folds and writes at once); the rest wait for the next check, and
# stay spread out after.
STORED_PER_CHECK = 200

Vec = list[float]


def _vec(r: Resources) -> Vec:
    return [r.cpus, r.mem, r.disk, r.gpus]


def _add(acc: Vec, v: Vec | tuple[float, ...], k: float = 1.0) -> None:
    for i in range(4):
        acc[i] += k * v[i]


# ----------------------------------------------------------------------- price table


@dataclass(frozen=True, slots=True)
class Price:
    """Money per resource-hour: per cpu, per GiB of memory, per GiB of disk, per gpu."""

    cpu_hour: float = 0.0
    mem_gib_hour: float = 0.0
    disk_gib_hour: float = 0.0
    gpu_hour: float = 0.0

    def of(self, usage: Vec | tuple[float, ...]) -> float:
        """The price of a usage vector (cpu-s, MiB-s, MiB-s, gpu-s)."""
        return (usage[0] * self.cpu_hour + usage[1] / 1024 * self.mem_gib_hour
                + usage[2] / 1024 * self.disk_gib_hour + usage[3] * self.gpu_hour) / 3600.0


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices per market. ``on_demand`` is the market savings are measured against and
    the price of a market the table does not name; ``default_market`` is the market of an
    agent without the ``attribute``."""

    markets: Mapping[str, Price]
    on_demand: str = DEFAULT_MARKET
    default_market: str = DEFAULT_MARKET
    attribute: str = "market"
    currency: str = "USD"

    def price(self, market: str) -> Price:
        return self.markets.get(market) or self.markets[self.on_demand]


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``amount`` (in the table's currency) per ``window_s`` seconds for a role."""

    amount: float
    window_s: float = 30 * 86400.0


DEFAULT_BUDGET_WINDOW = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class CostConfig:
    """The core's cost settings: the price table (None: usage only) and role budgets."""

    prices: PriceTable | None = None
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    attribute: str = "market"
    default_market: str = DEFAULT_MARKET


class PriceFileError(ValueError):
    """A price file is invalid; the message names every bad field."""


_PRICE_FIELDS = ("cpu_hour", "mem_gib_hour", "disk_gib_hour", "gpu_hour")


def parse_prices(data: Any) -> PriceTable:
    """A ``PriceTable`` from plain data (a parsed YAML price file)::

        currency: USD
        attribute: market          # the agent attribute naming the market
        default_market: on-demand  # agents without that attribute
        on_demand: on-demand       # savings are measured against this market
        markets:
          on-demand: {cpu_hour: 0.048, mem_gib_hour: 0.006, gpu_hour: 2.5}
          spot:      {cpu_hour: 0.015, mem_gib_hour: 0.002}
          revocable: {cpu_hour: 0.01}   # revocable (oversubscribed) resources

    Raises ``PriceFileError`` naming every bad field."""
    from corral.core.policyfile import Reader

    r = Reader()
    top = r.map(data, "", {"currency", "attribute", "default_market", "on_demand",
                           "markets"}, {"markets"})
    markets: dict[str, Price] = {}
    raw = top.get("markets")
    if "markets" in top and (not isinstance(raw, Mapping) or not raw):
        r.errors.append("markets: must be a non-empty mapping of market name to prices")
    elif isinstance(raw, Mapping):
        for name, prices in raw.items():
            where = f"markets.{name}"
            if not isinstance(name, str) or not name or len(name) > 128 \
                    or not name.isprintable():
                r.errors.append(f"{where}: a market name must be 1-128 printable characters")
                continue
            m = r.map(prices, where, set(_PRICE_FIELDS))
            markets[name] = Price(*(r.num(m, f, where, 0.0, 0, 1e6) for f in _PRICE_FIELDS))
    texts = {}
    for k, default in (("currency", "USD"), ("attribute", "market"),
                       ("default_market", DEFAULT_MARKET), ("on_demand", DEFAULT_MARKET)):
        v = top.get(k, default)
        if not isinstance(v, str) or not v or len(v) > 128 or not v.isprintable():
            r.errors.append(f"{k}: must be 1-128 printable characters")
            v = default
        texts[k] = v
    if markets and texts["on_demand"] not in markets:
        r.errors.append(f"on_demand: market {texts['on_demand']!r} is not in markets")
    r.fail_if_errors(PriceFileError, "invalid price file")
    return PriceTable(markets=markets, on_demand=texts["on_demand"],
                      default_market=texts["default_market"], attribute=texts["attribute"],
                      currency=texts["currency"])


# ----------------------------------------------------------------------- the ledger


@dataclass(slots=True)
class _Run:
    market: str
    usage: tuple[float, float, float, float]   # the attempt's resources (per second)
    worker: bool


class JobCost:
    """One job's usage by (market, category), and the rates of its running attempts."""

    __slots__ = ("at", "held", "last_checkpoint", "masters", "n_workers", "ran",
                 "runs", "stored_at", "target", "usage", "workers")

    def __init__(self) -> None:
        self.usage: dict[tuple[str, str], Vec] = {}
        self.runs: dict[str, _Run] = {}
        self.masters: dict[str, Vec] = {}     # market -> summed resources of masters
        self.workers: dict[str, Vec] = {}     # market -> summed resources of workers
        self.n_workers = 0
        self.target = 0                        # desired workers since ``at``
        self.at: float | None = None           # usage is folded up to here
        self.stored_at = 0.0                   # when the ledger was last made durable
        self.last_checkpoint: float | None = None
        self.ran = False                       # a task of the job ever ran
        self.held = ""                         # why its placement is held (budget)

    # -- folding

    def _spare_fraction(self) -> float:
        n = self.n_workers
        return max(0, n - self.target) / n if n else 0.0

    def _fold_into(self, usage: dict[tuple[str, str], Vec], dt: float) -> None:
        if dt <= 0:
            return
        f = self._spare_fraction()
        for market, rate in self.masters.items():
            _add(usage.setdefault((market, USEFUL), [0.0] * 4), rate, dt)
        for market, rate in self.workers.items():
            if f < 1.0:
                _add(usage.setdefault((market, USEFUL), [0.0] * 4), rate, dt * (1 - f))
            if f > 0.0:
                _add(usage.setdefault((market, SPARE), [0.0] * 4), rate, dt * f)

    def fold(self, now: float, target: int) -> None:
        """Charge the running attempts up to ``now``; ``target`` holds from now on."""
        if self.at is not None:
            self._fold_into(self.usage, now - self.at)
        self.at = now if self.at is None else max(self.at, now)
        self.target = target

    def totals(self, now: float) -> dict[tuple[str, str], Vec]:
        """Usage up to ``now`` (nothing changes)."""
        out = {k: list(v) for k, v in self.usage.items()}
        if self.at is not None:
            self._fold_into(out, now - self.at)
        return out

    # -- attempts

    def start(self, task_id: str, market: str, resources: Resources, worker: bool,
              now: float, target: int) -> None:
        if task_id in self.runs:
            return
        self.fold(now, target)
        run = _Run(market, tuple(_vec(resources)), worker)  # type: ignore[arg-type]
        self.runs[task_id] = run
        rates = self.workers if worker else self.masters
        _add(rates.setdefault(market, [0.0] * 4), run.usage)
        self.n_workers += worker
        self.ran = True

    def stop(self, task_id: str, now: float, target: int) -> None:
        run = self.runs.get(task_id)
        if run is None:
            return
        self.fold(now, target)
        del self.runs[task_id]
        rates = self.workers if run.worker else self.masters
        rate = rates[run.market]
        _add(rate, run.usage, -1.0)
        if all(abs(x) < 1e-9 for x in rate):
            del rates[run.market]
        self.n_workers -= run.worker

    def move(self, task_id: str, seconds: float, to: str, now: float, target: int) -> None:
        """Move ``seconds`` of the running attempt's resource-time on its market from
        useful (then spare) to ``to``, never more than was charged there."""
        run = self.runs.get(task_id)
        if run is None or seconds <= 0 or not math.isfinite(seconds):
            return
        self.fold(now, target)
        want = [seconds * x for x in run.usage]
        dst = self.usage.setdefault((run.market, to), [0.0] * 4)
        for cat in (USEFUL, SPARE):
            src = self.usage.get((run.market, cat))
            if src is None:
                continue
            take = [min(w, have) for w, have in zip(want, src, strict=True)]
            _add(src, take, -1.0)
            _add(dst, take)
            want = [w - t for w, t in zip(want, take, strict=True)]

    # -- storage

    def stored(self) -> dict[str, dict[str, list[float]]]:
        """The usage as plain data: ``{market: {category: [cpu-s, MiB-s, MiB-s, gpu-s]}}``
        (what the store keeps; folded up to the last fold)."""
        out: dict[str, dict[str, list[float]]] = {}
        for (market, cat), v in sorted(self.usage.items()):
            if any(x > 0 for x in v):
                out.setdefault(market, {})[cat] = [round(x, 3) for x in v]
        return out

    def load(self, data: Mapping[str, Mapping[str, Iterable[float]]]) -> None:
        for market, cats in data.items():
            for cat, v in cats.items():
                self.usage[(market, cat)] = [float(x) for x in v]


def usage_problem(data: Any) -> str | None:
    """Why stored usage data is malformed (None: fine)."""
    if not isinstance(data, Mapping):
        return "must be an object of markets"
    for market, cats in data.items():
        if not isinstance(market, str) or not isinstance(cats, Mapping):
            return f"market {market!r} must map categories to usage"
        for cat, v in cats.items():
            if cat not in CATEGORIES:
                return f"market {market!r}: unknown category {cat!r}"
            if not isinstance(v, list) or len(v) != 4 or not all(
                    isinstance(x, int | float) and not isinstance(x, bool)
                    and math.isfinite(x) and x >= 0 for x in v):
                return f"market {market!r}, {cat}: expected 4 numbers >= 0"
    return None


# ----------------------------------------------------------------------- the hooks


def market_of(st: CoreState, cfg: CostConfig, att: Attempt) -> str:
    """The market an attempt is charged on."""
    prices = cfg.prices
    if att.revocable and prices is not None and REVOCABLE_MARKET in prices.markets:
        return REVOCABLE_MARKET
    agent = st.agents.get(att.agent_id or "")
    value = agent.attributes.get(cfg.attribute) if agent is not None else None
    return value or cfg.default_market


@dataclass(slots=True)
class Before:
    """What an edge may change, taken before its actions (``after_edge`` compares)."""

    work_lost: float
    losses: int
    recoveries: int


def before(job: Job) -> Before:
    a = job.accounting
    return Before(a.work_lost_seconds, a.losses, a.recoveries)


def after_edge(st: CoreState, cfg: CostConfig, att: Attempt, was: Before,
               actions: frozenset[Any], now: float) -> None:
    """An edge was applied to ``att`` (``lifecycle.drive``): start or stop charging it,
    move the work its loss cost to ``lost``, and count losses and recoveries."""
    from corral.core.slot_state import Life

    job = att.job
    led = job.cost
    a = job.accounting
    if att.life is Life.RUNNING and att.task_id not in led.runs:
        led.start(att.task_id, market_of(st, cfg, att), att.resources,
                  att.key.kind.value == "worker", now, job.desired)
    extra = a.work_lost_seconds - was.work_lost
    if extra > 0:
        led.move(att.task_id, extra, LOST, now, job.desired)
        st.counters["work_lost_seconds"] += extra
    if a.losses > was.losses:
        from corral.core.accounting import NOTICE, loss_kind
        from corral.core.slot_state import Action

        kind = NOTICE if Action.COUNT_NOTICE in actions else loss_kind(att.reason, att.mesos)
        st.counters[f"loss:{kind}"] += a.losses - was.losses
    if a.recoveries > was.recoveries:
        st.counters["recoveries"] += a.recoveries - was.recoveries
    if att.life is Life.ENDED or not att.live:
        led.stop(att.task_id, now, job.desired)


def checkpointed(job: Job, att: Attempt, seconds: float | None, now: float) -> None:
    """A checkpoint of ``att`` committed; it took ``seconds`` (None: not reported)."""
    led = job.cost
    led.last_checkpoint = now
    if seconds is not None:
        led.move(att.task_id, seconds, CHECKPOINT, now, job.desired)


def after_event(st: CoreState, cfg: CostConfig, now: float, tick: bool) -> None:
    """At the end of every event: fold the ledgers of the jobs it changed (their target
    may have changed), store the ledgers of jobs that ran a while since last stored, and
    on a tick re-check budgets."""
    for key in st.changed:
        job = st.jobs.get(key)
        if job is None:
            continue
        led = job.cost
        if led.at is not None:
            led.fold(now, job.desired)
    if tick and now - st.budget.checked_at >= BUDGET_CHECK_EVERY:
        st.budget.checked_at = now
        left = STORED_PER_CHECK
        for job in st.active_jobs():
            led = job.cost
            if led.runs and now - led.stored_at >= PERSIST_EVERY:
                led.fold(now, job.desired)
                led.stored_at = now
                st.mark_changed(job, durable=True)
                left -= 1
                if not left:
                    break
        if cfg.budgets:
            check_budgets(st, cfg, now)


# ----------------------------------------------------------------------- money


@dataclass(frozen=True, slots=True)
class CostView:
    """A job's or role's cost in money, split by category, and the usage behind it.

    ``on_demand``: the same useful work and checkpoints all on the on-demand market;
    ``savings`` = ``on_demand`` - ``total`` (negative when losses cost more than the
    discount saved). ``cpu_hours``: per category, for a table-free reading."""

    currency: str = ""
    useful: float = 0.0
    lost: float = 0.0
    checkpoint: float = 0.0
    spare: float = 0.0
    total: float = 0.0
    on_demand: float = 0.0
    savings: float = 0.0
    cpu_hours: Mapping[str, float] = field(default_factory=dict)
    by_market: Mapping[str, float] = field(default_factory=dict)


def priced(usage: Mapping[tuple[str, str], Vec], prices: PriceTable | None) -> CostView:
    """Money from usage (zeros but ``cpu_hours`` without a price table)."""
    cpu_hours = {c: 0.0 for c in CATEGORIES}
    money = {c: 0.0 for c in CATEGORIES}
    by_market: dict[str, float] = {}
    od = 0.0
    for (market, cat), v in usage.items():
        cpu_hours[cat] = cpu_hours.get(cat, 0.0) + v[0] / 3600.0
        if prices is None:
            continue
        m = prices.price(market).of(v)
        money[cat] = money.get(cat, 0.0) + m
        by_market[market] = by_market.get(market, 0.0) + m
        if cat in (USEFUL, CHECKPOINT):
            od += prices.price(prices.on_demand).of(v)
    total = sum(money.values())
    r = _r
    return CostView(
        currency=prices.currency if prices is not None else "",
        useful=r(money[USEFUL]), lost=r(money[LOST]), checkpoint=r(money[CHECKPOINT]),
        spare=r(money[SPARE]), total=r(total), on_demand=r(od), savings=r(od - total),
        cpu_hours={k: round(v, 4) for k, v in cpu_hours.items()},
        by_market={k: r(v) for k, v in sorted(by_market.items())})


def _r(x: float) -> float:
    return round(x, 6)


def job_cost(job: Job, prices: PriceTable | None, now: float) -> CostView:
    return priced(job.cost.totals(now), prices)


def add_usage(into: dict[tuple[str, str], Vec], usage: Mapping[tuple[str, str], Vec]) -> None:
    for k, v in usage.items():
        _add(into.setdefault(k, [0.0] * 4), v)


def role_usage(jobs: Iterable[Job], now: float) -> dict[str, dict[tuple[str, str], Vec]]:
    """Usage per role over ``jobs`` (O(jobs x markets))."""
    out: dict[str, dict[tuple[str, str], Vec]] = {}
    for job in jobs:
        add_usage(out.setdefault(job.spec.role, {}), job.cost.totals(now))
    return out


def running_resources(job: Job) -> Vec:
    """What the job's running attempts hold now (cpus, mem, disk, gpus), from the rates."""
    out = [0.0] * 4
    for rates in (job.cost.masters, job.cost.workers):
        for v in rates.values():
            _add(out, v)
    return out


# ----------------------------------------------------------------------- budgets


@dataclass(slots=True)
class BudgetState:
    """The core's budget bookkeeping: spend of finished jobs only the history holds (per
    role, as the shell last reported it) and when budgets were last checked."""

    reported: dict[str, float] = field(default_factory=dict)
    checked_at: float = -math.inf


WHY_BUDGET_TEXT = "role {role} is over its budget: spent {spent:.2f} of {amount:.2f} {cur} " \
                  "in the last {window}; new jobs wait until it is under"


def role_spend(st: CoreState, cfg: CostConfig, role: str, window_s: float,
               now: float) -> float:
    """What ``role`` spent within the window: its jobs in the core that ran in it, plus
    what the shell reported for finished jobs only the history holds."""
    prices = cfg.prices
    if prices is None:
        return 0.0
    total = st.budget.reported.get(role, 0.0)
    for job in st.jobs.values():
        if job.spec.role != role:
            continue
        if job.finished_at is not None and job.finished_at < now - window_s:
            continue
        total += priced(job.cost.totals(now), prices).total
    return total


def _window_text(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


def on_spend_reported(st: CoreState, e: Any, ctx: Any) -> None:
    """``events.SpendReported``: the history's part of each role's spend."""
    reported = {}
    for role, amount in e.spent:
        if isinstance(role, str) and isinstance(amount, int | float) \
                and math.isfinite(amount) and amount >= 0:
            reported[role] = float(amount)
    st.budget.reported = reported
    st.budget.checked_at = -math.inf   # re-check at the next tick


def check_budgets(st: CoreState, cfg: CostConfig, now: float) -> None:
    """Hold the new jobs of roles over budget; release them when under."""
    if cfg.prices is None:
        return
    over: dict[str, str] = {}
    for role, budget in cfg.budgets.items():
        spent = role_spend(st, cfg, role, budget.window_s, now)
        if spent >= budget.amount:
            over[role] = WHY_BUDGET_TEXT.format(
                role=role, spent=spent, amount=budget.amount, cur=cfg.prices.currency,
                window=_window_text(budget.window_s))
    for job in st.active_jobs():
        led = job.cost
        reason = over.get(job.spec.role, "") if not led.ran else ""
        if reason != led.held:
            led.held = reason
            st.mark_changed(job)
