"""SchedulerClient against scripted Mesos masters: real aiohttp servers on 127.0.0.1:0.

Each ``FakeMaster`` speaks literal Mesos v1 JSON (shapes from shared/reference/mesos-v1.md):
SUBSCRIBE answers 200 with a chunked RecordIO stream and ``Mesos-Stream-Id``; other calls
answer 202. Every request's headers and raw body are recorded so tests assert exactly what
went over the wire. Every wait is bounded; every server and client is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from corral.mesos.client import SchedulerClient
from corral.mesos.errors import (
    FrameworkFailedOver,
    FrameworkRemoved,
    MasterUnavailable,
    MesosCallError,
    NotConnected,
)
from corral_executor.recordio import encode

Json = dict[str, Any]
FW = {"user": "corral", "name": "corral-test", "failover_timeout": 60.0, "checkpoint": True,
      "roles": ["ml"], "capabilities": [{"type": "MULTI_ROLE"}, {"type": "REVOCABLE_RESOURCES"}]}
TEST_TIMEOUT = 20.0


def frame(event: Json) -> bytes:
    return encode(json.dumps(event).encode())


def subscribed(fid: str, hb: float = 15.0) -> Json:
    return {"type": "SUBSCRIBED", "subscribed": {
        "framework_id": {"value": fid}, "heartbeat_interval_seconds": hb,
        "master_info": {"id": "m", "ip": 16777343, "port": 5050, "hostname": "localhost",
                        "address": {"ip": "127.0.0.1", "port": 5050}}}}


@dataclass
class Recorded:
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Json:
        return json.loads(self.raw)


class Stream:
    """The server side of one SUBSCRIBE stream."""

    def __init__(self, resp: web.StreamResponse, request: Json, stream_id: str,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.resp = resp
        self.request = request
        self.stream_id = stream_id
        self.transport = transport
        self.ended = asyncio.Event()

    def crash(self) -> None:
        """Drop the connection without ending the response (a crashed master)."""
        if self.transport is not None:
            self.transport.abort()

    async def send(self, event: Json) -> None:
        await self.resp.write(frame(event))

    async def send_raw(self, data: bytes) -> None:
        await self.resp.write(data)

    def end(self) -> None:
        self.ended.set()


Action = Callable[[Stream], Awaitable[None]] | int | str


@dataclass
class FakeMaster:
    """A scripted master. ``subscribe_actions`` are consumed one per SUBSCRIBE: an int is
    an HTTP status answered instead, a str is a 307 Location, a coroutine function scripts
    the stream. Once they run out, ``default_action`` serves."""

    fid: str = "fw-1"
    heartbeat: float = 15.0
    subscribe_actions: list[Action] = field(default_factory=list)
    call_statuses: list[int] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def subscribes(self) -> list[Recorded]:
        return [r for r in self.requests if r.body.get("type") == "SUBSCRIBE"]

    @property
    def calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.body.get("type") != "SUBSCRIBE"]

    async def start(self) -> FakeMaster:
        app = web.Application()
        app.router.add_post("/api/v1/scheduler", self._handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for s in self.streams:
            s.end()
        if self.runner is not None:
            await self.runner.cleanup()

    async def default_action(self, stream: Stream) -> None:
        await stream.send(subscribed(self.fid, self.heartbeat))
        await stream.ended.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        rec = Recorded(dict(request.headers), raw)
        self.requests.append(rec)
        body = rec.body
        if body.get("type") != "SUBSCRIBE":
            status = self.call_statuses.pop(0) if self.call_statuses else 202
            return web.Response(status=status, text="" if status == 202 else "scripted failure")
        action: Action = (self.subscribe_actions.pop(0) if self.subscribe_actions
                          else self.default_action)
        if isinstance(action, int):
            return web.Response(status=action, text=f"scripted {action}")
        if isinstance(action, str):
            return web.Response(status=307, headers={"Location": action})
        sid = f"stream-{len(self.streams) + 1}"
        resp = web.StreamResponse(status=200, headers={
            "Mesos-Stream-Id": sid, "Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        stream = Stream(resp, body, sid, request.transport)
        self.streams.append(stream)
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            await action(stream)
        return resp


class Harness:
    """A client with fast test timings, recording the events it delivers."""

    def __init__(self, master: str, **kw: Any) -> None:
        self.events: list[Json] = []
        opts: dict[str, Any] = {"backoff_initial": 0.02, "backoff_max": 0.1,
                                "request_timeout": 2.0, "call_wait_initial": 0.01,
                                "call_wait_max": 0.05}
        opts.update(kw)
        self.handler: Callable[[Json], Awaitable[None]] | None = None
        self.client = SchedulerClient(master, FW, self._on_event, **opts)
        self.task: asyncio.Task[None] | None = None

    async def _on_event(self, ev: Json) -> None:
        self.events.append(ev)
        if self.handler is not None:
            await self.handler(ev)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def start(self) -> Harness:
        self.task = asyncio.create_task(self.client.run())
        return self

    async def stop(self) -> None:
        await self.client.close()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TEST_TIMEOUT):
            await coro
    asyncio.run(bounded())


def leftover_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


# --- subscription and event stream ----------------------------------------------------------

OFFER = {"id": {"value": "m-O1"}, "framework_id": {"value": "fw-1"},
         "agent_id": {"value": "m-S0"}, "hostname": "agent0",
         "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"},
                       {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024.0}, "role": "*"},
                       {"name": "ports", "type": "RANGES",
                        "ranges": {"range": [{"begin": 31000, "end": 32000}]}, "role": "*"}]}
UPDATE = {"type": "UPDATE", "update": {"status": {
    "task_id": {"value": "t1"}, "state": "TASK_RUNNING", "agent_id": {"value": "m-S0"},
    "source": "SOURCE_EXECUTOR", "uuid": "AAECAwQFBgcICQoLDA0ODw==", "timestamp": 1.5}}}


def test_subscribe_delivers_events_across_arbitrary_chunks() -> None:
    async def script(stream: Stream) -> None:
        # SUBSCRIBED split mid-header, an OFFERS record one byte per chunk, then a
        # heartbeat, an UPDATE and a RESCIND sharing one chunk.
        first = frame(subscribed("fw-1"))
        await stream.send_raw(first[:1])
        await asyncio.sleep(0.01)
        await stream.send_raw(first[1:7])
        await asyncio.sleep(0.01)
        await stream.send_raw(first[7:])
        offers = frame({"type": "OFFERS", "offers": {"offers": [OFFER]}})
        for i in range(len(offers)):
            await stream.send_raw(offers[i:i + 1])
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        await stream.send_raw(frame({"type": "HEARTBEAT"}) + frame(UPDATE) + frame(
            {"type": "RESCIND", "rescind": {"offer_id": {"value": "m-O1"}}}))
        await stream.ended.wait()

    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[script]).start()
        h = Harness(m.url).start()
        try:
            await until(lambda: len(h.events) == 4)
            assert h.types() == ["SUBSCRIBED", "OFFERS", "UPDATE", "RESCIND"]
            assert h.events[1]["offers"]["offers"] == [OFFER]
            assert h.client.framework_id == "fw-1"
            assert h.client.stream_id == "stream-1"
            assert h.client.connected.is_set()
            assert h.client.master_info is not None
            assert h.client.master_info["address"]["port"] == 5050
            [sub] = m.subscribes
            assert sub.body == {"type": "SUBSCRIBE", "subscribe": {"framework_info": FW}}
            assert "Mesos-Stream-Id" not in sub.headers
            assert sub.headers["Content-Type"] == "application/json"
            assert sub.headers["Accept"] == "application/json"
        finally:
            await h.stop()
            await m.stop()
        assert not h.client.connected.is_set()
        assert leftover_tasks() == []

    run(main())


def test_heartbeats_keep_stream_and_silence_triggers_resubscribe_with_same_id() -> None:
    async def heartbeating(stream: Stream) -> None:
        await stream.send(subscribed("fw-1", hb=0.05))
        # 0.6 s of heartbeats is four watchdog windows (3 x 0.05 s): must not drop.
        for _ in range(20):
            await asyncio.sleep(0.03)
            await stream.send({"type": "HEARTBEAT"})
        # Then silence while the connection stays open.
        await stream.ended.wait()

    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[heartbeating], heartbeat=15.0).start()
        h = Harness(m.url, missed_heartbeats=3).start()
        try:
            await until(lambda: h.client.subscriptions == 1)
            await asyncio.sleep(0.45)
            assert len(m.subscribes) == 1, "heartbeats must keep the stream alive"
            await until(lambda: h.client.subscriptions == 2)
            second = m.subscribes[1]
            assert second.body["framework_id"] == {"value": "fw-1"}
            assert second.body["subscribe"]["framework_info"]["id"] == {"value": "fw-1"}
            assert h.types() == ["SUBSCRIBED", "SUBSCRIBED"]  # HEARTBEAT never delivered
            assert h.client.stream_id == "stream-2"
        finally:
            await h.stop()
            await m.stop()

    run(main())


def test_stream_end_resubscribes_and_initial_framework_id_is_used() -> None:
    async def short(stream: Stream) -> None:
        await stream.send(subscribed("fw-9"))

    async def main() -> None:
        m = await FakeMaster(fid="fw-9", subscribe_actions=[short]).start()
        h = Harness(m.url)
        h.client = SchedulerClient(m.url, {**FW, "id": {"value": "fw-9"}}, h._on_event,
                                   backoff_initial=0.02, backoff_max=0.1)
        h.start()
        try:
            await until(lambda: h.client.subscriptions == 2)
            for sub in m.subscribes:
                assert sub.body["framework_id"] == {"value": "fw-9"}
                assert sub.body["subscribe"]["framework_info"]["id"] == {"value": "fw-9"}
        finally:
            await h.stop()
            await m.stop()

    run(main())


def test_stream_broken_after_subscribed_reconnects_without_growing_backoff() -> None:
    """A master that crashes after SUBSCRIBED (the connection drops mid-stream) was a
    working subscription: the next attempt comes after the initial backoff, every time."""

    async def crash(stream: Stream) -> None:
        await stream.send(subscribed("fw-1"))
        await asyncio.sleep(0.05)
        stream.crash()

    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[crash] * 5).start()
        h = Harness(m.url, backoff_initial=0.3, backoff_max=20.0).start()
        try:
            t0 = time.monotonic()
            await until(lambda: h.client.subscriptions == 6 and h.client.connected.is_set(),
                        timeout=10)
            # Five reconnects at most 0.3 s each (plus work); growing, they would take
            # at least 0.15 + 0.3 + 0.6 + 1.2 + 2.4 s.
            assert time.monotonic() - t0 < 3.5
            assert [r.body["framework_id"] for r in m.subscribes[1:]] == \
                [{"value": "fw-1"}] * 5
        finally:
            await h.stop()
            await m.stop()

    run(main())


def test_redirect_307_to_second_master_and_calls_follow_the_stream() -> None:
    async def main() -> None:
        m2 = await FakeMaster().start()
        m1 = await FakeMaster(
            subscribe_actions=[f"//127.0.0.1:{m2.port}/api/v1/scheduler"]).start()
        h = Harness(m1.url).start()
        try:
            await until(lambda: h.client.connected.is_set())
            assert h.client.master_url == m2.url
            await h.client.decline(["m-O1"])
            assert len(m1.requests) == 1 and len(m1.subscribes) == 1
            assert [r.body["type"] for r in m2.requests] == ["SUBSCRIBE", "DECLINE"]
            assert m2.requests[1].headers["Mesos-Stream-Id"] == "stream-1"
        finally:
            await h.stop()
            await m1.stop()
            await m2.stop()

    run(main())


def test_503_then_success() -> None:
    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[503, 503]).start()
        h = Harness(m.url).start()
        try:
            await until(lambda: h.client.connected.is_set())
            assert len(m.subscribes) == 3
            assert h.types() == ["SUBSCRIBED"]
        finally:
            await h.stop()
            await m.stop()

    run(main())


def test_unreachable_master_is_retried_until_it_appears() -> None:
    async def main() -> None:
        m = await FakeMaster().start()
        port = m.port
        await m.stop()  # nothing listens on the port now
        h = Harness(f"http://127.0.0.1:{port}").start()
        try:
            await asyncio.sleep(0.3)
            assert not h.client.connected.is_set()
            assert not h.task.done()  # type: ignore[union-attr]
            m2 = FakeMaster()
            app = web.Application()
            app.router.add_post("/api/v1/scheduler", m2._handle)
            m2.runner = web.AppRunner(app, shutdown_timeout=0.5)
            await m2.runner.setup()
            await web.TCPSite(m2.runner, "127.0.0.1", port).start()
            await until(lambda: h.client.connected.is_set())
        finally:
            await h.stop()
            await m2.stop()

    run(main())


@pytest.mark.parametrize("status", [400, 403])
def test_4xx_on_subscribe_is_not_retried(status: int) -> None:
    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[status]).start()
        h = Harness(m.url).start()
        try:
            with pytest.raises(MesosCallError) as ei:
                await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
            assert ei.value.status == status
            assert "scripted" in ei.value.body
            assert len(m.requests) == 1
        finally:
            await h.client.close()
            await m.stop()

    run(main())


def test_error_framework_removed_is_delivered_then_raised_without_reconnect() -> None:
    async def removed(stream: Stream) -> None:
        await stream.send(subscribed("fw-1"))
        await stream.send({"type": "ERROR", "error": {"message": "Framework has been removed"}})
        await stream.ended.wait()

    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[removed]).start()
        h = Harness(m.url).start()
        try:
            with pytest.raises(FrameworkRemoved) as ei:
                await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
            assert ei.value.framework_id == "fw-1"
            assert h.types() == ["SUBSCRIBED", "ERROR"]
            assert len(m.subscribes) == 1
            assert not h.client.connected.is_set()
            with pytest.raises(NotConnected):
                await h.client.decline(["x"])
        finally:
            await h.client.close()
            await m.stop()

    run(main())


def test_error_failed_over_reconnects_by_default_and_stops_when_asked() -> None:
    async def failed_over(stream: Stream) -> None:
        await stream.send(subscribed("fw-1"))
        await stream.send({"type": "ERROR", "error": {"message": "Framework failed over"}})

    async def main() -> None:
        m = await FakeMaster(subscribe_actions=[failed_over]).start()
        h = Harness(m.url).start()
        try:
            await until(lambda: h.client.subscriptions == 2)
            assert h.types() == ["SUBSCRIBED", "ERROR", "SUBSCRIBED"]
            assert m.subscribes[1].body["framework_id"] == {"value": "fw-1"}
        finally:
            await h.stop()
        m.subscribe_actions = [failed_over]
        m.requests.clear()
        h2 = Harness(m.url, stop_on_failover=True).start()
        try:
            with pytest.raises(FrameworkFailedOver):
                await asyncio.wait_for(h2.task, 5)  # type: ignore[arg-type]
            assert len(m.subscribes) == 1
        finally:
            await h2.client.close()
            await m.stop()

    run(main())


def test_handler_exception_ends_run_with_that_exception() -> None:
    async def main() -> None:
        m = await FakeMaster().start()
        h = Harness(m.url)

        async def boom(ev: Json) -> None:
            raise KeyError("handler bug")

        h.handler = boom
        h.start()
        try:
            with pytest.raises(KeyError, match="handler bug"):
                await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
            assert len(m.subscribes) == 1  # not swallowed into a reconnect
        finally:
            await h.client.close()
            await m.stop()

    run(main())


def test_close_from_inside_the_handler_ends_run() -> None:
    async def main() -> None:
        m = await FakeMaster().start()
        h = Harness(m.url)

        async def close_on_subscribed(ev: Json) -> None:
            await h.client.close()

        h.handler = close_on_subscribed
        h.start()
        try:
            await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
            assert h.types() == ["SUBSCRIBED"]
        finally:
            await m.stop()
        assert leftover_tasks() == []

    run(main())


# --- calls ------------------------------------------------------------------------------------

TASK_INFO = {"name": "w0", "task_id": {"value": "t1"}, "agent_id": {"value": "m-S0"},
             "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0},
                            "role": "*"}],
             "executor": {"executor_id": {"value": "e1"}, "type": "CUSTOM",
                          "command": {"value": "corral-executor", "shell": True}}}
FID = {"value": "fw-1"}


def test_every_call_body_is_the_literal_mesos_json() -> None:
    async def main() -> None:
        m = await FakeMaster().start()
        h = Harness(m.url).start()
        c = h.client
        try:
            await until(lambda: c.connected.is_set())
            await c.launch(["m-O1", "m-O2"], [TASK_INFO], refuse_seconds=2.5)
            await c.accept(["m-O3"], [])
            await c.decline(["m-O4"], refuse_seconds=30)
            await c.decline(["m-O5"])
            await c.revive()
            await c.revive(["ml"])
            await c.suppress(["ml", "batch"])
            await c.kill("t1", "m-S0", grace_seconds=1.5)
            await c.kill("t2", None)
            await c.shutdown("e1", "m-S0")
            await c.acknowledge("m-S0", "t1", "AAECAwQFBgcICQoLDA0ODw==")
            await c.reconcile([])
            await c.reconcile([("t1", "m-S0"), ("t2", None)])
            await c.message("m-S0", "e1", b"\x00hello\xff")
            await c.accept_inverse_offers(["m-O9"], refuse_seconds=1)
            await c.decline_inverse_offers(["m-O10"])
            expected: list[Json] = [
                {"type": "ACCEPT", "framework_id": FID, "accept": {
                    "offer_ids": [{"value": "m-O1"}, {"value": "m-O2"}],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [TASK_INFO]}}],
                    "filters": {"refuse_seconds": 2.5}}},
                {"type": "ACCEPT", "framework_id": FID, "accept": {
                    "offer_ids": [{"value": "m-O3"}], "operations": []}},
                {"type": "DECLINE", "framework_id": FID, "decline": {
                    "offer_ids": [{"value": "m-O4"}], "filters": {"refuse_seconds": 30.0}}},
                {"type": "DECLINE", "framework_id": FID, "decline": {
                    "offer_ids": [{"value": "m-O5"}]}},
                {"type": "REVIVE", "framework_id": FID},
                {"type": "REVIVE", "framework_id": FID, "revive": {"roles": ["ml"]}},
                {"type": "SUPPRESS", "framework_id": FID,
                 "suppress": {"roles": ["ml", "batch"]}},
                {"type": "KILL", "framework_id": FID, "kill": {
                    "task_id": {"value": "t1"}, "agent_id": {"value": "m-S0"},
                    "kill_policy": {"grace_period": {"nanoseconds": 1500000000}}}},
                {"type": "KILL", "framework_id": FID, "kill": {"task_id": {"value": "t2"}}},
                {"type": "SHUTDOWN", "framework_id": FID, "shutdown": {
                    "executor_id": {"value": "e1"}, "agent_id": {"value": "m-S0"}}},
                {"type": "ACKNOWLEDGE", "framework_id": FID, "acknowledge": {
                    "agent_id": {"value": "m-S0"}, "task_id": {"value": "t1"},
                    "uuid": "AAECAwQFBgcICQoLDA0ODw=="}},
                {"type": "RECONCILE", "framework_id": FID, "reconcile": {"tasks": []}},
                {"type": "RECONCILE", "framework_id": FID, "reconcile": {"tasks": [
                    {"task_id": {"value": "t1"}, "agent_id": {"value": "m-S0"}},
                    {"task_id": {"value": "t2"}}]}},
                {"type": "MESSAGE", "framework_id": FID, "message": {
                    "agent_id": {"value": "m-S0"}, "executor_id": {"value": "e1"},
                    "data": "AGhlbGxv/w=="}},
                {"type": "ACCEPT_INVERSE_OFFERS", "framework_id": FID, "accept_inverse_offers": {
                    "inverse_offer_ids": [{"value": "m-O9"}], "filters": {"refuse_seconds": 1.0}}},
                {"type": "DECLINE_INVERSE_OFFERS", "framework_id": FID,
                 "decline_inverse_offers": {"inverse_offer_ids": [{"value": "m-O10"}]}},
            ]
            assert [r.body for r in m.calls] == expected
            for r in m.calls:
                assert r.headers["Mesos-Stream-Id"] == "stream-1"
                assert r.headers["Content-Type"] == "application/json"
                assert r.raw == json.dumps(r.body, separators=(",", ":")).encode()
        finally:
            await h.stop()
            await m.stop()

    run(main())


def test_call_status_handling_and_not_connected() -> None:
    async def main() -> None:
        m = await FakeMaster().start()
        h = Harness(m.url)
        with pytest.raises(NotConnected):
            await h.client.decline(["m-O1"])
        h.start()
        c = h.client
        try:
            await until(lambda: c.connected.is_set())
            # 400 is the caller's bug: raised at once, not retried.
            m.call_statuses = [400]
            with pytest.raises(MesosCallError) as ei:
                await c.kill("t1", "m-S0")
            assert ei.value.status == 400 and ei.value.call == "KILL"
            assert "scripted failure" in ei.value.body
            assert len(m.calls) == 1
            # 503 is retried (SAFE policy, even for ACCEPT) until 202.
            m.call_statuses = [503, 503]
            await c.accept(["m-O1"], [])
            assert len(m.calls) == 4
            # 503 forever: gives up after call_attempts with MasterUnavailable.
            m.call_statuses = [503] * 10
            with pytest.raises(MasterUnavailable):
                await c.decline(["m-O2"])
            assert len(m.calls) == 8
            # teardown closes the client: run() returns.
            m.call_statuses = []
            await c.teardown()
            await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
            assert m.calls[-1].body == {"type": "TEARDOWN", "framework_id": FID}
            with pytest.raises(NotConnected):
                await c.revive()
        finally:
            await h.client.close()
            await m.stop()

    run(main())


def test_one_log_line_per_subscription_redirect_and_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        m2 = await FakeMaster().start()
        m1 = await FakeMaster(subscribe_actions=[
            503, f"//127.0.0.1:{m2.port}/api/v1/scheduler"]).start()
        h = Harness(m1.url).start()
        try:
            await until(lambda: h.client.connected.is_set())
        finally:
            await h.stop()
            await m1.stop()
            await m2.stop()

    with caplog.at_level(logging.INFO, logger="corral.mesos"):
        run(main())
    msgs = [r.getMessage() for r in caplog.records if r.name.startswith("corral.mesos")]
    assert sum("redirected SUBSCRIBE" in x for x in msgs) == 1
    assert sum("re-subscribing" in x for x in msgs) == 1
    assert sum("subscribed framework fw-1" in x for x in msgs) == 1


# --- master detection in a real ZooKeeper ---------------------------------------------------

def _info(port: int, *, legacy: bool = False) -> bytes:
    """MasterInfo JSON as a Mesos master writes it (``legacy``: ip as uint32 only)."""
    if legacy:
        return json.dumps({"id": f"m{port}", "ip": 16777343, "port": port,
                           "pid": f"master@127.0.0.1:{port}"}).encode()
    return json.dumps({"id": f"m{port}", "ip": 16777343, "port": port, "hostname": "localhost",
                       "version": "1.11.0",
                       "address": {"hostname": "localhost", "ip": "127.0.0.1",
                                   "port": port}}).encode()


def kazoo_threads() -> list[str]:
    import threading
    # kazoo's threading handler names its threads after these functions.
    return [t.name for t in threading.enumerate()
            if "_thread_worker" in t.name or "zk_loop" in t.name]


@pytest.mark.zk
def test_zk_detector_follows_lowest_json_info_child(zk_url: str) -> None:
    from kazoo.client import KazooClient

    from corral.mesos.detect import ZooKeeperDetector, parse_zk_url

    hosts, path = parse_zk_url(zk_url)

    async def main() -> None:
        zk = KazooClient(hosts)
        zk.start(5)
        det = ZooKeeperDetector(zk_url, connect_timeout=5)
        seen: list[str | None] = []
        det.add_listener(seen.append)
        try:
            await det.start()  # the group does not exist yet
            assert await det.leader(0.1) is None
            zk.create(f"{path}/log_replicas", b"", makepath=True)
            zk.create(f"{path}/info_0000000001", b"\x08protobuf")  # not json.: ignored
            assert await det.leader(0.2) is None
            zk.create(f"{path}/json.info_0000000004", _info(5051))
            zk.create(f"{path}/json.info_0000000009", _info(5052, legacy=True))
            await until(lambda: seen[-1:] == ["http://127.0.0.1:5051"])
            assert await det.leader(1) == "http://127.0.0.1:5051"
            zk.delete(f"{path}/json.info_0000000004")
            await until(lambda: seen[-1:] == ["http://127.0.0.1:5052"])
            zk.delete(f"{path}/json.info_0000000009")
            await until(lambda: seen[-1:] == [None])
            assert seen == ["http://127.0.0.1:5051", "http://127.0.0.1:5052", None]
        finally:
            await det.close()
            zk.stop()
            zk.close()

    run(main())


@pytest.mark.zk
def test_client_subscribes_to_zk_leader_and_follows_leader_change(zk_url: str) -> None:
    from kazoo.client import KazooClient

    from corral.mesos.detect import parse_zk_url

    hosts, path = parse_zk_url(zk_url)

    async def main() -> None:
        m1 = await FakeMaster().start()
        m2 = await FakeMaster().start()
        zk = KazooClient(hosts)
        zk.start(5)
        # Ephemeral sequential children, as Mesos masters create them.
        n1 = zk.create(f"{path}/json.info_", _info(m1.port), ephemeral=True, sequence=True,
                       makepath=True)
        zk.create(f"{path}/json.info_", _info(m2.port), ephemeral=True, sequence=True)
        h = Harness(zk_url).start()
        try:
            await until(lambda: h.client.connected.is_set())
            assert h.client.master_url == m1.url
            zk.delete(n1)  # m1 loses leadership: the stream to it is dropped at once
            await until(lambda: h.client.subscriptions == 2 and h.client.connected.is_set())
            assert h.client.master_url == m2.url
            assert m2.subscribes[0].body["framework_id"] == {"value": "fw-1"}
            await h.client.reconcile([])
            assert m2.calls[-1].body["type"] == "RECONCILE"
        finally:
            await h.stop()
            zk.stop()
            zk.close()
            await m1.stop()
            await m2.stop()
        await until(lambda: kazoo_threads() == [], timeout=5)

    run(main())


@pytest.mark.zk
def test_new_zk_leader_cuts_the_reconnect_backoff_short(zk_url: str) -> None:
    """The leader crashes while ZooKeeper still names it: the client backs off (here 3 to
    6 s); the moment the next master is elected it re-subscribes there, with its id."""
    from kazoo.client import KazooClient

    from corral.mesos.detect import parse_zk_url

    hosts, path = parse_zk_url(zk_url)

    async def main() -> None:
        m1 = await FakeMaster().start()
        m2 = await FakeMaster().start()
        zk = KazooClient(hosts)
        zk.start(5)
        n1 = zk.create(f"{path}/json.info_", _info(m1.port), ephemeral=True, sequence=True,
                       makepath=True)
        h = Harness(zk_url, backoff_initial=6.0, backoff_max=12.0).start()
        try:
            await until(lambda: h.client.connected.is_set())
            assert h.client.master_url == m1.url
            await m1.stop()                       # a crash: its node is still there
            await until(lambda: not h.client.connected.is_set())
            await asyncio.sleep(0.3)              # the client is now in its backoff
            elected = time.monotonic()
            zk.delete(n1)                         # the session expired ...
            zk.create(f"{path}/json.info_", _info(m2.port), ephemeral=True, sequence=True)
            await until(lambda: h.client.connected.is_set(), timeout=10)
            assert time.monotonic() - elected < 2.0   # not after a 3-6 s backoff
            assert h.client.master_url == m2.url
            assert m2.subscribes[0].body["framework_id"] == {"value": "fw-1"}
        finally:
            await h.stop()
            zk.stop()
            zk.close()
            await m2.stop()
        await until(lambda: kazoo_threads() == [], timeout=5)

    run(main())


@pytest.mark.zk
def test_new_zk_leader_resets_the_backoff_even_if_it_is_not_ready_yet(zk_url: str) -> None:
    """Failures against a crashed leader have grown the backoff; the new leader's first
    answer is a stale 307 back to the dead master (it has not seen the change yet). The
    client retries after the initial backoff, not the grown one."""
    from kazoo.client import KazooClient

    from corral.mesos.detect import parse_zk_url

    hosts, path = parse_zk_url(zk_url)

    async def main() -> None:
        m1 = await FakeMaster().start()
        dead = m1.url
        m2 = await FakeMaster(subscribe_actions=[f"//127.0.0.1:{m1.port}/api/v1/scheduler"]
                              ).start()
        zk = KazooClient(hosts)
        zk.start(5)
        n1 = zk.create(f"{path}/json.info_", _info(m1.port), ephemeral=True, sequence=True,
                       makepath=True)
        h = Harness(zk_url, backoff_initial=0.3, backoff_max=20.0).start()
        try:
            await until(lambda: h.client.connected.is_set())
            await m1.stop()
            await until(lambda: h.client._backoff.failures >= 4, timeout=10)
            elected = time.monotonic()
            zk.delete(n1)
            zk.create(f"{path}/json.info_", _info(m2.port), ephemeral=True, sequence=True)
            await until(lambda: h.client.connected.is_set(), timeout=10)
            assert time.monotonic() - elected < 1.5
            assert h.client.master_url == m2.url != dead
            assert len(m2.subscribes) == 2          # the stale redirect, then the stream
        finally:
            await h.stop()
            zk.stop()
            zk.close()
            await m2.stop()
        await until(lambda: kazoo_threads() == [], timeout=5)

    run(main())


@pytest.mark.zk
def test_detector_survives_session_expiry(zk_url: str) -> None:
    from kazoo.client import KazooClient

    from corral.mesos.detect import ZooKeeperDetector, parse_zk_url
    from tests.zk import expire_session

    hosts, path = parse_zk_url(zk_url)

    async def main() -> None:
        zk = KazooClient(hosts)
        zk.start(5)
        zk.create(f"{path}/json.info_0000000001", _info(6001), makepath=True)
        det = ZooKeeperDetector(zk_url, connect_timeout=5)
        try:
            await det.start()
            assert await det.leader(2) == "http://127.0.0.1:6001"
            assert det._zk is not None
            await asyncio.to_thread(expire_session, det._zk, hosts)
            # Watches died with the session; the detector must re-arm them on reconnect.
            zk.delete(f"{path}/json.info_0000000001")
            zk.create(f"{path}/json.info_0000000002", _info(6002))
            await until(lambda: det._leader == "http://127.0.0.1:6002", timeout=10)
        finally:
            await det.close()
            zk.stop()
            zk.close()

    run(main())


@pytest.mark.zk
def test_unreachable_zookeeper_is_retried_and_close_leaves_no_threads() -> None:
    from tests.zk import free_port

    async def main() -> None:
        before = len(kazoo_threads())
        h = Harness(f"zk://127.0.0.1:{free_port()}/mesos", request_timeout=0.3).start()
        await asyncio.sleep(1.0)
        assert not h.client.connected.is_set() and not h.task.done()  # type: ignore[union-attr]
        await h.stop()
        await until(lambda: len(kazoo_threads()) <= before, timeout=5)

    run(main())


@pytest.mark.zk
def test_close_is_prompt_while_kazoo_is_still_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race behind a rare hang in close(): a start attempt timed out and kazoo is still
    stopping that client (its connection thread has not ended yet) when close() comes.
    kazoo's ``close()`` on such a client raises a bare ``Exception``; it used to escape
    run()'s clean-up before ``_stopped`` was set, so ``close()`` waited forever.

    The test holds kazoo's connection thread (a real kazoo client, real threads) just
    before it reports itself stopped, so the race happens every time, not once in many
    runs under load."""
    import threading

    from kazoo.protocol.connection import ConnectionHandler

    from corral.mesos.detect import ZooKeeperDetector
    from tests.zk import free_port

    stopping, release = threading.Event(), threading.Event()

    class HeldOnExit(threading.Event):
        """``connection_stopped``: the connection thread's final ``set()`` waits."""

        def set(self) -> None:
            if "zk_loop" in threading.current_thread().name and not stopping.is_set():
                stopping.set()
                release.wait(15)
            super().set()

    original_init = ConnectionHandler.__init__

    def init(self: ConnectionHandler, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.connection_stopped = HeldOnExit()
        self.connection_stopped.set()

    monkeypatch.setattr(ConnectionHandler, "__init__", init)

    async def main() -> None:
        before = len(kazoo_threads())
        url = f"zk://127.0.0.1:{free_port()}/mesos"
        h = Harness(url, request_timeout=0.3,
                    detector=ZooKeeperDetector(url, connect_timeout=0.3, stop_wait=0.5)).start()
        try:
            await until(stopping.is_set, timeout=5)  # an attempt timed out; kazoo stopping
            t0 = time.monotonic()
            async with asyncio.timeout(6):
                await h.client.close()
            took = time.monotonic() - t0
            async with asyncio.timeout(1):
                await h.task  # type: ignore[misc]  # run() ended, and without an error
        finally:
            release.set()
        assert took < 2.0, took  # close() gave kazoo its 0.5 s, then returned
        await until(lambda: len(kazoo_threads()) <= before, timeout=12)

    run(main())


def test_a_grpc_port_as_master_is_named_in_one_readable_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """A real HTTP/2 (gRPC) server where the master should be: the log says what it is,
    not the bytes of its SETTINGS frame."""
    import grpc

    async def main() -> None:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        h = Harness(f"http://127.0.0.1:{port}").start()
        try:
            with caplog.at_level(logging.WARNING, logger="corral.mesos.client"):
                await until(lambda: any("HTTP/2" in r.getMessage() for r in caplog.records))
        finally:
            await h.stop()
            await server.stop(0)
        line = next(r.getMessage() for r in caplog.records if "HTTP/2" in r.getMessage())
        assert line == (f"mesos subscription attempt failed: http://127.0.0.1:{port} answered "
                        "in HTTP/2, not as a Mesos master: is it a gRPC port (such as Corral's "
                        "own --api)? A Mesos master serves HTTP/1.1, by default on port 5050")
        assert not any("\\x00" in r.getMessage() for r in caplog.records)

    run(main())
