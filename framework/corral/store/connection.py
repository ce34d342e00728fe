"""Open a kazoo session to the ZooKeeper named by a ``zk://`` URL, with a bounded wait.

``connect`` returns a started ``KazooClient`` and the parsed address (whose ``path`` is the
root every other store module writes under). The client reconnects by itself after a
connection loss (kazoo retries forever with at most 1 s between attempts) so a ZooKeeper
restart is ridden out; only the *first* connection is bounded, and failing it raises
``ZooKeeperUnavailable`` with a message naming the hosts and the time spent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kazoo.client import KazooClient

from corral.store.errors import ZooKeeperUnavailable
from corral.store.retry import TRANSIENT, connect_policy
from corral.store.zkurl import ZkAddress, parse_zk_url

log = logging.getLogger(__name__)

# Reconnect quickly: a leader that is cut off is already deposed, and the sooner it is back
# the sooner the cluster has a leader again.
_RECONNECT = {"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0}


def connect(
    url: str | ZkAddress,
    *,
    session_timeout: float = 10.0,
    connect_within: float = 30.0,
) -> tuple[KazooClient, ZkAddress]:
    """Start a session or raise ``ZooKeeperUnavailable`` after ``connect_within`` seconds.

    ``session_timeout`` is what we ask ZooKeeper for; the server clamps it to
    [2, 20] x tickTime (and its configured min/max).
    """
    address = url if isinstance(url, ZkAddress) else parse_zk_url(url)
    started = time.monotonic()

    def attempt() -> KazooClient:
        remaining = connect_within - (time.monotonic() - started)
        client = KazooClient(
            hosts=address.hosts,
            timeout=session_timeout,
            connection_retry=dict(_RECONNECT),
            command_retry={"max_tries": 3, "delay": 0.05, "max_delay": 1.0},
        )
        try:
            # start() stops and closes the client itself when it times out.
            client.start(timeout=max(0.5, min(5.0, remaining)))
        except BaseException:
            client.close()
            raise
        return client

    try:
        client = connect_policy(connect_within)(attempt)
    except TRANSIENT as e:
        waited = time.monotonic() - started
        raise ZooKeeperUnavailable(
            f"cannot reach ZooKeeper at {address.hosts} after {waited:.0f} s ({e or 'timeout'})"
        ) from None
    log.info("connected to ZooKeeper at %s (session %#x)", address.hosts, client.client_id[0])
    return client, address


async def connect_async(
    url: str | ZkAddress,
    *,
    session_timeout: float = 10.0,
    connect_within: float = 30.0,
) -> tuple[KazooClient, ZkAddress]:
    """``connect`` without blocking the event loop."""
    return await asyncio.to_thread(
        connect, url, session_timeout=session_timeout, connect_within=connect_within
    )


def close(client: KazooClient) -> None:
    """End the session (ephemeral nodes vanish at once) and release the client's threads."""
    try:
        client.stop()
    finally:
        client.close()
