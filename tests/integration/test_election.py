"""Leader election against a real ZooKeeper: hand-over, expiry, restart, duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from corral.store.connection import close, connect
from corral.store.election import (
    Deposed,
    Elected,
    LeaderElection,
    LeaderInfo,
    LeadershipEvent,
)
from corral.store.errors import DuplicateIdentity, ZooKeeperUnavailable
from corral.store.layout import election_dir
from tests.zk import ZooKeeperServer, expire_session, four_letter, free_port

pytestmark = pytest.mark.zk

SESSION = 1.5  # seconds; the test server's tick of 200 ms allows 0.4..60 s

MakeClient = Callable[..., tuple[KazooClient, str]]


@pytest.fixture
def make_client(zk_url: str) -> Iterator[MakeClient]:
    made: list[KazooClient] = []

    def make(session_timeout: float = SESSION) -> tuple[KazooClient, str]:
        client, address = connect(zk_url, session_timeout=session_timeout, connect_within=10)
        made.append(client)
        return client, address.path

    yield make
    for c in made:
        close(c)


@pytest.fixture
def elections() -> Iterator[list[LeaderElection]]:
    made: list[LeaderElection] = []
    yield made
    for e in made:
        e.close()
    for e in made:
        assert e._thread is None or not e._thread.is_alive()


def contender(make: MakeClient, made: list[LeaderElection], identity: str,
              **kw: object) -> tuple[LeaderElection, KazooClient]:
    client, root = make()
    e = LeaderElection(client, root, identity, f"127.0.0.1:{9000 + len(made)}", **kw)  # type: ignore[arg-type]
    made.append(e)
    return e, client


def next_event(e: LeaderElection, timeout: float = 10.0) -> LeadershipEvent:
    assert isinstance(e.events, queue.Queue)
    return e.events.get(timeout=timeout)


def no_event(e: LeaderElection, within: float = 0.5) -> None:
    assert isinstance(e.events, queue.Queue)
    with pytest.raises(queue.Empty):
        e.events.get(timeout=within)


def test_lowest_leads_follower_redirects_and_resign_hands_over(
    make_client: MakeClient, elections: list[LeaderElection]
) -> None:
    a, _ = contender(make_client, elections, "a")
    b, _ = contender(make_client, elections, "b")
    a.join()
    first = next_event(a)
    assert isinstance(first, Elected) and first.epoch == 1 and a.is_leader
    b.join()
    no_event(b)
    info = b.leader()
    assert info is not None and info.identity == "a" and info.api_address == "127.0.0.1:9000"

    a.resign()
    assert next_event(a) == Deposed("resigned")
    took_over = next_event(b, timeout=5)
    assert isinstance(took_over, Elected) and took_over.epoch == 2
    assert b.leader() is not None and b.leader().identity == "b"  # type: ignore[union-attr]
    assert not a.is_leader and a.leader().identity == "b"  # type: ignore[union-attr]


def _watchers_by_path(port: int) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    path = ""
    for line in four_letter(port, "wchp").splitlines():
        if line.startswith("/"):
            path = line.strip()
            out[path] = set()
        elif line.strip():
            out[path].add(line.strip())
    return out


def test_each_contender_watches_only_its_predecessor(
    make_client: MakeClient, elections: list[LeaderElection], zk_server: ZooKeeperServer
) -> None:
    es = []
    for name in ("a", "b", "c", "d"):
        e, client = contender(make_client, elections, name)
        e.join()
        es.append((e, f"{client.client_id[0]:#x}"))
    assert isinstance(next_event(es[0][0]), Elected)
    nodes = [f"{e._dir}/{e._node}" for e, _ in es]
    deadline = time.monotonic() + 5
    while True:
        watched = _watchers_by_path(zk_server.port)
        # a watches itself (to notice its own deletion); each other contender only the node
        # right before it: one leader change wakes one replica.
        expected = [{es[0][1], es[1][1]}, {es[2][1]}, {es[3][1]}, set()]
        if [watched.get(n, set()) for n in nodes] == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [watched.get(n, set()) for n in nodes] == expected


def test_leader_session_expiry_deposes_it_and_elects_the_other(
    make_client: MakeClient, elections: list[LeaderElection], zk_server: ZooKeeperServer
) -> None:
    a, a_client = contender(make_client, elections, "a")
    b, _ = contender(make_client, elections, "b")
    a.join()
    assert isinstance(next_event(a), Elected)
    b.join()

    expire_session(a_client, zk_server.hosts)
    deposed = next_event(a)
    assert isinstance(deposed, Deposed) and deposed.reason.startswith("ZooKeeper connection")
    elected = next_event(b, timeout=10)
    assert isinstance(elected, Elected) and elected.epoch == 2
    # a comes back as a follower under its new session, behind b.
    deadline = time.monotonic() + 10
    while not _has_node(a, a_client):
        assert time.monotonic() < deadline, "a did not rejoin after its session expired"
        time.sleep(0.05)
    no_event(a, within=0.3)
    assert a.leader().identity == "b"  # type: ignore[union-attr]


def _has_node(e: LeaderElection, client: KazooClient) -> bool:
    try:
        return e._node is not None and e._node in client.get_children(e._dir)
    except KazooException:  # the client is still re-establishing its session
        return False


def test_zookeeper_restart_deposes_then_reelects(
    make_client: MakeClient, elections: list[LeaderElection], zk_server: ZooKeeperServer
) -> None:
    a, _ = contender(make_client, elections, "a")
    b, _ = contender(make_client, elections, "b")
    a.join()
    assert isinstance(next_event(a), Elected)
    b.join()

    zk_server.restart()
    deposed = next_event(a)
    assert isinstance(deposed, Deposed) and "suspended" in deposed.reason
    # Whoever holds the lowest node after the restart leads again, with a new epoch.
    got: list[tuple[str, LeadershipEvent]] = []
    deadline = time.monotonic() + 20
    while not any(isinstance(ev, Elected) for _, ev in got):
        assert time.monotonic() < deadline, f"nobody re-elected after restart: {got}"
        for name, e in (("a", a), ("b", b)):
            with contextlib.suppress(queue.Empty):
                got.append((name, e.events.get(timeout=0.1)))  # type: ignore[call-arg]
    winner, ev = next((n, ev) for n, ev in got if isinstance(ev, Elected))
    assert isinstance(ev, Elected) and ev.epoch >= 2
    assert (a if winner == "a" else b).leader().identity == winner  # type: ignore[union-attr]


def test_same_identity_twice_is_refused(
    make_client: MakeClient, elections: list[LeaderElection]
) -> None:
    first, _ = contender(make_client, elections, "sched-1")
    first.join()
    again, _ = contender(make_client, elections, "sched-1", duplicate_wait=0.3)
    with pytest.raises(DuplicateIdentity) as e:
        again.join()
    assert "'sched-1'" in str(e.value) and "distinct identity" in str(e.value)
    assert first.is_leader or isinstance(next_event(first), Elected)
    # Once the first one is gone the identity is free again.
    first.resign()
    again.join()
    assert any(isinstance(next_event(again), Elected) for _ in range(1))


def _planted(client: KazooClient, root: str, info: LeaderInfo) -> str:
    """A contender node as another replica would have made it; returns its path."""
    client.ensure_path(election_dir(root))
    return client.create(f"{election_dir(root)}/n_{uuid.uuid4().hex}_", info.payload(),
                         ephemeral=True, sequence=True)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # reaped: no process has it (until the kernel reuses it)


def test_a_live_duplicate_is_refused_at_once_a_dead_one_is_waited_out(
    make_client: MakeClient, elections: list[LeaderElection]
) -> None:
    client, root = make_client()
    wait = 3.0
    # Live, on this host (this very process): refused without waiting.
    here = LeaderInfo("sched-1", "127.0.0.1:9001", os.getpid(), time.time(),
                      socket.gethostname())
    node = _planted(client, root, here)
    e, _ = contender(make_client, elections, "sched-1", duplicate_wait=wait)
    started = time.monotonic()
    with pytest.raises(DuplicateIdentity, match="already runs as 'sched-1'"):
        e.join()
    assert time.monotonic() - started < 1.0
    client.delete(node)

    # Live on another host: its API address accepts connections.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        node = _planted(client, root, LeaderInfo("sched-1", addr, 1, time.time(), "elsewhere"))
        started = time.monotonic()
        with pytest.raises(DuplicateIdentity):
            e.join()
        assert time.monotonic() - started < 1.0
    client.delete(node)

    # A crashed predecessor on this host (its pid is gone): its node is waited out, and
    # once its session ends (here: the node is deleted) the identity is free.
    dead = LeaderInfo("sched-1", "127.0.0.1:9001", _dead_pid(), time.time(),
                      socket.gethostname())
    node = _planted(client, root, dead)
    threading.Timer(1.0, client.delete, args=(node,)).start()
    started = time.monotonic()
    e.join()
    assert 0.9 < time.monotonic() - started < wait
    assert isinstance(next_event(e), Elected)


def test_events_arrive_on_the_event_loop(
    make_client: MakeClient, elections: list[LeaderElection]
) -> None:
    client, root = make_client()
    seen_on: list[int] = []

    async def main() -> LeadershipEvent:
        e = LeaderElection(client, root, "loop", on_event=lambda ev: seen_on.append(
            threading.get_ident()))
        elections.append(e)
        await e.join_async()
        assert isinstance(e.events, asyncio.Queue)
        ev = await asyncio.wait_for(e.events.get(), timeout=10)
        assert (await e.leader_async()).identity == "loop"  # type: ignore[union-attr]
        await e.resign_async()
        assert await asyncio.wait_for(e.events.get(), timeout=5) == Deposed("resigned")
        return ev

    ev = asyncio.run(main())
    assert isinstance(ev, Elected)
    assert seen_on == [threading.get_ident()] * 2  # delivered on the loop's thread


def test_unreachable_zookeeper_fails_clearly_within_the_retry_budget() -> None:
    port = free_port()
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(ZooKeeperUnavailable) as e:
        connect(f"zk://127.0.0.1:{port}/corral", connect_within=1.5)
    took = time.monotonic() - started
    assert str(e.value).startswith(f"cannot reach ZooKeeper at 127.0.0.1:{port} after 2 s")
    assert took < 1.5 + 6  # bounded: the budget plus at most one attempt's timeout
    deadline = time.monotonic() + 5  # kazoo's threads end shortly after the client stops
    while set(threading.enumerate()) - threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.name for t in set(threading.enumerate()) - threads_before] == []
