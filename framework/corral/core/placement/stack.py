"""The placement stack, assembled in one function: group → check → rank → choose.

``place`` turns pending tasks and this round's offers into a ``Plan``:

1. *group*: identical pending tasks of one job (its workers) are placed together, so the
   cost of a round grows with jobs x agents, not tasks x agents; duplicate keys collapse
   (a master is never placed twice); masters go first.
2. *job checks*: a job's workers wait until its master runs (they need its address).
3. *feasibility*: the checkers of ``checks.CHECKS`` as masks over all agents at once, and
   from them each agent's capacity (how many more tasks of the group it can take).
4. *rank and choose*: the best-scoring agent with capacity takes as many tasks as fit
   (bin-packing keeps the fullest agent best); with ``spread_over`` each task goes to the
   least-used attribute value first, and within it to the agent with the fewest of the
   job's tasks.
5. *explain*: tasks left over get the vetoes of every agent, in words.

Capacities are recomputed from the pool after every choice, so an offer is never
over-committed (resources or ports) and a task only ever takes from one pool.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from corral.core.model import Offer, TaskKind
from corral.core.placement import rank
from corral.core.placement.checks import GroupContext, explain, static_mask
from corral.core.placement.pool import AgentPool, milli
from corral.core.placement.types import (
    Assignment,
    JobFacts,
    PendingTask,
    PlacementFacts,
    Plan,
    Veto,
)

_BIG = np.iinfo(np.int64).max // 4
# Weight of one more of the job's tasks on an agent when spreading: above any bin-pack
# score difference (< 2), below the unavailability penalty (1e3).
_HOST_SPREAD = 10.0
_NO_FACTS = JobFacts()


def place(pending: Sequence[PendingTask], offers: Sequence[Offer],
          facts: PlacementFacts | None = None) -> Plan:
    """Plan which pending tasks go on which offered agents. Pure; never raises on data."""
    facts = facts or PlacementFacts()
    pool = AgentPool(offers, facts.draining, facts.now)
    plan = Plan(offer_ids=dict(zip(pool.agent_ids, pool.offer_ids, strict=True)))
    # The job's tasks per agent, shared by the job's groups so a master placed this
    # round counts towards max_per_host for its workers.
    counts: dict[str, np.ndarray] = {}
    for group in _groups(pending):
        _place_group(group, pool, facts, plan, counts)
    return plan


def _groups(pending: Sequence[PendingTask]) -> list[list[PendingTask]]:
    """Identical tasks of one job together, masters first, first-seen order otherwise."""
    seen: set = set()
    groups: dict[tuple, list[PendingTask]] = {}
    for want_master in (True, False):
        for t in pending:
            if (t.key.kind is TaskKind.MASTER) != want_master or t.key in seen:
                continue
            seen.add(t.key)
            gk = (t.key.job, t.key.kind, t.resources, t.ports, t.tier, t.constraints)
            groups.setdefault(gk, []).append(t)
    return list(groups.values())


def _place_group(group: list[PendingTask], pool: AgentPool, facts: PlacementFacts,
                 plan: Plan, counts: dict[str, np.ndarray]) -> None:
    task = group[0]
    job = facts.jobs.get(task.key.job, _NO_FACTS)
    if task.key.kind is TaskKind.WORKER and not job.master_running:
        _veto(plan, group, (Veto("master", 0, "", "master not running yet"),))
        return
    if len(pool) == 0:
        _veto(plan, group, (Veto("offers", 0, "", "no offers"),))
        return
    ctx = _context(task, pool, job, counts)
    cap = _capacity(ctx, static_mask(ctx))
    jit = rank.jitter(task.key.job, len(pool))
    score = rank.scores(ctx) + jit
    spread = task.constraints.spread_over if task.key.kind is TaskKind.WORKER else None
    if spread and pool.attr_codes(spread)[1] == [None]:
        spread = None  # no offered agent has the attribute: nothing to spread over
    if spread:
        done = _choose_spread(group, ctx, cap, score, jit, spread, job, plan)
    else:
        done = _choose_binpack(group, ctx, cap, score, jit, plan)
    if done < len(group):
        _veto(plan, group[done:], explain(ctx))


def _context(task: PendingTask, pool: AgentPool, job: JobFacts,
             counts: dict[str, np.ndarray]) -> GroupContext:
    per_agent = counts.get(task.key.job)
    if per_agent is None:
        per_agent = counts[task.key.job] = np.zeros(len(pool), dtype=np.int64)
        for agent, n in job.tasks_per_agent.items():
            i = pool.index.get(agent)
            if i is not None:
                per_agent[i] = n
    return GroupContext(
        pool=pool, task=task, p=1 if task.revocable else 0, need=milli(task.resources),
        nports=task.ports, counts=per_agent, max_per_host=task.constraints.max_per_host,
    )


def _capacity(ctx: GroupContext, ok: np.ndarray) -> np.ndarray:
    """How many more tasks of the group each agent can take."""
    pool, p = ctx.pool, ctx.p
    cap = np.full(len(pool), _BIG, dtype=np.int64)
    for d in range(4):
        if ctx.need[d] > 0:
            cap = np.minimum(cap, pool.free[p, d] // ctx.need[d])
    if ctx.nports > 0:
        cap = np.minimum(cap, pool.ports_free // ctx.nports)
    if ctx.max_per_host is not None:
        cap = np.minimum(cap, np.maximum(ctx.max_per_host - ctx.counts, 0))
    return np.where(ok, cap, 0)


def _capacity_at(ctx: GroupContext, i: int) -> int:
    pool, p = ctx.pool, ctx.p
    cap = int(_BIG)
    for d in range(4):
        if ctx.need[d] > 0:
            cap = min(cap, int(pool.free[p, d, i]) // int(ctx.need[d]))
    if ctx.nports > 0:
        cap = min(cap, int(pool.ports_free[i]) // ctx.nports)
    if ctx.max_per_host is not None:
        cap = min(cap, max(ctx.max_per_host - int(ctx.counts[i]), 0))
    return cap


def _assign(group: list[PendingTask], start: int, k: int, i: int, ctx: GroupContext,
            cap: np.ndarray, score: np.ndarray, jit: float, plan: Plan) -> None:
    pool = ctx.pool
    ports = pool.take(i, ctx.p, ctx.need, ctx.nports, k)
    ctx.counts[i] += k
    agent = pool.agent_ids[i]
    out = plan.assignments.setdefault(agent, [])
    for j in range(k):
        out.append(Assignment(task=group[start + j], agent_id=agent,
                              hostname=pool.hostnames[i], ports=ports[j],
                              revocable=ctx.p == 1))
    cap[i] = _capacity_at(ctx, i)
    score[i] = rank.score_at(ctx, i) + jit


def _choose_binpack(group: list[PendingTask], ctx: GroupContext, cap: np.ndarray,
                    score: np.ndarray, jit: np.ndarray, plan: Plan) -> int:
    done = 0
    while done < len(group):
        masked = np.where(cap > 0, score, -np.inf)
        i = int(np.argmax(masked))
        if cap[i] <= 0:
            break
        k = int(min(cap[i], len(group) - done))
        _assign(group, done, k, i, ctx, cap, score, float(jit[i]), plan)
        done += k
    return done


def _choose_spread(group: list[PendingTask], ctx: GroupContext, cap: np.ndarray,
                   score: np.ndarray, jit: np.ndarray, attr: str, job: JobFacts,
                   plan: Plan) -> int:
    """Each task to the least-used attribute value among the agents that can take it (the
    lowest code on a tie), and within the value to the agent with the best score less
    ``_HOST_SPREAD`` per task of the job already there (the lowest index on a tie).

    Only the best candidates of each value are kept, in a heap per value (``_Market``):
    the choice is the same as scanning every agent for every task, without the scan. A
    value's heap is refilled from the arrays when it runs dry, or when its best entry falls
    below the best agent it left out (only the agent just chosen changes, and a task on
    it lowers its key by ``_HOST_SPREAD``, below every agent without one)."""
    codes, table = ctx.pool.attr_codes(attr)
    # Agents lacking the attribute form their own bucket, used only as a last resort.
    used = [job.spread_counts.get(v, 0) if v is not None else int(_BIG) for v in table]
    if len(table) == 1:
        codes = np.zeros(len(ctx.pool), dtype=np.int64)  # one bucket: nothing to balance
    alive = np.bincount(codes[cap > 0], minlength=len(table))
    markets = [_Market(m) for m in range(len(table))]
    done = 0
    while done < len(group):
        present = [m for m in range(len(table)) if alive[m] > 0]
        if not present:
            break
        code = min(present, key=lambda m: (used[m], m))
        i = markets[code].best(ctx, cap, score, codes, len(group) - done)
        _assign(group, done, 1, i, ctx, cap, score, float(jit[i]), plan)
        if cap[i] > 0:
            markets[code].push(ctx, score, i)
        else:
            alive[code] -= 1
        used[code] += 1
        done += 1
    return done


class _Market:
    """The best candidate agents of one attribute value, keyed by their spread score."""

    __slots__ = ("code", "floor", "heap")

    def __init__(self, code: int) -> None:
        self.code = code
        self.heap: list[tuple[float, int]] = []     # (-key, agent index)
        self.floor = -math.inf                      # best key among agents left out

    @staticmethod
    def key(ctx: GroupContext, score: np.ndarray, i: int) -> float:
        return float(score[i]) - _HOST_SPREAD * float(ctx.counts[i])

    def push(self, ctx: GroupContext, score: np.ndarray, i: int) -> None:
        heapq.heappush(self.heap, (-self.key(ctx, score, i), i))

    def best(self, ctx: GroupContext, cap: np.ndarray, score: np.ndarray,
             codes: np.ndarray, want: int) -> int:
        """The agent with the best key among the value's candidates (cap > 0)."""
        while True:
            while self.heap:
                neg, i = self.heap[0]
                if cap[i] > 0 and -neg == self.key(ctx, score, i):
                    break
                heapq.heappop(self.heap)               # stale: taken, or its key changed
            if self.heap and -self.heap[0][0] >= self.floor:
                return heapq.heappop(self.heap)[1]
            self._refill(ctx, cap, score, codes, want)

    def _refill(self, ctx: GroupContext, cap: np.ndarray, score: np.ndarray,
                codes: np.ndarray, want: int) -> None:
        idx = np.nonzero((codes == self.code) & (cap > 0))[0]
        keys = score[idx] - _HOST_SPREAD * ctx.counts[idx]
        k = min(len(idx), want + 1)
        if k < len(idx):
            part = np.argpartition(-keys, k)
            top, rest = part[:k], part[k:]
            self.floor = float(keys[rest].max())
        else:
            top = np.arange(len(idx))
            self.floor = -math.inf
        self.heap = [(-float(keys[j]), int(idx[j])) for j in top]
        heapq.heapify(self.heap)


def _veto(plan: Plan, tasks: Sequence[PendingTask], vetoes: tuple[Veto, ...]) -> None:
    for t in tasks:
        plan.vetoes[t.key] = vetoes
