"""The API's front door: TLS, authentication, undecodable requests and the audit log.

``SecurityInterceptor`` wraps every method handler of the gRPC server, so before any
servicer code runs a call is

1. authenticated: a bearer token (``authorization: Bearer <token>`` metadata) or the
   client certificate's subject is looked up in the ``AuthConfig``; no known credential
   is UNAUTHENTICATED. Without an auth file every caller is ``auth.OPEN`` (may do
   anything). Health checks are never authenticated: a load balancer or orchestrator
   probes them without credentials and learns only SERVING/NOT_SERVING. Reflection is
   an ordinary authenticated method.
2. decoded: the request deserializer never raises; bytes that are not the method's
   protobuf become INVALID_ARGUMENT after authentication, never a servicer traceback.
3. attributed: the principal is available to the servicer through ``caller()`` (a
   context variable of the call's task), where authorisation happens per job role.
4. audited: every mutation (SubmitJob, KillJob, ScaleJob) logs one line on the
   ``corral.audit`` logger with the principal, the job and the outcome, also when it was
   refused.

TLS: ``server_credentials`` checks the PEM files at start-up (a key that does not match
its certificate is an error then, not a failed handshake later). With a client CA, gRPC
Python can only *require* a client certificate on every connection: mutual TLS is all or
nothing per server.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from corral.api.auth import OPEN, AuthConfig, Principal
from corral.core.limits import shown

audit_log = logging.getLogger("corral.audit")

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("corral_caller",
                                                                   default=OPEN)
JOB_SERVICE = "/corral.v1.JobService/"
MUTATIONS = frozenset({f"{JOB_SERVICE}SubmitJob", f"{JOB_SERVICE}KillJob",
                       f"{JOB_SERVICE}ScaleJob"})
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)
UNAUTHENTICATED_MESSAGE = ("this Corral scheduler requires credentials: a bearer token "
                           "(corral --token, CORRAL_TOKEN or the config file) or a client "
                           "certificate it knows")


def caller() -> Principal:
    """The principal of the call being served (``auth.OPEN`` outside a call)."""
    return _CALLER.get()


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str,
                trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()) -> NoReturn:
    """End the call with ``code``. grpc.aio's ``abort`` always raises, which its untyped
    API cannot tell a type checker; every servicer aborts through here."""
    await context.abort(code, details, trailing_metadata=trailing_metadata)
    raise RuntimeError("grpc.aio ServicerContext.abort returned instead of raising")


class Malformed:
    """What the deserializer returns for bytes that are not the expected message."""

    def __init__(self, error: BaseException) -> None:
        self.error = type(error).__name__


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None
                       ) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # DecodeError and friends: answered after authentication
            return Malformed(exc)

    return parse


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    subject: str | None = None
    common_name: str | None = None
    problem: str | None = None  # a malformed authorization header


def _text(v: str | bytes) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def credentials_of(context: grpc.aio.ServicerContext) -> Credentials:
    """The bearer token and certificate names a call presents."""
    headers = [_text(v) for k, v in (context.invocation_metadata() or ())
               if k == "authorization"]
    token = problem = None
    if len(headers) > 1:
        problem = "more than one authorization header"
    elif headers:
        scheme, _, value = headers[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            problem = "the authorization header must be 'Bearer <token>'"
        else:
            token = value.strip()
    ac = context.auth_context() or {}
    subject = ac.get("x509_subject") or [None]
    cn = ac.get("x509_common_name") or [None]
    return Credentials(token, _text(subject[0]) if subject[0] else None,
                       _text(cn[0]) if cn[0] else None, problem)


def _job_of(request: Any) -> str:
    """The job a mutation names, for the audit line (escaped, bounded)."""
    if hasattr(request, "spec"):
        s = request.spec
        return shown(f"{s.role}/{s.environment or 'default'}/{s.name}", 200)
    return shown(str(getattr(request, "key", "")), 200)


def _audit(method: str, who: str, request: Any, outcome: str, extra: str = "") -> None:
    audit_log.info("audit principal=%s rpc=%s job=%s outcome=%s%s", shown(who, 128),
                   method.rsplit("/", 1)[-1], _job_of(request), outcome, extra)


class SecurityInterceptor(grpc.aio.ServerInterceptor):
    """Authenticate, decode safely, attribute and audit every call (see the module)."""

    def __init__(self, auth: AuthConfig | None) -> None:
        self.auth = auth

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        return self._wrap(handler, details.method)

    async def _admit(self, method: str, context: grpc.aio.ServicerContext,
                     request: Any) -> Principal:
        """Authenticate, then refuse an undecodable request; abort or return the caller."""
        principal = OPEN
        if self.auth is not None and not method.startswith(PUBLIC_PREFIXES):
            creds = credentials_of(context)
            found = None if creds.problem else self.auth.identify(
                creds.token, creds.subject, creds.common_name)
            if found is None:
                if method in MUTATIONS:
                    _audit(method, "-", request if not isinstance(request, Malformed)
                           else None, "UNAUTHENTICATED")
                message = UNAUTHENTICATED_MESSAGE
                if creds.problem:
                    message = f"{message} ({creds.problem})"
                elif creds.token is not None:
                    message = "the bearer token is not known to this Corral scheduler"
                await abort(context, grpc.StatusCode.UNAUTHENTICATED, message)
            principal = found
        if isinstance(request, Malformed):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"the request is not a valid message for {method} "
                        f"({request.error})")
        return principal

    async def _audited(self, method: str, principal: Principal, request: Any,
                       context: grpc.aio.ServicerContext,
                       call: Callable[[], Awaitable[Any]]) -> Any:
        if method not in MUTATIONS:
            return await call()
        try:
            response = await call()
        except BaseException:
            code = context.code()
            _audit(method, principal.name, request,
                   code.name if isinstance(code, grpc.StatusCode) else "ERROR")
            raise
        _audit(method, principal.name, request, "OK")
        return response

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        deserialize = _safe_deserializer(handler.request_deserializer)
        serialize = handler.response_serializer

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                principal = await self._admit(method, context, request)
                token = _CALLER.set(principal)
                try:
                    return await self._audited(method, principal, request, context,
                                               lambda: inner_uu(request, context))
                finally:
                    _CALLER.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=deserialize, response_serializer=serialize)

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext
                                   ) -> AsyncIterator[Any]:
                principal = await self._admit(method, context, request)
                _CALLER.set(principal)  # this call's own task: nothing to restore
                async for response in inner_us(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=deserialize, response_serializer=serialize)

        # Client streaming (reflection): authenticate once, check every message.
        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[Any]:
            async for r in requests:
                if isinstance(r, Malformed):
                    await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                                f"a request message is not valid for {method}")
                yield r

        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any],
                                   context: grpc.aio.ServicerContext) -> Any:
                _CALLER.set(await self._admit(method, context, None))
                return await inner_su(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, request_deserializer=deserialize, response_serializer=serialize)

        inner_ss = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any],
                                context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _CALLER.set(await self._admit(method, context, None))
            async for response in inner_ss(checked(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize, response_serializer=serialize)


# ----------------------------------------------------------------------------- TLS


class TlsError(ValueError):
    """A certificate or key file is unusable; the message names the file."""


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _check_pair(cert_pem: bytes, key_pem: bytes, cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{key_path} is not an unencrypted PEM private key") from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, raw) != key.public_key().public_bytes(enc, raw):
        raise TlsError(f"the key {key_path} does not belong to the certificate {cert_path}")


def _check_certs(pem: bytes, path: Path) -> None:
    from cryptography import x509

    try:
        if not x509.load_pem_x509_certificates(pem):
            raise ValueError
    except ValueError:
        raise TlsError(f"{path} holds no PEM certificate") from None


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None
                       ) -> grpc.ServerCredentials:
    """TLS for the API; with ``client_ca`` every client must present a certificate
    signed by it."""
    cert_pem, key_pem = _read(cert, "TLS certificate"), _read(key, "TLS key")
    _check_pair(cert_pem, key_pem, cert, key)
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "client CA")
        _check_certs(ca_pem, client_ca)
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=ca_pem is not None)


def channel_credentials(ca: Path | None = None, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca`` (default: the system's roots), and present a client
    certificate if ``cert``/``key`` are given."""
    ca_pem = _read(ca, "CA file") if ca is not None else None
    if ca_pem is not None and ca is not None:
        _check_certs(ca_pem, ca)
    if (cert is None) != (key is None):
        raise TlsError("a client certificate needs both --cert-file and --key-file")
    cert_pem = key_pem = None
    if cert is not None and key is not None:
        cert_pem, key_pem = _read(cert, "client certificate"), _read(key, "client key")
        _check_pair(cert_pem, key_pem, cert, key)
    return grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
