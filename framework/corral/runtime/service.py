"""The scheduler service: the asyncio shell around the pure core.

One loop owns the core. Mesos events (translated by ``translate``), API commands and a
one-second tick enter through a single inbox and are handed to ``Scheduler.handle`` one
at a time with ``now``; the effects it returns go to an outbox that one worker carries
out as Mesos calls, in order, so the core never waits on the network. ``JobChanged``
effects wake API watchers. The service implements ``corral.core.views.JobBackend``.

A call that fails is logged and dropped, never retried blindly: Mesos resends
unacknowledged updates, declined offers come back, and a launch whose fate is unknown is
settled by the reconciliation the core asks for after every (re)subscription.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.model import JobSpec
from corral.core.scheduler import Scheduler
from corral.core.views import JobView, NotFound
from corral.mesos import codec
from corral.mesos.client import SchedulerClient
from corral.mesos.errors import MesosError
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
    """How one scheduler replica talks to Mesos."""

    master: str = "http://127.0.0.1:5050"
    framework_name: str = "corral"
    mesos_role: str = "*"
    user: str = field(default_factory=getpass.getuser)
    failover_timeout: float = 7 * 24 * 3600.0
    executor_command: str = field(default_factory=default_executor_command)
    tick_seconds: float = 1.0
    usage_interval: float = 5.0
    hostname: str = field(default_factory=socket.gethostname)

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
    event: ev.Event
    done: asyncio.Future[None] | None = None


class SchedulerService:
    """One leader's scheduler: Mesos in, core decisions, Mesos calls out."""

    def __init__(
        self, config: RuntimeConfig, *, clock: Callable[[], float] = time.time,
        framework_id: str | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.core = Scheduler()
        self._inbox: asyncio.Queue[_Command] = asyncio.Queue()
        self._outbox: asyncio.Queue[fx.Effect] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._offer_roles: dict[str, str | None] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.client = SchedulerClient(
            config.master, config.framework_info(framework_id), self._on_mesos_event,
        )
        self.effects_done = 0

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._core_loop(), name="corral-core"),
            loop.create_task(self._outbox_loop(), name="corral-outbox"),
            loop.create_task(self._ticker(), name="corral-tick"),
            loop.create_task(self.client.run(), name="corral-mesos"),
        ]

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
        """Feed a command to the core and wait until it has been handled."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._inbox.put(_Command(event, done))
        await done

    # --- the core loop -----------------------------------------------------------------

    async def _core_loop(self) -> None:
        while True:
            cmd = await self._inbox.get()
            try:
                effects = self.core.handle(cmd.event, self._clock())
            except Exception as exc:  # a core bug must not kill the scheduler
                log.exception("core failed on %s", type(cmd.event).__name__)
                if cmd.done and not cmd.done.done():
                    cmd.done.set_exception(exc)
                continue
            for _, note in self.core.drain_notes():
                log.info("core: %s", note)
            changed = False
            for effect in effects:
                if isinstance(effect, fx.JobChanged):
                    changed = True
                else:
                    self._outbox.put_nowait(effect)
            if changed:
                self._changed.set()
                self._changed = asyncio.Event()
            if cmd.done and not cmd.done.done():
                cmd.done.set_result(None)

    async def _outbox_loop(self) -> None:
        while True:
            effect = await self._outbox.get()
            try:
                await self._apply(effect)
                self.effects_done += 1
            except MesosError as exc:
                log.warning("%s not carried out: %s", type(effect).__name__, exc)
            except Exception:
                log.exception("%s failed", type(effect).__name__)

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
                log.info("launching %s on %s", ", ".join(t.task_id for t in tasks), agent_id)
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
