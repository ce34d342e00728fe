"""localmesos masters in ZooKeeper, the way Mesos masters use it.

A Mesos master announces itself as an EPHEMERAL|SEQUENTIAL child ``json.info_<10 digits>``
of the ``zk://`` path holding its MasterInfo as JSON; the lowest sequence number leads and
every master and detector watches the group. Here each master's node is held by a
``Contender`` — a small process of its own (``corral.localmesos.contender``), so that a
crashed master's node outlives it until ZooKeeper expires the session, as in Mesos.
``LeaderWatch`` is the group watch of the localmesos process: it reports the children and
the leading one (with its MasterInfo) to the event loop on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.recipe.watchers import ChildrenWatch

from corral.mesos.detect import leader_child

log = logging.getLogger("localmesos.zk")


def parse_zk_url(url: str) -> tuple[str, str]:
    """``zk://h1:p1,h2:p2/mesos`` → (``h1:p1,h2:p2``, ``/mesos``)."""
    parsed = urlparse(url)
    if parsed.scheme != "zk" or not parsed.netloc:
        raise ValueError(f"not a zk:// URL: {url!r}")
    path = parsed.path.rstrip("/") or "/"
    return parsed.netloc, path


class Contender:
    """The parent's handle on one master's contender process."""

    def __init__(self, url: str, session_timeout: float) -> None:
        self.hosts, self.path = parse_zk_url(url)
        self.session_timeout = session_timeout
        self.node: str | None = None
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, master_info: dict[str, Any], timeout: float = 30.0) -> str:
        """Start the process and wait (bounded) for its node name. Interrupted or
        failed, the process is killed."""
        try:
            return await self._start(master_info, timeout)
        except BaseException:
            self._kill_now()
            raise

    async def _start(self, master_info: dict[str, Any], timeout: float) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.localmesos.contender", self.hosts, self.path,
            f"{self.session_timeout:g}", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(master_info).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            line = b""
        text = line.decode(errors="replace").strip()
        if not text.startswith("node "):
            raise RuntimeError(f"cannot register the master in ZooKeeper at "
                               f"{self.hosts}{self.path} (contender exited with "
                               f"{self.proc.returncode})")
        self.node = text.split(" ", 1)[1]
        return self.node

    def _kill_now(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def crash(self) -> None:
        """SIGKILL: the session stays until ZooKeeper expires it."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def close(self) -> None:
        """A clean stop: the session is closed and the node goes at once."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(5.0):
                await proc.wait()
        except TimeoutError:
            await self.crash()


Listener = Callable[[frozenset[str], str | None, dict[str, Any] | None], None]


class LeaderWatch:
    """Watches the master group; calls ``listener(children, leader node, leader info)``
    in the event loop after every change."""

    def __init__(self, url: str, listener: Listener, timeout: float = 10.0) -> None:
        self.hosts, self.path = parse_zk_url(url)
        self.timeout = timeout
        self._listener = listener
        self._loop: asyncio.AbstractEventLoop | None = None
        self._zk: KazooClient | None = None
        self._closed = False

    def start(self) -> None:
        """Connect and start watching (blocking: run it in a thread)."""
        zk = KazooClient(hosts=self.hosts, timeout=self.timeout)
        zk.start(timeout=self.timeout)
        self._zk = zk
        zk.ensure_path(self.path)
        ChildrenWatch(zk, self.path, self._changed)

    async def start_async(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.start)

    def _changed(self, children: list[str]) -> bool:
        if self._closed:
            return False        # stops the watch
        leader = leader_child(children)
        info: dict[str, Any] | None = None
        if leader is not None and self._zk is not None:
            try:
                data, _ = self._zk.get(f"{self.path}/{leader}")
                parsed = json.loads(data.decode("utf-8"))
                info = parsed if isinstance(parsed, dict) else None
            except (NoNodeError, KazooException, ValueError, UnicodeDecodeError) as e:
                log.warning("cannot read the leading master's node %s: %s", leader, e)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._listener, frozenset(children), leader, info)
        return True

    def close(self) -> None:
        self._closed = True
        zk, self._zk = self._zk, None
        if zk is not None:
            with contextlib.suppress(KazooException, OSError):
                zk.stop()
            with contextlib.suppress(KazooException, OSError):
                zk.close()
