"""The lifecycle of one task attempt, as Corral sees it, as an explicit transition table.

Vocabulary: a *slot* (a job's master or worker N) is filled by successive *attempts*,
each one Mesos task. This module owns the states of one attempt and how a Mesos status
update moves it. ``PENDING`` means "no Mesos task yet"; ``LAUNCHED`` means the ACCEPT was
sent (Mesos calls it TASK_STAGING). ``UNREACHABLE`` is not terminal: the agent may come
back and report the task running again.

``transition`` never raises. Mesos delivers updates at least once and not necessarily in
order (retries, reconciliation answers, a re-registering agent), so a duplicate, stale or
impossible update is *data*: the state stays and the outcome says "ignored: why".

``classify`` decides whose fault a terminal state is: the job's own (it counts against
the restart limit) or the infrastructure's (agent loss, revocation, invalid offers: it
never counts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "PENDING"
    LAUNCHED = "LAUNCHED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    KILLING = "KILLING"
    UNREACHABLE = "UNREACHABLE"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    ERROR = "ERROR"
    LOST = "LOST"
    DROPPED = "DROPPED"
    GONE = "GONE"
    GONE_BY_OPERATOR = "GONE_BY_OPERATOR"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def live(self) -> bool:
        """Holding (or about to hold) resources on a reachable agent."""
        return self in LIVE

    @property
    def mesos_name(self) -> str:
        """The Mesos TaskState name shown to users ("PENDING" before any launch)."""
        if self is TaskState.PENDING:
            return "PENDING"
        if self is TaskState.LAUNCHED:
            return "TASK_STAGING"
        return f"TASK_{self.value}"


TERMINAL = frozenset({
    TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.ERROR, TaskState.LOST,
    TaskState.DROPPED, TaskState.GONE, TaskState.GONE_BY_OPERATOR, TaskState.UNKNOWN,
})
LIVE = frozenset({TaskState.LAUNCHED, TaskState.STARTING, TaskState.RUNNING, TaskState.KILLING})

# Every Mesos v1 TaskState name the table understands.
MESOS_STATES: tuple[str, ...] = (
    "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_UNREACHABLE",
    "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED",
    "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN",
)

_S = TaskState
# The state each Mesos update would move an attempt to, if the edge exists.
_TARGET: dict[str, TaskState] = {
    "TASK_STAGING": _S.LAUNCHED, "TASK_STARTING": _S.STARTING, "TASK_RUNNING": _S.RUNNING,
    "TASK_KILLING": _S.KILLING, "TASK_UNREACHABLE": _S.UNREACHABLE,
    "TASK_FINISHED": _S.FINISHED, "TASK_FAILED": _S.FAILED, "TASK_KILLED": _S.KILLED,
    "TASK_ERROR": _S.ERROR, "TASK_LOST": _S.LOST, "TASK_DROPPED": _S.DROPPED,
    "TASK_GONE": _S.GONE, "TASK_GONE_BY_OPERATOR": _S.GONE_BY_OPERATOR,
    "TASK_UNKNOWN": _S.UNKNOWN,
}


def _edges() -> dict[tuple[TaskState, str], str]:
    """The legal edges, each with the reason it exists (shown as the outcome)."""
    e: dict[tuple[TaskState, str], str] = {}

    def terminal_edges(src: TaskState, how: str) -> None:
        # Any live or unreachable attempt can end in any terminal state: the task can
        # exit, be killed, fail validation, or vanish with its agent at any moment.
        e[(src, "TASK_FINISHED")] = f"{how}: the task exited 0"
        e[(src, "TASK_FAILED")] = f"{how}: the task failed"
        e[(src, "TASK_KILLED")] = f"{how}: the task was killed"
        e[(src, "TASK_ERROR")] = f"{how}: Mesos rejected the task as invalid"
        e[(src, "TASK_LOST")] = f"{how}: the task was lost"
        e[(src, "TASK_DROPPED")] = f"{how}: the launch was dropped before reaching the agent"
        e[(src, "TASK_GONE")] = f"{how}: the agent no longer has the task"
        e[(src, "TASK_GONE_BY_OPERATOR")] = f"{how}: an operator removed the agent"
        e[(src, "TASK_UNKNOWN")] = f"{how}: the master does not know the task or its agent"

    # LAUNCHED (staging): the executor is starting; the agent may report any later state.
    e[(_S.LAUNCHED, "TASK_STARTING")] = "executor started the task"
    e[(_S.LAUNCHED, "TASK_RUNNING")] = "task running (STARTING update skipped or reordered)"
    e[(_S.LAUNCHED, "TASK_KILLING")] = "kill in progress before the task started"
    e[(_S.LAUNCHED, "TASK_UNREACHABLE")] = "agent unreachable while staging"
    terminal_edges(_S.LAUNCHED, "ended while staging")
    # STARTING: the command is being started.
    e[(_S.STARTING, "TASK_RUNNING")] = "task running"
    e[(_S.STARTING, "TASK_KILLING")] = "kill in progress while starting"
    e[(_S.STARTING, "TASK_UNREACHABLE")] = "agent unreachable while starting"
    terminal_edges(_S.STARTING, "ended while starting")
    # RUNNING: the steady state.
    e[(_S.RUNNING, "TASK_KILLING")] = "kill in progress (grace period)"
    e[(_S.RUNNING, "TASK_UNREACHABLE")] = "agent unreachable; the task may come back"
    terminal_edges(_S.RUNNING, "ended while running")
    # KILLING: only the end of the kill (or losing the agent) moves it on.
    e[(_S.KILLING, "TASK_UNREACHABLE")] = "agent unreachable while killing"
    terminal_edges(_S.KILLING, "ended while killing")
    # UNREACHABLE: a re-registering agent reports whatever the task is doing now.
    e[(_S.UNREACHABLE, "TASK_STAGING")] = "agent re-registered; task still staging"
    e[(_S.UNREACHABLE, "TASK_STARTING")] = "agent re-registered; task starting"
    e[(_S.UNREACHABLE, "TASK_RUNNING")] = "agent re-registered; task running again"
    e[(_S.UNREACHABLE, "TASK_KILLING")] = "agent re-registered; task being killed"
    terminal_edges(_S.UNREACHABLE, "ended while unreachable")
    return e


EDGES: dict[tuple[TaskState, str], str] = _edges()

# Order of the non-terminal progression, to tell a stale (reordered) update from others.
_RANK = {_S.PENDING: 0, _S.LAUNCHED: 1, _S.STARTING: 2, _S.RUNNING: 3, _S.KILLING: 4}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a status update did: ``applied`` or not, and why, in words."""

    applied: bool
    why: str


