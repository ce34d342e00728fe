"""Between the core's intents (``core.intent``) and a store of them.

``batch_for(core, keys, framework_id)`` exports the intents of the jobs one loop turn
changed durably into one ``Batch`` (a job gone from the core is deleted). A *store* is
anything that writes a batch: ``StateStore`` in ZooKeeper for HA replicas, or
``MemoryStore`` for a single replica, which keeps the same intents in memory so both run
the same path through the runtime. Nothing here talks to ZooKeeper itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from corral.core.intent import JobIntent
from corral.core.scheduler import Scheduler
from corral.store import Batch, StoredState

Persist = Callable[[Batch], Awaitable[None]]


def batch_for(core: Scheduler, keys: Iterable[str], framework_id: str | None = None) -> Batch:
    """One batch with the current intent of every job in ``keys`` (gone jobs deleted)."""
    batch = Batch()
    if framework_id:
        batch.set_framework_id(framework_id)
    for key in sorted(set(keys)):
        intent = core.intent(key)
        if intent is None:
            batch.delete_job(key)
        else:
            batch.put_job(intent)
    return batch


def intents_from(state: StoredState) -> list[JobIntent]:
    return list(state.jobs.values())


class MemoryStore:
    """A single replica's store: the latest intents, in memory (lost with the process;
    a single replica starts a new framework each time)."""

    def __init__(self) -> None:
        self.framework_id: str | None = None
        self.jobs: dict[str, JobIntent] = {}
        self.writes = 0

    async def write(self, batch: Batch) -> None:
        if batch.framework_id is not None:
            self.framework_id = batch.framework_id
        for key, intent in batch.jobs.items():
            if intent is None:
                self.jobs.pop(key, None)
            else:
                self.jobs[key] = intent
        self.writes += 1

    def state(self) -> StoredState:
        return StoredState(self.framework_id, dict(self.jobs), 0)
