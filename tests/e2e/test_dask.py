"""End to end: ``kind: dask`` jobs on localmesos, sized by Dask's own load.

A real localmesos (4 agents, 2 of them spot, 1 s agent health timeout) and a real
``corral scheduler`` with a policy quick enough to watch (a pass a second, no
cooldowns). The driver is the unchanged Dask program ``corral_executor.samples.
dask_features``; every result is compared with the same program run with pandas in the
test's own process. The Dask scheduler's task counts (``dask-counts.json``, written by
Corral's master runner from a scheduler plugin) say whether anything was computed twice.
"""

from __future__ import annotations

import json
import re
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

from corral.core.spec import parse_job_spec
from corral.core.views import JobState, JobView
from tests.e2e.conftest import Cluster, processes_mentioning, running_cluster, wait_for
from tests.e2e.test_chaos import fault, pick_worker, task

pytest.importorskip("distributed")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PY = shlex.quote(sys.executable)
FEATURES = f"{PY} -m corral_executor.samples.dask_features"
POLICY = """\
interval_s: 1
policy: {cooldown_up_s: 0, cooldown_down_s: 0, hysteresis: 0}
"""
LOAD_REASON = re.compile(r"dask: (\d+) tasks queued, wants (\d+)")


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY)
    with running_cluster(tmp_path_factory, "corral-dask", agents=4, spot=2,
                         localmesos_extra=["--agent-health-timeout", "1"],
                         scheduler_extra=["--policy", str(policy)]) as c:
        yield c


def dask_spec(cluster: Cluster, *, partitions: int, delay: float, workers: int,
              max_workers: int, linger: float = 0.0) -> tuple[dict[str, Any], Path]:
    name = f"d{uuid.uuid4().hex[:8]}"
    out = cluster.work / "out" / name
    return {
        "kind": "dask", "role": "e2e", "environment": "test", "name": name,
        "master": {"cpus": 0.5, "mem": 512},
        "driver": {"command": f"{FEATURES} --out {shlex.quote(str(out))} --partitions "
                              f"{partitions} --rows 1000 --delay {delay} --linger {linger}"},
        "workers": {"cpus": 1, "mem": 512, "min": 1, "max": max_workers,
                    "initial": workers},
        "kill_grace_seconds": 2,
    }, out


def local_result(cluster: Cluster, partitions: int) -> Path:
    out = cluster.work / f"local-{partitions}"
    if not (out / "features.json").exists():
        subprocess.run([sys.executable, "-m", "corral_executor.samples.dask_features",
                        "--local", "--out", str(out), "--partitions", str(partitions),
                        "--rows", "1000"], check=True, capture_output=True, timeout=120)
    return out


