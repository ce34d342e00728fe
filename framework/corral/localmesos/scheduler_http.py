"""``POST /api/v1/scheduler``: the thin HTTP shell over ``Master`` for scheduler calls.

With ``--authenticate-http-frameworks`` every request first needs HTTP Basic credentials
from ``--credentials`` (401 with ``WWW-Authenticate: Basic realm="mesos-master-scheduler"``
otherwise, before anything else is looked at, as libprocess does); SUBSCRIBE's
FrameworkInfo.principal must then be the authenticated one (400; unset, it is filled in)
and every other call must come from the framework's own principal (400).

Check order follows Mesos' ``Master::Http::scheduler``: method (405), Content-Type
(400/415), body (413/400), call type (400/501), call shape (400); then SUBSCRIBE opens the
RecordIO stream (406 on a bad Accept, 400 if it carries ``Mesos-Stream-Id``), while every
other call needs a known framework (400), subscribed (403), with the right stream id
(400), and is answered 202 with an empty body.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from corral.localmesos import auth, httputil, validation
from corral.localmesos.master import Master
from corral.localmesos.protocol import event, id_of
from corral.localmesos.streams import EventStream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STREAM_HEADER = "Mesos-Stream-Id"


def make_handler(master: Master) -> Handler:
    async def scheduler_api(request: web.Request) -> web.StreamResponse:
        principal: str | None = None
        if master.options.authenticate_frameworks:
            got = auth.basic_principal(request.headers.get("Authorization"),
                                       master.options.credentials, auth.SCHEDULER_REALM)
            if isinstance(got, auth.Challenge):
                return web.Response(status=401, text=got.message,
                                    headers={"WWW-Authenticate": got.www_authenticate})
            principal = got
        call, error = await httputil.read_call(request, validation.SCHEDULER_CALLS)
        if error is not None:
            return error
        assert call is not None
        kind = call["type"]
        if kind in validation.UNIMPLEMENTED_CALLS:
            return web.Response(status=501, text=f"Call {kind} is not implemented by "
                                                 f"localmesos")
        shape = validation.call_shape_error(call)
        if shape is not None:
            return httputil.bad_request(f"Failed to validate scheduler::Call: {shape}")
        if kind == "SUBSCRIBE":
            info = call["subscribe"]["framework_info"]
            if principal is not None and "principal" in info and info["principal"] != principal:
                return httputil.bad_request(
                    f"Failed to validate scheduler::Call: Authenticated principal "
                    f"'{principal}' does not match principal '{info['principal']}' set in "
                    "`FrameworkInfo`")
            if principal is not None:
                call["subscribe"]["framework_info"] = {**info, "principal": principal}
            return await _subscribe(master, request, call)
        fw = master.frameworks.get(id_of(call["framework_id"]) or "")
        if fw is None:
            return httputil.bad_request("Framework cannot be found")
        if principal is not None and principal != fw.info.get("principal", ""):
            return httputil.bad_request(
                f"Authenticated principal '{principal}' does not match principal "
                f"'{fw.info.get('principal', '')}' set in `FrameworkInfo`")
        if not fw.connected:
            return web.Response(status=403, text="Framework is not subscribed")
        stream_id = request.headers.get(STREAM_HEADER)
        if stream_id is None:
            return httputil.bad_request(f"All non-subscribe calls should include the "
                                        f"'{STREAM_HEADER}' header")
        if stream_id != fw.stream_id:
            return httputil.bad_request(
                f"The stream ID '{stream_id}' included in this request didn't match the "
                f"stream ID currently associated with framework ID {fw.id}")
        if kind == "TEARDOWN":
            master.teardown(fw)
        elif kind == "ACCEPT":
            master.accept(fw, call["accept"])
        elif kind == "DECLINE":
            master.decline(fw, [id_of(o) or "" for o in call["decline"].get("offer_ids", [])],
                           call["decline"].get("filters"))
        elif kind == "REVIVE":
            master.revive(fw, (call.get("revive") or {}).get("roles", []))
        elif kind == "SUPPRESS":
            master.suppress(fw, (call.get("suppress") or {}).get("roles", []))
        elif kind == "KILL":
            master.kill(fw, call["kill"])
        elif kind == "SHUTDOWN":
            master.shutdown(fw, call["shutdown"])
        elif kind == "ACKNOWLEDGE":
            master.acknowledge(fw, call["acknowledge"])
        elif kind == "RECONCILE":
            master.reconcile(fw, call["reconcile"])
        elif kind == "MESSAGE":
            master.message(fw, call["message"])
        elif kind == "ACCEPT_INVERSE_OFFERS":
            master.inverse_offers_answered(fw, call["accept_inverse_offers"], "ACCEPT")
        elif kind == "DECLINE_INVERSE_OFFERS":
            master.inverse_offers_answered(fw, call["decline_inverse_offers"], "DECLINE")
        # REQUEST is accepted and ignored, as by Mesos' allocator.
        return web.Response(status=202)

    return scheduler_api


async def _subscribe(master: Master, request: web.Request, call: dict) -> web.StreamResponse:
    if STREAM_HEADER in request.headers:
        return httputil.bad_request(f"Subscribe calls should not include the "
                                    f"'{STREAM_HEADER}' header")
    if not httputil.accepts_json(request):
        return web.Response(status=406, text="Expecting 'Accept' to allow application/json "
                                             "(localmesos does not stream protobuf)")
    stream = EventStream(request, heartbeat=master.options.heartbeat_interval)
    info = call["subscribe"]["framework_info"]
    fw, error = master.subscribe(info, stream, call["subscribe"].get("suppressed_roles"))
    if fw is None:
        # A semantic failure: 200, one ERROR event, then the stream closes. Mesos sets
        # the stream id header before the master decides (master/http.cpp), so even
        # this short stream carries a fresh one.
        await stream.open({STREAM_HEADER: str(uuid.uuid4())})
        stream.send(event("ERROR", {"message": error}))
        stream.close()
        await stream.run()
        return stream.response  # type: ignore[return-value]
    assert fw.stream_id is not None
    stream.send(master.subscribed_event(fw))
    master.request_allocation()
    try:
        await stream.open({STREAM_HEADER: fw.stream_id})
        await stream.run()
    finally:
        master.stream_ended(fw, stream)
    return stream.response  # type: ignore[return-value]
