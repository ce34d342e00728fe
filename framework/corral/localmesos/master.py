"""The localmesos master: frameworks, offers, tasks, agents and their bookkeeping.

Owns the master's state and its reactions (the "imperative shell" around the pure
``allocator`` and ``validation``): subscriptions and failover, ACCEPT, kills,
acknowledgements, reconciliation, agent health and loss, maintenance and draining.
Events to schedulers go through each framework's ``EventStream``; agents are called
directly. The HTTP parsing lives in ``scheduler_http`` and ``operator_http``.

Resource accounting: ``AgentRecord.used`` is what tasks and executors hold (freed at the
terminal status update / executor exit), ``AgentRecord.offered`` what outstanding offers
hold; the allocator offers ``total - used - offered``. ``FrameworkRecord.alloc`` is the
same per role, for DRF.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from corral.core.resources import ZERO, Resources
from corral.localmesos import allocator, maintenance, validation
from corral.localmesos.agent import Agent
from corral.localmesos.protocol import (
    TERMINAL_STATES,
    VERSION,
    Json,
    Pool,
    event,
    id_of,
    ident,
    ns,
    seconds_of,
    task_status,
)
from corral.localmesos.registry import AdmittedAgent, Registry, RegistryState
from corral.localmesos.streams import EventStream

log = logging.getLogger("localmesos.master")

DEFAULT_REFUSE = 5.0
MAX_REFUSE = 365 * 24 * 3600.0
MAX_FAILOVER = 10 * 365 * 24 * 3600.0
COMPLETED_TASKS_KEPT = 1000
_RECONCILE_MESSAGES = {   # Master::reconcile, for a task the master does not hold
    "registered": "Reconciliation: Task is unknown to the agent",
    "unreachable": "Reconciliation: Task is unreachable",
    "gone": "Reconciliation: Task is gone",
}


@dataclass
class MasterOptions:
    heartbeat_interval: float = 15.0
    allocation_interval: float = 1.0
    agent_health_timeout: float = 75.0
    offer_timeout: float | None = None
    seed: int = 0
    credentials: dict[str, str] = field(default_factory=dict)  # principal → secret
    authenticate_frameworks: bool = False   # --authenticate-http-frameworks
    authenticate_readwrite: bool = False    # --authenticate-http-readwrite (operator API)


@dataclass
class TaskRecord:
    framework_id: str
    task_id: str
    agent_id: str
    executor_id: str | None
    info: Json
    role: str
    pool: Pool
    state: str = "TASK_STAGING"
    statuses: list[Json] = field(default_factory=list)
    freed: bool = False
    terminal_uuids: set[str] = field(default_factory=set)
    last_status: Json | None = None


@dataclass
class OfferRecord:
    id: str
    framework_id: str
    agent_id: str
    role: str
    pool: Pool
    timer: asyncio.TimerHandle | None = None


@dataclass
class ExecutorRecord:
    framework_id: str
    executor_id: str
    info: Json
    role: str
    pool: Pool


@dataclass
class AgentRecord:
    id: str
    agent: Agent
    total: Pool
    revocable_total: Resources = ZERO
    used: Pool = Pool()
    offered: Pool = Pool()
    state: str = "registered"          # registered | unreachable | gone
    draining: bool = False
    drain_grace: float | None = None
    unavailability: tuple[float, float | None] | None = None   # (start epoch, duration)
    executors: dict[tuple[str, str], ExecutorRecord] = field(default_factory=dict)
    tasks: set[tuple[str, str]] = field(default_factory=set)
    offers: set[str] = field(default_factory=set)
    missed_pings: int = 0
    registered_time: float = field(default_factory=time.time)
    kill_timer: asyncio.TimerHandle | None = None

    @property
    def hostname(self) -> str:
        return self.agent.hostname

    def machine_names(self) -> set[str]:
        names = {self.id, f"agent-{self.agent.index}"}
        names.update(v for k, v in self.agent.attributes if k == "host")
        return names


@dataclass
class FrameworkRecord:
    id: str
    info: Json
    roles: tuple[str, ...]
    capabilities: set[str]
    stream: EventStream | None = None
    stream_id: str | None = None
    connected: bool = False
    active: bool = False
    failover_timer: asyncio.TimerHandle | None = None
    suppressed: set[str] = field(default_factory=set)
    filters: dict[str, list[allocator.Filter]] = field(default_factory=dict)
    offers: set[str] = field(default_factory=set)
    inverse_offers: dict[str, str] = field(default_factory=dict)   # id → agent id
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    unreachable: dict[str, TaskRecord] = field(default_factory=dict)
    completed: deque[TaskRecord] = field(
        default_factory=lambda: deque(maxlen=COMPLETED_TASKS_KEPT))
    alloc: dict[str, Resources] = field(default_factory=dict)
    registered_time: float = field(default_factory=time.time)
    unregistered_time: float | None = None
    recovered: bool = False     # known from a re-registering agent, not subscribed yet

    @property
    def partition_aware(self) -> bool:
        return "PARTITION_AWARE" in self.capabilities

    def add_alloc(self, role: str, res: Resources, sign: int = 1) -> None:
        self.alloc[role] = self.alloc.get(role, ZERO) + (res if sign > 0 else res.scale(-1))


def capabilities_of(info: Json) -> set[str]:
    return {c["type"] for c in info.get("capabilities", [])
            if isinstance(c, dict) and isinstance(c.get("type"), str)}


class Master:
    def __init__(self, options: MasterOptions, hostname: str = "127.0.0.1") -> None:
        self.options = options
        self.id = str(uuid.uuid4())
        self.hostname = hostname
        self.port = 0
        self.start_time = time.time()
        self.frameworks: dict[str, FrameworkRecord] = {}
        self.completed_frameworks: dict[str, FrameworkRecord] = {}
        self.agents: dict[str, AgentRecord] = {}
        self.offers: dict[str, OfferRecord] = {}
        self.maintenance = maintenance.Book()
        # (agent id, framework id) → InverseOfferStatus, for GET_MAINTENANCE_STATUS.
        self.inverse_status: dict[tuple[str, str], Json] = {}
        self._next_framework = 0
        self._next_offer = 0
        self._next_agent = 0
        self._rng = random.Random(options.seed)
        self._allocate_soon = asyncio.Event()
        self._loops: list[asyncio.Task[Any]] = []
        self.counters = {"offers": 0, "launches": 0, "updates": 0}
        # What survives a failover (``registry``, ``reregister``): None keeps it in memory.
        self.registry: Registry | None = None
        self.recovered_agents: dict[str, AdmittedAgent] = {}   # not re-registered yet
        self.unreachable_times: dict[str, float] = {}          # agent id -> epoch
        self.gone_times: dict[str, float] = {}
        self.recovery_timer: asyncio.TimerHandle | None = None
        self.halted = False     # stopped or crashed: nothing of it may act any more

    # ------------------------------------------------------------------ ids and info

    def new_agent_id(self) -> str:
        aid = f"{self.id}-S{self._next_agent}"
        self._next_agent += 1
        return aid

    def _new_offer_id(self) -> str:
        oid = f"{self.id}-O{self._next_offer}"
        self._next_offer += 1
        return oid

    def master_info(self) -> Json:
        return {"id": self.id, "ip": 16777343, "port": self.port,
                "pid": f"master@127.0.0.1:{self.port}", "hostname": self.hostname,
                "version": VERSION,
                "address": {"hostname": self.hostname, "ip": "127.0.0.1", "port": self.port}}

    # ------------------------------------------------------------------ loops

    def start_loops(self) -> None:
        self._loops.append(asyncio.ensure_future(self._allocation_loop()))
        self._loops.append(asyncio.ensure_future(self._health_loop()))

    async def stop_loops(self) -> None:
        self.halted = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        for fw in self.frameworks.values():
            if fw.failover_timer is not None:
                fw.failover_timer.cancel()
            if fw.stream is not None:
                fw.stream.cut_off()
        for offer in self.offers.values():
            if offer.timer is not None:
                offer.timer.cancel()
        for rec in self.agents.values():
            if rec.kill_timer is not None:
                rec.kill_timer.cancel()
        if self.recovery_timer is not None:
            self.recovery_timer.cancel()

    def record(self, change: Callable[[RegistryState], RegistryState]) -> None:
        """Apply one registry operation (a no-op without a registry)."""
        if self.registry is not None:
            self.registry.apply(change(self.registry.state))

    def agent_state(self, agent_id: str) -> str | None:
        """registered | unreachable | gone | recovering, or None if unknown."""
        rec = self.agents.get(agent_id)
        if rec is not None and rec.state == "registered":
            return "registered"
        if agent_id in self.recovered_agents:
            return "recovering"
        if agent_id in self.gone_times:
            return "gone"
        if agent_id in self.unreachable_times:
            return "unreachable"
        return rec.state if rec is not None else None

    def request_allocation(self) -> None:
        self._allocate_soon.set()

    async def _allocation_loop(self) -> None:
        while True:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
            # races with the event being set, and then stop() would wait forever.
            waiter = asyncio.ensure_future(self._allocate_soon.wait())
            try:
                await asyncio.wait([waiter], timeout=self.options.allocation_interval)
            finally:
                waiter.cancel()
            self._allocate_soon.clear()
            try:
                self.allocate()
            except Exception:   # a bug here must not stop all future offers
                log.exception("allocation round failed")

    async def _health_loop(self) -> None:
        interval = self.options.agent_health_timeout / 5
        while True:
            await asyncio.sleep(interval)
            for rec in list(self.agents.values()):
                if rec.state != "registered":
                    continue
                if rec.agent.alive:
                    rec.missed_pings = 0
                    continue
                rec.missed_pings += 1
                if rec.missed_pings >= 5:
                    self.mark_unreachable(rec, "health check timed out")

    # ------------------------------------------------------------------ sending

    def _send(self, fw: FrameworkRecord, ev: Json) -> None:
        if fw.stream is not None and fw.connected:
            fw.stream.send(ev)

    def _send_update(self, fw: FrameworkRecord, status: Json) -> None:
        self.counters["updates"] += 1
        self._send(fw, event("UPDATE", {"status": status}))

    # ------------------------------------------------------------------ agents

    def add_agent(self, agent: Agent, revocable: Resources = ZERO) -> AgentRecord:
        rec = AgentRecord(agent.id, agent, agent.resources, revocable)
        self.agents[agent.id] = rec
        self.record(lambda s: s.admit(agent.id, agent.agent_info()))
        self.request_allocation()
        return rec

    def _free(self, rec: AgentRecord, fw: FrameworkRecord | None, role: str, pool: Pool) -> None:
        rec.used = (rec.used - pool).clamp()
        if fw is not None:
            fw.add_alloc(role, pool.scalars, -1)

    def mark_unreachable(self, rec: AgentRecord, why: str, gone: bool = False) -> None:
        """The agent is lost (health checks) or taken down by the operator.

        Mesos 1.11 ``Master::__removeSlave``: each task becomes TASK_UNREACHABLE
        (partition-aware) or TASK_LOST, REASON_AGENT_REMOVED, with ``unreachable_time``,
        and stays in the framework's ``unreachable_tasks`` (TASK_LOST ones too, see
        partition_tests.cpp ``ReregisterSlaveNotPartitionAware``); an agent gone by the
        operator has no unreachable time: TASK_GONE_BY_OPERATOR (REASON_AGENT_REMOVED_
        BY_OPERATOR) or TASK_LOST, completed. Then offers are rescinded and FAILURE sent.
        """
        now = time.time()
        rec.state = "gone" if gone else "unreachable"
        if gone:
            self.gone_times[rec.id] = now
            self.unreachable_times.pop(rec.id, None)
            self.record(lambda s: s.mark_gone(rec.id, now))
        else:
            self.unreachable_times[rec.id] = now
            self.record(lambda s: s.mark_unreachable(rec.id, now))
        for fw_id, task_id in sorted(rec.tasks):
            fw = self.frameworks.get(fw_id)
            task = fw.tasks.pop(task_id, None) if fw else None
            if fw is None or task is None:
                continue
            reason = "REASON_AGENT_REMOVED"
            if not fw.partition_aware:
                state = "TASK_LOST"
            elif gone:
                state, reason = "TASK_GONE_BY_OPERATOR", "REASON_AGENT_REMOVED_BY_OPERATOR"
            else:
                state = "TASK_UNREACHABLE"
            if not task.freed:
                fw.add_alloc(task.role, task.pool.scalars, -1)
                task.freed = True
            status = task_status(task_id, state, source="SOURCE_MASTER", agent_id=rec.id,
                                 reason=reason, message=why, executor_id=task.executor_id)
            if not gone:
                status["unreachable_time"] = ns(now)
            task.state = state
            task.last_status = status
            task.statuses.append(status)
            if gone:
                fw.completed.append(task)
            else:
                fw.unreachable[task_id] = task
            self._send_update(fw, status)
        rec.tasks.clear()
        for ex in rec.executors.values():
            fw = self.frameworks.get(ex.framework_id)
            if fw is not None:
                fw.add_alloc(ex.role, ex.pool.scalars, -1)
        rec.executors.clear()
        rec.used = Pool()
        for oid in list(rec.offers):
            self._remove_offer(self.offers[oid], rescind=True)
        for fw in self.frameworks.values():
            for ioid, aid in list(fw.inverse_offers.items()):
                if aid == rec.id:
                    del fw.inverse_offers[ioid]
                    self._send(fw, event("RESCIND_INVERSE_OFFER",
                                         {"inverse_offer_id": ident(ioid)}))
        for fw in self.frameworks.values():
            self._send(fw, event("FAILURE", {"agent_id": ident(rec.id)}))
        log.info("agent %s marked %s: %s", rec.id, rec.state, why)

    # ------------------------------------------------------------------ allocation

    def allocate(self) -> None:
        now = time.monotonic()
        total = ZERO
        slots: list[allocator.AgentSlot] = []
        for rec in self.agents.values():
            if rec.state != "registered":
                continue
            total = total + rec.total.scalars
            free = (rec.total - rec.used.without_revocable() - rec.offered.without_revocable())
            free_rev = Pool(ZERO, rec.revocable_total - rec.used.revocable
                            - rec.offered.revocable).clamp().revocable
            slots.append(allocator.AgentSlot(
                rec.id, Pool(free.clamp().scalars, ZERO, free.ports), free_rev,
                rec.total.scalars.gpus > 0, offerable=not rec.draining))
        fws: list[allocator.FrameworkSlot] = []
        for fw in self.frameworks.values():
            if not fw.active:
                continue
            for aid in list(fw.filters):
                fw.filters[aid] = [f for f in fw.filters[aid] if f.expires > now]
                if not fw.filters[aid]:
                    del fw.filters[aid]
            holds = ZERO
            for res in fw.alloc.values():
                holds = holds + res
            fws.append(allocator.FrameworkSlot(
                fw.id, fw.roles, holds, frozenset(fw.suppressed),
                "GPU_RESOURCES" in fw.capabilities, "REVOCABLE_RESOURCES" in fw.capabilities,
                fw.filters, dict(fw.alloc)))
        if not fws:
            return
        grants = allocator.allocate(slots, fws, total, now, self._rng)
        by_fw: dict[str, list[Json]] = {}
        for g in grants:
            fw = self.frameworks[g.framework_id]
            rec = self.agents[g.agent_id]
            offer = OfferRecord(self._new_offer_id(), fw.id, rec.id, g.role, g.resources)
            self.offers[offer.id] = offer
            rec.offers.add(offer.id)
            rec.offered = rec.offered + g.resources
            fw.offers.add(offer.id)
            fw.add_alloc(g.role, g.resources.scalars)
            if self.options.offer_timeout is not None:
                offer.timer = asyncio.get_running_loop().call_later(
                    self.options.offer_timeout, self._offer_timed_out, offer.id)
            by_fw.setdefault(fw.id, []).append(self.offer_json(offer, fw))
        for fw_id, offers in by_fw.items():
            self.counters["offers"] += len(offers)
            self._send(self.frameworks[fw_id], event("OFFERS", {"offers": offers}))

    def offer_json(self, offer: OfferRecord, fw: FrameworkRecord) -> Json:
        rec = self.agents[offer.agent_id]
        multi = "MULTI_ROLE" in fw.capabilities
        body: Json = {
            "id": ident(offer.id), "framework_id": ident(fw.id),
            "agent_id": ident(rec.id), "hostname": rec.hostname, "url": rec.agent.url_json(),
            "resources": offer.pool.to_json(allocation_role=offer.role if multi else None),
            "attributes": rec.agent.agent_info()["attributes"],
            "executor_ids": [ident(eid) for (f, eid) in rec.executors if f == fw.id],
        }
        if rec.unavailability is not None:
            body["unavailability"] = self._unavailability_json(rec.unavailability)
        if multi:
            body["allocation_info"] = {"role": offer.role}
        return body

    @staticmethod
    def _unavailability_json(un: tuple[float, float | None]) -> Json:
        out: Json = {"start": ns(un[0])}
        if un[1] is not None:
            out["duration"] = ns(un[1])
        return out

    def _offer_timed_out(self, offer_id: str) -> None:
        offer = self.offers.get(offer_id)
        if offer is not None:
            self._remove_offer(offer, rescind=True)

    def _remove_offer(self, offer: OfferRecord, rescind: bool = False,
                      refuse_seconds: float | None = None) -> None:
        """Take an offer back; its resources return to the pool (optionally filtered)."""
        self.offers.pop(offer.id, None)
        if offer.timer is not None:
            offer.timer.cancel()
        rec = self.agents.get(offer.agent_id)
        if rec is not None:
            rec.offers.discard(offer.id)
            rec.offered = (rec.offered - offer.pool).clamp()
        fw = self.frameworks.get(offer.framework_id)
        if fw is None:
            return
        fw.offers.discard(offer.id)
        fw.add_alloc(offer.role, offer.pool.scalars, -1)
        if rescind:
            self._send(fw, event("RESCIND", {"offer_id": ident(offer.id)}))
        self._add_filter(fw, offer.agent_id, offer.pool, refuse_seconds)

    @staticmethod
    def _refuse_seconds(filters: Any) -> float:
        if not isinstance(filters, dict) or filters.get("refuse_seconds") is None:
            return DEFAULT_REFUSE
        value = float(filters["refuse_seconds"])
        if value < 0:
            return DEFAULT_REFUSE
        return min(value, MAX_REFUSE)

    def _add_filter(self, fw: FrameworkRecord, agent_id: str, pool: Pool,
                    refuse_seconds: float | None) -> None:
        if refuse_seconds is None or refuse_seconds <= 0 or pool.is_empty():
            return
        fw.filters.setdefault(agent_id, []).append(
            allocator.Filter(pool, time.monotonic() + refuse_seconds))

    # ------------------------------------------------------------------ subscription

    def subscribe(self, info: Json, stream: EventStream,
                  suppressed_roles: list[str] | None = None
                  ) -> tuple[FrameworkRecord | None, str]:
        """Attach a (re)subscribing scheduler; returns (framework, error message).

        ``info.principal`` is already the authenticated principal when authentication is
        on (``scheduler_http``); a known framework id keeps its principal, user and
        checkpoint (Mesos' ``validateUpdate``), and its suppressed roles become
        ``suppressed_roles``."""
        fid = id_of(info.get("id"))
        error = validation.subscribe_semantic_error(info)
        if error:
            return None, error
        roles, _multi = validation.framework_roles(info)
        suppressed = list(suppressed_roles or [])
        error = validation.suppressed_roles_error(roles, suppressed)
        if error:
            return None, error
        if fid is not None and fid in self.completed_frameworks:
            return None, "Framework has been removed"
        caps = capabilities_of(info)
        fw = self.frameworks.get(fid) if fid else None
        if fw is not None:
            info, error = validation.framework_update(fw.info, info)
            if error:
                log.warning("framework %s: refused re-subscription: %s", fid, error)
                return None, error
        if fw is None:
            if fid is None:
                fid = f"{self.id}-{self._next_framework:04d}"
                self._next_framework += 1
            fw = FrameworkRecord(fid, {}, roles, caps)
            self.frameworks[fid] = fw
            log.info("framework %s (%s) subscribed", fid, info.get("name"))
        else:
            fid = fw.id  # the id it was found under
            self._failover(fw)
            log.info("framework %s failed over", fid)
        fw.info = {**info, "id": ident(fid)}
        fw.recovered = False
        fw.roles, fw.capabilities = roles, caps
        fw.suppressed = set(suppressed)
        fw.stream = stream
        fw.stream_id = str(uuid.uuid4())
        fw.connected = fw.active = True
        fw.unregistered_time = None
        for rec in self.agents.values():
            rec.agent.update_framework(fid, fw.info)
        return fw, ""

    def _failover(self, fw: FrameworkRecord) -> None:
        if fw.failover_timer is not None:
            fw.failover_timer.cancel()
            fw.failover_timer = None
        old = fw.stream
        if old is not None and not old.closed:
            old.send(event("ERROR", {"message": "Framework failed over"}))
            old.close()
        fw.stream = None
        for oid in list(fw.offers):
            self._remove_offer(self.offers[oid])
        fw.inverse_offers.clear()

    def subscribed_event(self, fw: FrameworkRecord) -> Json:
        return event("SUBSCRIBED", {
            "framework_id": ident(fw.id),
            "heartbeat_interval_seconds": float(self.options.heartbeat_interval),
            "master_info": self.master_info(),
        })

    def stream_ended(self, fw: FrameworkRecord, stream: EventStream) -> None:
        """The scheduler's connection is gone: deactivate and start the failover timer."""
        if fw.stream is not stream or self.frameworks.get(fw.id) is not fw or self.halted:
            return
        fw.stream = None
        fw.connected = fw.active = False
        fw.unregistered_time = time.time()
        for oid in list(fw.offers):
            self._remove_offer(self.offers[oid])
        fw.inverse_offers.clear()
        timeout = float(fw.info.get("failover_timeout", 0) or 0)
        timeout = min(max(timeout, 0.0), MAX_FAILOVER)
        log.info("framework %s disconnected; failover timeout %.1fs", fw.id, timeout)
        fw.failover_timer = asyncio.get_running_loop().call_later(
            timeout, self._failover_expired, fw.id)

    def _failover_expired(self, fid: str) -> None:
        fw = self.frameworks.get(fid)
        if fw is not None and not fw.connected:
            self.remove_framework(fw, "failover timeout expired")

    def remove_framework(self, fw: FrameworkRecord, why: str) -> None:
        """TEARDOWN or failover expiry: kill everything of it, forget it for good."""
        log.info("removing framework %s: %s", fw.id, why)
        if fw.failover_timer is not None:
            fw.failover_timer.cancel()
        for oid in list(fw.offers):
            self._remove_offer(self.offers[oid])
        for rec in self.agents.values():
            if rec.state == "registered":
                rec.agent.shutdown_framework(fw.id)
            for key in [k for k in rec.executors if k[0] == fw.id]:
                ex = rec.executors.pop(key)
                self._free(rec, fw, ex.role, ex.pool)
            rec.tasks = {k for k in rec.tasks if k[0] != fw.id}
        for task in list(fw.tasks.values()):
            owner = self.agents.get(task.agent_id)
            if not task.freed and owner is not None:
                self._free(owner, fw, task.role, task.pool)
            task.freed = True
            if task.state not in TERMINAL_STATES:
                task.state = "TASK_KILLED"
            fw.completed.append(task)
        fw.tasks.clear()
        fw.unreachable.clear()
        fw.connected = fw.active = False
        if fw.stream is not None:
            fw.stream.close()
            fw.stream = None
        del self.frameworks[fw.id]
        self.completed_frameworks[fw.id] = fw
        self.request_allocation()

    # ------------------------------------------------------------------ calls

    def teardown(self, fw: FrameworkRecord, by: str = "the framework") -> None:
        """TEARDOWN (by the scheduler, or by an operator): the stream closes, a later
        SUBSCRIBE with the id gets ERROR "Framework has been removed"."""
        self.remove_framework(fw, f"TEARDOWN by {by}")

    def decline(self, fw: FrameworkRecord, offer_ids: list[str], filters: Any) -> None:
        seconds = self._refuse_seconds(filters)
        for oid in offer_ids:
            offer = self.offers.get(oid)
            if offer is not None and offer.framework_id == fw.id:
                self._remove_offer(offer, refuse_seconds=seconds)

    def revive(self, fw: FrameworkRecord, roles: list[str]) -> None:
        targets = set(roles) if roles else set(fw.roles)
        fw.suppressed -= targets
        fw.filters.clear()
        self.request_allocation()

    def suppress(self, fw: FrameworkRecord, roles: list[str]) -> None:
        fw.suppressed |= set(roles) if roles else set(fw.roles)

    def accept(self, fw: FrameworkRecord, payload: Json) -> None:
        offer_ids = [id_of(o) or "" for o in payload.get("offer_ids", [])]
        operations = payload.get("operations", [])
        known = {oid: (o.framework_id, o.agent_id) for oid, o in self.offers.items()}
        error = validation.offers_error(offer_ids, fw.id, known)
        if error is None:
            agent_id = self.offers[offer_ids[0]].agent_id
            if self.agents[agent_id].state != "registered":
                error = f"Agent {agent_id} is not registered"
        if error is not None:
            for oid in offer_ids:
                offer = self.offers.get(oid)
                if offer is not None and offer.framework_id == fw.id:
                    self._remove_offer(offer)
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for task in _launch_tasks(operations):
                self._send_update(fw, task_status(
                    id_of(task.get("task_id")) or "", state, source="SOURCE_MASTER",
                    agent_id=id_of(task.get("agent_id")), reason="REASON_INVALID_OFFERS",
                    message=f"Task launched with invalid offers: {error}"))
            return
        offers = [self.offers[oid] for oid in offer_ids]
        rec = self.agents[offers[0].agent_id]
        role = offers[0].role
        remaining = Pool()
        for offer in offers:
            remaining = remaining + offer.pool
            self._remove_offer(offer)
        for op in operations:
            if op.get("type") == "LAUNCH":
                for task in op.get("launch", {}).get("task_infos", []):
                    remaining = self._launch(fw, rec, role, task, remaining)
            elif op.get("type") == "LAUNCH_GROUP":
                remaining = self._launch_group(fw, rec, role, op["launch_group"], remaining)
            else:
                log.warning("framework %s: operation %s is not supported by localmesos",
                            fw.id, op.get("type"))
        self._add_filter(fw, rec.id, remaining, self._refuse_seconds(payload.get("filters")))

    def _executors_of(self, fw: FrameworkRecord, rec: AgentRecord) -> dict[str, Json]:
        return {eid: ex.info for (f, eid), ex in rec.executors.items() if f == fw.id}

    def _task_error(self, fw: FrameworkRecord, task: Json, rec: AgentRecord, msg: str) -> None:
        self._send_update(fw, task_status(
            id_of(task.get("task_id")) or "", "TASK_ERROR", source="SOURCE_MASTER",
            agent_id=rec.id, reason="REASON_TASK_INVALID", message=msg))

    def _launch(self, fw: FrameworkRecord, rec: AgentRecord, role: str, task: Json,
                remaining: Pool) -> Pool:
        check = validation.check_task(task, agent_id=rec.id, remaining=remaining,
                                      known_task_ids=set(fw.tasks) | set(fw.unreachable),
                                      executors=self._executors_of(fw, rec))
        if check.error is not None:
            self._task_error(fw, task, rec, check.error)
            return remaining
        executor = task.get("executor")
        if executor is not None:
            executor = {**executor, "framework_id": ident(fw.id)}
            executor.setdefault("command", {}).setdefault("shell", True)
        self._register_task(fw, rec, role, task, check, executor)
        rec.agent.launch(fw.id, fw.info, task, executor)
        return remaining - check.task_pool - check.executor_pool

    def _launch_group(self, fw: FrameworkRecord, rec: AgentRecord, role: str, group: Json,
                      remaining: Pool) -> Pool:
        executor = {**group["executor"], "framework_id": ident(fw.id)}
        tasks = group["task_group"]["tasks"]
        checks = []
        left = remaining
        known = set(fw.tasks) | set(fw.unreachable)
        executors = self._executors_of(fw, rec)
        error = None
        for task in tasks:
            check = validation.check_task(task, agent_id=rec.id, remaining=left,
                                          known_task_ids=known, executors=executors,
                                          group_executor=group["executor"])
            if check.error is not None:
                error = check.error
                break
            checks.append(check)
            known.add(id_of(task["task_id"]) or "")
            executors[check.executor_id or ""] = group["executor"]
            left = left - check.task_pool - check.executor_pool
        if error is not None or not tasks:
            for task in tasks:      # a task group is all or nothing
                self._task_error(fw, task, rec, error or "Empty task group")
            return remaining
        for task, check in zip(tasks, checks, strict=True):
            self._register_task(fw, rec, role, task, check, executor)
        rec.agent.launch_group(fw.id, fw.info, executor, tasks)
        return left

    def _register_task(self, fw: FrameworkRecord, rec: AgentRecord, role: str, task: Json,
                       check: validation.TaskCheck, executor: Json | None) -> None:
        task_id = id_of(task["task_id"]) or ""
        record = TaskRecord(fw.id, task_id, rec.id, check.executor_id, task, role,
                            check.task_pool)
        fw.tasks[task_id] = record
        rec.tasks.add((fw.id, task_id))
        rec.used = rec.used + check.task_pool + check.executor_pool
        fw.add_alloc(role, check.task_pool.scalars + check.executor_pool.scalars)
        if executor is not None and check.executor_id is not None and (
                (fw.id, check.executor_id) not in rec.executors):
            rec.executors[(fw.id, check.executor_id)] = ExecutorRecord(
                fw.id, check.executor_id, executor, role, check.executor_pool)
        self.counters["launches"] += 1

    def kill(self, fw: FrameworkRecord, payload: Json) -> None:
        task_id = id_of(payload.get("task_id")) or ""
        agent_id = id_of(payload.get("agent_id"))
        task = fw.tasks.get(task_id)
        rec = self.agents.get(task.agent_id) if task else None
        if task is None or rec is None or rec.state != "registered":
            # Unknown task: Mesos answers the kill with an explicit reconciliation.
            self._reconcile_one(fw, task_id, agent_id)
            return
        rec.agent.kill_task(fw.id, task_id, payload.get("kill_policy"))

    def shutdown(self, fw: FrameworkRecord, payload: Json) -> None:
        rec = self.agents.get(id_of(payload.get("agent_id")) or "")
        if rec is not None and rec.state == "registered":
            rec.agent.shutdown_executor(fw.id, id_of(payload.get("executor_id")) or "")

    def acknowledge(self, fw: FrameworkRecord, payload: Json) -> None:
        agent_id = id_of(payload.get("agent_id")) or ""
        task_id = id_of(payload.get("task_id")) or ""
        uuid_b64 = payload["uuid"]
        task = fw.tasks.get(task_id)
        if task is not None and uuid_b64 in task.terminal_uuids:
            # The terminal update is acknowledged: the master forgets the task.
            del fw.tasks[task_id]
            fw.completed.append(task)
            rec = self.agents.get(task.agent_id)
            if rec is not None:
                rec.tasks.discard((fw.id, task_id))
        rec = self.agents.get(agent_id)
        if rec is not None and rec.state == "registered":
            rec.agent.acknowledge(fw.id, task_id, uuid_b64)

    def message(self, fw: FrameworkRecord, payload: Json) -> None:
        rec = self.agents.get(id_of(payload.get("agent_id")) or "")
        if rec is not None and rec.state == "registered":
            rec.agent.message(fw.id, id_of(payload.get("executor_id")) or "", payload["data"])

    def inverse_offers_answered(self, fw: FrameworkRecord, payload: Json,
                                answer: str = "ACCEPT") -> None:
        """ACCEPT/DECLINE_INVERSE_OFFERS: advisory in Mesos; the answer is what
        GET_MAINTENANCE_STATUS shows for that framework on that agent."""
        for ioid in payload.get("inverse_offer_ids", []):
            aid = fw.inverse_offers.pop(id_of(ioid) or "", None)
            if aid is not None and (aid, fw.id) in self.inverse_status:
                self.inverse_status[(aid, fw.id)] = _inverse_status(fw.id, answer)

    # ------------------------------------------------------------------ reconciliation

    def _reconcile_status(self, fw: FrameworkRecord, task_id: str, state: str,
                          agent_id: str | None, task: TaskRecord | None,
                          message: str = "Reconciliation: Latest task state") -> Json:
        status = task_status(task_id, state, source="SOURCE_MASTER", agent_id=agent_id,
                             reason="REASON_RECONCILIATION", message=message,
                             executor_id=task.executor_id if task else None)
        if task is not None and task.last_status is not None:
            for key in ("data", "labels", "healthy", "container_status", "unreachable_time"):
                if key in task.last_status:
                    status[key] = task.last_status[key]
        return status

    def _reconcile_one(self, fw: FrameworkRecord, task_id: str, agent_id: str | None) -> None:
        """Explicit reconciliation of one task, as Mesos 1.11 ``Master::reconcile``: the
        master's latest state of a task it holds (unreachable ones are not held), else an
        answer from the agent's state — none while that agent (or, without an agent id,
        any agent) has not re-registered since a master failover."""
        task = fw.tasks.get(task_id)
        if task is not None:
            state = validation.reconcile_state(task.state, None, fw.partition_aware)
            if state is not None:
                self._send_update(fw, self._reconcile_status(
                    fw, task_id, state, task.agent_id, task))
            return
        if (agent_id in self.recovered_agents if agent_id is not None
                else bool(self.recovered_agents)):
            return
        agent_state = self.agent_state(agent_id) if agent_id is not None else None
        state = validation.reconcile_state(None, agent_state, fw.partition_aware)
        if state is None:
            return
        status = self._reconcile_status(fw, task_id, state, agent_id, None,
                                        _RECONCILE_MESSAGES.get(agent_state or "",
                                                                "Reconciliation: Task is "
                                                                "unknown"))
        if agent_state == "unreachable" and agent_id is not None:
            status["unreachable_time"] = ns(self.unreachable_times[agent_id])
        self._send_update(fw, status)

    def reconcile(self, fw: FrameworkRecord, payload: Json) -> None:
        tasks = payload.get("tasks", [])
        if not tasks:
            # Implicit: every task the master holds (not the unreachable ones).
            for task in list(fw.tasks.values()):
                state = validation.reconcile_state(task.state, None, fw.partition_aware)
                if state is not None:
                    self._send_update(fw, self._reconcile_status(
                        fw, task.task_id, state, task.agent_id, task))
            return
        for item in tasks:
            self._reconcile_one(fw, id_of(item.get("task_id")) or "", id_of(item.get("agent_id")))

    # ------------------------------------------------------------------ agent → master

    def agent_status_update(self, agent_id: str, framework_id: str, status: Json,
                            latest_state: str) -> bool:
        fw = self.frameworks.get(framework_id)
        if fw is None:
            return False
        rec = self.agents.get(agent_id)
        task_id = id_of(status.get("task_id")) or ""
        task = fw.tasks.get(task_id)
        if task is not None and rec is not None:
            uuid_b64 = status.get("uuid")
            if not any(s.get("uuid") == uuid_b64 for s in task.statuses[-8:]):
                task.statuses.append(status)
                task.last_status = status
            task.state = latest_state
            if status["state"] in TERMINAL_STATES and uuid_b64:
                task.terminal_uuids.add(uuid_b64)
            if latest_state in TERMINAL_STATES and not task.freed:
                task.freed = True
                self._free(rec, fw, task.role, task.pool)
                self.request_allocation()
        self._send_update(fw, status)
        return True

    def agent_executor_message(self, agent_id: str, framework_id: str, executor_id: str,
                               data: str) -> None:
        fw = self.frameworks.get(framework_id)
        if fw is not None:
            self._send(fw, event("MESSAGE", {"agent_id": ident(agent_id),
                                             "executor_id": ident(executor_id), "data": data}))

    def agent_executor_exited(self, agent_id: str, framework_id: str, executor_id: str,
                              raw_status: int) -> None:
        rec = self.agents.get(agent_id)
        fw = self.frameworks.get(framework_id)
        if rec is None:
            return
        ex = rec.executors.pop((framework_id, executor_id), None)
        if ex is not None:
            self._free(rec, fw, ex.role, ex.pool)
            self.request_allocation()
        if fw is not None:
            self._send(fw, event("FAILURE", {"agent_id": ident(agent_id),
                                             "executor_id": ident(executor_id),
                                             "status": raw_status}))
        self._maybe_drained(rec)

    # ------------------------------------------------------------------ maintenance, faults

    def _machine_matches(self, rec: AgentRecord, machine: Json) -> bool:
        names = rec.machine_names()
        host = machine.get("hostname")
        if host in names:
            return True
        # Every agent shares 127.0.0.1, so a bare ip/hostname match means "all of them".
        return host in (None, rec.hostname) and machine.get("ip") in (None, "127.0.0.1") \
            and (host is not None or machine.get("ip") is not None)

    @property
    def maintenance_windows(self) -> list[Json]:
        return self.maintenance.windows

    def set_maintenance(self, windows: Any) -> None:
        """UPDATE_MAINTENANCE_SCHEDULE: validate (``MaintenanceError``), recompute
        unavailability, rescind, inverse-offer."""
        self.maintenance.update_schedule(windows)
        self._record_maintenance()
        for rec in self.agents.values():
            un: tuple[float, float | None] | None = None
            for window in windows:
                if any(self._machine_matches(rec, m) for m in window.get("machine_ids", [])):
                    u = window.get("unavailability", {})
                    un = (seconds_of(u.get("start")) or 0.0, seconds_of(u.get("duration")))
                    break
            self._set_unavailability(rec, un)

    def _set_unavailability(self, rec: AgentRecord, un: tuple[float, float | None] | None
                            ) -> None:
        if rec.unavailability == un:
            return
        rec.unavailability = un
        if rec.state != "registered":
            return
        # Outstanding offers lack (or carry a stale) unavailability: take them back.
        for oid in list(rec.offers):
            self._remove_offer(self.offers[oid], rescind=True)
        if un is None:
            for key in [k for k in self.inverse_status if k[0] == rec.id]:
                del self.inverse_status[key]
            return
        users = {fw_id for fw_id, _ in rec.tasks} | {fw_id for fw_id, _ in rec.executors}
        for fw_id in sorted(users):
            fw = self.frameworks.get(fw_id)
            if fw is None:
                continue
            ioid = self._new_offer_id()
            fw.inverse_offers[ioid] = rec.id
            self.inverse_status[(rec.id, fw_id)] = _inverse_status(fw_id, "UNKNOWN")
            self._send(fw, event("INVERSE_OFFERS", {"inverse_offers": [{
                "id": ident(ioid), "url": rec.agent.url_json(), "framework_id": ident(fw_id),
                "agent_id": ident(rec.id), "unavailability": self._unavailability_json(un),
                "resources": [],
            }]}))
        self.request_allocation()

    def _agents_on(self, keys: list[maintenance.MachineKey]) -> list[AgentRecord]:
        return [rec for rec in self.agents.values()
                if any(self._machine_matches(rec, maintenance.machine_json(k)) for k in keys)]

    def start_maintenance(self, machines: Any) -> list[AgentRecord]:
        """DRAINING machines go DOWN (``MaintenanceError`` otherwise): their agents are
        killed and removed (tasks gone by operator)."""
        keys = self.maintenance.start(machines)
        hit = [rec for rec in self._agents_on(keys) if rec.state == "registered"]
        for rec in hit:
            self.mark_unreachable(rec, "machine is going DOWN for maintenance", gone=True)
        self._record_maintenance()
        return hit

    def stop_maintenance(self, machines: Any) -> None:
        """DOWN machines come UP and leave the schedule (``MaintenanceError`` otherwise)."""
        keys = self.maintenance.stop(machines)
        for rec in self._agents_on(keys):
            self._set_unavailability(rec, None)
        self._record_maintenance()

    def maintenance_status(self) -> Json:
        """GET_MAINTENANCE_STATUS: DRAINING machines with their frameworks' answers."""
        statuses: dict[maintenance.MachineKey, list[Json]] = {}
        for key, mode in self.maintenance.modes.items():
            if mode != maintenance.DRAINING:
                continue
            ids = {rec.id for rec in self._agents_on([key])}
            statuses[key] = [st for (aid, _), st in sorted(self.inverse_status.items())
                             if aid in ids]
        return self.maintenance.status(statuses)

    def _record_maintenance(self) -> None:
        """The schedule and the DOWN machines survive a failover (the registry)."""
        windows = list(self.maintenance.windows)
        down = {json.dumps(list(k)) for k, mode in self.maintenance.modes.items()
                if mode == maintenance.DOWN}
        self.record(lambda s: s.set_maintenance(windows, down))

    def restore_maintenance(self, windows: list[Json], down: Iterable[str]) -> None:
        """A new leader takes the schedule and DOWN machines over from the registry."""
        self.maintenance.windows = list(windows)
        modes: dict[maintenance.MachineKey, str] = {}
        for window in windows:
            for m in window.get("machine_ids", []):
                modes.setdefault(maintenance.key_of(m), maintenance.DRAINING)
        for text in down:
            host, ip = json.loads(text)
            modes[(str(host), str(ip))] = maintenance.DOWN
        self.maintenance.modes = modes

    def notice(self, rec: AgentRecord, seconds: float) -> None:
        """A spot notice: the machine goes ``seconds`` from now and does not come back, so
        the unavailability starts then and has no duration (unbounded, as Mesos reads an
        Unavailability without one). The hard kill follows at its start."""
        self._set_unavailability(rec, (time.time() + seconds, None))

    def drain(self, rec: AgentRecord, max_grace: float | None) -> None:
        """DRAIN_AGENT: no more offers; kill its tasks with REASON_AGENT_DRAINING."""
        rec.draining = True
        rec.drain_grace = max_grace
        self.record(lambda s: s.set_drain(rec.id, True, max_grace))
        for oid in list(rec.offers):
            self._remove_offer(self.offers[oid], rescind=True)
        for fw_id, task_id in sorted(rec.tasks):
            fw = self.frameworks.get(fw_id)
            task = fw.tasks.get(task_id) if fw else None
            if task is None or task.state in TERMINAL_STATES:
                continue
            policy_grace = seconds_of((task.info.get("kill_policy") or {}).get("grace_period"))
            grace = policy_grace if policy_grace is not None else max_grace
            if max_grace is not None and grace is not None:
                grace = min(grace, max_grace)
            policy = None if grace is None else {"grace_period": ns(grace)}
            rec.agent.kill_task(fw_id, task_id, policy, reason="REASON_AGENT_DRAINING")

    def reactivate(self, rec: AgentRecord) -> None:
        rec.draining = False
        self.record(lambda s: s.set_drain(rec.id, False, None))
        self.request_allocation()

    def _maybe_drained(self, rec: AgentRecord) -> None:
        return None

    def set_revocable(self, rec: AgentRecord, estimate: Resources) -> None:
        """A new oversubscription estimate; shrinking rescinds offers holding revocable."""
        shrunk = not rec.revocable_total.fits(estimate)
        rec.revocable_total = estimate
        if shrunk:
            for oid in list(rec.offers):
                offer = self.offers[oid]
                if offer.pool.has_revocable():
                    self._remove_offer(offer, rescind=True)
        self.request_allocation()

    def drain_state(self, rec: AgentRecord) -> str | None:
        if not rec.draining:
            return None
        live = any(self.frameworks.get(f) and self.frameworks[f].tasks.get(t)
                   and self.frameworks[f].tasks[t].state not in TERMINAL_STATES
                   for f, t in rec.tasks)
        return "DRAINING" if live else "DRAINED"


def _inverse_status(framework_id: str, status: str) -> Json:
    return {"status": status, "framework_id": ident(framework_id), "timestamp": ns(time.time())}


def _launch_tasks(operations: list[Json]) -> list[Json]:
    out: list[Json] = []
    for op in operations:
        if op.get("type") == "LAUNCH":
            out.extend(op.get("launch", {}).get("task_infos", []))
        elif op.get("type") == "LAUNCH_GROUP":
            out.extend(op.get("launch_group", {}).get("task_group", {}).get("tasks", []))
    return out
