"""The scheduler service: the asyncio shell around the pure core — a pump.

One loop owns the core. Mesos events (translated by ``translate``), API commands and a
one-second tick enter through a single inbox and are handed to ``Scheduler.handle`` one at
a time with ``now`` from the injected clock. Each loop *turn* drains the inbox (up to
``_TURN_LIMIT`` commands, and no more once ``_TURN_BUDGET_S`` of handling has passed, so
one turn never holds the event loop long), handles them, writes the intent of the jobs
that changed
durably as ONE batch to the store, and only then releases the turn's effects to the
outbox, which one worker carries out as Mesos calls, in order (write-ahead: a task is
durable before it is launched, so a successor always knows it). A write that fails
(``Fenced``: a newer leader exists; or the store is gone) halts the service at once:
nothing queued is carried out.

Every decision is the core's: the reconciliation gate after subscribing, the timeouts of
launches and kills, what to do about a call that failed. The shell only reports: a Mesos
call that could not be carried out comes back to the core as ``EffectFailed``; a
subscription that cannot be made comes back as ``Disconnected(reason)``; a framework Mesos
removed comes back as ``FrameworkRemoved``, after which the shell subscribes as a new
framework. The match over effects is exhaustive.

A single replica runs exactly this path with a ``MemoryStore``; an HA replica
(``runtime.replica``) gives each leadership term a service with the ZooKeeper store and a
``verify`` that re-confirms leadership before launches and kills.

API watchers are woken per job: a change wakes only the watchers of that job, and the
view they are sent is built once per change, whatever the number of watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.admission import Admissions
from corral.core.cost import CostConfig, PriceTable
from corral.core.elastic import Elastic
from corral.core.model import JobSpec, role_of
from corral.core.policyfile import SchedulerPolicy
from corral.core.scheduler import Scheduler
from corral.core.spot import OverProvision
from corral.core.views import JobView, NotFound, NotLeader
from corral.mesos import codec
from corral.mesos.client import SchedulerClient
from corral.mesos.errors import (
    AuthenticationFailed,
    FrameworkFailedOver,
    FrameworkRemoved,
    MesosError,
)
from corral.runtime import translate
from corral.runtime.gcpolicy import GcPolicy
from corral.runtime.persist import MemoryStore, Persist, batch_for

if TYPE_CHECKING:
    from corral.observe.observer import Observer

log = logging.getLogger("corral.runtime")

MESOS_CAPABILITIES = (
    "REVOCABLE_RESOURCES", "TASK_KILLING_STATE", "PARTITION_AWARE", "GPU_RESOURCES",
    "MULTI_ROLE",
)


def default_executor_command() -> str:
    """Run Corral's executor with this interpreter (agents must have Corral installed)."""
    return f"{shlex.quote(sys.executable)} -m corral_executor"


@dataclass
class RuntimeConfig:
    """How one scheduler replica talks to Mesos, and how its core decides."""

    master: str = "http://127.0.0.1:5050"
    framework_name: str = "corral"
    mesos_role: str = "*"
    user: str = field(default_factory=getpass.getuser)
    failover_timeout: float = 7 * 24 * 3600.0
    executor_command: str = field(default_factory=default_executor_command)
    # CommandInfo.URI JSON objects the fetcher brings into each executor's sandbox.
    executor_uris: tuple[dict[str, Any], ...] = ()
    principal: str | None = None  # Mesos framework principal (HTTP Basic, FrameworkInfo)
    secret: str | None = field(default=None, repr=False)
    master_ca_file: str | None = None  # CAs to check an https:// master against
    # Called when Mesos refuses our credentials (``corral scheduler`` exits 2).
    on_unauthorized: Callable[[str], None] | None = field(
        default=None, repr=False, compare=False)
    tick_seconds: float = 1.0
    usage_interval: float = 5.0
    hostname: str = field(default_factory=socket.gethostname)
    # How the core decides (the same for every term of a replica):
    elastic: bool = True  # size jobs by load, fair share and deadline; False: as asked
    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    overprovision: float = 1.0  # spare-worker safety multiple for jobs without a label
    spread_attribute: str | None = "market"  # agent attribute workers spread over
    prices: PriceTable | None = None  # --prices: the cost ledger's price table
    # Metrics, job history and progress samples (corral.observe), across terms.
    observer: Observer | None = field(default=None, repr=False, compare=False)
    # The cyclic garbage collector's policy while acting (corral.runtime.gcpolicy);
    # None: Python's defaults (embedded runtimes, tests).
    gc: GcPolicy | None = field(default=None, repr=False, compare=False)

    def make_core(self, term: int = 0) -> Scheduler:
        """A fresh scheduler core configured from this (each leader term builds one)."""
        elastic = Elastic(roles=self.policy.roles, config=self.policy.config,
                          interval=self.policy.interval_s) if self.elastic else None
        return Scheduler(elastic=elastic, overprovision=OverProvision(self.overprovision),
                         default_spread=self.spread_attribute, term=term,
                         cost=self.cost_config())

    def cost_config(self) -> CostConfig:
        """The core's price table and role budgets."""
        p = self.prices
        if p is None:
            return CostConfig(budgets=self.policy.budgets)
        return CostConfig(prices=p, budgets=self.policy.budgets, attribute=p.attribute,
                          default_market=p.default_market)

    def framework_info(self, framework_id: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "user": self.user,
            "name": self.framework_name,
            "roles": [self.mesos_role],
            "failover_timeout": self.failover_timeout,
            "checkpoint": True,
            "hostname": self.hostname,
            "capabilities": [{"type": c} for c in MESOS_CAPABILITIES],
        }
        if self.principal:
            info["principal"] = self.principal
        if framework_id:
            info["id"] = {"value": framework_id}
        return info

    def client_options(self) -> dict[str, Any]:
        """Credentials and TLS settings for the ``SchedulerClient``."""
        import ssl

        opts: dict[str, Any] = {}
        if self.principal:
            opts["credentials"] = (self.principal, self.secret or "")
        if self.master_ca_file:
            opts["ssl_context"] = ssl.create_default_context(cafile=self.master_ca_file)
        return opts


