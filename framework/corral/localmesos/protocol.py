"""Mesos v1 JSON vocabulary for localmesos: ids, resources, statuses, events. Pure, no I/O.

Owns the wire shapes localmesos emits (``{"value": ..}`` ids, Resource entries, TaskStatus,
events with ``type`` plus a same-named payload) and the ``Pool`` value: the resources one
offer, task or executor holds on an agent: non-revocable scalars, revocable scalars and a
set of ports. Parsing is strict: a malformed resource list raises ``ResourceError`` with a
message that ends up in a TASK_ERROR or a 400.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from corral.core.resources import ZERO, Resources

Json = dict[str, Any]

VERSION = "1.11.0"
SCALAR_NAMES = ("cpus", "mem", "disk", "gpus")

TERMINAL_STATES = frozenset({
    "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST",
    "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR",
})
TASK_STATES = TERMINAL_STATES | {
    "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_UNREACHABLE",
    "TASK_UNKNOWN",
}

# Offers below both minimums are not worth making (Mesos' MIN_CPUS / MIN_MEM).
MIN_CPUS = 0.01
MIN_MEM = 32.0


class ResourceError(ValueError):
    """A Resource list that cannot be understood."""


def ident(value: str) -> Json:
    return {"value": value}


def id_of(obj: Any) -> str | None:
    """The ``value`` of an id message, or None when absent or malformed."""
    if isinstance(obj, dict) and isinstance(obj.get("value"), str) and obj["value"]:
        return obj["value"]
    return None


def ns(seconds: float) -> Json:
    return {"nanoseconds": round(seconds * 1e9)}


def seconds_of(duration: Any) -> float | None:
    """Seconds of a DurationInfo / TimeInfo, or None when absent or malformed."""
    if isinstance(duration, dict) and isinstance(duration.get("nanoseconds"), int | float):
        return float(duration["nanoseconds"]) / 1e9
    return None


def duration_text(seconds: float) -> str:
    """Mesos' Duration printing (``5secs``, ``15mins``, ``500ms``) used in executor env."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}mins"
    if seconds == int(seconds):
        return f"{int(seconds)}secs"
    return f"{round(seconds * 1000)}ms"


def new_uuid_b64() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


def is_uuid_b64(text: Any) -> bool:
    """True for base64 text of exactly 16 bytes (a Mesos status-update UUID)."""
    if not isinstance(text, str):
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 16
    except ValueError:
        return False


def is_b64(text: object) -> TypeGuard[str]:
    """True for a string that is valid base64."""
    if not isinstance(text, str):
        return False
    try:
        base64.b64decode(text, validate=True)
        return True
    except ValueError:
        return False


def event(kind: str, payload: Json | None = None) -> Json:
    body: Json = {"type": kind}
    if payload is not None:
        body[kind.lower()] = payload
    return body


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- ports


