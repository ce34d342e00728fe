"""Leader election among Corral scheduler replicas, with an epoch that fences old leaders.

Vocabulary:
  *contender node*  ``<root>/election/n_<uuid>_<seq>``, ephemeral-sequential, one per replica;
                    its data is the replica's ``LeaderInfo`` JSON. The lowest sequence leads.
  *epoch*           ``<root>/epoch``, a counter the new leader bumps (compare-and-set) before
                    it acts. Its data version after the bump is the leader's *fence*: every
                    state write checks it, so a deposed leader's late write fails.
  *events*          ``Elected(fence)`` when this replica becomes leader, ``Deposed(reason)``
                    when it must stop acting. Delivered in order on the asyncio loop given
                    (through ``call_soon_threadsafe``; kazoo calls us on its own threads).

Each replica watches only its predecessor, so a leader change wakes one replica, not all.
A replica that loses its connection (SUSPENDED) or session (LOST) is deposed at once, before
it knows whether it is still lowest: it cannot know whether a successor is acting. When the
connection returns it re-checks and, if it still holds the lowest node, takes a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.protocol.states import KazooState, WatchedEvent

from corral.store.errors import DuplicateIdentity, StateCorrupt, StoreError
from corral.store.layout import election_dir, epoch_path
from corral.store.retry import TRANSIENT, operation_policy
from corral_executor.net import accepts_connections

log = logging.getLogger(__name__)

_SEQ_LEN = 10  # ZooKeeper appends a 10-digit sequence number
_SAFETY_RECHECK_S = 5.0  # re-check now and then even if no watch fired (belt and braces)


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """What a replica publishes in its contender node; followers redirect to api_address."""

    identity: str
    api_address: str
    pid: int
    started_at: float
    host: str = ""  # the replica's hostname ("" from replicas that predate the field)
    node: str = ""  # the contender node's name (not stored in the payload)

    def payload(self) -> bytes:
        d = asdict(self)
        del d["node"]
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes, node: str) -> LeaderInfo:
        try:
            d = json.loads(data)
            return cls(identity=str(d["identity"]), api_address=str(d["api_address"]),
                       pid=int(d["pid"]), started_at=float(d["started_at"]),
                       host=str(d.get("host", "")), node=node)
        except (ValueError, KeyError, TypeError) as e:
            raise StateCorrupt(node, f"contender node holds no valid LeaderInfo: {e}") from None


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of leadership carried by every state write.

    ``epoch``: the number this leader set; ``version``: the epoch znode's data version after
    the bump; ``lease``: the path of this leader's contender node.
    """

    epoch: int
    version: int
    lease: str


@dataclass(frozen=True, slots=True)
class Elected:
    fence: Fence

    @property
    def epoch(self) -> int:
        return self.fence.epoch


@dataclass(frozen=True, slots=True)
class Deposed:
    reason: str


LeadershipEvent = Elected | Deposed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True




def _seq(name: str) -> int | None:
    tail = name[-_SEQ_LEN:]
    return int(tail) if len(name) > _SEQ_LEN and tail.isdigit() else None


def _ordered(children: list[str]) -> list[str]:
    """Contender nodes lowest sequence first; foreign names are ignored."""
    return sorted((c for c in children if _seq(c) is not None), key=lambda c: _seq(c) or 0)


