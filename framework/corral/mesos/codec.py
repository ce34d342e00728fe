"""Pure translation between Mesos v1 JSON and Corral values.

Inbound: an Offer JSON becomes a ``corral.core.model.Offer`` (scalar cpus/mem/disk/gpus
summed over all entries, revocable entries kept apart, ``ports`` ranges, attributes as
string pairs, the maintenance window start in seconds); a TaskStatus JSON becomes a flat
dict of the fields the runtime acts on. Outbound: Resource, ExecutorInfo and TaskInfo JSON
for Corral's custom executor. ``bytes`` fields are base64 text on the wire; Mesos keeps
three decimals of scalar precision, and so does ``Resources``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from corral.core.model import Offer
from corral.core.resources import Resources
from corral.mesos.calls import duration, ident

Json = dict[str, Any]

SCALAR_NAMES = ("cpus", "mem", "disk", "gpus")


class CodecError(ValueError):
    """A Mesos JSON value does not have the shape the v1 API defines."""


# --- decoding large events ------------------------------------------------------------

# An OFFERS event of 10,000 offers is ~13 MB of JSON and ~10^6 objects: the cyclic garbage
# collector, triggered by allocation counts, would walk the growing heap again and again
# while it is built (none of it is garbage). Above this size it is held off meanwhile.
GC_HOLD_BYTES = 64 * 1024


@contextlib.contextmanager
def gc_held(hold: bool = True) -> Iterator[None]:
    """Hold the cyclic garbage collector off for the block (a no-op if ``hold`` is
    false or it is already off); it runs as usual afterwards."""
    if not hold or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def loads(record: bytes) -> Any:
    """One event's JSON, with the collector held off for a large one."""
    with gc_held(len(record) >= GC_HOLD_BYTES):
        return json.loads(record)


# --- bytes ---------------------------------------------------------------------------

def encode_bytes(data: bytes) -> str:
    """A ``bytes`` field as Mesos JSON carries it (standard base64)."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise CodecError(f"not base64: {text[:40]!r}") from e


def decode_uuid(text: str) -> bytes:
    """A status-update uuid (16 bytes) from its base64 text."""
    raw = decode_bytes(text)
    if len(raw) != 16:
        raise CodecError(f"uuid must be 16 bytes, got {len(raw)}")
    return raw


def encode_uuid(raw: bytes) -> str:
    if len(raw) != 16:
        raise CodecError(f"uuid must be 16 bytes, got {len(raw)}")
    return encode_bytes(raw)


# --- offers --------------------------------------------------------------------------

def _value(d: Mapping[str, Any] | None) -> str | None:
    """The ``value`` of an id message, tolerating absence."""
    if not isinstance(d, Mapping):
        return None
    v = d.get("value")
    return None if v is None else str(v)


def _fmt_scalar(x: float) -> str:
    """A scalar as text with Mesos' three decimals and no trailing zeros (2.0 -> "2")."""
    s = f"{round(float(x), 3):.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _ranges(value: Mapping[str, Any] | None) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for r in (value or {}).get("range", []) or []:
        out.append((int(r["begin"]), int(r["end"])))
    return out


def _attribute_text(attr: Mapping[str, Any]) -> str:
    """An attribute's value in the syntax operators use in ``--attributes``."""
    kind = attr.get("type")
    if kind == "TEXT":
        return str(attr.get("text", {}).get("value", ""))
    if kind == "SCALAR":
        return _fmt_scalar(attr.get("scalar", {}).get("value", 0.0))
    if kind == "SET":
        return "{" + ",".join(str(i) for i in attr.get("set", {}).get("item", [])) + "}"
    if kind == "RANGES":
        return "[" + ", ".join(f"{b}-{e}" for b, e in _ranges(attr.get("ranges"))) + "]"
    raise CodecError(f"unknown attribute type {kind!r}")


def offer_from_json(d: Mapping[str, Any]) -> Offer:
    """One Offer JSON object (as inside an OFFERS event) as a Corral ``Offer``."""
    try:
        offer_id = _value(d["id"])
        agent_id = _value(d["agent_id"])
    except (KeyError, TypeError) as e:
        raise CodecError(f"offer without id/agent_id: {e}") from e
    if offer_id is None or agent_id is None:
        raise CodecError("offer id and agent_id need a value")
    plain = dict.fromkeys(SCALAR_NAMES, 0.0)
    revocable = dict.fromkeys(SCALAR_NAMES, 0.0)
    ports: list[tuple[int, int]] = []
    for r in d.get("resources", []) or []:
        name, kind = r.get("name"), r.get("type")
        if kind == "SCALAR" and name in plain:
            target = revocable if "revocable" in r else plain
            target[name] += float(r.get("scalar", {}).get("value", 0.0))
        elif kind == "RANGES" and name == "ports":
            ports.extend(_ranges(r.get("ranges")))
    attributes = tuple((str(a["name"]), _attribute_text(a)) for a in d.get("attributes", []) or [])
    unavailable_at: float | None = None
    start = (d.get("unavailability") or {}).get("start")
    if isinstance(start, Mapping) and "nanoseconds" in start:
        unavailable_at = int(start["nanoseconds"]) / 1e9
    return Offer(
        id=offer_id, agent_id=agent_id, hostname=str(d.get("hostname", "")),
        resources=Resources(**plain), revocable=Resources(**revocable),
        ports=tuple(sorted(ports)), attributes=attributes, unavailable_at=unavailable_at,
    )


