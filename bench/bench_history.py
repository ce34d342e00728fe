"""The job history must never slow scheduling: decision latency with it on and off, and
what an outage of PostgreSQL does to the backlog.

In one process, like the scheduler shell: a real core (``Scheduler``) is fed job after job
(submit, an offer, the master RUNNING, the master FINISHED, a tick), every event timed
as the shell times it (``corral_decision_seconds``), and after each event the observer's
``after_turn`` runs (ended jobs go to the history queue). The history writer is the real
thread writing to a real PostgreSQL from Debian's package, started by this script on a
loopback port (``tests/pg.py``).

Phases (N job completions each, default 10,000):

1. history off: the observer without a database;
2. history on: PostgreSQL up;
3. outage: PostgreSQL stopped for ``--outage`` seconds (default 30) while completions
   continue, then started again: the backlog over time, and the drain throughput.

Printed: decision latency p50/p99 per phase and the on/off p99 ratio; write throughput
while up; the backlog's peak during the outage, the time to drain it after the restart
and the drain rate; records lost (must be 0).

    python bench/bench_history.py               # 10,000 per phase, 30 s outage
    python bench/bench_history.py --jobs 2000 --outage 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "framework"), str(ROOT / "executor"), str(ROOT)]

from corral.core import effects as fx  # noqa: E402
from corral.core import events as ev  # noqa: E402
from corral.core.cost import CostConfig, parse_prices  # noqa: E402
from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool  # noqa: E402
from corral.core.resources import Resources  # noqa: E402
from corral.core.scheduler import Scheduler  # noqa: E402
from corral.observe.history import HistoryStore, Query, open_database  # noqa: E402
from corral.observe.observer import Observer  # noqa: E402

PRICES = parse_prices({"markets": {"on-demand": {"cpu_hour": 0.05}, "spot": {"cpu_hour": 0.02}}})


class Driver:
    """Feeds one core job after job; ``events`` collects each decision's seconds."""

    def __init__(self, obs: Observer, tag: str) -> None:
        self.core = Scheduler(cost=CostConfig(prices=PRICES))
        self.obs = obs
        self.tag = tag
        self.now = 1_000_000.0
        self.latency: list[float] = []
        self.n = 0
        self.handle(ev.Subscribed("fw"))

    def handle(self, event: ev.Event) -> list[fx.Effect]:
        self.now += 0.01
        t0 = time.perf_counter()
        out = self.core.handle(event, self.now)
        self.latency.append(time.perf_counter() - t0)
        changed = {e.key for e in out if isinstance(e, fx.JobChanged)}
        self.obs.decided(event, self.latency[-1], out)
        self.obs.after_turn(self.core, changed)
        return out

    def one_job(self) -> None:
        self.n += 1
        spec = JobSpec("bench", "h", f"{self.tag}-{self.n}",
                       master=TaskTemplate("m", Resources(1, 128), ports=0),
                       workers=WorkerPool(TaskTemplate("w", Resources(1, 128)), 0, 1, 0))
        self.handle(ev.SubmitJob(spec, f"r{self.n}"))
        out = self.handle(ev.OffersReceived((Offer(
            f"o{self.tag}{self.n}", "a1", "h1", Resources(8, 8192),
            attributes=(("market", "spot"),)),)))
        (launch,) = [e for e in out if isinstance(e, fx.LaunchTasks)]
        tid = launch.tasks[0].task_id
        self.handle(ev.StatusUpdate(tid, "TASK_RUNNING", "a1", executor_id=tid,
                                    uuid=f"u{self.n}a"))
        self.now += 5.0
        self.handle(ev.StatusUpdate(tid, "TASK_FINISHED", "a1", executor_id=tid,
                                    uuid=f"u{self.n}b"))
        if self.n % 20 == 0:
            self.handle(ev.Tick())


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def phase(obs: Observer, tag: str, jobs: int) -> Driver:
    d = Driver(obs, tag)
    t0 = time.perf_counter()
    for _ in range(jobs):
        d.one_job()
    took = time.perf_counter() - t0
    print(f"{tag:>12}: {jobs} jobs in {took:.1f}s  decision p50 "
          f"{pct(d.latency, 0.5) * 1e6:.0f}us  p99 {pct(d.latency, 0.99) * 1e6:.0f}us  "
          f"({len(d.latency)} events)", flush=True)
    return d


def main() -> int:
    from tests.pg import PostgresServer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--outage", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=2, help="off/on pairs (default 2)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus", flush=True)
    pg = PostgresServer()
    pg.start()
    try:
        url = pg.create_db()
        p99 = {"off": [], "on": []}
        written_rate = []
        for rep in range(args.repeat):
            off = phase(Observer(), f"off-{rep}", args.jobs)
            p99["off"].append(pct(off.latency, 0.99))
            obs = Observer(history=open_database(url))
            obs.start()
            t0 = time.perf_counter()
            on = phase(obs, f"on-{rep}", args.jobs)
            assert obs.writer is not None
            obs.writer.flush(120)
            written_rate.append(args.jobs / (time.perf_counter() - t0))
            p99["on"].append(pct(on.latency, 0.99))
            obs.stop()
        ratio = statistics.median(p99["on"]) / statistics.median(p99["off"])
        print(f"decision p99 history on / off: {ratio:.2f} (medians of {args.repeat} runs); "
              f"history written at >= {statistics.median(written_rate):.0f} records/s "
              "(bounded by the job rate)", flush=True)

        # The outage.
        obs = Observer(history=open_database(url))
        obs.start()
        assert obs.writer is not None
        writer = obs.writer
        peak = 0
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter(), writer.backlog))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        before = writer.written
        pg.stop()
        down_at = time.perf_counter()
        d = Driver(obs, "outage")
        while time.perf_counter() - down_at < args.outage:
            d.one_job()
        peak = writer.backlog
        print(f"{'outage':>12}: {d.n} jobs during {args.outage:.0f}s down; decision p99 "
              f"{pct(d.latency, 0.99) * 1e6:.0f}us; backlog {peak} records "
              f"({writer.failures} failed write attempts)", flush=True)
        pg.start()
        up_at = time.perf_counter()
        ok = writer.flush(300)
        drained = time.perf_counter() - up_at
        stop.set()
        watcher.join()
        print(f"{'restart':>12}: backlog of {peak} written in {drained:.1f}s "
              f"({peak / max(drained, 1e-9):.0f} records/s, incl. reconnecting); "
              f"drained={ok}", flush=True)
        obs.stop()
        store = HistoryStore(open_database(url))
        store.open()
        got = len(store.query(Query(role="bench", limit=10_000, since=0)))
        store.close()
        expected = d.n
        lost = expected - (writer.written - before)
        print(f"records lost: {max(0, lost)} (written during/after the outage "
              f"{writer.written - before}, jobs {expected}; rows in the table {got} of the "
              "latest 10,000 read back)", flush=True)
    finally:
        pg.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
