"""End to end: the whole policy in a running scheduler on localmesos — which workers a
smaller target retires, preemption across roles, and right-sized new launches — each
visible through the API, ``corral status`` and (for sizes) the Mesos master's tasks.

Everything is a real process: localmesos (two agents of 4 cpus), one ``corral
scheduler`` with a quick policy file, and ``policy_workload.py`` under Corral's executor:
workers that idle and checkpoint only when their index is listed, so the test knows which
workers lose least.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.api.client import JobClient
from corral.core.spec import parse_job_spec
from corral.core.views import JobView
from corral.runtime.translate import EXECUTOR_CPUS, EXECUTOR_MEM
from tests.e2e.conftest import Cluster, running_cluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WORKLOAD = " ".join(shlex.quote(x) for x in (
    sys.executable, str(Path(__file__).with_name("policy_workload.py"))))
POLICY = """\
interval_s: 1
target_duration_s: 4
roles:
  - {name: e2e, weight: 1}
  - {name: e2eb, weight: 1}
policy: {cooldown_up_s: 0, cooldown_down_s: 0, hysteresis: 0, preemption_budget: 2,
         min_share_diff: 0.05, rightsizing_min_samples: 3}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    with running_cluster(tmp_path_factory, "corral-policy", agents=2, spot=0,
                         scheduler_extra=["--policy", str(policy),
                                          "--usage-interval", "0.5"]) as c:
        yield c


def spec(c: Cluster, role: str, *, workers: int, cpus: float, mem: int = 128,
         ckpt: str = "", load: bool = False) -> dict[str, Any]:
    name = f"p{uuid.uuid4().hex[:8]}"
    return {
        "role": role, "environment": "test", "name": name,
        "master": {"command": f"{WORKLOAD}", "cpus": 0.5, "mem": 128,
                   "env": {"REPORT_LOAD": "1" if load else "0"}},
        "workers": {"command": f"{WORKLOAD}", "cpus": cpus, "mem": mem, "min": 1,
                    "max": workers, "initial": workers, "env": {"CKPT_INDEXES": ckpt}},
        "checkpoint": {"uri": (c.work / "ckpt" / name).as_uri(), "interval_seconds": 1},
        "kill_grace_seconds": 2,
    }


def running(v: JobView) -> set[str]:
    return {t.slot for t in v.tasks if t.slot.startswith("worker") and t.state == "TASK_RUNNING"}


