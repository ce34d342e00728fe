"""Load-driven worker targets: how many workers a job wants, and which ones to retire.

Vocabulary:

* *backlog*: work units a job reports still to do (samples, shards, steps...).
* *throughput*: work units one worker clears per second, as measured.
* *load target*: workers needed to clear the backlog within ``target_duration``.
* *dampening*: hysteresis (ignore small changes), cooldown (no change soon after the last
  one) and a maximum step per decision, so a noisy throughput does not thrash the cluster.
* *retiree*: a worker chosen for scale-down: the one that loses least (its SDK
  ``on_terminate`` hook checkpoints within the kill grace; what it did since its last
  checkpoint is otherwise done again).

Everything here is pure; the time of the last change comes in through ``ScaleMemory`` and
``now`` is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """Knobs of load-driven scaling.

    ``hysteresis``: a desired count within ``current * (1 ± hysteresis)`` keeps the current
    count; ``cooldown_up_s``/``cooldown_down_s``: minimum time since the last change before
    growing/shrinking again; ``max_step_up``/``max_step_down``: largest change per decision.
    """

    target_duration_s: float = 600.0
    hysteresis: float = 0.1
    cooldown_up_s: float = 30.0
    cooldown_down_s: float = 120.0
    max_step_up: int = 16
    max_step_down: int = 4


@dataclass(frozen=True, slots=True)
class ScaleMemory:
    """What dampening needs to remember per job between passes."""

    last_up_at: float | None = None
    last_down_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One running worker, as scale-down and victim choice see it.

    ``checkpoint_age_s``: seconds of work losing it would lose: since its last checkpoint
    or its start, whichever is later (0 before it runs; None: unknown, counted as the
    most). ``idle``: it has no work in hand right now.
    """

    task_id: str
    index: int
    idle: bool = False
    checkpoint_age_s: float | None = None


MAX_WORKERS = 1_000_000


def load_workers(backlog: float, throughput_per_worker: float, duration_s: float) -> int | None:
    """Workers needed to clear ``backlog`` within ``duration_s``; None if unmeasured.

    Without a throughput measurement we cannot size the job, so the caller keeps the
    current (or initial) count rather than guessing.
    """
    if not math.isfinite(backlog) or not math.isfinite(throughput_per_worker):
        return None
    if backlog <= 0:
        return 0
    if throughput_per_worker <= 0 or duration_s <= 0:
        return None
    ratio = backlog / (throughput_per_worker * duration_s)
    if not math.isfinite(ratio) or ratio > MAX_WORKERS:
        return MAX_WORKERS  # absurd measurements must not crash the pass; max clamps it
    # A tiny epsilon keeps an exact fit (e.g. 600/(1*600)) from rounding up to 2.
    return max(1, math.ceil(ratio - 1e-9))


def clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


@dataclass(frozen=True, slots=True)
class Dampened:
    """The outcome of dampening: the count to ask for and why it differs from ``desired``."""

    workers: int
    note: str | None  # "hysteresis" | "cooldown" | "max step" | None


def dampen(
    desired: int, current: int, memory: ScaleMemory, now: float, cfg: ScalingConfig,
) -> Dampened:
    """Apply hysteresis, cooldown and maximum step to a move from ``current`` to ``desired``.

    Bounds (min/max) are applied by the caller *after* this, so a job below its minimum
    is lifted at once regardless of cooldown.
    """
    if desired == current:
        return Dampened(current, None)
    band = cfg.hysteresis * current
    if current > 0 and abs(desired - current) <= band:
        return Dampened(current, "hysteresis")
    if desired > current:
        last = _latest(memory.last_up_at, memory.last_down_at)
        # Growing right after shrinking is the flapping we want to avoid, so cooldown_up
        # counts from either kind of change.
        if last is not None and now - last < cfg.cooldown_up_s:
            return Dampened(current, "cooldown")
        step = min(desired - current, cfg.max_step_up)
        return Dampened(current + step, "max step" if step < desired - current else None)
    last = _latest(memory.last_up_at, memory.last_down_at)
    if last is not None and now - last < cfg.cooldown_down_s:
        return Dampened(current, "cooldown")
    step = min(current - desired, cfg.max_step_down)
    return Dampened(current - step, "max step" if step < current - desired else None)


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def remember(memory: ScaleMemory, before: int, after: int, now: float) -> ScaleMemory:
    """Record a change of the job's target so the next pass can apply cooldown."""
    if after > before:
        return ScaleMemory(last_up_at=now, last_down_at=memory.last_down_at)
    if after < before:
        return ScaleMemory(last_up_at=memory.last_up_at, last_down_at=now)
    return memory


def choose_retirees(workers: Sequence[WorkerState], count: int) -> tuple[str, ...]:
    """The ``count`` workers to retire: idle ones first, then those that lose least (the
    most recent checkpoint: the least work since it), then the highest index.

    Idle first because retiring a busy worker forces it to checkpoint mid-step; least work
    lost because a retired worker's work since its last checkpoint is done again (unless
    it checkpoints on SIGTERM within its kill grace); highest index on a tie keeps the
    surviving indexes as dense as it can.
    """
    if count <= 0:
        return ()
    ordered = sorted(workers, key=lambda w: (
        not w.idle, math.inf if w.checkpoint_age_s is None else w.checkpoint_age_s,
        -w.index))
    return tuple(w.task_id for w in ordered[:count])
