"""The simulator: a discrete-event fake Mesos driving Corral's real scheduler core.

Every scheduling decision in a simulation is made by ``corral.core.scheduler.Scheduler``
— the same object ``corral scheduler`` runs — through its only entry point,
``Scheduler.handle(event, now) -> effects``, with a policy object plugged in (Corral's
``Elastic`` or a baseline from ``baselines``). This module plays Mesos and the workloads
around it, and carries out the effects the core returns, as Mesos would:

* **offers**: every ``allocation_interval_s`` the free resources of each agent with no
  outstanding offer and no refusal filter, unless the framework suppressed offers; a
  DECLINE (or the unused part of an ACCEPT) filters the agent for the refusal time, a
  task ending on it or a REVIVE lifts the filter. The order is shuffled (Mesos' allocator
  randomises agents).
* **tasks**: an ACCEPT launches its tasks (TASK_RUNNING after two seconds; the task
  contributes after its workload's ``startup_s``); invalid offers give TASK_DROPPED; a
  KILL ends the task (TASK_KILLED) within its grace; explicit and implicit reconciliation
  are answered as the Mesos master answers them (``localmesos.validation``); every update
  with a uuid must be acknowledged.
* **faults**: spot agents terminate at the scenario's rate (a Poisson process, constant or
  by schedule; or a trace), some with a notice (an inverse offer and unavailability on the
  agent's offers ``notice_s`` ahead), the rest without: their tasks stop at once and Mesos
  reports them TASK_UNREACHABLE (REASON_AGENT_REMOVED) and the agent lost ``detect_s``
  later; a replacement agent of the same kind registers ``replacement_delay_s`` after the
  termination. Oversubscribed resources are revoked (TASK_GONE, REASON_CONTAINER_PREEMPTED).
* **workloads**: a job has work units and a throughput per worker; productive workers
  (running, started, with their master running) add to it; each checkpoints every
  ``checkpoint_interval_s`` and tells the scheduler through an executor message, as the
  SDK does; the master reports progress (done, total, backlog, rerun), executors report
  each worker's CPU and memory use (the reservation times the workload's ``usage``, with
  noise). A worker stopped without a checkpoint loses the work since its last one (unless
  its workload checkpoints on SIGTERM); a drained worker (a notice) checkpoints and exits.
  When the work is done the master exits 0.

Events sit on a heap ordered by (time, kind, sequence); all randomness comes from three
``random.Random`` streams derived from the seed (the jobs, the faults, the rest), so every
policy meets the same jobs and the same machine terminations, and, the core being
deterministic, the same seed gives the same report byte for byte. Wall-clock time is
measured only for the optional timing figures.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.elastic import PolicyHooks
from corral.core.model import JobSpec, TaskKind, TaskTemplate, WorkerPool, parse_task_id
from corral.core.scheduler import Scheduler
from corral.core.spot import OverProvision
from corral.localmesos.validation import reconcile_state
from corral.sim.baselines import make_policy
from corral.sim.mesos import SimAgent, SimTask
from corral.sim.metrics import entitlements, jain
from corral.sim.report import build_report
from corral.sim.scenario import Scenario, Workload

# Event kinds, in the order events at the same time are handled.
ARRIVE, STATUS, AGENT, WORK, REPORT, ALLOC, TICK = range(7)
START_S = 2.0            # launch -> TASK_RUNNING (executor and command start)
STOP_S = 1.0             # KILL -> TASK_KILLED, within the kill grace
DRAIN_S = 5.0            # a drained worker finishes its item and exits
FRAMEWORK_ID = "corral-sim"


@dataclass(slots=True, eq=False)
class SimJob:
    """A job's workload: its work and what it has done."""

    key: str
    role: str
    wl: Workload
    spec: JobSpec
    arrival: float
    work: float
    throughput: float
    deadline: float | None
    done: float = 0.0            # units processed (as of ``mark``)
    lost: float = 0.0            # units processed and then lost
    mark: float = 0.0
    rate: float = 0.0            # units per second now
    productive: int = 0
    master: SimTask | None = None
    master_up: bool = False
    tasks: dict[str, SimTask] = field(default_factory=dict)
    token: int = 0               # invalidates a scheduled finish
    done_at: float | None = None
    submitted: bool = False

    def remaining(self) -> float:
        return self.work - (self.done - self.lost)


