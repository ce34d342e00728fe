"""Partitions end to end: real localmesos (2 s agent health timeout), real scheduler.

1. The master's agent is cut off past the health timeout: Mesos reports its tasks
   TASK_UNREACHABLE, Corral replaces them; when the partition heals Mesos reports them
   RUNNING again (REASON_AGENT_REREGISTERED) and Corral kills the returned master at once.
   The replacement keeps its slot, each loss is counted once, the outputs verify.
2. A worker's agent is cut off for less than the health timeout: nothing is replaced.
3. A raw-HTTP framework that is not partition-aware sees TASK_LOST, and on
   re-registration its task RUNNING again — Mesos 1.11 does not shut it down (see
   ``corral.localmesos.reregister``) — with the partition made by the CLI.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState, JobView
from tests.e2e.conftest import (
    Cluster,
    private_ports,
    processes_mentioning,
    running_cluster,
    wait_for,
)
from tests.localmesos.helpers import Scheduler, command_task, framework_info

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HEALTH = 2.0


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-partition", agents=3, spot=0,
                         localmesos_extra=["--agent-health-timeout", f"{HEALTH:g}",
                                           "--ports", private_ports()]) as c:
        yield c


def partition(cluster: Cluster, agent: str, seconds: float) -> float:
    """Cut ``agent`` off through the HTTP endpoint; when it heals (epoch seconds)."""
    req = urllib.request.Request(
        f"{cluster.master_url}/localmesos/agents/{agent}/partition",
        data=json.dumps({"seconds": seconds}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return float(json.loads(resp.read())["heals_at"])


def mesos_tasks(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """task id -> (list it is in, state) from localmesos' /master/state."""
    with urllib.request.urlopen(f"{cluster.master_url}/master/state", timeout=10) as r:
        doc = json.loads(r.read())
    out: dict[str, tuple[str, str]] = {}
    for fw in doc["frameworks"]:
        for kind in ("completed_tasks", "unreachable_tasks", "tasks"):
            for t in fw[kind]:
                out[t["id"]] = (kind, t["state"])
    return out


def slot(view: JobView, name: str) -> Any:
    return next(t for t in view.tasks if t.slot == name)


def log_time(path: Path, pattern: str) -> float:
    """The asctime (epoch seconds) of the first log line matching ``pattern``."""
    rx = re.compile(pattern)
    for line in path.read_text(errors="replace").splitlines():
        if rx.search(line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    raise AssertionError(f"no line matching {pattern!r} in {path}")


def test_master_partitioned_past_health_timeout_comes_back_and_is_killed(net: Cluster) -> None:
    spec, out = net.scoring_spec(chunks=60, workers=3, delay=0.4)
    with net.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: v.progress.done >= 3 or v.state.terminal)
        old = slot(view, "master")
        lost_here = {t.task_id for t in view.tasks if t.agent_id == old.agent_id}
        heals_at = partition(net, old.agent_id, 4 * HEALTH)

        # Mesos marks the agent unreachable; Corral replaces the master (and any worker
        # that was there) elsewhere while the old one keeps running, cut off.
        view = wait_for(c, key, lambda v: slot(v, "master").attempt == 2
                        and slot(v, "master").state == "TASK_RUNNING", timeout=30)
        new = slot(view, "master")
        assert new.agent_id != old.agent_id
        assert mesos_tasks(net)[old.task_id] == ("unreachable_tasks", "TASK_UNREACHABLE")
        assert time.time() < heals_at, "the replacement should run before the heal"

        # The heal: the old master is RUNNING again, then killed at once.
        seen_back = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            where, state = mesos_tasks(net).get(old.task_id, ("?", "?"))
            if where == "tasks" and state == "TASK_RUNNING" and seen_back is None:
                seen_back = time.monotonic()
            if where == "completed_tasks" or state == "TASK_KILLED":
                break
            time.sleep(0.05)
        assert mesos_tasks(net)[old.task_id][1] == "TASK_KILLED"
        logs = net.work / "logs"
        back = log_time(logs / "localmesos.log", rf"agent {old.agent_id} re-registered")
        killed = log_time(logs / "scheduler.log", rf"killing {re.escape(old.task_id)} ")
        assert 0 <= killed - back < 1.0, (back, killed)
        assert f"{old.task_id} is back (TASK_RUNNING, REASON_AGENT_REREGISTERED) after " \
               f"{new.task_id} replaced it" in (logs / "scheduler.log").read_text()
        # Its process tree is gone within the kill grace.
        assert not _old_master_processes(old.agent_id, out, timeout=10)

        final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    assert slot(final, "master").task_id == new.task_id       # the replacement kept its slot
    r = final.resilience
    assert {x.kind for x in r.recent} == {"unreachable"}, r
    assert {x.task_id for x in r.recent} == lost_here & {x.task_id for x in r.recent}
    assert r.losses == len(r.recent) == len({x.slot for x in r.recent}), r   # each once
    assert all(x.recovered_at and x.replacement_task_id != x.task_id for x in r.recent), r
    assert sum(t.attempt - 1 for t in final.tasks) == r.losses, final.tasks
    result = net.verify(60, out)
    assert result.returncode == 0, result.stdout + result.stderr


