"""Chaos end to end: the sample job survives losing machines, with and without notice.

A real localmesos (7 agents, 4 of them spot, 1 s agent health timeout) and a real
``corral scheduler``. While the batch-scoring job runs, the test terminates a spot agent
with no notice, another with a short maintenance notice, QoS-kills (revokes) a worker,
and kills the master's agent. The job must finish on its own, every chunk's output must
equal the no-fault baseline (``scoring verify``), and the job's accounting must show each
loss, what it cost and that every one recovered.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState, JobView
from tests.e2e.conftest import (
    Cluster,
    processes_mentioning,
    running_cluster,
    wait_for,
    wait_gone,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-chaos", agents=7, spot=4,
                         localmesos_extra=["--agent-health-timeout", "1"]) as c:
        yield c


def fault(cluster: Cluster, agent: str, action: str, **body: Any) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{cluster.master_url.rstrip('/')}/localmesos/agents/{agent}/{action}",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def agents(cluster: Cluster) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{cluster.master_url.rstrip('/')}/localmesos/agents",
                                timeout=10) as resp:
        doc = json.loads(resp.read())
    rows = doc["agents"] if isinstance(doc, dict) else doc
    return {r["id"]: r for r in rows}


def task(view: JobView, slot: str) -> Any:
    return next(t for t in view.tasks if t.slot == slot)


def running_worker_agents(view: JobView) -> dict[str, str]:
    """slot -> agent id of every RUNNING worker."""
    return {t.slot: t.agent_id for t in view.tasks
            if t.slot.startswith("worker") and t.state == "TASK_RUNNING" and t.agent_id}


def pick_worker(cluster: Cluster, view: JobView, *, spot: bool) -> tuple[str, str]:
    """A running worker (slot, agent) whose agent does not host the master, on a spot
    agent if ``spot`` and one exists."""
    master_agent = task(view, "master").agent_id
    info = agents(cluster)
    cands = [(s, a) for s, a in sorted(running_worker_agents(view).items())
             if a != master_agent and info.get(a, {}).get("alive", True)]
    assert cands, view
    if spot:
        on_spot = [c for c in cands
                   if info.get(c[1], {}).get("attributes", {}).get("market") == "spot"]
        cands = on_spot or cands
    return cands[0]


def recovered(*kinds: str, count: int = 1) -> Any:
    def pred(v: JobView) -> bool:
        done = [x for x in v.resilience.recent if x.kind in kinds and x.recovered_at]
        return len(done) >= count or v.state.terminal
    return pred


def test_job_survives_spot_loss_notice_revocation_and_master_loss(chaos: Cluster) -> None:
    spec, out = chaos.scoring_spec(chunks=120, workers=4, delay=1.0, max_workers=6,
                                   labels={"overprovision": "1"})
    spec["master"]["command"] = spec["master"]["command"].replace(
        "--lease-seconds 10", "--lease-seconds 3")
    with chaos.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        key = job.key
        view = wait_for(c, key, lambda v: v.progress.done >= 5, timeout=60)

        # 1. A spot agent vanishes with no notice.
        slot, agent = pick_worker(chaos, view, spot=True)
        fault(chaos, agent, "terminate")
        view = wait_for(c, key, recovered("lost", "unreachable"), timeout=30)
        assert view.state is JobState.RUNNING, view.resilience
        assert task(view, slot).agent_id != agent

        # 2. A spot agent with a (scaled-down) two-minute notice: 4 s.
        slot, agent = pick_worker(chaos, view, spot=True)
        noticed_task = task(view, slot).task_id
        fault(chaos, agent, "terminate", notice=4)
        view = wait_for(c, key, recovered("notice"), timeout=30)
        loss = next(x for x in view.resilience.recent if x.kind == "notice")
        assert loss.task_id == noticed_task
        # The replacement ran before the machine went away.
        assert loss.recovery_seconds is not None and loss.recovery_seconds < 4, loss

        # 3. Revocation: the agent's QoS controller kills a worker's executor.
        view = wait_for(c, key, lambda v: len(running_worker_agents(v)) >= 4
                        or v.state.terminal, timeout=30)
        slot, agent = pick_worker(chaos, view, spot=False)
        fault(chaos, agent, "qos-kill", executor_id=task(view, slot).task_id)
        view = wait_for(c, key, recovered("revoked"), timeout=30)

        # 4. The master's machine vanishes.
        master_agent = task(view, "master").agent_id
        fault(chaos, master_agent, "terminate")
        view = wait_for(c, key, lambda v: any(x.slot == "master" and x.recovered_at
                                               for x in v.resilience.recent)
                        or v.state.terminal, timeout=40)
        assert task(view, "master").agent_id != master_agent

        final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    assert final.progress.done == final.progress.total == 120
    r = final.resilience
    kinds = {x.kind for x in r.recent}
    assert {"notice", "revoked"} <= kinds and kinds & {"lost", "unreachable"}, r
    assert r.recoveries >= 4 and all(x.recovered_at for x in r.recent), r
    # Only lost attempts were replaced: the job never restarted anything else.
    assert sum(t.attempt - 1 for t in final.tasks) <= r.losses, final
    result = chaos.verify(120, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 120 chunks identical" in result.stdout
    # Every chunk's output exists exactly once, and nothing else.
    assert sorted(p.name for p in out.glob("chunk-*.npy")) == [
        f"chunk-{i:05d}.npy" for i in range(120)]
    assert not wait_gone(str(out), timeout=15)


def test_revocable_tier_is_rescheduled_when_revoked(chaos: Cluster) -> None:
    live = [a for a, row in agents(chaos).items() if row.get("alive")]
    assert len(live) >= 2
    for a in live[:2]:
        fault(chaos, a, "revocable", cpus=3, mem=2048)
    spec, out = chaos.scoring_spec(chunks=30, workers=2, delay=0.5, tier="revocable")
    with chaos.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: (len(running_worker_agents(v)) == 2
                        and v.progress.done >= 2) or v.state.terminal, timeout=60)
        workers = [t for t in view.tasks if t.slot.startswith("worker")]
        assert all(t.revocable for t in workers), workers          # only revocable resources
        assert not task(view, "master").revocable
        victim = workers[0].agent_id
        killed = fault(chaos, victim, "qos-kill")["killed"]
        assert killed
        view = wait_for(c, key, recovered("revoked"), timeout=30)
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=90)
    assert final.state is JobState.FINISHED, final
    assert {x.kind for x in final.resilience.recent} == {"revoked"}
    assert all(t.revocable for t in final.tasks if t.slot.startswith("worker")
               and t.task_id), final.tasks
    result = chaos.verify(30, out)
    assert result.returncode == 0, result.stdout + result.stderr


def live_master_tasks(cluster: Cluster, key: str) -> list[str]:
    """The job's master tasks Mesos holds as not yet terminal."""
    with urllib.request.urlopen(f"{cluster.master_url.rstrip('/')}/master/state",
                                timeout=10) as resp:
        doc = json.loads(resp.read())
    prefix = f"corral.{key.replace('/', '.')}.master."
    terminal = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST",
                "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}
    return [t["id"] for fw in doc.get("frameworks", []) for t in fw.get("tasks", [])
            if t["id"].startswith(prefix) and t["state"] not in terminal]


