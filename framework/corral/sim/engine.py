"""The discrete-event simulator: a simulated Mesos cluster driven by a policy.

Vocabulary: an *agent* belongs to a *market* (on-demand, or spot at a discount that can be
terminated); a *tick* is one allocation interval at which the policy decides targets and
placement puts new tasks on agents' free resources (offers); *work* is what jobs must do,
at a measured *throughput* per ready worker; workers *checkpoint* every interval, so
losing one (preemption, spot termination) loses the work since its last checkpoint,
while graceful retirement loses nothing.

Events (arrivals, ticks, spot terminations, replacements) sit on a heap ordered by
(virtual time, sequence number); all randomness comes from one ``random.Random(seed)``,
and nothing reads the wall clock except the optional timing of policy decisions, which
is reported apart from the deterministic results.

Placement uses ``corral.core.placement.place`` with one offer per agent that has free
resources. Spot-aware policies place masters and deadline workers on on-demand agents
first and other workers on spot agents first; the others place market-blind.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from corral.core.model import Offer, TaskKey, TaskKind, Tier, task_id_for
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, place
from corral.core.policy import JobDemand, PolicyResult
from corral.core.resources import Resources
from corral.core.scaling import WorkerState
from corral.sim.metrics import entitlements, jain
from corral.sim.policies import make_policy
from corral.sim.report import build_report
from corral.sim.scenario import Scenario, Workload

ARRIVE, TICK, KILL, BACK = 0, 1, 2, 3  # same-time order: arrivals before the tick


@dataclass
class Agent:
    idx: int
    id: str
    market: str
    total: list[float]  # cpus, mem (non-revocable)
    rev_total: list[float]
    free: list[float]
    rev_free: list[float]
    price_per_cpu_s: float
    alive: bool = True
    tasks: set[str] = field(default_factory=set)


@dataclass
class Task:
    id: str
    job: str
    index: int  # -1 for the master
    agent: int
    res: Resources
    revocable: bool
    ready_at: float


@dataclass
class Job:
    key: str
    role: str
    wl: Workload
    arrival: float
    work: float
    throughput: float
    deadline: float | None
    remaining: float
    master: Task | None = None
    workers: dict[int, Task] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    done_at: float | None = None
    size: Resources | None = None  # right-sized worker reservation for new launches
    measured: bool = False


@dataclass
class Stats:
    cpu_seconds: float = 0.0
    capacity_seconds: float = 0.0
    cost: float = 0.0
    on_demand_cost: float = 0.0
    spot_cpu_seconds: float = 0.0
    preemptions: int = 0
    spot_kills: int = 0
    retired: int = 0
    work_lost: float = 0.0
    work_done: float = 0.0
    decisions: int = 0
    policy_seconds: float = 0.0
    place_seconds: float = 0.0
    tasks_placed: int = 0
    ticks: int = 0
    jain: list[tuple[float, float]] = field(default_factory=list)
    role_fair_at: dict[str, float] = field(default_factory=dict)
    role_first_seen: dict[str, float] = field(default_factory=dict)
    role_cycles: dict[str, int] = field(default_factory=dict)
    risk_flags: int = 0


class Simulation:
    """One run of a scenario under one policy. ``run()`` returns the report dict."""

    def __init__(self, sc: Scenario, policy: str = "corral", seed: int | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sc = sc
        self.seed = sc.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        self.policy = make_policy(policy, sc.target_duration_s, sc.policy)
        self.clock = clock
        self.now = 0.0
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.agents = self._make_agents()
        self.jobs: dict[str, Job] = {}
        self.active: dict[str, Job] = {}
        self.tasks: dict[str, Task] = {}
        self.stats = Stats()
        self._schedule_arrivals()
        self._schedule_spot()
        self._push(0.0, TICK, None)

    # ------------------------------------------------------------ setup

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, kind, self._seq, payload))

    def _make_agents(self) -> list[Agent]:
        m = self.sc.market
        agents: list[Agent] = []
        for g in self.sc.agents:
            price = m.on_demand_price * (1 - m.spot_discount if g.market == "spot" else 1.0)
            for _ in range(g.count):
                i = len(agents)
                tot = [g.cpus, g.mem]
                rev = [g.cpus * g.revocable_fraction, g.mem * g.revocable_fraction]
                agents.append(Agent(i, f"agent-{i:05d}", g.market, tot, rev, list(tot),
                                    list(rev), price / 3600.0))
        return agents

    def _schedule_arrivals(self) -> None:
        n = 0
        for wl in self.sc.workloads:
            for k in range(wl.jobs):
                t = wl.start_s + k * wl.every_s
                work = self.rng.uniform(*wl.work)
                thr = self.rng.uniform(*wl.throughput)
                deadline = None
                if wl.deadline_slack is not None:
                    slack = self.rng.uniform(*wl.deadline_slack)
                    deadline = t + slack * work / (thr * max(1, wl.max_workers)) + wl.startup_s
                key = f"{wl.role}/sim/{wl.name}-{n:05d}"
                n += 1
                self.jobs[key] = Job(key, wl.role, wl, t, work, thr, deadline, work)
                self._push(t, ARRIVE, key)

    def _schedule_spot(self) -> None:
        m = self.sc.market
        spot = [a for a in self.agents if a.market == "spot"]
        for t, number in m.spot_trace:
            if 0 <= number < len(spot):
                self._push(t, KILL, spot[number].idx)
        if m.spot_termination_rate_per_hour > 0:
            for a in spot:
                self._push(self._next_kill(0.0), KILL, a.idx)

    def _next_kill(self, after: float) -> float:
        rate = self.sc.market.spot_termination_rate_per_hour / 3600.0
        return after + self.rng.expovariate(rate)

    # ------------------------------------------------------------ main loop

    def run(self) -> dict:
        horizon = self.sc.horizon_s
        budget = 10_000_000  # bound on events, far above any shipped scenario
        while self.events and budget > 0:
            budget -= 1
            t, kind, _, payload = heapq.heappop(self.events)
            if t > horizon:
                break
            self._advance(t)
            if kind == ARRIVE:
                self.active[str(payload)] = self.jobs[str(payload)]
                self.stats.role_first_seen.setdefault(self.jobs[str(payload)].role, t)
            elif kind == TICK:
                self._tick()
                if t + self.sc.interval_s <= horizon:
                    self._push(t + self.sc.interval_s, TICK, None)
            elif kind == KILL:
                self._spot_kill(int(payload))  # type: ignore[arg-type]
            elif kind == BACK:
                self.agents[int(payload)].alive = True  # type: ignore[arg-type]
        self._advance(horizon)
        return build_report(self)

    def _advance(self, t: float) -> None:
        """Progress every job from ``self.now`` to ``t`` and account usage and cost."""
        dt = t - self.now
        if dt <= 0:
            return
        s = self.stats
        od = self.sc.market.on_demand_price / 3600.0
        used = 0.0
        for a in self.agents:
            if not a.alive:
                continue
            s.capacity_seconds += a.total[0] * dt
            u = (a.total[0] - a.free[0]) + (a.rev_total[0] - a.rev_free[0])
            used += u
            s.cost += u * dt * a.price_per_cpu_s
            if a.market == "spot":
                s.spot_cpu_seconds += u * dt
        s.cpu_seconds += used * dt
        s.on_demand_cost += used * dt * od
        for job in list(self.active.values()):
            self._progress(job, self.now, t)
        self.now = t

    def _progress(self, job: Job, t0: float, t1: float) -> None:
        if job.master is None or job.master.ready_at >= t1:
            return
        start_m = max(t0, job.master.ready_at)
        done = 0.0
        for w in job.workers.values():
            start = max(start_m, w.ready_at)
            if start < t1:
                done += (t1 - start) * job.throughput
        if done <= 0:
            return
        if done >= job.remaining:
            # Finishes inside the interval: interpolate at the average rate.
            frac = job.remaining / done
            job.done_at = t0 + (t1 - t0) * frac
            self.stats.work_done += job.remaining
            job.remaining = 0.0
            self._finish(job)
        else:
            job.remaining -= done
            self.stats.work_done += done

    def _finish(self, job: Job) -> None:
        for t in list(job.workers.values()):
            self._release(t)
        job.workers.clear()
        if job.master is not None:
            self._release(job.master)
            job.master = None
        self.active.pop(job.key, None)

    # ------------------------------------------------------------ losing tasks

    def _lost_work(self, job: Job, t: Task) -> float:
        """Work since the task's last checkpoint (0 for a master or a starting worker)."""
        if t.index < 0 or self.now <= t.ready_at or job.master is None:
            return 0.0
        since = (self.now - max(t.ready_at, job.master.ready_at))
        if since <= 0:
            return 0.0
        return (since % job.wl.checkpoint_interval_s) * job.throughput

    def _kill(self, task_id: str, graceful: bool) -> None:
        t = self.tasks.get(task_id)
        if t is None:
            return
        job = self.jobs[t.job]
        if not graceful:
            lost = self._lost_work(job, t)
            job.remaining += lost
            self.stats.work_lost += lost
            self.stats.work_done -= lost
        if t.index < 0:
            job.master = None
        else:
            job.workers.pop(t.index, None)
        self._release(t)

    def _release(self, t: Task) -> None:
        a = self.agents[t.agent]
        pool = a.rev_free if t.revocable else a.free
        pool[0] += t.res.cpus
        pool[1] += t.res.mem
        a.tasks.discard(t.id)
        self.tasks.pop(t.id, None)

    def _spot_kill(self, idx: int) -> None:
        a = self.agents[idx]
        if a.alive:
            self.stats.spot_kills += 1
            for tid in sorted(a.tasks):
                self._kill(tid, graceful=False)
            a.alive = False
            self._push(self.now + self.sc.market.replacement_delay_s, BACK, idx)
        if self.sc.market.spot_termination_rate_per_hour > 0:
            self._push(self._next_kill(self.now + self.sc.market.replacement_delay_s), KILL,
                       idx)

    # ------------------------------------------------------------ one allocation tick

    def _demands(self) -> list[JobDemand]:
        out = []
        for job in self.active.values():
            wl = job.wl
            ws = []
            for i, w in sorted(job.workers.items()):
                age = 0.0 if self.now <= w.ready_at else \
                    (self.now - w.ready_at) % wl.checkpoint_interval_s
                ws.append(WorkerState(w.id, i, checkpoint_age_s=age))
            measured = job.measured
            out.append(JobDemand(
                key=job.key, role=job.role, worker_resources=wl.worker, tier=wl.tier,
                priority=wl.priority, min_workers=wl.min_workers, max_workers=wl.max_workers,
                initial_workers=wl.initial_workers, master_resources=wl.master,
                workers=tuple(ws), backlog=job.remaining,
                throughput_per_worker=job.throughput if measured else 0.0,
                deadline=job.deadline, remaining_work=job.remaining,
                measured_per_worker=wl.worker.scale(wl.usage) if measured else None,
                submitted_at=job.arrival,
            ))
        return out

    def _capacity(self) -> tuple[Resources, Resources]:
        c = [0.0, 0.0]
        r = [0.0, 0.0]
        for a in self.agents:
            if a.alive:
                c[0] += a.total[0]
                c[1] += a.total[1]
                r[0] += a.rev_total[0]
                r[1] += a.rev_total[1]
        return Resources(cpus=c[0], mem=c[1]), Resources(cpus=r[0], mem=r[1])

    def _tick(self) -> None:
        s = self.stats
        s.ticks += 1
        for job in self.active.values():
            if not job.measured and job.master is not None and any(
                    w.ready_at <= self.now for w in job.workers.values()):
                job.measured = True
        demands = self._demands()
        cap, rev = self._capacity()
        t0 = self.clock()
        result = self.policy.decide(demands, cap, rev, self.sc.roles, self.now)
        s.policy_seconds += self.clock() - t0
        s.decisions += len(demands)
        self._apply(result)
        t0 = self.clock()
        self._place(result)
        s.place_seconds += self.clock() - t0
        self._observe_fairness(cap)

    def _apply(self, r: PolicyResult) -> None:
        for p in r.preemptions:
            for tid in p.victims:
                if tid in self.tasks:
                    self.stats.preemptions += 1
                    self._kill(tid, graceful=False)
        for t in r.targets.values():
            job = self.jobs[t.job]
            job.size = t.worker_resources
            if t.deadline_risk is not None:
                self.stats.risk_flags += 1
            for tid in t.retire:
                if tid in self.tasks:
                    self.stats.retired += 1
                    self._kill(tid, graceful=True)

    # ------------------------------------------------------------ placement

    def _pending(self, r: PolicyResult) -> tuple[list[PendingTask], list[PendingTask],
                                                 list[PendingTask]]:
        """Masters, workers that prefer on-demand, workers that prefer spot."""
        masters: list[PendingTask] = []
        safe: list[PendingTask] = []
        cheap: list[PendingTask] = []
        for job in self.active.values():
            if job.master is None:
                masters.append(PendingTask(TaskKey(job.key, TaskKind.MASTER), job.wl.master))
            t = r.targets.get(job.key)
            want = 0 if t is None else t.workers - len(job.workers)
            size = job.size or job.wl.worker
            free_idx = (i for i in range(10**9) if i not in job.workers)
            dest = safe if job.deadline is not None else cheap
            for _ in range(max(0, want)):
                dest.append(PendingTask(TaskKey(job.key, TaskKind.WORKER, next(free_idx)),
                                        size, tier=job.wl.tier))
        return masters, safe, cheap

    def _place(self, r: PolicyResult) -> None:
        masters, safe, cheap = self._pending(r)
        if self.policy.spot_aware:
            rounds = [(masters, ("on_demand", "spot")), (safe, ("on_demand", "spot")),
                      (cheap, ("spot", "on_demand"))]
        else:
            rounds = [(masters, ("any",)), (safe + cheap, ("any",))]
        for tasks, markets in rounds:
            for market in markets:
                if not tasks:
                    break
                tasks = self._place_round(tasks, market)

    def _place_round(self, tasks: list[PendingTask], market: str) -> list[PendingTask]:
        """Place what fits on agents of ``market``; return the tasks left over."""
        smallest = min(t.resources.cpus for t in tasks)
        offers = []
        for a in self.agents:
            if not a.alive or (market != "any" and a.market != market):
                continue
            if a.free[0] < smallest and a.rev_free[0] < smallest:
                continue
            offers.append(Offer(f"o-{a.idx}", a.id, a.id,
                                Resources(cpus=a.free[0], mem=a.free[1]),
                                Resources(cpus=a.rev_free[0], mem=a.rev_free[1])))
        if not offers:
            return tasks
        facts = PlacementFacts(jobs={
            t.key.job: JobFacts(master_running=self.jobs[t.key.job].master is not None)
            for t in tasks})
        plan = place(tasks, offers, facts)
        placed = set()
        for a in plan.placed():
            self._launch(a.task, int(a.agent_id.split("-")[1]), a.revocable)
            placed.add(a.task.key)
        self.stats.tasks_placed += len(placed)
        return [t for t in tasks if t.key not in placed]

    def _launch(self, pt: PendingTask, idx: int, revocable: bool) -> None:
        job = self.jobs[pt.key.job]
        agent = self.agents[idx]
        slot = -1 if pt.key.kind is TaskKind.MASTER else pt.key.index
        attempt = job.attempts.get(slot, 0)
        job.attempts[slot] = attempt + 1
        tid = task_id_for(pt.key, attempt)
        task = Task(tid, job.key, slot, idx, pt.resources, revocable,
                    self.now + job.wl.startup_s)
        pool = agent.rev_free if revocable else agent.free
        pool[0] -= pt.resources.cpus
        pool[1] -= pt.resources.mem
        agent.tasks.add(tid)
        self.tasks[tid] = task
        if slot < 0:
            job.master = task
        else:
            job.workers[slot] = task

    # ------------------------------------------------------------ fairness observation

    def _observe_fairness(self, cap: Resources) -> None:
        """Jain's index over roles of (running share / entitled share) this tick."""
        demand: dict[str, float] = {}
        held: dict[str, float] = {}
        for job in self.active.values():
            if job.wl.tier is Tier.REVOCABLE:
                continue
            wl = job.wl
            want = wl.worker.scale(wl.max_workers) + wl.master
            demand[job.role] = demand.get(job.role, 0.0) + want.dominant_share(cap)
            used = sum(w.res.cpus for w in job.workers.values())
            mem = sum(w.res.mem for w in job.workers.values())
            if job.master is not None:
                used += job.master.res.cpus
                mem += job.master.res.mem
            held[job.role] = held.get(job.role, 0.0) + max(
                used / cap.cpus if cap.cpus else 0.0, mem / cap.mem if cap.mem else 0.0)
        if len(demand) < 1:
            return
        weights = {r: self.sc.roles[r].weight if r in self.sc.roles else 1.0 for r in demand}
        ent = entitlements({r: min(1.0, d) for r, d in demand.items()}, weights)
        xs = {r: held.get(r, 0.0) / ent[r] for r in demand if ent[r] > 0}
        self.stats.jain.append((self.now, jain(list(xs.values()))))
        for r in demand:
            if r in self.stats.role_fair_at:
                continue
            # Count allocation cycles from the role's first, until it holds 90% of what it
            # is entitled to: 1 means it was fair right at the cycle it arrived in.
            self.stats.role_cycles[r] = self.stats.role_cycles.get(r, 0) + 1
            if xs.get(r, 0.0) >= 0.9:
                self.stats.role_fair_at[r] = self.now


def run_scenario(sc: Scenario, policy: str = "corral", seed: int | None = None) -> dict:
    """Run ``sc`` under ``policy`` and return the report."""
    return Simulation(sc, policy, seed).run()


def run_many(sc: Scenario, policies: Sequence[str], seed: int | None = None) -> dict[str, dict]:
    return {p: run_scenario(sc, p, seed) for p in policies}
