"""Serving the executor artifact to agents' fetchers, and the URIs that name it.

``GET /executor/<sha256>/corral-executor.pyz`` is what TaskInfos name: its content never
changes, so Mesos' fetcher cache (keyed by URI) may keep it. ``GET
/executor/corral-executor.pyz`` is the stable name of whatever this scheduler runs now
(for people and scripts). ``executor_uris`` builds the ``CommandInfo.URI`` and the command
that runs the fetched archive with the agent's ``python3``.
"""

from __future__ import annotations

import shlex
from typing import Any

from aiohttp import web

from corral.artifact import ARTIFACT_NAME, STABLE_PATH, Artifact
from corral.http.server import HttpServer

ZIP = "application/zip"


def add_routes(server: HttpServer, artifact: Artifact) -> None:
    etag = f'"{artifact.sha256}"'

    def answer(request: web.Request, immutable: bool) -> web.Response:
        headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"
                   if immutable else "no-cache"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=artifact.data, content_type=ZIP, headers=headers)

    async def stable(request: web.Request) -> web.Response:
        return answer(request, immutable=False)

    async def versioned(request: web.Request) -> web.Response:
        return answer(request, immutable=True)

    server.add_get(STABLE_PATH, stable)
    server.add_get(artifact.versioned_path, versioned)


def executor_setup(uri: str, *, python: str = "python3", cache: bool = True
                   ) -> tuple[str, tuple[dict[str, Any], ...]]:
    """(executor command, CommandInfo.uris) for an executor the fetcher brings from
    ``uri``: the archive lands as ``corral-executor.pyz`` in the sandbox (not extracted,
    not made executable) and runs with ``python`` without site packages (``-S``: it needs
    only the standard library, and starts faster)."""
    if not uri.startswith(("http://", "https://", "file://", "/")):
        raise ValueError(f"executor URI must be http(s)://, file:// or an absolute path: "
                         f"{uri!r}")
    command = f'exec {shlex.quote(python)} -S "$MESOS_SANDBOX/{ARTIFACT_NAME}"'
    return command, ({"value": uri, "cache": cache, "executable": False, "extract": False,
                      "output_file": ARTIFACT_NAME},)
