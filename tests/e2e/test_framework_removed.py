"""A framework Mesos removed (an operator's TEARDOWN) comes back as a new one, jobs intact.

Real processes: localmesos, one scheduler, the sample job. The operator API's TEARDOWN
kills every task of Corral's framework and closes its subscription; Mesos then refuses the
old framework id. Corral registers a fresh framework, counts the tasks as lost to the
infrastructure (not the job's failures), relaunches them, and the job finishes with
outputs that verify. While it has no subscription its health is NOT_SERVING; the
scheduler's log says what happened. (The pending reason while unsubscribed is checked
where it lasts long enough to see: tests/integration/test_cli.py, a scheduler that cannot
reach Mesos.)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import Cluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _collect(watch: Iterator[health_pb2.HealthCheckResponse], into: list[int]) -> None:
    try:
        for resp in watch:
            into.append(resp.status)
    except grpc.RpcError:
        return  # cancelled at the end of the test, or its deadline passed


def _framework_ids(master_url: str) -> list[str]:
    with urllib.request.urlopen(f"{master_url}/master/state", timeout=10) as resp:
        state = json.loads(resp.read())
    return [str(f["id"]) for f in state.get("frameworks", []) if f.get("active", True)]


def _teardown(master_url: str, framework_id: str) -> None:
    body = json.dumps({"type": "TEARDOWN",
                       "teardown": {"framework_id": {"value": framework_id}}}).encode()
    req = urllib.request.Request(f"{master_url}/api/v1", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_torn_down_framework_recovers_as_a_new_one_with_jobs_intact(cluster: Cluster) -> None:
    spec, out = cluster.scoring_spec(chunks=24, workers=2, delay=0.4)
    with cluster.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        wait_for(c, job.key, lambda v: sum(t.state == "TASK_RUNNING" for t in v.tasks) == 3
                 and v.progress.done > 2)
        (old,) = _framework_ids(cluster.master_url)
        # Health's Watch stream reports every change, so a short NOT_SERVING is not missed.
        channel = grpc.insecure_channel(cluster.api)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                           timeout=60)
        statuses: list[int] = []
        reader = threading.Thread(target=_collect, args=(watch, statuses), daemon=True)
        reader.start()
        _teardown(cluster.master_url, old)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ids = _framework_ids(cluster.master_url)
            if ids and old not in ids and statuses[-1:] == [SERVING]:
                break
            time.sleep(0.1)
        watch.cancel()
        reader.join(timeout=5)
        channel.close()
        new = _framework_ids(cluster.master_url)
        assert new and old not in new, new
        # Unsubscribed for a moment: not serving; subscribed anew: serving again.
        assert statuses[0] == SERVING and NOT_SERVING in statuses, statuses
        assert statuses[-1] == SERVING, statuses
        final = wait_for(c, job.key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    r = final.resilience
    # Every task of the old framework was lost to the infrastructure and replaced.
    assert r.losses >= 3 and r.recoveries >= 3, r
    assert all(t.attempt >= 2 for t in final.tasks if t.slot == "master"), final.tasks
    log = (cluster.work / "logs" / "scheduler.log").read_text()
    assert f"Mesos removed framework {old}" in log, log[-2000:]
    result = cluster.verify(24, out)
    assert result.returncode == 0, result.stdout + result.stderr
