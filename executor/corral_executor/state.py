"""The executor's pure core: state, events in, actions out.

``handle(state, event, now=..., new_uuid=...)`` returns the next state and a list of
actions for the shell (``main.py``) to carry out. Nothing here touches sockets, processes,
files or clocks; ``now`` and fresh update uuids are passed in, so every decision can be
replayed in a unit test.

Vocabulary:
- *update*: a TaskStatus the executor sends with a 16-byte uuid; it stays in ``unacked``
  until the agent's ACKNOWLEDGED event names that uuid, and is resent inside SUBSCRIBE
  after a reconnection.
- *the task*: one executor runs one task. A second LAUNCH is answered with TASK_FAILED.
- *recovery*: with framework checkpointing on, a lost agent connection is retried for up
  to MESOS_RECOVERY_TIMEOUT while the task keeps running.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from corral_executor import control
from corral_executor.runspec import RunSpec, RunSpecError, parse_run_spec

TERMINAL_STATES = frozenset(
    {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED"}
)
#: Characters of stderr tail put into a TASK_FAILED message.
STDERR_TAIL_CHARS = 2000


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True)
class ExecutorState:
    framework_id: str
    executor_id: str
    checkpoint: bool = False
    shutdown_grace: float = 5.0
    ack_timeout: float = 10.0
    agent_id: str | None = None
    connected: bool = False
    ever_subscribed: bool = False
    task: dict[str, Any] | None = None  # TaskInfo JSON as the agent sent it
    spec: RunSpec | None = None
    task_state: str | None = None
    task_acked: bool = False  # some update of the task was acknowledged
    unacked: tuple[dict[str, Any], ...] = ()  # TaskStatus JSON, in send order
    process_live: bool = False
    kill_requested: bool = False
    shutting_down: bool = False
    abandon_code: int | None = None  # exit code once the task is gone (lost agent)
    exited: bool = False
    # Workers the scheduler asked this (master) task to retire: (name, by), oldest first.
    retiring: tuple[tuple[str, float], ...] = ()

    @property
    def task_id(self) -> str | None:
        return None if self.task is None else self.task["task_id"]["value"]

    @property
    def terminal(self) -> bool:
        return self.task_state in TERMINAL_STATES


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Subscribed:
    agent_id: str | None


@dataclass(frozen=True)
class Launch:
    task: dict[str, Any]


@dataclass(frozen=True)
class Kill:
    task_id: str
    grace_seconds: float | None = None


@dataclass(frozen=True)
class Acknowledged:
    task_id: str
    uuid: str  # base64, as on the wire


@dataclass(frozen=True)
class SchedulerMessage:
    data: bytes


@dataclass(frozen=True)
class Shutdown:
    reason: str = "agent asked the executor to shut down"


@dataclass(frozen=True)
class AgentError:
    message: str


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class RecoveryExpired:
    pass


@dataclass(frozen=True)
class ProcessStarted:
    pid: int


@dataclass(frozen=True)
class ProcessStartFailed:
    reason: str


@dataclass(frozen=True)
class ProcessExited:
    returncode: int
    stderr_tail: str = ""


@dataclass(frozen=True)
class AckTimerFired:
    pass


@dataclass(frozen=True)
class UsageSampled:
    cpu_percent: float
    cpu_seconds: float
    rss_mb: float


@dataclass(frozen=True)
class ProgressChanged:
    doc: dict[str, Any]


@dataclass(frozen=True)
class CheckpointCommitted:
    uri: str
    seq: int
    seconds: float | None = None   # how long writing it took, if the task said


@dataclass(frozen=True)
class LoadChanged:
    doc: dict[str, Any]


Event = (
    Subscribed
    | Launch
    | Kill
    | Acknowledged
    | SchedulerMessage
    | Shutdown
    | AgentError
    | Heartbeat
    | Disconnected
    | RecoveryExpired
    | ProcessStarted
    | ProcessStartFailed
    | ProcessExited
    | AckTimerFired
    | UsageSampled
    | ProgressChanged
    | CheckpointCommitted
    | LoadChanged
)


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendUpdate:
    status: dict[str, Any]


@dataclass(frozen=True)
class SendMessage:
    payload: dict[str, Any]


@dataclass(frozen=True)
class StartTask:
    task_id: str
    spec: RunSpec


@dataclass(frozen=True)
class KillTask:
    grace_seconds: float


@dataclass(frozen=True)
class WriteControl:
    name: str
    data: bytes = b""


@dataclass(frozen=True)
class ArmAckTimer:
    seconds: float


@dataclass(frozen=True)
class Reconnect:
    """Drop the event stream and subscribe again (after an agent ERROR)."""


@dataclass(frozen=True)
class StartRecovery:
    """Keep re-subscribing with backoff until connected or MESOS_RECOVERY_TIMEOUT."""


@dataclass(frozen=True)
class Exit:
    code: int


@dataclass(frozen=True)
class Log:
    message: str
    level: str = "info"


Action = (
    SendUpdate
    | SendMessage
    | StartTask
    | KillTask
    | WriteControl
    | ArmAckTimer
    | Reconnect
    | StartRecovery
    | Exit
    | Log
)

Step = tuple[ExecutorState, list[Action]]


@dataclass
class _Ctx:
    now: float
    new_uuid: Callable[[], bytes]
    actions: list[Action] = field(default_factory=list)


# ---------------------------------------------------------------------------- calls


def _id(value: str) -> dict[str, str]:
    return {"value": value}


def subscribe_call(state: ExecutorState) -> dict[str, Any]:
    """The SUBSCRIBE body; after a disconnection it carries what the agent may lack."""
    unacked_tasks = [state.task] if state.task is not None and not state.task_acked else []
    return {
        "type": "SUBSCRIBE",
        "framework_id": _id(state.framework_id),
        "executor_id": _id(state.executor_id),
        "subscribe": {
            "unacknowledged_tasks": unacked_tasks,
            "unacknowledged_updates": [{"status": s} for s in state.unacked],
        },
    }


def update_call(state: ExecutorState, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "UPDATE",
        "framework_id": _id(state.framework_id),
        "executor_id": _id(state.executor_id),
        "update": {"status": status},
    }


def message_call(state: ExecutorState, payload: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
    return {
        "type": "MESSAGE",
        "framework_id": _id(state.framework_id),
        "executor_id": _id(state.executor_id),
        "message": {"data": data},
    }


# ---------------------------------------------------------------------------- helpers


def _status(
    state: ExecutorState, ctx: _Ctx, task_id: str, task_state: str, message: str | None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "task_id": _id(task_id),
        "state": task_state,
        "source": "SOURCE_EXECUTOR",
        "executor_id": _id(state.executor_id),
        "uuid": base64.b64encode(ctx.new_uuid()).decode(),
        "timestamp": ctx.now,
    }
    if state.agent_id is not None:
        status["agent_id"] = _id(state.agent_id)
    if message:
        status["message"] = message
    return status


def _emit(
    state: ExecutorState, ctx: _Ctx, task_id: str, task_state: str, message: str | None = None
) -> ExecutorState:
    """Record an update as unacknowledged and send it if the agent is reachable."""
    status = _status(state, ctx, task_id, task_state, message)
    state = replace(state, unacked=(*state.unacked, status))
    if task_id == state.task_id:
        state = replace(state, task_state=task_state)
    if state.connected:
        ctx.actions.append(SendUpdate(status))
        if task_state in TERMINAL_STATES and task_id == state.task_id:
            ctx.actions.append(ArmAckTimer(state.ack_timeout))
    return state


def _exit(state: ExecutorState, ctx: _Ctx, code: int, why: str) -> ExecutorState:
    if state.exited:
        return state
    ctx.actions.append(Log(f"executor exiting with code {code}: {why}"))
    ctx.actions.append(Exit(code))
    return replace(state, exited=True)


def _maybe_done(state: ExecutorState, ctx: _Ctx) -> ExecutorState:
    """Exit once the task is terminal and its terminal update is acknowledged."""
    if state.exited or state.process_live:
        return state
    if state.abandon_code is not None:
        return _exit(state, ctx, state.abandon_code, "task stopped after losing the agent")
    if not state.terminal:
        return state
    own_unacked = [s for s in state.unacked if s["task_id"]["value"] == state.task_id]
    if not own_unacked:
        return _exit(state, ctx, 0, f"task {state.task_id} is {state.task_state}, acknowledged")
    return state


def _kill(state: ExecutorState, ctx: _Ctx, grace: float) -> ExecutorState:
    ctx.actions.append(KillTask(grace))
    return replace(state, kill_requested=True)


def _failed_message(returncode: int, stderr_tail: str) -> str:
    if returncode < 0:
        head = f"command terminated by signal {-returncode}"
    else:
        head = f"command exited with code {returncode}"
    tail = stderr_tail.strip()[-STDERR_TAIL_CHARS:]
    return f"{head}; last stderr:\n{tail}" if tail else head


def _int_field(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"progress field {key!r} must be an integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------- handlers


def _on_subscribed(state: ExecutorState, ev: Subscribed, ctx: _Ctx) -> ExecutorState:
    state = replace(
        state, connected=True, ever_subscribed=True, agent_id=ev.agent_id or state.agent_id
    )
    ctx.actions.append(Log(f"subscribed to agent {state.agent_id}"))
    # Updates from the outage travelled inside SUBSCRIBE; the terminal one still needs
    # an acknowledgement, which must not be awaited forever.
    if state.terminal and any(s["task_id"]["value"] == state.task_id for s in state.unacked):
        ctx.actions.append(ArmAckTimer(state.ack_timeout))
    return _maybe_done(state, ctx)


def _on_launch(state: ExecutorState, ev: Launch, ctx: _Ctx) -> ExecutorState:
    task = ev.task
    task_id = str(task.get("task_id", {}).get("value", ""))
    if not task_id:
        ctx.actions.append(Log("LAUNCH without task_id ignored", "warning"))
        return state
    if state.task is not None:
        if task_id == state.task_id:
            ctx.actions.append(Log(f"duplicate LAUNCH of {task_id} ignored"))
            return state
        return _emit(state, ctx, task_id, "TASK_FAILED", "a Corral executor runs one task only")
    state = replace(state, task=task)
    if state.shutting_down:
        return _emit(state, ctx, task_id, "TASK_KILLED", "executor is shutting down")
    try:
        spec = parse_run_spec(task.get("data"))
    except RunSpecError as exc:
        state = _emit(state, ctx, task_id, "TASK_FAILED", f"invalid run spec: {exc}")
        return _maybe_done(state, ctx)
    state = replace(state, spec=spec)
    state = _emit(state, ctx, task_id, "TASK_STARTING")
    ctx.actions.append(StartTask(task_id, spec))
    return state


def _on_process_started(state: ExecutorState, ev: ProcessStarted, ctx: _Ctx) -> ExecutorState:
    state = replace(state, process_live=True)
    ctx.actions.append(Log(f"task {state.task_id} running as pid {ev.pid}"))
    if state.kill_requested or state.terminal:
        # The KILL (or a shutdown) arrived while the process was being started and was
        # already answered: the process must not outlive that answer.
        ctx.actions.append(KillTask(0.0))
        return state
    if state.task_id is None:
        return state
    return _emit(state, ctx, state.task_id, "TASK_RUNNING")


def _on_start_failed(state: ExecutorState, ev: ProcessStartFailed, ctx: _Ctx) -> ExecutorState:
    task_id = state.task_id
    if task_id is None:
        return state
    state = replace(state, process_live=False)
    state = _emit(state, ctx, task_id, "TASK_FAILED", f"could not start: {ev.reason}")
    return _maybe_done(state, ctx)


def _on_exited(state: ExecutorState, ev: ProcessExited, ctx: _Ctx) -> ExecutorState:
    state = replace(state, process_live=False)
    task_id = state.task_id
    if task_id is None or state.terminal:
        return _maybe_done(state, ctx)
    if state.kill_requested:
        state = _emit(state, ctx, task_id, "TASK_KILLED", "task killed")
    elif ev.returncode == 0:
        state = _emit(state, ctx, task_id, "TASK_FINISHED", "command exited with code 0")
    else:
        message = _failed_message(ev.returncode, ev.stderr_tail)
        state = _emit(state, ctx, task_id, "TASK_FAILED", message)
    return _maybe_done(state, ctx)


def _on_kill(state: ExecutorState, ev: Kill, ctx: _Ctx) -> ExecutorState:
    if ev.task_id != state.task_id:
        ctx.actions.append(Log(f"KILL for unknown task {ev.task_id} ignored", "warning"))
        return state
    if state.terminal:
        return state
    # Precedence: the KILL's own policy, then TaskInfo.kill_policy, then the run spec.
    grace = ev.grace_seconds
    if grace is None and state.task is not None:
        grace = kill_policy_grace(state.task.get("kill_policy"))
    if grace is None:
        grace = state.spec.grace_seconds if state.spec else 0.0
    if state.process_live:
        ctx.actions.append(Log(f"killing task {ev.task_id} with {grace:.3g}s grace"))
        return _kill(state, ctx, grace)
    # Launched but never started (or already gone): nothing to signal.
    state = replace(state, kill_requested=True)
    state = _emit(state, ctx, ev.task_id, "TASK_KILLED", "killed before it started")
    return _maybe_done(state, ctx)


def _on_ack(state: ExecutorState, ev: Acknowledged, ctx: _Ctx) -> ExecutorState:
    remaining = tuple(s for s in state.unacked if s["uuid"] != ev.uuid)
    if len(remaining) == len(state.unacked):
        ctx.actions.append(Log(f"ACKNOWLEDGED for unknown update {ev.uuid} ignored"))
        return state
    state = replace(state, unacked=remaining)
    if ev.task_id == state.task_id:
        state = replace(state, task_acked=True)
    return _maybe_done(state, ctx)


def _on_message(state: ExecutorState, ev: SchedulerMessage, ctx: _Ctx) -> ExecutorState:
    try:
        doc = json.loads(ev.data)
        kind = doc["kind"]
    except (ValueError, KeyError, TypeError):
        ctx.actions.append(Log(f"unreadable scheduler message {ev.data[:80]!r}", "warning"))
        return state
    if kind == "master_address":
        address = doc.get("address")
        if not isinstance(address, str) or ":" not in address:
            ctx.actions.append(Log(f"bad master_address message {doc!r}", "warning"))
            return state
        ctx.actions.append(WriteControl(control.MASTER_ADDRESS, address.encode()))
    elif kind == "checkpoint_now":
        ctx.actions.append(WriteControl(control.CHECKPOINT_NOW))
    elif kind == "drain":
        ctx.actions.append(WriteControl(control.CHECKPOINT_NOW))
        ctx.actions.append(WriteControl(control.DRAINING))
    elif kind == "retire":
        return _retire(state, doc, ctx)
    else:
        ctx.actions.append(Log(f"unknown scheduler message kind {kind!r}", "warning"))
    return state


def _retire(state: ExecutorState, doc: dict[str, Any], ctx: _Ctx) -> ExecutorState:
    """Add the named workers to the task's retire list (``retire.json``): the list only
    grows, newest deadline kept, so a message lost or repeated changes nothing."""
    try:
        rows = control.check_retire(doc)
    except ValueError as exc:
        ctx.actions.append(Log(f"bad retire message: {exc}", "warning"))
        return state
    merged = dict(state.retiring)
    for name, by in rows:
        merged.pop(name, None)
        merged[name] = by
    retiring = tuple(merged.items())[-control.MAX_RETIRE:]
    if retiring == state.retiring:
        return state
    body = {"workers": [{"name": n, "by": by} for n, by in retiring]}
    ctx.actions.append(WriteControl(control.RETIRE, json.dumps(body).encode()))
    return replace(state, retiring=retiring)


def _stop_everything(state: ExecutorState, ctx: _Ctx, grace: float) -> ExecutorState:
    """Kill the task if it runs; exit right away if there is nothing to wait for."""
    if state.process_live:
        if not state.kill_requested:
            state = _kill(state, ctx, grace)
        return state
    task_id = state.task_id
    if task_id is not None and not state.terminal:
        state = replace(state, kill_requested=True)
        state = _emit(state, ctx, task_id, "TASK_KILLED", "executor shut down")
    if state.abandon_code is not None:
        return _maybe_done(state, ctx)
    return _maybe_done(state, ctx) if state.terminal else _exit(state, ctx, 0, "shut down")


def _on_shutdown(state: ExecutorState, ev: Shutdown, ctx: _Ctx) -> ExecutorState:
    ctx.actions.append(Log(ev.reason))
    state = replace(state, shutting_down=True)
    grace = state.spec.grace_seconds if state.spec else 0.0
    # The agent destroys us after its shutdown grace period; leave room to report.
    grace = min(grace, max(0.0, state.shutdown_grace - 1.0))
    return _stop_everything(state, ctx, grace)


def _on_disconnected(state: ExecutorState, ev: Disconnected, ctx: _Ctx) -> ExecutorState:
    was_connected = state.connected
    state = replace(state, connected=False)
    if state.exited:
        return state
    if state.checkpoint:
        # The task keeps running; the shell retries SUBSCRIBE until the recovery timeout.
        if was_connected:
            ctx.actions.append(Log(f"agent connection lost ({ev.reason}); recovering"))
        ctx.actions.append(StartRecovery())
        return state
    ctx.actions.append(Log(f"agent connection lost ({ev.reason}) without checkpointing"))
    state = replace(state, abandon_code=1)
    grace = state.spec.grace_seconds if state.spec else 0.0
    return _stop_everything(state, ctx, grace)


def _on_recovery_expired(state: ExecutorState, ev: RecoveryExpired, ctx: _Ctx) -> ExecutorState:
    if state.connected or state.exited:
        return state
    ctx.actions.append(Log("agent did not come back within MESOS_RECOVERY_TIMEOUT", "warning"))
    state = replace(state, abandon_code=1)
    grace = state.spec.grace_seconds if state.spec else 0.0
    return _stop_everything(state, ctx, grace)


def _on_error(state: ExecutorState, ev: AgentError, ctx: _Ctx) -> ExecutorState:
    # The API recommends aborting the subscription and subscribing again.
    ctx.actions.append(Log(f"agent ERROR: {ev.message}", "warning"))
    ctx.actions.append(Reconnect())
    return state


def _on_ack_timer(state: ExecutorState, ev: AckTimerFired, ctx: _Ctx) -> ExecutorState:
    if not state.terminal or state.process_live:
        return state
    return _exit(state, ctx, 0, f"task {state.task_id} is {state.task_state}; ack wait over")


def _on_usage(state: ExecutorState, ev: UsageSampled, ctx: _Ctx) -> ExecutorState:
    if state.connected and state.process_live and state.task_id is not None:
        ctx.actions.append(
            SendMessage(
                {
                    "kind": "usage",
                    "task_id": state.task_id,
                    "cpu_percent": round(ev.cpu_percent, 2),
                    "cpu_seconds": round(ev.cpu_seconds, 3),
                    "rss_mb": round(ev.rss_mb, 2),
                }
            )
        )
    return state


def _on_progress(state: ExecutorState, ev: ProgressChanged, ctx: _Ctx) -> ExecutorState:
    if state.task_id is None or not state.connected:
        return state
    try:
        done, total = _int_field(ev.doc, "done"), _int_field(ev.doc, "total")
        backlog, rerun = _int_field(ev.doc, "backlog"), _int_field(ev.doc, "rerun")
    except ValueError as exc:
        ctx.actions.append(Log(str(exc), "warning"))
        return state
    if done is None or total is None:
        ctx.actions.append(Log("progress without done/total ignored", "warning"))
        return state
    payload = {"kind": "progress", "task_id": state.task_id, "done": done, "total": total}
    payload["backlog"] = backlog if backlog is not None else max(0, total - done)
    payload["rerun"] = rerun or 0
    ctx.actions.append(SendMessage(payload))
    return state


def _on_checkpoint(state: ExecutorState, ev: CheckpointCommitted, ctx: _Ctx) -> ExecutorState:
    if state.task_id is not None and state.connected:
        payload: dict[str, Any] = {"kind": "checkpoint", "task_id": state.task_id,
                                   "uri": ev.uri, "seq": ev.seq}
        if ev.seconds is not None:
            payload["seconds"] = ev.seconds
        ctx.actions.append(SendMessage(payload))
    return state


def _on_load(state: ExecutorState, ev: LoadChanged, ctx: _Ctx) -> ExecutorState:
    if state.task_id is None or not state.connected:
        return state
    try:
        workers, queued, detail = control.check_load(ev.doc)
    except ValueError as exc:
        ctx.actions.append(Log(str(exc), "warning"))
        return state
    ctx.actions.append(SendMessage({"kind": "load", "task_id": state.task_id,
                                    "workers": workers, "queued": queued, "detail": detail}))
    return state


_HANDLERS: dict[type, Callable[[ExecutorState, Any, _Ctx], ExecutorState]] = {
    Subscribed: _on_subscribed,
    Launch: _on_launch,
    Kill: _on_kill,
    Acknowledged: _on_ack,
    SchedulerMessage: _on_message,
    Shutdown: _on_shutdown,
    AgentError: _on_error,
    Heartbeat: lambda state, ev, ctx: state,
    Disconnected: _on_disconnected,
    RecoveryExpired: _on_recovery_expired,
    ProcessStarted: _on_process_started,
    ProcessStartFailed: _on_start_failed,
    ProcessExited: _on_exited,
    AckTimerFired: _on_ack_timer,
    UsageSampled: _on_usage,
    ProgressChanged: _on_progress,
    CheckpointCommitted: _on_checkpoint,
    LoadChanged: _on_load,
}


def kill_policy_grace(policy: Any) -> float | None:
    """Seconds in a KillPolicy's ``grace_period.nanoseconds`` (int64: JSON string or number)."""
    try:
        nanos = policy["grace_period"]["nanoseconds"]
        seconds = int(nanos) / 1e9
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, seconds)


