"""The store's errors: what a caller must react to, each with a message fit for a user.

``Fenced``        a newer leader exists (or our lease is gone): stop acting at once.
``StateCorrupt``  ZooKeeper holds something Corral cannot trust; the message names the znode.
``ZooKeeperUnavailable``  ZooKeeper could not be reached within the bounded retry time.
``DuplicateIdentity``     another live replica registered with the same identity.
"""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of every error the store raises on purpose."""


class Fenced(StoreError):
    """A write was refused because this replica is no longer the leader."""


class StateCorrupt(StoreError):
    """Stored state failed validation; ``path`` is the offending znode."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ZooKeeperUnavailable(StoreError):
    """ZooKeeper did not answer within the retry budget."""


class DuplicateIdentity(StoreError):
    """A live replica already contends for leadership under the same identity."""
