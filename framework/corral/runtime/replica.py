"""One high-availability scheduler replica: a ZooKeeper session, the leader election, and
while this replica leads, one ``SchedulerService`` per leadership *term*.

Vocabulary: a *term* starts at ``Elected(fence)`` and ends at ``Deposed`` (connection
SUSPENDED or LOST, our node gone, resignation) or at a fatal error of the term (a write
``Fenced``, Mesos reporting that another scheduler took our framework over).

The sequence on ``Elected``: build a fresh ``StateStore`` under the fence, ``load`` and
validate everything (corrupt state: log why, resign and stay out; never act on garbage),
``restore`` a fresh core from it, start a service that subscribes with the stored
framework id and reconciles before it places anything (see ``service``).

On ``Deposed`` the service is halted synchronously, on the event loop, in the callback
that delivers the event: after that nothing is launched, killed or written. The service is
then stopped (its Mesos subscription closed) and thrown away; a later term starts from
ZooKeeper again. ``stop()`` (SIGTERM) halts, resigns at once so the next replica takes
over without waiting for a session timeout, then closes everything; the framework is not
torn down.

Followers (and a leader still loading) implement ``JobBackend`` by raising
``NotLeader(<leader's API address>)``, which the API turns into UNAVAILABLE with the
leader's address for the CLI to follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from kazoo.client import KazooClient

from corral.core.intent import RestoreError, restore
from corral.core.model import JobSpec
from corral.core.views import JobView, NotLeader
from corral.runtime.persist import intents_from
from corral.runtime.service import RuntimeConfig, SchedulerService
from corral.store import (
    Batch,
    Deposed,
    Elected,
    Fence,
    LeaderElection,
    StateCorrupt,
    StateStore,
    close,
    connect_async,
)
from corral.store.layout import epoch_path

log = logging.getLogger("corral.replica")

_REJOIN_DELAY = 1.0  # seconds between resigning after a fatal term error and rejoining
_LOOKUP_SECONDS = 0.5  # the longest an API call waits to learn the leader's address
_RECHECK_SECONDS = 5.0  # while refusing to lead over corrupt state: how often to look again


class Replica:
    """A scheduler replica contending for leadership (see module docstring)."""

    def __init__(
        self, config: RuntimeConfig, zk_url: str, identity: str, api_address: str = "", *,
        session_timeout: float = 10.0, connect_within: float = 30.0,
        recheck_seconds: float = _RECHECK_SECONDS,
    ) -> None:
        self.config = config
        self.zk_url = zk_url
        self.identity = identity
        self.api_address = api_address
        self.session_timeout = session_timeout
        self.connect_within = connect_within
        self.service: SchedulerService | None = None
        self.refused: str | None = None  # why this replica refuses to lead, if it does
        self.terms = 0
        self._client: KazooClient | None = None
        self._root = ""
        self._election: LeaderElection | None = None
        self._store: StateStore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._rejoining = False
        self._leader_cache: tuple[float, str | None] = (0.0, None)
        self._recheck: asyncio.Task[None] | None = None
        self.recheck_seconds = recheck_seconds

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (bounded retries: ``ZooKeeperUnavailable``) and join the election
        (``DuplicateIdentity`` if a live replica has our identity)."""
        client, address = await connect_async(
            self.zk_url, session_timeout=self.session_timeout,
            connect_within=self.connect_within)
        self._client, self._root = client, address.path
        election = LeaderElection(client, self._root, self.identity, self.api_address,
                                  loop=asyncio.get_running_loop(), on_event=self._on_event)
        self._election = election
        try:
            await election.join_async()
        except BaseException:
            await asyncio.to_thread(close, client)
            self._client = None
            raise
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="replica")

    async def stop(self) -> None:
        """Hand over: stop acting, resign (the next replica leads at once), close."""
        self._stopping = True
        svc = self.service
        if svc is not None:
            svc.halt("shutting down")
        if self._election is not None:
            await self._election.resign_async()
            log.info("resigned leadership t=%.3f", time.time())
        for task in (self._runner, self._recheck):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._end_term("shutting down")
        if self._election is not None:
            await asyncio.to_thread(self._election.close)
        if self._client is not None:
            await asyncio.to_thread(close, self._client)
            self._client = None

    # --- leadership events -------------------------------------------------------------

    def _on_event(self, event: Elected | Deposed) -> None:
        """Runs on the event loop as the event is delivered: stop acting before anything
        else gets a chance to run."""
        if isinstance(event, Deposed):
            if self._store is not None:
                self._store.drop_fence()
            if self.service is not None:
                self.service.halt(f"deposed: {event.reason}")

    async def _run(self) -> None:
        assert self._election is not None
        events = self._election.events
        while not self._stopping:
            event = await events.get()  # type: ignore[misc]
            if isinstance(event, Elected):
                await self._begin_term(event.fence)
            else:
                log.warning("deposed: %s t=%.3f", event.reason, time.time())
                await self._end_term(f"deposed: {event.reason}")

    async def _begin_term(self, fence: Fence) -> None:
        assert self._client is not None and self._election is not None
        await self._end_term("a new term starts")
        if self._election.fence != fence:
            return  # a stale event: deposed again before we got to it
        log.info("elected leader as %s, epoch %d t=%.3f", self.identity, fence.epoch,
                 time.time())
        store = StateStore(self._client, self._root)
        store.adopt(fence)
        self._store = store
        started = time.monotonic()
        try:
            state = await store.load_async()
            core = self.config.make_core(term=fence.epoch)
            tasks = restore(core, None, intents_from(state), now=time.time())
        except (StateCorrupt, RestoreError) as exc:
            self.refused = str(exc)
            log.error("corral: refusing to lead: stored state is corrupt: %s. Fix or remove "
                      "that znode (see docs/operations.md); this replica stays a follower "
                      "and contends again once the state loads.", exc)
            store.drop_fence()
            await self._election.resign_async()
            self._recheck = asyncio.get_running_loop().create_task(
                self._contend_when_fixed(), name="replica-recheck")
            return
        except Exception as exc:
            log.error("cannot load the stored state: %s; stepping down", exc)
            store.drop_fence()
            self._rejoin(f"load failed: {exc}")
            return
        if self._election.fence != fence or self._stopping:
            return  # deposed while loading
        fid = state.framework_id
        log.info("restored %d jobs and %d tasks (framework %s) in %.3f s",
                 len(core.job_keys()), tasks, fid or "(new)", time.monotonic() - started)

        async def persist(batch: Batch) -> None:
            if batch:
                await store.write_async(batch)

        async def verify() -> bool:
            return await asyncio.wait_for(asyncio.to_thread(self._holds, fence), timeout=2.0)

        service = SchedulerService(
            self.config, framework_id=fid, core=core, persist=persist,
            verify=verify, on_fatal=self._rejoin,
        )
        self.service = service
        self.terms += 1
        await service.start()

    async def _contend_when_fixed(self) -> None:
        """While this replica refuses to lead over corrupt state: read the state again
        every ``_RECHECK_SECONDS``; once it loads and restores, contend again."""
        while self.refused and not self._stopping and self._client is not None:
            await asyncio.sleep(self.recheck_seconds)
            try:
                state = await StateStore(self._client, self._root).load_async()
                restore(self.config.make_core(), None, intents_from(state), now=time.time())
            except (StateCorrupt, RestoreError) as exc:
                self.refused = str(exc)
                continue
            except Exception as exc:   # ZooKeeper away: try again later
                log.info("cannot re-read the stored state yet: %s", exc)
                continue
            log.warning("the stored state loads again; contending for leadership")
            self.refused = None
            if self._election is not None and not self._stopping:
                await self._election.join_async()

    def _holds(self, fence: Fence) -> bool:
        """Blocking: whether ZooKeeper still says we lead under ``fence``."""
        assert self._client is not None
        _, stat = self._client.get(epoch_path(self._root))
        return stat.version == fence.version and self._client.exists(fence.lease) is not None

    async def _end_term(self, reason: str) -> None:
        svc, self.service = self.service, None
        if svc is None:
            return
        svc.halt(reason)
        await svc.stop()

    def _rejoin(self, reason: str) -> None:
        """A fatal error in the term: give leadership up and contend again shortly."""
        if self._stopping or self._rejoining:
            return
        self._rejoining = True
        log.error("stepping down: %s", reason)

        async def again() -> None:
            try:
                assert self._election is not None
                await self._election.resign_async()
                await asyncio.sleep(_REJOIN_DELAY)
                if not self._stopping:
                    await self._election.join_async()
            except Exception as exc:
                log.error("could not rejoin the election: %s", exc)
            finally:
                self._rejoining = False

        asyncio.get_running_loop().create_task(again(), name="replica-rejoin")

    # --- JobBackend --------------------------------------------------------------------

    def zookeeper_reachable(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def leader_address(self) -> str | None:
        """The API address of the replica that leads (None: unknown, or it is us while
        we are still taking over). Never waits long: without a ZooKeeper connection it
        answers what it last knew at once, and a lookup is given ``_LOOKUP_SECONDS``."""
        at, cached = self._leader_cache
        if time.monotonic() - at < 0.5 or not self.zookeeper_reachable():
            return cached
        address: str | None = None
        if self._election is not None:
            try:
                info = await asyncio.wait_for(self._election.leader_async(),
                                              _LOOKUP_SECONDS)
            except Exception:
                return cached
            if info is not None and info.identity != self.identity:
                address = info.api_address or None
        self._leader_cache = (time.monotonic(), address)
        return address

    async def _leader(self) -> SchedulerService:
        svc = self.service
        reachable = self.zookeeper_reachable()
        if svc is not None and svc.acting and reachable:
            return svc
        why = ""
        if not reachable:
            # Even a leader: it cannot make anything durable, and is about to step down.
            why = "this replica cannot reach ZooKeeper"
        elif self.refused:
            why = f"this replica refuses to lead: {self.refused}"
        raise NotLeader(await self.leader_address(), why)

    async def submit(self, spec: JobSpec, request_id: str) -> JobView:
        return await (await self._leader()).submit(spec, request_id)

    async def get(self, key: str) -> JobView:
        return await (await self._leader()).get(key)

    async def list(self, role: str | None = None) -> list[JobView]:
        return await (await self._leader()).list(role)

    async def keys(self, role: str | None = None) -> Sequence[str]:
        return await (await self._leader()).keys(role)

    async def kill(self, key: str) -> JobView:
        return await (await self._leader()).kill(key)

    async def scale(self, key: str, workers: int) -> JobView:
        return await (await self._leader()).scale(key, workers)

    async def watch(self, key: str) -> AsyncIterator[JobView]:
        svc = await self._leader()
        async for view in svc.watch(key):
            yield view

    async def ready(self) -> bool:
        """Serving: leading and subscribed to Mesos, or following a known leader."""
        svc = self.service
        if svc is not None:
            return svc.ready()
        return self.refused is None and await self.leader_address() is not None

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity, "leading": self.service is not None,
                "terms": self.terms, "refused": self.refused}
