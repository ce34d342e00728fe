"""Validation of scheduler calls and of ACCEPT, and the reconciliation table. Pure.

Three layers, as in Mesos' master:
* ``call_shape_error``: what a JSON→protobuf parse plus ``validation::scheduler::call``
  would reject (missing required fields, wrong types, unknown enum strings). A message
  here becomes a 400.
* ``subscribe_semantic_error``: FrameworkInfo problems Mesos reports as 200 + ERROR event.
* ``offers_error`` / ``check_task``: the per-ACCEPT checks whose failures become TASK_LOST /
  TASK_DROPPED (offers) or TASK_ERROR (tasks) updates.
And ``reconcile_state``: the explicit-reconciliation table of docs/reconciliation.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.localmesos.protocol import (
    TASK_STATES,
    Json,
    Pool,
    ResourceError,
    id_of,
    is_b64,
    is_uuid_b64,
    parse_resources,
)

SCHEDULER_CALLS = frozenset({
    "UNKNOWN", "SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS",
    "DECLINE_INVERSE_OFFERS", "REVIVE", "KILL", "SHUTDOWN", "ACKNOWLEDGE",
    "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS", "MESSAGE",
    "REQUEST", "SUPPRESS", "UPDATE_FRAMEWORK",
})
# Real Mesos calls localmesos does not implement: 501 with a message.
UNIMPLEMENTED_CALLS = frozenset({
    "UNKNOWN", "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE_OPERATIONS", "UPDATE_FRAMEWORK",
})
OPERATION_TYPES = frozenset({
    "UNKNOWN", "LAUNCH", "LAUNCH_GROUP", "RESERVE", "UNRESERVE", "CREATE", "DESTROY",
    "GROW_VOLUME", "SHRINK_VOLUME", "CREATE_DISK", "DESTROY_DISK",
})
CAPABILITIES = frozenset({
    "UNKNOWN", "REVOCABLE_RESOURCES", "TASK_KILLING_STATE", "GPU_RESOURCES",
    "SHARED_RESOURCES", "PARTITION_AWARE", "MULTI_ROLE", "RESERVATION_REFINEMENT",
    "REGION_AWARE",
})
_ROLE_RE = re.compile(r"^[^/.\-\s][^\s/]*(/[^/.\-\s][^\s/]*)*$|^\*$")
_ID_BAD = re.compile(r"[/\s]|^\.{1,2}$")


def _need_id(obj: Json, key: str, where: str) -> str | None:
    if id_of(obj.get(key)) is None:
        return f"Expecting '{where}{key}' to be present"
    return None


def _need_obj(call: Json, key: str) -> tuple[Json | None, str | None]:
    payload = call.get(key)
    if not isinstance(payload, dict):
        return None, f"Expecting '{key}' to be present"
    return payload, None


def _id_list(payload: Json, key: str) -> str | None:
    items = payload.get(key, [])
    if not isinstance(items, list) or any(id_of(i) is None for i in items):
        return f"'{key}' must be a list of ids"
    return None


def _task_info_shape(task: Any, where: str) -> str | None:
    if not isinstance(task, dict):
        return f"{where}: a TaskInfo must be an object"
    if not isinstance(task.get("name"), str):
        return f"{where}: TaskInfo missing required field 'name'"
    for key in ("task_id", "agent_id"):
        if id_of(task.get(key)) is None:
            return f"{where}: TaskInfo missing required field '{key}'"
    executor = task.get("executor")
    if executor is not None and (not isinstance(executor, dict)
                                 or id_of(executor.get("executor_id")) is None):
        return f"{where}: ExecutorInfo missing required field 'executor_id'"
    for key in ("resources",):
        try:
            parse_resources(task.get(key))
        except ResourceError as e:
            return f"{where}: {e}"
    return None


def _operations_error(ops: Any) -> str | None:
    if not isinstance(ops, list):
        return "'accept.operations' must be a list"
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("type") not in OPERATION_TYPES:
            return f"operation {i} has an unknown or missing 'type'"
        if op["type"] == "LAUNCH":
            launch = op.get("launch")
            if not isinstance(launch, dict) or not isinstance(launch.get("task_infos", []),
                                                              list):
                return f"operation {i}: Expecting 'launch' to be present"
            for j, task in enumerate(launch.get("task_infos", [])):
                err = _task_info_shape(task, f"operation {i} task {j}")
                if err:
                    return err
        elif op["type"] == "LAUNCH_GROUP":
            group = op.get("launch_group")
            if not isinstance(group, dict) or not isinstance(group.get("executor"), dict):
                return f"operation {i}: Expecting 'launch_group.executor' to be present"
            if id_of(group["executor"].get("executor_id")) is None:
                return f"operation {i}: ExecutorInfo missing required field 'executor_id'"
            tg = group.get("task_group")
            tasks = tg.get("tasks") if isinstance(tg, dict) else None
            if not isinstance(tasks, list):
                return f"operation {i}: Expecting 'launch_group.task_group' to be present"
            for j, task in enumerate(tasks):
                err = _task_info_shape(task, f"operation {i} task {j}")
                if err:
                    return err
    return None


def call_shape_error(call: Json) -> str | None:
    """Why a scheduler Call (already known to have a valid ``type``) is malformed."""
    kind = call["type"]
    if kind == "SUBSCRIBE":
        sub, err = _need_obj(call, "subscribe")
        if err or sub is None:
            return err
        info = sub.get("framework_info")
        if not isinstance(info, dict):
            return "Expecting 'subscribe.framework_info' to be present"
        for key in ("user", "name"):
            if not isinstance(info.get(key), str):
                return f"FrameworkInfo missing required field '{key}'"
        caps = info.get("capabilities", [])
        if not isinstance(caps, list) or any(
                not isinstance(c, dict) or c.get("type") not in CAPABILITIES for c in caps):
            return "FrameworkInfo 'capabilities' has an unknown or malformed entry"
        fid = id_of(info.get("id"))
        if call.get("framework_id") is not None and id_of(call["framework_id"]) != fid:
            return "'framework_id' differs from 'subscribe.framework_info.id'"
        for key in ("failover_timeout",):
            if key in info and (not isinstance(info[key], int | float)
                                or isinstance(info[key], bool)):
                return f"FrameworkInfo '{key}' must be a number"
        if "principal" in info and not isinstance(info["principal"], str):
            return "FrameworkInfo 'principal' must be a string"
        suppressed = sub.get("suppressed_roles", [])
        if not isinstance(suppressed, list) or any(not isinstance(r, str) for r in suppressed):
            return "'subscribe.suppressed_roles' must be a list of strings"
        return None
    if id_of(call.get("framework_id")) is None:
        return "Expecting 'framework_id' to be present"
    checks: dict[str, Any] = {
        "ACCEPT": _accept_shape, "DECLINE": _decline_shape, "KILL": _kill_shape,
        "SHUTDOWN": _shutdown_shape, "ACKNOWLEDGE": _ack_shape, "RECONCILE": _reconcile_shape,
        "MESSAGE": _message_shape, "ACCEPT_INVERSE_OFFERS": _inverse_shape("accept_inverse_offers"),
        "DECLINE_INVERSE_OFFERS": _inverse_shape("decline_inverse_offers"),
        "REVIVE": _roles_shape("revive"), "SUPPRESS": _roles_shape("suppress"),
    }
    check = checks.get(kind)
    return check(call) if check else None


def _filters_error(payload: Json) -> str | None:
    f = payload.get("filters")
    if f is None:
        return None
    if not isinstance(f, dict):
        return "'filters' must be an object"
    rs = f.get("refuse_seconds")
    if rs is not None and (not isinstance(rs, int | float) or isinstance(rs, bool)):
        return "'filters.refuse_seconds' must be a number"
    return None


def _accept_shape(call: Json) -> str | None:
    acc, err = _need_obj(call, "accept")
    if err or acc is None:
        return err
    return (_id_list(acc, "offer_ids") or _operations_error(acc.get("operations", []))
            or _filters_error(acc))


def _decline_shape(call: Json) -> str | None:
    dec, err = _need_obj(call, "decline")
    if err or dec is None:
        return err
    return _id_list(dec, "offer_ids") or _filters_error(dec)


def _kill_shape(call: Json) -> str | None:
    kill, err = _need_obj(call, "kill")
    if err or kill is None:
        return err
    return _need_id(kill, "task_id", "kill.")


def _shutdown_shape(call: Json) -> str | None:
    sd, err = _need_obj(call, "shutdown")
    if err or sd is None:
        return err
    return _need_id(sd, "executor_id", "shutdown.") or _need_id(sd, "agent_id", "shutdown.")


def _ack_shape(call: Json) -> str | None:
    ack, err = _need_obj(call, "acknowledge")
    if err or ack is None:
        return err
    err = _need_id(ack, "agent_id", "acknowledge.") or _need_id(ack, "task_id", "acknowledge.")
    if err:
        return err
    if not is_uuid_b64(ack.get("uuid")):
        return "'acknowledge.uuid' must be a base64 16-byte UUID"
    return None


def _reconcile_shape(call: Json) -> str | None:
    rec, err = _need_obj(call, "reconcile")
    if err or rec is None:
        return err
    tasks = rec.get("tasks", [])
    if not isinstance(tasks, list):
        return "'reconcile.tasks' must be a list"
    for t in tasks:
        if not isinstance(t, dict) or id_of(t.get("task_id")) is None:
            return "Expecting 'reconcile.tasks[].task_id' to be present"
        if "agent_id" in t and id_of(t["agent_id"]) is None:
            return "'reconcile.tasks[].agent_id' is malformed"
    return None


def _message_shape(call: Json) -> str | None:
    msg, err = _need_obj(call, "message")
    if err or msg is None:
        return err
    err = _need_id(msg, "agent_id", "message.") or _need_id(msg, "executor_id", "message.")
    if err:
        return err
    if not is_b64(msg.get("data")):
        return "'message.data' must be base64 bytes"
    return None


def _inverse_shape(key: str) -> Any:
    def check(call: Json) -> str | None:
        payload, err = _need_obj(call, key)
        if err or payload is None:
            return err
        return _id_list(payload, "inverse_offer_ids") or _filters_error(payload)
    return check


def _roles_shape(key: str) -> Any:
    def check(call: Json) -> str | None:
        payload = call.get(key)
        if payload is None:
            return None
        if not isinstance(payload, dict):
            return f"'{key}' must be an object"
        roles = payload.get("roles", [])
        if not isinstance(roles, list) or any(not isinstance(r, str) for r in roles):
            return f"'{key}.roles' must be a list of strings"
        return None
    return check


def framework_roles(info: Json) -> tuple[tuple[str, ...], bool]:
    """(roles, multi_role) of a FrameworkInfo."""
    caps = {c.get("type") for c in info.get("capabilities", []) if isinstance(c, dict)}
    if "MULTI_ROLE" in caps:
        return tuple(info.get("roles") or ()), True
    return (info.get("role") or "*",), False


def subscribe_semantic_error(info: Json) -> str | None:
    """FrameworkInfo problems Mesos answers with 200 + ERROR event (validateFrameworkInfo)."""
    caps = {c.get("type") for c in info.get("capabilities", [])}
    multi = "MULTI_ROLE" in caps
    if "roles" in info and not multi:
        return "'FrameworkInfo.roles' is set but MULTI_ROLE capability is not"
    if "role" in info and multi:
        return "'FrameworkInfo.role' cannot be set together with the MULTI_ROLE capability"
    roles = info.get("roles", []) if multi else [info.get("role", "*")]
    if not isinstance(roles, list) or any(not isinstance(r, str) for r in roles):
        return "'FrameworkInfo.roles' must be a list of strings"
    if len(set(roles)) != len(roles):
        return "'FrameworkInfo.roles' contains duplicate entries"
    for role in roles:
        if not role or not _ROLE_RE.match(role) or role in (".", ".."):
            return f"Role '{role}' is invalid"
    return None


def suppressed_roles_error(roles: Sequence[str], suppressed: Sequence[str]) -> str | None:
    """SUBSCRIBE's ``suppressed_roles`` must be roles of the framework (an ERROR event)."""
    for role in suppressed:
        if role not in roles:
            return f"Suppressed role '{role}' is not contained in the list of roles"
    return None


