"""How the store encodes a job's intent, and strict validation on the way back.

Pure: no ZooKeeper here. What is stored is the core's ``JobIntent`` (``core.intent``), the
one schema of a job's durable intent, split over three kinds of znode so the parts that
change often are rewritten alone: the job *record* (spec, desired workers and their holes,
phase, counters, times, the policy's memory), its *task shards* (the tasks that may be
alive) and its *progress* markers (checkpoint sequences). Every decoder takes the znode
path it read, so any problem becomes ``StateCorrupt("<path>: <what is wrong>")`` and the
scheduler refuses to lead on garbage.
Every document carries ``"format": 1``; a Corral that meets another format refuses it.
Fields added later (``holes``, ``policy``, a task's ``held``) are written only when set and
read as absent from older documents, which therefore load unchanged.

Vocabulary:
  *head*   a ``JobIntent`` without its tasks and progress: what the record znode holds.
  *shard*  one znode of a job's task map, at most ``shard_bytes`` long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from corral.core.cost import usage_problem
from corral.core.intent import JobIntent, SlotIntent, TaskIntent
from corral.core.job_state import JobPhase
from corral.core.memory import EMPTY_MEMORY, PolicyMemory
from corral.core.resources import Resources
from corral.core.spec import SpecError, parse_job_spec, spec_to_dict
from corral.store.errors import StateCorrupt
from corral.store.layout import FORMAT

ZNODE_LIMIT = 1024 * 1024  # ZooKeeper's default jute.maxbuffer: the largest znode value


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything ``StateStore.load`` read: what a new leader resumes from."""

    framework_id: str | None
    jobs: Mapping[str, JobIntent]
    epoch: int


def head_of(intent: JobIntent) -> JobIntent:
    """The part of an intent the job record holds (no tasks, no progress)."""
    return replace(intent, tasks=(), progress={})


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

def _state_fields(phase: JobPhase) -> tuple[str, bool]:
    """The stored ``state`` (a public job state) and ``killing`` flag of a phase."""
    if phase is JobPhase.KILLING:
        return "PENDING", True
    return phase.value, False


def encode_job(key: str, intent: JobIntent, gen: int, shards: int) -> bytes:
    state, killing = _state_fields(intent.phase)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "key": key,
        "spec": spec_to_dict(intent.spec),
        "desired_workers": intent.desired,
        "state": state,
        "request_id": intent.request_id,
        "tasks": {"gen": gen, "shards": shards},
    }
    # The optional detail is written only when set, so plain records stay as they were.
    if killing:
        doc["killing"] = True
    if intent.slots:
        doc["slots"] = {label: [s.attempts, s.failures, int(s.completed)]
                        for label, s in sorted(intent.slots.items())}
    if intent.submitted_at:
        doc["submitted_at"] = intent.submitted_at
    if intent.finished_at is not None:
        doc["finished_at"] = intent.finished_at
    if intent.message:
        doc["message"] = intent.message
    if intent.target_reason:
        doc["target_reason"] = intent.target_reason
    if intent.cost:
        doc["cost"] = {m: {c: list(v) for c, v in cats.items()}
                       for m, cats in intent.cost.items()}
    if intent.holes:
        doc["holes"] = list(intent.holes)
    if not intent.policy.is_empty():
        doc["policy"] = _policy_json(intent.policy)
    return _dumps(doc)


# -- the policy's memory (optional in a job record; older records have none) -----------

def _res_json(r: Resources) -> dict[str, float]:
    return {k: v for k, v in r.as_dict().items() if v}


