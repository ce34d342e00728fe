"""The scheduler's plain HTTP server (``corral scheduler --http HOST:PORT``).

``server.HttpServer`` is a small aiohttp site that parts of Corral add routes to:
``executor.add_routes`` serves the executor artifact agents fetch, and
``corral.observe.web.add_routes`` the metrics, health checks, JSON API and web UI.
"""

from corral.http.server import HttpServer, parse_address

__all__ = ["HttpServer", "parse_address"]
