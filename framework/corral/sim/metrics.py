"""Fairness yardsticks for the simulator, independent of any policy under test.

* ``entitlements``: each role's weighted max-min fair dominant share given its demand
  (fluid water-filling: no task granularity, no placement), the ideal a policy is
  measured against.
* ``jain``: Jain's fairness index of a list of normalised allocations, 1.0 when equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def entitlements(demand: Mapping[str, float], weight: Mapping[str, float]) -> dict[str, float]:
    """Weighted water-filling of a unit capacity over dominant-share demands."""
    left = 1.0
    active = {r for r, d in demand.items() if d > 0}
    out = {r: 0.0 for r in demand}
    while active and left > 1e-12:
        total_w = sum(weight[r] for r in active)
        # Roles whose remaining demand is below their slice are satisfied outright.
        done = {r for r in active if demand[r] - out[r] <= left * weight[r] / total_w}
        if not done:
            for r in active:
                out[r] += left * weight[r] / total_w
            break
        for r in done:
            left -= demand[r] - out[r]
            out[r] = demand[r]
        active -= done
    return out


def jain(xs: Sequence[float]) -> float:
    if not xs:
        return 1.0
    s, sq = sum(xs), sum(x * x for x in xs)
    return 1.0 if sq == 0 else s * s / (len(xs) * sq)