def _policy_json(m: PolicyMemory) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if m.last_up_at is not None:
        doc["up"] = m.last_up_at
    if m.last_down_at is not None:
        doc["down"] = m.last_down_at
    if m.load_target is not None:
        doc["load"] = m.load_target
    if m.rate_at is not None:
        doc["rate"] = [m.rate_at, m.rate_done, m.rate_per_s, int(m.rate_measured)]
    if m.preempted_at:
        doc["preempted"] = list(m.preempted_at)
    if m.worker_size is not None:
        doc["size"] = _res_json(m.worker_size)
    if m.size_reason:
        doc["size_reason"] = m.size_reason
    if m.peak is not None:
        doc["peak"] = _res_json(m.peak)
    return doc


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _decode_res(path: str, what: str, raw: Any) -> Resources:
    if not isinstance(raw, dict) or not set(raw) <= {"cpus", "mem", "disk", "gpus"} or \
            not all(_number(v) and v >= 0 for v in raw.values()):
        raise StateCorrupt(path, f"{what}: expected {{cpus, mem, disk, gpus}} >= 0")
    return Resources(**{k: float(v) for k, v in raw.items()})


def _decode_policy(path: str, raw: Any) -> PolicyMemory:
    if not isinstance(raw, dict):
        raise StateCorrupt(path, "field 'policy' must be an object")
    known = {"up", "down", "load", "rate", "preempted", "size", "size_reason", "peak"}
    extra = sorted(set(raw) - known)
    if extra:
        raise StateCorrupt(path, f"policy: unknown field(s) {extra}")
    for k in ("up", "down"):
        if k in raw and not _number(raw[k]):
            raise StateCorrupt(path, f"policy.{k} must be a number")
    load = raw.get("load")
    if load is not None and (not isinstance(load, int) or isinstance(load, bool) or load < 0):
        raise StateCorrupt(path, "policy.load must be an integer >= 0")
    rate = raw.get("rate")
    if rate is not None and not (
            isinstance(rate, list) and len(rate) == 4 and _number(rate[0])
            and isinstance(rate[1], int) and not isinstance(rate[1], bool) and rate[1] >= 0
            and _number(rate[2]) and rate[2] >= 0 and rate[3] in (0, 1)):
        raise StateCorrupt(path, "policy.rate: expected [at, done, per_second, 0|1]")
    pre = raw.get("preempted", [])
    if not isinstance(pre, list) or not all(_number(t) for t in pre):
        raise StateCorrupt(path, "policy.preempted must be a list of times")
    reason = raw.get("size_reason", "")
    if not isinstance(reason, str):
        raise StateCorrupt(path, "policy.size_reason must be a string")
    return PolicyMemory(
        last_up_at=float(raw["up"]) if "up" in raw else None,
        last_down_at=float(raw["down"]) if "down" in raw else None,
        load_target=load,
        rate_at=float(rate[0]) if rate else None, rate_done=int(rate[1]) if rate else 0,
        rate_per_s=float(rate[2]) if rate else 0.0, rate_measured=bool(rate[3]) if rate
        else False,
        preempted_at=tuple(float(t) for t in pre),
        worker_size=_decode_res(path, "policy.size", raw["size"]) if "size" in raw else None,
        size_reason=reason,
        peak=_decode_res(path, "policy.peak", raw["peak"]) if "peak" in raw else None)


def _decode_slots(path: str, raw: Any) -> dict[str, SlotIntent]:
    if not isinstance(raw, dict):
        raise StateCorrupt(path, "field 'slots' must be an object")
    out: dict[str, SlotIntent] = {}
    for label, v in raw.items():
        ok = (isinstance(v, list) and len(v) == 3
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
              and v[2] in (0, 1))
        if not ok:
            raise StateCorrupt(path, f"slot {label!r}: expected [attempts, failures, 0|1]")
        out[label] = SlotIntent(v[0], v[1], bool(v[2]))
    return out


def _optional(path: str, doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
              default: Any) -> Any:
    if name not in doc or doc[name] is None:
        return default
    return _field(path, doc, name, kind)


_PHASES = {"PENDING": JobPhase.PENDING, "RUNNING": JobPhase.RUNNING,
           "FINISHED": JobPhase.FINISHED, "FAILED": JobPhase.FAILED, "KILLED": JobPhase.KILLED}


