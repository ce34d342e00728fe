"""The fake Mesos's records: agents with markets and prices, and the tasks on them.

``engine`` drives these; they only hold state and answer small questions (what is free
to offer, what an offer from this agent looks like). Vocabulary follows Mesos: an agent's
*free* resources are what no task holds; it is *offerable* when it has free resources,
no outstanding offer, no refusal filter in force and the framework is not suppressed;
an agent that stopped (a spot termination) is *dead* at once but *registered* until the
master notices (its health checks) and removes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.core.model import Offer
from corral.core.resources import Resources

if TYPE_CHECKING:
    from corral.sim.engine import SimJob

# Mesos' minimum allocatable resources (master flag --min_allocatable_resources).
MIN_CPUS = 0.01
MIN_MEM = 32.0


@dataclass(slots=True, eq=False)
class SimAgent:
    """One agent: its market and price, what it has and what our tasks hold."""

    idx: int
    id: str
    group: int
    market: str                      # "spot" | "on_demand"
    cpus: float
    mem: float
    rev_cpus: float                  # oversubscribed (revocable) estimate
    rev_mem: float
    price_per_cpu_s: float
    used_cpus: float = 0.0
    used_mem: float = 0.0
    rused_cpus: float = 0.0
    rused_mem: float = 0.0
    alive: bool = True               # the machine runs
    registered: bool = True          # the master has not removed it
    filtered_until: float = 0.0      # a refusal filter (DECLINE / unused part of ACCEPT)
    offered: str | None = None       # the outstanding offer's id
    unavailable_at: float | None = None   # a maintenance window (spot notice) starts
    revoked: bool = False            # the revocable estimate dropped to zero
    tasks: dict[str, SimTask] = field(default_factory=dict)
    _last: tuple[tuple[float, float, float, float], Resources, Resources] | None = None

    def free(self) -> tuple[float, float, float, float]:
        rc = 0.0 if self.revoked else self.rev_cpus - self.rused_cpus
        rm = 0.0 if self.revoked else self.rev_mem - self.rused_mem
        return (self.cpus - self.used_cpus, self.mem - self.used_mem, rc, rm)

    def has_free(self) -> bool:
        c, m, rc, rm = self.free()
        return (c >= MIN_CPUS and m >= MIN_MEM) or (rc >= MIN_CPUS and rm >= MIN_MEM)

    def offer(self, offer_id: str) -> Offer:
        free = self.free()
        if self._last is None or self._last[0] != free:
            c, m, rc, rm = free
            self._last = (free, Resources(cpus=max(c, 0.0), mem=max(m, 0.0)),
                          Resources(cpus=max(rc, 0.0), mem=max(rm, 0.0)))
        return Offer(offer_id, self.id, self.id, self._last[1], self._last[2],
                     attributes=self.attributes(),
                     unavailable_at=self.unavailable_at)

    def attributes(self) -> tuple[tuple[str, str], ...]:
        """As localmesos labels its agents: ``market`` (spread over) and ``spot=true``."""
        if self.market == "spot":
            return (("market", "spot"), ("spot", "true"))
        return (("market", "on-demand"),)

    def hold(self, t: SimTask, sign: float) -> None:
        if t.revocable:
            self.rused_cpus += sign * t.cpus
            self.rused_mem += sign * t.mem
        else:
            self.used_cpus += sign * t.cpus
            self.used_mem += sign * t.mem


@dataclass(slots=True, eq=False)
class SimTask:
    """One Mesos task of ours, and what the workload in it has done.

    ``gen`` invalidates events scheduled for an earlier state of the task. A worker is
    *productive* (``seg`` is the start of its productive stretch) while it runs, its
    startup is over and its job's master runs; ``unsaved`` is the work it did since its
    last checkpoint, before ``seg``."""

    id: str
    job: SimJob
    index: int                       # -1: the master
    agent: SimAgent
    cpus: float
    mem: float
    revocable: bool
    launched_at: float
    ready_at: float                  # startup over: it can contribute
    state: str = "TASK_STAGING"
    gen: int = 0
    stopping: bool = False           # a kill or drain is under way: no more work
    seg: float | None = None
    unsaved: float = 0.0
    ckpt_seq: int = 0
    ckpt_token: int = 0              # the one scheduled checkpoint that counts
    drained: bool = False

    @property
    def master(self) -> bool:
        return self.index < 0

    def at_risk(self, now: float, throughput: float) -> float:
        """Work units losing it now would lose (done since its last checkpoint)."""
        extra = (now - self.seg) * throughput if self.seg is not None else 0.0
        return self.unsaved + extra
