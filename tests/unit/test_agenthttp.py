"""The executor's own HTTP/1.1 client against canned raw responses on 127.0.0.1:0."""

from __future__ import annotations

import asyncio

import pytest

from corral_executor import agenthttp
from corral_executor.agenthttp import Endpoint, ProtocolError


async def _exchange(raw: bytes) -> tuple[bytes, agenthttp.Response | Exception, list[bytes]]:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    chunks: list[bytes] = []
    try:
        resp = await agenthttp.post(Endpoint("127.0.0.1", port), b'{"x":1}',
                                    {"Authorization": "Bearer t"})
        try:
            async for c in resp.chunks():
                chunks.append(c)
        except ProtocolError as exc:
            return seen[0], exc, chunks
        finally:
            resp.close()
        result: agenthttp.Response | Exception = resp
    except ProtocolError as exc:
        result = exc
    finally:
        server.close()
        await server.wait_closed()
    return (seen[0] if seen else b""), result, chunks


def run(raw: bytes) -> tuple[bytes, agenthttp.Response | Exception, list[bytes]]:
    return asyncio.run(_exchange(raw))


def test_chunked_stream_and_request_shape() -> None:
    head, resp, chunks = run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\n3\n{}\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n")
    assert isinstance(resp, agenthttp.Response) and resp.status == 200
    assert chunks == [b"3\n{}\n", b"abc"]
    assert head.startswith(b"POST /api/v1/executor HTTP/1.1\r\n")
    assert b"Authorization: Bearer t\r\n" in head and b"Content-Length: 7\r\n" in head


def test_sized_and_unsized_bodies() -> None:
    _, resp, chunks = run(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nbody")
    assert isinstance(resp, agenthttp.Response) and resp.status == 202
    assert b"".join(chunks) == b"body"
    _, resp, chunks = run(b"HTTP/1.0 400 Bad\r\n\r\nuntil close")
    assert isinstance(resp, agenthttp.Response) and b"".join(chunks) == b"until close"


@pytest.mark.parametrize("raw", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
])
def test_broken_peers_are_protocol_errors(raw: bytes) -> None:
    _, result, _ = run(raw)
    assert isinstance(result, ProtocolError), result


def test_endpoint_from_agent_environment() -> None:
    plain = Endpoint.from_env("10.0.0.5:5051", {})
    assert (plain.url, plain.ssl_context()) == ("http://10.0.0.5:5051/api/v1/executor", None)
    tls = Endpoint.from_env("[::1]:5051", {"LIBPROCESS_SSL_ENABLED": "true",
                                           "LIBPROCESS_SSL_VERIFY_SERVER_CERT": "1"})
    assert tls.url == "https://[::1]:5051/api/v1/executor" and tls.verify
    for bad in ("nohost", "h:0", "h:99999", ":5051"):
        with pytest.raises(ValueError):
            Endpoint.from_env(bad, {})
