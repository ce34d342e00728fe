"""Several localmesos masters: election through ZooKeeper, redirects, crash and restart.

Each ``MasterProcess`` is one master as Mesos runs it: its own port and HTTP site, its
own ``Master`` state (one per incarnation) and, with ``--zk``, its own ``Contender``
holding a ``json.info_`` node. The lowest node leads. A newly elected master recovers the
registry (``reregister.recover``) and only then serves; until it has, its scheduler and
operator endpoints answer 503 "Master has not finished recovery". A master that does not
lead answers them with 307 and ``Location: //host:port<path>`` of the leader named in
ZooKeeper, or 503 "No leader elected" when there is none (src/master/http.cpp
``Master::Http::scheduler``, ``Master::Http::redirect``). ``/health``, ``/version`` and
the localmesos control endpoints (``/localmesos/...``) are answered by every master.

``fail()`` crashes the leading master the way a process crash does: its state is
dropped, every connection to it is cut, and its contender is SIGKILLed, so its node stays
in ZooKeeper until the session times out and the next master is elected. It comes back
(a new incarnation with a new id, same port) ``restart_after`` seconds after its node is
gone. Without ZooKeeper there is one master; it leads whenever it runs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from corral.localmesos.master import Master, MasterOptions
from corral.localmesos.registry import Registry
from corral.localmesos.reregister import recover
from corral.localmesos.zk import Contender, LeaderWatch

log = logging.getLogger("localmesos.masters")

ALWAYS_SERVED = frozenset({"/health", "/version"})
CONTROL_PREFIX = "/localmesos/"
STEP_DOWN_RESTART = 1.0   # a master that lost its ZooKeeper session restarts after this


class NoLeader(RuntimeError):
    """No master leads right now (a failover is under way)."""


@dataclass
class MasterProcess:
    index: int
    port: int                                 # 0 until first bound, then kept
    master: Master | None = None              # this incarnation's state
    runner: web.AppRunner | None = None
    contender: Contender | None = None
    node: str | None = None                   # its json.info_ node
    node_seen: bool = False                   # the group has shown it at least once
    alive: bool = False
    elected: bool = False                     # leads per ZooKeeper (may be recovering)
    leading: bool = False                     # elected and recovered: serves
    incarnations: int = 0
    crashed_node: str | None = None           # awaiting session expiry before restart
    restart_after: float | None = None
    scheme: str = "http"                      # https with --tls-cert
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


AppFactory = Callable[[MasterProcess], web.Application]
LeaderListener = Callable[[Master | None], None]


class Masters:
    """The set of masters of one localmesos (see module docstring)."""

    def __init__(self, count: int, base_port: int, options: MasterOptions, registry: Registry,
                 build_app: AppFactory, on_leader: LeaderListener, *, zk: str | None,
                 zk_session_timeout: float, agent_reregister_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        scheme = "https" if ssl_context is not None else "http"
        self.procs = [MasterProcess(i, base_port + i if base_port else 0, scheme=scheme)
                      for i in range(count)]
        self.ssl_context = ssl_context
        self.options = options
        self.registry = registry
        self.zk = zk
        self.zk_session_timeout = zk_session_timeout
        self.agent_reregister_timeout = agent_reregister_timeout
        self.leader_info: dict[str, Any] | None = None   # MasterInfo of the ZooKeeper leader
        self.last_master: Master | None = None           # the latest leader's state
        self.failovers = 0
        self._build_app = build_app
        self._on_leader = on_leader
        self._watch: LeaderWatch | None = None
        self._children: frozenset[str] = frozenset()
        self._leader_node: str | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._elected = asyncio.Event()
        self._pending: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ queries

    def leading(self) -> MasterProcess | None:
        return next((p for p in self.procs if p.leading), None)

    def current(self) -> Master:
        """The leading master's state, else the latest leader's, else the first's."""
        lead = self.leading()
        if lead is not None and lead.master is not None:
            return lead.master
        if self.last_master is not None:
            return self.last_master
        master = self.procs[0].master
        assert master is not None, "no master has started yet"
        return master

    def rows(self) -> list[dict[str, Any]]:
        return [{"index": p.index, "url": p.url, "port": p.port, "alive": p.alive,
                 "leading": p.leading, "elected": p.elected, "node": p.node,
                 "id": p.master.id if p.master is not None and p.alive else None,
                 "incarnations": p.incarnations} for p in self.procs]

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float = 60.0) -> None:
        """Start every master and wait (bounded) until one leads."""
        if self.zk is not None:
            self._watch = LeaderWatch(self.zk, self._group_changed)
            await self._watch.start_async()
        for proc in self.procs:
            await self._open(proc)
        if self.zk is None:
            await self._elect(self.procs[0])
        else:   # contenders start in parallel (each is a Python process)
            await asyncio.gather(*(self._contend(p) for p in self.procs))
            await self._evaluate()
        try:
            async with asyncio.timeout(timeout):
                await self._elected.wait()
        except TimeoutError:
            raise RuntimeError(f"no master was elected within {timeout:g}s") from None

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._pending):
            task.cancel()
        for proc in self.procs:
            tasks = list(proc._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._halt(proc, clean=True)
        if self._watch is not None:
            await asyncio.to_thread(self._watch.close)
            self._watch = None

    async def _start(self, proc: MasterProcess) -> None:
        """(Re)start one master: serve, then contend (or, alone, lead)."""
        await self._open(proc)
        if self.zk is None:
            await self._elect(proc)
            return
        await self._contend(proc)
        await self._evaluate()

    async def _open(self, proc: MasterProcess) -> None:
        master = Master(self.options)
        master.registry = self.registry
        proc.master = master
        proc.incarnations += 1
        app = self._build_app(proc)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", proc.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        proc.port = master.port = int(runner.addresses[0][1])  # the one site's socket
        proc.runner = runner
        proc.alive = True
        proc.crashed_node = None
        log.info("master %s (#%d) started at %s", master.id, proc.index, proc.url)

    async def _contend(self, proc: MasterProcess) -> None:
        assert self.zk is not None and proc.master is not None
        contender = Contender(self.zk, self.zk_session_timeout)
        proc.contender = contender
        proc.node_seen = False
        proc.node = await contender.start(proc.master.master_info())
        proc.spawn(self._watch_contender(proc, contender))

    async def _recontend(self, proc: MasterProcess, old: Contender | None) -> None:
        if old is not None:
            await old.close()
        if proc.alive and proc.contender is None and not self._stopping:
            log.info("master #%d lost its candidacy; contending again", proc.index)
            await self._contend(proc)
            await self._evaluate()

    async def _watch_contender(self, proc: MasterProcess, contender: Contender) -> None:
        code = await contender.wait()
        if proc.contender is contender and proc.alive and not self._stopping:
            log.error("master %s lost its ZooKeeper candidacy (contender exit %s); "
                      "stepping down", proc.master.id if proc.master else "?", code)
            await self.crash(proc, STEP_DOWN_RESTART, kill_contender=False)

    # ------------------------------------------------------------------ election

    def _group_changed(self, children: frozenset[str], leader: str | None,
                       info: dict[str, Any] | None) -> None:
        self._children, self._leader_node = children, leader
        self.leader_info = info
        if not self._stopping:
            task = asyncio.ensure_future(self._evaluate())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _evaluate(self) -> None:
        async with self._lock:
            if self._stopping:
                return
            winner = next((p for p in self.procs
                           if p.alive and p.node is not None and p.node == self._leader_node),
                          None)
            for proc in self.procs:
                if not proc.alive or proc.node is None:
                    continue
                if proc.node in self._children:
                    proc.node_seen = True
                elif proc.node_seen and not proc.elected:
                    # Its node vanished: "Lost candidacy as a follower... Contend again".
                    old, proc.contender, proc.node = proc.contender, None, None
                    proc.spawn(self._recontend(proc, old))
            for proc in self.procs:
                if proc.elected and proc is not winner and proc.alive:
                    # Mesos: "Conceded leadership to another master... committing suicide!"
                    log.error("master %s is no longer the leader; stepping down",
                              proc.master.id if proc.master else "?")
                    proc.spawn(self.crash(proc, STEP_DOWN_RESTART))
            if winner is not None and not winner.elected:
                await self._elect(winner)
            for proc in self.procs:
                if (not proc.alive and proc.crashed_node is not None
                        and proc.crashed_node not in self._children):
                    proc.crashed_node = None
                    self._schedule_restart(proc)

    async def _elect(self, proc: MasterProcess) -> None:
        master = proc.master
        assert master is not None
        proc.elected = True
        if self.zk is None:
            self.leader_info = master.master_info()
        log.info("master %s elected as the leading master", master.id)
        try:
            state = self.registry.recover()
        except (OSError, ValueError) as e:
            log.error("master %s cannot recover the registry: %s", master.id, e)
            proc.spawn(self.crash(proc, STEP_DOWN_RESTART))
            return
        self.registry.state = state
        recover(master, state, self.agent_reregister_timeout)
        master.start_loops()
        proc.leading = True
        self.last_master = master
        self._elected.set()
        self._on_leader(master)

    # ------------------------------------------------------------------ faults

    async def fail(self, restart_after: float | None) -> MasterProcess:
        """Crash the leading master (LookupError if none leads)."""
        proc = self.leading() or next((p for p in self.procs if p.elected and p.alive), None)
        if proc is None:
            raise LookupError("no master is leading")
        self.failovers += 1
        await self.crash(proc, restart_after)
        return proc

    async def crash(self, proc: MasterProcess, restart_after: float | None,
                    kill_contender: bool = True) -> None:
        if not proc.alive:
            return
        was_elected = proc.elected
        proc.alive = proc.elected = proc.leading = False
        log.warning("master %s (#%d) crashes", proc.master.id if proc.master else "?",
                    proc.index)
        if was_elected:
            if self.zk is None:
                self.leader_info = None
            self._on_leader(None)       # agents lose their master at once
        contender, proc.contender = proc.contender, None
        if kill_contender and contender is not None:
            await contender.crash()
        proc.crashed_node = proc.node if self.zk is not None else None
        proc.restart_after = restart_after
        await self._halt(proc, clean=False)
        if self.zk is None:
            self._schedule_restart(proc)
        else:
            await self._evaluate()

    async def _halt(self, proc: MasterProcess, clean: bool) -> None:
        proc.alive = proc.elected = proc.leading = False
        if proc.master is not None:
            await proc.master.stop_loops()    # timers stop, every event stream is cut
        if proc.runner is not None:
            runner, proc.runner = proc.runner, None
            await runner.cleanup()
        if clean and proc.contender is not None:
            await proc.contender.close()
        proc.contender = None
        proc.node = None

    def _schedule_restart(self, proc: MasterProcess) -> None:
        delay = proc.restart_after
        if delay is None or self._stopping:
            return

        async def later() -> None:
            await asyncio.sleep(max(0.0, delay))
            if proc.alive or self._stopping:
                return
            try:
                await self._start(proc)
            except (OSError, RuntimeError) as e:
                log.error("master #%d could not restart: %s", proc.index, e)
        proc.spawn(later())


def leadership_middleware(masters: Masters, proc: MasterProcess) -> Any:
    """307/503 for the Mesos endpoints of a master that does not lead (see module doc)."""

    @web.middleware
    async def leadership(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path in ALWAYS_SERVED or path.startswith(CONTROL_PREFIX):
            return await handler(request)
        if not proc.elected:
            info = masters.leader_info
            if info is None or not info.get("port"):
                return web.Response(status=503, text="No leader elected")
            host = info.get("hostname") or (info.get("address") or {}).get("ip")
            return web.Response(status=307, headers={
                "Location": f"//{host}:{info['port']}{request.path_qs}"})
        if not proc.leading:
            return web.Response(status=503, text="Master has not finished recovery")
        return await handler(request)

    return leadership

