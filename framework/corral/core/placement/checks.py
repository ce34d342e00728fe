"""Feasibility checkers: each says, for every agent at once, whether a task group fits.

A checker returns a boolean mask over the round's agents (None when it does not apply to
the group) and, for any vetoed agent, a reason in words. The stack runs them in the
order of ``CHECKS``; the first checker that vetoes an agent is the reason reported for
it, so "why is my worker pending?" has a concrete answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from corral.core.model import TaskKind
from corral.core.placement.pool import DIMS, AgentPool
from corral.core.placement.types import PendingTask, Veto


@dataclass(slots=True)
class GroupContext:
    """One group of identical pending tasks of a job, and its running tallies."""

    pool: AgentPool
    task: PendingTask              # representative (all tasks of the group are identical)
    p: int                         # 0: non-revocable pool, 1: revocable pool
    need: np.ndarray               # milli-units per task
    nports: int
    counts: np.ndarray             # the job's tasks per agent (existing + this round)
    max_per_host: int | None


def _fmt(milli: int) -> str:
    return f"{milli / 1000:g}"


def _agent(ctx: GroupContext, i: int) -> str:
    return ctx.pool.agent_ids[i]


# --- static checks (do not change as tasks are placed) -------------------------------

def draining_ok(ctx: GroupContext) -> np.ndarray | None:
    return ~ctx.pool.draining


def draining_reason(ctx: GroupContext, i: int) -> str:
    at = min(ctx.pool.drain_at[i], ctx.pool.unavailable_at[i])
    return f"agent {_agent(ctx, i)} draining (unavailable at {at:.0f})"


def attributes_ok(ctx: GroupContext) -> np.ndarray | None:
    attrs = ctx.task.constraints.attributes
    if not attrs:
        return None
    ok = np.ones(len(ctx.pool), dtype=bool)
    for name, value in attrs:
        ok &= ctx.pool.attr_mask(name, value)
    return ok


def attributes_reason(ctx: GroupContext, i: int) -> str:
    have = ctx.pool.attrs[i]
    for name, value in ctx.task.constraints.attributes:
        got = have.get(name)
        if got != value:
            shown = f"{name}={got}" if got is not None else f"{name} missing"
            return f"attribute {shown}, need {value} (agent {_agent(ctx, i)})"
    return f"attributes do not match on agent {_agent(ctx, i)}"


def tier_ok(ctx: GroupContext) -> np.ndarray | None:
    # An agent must offer the pool the task may use; Mesos forbids mixing the two.
    return ctx.pool.has_pool[ctx.p]


def tier_reason(ctx: GroupContext, i: int) -> str:
    if ctx.p == 1:
        return f"revocable tier needs revocable resources (agent {_agent(ctx, i)} has none)"
    if ctx.task.key.kind is TaskKind.MASTER:
        return f"masters never use revocable resources (agent {_agent(ctx, i)})"
    return (f"{ctx.task.tier.value} tier never uses revocable resources "
            f"(agent {_agent(ctx, i)} offers only revocable)")


# --- dynamic checks (placements this round change them) -------------------------------

def max_per_host_ok(ctx: GroupContext) -> np.ndarray | None:
    if ctx.max_per_host is None:
        return None
    return ctx.counts < ctx.max_per_host


def max_per_host_reason(ctx: GroupContext, i: int) -> str:
    return f"max_per_host {ctx.max_per_host} reached on agent {_agent(ctx, i)}"


def _dim_check(d: int) -> tuple[Callable[[GroupContext], np.ndarray | None],
                                Callable[[GroupContext, int], str]]:
    def ok(ctx: GroupContext) -> np.ndarray | None:
        if ctx.need[d] <= 0:
            return None
        return ctx.pool.free[ctx.p, d] >= ctx.need[d]

    def reason(ctx: GroupContext, i: int) -> str:
        kind = "revocable " if ctx.p == 1 else ""
        return (f"insufficient {kind}{DIMS[d]} on agent {_agent(ctx, i)} "
                f"(need {_fmt(int(ctx.need[d]))}, have {_fmt(int(ctx.pool.free[ctx.p, d, i]))})")

    return ok, reason


def ports_ok(ctx: GroupContext) -> np.ndarray | None:
    if ctx.nports <= 0:
        return None
    return ctx.pool.ports_free >= ctx.nports


def ports_reason(ctx: GroupContext, i: int) -> str:
    have = int(ctx.pool.ports_free[i])
    if have == 0:
        return f"no ports on agent {_agent(ctx, i)}"
    return f"not enough ports on agent {_agent(ctx, i)} (need {ctx.nports}, have {have})"


Check = tuple[str, Callable[[GroupContext], np.ndarray | None], Callable[[GroupContext, int], str]]

STATIC_CHECKS: tuple[Check, ...] = (
    ("draining", draining_ok, draining_reason),
    ("attributes", attributes_ok, attributes_reason),
    ("tier", tier_ok, tier_reason),
)
CHECKS: tuple[Check, ...] = (
    *STATIC_CHECKS,
    ("max_per_host", max_per_host_ok, max_per_host_reason),
    *((f"resources.{DIMS[d]}", *_dim_check(d)) for d in range(4)),
    ("ports", ports_ok, ports_reason),
)


def static_mask(ctx: GroupContext) -> np.ndarray:
    ok = np.ones(len(ctx.pool), dtype=bool)
    for _, check, _ in STATIC_CHECKS:
        m = check(ctx)
        if m is not None:
            ok &= m
    return ok


def explain(ctx: GroupContext) -> tuple[Veto, ...]:
    """Why no agent can take another task of this group: each agent is charged to the
    first check that rules it out; one ``Veto`` per check, with a count and an example."""
    alive = np.ones(len(ctx.pool), dtype=bool)
    vetoes: list[Veto] = []
    for name, check, reason in CHECKS:
        ok = check(ctx)
        if ok is None:
            continue
        bad = alive & ~ok
        count = int(bad.sum())
        if count:
            i = int(np.argmax(bad))
            vetoes.append(Veto(name, count, _agent(ctx, i), reason(ctx, i)))
        alive &= ok
        if not alive.any():
            break
    return tuple(vetoes) if vetoes else (Veto("capacity", len(ctx.pool), "",
                                               "no agent can take it"),)
