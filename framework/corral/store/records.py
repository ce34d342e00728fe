"""What the store persists, and its JSON encoding with strict validation on the way back.

Pure: no ZooKeeper here. Every decoder takes the znode path it read, so any problem becomes
``StateCorrupt("<path>: <what is wrong>")`` and the scheduler refuses to lead on garbage.
Every document carries ``"format": 1``; a Corral that meets another format refuses it.

Vocabulary:
  ``JobRecord``  the intent for one job: spec, desired worker count, state, request id.
  ``TaskRecord`` one launched task: the agent it went to, its slot, its attempt number.
  ``progress``   checkpoint markers: slot label -> last checkpoint sequence number.
  *shard*        one znode of a job's task map, at most ``shard_bytes`` long.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.core.model import JobSpec
from corral.core.spec import SpecError, parse_job_spec, spec_to_dict
from corral.core.views import JobState
from corral.store.errors import StateCorrupt
from corral.store.layout import FORMAT

ZNODE_LIMIT = 1024 * 1024  # ZooKeeper's default jute.maxbuffer: the largest znode value


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A launched task: where it went and which slot/attempt it fills."""

    agent_id: str
    slot: str  # "master" or "worker-<n>"
    attempt: int = 0
    # Where it runs, so a new leader can tell workers the master's address again before any
    # offer from that agent arrives. Optional: stored only when known.
    hostname: str = ""
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """Per-slot counters a new leader must continue: attempts so far (task ids are never
    reused), failures counted against the restart limit, and whether a worker is done."""

    attempts: int = 0
    failures: int = 0
    completed: bool = False