class LeaderElection:
    """Contend for leadership under ``<root>/election``.

    ``join()`` registers this replica (raising ``DuplicateIdentity`` if a live replica uses
    the same identity) and starts a small worker thread that keeps the contender node and
    the predecessor watch up to date. Events go to ``events``: an ``asyncio.Queue`` if a
    ``loop`` is given (or ``join_async`` is used), otherwise a thread-safe ``queue.Queue``;
    ``on_event`` is also called with each event (on the loop, if any).
    """

    def __init__(
        self,
        client: KazooClient,
        root: str,
        identity: str,
        api_address: str = "",
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_event: Callable[[LeadershipEvent], None] | None = None,
        duplicate_wait: float | None = None,
    ) -> None:
        if not identity or "/" in identity:
            raise ValueError(f"identity {identity!r} must be a non-empty string without '/'")
        self._client = client
        self._root = root
        self._dir = election_dir(root)
        self.info = LeaderInfo(identity, api_address, os.getpid(), time.time(),
                               socket.gethostname())
        self._loop = loop
        self._on_event = on_event
        # A replica restarted right after a crash finds its old node until that session
        # times out; wait that long before calling the identity a duplicate.
        self._duplicate_wait = (
            duplicate_wait if duplicate_wait is not None else client._session_timeout / 1000 + 1
        )
        self.events: asyncio.Queue[LeadershipEvent] | queue.Queue[LeadershipEvent] = (
            asyncio.Queue() if loop else queue.Queue()
        )
        self._prefix = f"n_{uuid.uuid4().hex}_"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._joined = False
        self._node: str | None = None  # our contender node's name
        self._fence: Fence | None = None
        self._thread: threading.Thread | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._fence is not None

    @property
    def fence(self) -> Fence | None:
        """The current fence while leader, else None."""
        return self._fence

    def join(self) -> None:
        """Register as a contender; leadership is then reported through ``events``."""
        if self._joined:
            return
        self._client.ensure_path(self._dir)
        self._refuse_duplicate_identity()
        self._joined = True
        self._client.add_listener(self._on_state)
        try:
            self._create_node()
            self._check_race_with_same_identity()
        except BaseException:
            self._client.remove_listener(self._on_state)
            self._joined = False
            raise
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name=f"corral-election-{self.info.identity}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    async def join_async(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.events = asyncio.Queue()
        await asyncio.to_thread(self.join)

    def resign(self) -> None:
        """Give up leadership (or candidacy) now: our node is deleted so the next replica
        takes over without waiting for a session timeout. ``join()`` may be called again."""
        with self._lock:
            self._joined = False
            node, self._node = self._node, None
            was_leader = self._fence is not None
            self._fence = None
            if was_leader:
                self._emit(Deposed("resigned"))
        self._client.remove_listener(self._on_state)
        if node:
            try:
                operation_policy(deadline_s=5.0)(self._client.delete, f"{self._dir}/{node}")
            except NoNodeError:
                pass
            except (KazooException, *TRANSIENT) as e:
                # The node dies with the session anyway; a successor just waits longer.
                log.warning("could not delete contender node %s on resign: %s", node, e)

    async def resign_async(self) -> None:
        await asyncio.to_thread(self.resign)

    def close(self) -> None:
        """Resign and stop the worker thread (does not close the kazoo client)."""
        self.resign()
        self._stopping = True
        self._wake.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def leader(self) -> LeaderInfo | None:
        """The current leader's published info (lowest contender), or None if nobody
        contends."""
        try:
            children = self._client.get_children(self._dir)
        except NoNodeError:
            return None
        for name in _ordered(children):
            try:
                data, _ = self._client.get(f"{self._dir}/{name}")
            except NoNodeError:
                continue  # vanished between the listing and the read: try the next one
            return LeaderInfo.parse(data, name)
        return None

    async def leader_async(self) -> LeaderInfo | None:
        return await asyncio.to_thread(self.leader)

    # -- joining ----------------------------------------------------------------------

    def _contenders(self) -> list[LeaderInfo]:
        out = []
        for name in _ordered(self._client.get_children(self._dir)):
            try:
                data, _ = self._client.get(f"{self._dir}/{name}")
            except NoNodeError:
                continue
            try:
                out.append(LeaderInfo.parse(data, name))
            except StateCorrupt:
                log.warning("ignoring unreadable contender node %s/%s", self._dir, name)
        return out

    def _same_identity(self) -> list[LeaderInfo]:
        return [c for c in self._contenders()
                if c.identity == self.info.identity and not c.node.startswith(self._prefix)]

    def _seems_alive(self, other: LeaderInfo) -> bool:
        """Positive evidence that the replica behind ``other`` still runs: on this host,
        its process exists; elsewhere, something accepts connections at its API address
        (unless that address is ours: then it is our own crashed predecessor)."""
        if other.host and other.host == self.info.host:
            return _pid_alive(other.pid)
        if other.api_address and other.api_address != self.info.api_address:
            return accepts_connections(other.api_address, timeout=0.5)
        return False

    def _refuse_duplicate_identity(self) -> None:
        deadline = time.monotonic() + self._duplicate_wait
        alive: dict[str, bool] = {}  # node -> seems alive (probed once per node)
        while True:
            dups = self._same_identity()
            if not dups:
                return
            for d in dups:
                if d.node not in alive:
                    alive[d.node] = self._seems_alive(d)
            live = [d for d in dups if alive[d.node]]
            # A live duplicate is refused at once; a node without a live process may be
            # our own crashed predecessor's: it vanishes when its session times out.
            if live or time.monotonic() >= deadline:
                d = (live or dups)[0]
                raise DuplicateIdentity(
                    f"another scheduler replica already runs as {d.identity!r} (pid {d.pid}, "
                    f"API {d.api_address or 'unknown'}, node {self._dir}/{d.node}); give each "
                    "replica a distinct identity"
                )
            time.sleep(0.1)

    def _check_race_with_same_identity(self) -> None:
        """Two replicas that joined at the same moment both passed the first check; the
        one with the higher sequence withdraws."""
        mine = _seq(self._node or "") or 0
        for d in self._same_identity():
            if (_seq(d.node) or 0) < mine:
                self.resign()
                raise DuplicateIdentity(
                    f"another scheduler replica joined as {d.identity!r} at the same time "
                    f"(pid {d.pid}, node {self._dir}/{d.node}); give each replica a distinct "
                    "identity"
                )

    def _create_node(self) -> None:
        """Create our contender node. The name carries a random prefix so that after a
        connection loss during the create we can find the node we may already have made."""

        def attempt() -> str:
            for name in self._client.get_children(self._dir):
                if name.startswith(self._prefix):
                    return name
            path = self._client.create(
                f"{self._dir}/{self._prefix}", self.info.payload(), ephemeral=True,
                sequence=True,
            )
            return path.rsplit("/", 1)[1]

        name = operation_policy()(attempt)
        with self._lock:
            if self._joined:
                self._node = name
                name = ""
        if name:
            # resign() ran while we were creating: do not leave a node blocking others.
            with contextlib.suppress(KazooException):
                self._client.delete(f"{self._dir}/{name}")
            return
        log.info("contending for leadership as %s (%s)", self.info.identity, self._node)

    # -- the worker thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(_SAFETY_RECHECK_S)
            self._wake.clear()
            if self._stopping:
                return
            if not self._joined:
                continue
            try:
                self._check()
            except (SessionExpiredError, *TRANSIENT) as e:
                # The state listener wakes us when the connection is back.
                log.debug("leadership check interrupted: %s", e)
            except StoreError as e:
                log.error("cannot lead: %s", e)
                self._depose(str(e))
            except Exception:
                log.exception("leadership check failed")

    def _check(self) -> None:
        children = self._client.get_children(self._dir)
        node = self._node
        if node is None or node not in children:
            # Our session expired (ephemeral node gone) or an operator deleted it.
            self._depose("our contender node vanished")
            if not self._joined:
                return
            self._create_node()
            children = self._client.get_children(self._dir)
            node = self._node
        ordered = _ordered(children)
        if node not in ordered:
            self._wake.set()
            return
        idx = ordered.index(node)
        path = f"{self._dir}/{node}"
        if idx == 0:
            # Watch our own node too: if it is deleted under us we must step down.
            if self._client.exists(path, watch=self._on_watch) is None:
                self._wake.set()
                return
            if self._fence is None:
                fence = self._bump_epoch(path)
                with self._lock:
                    # The connection may have dropped while we bumped; the listener then
                    # already ran and this fence must not be announced.
                    if (self._client.state == KazooState.CONNECTED and self._joined
                            and self._node == node and self._fence is None):
                        self._fence = fence
                        self._emit(Elected(fence))
                        log.info("%s elected leader, epoch %d", self.info.identity, fence.epoch)
                    else:
                        self._wake.set()
            return
        if self._fence is not None:
            self._depose("a lower contender node appeared")
        predecessor = f"{self._dir}/{ordered[idx - 1]}"
        if self._client.exists(predecessor, watch=self._on_watch) is None:
            self._wake.set()  # gone between listing and watching: look again

    def _bump_epoch(self, lease: str) -> Fence:
        """Compare-and-set ``<root>/epoch`` to epoch+1, only while our node exists."""
        path = epoch_path(self._root)
        for _ in range(20):
            try:
                data, stat = self._client.get(path)
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    self._client.create(path, b"0", makepath=True)
                continue
            try:
                epoch = int(data.decode())
            except ValueError:
                raise StateCorrupt(path, f"epoch must be a decimal number, got {data[:40]!r}"
                                   ) from None
            tx = self._client.transaction()
            tx.check(lease, -1)
            tx.set_data(path, str(epoch + 1).encode(), version=stat.version)
            results = tx.commit()
            if not any(isinstance(r, Exception) for r in results):
                return Fence(epoch=epoch + 1, version=results[1].version, lease=lease)
            if isinstance(results[0], NoNodeError):
                raise SessionExpiredError("contender node vanished while taking the epoch")
            if not isinstance(results[1], BadVersionError):
                raise StoreError(f"{path}: epoch bump failed: {results}")
        raise StoreError(f"{path}: epoch kept changing under us; another leader is active?")

    def _depose(self, reason: str) -> None:
        with self._lock:
            if self._fence is not None:
                self._fence = None
                self._emit(Deposed(reason))
                log.warning("%s deposed: %s", self.info.identity, reason)

    # -- kazoo callbacks (kazoo's threads: never block here) ----------------------------

    def _on_state(self, state: KazooState) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            self._depose(f"ZooKeeper connection {str(state).lower()}")
        else:
            self._wake.set()

    def _on_watch(self, _event: WatchedEvent) -> None:
        self._wake.set()

    def _emit(self, event: LeadershipEvent) -> None:
        if self._loop is None:
            self._deliver(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            log.debug("event loop closed; dropped %s", event)

    def _deliver(self, event: Any) -> None:
        self.events.put_nowait(event)
        if self._on_event is not None:
            self._on_event(event)
