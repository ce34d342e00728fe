"""A small blocking client for ``corral.v1.JobService``, used by the ``corral`` CLI.

It returns domain values (``JobView``, ``JobSummary``) and raises one exception type,
``ApiError``, whose ``kind`` says what went wrong in the CLI's terms (unreachable,
invalid, not found, denied, ...).

Replicas: the client knows one or more replica addresses. A call goes to the one that
answered last; if it cannot be reached, does not answer within its share of the deadline,
or is not the leader and names none, the call moves on to the next address, so a dead or
cut-off replica costs a user a fraction of the deadline, not all of it. A "not the
leader" answer naming the leader (``corral-leader`` trailing metadata) is followed, and
the leader is remembered for later calls. Every call is idempotent (submits carry a
request id), so trying it again elsewhere is safe.

Credentials: ``tls`` (``security.channel_credentials``) makes the channels TLS; a
``token`` is sent as ``authorization: Bearer <token>`` metadata on every call.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from corral.api.convert import job_from_proto, spec_to_proto, summary_from_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.watchdelta import DeltaDecoder
from corral.api.wire import LEADER_METADATA_KEY, NOT_LEADER_PREFIX
from corral.core.model import JobSpec
from corral.core.summary import JobSummary
from corral.core.views import JobView

DEFAULT_TIMEOUT = 10.0
LIST_PAGE_SIZE = 500
MAX_PAGES = 10_000  # 5 million jobs: a listing that long is a bug, not a cluster
#: A job view may carry 10,001 tasks; allow more than gRPC's default 4 MiB for it.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
#: The least share of the deadline one replica gets before the next one is tried.
MIN_ATTEMPT_SECONDS = 2.0


class ErrorKind(enum.Enum):
    UNREACHABLE = "unreachable"      # nothing answered at the address
    NO_LEADER = "no_leader"          # a replica answered but knows no leader
    FAILOVER = "failover"            # a replica named a leader that does not answer
    INVALID = "invalid"              # INVALID_ARGUMENT
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    CONFLICT = "conflict"            # FAILED_PRECONDITION
    TIMEOUT = "timeout"
    UNAUTHENTICATED = "unauthenticated"
    DENIED = "denied"                # PERMISSION_DENIED
    QUOTA = "quota"                  # RESOURCE_EXHAUSTED
    OTHER = "other"


_KIND_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ErrorKind.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.CONFLICT,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
    grpc.StatusCode.UNAUTHENTICATED: ErrorKind.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind.DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.QUOTA,
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
        self.tried = [address]  # every replica this call asked, in order

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


def split_addresses(addresses: str | Sequence[str]) -> list[str]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` -> ``["a:1", "b:2"]`` (blanks and repeats out)."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out: list[str] = []
    for a in (x.strip() for x in items):
        if a and a not in out:
            out.append(a)
    if not out:
        raise ValueError("no API address given")
    return out


def _moves_on(err: grpc.RpcError) -> bool:
    """Whether another replica may answer where this one did not."""
    code = err.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return code == grpc.StatusCode.UNAVAILABLE and leader_from(err) is None


class JobClient:
    """Blocking calls to the job API at one or more replica addresses (HOST:PORT)."""

    def __init__(self, address: str | Sequence[str], timeout: float = DEFAULT_TIMEOUT, *,
                 tls: grpc.ChannelCredentials | None = None, token: str | None = None
                 ) -> None:
        self.addresses = split_addresses(address)
        self.asked = self.addresses[0]    # what the user pointed us at first
        self.address = self.addresses[0]  # who we talk to now (the leader once known)
        self.timeout = timeout
        self._tls = tls
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channels: dict[str, tuple[grpc.Channel, pb_grpc.JobServiceStub]] = {}

    def close(self) -> None:
        for channel, _ in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stub(self, address: str) -> pb_grpc.JobServiceStub:
        if address not in self._channels:
            options = (("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),)
            channel = (grpc.secure_channel(address, self._tls, options=options)
                       if self._tls is not None else
                       grpc.insecure_channel(address, options=options))
            self._channels[address] = (channel, pb_grpc.JobServiceStub(channel))
        return self._channels[address][1]

    def _order(self) -> list[str]:
        """The current address first, then the others in the order given."""
        return [self.address, *(a for a in self.addresses if a != self.address)]

    def _unary(self, call: Callable[[pb_grpc.JobServiceStub, float], Any]) -> Any:
        """Run ``call(stub, timeout)`` against the replicas until one answers (see the
        module docstring); at most one leader redirect is followed per call."""
        deadline = time.monotonic() + self.timeout
        share = self.timeout if len(self.addresses) == 1 else max(
            MIN_ATTEMPT_SECONDS, self.timeout / len(self.addresses))
        queue = self._order()
        followed = False
        named: dict[str, str] = {}   # leader address -> the replica that named it
        last: tuple[grpc.RpcError, str] | None = None
        tried: list[str] = []
        while queue:
            address = queue.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            tried.append(address)
            try:
                result = call(self._stub(address), min(share, left) if queue else left)
            except grpc.RpcError as err:
                last = (err, address)
                leader = leader_from(err)
                if leader is not None and not followed and leader != address:
                    followed = True
                    named[leader] = address
                    if leader not in self.addresses:
                        self.addresses.append(leader)
                    queue = [leader, *(a for a in queue if a != leader)]
                    continue
                if _moves_on(err) and queue:
                    continue
                raise self._error(err, address, tried, named.get(address)) from None
            self.address = address
            return result
        if last is not None:
            raise self._error(*last, tried, named.get(last[1])) from None
        raise ApiError(ErrorKind.TIMEOUT, "no replica answered in time", self.address,
                       grpc.StatusCode.DEADLINE_EXCEEDED)

    def _error(self, err: grpc.RpcError, address: str, tried: list[str] | None = None,
               named_by: str | None = None) -> ApiError:
        e = classify(err, address)
        e.tried = tried or [address]
        if named_by is not None and e.kind is ErrorKind.UNREACHABLE:
            # The replica we asked still names a leader that is gone: its ZooKeeper
            # session has not expired yet, so no successor is elected.
            e = ApiError(ErrorKind.FAILOVER,
                         f"{named_by} names {address} as the leader, but {address} does not "
                         "answer: a failover is probably in progress; retry in a few seconds",
                         named_by, e.code)
            e.tried = tried or [address]
            return e
        leader = leader_from(err)
        if leader is not None:
            # We already followed once; say where we were sent rather than loop.
            e = ApiError(ErrorKind.NO_LEADER,
                         f"{address} is not the leader and points to {leader}; "
                         "leadership is changing, retry shortly", address, e.code)
            e.tried = tried or [address]
        return e

    def _md(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def submit(self, spec: JobSpec, request_id: str) -> JobView:
        req = pb.SubmitJobRequest(request_id=request_id, spec=spec_to_proto(spec))
        return job_from_proto(self._unary(
            lambda s, t: s.SubmitJob(req, timeout=t, metadata=self._md())).job)

    def get(self, key: str) -> JobView:
        req = pb.GetJobRequest(key=key)
        return job_from_proto(self._unary(
            lambda s, t: s.GetJob(req, timeout=t, metadata=self._md())).job)

    def list_page(self, role: str | None = None, page_size: int = LIST_PAGE_SIZE,
                  page_token: str = "") -> tuple[list[JobSummary], str]:
        """One page of summaries and the token of the next ('' after the last)."""
        req = pb.ListJobsRequest(role=role or "", page_size=page_size, page_token=page_token)
        resp = self._unary(lambda s, t: s.ListJobs(req, timeout=t, metadata=self._md()))
        return [summary_from_proto(j) for j in resp.jobs], resp.next_page_token

    def _history(self, stub: pb_grpc.JobServiceStub) -> Any:
        """The HistoryService stub on the channel of ``stub``."""
        from corral.api.gen.corral.v1 import history_pb2_grpc

        for channel, job_stub in self._channels.values():
            if job_stub is stub:
                return history_pb2_grpc.HistoryServiceStub(channel)
        raise AssertionError("a stub of no channel")

    def history(self, role: str | None = None, since: float | None = None,
                state: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Finished jobs from the scheduler's history, newest first (up to ``limit``)."""
        from corral.api.convert import cost_from_proto, cost_to_dict
        from corral.api.gen.corral.v1 import history_pb2 as hpb

        def page(req: hpb.ListHistoryRequest) -> hpb.ListHistoryResponse:
            return self._unary(lambda s, t: self._history(s).ListHistory(
                req, timeout=t, metadata=self._md()))

        out: list[dict[str, Any]] = []
        token = ""
        while len(out) < limit:
            resp = page(hpb.ListHistoryRequest(role=role or "", since=since or 0.0,
                                               state=state or "", page_size=min(1000, limit),
                                               page_token=token))
            for j in resp.jobs:
                out.append({
                    "key": j.key, "state": pb.JobState.Name(j.state)[len("JOB_STATE_"):],
                    "tier": pb.Tier.Name(j.tier)[len("TIER_"):].lower(),
                    "submitted_at": j.submitted_at,
                    "finished_at": j.finished_at if j.HasField("finished_at") else None,
                    "message": j.message, "tasks": j.tasks, "attempts": j.attempts,
                    "losses": j.losses, "work_lost_seconds": j.work_lost_seconds,
                    "cpu_hours": j.cpu_hours,
                    "cost": cost_to_dict(cost_from_proto(j.cost)) if j.HasField("cost")
                    else None})
            token = resp.next_page_token
            if not token:
                break
        return out[:limit]

    def cost_report(self, role: str | None = None, since: float | None = None
                    ) -> tuple[list[dict[str, Any]], bool]:
        """What each role spent (finished jobs since ``since`` plus running ones), and
        whether finished jobs came from a history database."""
        from corral.api.convert import cost_from_proto, cost_to_dict
        from corral.api.gen.corral.v1 import history_pb2 as hpb

        req = hpb.CostReportRequest(role=role or "", since=since or 0.0)
        resp = self._unary(lambda s, t: self._history(s).GetCostReport(
            req, timeout=t, metadata=self._md()))
        return [{"role": r.role, "finished_jobs": r.finished_jobs,
                 "running_jobs": r.running_jobs, "cost": cost_to_dict(cost_from_proto(r.cost))}
                for r in resp.roles], resp.history

    def list(self, role: str | None = None) -> list[JobSummary]:
        """Every job the caller may see (all pages), in key order."""
        out: list[JobSummary] = []
        token = ""
        for _ in range(MAX_PAGES):
            page, token = self.list_page(role, LIST_PAGE_SIZE, token)
            out.extend(page)
            if not token:
                return out
        raise ApiError(ErrorKind.OTHER, f"the listing did not end after {MAX_PAGES} pages",
                       self.address)

    def kill(self, key: str) -> JobView:
        req = pb.KillJobRequest(key=key)
        return job_from_proto(self._unary(
            lambda s, t: s.KillJob(req, timeout=t, metadata=self._md())).job)

    def scale(self, key: str, workers: int) -> JobView:
        req = pb.ScaleJobRequest(key=key, workers=workers)
        return job_from_proto(self._unary(
            lambda s, t: s.ScaleJob(req, timeout=t, metadata=self._md())).job)

    def watch(self, key: str) -> Iterator[JobView]:
        """The job now and after every change, until the server ends the stream.

        No deadline: a job may run for days. Before the first update arrives, the leader
        is found as for any call; a failover mid-stream surfaces as an ``ApiError``.
        """
        self.leader()
        req = pb.WatchJobRequest(key=key)
        stream = self._stub(self.address).WatchJob(req, metadata=self._md())
        deltas = DeltaDecoder()   # the server sends what changed; callers see whole jobs
        try:
            for resp in stream:
                try:
                    whole = deltas.apply(resp)
                except ValueError as err:
                    raise ApiError(ErrorKind.OTHER, str(err), self.address) from None
                yield job_from_proto(whole)
        except grpc.RpcError as err:
            raise self._error(err, self.address) from None
        finally:
            stream.cancel()

    def leader(self) -> str:
        """The address of the replica that answers as leader (trying the replicas known,
        following one redirect). Asks for a one-job page: any principal may list."""
        self._unary(lambda s, t: s.ListJobs(pb.ListJobsRequest(page_size=1), timeout=t,
                                            metadata=self._md()))
        return self.address
