"""The localmesos allocator: one pure DRF allocation round. No I/O, no clocks.

Vocabulary: an *agent slot* is what an agent can offer right now (free = total minus used
minus already offered); a *framework slot* is an active framework with its roles, what it
holds, its suppressed roles and its decline filters. One round walks the agents in a seeded
shuffled order and gives each agent's free resources to the (role, framework) with the
lowest dominant share (roles first, weighted equally, then frameworks within a role), as
Mesos' hierarchical DRF allocator does. Each agent yields at most one offer per framework
per round. Revocable resources go only to REVOCABLE_RESOURCES frameworks, GPU agents only
to GPU_RESOURCES frameworks. A filter refuses an agent's resources to a framework while
the resources are a subset of what was declined and the filter has not expired.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from corral.core.resources import ZERO, Resources
from corral.localmesos.protocol import Pool


@dataclass(frozen=True, slots=True)
class Filter:
    """Declined resources on one agent, refused until ``expires`` (a monotonic time)."""

    resources: Pool
    expires: float

    def refuses(self, candidate: Pool, now: float) -> bool:
        return now < self.expires and candidate.fits(self.resources)


@dataclass(frozen=True, slots=True)
class AgentSlot:
    agent_id: str
    free: Pool            # non-revocable scalars + ports not used or offered
    free_revocable: Resources
    has_gpus: bool
    offerable: bool = True


@dataclass(frozen=True, slots=True)
class FrameworkSlot:
    framework_id: str
    roles: tuple[str, ...]
    holds: Resources                  # used + offered, non-revocable
    suppressed: frozenset[str] = frozenset()
    gpu_capable: bool = False
    revocable_capable: bool = False
    filters: Mapping[str, Sequence[Filter]] = field(default_factory=dict)
    role_holds: Mapping[str, Resources] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Grant:
    framework_id: str
    role: str
    agent_id: str
    resources: Pool


def allocate(agents: Sequence[AgentSlot], frameworks: Sequence[FrameworkSlot],
             total: Resources, now: float, rng: random.Random) -> list[Grant]:
    """One allocation round: the offers to make, in order."""
    role_share: dict[str, Resources] = {}
    fw_share: dict[str, Resources] = {}
    for fw in frameworks:
        fw_share[fw.framework_id] = fw.holds
        for role in fw.roles:
            role_share[role] = role_share.get(role, ZERO) + fw.role_holds.get(role, ZERO)
    order = list(agents)
    rng.shuffle(order)
    grants: list[Grant] = []
    for agent in order:
        if not agent.offerable:
            continue
        grants.extend(_allocate_agent(agent, frameworks, total, now, role_share, fw_share))
    return grants


def _candidates(frameworks: Sequence[FrameworkSlot], total: Resources,
                role_share: dict[str, Resources], fw_share: dict[str, Resources]
                ) -> list[tuple[FrameworkSlot, str]]:
    """Unsuppressed (framework, role) pairs, lowest role share first, then framework share."""
    pairs = [(fw, role) for fw in frameworks for role in fw.roles if role not in fw.suppressed]
    pairs.sort(key=lambda p: (
        role_share.get(p[1], ZERO).dominant_share(total),
        fw_share.get(p[0].framework_id, ZERO).dominant_share(total),
        p[0].framework_id, p[1],
    ))
    return pairs


def _allocate_agent(agent: AgentSlot, frameworks: Sequence[FrameworkSlot], total: Resources,
                    now: float, role_share: dict[str, Resources],
                    fw_share: dict[str, Resources]) -> list[Grant]:
    regular = agent.free
    revocable = agent.free_revocable
    grants: list[Grant] = []
    offered_to: set[str] = set()
    for fw, role in _candidates(frameworks, total, role_share, fw_share):
        if fw.framework_id in offered_to:
            continue
        if agent.has_gpus and not fw.gpu_capable:
            continue
        candidate = regular
        if fw.revocable_capable:
            candidate = Pool(regular.scalars, revocable, regular.ports)
        if candidate.is_empty() or not candidate.worth_offering():
            continue
        if any(f.refuses(candidate, now) for f in fw.filters.get(agent.agent_id, ())):
            continue
        grants.append(Grant(fw.framework_id, role, agent.agent_id, candidate))
        offered_to.add(fw.framework_id)
        # Shares move as we give, so the next agent goes to whoever is now poorest.
        role_share[role] = role_share.get(role, ZERO) + candidate.scalars
        fw_share[fw.framework_id] = fw_share.get(fw.framework_id, ZERO) + candidate.scalars
        regular = Pool()
        if fw.revocable_capable:
            revocable = ZERO
        if revocable.is_empty():
            break
        # Only revocable resources remain: the next revocable-capable framework may take them.
    return grants
