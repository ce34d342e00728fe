"""Reports both the HTTP routes and the gRPC ``HistoryService`` serve: the job history
and cost per role, for a caller who may see only some roles.

``allowed`` is the set of roles the caller may act for (None: every role — an admin or
an open API). Database reads run in a thread (``asyncio.to_thread``); the live part of a
cost report reads the leading core on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from corral.core import cost
from corral.observe.history import HistoryRecord, Query

if TYPE_CHECKING:
    from corral.observe.observer import Observer


class NoHistory(RuntimeError):
    """The scheduler runs without ``--history``."""


@dataclass(frozen=True, slots=True)
class RoleCostRow:
    """What one role spent: its finished jobs (from the history, or those the core still
    holds without one) plus its running jobs, priced."""

    role: str
    finished_jobs: int
    running_jobs: int
    cost: cost.CostView
    usage: dict[tuple[str, str], list[float]] = field(default_factory=dict)


def visible(allowed: frozenset[str] | None, role: str) -> bool:
    return allowed is None or role in allowed


async def history(obs: Observer, allowed: frozenset[str] | None, *, role: str | None = None,
                  since: float | None = None, state: str | None = None, limit: int = 100,
                  before: tuple[float, str] | None = None) -> list[HistoryRecord]:
    if obs.store is None:
        raise NoHistory("this scheduler keeps no job history (start it with --history)")
    q = Query(roles=allowed, role=role, since=since, state=state, limit=limit, before=before)
    return await asyncio.to_thread(obs.store.query, q)


async def history_job(obs: Observer, allowed: frozenset[str] | None,
                      key: str) -> HistoryRecord | None:
    if obs.store is None:
        return None
    return await asyncio.to_thread(obs.store.get, key, allowed)


async def cost_report(obs: Observer, allowed: frozenset[str] | None, *,
                      role: str | None = None, since: float | None = None
                      ) -> tuple[list[RoleCostRow], bool]:
    """Rows per role, and whether finished jobs came from the history."""
    prices = obs.prices
    finished: dict[str, tuple[int, cost.CostView]] = {}
    with_history = obs.store is not None
    if obs.store is not None:
        q = Query(roles=allowed, role=role, since=since, limit=1)
        for rc in await asyncio.to_thread(obs.store.costs, q):
            n, prior = finished.get(rc.role, (0, None))
            view = cost.CostView(
                currency=rc.currency, useful=rc.useful, lost=rc.lost,
                checkpoint=rc.checkpoint, spare=rc.spare, total=rc.total,
                on_demand=rc.on_demand, savings=rc.on_demand - rc.total,
                cpu_hours={"total": round(rc.cpu_hours, 4)})
            finished[rc.role] = (n + rc.jobs, view if prior is None else _sum(prior, view))
    rows: dict[str, RoleCostRow] = {}
    core = obs.core()
    now = obs.clock()
    if core is not None:
        for r, f in core.role_figures(now).items():
            if not visible(allowed, r) or (role and r != role):
                continue
            usage = {k: list(v) for k, v in f.usage.items()}
            done = 0
            if not with_history:
                cost.add_usage(usage, f.usage_done)
                done = f.jobs_done
            view = cost.priced(usage, prices)
            view = replace(view, cpu_hours={"total": round(sum(view.cpu_hours.values()), 4)})
            rows[r] = RoleCostRow(r, done, f.jobs_active, view, usage)
    for r, (n, view) in finished.items():
        live = rows.get(r)
        if live is None:
            rows[r] = RoleCostRow(r, n, 0, view)
        else:
            rows[r] = RoleCostRow(r, n, live.running_jobs, _sum(live.cost, view), live.usage)
    return [rows[k] for k in sorted(rows)], with_history


def _sum(a: cost.CostView, b: cost.CostView) -> cost.CostView:
    hours: dict[str, float] = {}
    for src in (a.cpu_hours, b.cpu_hours):
        for k, v in src.items():
            hours[k] = round(hours.get(k, 0.0) + v, 4)
    total = a.total + b.total
    od = a.on_demand + b.on_demand
    return cost.CostView(
        currency=a.currency or b.currency, useful=a.useful + b.useful, lost=a.lost + b.lost,
        checkpoint=a.checkpoint + b.checkpoint, spare=a.spare + b.spare, total=total,
        on_demand=od, savings=od - total, cpu_hours=hours,
        by_market={k: a.by_market.get(k, 0.0) + b.by_market.get(k, 0.0)
                   for k in sorted(set(a.by_market) | set(b.by_market))})


def row_dict(row: RoleCostRow) -> dict[str, Any]:
    from corral.api.convert import cost_to_dict

    return {"role": row.role, "finished_jobs": row.finished_jobs,
            "running_jobs": row.running_jobs, "cost": cost_to_dict(row.cost)}
