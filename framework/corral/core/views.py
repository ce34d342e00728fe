"""Read-only snapshots of jobs and tasks, as the API and CLI show them.

The core derives these from its state; the gRPC servicer translates them to proto and the
CLI prints them. ``JobBackend`` is the interface the API calls: the runtime implements it
on the leader (and a follower answers UNAVAILABLE with the leader's address).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from corral.core.cost import CostView
from corral.core.model import JobSpec
from corral.core.placement.types import Veto


class JobState(StrEnum):
    PENDING = "PENDING"      # accepted, master not yet running
    RUNNING = "RUNNING"      # master running
    FINISHED = "FINISHED"    # master exited 0
    FAILED = "FAILED"        # gave up: restart limit, invalid command, ...
    KILLED = "KILLED"        # a user killed it

    @property
    def terminal(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.KILLED)


# Codes of ``Why``: what a slot that is not running waits for.
WHY_MASTER = "waiting-for-master"   # a worker waits for its master to run
WHY_BACKOFF = "backoff"             # restart backoff after the job's own failure
WHY_PLACEMENT = "placement"         # offers came, none fit: see the vetoes
WHY_OFFERS = "offers"               # no offer has been tried for it yet
WHY_MESOS = "mesos"                 # Corral is not subscribed to the Mesos master
WHY_RECONCILING = "reconciling"     # after (re)subscribing, Corral reconciles first
WHY_NOT_RUNNING = "not-running"     # launched or being replaced: see the task's state
WHY_BUDGET = "budget"               # the job's role is over its budget (core.cost)


@dataclass(frozen=True)
class Why:
    """Why a slot is not running, as data: a code (``WHY_*``), words, the time it waits
    until (if it waits for a time), and placement's vetoes per check. Text is made from it
    only where it is shown (``render_why``)."""

    code: str
    detail: str = ""
    until: float | None = None
    vetoes: tuple[Veto, ...] = ()


def render_why(why: Why | None, now: float | None = None) -> str | None:
    """``why`` in words; with ``now``, a time it waits until is shown relative to it."""
    if why is None:
        return None
    if why.vetoes:
        return "; ".join(v.render() for v in why.vetoes)
    text = why.detail or why.code
    if why.until is not None and now is not None:
        left = why.until - now
        when = f"for {_duration(left)} more" if left > 0 else "ending now"
        head, sep, tail = text.partition("; ")
        text = f"{head} ({when}){sep}{tail}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@dataclass(frozen=True)
class TaskView:
    """One slot of a job (master or worker N) and its current attempt."""

    slot: str                    # "master" or "worker-3"
    task_id: str | None          # None while nothing is launched for the slot
    state: str                   # Mesos TaskState name, or "PENDING"
    agent_id: str | None = None
    hostname: str | None = None
    reason: str | None = None    # last Mesos reason or Corral's own
    message: str | None = None
    why: Why | None = None       # why it is not running (a vacant slot), as data
    attempt: int = 0
    revocable: bool = False
    life: str = ""               # Corral's lifecycle state of the slot (slot_state.Life)

    @property
    def pending_reason(self) -> str | None:
        """Why it is not placed yet, in words (no relative times: see ``render_why``)."""
        return render_why(self.why)


@dataclass(frozen=True)
class Progress:
    """What the job reported through the SDK."""

    done: int = 0
    total: int = 0
    backlog: int = 0
    rerun: int = 0


@dataclass(frozen=True)
class LossView:
    """One loss of a task to the infrastructure (or a notice to move it) and its cost.

    ``kind``: "lost", "unreachable", "revoked" or "notice". ``work_lost_seconds``: task
    time redone (since the attempt's last checkpoint). ``recovery_seconds``: detection →
    replacement RUNNING, None while the replacement is not running yet."""

    slot: str
    task_id: str
    kind: str
    detected_at: float
    work_lost_seconds: float = 0.0
    recovered_at: float | None = None
    recovery_seconds: float | None = None
    replacement_task_id: str | None = None
    returned_at: float | None = None   # the lost task turned up alive later (and was killed)


@dataclass(frozen=True)
class Resilience:
    """A job's losses, recoveries and spare workers (over-provisioning), as totals."""

    losses: int = 0
    recoveries: int = 0
    work_lost_seconds: float = 0.0
    recovery_seconds_total: float = 0.0
    recovery_seconds_max: float = 0.0
    spare_workers: int = 0
    spare_reason: str = ""
    recent: tuple[LossView, ...] = ()


@dataclass(frozen=True)
class PolicyActionView:
    """One worker the policy stopped: ``kind`` ``preempted`` (for another role's fair
    share) or ``retired`` (the job's target fell), at ``at``, and why in words."""

    at: float
    kind: str
    slot: str
    task_id: str
    why: str


@dataclass(frozen=True)
class PolicyView:
    """What the policy did to a job beyond its target: the size new workers are launched
    with (``worker_cpus``/``worker_mem``, right-sized from measured use; 0: the spec's) and
    why, and the workers it preempted or retired (totals and the latest)."""

    worker_cpus: float = 0.0
    worker_mem: float = 0.0
    size_reason: str = ""
    preempted: int = 0
    retired: int = 0
    recent: tuple[PolicyActionView, ...] = ()


@dataclass(frozen=True)
class JobView:
    key: str
    spec: JobSpec
    state: JobState
    desired_workers: int
    tasks: tuple[TaskView, ...] = ()
    progress: Progress = field(default_factory=Progress)
    submitted_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    target_reason: str = ""      # why desired_workers is what it is (load, share, ...)
    request_id: str = ""
    version: int = 0             # bumps on every change; watch streams use it
    resilience: Resilience = field(default_factory=Resilience)
    cost: CostView | None = None  # with a price table (core.cost): what the job cost
    policy: PolicyView = field(default_factory=PolicyView)


class NotFound(LookupError):
    """No job has that key."""


class Conflict(RuntimeError):
    """The request contradicts the job's state (e.g. scaling a finished job)."""


class AlreadyExists(Conflict):
    """A different request already created a job with that key."""


class NotLeader(RuntimeError):
    """This replica does not lead; ``leader`` is the address of the one that does (as
    last known), ``why`` says what keeps this replica from answering, if anything."""

    def __init__(self, leader: str | None, why: str = "") -> None:
        self.leader = leader
        self.why = why
        super().__init__(f"not the leader (leader: {leader or 'unknown'})"
                         + (f": {why}" if why else ""))


class JobBackend(Protocol):
    """What the gRPC API needs from the scheduler. Every method may raise NotLeader."""

    async def submit(self, spec: JobSpec, request_id: str) -> JobView:
        """Create the job. The same request id again returns the same job (idempotent);
        another request for an existing live key raises AlreadyExists."""
        ...

    async def get(self, key: str) -> JobView: ...

    async def list(self, role: str | None = None) -> list[JobView]: ...

    async def keys(self, role: str | None = None) -> Sequence[str]:
        """The keys of the jobs ``list`` would show, in any order (cheap: no views)."""
        ...

    async def kill(self, key: str) -> JobView: ...

    async def scale(self, key: str, workers: int) -> JobView:
        """Set the desired worker count; must lie within the spec's min..max."""
        ...

    def watch(self, key: str) -> AsyncIterator[JobView]:
        """Yield the job's view now and after every change, ending after a terminal state."""
        ...
