"""Rankers: among feasible agents, which one a task of a group should go to.

Scores are higher-is-better arrays over the round's agents:
- bin-pack (best fit): prefer the agent left with the least free cpus and memory after
  the task, so large holes stay open for large tasks;
- avoid unavailability: an agent with a scheduled maintenance window (a spot notice)
  scores far below every other, so it is used only when nothing else fits;
- spreading over an attribute is done by the stack (pick the least-used value first),
  with these scores choosing the agent within the value;
- a tiny seeded jitter breaks ties reproducibly (seeded from the job key), so equal
  agents are not always filled in offer order by every job.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from corral.core.placement.checks import GroupContext

UNAVAILABILITY_PENALTY = 1e3
_JITTER = 1e-9


# One fixed table of tiny random values; a job's jitter is a window of it. Seeding a new
# generator per placement group cost ~25 us, more than the rest of a small group's scan.
_TABLE = np.random.default_rng(0x5EED).random(1 << 17) * _JITTER
_TABLE.flags.writeable = False


def jitter(job: str, n: int) -> np.ndarray:
    """``n`` tie-breakers for ``job`` (read-only): the same for the same job and round size,
    different between jobs (the window's offset is seeded from the job key)."""
    seed = zlib.crc32(job.encode())
    if n > len(_TABLE) // 2:
        return np.random.default_rng(seed).random(n) * _JITTER
    start = seed % (len(_TABLE) - n + 1)
    return _TABLE[start:start + n]


def scores(ctx: GroupContext) -> np.ndarray:
    """Bin-pack score minus the unavailability penalty, for every agent."""
    pool, p = ctx.pool, ctx.p
    left = (pool.free[p, :2].astype(np.float64) - ctx.need[:2, None]) / pool.scale[p, :2, None]
    s = -left.sum(axis=0)
    return s - np.where(np.isfinite(pool.unavailable_at), UNAVAILABILITY_PENALTY, 0.0)


def score_at(ctx: GroupContext, i: int) -> float:
    """``scores(ctx)[i]`` recomputed for one agent after placements changed it."""
    pool, p = ctx.pool, ctx.p
    left = 0.0
    for d in range(2):
        left += (float(pool.free[p, d, i]) - float(ctx.need[d])) / float(pool.scale[p, d])
    penalty = UNAVAILABILITY_PENALTY if math.isfinite(pool.unavailable_at[i]) else 0.0
    return -left - penalty