def framework_update(old: Json, new: Json) -> tuple[Json, str | None]:
    """A re-subscription's FrameworkInfo against the known one, as Mesos does it:
    ``preserveImmutableFields`` keeps the old ``user`` and ``checkpoint`` (silently), then
    ``validateUpdate`` refuses a changed ``principal`` (an ERROR event). This is what stops
    a scheduler holding another principal's credentials from taking a framework over.
    Returns (the FrameworkInfo to keep, the error)."""
    kept = dict(new)
    for key in ("user", "checkpoint"):
        if key in old:
            kept[key] = old[key]
        else:
            kept.pop(key, None)
    if old.get("principal") != new.get("principal"):
        return kept, "Changing framework's principal is not allowed."
    return kept, None


def offers_error(offer_ids: Sequence[str], framework_id: str,
                 offers: Mapping[str, tuple[str, str]]) -> str | None:
    """Why the offers of one ACCEPT are unusable. ``offers``: id → (framework, agent)."""
    if not offer_ids:
        return "No offers specified"
    if len(set(offer_ids)) != len(offer_ids):
        return "Duplicate offers in one ACCEPT"
    agents: set[str] = set()
    for oid in offer_ids:
        known = offers.get(oid)
        if known is None:
            return f"Offer {oid} is no longer valid"
        if known[0] != framework_id:
            return f"Offer {oid} has invalid framework {known[0]} while framework " \
                   f"{framework_id} is expected"
        agents.add(known[1])
    if len(agents) > 1:
        return "Aggregated offers must belong to one single agent"
    return None


