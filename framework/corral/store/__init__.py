"""Durable state and leader election in ZooKeeper.

The runtime's whole interface: ``connect`` a kazoo session from a ``zk://`` URL, contend
with ``LeaderElection`` (events ``Elected(fence)`` / ``Deposed(reason)``), and on
``Elected`` ``StateStore.adopt(fence)``, ``load()`` and ``write(Batch)`` of jobs'
intents (``core.intent.JobIntent``, the one schema of a job's durable intent). Layout and
failover are described in docs/operations.md.
"""

from corral.store.connection import close, connect, connect_async
from corral.store.election import (
    Deposed,
    Elected,
    Fence,
    LeaderElection,
    LeaderInfo,
    LeadershipEvent,
)
from corral.store.errors import (
    DuplicateIdentity,
    Fenced,
    StateCorrupt,
    StoreError,
    ZooKeeperUnavailable,
)
from corral.store.records import StoredState
from corral.store.state import Batch, StateStore, WriteStats
from corral.store.zkurl import ZkAddress, parse_zk_url

__all__ = [
    "Batch",
    "Deposed",
    "DuplicateIdentity",
    "Elected",
    "Fence",
    "Fenced",
    "LeaderElection",
    "LeaderInfo",
    "LeadershipEvent",
    "StateCorrupt",
    "StateStore",
    "StoreError",
    "StoredState",
    "WriteStats",
    "ZkAddress",
    "ZooKeeperUnavailable",
    "close",
    "connect",
    "connect_async",
    "parse_zk_url",
]
