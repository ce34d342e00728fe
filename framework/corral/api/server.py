"""The gRPC job API: ``JobService`` over any ``JobBackend``, plus health and reflection.

The servicer is a thin translator. Every call first passes ``security.SecurityInterceptor``
(authentication, undecodable bytes, audit); the servicer then authorises the caller for
the job's role (``Forbidden``: the role comes from the request itself, so a caller learns
nothing about another role's jobs, not even whether they exist), checks the request's own
fields, converts it to domain values, calls the backend, and maps exceptions to codes:

    SpecError / ValueError  INVALID_ARGUMENT  (one ``field: problem`` per line; spec
                            errors also as google.rpc.BadRequest field violations)
    Forbidden               PERMISSION_DENIED
    QuotaExceeded           RESOURCE_EXHAUSTED (the numbers in the message)
    NotFound                NOT_FOUND
    AlreadyExists           ALREADY_EXISTS
    Conflict                FAILED_PRECONDITION
    NotLeader               UNAVAILABLE, leader in trailing metadata ``corral-leader``

Anything else is a bug in the backend: it is logged with its traceback and the client
gets INTERNAL with a one-line message, never the traceback. Every message is cut to
``MESSAGE_MAX`` characters and the BadRequest detail to ``MAX_ERRORS`` violations, so an
error always fits gRPC's 8 KiB metadata limit (a request naming 10,000 bad fields gets
INVALID_ARGUMENT, not RESOURCE_EXHAUSTED from the transport).

ListJobs returns ``JobSummary`` pages (``api.paging``), only of the roles the caller may
act for.

Health (``grpc.health.v1``) reports SERVING for ``""`` and ``corral.v1.JobService`` when
the backend is ready: if the backend has a ``ready()`` method (plain or async) its answer
decides; otherwise a started server is ready.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

try:  # google.rpc rich errors are a nicety for generic clients; plain text carries the same.
    from google.protobuf import any_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status
except ImportError:  # pragma: no cover - grpcio-status is a declared dependency
    rpc_status = None

from corral.api import paging
from corral.api.auth import AuthConfig
from corral.api.convert import job_to_proto, spec_from_proto, summary_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.security import SecurityInterceptor, abort, caller
from corral.api.watchdelta import DeltaEncoder
from corral.api.wire import LEADER_METADATA_KEY, NOT_LEADER_PREFIX
from corral.core import limits
from corral.core.admission import QuotaExceeded
from corral.core.model import NAME_RE, JobSpec, role_of
from corral.core.spec import FieldError, SpecError
from corral.core.summary import summarize
from corral.core.views import AlreadyExists, Conflict, JobBackend, NotFound, NotLeader

log = logging.getLogger(__name__)

# Open WatchJob streams one principal may hold (the open API's callers share one).
MAX_WATCHES_PER_PRINCIPAL = 2000

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobService"].full_name
HEALTH_POLL_SECONDS = 0.5
MESSAGE_MAX = 2000  # characters of any error message (gRPC caps all metadata at 8 KiB)
# The largest request the server reads: 16x the largest valid spec (core.limits), so any
# oversized field still reaches validation and is named, while a flood of 4 MiB messages
# (gRPC's default) costs half the memory. Larger ones are refused by gRPC itself
# (RESOURCE_EXHAUSTED) from the message's length prefix, before they are buffered.
MAX_REQUEST_BYTES = 2 * 1024 * 1024

# A check a submitted spec must pass before the backend sees it (e.g. the checkpoint
# location's writability); it returns the bad fields, empty if none.
SubmitCheck = Callable[[JobSpec], Awaitable[list[FieldError]]]

T = TypeVar("T")


class InvalidRequest(SpecError):
    """Bad fields of a request. ``prefix`` turns a spec field path (``workers.max``, the
    YAML's vocabulary, used in the message) into the request's (``spec.workers.max``,
    used in the google.rpc.BadRequest detail)."""

    def __init__(self, errors: list[FieldError], prefix: str = "") -> None:
        super().__init__(errors)
        self.prefix = prefix


class Forbidden(PermissionError):
    """The caller may not act for the role a request names."""


def _bounded(message: str, limit: int = MESSAGE_MAX) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def invalid_argument_details(errors: list[FieldError]) -> str:
    """The INVALID_ARGUMENT message: a headline, then one ``field: problem`` per line
    (at most ``MAX_ERRORS`` lines, each cut to 200 characters, the whole to MESSAGE_MAX)."""
    errors = _few(errors)
    return _bounded("invalid request:\n" + "\n".join(
        _bounded(f"{e.field}: {e.message}", 200) for e in errors))


def _few(errors: list[FieldError]) -> list[FieldError]:
    if len(errors) <= limits.MAX_ERRORS + 1:
        return errors
    more = len(errors) - limits.MAX_ERRORS
    return [*errors[: limits.MAX_ERRORS], FieldError("spec", f"... and {more} more problems")]


def _bad_request_metadata(message: str, errors: list[FieldError],
                          prefix: str) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a google.rpc.Status with BadRequest field violations."""
    if rpc_status is None:
        return ()
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=_bounded(prefix + e.field, 100),
                                                    description=_bounded(e.message, 150))
        for e in _few(errors)
    ])
    detail = any_pb2.Any()
    detail.Pack(bad)
    st = rpc_status.to_status(status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail]))
    return tuple(st.trailing_metadata)


