"""Authentication and authorisation of the job API over real TLS.

A real grpc.aio server with TLS (certificates made by ``tests/certs.py``) and an auth
file serves ``FakeBackend`` (a fake standing in for the scheduler, see
test_api_fake.py). Every RPC is called as the job's owner, as a principal of another
role, as an admin and anonymously, and the status codes are checked against a table;
then mutual TLS identifies a principal by its certificate, and every mutation leaves an
audit line naming its principal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from corral.api.auth import hash_token, parse_auth
from corral.api.convert import spec_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.security import channel_credentials, server_credentials
from corral.api.server import start_api_server
from corral.core.spec import parse_job_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_api_fake import FakeBackend

from tests.certs import TestCA

pytestmark = pytest.mark.timeout(60)
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef",
          "ops": "ops-token-0123456789abcdef"}
AUTH = parse_auth({"principals": [
    {"name": "alice", "token_sha256": hash_token(TOKENS["alice"]), "roles": ["ml"]},
    {"name": "bob", "token_sha256": hash_token(TOKENS["bob"]), "roles": ["ads"]},
    {"name": "ops", "token_sha256": hash_token(TOKENS["ops"]), "admin": True},
    {"name": "carol", "cert_subject": "O=corral,CN=carol", "roles": ["ml"]},
]})


def spec(role: str, name: str) -> pb.JobSpec:
    return spec_to_proto(parse_job_spec({
        "role": role, "name": name, "master": {"command": "m"},
        "workers": {"command": "w", "min": 1, "max": 4, "initial": 1}}))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def serving(ca: TestCA, *, mutual: bool = False
                  ) -> AsyncIterator[tuple[FakeBackend, int]]:
    backend = FakeBackend()
    srv = ca.server()
    creds = server_credentials(srv.cert, srv.key, ca.pem if mutual else None)
    server, port = await start_api_server(backend, credentials=creds, auth=AUTH)
    try:
        # Two existing jobs, one per role, submitted by the admin.
        async with channel(ca, port, "ops", ca.client("seeder") if mutual else None) as ch:
            stub = pb_grpc.JobServiceStub(ch)
            md = metadata("ops")
            await stub.SubmitJob(pb.SubmitJobRequest(request_id="s1", spec=spec("ml", "a")),
                                 metadata=md)
            await stub.SubmitJob(pb.SubmitJobRequest(request_id="s2", spec=spec("ads", "b")),
                                 metadata=md)
        yield backend, port
    finally:
        await server.stop(0)


@asynccontextmanager
async def channel(ca: TestCA, port: int, who: str, client_cert: Any = None
                  ) -> AsyncIterator[grpc.aio.Channel]:
    creds = channel_credentials(ca.pem, client_cert.cert if client_cert else None,
                                client_cert.key if client_cert else None)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        yield ch


def metadata(who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[who]}"),) if who in TOKENS else ()


async def code_of(call: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        return OK, await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e


async def watch_first(stub: Any, key: str, md: Any) -> Any:
    async for resp in stub.WatchJob(pb.WatchJobRequest(key=key), metadata=md):
        return resp
    return None


async def every_rpc(ch: grpc.aio.Channel, md: Any) -> dict[str, tuple[grpc.StatusCode, Any]]:
    """Each RPC once against the ml job ``ml/default/a`` (and a new ml job)."""
    stub = pb_grpc.JobServiceStub(ch)
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)

    async def reflect() -> Any:
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        async for resp in refl.ServerReflectionInfo(iter([req]), metadata=md):
            return resp
        return None

    key = "ml/default/a"
    return {
        "SubmitJob": await code_of(stub.SubmitJob(
            pb.SubmitJobRequest(request_id="new", spec=spec("ml", "new")), metadata=md)),
        "GetJob": await code_of(stub.GetJob(pb.GetJobRequest(key=key), metadata=md)),
        "ListJobs": await code_of(stub.ListJobs(pb.ListJobsRequest(), metadata=md)),
        "ListJobs(role=ml)": await code_of(stub.ListJobs(pb.ListJobsRequest(role="ml"),
                                                         metadata=md)),
        "WatchJob": await code_of(watch_first(stub, key, md)),
        "ScaleJob": await code_of(stub.ScaleJob(pb.ScaleJobRequest(key=key, workers=2),
                                                metadata=md)),
        "KillJob": await code_of(stub.KillJob(pb.KillJobRequest(key=key), metadata=md)),
        "Reflection": await code_of(reflect()),
        "Health": await code_of(health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), metadata=md)),
    }


EXPECTED = {
    #             Submit Get     List List(ml) Watch  Scale   Kill    Reflection Health
    "owner":     (OK,    OK,     OK,  OK,      OK,    OK,     OK,     OK,        OK),
    "other":     (DENIED, DENIED, OK, DENIED,  DENIED, DENIED, DENIED, OK,       OK),
    "admin":     (OK,    OK,     OK,  OK,      OK,    OK,     OK,     OK,        OK),
    "anonymous": (UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, OK),
    "bad token": (UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, OK),
}
CALLER = {"owner": "alice", "other": "bob", "admin": "ops", "anonymous": None,
          "bad token": "bad"}
LISTED = {"owner": ["ml/default/a", "ml/default/new"], "other": ["ads/default/b"],
          "admin": ["ads/default/b", "ml/default/a", "ml/default/new"]}


@pytest.mark.parametrize("who", list(EXPECTED))
def test_every_rpc_for_every_kind_of_caller(ca: TestCA, who: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral.audit")

    async def main() -> None:
        async with serving(ca) as (backend, port), channel(ca, port, who) as ch:
            name = CALLER[who]
            md = (("authorization", "Bearer not-a-known-token"),) if name == "bad" else \
                metadata(name or "")
            got = await every_rpc(ch, md)
            codes = tuple(code for code, _ in got.values())
            assert dict(zip(got, codes, strict=True)) == dict(
                zip(got, EXPECTED[who], strict=True))
            if who in LISTED:
                listed = got["ListJobs"][1]
                assert sorted(j.key for j in listed.jobs) == LISTED[who]
            for code, value in got.values():
                if code is not OK:
                    assert len(value.details()) < 500
                    if code is DENIED:
                        assert "bob may not act for role ml" in value.details()
            # A refused caller changed nothing.
            if who not in ("owner", "admin"):
                assert "ml/default/new" not in backend.jobs
                assert backend.jobs["ml/default/a"].state.value == "PENDING"

    asyncio.run(main())
    audit = [r.getMessage() for r in caplog.records if r.name == "corral.audit"]
    principal = {"owner": "alice", "other": "bob", "admin": "ops"}.get(who, "-")
    outcome = {"owner": "OK", "admin": "OK", "other": "PERMISSION_DENIED"}.get(
        who, "UNAUTHENTICATED")
    for rpc, job in (("SubmitJob", "ml/default/new"), ("ScaleJob", "ml/default/a"),
                     ("KillJob", "ml/default/a")):
        line = f"audit principal={principal} rpc={rpc} job={job} outcome={outcome}"
        assert line in audit, audit
    assert not any("GetJob" in line for line in audit)  # reads are not audited


def test_mutual_tls_identifies_a_principal_by_its_certificate(ca: TestCA) -> None:
    carol = ca.client("carol", "corral")
    stranger = ca.client("mallory", "corral")

    async def main() -> None:
        async with serving(ca, mutual=True) as (_, port):
            async with channel(ca, port, "carol", carol) as ch:
                got = await every_rpc(ch, ())
                assert got["GetJob"][0] is OK and got["KillJob"][0] is OK
                listed = got["ListJobs"][1]
                assert [j.key for j in listed.jobs] == ["ml/default/a", "ml/default/new"]
            # A certificate the CA signed but the auth file does not name.
            async with channel(ca, port, "mallory", stranger) as ch:
                stub = pb_grpc.JobServiceStub(ch)
                code, _ = await code_of(stub.ListJobs(pb.ListJobsRequest()))
                assert code is UNAUTH
                # ... unless it brings a token, which then decides.
                code, resp = await code_of(stub.ListJobs(pb.ListJobsRequest(),
                                                         metadata=metadata("bob")))
                assert code is OK and [j.key for j in resp.jobs] == ["ads/default/b"]
            # No client certificate at all: the TLS handshake itself fails.
            async with channel(ca, port, "anonymous") as ch:
                code, _ = await code_of(pb_grpc.JobServiceStub(ch).ListJobs(
                    pb.ListJobsRequest(), timeout=5))
                assert code is grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())


def test_a_plaintext_client_cannot_talk_to_a_tls_server(ca: TestCA) -> None:
    async def main() -> None:
        async with serving(ca) as (_, port), \
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            code, _ = await code_of(pb_grpc.JobServiceStub(ch).ListJobs(
                pb.ListJobsRequest(), metadata=metadata("ops"), timeout=5))
            assert code is grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())
