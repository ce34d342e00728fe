"""End to end: the real scheduler, executor and sample job on localmesos.

Everything here is a real process: localmesos (master, agents, executors as subprocesses),
one ``corral scheduler``, and the batch-scoring master and workers under Corral's
executor. The tests talk to the scheduler only through its gRPC API.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from corral.api.client import ApiError, ErrorKind
from corral.api.convert import spec_dict_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import Cluster, wait_for, wait_gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_master_and_four_workers_score_every_chunk(cluster: Cluster) -> None:
    spec, out = cluster.scoring_spec(chunks=24, workers=4, delay=0.1)
    with cluster.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        seen = []
        for view in c.watch(job.key):
            seen.append(view)
            assert len(seen) < 10_000
    final = seen[-1]
    assert final.state is JobState.FINISHED, final
    assert final.progress.done == final.progress.total == 24
    # The watch stream showed the job moving, not just its start and end.
    assert any(0 < v.progress.done < 24 for v in seen)
    assert [v.version for v in seen] == sorted({v.version for v in seen})
    slots = {t.slot for t in final.tasks}
    assert slots == {"master", "worker-0", "worker-1", "worker-2", "worker-3"}
    result = cluster.verify(24, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 24 chunks identical" in result.stdout
    assert not wait_gone(str(out))


def test_kill_mid_run_stops_every_process(cluster: Cluster) -> None:
    spec, out = cluster.scoring_spec(chunks=40, workers=3, delay=1.0)
    with cluster.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        wait_for(c, job.key, lambda v: sum(t.state == "TASK_RUNNING" for t in v.tasks) == 4)
        assert processes_of(out), "the job's processes should be running before the kill"
        c.kill(job.key)
        final = wait_for(c, job.key, lambda v: v.state.terminal, timeout=30)
    assert final.state is JobState.KILLED
    assert final.progress.done < 40
    assert all(t.state in ("TASK_KILLED", "PENDING") for t in final.tasks), final.tasks
    left = wait_gone(str(out), timeout=10)
    assert not left, [p.cmdline() for p in left]


def processes_of(out: object) -> list[object]:
    from tests.e2e.conftest import processes_mentioning

    return processes_mentioning(str(out))


def test_invalid_spec_is_rejected_field_by_field(cluster: Cluster) -> None:
    spec, _ = cluster.scoring_spec()
    spec["workers"] = {**spec["workers"], "min": 5, "max": 2}
    spec["master"] = {**spec["master"], "cpus": -1}
    spec["checkpoint"] = {"uri": "ftp://example/ckpt"}
    with grpc.insecure_channel(cluster.api) as ch:
        stub = pb_grpc.JobServiceStub(ch)
        with pytest.raises(grpc.RpcError) as exc:
            stub.SubmitJob(pb.SubmitJobRequest(request_id="bad-1",
                                               spec=spec_dict_to_proto(spec)), timeout=10)
    err = exc.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    for field in ("workers.min", "master.cpus", "checkpoint.uri"):
        assert field in err.details(), err.details()
    with cluster.client() as c:
        assert all(v.key.rsplit("/", 1)[1] != spec["name"] for v in c.list())


def test_duplicate_submissions(cluster: Cluster) -> None:
    spec, _ = cluster.scoring_spec(chunks=8, workers=1, delay=0.2)
    parsed = parse_job_spec(spec)
    with cluster.client() as c:
        first = c.submit(parsed, request_id="dup-request")
        again = c.submit(parsed, request_id="dup-request")
        assert again.key == first.key and again.submitted_at == first.submitted_at
        with pytest.raises(ApiError) as exc:
            c.submit(parsed, request_id="another-request")
        assert exc.value.kind is ErrorKind.ALREADY_EXISTS
        assert len([v for v in c.list() if v.key == first.key]) == 1
        final = wait_for(c, first.key, lambda v: v.state.terminal, timeout=60)
    assert final.state is JobState.FINISHED


def test_command_that_does_not_exist_fails_with_reason(cluster: Cluster) -> None:
    spec, _ = cluster.scoring_spec(workers=1)
    spec["master"] = {**spec["master"], "command": "/nonexistent/corral-master"}
    spec["restart"] = {"max_failures": 1, "backoff_seconds": 0.1, "backoff_max_seconds": 0.2}
    with cluster.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        final = wait_for(c, job.key, lambda v: v.state.terminal, timeout=60)
    assert final.state is JobState.FAILED
    assert "master" in final.message and "127" in final.message, final.message


def test_unknown_job_and_scaling(cluster: Cluster) -> None:
    spec, out = cluster.scoring_spec(chunks=30, workers=1, delay=0.5, max_workers=4)
    with cluster.client() as c:
        with pytest.raises(ApiError) as exc:
            c.get("e2e/test/no-such-job")
        assert exc.value.kind is ErrorKind.NOT_FOUND
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        wait_for(c, job.key, lambda v: v.state is JobState.RUNNING)
        with pytest.raises(ApiError) as exc:
            c.scale(job.key, 99)
        assert exc.value.kind is ErrorKind.CONFLICT
        c.scale(job.key, 3)
        view = wait_for(
            c, job.key, lambda v: sum(t.state == "TASK_RUNNING" for t in v.tasks) == 4
        )
        assert view.desired_workers == 3
        c.kill(job.key)
        wait_for(c, job.key, lambda v: v.state.terminal, timeout=30)
    assert not wait_gone(str(out), timeout=10)


def test_scheduler_logs_have_no_tracebacks(cluster: Cluster) -> None:
    # Runs last in this module: everything above must not have crashed a loop.
    time.sleep(0.5)
    log = cluster.scheduler.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