async def _abort_for(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """Abort the RPC with the status code ``exc`` stands for."""
    if isinstance(exc, SpecError):
        message = invalid_argument_details(exc.errors)
        prefix = exc.prefix if isinstance(exc, InvalidRequest) else ""
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, message,
                    trailing_metadata=_bad_request_metadata(message, exc.errors, prefix))
    if isinstance(exc, NotLeader):
        why = f" ({exc.why})" if exc.why else ""
        if exc.leader:
            await abort(context, grpc.StatusCode.UNAVAILABLE,
                        f"{NOT_LEADER_PREFIX}{why}; the leader is at {exc.leader}",
                        trailing_metadata=((LEADER_METADATA_KEY, exc.leader),))
        await abort(context, grpc.StatusCode.UNAVAILABLE,
                    f"{NOT_LEADER_PREFIX}{why}, and no leader is known yet; retry "
                    "shortly")
    if isinstance(exc, Forbidden):
        await abort(context, grpc.StatusCode.PERMISSION_DENIED, _text(exc, "permission denied"))
    if isinstance(exc, QuotaExceeded):
        await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, _text(exc, "over quota"))
    if isinstance(exc, NotFound):
        await abort(context, grpc.StatusCode.NOT_FOUND, _text(exc, "no such job"))
    # AlreadyExists subclasses Conflict, so it is tested first.
    if isinstance(exc, AlreadyExists):
        await abort(context, grpc.StatusCode.ALREADY_EXISTS, _text(exc, "job already exists"))
    if isinstance(exc, Conflict):
        await abort(context, grpc.StatusCode.FAILED_PRECONDITION, _text(exc, "conflict"))
    if isinstance(exc, ValueError):
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, _text(exc, "invalid argument"))
    log.error("JobBackend raised an unexpected error", exc_info=exc)
    await abort(context, grpc.StatusCode.INTERNAL, _bounded(
        f"internal error in the scheduler: {type(exc).__name__}: {exc}"))


def _text(exc: BaseException, fallback: str) -> str:
    # KeyError-style exceptions repr their argument; show the plain text instead.
    text = str(exc.args[0]) if len(exc.args) == 1 else (str(exc) or fallback)
    return _bounded(text)


def authorize(role: str) -> None:
    """Raise ``Forbidden`` unless the caller may act for ``role``."""
    who = caller()
    if not who.may_act_for(role):
        raise Forbidden(f"{who.name} may not act for role {limits.shown(role)}")


def _authorized_key(key: str) -> str:
    """Authorise the caller for the key's role, then check the key is well formed."""
    if not key:
        raise InvalidRequest([FieldError("key", "is required (role/environment/name)")])
    authorize(role_of(key))
    if not paging.is_job_key(key):
        raise InvalidRequest([FieldError("key", f"{limits.shown(key)} is not a job key "
                                                "(role/environment/name)")])
    return key


