"""Placement's inputs and outputs: pending tasks, facts about what already runs, the plan.

A ``PendingTask`` is one slot that needs a Mesos task; its ``resources`` are everything
the launch takes from an offer (the task's own plus any executor overhead). ``JobFacts``
say what of the job already runs, so checks like ``max_per_host`` and spreading count
tasks placed in earlier rounds. A ``Plan`` is pure data: which tasks go to which agent
(using every offer of that agent in one ACCEPT) and, for tasks left over, the vetoes that
explain why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.core.model import Constraints, TaskKey, TaskKind, Tier
from corral.core.resources import Resources


@dataclass(frozen=True, slots=True)
class Veto:
    """Why a feasibility check ruled agents out for a task: the check's name (``tier``,
    ``resources.mem``, ``max_per_host``, ...), how many of the offered agents it ruled out
    (after the checks before it), and one of them as an example with the detail in words."""

    check: str
    agents: int
    example: str
    detail: str

    def render(self) -> str:
        more = f" (and {self.agents - 1} more agents)" if self.agents > 1 else ""
        return self.detail + more


@dataclass(frozen=True, slots=True)
class PendingTask:
    key: TaskKey
    resources: Resources
    ports: int = 0
    tier: Tier = Tier.PREFERRED
    constraints: Constraints = field(default_factory=Constraints)

    @property
    def revocable(self) -> bool:
        """Workers of revocable-tier jobs run on revocable resources; masters never do."""
        return self.tier is Tier.REVOCABLE and self.key.kind is TaskKind.WORKER


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What of one job already holds resources, as placement needs it."""

    master_running: bool = False
    tasks_per_agent: Mapping[str, int] = field(default_factory=dict)
    spread_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlacementFacts:
    """Everything placement knows beyond the offers. ``draining``: agent id -> the time it
    becomes unavailable (from inverse offers)."""

    jobs: Mapping[str, JobFacts] = field(default_factory=dict)
    draining: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task placed on an agent, with the concrete ports it takes."""

    task: PendingTask
    agent_id: str
    hostname: str
    ports: tuple[int, ...]
    revocable: bool


@dataclass
class Plan:
    """``assignments``: agent id -> tasks placed there (in placement order);
    ``offer_ids``: agent id -> that agent's offers (all accepted together);
    ``vetoes``: unplaced task key -> why no offer took it, per check."""

    assignments: dict[str, list[Assignment]] = field(default_factory=dict)
    offer_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vetoes: dict[TaskKey, tuple[Veto, ...]] = field(default_factory=dict)

    def placed(self) -> list[Assignment]:
        return [a for tasks in self.assignments.values() for a in tasks]

    def unused_offer_ids(self) -> list[str]:
        return [o for agent, ids in self.offer_ids.items()
                if agent not in self.assignments for o in ids]