def offer_allocation_role(d: Mapping[str, Any]) -> str | None:
    """The role a MULTI_ROLE offer was allocated to (``allocation_info.role``), if any."""
    info = d.get("allocation_info")
    return str(info["role"]) if isinstance(info, Mapping) and "role" in info else None


def offers_from_event(event: Mapping[str, Any]) -> list[Offer]:
    """The offers of an OFFERS event."""
    return [offer_from_json(o) for o in event.get("offers", {}).get("offers", [])]


# --- outbound resources --------------------------------------------------------------

def _resource_common(r: Json, *, revocable: bool, role: str,
                     allocation_role: str | None) -> Json:
    r["role"] = role
    if allocation_role is not None:
        r["allocation_info"] = {"role": allocation_role}
    if revocable:
        r["revocable"] = {}
    return r


def scalar_resources_json(res: Resources, *, revocable: bool, role: str = "*",
                          allocation_role: str | None = None) -> list[Json]:
    """Resource JSON for the non-zero scalars of ``res``.

    ``revocable`` marks every entry revocable (a task may not mix the two kinds).
    ``allocation_role`` is needed by MULTI_ROLE frameworks: it must equal the offer's.
    """
    out: list[Json] = []
    for name, amount in res.as_dict().items():
        if amount > 0:
            r: Json = {"name": name, "type": "SCALAR", "scalar": {"value": amount}}
            out.append(_resource_common(r, revocable=revocable, role=role,
                                        allocation_role=allocation_role))
    return out


def port_ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct ports compressed into inclusive ranges."""
    out: list[tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def ports_resource_json(ports: list[int], *, revocable: bool = False, role: str = "*",
                        allocation_role: str | None = None) -> Json:
    """The ``ports`` RANGES resource holding exactly ``ports``."""
    if not ports:
        raise CodecError("a ports resource needs at least one port")
    r: Json = {"name": "ports", "type": "RANGES", "ranges": {
        "range": [{"begin": b, "end": e} for b, e in port_ranges(ports)]}}
    return _resource_common(r, revocable=revocable, role=role, allocation_role=allocation_role)


# --- task status ---------------------------------------------------------------------

def task_status_fields(status: Mapping[str, Any]) -> Json:
    """The fields of a TaskStatus the runtime acts on, flattened.

    ``uuid`` stays base64 text as received (it is echoed verbatim in ACKNOWLEDGE; None
    for master-generated updates, which are never acknowledged); ``data`` is decoded.
    """
    if "task_id" not in status or "state" not in status:
        raise CodecError("TaskStatus needs task_id and state")
    data = status.get("data")
    ts = status.get("timestamp")
    return {
        "task_id": _value(status["task_id"]),
        "state": str(status["state"]),
        "agent_id": _value(status.get("agent_id")),
        "executor_id": _value(status.get("executor_id")),
        "reason": status.get("reason"),
        "source": status.get("source"),
        "message": status.get("message"),
        "uuid": status.get("uuid"),
        "timestamp": None if ts is None else float(ts),
        "data": None if data is None else decode_bytes(str(data)),
    }


# --- executor and task infos ---------------------------------------------------------

def docker_image_container_json(image: str) -> Json:
    """ContainerInfo of type MESOS running a Docker image (the Mesos containerizer's
    "unified" images, as ``ExecutorInfo.container`` of a custom executor)."""
    return {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": image}}}}


def executor_info_json(executor_id: str, name: str, command: str, env: Mapping[str, str],
                       resources_json: list[Json],
                       shutdown_grace_seconds: float | None = None,
                       uris: Iterable[Mapping[str, Any]] = (),
                       container: Json | None = None) -> Json:
    """ExecutorInfo for a custom executor started by a shell command, with the
    ``CommandInfo.uris`` the fetcher brings into its sandbox and an optional container."""
    info: Json = {
        "executor_id": ident(executor_id),
        "type": "CUSTOM",
        "name": name,
        "command": {
            "value": command,
            "shell": True,
            "environment": {"variables": [
                {"name": k, "type": "VALUE", "value": v} for k, v in sorted(env.items())]},
        },
        "resources": list(resources_json),
    }
    uri_list = [dict(u) for u in uris]
    if uri_list:
        info["command"]["uris"] = uri_list
    if container is not None:
        info["container"] = container
    if shutdown_grace_seconds is not None:
        info["shutdown_grace_period"] = duration(shutdown_grace_seconds)
    return info


def task_info_json(task_id: str, name: str, agent_id: str, resources_json: list[Json],
                   executor: Json, data: bytes, labels: Mapping[str, str] | None = None,
                   kill_grace_seconds: float | None = None) -> Json:
    """TaskInfo for a task run by a custom executor (so no ``command``)."""
    info: Json = {
        "name": name,
        "task_id": ident(task_id),
        "agent_id": ident(agent_id),
        "resources": list(resources_json),
        "executor": executor,
        "data": encode_bytes(data),
    }
    if labels:
        info["labels"] = {"labels": [{"key": k, "value": v} for k, v in sorted(labels.items())]}
    if kill_grace_seconds is not None:
        info["kill_policy"] = {"grace_period": duration(kill_grace_seconds)}
    return info