def decode_job(path: str, key: str, data: bytes) -> tuple[JobIntent, int, int]:
    """The job's head (an intent without tasks or progress) and its task shard pointer
    ``(gen, shards)``."""
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
    if state_s not in _PHASES:
        raise StateCorrupt(path, f"unknown job state {state_s!r}")
    request_id = _field(path, doc, "request_id", str)
    ptr = _field(path, doc, "tasks", dict)
    gen, shards = _nonnegative(path, ptr, "gen"), _nonnegative(path, ptr, "shards")
    killing = _optional(path, doc, "killing", bool, False)
    phase = JobPhase.KILLING if killing else _PHASES[state_s]
    slots = _decode_slots(path, doc["slots"]) if "slots" in doc else {}
    submitted = float(_optional(path, doc, "submitted_at", (int, float), 0.0))
    finished = _optional(path, doc, "finished_at", (int, float), None)
    message = _optional(path, doc, "message", str, "")
    reason = _optional(path, doc, "target_reason", str, "")
    cost = _optional(path, doc, "cost", dict, {})
    problem = usage_problem(cost)
    if problem:
        raise StateCorrupt(path, f"field 'cost': {problem}")
    holes = _optional(path, doc, "holes", list, [])
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in holes):
        raise StateCorrupt(path, "field 'holes' must list worker indexes >= 0")
    policy = _decode_policy(path, doc["policy"]) if doc.get("policy") is not None \
        else EMPTY_MEMORY
    head = JobIntent(spec=spec, request_id=request_id, desired=desired, phase=phase,
                     slots=slots, submitted_at=submitted,
                     finished_at=float(finished) if finished is not None else None,
                     message=message, target_reason=reason, holes=tuple(sorted(set(holes))),
                     policy=policy,
                     cost={m: {c: tuple(float(x) for x in v) for c, v in cats.items()}
                           for m, cats in cost.items()})
    return head, gen, shards


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

def _slot_and_attempt(task_id: str) -> tuple[str, int]:
    # corral.<role>.<env>.<name>.<slot label>.<attempt>; the store keeps both fields so a
    # reader need not parse ids (and older documents carry them too).
    parts = task_id.rsplit(".", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[1], int(parts[2])
    return "", 0


def _task_json(task_id: str, t: TaskIntent) -> str:
    slot, attempt = _slot_and_attempt(task_id)
    entry: dict[str, Any] = {"agent_id": t.agent_id, "attempt": attempt, "slot": slot}
    if t.hostname:
        entry["host"] = t.hostname
    if t.ports:
        entry["ports"] = list(t.ports)
    if t.held is not None:
        entry["held"] = _res_json(t.held)
    return json.dumps(task_id) + ":" + json.dumps(entry, separators=(",", ":"), sort_keys=True)


def encode_shards(tasks: Mapping[str, TaskIntent], shard_bytes: int) -> list[bytes]:
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


def decode_shard(path: str, data: bytes) -> dict[str, TaskIntent]:
    raw = _field(path, _document(path, data), "tasks", dict)
    out: dict[str, TaskIntent] = {}
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
        held = _decode_res(path, f"{where}: held", entry["held"]) if "held" in entry \
            else None
        out[task_id] = TaskIntent(task_id, agent, host, tuple(ports), held)
    return out


def validate_intent(intent: JobIntent) -> None:
    """Reject what could not be loaded back (callers' bugs surface at write time)."""
    if not isinstance(intent, JobIntent):
        raise TypeError(f"expected a JobIntent, got {type(intent).__name__}")
    if intent.desired < 0:
        raise ValueError(f"{intent.key}: desired workers must be >= 0")
    seen: set[str] = set()
    for t in intent.tasks:
        if not isinstance(t, TaskIntent) or not t.task_id:
            raise ValueError(f"{intent.key}: task {t!r} must be a TaskIntent with an id")
        if t.task_id in seen:
            raise ValueError(f"{intent.key}: task {t.task_id!r} listed twice")
        seen.add(t.task_id)
    for slot, seq in intent.progress.items():
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"{intent.key}: progress of {slot!r} must be an integer >= 0")
