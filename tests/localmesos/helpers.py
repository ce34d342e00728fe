"""Raw-HTTP tools for the localmesos conformance tests: no Corral client involved.

``Scheduler`` opens a SUBSCRIBE stream with aiohttp and decodes RecordIO itself; calls are
literal JSON bodies. ``cluster`` starts a LocalMesos with tiny intervals. ``async_test``
runs a coroutine test under ``asyncio.run`` (no pytest-asyncio needed) and checks that no
process a test's cluster started is left behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import getpass
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import psutil

from corral.localmesos import LocalMesos, LocalMesosConfig
from corral_executor.recordio import Decoder

FAST = {
    "port": 0, "agents": 2, "cpus": 4.0, "mem": 4096.0, "disk": 10000.0,
    "ports": "31000-31099", "heartbeat_interval": 0.2, "agent_health_timeout": 1.0,
    "allocation_interval": 0.05, "status_update_retry": 0.2,
}

STARTED_PGIDS: set[int] = set()


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        STARTED_PGIDS.clear()
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60))
        deadline = time.monotonic() + 3.0
        left = leftover_processes(STARTED_PGIDS)
        while left and time.monotonic() < deadline:   # killed ones may still be exiting
            time.sleep(0.05)
            left = leftover_processes(STARTED_PGIDS)
        assert not left, f"processes left behind: {left}"
    return wrapper


def leftover_processes(pgids: set[int]) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.pid) in pgids:
                out.append(f"{p.pid} {p.info['cmdline']}")
        except (ProcessLookupError, psutil.Error):
            continue
    return out


@contextlib.asynccontextmanager
async def cluster(**overrides: Any) -> AsyncIterator[LocalMesos]:
    cfg = LocalMesosConfig(**{**FAST, **overrides})
    lm = LocalMesos(cfg)
    await lm.start()
    try:
        yield lm
    finally:
        for a in lm.master.agents.values():
            STARTED_PGIDS.update(a.agent.pids)
        STARTED_PGIDS.update(_all_pids(lm))
        await lm.stop()


def _all_pids(lm: LocalMesos) -> set[int]:
    return set().union(*(a.agent.seen_pids for a in lm.master.agents.values()))


def framework_info(*caps: str, **extra: Any) -> dict[str, Any]:
    # The user must exist: as root, localmesos runs tasks as the framework's user.
    info: dict[str, Any] = {"user": getpass.getuser(), "name": "raw-http-test"}
    if caps:
        info["capabilities"] = [{"type": c} for c in caps]
    info.update(extra)
    return info


class Scheduler:
    """A scheduler written from the docs: one SUBSCRIBE stream plus call connections."""

    def __init__(self, url: str, *, authorization: str | None = None,
                 ssl: Any = None) -> None:
        self.url = url
        # Sent on SUBSCRIBE and every call (HTTP Basic, for --authenticate-http-frameworks).
        self.auth = {"Authorization": authorization} if authorization else {}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl) if ssl is not None else None)
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.all_events: list[dict[str, Any]] = []
        self.framework_id: str | None = None
        self.stream_id: str | None = None
        self.status: int | None = None
        self.resp: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.pending: list[dict[str, Any]] = []     # events no next() has taken yet

    async def subscribe(self, info: dict[str, Any], framework_id: str | None = None,
                        expect_subscribed: bool = True) -> Scheduler:
        body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if framework_id is not None:
            body["framework_id"] = {"value": framework_id}
            info["id"] = {"value": framework_id}
        self.resp = await self.session.post(
            self.url + "/api/v1/scheduler", data=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     **self.auth})
        self.status = self.resp.status
        self.stream_id = self.resp.headers.get("Mesos-Stream-Id")
        self._reader = asyncio.ensure_future(self._read())
        if expect_subscribed:
            ev = await self.next("SUBSCRIBED")
            self.framework_id = ev["subscribed"]["framework_id"]["value"]
        return self

    async def _read(self) -> None:
        assert self.resp is not None
        dec = Decoder()
        try:
            async for chunk in self.resp.content.iter_any():
                for rec in dec.feed(chunk):
                    ev = json.loads(rec)
                    self.all_events.append(ev)
                    if ev["type"] != "HEARTBEAT":
                        self.pending.append(ev)
                    await self.events.put(ev)
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()

    async def next(self, kind: str, timeout: float = 5.0,
                   where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The oldest not yet taken event of ``kind`` (others stay for later calls)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.pending if kind != "HEARTBEAT" else []):
                if ev["type"] == kind and (where is None or where(ev)):
                    return self.pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} event within {timeout}s; "
                                   f"seen {[e['type'] for e in self.all_events][-20:]}")
            try:
                ev = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                continue
            if kind == "HEARTBEAT" and ev["type"] == "HEARTBEAT":
                return ev

    async def offers(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        return (await self.next("OFFERS", timeout))["offers"]["offers"]

    async def update(self, task_id: str, state: str | None = None,
                     timeout: float = 5.0) -> dict[str, Any]:
        def match(ev: dict[str, Any]) -> bool:
            st = ev["update"]["status"]
            return st["task_id"]["value"] == task_id and (state is None or st["state"] == state)
        return (await self.next("UPDATE", timeout, match))["update"]["status"]

    async def until(self, task_id: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        """Acknowledge every update of ``task_id`` until one in ``state`` (acked too)."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.update(task_id, None, max(0.01, deadline - time.monotonic()))
            if "uuid" in st:
                await self.ack(st)
            if st["state"] == state:
                return st

    async def settle(self, pred: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``pred(all statuses seen so far)``; returns those statuses."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = [e["update"]["status"] for e in self.all_events if e["type"] == "UPDATE"]
            if pred(statuses):
                return statuses
            if time.monotonic() > deadline:
                raise TimeoutError(f"statuses so far: {statuses}")
            await asyncio.sleep(0.02)

    async def call(self, body: dict[str, Any], stream_id: str | None = "auto",
                   headers: dict[str, str] | None = None) -> tuple[int, str]:
        h = {"Content-Type": "application/json", **self.auth}
        if stream_id == "auto":
            stream_id = self.stream_id
        if stream_id is not None:
            h["Mesos-Stream-Id"] = stream_id
        h.update(headers or {})
        if self.framework_id is not None and "framework_id" not in body \
                and body.get("type") != "SUBSCRIBE":
            body = {**body, "framework_id": {"value": self.framework_id}}
        async with self.session.post(self.url + "/api/v1/scheduler", data=json.dumps(body),
                                     headers=h) as r:
            return r.status, await r.text()

    async def ack(self, status: dict[str, Any]) -> tuple[int, str]:
        return await self.call({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": status["agent_id"], "task_id": status["task_id"],
            "uuid": status["uuid"]}})

    async def launch(self, offer: dict[str, Any], tasks: list[dict[str, Any]],
                     refuse: float | None = None) -> tuple[int, str]:
        body: dict[str, Any] = {"type": "ACCEPT", "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}]}}
        if refuse is not None:
            body["accept"]["filters"] = {"refuse_seconds": refuse}
        return await self.call(body)

    async def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self.session.close()


def command_task(offer: dict[str, Any], task_id: str, cmd: str, cpus: float = 0.1,
                 mem: float = 32.0, **extra: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}}],
        "command": {"value": cmd}}
    task.update(extra)
    return task


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextlib.asynccontextmanager
async def scheduler(lm: LocalMesos, *caps: str, **extra: Any) -> AsyncIterator[Scheduler]:
    s = Scheduler(lm.master_url)
    try:
        await s.subscribe(framework_info(*caps, **extra))
        yield s
    finally:
        await s.close()


EXECUTOR_SCRIPT = os.path.join(os.path.dirname(__file__), "executor_script.py")


def executor_task(offer: dict[str, Any], task_id: str, executor_id: str = "ex1",
                  data: bytes = b"", cpus: float = 0.1, **extra: Any) -> dict[str, Any]:
    """A TaskInfo run by the test executor script (python, via the shell)."""
    import sys
    task: dict[str, Any] = {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
        "executor": {
            "executor_id": {"value": executor_id}, "name": "test executor",
            "command": {"value": f"exec {sys.executable} {EXECUTOR_SCRIPT}",
                        "environment": {"variables": [{"name": "MY_VAR", "value": "x"}]}},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
            "shutdown_grace_period": {"nanoseconds": 1_000_000_000},
        },
        "data": b64(data),
    }
    task.update(extra)
    return task
