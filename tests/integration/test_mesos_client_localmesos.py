"""SchedulerClient subscribed for real to ``python -m corral.localmesos`` (a subprocess).

Checks the client against the project's own master implementation rather than a script:
SUBSCRIBED, offers that decode into Corral ``Offer`` values, DECLINE / RECONCILE /
RECONCILE calls accepted with 202, a watchdog-friendly heartbeat, and TEARDOWN.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.mesos.client import SchedulerClient
from corral.mesos.codec import offers_from_event

FW = {"user": "corral", "name": "corral-client-test", "failover_timeout": 5.0,
      "capabilities": [{"type": "REVOCABLE_RESOURCES"}]}


async def _start_localmesos(work: Path) -> tuple[asyncio.subprocess.Process, str]:
    with open(work / "stderr.log", "wb") as err:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.localmesos", "run", "--port", "0", "--agents", "2",
            "--cpus", "2", "--mem", "1024", "--heartbeat-interval", "0.2",
            "--allocation-interval", "0.1", "--work-dir", str(work), "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=err, start_new_session=True)
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("localmesos exited: " + (work / "stderr.log").read_text())
            m = re.match(r"localmesos master at (http://127\.0\.0\.1:\d+)", line)
            if m:
                return proc, m.group(1)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with_group = True
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            with_group = False
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            if with_group:
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_client_against_localmesos(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []

    async def on_event(ev: dict[str, Any]) -> None:
        events.append(ev)

    async def main() -> None:
        proc, url = await _start_localmesos(tmp_path)
        client = SchedulerClient(url, FW, on_event, backoff_initial=0.05, backoff_max=0.2,
                                 request_timeout=5.0, missed_heartbeats=5)
        task = asyncio.create_task(client.run())
        try:
            async with asyncio.timeout(15):
                while not any(e["type"] == "OFFERS" for e in events):
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
            assert events[0]["type"] == "SUBSCRIBED"
            assert client.framework_id and client.stream_id
            assert client.heartbeat_interval == pytest.approx(0.2)
            offers = [o for e in events if e["type"] == "OFFERS" for o in offers_from_event(e)]
            assert offers and all(o.resources.cpus > 0 and o.resources.mem > 0 for o in offers)
            await client.decline([o.id for o in offers], refuse_seconds=60)
            await client.reconcile([])
            await client.reconcile([("no-such-task", offers[0].agent_id)])
            async with asyncio.timeout(10):
                while not any(e["type"] == "UPDATE" for e in events):
                    await asyncio.sleep(0.02)
            upd = next(e for e in events if e["type"] == "UPDATE")["update"]["status"]
            assert upd["task_id"] == {"value": "no-such-task"}
            assert upd["state"] in ("TASK_LOST", "TASK_GONE", "TASK_UNKNOWN")
            # Heartbeats at 0.2 s keep a 1 s watchdog happy: still the first stream.
            await asyncio.sleep(1.5)
            assert client.subscriptions == 1
            await client.teardown()
            async with asyncio.timeout(5):
                await task
        finally:
            await client.close()
            await _stop(proc)
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not _group_alive(proc.pid), "localmesos left processes behind"

    asyncio.run(main())
