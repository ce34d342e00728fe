"""Corral's Dask runner against a real in-process Dask scheduler and workers (loopback):
retirement moves results before a worker closes, load reports follow Dask's own view,
and the master task exits with its driver's code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral_executor import control, dask_runner

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)


def test_pure_helpers() -> None:
    assert dask_runner.load_detail(840, 12) == "dask: 840 tasks queued, wants 12"
    assert dask_runner.scheduler_url("h:1") == "tcp://h:1"
    assert dask_runner.scheduler_url("tls://h:1") == "tls://h:1"
    assert dask_runner.contact_host("0.0.0.0") == "127.0.0.1"
    assert dask_runner.contact_host("10.1.2.3") == "10.1.2.3"
    assert dask_runner.exit_status(-9) == 137 and dask_runner.exit_status(3) == 3
    assert dask_runner.new_retirements([("a", 1.0), ("b", 2.0)], {"a"}) == [("b", 2.0)]
    assert dask_runner.outstanding([{"waiting": 2, "memory": 5, "processing": 1},
                                    {"queued": 4, "no-worker": 1, "released": 3}]) == 8


def test_worker_host_prefers_bind_host_then_agent_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_BIND_HOST", raising=False)
    monkeypatch.setenv("MESOS_AGENT_ENDPOINT", "10.0.0.7:5051")
    assert dask_runner.worker_host() == "10.0.0.7"
    monkeypatch.setenv("CORRAL_BIND_HOST", "127.0.0.2")
    assert dask_runner.worker_host() == "127.0.0.2"
    monkeypatch.delenv("CORRAL_BIND_HOST")
    monkeypatch.delenv("MESOS_AGENT_ENDPOINT")
    assert dask_runner.worker_host() is None


async def _cluster(n: int) -> tuple[object, object, list[object]]:
    from distributed import Scheduler

    sched = await Scheduler(host="127.0.0.1", port=0, dashboard=False, dashboard_address=":0")
    counts = dask_runner._counts_plugin()
    sched.add_plugin(counts, name=counts.name)
    cls = dask_runner._worker_class()
    workers = [await cls(sched.address, nthreads=1, name=f"w{i}", host="127.0.0.1",
                         dashboard=False) for i in range(n)]
    return sched, counts, workers


def test_retire_moves_results_first_and_nothing_is_recomputed() -> None:
    async def main() -> None:
        import dask.array as da
        from distributed import Client, wait

        sched, counts, workers = await _cluster(2)
        async with Client(sched.address, asynchronous=True) as client:
            x = da.arange(200_000, chunks=10_000)
            y = client.persist(x * 3)
            await wait(y)
            held = {ws.name: len(ws.has_what) for ws in sched.workers.values()}
            assert held["w1"] > 0, held
            outcome = await dask_runner.retire(sched, "w1", time.time() + 20)
            assert outcome == "retired"
            await asyncio.wait_for(workers[1].finished(), 10)
            assert workers[1].retiring and not workers[0].retiring
            assert [ws.name for ws in sched.workers.values()] == ["w0"]
            total = await client.compute(y.sum())
            assert total == 3 * sum(range(200_000))
            assert counts.snapshot()["recomputed"] == 0
            # No such worker joins before the deadline: nothing to retire.
            t0 = time.monotonic()
            assert await dask_runner.retire(sched, "nobody", time.time() + 1.5) == "unknown"
            assert time.monotonic() - t0 < 3
            # Asked before the worker joined (it was still starting): retired once it joins.
            late = asyncio.create_task(dask_runner.retire(sched, "w2", time.time() + 20))
            await asyncio.sleep(0.5)
            assert not late.done()
            workers.append(await dask_runner._worker_class()(
                sched.address, nthreads=1, name="w2", host="127.0.0.1", dashboard=False))
            assert await asyncio.wait_for(late, 15) == "retired"
            await asyncio.wait_for(workers[2].finished(), 10)
            # The last worker has nowhere to put its results: Dask refuses, it stays.
            assert await dask_runner.retire(sched, "w0", time.time() + 5) == "refused"
            assert [ws.name for ws in sched.workers.values()] == ["w0"]
        for w in workers:
            await w.close()
        await sched.close()

    asyncio.run(main())


def test_retire_waits_for_running_tasks_but_not_past_its_deadline() -> None:
    async def main() -> None:
        from distributed import Client

        sched, _, workers = await _cluster(2)
        async with Client(sched.address, asynchronous=True) as client:
            fut = client.submit(time.sleep, 6, workers=["w1"], pure=False)
            while not sched.workers[workers[1].address].processing:
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            outcome = await dask_runner.retire(sched, "w1", time.time() + 3, poll=0.1)
            took = time.monotonic() - t0
            assert outcome in ("deadline", "retired") and 1.5 < took < 6, (outcome, took)
            assert [ws.name for ws in sched.workers.values()] == ["w0"]
            await fut.cancel()
        for w in workers:
            await w.close(executor_wait=False)
        await sched.close()

    asyncio.run(main())


def test_load_report_is_the_adaptive_target(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONTROL_DIR", str(tmp_path))

    async def main() -> None:
        from distributed import Client

        sched, counts, workers = await _cluster(1)
        async with Client(sched.address, asynchronous=True) as client:
            futs = client.map(time.sleep, [0.5] * 40, pure=False)
            while len(sched.queued) < 10:
                await asyncio.sleep(0.05)
            dask_runner._report(sched, counts)
            doc = json.loads((tmp_path / control.LOAD).read_text())
            assert doc["workers"] == sched.adaptive_target() or doc["workers"] > 1
            assert doc["queued"] >= 30
            assert doc["detail"] == dask_runner.load_detail(doc["queued"], doc["workers"])
            progress = json.loads((tmp_path / control.PROGRESS).read_text())
            assert progress["backlog"] == doc["queued"] and progress["rerun"] == 0
            await client.cancel(futs)
        for w in workers:
            await w.close()
        await sched.close()

    asyncio.run(main())


@pytest.mark.parametrize("driver,code", [("exit 3", 3), ("kill -9 $$", 137), ("true", 0)])
def test_the_master_task_exits_with_its_drivers_code(tmp_path: Path, driver: str,
                                                     code: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(CORRAL_SANDBOX=str(tmp_path), CORRAL_CONTROL_DIR=str(tmp_path / ".corral"))
    r = subprocess.run([sys.executable, "-m", "corral_executor.dask_runner", "scheduler",
                        "--host", "127.0.0.1", "--driver", driver], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr[-2000:]
    counts = json.loads((tmp_path / dask_runner.COUNTS_FILE).read_text())
    assert counts == {"computed": 0, "recomputed": 0, "rescheduled": 0,
                      "first_task_at": None}
