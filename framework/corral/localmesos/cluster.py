"""``LocalMesos``: one or more masters plus N agents in this process, and the faults to
inject.

Owns the configuration (``LocalMesosConfig``, mirroring the CLI flags), the work
directory and the registry file, the masters (``masters.Masters``: HTTP sites, ZooKeeper
election, crash and restart), agent creation (resources, attributes, each agent's slice
of the port range, its ``partition.AgentLink`` to the leading master), the faults, and an
orderly stop that kills every process any agent started. Also the security set-up every
part shares: the credentials (``--credentials``) for framework and operator
authentication, the key agents sign executor tokens with (executor authentication is on
unless ``--no-authenticate-http-executors``), and TLS (``--tls-cert``/``--tls-key``: the
masters and every agent serve https, and executors are told so through
``LIBPROCESS_SSL_*``); and the sandbox limits (``localmesos.sandbox``).

Ports: all agents share 127.0.0.1, so two tasks on different agents must never be offered
the same port. The ``ports`` range is therefore split into disjoint equal slices, one per
initial agent; agents added later get the next slice of the same size above the range.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.core.resources import Resources
from corral.localmesos import auth, fetcher, httputil, operator_http, scheduler_http
from corral.localmesos.agent import Agent, AgentOptions
from corral.localmesos.containers import ContainerOptions
from corral.localmesos.master import AgentRecord, Master, MasterOptions
from corral.localmesos.masters import (
    MasterProcess,
    Masters,
    NoLeader,
    leadership_middleware,
)
from corral.localmesos.partition import AgentLink
from corral.localmesos.protocol import Pool, parse_attributes, parse_port_range
from corral.localmesos.registry import Registry
from corral.localmesos.sandbox import SandboxLimits

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
    # A laptop tool: a terminated agent is lost in 5 s (Mesos' master: 75 s, see the CLI).
    agent_health_timeout: float = 5.0
    allocation_interval: float = 1.0
    work_dir: str | None = None
    quiet: bool = False
    offer_timeout: float | None = None
    status_update_retry: float = 10.0
    executor_registration_timeout: float = 60.0
    seed: int = 0
    masters: int = 1
    zk_session_timeout: float = 10.0
    registration_backoff: float = 1.0
    agent_reregister_timeout: float = 600.0
    # Security and containers (see docs/localmesos.md):
    credentials: str | None = None          # Mesos credentials file (JSON or text)
    authenticate_http_frameworks: bool = False
    authenticate_http_readwrite: bool = False
    authenticate_http_executors: bool = True
    tls_cert: str | None = None             # PEM certificate (chain) the master/agents serve
    tls_key: str | None = None
    tls_ca_file: str | None = None          # CAs executors check agents against
    switch_user: bool = True                # as root: run containers as the framework's user
    images_on_host: bool = False            # run containers that ask for an image on the host
    fetcher_cache_size: int = fetcher.DEFAULT_CACHE_BYTES
    fetcher_stall_timeout: float = fetcher.DEFAULT_STALL_TIMEOUT
    executor_environment_variables: str | None = None  # JSON object of strings
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
                     "status_update_retry", "zk_session_timeout", "agent_reregister_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if self.registration_backoff < 0:
            raise ValueError("--registration-backoff must be >= 0")
        if not 1 <= self.masters <= MAX_MASTERS:
            raise ValueError(f"--masters must be within 1..{MAX_MASTERS}")
        if self.masters > 1 and not self.zk:
            raise ValueError("--masters above 1 needs --zk (masters elect a leader there)")
        if self.masters > 1 and self.port and self.port + self.masters - 1 > 65535:
            raise ValueError("--port leaves no room for the other masters' ports")
        if not 0 <= self.port <= 65535:
            raise ValueError("--port must be within 0..65535")
        ports = parse_port_range(self.ports)
        if self.agents and len(ports) < self.agents:
            raise ValueError(f"--ports {self.ports} has fewer ports than agents")
        parse_attributes(self.attributes)
        if (self.authenticate_http_frameworks or self.authenticate_http_readwrite) \
                and not self.credentials:
            raise ValueError("--authenticate-http-frameworks/-readwrite need --credentials")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.fetcher_cache_size < 0 or self.fetcher_stall_timeout <= 0:
            raise ValueError("--fetcher-cache-size must be >= 0, --fetcher-stall-timeout > 0")
        self.executor_environment()
        self.sandbox_limits().validate()

    def executor_environment(self) -> dict[str, str] | None:
        """``--executor-environment-variables`` parsed (Mesos: a JSON object of strings)."""
        if self.executor_environment_variables is None:
            return None
        try:
            env = json.loads(self.executor_environment_variables)
        except ValueError as exc:
            raise ValueError(f"--executor-environment-variables is not JSON: {exc}") from None
        if not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("--executor-environment-variables must be a JSON object of "
                             "string values")
        return env

    def load_credentials(self) -> dict[str, str]:
        """principal → secret (empty without --credentials); ValueError if unusable."""
        return auth.load_credentials(self.credentials) if self.credentials else {}

    def server_ssl(self) -> ssl.SSLContext | None:
        """The TLS context the masters and agents serve with; ValueError if unusable."""
        if not self.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load --tls-cert/--tls-key: {exc}") from None
        return ctx


MAX_MASTERS = 9


class AgentNotFound(LookupError):
    pass


class LocalMesos:
    def __init__(self, config: LocalMesosConfig | None = None) -> None:
        self.config = config or LocalMesosConfig()
        self.config.validate()
        cfg = self.config
        self.ssl = cfg.server_ssl()
        self.options = MasterOptions(
            heartbeat_interval=cfg.heartbeat_interval,
            allocation_interval=cfg.allocation_interval,
            agent_health_timeout=cfg.agent_health_timeout,
            offer_timeout=cfg.offer_timeout, seed=cfg.seed,
            credentials=cfg.load_credentials(),
            authenticate_frameworks=cfg.authenticate_http_frameworks,
            authenticate_readwrite=cfg.authenticate_http_readwrite)
        executor_env: dict[str, str] = {}
        if self.ssl is not None:
            # What a TLS-enabled Mesos agent's executors inherit from its environment.
            executor_env = {"LIBPROCESS_SSL_ENABLED": "true",
                            "LIBPROCESS_SSL_CA_FILE": cfg.tls_ca_file or cfg.tls_cert or "",
                            "LIBPROCESS_SSL_VERIFY_SERVER_CERT": "true"}
        self.containers = ContainerOptions(
            switch_user=cfg.switch_user, images_on_host=cfg.images_on_host,
            executor_secret=os.urandom(32) if cfg.authenticate_http_executors else None,
            fetcher_cache_bytes=cfg.fetcher_cache_size,
            fetcher_stall_timeout=cfg.fetcher_stall_timeout, executor_env=executor_env,
            base_env=cfg.executor_environment())
        self.work_dir: Path | None = None
        self._own_work_dir = False
        self.registry: Registry | None = None
        self.masters: Masters | None = None
        self._agent_objs: dict[str, Agent] = {}
        self._links: dict[str, AgentLink] = {}
        self._kill_tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random(self.config.seed)
        self._next_index = 0
        self._next_agent_id = 0
        all_ports = sorted(parse_port_range(self.config.ports))
        n = max(self.config.agents, 1)
        self._slice = max(1, len(all_ports) // n)
        self._port_slices = [frozenset(all_ports[i * self._slice:(i + 1) * self._slice])
                             for i in range(self.config.agents)]
        self._next_port = max(all_ports) + 1
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def master(self) -> Master:
        """The leading master's state (during a failover: the latest leader's)."""
        if self.masters is None:
            raise RuntimeError("localmesos is not started")
        return self.masters.current()

    def leader(self) -> Master:
        """The leading master; NoLeader while none leads."""
        lead = self.masters.leading() if self.masters is not None else None
        if lead is None or lead.master is None:
            raise NoLeader("no master is leading (a failover is under way); retry shortly")
        return lead.master

    @property
    def master_url(self) -> str:
        assert self.masters is not None
        lead = self.masters.leading()
        return (lead or self.masters.procs[0]).url

    @property
    def master_urls(self) -> list[str]:
        assert self.masters is not None
        return [p.url for p in self.masters.procs]

    async def start(self) -> None:
        cfg = self.config
        if cfg.work_dir:
            self.work_dir = Path(cfg.work_dir)
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="localmesos-"))
            # Like /var/lib/mesos: traversable, so containers run as other users reach
            # their sandboxes (which are 0750 themselves).
            self.work_dir.chmod(0o755)
            self._own_work_dir = True
        self.registry = Registry(self.work_dir / "registry.json")
        self.registry.reset()
        self.masters = Masters(
            cfg.masters, cfg.port, self.options, self.registry, self._build_app,
            self._leader_changed, zk=cfg.zk, zk_session_timeout=cfg.zk_session_timeout,
            agent_reregister_timeout=cfg.agent_reregister_timeout, ssl_context=self.ssl)
        self.started = True
        await self.masters.start()
        attrs = parse_attributes(cfg.attributes)
        for i in range(cfg.agents):
            spot = i >= cfg.agents - cfg.spot
            await self._start_agent(cfg.cpus, cfg.mem, cfg.disk, cfg.gpus,
                                    self._port_slices[i], attrs, spot)
        log.info("master %s at %s with %d agents%s", self.master.id, self.master_url,
                 cfg.agents, f" ({cfg.masters} masters)" if cfg.masters > 1 else "")

    def _build_app(self, proc: MasterProcess) -> web.Application:
        assert self.masters is not None and proc.master is not None
        app = web.Application(client_max_size=httputil.MAX_BODY,
                              middlewares=[leadership_middleware(self.masters, proc)])
        app.router.add_route("*", "/api/v1/scheduler", scheduler_http.make_handler(proc.master))
        operator_http.add_routes(app, self, proc.master)
        return app

    def _leader_changed(self, master: Master | None) -> None:
        for link in self._links.values():
            link.follow(master)

    async def stop(self) -> None:
        """Stop everything: every process any agent started is killed."""
        if not self.started:
            return
        self.started = False
        for task in self._kill_tasks:
            task.cancel()
        for link in self._links.values():
            link.stop()
        await asyncio.gather(*(a.stop() for a in self._agent_objs.values()),
                             return_exceptions=True)
        if self.masters is not None:
            await self.masters.stop()
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
        link = AgentLink(cfg.registration_backoff, random.Random(self._rng.random()))
        agent = Agent(link, self._new_agent_id(), index, self.work_dir,
                      Pool(Resources(cpus, mem, disk, gpus), ports=ports), attributes,
                      AgentOptions(status_update_retry=cfg.status_update_retry,
                                   executor_registration_timeout=cfg.executor_registration_timeout,
                                   heartbeat_interval=cfg.heartbeat_interval,
                                   containers=self.containers, ssl_context=self.ssl,
                                   sandbox=cfg.sandbox_limits()))
        link.agent = agent
        await agent.start()
        self._agent_objs[agent.id] = agent
        self._links[agent.id] = link
        lead = self.masters.leading() if self.masters is not None else None
        link.join(lead.master if lead is not None else None)
        return agent

    def _new_agent_id(self) -> str:
        """``<admitting master's id>-S<n>``, as Mesos numbers agents."""
        return self.leader().new_agent_id()

    @property
    def agent_ids(self) -> list[str]:
        return list(self._agent_objs)

    def agent_info(self) -> list[dict[str, Any]]:
        """One row per agent: id, name, port, the leading master's view of it (state,
        resources in use), and the localmesos facts (alive, partition, processes)."""
        lead = self.masters.leading() if self.masters is not None else None
        master = lead.master if lead is not None else None
        rows = []
        for aid, a in self._agent_objs.items():
            link = self._links[aid]
            rec = master.agents.get(aid) if master is not None else None
            state = (master.agent_state(aid) if master is not None else None) or "unknown"
            rows.append({
                "id": aid, "hostname": a.hostname, "name": f"agent-{a.index}",
                "port": a.port, "alive": a.alive, "state": state,
                "partitioned_until": link.heals_at,
                "draining": rec.draining if rec is not None else False,
                "resources": a.resources.flat(),
                "used": rec.used.flat() if rec is not None else {},
                "revocable": link.revocable.as_dict(),
                "attributes": dict(a.attributes),
                "unavailability": list(rec.unavailability)
                if rec is not None and rec.unavailability else None,
                "processes": sorted(a.pids),
            })
        return rows

    def _find(self, name: str) -> Agent:
        for a in self._agent_objs.values():
            if name in (a.id, f"agent-{a.index}", str(a.index)) or \
                    ("host", name) in a.attributes:
                return a
        raise AgentNotFound(f"no agent named {name!r}")

    def resolve(self, name: str) -> AgentRecord:
        """The leading master's record of an agent by id, ``agent-<n>`` name, or index."""
        agent = self._find(name)
        rec = self.leader().agents.get(agent.id)
        if rec is None:
            raise AgentNotFound(f"agent {name!r} is not registered with the leading master")
        return rec

    async def add_agent(self, cpus: float | None = None, mem: float | None = None,
                        disk: float | None = None, gpus: float | None = None,
                        ports: str | None = None, attributes: str | None = None,
                        spot: bool = False) -> str:
        cfg = self.config
        self.leader()       # agents are admitted by the leading master
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
        if notice is None or notice <= 0:
            a = self._find(agent)
            await a.terminate()
            return a.id
        rec = self.resolve(agent)
        self.master.notice(rec, notice)

        async def later() -> None:
            await asyncio.sleep(notice)
            await rec.agent.terminate()
        task = asyncio.ensure_future(later())
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)
        return rec.id

    async def partition(self, agent: str, seconds: float) -> tuple[str, float]:
        """Cut the agent off from the masters for ``seconds`` (its tasks keep running);
        returns its id and when the partition heals (epoch seconds)."""
        a = self._find(agent)
        return a.id, self._links[a.id].partition(seconds)

    def in_background(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task that outlives the request that started it."""
        task = asyncio.ensure_future(coro)
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)
        return task

    async def fail_master(self, restart_after: float | None = 1.0) -> dict[str, Any]:
        """Crash the leading master (``masters.Masters.fail``); LookupError if none leads."""
        assert self.masters is not None
        lead = self.masters.leading()
        failed_id = lead.master.id if lead is not None and lead.master is not None else None
        proc = await self.masters.fail(restart_after)
        return {"master_id": failed_id, "url": proc.url, "restart_after": restart_after}

    async def set_revocable(self, agent: str, cpus: float = 0.0, mem: float = 0.0,
                            disk: float = 0.0, gpus: float = 0.0) -> None:
        rec = self.resolve(agent)
        estimate = Resources(cpus, mem, disk, gpus)
        self._links[rec.id].revocable = estimate
        self.leader().set_revocable(rec, estimate)

    async def qos_kill(self, agent: str, executor_id: str | None = None
                       ) -> list[tuple[str, str]]:
        return self._find(agent).qos_kill(executor_id)

    async def drain(self, agent: str, grace: float | None = None) -> None:
        self.leader().drain(self.resolve(agent), grace)

    async def mark_gone(self, agent: str) -> None:
        rec = self.resolve(agent)
        await rec.agent.terminate()
        self.leader().mark_unreachable(rec, "marked gone by the operator", gone=True)

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