@dataclass(frozen=True, slots=True)
class TaskCheck:
    """The verdict on one TaskInfo: an error, or what it consumes from the offer."""

    error: str | None
    task_pool: Pool = Pool()
    executor_pool: Pool = Pool()   # non-empty only for a new executor
    executor_id: str | None = None


def _normal_executor(info: Json) -> Json:
    """ExecutorInfo without the fields and defaults the master fills in itself."""
    out = {k: v for k, v in info.items() if k != "framework_id"}
    if isinstance(out.get("command"), dict):
        out["command"] = {"shell": True, **out["command"]}
    return out


def check_task(task: Json, *, agent_id: str, remaining: Pool, known_task_ids: set[str],
               executors: Mapping[str, Json], group_executor: Json | None = None) -> TaskCheck:
    """Validate one TaskInfo against the offer's remaining resources and the agent.

    ``executors``: executor id → ExecutorInfo already running (or launched earlier in this
    ACCEPT) for this framework on this agent. ``group_executor`` is the LAUNCH_GROUP
    executor, which the tasks must not name themselves.
    """
    task_id = id_of(task.get("task_id")) or ""
    if _ID_BAD.search(task_id):
        return TaskCheck(f"Task ID '{task_id}' contains invalid characters")
    if task_id in known_task_ids:
        return TaskCheck(f"Task has duplicate ID: {task_id}")
    if id_of(task.get("agent_id")) != agent_id:
        return TaskCheck(f"Task uses invalid agent: {id_of(task.get('agent_id'))}")
    executor = task.get("executor") if group_executor is None else group_executor
    command = task.get("command")
    if group_executor is not None and "executor" in task:
        return TaskCheck("Task in a task group must not set 'executor'")
    if group_executor is None and (executor is None) == (command is None):
        return TaskCheck("Task should have at least one (but not both) of CommandInfo or "
                         "ExecutorInfo present")
    if executor is not None and group_executor is None and not isinstance(
            executor.get("command"), dict):
        return TaskCheck("ExecutorInfo of type DEFAULT/CUSTOM needs a 'command'")
    if command is not None and not isinstance(command, dict):
        return TaskCheck("'command' must be an object")
    try:
        task_pool = parse_resources(task.get("resources"))
        exec_pool = parse_resources(executor.get("resources")) if executor else Pool()
    except ResourceError as e:
        return TaskCheck(f"Invalid resources: {e}")
    if task_pool.is_empty():
        return TaskCheck("Task uses no resources")
    new_executor = Pool()
    executor_id = id_of(executor.get("executor_id")) if executor else None
    if executor is not None and executor_id is not None:
        existing = executors.get(executor_id)
        if existing is not None:
            if _normal_executor(existing) != _normal_executor(executor):
                return TaskCheck(f"ExecutorInfo is not compatible with existing ExecutorInfo "
                                 f"of executor '{executor_id}'")
        else:
            new_executor = exec_pool
    combined = task_pool + exec_pool
    if combined.has_revocable() and combined.has_regular():
        return TaskCheck("Task (and its executor, if exists) equally should either be "
                         "revocable or non-revocable")
    if not (task_pool + new_executor).fits(remaining):
        return TaskCheck("Task uses more resources than available in the offers")
    return TaskCheck(None, task_pool, new_executor, executor_id)


def reconcile_state(known_state: str | None, agent: str | None, partition_aware: bool
                    ) -> str | None:
    """The state explicit reconciliation reports for one task (None: no reply).

    ``known_state``: the master's latest state of the task, or None if unknown.
    ``agent``: "registered", "unreachable", "gone", "recovering" or None (unknown / not given).
    """
    if known_state is not None:
        if known_state == "TASK_UNREACHABLE" and not partition_aware:
            return "TASK_LOST"
        return known_state
    if agent == "recovering":
        return None
    if agent == "registered":
        return "TASK_GONE" if partition_aware else "TASK_LOST"
    if agent == "unreachable":
        return "TASK_UNREACHABLE" if partition_aware else "TASK_LOST"
    if agent == "gone":
        return "TASK_GONE_BY_OPERATOR" if partition_aware else "TASK_LOST"
    return "TASK_UNKNOWN" if partition_aware else "TASK_LOST"


def valid_task_state(state: Any) -> bool:
    return isinstance(state, str) and state in TASK_STATES
