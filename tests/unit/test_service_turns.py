"""The service's core loop (``runtime.service``): commands queued together are handled in
one turn with one store write, unless handling them passes the turn's time budget, which
ends the turn early so the event loop gets back to the API and to Mesos. Real asyncio, the
real core and the in-memory store's write path; no Mesos is needed (nothing is offered)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.core.spec import parse_job_spec
from corral.runtime import service
from corral.runtime.persist import MemoryStore
from corral.runtime.service import RuntimeConfig, SchedulerService
from corral.store import Batch


def spec(name: str) -> Any:
    return parse_job_spec({"role": "ml", "environment": "test", "name": name,
                           "master": {"command": "sleep 1", "cpus": 0.1, "mem": 32},
                           "workers": {"command": "sleep 1", "cpus": 0.1, "mem": 32,
                                       "initial": 1, "max": 2}})


def writes_for(n: int) -> list[int]:
    """Submit ``n`` jobs at once; the number of jobs in each store write."""
    store = MemoryStore()
    batches: list[int] = []

    async def persist(batch: Batch) -> None:
        batches.append(len(batch.jobs))
        await store.write(batch)

    async def main() -> None:
        svc = SchedulerService(RuntimeConfig(), persist=persist)
        loop_task = asyncio.create_task(svc._core_loop())
        try:
            await asyncio.wait_for(asyncio.gather(
                *(svc.submit(spec(f"j{i}"), f"r{i}") for i in range(n))), 30)
        finally:
            svc.halt("test over")
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
        assert sorted(store.jobs) == sorted(f"ml/test/j{i}" for i in range(n))

    asyncio.run(main())
    return batches


def test_commands_queued_together_share_one_turn() -> None:
    assert writes_for(20) == [20]


def test_a_turn_ends_once_its_time_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_TURN_BUDGET_S", 0.0)
    assert writes_for(20) == [1] * 20     # one command per turn, each written on its own
