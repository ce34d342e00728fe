"""One open RecordIO event stream to a scheduler or executor (the HTTP shell's piece).

Events are queued by the (synchronous) master/agent logic with ``send`` and written by the
request handler's coroutine in ``run``, which also emits HEARTBEAT events at a fixed
interval. The queue is bounded: a client that stops reading fills its socket buffer, then
the queue, and is then cut off (aborting its transport) instead of growing memory without
limit or blocking anybody else. ``run`` returns when the stream is closed by us (after
flushing what was queued) or the client went away; ``lost`` tells which.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from corral.localmesos.protocol import Json, dumps, event
from corral_executor.recordio import encode

_CLOSE = object()
MAX_WRITE_BUFFER = 16 * 1024 * 1024


class EventStream:
    def __init__(self, request: web.Request, heartbeat: float | None = None,
                 max_queue: int = 20000) -> None:
        self._request = request
        self._heartbeat = heartbeat
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._max_queue = max_queue
        self.closed = False        # no more events accepted
        self.lost = False          # the client went away (or was cut off)
        self.response: web.StreamResponse | None = None

    async def open(self, headers: dict[str, str]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       **headers})
        resp.enable_chunked_encoding()
        await resp.prepare(self._request)
        self.response = resp
        return resp

    def send(self, ev: Json) -> bool:
        """Queue one event; False if the stream is closed or was cut off for not reading."""
        if self.closed:
            return False
        transport = self._request.transport
        backlog = transport.get_write_buffer_size() if transport is not None else 0
        if self._queue.qsize() >= self._max_queue or backlog > MAX_WRITE_BUFFER:
            self.cut_off()
            return False
        self._queue.put_nowait(encode(dumps(ev)))
        return True

    def close(self) -> None:
        """Flush what is queued, then end the response."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_CLOSE)

    def cut_off(self) -> None:
        """Drop the client at once (it stopped reading, or we are shutting down)."""
        self.closed = True
        self.lost = True
        transport = self._request.transport
        if transport is not None:
            transport.abort()
        self._queue.put_nowait(_CLOSE)

    async def _get(self, timeout: float | None) -> object | None:
        """The next queued item, or None after ``timeout`` (cancellation-safe on 3.11)."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        try:
            done, _ = await asyncio.wait([getter], timeout=timeout)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        return None

    async def run(self) -> None:
        """Write queued events until closed or the client disappears."""
        assert self.response is not None
        next_beat = time.monotonic() + self._heartbeat if self._heartbeat else None
        try:
            while True:
                timeout = None if next_beat is None else max(0.0, next_beat - time.monotonic())
                item = await self._get(timeout)
                if item is None:
                    item = encode(dumps(event("HEARTBEAT")))
                    assert self._heartbeat is not None
                    next_beat = time.monotonic() + self._heartbeat
                if item is _CLOSE:
                    break
                assert isinstance(item, bytes)
                transport = self._request.transport
                if transport is None or transport.is_closing():
                    self.lost = True
                    break
                await self.response.write(item)
            if not self.lost:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.response.write_eof()
        except (ConnectionError, RuntimeError):
            self.lost = True
        finally:
            self.closed = True
