"""Pure builders of Mesos v1 scheduler *Call* bodies (JSON dicts), one per call type.

Vocabulary follows ``scheduler.proto``: every id is an object ``{"value": "..."}``, every
``bytes`` field is base64 text, durations are ``{"nanoseconds": int}``. Every call except
the first SUBSCRIBE carries the top-level ``framework_id``. No I/O here, so the exact bytes
the client sends can be checked without a network.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]


def ident(value: str) -> Json:
    """A Mesos id message (OfferID, AgentID, TaskID, ...)."""
    return {"value": value}


def duration(seconds: float) -> Json:
    """A Mesos DurationInfo."""
    return {"nanoseconds": round(seconds * 1e9)}


def filters(refuse_seconds: float | None) -> Json | None:
    return None if refuse_seconds is None else {"refuse_seconds": float(refuse_seconds)}


def _call(kind: str, framework_id: str | None, field: str | None = None,
          payload: Json | None = None) -> Json:
    body: Json = {"type": kind}
    if framework_id is not None:
        body["framework_id"] = ident(framework_id)
    if field is not None and payload is not None:
        body[field] = payload
    return body


def subscribe(framework_info: Json, framework_id: str | None) -> Json:
    """SUBSCRIBE; a re-subscription names the id both at top level and in FrameworkInfo."""
    info = dict(framework_info)
    if framework_id is not None:
        info["id"] = ident(framework_id)
    else:
        info.pop("id", None)
    return _call("SUBSCRIBE", framework_id, "subscribe", {"framework_info": info})


def teardown(framework_id: str) -> Json:
    return _call("TEARDOWN", framework_id)


def accept(framework_id: str, offer_ids: Sequence[str], operations: Sequence[Json],
           refuse_seconds: float | None = None) -> Json:
    payload: Json = {"offer_ids": [ident(o) for o in offer_ids], "operations": list(operations)}
    f = filters(refuse_seconds)
    if f is not None:
        payload["filters"] = f
    return _call("ACCEPT", framework_id, "accept", payload)


def launch_operation(task_infos: Sequence[Json]) -> Json:
    """The LAUNCH offer operation."""
    return {"type": "LAUNCH", "launch": {"task_infos": list(task_infos)}}


def decline(framework_id: str, offer_ids: Sequence[str],
            refuse_seconds: float | None = None) -> Json:
    payload: Json = {"offer_ids": [ident(o) for o in offer_ids]}
    f = filters(refuse_seconds)
    if f is not None:
        payload["filters"] = f
    return _call("DECLINE", framework_id, "decline", payload)


def _inverse(kind: str, field: str, framework_id: str, ids: Sequence[str],
             refuse_seconds: float | None) -> Json:
    payload: Json = {"inverse_offer_ids": [ident(i) for i in ids]}
    f = filters(refuse_seconds)
    if f is not None:
        payload["filters"] = f
    return _call(kind, framework_id, field, payload)


def accept_inverse_offers(framework_id: str, ids: Sequence[str],
                          refuse_seconds: float | None = None) -> Json:
    return _inverse("ACCEPT_INVERSE_OFFERS", "accept_inverse_offers", framework_id, ids,
                    refuse_seconds)


def decline_inverse_offers(framework_id: str, ids: Sequence[str],
                           refuse_seconds: float | None = None) -> Json:
    return _inverse("DECLINE_INVERSE_OFFERS", "decline_inverse_offers", framework_id, ids,
                    refuse_seconds)


def revive(framework_id: str, roles: Sequence[str] | None = None) -> Json:
    """REVIVE; without roles the payload is omitted, which Mesos reads as "all roles"."""
    payload = None if roles is None else {"roles": list(roles)}
    return _call("REVIVE", framework_id, "revive", payload)


def suppress(framework_id: str, roles: Sequence[str] | None = None) -> Json:
    payload = None if roles is None else {"roles": list(roles)}
    return _call("SUPPRESS", framework_id, "suppress", payload)


def kill(framework_id: str, task_id: str, agent_id: str | None = None,
         grace_seconds: float | None = None) -> Json:
    payload: Json = {"task_id": ident(task_id)}
    if agent_id is not None:
        payload["agent_id"] = ident(agent_id)
    if grace_seconds is not None:
        payload["kill_policy"] = {"grace_period": duration(grace_seconds)}
    return _call("KILL", framework_id, "kill", payload)


def shutdown(framework_id: str, executor_id: str, agent_id: str) -> Json:
    return _call("SHUTDOWN", framework_id, "shutdown",
                 {"executor_id": ident(executor_id), "agent_id": ident(agent_id)})


def acknowledge(framework_id: str, agent_id: str, task_id: str, uuid: str) -> Json:
    """ACKNOWLEDGE; ``uuid`` is passed through exactly as received (base64 text)."""
    return _call("ACKNOWLEDGE", framework_id, "acknowledge",
                 {"agent_id": ident(agent_id), "task_id": ident(task_id), "uuid": uuid})


def reconcile(framework_id: str, tasks: Sequence[tuple[str, str | None]]) -> Json:
    """RECONCILE; an empty list asks for every task the master knows (implicit)."""
    out: list[Json] = []
    for task_id, agent_id in tasks:
        t: Json = {"task_id": ident(task_id)}
        if agent_id is not None:
            t["agent_id"] = ident(agent_id)
        out.append(t)
    return _call("RECONCILE", framework_id, "reconcile", {"tasks": out})


def message(framework_id: str, agent_id: str, executor_id: str, data: bytes) -> Json:
    return _call("MESSAGE", framework_id, "message", {
        "agent_id": ident(agent_id), "executor_id": ident(executor_id),
        "data": base64.b64encode(data).decode("ascii"),
    })