def status(c: Cluster, key: str) -> str:
    out = subprocess.run([sys.executable, "-m", "corral.cli", "--api", c.api, "status", key],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    print(out.stdout)  # shown with pytest -s (docs/policy.md quotes it)
    return out.stdout


def kill_and_wait(client: JobClient, key: str) -> None:
    client.kill(key)
    wait_for(client, key, lambda v: v.state.terminal, timeout=60)


@contextlib.contextmanager
def jobs(c: Cluster) -> Iterator[tuple[JobClient, list[str]]]:
    """A client and a list to put submitted job keys in; every job in it is killed at the
    end, pass or fail, so the next test finds the cluster empty."""
    keys: list[str] = []
    with c.client() as client:
        try:
            yield client, keys
        finally:
            for key in keys:
                if not client.get(key).state.terminal:
                    kill_and_wait(client, key)


def mesos_tasks(c: Cluster) -> dict[str, dict[str, float]]:
    """Every task the Mesos master knows, with the scalar resources it holds."""
    req = urllib.request.Request(c.master_url + "/api/v1",
                                 data=json.dumps({"type": "GET_TASKS"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc = json.load(resp)["get_tasks"]
    out = {}
    for t in doc["tasks"]:
        out[t["task_id"]["value"]] = {r["name"]: r["scalar"]["value"]
                                      for r in t["resources"] if "scalar" in r}
    return out


def test_scale_down_retires_the_workers_that_lose_least(cluster: Cluster) -> None:
    s = spec(cluster, "e2e", workers=4, cpus=0.5, ckpt="1,2", load=True)
    with jobs(cluster) as (c, keys):
        key = c.submit(parse_job_spec(s), request_id=uuid.uuid4().hex).key
        keys.append(key)
        wait_for(c, key, lambda v: len(running(v)) == 4, timeout=60)
        # Workers 1 and 2 checkpoint every 0.3 s; 0 and 3 never do. Give the executors
        # time to relay a few checkpoints, then halve the job.
        time.sleep(3)
        c.scale(key, 2)
        view = wait_for(c, key, lambda v: v.policy.retired >= 2, timeout=30)
        assert sorted(a.slot for a in view.policy.recent) == ["worker-1", "worker-2"], view
        for a in view.policy.recent:
            assert a.kind == "retired"
            assert a.why.startswith("target 4 -> 2: scaled by request; loses least: "), a.why
            assert "since its last checkpoint" in a.why, a.why
        view = wait_for(c, key, lambda v: running(v) == {"worker-0", "worker-3"}, timeout=30)
        text = status(cluster, key)
        assert "stopped    0 preempted, 2 retired by the policy" in text, text
        assert "retired     worker-1" in text and "loses least" in text, text


def test_preemption_takes_the_victims_that_lose_least_within_the_budget(
        cluster: Cluster) -> None:
    # Role e2e fills 6.5 of the 8 cpus; role e2eb arrives wanting 4.5: its fair share
    # needs three of e2e's workers, the budget allows two, and workers 4 and 5 (the ones
    # that checkpoint) lose least.
    a = spec(cluster, "e2e", workers=6, cpus=1.0, ckpt="4,5", load=True)
    b = spec(cluster, "e2eb", workers=4, cpus=1.0, load=True)
    with jobs(cluster) as (c, keys):
        ka = c.submit(parse_job_spec(a), request_id=uuid.uuid4().hex).key
        keys.append(ka)
        wait_for(c, ka, lambda v: len(running(v)) == 6, timeout=60)
        time.sleep(3)
        kb = c.submit(parse_job_spec(b), request_id=uuid.uuid4().hex).key
        keys.append(kb)
        view = wait_for(c, ka, lambda v: v.policy.preempted >= 2, timeout=60)
        assert sorted(x.slot for x in view.policy.recent) == ["worker-4", "worker-5"], view
        for x in view.policy.recent:
            assert x.kind == "preempted"
            assert "role e2e above its fair share" in x.why and "loses least" in x.why, x.why
        # The newcomer gets the room the victims left.
        wait_for(c, kb, lambda v: len(running(v)) >= 2, timeout=60)
        # The budget is spent: e2e's other workers keep running (their first attempts);
        # later growth may refill the holes the victims left.
        time.sleep(3)
        view = c.get(ka)
        assert view.policy.preempted == 2, view.policy
        first = {t.slot for t in view.tasks if t.state == "TASK_RUNNING" and t.attempt == 1
                 and t.slot.startswith("worker")}
        assert {"worker-0", "worker-1", "worker-2", "worker-3"} <= first, view
        assert view.target_reason.startswith(("hold:", "share:")), view.target_reason
        text = status(cluster, ka)
        assert "stopped    2 preempted, 0 retired by the policy" in text, text
        assert "preempted   worker-4" in text or "preempted   worker-5" in text, text


def test_right_sizing_changes_new_launches(cluster: Cluster) -> None:
    # Workers reserve 1 cpu and 256 MiB and use almost nothing: after a few usage
    # samples new workers are launched at the band's floor (half of the reservation).
    s = spec(cluster, "e2e", workers=3, cpus=1.0, mem=256)
    s["workers"]["initial"] = 1
    with jobs(cluster) as (c, keys):
        key = c.submit(parse_job_spec(s), request_id=uuid.uuid4().hex).key
        keys.append(key)
        view = wait_for(c, key, lambda v: v.policy.size_reason.startswith("right-sized"),
                        timeout=60)
        assert view.policy.size_reason.startswith(
            "right-sized to 0.5 cpus from 1, 128 MiB from 256: used "), view.policy
        assert " p95 of " in view.policy.size_reason
        assert (view.policy.worker_cpus, view.policy.worker_mem) == (0.5, 128.0)
        first = next(t.task_id for t in view.tasks if t.slot == "worker-0")
        c.scale(key, 3)
        view = wait_for(c, key, lambda v: len(running(v)) == 3, timeout=60)
        ids = {t.slot: t.task_id for t in view.tasks if t.slot.startswith("worker")}
        # What Mesos holds for each task, plus its executor's share (runtime.translate).
        held = {tid: (round(r["cpus"] + EXECUTOR_CPUS, 3), r["mem"] + EXECUTOR_MEM)
                for tid, r in mesos_tasks(cluster).items()}
        assert held[first] == (1.0, 256.0), held              # launched before: as asked
        for slot in ("worker-1", "worker-2"):
            assert held[ids[slot]] == (0.5, 128.0), held
        text = status(cluster, key)
        assert "sizing     right-sized to 0.5 cpus from 1, 128 MiB from 256" in text, text
