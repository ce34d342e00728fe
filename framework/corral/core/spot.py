"""The over-provisioning rule: how many spare workers a job keeps against machine loss.

The rule (the one Mist Systems runs production by): look at the terminations the job has
seen, find the most that fell within any window as long as the *replacement lead time*
(how long a lost worker takes to be replaced), and keep that many times a *safety
multiple* as spare workers, so the job keeps its desired strength while replacements
start. Terminations older than the *horizon* no longer count, so a quiet spell lets the
spares go.

Vocabulary: a *termination* is a loss of one of the job's tasks to the infrastructure or
a notice to move it (``accounting`` records the same events). The *lead time* is the
longest recovery seen within the horizon, or ``default_lead_seconds`` before any was
seen (and never less than ``min_lead_seconds``). Pure functions of the inputs; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverProvision:
    """Settings of the rule. ``multiple`` 0 turns over-provisioning off."""

    multiple: float = 1.0
    horizon_seconds: float = 900.0
    default_lead_seconds: float = 30.0
    min_lead_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not (self.multiple >= 0 and math.isfinite(self.multiple)):
            raise ValueError(f"over-provision multiple must be >= 0 (got {self.multiple})")
        if not self.horizon_seconds > 0:
            raise ValueError(f"over-provision horizon must be > 0 (got {self.horizon_seconds})")


@dataclass(frozen=True, slots=True)
class Spare:
    """The rule's answer for one job: how many spare workers, and why, in words."""

    workers: int
    peak: int                 # most terminations within one lead time
    lead_seconds: float
    reason: str


def peak_in_window(times: Sequence[float], window: float) -> int:
    """The most ``times`` within any closed interval of length ``window`` (two-pointer
    sweep over the sorted times)."""
    ts = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def lead_time(recoveries: Sequence[float], rule: OverProvision) -> float:
    """The replacement lead time: the longest recent recovery, else the default."""
    lead = max(recoveries) if recoveries else rule.default_lead_seconds
    return max(rule.min_lead_seconds, lead)


def spare_workers(terminations: Sequence[float], recoveries: Sequence[float], now: float,
                  rule: OverProvision, room: int) -> Spare:
    """Spare workers for a job that saw ``terminations`` (times) and whose recent recoveries
    took ``recoveries`` seconds; ``room`` is how many more workers its spec allows."""
    recent = [t for t in terminations if now - t <= rule.horizon_seconds]
    lead = lead_time(recoveries, rule)
    peak = peak_in_window(recent, lead)
    want = math.ceil(peak * rule.multiple - 1e-9) if peak else 0
    workers = max(0, min(want, room))
    if rule.multiple == 0:
        reason = "over-provisioning off"
    elif not recent:
        reason = f"no terminations in the last {rule.horizon_seconds:g}s"
    else:
        reason = (f"{peak} termination(s) within a {lead:g}s lead time x {rule.multiple:g}"
                  f" = {want} spare")
        if workers < want:
            reason += f" (capped at {workers} by workers.max)"
    return Spare(workers=workers, peak=peak, lead_seconds=lead, reason=reason)
