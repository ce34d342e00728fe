"""Finding the leading Mesos master: a fixed address, or a ZooKeeper group.

``master`` strings: ``http://host:port`` / ``https://host:port`` / ``host:port`` name one
master (a non-leader redirects us with 307); ``zk://h1:p1,h2:p2/path`` names the
ZooKeeper group where each master holds an ephemeral sequential child
``json.info_<10 digits>`` carrying its MasterInfo as JSON. The lowest sequence number
leads; every other child (``log_replicas``, ``info_`` protobuf entries) is ignored.

A detector answers ``await leader()`` with a base URL ``http://host:port`` and calls its
listeners (in the event loop) when the leader changes. kazoo runs its own threads; every
result crosses into the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

log = logging.getLogger("corral.mesos.detect")

LEADER_PREFIX = "json.info_"
STOP_WAIT_SECONDS = 2.0  # the longest close() waits for kazoo to stop
_SEQ_RE = re.compile(r"^json\.info_(\d{10})$")


class DetectorError(ValueError):
    """A master address that cannot be understood."""


class MasterDetector(Protocol):
    async def start(self) -> None: ...
    async def leader(self, timeout: float) -> str | None: ...
    def add_listener(self, fn: Callable[[str | None], None]) -> None: ...
    async def close(self) -> None: ...


SCHEMES = ("http", "https", "zk")


def _normalise_http(master: str) -> str:
    m = master.strip().rstrip("/")
    if "://" in m:
        scheme, rest = m.split("://", 1)
        if scheme.lower() not in ("http", "https"):
            raise DetectorError(
                f"unknown scheme {scheme + '://'!r} in master address {master!r}: use "
                "http://host:port, https://host:port or zk://host:port[,host:port]/path")
        scheme = scheme.lower()
    else:
        scheme, rest = "http", m
    hostport = rest.split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DetectorError(f"master address needs host:port, got {master!r}")
    return f"{scheme}://{hostport}"


class StaticDetector:
    """One configured master address; redirects are handled by the client."""

    def __init__(self, master: str) -> None:
        self.url = _normalise_http(master)

    async def start(self) -> None:
        return None

    async def leader(self, timeout: float) -> str | None:
        return self.url

    def add_listener(self, fn: Callable[[str | None], None]) -> None:
        # A fixed address never changes.
        return None

    async def close(self) -> None:
        return None


def leader_child(children: list[str]) -> str | None:
    """The child naming the leader: the lowest ``json.info_`` sequence number."""
    best: tuple[int, str] | None = None
    for c in children:
        m = _SEQ_RE.match(c)
        if m and (best is None or int(m.group(1)) < best[0]):
            best = (int(m.group(1)), c)
    return None if best is None else best[1]


def master_url_from_info(info: Mapping[str, Any]) -> str:
    """``http://host:port`` from a MasterInfo JSON object.

    ``address`` (ip or hostname, port) is preferred; older masters only set ``ip`` as a
    uint32 in network byte order (so 127.0.0.1 is 16777343) and ``port``.
    """
    addr = info.get("address")
    if isinstance(addr, Mapping) and addr.get("port") is not None:
        host = addr.get("ip") or addr.get("hostname")
        if host:
            return f"http://{host}:{int(addr['port'])}"
    ip, port = info.get("ip"), info.get("port")
    if ip is not None and port is not None:
        host = socket.inet_ntoa(struct.pack("<I", int(ip) & 0xFFFFFFFF))
        return f"http://{host}:{int(port)}"
    if info.get("hostname") and port is not None:
        return f"http://{info['hostname']}:{int(port)}"
    raise DetectorError(f"MasterInfo without an address: {dict(info)!r}")


def parse_zk_url(master: str) -> tuple[str, str]:
    """``zk://h1:p1,h2:p2/mesos`` -> (``h1:p1,h2:p2``, ``/mesos``)."""
    if not master.startswith("zk://"):
        raise DetectorError(f"not a zk:// address: {master!r}")
    rest = master[len("zk://"):]
    if "@" in rest.split("/", 1)[0]:
        raise DetectorError("zk:// credentials are not supported")
    hosts, slash, path = rest.partition("/")
    if not hosts or not slash or not path.strip("/"):
        raise DetectorError(f"zk:// address needs hosts and a path: {master!r}")
    return hosts, "/" + path.strip("/")