def _request_id(raw: str) -> str:
    problem = limits.text_problem(raw, limits.REQUEST_ID_MAX)
    if problem:
        raise InvalidRequest([FieldError("request_id", problem)])
    # Without a client id the call still works, but a retry makes a second request.
    return raw or f"server-{uuid.uuid4()}"


class JobServicer(pb_grpc.JobServiceServicer):
    """``corral.v1.JobService`` over any ``JobBackend``."""

    def __init__(self, backend: JobBackend, submit_checks: tuple[SubmitCheck, ...] = (),
                 max_watches: int = MAX_WATCHES_PER_PRINCIPAL) -> None:
        self.backend = backend
        self.submit_checks = submit_checks
        self.max_watches = max_watches
        self._watches: dict[str, int] = {}   # principal name -> open WatchJob streams

    async def _call(self, context: grpc.aio.ServicerContext,
                    fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _abort_for(context, exc)

    async def SubmitJob(self, request: pb.SubmitJobRequest,
                        context: grpc.aio.ServicerContext) -> pb.SubmitJobResponse:
        async def run() -> Any:
            if not request.HasField("spec"):
                raise InvalidRequest([FieldError("spec", "is required")])
            authorize(request.spec.role)
            request_id = _request_id(request.request_id)
            try:
                spec = spec_from_proto(request.spec)
            except SpecError as e:
                raise InvalidRequest(e.errors, prefix="spec.") from None
            for check in self.submit_checks:
                bad = await check(spec)
                if bad:
                    raise InvalidRequest(bad, prefix="spec.")
            return await self.backend.submit(spec, request_id)

        view = await self._call(context, run)
        return pb.SubmitJobResponse(job=job_to_proto(view, time.time()))

    async def GetJob(self, request: pb.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        async def run() -> Any:
            return await self.backend.get(_authorized_key(request.key))

        return pb.GetJobResponse(job=job_to_proto(await self._call(context, run), time.time()))

    async def ListJobs(self, request: pb.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        async def run() -> pb.ListJobsResponse:
            who = caller()
            if request.role:
                authorize(request.role)
                if not NAME_RE.fullmatch(request.role):
                    raise InvalidRequest([FieldError("role", "is not a role name")])
            try:
                size = paging.page_size(request.page_size)
                after = paging.decode_token(request.page_token)
            except paging.BadPage as e:
                raise InvalidRequest([FieldError(e.field, str(e))]) from None
            # Keys first, views only for the page: a page costs its own jobs, not all.
            keys = await self.backend.keys(request.role or None)
            shown = sorted(k for k in keys if who.may_act_for(role_of(k)))
            chosen, token = paging.page(shown, shown, after, size)
            summaries = []
            for key in chosen:
                try:
                    summaries.append(summary_to_proto(summarize(await self.backend.get(key))))
                except NotFound:
                    continue   # retired between the two calls
            return pb.ListJobsResponse(jobs=summaries, next_page_token=token)

        return await self._call(context, run)

    async def KillJob(self, request: pb.KillJobRequest,
                      context: grpc.aio.ServicerContext) -> pb.KillJobResponse:
        async def run() -> Any:
            return await self.backend.kill(_authorized_key(request.key))

        return pb.KillJobResponse(job=job_to_proto(await self._call(context, run), time.time()))

    async def ScaleJob(self, request: pb.ScaleJobRequest,
                       context: grpc.aio.ServicerContext) -> pb.ScaleJobResponse:
        async def run() -> Any:
            _authorized_key(request.key)
            if request.workers < 0:
                bad = FieldError("workers", f"must be 0 or more, got {request.workers}")
                raise InvalidRequest([bad])
            return await self.backend.scale(request.key, request.workers)

        return pb.ScaleJobResponse(job=job_to_proto(await self._call(context, run), time.time()))

    async def WatchJob(self, request: pb.WatchJobRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchJobResponse]:
        who = caller().name
        open_now = self._watches.get(who, 0)
        if open_now >= self.max_watches:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{who} already has {open_now} WatchJob streams open (at most "
                        f"{self.max_watches} per principal); close some first")
        self._watches[who] = open_now + 1
        try:
            _authorized_key(request.key)
            deltas = DeltaEncoder()
            async for view in self.backend.watch(request.key):
                yield deltas.encode(job_to_proto(view, time.time()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _abort_for(context, exc)
        finally:
            left = self._watches.get(who, 1) - 1
            if left > 0:
                self._watches[who] = left
            else:
                self._watches.pop(who, None)


class BackendHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 answered from the backend's readiness, computed on every ask.

    Computing on demand (and polling inside Watch) keeps no background task alive that
    would outlive the server.
    """

    SERVICES = frozenset({"", SERVICE_NAME})

    def __init__(self, backend: object, poll_seconds: float = HEALTH_POLL_SECONDS) -> None:
        self.backend = backend
        self.poll_seconds = poll_seconds

    async def _status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        ready = getattr(self.backend, "ready", None)
        if ready is None:
            return health_pb2.HealthCheckResponse.SERVING
        try:
            answer = ready()
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            log.exception("backend ready() failed; reporting NOT_SERVING")
            answer = False
        return (health_pb2.HealthCheckResponse.SERVING if answer
                else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = await self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext
                    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: int | None = None
        # Ends when the client cancels or the server stops (both cancel this coroutine).
        while True:
            status = await self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self.poll_seconds)


def check_bindable(address: str) -> None:
    """Raise ``OSError`` with a plain reason if ``address`` (HOST:PORT) cannot be listened
    on, before gRPC tries: its own failure logs a C++ ``add_port.cc`` line to stderr."""
    host, _, port = address.rpartition(":")
    why = f"cannot listen for the Corral API on {address}"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise OSError(f"{why}: expected HOST:PORT with a port in 0..65535")
    if int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port),
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"{why}: cannot resolve {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: SO_REUSEADDR, so only a live listener is a conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(f"{why}: the address is already in use (another "
                                  "scheduler? pick another --api port)") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise OSError(f"{why}: {host} is not an address of this machine") from None
                raise OSError(f"{why}: {exc.strerror or exc}") from None


async def start_api_server(
    backend: JobBackend, address: str = "127.0.0.1:0",
    *, health_poll_seconds: float = HEALTH_POLL_SECONDS,
    credentials: grpc.ServerCredentials | None = None, auth: AuthConfig | None = None,
    submit_checks: tuple[SubmitCheck, ...] = (), observer: Any = None,
    max_watches: int = MAX_WATCHES_PER_PRINCIPAL,
) -> tuple[grpc.aio.Server, int]:
    """Start JobService, health and reflection on ``address``; return the server and port.

    ``credentials`` serves TLS (``security.server_credentials``); ``auth`` requires every
    call but health checks to authenticate (None: open, every caller may do anything).
    ``max_watches``: open WatchJob streams per principal (more: RESOURCE_EXHAUSTED).
    ``observer`` (``corral.observe.Observer``) adds ``HistoryService`` (job history, costs).
    Stop it with ``await server.stop(grace)``. Raises ``OSError`` if the address cannot be
    bound.
    """
    # No SO_REUSEPORT: a second scheduler on the same port must fail loudly, not share it.
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)),
                             interceptors=(SecurityInterceptor(auth),))
    pb_grpc.add_JobServiceServicer_to_server(
        JobServicer(backend, submit_checks, max_watches), server)
    health_pb2_grpc.add_HealthServicer_to_server(
        BackendHealth(backend, health_poll_seconds), server)
    names = [SERVICE_NAME]
    if observer is not None:
        from corral.api.gen.corral.v1 import history_pb2, history_pb2_grpc
        from corral.api.history import HistoryServicer

        history_pb2_grpc.add_HistoryServiceServicer_to_server(HistoryServicer(observer), server)
        names.append(history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    check_bindable(address)
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise OSError(f"cannot listen for the Corral API on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen for the Corral API on {address}")
    await server.start()
    return server, port
