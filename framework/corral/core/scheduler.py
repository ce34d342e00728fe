"""The scheduler state machine: every Corral decision, as ``handle(event, now) -> effects``.

``Scheduler`` owns the jobs, their slots (master, worker N) and every Mesos task attempt
Corral launched. It is deliberately a *mutable* object with a deterministic ``handle``
(like dask's ``WorkerState.handle_stimulus``) instead of a new frozen state per event:
at 20,000 tasks copying state per event is too slow (docs/decisions/0002). It still does
no I/O, reads no clock (``now`` is an argument) and uses no global randomness, so the
runtime, the simulator and the tests drive the same object.

``handle`` never raises on bad input: a command that cannot apply produces no effects and
a line in ``notes``. The API calls ``check_submit``/``check_scale``/``check_kill`` first,
which raise the ``views`` errors the user should see.

Vocabulary: a *slot* is a logical task (``TaskKey``); each launch into it is an *attempt*
(one Mesos task id, numbered from 1). A slot *needs a launch* when it has no live attempt;
it is *pending* when it also may be placed now (not in restart backoff, and for workers,
the job's master runs). ``target_workers`` is the desired worker count: the spec's
``workers.initial`` at first, then ScaleJob or the elastic policy (``set_target_workers``).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from typing import Any

from corral.core import accounting as acct
from corral.core import effects as fx
from corral.core import events as ev
from corral.core import workload
from corral.core.elastic import MANUAL_REASON, Elastic
from corral.core.job_state import JobInput, JobPhase, job_transition, public_state
from corral.core.model import JobSpec, TaskKey, TaskKind, TaskTemplate, parse_task_id, task_id_for
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, Plan, place
from corral.core.placement.types import Assignment
from corral.core.resources import ZERO, Resources
from corral.core.spot import OverProvision, spare_workers
from corral.core.task_state import (
    Cause,
    TaskState,
    classify,
    describe_failure,
    transition,
)
from corral.core.views import (
    AlreadyExists,
    Conflict,
    JobView,
    NotFound,
    Progress,
    Resilience,
    TaskView,
)

# A job label asking for spare workers: the safety multiple of the over-provisioning rule.
OVERPROVISION_LABEL = "overprovision"
_LIVE_MESOS = frozenset({"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"})


@dataclass(slots=True, eq=False)
class Attempt:
    """One Mesos task Corral launched (or adopted) for a slot."""

    job: JobRecord
    key: TaskKey
    attempt: int
    task_id: str
    state: TaskState = TaskState.LAUNCHED
    agent_id: str | None = None
    hostname: str | None = None
    executor_id: str | None = None
    ports: tuple[int, ...] = ()
    revocable: bool = False
    reason: str | None = None
    message: str = ""
    kill_sent_at: float | None = None
    running_since: float | None = None
    # Set when a notice (inverse offer, unavailability, drain) made Corral move this
    # attempt: when it must be gone by (the maintenance start), None otherwise.
    drain_by: float | None = None
    # The job's master was asked to retire this worker through its framework (Dask).
    retiring: bool = False


@dataclass(slots=True, eq=False)
class Slot:
    key: TaskKey
    current: Attempt | None = None
    attempts: int = 0
    failures: int = 0              # the job's own failures; infrastructure loss never counts
    not_before: float = 0.0        # restart backoff
    last_failure: str = ""
    pending_reason: str | None = None
    completed: bool = False        # a worker that exited 0 is done for good
    checkpoint: tuple[str, int, float] | None = None   # uri, seq, when
    # A worker attempt on a draining agent that has been replaced but may still be
    # finishing its last piece of work: the one moment a slot has two live attempts.
    outgoing: Attempt | None = None

    def needs_launch(self) -> bool:
        return not self.completed and (self.current is None or not self.current.state.live)


@dataclass(slots=True, eq=False)
class JobRecord:
    spec: JobSpec
    request_id: str
    seq: int
    submitted_at: float
    desired: int
    master: Slot
    # A resubmitted key continues the attempt numbering of the job it replaces, so a task
    # id is never reused while an old task might still be alive.
    attempt_base: int = 0
    workers: dict[int, Slot] = field(default_factory=dict)
    phase: JobPhase = JobPhase.PENDING
    finished_at: float | None = None
    message: str = ""
    target_reason: str = "initial"
    version: int = 0
    master_address: str | None = None
    live: set[str] = field(default_factory=set)          # task ids of live attempts
    progress: dict[str, Progress] = field(default_factory=dict)
    usage: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    accounting: acct.JobAccounting = field(default_factory=acct.JobAccounting)
    terminations: list[float] = field(default_factory=list)   # times, for over-provisioning
    recovery_times: deque[tuple[float, float]] = field(       # (when, seconds it took)
        default_factory=lambda: deque(maxlen=100))
    spare: int = 0
    spare_reason: str = ""
    load: workload.LoadReport | None = None   # the master's latest load report

    @property
    def key(self) -> str:
        return self.spec.key

    def slot(self, key: TaskKey) -> Slot:
        if key.kind is TaskKind.MASTER:
            return self.master
        s = self.workers.get(key.index)
        if s is None:
            s = self.workers[key.index] = Slot(key, attempts=self.attempt_base)
        return s

    def master_running(self) -> bool:
        cur = self.master.current
        return cur is not None and cur.state is TaskState.RUNNING

    def active(self) -> bool:
        return self.phase in (JobPhase.PENDING, JobPhase.RUNNING)

    def view_progress(self) -> Progress:
        return _job_progress(self)

    def wants(self, key: TaskKey) -> bool:
        """Whether the job still wants a task in this slot."""
        if not self.active():
            return False
        return key.kind is TaskKind.MASTER or key.index < self.effective_workers()

    def effective_workers(self) -> int:
        """Desired workers plus the spare ones over-provisioning keeps, within the spec."""
        return min(self.spec.workers.max, self.desired + self.spare) \
            if self.spare else self.desired


def template_of(spec: JobSpec, key: TaskKey) -> TaskTemplate:
    return spec.master if key.kind is TaskKind.MASTER else spec.workers.template


def build_env(job: JobRecord, key: TaskKey, attempt: int,
              ports: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """The task's environment: the template's env, then every CORRAL_* variable."""
    spec = job.spec
    env: dict[str, str] = dict(template_of(spec, key).env)
    env["CORRAL_JOB"] = spec.key
    env["CORRAL_TASK_ROLE"] = key.kind.value
    if key.kind is TaskKind.WORKER:
        env["CORRAL_WORKER_INDEX"] = str(key.index)
        if job.master_address:
            env["CORRAL_MASTER_ADDRESS"] = job.master_address
    if ports:
        env["CORRAL_PORT"] = str(ports[0])
        env["CORRAL_PORTS"] = ",".join(str(p) for p in ports)
    if spec.checkpoint_uri:
        env["CORRAL_CHECKPOINT_URI"] = f"{spec.checkpoint_uri.rstrip('/')}/{key.label()}"
    env["CORRAL_CHECKPOINT_INTERVAL"] = f"{spec.checkpoint_interval_seconds:g}"
    env["CORRAL_ATTEMPT"] = str(attempt)
    return tuple(env.items())


class Scheduler:
    """Corral's decisions. Feed it events with ``handle``; carry out what it returns."""

    def __init__(
        self, *, executor_overhead: Resources = ZERO, refuse_short: float = 5.0,
        refuse_long: float = 30.0, reconcile_interval: float = 600.0,
        kill_retry_seconds: float = 30.0, notes_limit: int = 1000,
        elastic: Elastic | None = None, overprovision: OverProvision | None = None,
        default_spread: str | None = "market", drain_margin_seconds: float = 1.0,
    ) -> None:
        """``overprovision``: the spare-worker rule (``core.spot``); its multiple is the
        default for jobs without an ``overprovision`` label (None: 0, i.e. off unless a
        job asks; a job's label ``overprovision=<multiple>`` overrides it).
        ``default_spread``: the agent attribute workers spread over when a job names none
        (the spot market). A drained
        task still running ``drain_margin_seconds`` before its agent's deadline (and
        its kill grace) is killed so it can checkpoint on SIGTERM in time."""
        self.elastic = elastic
        self.overprovision = overprovision if overprovision is not None \
            else OverProvision(multiple=0.0)
        self.default_spread = default_spread
        self.drain_margin_seconds = drain_margin_seconds
        self.executor_overhead = executor_overhead
        self.refuse_short = refuse_short
        self.refuse_long = refuse_long
        self.reconcile_interval = reconcile_interval
        self.kill_retry_seconds = kill_retry_seconds
        self.framework_id: str | None = None
        self.jobs: dict[str, JobRecord] = {}
        self.notes: deque[tuple[float, str]] = deque(maxlen=notes_limit)
        self._tasks: dict[str, Attempt] = {}
        self._agent_tasks: dict[str, set[str]] = {}
        self._agent_attrs: dict[str, dict[str, str]] = {}
        self._agent_hosts: dict[str, str] = {}
        self._lost_agents: set[str] = set()
        self._inverse: dict[str, str] = {}           # inverse offer id -> agent id
        self._inverse_accepted: set[str] = set()
        self._draining: dict[str, tuple[float, float | None]] = {}  # agent -> start, end
        self._draining_tasks: set[str] = set()       # replaced attempts still draining
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = 0
        self._seq = 0
        self._dirty: set[str] = set()
        self._pending: dict[str, list[TaskKey]] = {}
        self._killing: set[str] = set()
        self._suppressed = False
        self._last_reconcile: float | None = None
        self._now = 0.0
        self._out: list[fx.Effect] = []
        self._changed: dict[str, None] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.Subscribed: self._on_subscribed, ev.Disconnected: self._on_disconnected,
            ev.OffersReceived: self._on_offers, ev.OfferRescinded: self._on_rescinded,
            ev.InverseOffersReceived: self._on_inverse_offers,
            ev.InverseOfferRescinded: self._on_inverse_rescinded,
            ev.StatusUpdate: self._on_status, ev.ExecutorMessage: self._on_message,
            ev.AgentLost: self._on_agent_lost, ev.ExecutorExited: self._on_executor_exited,
            ev.SubmitJob: self._on_submit, ev.KillJob: self._on_kill,
            ev.ScaleJob: self._on_scale, ev.Tick: self._on_tick,
        }

    # ------------------------------------------------------------------ entry point

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Apply one event at time ``now``; return the effects to carry out, in order."""
        self._now = now
        self._out = []
        self._changed = {}
        handler = self._handlers.get(type(event))
        if handler is None:
            self._note(f"ignored unknown event {type(event).__name__}")
        else:
            handler(event)
        self._after()
        out = self._out + [fx.JobChanged(k) for k in self._changed]
        self._out = []
        return out

    # ------------------------------------------------------------------ API checks

    def check_submit(self, spec: JobSpec, request_id: str) -> JobView | None:
        """The existing view for a repeated request id; None if the submit will create
        the job; raises AlreadyExists if another request owns a live job of that key."""
        job = self.jobs.get(spec.key)
        if job is None:
            return None
        if job.request_id == request_id:
            return self._view(job)
        if not job.phase.terminal:
            raise AlreadyExists(f"job {spec.key} already exists (request {job.request_id})")
        return None

    def check_scale(self, key: str, workers: int) -> None:
        job = self._job_or_raise(key)
        if job.phase.terminal or job.phase is JobPhase.KILLING:
            raise Conflict(f"job {key} is {job.phase.value.lower()}; it cannot be scaled")
        lo, hi = job.spec.workers.min, job.spec.workers.max
        if not lo <= workers <= hi:
            raise Conflict(f"workers must be within {lo}..{hi} for job {key} (got {workers})")

    def check_kill(self, key: str) -> None:
        self._job_or_raise(key)

    def view(self, key: str) -> JobView:
        return self._view(self._job_or_raise(key))

    def views(self) -> list[JobView]:
        return [self._view(j) for j in self.jobs.values()]

    def target_workers(self, key: str) -> int:
        """The desired worker count of a job (the hook the elastic policy drives)."""
        return self._job_or_raise(key).desired

    def task_ids_to_reconcile(self) -> list[tuple[str, str | None]]:
        """Every non-terminal attempt Corral knows, as (task id, agent id)."""
        return [(a.task_id, a.agent_id) for a in self._tasks.values()
                if not a.state.terminal and a.state is not TaskState.PENDING]

    def drain_notes(self) -> list[tuple[float, str]]:
        out = list(self.notes)
        self.notes.clear()
        return out

    def set_target_workers(self, key: str, workers: int, reason: str,
                           now: float) -> list[fx.Effect]:
        """Change the desired worker count (clamped to the spec's bounds); scale-down kills
        the highest indexes first. For the elastic policy and ScaleJob."""
        self._now = now
        self._out = []
        self._changed = {}
        job = self.jobs.get(key)
        if job is None or not job.active():
            self._note(f"target for {key} ignored: job not active")
        else:
            self._set_target(job, workers, reason)
        self._after()
        out = self._out + [fx.JobChanged(k) for k in self._changed]
        self._out = []
        return out

    # ------------------------------------------------------------------ job commands

    def _on_submit(self, e: ev.SubmitJob) -> None:
        spec = e.spec
        old = self.jobs.get(spec.key)
        if old is not None and old.request_id == e.request_id:
            self._note(f"submit {spec.key}: request {e.request_id} already applied")
            return
        if old is not None and not old.phase.terminal:
            self._note(f"submit {spec.key} rejected: job exists (request {old.request_id})")
            return
        base = 0
        if old is not None:
            base = max([old.master.attempts, *(s.attempts for s in old.workers.values())])
        self._seq += 1
        job = JobRecord(
            spec=spec, request_id=e.request_id, seq=self._seq, submitted_at=self._now,
            desired=spec.workers.initial, master=Slot(TaskKey(spec.key, TaskKind.MASTER),
                                                      attempts=base),
            attempt_base=base,
        )
        self.jobs[spec.key] = job
        self._refresh_spare(job)
        self._dirty.add(spec.key)
        self._changed_job(job)
        self._note(f"submitted {spec.key} ({spec.workers.initial} workers)")

    def _on_kill(self, e: ev.KillJob) -> None:
        job = self.jobs.get(e.key)
        if job is None:
            self._note(f"kill {e.key} ignored: no such job")
            return
        phase, outcome = job_transition(job.phase, JobInput.KILL_REQUESTED)
        if not outcome.applied:
            self._note(f"kill {e.key} {outcome.why}")
            return
        job.phase = phase
        job.message = "killed by request"
        for tid in sorted(job.live):
            self._kill(self._tasks[tid])
        self._dirty.add(job.key)
        self._changed_job(job)
        self._maybe_killed(job)

    def _on_scale(self, e: ev.ScaleJob) -> None:
        try:
            self.check_scale(e.key, e.workers)
        except (NotFound, Conflict) as err:
            self._note(f"scale ignored: {err}")
            return
        self._set_target(self.jobs[e.key], e.workers, MANUAL_REASON)

    def _set_target_of(self, key: str, workers: int, reason: str) -> None:
        self._set_target(self.jobs[key], workers, reason)

    def lost_agents(self) -> frozenset[str]:
        """Agents Mesos reported lost and that have not offered since."""
        return frozenset(self._lost_agents)

    def _set_target(self, job: JobRecord, workers: int, reason: str) -> None:
        workers = max(job.spec.workers.min, min(job.spec.workers.max, workers))
        if workers == job.desired and reason == job.target_reason:
            return
        job.desired = workers
        job.target_reason = reason
        self._trim(job)
        self._dirty.add(job.key)
        self._changed_job(job)

    def _trim(self, job: JobRecord) -> None:
        """Kill the workers at or above the job's effective count, highest first."""
        keep = job.effective_workers()
        for index in sorted(job.workers, reverse=True):
            if index < keep:
                break
            slot = job.workers[index]
            job.accounting.forget(slot.key.label())
            for att in (slot.current, slot.outgoing):
                if att is None or not att.state.live or att.retiring:
                    continue
                if not (att is slot.current and self._retire(
                        job, slot, att, self._now + workload.RETIRE_SECONDS)):
                    self._kill(att)

    # ------------------------------------------------------------------ Mesos session

    def _on_subscribed(self, e: ev.Subscribed) -> None:
        self.framework_id = e.framework_id
        # A fresh subscription is not suppressed; re-evaluate below.
        self._suppressed = False
        tasks = self.task_ids_to_reconcile()
        self._out.append(fx.Reconcile(tuple(tasks)))
        self._last_reconcile = self._now
        self._note(f"subscribed as {e.framework_id}; reconciling {len(tasks)} tasks"
                   + (" (implicit)" if not tasks else ""))

    def _on_disconnected(self, e: ev.Disconnected) -> None:
        self._note("disconnected from the Mesos master")

    def _on_tick(self, e: ev.Tick) -> None:
        now = self._now
        if self.elastic is not None:
            self.elastic.step(self, now, self._set_target_of)
        if (self._last_reconcile is not None
                and now - self._last_reconcile >= self.reconcile_interval):
            self._out.append(fx.Reconcile(()))
            self._last_reconcile = now
        for tid in sorted(self._killing):
            att = self._tasks[tid]
            if not att.state.live:
                self._killing.discard(tid)
                continue
            grace = att.job.spec.kill_grace_seconds
            if att.kill_sent_at is not None and now - att.kill_sent_at > grace + \
                    self.kill_retry_seconds:
                self._kill(att, again=True)
        for agent, (_start, end) in list(self._draining.items()):
            if end is not None and now >= end:
                del self._draining[agent]
        self._drain_deadlines()
        for job in self.jobs.values():
            if job.active() and (job.spare or job.terminations):
                self._refresh_spare(job)

    def _on_agent_lost(self, e: ev.AgentLost) -> None:
        # Mesos sends a status update for every task there; count nothing here.
        self._lost_agents.add(e.agent_id)
        self._note(f"agent {e.agent_id} lost")

    def _on_executor_exited(self, e: ev.ExecutorExited) -> None:
        self._note(f"executor {e.executor_id} on {e.agent_id} exited (status {e.status})")

    def _on_rescinded(self, e: ev.OfferRescinded) -> None:
        self._note(f"offer {e.offer_id} rescinded (not held)")

    # ------------------------------------------------------------------ offers

    def _on_offers(self, e: ev.OffersReceived) -> None:
        if self.elastic is not None:
            self.elastic.observe_offers(e.offers)
        for o in e.offers:
            self._agent_attrs[o.agent_id] = dict(o.attributes)
            self._agent_hosts[o.agent_id] = o.hostname
            self._lost_agents.discard(o.agent_id)
            if o.unavailable_at is not None and o.agent_id not in self._draining:
                # A maintenance window on the offer is how a spot notice reaches Mesos.
                self._notice(o.agent_id, o.unavailable_at, None,
                             f"offer unavailability from {o.unavailable_at:.0f}")
            elif o.unavailable_at is None and o.agent_id in self._draining \
                    and o.agent_id not in self._inverse.values():
                # The window was cancelled (no inverse offer holds it): usable again.
                del self._draining[o.agent_id]
        self._refresh()
        pending, facts = self._placement_inputs()
        if not pending:
            ids = tuple(o.id for o in e.offers)
            if ids:
                self._out.append(fx.DeclineOffers(ids, self.refuse_long))
            return
        plan = place(pending, e.offers, facts)
        refuse = self.refuse_short if plan.vetoes else self.refuse_long
        for agent, assigned in plan.assignments.items():
            launches = tuple(self._launch(a) for a in assigned)
            if self.elastic is not None:
                for a in assigned:
                    self.elastic.observe_launch(agent, a.task.resources, a.revocable)
            self._out.append(fx.LaunchTasks(plan.offer_ids[agent], agent, launches, refuse))
        unused = plan.unused_offer_ids()
        if unused:
            self._out.append(fx.DeclineOffers(tuple(unused), refuse))
        self._record_vetoes(plan)

    def _placement_inputs(self) -> tuple[list[PendingTask], PlacementFacts]:
        order = sorted(self._pending, key=lambda k: (-self.jobs[k].spec.priority,
                                                    self.jobs[k].seq))
        pending: list[PendingTask] = []
        jobs: dict[str, JobFacts] = {}
        for k in order:
            job = self.jobs[k]
            spec = job.spec
            constraints = spec.constraints
            if constraints.spread_over is None and self.default_spread:
                # Diversify by default: one spot market's reclaim takes only its share.
                constraints = _replace(constraints, spread_over=self.default_spread)
            for key in self._pending[k]:
                t = template_of(spec, key)
                pending.append(PendingTask(key, t.resources + self.executor_overhead,
                                           t.ports, spec.tier, constraints))
            jobs[k] = self._job_facts(job)
        draining = {a: start for a, (start, _end) in self._draining.items()}
        return pending, PlacementFacts(jobs=jobs, draining=draining, now=self._now)

    def _job_facts(self, job: JobRecord) -> JobFacts:
        per_agent: Counter[str] = Counter()
        spread: Counter[str] = Counter()
        attr = job.spec.constraints.spread_over or self.default_spread
        for tid in job.live:
            att = self._tasks[tid]
            if att.agent_id is None:
                continue
            per_agent[att.agent_id] += 1
            if attr and att.key.kind is TaskKind.WORKER:
                value = self._agent_attrs.get(att.agent_id, {}).get(attr)
                if value is not None:
                    spread[value] += 1
        return JobFacts(master_running=job.master_running(), tasks_per_agent=per_agent,
                        spread_counts=spread)

    def _launch(self, a: Assignment) -> fx.TaskLaunch:
        key = a.task.key
        job = self.jobs[key.job]
        slot = job.slot(key)
        slot.attempts += 1
        n = slot.attempts
        tid = task_id_for(key, n)
        att = Attempt(job=job, key=key, attempt=n, task_id=tid, agent_id=a.agent_id,
                      hostname=a.hostname, executor_id=tid, ports=a.ports,
                      revocable=a.revocable)
        slot.current = att
        slot.pending_reason = None
        self._tasks[tid] = att
        self._set_live(att, True)
        self._dirty.add(job.key)
        self._changed_job(job)
        t = template_of(job.spec, key)
        return fx.TaskLaunch(
            task_id=tid, key=key, attempt=n, name=f"{job.key} {key.label()}",
            command=workload.launch_command(job.spec, key), resources=t.resources,
            ports=a.ports, revocable=a.revocable,
            env=build_env(job, key, n, a.ports), grace_seconds=job.spec.kill_grace_seconds,
            hostname=a.hostname,
        )

    def _record_vetoes(self, plan: Plan) -> None:
        for key, reasons in plan.vetoes.items():
            job = self.jobs[key.job]
            slot = job.slot(key)
            text = "; ".join(reasons)
            if slot.pending_reason != text:
                slot.pending_reason = text
                self._changed_job(job)

    # ------------------------------------------------------------------ status updates

    def _on_status(self, e: ev.StatusUpdate) -> None:
        att = self._tasks.get(e.task_id)
        if att is None:
            self._unknown_task(e)
        else:
            self._apply_status(att, e)
        if e.uuid is not None and e.agent_id is not None:
            # Always acknowledge, even stale or unknown updates: Mesos resends otherwise.
            self._out.append(fx.Acknowledge(e.agent_id, e.task_id, e.uuid))

    def _apply_status(self, att: Attempt, e: ev.StatusUpdate) -> None:
        job = att.job
        if e.agent_id and att.agent_id is None:
            att.agent_id = e.agent_id
        if e.executor_id:
            att.executor_id = e.executor_id
        new, outcome = transition(att.state, e.state)
        if not outcome.applied:
            self._note(f"{att.task_id}: {outcome.why}")
            if e.state in _LIVE_MESOS and att.state.terminal:
                # Mesos thinks it lives, we already wrote it off: make sure it is gone.
                self._kill(att)
            return
        att.state = new
        att.reason = e.reason
        att.message = e.message
        self._set_live(att, new.live)
        self._changed_job(job)
        self._dirty.add(job.key)
        slot = job.slot(att.key)
        current = slot.current is att
        if new is TaskState.RUNNING and att.running_since is None:
            att.running_since = self._now
        if slot.outgoing is att:
            self._outgoing_update(job, slot, att)
        elif new.live:
            unwanted = not current or not job.wants(att.key) or slot.completed
            if unwanted and att.kill_sent_at is None:
                self._kill(att)
            elif current and new is TaskState.RUNNING:
                self._recovered(job, att)
                if att.key.kind is TaskKind.MASTER:
                    self._master_running(job, att)
        elif current and (new.terminal or new is TaskState.UNREACHABLE):
            self._slot_ended(job, slot, att)
        if job.phase is JobPhase.KILLING:
            self._maybe_killed(job)

    def _master_running(self, job: JobRecord, att: Attempt) -> None:
        host = att.hostname or self._agent_hosts.get(att.agent_id or "") or "unknown"
        address = f"{host}:{att.ports[0]}" if att.ports else host
        job.master_address = address
        phase, outcome = job_transition(job.phase, JobInput.MASTER_RUNNING)
        job.phase = phase
        if outcome.applied:
            job.message = f"master running at {address}"
        for slot in sorted(job.workers.values(), key=lambda s: s.key.index):
            # A draining worker still needs the master to hand in its last result.
            for w in (slot.current, slot.outgoing):
                if w is not None and w.state.live and w.agent_id and w.executor_id:
                    self._out.append(fx.SendMessage(
                        w.agent_id, w.executor_id,
                        {"kind": "master_address", "address": address}))
        self._dirty.add(job.key)

    def _slot_ended(self, job: JobRecord, slot: Slot, att: Attempt) -> None:
        """The slot's current attempt ended (or became unreachable): decide what next."""
        self._dirty.add(job.key)
        cause = classify(att.state, att.reason, kill_requested=att.kill_sent_at is not None,
                         agent_lost=att.agent_id in self._lost_agents)
        label = att.key.label()
        is_master = att.key.kind is TaskKind.MASTER
        if not job.active():
            return
        if cause is Cause.SUCCEEDED:
            if is_master:
                self._finish(job, JobInput.MASTER_FINISHED, "master finished")
            else:
                slot.completed = True
            return
        if cause is Cause.KILLED:
            if is_master and att.drain_by is not None:
                self._master_lost(job, f"master moved off draining agent {att.agent_id}; "
                                       "relaunching from its checkpoint")
            return
        if cause is Cause.INFRASTRUCTURE:
            self._note(f"{att.task_id} lost ({att.state.mesos_name}, {att.reason}); "
                       f"relaunching {label}")
            self._record_loss(job, slot, att)
            if is_master:
                self._master_lost(job, f"master lost ({att.state.mesos_name}); relaunching")
            return
        slot.failures += 1
        slot.last_failure = describe_failure(att.state, att.reason, att.message)
        limit = job.spec.restart.max_failures
        if slot.failures > limit:
            self._finish(job, JobInput.GAVE_UP,
                         f"{label} failed {slot.failures} times; last: {slot.last_failure}")
            return
        r = job.spec.restart
        delay = min(r.backoff_seconds * 2 ** (slot.failures - 1), r.backoff_max_seconds)
        slot.not_before = self._now + delay
        self._add_timer(slot.not_before, job.key)
        self._note(f"{label} of {job.key} failed ({slot.last_failure}); "
                   f"retry {slot.failures}/{limit} in {delay:g}s")
        if is_master:
            self._master_lost(job, f"master failed ({slot.last_failure}); restarting")

    # ------------------------------------------------------------------ loss and notice

    def _record_loss(self, job: JobRecord, slot: Slot, att: Attempt) -> None:
        """Account an infrastructure loss of ``att`` and feed the over-provisioning rule."""
        ckpt = slot.checkpoint[2] if slot.checkpoint else None
        work = acct.work_lost(self._now, att.running_since, ckpt)
        if att.drain_by is not None:
            # Already counted when the notice came; the task just did not finish in time.
            job.accounting.add_work(slot.key.label(), att.task_id, self._now, work)
            return
        if att.reason == "REASON_CONTAINER_PREEMPTED":
            kind = acct.REVOKED
        elif att.state is TaskState.UNREACHABLE:
            kind = acct.UNREACHABLE
        else:
            kind = acct.LOST
        job.accounting.lost(slot.key.label(), att.task_id, kind, self._now, work)
        job.terminations.append(self._now)
        self._refresh_spare(job)
        self._changed_job(job)

    def _recovered(self, job: JobRecord, att: Attempt) -> None:
        before = job.accounting.recoveries
        job.accounting.running(att.key.label(), att.task_id, self._now)
        if job.accounting.recoveries != before:
            last = next((r for r in reversed(job.accounting.recent)
                         if r.replacement_task_id == att.task_id), None)
            if last is not None and last.recovery_seconds is not None:
                job.recovery_times.append((self._now, last.recovery_seconds))
            self._changed_job(job)

    def _notice(self, agent: str, start: float, end: float | None, why: str) -> None:
        """``agent`` goes away at ``start``: stop placing there (the draining set), tell
        its tasks to checkpoint and wind down, and start their replacements elsewhere now.

        A worker slot keeps its draining attempt as ``outgoing`` and gets a new attempt
        at once, so for a moment it has two. A master must never have two live attempts,
        so the master is killed right away (its SDK checkpoints on SIGTERM within the
        kill grace) and relaunched elsewhere when it has exited: a short gap, no overlap.
        """
        if agent not in self._draining:
            self._draining[agent] = (start, end)
        moved = 0
        for tid in sorted(self._agent_tasks.get(agent, ())):
            att = self._tasks[tid]
            job = att.job
            slot = job.slot(att.key)
            if att.drain_by is not None or slot.current is not att or not job.active():
                continue
            att.drain_by = start
            moved += 1
            label = att.key.label()
            if att.state is TaskState.RUNNING and att.executor_id:
                self._out.append(fx.SendMessage(agent, att.executor_id,
                                                {"kind": "drain", "deadline": start}))
            job.accounting.lost(label, tid, acct.NOTICE, self._now, 0.0)
            job.terminations.append(self._now)
            if att.key.kind is TaskKind.WORKER:
                if slot.outgoing is not None and slot.outgoing.state.live:
                    self._kill(slot.outgoing)
                slot.outgoing = att
                slot.current = None
                self._draining_tasks.add(tid)
                if att.state is not TaskState.RUNNING:
                    self._kill(att)       # nothing done yet: nothing to drain
                else:
                    # Dask: its master retires it (its results move to other workers),
                    # which may take it past the window's start up to the window's end:
                    # killing it earlier would only lose those results sooner.
                    until = end if end is not None else start
                    self._retire(job, slot, att, until - job.spec.kill_grace_seconds
                                 - self.drain_margin_seconds)
            else:
                self._kill(att)
            self._dirty.add(job.key)
            self._changed_job(job)
            self._refresh_spare(job)
        self._note(f"agent {agent} unavailable from {start:.0f} ({why}); "
                   f"moving {moved} task(s)")

    def _outgoing_update(self, job: JobRecord, slot: Slot, att: Attempt) -> None:
        """A status update of a replaced, draining worker attempt."""
        if att.state.live:
            if not job.active() and att.kill_sent_at is None:
                self._kill(att)
            return
        slot.outgoing = None
        self._draining_tasks.discard(att.task_id)
        cause = classify(att.state, att.reason, kill_requested=att.kill_sent_at is not None,
                         agent_lost=att.agent_id in self._lost_agents)
        if cause is Cause.INFRASTRUCTURE or (cause is Cause.JOB_FAILURE and job.active()):
            # Died with its agent (or crashed) before finishing its drain: the work since
            # its last checkpoint is redone by the replacement.
            self._record_loss(job, slot, att)
        self._note(f"drained {att.task_id} ended ({att.state.mesos_name})")

    def _drain_deadlines(self) -> None:
        """Kill drained tasks that would otherwise still run when their agent goes away,
        early enough for their kill grace (the SDK checkpoints on SIGTERM)."""
        for tid in sorted(self._draining_tasks):
            att = self._tasks.get(tid)
            if att is None or not att.state.live:
                self._draining_tasks.discard(tid)
                continue
            if att.kill_sent_at is None and att.drain_by is not None and \
                    self._now >= att.drain_by - att.job.spec.kill_grace_seconds \
                    - self.drain_margin_seconds:
                self._kill(att)

    def _refresh_spare(self, job: JobRecord) -> None:
        """Re-apply the over-provisioning rule; fewer spares kill the highest indexes."""
        if not job.active():
            return
        horizon = self.overprovision.horizon_seconds
        while job.terminations and self._now - job.terminations[0] > horizon:
            job.terminations.pop(0)
        recoveries = [took for when, took in job.recovery_times if self._now - when <= horizon]
        room = max(0, job.spec.workers.max - job.desired)
        rule = self._rule_for(job)
        sp = spare_workers(job.terminations, recoveries, self._now, rule, room)
        if sp.workers == job.spare and sp.reason == job.spare_reason:
            return
        fewer = sp.workers < job.spare
        job.spare, job.spare_reason = sp.workers, sp.reason
        if fewer:
            self._trim(job)
        self._dirty.add(job.key)
        self._changed_job(job)

    def _rule_for(self, job: JobRecord) -> OverProvision:
        """The scheduler's rule, with the job's ``overprovision`` label as its multiple."""
        raw = dict(job.spec.labels).get(OVERPROVISION_LABEL)
        if raw is None:
            return self.overprovision
        try:
            return _replace(self.overprovision, multiple=float(raw))
        except ValueError:
            self._note(f"{job.key}: label {OVERPROVISION_LABEL}={raw!r} is not a multiple "
                       ">= 0; using the default")
            return self.overprovision

    def _master_lost(self, job: JobRecord, message: str) -> None:
        job.master_address = None
        phase, _ = job_transition(job.phase, JobInput.MASTER_LOST)
        job.phase = phase
        job.message = message

    def _finish(self, job: JobRecord, what: JobInput, message: str) -> None:
        phase, outcome = job_transition(job.phase, what)
        if not outcome.applied:
            self._note(f"{job.key}: {outcome.why}")
            return
        job.phase = phase
        job.message = message
        job.finished_at = self._now
        for tid in sorted(job.live):
            self._kill(self._tasks[tid])
        self._pending.pop(job.key, None)
        self._changed_job(job)
        self._note(f"{job.key} {phase.value}: {message}")

    def _maybe_killed(self, job: JobRecord) -> None:
        if job.phase is JobPhase.KILLING and not job.live:
            phase, _ = job_transition(job.phase, JobInput.ALL_TASKS_TERMINAL)
            job.phase = phase
            job.finished_at = self._now
            self._changed_job(job)

    def _unknown_task(self, e: ev.StatusUpdate) -> None:
        parsed = parse_task_id(e.task_id)
        if parsed is None:
            self._note(f"status {e.state} for {e.task_id}: not a Corral task")
            return
        key, n = parsed
        job = self.jobs.get(key.job)
        if e.state not in _LIVE_MESOS:
            self._note(f"status {e.state} for unknown {e.task_id}: nothing to do")
            return
        if job is not None and n > job.attempt_base and job.wants(key) \
                and job.slot(key).needs_launch():
            self._adopt(job, key, n, e)
            return
        self._note(f"{e.task_id} is running but unwanted; killing it")
        grace = job.spec.kill_grace_seconds if job else 0.0
        self._out.append(fx.KillTask(e.task_id, e.agent_id, grace))

    def _adopt(self, job: JobRecord, key: TaskKey, n: int, e: ev.StatusUpdate) -> None:
        """A live task of ours we had no record of (e.g. after a failover) that its slot
        still wants: take it as the slot's attempt instead of killing working tasks."""
        slot = job.slot(key)
        slot.attempts = max(slot.attempts, n)
        state, _ = transition(TaskState.LAUNCHED, e.state)
        att = Attempt(job=job, key=key, attempt=n, task_id=e.task_id, state=state,
                      agent_id=e.agent_id, hostname=self._agent_hosts.get(e.agent_id or ""),
                      executor_id=e.executor_id or e.task_id,
                      reason=e.reason, message=e.message)
        slot.current = att
        self._tasks[e.task_id] = att
        self._set_live(att, True)
        self._dirty.add(job.key)
        self._changed_job(job)
        self._note(f"adopted {e.task_id} ({e.state})")
        if state is TaskState.RUNNING and key.kind is TaskKind.MASTER:
            self._master_running(job, att)

    # ------------------------------------------------------------------ executor messages

    def _on_message(self, e: ev.ExecutorMessage) -> None:
        data = e.data
        kind = data.get("kind")
        tid = data.get("task_id", e.executor_id)
        att = self._tasks.get(tid) if isinstance(tid, str) else None
        if att is None:
            self._note(f"message {kind!r} from {e.executor_id}: unknown task")
            return
        job = att.job
        if kind == "progress":
            nums = [_count(data.get(f)) for f in ("done", "total", "backlog", "rerun")]
            if any(x is None for x in nums):
                self._note(f"progress from {tid} ignored: bad numbers {dict(data)}")
                return
            p = Progress(*(x or 0 for x in nums))
            if job.progress.get(tid) != p:
                job.progress[tid] = p
                self._changed_job(job)
        elif kind == "usage":
            job.usage[tid] = dict(data)
        elif kind == "load":
            self._on_load(att, data)
        elif kind == "checkpoint":
            uri, seq = data.get("uri"), _count(data.get("seq"))
            if not isinstance(uri, str) or seq is None:
                self._note(f"checkpoint from {tid} ignored: bad fields {dict(data)}")
                return
            job.slot(att.key).checkpoint = (uri, seq, self._now)
        else:
            self._note(f"message of unknown kind {kind!r} from {tid}")

    def _on_load(self, att: Attempt, data: Mapping[str, Any]) -> None:
        """A master's load report (``core.workload``): kept for the elastic policy."""
        if att.key.kind is not TaskKind.MASTER or att.job.master.current is not att:
            self._note(f"load from {att.task_id} ignored: not the job's current master")
            return
        try:
            att.job.load = workload.parse_load(data, att.task_id, self._now)
        except ValueError as err:
            self._note(f"load from {att.task_id} ignored: {err}")

    def _retire(self, job: JobRecord, slot: Slot, att: Attempt, by: float) -> bool:
        """Ask the job's master to retire worker ``att`` through its framework by ``by``
        (Dask moves its in-memory results first); the attempt becomes the slot's
        outgoing one and is killed at ``by`` if it is still running then. False (and
        nothing done) when the job does not retire that way, the master cannot be told,
        or the slot already has an outgoing attempt."""
        master = job.master.current
        if not workload.retires_through_master(job.spec) or master is None \
                or master.state is not TaskState.RUNNING or master.kill_sent_at is not None \
                or not master.executor_id \
                or not master.agent_id or att.state is not TaskState.RUNNING \
                or (slot.outgoing not in (None, att) and slot.outgoing.state.live):
            return False
        self._out.append(fx.SendMessage(master.agent_id, master.executor_id,
                                        workload.retire_message([att.task_id], by)))
        att.retiring = True
        # _drain_deadlines kills at drain_by - grace - margin, i.e. at ``by``.
        att.drain_by = by + job.spec.kill_grace_seconds + self.drain_margin_seconds
        if slot.current is att:
            slot.outgoing, slot.current = att, None
        self._draining_tasks.add(att.task_id)
        self._note(f"asked the master of {job.key} to retire {att.task_id} by {by:.0f}")
        return True

    # ------------------------------------------------------------------ maintenance

    def _on_inverse_offers(self, e: ev.InverseOffersReceived) -> None:
        for io in e.offers:
            agent = io.agent_id
            if agent is None:
                self._note(f"inverse offer {io.id} without an agent ignored")
                continue
            start = io.start if io.start is not None else self._now
            end = start + io.duration if io.duration is not None else None
            self._inverse[io.id] = agent
            self._draining[agent] = (start, end)
            self._notice(agent, start, end, f"inverse offer {io.id}")

    def _on_inverse_rescinded(self, e: ev.InverseOfferRescinded) -> None:
        agent = self._inverse.pop(e.id, None)
        self._inverse_accepted.discard(e.id)
        if agent is not None and agent not in self._inverse.values():
            self._draining.pop(agent, None)

    def _accept_inverse_offers(self) -> None:
        ready = sorted(i for i, agent in self._inverse.items()
                       if i not in self._inverse_accepted and not self._agent_tasks.get(agent))
        if ready:
            self._inverse_accepted.update(ready)
            self._out.append(fx.AcceptInverseOffers(tuple(ready)))

    # ------------------------------------------------------------------ bookkeeping

    def _after(self) -> None:
        """After every event: pending sets, inverse offers, suppress/revive."""
        self._refresh()
        self._accept_inverse_offers()
        wants = bool(self._pending)
        if wants and self._suppressed:
            self._out.append(fx.Revive())
            self._suppressed = False
        elif not wants and not self._suppressed:
            self._out.append(fx.Suppress())
            self._suppressed = True

    def _refresh(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, key = heapq.heappop(self._timers)
            self._dirty.add(key)
        for key in sorted(self._dirty):
            job = self.jobs.get(key)
            if job is not None:
                self._recompute(job)
        self._dirty.clear()

    def _recompute(self, job: JobRecord) -> None:
        pending: list[TaskKey] = []
        if job.active():
            slots = [job.master, *(job.slot(TaskKey(job.key, TaskKind.WORKER, i))
                                   for i in range(job.effective_workers()))]
            master_running = job.master_running()
            for slot in slots:
                if not slot.needs_launch():
                    continue
                reason: str | None = None
                if self._now < slot.not_before:
                    reason = (f"restart backoff after failure {slot.failures} "
                              f"(until {slot.not_before:g}); last: {slot.last_failure}")
                elif slot.key.kind is TaskKind.WORKER and not master_running:
                    reason = "master not running yet"
                if reason is None:
                    pending.append(slot.key)
                elif slot.pending_reason != reason:
                    slot.pending_reason = reason
                    self._changed_job(job)
        if pending:
            self._pending[job.key] = pending
        else:
            self._pending.pop(job.key, None)

    def _set_live(self, att: Attempt, live: bool) -> None:
        on_agent = self._agent_tasks.setdefault(att.agent_id, set()) if att.agent_id else None
        if live:
            att.job.live.add(att.task_id)
            if on_agent is not None:
                on_agent.add(att.task_id)
        else:
            att.job.live.discard(att.task_id)
            self._killing.discard(att.task_id)
            if on_agent is not None:
                on_agent.discard(att.task_id)

    def _kill(self, att: Attempt, again: bool = False) -> None:
        if att.kill_sent_at is not None and not again:
            return
        att.kill_sent_at = self._now
        if att.state.live:
            self._killing.add(att.task_id)
        self._out.append(fx.KillTask(att.task_id, att.agent_id, att.job.spec.kill_grace_seconds))

    def _add_timer(self, at: float, key: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, key))

    def _changed_job(self, job: JobRecord) -> None:
        if job.key not in self._changed:
            job.version += 1
            self._changed[job.key] = None

    def _note(self, text: str) -> None:
        self.notes.append((self._now, text))

    def _job_or_raise(self, key: str) -> JobRecord:
        job = self.jobs.get(key)
        if job is None:
            raise NotFound(f"no job {key}")
        return job

    # ------------------------------------------------------------------ views

    def _view(self, job: JobRecord) -> JobView:
        tasks = [self._task_view(job, job.master)]
        shown = set(range(job.effective_workers())) | {
            i for i, s in job.workers.items()
            if s.completed or (s.current is not None and s.current.state.live)}
        for i in sorted(shown):
            tasks.append(self._task_view(job, job.slot(TaskKey(job.key, TaskKind.WORKER, i))))
        return JobView(
            key=job.key, spec=job.spec, state=public_state(job.phase, job.master_running()),
            desired_workers=job.desired, tasks=tuple(tasks), progress=_job_progress(job),
            submitted_at=job.submitted_at, finished_at=job.finished_at, message=job.message,
            target_reason=job.target_reason, request_id=job.request_id, version=job.version,
            resilience=self._resilience(job),
        )

    def _resilience(self, job: JobRecord) -> Resilience:
        a = job.accounting
        return Resilience(
            losses=a.losses, recoveries=a.recoveries,
            work_lost_seconds=round(a.work_lost_seconds, 3),
            recovery_seconds_total=round(a.recovery_seconds_total, 3),
            recovery_seconds_max=round(a.recovery_seconds_max, 3),
            spare_workers=job.spare, spare_reason=job.spare_reason, recent=tuple(a.recent))

    def _task_view(self, job: JobRecord, slot: Slot) -> TaskView:
        cur = slot.current
        waiting = job.active() and slot.needs_launch() and job.wants(slot.key)
        if cur is None or waiting:
            return TaskView(
                slot=slot.key.label(), task_id=None, state="PENDING",
                reason=cur.reason if cur else None,
                message=slot.last_failure or (cur.message if cur else None) or None,
                pending_reason=slot.pending_reason, attempt=slot.attempts)
        return TaskView(
            slot=slot.key.label(), task_id=cur.task_id, state=cur.state.mesos_name,
            agent_id=cur.agent_id, hostname=cur.hostname, reason=cur.reason,
            message=cur.message or None, attempt=cur.attempt, revocable=cur.revocable)


def _count(x: object) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        return None
    return x


def _job_progress(job: JobRecord) -> Progress:
    """The master's report if it sent one, else the sum of the workers' reports."""
    master = job.master.current
    if master is not None and master.task_id in job.progress:
        return job.progress[master.task_id]
    parts: Iterable[Progress] = job.progress.values()
    total = Progress()
    for p in parts:
        total = Progress(total.done + p.done, total.total + p.total,
                         total.backlog + p.backlog, total.rerun + p.rerun)
    return total