class ZooKeeperDetector:
    """Follows the Mesos leader group in ZooKeeper.

    kazoo clients are started and stopped only here, one at a time, and ``close()``
    waits for a stop at most ``stop_wait`` seconds: kazoo's own ``start(timeout)`` would
    stop the client from its thread on a timeout, racing our ``close()`` (kazoo then
    raises a bare ``Exception`` from ``close()``), so a start is ``start_async()`` plus
    our own bounded wait for CONNECTED.
    """

    def __init__(self, master: str, *, connect_timeout: float = 10.0,
                 stop_wait: float = STOP_WAIT_SECONDS) -> None:
        self.hosts, self.path = parse_zk_url(master)
        self._connect_timeout = connect_timeout
        self._stop_wait = stop_wait
        self._zk: KazooClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leader: str | None = None
        self._known = asyncio.Event()
        self._listeners: list[Callable[[str | None], None]] = []
        self._closed = False
        # Watch callbacks and the initial read may overlap; one refresh at a time keeps
        # the published leader in the order ZooKeeper changed.
        self._refresh_lock = threading.Lock()
        self._stop_lock = threading.Lock()       # one kazoo start or stop at a time
        self._stops: set[asyncio.Future[None]] = set()  # stops under way, for close()

    async def start(self) -> None:
        if self._zk is not None or self._closed:
            return
        loop = self._loop = asyncio.get_running_loop()
        zk = KazooClient(hosts=self.hosts, timeout=self._connect_timeout)
        connected = asyncio.Event()

        def on_state(state: str) -> None:
            if state == KazooState.CONNECTED:
                with contextlib.suppress(RuntimeError):  # loop closing under us
                    loop.call_soon_threadsafe(connected.set)
            self._on_state(zk, state)

        zk.add_listener(on_state)
        self._zk = zk
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.to_thread(self._start_client, zk)
                await connected.wait()
        except TimeoutError:
            await self._shutdown(zk)
            raise DetectorError(f"cannot connect to ZooKeeper at {self.hosts}") from None
        except BaseException:
            # Cancelled (close()) or kazoo failed: stop this client in the background;
            # close() waits for it.
            self._stop_in_background(zk)
            raise
        await asyncio.to_thread(self._refresh)

    def add_listener(self, fn: Callable[[str | None], None]) -> None:
        self._listeners.append(fn)

    async def leader(self, timeout: float) -> str | None:
        if self._leader is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._known.wait()
        return self._leader

    async def close(self) -> None:
        """Stop following; returns within about ``stop_wait`` seconds whatever ZooKeeper
        and kazoo are doing (a kazoo stop still under way then ends on its own threads)."""
        self._closed = True
        if self._zk is not None:
            self._stop_in_background(self._zk)
        pending = list(self._stops)
        if not pending:
            return
        _done, not_done = await asyncio.wait(pending, timeout=self._stop_wait)
        if not_done:
            log.warning("zk master detection: kazoo did not stop within %.1fs; its threads "
                        "will end on their own", self._stop_wait)

    async def _shutdown(self, zk: KazooClient) -> None:
        """Stop ``zk`` and wait (shielded) until it has stopped."""
        await asyncio.shield(self._stop_in_background(zk))

    def _stop_in_background(self, zk: KazooClient) -> asyncio.Future[None]:
        if self._zk is zk:
            self._zk = None
        fut = asyncio.ensure_future(asyncio.to_thread(self._stop_client, zk))
        self._stops.add(fut)
        fut.add_done_callback(self._stops.discard)
        return fut

    def _start_client(self, zk: KazooClient) -> None:
        with self._stop_lock:  # a stop asked for meanwhile runs after, never interleaved
            zk.start_async()

    def _stop_client(self, zk: KazooClient) -> None:
        with self._stop_lock:
            try:
                zk.stop()
                zk.close()
            except Exception as e:  # kazoo raises bare Exception from close()
                log.warning("zk master detection: stopping the ZooKeeper client: %r", e)

    # --- kazoo threads -----------------------------------------------------------------

    def _on_state(self, zk: KazooClient, state: str) -> None:
        # Watches die with a lost session; re-read (off the connection thread) once back.
        current = self._zk
        if (state == KazooState.CONNECTED and current is not None and current is zk
                and not self._closed):
            current.handler.spawn(self._refresh)

    def _refresh(self, _event: object = None) -> None:
        """Read the group, publish the leader, and leave a watch for the next change."""
        with self._refresh_lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        zk = self._zk
        if zk is None or self._closed:
            return
        for _ in range(5):  # bounded: the leader may vanish between list and read
            try:
                try:
                    children = zk.get_children(self.path, watch=self._refresh)
                except NoNodeError:
                    # The group does not exist yet: wake up when it is created.
                    if zk.exists(self.path, watch=self._refresh) is not None:
                        continue
                    self._publish(None)
                    return
                child = leader_child(children)
                if child is None:
                    self._publish(None)
                    return
                data, _stat = zk.get(f"{self.path}/{child}")
            except NoNodeError:
                continue
            except (KazooException, KazooTimeoutError) as e:
                # Connection trouble: keep the last answer; _on_state re-runs us.
                log.warning("zk master detection read failed: %r", e)
                return
            try:
                url = master_url_from_info(json.loads(data.decode("utf-8")))
            except (ValueError, UnicodeDecodeError, DetectorError) as e:
                log.error("unreadable MasterInfo in %s/%s: %s", self.path, child, e)
                url = None
            self._publish(url)
            return

    def _publish(self, url: str | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing under us
            loop.call_soon_threadsafe(self._set_leader, url)

    # --- event loop ----------------------------------------------------------------------

    def _set_leader(self, url: str | None) -> None:
        if url == self._leader:
            return
        log.info("mesos leading master per zk %s%s: %s", self.hosts, self.path, url or "none")
        self._leader = url
        if url is None:
            self._known.clear()
        else:
            self._known.set()
        for fn in list(self._listeners):
            fn(url)


def check_master(master: str) -> None:
    """Raise ``DetectorError`` (naming the problem) if ``master`` cannot be used; no I/O."""
    if master.strip().startswith("zk://"):
        parse_zk_url(master.strip())
    else:
        _normalise_http(master)


def detector_for(master: str, *, connect_timeout: float = 10.0) -> MasterDetector:
    """The detector for a ``master`` string (see module docstring)."""
    if master.startswith("zk://"):
        return ZooKeeperDetector(master, connect_timeout=connect_timeout)
    return StaticDetector(master)
