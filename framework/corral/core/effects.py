"""Outputs of the pure scheduling core: what the runtime shell must do.

``Scheduler.handle`` returns a list of these; the shell turns each into a Mesos call
(ACCEPT, DECLINE, KILL, ACKNOWLEDGE, RECONCILE, REVIVE, SUPPRESS, MESSAGE,
ACCEPT_INVERSE_OFFERS) or an internal action (waking API watchers on ``JobChanged``,
persisting on ``PersistJob``). Effects are plain frozen data so tests compare them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.core.model import TaskKey
from corral.core.resources import Resources


@dataclass(frozen=True, slots=True)
class TaskLaunch:
    """One task to launch inside a LaunchTasks accept.

    ``env`` already holds every CORRAL_* variable plus the template's own env; ``ports``
    are the concrete ports taken from the offer; ``revocable`` says which pool the
    resources come from (Mesos forbids a task mixing the two); ``image`` is the
    template's container image (None: the agent's host).
    """

    task_id: str
    key: TaskKey
    attempt: int
    name: str
    command: str
    resources: Resources
    ports: tuple[int, ...]
    revocable: bool
    env: tuple[tuple[str, str], ...]
    grace_seconds: float
    hostname: str
    image: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchTasks:
    """ACCEPT ``offer_ids`` (all on ``agent_id``) with LAUNCH of ``tasks``; whatever is
    left of the offers is refused for ``refuse_seconds``."""

    offer_ids: tuple[str, ...]
    agent_id: str
    tasks: tuple[TaskLaunch, ...]
    refuse_seconds: float


@dataclass(frozen=True, slots=True)
class DeclineOffers:
    offer_ids: tuple[str, ...]
    refuse_seconds: float


@dataclass(frozen=True, slots=True)
class KillTask:
    task_id: str
    agent_id: str | None
    grace_seconds: float


@dataclass(frozen=True, slots=True)
class Acknowledge:
    agent_id: str
    task_id: str
    uuid: str


@dataclass(frozen=True, slots=True)
class Reconcile:
    """RECONCILE the given (task_id, agent_id) pairs; an empty tuple means implicit."""

    tasks: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Revive:
    """Ask for offers again after a Suppress."""


@dataclass(frozen=True, slots=True)
class Suppress:
    """Stop sending offers: nothing is pending."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """A framework MESSAGE to a Corral executor (JSON-encoded by the shell)."""

    agent_id: str
    executor_id: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AcceptInverseOffers:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobChanged:
    """The job's view changed: the shell wakes its watchers."""

    key: str


@dataclass(frozen=True, slots=True)
class PersistJob:
    """The job's durable intent changed: the shell writes it before carrying out any
    effect of the same turn (write-ahead)."""

    key: str


Effect = (
    LaunchTasks | DeclineOffers | KillTask | Acknowledge | Reconcile | Revive | Suppress |
    SendMessage | AcceptInverseOffers | JobChanged | PersistJob
)