def ranges_of(ports: frozenset[int]) -> list[tuple[int, int]]:
    """Compress a set of ports into sorted inclusive ranges."""
    out: list[tuple[int, int]] = []
    for p in sorted(ports):
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def parse_port_range(text: str) -> frozenset[int]:
    """``31000-32000`` or ``31000-31010,31020-31030`` into a set of ports."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip().strip("[]")
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else lo
        if not (0 < lo <= hi <= 65535):
            raise ValueError(f"bad port range {part!r}")
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


# ---------------------------------------------------------------------------- pools


@dataclass(frozen=True, slots=True)
class Pool:
    """Resources held on one agent: regular scalars, revocable scalars and ports.

    ``unknown`` counts resources with names no localmesos agent has (they never fit).
    """

    scalars: Resources = ZERO
    revocable: Resources = ZERO
    ports: frozenset[int] = frozenset()
    unknown: int = 0

    def __add__(self, other: Pool) -> Pool:
        return Pool(self.scalars + other.scalars, self.revocable + other.revocable,
                    self.ports | other.ports, self.unknown + other.unknown)

    def __sub__(self, other: Pool) -> Pool:
        return Pool(self.scalars - other.scalars, self.revocable - other.revocable,
                    self.ports - other.ports, max(0, self.unknown - other.unknown))

    def fits(self, other: Pool) -> bool:
        """True if ``self`` is contained in ``other``."""
        return (self.unknown == 0 and self.scalars.fits(other.scalars)
                and self.revocable.fits(other.revocable) and self.ports <= other.ports)

    def is_empty(self) -> bool:
        return (self.scalars.is_empty() and self.revocable.is_empty() and not self.ports
                and self.unknown == 0)

    def has_revocable(self) -> bool:
        return not self.revocable.is_empty()

    def has_regular(self) -> bool:
        return not self.scalars.is_empty() or bool(self.ports) or self.unknown > 0

    def without_revocable(self) -> Pool:
        return Pool(self.scalars, ZERO, self.ports, self.unknown)

    def only_revocable(self) -> Pool:
        return Pool(ZERO, self.revocable)

    def worth_offering(self) -> bool:
        total = self.scalars + self.revocable
        return total.cpus >= MIN_CPUS or total.mem >= MIN_MEM

    def clamp(self) -> Pool:
        """Drop negative amounts (an estimate shrunk below what is in use)."""
        def c(r: Resources) -> Resources:
            return Resources(max(r.cpus, 0), max(r.mem, 0), max(r.disk, 0), max(r.gpus, 0))
        return Pool(c(self.scalars), c(self.revocable), self.ports, self.unknown)

    def to_json(self, role: str = "*", allocation_role: str | None = None) -> list[Json]:
        out: list[Json] = []
        for revocable, res in ((False, self.scalars), (True, self.revocable)):
            for name in SCALAR_NAMES:
                value = getattr(res, name)
                if value <= 0:
                    continue
                entry: Json = {"name": name, "type": "SCALAR", "scalar": {"value": value},
                               "role": role}
                if revocable:
                    entry["revocable"] = {}
                out.append(entry)
            if not revocable and self.ports:
                out.append({
                    "name": "ports", "type": "RANGES", "role": role,
                    "ranges": {"range": [{"begin": b, "end": e}
                                         for b, e in ranges_of(self.ports)]},
                })
        if allocation_role is not None:
            for entry in out:
                entry["allocation_info"] = {"role": allocation_role}
        return out

    def flat(self) -> dict[str, Any]:
        """The ``{"cpus": 1.0, ...}`` shape of /master/state."""
        total = self.scalars + self.revocable
        out: dict[str, Any] = total.as_dict()
        if self.ports:
            out["ports"] = ",".join(f"[{b}-{e}]" for b, e in ranges_of(self.ports))
        return out


@dataclass
class _Acc:
    scalars: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SCALAR_NAMES, 0.0))
    revocable: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(SCALAR_NAMES, 0.0))
    ports: set[int] = field(default_factory=set)
    unknown: int = 0


def parse_resources(entries: Any) -> Pool:
    """A JSON ``repeated Resource`` into a Pool; raises ResourceError when malformed."""
    if entries is None:
        return Pool()
    if not isinstance(entries, list):
        raise ResourceError("'resources' must be a list")
    acc = _Acc()
    for entry in entries:
        if not isinstance(entry, dict):
            raise ResourceError("a Resource must be an object")
        name, kind = entry.get("name"), entry.get("type")
        if not isinstance(name, str) or not name:
            raise ResourceError("a Resource needs a 'name'")
        if kind not in ("SCALAR", "RANGES", "SET"):
            raise ResourceError(f"Resource '{name}' has invalid type {kind!r}")
        revocable = "revocable" in entry
        if kind == "SCALAR":
            scalar = entry.get("scalar")
            value = scalar.get("value") if isinstance(scalar, dict) else None
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ResourceError(f"Resource '{name}' needs a non-negative scalar value")
            if name in SCALAR_NAMES:
                target = acc.revocable if revocable else acc.scalars
                target[name] += float(value)
            elif value > 0:
                acc.unknown += 1
        elif kind == "RANGES":
            ranges = entry.get("ranges")
            items = ranges.get("range") if isinstance(ranges, dict) else None
            if not isinstance(items, list):
                raise ResourceError(f"Resource '{name}' needs ranges.range")
            ports: set[int] = set()
            for r in items:
                b = r.get("begin") if isinstance(r, dict) else None
                e = r.get("end") if isinstance(r, dict) else None
                if not isinstance(b, int) or not isinstance(e, int) or b > e or b < 0:
                    raise ResourceError(f"Resource '{name}' has a malformed range")
                if e - b > 65535:
                    raise ResourceError(f"Resource '{name}' range too large")
                ports.update(range(b, e + 1))
            if name == "ports" and not revocable:
                acc.ports |= ports
            elif ports:
                acc.unknown += 1
        else:
            acc.unknown += 1
    return Pool(Resources(**acc.scalars), Resources(**acc.revocable),
                frozenset(acc.ports), acc.unknown)


# ---------------------------------------------------------------------------- statuses


def task_status(task_id: str, state: str, *, source: str, agent_id: str | None,
                reason: str | None = None, message: str | None = None,
                executor_id: str | None = None, with_uuid: bool = False,
                now: float | None = None) -> Json:
    """A TaskStatus. Master-generated ones carry no uuid; agent-generated ones do."""
    status: Json = {"task_id": ident(task_id), "state": state, "source": source,
                    "timestamp": time.time() if now is None else now}
    if agent_id is not None:
        status["agent_id"] = ident(agent_id)
    if executor_id is not None:
        status["executor_id"] = ident(executor_id)
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if with_uuid:
        status["uuid"] = new_uuid_b64()
    return status


def attributes_json(attrs: list[tuple[str, str]]) -> list[Json]:
    """Agent attributes: numbers as SCALAR, everything else TEXT."""
    out: list[Json] = []
    for name, value in attrs:
        try:
            num = float(value)
            out.append({"name": name, "type": "SCALAR", "scalar": {"value": num}})
        except ValueError:
            out.append({"name": name, "type": "TEXT", "text": {"value": value}})
    return out


def parse_attributes(text: str) -> list[tuple[str, str]]:
    """``zone:a;rack:3`` into pairs; raises ValueError on a malformed entry."""
    out: list[tuple[str, str]] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"bad attribute {part!r}: expected name:value")
        out.append((name.strip(), value.strip()))
    return out