def transition(current: TaskState, mesos_state: str) -> tuple[TaskState, Outcome]:
    """Apply one Mesos status update to an attempt in ``current``. Never raises."""
    why = EDGES.get((current, mesos_state))
    if why is not None:
        return _TARGET[mesos_state], Outcome(True, why)
    return current, Outcome(False, "ignored: " + _why_ignored(current, mesos_state))


def _why_ignored(current: TaskState, mesos_state: str) -> str:
    target = _TARGET.get(mesos_state)
    if target is None:
        return f"unrecognised task state {mesos_state!r}"
    if current is _S.PENDING:
        return f"{mesos_state} for an attempt that was never launched"
    if current.terminal:
        return f"{mesos_state} after terminal {current.mesos_name} (stale or duplicate)"
    if target is current:
        return f"duplicate {mesos_state}"
    if target in _RANK and current in _RANK and _RANK[target] < _RANK[current]:
        return f"stale {mesos_state} after {current.mesos_name} (reordered)"
    return f"no edge {current.mesos_name} -> {mesos_state}"


class Cause(StrEnum):
    """Whose doing a terminal state was."""

    SUCCEEDED = "succeeded"
    KILLED = "killed"                 # we asked for it
    JOB_FAILURE = "job_failure"       # counts against the restart limit
    INFRASTRUCTURE = "infrastructure"  # never counts; relaunch at once


# Reasons that mean "the machine or Mesos took it away", whatever the state says.
INFRA_REASONS = frozenset({
    "REASON_AGENT_REMOVED", "REASON_AGENT_DISCONNECTED", "REASON_AGENT_REREGISTERED",
    "REASON_AGENT_RESTARTED", "REASON_AGENT_DRAINING", "REASON_AGENT_UNKNOWN",
    "REASON_AGENT_REMOVED_BY_OPERATOR", "REASON_CONTAINER_PREEMPTED",
    "REASON_INVALID_OFFERS", "REASON_FRAMEWORK_REMOVED", "REASON_MASTER_DISCONNECTED",
    "REASON_SLAVE_REMOVED", "REASON_SLAVE_DISCONNECTED", "REASON_SLAVE_RESTARTED",
    "REASON_SLAVE_UNKNOWN", "REASON_TASK_UNKNOWN",
})
# REASON_RECONCILIATION is deliberately absent: a reconciled TASK_FAILED may well be the
# job's own failure, and counting it keeps retries bounded.
_INFRA_STATES = frozenset({
    _S.LOST, _S.DROPPED, _S.GONE, _S.GONE_BY_OPERATOR, _S.UNKNOWN, _S.UNREACHABLE,
})


def classify(
    state: TaskState, reason: str | None, *, kill_requested: bool = False,
    agent_lost: bool = False,
) -> Cause:
    """Classify a terminal (or UNREACHABLE) state of an attempt.

    ``kill_requested``: Corral sent a kill for this attempt. ``agent_lost``: Mesos told us
    the agent went away, so an executor dying there is the machine's fault, not the job's.
    """
    if state is _S.FINISHED:
        return Cause.SUCCEEDED
    if state in _INFRA_STATES:
        return Cause.INFRASTRUCTURE
    if reason in INFRA_REASONS:
        return Cause.INFRASTRUCTURE
    if reason == "REASON_EXECUTOR_TERMINATED" and agent_lost:
        return Cause.INFRASTRUCTURE
    if state is _S.KILLED:
        # A kill nobody at Corral asked for (an operator, a drain without a reason) is
        # not the job's fault either.
        return Cause.KILLED if kill_requested else Cause.INFRASTRUCTURE
    return Cause.JOB_FAILURE


_EXIT_RE = re.compile(r"(?:exit(?:ed)?|status)\D{0,20}?(-?\d+)", re.IGNORECASE)


def describe_failure(state: TaskState, reason: str | None, message: str) -> str:
    """A one-line summary of why an attempt ended, e.g. "exit code 1: boom"."""
    msg = message.strip()
    m = _EXIT_RE.search(msg)
    if state is _S.ERROR:
        head = "invalid task"
    elif m:
        head = f"exit code {m.group(1)}"
    else:
        head = state.mesos_name + (f" ({reason})" if reason else "")
    return f"{head}: {msg}" if msg else head
