"""Corral's domain values: job specs, task templates, offers and task identity.

Everything here is a frozen dataclass so the pure core can share values freely and
tests can compare them. A job is identified by its *key* ``role/environment/name``; the
role is the tenant that fairness and quotas are computed over. A job has one *master*
task and ``workers.min..workers.max`` *worker* tasks, each worker with a stable *index*
that survives replacement (a replacement worker restores that index's checkpoint).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from corral.core.resources import Resources

# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, and ``NAME_RE.match`` must
# accept the whole string or nothing (a role "a\n" would otherwise pass and break ZooKeeper
# paths and task ids).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


class Tier(StrEnum):
    """Where a job may run and whether it may be preempted.

    PREFERRED: non-revocable resources, preempted only above its role's guarantee.
    PREEMPTIBLE: non-revocable resources, preempted for fairness first among those.
    REVOCABLE: runs only on revocable (oversubscribed) resources; revocation reschedules.
    """

    PREFERRED = "preferred"
    PREEMPTIBLE = "preemptible"
    REVOCABLE = "revocable"


class WorkloadKind(StrEnum):
    """What runs in a job's slots (``core.workload`` builds the commands).

    COMMAND: the user's own master and worker commands (any framework).
    DASK: a Dask scheduler and the user's driver in the master, Dask workers as workers.
    TORCH: a c10d rendezvous in the master, ``torchrun`` with the user's script as workers.
    """

    COMMAND = "command"
    DASK = "dask"
    TORCH = "torch"


class TaskKind(StrEnum):
    MASTER = "master"
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    """How to run one task of a job: the command and what it needs."""

    command: str
    resources: Resources
    ports: int = 0
    env: tuple[tuple[str, str], ...] = ()
    image: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerPool:
    """The worker template and the bounds the scheduler may scale within."""

    template: TaskTemplate
    min: int = 0
    max: int = 1
    initial: int = 1


@dataclass(frozen=True, slots=True)
class Constraints:
    """Placement constraints applied to every task of a job.

    ``max_per_host``: at most this many of the job's tasks on one agent (None: no limit).
    ``attributes``: agent attributes that must equal the given values.
    ``spread_over``: spread workers evenly over the values of this agent attribute.
    """

    max_per_host: int | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    spread_over: str | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How often a job's own failures are retried. Infrastructure loss never counts."""

    max_failures: int = 3
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a user submits. Immutable; scaling changes the desired count, not the spec.

    ``kind`` other than COMMAND: Corral writes the master's command (``master.command``
    is empty) and, unless given, the workers' (``workers.template.command`` empty);
    ``driver`` is the user's program a DASK master runs beside the Dask scheduler.
    """

    role: str
    environment: str
    name: str
    master: TaskTemplate
    workers: WorkerPool
    tier: Tier = Tier.PREFERRED
    priority: int = 0
    checkpoint_uri: str | None = None
    checkpoint_interval_seconds: float = 30.0
    constraints: Constraints = field(default_factory=Constraints)
    kill_grace_seconds: float = 10.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    deadline_seconds: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    kind: WorkloadKind = WorkloadKind.COMMAND
    driver: str | None = None

    @property
    def key(self) -> str:
        return f"{self.role}/{self.environment}/{self.name}"


def role_of(key: str) -> str:
    """The role of a job key ``role/environment/name`` (``JobSpec.key``)."""
    return key.split("/", 1)[0]

@dataclass(frozen=True, slots=True)
class Offer:
    """One Mesos offer, reduced to what placement needs.

    ``resources`` are the non-revocable amounts, ``revocable`` the oversubscribed ones;
    Mesos forbids one task mixing the two. ``unavailable_at`` is the start of a
    maintenance window (a spot notice) if the offer carries ``unavailability``.
    """

    id: str
    agent_id: str
    hostname: str
    resources: Resources
    revocable: Resources = Resources()
    ports: tuple[tuple[int, int], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    unavailable_at: float | None = None

    def attribute(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True, order=True)
class TaskKey:
    """The logical slot a task fills: a job's master, or worker number ``index``."""

    job: str
    kind: TaskKind
    index: int = 0

    def label(self) -> str:
        return "master" if self.kind is TaskKind.MASTER else f"worker-{self.index}"


def task_id_for(key: TaskKey, attempt: int) -> str:
    """The Mesos task id of ``attempt`` at filling slot ``key``.

    Mesos task ids are free-form strings; ours are readable and unique per attempt so a
    relaunch never collides with a lost task's id.
    """
    return f"corral.{key.job.replace('/', '.')}.{key.label()}.{attempt}"


def parse_task_id(task_id: str) -> tuple[TaskKey, int] | None:
    """Invert ``task_id_for``; None for ids Corral did not make."""
    parts = task_id.split(".")
    if len(parts) != 6 or parts[0] != "corral":
        return None
    _, role, env, name, label, attempt = parts
    if not attempt.isdigit():
        return None
    job = f"{role}/{env}/{name}"
    if label == "master":
        return TaskKey(job, TaskKind.MASTER, 0), int(attempt)
    if label.startswith("worker-") and label[7:].isdigit():
        return TaskKey(job, TaskKind.WORKER, int(label[7:])), int(attempt)
    return None