def same_as_local(cluster: Cluster, out: Path, partitions: int) -> None:
    r = subprocess.run([sys.executable, "-m", "corral_executor.samples.dask_features",
                        "compare", str(local_result(cluster, partitions)), str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 1000 users' features identical" in r.stdout


def dask_counts(cluster: Cluster, key: str) -> dict[str, Any]:
    """What the Dask scheduler of the job's (first) master counted."""
    tid = f"corral.{key.replace('/', '.')}.master.1"
    found = list((cluster.work / "mesos").glob(f"agents/*/frameworks/*/executors/{tid}/"
                                               "runs/*/dask-counts.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def mesos_tasks(cluster: Cluster, key: str) -> dict[str, str]:
    """Every task of the job the Mesos master knows: task id -> state."""
    with urllib.request.urlopen(f"{cluster.master_url.rstrip('/')}/master/state",
                                timeout=10) as resp:
        doc = json.loads(resp.read())
    prefix = f"corral.{key.replace('/', '.')}."
    return {t["id"]: t["state"] for fw in doc.get("frameworks", [])
            for group in ("tasks", "completed_tasks") for t in fw.get(group, [])
            if t["id"].startswith(prefix)}


def running_workers(v: JobView) -> int:
    return sum(1 for t in v.tasks if t.slot.startswith("worker") and t.state == "TASK_RUNNING")


def submit(cluster: Cluster, spec: dict[str, Any]) -> str:
    with cluster.client() as c:
        return c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key


def test_dask_job_grows_on_dask_backlog_shrinks_after_and_matches_local(
        dask_cluster: Cluster) -> None:
    # 160 partitions of 0.2 s each: Dask's adaptive target asks for more than 4.
    spec, out = dask_spec(dask_cluster, partitions=160, delay=0.2, workers=1,
                          max_workers=4, linger=5)
    key = submit(dask_cluster, spec)
    with dask_cluster.client() as c:
        grown = wait_for(c, key, lambda v: v.desired_workers == 4 or v.state.terminal,
                         timeout=60)
        assert grown.desired_workers == 4, grown
        m = LOAD_REASON.search(grown.target_reason)
        assert m and grown.target_reason.startswith("max: dask:"), grown.target_reason
        assert int(m.group(1)) > 100 and int(m.group(2)) > 4, grown.target_reason
        status = subprocess.run(
            [sys.executable, "-m", "corral.cli", "--api", dask_cluster.api, "status", key],
            capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert re.search(r"target 4 \(min 1, max 4\): max: dask: \d+ tasks queued, wants \d+",
                         status.stdout), status.stdout
        assert "kind       dask" in status.stdout, status.stdout
        full = wait_for(c, key, lambda v: running_workers(v) == 4 or v.state.terminal,
                        timeout=60)
        assert running_workers(full) == 4, full
        # The driver lingers, connected and idle: Dask wants nothing, the job shrinks.
        # (It may shrink earlier too, when what is left is quick work Dask wants fewer
        # workers for.)
        small = wait_for(c, key, lambda v: (v.desired_workers == 1 and "dask: 0 tasks queued,"
                                            " wants 0" in v.target_reason) or v.state.terminal,
                         timeout=60)
        assert small.desired_workers == 1, small
        assert "dask: 0 tasks queued, wants 0" in small.target_reason, small.target_reason
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=60)
    assert final.state is JobState.FINISHED, final
    same_as_local(dask_cluster, out, 160)
    # Scale-down retired the extra workers through Dask (they exited 0 on their own
    # once their results had moved), and nothing was computed twice.
    states = mesos_tasks(dask_cluster, key)
    retired = [t for t, s in states.items() if ".worker-" in t and s == "TASK_FINISHED"]
    assert len(retired) >= 3, states
    assert dask_counts(dask_cluster, key)["recomputed"] == 0
    assert final.progress.rerun == 0 and final.progress.done == final.progress.total > 160


@pytest.mark.parametrize("notice", [8.0, None], ids=["with-notice", "without-notice"])
def test_dask_job_survives_a_spot_agent_terminated(dask_cluster: Cluster,
                                                   notice: float | None) -> None:
    spec, out = dask_spec(dask_cluster, partitions=120, delay=0.25, workers=3, max_workers=3)
    spec["workers"]["min"] = 3
    key = submit(dask_cluster, spec)
    with dask_cluster.client() as c:
        view = wait_for(c, key, lambda v: (running_workers(v) == 3 and v.progress.done >= 40)
                        or v.state.terminal, timeout=90)
        assert view.state is JobState.RUNNING, view
        slot, agent = pick_worker(dask_cluster, view, spot=True)
        victim = task(view, slot).task_id
        if notice is None:
            fault(dask_cluster, agent, "terminate")
        else:
            fault(dask_cluster, agent, "terminate", notice=notice)
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    same_as_local(dask_cluster, out, 120)
    counts = dask_counts(dask_cluster, key)
    losses = [x for x in final.resilience.recent if x.task_id == victim]
    assert losses, final.resilience
    if notice is not None:
        assert losses[0].kind == "notice", losses
        # Retired through Dask before the machine went: it exited 0, nothing recomputed.
        assert mesos_tasks(dask_cluster, key)[victim] == "TASK_FINISHED"
        assert counts["recomputed"] == 0, counts
        assert final.progress.rerun == 0
    else:
        assert losses[0].kind in ("lost", "unreachable"), losses
    print(f"dask counts ({'notice' if notice else 'no notice'}): {counts}")


def test_killing_a_dask_job_stops_every_process(dask_cluster: Cluster) -> None:
    spec, _ = dask_spec(dask_cluster, partitions=400, delay=0.5, workers=2, max_workers=2)
    spec["workers"]["min"] = 2
    key = submit(dask_cluster, spec)
    prefix = f"corral.{key.replace('/', '.')}."
    with dask_cluster.client() as c:
        wait_for(c, key, lambda v: (running_workers(v) == 2 and v.progress.done > 0)
                 or v.state.terminal, timeout=60)
        assert processes_mentioning(prefix), "no process of the job found"
        c.kill(key)
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=60)
    assert final.state is JobState.KILLED, final
    deadline = time.monotonic() + 20
    while processes_mentioning(prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_mentioning(prefix), [p.cmdline() for p in processes_mentioning(prefix)]


def test_bad_kind_and_missing_driver_are_rejected_field_by_field(
        dask_cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    for head, wanted in (
            ("kind: spark\nmaster: {cpus: 1}", ["kind: must be one of command, dask, torch; "
                                                "got 'spark'"]),
            ("kind: dask\nmaster: {cpus: 1, command: x}",
             ["driver.command: is required for kind dask",
              "master.command: is written by Corral for kind dask"])):
        bad.write_text(f"{head}\nrole: e2e\nname: bad\nworkers: {{max: 2}}\n")
        r = subprocess.run([sys.executable, "-m", "corral.cli", "--api", dask_cluster.api,
                            "submit", str(bad)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, r
        for text in wanted:
            assert text in r.stderr, r.stderr
    # The server validates on its own (a client that skips the CLI's check).
    import grpc

    from corral.api.gen.corral.v1 import jobs_pb2 as pb
    from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc

    with grpc.insecure_channel(dask_cluster.api) as ch:
        stub = pb_grpc.JobServiceStub(ch)
        for spec, wanted in (
                (pb.JobSpec(role="e2e", name="bad1", kind="spark",
                            master=pb.TaskSpec(cpus=1), workers=pb.WorkerSpec(max=2)),
                 ["kind: must be one of command, dask, torch; got 'spark'"]),
                (pb.JobSpec(role="e2e", name="bad2", kind="dask",
                            master=pb.TaskSpec(command="x"), workers=pb.WorkerSpec(max=2)),
                 ["driver.command: is required for kind dask",
                  "master.command: is written by Corral for kind dask"])):
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(pb.SubmitJobRequest(request_id=uuid.uuid4().hex, spec=spec),
                               timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            for text in wanted:
                assert text in (err.value.details() or ""), err.value.details()
