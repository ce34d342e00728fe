"""The gRPC job API over a real grpc.aio server on 127.0.0.1:0 and a real channel.

The backend is ``FakeBackend`` (see test_api_fake.py), a fake standing in for the
scheduler, which needs Mesos. Everything between the channel and the backend is real:
serialisation, the servicer, status codes, metadata, health and reflection.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from corral.api.convert import job_from_proto, spec_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.server import start_api_server
from corral.core.spec import parse_job_spec
from corral.core.views import JobState, Progress

sys.path.insert(0, str(Path(__file__).parent))
from test_api_fake import FakeBackend, make_running

pytestmark = pytest.mark.timeout(30)

SPEC = parse_job_spec({
    "role": "ml", "name": "score",
    "master": {"command": "run-master", "ports": 1},
    "workers": {"command": "run-worker", "min": 1, "max": 4, "initial": 2},
    "labels": {"team": "search"},
})
KEY = "ml/default/score"


@asynccontextmanager
async def served(backend: FakeBackend | None = None,
                 ) -> AsyncIterator[tuple[FakeBackend, grpc.aio.Channel]]:
    backend = backend or FakeBackend()
    server, port = await start_api_server(backend, health_poll_seconds=0.05)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield backend, channel
    finally:
        await channel.close()
        await server.stop(0)


def run(scenario: Callable[[FakeBackend, grpc.aio.Channel, Any], Awaitable[None]],
        backend: FakeBackend | None = None) -> None:
    async def main() -> None:
        async with served(backend) as (b, ch):
            await scenario(b, ch, pb_grpc.JobServiceStub(ch))

    asyncio.run(main())


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call
    assert ei.value.code() == code, ei.value.details()
    return ei.value


def submit_req(request_id: str = "r1", spec: pb.JobSpec | None = None) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(request_id=request_id, spec=spec or spec_to_proto(SPEC))


def test_submit_returns_the_job_and_is_idempotent_by_request_id() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        first = await stub.SubmitJob(submit_req("r1"))
        view = job_from_proto(first.job)
        assert view.key == KEY
        assert view.spec == SPEC
        assert view.state is JobState.PENDING
        assert view.desired_workers == 2
        assert [t.slot for t in view.tasks] == ["master", "worker-0", "worker-1"]
        assert view.tasks[0].pending_reason == "waiting for an offer"
        assert view.tasks[0].task_id is None
        again = await stub.SubmitJob(submit_req("r1"))
        assert again.job == first.job
        assert len(b.jobs) == 1
        # A different request for the same live key is refused, not silently merged.
        err = await expect_error(stub.SubmitJob(submit_req("r2")), grpc.StatusCode.ALREADY_EXISTS)
        assert KEY in err.details()

    run(scenario)


def test_submit_without_request_id_gets_a_server_id() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        resp = await stub.SubmitJob(submit_req(""))
        assert resp.job.request_id.startswith("server-")

    run(scenario)


@pytest.mark.parametrize(
    ("mutate", "fields"),
    [
        (lambda s: setattr(s.workers, "max", 0), ["workers.min"]),
        (lambda s: setattr(s.master, "cpus", -2), ["master.cpus"]),
        (lambda s: s.ClearField("master"), ["master"]),
        (lambda s: setattr(s, "role", "Bad Role"), ["role"]),
        (lambda s: (setattr(s.master, "command", ""), s.master.env.update({"1X": "y"})),
         ["master.command", "master.env.1X"]),
        (lambda s: setattr(s.checkpoint, "uri", "ftp://x/y"), ["checkpoint.uri"]),
        (lambda s: setattr(s, "tier", 99), ["tier"]),
    ],
)
def test_invalid_spec_names_every_bad_field(mutate: Callable[[pb.JobSpec], Any],
                                            fields: list[str]) -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        spec = spec_to_proto(SPEC)
        mutate(spec)
        err = await expect_error(stub.SubmitJob(submit_req(spec=spec)),
                                 grpc.StatusCode.INVALID_ARGUMENT)
        lines = err.details().splitlines()
        assert lines[0] == "invalid request:"
        named = [ln.split(":", 1)[0] for ln in lines[1:]]
        for f in fields:
            assert f in named, err.details()
        assert b.jobs == {}

    run(scenario)


def test_invalid_spec_carries_bad_request_field_violations() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        spec = spec_to_proto(SPEC)
        spec.workers.min = 9
        spec.master.cpus = 0
        err = await expect_error(stub.SubmitJob(submit_req(spec=spec)),
                                 grpc.StatusCode.INVALID_ARGUMENT)
        status = rpc_status.from_call(err)
        assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad)
        fields = {v.field: v.description for v in bad.field_violations}
        # Paths are relative to the request message, so they start at `spec`.
        assert set(fields) == {"spec.master.cpus", "spec.workers.min"}
        assert "must not exceed workers.max" in fields["spec.workers.min"]

    run(scenario)


def test_submit_without_spec_is_invalid() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        err = await expect_error(stub.SubmitJob(pb.SubmitJobRequest(request_id="x")),
                                 grpc.StatusCode.INVALID_ARGUMENT)
        assert "spec: is required" in err.details()

    run(scenario)


def test_get_list_kill_scale() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        await stub.SubmitJob(submit_req("r1"))
        other = spec_to_proto(parse_job_spec({
            "role": "ads", "environment": "prod", "name": "ctr",
            "master": {"command": "m"}, "workers": {"command": "w"}}))
        await stub.SubmitJob(submit_req("r2", other))

        got = job_from_proto((await stub.GetJob(pb.GetJobRequest(key=KEY))).job)
        assert got.key == KEY and got.version == 1

        everyone = await stub.ListJobs(pb.ListJobsRequest())
        assert sorted(j.key for j in everyone.jobs) == ["ads/prod/ctr", KEY]
        ads = await stub.ListJobs(pb.ListJobsRequest(role="ads"))
        assert [j.key for j in ads.jobs] == ["ads/prod/ctr"]

        scaled = await stub.ScaleJob(pb.ScaleJobRequest(key=KEY, workers=4))
        assert scaled.job.desired_workers == 4
        assert scaled.job.target_reason == "set by user"
        err = await expect_error(stub.ScaleJob(pb.ScaleJobRequest(key=KEY, workers=9)),
                                 grpc.StatusCode.INVALID_ARGUMENT)
        assert "1..4" in err.details()
        await expect_error(stub.ScaleJob(pb.ScaleJobRequest(key=KEY, workers=-1)),
                           grpc.StatusCode.INVALID_ARGUMENT)

        killed = await stub.KillJob(pb.KillJobRequest(key=KEY))
        assert killed.job.state == pb.JOB_STATE_KILLED
        assert killed.job.HasField("finished_at")
        # Scaling or killing a finished job contradicts its state.
        await expect_error(stub.ScaleJob(pb.ScaleJobRequest(key=KEY, workers=2)),
                           grpc.StatusCode.FAILED_PRECONDITION)
        await expect_error(stub.KillJob(pb.KillJobRequest(key=KEY)),
                           grpc.StatusCode.FAILED_PRECONDITION)

    run(scenario)


def test_unknown_and_missing_keys() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        for call in (stub.GetJob(pb.GetJobRequest(key="no/such/job")),
                     stub.KillJob(pb.KillJobRequest(key="no/such/job")),
                     stub.ScaleJob(pb.ScaleJobRequest(key="no/such/job", workers=1))):
            err = await expect_error(call, grpc.StatusCode.NOT_FOUND)
            assert "no/such/job" in err.details()
        stream = stub.WatchJob(pb.WatchJobRequest(key="no/such/job"))
        await expect_error(stream.read(), grpc.StatusCode.NOT_FOUND)
        err = await expect_error(stub.GetJob(pb.GetJobRequest(key="")),
                                 grpc.StatusCode.INVALID_ARGUMENT)
        assert "key: is required" in err.details()

    run(scenario)


def test_follower_answers_unavailable_with_the_leader_in_metadata() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        b.follower, b.leader = True, "10.0.0.7:7070"
        for call in (stub.SubmitJob(submit_req()), stub.GetJob(pb.GetJobRequest(key=KEY)),
                     stub.ListJobs(pb.ListJobsRequest())):
            err = await expect_error(call, grpc.StatusCode.UNAVAILABLE)
            assert ("corral-leader", "10.0.0.7:7070") in tuple(await_metadata(err))
            assert "10.0.0.7:7070" in err.details()
        stream = stub.WatchJob(pb.WatchJobRequest(key=KEY))
        err = await expect_error(stream.read(), grpc.StatusCode.UNAVAILABLE)
        assert ("corral-leader", "10.0.0.7:7070") in tuple(await_metadata(err))

        b.leader = None
        err = await expect_error(stub.GetJob(pb.GetJobRequest(key=KEY)),
                                 grpc.StatusCode.UNAVAILABLE)
        assert "no leader is known" in err.details()
        assert all(k != "corral-leader" for k, _ in await_metadata(err))

    run(scenario)


def await_metadata(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (err.trailing_metadata() or ())]


def test_watch_streams_every_version_until_terminal() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        await stub.SubmitJob(submit_req())
        stream = stub.WatchJob(pb.WatchJobRequest(key=KEY))

        async def next_job() -> pb.Job:
            resp = await asyncio.wait_for(stream.read(), 5)
            assert resp is not grpc.aio.EOF
            return resp.job

        first = await next_job()
        assert first.version == 1 and first.state == pb.JOB_STATE_PENDING
        make_running(b, KEY, done=10, total=100)
        running = await next_job()
        assert (running.version, running.state, running.progress.done) == (
            2, pb.JOB_STATE_RUNNING, 10)
        assert running.tasks[0].state == "TASK_RUNNING"
        assert running.tasks[0].hostname == "host-1"
        b.update(KEY, progress=Progress(done=60, total=100))
        assert (await next_job()).progress.done == 60
        b.update(KEY, state=JobState.FINISHED, message="master exited 0")
        last = await next_job()
        assert last.state == pb.JOB_STATE_FINISHED and last.message == "master exited 0"
        # The server ends the stream after the terminal state.
        assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK

    run(scenario)


def test_watch_sends_only_what_changed_after_the_first_message() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        await stub.SubmitJob(submit_req())   # a master and two workers
        stream = stub.WatchJob(pb.WatchJobRequest(key=KEY))

        async def next_resp() -> pb.WatchJobResponse:
            resp = await asyncio.wait_for(stream.read(), 5)
            assert resp is not grpc.aio.EOF
            return resp

        first = await next_resp()
        assert not first.delta and [t.slot for t in first.job.tasks] == [
            "master", "worker-0", "worker-1"]
        make_running(b, KEY, done=10, total=100)        # every slot changed
        every = await next_resp()
        assert every.delta and len(every.job.tasks) == 3
        b.update(KEY, progress=Progress(done=60, total=100))   # no task changed
        quiet = await next_resp()
        assert quiet.delta and quiet.job.progress.done == 60 and not quiet.job.tasks
        v = b.jobs[KEY]
        b.update(KEY, tasks=(v.tasks[0], dataclasses.replace(v.tasks[1], state="TASK_LOST"),
                             ))                           # worker-1 is gone
        one = await next_resp()
        assert [t.slot for t in one.job.tasks] == ["worker-0"]
        assert list(one.removed_slots) == ["worker-1"]
        stream.cancel()

    run(scenario)


def test_watches_are_capped_per_principal_and_freed_when_closed() -> None:
    async def main() -> None:
        b = FakeBackend()
        server, port = await start_api_server(b, max_watches=2)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.JobServiceStub(ch)
                await stub.SubmitJob(submit_req())
                streams = [stub.WatchJob(pb.WatchJobRequest(key=KEY)) for _ in range(2)]
                for s in streams:
                    assert (await asyncio.wait_for(s.read(), 5)).job.key == KEY
                third = stub.WatchJob(pb.WatchJobRequest(key=KEY))
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await asyncio.wait_for(third.read(), 5)
                assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "at most 2 per principal" in (ei.value.details() or "")
                streams[0].cancel()
                for _ in range(50):   # the server notices the cancel shortly
                    again = stub.WatchJob(pb.WatchJobRequest(key=KEY))
                    try:
                        if (await asyncio.wait_for(again.read(), 5)).job.key == KEY:
                            break
                    except grpc.aio.AioRpcError as e:
                        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError("a closed watch never freed its place")
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_watch_of_a_finished_job_yields_once_and_ends() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        await stub.SubmitJob(submit_req())
        await stub.KillJob(pb.KillJobRequest(key=KEY))
        got = [r.job async for r in stub.WatchJob(pb.WatchJobRequest(key=KEY))]
        assert [j.state for j in got] == [pb.JOB_STATE_KILLED]

    run(scenario)


def test_backend_bug_is_internal_without_traceback() -> None:
    class Broken(FakeBackend):
        async def get(self, key: str) -> Any:
            raise ZeroDivisionError("oops")

    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        err = await expect_error(stub.GetJob(pb.GetJobRequest(key=KEY)),
                                 grpc.StatusCode.INTERNAL)
        assert err.details() == "internal error in the scheduler: ZeroDivisionError: oops"

    run(scenario, Broken())


def test_health_follows_backend_readiness() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        health = health_pb2_grpc.HealthStub(ch)
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", "corral.v1.JobService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == serving
        await expect_error(health.Check(health_pb2.HealthCheckRequest(service="nope")),
                           grpc.StatusCode.NOT_FOUND)

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == serving
        b.is_ready = False
        assert (await asyncio.wait_for(watch.read(), 5)).status == not_serving
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == not_serving
        b.is_ready = True
        assert (await asyncio.wait_for(watch.read(), 5)).status == serving
        watch.cancel()

    run(scenario)


def test_reflection_lists_the_job_service() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="corral.v1.JobService")

        answers = [a async for a in refl.ServerReflectionInfo(ask())]
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"corral.v1.JobService", "grpc.health.v1.Health"} <= names
        files = answers[1].file_descriptor_response.file_descriptor_proto
        assert files and b"corral/v1/jobs.proto" in files[0]

    run(scenario)


def test_port_in_use_is_a_clear_error() -> None:
    async def main() -> None:
        server, port = await start_api_server(FakeBackend())
        try:
            with pytest.raises(OSError, match="cannot listen"):
                await start_api_server(FakeBackend(), f"127.0.0.1:{port}")
        finally:
            await server.stop(0)

    asyncio.run(main())


# ------------------------------------------------------------------ hostile requests


def test_bytes_that_are_not_protobuf_are_invalid_argument_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        for method in ("SubmitJob", "GetJob", "ListJobs", "KillJob", "ScaleJob"):
            raw = ch.unary_unary(f"/corral.v1.JobService/{method}")
            err = await expect_error(raw(b"\xff\xff\xff\xff garbage"),
                                     grpc.StatusCode.INVALID_ARGUMENT)
            assert "not a valid message" in err.details()
        raw_stream = ch.unary_stream("/corral.v1.JobService/WatchJob")
        await expect_error(raw_stream(b"\x0a\xff\xff").read(), grpc.StatusCode.INVALID_ARGUMENT)
        assert b.calls == []

    run(scenario)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_ten_thousand_bad_env_keys_are_invalid_argument_with_a_bounded_detail() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        for n in (10_000, 127):  # over the entry limit; under it with every key bad
            spec = spec_to_proto(SPEC)
            spec.master.env.update({f"bad key {i} " + "x" * 50: "v" for i in range(n)})
            spec.workers.env.update({f"bad key {i} " + "y" * 50: "v" for i in range(n)})
            err = await expect_error(stub.SubmitJob(submit_req(spec=spec)),
                                     grpc.StatusCode.INVALID_ARGUMENT)
            assert "spec.master.env" in _violations(err)[0]
            assert len(err.details()) <= 2000
            assert sum(len(k) + len(v) for k, v in err.trailing_metadata()) < 8192
        assert b.jobs == {}

    run(scenario)


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]


@pytest.mark.parametrize(("field", "value"), [
    ("role", "ml\n"), ("name", "a" * 64), ("request_id", "r\x00"), ("request_id", "r" * 129),
])
def test_names_and_request_ids_are_checked_in_full(field: str, value: str) -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        req = submit_req()
        if field == "request_id":
            req.request_id = value
        else:
            setattr(req.spec, field, value)
        err = await expect_error(stub.SubmitJob(req), grpc.StatusCode.INVALID_ARGUMENT)
        assert field in err.details()
        assert b.jobs == {}

    run(scenario)


def test_malformed_keys_and_huge_keys_are_invalid_argument() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        for key in ("ml/default/score\n", "ml/score", "x" * 100_000, "a/b/c/d"):
            err = await expect_error(stub.GetJob(pb.GetJobRequest(key=key)),
                                     grpc.StatusCode.INVALID_ARGUMENT)
            assert "is not a job key" in err.details() and len(err.details()) < 300
        await expect_error(stub.ListJobs(pb.ListJobsRequest(role="Bad Role")),
                           grpc.StatusCode.INVALID_ARGUMENT)

    run(scenario)


def test_list_jobs_pages_through_summaries() -> None:
    async def scenario(b: FakeBackend, ch: grpc.aio.Channel, stub: Any) -> None:
        for i in range(25):
            s = spec_to_proto(parse_job_spec({
                "role": "ml" if i % 2 else "ads", "name": f"j{i:02d}",
                "master": {"command": "m" * 10_000}, "workers": {"command": "w"}}))
            await stub.SubmitJob(submit_req(f"r{i}", s))
        keys: list[str] = []
        token = ""
        for _ in range(10):
            built = b.views_built
            page = await stub.ListJobs(pb.ListJobsRequest(page_size=10, page_token=token))
            assert len(page.jobs) <= 10
            assert b.views_built - built == len(page.jobs)   # a page builds its own views only
            # Summaries: no spec, no tasks; a few hundred bytes each.
            assert all(len(j.SerializeToString()) < 300 for j in page.jobs)
            keys += [j.key for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
        assert keys == sorted(b.jobs) and len(keys) == 25
        one = await stub.ListJobs(pb.ListJobsRequest(role="ml", page_size=1))
        assert [j.key for j in one.jobs] == ["ml/default/j01"] and one.next_page_token
        assert one.jobs[0].workers_max == 1 and one.jobs[0].state == pb.JOB_STATE_PENDING
        big = await stub.ListJobs(pb.ListJobsRequest(page_size=1_000_000))
        assert len(big.jobs) == 25 and not big.next_page_token
        for bad in ({"page_size": -1}, {"page_token": "not a token"},
                    {"page_token": base64.urlsafe_b64encode(b"k1:../x").decode()}):
            err = await expect_error(stub.ListJobs(pb.ListJobsRequest(**bad)),
                                     grpc.StatusCode.INVALID_ARGUMENT)
            assert next(iter(bad)) in err.details()

    run(scenario)