@dataclass(slots=True)
class Stats:
    cpu_seconds: float = 0.0
    capacity_seconds: float = 0.0
    cost: float = 0.0
    on_demand_cost: float = 0.0
    spot_cpu_seconds: float = 0.0
    spot_terminations: int = 0
    noticed: int = 0
    revocations: int = 0
    work_lost: float = 0.0
    launched: int = 0
    launched_cpus: float = 0.0
    spec_cpus: float = 0.0
    handled: int = 0
    core_seconds: float = 0.0
    ticks: int = 0
    unacked: int = 0
    jain: list[tuple[float, float]] = field(default_factory=list)
    role_fair_at: dict[str, float] = field(default_factory=dict)
    role_first_seen: dict[str, float] = field(default_factory=dict)
    role_cycles: dict[str, int] = field(default_factory=dict)


def job_spec(wl: Workload, key_name: str, deadline_s: float | None) -> JobSpec:
    """The spec a workload's job is submitted with."""
    master = TaskTemplate("sim-master", wl.master)
    worker = TaskTemplate("sim-worker", wl.worker)
    return JobSpec(wl.role, "sim", key_name, master=master,
                   workers=WorkerPool(worker, wl.min_workers, max(wl.min_workers,
                                                                  wl.max_workers),
                                      min(max(wl.initial_workers, wl.min_workers),
                                          max(wl.min_workers, wl.max_workers))),
                   tier=wl.tier, priority=wl.priority, checkpoint_uri="sim://ckpt",
                   checkpoint_interval_seconds=wl.checkpoint_interval_s,
                   kill_grace_seconds=wl.kill_grace_s, deadline_seconds=deadline_s)


