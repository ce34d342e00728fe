"""``LocalMesos``: one master plus N agents in this process, and the faults to inject.

Owns the configuration (``LocalMesosConfig``, mirroring the CLI flags), the work
directory, the master's HTTP site, agent creation (resources, attributes, each agent's
slice of the port range), ZooKeeper registration and an orderly stop that kills every
process any agent started.

Ports: all agents share 127.0.0.1, so two tasks on different agents must never be offered
the same port. The ``ports`` range is therefore split into disjoint equal slices, one per
initial agent; agents added later get the next slice of the same size above the range.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.core.resources import Resources
from corral.localmesos import httputil, operator_http, scheduler_http
from corral.localmesos.agent import Agent, AgentOptions
from corral.localmesos.master import AgentRecord, Master, MasterOptions
from corral.localmesos.protocol import Pool, parse_attributes, parse_port_range
from corral.localmesos.sandbox import SandboxLimits
from corral.localmesos.zk import ZkRegistration

log = logging.getLogger("localmesos")


@dataclass
class LocalMesosConfig:
    """Everything ``python -m corral.localmesos run`` takes (same names as the flags)."""

    port: int = 5050
    agents: int = 1
    cpus: float = 4.0
    mem: float = 8192.0
    disk: float = 20000.0
    gpus: float = 0.0
    ports: str = "31000-32000"
    attributes: str = ""
    spot: int = 0
    zk: str | None = None
    heartbeat_interval: float = 15.0
    agent_health_timeout: float = 75.0
    allocation_interval: float = 1.0
    work_dir: str | None = None
    quiet: bool = False
    offer_timeout: float | None = None
    status_update_retry: float = 10.0
    executor_registration_timeout: float = 60.0
    seed: int = 0
    log_max_mb: float = 10.0           # per stdout/stderr file of a container (sandbox.py)
    log_keep: int = 2                  # rotated copies kept
    disk_watch_interval: float = 1.0   # seconds between sandbox size checks

    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(log_max_bytes=int(self.log_max_mb * 1024 * 1024),
                             log_keep=self.log_keep,
                             disk_watch_seconds=self.disk_watch_interval)

    def validate(self) -> None:
        """Raise ValueError with a readable message for a bad configuration."""
        if self.agents < 0 or self.spot < 0 or self.spot > self.agents:
            raise ValueError("--agents must be >= 0 and 0 <= --spot <= --agents")
        for name in ("cpus", "mem", "disk", "gpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0")
        for name in ("heartbeat_interval", "agent_health_timeout", "allocation_interval",
                     "status_update_retry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if not 0 <= self.port <= 65535:
            raise ValueError("--port must be within 0..65535")
        ports = parse_port_range(self.ports)
        if self.agents and len(ports) < self.agents:
            raise ValueError(f"--ports {self.ports} has fewer ports than agents")
        parse_attributes(self.attributes)
        self.sandbox_limits().validate()


class AgentNotFound(LookupError):
    pass


class LocalMesos:
    def __init__(self, config: LocalMesosConfig | None = None) -> None:
        self.config = config or LocalMesosConfig()
        self.config.validate()
        self.master = Master(MasterOptions(
            heartbeat_interval=self.config.heartbeat_interval,
            allocation_interval=self.config.allocation_interval,
            agent_health_timeout=self.config.agent_health_timeout,
            offer_timeout=self.config.offer_timeout, seed=self.config.seed))
        self.work_dir: Path | None = None
        self._own_work_dir = False
        self._runner: web.AppRunner | None = None
        self._agent_objs: dict[str, Agent] = {}
        self._kill_tasks: set[asyncio.Task[Any]] = set()
        self._zk: ZkRegistration | None = None
        self._next_index = 0
        all_ports = sorted(parse_port_range(self.config.ports))
        n = max(self.config.agents, 1)
        self._slice = max(1, len(all_ports) // n)
        self._port_slices = [frozenset(all_ports[i * self._slice:(i + 1) * self._slice])
                             for i in range(self.config.agents)]
        self._next_port = max(all_ports) + 1
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.master.port}"

    async def start(self) -> None:
        cfg = self.config
        if cfg.work_dir:
            self.work_dir = Path(cfg.work_dir)
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="localmesos-"))
            self._own_work_dir = True
        app = web.Application(client_max_size=httputil.MAX_BODY)
        app.router.add_route("*", "/api/v1/scheduler", scheduler_http.make_handler(self.master))
        operator_http.add_routes(app, self)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", cfg.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.master.port = server.sockets[0].getsockname()[1]
        self.started = True
        attrs = parse_attributes(cfg.attributes)
        for i in range(cfg.agents):
            spot = i >= cfg.agents - cfg.spot
            await self._start_agent(cfg.cpus, cfg.mem, cfg.disk, cfg.gpus,
                                    self._port_slices[i], attrs, spot)
        self.master.start_loops()
        if cfg.zk:
            self._zk = ZkRegistration(cfg.zk, self.master.master_info())
            await asyncio.to_thread(self._zk.register)
        log.info("master %s at %s with %d agents", self.master.id, self.master_url, cfg.agents)

    async def stop(self) -> None:
        """Stop everything: every process any agent started is killed."""
        if not self.started:
            return
        self.started = False
        for task in self._kill_tasks:
            task.cancel()
        await asyncio.gather(*(a.stop() for a in self._agent_objs.values()),
                             return_exceptions=True)
        await self.master.stop_loops()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._zk is not None:
            await asyncio.to_thread(self._zk.close)
            self._zk = None
        if self._own_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def kill_all_now(self) -> None:
        """Last resort (signal handlers, atexit): SIGKILL every process group at once."""
        for agent in self._agent_objs.values():
            agent.kill_all_now()

    async def __aenter__(self) -> LocalMesos:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ agents

    async def _start_agent(self, cpus: float, mem: float, disk: float, gpus: float,
                           ports: frozenset[int], attrs: list[tuple[str, str]],
                           spot: bool) -> Agent:
        assert self.work_dir is not None
        index = self._next_index
        self._next_index += 1
        attributes = [(k, v) for k, v in attrs if k not in ("market", "spot", "host")]
        attributes.append(("host", f"agent-{index}"))
        if spot:
            attributes += [("market", "spot"), ("spot", "true")]
        else:
            attributes.append(("market", "on-demand"))
        cfg = self.config
        agent = Agent(self.master, self.master.new_agent_id(), index, self.work_dir,
                      Pool(Resources(cpus, mem, disk, gpus), ports=ports), attributes,
                      AgentOptions(status_update_retry=cfg.status_update_retry,
                                   executor_registration_timeout=cfg.executor_registration_timeout,
                                   heartbeat_interval=cfg.heartbeat_interval,
                                   sandbox=cfg.sandbox_limits()))
        await agent.start()
        self._agent_objs[agent.id] = agent
        self.master.add_agent(agent)
        return agent

    @property
    def agent_ids(self) -> list[str]:
        return list(self._agent_objs)

    def agent_info(self) -> list[dict[str, Any]]:
        """One row per agent: id, host name, port, state and resources."""
        rows = []
        for rec in self.master.agents.values():
            a = rec.agent
            rows.append({
                "id": rec.id, "hostname": a.hostname, "name": f"agent-{a.index}",
                "port": a.port, "alive": a.alive, "state": rec.state,
                "draining": rec.draining, "resources": rec.total.flat(),
                "used": rec.used.flat(), "revocable": rec.revocable_total.as_dict(),
                "attributes": dict(a.attributes),
                "unavailability": list(rec.unavailability) if rec.unavailability else None,
                "processes": sorted(a.pids),
            })
        return rows

    def resolve(self, name: str) -> AgentRecord:
        """An agent by id, ``agent-<n>`` name, or index."""
        for rec in self.master.agents.values():
            if name == rec.id or name in rec.machine_names() or name == str(rec.agent.index):
                return rec
        raise AgentNotFound(f"no agent named {name!r}")

    async def add_agent(self, cpus: float | None = None, mem: float | None = None,
                        disk: float | None = None, gpus: float | None = None,
                        ports: str | None = None, attributes: str | None = None,
                        spot: bool = False) -> str:
        cfg = self.config
        if ports:
            port_set = parse_port_range(ports)
        else:
            port_set = frozenset(range(self._next_port, self._next_port + self._slice))
            self._next_port += self._slice
        attrs = parse_attributes(attributes if attributes is not None else cfg.attributes)
        agent = await self._start_agent(
            cfg.cpus if cpus is None else cpus, cfg.mem if mem is None else mem,
            cfg.disk if disk is None else disk, cfg.gpus if gpus is None else gpus,
            port_set, attrs, spot)
        return agent.id

    async def terminate_agent(self, agent: str, notice: float | None = None) -> str:
        """Kill an agent like a spot reclaim, at once or after a maintenance notice."""
        rec = self.resolve(agent)
        if notice is None or notice <= 0:
            await rec.agent.terminate()
            return rec.id
        self.master.notice(rec, notice)

        async def later() -> None:
            await asyncio.sleep(notice)
            await rec.agent.terminate()
        task = asyncio.ensure_future(later())
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)
        return rec.id

    async def set_revocable(self, agent: str, cpus: float = 0.0, mem: float = 0.0,
                            disk: float = 0.0, gpus: float = 0.0) -> None:
        rec = self.resolve(agent)
        self.master.set_revocable(rec, Resources(cpus, mem, disk, gpus))

    async def qos_kill(self, agent: str, executor_id: str | None = None
                       ) -> list[tuple[str, str]]:
        rec = self.resolve(agent)
        return rec.agent.qos_kill(executor_id)

    async def drain(self, agent: str, grace: float | None = None) -> None:
        self.master.drain(self.resolve(agent), grace)

    async def mark_gone(self, agent: str) -> None:
        rec = self.resolve(agent)
        await rec.agent.terminate()
        self.master.mark_unreachable(rec, "marked gone by the operator", gone=True)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Poll ``predicate()`` until true or ``timeout`` (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return bool(predicate())


@contextlib.asynccontextmanager
async def running(config: LocalMesosConfig) -> AsyncIterator[LocalMesos]:
    lm = LocalMesos(config)
    await lm.start()
    try:
        yield lm
    finally:
        await lm.stop()
