"""Request checks shared by the master's and agents' v1 endpoints (thin HTTP shell).

Mirrors the order of checks in Mesos' ``src/master/http.cpp``: method, Content-Type,
body size, JSON parse, call type. Only JSON is spoken; a protobuf body gets 415 with a
message saying so (a documented localmesos deviation).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

MAX_BODY = 8 * 1024 * 1024
JSON = "application/json"
PROTOBUF = "application/x-protobuf"


def bad_request(message: str) -> web.Response:
    return web.Response(status=400, text=message)


def accepts_json(request: web.Request) -> bool:
    """Does the Accept header (if any) allow a JSON response?"""
    accept = request.headers.get("Accept")
    if not accept:
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in (JSON, "*/*", "application/*"):
            return True
    return False


async def read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    """Method, content type, size and JSON checks; the parsed body or an error response."""
    if request.method != "POST":
        return None, web.Response(status=405, headers={"Allow": "POST"},
                                  text=f"Expecting 'POST', received '{request.method}'")
    ctype = request.headers.get("Content-Type")
    if not ctype:
        return None, bad_request("Expecting 'Content-Type' to be present")
    media = ctype.split(";")[0].strip().lower()
    if media == PROTOBUF:
        return None, web.Response(status=415, text="localmesos speaks JSON only: send "
                                                   "'Content-Type: application/json'")
    if media != JSON:
        return None, web.Response(status=415, text="Expecting 'Content-Type' of "
                                                   "application/json or application/x-protobuf")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None, web.Response(status=413, text=f"Request body exceeds {MAX_BODY} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, web.Response(status=413, text=f"Request body exceeds {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return None, bad_request(f"Failed to parse body into JSON: {e}")
    return body, None


async def read_call(request: web.Request, known: Collection[str]
                    ) -> tuple[dict[str, Any] | None, web.Response | None]:
    """A v1 Call object with a known ``type``; 400 for junk, 501 for type UNKNOWN."""
    body, error = await read_json(request)
    if error is not None:
        return None, error
    if not isinstance(body, dict):
        return None, bad_request("Failed to convert JSON into Call protobuf: not an object")
    kind = body.get("type")
    if not isinstance(kind, str):
        return None, bad_request("Failed to validate Call: Expecting 'type' to be present")
    if kind not in known:
        return None, bad_request(f"Failed to convert JSON into Call protobuf: "
                                 f"unknown call type '{kind[:64]}'")
    if kind == "UNKNOWN":
        return None, web.Response(status=501, text="Received 'UNKNOWN' call")
    return body, None
