"""A small HTTP/1.1 client for the agent's executor API, on asyncio streams (stdlib only).

The executor runs on agents where nothing may be installed (it ships as a zipapp through
the Mesos fetcher), and starting it must cost little CPU, so it speaks the few bits of
HTTP/1.1 it needs itself instead of importing a client library: one POST per connection
(``Connection: close``), a JSON body, and a response body that is either
``Content-Length`` bytes, chunked (the SUBSCRIBE event stream), or read until the peer
closes. ``https`` is used when the agent's libprocess has TLS on (``Endpoint.from_env``
follows the ``LIBPROCESS_SSL_*`` variables the agent passes down). Every size is bounded:
a broken or hostile peer gets a ``ProtocolError``, never unbounded buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
MAX_BODY_BYTES = 1024 * 1024  # non-streaming answers (error texts): we read at most this


class ProtocolError(ConnectionError):
    """The peer does not speak the HTTP/1.1 we expect (or broke off mid-message)."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Endpoint:
    """Where the executor API is: host, port, path, and TLS settings."""

    host: str
    port: int
    path: str = "/api/v1/executor"
    tls: bool = False
    ca_file: str | None = None
    verify: bool = False

    @classmethod
    def from_env(cls, endpoint: str, env: Mapping[str, str]) -> Endpoint:
        """``endpoint`` is ``MESOS_AGENT_ENDPOINT`` (``host:port``); TLS as libprocess does:
        on with ``LIBPROCESS_SSL_ENABLED``, certificates checked only when
        ``LIBPROCESS_SSL_VERIFY_SERVER_CERT`` (or the older ``..._VERIFY_CERT``) is set,
        against ``LIBPROCESS_SSL_CA_FILE`` (or the system's CAs)."""
        host, sep, port = endpoint.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"MESOS_AGENT_ENDPOINT must be host:port, got {endpoint!r}")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        return cls(
            host=host, port=int(port),
            tls=_truthy(env.get("LIBPROCESS_SSL_ENABLED")),
            ca_file=env.get("LIBPROCESS_SSL_CA_FILE") or None,
            verify=_truthy(env.get("LIBPROCESS_SSL_VERIFY_SERVER_CERT"))
            or _truthy(env.get("LIBPROCESS_SSL_VERIFY_CERT")),
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for this endpoint, or None for plain HTTP (``ssl`` is
        imported only when TLS is on: it costs start-up time)."""
        if not self.tls:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            # The agent is addressed by IP; libprocess checks the certificate, not the name.
            ctx.check_hostname = False
        return ctx


class Response:
    """One response: status and headers read, body still on the connection."""

    def __init__(self, status: int, headers: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked, sized or until close)."""
        r = self._reader
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                line = await _readline(r)
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0 or size > MAX_CHUNK_BYTES:
                    raise ProtocolError(f"chunk of {size} bytes is out of bounds")
                if size == 0:
                    return
                try:
                    data = await r.readexactly(size)
                except asyncio.IncompleteReadError as exc:
                    raise ProtocolError("connection closed inside a chunk") from exc
                if await _readline(r) != b"":
                    raise ProtocolError("chunk not followed by CRLF")
                yield data
        length = self.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            left = int(length)
            while left > 0:
                data = await r.read(min(left, 65536))
                if not data:
                    raise ProtocolError("connection closed inside the body")
                left -= len(data)
                yield data
            return
        while data := await r.read(65536):
            yield data

    async def text(self, limit: int = MAX_BODY_BYTES) -> str:
        """The body as text, at most ``limit`` bytes of it."""
        out = bytearray()
        async for data in self.chunks():
            out += data[: max(0, limit - len(out))]
            if len(out) >= limit:
                break
        return out.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


async def _readline(reader: asyncio.StreamReader) -> bytes:
    """One CRLF-terminated line without its terminator."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed mid-line") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError("line too long") from exc
    return line.rstrip(b"\r\n")


async def post(endpoint: Endpoint, body: bytes, headers: Mapping[str, str],
               connect_timeout: float = 5.0) -> Response:
    """POST ``body`` (JSON) and return once the status line and headers are read.

    The caller reads the body (``chunks``/``text``) and must ``close()`` the response.
    Bound the whole exchange with ``asyncio.timeout`` where it must end.
    """
    async with asyncio.timeout(connect_timeout):
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=endpoint.ssl_context(),
            limit=MAX_HEADER_BYTES)
    try:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        head = [f"POST {endpoint.path} HTTP/1.1", f"Host: {host}:{endpoint.port}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} holds a line break")
            head.append(f"{name}: {value}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await _readline(reader)
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {status_line[:60]!r}")
        fields: dict[str, str] = {}
        size = 0
        while line := await _readline(reader):
            size += len(line)
            if size > MAX_HEADER_BYTES:
                raise ProtocolError("response headers too large")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:60]!r}")
            fields[name.strip().lower()] = value.strip()
        return Response(int(parts[1]), fields, reader, writer)
    except BaseException:
        writer.close()
        raise