def master_process_roots(out: str) -> list[int]:
    """Pids of the sample master's process trees (``sh -c`` and its Python are one)."""
    found: dict[int, int] = {}
    for p in processes_mentioning(out):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if " master " in " ".join(p.cmdline()):
                found[p.pid] = p.ppid()
    return [pid for pid, parent in found.items() if parent not in found]


def test_notice_on_master_agent_hands_over_without_two_masters(chaos: Cluster) -> None:
    spec, out = chaos.scoring_spec(chunks=40, workers=2, delay=0.5)
    with chaos.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: v.progress.done >= 3 or v.state.terminal, timeout=60)
        master_agent = task(view, "master").agent_id
        assert master_agent
        fault(chaos, master_agent, "terminate", notice=5)
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            masters = live_master_tasks(chaos, key)
            # One master is a process tree (``sh -c`` and its Python): count the roots.
            procs = master_process_roots(str(out))
            most = max(most, len(masters), len(procs))
            view = c.get(key)
            if any(x.slot == "master" and x.recovered_at for x in view.resilience.recent) \
                    or view.state.terminal:
                break
            time.sleep(0.05)
        assert most == 1, "two live masters at once"
        loss = next(x for x in view.resilience.recent if x.slot == "master")
        assert loss.kind == "notice" and loss.recovery_seconds is not None
        assert loss.recovery_seconds < 5, loss          # back before the machine went away
        assert task(view, "master").agent_id != master_agent
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=90)
    assert final.state is JobState.FINISHED, final
    result = chaos.verify(40, out)
    assert result.returncode == 0, result.stdout + result.stderr
