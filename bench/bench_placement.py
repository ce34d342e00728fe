"""Placement speed: decision time per OffersReceived and placements per CPU second.

Scenarios (each run several times; medians and p99 printed):
- scheduler: a Scheduler with 50 jobs x 20 workers (1,000 pending tasks, masters running)
  handling one OffersReceived of 100 offers — the full decision incl. effects — once
  with agents that have no ``market`` attribute (bin-packing) and once with four markets
  (the default spread: one task at a time, least-used market, fewest of the job's tasks
  per host);
- place-100 / place-1000: the bare ``place()`` with 1,000 pending tasks over 100 and
  1,000 offers, and a worst case of 1,000 single-task jobs (no grouping possible).
Run: python bench/bench_placement.py
"""

from __future__ import annotations

import statistics
import time

from corral.core import events as ev
from corral.core.model import (
    Constraints,
    JobSpec,
    Offer,
    TaskKey,
    TaskKind,
    TaskTemplate,
    WorkerPool,
)
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, place
from corral.core.resources import Resources
from corral.core.scheduler import Scheduler

MARKETS = ("on-demand", "spot-a", "spot-b", "spot-c")


def offers(n: int, tag: str = "", market: bool = False) -> tuple[Offer, ...]:
    """``n`` offers; with ``market`` each agent also has a ``market`` attribute, so the
    scheduler's default spread over markets (and hosts within one) applies."""
    return tuple(Offer(f"O{tag}{i}", f"S{i}", f"h{i}", Resources(32, 131072),
                       ports=((31000, 31999),),
                       attributes=(("zone", "abc"[i % 3]),)
                       + ((("market", MARKETS[i % 4]),) if market else ()))
                 for i in range(n))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def bench_scheduler(runs: int = 20, market: bool = False) -> None:
    times, placed = [], 0
    for r in range(runs):
        s = Scheduler()
        t = TaskTemplate("x", Resources(1, 1024), ports=1)
        for j in range(50):
            spec = JobSpec("r", "e", f"j{j}", master=t, workers=WorkerPool(t, 0, 20, 20))
            s.handle(ev.SubmitJob(spec, f"q{j}"), 0.0)
        out = s.handle(ev.OffersReceived(offers(100, "m", market)), 1.0)
        for e in out:
            for task in getattr(e, "tasks", ()):
                s.handle(ev.StatusUpdate(task.task_id, "TASK_RUNNING", e.agent_id), 2.0)
        t0 = time.perf_counter()
        out = s.handle(ev.OffersReceived(offers(100, f"w{r}", market)), 3.0)
        times.append(time.perf_counter() - t0)
        placed = sum(len(getattr(e, "tasks", ())) for e in out)
    med = statistics.median(times)
    what = "spread over 4 markets" if market else "no market attribute"
    print(f"scheduler 1000 pending / 100 offers ({what}): p50 {med * 1e3:.1f} ms  "
          f"p99 {pct(times, 0.99) * 1e3:.1f} ms  placed {placed}  "
          f"-> {placed / med:,.0f} placements/s")


def bench_place(n_offers: int, jobs: int, per_job: int, runs: int = 20,
                market: bool = False) -> None:
    spread = Constraints(spread_over="market") if market else Constraints()
    pending = [PendingTask(TaskKey(f"r/e/j{j}", TaskKind.WORKER, i), Resources(1, 1024), 1,
                           constraints=spread)
               for j in range(jobs) for i in range(per_job)]
    facts = PlacementFacts(jobs={f"r/e/j{j}": JobFacts(master_running=True)
                                 for j in range(jobs)})
    offs = offers(n_offers, market=market)
    times, placed = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        plan = place(pending, offs, facts)
        times.append(time.perf_counter() - t0)
        placed = len(plan.placed())
    med = statistics.median(times)
    print(f"place {jobs} jobs x {per_job} tasks / {n_offers} offers"
          f"{' spread over 4 markets' if market else ''}: "
          f"p50 {med * 1e3:.1f} ms  p99 {pct(times, 0.99) * 1e3:.1f} ms  placed {placed}  "
          f"-> {placed / med:,.0f} placements/s")


if __name__ == "__main__":
    bench_scheduler()
    bench_scheduler(market=True)
    bench_place(100, 50, 20)
    bench_place(1000, 50, 20)
    bench_place(100, 1000, 1)
    bench_place(1000, 1000, 1, runs=5)
    bench_place(1000, 1, 1000, runs=10, market=True)
    bench_place(10_000, 1, 1000, runs=5, market=True)
