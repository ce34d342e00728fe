"""The scheduler core at scale: how long each event holds the loop, and what it keeps.

Builds the real core through its public events, the way the runtime does (elastic policy
on, workers spread over four `market` values, agents of 96 cpus), at every combination of
agents x running tasks asked for, then times:

* offers  - one OFFERS event of 1,000 offers while workers are pending: 1,000 workers
  of ~800 jobs lost at once are placed over the first rounds (at most
  ``groups_per_offers`` jobs' groups per event), then losses replaced one by one;
* status  - one status update (a worker lost, its slot re-planned), and a TASK_RUNNING;
  also against one job of 10 / 100 / 1,000 workers (the cost must not grow with the job);
* tick    - one tick, every 1 s of `now` as the runtime ticks: a policy pass over every
  job starts every 5 s and, above ``Elastic.jobs_per_step`` active jobs, is split
  over the next ticks (so the max is the pass's slowest step);
* placements per CPU second (tasks placed / process time of the offers events), over the
  build and in one round placing 950 workers on 1,000 offers;
* the garbage collector's pauses: the hourly full pass and a pass between them (the
  runtime's policy, ``corral.runtime.gcpolicy``, runs here as in the scheduler: every
  event is a turn);
* memory, traced from before a second build of the same size: per running task, after
  20,000 finished attempts (kill-and-resubmit) and after 20,000 more (must stay flat).

It also times the shell's decode of 100 / 1,000 / 10,000-offer OFFERS events (JSON text
to core events) and, as a baseline in the same run, a 20-line first-fit placement of the
same pending tasks on the same offers.

    python bench/bench_scale.py                 # 1k/10k, 10k/100k, 50k/100k
    python bench/bench_scale.py --sizes 50000x100000 --rounds 20
    python bench/bench_scale.py --quick         # 1k agents x 10k tasks only

Figures depend on the machine and its load (printed with the load average); compare runs
on one machine, and ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "framework"))
sys.path.insert(0, str(ROOT / "executor"))

from corral.core import effects as fx  # noqa: E402
from corral.core import events as ev  # noqa: E402
from corral.core.elastic import Elastic  # noqa: E402
from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool  # noqa: E402
from corral.core.policy import PolicyConfig  # noqa: E402
from corral.core.resources import Resources  # noqa: E402
from corral.core.scaling import ScalingConfig  # noqa: E402
from corral.core.scheduler import Scheduler  # noqa: E402
from corral.mesos import codec  # noqa: E402
from corral.runtime import translate  # noqa: E402
from corral.runtime.gcpolicy import GcPolicy  # noqa: E402

MARKETS = ("spot-a", "spot-b", "spot-c", "on-demand")
AGENT_CPUS, AGENT_MEM = 96.0, 384 * 1024.0
WORKER = Resources(1, 1024)


def pct(xs: list[float], p: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(p * len(ys)))] if ys else float("nan")


class Build:
    """A core with ``agents`` agents and ``tasks`` running tasks in ``jobs`` jobs."""

    def __init__(self, agents: int, tasks: int, jobs: int, seed: int = 7,
                 max_workers: int = 0) -> None:
        self.rng = random.Random(seed)
        self.max_workers = max_workers     # at least this max per job (0: twice its size)
        self.agents, self.jobs = agents, jobs
        cfg = PolicyConfig(scaling=ScalingConfig(cooldown_up_s=1e9, cooldown_down_s=1e9))
        self.s = Scheduler(elastic=Elastic(config=cfg, interval=5.0))
        self.now = 1_000.0
        self.n_offer = 0
        self.placed_cpu = 0.0
        self.placed = 0
        self.live: dict[str, str] = {}       # running task id -> agent
        self.gc = GcPolicy()                 # as the runtime runs it, after every turn
        self.cycles = 0                      # kill-and-resubmit cycles (``churn``)
        self.s.handle(ev.Subscribed("bench"), self.now)
        # Mesos offers every agent within its first allocation cycles: the scheduler
        # knows the whole cluster before the jobs come (and memory measured later is what
        # the jobs and their history cost, not agents seen for the first time).
        for start in range(0, agents, 1000):
            self.handle(ev.OffersReceived(tuple(
                self.offer(a) for a in range(start, min(agents, start + 1000)))))
        per_job = max(1, tasks // jobs - 1)
        self.per_job = per_job
        for j in range(jobs):
            self.submit(j, per_job, "r0")
        self.fill()

    def spec(self, j: int, workers: int) -> JobSpec:
        t = TaskTemplate("x", WORKER)
        return JobSpec(f"role{j % 20}", "bench", f"job{j}", master=t,
                       workers=WorkerPool(t, 1, max(workers * 2, self.max_workers), workers))

    def submit(self, j: int, workers: int, req: str) -> None:
        self.handle(ev.SubmitJob(self.spec(j, workers), f"{req}-{j}"))

    def handle(self, e: ev.Event) -> list[fx.Effect]:
        self.now += 0.001
        out = self.s.handle(e, self.now)
        self.s.take_ended(self.now)   # the shell hands ended jobs to the history every turn
        # The runtime runs the collector's policy on its clock; here ``now`` is the clock
        # (the bench replays a day's events in minutes: on the wall clock, one freeze
        # would span far more allocation than the scheduler makes in 5 s).
        self.gc.after_turn(self.now)
        for x in out:
            if isinstance(x, fx.LaunchTasks):
                for t in x.tasks:
                    self.live[t.task_id] = x.agent_id
        return out

    def offer(self, a: int) -> Offer:
        """A new offer of a quarter of agent ``a``."""
        self.n_offer += 1
        return Offer(f"O{self.n_offer}", f"S{a}", f"h{a}",
                     Resources(AGENT_CPUS / 4, AGENT_MEM / 4),
                     attributes=(("market", MARKETS[a % 4]),))

    def offers(self, count: int) -> tuple[Offer, ...]:
        return tuple(self.offer(self.rng.randrange(self.agents)) for _ in range(count))

    def offer_round(self, count: int = 1000) -> tuple[float, int]:
        """One OFFERS event, then a TASK_RUNNING for each task it placed: the event's own
        wall time and the number placed (its CPU time counts to the placement rate)."""
        offers = ev.OffersReceived(self.offers(count))
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.handle(offers)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        launched = [(x.agent_id, t.task_id) for x in out if isinstance(x, fx.LaunchTasks)
                    for t in x.tasks]
        self.placed_cpu += cpu
        self.placed += len(launched)
        for agent, tid in launched:
            self.handle(ev.StatusUpdate(tid, "TASK_RUNNING", agent, uuid="u"))
        return wall, len(launched)

    def fill(self) -> None:
        for _ in range(10_000):
            if not self.s.state.pending_jobs:
                return
            self.offer_round()

    def running(self) -> int:
        return sum(len(j.live) for j in self.s.state.jobs.values())


def first_fit(pending: list[tuple[str, float, float]], offers: tuple[Offer, ...]) -> int:
    """The baseline: each task on the first offer it fits (20 lines, no spreading)."""
    free = [[o.resources.cpus, o.resources.mem] for o in offers]
    placed = 0
    start = 0
    for _, cpus, mem in pending:
        for i in range(start, len(free)):
            f = free[i]
            if f[0] >= cpus and f[1] >= mem:
                f[0] -= cpus
                f[1] -= mem
                placed += 1
                break
            if f[0] < 1:
                start = i + 1
    return placed


def memory_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def gc_pauses(b: Build) -> str:
    """The collector's pauses under the runtime's policy: a pass between full passes
    (walks what was allocated since the last freeze) and the hourly full pass."""
    t0 = time.perf_counter()
    gc.collect()
    between = time.perf_counter() - t0
    b.gc.full(b.now)
    return (f"GC full pass (hourly) {b.gc.last_full_s * 1e3:.0f} ms, a pass between "
            f"them {between * 1e3:.0f} ms")


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def lose_and_replace(b: Build) -> tuple[float, float]:
    """One worker lost (status update), its replacement placed and running."""
    tid = b.rng.choice(list(b.live))
    agent = b.live.pop(tid)
    t0 = time.perf_counter()
    b.handle(ev.StatusUpdate(tid, "TASK_LOST", agent, reason="REASON_AGENT_REMOVED",
                             uuid="u"))
    lost = time.perf_counter() - t0
    out = b.handle(ev.OffersReceived(b.offers(4)))
    running = 0.0
    for x in out:
        if isinstance(x, fx.LaunchTasks):
            for t in x.tasks:
                t0 = time.perf_counter()
                b.handle(ev.StatusUpdate(t.task_id, "TASK_RUNNING", x.agent_id, uuid="u"))
                running = time.perf_counter() - t0
    return lost, running


def churn(b: Build, attempts: int) -> None:
    """``attempts`` more attempts finish: jobs killed and resubmitted under the same keys."""
    done = 0
    while done < attempts:
        b.cycles += 1   # request ids stay unique across calls
        for j in range(b.jobs):
            key = f"role{j % 20}/bench/job{j}"
            out = b.handle(ev.KillJob(key))
            for x in out:
                if isinstance(x, fx.KillTask):
                    b.handle(ev.StatusUpdate(x.task_id, "TASK_KILLED", x.agent_id, uuid="u"))
                    b.live.pop(x.task_id, None)
                    done += 1
            b.submit(j, b.per_job, f"r{b.cycles}")
        b.fill()
        for _ in range(60):     # a minute passes, ticking as the runtime does: the timers
            b.now += 1.0        # of the ended attempts fire (at most 5,000 per tick)
            b.handle(ev.Tick())


def run(agents: int, tasks: int, jobs: int, rounds: int) -> None:
    t0 = time.perf_counter()
    b = Build(agents, tasks, jobs)
    build_s = time.perf_counter() - t0
    running = b.running()
    print(f"\n== {agents:,} agents, {running:,} running tasks, {jobs:,} jobs "
          f"(built in {build_s:.1f} s)")
    rate = b.placed / b.placed_cpu if b.placed_cpu else float("nan")
    placed = b.placed
    # Offers while workers are pending: lose 1,000 workers first. The first rounds place
    # them; the rest place what the losses of ``lose_and_replace`` free.
    for tid in b.rng.sample(list(b.live), min(1000, len(b.live))):
        b.handle(ev.StatusUpdate(tid, "TASK_LOST", b.live.pop(tid),
                                 reason="REASON_AGENT_REMOVED", uuid="u"))
    offers_t, per_round = [], []
    for _ in range(rounds):
        wall, n = b.offer_round(1000)
        offers_t.append(wall)
        per_round.append(n)
    lost_t, run_t = [], []
    for _ in range(rounds * 5):
        a, c = lose_and_replace(b)
        lost_t.append(a)
        run_t.append(c)
    # The runtime ticks every second; a policy pass starts every 5 s and, above
    # ``Elastic.jobs_per_step`` active jobs, goes on over the next ticks.
    ticks = timed(lambda: (setattr(b, "now", b.now + 1.0), b.handle(ev.Tick())), rounds * 5)
    print(f"offers (1,000)   p50 {pct(offers_t, .5) * 1e3:8.1f} ms   max "
          f"{max(offers_t) * 1e3:8.1f} ms   (placed per round: "
          f"{', '.join(str(n) for n in per_round)})")
    print(f"status lost      p50 {pct(lost_t, .5) * 1e6:8.0f} us   max "
          f"{max(lost_t) * 1e6:8.0f} us")
    print(f"status running   p50 {pct(run_t, .5) * 1e6:8.0f} us   max "
          f"{max(run_t) * 1e6:8.0f} us")
    print(f"tick (every 1 s) p50 {pct(ticks, .5) * 1e3:8.1f} ms   max "
          f"{max(ticks) * 1e3:8.1f} ms   (p90 {pct(ticks, .9) * 1e3:.1f} ms; a policy pass "
          f"every 5 s, {len(b.s.state.active_jobs()):,} jobs, "
          f"{b.s.elastic.jobs_per_step if b.s.elastic else 0:,} per tick)")
    print(f"placements       {rate:,.0f} per CPU second over the build ({placed:,} placed; "
          "many of its rounds place few tasks on 1,000 offers each)")
    print(f"collector        {gc_pauses(b)}")
    b.gc.stop()


def memory(agents: int, tasks: int, jobs: int) -> None:
    """Memory traced from before a second build (so every object the core holds is
    counted, and its frees too): per running task, then after 20,000 finished attempts
    (kill-and-resubmit) and after 20,000 more: the second figure must stay flat."""
    tracemalloc.start()
    base = memory_now()
    b = Build(agents, tasks, jobs)
    built = memory_now()
    running = b.running()
    churn(b, 20_000)
    first = memory_now()
    churn(b, 20_000)
    second = memory_now()
    tracemalloc.stop()
    print(f"memory           {(built - base) / max(running, 1):,.0f} B per running task; "
          f"after 20,000 finished attempts {(first - built) / 2**20:+.1f} MiB, after "
          f"20,000 more {(second - first) / 2**20:+.1f} MiB (attempts kept "
          f"{len(b.s.state.attempts):,}, jobs kept {len(b.s.state.jobs):,})")
    b.gc.stop()


def job_size_bench(rounds: int) -> None:
    """A status update against jobs of 10 / 100 / 1,000 workers: it must not grow with W."""
    print("\n== status update by job size (one job of W workers on 1,000 agents)")
    for workers in (10, 100, 1000):
        b = Build(1000, workers + 1, 1)
        lost_t, run_t = [], []
        for _ in range(rounds * 10):
            a, c = lose_and_replace(b)
            lost_t.append(a)
            run_t.append(c)
        print(f"W={workers:<5} lost p50 {pct(lost_t, .5) * 1e6:6.0f} us   running p50 "
              f"{pct(run_t, .5) * 1e6:6.0f} us   (live {b.running():,})")
        b.gc.stop()


def offers_json(n: int) -> bytes:
    offers = []
    for i in range(n):
        res = [{"name": name, "type": "SCALAR", "scalar": {"value": v}, "role": "*",
                "allocation_info": {"role": "*"}}
               for name, v in (("cpus", 24.0), ("mem", 98304.0), ("disk", 100000.0))]
        res.append({"name": "ports", "type": "RANGES", "role": "*",
                    "allocation_info": {"role": "*"},
                    "ranges": {"range": [{"begin": 31000, "end": 32000}]}})
        offers.append({
            "id": {"value": f"offer-{i}"}, "framework_id": {"value": "fw"},
            "agent_id": {"value": f"agent-{i}"}, "hostname": f"host-{i}.example",
            "url": {"scheme": "http", "address": {"hostname": f"host-{i}", "ip": "10.0.0.1",
                                                  "port": 5051}, "path": "/slave(1)"},
            "resources": res,
            "attributes": [{"name": "market", "type": "TEXT",
                            "text": {"value": MARKETS[i % 4]}}],
            "allocation_info": {"role": "*"},
        })
    return json.dumps({"type": "OFFERS", "offers": {"offers": offers}}).encode()


def decode_bench(rounds: int) -> None:
    print("\n== the shell's decode of OFFERS events (JSON text -> core events)")
    for n in (100, 1000, 10_000):
        raw = offers_json(n)
        def decode(raw: bytes = raw, n: int = n) -> None:
            # As the shell does: codec.loads holds the GC off for a large record, and
            # the translation of a large OFFERS event runs with it held too.
            event = codec.loads(raw)
            with codec.gc_held(n > 100):
                translate.event_from_mesos(event)

        times = timed(decode, max(3, rounds // (1 if n < 10_000 else 4)))
        med = statistics.median(times)
        print(f"{n:>6,} offers ({len(raw) / 2**20:5.1f} MiB): p50 {med * 1e3:7.1f} ms, "
              f"{med / n * 1e6:5.1f} us per offer")


def first_fit_bench(rounds: int) -> None:
    """The core's whole OFFERS decision for 1,000 pending workers (50 jobs) on 1,000
    offers, against the 20-line first fit of the same tasks on the same offers."""
    core_t, ff_t = [], []
    for r in range(rounds):
        b = Build(1000, 50, 50, seed=r, max_workers=20)   # 50 masters, nothing pending
        for j in range(50):
            b.s.handle(ev.ScaleJob(f"role{j % 20}/bench/job{j}", 20), b.now)
        assert b.s.state.pending_jobs, "the scale-ups left nothing pending"
        offers = b.offers(1000)
        t0 = time.perf_counter()
        out = b.s.handle(ev.OffersReceived(offers), b.now + 1)
        core_t.append(time.perf_counter() - t0)
        placed = sum(len(x.tasks) for x in out if isinstance(x, fx.LaunchTasks))
        pending = [(str(k), 1.0, 1024.0) for k in range(placed)]
        t0 = time.perf_counter()
        ff = first_fit(pending, offers)
        ff_t.append(time.perf_counter() - t0)
        b.gc.stop()
    core, base = statistics.median(core_t), statistics.median(ff_t)
    print(f"\n== baseline: {placed} workers on 1,000 offers: first fit p50 {base * 1e3:.2f} ms "
          f"({ff} placed); the core's whole OFFERS decision p50 {core * 1e3:.1f} ms "
          f"(ratio {core / base:.0f}x): {placed / core:,.0f} placements per second")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="*", default=["1000x10000", "10000x100000",
                                                  "50000x100000"],
                   help="AGENTSxTASKS combinations (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="1,000 agents x 10,000 tasks only")
    args = p.parse_args()
    sizes = ["1000x10000"] if args.quick else args.sizes
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    for size in sizes:
        agents, tasks = (int(x) for x in size.split("x"))
        run(agents, tasks, max(10, tasks // 50), args.rounds)
        gc.collect()
        memory(agents, tasks, max(10, tasks // 50))
    job_size_bench(args.rounds)
    decode_bench(args.rounds)
    first_fit_bench(args.rounds)


if __name__ == "__main__":
    main()
