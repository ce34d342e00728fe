"""The scheduler service: the asyncio shell around the pure core.

One loop owns the core. Mesos events (translated by ``translate``), API commands and a
one-second tick enter through a single inbox and are handed to ``Scheduler.handle`` one
at a time with ``now``; the effects it returns go to an outbox that one worker carries
out as Mesos calls, in order, so the core never waits on the network. ``JobChanged``
effects wake API watchers. The service implements ``corral.core.views.JobBackend``.

A call that fails is logged and dropped, never retried blindly: Mesos resends
unacknowledged updates, declined offers come back, and a launch whose fate is unknown is
settled by the reconciliation the core asks for after every (re)subscription.

With a ``persist`` function (HA mode, see ``runtime.replica``) the service is one leader's
*term*: each loop turn drains the inbox, handles every command, writes the intent of the
jobs that changed as ONE batch, and only then releases the turn's effects to Mesos (write
ahead: a task is durable before it is launched, so a successor always knows it). A write
that fails (``Fenced``: a newer leader exists) halts the service at once: nothing queued is
carried out. ``halt()`` is also what a lost leadership calls. After each subscription the
service follows Mesos' reconciliation advice: explicit reconciliation of every task it
knows, repeated with backoff for those not yet answered, then one implicit reconciliation;
offers that arrive meanwhile are held back and placed only when it is finished.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.admission import Admissions
from corral.core.elastic import Elastic
from corral.core.model import JobSpec, parse_task_id
from corral.core.policyfile import SchedulerPolicy
from corral.core.scheduler import Scheduler
from corral.core.spot import OverProvision
from corral.core.views import JobView, NotFound, NotLeader
from corral.mesos import codec
from corral.mesos.client import SchedulerClient
from corral.mesos.errors import FrameworkFailedOver, FrameworkRemoved, MesosError
from corral.runtime import translate

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
    tick_seconds: float = 1.0
    usage_interval: float = 5.0
    hostname: str = field(default_factory=socket.gethostname)
    # How the core decides (the same for every term of a replica):
    elastic: bool = True  # size jobs by load, fair share and deadline; False: as asked
    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    overprovision: float = 1.0  # spare-worker safety multiple for jobs without a label
    spread_attribute: str | None = "market"  # agent attribute workers spread over

    def make_core(self) -> Scheduler:
        """A fresh scheduler core configured from this (each leader term builds one)."""
        elastic = Elastic(roles=self.policy.roles, config=self.policy.config,
                          interval=self.policy.interval_s) if self.elastic else None
        return Scheduler(elastic=elastic, overprovision=OverProvision(self.overprovision),
                         default_spread=self.spread_attribute)

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
        if framework_id:
            info["id"] = {"value": framework_id}
        return info


@dataclass
class _Command:
    event: ev.Event | _Internal
    done: asyncio.Future[None] | None = None


@dataclass(frozen=True)
class _Internal:
    """A shell-only command for the core loop (never handed to the core)."""

    what: str  # "reconcile-timeout"
    generation: int = 0


# Write-ahead: the turn's changes are persisted before its effects are released.
Persist = Callable[[Scheduler, set[str], str | None], Awaitable[None]]
Verify = Callable[[], Awaitable[bool]]

_TURN_LIMIT = 512  # commands handled per loop turn (one batch write per turn)
_RECONCILE_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between explicit re-reconciles


class SchedulerService:
    """One leader's scheduler: Mesos in, core decisions, Mesos calls out."""

    def __init__(
        self, config: RuntimeConfig, *, clock: Callable[[], float] = time.time,
        framework_id: str | None = None, core: Scheduler | None = None,
        persist: Persist | None = None, verify: Verify | None = None,
        on_fatal: Callable[[str], None] | None = None,
        reconcile_deadline: float = 60.0, verify_every: float = 1.0,
    ) -> None:
        self.config = config
        self._clock = clock
        self.core = core if core is not None else config.make_core()
        self._inbox: asyncio.Queue[_Command] = asyncio.Queue()
        self._outbox: asyncio.Queue[fx.Effect] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._offer_roles: dict[str, str | None] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        ha = persist is not None
        self.client = SchedulerClient(
            config.master, config.framework_info(framework_id), self._on_mesos_event,
            # In HA mode a successor subscribing with our framework id means we are done.
            stop_on_failover=ha,
        )
        self.effects_done = 0
        self.acting = True  # False once halted: nothing more is decided or carried out
        self.halt_reason = ""
        self.framework_removed: str | None = None  # set if Mesos says our framework is gone
        self._persist = persist
        self._verify = verify
        self._verified_at = time.monotonic()
        self._verify_every = verify_every
        self._on_fatal = on_fatal
        self._stored_fid = framework_id
        # Reconciliation gate (HA mode only, so single-replica behaviour is unchanged).
        self._gate = ha
        self._awaiting: dict[str, str | None] | None = None  # task id -> agent, until answered
        self._held: list[ev.OffersReceived] = []
        self._reconcile_gen = 0
        self._reconcile_started = 0.0
        self._reconcile_deadline = reconcile_deadline
        self.reconciled = asyncio.Event()
        self._admissions = Admissions()  # submits admitted, not yet handled (quotas)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        mesos = loop.create_task(self.client.run(), name="corral-mesos")
        mesos.add_done_callback(self._mesos_ended)
        self._tasks = [
            loop.create_task(self._core_loop(), name="corral-core"),
            loop.create_task(self._outbox_loop(), name="corral-outbox"),
            loop.create_task(self._ticker(), name="corral-tick"),
            mesos,
        ]

    def _mesos_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or not self.acting:
            return
        exc = task.exception()
        if exc is not None and self._persist is None:
            # Single-replica mode keeps its old behaviour: log, keep serving the API.
            log.error("the Mesos subscription ended: %s", exc)
            return
        if isinstance(exc, FrameworkRemoved):
            # Our framework id is dead (torn down, or no scheduler for longer than the
            # failover timeout): every task of it is gone too. The next term subscribes anew.
            self.framework_removed = self.client.framework_id or ""
            self._fatal(f"Mesos removed framework {self.framework_removed}: {exc}")
        elif isinstance(exc, FrameworkFailedOver):
            self._fatal(f"Mesos: {exc}")
        elif exc is not None:
            log.error("the Mesos subscription ended: %s", exc)

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
        while not self._outbox.empty():
            self._outbox.get_nowait()
        while not self._inbox.empty():
            cmd = self._inbox.get_nowait()
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(NotLeader(None))
        self._changed.set()  # wake watchers so they notice

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    # --- inputs --------------------------------------------------------------------

    async def _on_mesos_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "OFFERS":
            for o in (event.get("offers") or {}).get("offers", []):
                oid = (o.get("id") or {}).get("value")
                if oid:
                    self._offer_roles[oid] = codec.offer_allocation_role(o)
        for e in translate.event_from_mesos(event):
            await self._inbox.put(_Command(e))

    async def _ticker(self) -> None:
        was_connected = False
        while True:
            await asyncio.sleep(self.config.tick_seconds)
            connected = self.client.stream_id is not None
            if was_connected and not connected:
                await self._inbox.put(_Command(ev.Disconnected()))
            was_connected = connected
            await self._inbox.put(_Command(ev.Tick()))

    async def _send(self, event: ev.Event) -> None:
        """Feed a command to the core and wait until it has been handled (and, in HA mode,
        its changes are durable)."""
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
            while len(cmds) < _TURN_LIMIT and not self._inbox.empty():
                cmds.append(self._inbox.get_nowait())
            if not self.acting:
                break
            effects: list[fx.Effect] = []
            changed: set[str] = set()
            for cmd in cmds:
                self._handle(cmd, effects, changed)
            new_fid = self.core.framework_id
            if new_fid == self._stored_fid:
                new_fid = None
            if self._persist is not None and (changed or new_fid):
                try:
                    await self._persist(self.core, changed, new_fid)
                except Exception as exc:
                    # Fenced (a newer leader exists) or ZooKeeper gone for the whole retry
                    # budget: the changes are not durable, so none of them may be acted on.
                    if self.acting:
                        self._fail(cmds, f"cannot persist state ({type(exc).__name__}: {exc})")
                    else:  # already halted (deposed meanwhile): nothing more to report
                        self._fail(cmds, self.halt_reason)
                    return
                if not self.acting:  # deposed while writing: the effects must not go out
                    self._fail(cmds, self.halt_reason)
                    return
                if new_fid:
                    self._stored_fid = new_fid
            for effect in effects:
                self._outbox.put_nowait(effect)
            if changed:
                self._changed.set()
                self._changed = asyncio.Event()
            for cmd in cmds:
                if cmd.done and not cmd.done.done():
                    cmd.done.set_result(None)

    def _fail(self, cmds: list[_Command], reason: str) -> None:
        if self.acting:
            self._fatal(reason)
        for cmd in cmds:
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(NotLeader(None))

    def _handle(self, cmd: _Command, effects: list[fx.Effect], changed: set[str]) -> None:
        event = cmd.event
        if isinstance(event, _Internal):
            if event.generation == self._reconcile_gen and self._awaiting:
                log.warning("reconciliation: no answer for %d tasks after %.0f s; going on",
                            len(self._awaiting), time.monotonic() - self._reconcile_started)
                self._reconcile_done(effects, changed)
            return
        if self._gate and self._awaiting is not None:
            if isinstance(event, ev.OffersReceived):
                self._held.append(event)  # placed once reconciliation is finished
                return
            if isinstance(event, ev.OfferRescinded):
                self._drop_held(event.offer_id)
        try:
            out = self.core.handle(event, self._clock())
        except Exception as exc:  # a core bug must not kill the scheduler
            log.exception("core failed on %s", type(event).__name__)
            if cmd.done and not cmd.done.done():
                cmd.done.set_exception(exc)
            return
        for _, note in self.core.drain_notes():
            log.info("core: %s", note)
        self._collect(out, effects, changed)
        if isinstance(event, ev.ExecutorMessage) and event.data.get("kind") == "checkpoint":
            # The core does not count a checkpoint as a change; its marker is still intent.
            tid = event.data.get("task_id", event.executor_id)
            parsed = parse_task_id(tid) if isinstance(tid, str) else None
            if parsed is not None and parsed[0].job in self.core.jobs:
                changed.add(parsed[0].job)
        if isinstance(event, ev.Subscribed):
            self._on_subscribed(out, effects, changed)
        elif isinstance(event, ev.StatusUpdate) and self._awaiting:
            self._awaiting.pop(event.task_id, None)
            if not self._awaiting:
                self._reconcile_done(effects, changed)

    def _collect(self, out: list[fx.Effect], effects: list[fx.Effect],
                 changed: set[str]) -> None:
        for effect in out:
            if isinstance(effect, fx.JobChanged):
                changed.add(effect.key)
            else:
                effects.append(effect)

    # --- reconciliation (HA mode) -----------------------------------------------------

    def _on_subscribed(self, out: list[fx.Effect], effects: list[fx.Effect],
                       changed: set[str]) -> None:
        log.info("subscribed as framework %s t=%.3f", self.core.framework_id, time.time())
        if not self._gate:
            return
        explicit = [e for e in out if isinstance(e, fx.Reconcile) and e.tasks]
        self._reconcile_gen += 1
        self._reconcile_started = time.monotonic()
        if not explicit:
            self._awaiting = {}
            self._reconcile_done(effects, changed)
            return
        self._awaiting = dict(explicit[0].tasks)
        log.info("reconciling %d tasks", len(self._awaiting))
        gen = self._reconcile_gen
        t = asyncio.get_running_loop().create_task(self._re_reconcile(gen),
                                                   name="corral-reconcile")
        self._tasks.append(t)

    async def _re_reconcile(self, gen: int) -> None:
        """Ask again for tasks not answered yet, backing off; give up at the deadline."""
        deadline = self._reconcile_started + self._reconcile_deadline
        for i in range(1000):
            delay = _RECONCILE_BACKOFF[min(i, len(_RECONCILE_BACKOFF) - 1)]
            await asyncio.sleep(delay)
            if gen != self._reconcile_gen or not self._awaiting or not self.acting:
                return
            if time.monotonic() >= deadline:
                await self._inbox.put(_Command(_Internal("reconcile-timeout", gen)))
                return
            self._outbox.put_nowait(fx.Reconcile(tuple(self._awaiting.items())))

    def _reconcile_done(self, effects: list[fx.Effect], changed: set[str]) -> None:
        took = time.monotonic() - self._reconcile_started
        self._awaiting = None
        # Then implicit: Mesos reports every task of ours it knows, so unknown ones are
        # adopted or killed by the core.
        effects.append(fx.Reconcile(()))
        log.info("reconciliation finished in %.3f s t=%.3f", took, time.time())
        held, self._held = self._held, []
        for offers in held:
            if offers.offers:
                self._handle(_Command(offers), effects, changed)
        self.reconciled.set()

    def _drop_held(self, offer_id: str) -> None:
        kept = []
        for batch in self._held:
            rest = tuple(o for o in batch.offers if o.id != offer_id)
            if rest:
                kept.append(ev.OffersReceived(rest))
        self._held = kept

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
            except MesosError as exc:
                log.warning("%s not carried out: %s", type(effect).__name__, exc)
            except Exception:
                log.exception("%s failed", type(effect).__name__)

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
            case _:
                log.warning("unknown effect %r", effect)

    # --- JobBackend ----------------------------------------------------------------

    async def submit(self, spec: JobSpec, request_id: str) -> JobView:
        existing = self.core.check_submit(spec, request_id)
        if existing is not None:
            return existing
        with self._admissions.admitting(  # QuotaExceeded (issue 17: core.admission)
                spec, self.config.policy.roles.get(spec.role),
                self.config.policy.quotas.get(spec.role),
                (j.spec for j in self.core.jobs.values()
                 if j.spec.role == spec.role and not j.phase.terminal)):
            await self._send(ev.SubmitJob(spec, request_id))
        return self.core.view(spec.key)

    async def get(self, key: str) -> JobView:
        return self.core.view(key)

    async def list(self, role: str | None = None) -> list[JobView]:
        return [v for v in self.core.views() if role is None or v.spec.role == role]

    async def kill(self, key: str) -> JobView:
        self.core.check_kill(key)  # NotFound before anything else
        await self._send(ev.KillJob(key))
        return self.core.view(key)

    async def scale(self, key: str, workers: int) -> JobView:
        self.core.check_scale(key, workers)
        await self._send(ev.ScaleJob(key, workers))
        return self.core.view(key)

    async def watch(self, key: str) -> AsyncIterator[JobView]:
        last = -1
        while True:
            if not self.acting:
                raise NotLeader(None)
            changed = self._changed
            view = self.core.view(key)
            if view.version != last:
                last = view.version
                yield view
            if view.state.terminal:
                return
            with contextlib.suppress(TimeoutError):
                # Bounded wait: re-check at least every few seconds even if nothing wakes us.
                await asyncio.wait_for(changed.wait(), timeout=5.0)


__all__ = ["NotFound", "RuntimeConfig", "SchedulerService"]