def decode_event(doc: Any) -> Event | None:
    """Turn one agent event (parsed JSON) into a core event; None for unknown types.

    Raises ``ValueError`` when a known event lacks a required field.
    """
    if not isinstance(doc, dict):
        raise ValueError("event is not a JSON object")
    kind = doc.get("type")
    try:
        if kind == "SUBSCRIBED":
            sub = doc.get("subscribed", {})
            agent = sub.get("agent_info", {}).get("id", {}).get("value")
            return Subscribed(agent_id=agent)
        if kind == "LAUNCH":
            task = doc["launch"]["task"]
            if not isinstance(task, dict) or not isinstance(task.get("task_id"), dict):
                raise ValueError("LAUNCH task must be an object with a task_id")
            return Launch(task=task)
        if kind == "KILL":
            kill = doc["kill"]
            return Kill(kill["task_id"]["value"], kill_policy_grace(kill.get("kill_policy")))
        if kind == "ACKNOWLEDGED":
            ack = doc["acknowledged"]
            return Acknowledged(ack["task_id"]["value"], ack["uuid"])
        if kind == "MESSAGE":
            return SchedulerMessage(base64.b64decode(doc["message"]["data"]))
        if kind == "SHUTDOWN":
            return Shutdown()
        if kind == "ERROR":
            err = doc.get("error") or {}
            return AgentError(str(err.get("message") or doc.get("message") or "unknown error"))
        if kind == "HEARTBEAT":
            return Heartbeat()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{kind} event missing field {exc}") from None
    return None


def handle(
    state: ExecutorState, event: Event, *, now: float, new_uuid: Callable[[], bytes]
) -> Step:
    """Apply one event; return the new state and the actions to perform, in order."""
    ctx = _Ctx(now=now, new_uuid=new_uuid)
    new_state = _HANDLERS[type(event)](state, event, ctx)
    return new_state, ctx.actions
