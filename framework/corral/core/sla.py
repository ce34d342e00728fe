"""Deadline-driven sizing: the workers a job needs to finish on time, and miss prediction.

Vocabulary:

* *remaining work*: work units left until the job is done (measured by the job).
* *throughput*: work units one worker clears per second (measured).
* *margin*: a safety fraction added to the remaining work, because throughput is noisy
  and replacement workers need time to restore a checkpoint.
* *startup*: seconds a new worker needs before it contributes (launch + restore).
* *deadline risk*: a human-readable reason the job is predicted to miss, or None.

Pure: ``now`` is an argument and nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlaConfig:
    margin: float = 0.15
    startup_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SlaNeed:
    """Workers a deadline job needs (None: cannot be computed) and a risk if already known."""

    workers: int | None
    risk: str | None


def sla_need(
    remaining_work: float, throughput_per_worker: float, deadline: float, now: float,
    max_workers: int, cfg: SlaConfig,
) -> SlaNeed:
    """Workers needed to finish ``remaining_work`` by ``deadline`` with the margin.

    If even ``max_workers`` cannot make it, the need is capped at the maximum and the risk
    says so; the job still gets as many as the policy can give, since finishing late is
    better than finishing later.
    """
    if not (math.isfinite(remaining_work) and math.isfinite(throughput_per_worker)):
        return SlaNeed(None, None)
    if remaining_work <= 0:
        return SlaNeed(0, None)
    if throughput_per_worker <= 0:
        return SlaNeed(None, None)
    time_left = deadline - now - cfg.startup_s
    if time_left <= 0:
        return SlaNeed(max_workers, "deadline passed or too close to start workers")
    ratio = remaining_work * (1 + cfg.margin) / (throughput_per_worker * time_left)
    needed = max(1, math.ceil(ratio - 1e-9)) if ratio < max_workers + 1 else max_workers + 1
    if needed > max_workers:
        return SlaNeed(
            max_workers,
            f"needs {needed if ratio <= max_workers else f'more than {max_workers}'} workers"
            f" to finish on time, job maximum is {max_workers}",
        )
    return SlaNeed(needed, None)


def predicted_finish(
    remaining_work: float, throughput_per_worker: float, workers: int, now: float,
) -> float | None:
    """When the job finishes at ``workers`` workers; None if it never will at that size."""
    if remaining_work <= 0:
        return now
    if workers <= 0 or throughput_per_worker <= 0:
        return None
    return now + remaining_work / (throughput_per_worker * workers)


def miss_reason(
    remaining_work: float, throughput_per_worker: float, granted: int, needed: int,
    deadline: float, now: float, why_short: str,
) -> str | None:
    """A reason the job is predicted to miss at ``granted`` workers, or None if on track.

    ``why_short`` names what held the grant below the need (quota, capacity, share).
    """
    if granted >= needed:
        return None
    finish = predicted_finish(remaining_work, throughput_per_worker, granted, now)
    if finish is not None and finish <= deadline:
        # Short of the margin but still predicted on time: not a miss yet.
        return None
    late = "never" if finish is None else f"{finish - deadline:.0f}s late"
    return f"granted {granted} of {needed} needed workers ({why_short}); predicted {late}"