@dataclass(frozen=True, slots=True)
class JobRecord:
    """The durable intent for one job (its key is ``spec.key``)."""

    spec: JobSpec
    desired_workers: int
    state: JobState = JobState.PENDING
    request_id: str = ""
    # Optional runtime detail (absent from documents written before it existed):
    killing: bool = False  # a kill was requested and some task may still run
    slots: Mapping[str, SlotRecord] = field(default_factory=dict)  # slot label -> counters
    submitted_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    target_reason: str = ""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job as loaded: its record plus launched tasks and checkpoint progress."""

    key: str
    spec: JobSpec
    desired_workers: int
    state: JobState
    request_id: str
    tasks: Mapping[str, TaskRecord] = field(default_factory=dict)
    progress: Mapping[str, int] = field(default_factory=dict)
    full_record: JobRecord | None = None  # the whole record as loaded (with the detail)

    @property
    def record(self) -> JobRecord:
        if self.full_record is not None:
            return self.full_record
        return JobRecord(self.spec, self.desired_workers, self.state, self.request_id)


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything ``StateStore.load`` read: what a new leader resumes from."""

    framework_id: str | None
    jobs: Mapping[str, StoredJob]
    epoch: int


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _document(path: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise StateCorrupt(path, f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise StateCorrupt(path, f"expected a JSON object, found {type(doc).__name__}")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise StateCorrupt(path, f"unknown format version {fmt!r} (this Corral reads format "
                                 f"{FORMAT}; was it written by a newer Corral?)")
    return doc


def _field(path: str, doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise StateCorrupt(path, f"missing field {name!r}")
    v = doc[name]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
        raise StateCorrupt(path, f"field {name!r} has the wrong type ({type(v).__name__})")
    return v


def _nonnegative(path: str, doc: Mapping[str, Any], name: str) -> int:
    v = _field(path, doc, name, int)
    if v < 0:
        raise StateCorrupt(path, f"field {name!r} must not be negative, got {v}")
    return int(v)


# -- framework id ---------------------------------------------------------------------

def encode_framework_id(framework_id: str) -> bytes:
    return _dumps({"format": FORMAT, "framework_id": framework_id})


def decode_framework_id(path: str, data: bytes) -> str:
    fid = _field(path, _document(path, data), "framework_id", str)
    if not fid:
        raise StateCorrupt(path, "framework_id is empty")
    return str(fid)


# -- job records ----------------------------------------------------------------------

def encode_job(key: str, record: JobRecord, gen: int, shards: int) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "spec": spec_to_dict(record.spec),
        "desired_workers": record.desired_workers,
        "state": record.state.value,
        "request_id": record.request_id,
        "tasks": {"gen": gen, "shards": shards},
    }
    # The optional detail is written only when set, so plain records stay as they were.
    if record.killing:
        doc["killing"] = True
    if record.slots:
        doc["slots"] = {label: [s.attempts, s.failures, int(s.completed)]
                        for label, s in sorted(record.slots.items())}
    if record.submitted_at:
        doc["submitted_at"] = record.submitted_at
    if record.finished_at is not None:
        doc["finished_at"] = record.finished_at
    if record.message:
        doc["message"] = record.message
    if record.target_reason:
        doc["target_reason"] = record.target_reason
    return _dumps(doc)


def _decode_slots(path: str, raw: Any) -> dict[str, SlotRecord]:
    if not isinstance(raw, dict):
        raise StateCorrupt(path, "field 'slots' must be an object")
    out: dict[str, SlotRecord] = {}
    for label, v in raw.items():
        ok = (isinstance(v, list) and len(v) == 3
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
              and v[2] in (0, 1))
        if not ok:
            raise StateCorrupt(path, f"slot {label!r}: expected [attempts, failures, 0|1]")
        out[label] = SlotRecord(v[0], v[1], bool(v[2]))
    return out


def _optional(path: str, doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
              default: Any) -> Any:
    if name not in doc or doc[name] is None:
        return default
    return _field(path, doc, name, kind)


def decode_job(path: str, key: str, data: bytes) -> tuple[JobRecord, int, int]:
    """The record and its task shard pointer ``(gen, shards)``."""
    doc = _document(path, data)
    if _field(path, doc, "key", str) != key:
        raise StateCorrupt(path, f"key {doc['key']!r} does not match the znode name")
    try:
        spec = parse_job_spec(_field(path, doc, "spec", dict))
    except SpecError as e:
        raise StateCorrupt(path, f"stored spec is invalid: {e}") from None
    if spec.key != key:
        raise StateCorrupt(path, f"stored spec is for job {spec.key!r}, not {key!r}")
    desired = _nonnegative(path, doc, "desired_workers")
    state_s = _field(path, doc, "state", str)
    try:
        state = JobState(state_s)
    except ValueError:
        raise StateCorrupt(path, f"unknown job state {state_s!r}") from None
    request_id = _field(path, doc, "request_id", str)
    ptr = _field(path, doc, "tasks", dict)
    gen, shards = _nonnegative(path, ptr, "gen"), _nonnegative(path, ptr, "shards")
    killing = _optional(path, doc, "killing", bool, False)
    slots = _decode_slots(path, doc["slots"]) if "slots" in doc else {}
    submitted = float(_optional(path, doc, "submitted_at", (int, float), 0.0))
    finished = _optional(path, doc, "finished_at", (int, float), None)
    message = _optional(path, doc, "message", str, "")
    reason = _optional(path, doc, "target_reason", str, "")
    record = JobRecord(spec, desired, state, request_id, killing=killing, slots=slots,
                       submitted_at=submitted,
                       finished_at=float(finished) if finished is not None else None,
                       message=message, target_reason=reason)
    return record, gen, shards


# -- progress markers -----------------------------------------------------------------

def encode_progress(progress: Mapping[str, int]) -> bytes:
    return _dumps({"format": FORMAT, "progress": dict(progress)})


def decode_progress(path: str, data: bytes) -> dict[str, int]:
    raw = _field(path, _document(path, data), "progress", dict)
    for slot, seq in raw.items():
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise StateCorrupt(path, f"progress of {slot!r} must be a non-negative integer")
    return dict(raw)


# -- task shards ----------------------------------------------------------------------

def _task_json(task_id: str, t: TaskRecord) -> str:
    entry: dict[str, Any] = {"agent_id": t.agent_id, "attempt": t.attempt, "slot": t.slot}
    if t.hostname:
        entry["host"] = t.hostname
    if t.ports:
        entry["ports"] = list(t.ports)
    return json.dumps(task_id) + ":" + json.dumps(entry, separators=(",", ":"), sort_keys=True)


def encode_shards(tasks: Mapping[str, TaskRecord], shard_bytes: int) -> list[bytes]:
    """Split a task map into JSON documents of at most ``shard_bytes`` each (sorted by task
    id so the same map always gives the same shards). No shards for an empty map."""
    head, tail = b'{"format":%d,"tasks":{' % FORMAT, b"}}"
    shards: list[bytes] = []
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for task_id in sorted(tasks):
        part = _task_json(task_id, tasks[task_id]).encode()
        if len(head) + len(tail) + len(part) > shard_bytes:
            raise ValueError(f"task {task_id!r} alone exceeds the shard size {shard_bytes}")
        if parts and size + len(part) + 1 > shard_bytes:
            shards.append(head + b",".join(parts) + tail)
            parts, size = [], len(head) + len(tail)
        size += len(part) + (1 if parts else 0)
        parts.append(part)
    if parts:
        shards.append(head + b",".join(parts) + tail)
    return shards


def decode_shard(path: str, data: bytes) -> dict[str, TaskRecord]:
    raw = _field(path, _document(path, data), "tasks", dict)
    out: dict[str, TaskRecord] = {}
    for task_id, entry in raw.items():
        where = f"task {task_id!r}"
        if not task_id or not isinstance(entry, dict):
            raise StateCorrupt(path, f"{where}: expected an object")
        agent, slot, attempt = entry.get("agent_id"), entry.get("slot"), entry.get("attempt")
        if not isinstance(agent, str) or not isinstance(slot, str):
            raise StateCorrupt(path, f"{where}: agent_id and slot must be strings")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise StateCorrupt(path, f"{where}: attempt must be a non-negative integer")
        host, ports = entry.get("host", ""), entry.get("ports", [])
        if not isinstance(host, str) or not isinstance(ports, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
            raise StateCorrupt(path, f"{where}: host must be a string, ports a list of ports")
        out[task_id] = TaskRecord(agent_id=agent, slot=slot, attempt=attempt, hostname=host,
                                  ports=tuple(ports))
    return out


def validate_task(task_id: str, t: TaskRecord) -> None:
    """Reject what could not be loaded back (callers' bugs surface at write time)."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"task id {task_id!r} must be a non-empty string")
    if not isinstance(t, TaskRecord):
        raise TypeError(f"task {task_id!r}: expected a TaskRecord, got {type(t).__name__}")
    if t.attempt < 0:
        raise ValueError(f"task {task_id!r}: attempt must be >= 0")
