"""A small blocking client for ``corral.v1.JobService``, used by the ``corral`` CLI.

It returns domain values (``JobView``) and raises one exception type, ``ApiError``, whose
``kind`` says what went wrong in the CLI's terms (unreachable, invalid, not found, ...).
When a replica answers "not the leader" with the leader's address in the ``corral-leader``
trailing metadata, the client follows it once and keeps talking to the leader; following
more than once could loop between two confused replicas.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from corral.api.convert import job_from_proto, spec_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.wire import LEADER_METADATA_KEY, NOT_LEADER_PREFIX
from corral.core.model import JobSpec
from corral.core.views import JobView

DEFAULT_TIMEOUT = 10.0


class ErrorKind(enum.Enum):
    UNREACHABLE = "unreachable"      # nothing answered at the address
    NO_LEADER = "no_leader"          # a replica answered but knows no leader
    FAILOVER = "failover"            # a replica named a leader that does not answer
    INVALID = "invalid"              # INVALID_ARGUMENT
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    CONFLICT = "conflict"            # FAILED_PRECONDITION
    TIMEOUT = "timeout"
    OTHER = "other"


_KIND_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ErrorKind.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.CONFLICT,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
}


class ApiError(Exception):
    """A failed API call. ``address`` is the replica that was asked last."""

    def __init__(self, kind: ErrorKind, message: str, address: str,
                 code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.address = address
        self.code = code

    @property
    def lines(self) -> list[str]:
        """The message split into lines (INVALID_ARGUMENT carries one field per line)."""
        return [ln for ln in self.message.splitlines() if ln.strip()]


def leader_from(err: grpc.RpcError) -> str | None:
    """The leader address a "not the leader" error names, if any."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    for k, v in err.trailing_metadata() or ():
        if k == LEADER_METADATA_KEY and v:
            return v if isinstance(v, str) else v.decode()
    return None


def classify(err: grpc.RpcError, address: str) -> ApiError:
    code = err.code()
    details = err.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        if details.startswith(NOT_LEADER_PREFIX):
            return ApiError(ErrorKind.NO_LEADER, details, address, code)
        return ApiError(ErrorKind.UNREACHABLE, details, address, code)
    return ApiError(_KIND_BY_CODE.get(code, ErrorKind.OTHER), details, address, code)


class JobClient:
    """Blocking calls to the job API at ``address`` (HOST:PORT)."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.asked = address          # what the user pointed us at
        self.address = address        # who we talk to now (the leader once followed)
        self.timeout = timeout
        self._followed = False
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self, err: grpc.RpcError) -> bool:
        leader = leader_from(err)
        if leader is None or self._followed or leader == self.address:
            return False
        self._followed = True
        self._channel.close()
        self.address = leader
        self._channel = grpc.insecure_channel(leader)
        self._stub = pb_grpc.JobServiceStub(self._channel)
        return True

    def _unary(self, call: Callable[[pb_grpc.JobServiceStub], Any]) -> Any:
        for _ in range(2):
            try:
                return call(self._stub)
            except grpc.RpcError as err:
                if self._follow(err):
                    continue
                raise self._error(err) from None
        raise AssertionError("unreachable: the loop returns or raises")

    def _error(self, err: grpc.RpcError) -> ApiError:
        e = classify(err, self.address)
        if self._followed and e.kind is ErrorKind.UNREACHABLE:
            # The replica we asked still names a leader that is gone: its ZooKeeper
            # session has not expired yet, so no successor is elected.
            return ApiError(ErrorKind.FAILOVER,
                            f"{self.asked} names {self.address} as the leader, but "
                            f"{self.address} does not answer: a failover is probably in "
                            "progress; retry in a few seconds", self.asked, e.code)
        leader = leader_from(err)
        if leader is not None:
            # We already followed once; say where we were sent rather than loop.
            e = ApiError(ErrorKind.NO_LEADER,
                         f"{self.address} is not the leader and points to {leader}; "
                         "leadership is changing, retry shortly", self.address, e.code)
        return e

    def submit(self, spec: JobSpec, request_id: str) -> JobView:
        req = pb.SubmitJobRequest(request_id=request_id, spec=spec_to_proto(spec))
        return job_from_proto(self._unary(lambda s: s.SubmitJob(req, timeout=self.timeout)).job)

    def get(self, key: str) -> JobView:
        req = pb.GetJobRequest(key=key)
        return job_from_proto(self._unary(lambda s: s.GetJob(req, timeout=self.timeout)).job)

    def list(self, role: str | None = None) -> list[JobView]:
        req = pb.ListJobsRequest(role=role or "")
        resp = self._unary(lambda s: s.ListJobs(req, timeout=self.timeout))
        return [job_from_proto(j) for j in resp.jobs]

    def kill(self, key: str) -> JobView:
        req = pb.KillJobRequest(key=key)
        return job_from_proto(self._unary(lambda s: s.KillJob(req, timeout=self.timeout)).job)

    def scale(self, key: str, workers: int) -> JobView:
        req = pb.ScaleJobRequest(key=key, workers=workers)
        return job_from_proto(self._unary(lambda s: s.ScaleJob(req, timeout=self.timeout)).job)

    def watch(self, key: str) -> Iterator[JobView]:
        """The job now and after every change, until the server ends the stream.

        No deadline: a job may run for days. The leader is followed only before the first
        update arrives; a failover mid-stream surfaces as an ``ApiError``.
        """
        req = pb.WatchJobRequest(key=key)
        for _ in range(2):
            stream = self._stub.WatchJob(req)
            got_any = False
            try:
                for resp in stream:
                    got_any = True
                    yield job_from_proto(resp.job)
                return
            except grpc.RpcError as err:
                if not got_any and self._follow(err):
                    continue
                raise self._error(err) from None
            finally:
                stream.cancel()

    def leader(self) -> str:
        """The address of the replica that answers as leader (following one redirect).

        Asks for a job key no spec can produce (names start alphanumeric), so a leader
        answers NOT_FOUND and a follower answers with its redirect.
        """
        try:
            self.get("-/-/-")
        except ApiError as e:
            if e.kind is not ErrorKind.NOT_FOUND:
                raise
        return self.address
