"""The asyncio Mesos v1 scheduler client: one subscription stream plus calls.

``SchedulerClient.run()`` owns the *event stream*: it finds the leading master, POSTs
SUBSCRIBE, reads the RecordIO stream and hands every event except HEARTBEAT to
``on_event`` in stream order, one at a time. When the stream ends, goes silent for
``missed_heartbeats`` heartbeat intervals, or fails, it re-subscribes with the framework
id it was given (top-level ``framework_id`` and ``framework_info.id``) after an
exponential backoff. It follows 307 redirects, waits out 503, and returns only after
``close()``; it raises ``FrameworkRemoved`` when the master has removed the framework and
``MesosCallError`` when SUBSCRIBE itself is refused with a 4xx (retrying cannot help),
``AuthenticationFailed`` (a ``MesosCallError``) when the master refuses our credentials.
When the leading master fails over, the stream ends (or ZooKeeper names another leader,
which drops it at once); the client re-subscribes with its id, and a new leader appearing
in ZooKeeper cuts any reconnect backoff short, so it follows the failover as soon as the
new master is elected rather than when its backoff happens to expire.

Authentication and TLS: with ``credentials=(principal, secret)`` every request (SUBSCRIBE
and calls) carries HTTP Basic credentials, as Mesos' ``--authenticate_http_frameworks``
requires; with ``ssl_context`` the master is spoken to over TLS checked against that
context's CAs, and masters found in ZooKeeper (whose MasterInfo has no scheme) are
addressed with ``https://``.

Calls (ACCEPT, DECLINE, KILL, ...) each go on their own request to the master holding the
stream, carry ``Mesos-Stream-Id`` and expect 202. Without a live subscription they raise
``NotConnected`` at once: the runtime shell decides what to do, typically wait for the
next SUBSCRIBED, which starts a reconciliation anyway. Retry rules live in ``retry.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from corral.mesos import calls, codec
from corral.mesos.detect import DetectorError, MasterDetector, detector_for
from corral.mesos.errors import (
    AuthenticationFailed,
    FrameworkFailedOver,
    FrameworkRemoved,
    MasterUnavailable,
    MesosCallError,
    NotConnected,
)
from corral.mesos.retry import IDEMPOTENT, POLICY_BY_CALL, SAFE, Backoff, CallPolicy, Redirected
from corral_executor.recordio import Decoder, RecordIOError

log = logging.getLogger("corral.mesos.client")

API_PATH = "/api/v1/scheduler"
DEFAULT_HEARTBEAT_SECONDS = 15.0
MAX_REDIRECTS = 5

Json = dict[str, Any]
EventHandler = Callable[[Json], Awaitable[None]]


class _HandlerFailed(Exception):
    """Internal: ``on_event`` raised; carried past the reconnect logic to ``run()``."""

    def __init__(self, original: Exception) -> None:
        self.original = original
        super().__init__(repr(original))


def redirect_target(location: str, current: str) -> str:
    """The base URL a 307 ``Location`` points at.

    Mesos answers with a protocol-relative ``//host:port/api/v1/scheduler``; the scheme
    is the one we used. Absolute URLs are accepted too.
    """
    loc = location.strip()
    scheme = current.split("://", 1)[0] if "://" in current else "http"
    if loc.startswith("//"):
        rest = loc[2:]
    elif "://" in loc:
        scheme, rest = loc.split("://", 1)
    else:
        raise MasterUnavailable(f"unusable redirect Location {location!r}")
    hostport = rest.split("/", 1)[0]
    if not hostport:
        raise MasterUnavailable(f"unusable redirect Location {location!r}")
    return f"{scheme}://{hostport}"


def _id_value(v: Any) -> str | None:
    if isinstance(v, dict):
        v = v.get("value")
    return None if v in (None, "") else str(v)


class SchedulerClient:
    """A Mesos v1 scheduler API client (see module docstring)."""

    def __init__(
        self,
        master: str,
        framework_info: Json,
        on_event: EventHandler,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 15.0,
        missed_heartbeats: int = 5,
        request_timeout: float = 10.0,
        call_attempts: int = 4,
        call_wait_initial: float = 0.2,
        call_wait_max: float = 2.0,
        stop_on_failover: bool = False,
        detector: MasterDetector | None = None,
        rng: random.Random | None = None,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not framework_info.get("user") or not framework_info.get("name"):
            raise ValueError("framework_info needs 'user' and 'name'")
        if missed_heartbeats < 1 or request_timeout <= 0 or call_attempts < 1:
            raise ValueError("missed_heartbeats, request_timeout, call_attempts must be positive")
        self.framework_info = dict(framework_info)
        self.framework_id: str | None = _id_value(framework_info.get("id"))
        self.stream_id: str | None = None
        self.master_info: Json | None = None
        self.master_url: str | None = None  # the master holding our live stream
        self.heartbeat_interval = DEFAULT_HEARTBEAT_SECONDS
        self.connected = asyncio.Event()
        self.subscriptions = 0  # SUBSCRIBED events seen, for observers and tests
        self.last_error = ""  # why the last subscription attempt failed ("" once subscribed)

        self._on_event = on_event
        self._detector = detector if detector is not None else detector_for(
            master, connect_timeout=request_timeout)
        self._detector.add_listener(self._on_leader_change)
        self._backoff = Backoff(backoff_initial, backoff_max,
                                rng or random.Random(str(framework_info.get("name"))))
        self._missed = missed_heartbeats
        self._timeout = request_timeout
        self._stop_on_failover = stop_on_failover
        self._policies: dict[CallPolicy, CallPolicy] = {
            p: p.with_limits(call_attempts, call_wait_initial, call_wait_max)
            for p in (SAFE, IDEMPOTENT)
        }
        self._auth = basic_auth(*credentials) if credentials else None
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._resp: aiohttp.ClientResponse | None = None
        self._main: asyncio.Task[None] | None = None
        self._closed = False
        self._stopped = asyncio.Event()
        self._leader_moved = asyncio.Event()   # set when the detector names a new leader

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a subscription alive until ``close()``; see the module docstring."""
        if self._main is not None:
            raise RuntimeError("SchedulerClient.run() may be called once")
        if self._closed:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True))
        self._main = asyncio.create_task(self._supervise(), name="mesos-subscription")
        try:
            try:
                await asyncio.wait([self._main])
            except asyncio.CancelledError:
                self._main.cancel()
                await asyncio.wait([self._main])
                raise
            if not self._main.cancelled():
                exc = self._main.exception()
                if isinstance(exc, _HandlerFailed):
                    # The handler's own bug: surface it unchanged, never swallow an event.
                    raise exc.original
                if exc is not None:
                    raise exc
        finally:
            self._closed = True
            self._mark_disconnected()
            try:
                await self._session.close()
                await self._detector.close()
            finally:
                self._stopped.set()  # whatever clean-up raised, close() must return

    async def close(self) -> None:
        """Stop the subscription (without tearing the framework down) and end ``run()``."""
        self._closed = True
        self._mark_disconnected()
        main = self._main
        if main is None:
            await self._detector.close()
            return
        if asyncio.current_task() is main:
            # Called from on_event: the stream loop sees _closed once the handler returns.
            return
        if not main.done():
            main.cancel()
        await self._stopped.wait()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a live subscription."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.connected.wait()
        return self.connected.is_set()

    # --- the subscription loop -------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._closed:
            before = self.subscriptions
            try:
                healthy = await self._subscribe_once()
            except (MesosCallError, FrameworkRemoved, FrameworkFailedOver):
                raise  # AuthenticationFailed included: the same credentials fail again
            except (MasterUnavailable, aiohttp.ClientError, TimeoutError, RecordIOError,
                    DetectorError, ValueError, OSError) as e:
                # A stream that reached SUBSCRIBED and then broke (its master crashed, the
                # connection dropped) was a working subscription all the same.
                healthy = self.subscriptions > before
                self.last_error = _describe(e)
                log.warning("mesos subscription attempt failed: %s", self.last_error)
            if self._closed:
                return
            if healthy:
                # A subscription that worked resets the backoff: reconnect promptly.
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.info("mesos re-subscribing as framework %s in %.2fs (attempt %d)",
                     self.framework_id or "(new)", delay, self._backoff.failures)
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` before the next subscription attempt, or less if the detector
        names a new leading master meanwhile (a failover: go to it now)."""
        try:
            async with asyncio.timeout(delay):
                await self._leader_moved.wait()
        except TimeoutError:
            return
        # A new leader is a new situation: failures against the old one say nothing
        # about it (it may still be recovering, or its peers not yet aware of it).
        self._backoff.reset()
        log.info("mesos leader changed during backoff; re-subscribing now")

    async def _subscribe_once(self) -> bool:
        """One subscription: connect (following redirects), then read until it ends.

        Returns True if the stream reached SUBSCRIBED and ended without an ERROR event.
        """
        assert self._session is not None
        await self._detector.start()
        url = await self._detector.leader(self._timeout)
        if url is None:
            raise MasterUnavailable("no leading Mesos master is known")
        if self._ssl is not None and url.startswith("http://"):
            url = "https://" + url[len("http://"):]  # ZooKeeper's MasterInfo has no scheme
        self._leader_moved.clear()  # only a change after this point cuts the next backoff
        for _ in range(MAX_REDIRECTS + 1):
            body = calls.subscribe(self.framework_info, self.framework_id)
            log.info("mesos subscribing to %s as framework %s", url, self.framework_id or "(new)")
            async with asyncio.timeout(self._timeout):
                resp = await self._session.post(
                    url + API_PATH, data=_dumps(body), headers=_headers(None, self._auth),
                    allow_redirects=False)
            try:
                if resp.status == 307:
                    target = redirect_target(resp.headers.get("Location", ""), url)
                    log.info("mesos master %s redirected SUBSCRIBE to %s", url, target)
                    url = target
                    continue
                await _check_status(resp, "SUBSCRIBE", ok=(200,))
                stream_id = resp.headers.get("Mesos-Stream-Id")
                if not stream_id:
                    raise MasterUnavailable("SUBSCRIBE answer without Mesos-Stream-Id")
                self._resp = resp
                return await self._read_stream(resp, url, stream_id)
            finally:
                self._resp = None
                self._mark_disconnected()
                resp.close()  # never reuse the stream's connection
        raise MasterUnavailable(f"more than {MAX_REDIRECTS} redirects")

    async def _read_stream(self, resp: aiohttp.ClientResponse, url: str, stream_id: str) -> bool:
        decoder = Decoder()
        subscribed = False
        while not self._closed:
            # Only time spent waiting for the master counts against it, not our handler's.
            # Before SUBSCRIBED, the master owes us an answer within the request timeout.
            window = self.heartbeat_interval * self._missed if subscribed else self._timeout
            try:
                async with asyncio.timeout(window):
                    chunk = await resp.content.readany()
            except TimeoutError:
                log.warning("mesos master %s silent for %.1fs (%d heartbeats); reconnecting",
                            url, window, self._missed)
                return subscribed
            if not chunk:
                log.warning("mesos event stream from %s ended", url)
                return subscribed
            for record in decoder.feed(chunk):
                event = codec.loads(record)
                if not isinstance(event, dict):
                    raise ValueError("event is not a JSON object")
                kind = event.get("type")
                if kind == "HEARTBEAT":
                    continue
                if kind == "SUBSCRIBED":
                    self._on_subscribed(event, url, stream_id)
                    subscribed = True
                try:
                    await self._on_event(event)
                except Exception as e:
                    raise _HandlerFailed(e) from e
                if kind == "ERROR":
                    self._on_error(event, subscribed)
                    return False
                if self._closed:
                    return subscribed
        return subscribed

    def _on_subscribed(self, event: Json, url: str, stream_id: str) -> None:
        sub = event.get("subscribed") or {}
        fid = _id_value(sub.get("framework_id"))
        if fid is None:
            raise ValueError("SUBSCRIBED without framework_id")
        self.framework_id = fid
        hb = sub.get("heartbeat_interval_seconds")
        self.heartbeat_interval = float(hb) if hb else DEFAULT_HEARTBEAT_SECONDS
        self.master_info = sub.get("master_info")
        self.master_url = url
        self.stream_id = stream_id
        self.subscriptions += 1
        self.last_error = ""
        self.connected.set()
        log.info("mesos subscribed framework %s at %s (stream %s, heartbeat %.1fs)",
                 fid, url, stream_id, self.heartbeat_interval)

    def _on_error(self, event: Json, subscribed: bool = False) -> None:
        # Mesos puts the message in the payload; its docs show it at top level.
        msg = str((event.get("error") or {}).get("message") or event.get("message") or "")
        low = msg.lower()
        log.error("mesos ERROR event for framework %s: %s", self.framework_id, msg)
        if "removed" in low:
            raise FrameworkRemoved(self.framework_id, msg)
        if not subscribed and ("principal" in low or "not authorized" in low):
            # "Changing framework's principal is not allowed", "Not authorized to ...":
            # the master refuses who we are; subscribing again cannot help.
            raise AuthenticationFailed(403, msg, "SUBSCRIBE")
        if "failed over" in low and self._stop_on_failover:
            raise FrameworkFailedOver(self.framework_id, msg)

    def _mark_disconnected(self) -> None:
        self.connected.clear()
        self.stream_id = None

    def _on_leader_change(self, url: str | None) -> None:
        # A new leader in ZooKeeper means our stream's master is no longer leading: drop it
        # now rather than wait for the heartbeat watchdog.
        if url is not None:
            self._leader_moved.set()
        resp = self._resp
        if resp is not None and url is not None and url != self.master_url:
            log.info("mesos leader changed to %s; dropping stream from %s", url, self.master_url)
            resp.close()

    # --- calls -----------------------------------------------------------------------------

    async def _call(self, body: Json) -> None:
        kind = str(body["type"])
        stream_id, url, session = self.stream_id, self.master_url, self._session
        if not self.connected.is_set() or stream_id is None or url is None or session is None:
            raise NotConnected(f"{kind}: no live Mesos subscription")
        policy = self._policies[POLICY_BY_CALL.get(kind, SAFE)]
        data = _dumps(body)
        try:
            async for attempt in policy.retrying():
                with attempt:
                    if self.stream_id != stream_id:
                        raise NotConnected(f"{kind}: the subscription ended during the call")
                    try:
                        await self._post_call(session, url, data, stream_id, kind)
                    except Redirected as r:
                        url = r.location
                        raise
        except (Redirected, aiohttp.ClientError, TimeoutError, RuntimeError) as e:
            if self._closed or self.stream_id != stream_id:
                # close() shut the session under us, or the stream died: not a master fault.
                raise NotConnected(f"{kind}: the subscription ended during the call") from e
            if isinstance(e, RuntimeError):
                raise
            raise MasterUnavailable(f"{kind} not delivered: {_describe(e)}") from e

    async def _post_call(self, session: aiohttp.ClientSession, url: str, data: bytes,
                         stream_id: str, kind: str) -> None:
        async with session.post(
            url + API_PATH, data=data, headers=_headers(stream_id, self._auth),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as resp:
            if resp.status == 307:
                raise Redirected(redirect_target(resp.headers.get("Location", ""), url))
            await _check_status(resp, kind, ok=(200, 202))
            await resp.read()

    def _fid(self) -> str:
        if self.framework_id is None:
            raise NotConnected("no framework id yet: not subscribed")
        return self.framework_id

    async def accept(self, offer_ids: Sequence[str], operations: Sequence[Json],
                     refuse_seconds: float | None = None) -> None:
        await self._call(calls.accept(self._fid(), offer_ids, operations, refuse_seconds))

    async def launch(self, offer_ids: Sequence[str], task_infos: Sequence[Json],
                     refuse_seconds: float | None = None) -> None:
        """ACCEPT the offers with one LAUNCH operation."""
        await self.accept(offer_ids, [calls.launch_operation(task_infos)], refuse_seconds)

    async def decline(self, offer_ids: Sequence[str], refuse_seconds: float | None = None) -> None:
        await self._call(calls.decline(self._fid(), offer_ids, refuse_seconds))

    async def accept_inverse_offers(self, ids: Sequence[str],
                                    refuse_seconds: float | None = None) -> None:
        await self._call(calls.accept_inverse_offers(self._fid(), ids, refuse_seconds))

    async def decline_inverse_offers(self, ids: Sequence[str],
                                     refuse_seconds: float | None = None) -> None:
        await self._call(calls.decline_inverse_offers(self._fid(), ids, refuse_seconds))

    async def revive(self, roles: Sequence[str] | None = None) -> None:
        await self._call(calls.revive(self._fid(), roles))

    async def suppress(self, roles: Sequence[str] | None = None) -> None:
        await self._call(calls.suppress(self._fid(), roles))

    async def kill(self, task_id: str, agent_id: str | None,
                   grace_seconds: float | None = None) -> None:
        await self._call(calls.kill(self._fid(), task_id, agent_id, grace_seconds))

    async def shutdown(self, executor_id: str, agent_id: str) -> None:
        await self._call(calls.shutdown(self._fid(), executor_id, agent_id))

    async def acknowledge(self, agent_id: str, task_id: str, uuid: str) -> None:
        await self._call(calls.acknowledge(self._fid(), agent_id, task_id, uuid))

    async def reconcile(self, tasks: Sequence[tuple[str, str | None]]) -> None:
        await self._call(calls.reconcile(self._fid(), tasks))

    async def message(self, agent_id: str, executor_id: str, data: bytes) -> None:
        await self._call(calls.message(self._fid(), agent_id, executor_id, data))

    async def teardown(self) -> None:
        """Remove the framework from Mesos (all its tasks are killed), then ``close()``."""
        await self._call(calls.teardown(self._fid()))
        await self.close()


# --- helpers -------------------------------------------------------------------------------

def _dumps(body: Json) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def basic_auth(principal: str, secret: str) -> str:
    """An HTTP Basic ``Authorization`` value (RFC 7617, UTF-8)."""
    if ":" in principal:
        raise ValueError("a principal may not contain ':' (HTTP Basic separates with it)")
    raw = f"{principal}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _headers(stream_id: str | None, auth: str | None = None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    if stream_id is not None:
        h["Mesos-Stream-Id"] = stream_id
    if auth is not None:
        h["Authorization"] = auth
    return h


async def _check_status(resp: aiohttp.ClientResponse, kind: str, ok: tuple[int, ...]) -> None:
    if resp.status in ok:
        return
    text = ""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        async with asyncio.timeout(5):
            text = (await resp.read())[:2000].decode("utf-8", "replace")
    if resp.status >= 500:
        # 503: no elected leader or still recovering; other 5xx: the master is unwell.
        raise MasterUnavailable(f"{kind}: HTTP {resp.status}: {text.strip()[:200]}")
    if resp.status == 401:
        challenge = resp.headers.get("WWW-Authenticate", "")[:120]
        what = text.strip()[:200] or "unauthorized"
        raise AuthenticationFailed(
            401, f"{what} (WWW-Authenticate: {challenge})" if challenge else what, kind)
    raise MesosCallError(resp.status, text, kind)


# aiohttp's parser quotes what it got instead of an HTTP/1.1 status line; an HTTP/2 server
# (gRPC, such as Corral's own API) opens with a SETTINGS frame: 3 length bytes, type 4.
_NOT_HTTP1 = "Bad status line"
_HTTP2_SETTINGS = re.compile(r"b'\\x00\\x00(\\x[0-9a-f]{2}|[^\\])\\x04")


def _describe(e: BaseException) -> str:
    """One readable line for a failure; never a dump of the bytes a non-Mesos server sent."""
    if isinstance(e, aiohttp.ClientResponseError) and _NOT_HTTP1 in str(e.message):
        where = str(e.request_info.real_url.origin()) if e.request_info else "the master"
        if _HTTP2_SETTINGS.search(str(e.message)):
            return (f"{where} answered in HTTP/2, not as a Mesos master: is it a gRPC port "
                    "(such as Corral's own --api)? A Mesos master serves HTTP/1.1, by "
                    "default on port 5050")
        return f"{where} did not answer in HTTP/1.1: is it a Mesos master?"
    if isinstance(e, aiohttp.ClientConnectorError):
        # aiohttp's own text adds "ssl:default" and the raw connect() tuple.
        err = e.os_error
        why = (os.strerror(err.errno) if isinstance(err.errno, int) and err.errno > 0
               else err.strerror or type(err).__name__)
        return f"cannot connect to {e.host}:{e.port}: {why.lower()}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