@dataclass
class _Command:
    event: ev.Event
    done: asyncio.Future[None] | None = None


Verify = Callable[[], Awaitable[bool]]

_TURN_LIMIT = 512  # commands handled per loop turn (one batch write per turn)
# A turn takes no more commands once it has handled for this long: the loop gets back
# to the API and to Mesos between turns (a 10,000-offer event is handled as ten events
# of at most 1,000 offers, ``translate.OFFERS_PER_EVENT``, which can land in ten turns).
_TURN_BUDGET_S = 0.05
_GC_HOLD_OFFERS = 100  # OFFERS events larger than this are translated with the GC held


class SchedulerService:
    """One leader's scheduler: Mesos in, core decisions, Mesos calls out."""

    def __init__(
        self, config: RuntimeConfig, *, clock: Callable[[], float] = time.time,
        framework_id: str | None = None, core: Scheduler | None = None,
        persist: Persist | None = None, verify: Verify | None = None,
        on_fatal: Callable[[str], None] | None = None, verify_every: float = 1.0,
    ) -> None:
        self.config = config
        self._clock = clock
        self.core = core if core is not None else config.make_core()
        self.memory: MemoryStore | None = None
        if persist is None:
            self.memory = MemoryStore()
            persist = self.memory.write
        self._persist = persist
        self._verify = verify
        self._verified_at = time.monotonic()
        self._verify_every = verify_every
        self._on_fatal = on_fatal
        self._ha = verify is not None
        self._inbox: asyncio.Queue[_Command] = asyncio.Queue()
        self._outbox: asyncio.Queue[fx.Effect] = asyncio.Queue()
        self._watch: dict[str, asyncio.Event] = {}
        self._views: dict[str, JobView] = {}   # built once per change, shared by watchers
        self._offer_roles: dict[str, str | None] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stored_fid = framework_id
        self.client = self._new_client(framework_id)
        self.effects_done = 0
        self.acting = True  # False once halted: nothing more is decided or carried out
        self.halt_reason = ""
        self.frameworks_removed = 0  # times Mesos removed our framework this term
        self._admissions = Admissions()  # submits admitted, not yet handled (quotas)

    def _new_client(self, framework_id: str | None) -> SchedulerClient:
        return SchedulerClient(
            self.config.master, self.config.framework_info(framework_id),
            self._on_mesos_event,
            # In HA mode a successor subscribing with our framework id means we are done.
            stop_on_failover=self._ha, **self.config.client_options(),
        )

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._core_loop(), name="corral-core"),
            loop.create_task(self._outbox_loop(), name="corral-outbox"),
            loop.create_task(self._ticker(), name="corral-tick"),
            loop.create_task(self._subscription(), name="corral-mesos"),
        ]
        if self.config.policy.budgets and self.config.observer is not None \
                and self.config.observer.store is not None:
            self._tasks.append(loop.create_task(self._spend_reports(), name="corral-spend"))

    async def _subscription(self) -> None:
        """Keep a Mesos subscription; a removed framework is replaced by a fresh one."""
        while self.acting:
            try:
                await self.client.run()
                return  # closed
            except FrameworkRemoved as exc:
                fid = self.client.framework_id or self._stored_fid or ""
                self.frameworks_removed += 1
                log.error("Mesos removed framework %s (%s): registering a new framework; its "
                          "tasks are lost and will be replaced", fid, exc)
                await self._inbox.put(_Command(ev.FrameworkRemoved(fid, str(exc))))
                await asyncio.sleep(min(1.0 * self.frameworks_removed, 10.0))
                self.client = self._new_client(None)
            except FrameworkFailedOver as exc:
                self._fatal(f"Mesos: {exc}")
                return
            except AuthenticationFailed as exc:
                # Wrong principal or secret: every attempt would fail the same way.
                self._fatal(f"Mesos refused our credentials: {exc}")
                if self.config.on_unauthorized is not None:
                    self.config.on_unauthorized(str(exc))
                return
            except Exception as exc:
                log.error("the Mesos subscription ended: %s", exc)
                await self._inbox.put(_Command(ev.Disconnected(f"subscription ended: {exc}")))
                return

    def _fatal(self, reason: str) -> None:
        self.halt(reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    def halt(self, reason: str) -> None:
        """Stop acting NOW (synchronous): no decision, write, launch or kill after this.
        Queued effects are dropped; waiting API calls get NotLeader."""
        if not self.acting:
            return
        self.acting = False
        self.halt_reason = reason
        log.warning("not acting any more: %s", reason)
        if self.config.gc is not None:
            self.config.gc.stop()   # this term's state is dropped: let Python free it
        while not self._outbox.empty():
            self._outbox.get_nowait()
        while not self._inbox.empty():
            cmd = self._inbox.get_nowait()
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(NotLeader(None))
        for e in self._watch.values():
            e.set()  # wake watchers so they notice

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    def ready(self) -> bool:
        """Serving: acting, and subscribed to Mesos."""
        return self.acting and self.client.connected.is_set()

    def reconciled(self) -> bool:
        """Subscribed and done reconciling: offers are placed again."""
        return self.acting and self.core.reconciled()

    # --- inputs --------------------------------------------------------------------

    async def _on_mesos_event(self, event: dict[str, Any]) -> None:
        offers = (event.get("offers") or {}).get("offers", []) \
            if event.get("type") == "OFFERS" else []
        # Many offers make many objects at once: no collector passes while they are built.
        with codec.gc_held(len(offers) > _GC_HOLD_OFFERS):
            for o in offers:
                oid = (o.get("id") or {}).get("value")
                if oid:
                    self._offer_roles[oid] = codec.offer_allocation_role(o)
            events = translate.event_from_mesos(event)
        for e in events:
            await self._inbox.put(_Command(e))

    async def _ticker(self) -> None:
        """A Tick every ``tick_seconds``; ``Disconnected`` whenever the subscription is
        down and its reason changed (so the core can say why jobs wait)."""
        told: str | None = None
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.config.tick_seconds
            await asyncio.sleep(self.config.tick_seconds)
            self._observe_lag(loop.time() - due)
            if self.client.connected.is_set():
                told = None
            else:
                reason = self.client.last_error or "connecting to the Mesos master"
                if reason != told:
                    told = reason
                    await self._inbox.put(_Command(ev.Disconnected(reason)))
            await self._inbox.put(_Command(ev.Tick()))

    async def _send(self, event: ev.Event) -> None:
        """Feed a command to the core and wait until it has been handled and its changes
        are durable."""
        if not self.acting:
            raise NotLeader(None)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._inbox.put(_Command(event, done))
        await done

    # --- the core loop -----------------------------------------------------------------

    async def _core_loop(self) -> None:
        cmds: list[_Command] = []
        try:
            await self._turns(cmds)
        finally:
            # Halted or cancelled mid-turn: callers waiting on these must not hang.
            for cmd in cmds:
                if cmd.done and not cmd.done.done():
                    cmd.done.set_exception(NotLeader(None))

    async def _turns(self, cmds: list[_Command]) -> None:
        while self.acting:
            cmds.clear()
            cmds.append(await self._inbox.get())
            if not self.acting:
                break
            effects: list[fx.Effect] = []
            changed: set[str] = set()
            durable: set[str] = set()
            stop = time.perf_counter() + _TURN_BUDGET_S
            self._handle(cmds[0], effects, changed, durable)
            while len(cmds) < _TURN_LIMIT and not self._inbox.empty() and self.acting \
                    and time.perf_counter() < stop:
                cmds.append(self._inbox.get_nowait())
                self._handle(cmds[-1], effects, changed, durable)
            if not self.acting:
                break
            new_fid = self.core.framework_id
            if new_fid == self._stored_fid:
                new_fid = None
            if durable or new_fid:
                try:
                    started = time.perf_counter()
                    await self._persist(batch_for(self.core, durable, new_fid))
                    self._observe_store(time.perf_counter() - started)
                except Exception as exc:
                    # Fenced (a newer leader exists) or the store gone for the whole retry
                    # budget: the changes are not durable, so none of them may be acted on.
                    why = (f"cannot persist state ({type(exc).__name__}: {exc})"
                           if self.acting else self.halt_reason)
                    self._fail(cmds, why)
                    return
                if not self.acting:  # deposed while writing: the effects must not go out
                    self._fail(cmds, self.halt_reason)
                    return
                if new_fid:
                    self._stored_fid = new_fid
            for effect in effects:
                self._outbox.put_nowait(effect)
            self._wake(changed)
            self._observe_turn(changed)
            if self.config.gc is not None:
                self.config.gc.after_turn()
            for cmd in cmds:
                if cmd.done and not cmd.done.done():
                    cmd.done.set_result(None)

    def _fail(self, cmds: list[_Command], reason: str) -> None:
        if self.acting:
            self._fatal(reason)
        for cmd in cmds:
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(NotLeader(None))

    def _handle(self, cmd: _Command, effects: list[fx.Effect], changed: set[str],
                durable: set[str]) -> None:
        event = cmd.event
        was_reconciled = self.core.reconciled()
        try:
            started = time.perf_counter()
            out = self.core.handle(event, self._clock())
        except Exception as exc:  # a core bug must not kill the scheduler
            log.exception("core failed on %s", type(event).__name__)
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(exc)
            return
        self._observe_decision(event, time.perf_counter() - started, out)
        for _, note in self.core.drain_notes():
            log.info("core: %s", note)
        for effect in out:
            if isinstance(effect, fx.JobChanged):
                changed.add(effect.key)
            elif isinstance(effect, fx.PersistJob):
                durable.add(effect.key)
            else:
                effects.append(effect)
        if isinstance(event, ev.Subscribed):
            log.info("subscribed as framework %s t=%.3f", event.framework_id, time.time())
        if not was_reconciled and self.core.reconciled():
            log.info("reconciliation finished t=%.3f", time.time())

    # --- observation (corral.observe: metrics, job history) ----------------------------

    def _observe_decision(self, event: ev.Event, seconds: float, out: list[fx.Effect]) -> None:
        obs = self.config.observer
        if obs is not None:
            obs.decided(event, seconds, out)

    def _observe_lag(self, seconds: float) -> None:
        obs = self.config.observer
        if obs is not None:
            obs.loop_lag(seconds)

    def _observe_store(self, seconds: float) -> None:
        obs = self.config.observer
        if obs is not None:
            obs.stored(seconds, "zookeeper" if self._ha else "memory")

    def _observe_turn(self, changed: set[str]) -> None:
        obs = self.config.observer
        if obs is not None:
            try:
                obs.after_turn(self.core, changed)
            except Exception:  # observing must never stop scheduling
                log.exception("observer failed after a turn")

    async def _spend_reports(self) -> None:
        """Every minute, tell the core what budgeted roles' finished jobs that only the
        history holds cost within their window (``core.cost`` budgets)."""
        obs = self.config.observer
        assert obs is not None
        while self.acting:
            try:
                spent = await obs.spend_outside(self.core, self.config.policy.budgets,
                                                self._clock())
                await self._inbox.put(_Command(ev.SpendReported(spent)))
            except Exception as exc:
                log.warning("cannot read role spend from the job history: %s", exc)
            await asyncio.sleep(60.0)

    def _wake(self, keys: set[str]) -> None:
        for key in keys:
            self._views.pop(key, None)
            waiter = self._watch.pop(key, None)
            if waiter is not None:
                waiter.set()

    # --- carrying out effects ----------------------------------------------------------

    async def _outbox_loop(self) -> None:
        while True:
            effect = await self._outbox.get()
            if not self.acting:
                continue
            if isinstance(effect, (fx.LaunchTasks, fx.KillTask)) and not await self._lease_ok():
                continue
            try:
                await self._apply(effect)
                self.effects_done += 1
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, MesosError):
                    log.warning("%s not carried out: %s", type(effect).__name__, exc)
                else:
                    log.exception("%s failed", type(effect).__name__)
                if self.acting:
                    await self._inbox.put(_Command(ev.EffectFailed(effect, why)))

    async def _lease_ok(self) -> bool:
        """Before a launch or kill, re-confirm leadership with ZooKeeper if we have not for
        a while: a replica that was frozen (SIGSTOP, a long pause) may resume with old
        effects queued before its ZooKeeper client noticed it was deposed."""
        if self._verify is None:
            return self.acting
        if time.monotonic() - self._verified_at < self._verify_every:
            return self.acting
        try:
            ok = await self._verify()
        except Exception as exc:
            ok = False
            log.warning("leadership check failed: %s", exc)
        if not ok:
            self._fatal("leadership could not be confirmed before acting")
            return False
        self._verified_at = time.monotonic()
        return self.acting

    async def _apply(self, effect: fx.Effect) -> None:
        c = self.client
        match effect:
            case fx.LaunchTasks(offer_ids=offer_ids, agent_id=agent_id, tasks=tasks):
                alloc = self._offer_roles.get(offer_ids[0]) if offer_ids else None
                infos = [
                    translate.task_info(
                        t, agent_id, self.config.executor_command,
                        role=self.config.mesos_role, allocation_role=alloc,
                        usage_interval=self.config.usage_interval,
                        uris=self.config.executor_uris,
                    )
                    for t in tasks
                ]
                for oid in offer_ids:
                    self._offer_roles.pop(oid, None)
                log.info("launching %s on %s t=%.3f", ", ".join(t.task_id for t in tasks),
                         agent_id, time.time())
                await c.launch(list(offer_ids), infos, effect.refuse_seconds)
            case fx.DeclineOffers(offer_ids=offer_ids, refuse_seconds=refuse):
                for oid in offer_ids:
                    self._offer_roles.pop(oid, None)
                await c.decline(list(offer_ids), refuse)
            case fx.KillTask(task_id=task_id, agent_id=agent_id, grace_seconds=grace):
                log.info("killing %s (grace %.1fs)", task_id, grace)
                await c.kill(task_id, agent_id, grace)
            case fx.Acknowledge(agent_id=agent_id, task_id=task_id, uuid=uuid):
                await c.acknowledge(agent_id, task_id, uuid)
            case fx.Reconcile(tasks=tasks):
                await c.reconcile(list(tasks))
            case fx.Revive():
                await c.revive()
            case fx.Suppress():
                await c.suppress()
            case fx.SendMessage(agent_id=agent_id, executor_id=executor_id, data=data):
                await c.message(agent_id, executor_id, json.dumps(dict(data)).encode())
            case fx.AcceptInverseOffers(ids=ids):
                await c.accept_inverse_offers(list(ids))
            case fx.JobChanged() | fx.PersistJob():
                raise AssertionError("bookkeeping effects never reach the outbox")
            case _:
                assert_never(effect)

    # --- JobBackend ----------------------------------------------------------------

    async def submit(self, spec: JobSpec, request_id: str) -> JobView:
        existing = self.core.check_submit(spec, request_id)
        if existing is not None:
            return existing
        policy = self.config.policy
        with self._admissions.admitting(  # QuotaExceeded: the role's quota, with numbers
                spec, policy.roles.get(spec.role), policy.quotas.get(spec.role),
                self.core.live_specs(spec.role)):
            await self._send(ev.SubmitJob(spec, request_id))
        return self.core.view(spec.key)

    async def get(self, key: str) -> JobView:
        return self.core.view(key)

    async def list(self, role: str | None = None) -> list[JobView]:
        return [v for v in self.core.views() if role is None or v.spec.role == role]

    async def keys(self, role: str | None = None) -> Sequence[str]:
        return [k for k in self.core.job_keys() if role is None or role_of(k) == role]

    async def kill(self, key: str) -> JobView:
        self.core.check_kill(key)  # NotFound / already over: before anything else
        await self._send(ev.KillJob(key))
        return self.core.view(key)

    async def scale(self, key: str, workers: int) -> JobView:
        self.core.check_scale(key, workers)
        await self._send(ev.ScaleJob(key, workers))
        return self.core.view(key)

    def _view(self, key: str) -> JobView:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self.core.view(key)
        return view

    async def watch(self, key: str) -> AsyncIterator[JobView]:
        last = -1
        while True:
            if not self.acting:
                raise NotLeader(None)
            waiter = self._watch.get(key)
            if waiter is None:
                waiter = self._watch[key] = asyncio.Event()
            view = self._view(key)
            if view.version != last:
                last = view.version
                yield view
            if view.state.terminal:
                return
            with contextlib.suppress(TimeoutError):
                # Bounded wait: re-check at least every few seconds even if nothing wakes us.
                await asyncio.wait_for(waiter.wait(), timeout=5.0)


__all__ = ["NotFound", "RuntimeConfig", "SchedulerService"]
