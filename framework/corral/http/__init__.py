"""The scheduler's plain HTTP server (``corral scheduler --http HOST:PORT``).

``server.HttpServer`` is a small aiohttp site that parts of Corral add routes to; today
``executor.add_routes`` serves the executor artifact agents fetch. Metrics and a web UI
are meant to be added the same way: a module with an ``add_routes(server, ...)``.
"""

from corral.http.server import HttpServer, parse_address

__all__ = ["HttpServer", "parse_address"]