def _old_master_processes(agent_id: str, out: Path, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes_mentioning(str(out))
                if agent_id in " ".join(_environ(p)) and " master " in _cmd(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _environ(p: psutil.Process) -> list[str]:
    try:
        return [p.environ().get("MESOS_SLAVE_ID", "")]
    except psutil.Error:
        return []


def test_worker_partitioned_shorter_than_health_timeout_replaces_nothing(net: Cluster) -> None:
    spec, out = net.scoring_spec(chunks=30, workers=3, delay=0.3)
    with net.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: v.progress.done >= 3 or v.state.terminal)
        master_agent = slot(view, "master").agent_id
        worker = next(t for t in view.tasks if t.slot.startswith("worker")
                      and t.agent_id != master_agent and t.state == "TASK_RUNNING")
        heals_at = partition(net, worker.agent_id, HEALTH / 2)
        time.sleep(max(0.0, heals_at - time.time()) + HEALTH)
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=90)
    assert final.state is JobState.FINISHED, final
    assert final.resilience.losses == 0, final.resilience
    assert all(t.attempt == 1 for t in final.tasks), final.tasks
    result = net.verify(30, out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_not_partition_aware_framework_sees_lost_then_its_task_again(net: Cluster) -> None:
    async def main() -> None:
        s = Scheduler(net.master_url)
        try:
            await s.subscribe(framework_info(name="raw-not-partition-aware"))
            offer = next(o for o in await s.offers(timeout=10)
                         if _cpus(o) >= 0.1)
            tid = f"raw-{uuid.uuid4().hex[:6]}"
            await s.launch(offer, [command_task(offer, tid, "sleep 60")], refuse=30)
            await s.until(tid, "TASK_RUNNING", timeout=10)
            aid = offer["agent_id"]["value"]
            done = subprocess.run(
                [sys.executable, "-m", "corral.localmesos", "partition", aid,
                 "--seconds", f"{2 * HEALTH:g}", "--master", net.master_url],
                capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["agent_id"] == aid
            lost = await s.update(tid, "TASK_LOST", timeout=10)
            assert lost["reason"] == "REASON_AGENT_REMOVED" and "unreachable_time" in lost
            assert mesos_tasks(net)[tid] == ("unreachable_tasks", "TASK_LOST")
            assert (await s.next("FAILURE", timeout=5))["failure"]["agent_id"]["value"] == aid
            back = await s.update(tid, "TASK_RUNNING", timeout=10)
            assert back["reason"] == "REASON_AGENT_REREGISTERED" and "uuid" not in back
            assert mesos_tasks(net)[tid] == ("tasks", "TASK_RUNNING")
            assert [p for p in processes_mentioning(tid)], "the task was shut down"
            await s.call({"type": "TEARDOWN"})
        finally:
            await s.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _cpus(offer: dict[str, Any]) -> float:
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == "cpus")