class Simulation:
    """One run of a scenario under one policy. ``run()`` returns the report dict."""

    def __init__(self, sc: Scenario, policy: str = "corral", seed: int | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sc = sc
        self.seed = sc.seed if seed is None else seed
        # Three streams from the seed, so every policy sees the same jobs and the same
        # faults (which a policy's own choices must not shift): the workloads, the
        # machines' terminations and revocations, and the rest (offer order, usage noise).
        self.rng = random.Random(f"{self.seed}/jobs")
        self.faults = random.Random(f"{self.seed}/faults")
        self.noise = random.Random(f"{self.seed}/noise")
        self.policy_name = policy
        self.policy: PolicyHooks = make_policy(policy, sc)
        self.sched = Scheduler(elastic=self.policy,
                               overprovision=OverProvision(multiple=sc.overprovision),
                               default_spread="market")
        self.clock = clock
        self.now = 0.0
        self.events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._ids = 0
        self.agents: list[SimAgent] = []
        self.jobs: dict[str, SimJob] = {}
        self.tasks: dict[str, SimTask] = {}          # non-terminal tasks Mesos knows
        self.filters: list[tuple[float, int]] = []   # (until, agent idx): refusals
        self.ready: set[int] = set()                 # agents to offer at the next round
        self.offers: dict[str, SimAgent] = {}        # outstanding offer id -> agent
        self.suppressed = False
        self.unacked: set[str] = set()
        self.stats = Stats()
        # Running totals for cost, utilization and fairness (kept per change).
        self.alloc_by_market: dict[str, float] = {"spot": 0.0, "on_demand": 0.0}
        self.price = {"spot": sc.market.on_demand_price * (1 - sc.market.spot_discount)
                      / 3600.0, "on_demand": sc.market.on_demand_price / 3600.0}
        self.capacity = [0.0, 0.0]
        self.role_held: dict[str, list[float]] = {}
        self.role_demand: dict[str, float] = {}
        self.next_tick = 0.0
        self.timer_wake: float | None = None
        for g, group in enumerate(sc.agents):
            for _ in range(group.count):
                self._add_agent(g, 0.0)
        self._schedule_arrivals()
        for t, number in sc.market.spot_trace:
            self._push(t, AGENT, ("trace", number, 0))
        self._push(0.0, TICK, None)
        self._push(0.0, ALLOC, None)

    # ------------------------------------------------------------------ the loop

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, kind, self._seq, payload))

    def run(self) -> dict[str, Any]:
        horizon = self.sc.horizon_s
        self._core(ev.Subscribed(FRAMEWORK_ID))
        budget = 200_000_000  # far above any shipped scenario; a bug cannot spin forever
        while self.events and budget > 0:
            budget -= 1
            t, kind, _, payload = heapq.heappop(self.events)
            if t > horizon:
                break
            self._advance(t)
            if kind == ARRIVE:
                self._arrive(payload)
            elif kind == STATUS:
                self._status(*payload)
            elif kind == AGENT:
                self._agent_event(*payload)
            elif kind == WORK:
                self._work_event(*payload)
            elif kind == REPORT:
                self._report(*payload)
            elif kind == ALLOC:
                self._allocate()
                self._push(t + self.sc.allocation_interval_s, ALLOC, None)
            elif kind == TICK:
                self._tick(payload)
        self._advance(horizon)
        self.stats.unacked = len(self.unacked)
        return build_report(self)

    def _advance(self, t: float) -> None:
        """Account cost and utilization from ``self.now`` to ``t`` (running totals)."""
        dt = t - self.now
        if dt <= 0:
            return
        s = self.stats
        spot, od = self.alloc_by_market["spot"], self.alloc_by_market["on_demand"]
        s.capacity_seconds += self.capacity[0] * dt
        s.cpu_seconds += (spot + od) * dt
        s.spot_cpu_seconds += spot * dt
        s.cost += (spot * self.price["spot"] + od * self.price["on_demand"]) * dt
        s.on_demand_cost += (spot + od) * self.price["on_demand"] * dt
        self.now = t

    def _core(self, event: ev.Event) -> None:
        """Hand one event to the scheduler core and carry out what it returns."""
        t0 = self.clock()
        out = self.sched.handle(event, self.now)
        self.stats.core_seconds += self.clock() - t0
        self.stats.handled += 1
        for e in out:
            self._carry_out(e)
        due = self.sched.state.next_timer_at()
        if due is not None:
            at = max(due, self.now)
            if at < self.next_tick and (self.timer_wake is None or at < self.timer_wake
                                        or self.timer_wake <= self.now):
                self.timer_wake = at
                self._push(at, TICK, "timer")

    def _tick(self, why: Any) -> None:
        if why == "timer":
            if self.timer_wake is not None and self.timer_wake > self.now:
                return  # superseded by an earlier wake
            self.timer_wake = None
            self._core(ev.Tick())
            return
        self.stats.ticks += 1
        self._core(ev.Tick())
        self._observe_fairness()
        self.next_tick = self.now + self.sc.interval_s
        self._push(self.next_tick, TICK, None)

    # ------------------------------------------------------------------ effects

    def _carry_out(self, e: fx.Effect) -> None:
        if isinstance(e, fx.LaunchTasks):
            self._launch(e)
        elif isinstance(e, fx.DeclineOffers):
            for oid in e.offer_ids:
                agent = self.offers.pop(oid, None)
                if agent is not None:
                    agent.offered = None
                    self._filter(agent, e.refuse_seconds)
        elif isinstance(e, fx.KillTask):
            self._kill(e.task_id, e.agent_id, e.grace_seconds)
        elif isinstance(e, fx.Acknowledge):
            self.unacked.discard(e.uuid)
        elif isinstance(e, fx.Reconcile):
            self._reconcile(e.tasks)
        elif isinstance(e, fx.Revive):
            # REVIVE removes every refusal filter.
            self.suppressed = False
            filtered, self.filters = self.filters, []
            for _, i in filtered:
                self.agents[i].filtered_until = 0.0
                self._mark(self.agents[i])
        elif isinstance(e, fx.Suppress):
            self.suppressed = True
        elif isinstance(e, fx.SendMessage):
            self._message(e)
        # AcceptInverseOffers are advisory; JobChanged / PersistJob are the shell's.

    def _filter(self, agent: SimAgent, seconds: float) -> None:
        agent.filtered_until = self.now + seconds
        self._mark(agent)

    def _mark(self, a: SimAgent) -> None:
        """Keep the offer index right for ``a``: ready (offered at the next allocation),
        waiting for its filter to expire, or neither."""
        if not (a.alive and a.registered and a.offered is None and a.has_free()):
            self.ready.discard(a.idx)
        elif a.filtered_until > self.now:
            self.ready.discard(a.idx)
            heapq.heappush(self.filters, (a.filtered_until, a.idx))
        else:
            self.ready.add(a.idx)

    def _send(self, task: SimTask, state: str, reason: str | None = None, *,
              uuid: bool = True, message: str = "", delay: float = 0.0) -> None:
        """A status update about ``task`` reaches the scheduler after ``delay``."""
        self._push(self.now + delay, STATUS, (task, task.gen, state, reason, uuid, message))

    def _status(self, task: SimTask, gen: int, state: str, reason: str | None, uuid: bool,
                message: str) -> None:
        if gen != task.gen:
            return
        if state == "TASK_RUNNING":
            if task.state != "TASK_STAGING":
                return
            task.state = state
            if task.master:
                task.job.master = task
                self._push(max(self.now, task.ready_at), WORK, ("master-up", task, task.gen))
            else:
                self._push(max(self.now, task.ready_at), WORK, ("ready", task, task.gen))
                self._push(self.now + self.sc.usage_interval_s, REPORT,
                           ("usage", task, task.gen))
        elif task.state not in ("TASK_STAGING", "TASK_RUNNING") and \
                state != "TASK_UNREACHABLE":
            return
        else:
            self._end(task, state)
        self._deliver(task, state, reason, uuid, message)

    def _deliver(self, task: SimTask, state: str, reason: str | None, uuid: bool,
                 message: str = "", source: str = "SOURCE_EXECUTOR") -> None:
        tag = None
        if uuid:
            self._ids += 1
            tag = f"u{self._ids}"
            self.unacked.add(tag)
        self._core(ev.StatusUpdate(task.id, state, task.agent.id, executor_id=task.id,
                                   reason=reason, source=source, message=message,
                                   uuid=tag))

    # ------------------------------------------------------------------ offers

    def _allocate(self) -> None:
        while self.filters and self.filters[0][0] <= self.now:
            _, i = heapq.heappop(self.filters)
            if self.agents[i].filtered_until <= self.now:
                self._mark(self.agents[i])
        if self.suppressed or not self.ready:
            return
        ready = [self.agents[i] for i in sorted(self.ready)]
        ready = [a for a in ready if a.alive and a.registered and a.offered is None
                 and a.filtered_until <= self.now and a.has_free()]
        if not ready:
            return
        self.noise.shuffle(ready)
        offers = []
        for a in ready:
            self._ids += 1
            oid = f"o{self._ids}"
            a.offered = oid
            self.ready.discard(a.idx)
            self.offers[oid] = a
            offers.append(a.offer(oid))
        self._core(ev.OffersReceived(tuple(offers)))

    def _launch(self, e: fx.LaunchTasks) -> None:
        agents = {self.offers.get(o) for o in e.offer_ids}
        agent = next(iter(agents)) if len(agents) == 1 else None
        valid = agent is not None and agent.id == e.agent_id and agent.alive \
            and agent.registered
        for oid in e.offer_ids:
            held = self.offers.pop(oid, None)
            if held is not None:
                held.offered = None
                self._mark(held)
        for t in e.tasks:
            parsed = parse_task_id(t.task_id)
            job = self.jobs.get(parsed[0].job) if parsed else None
            if not valid or job is None or agent is None:
                self._deliver_unknown(t.task_id, e.agent_id, "TASK_DROPPED",
                                      "REASON_INVALID_OFFERS")
                continue
            key = parsed[0]  # type: ignore[index]
            index = -1 if key.kind is TaskKind.MASTER else key.index
            task = SimTask(t.task_id, job, index, agent, t.resources.cpus, t.resources.mem,
                           t.revocable, self.now, self.now + job.wl.startup_s)
            agent.tasks[task.id] = task
            agent.hold(task, 1.0)
            self.tasks[task.id] = task
            job.tasks[task.id] = task
            self._held(task, 1.0)
            self.stats.launched += 1
            if not task.master:
                self.stats.launched_cpus += task.cpus
                self.stats.spec_cpus += job.wl.worker.cpus
            self._send(task, "TASK_RUNNING", delay=min(START_S, job.wl.startup_s))
        if valid and agent is not None:
            self._filter(agent, e.refuse_seconds)

    def _held(self, task: SimTask, sign: float) -> None:
        """Allocation totals (cost, utilization, fairness) follow a task's resources."""
        self.alloc_by_market[task.agent.market] += sign * task.cpus
        held = self.role_held.setdefault(task.job.role, [0.0, 0.0])
        held[0] += sign * task.cpus
        held[1] += sign * task.mem

    def _deliver_unknown(self, task_id: str, agent_id: str | None, state: str,
                         reason: str) -> None:
        self._core(ev.StatusUpdate(task_id, state, agent_id, reason=reason,
                                   source="SOURCE_MASTER"))

    # ------------------------------------------------------------------ tasks ending

    def _kill(self, task_id: str, agent_id: str | None, grace: float) -> None:
        task = self.tasks.get(task_id)
        if task is None or not task.agent.registered:
            # Unknown to the master: it answers the kill with a reconciliation.
            self._reconcile(((task_id, agent_id),))
            return
        if task.stopping or not task.agent.alive:
            return  # already stopping, or its machine is gone (no reply until removal)
        task.stopping = True
        if task.state == "TASK_STAGING":
            self._send(task, "TASK_KILLED", uuid=True)
            return
        self._stop_work(task, checkpoint=task.job.wl.checkpoint_on_kill)
        self._send(task, "TASK_KILLED", delay=min(STOP_S, grace))

    def _end(self, task: SimTask, state: str) -> None:
        """The task reached a terminal state (or is unreachable): it holds nothing more."""
        if task.id not in self.tasks:
            return
        self._stop_work(task, checkpoint=False)
        del self.tasks[task.id]
        task.job.tasks.pop(task.id, None)
        task.gen += 1
        task.state = state
        agent = task.agent
        agent.tasks.pop(task.id, None)
        self._held(task, -1.0)
        if agent.registered:
            agent.hold(task, -1.0)
            agent.filtered_until = 0.0   # freed resources are offered again
            self._mark(agent)
        job = task.job
        if task.master and job.master is task:
            job.master = None
            self._set_master(job, False)

    def _stop_work(self, task: SimTask, checkpoint: bool) -> None:
        """The task stops contributing: its unsaved work is saved or lost."""
        job = task.job
        if task.master:
            if job.master is task:
                self._set_master(job, False)
            return
        self._productive(task, False)
        if job.done_at is not None:
            task.unsaved = 0.0   # the job is done: its output stands
        elif task.unsaved > 0:
            if checkpoint:
                self._checkpoint(task)
            else:
                job.lost += task.unsaved
                self.stats.work_lost += task.unsaved
                task.unsaved = 0.0
                self._reschedule_finish(job)

    # ------------------------------------------------------------------ work

    def _integrate(self, job: SimJob) -> None:
        if job.rate > 0:
            job.done += job.rate * (self.now - job.mark)
        job.mark = self.now

    def _reschedule_finish(self, job: SimJob) -> None:
        self._integrate(job)
        job.token += 1
        if job.done_at is not None:
            return
        left = job.remaining()
        if left <= 1e-9:
            self._finish(job)
        elif job.rate > 0:
            self._push(self.now + left / job.rate, WORK, ("finish", job, job.token))

    def _productive(self, task: SimTask, on: bool) -> None:
        job = task.job
        if (task.seg is not None) == on:
            return
        self._integrate(job)
        if on:
            task.seg = self.now
            job.productive += 1
            self._schedule_checkpoint(task)
        else:
            task.unsaved += (self.now - task.seg) * job.throughput  # type: ignore[operator]
            task.seg = None
            job.productive -= 1
        job.rate = job.productive * job.throughput
        self._reschedule_finish(job)

    def _schedule_checkpoint(self, task: SimTask) -> None:
        task.ckpt_token += 1
        self._push(self.now + task.job.wl.checkpoint_interval_s, WORK,
                   ("checkpoint", task, task.gen, task.ckpt_token))

    def _can_work(self, task: SimTask) -> bool:
        return (task.state == "TASK_RUNNING" and not task.stopping and task.agent.alive
                and self.now >= task.ready_at and task.job.master_up
                and task.job.done_at is None)

    def _set_master(self, job: SimJob, up: bool) -> None:
        if job.master_up == up:
            return
        job.master_up = up
        for t in sorted(job.tasks.values(), key=lambda x: x.id):
            if not t.master:
                self._productive(t, up and self._can_work(t))

    def _checkpoint(self, task: SimTask) -> None:
        """The worker saves its state; the SDK tells the scheduler."""
        task.unsaved = 0.0
        if task.seg is not None:
            task.seg = self.now
        task.ckpt_seq += 1
        self._message_to_core(task, {"kind": "checkpoint", "task_id": task.id,
                                     "uri": f"sim://{task.id}", "seq": task.ckpt_seq})

    def _work_event(self, what: str, obj: Any, token: int, extra: int = 0) -> None:
        if what == "finish":
            job: SimJob = obj
            if token == job.token:
                self._reschedule_finish(job)
            return
        task: SimTask = obj
        if token != task.gen or task.id not in self.tasks:
            return
        if what == "master-up":
            if task.job.master is task and not task.stopping and task.agent.alive:
                if task.job.done_at is not None:
                    # The work was done while the master was away: it exits at once.
                    task.stopping = True
                    self._send(task, "TASK_FINISHED")
                    return
                self._set_master(task.job, True)
                self._push(self.now, REPORT, ("progress", task, task.gen))
        elif what == "ready":
            self._productive(task, self._can_work(task))
        elif what == "checkpoint":
            if extra == task.ckpt_token and task.seg is not None and not task.stopping:
                self._integrate(task.job)
                task.unsaved += (self.now - task.seg) * task.job.throughput
                self._checkpoint(task)
                self._schedule_checkpoint(task)
        elif what == "drained":
            self._send(task, "TASK_FINISHED")

    def _finish(self, job: SimJob) -> None:
        """The job's work is done: its master exits 0."""
        job.done_at = self.now
        self.role_demand[job.role] = self.role_demand.get(job.role, 0.0) - \
            self._demand_share(job)
        for t in sorted(job.tasks.values(), key=lambda x: x.id):
            if not t.master:
                self._productive(t, False)
        m = job.master
        if m is not None and m.id in self.tasks:
            m.stopping = True
            self._send(m, "TASK_FINISHED")

    # ------------------------------------------------------------------ messages

    def _message_to_core(self, task: SimTask, data: dict[str, Any]) -> None:
        self._core(ev.ExecutorMessage(task.agent.id, task.id, data))

    def _report(self, what: str, task: SimTask, gen: int) -> None:
        if gen != task.gen or task.id not in self.tasks or task.stopping:
            return
        job = task.job
        if what == "progress":
            if job.master is not task or job.done_at is not None:
                return
            self._integrate(job)
            left = max(0.0, job.remaining())
            self._message_to_core(task, {
                "kind": "progress", "task_id": task.id, "done": int(job.done),
                "total": math.ceil(job.work), "backlog": math.ceil(left),
                "rerun": int(job.lost)})
            every = self.sc.progress_interval_s or self.sc.interval_s
            self._push(self.now + every, REPORT, ("progress", task, gen))
        elif what == "usage":
            wl = job.wl
            cpus = wl.worker.cpus * wl.usage * self.noise.uniform(0.85, 1.15)
            mem = wl.worker.mem * min(1.0, wl.usage) * self.noise.uniform(0.9, 1.0)
            self._message_to_core(task, {"kind": "usage", "task_id": task.id,
                                         "cpu_percent": round(cpus * 100, 2),
                                         "cpu_seconds": 0.0, "rss_mb": round(mem, 2)})
            self._push(self.now + self.sc.usage_interval_s, REPORT, ("usage", task, gen))

    def _message(self, e: fx.SendMessage) -> None:
        task = self.tasks.get(e.executor_id)
        if task is None or not task.agent.alive or task.stopping:
            return
        kind = e.data.get("kind")
        if kind == "drain" and not task.master:
            # The SDK: draining() and should_checkpoint() turn true; the worker saves,
            # finishes its item and exits 0.
            self._productive(task, False)
            self._checkpoint(task)
            task.stopping = True
            task.drained = True
            self._push(self.now + DRAIN_S, WORK, ("drained", task, task.gen))
        elif kind == "checkpoint_now" and not task.master and task.seg is not None:
            self._integrate(task.job)
            task.unsaved += (self.now - task.seg) * task.job.throughput
            self._checkpoint(task)

    # ------------------------------------------------------------------ reconciliation

    def _reconcile(self, pairs: Sequence[tuple[str, str | None]]) -> None:
        if not pairs:  # implicit: every task the master knows
            for tid in sorted(self.tasks):
                t = self.tasks[tid]
                if t.agent.registered:
                    self._deliver(t, t.state, "REASON_RECONCILIATION", False,
                                  source="SOURCE_MASTER")
            return
        for tid, agent_id in pairs:
            known = self.tasks.get(tid)
            if known is not None and known.agent.registered:
                self._deliver(known, known.state, "REASON_RECONCILIATION", False,
                              source="SOURCE_MASTER")
                continue
            agent = self._agent_by_id(agent_id)
            state = reconcile_state(None, None if agent is None else
                                    ("registered" if agent.registered else "gone"), True)
            if state is not None:
                self._deliver_unknown(tid, agent_id, state, "REASON_RECONCILIATION")

    def _agent_by_id(self, agent_id: str | None) -> SimAgent | None:
        if not agent_id or not agent_id.startswith("agent-"):
            return None
        try:
            i = int(agent_id[6:])
        except ValueError:
            return None
        return self.agents[i] if 0 <= i < len(self.agents) else None

    # ------------------------------------------------------------------ agents and faults

    def _add_agent(self, group: int, now: float) -> SimAgent:
        g = self.sc.agents[group]
        idx = len(self.agents)
        price = self.price[g.market] if g.market in self.price else self.price["on_demand"]
        a = SimAgent(idx, f"agent-{idx:05d}", group, g.market, g.cpus, g.mem,
                     g.cpus * g.revocable_fraction, g.mem * g.revocable_fraction, price)
        self.agents.append(a)
        self._mark(a)
        self.capacity[0] += a.cpus
        self.capacity[1] += a.mem
        if g.market == "spot" and self.sc.market.max_rate() > 0:
            self._next_termination(a, now)
        if a.rev_cpus > 0 and self.sc.market.revocation_rate_per_hour > 0:
            at = now + self.faults.expovariate(self.sc.market.revocation_rate_per_hour / 3600)
            self._push(at, AGENT, ("revoke", a.idx, 0))
        return a

    def _next_termination(self, a: SimAgent, after: float) -> None:
        """Draw the agent's termination from the (possibly scheduled) rate, by thinning."""
        m = self.sc.market
        top = m.max_rate() / 3600.0
        t = after
        for _ in range(10_000):
            t += self.faults.expovariate(top)
            if t > self.sc.horizon_s:
                return
            if self.faults.random() * top <= m.rate_at(t) / 3600.0:
                break
        else:
            return
        if self.faults.random() < m.notice_fraction:
            self._push(max(after, t - m.notice_s), AGENT, ("notice", a.idx, t))
        self._push(t, AGENT, ("terminate", a.idx, 0))

    def _agent_event(self, what: str, idx: int, arg: float) -> None:
        if what == "trace":
            spot = [a for a in self.agents if a.market == "spot" and a.alive]
            if 0 <= idx < len(spot):
                self._terminate(spot[idx])
            return
        a = self.agents[idx]
        if what == "notice":
            if a.alive and a.unavailable_at is None:
                a.unavailable_at = arg
                self.stats.noticed += 1
                self._ids += 1
                self._core(ev.InverseOffersReceived((ev.InverseOffer(
                    f"i{self._ids}", a.id, a.id, arg, None),)))
        elif what == "terminate":
            self._terminate(a)
        elif what == "detect":
            self._remove(a)
        elif what == "replace":
            self._add_agent(a.group, self.now)
        elif what == "revoke":
            self._revoke(a)
        elif what == "unrevoke":
            a.revoked = False
            a.filtered_until = 0.0
            self._mark(a)
            at = self.now + self.faults.expovariate(
                self.sc.market.revocation_rate_per_hour / 3600)
            self._push(at, AGENT, ("revoke", a.idx, 0))

    def _terminate(self, a: SimAgent) -> None:
        """The machine is gone now; Mesos notices after its health checks."""
        if not a.alive:
            return
        a.alive = False
        self.ready.discard(a.idx)
        self.stats.spot_terminations += 1
        self.capacity[0] -= a.cpus
        self.capacity[1] -= a.mem
        for tid in sorted(a.tasks):
            self._stop_work(a.tasks[tid], checkpoint=False)
        if a.offered is not None:
            oid, a.offered = a.offered, None
            self.offers.pop(oid, None)
            self._core(ev.OfferRescinded(oid))
        self._push(self.now + self.sc.market.detect_s, AGENT, ("detect", a.idx, 0))
        self._push(self.now + self.sc.market.replacement_delay_s, AGENT, ("replace", a.idx, 0))

    def _remove(self, a: SimAgent) -> None:
        """The master removes the agent: its tasks are unreachable, the agent lost."""
        a.registered = False
        for tid in sorted(a.tasks):
            t = a.tasks[tid]
            self._end(t, "TASK_UNREACHABLE")
            self._deliver(t, "TASK_UNREACHABLE", "REASON_AGENT_REMOVED", False,
                          f"Agent {a.id} removed: health checks failed",
                          source="SOURCE_MASTER")
        a.tasks.clear()
        self._core(ev.AgentLost(a.id))

    def _revoke(self, a: SimAgent) -> None:
        if not a.alive:
            return
        self.stats.revocations += 1
        a.revoked = True
        for tid in sorted(a.tasks):
            t = a.tasks[tid]
            if t.revocable:
                self._end(t, "TASK_GONE")
                self._ids += 1
                self.unacked.add(f"u{self._ids}")
                self._core(ev.StatusUpdate(t.id, "TASK_GONE", a.id, executor_id=t.id,
                                           reason="REASON_CONTAINER_PREEMPTED",
                                           source="SOURCE_AGENT", uuid=f"u{self._ids}"))
        self._push(self.now + self.sc.market.revocation_s, AGENT, ("unrevoke", a.idx, 0))

    # ------------------------------------------------------------------ jobs

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
                name = f"{wl.name}-{n:05d}"
                key = f"{wl.role}/sim/{name}"
                n += 1
                spec = job_spec(wl, name, None if deadline is None else deadline - t)
                self.jobs[key] = SimJob(key, wl.role, wl, spec, t, work, thr, deadline,
                                        mark=t)
                self._push(t, ARRIVE, key)

    def _demand_share(self, job: SimJob) -> float:
        wl = job.wl
        cap_c, cap_m = self.sc_capacity
        want_c = wl.worker.cpus * wl.max_workers + wl.master.cpus
        want_m = wl.worker.mem * wl.max_workers + wl.master.mem
        return max(want_c / cap_c if cap_c else 0.0, want_m / cap_m if cap_m else 0.0)

    @property
    def sc_capacity(self) -> tuple[float, float]:
        """The cluster as the scenario declares it (the fairness yardstick's capacity)."""
        return (sum(g.count * g.cpus for g in self.sc.agents),
                sum(g.count * g.mem for g in self.sc.agents))

    def _arrive(self, key: str) -> None:
        job = self.jobs[key]
        job.submitted = True
        job.mark = self.now
        if job.wl.tier.value != "revocable":
            self.role_demand[job.role] = self.role_demand.get(job.role, 0.0) + \
                self._demand_share(job)
        self.stats.role_first_seen.setdefault(job.role, self.now)
        self._core(ev.SubmitJob(job.spec, f"sim-{key}"))

    # ------------------------------------------------------------------ fairness

    def _observe_fairness(self) -> None:
        """Jain's index over roles of (held share / entitled share) this cycle."""
        demand = {r: d for r, d in self.role_demand.items() if d > 1e-12}
        if not demand:
            return
        cap_c, cap_m = self.sc_capacity
        weights = {r: self.sc.roles[r].weight if r in self.sc.roles else 1.0 for r in demand}
        ent = entitlements({r: min(1.0, d) for r, d in demand.items()}, weights)
        xs = {}
        for r in demand:
            if ent[r] <= 0:
                continue
            c, m = self.role_held.get(r, [0.0, 0.0])
            xs[r] = max(c / cap_c if cap_c else 0.0, m / cap_m if cap_m else 0.0) / ent[r]
        self.stats.jain.append((self.now, jain(list(xs.values()))))
        for r in sorted(demand):
            if r in self.stats.role_fair_at:
                continue
            # Allocation cycles from the role's first, until it holds 90% of what it is
            # entitled to: 1 means it was fair at the cycle it arrived in.
            self.stats.role_cycles[r] = self.stats.role_cycles.get(r, 0) + 1
            if xs.get(r, 0.0) >= 0.9:
                self.stats.role_fair_at[r] = self.now


def run_scenario(sc: Scenario, policy: str = "corral", seed: int | None = None) -> dict:
    """Run ``sc`` under ``policy`` and return the report."""
    return Simulation(sc, policy, seed).run()


def run_many(sc: Scenario, policies: Sequence[str], seed: int | None = None
             ) -> dict[str, dict]:
    """Every policy on the same scenario and seed (each its own run of the same cluster)."""
    return {p: run_scenario(sc, p, seed) for p in policies}
