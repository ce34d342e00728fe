"""``HttpServer``: one aiohttp site on ``HOST:PORT`` with routes added by other modules.

Owns binding (port 0 picks a free one), the address agents and users should use
(``advertise``: the bound host, or this machine's name when bound to every interface),
and an orderly stop. Requests are small GETs: bodies are capped at 64 KiB.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WILDCARD = ("", "0.0.0.0", "::", "[::]")


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port); ValueError names what is wrong."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class HttpServer:
    """A plain-HTTP aiohttp server; add routes before ``start``."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024)
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    def add_get(self, path: str, handler: Handler) -> None:
        """Serve GET (and HEAD, which Mesos' fetcher cache sends to learn a size)."""
        self.app.router.add_get(path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        """Serve POST (small forms: the web UI's login)."""
        self.app.router.add_post(path, handler)

    async def start(self, address: str) -> int:
        """Bind ``address`` (``HOST:PORT``) and serve; returns the bound port."""
        host, port = parse_address(address)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host or None, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])  # the one site's socket, bound now
        return self.port

    def advertise(self) -> str:
        """The base URL others should use: ``http://HOST:PORT`` with this machine's name
        standing in for a wildcard bind (pass ``--http-advertise`` where that name does
        not resolve to a reachable address)."""
        host = socket.getfqdn() if self.host in _WILDCARD else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
