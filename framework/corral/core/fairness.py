"""Weighted DRF across roles, with quotas and protected demand; preemption choice.

Vocabulary:

* *role*: the tenant fairness is computed over. ``RolePolicy`` gives its *weight*, its
  *guarantee* (resources it gets regardless of share, if it asks) and its *limit* (a hard
  cap it never exceeds).
* *segment*: a run of identical *units* a role asks for, in the role's priority order
  (e.g. "job A's master", "job A's 4 minimum workers", "job B's 12 extra workers"). A role
  is always granted a *prefix* of its segments, which is how priorities within a role hold.
* *protected* units are granted ahead of fair share (deadline needs), still within limit.
* *share*: a role's dominant share of capacity divided by its weight (weighted DRF).
* *level*: progressive filling raises every role's share to a common level; a role stops
  at its demand, its limit, or when the cluster is full.

``allocate`` finds the highest level at which everything fits by bisection over the
level (each evaluation is O(roles * log segments)), then finishes with heap-based
progressive filling one unit at a time for the little that bisection leaves; the whole
pass is O(roles log roles + segments) instead of O(units * roles).

``choose_victims`` picks workers to preempt: revocable before preemptible before
preferred, preferred never below its role's guarantee, least work lost first.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from corral.core.model import Tier
from corral.core.resources import Resources

Vec = tuple[float, float, float, float]
INF = math.inf
_EPS = 1e-6
_BISECT_ROUNDS = 24


@dataclass(frozen=True, slots=True)
class RolePolicy:
    """Fairness settings of one role. ``limit`` None means no hard cap."""

    weight: float = 1.0
    guarantee: Resources = Resources()
    limit: Resources | None = None


DEFAULT_ROLE = RolePolicy()


class Segment(NamedTuple):
    """``count`` units of ``unit`` for ``job``, in role priority order.

    A NamedTuple rather than a frozen dataclass: a pass builds thousands of these and
    tuple construction is several times cheaper; it is just as immutable.
    """

    job: str
    unit: Resources
    count: int
    protected: bool = False


@dataclass(frozen=True, slots=True)
class RoleAllocation:
    """What a role was granted: units per job, resources, share, and what stopped it."""

    granted: Mapping[str, int]
    resources: Resources
    share: float  # weighted dominant share of the grant
    stopped_by: str | None  # None (got its demand) | "quota" | "share"


def vec(r: Resources) -> Vec:
    return (r.cpus, r.mem, r.disk, r.gpus)


def to_res(v: Vec) -> Resources:
    return Resources(*(max(0.0, x) for x in v))


def _fits(a: Vec, b: Vec) -> bool:
    return (a[0] <= b[0] + _EPS and a[1] <= b[1] + _EPS
            and a[2] <= b[2] + _EPS and a[3] <= b[3] + _EPS)


class _RoleLadder:
    """One role's demand as cumulative boundaries, for fast 'how many units fit' queries."""

    __slots__ = ("cap", "counts", "cum", "fixed_n", "hi", "lo", "name", "segs", "shares",
                 "ucum", "units", "w")

    def __init__(self, name: str, segs: Sequence[Segment], pol: RolePolicy, cap: Vec) -> None:
        self.name = name
        self.segs = segs
        self.w = pol.weight if pol.weight > 0 else 1.0
        self.cap = cap
        self.units: list[Vec] = [vec(s.unit) for s in segs]
        self.counts = [max(0, s.count) for s in segs]
        cum: list[Vec] = [(0.0, 0.0, 0.0, 0.0)]
        ucum = [0]
        for u, n in zip(self.units, self.counts, strict=True):
            c = cum[-1]
            cum.append((c[0] + u[0] * n, c[1] + u[1] * n, c[2] + u[2] * n, c[3] + u[3] * n))
            ucum.append(ucum[-1] + n)
        self.cum = cum
        self.ucum = ucum
        self.shares = [self._share(c) for c in cum] if len(cum) > 1 else [0.0]
        demand = ucum[-1]
        limit = vec(pol.limit) if pol.limit is not None else (INF, INF, INF, INF)
        # A unit needing a dimension the cluster lacks can never be placed; treat it as a
        # limit so the ladder stops there instead of asking for the impossible.
        limit = tuple(min(lim, c) for lim, c in zip(limit, cap, strict=True))
        in_limit = self.units_under(limit)
        protected = 0
        for s in segs:
            if not s.protected:
                break
            protected += max(0, s.count)
        floor = max(self.units_under(vec(pol.guarantee)), protected)
        self.hi = min(demand, in_limit)
        self.lo = min(floor, self.hi)
        self.fixed_n = self.lo

    def _share(self, v: Vec) -> float:
        cap = self.cap
        s = 0.0
        for d in range(4):
            x = v[d]
            if x > _EPS:
                c = cap[d]
                if c <= 0:
                    return INF
                if x / c > s:
                    s = x / c
        return s / self.w

    def units_under(self, bound: Vec) -> int:
        """Largest prefix (in units) whose cumulative resources fit ``bound``."""
        cum = self.cum
        lo, hi = 0, len(cum) - 1
        while lo < hi:  # last boundary that fits; boundaries are monotone
            mid = (lo + hi + 1) // 2
            if _fits(cum[mid], bound):
                lo = mid
            else:
                hi = mid - 1
        return self.ucum[lo] + self._within(lo, bound)

    def _within(self, k: int, bound: Vec) -> int:
        if k >= len(self.units):
            return 0
        u, c = self.units[k], self.cum[k]
        m = self.counts[k]
        for d in range(4):
            if u[d] > 0 and bound[d] != INF:
                m = min(m, math.floor((bound[d] - c[d] + _EPS) / u[d]))
        return max(0, m)

    def units_at_level(self, s: float) -> int:
        """Units of the share prefix at level ``s`` (the caller clamps to its bounds)."""
        if s == INF:
            return self.ucum[-1]
        k = bisect_right(self.shares, s + 1e-12) - 1
        sw = s * self.w
        bound = (sw * self.cap[0], sw * self.cap[1], sw * self.cap[2], sw * self.cap[3])
        return self.ucum[k] + self._within(k, bound)

    def resources_at(self, n: int) -> Vec:
        k = bisect_right(self.ucum, n) - 1
        if k >= len(self.units):
            return self.cum[-1]
        c, u, m = self.cum[k], self.units[k], n - self.ucum[k]
        return (c[0] + u[0] * m, c[1] + u[1] * m, c[2] + u[2] * m, c[3] + u[3] * m)

    def unit_at(self, n: int) -> Vec:
        """Resources of unit number ``n`` (0-based) in priority order."""
        return self.units[bisect_right(self.ucum, n) - 1]

    def granted_by_job(self, n: int) -> dict[str, int]:
        out: dict[str, int] = {}
        left = n
        for s, cnt in zip(self.segs, self.counts, strict=True):
            take = min(cnt, left)
            out[s.job] = out.get(s.job, 0) + take
            left -= take
        return out


def allocate(
    demands: Mapping[str, Sequence[Segment]], capacity: Resources,
    roles: Mapping[str, RolePolicy], default: RolePolicy = DEFAULT_ROLE,
) -> dict[str, RoleAllocation]:
    """Weighted DRF allocation of ``capacity`` over roles' prioritised demands."""
    cap = vec(capacity)
    ladders = [_RoleLadder(r, segs, roles.get(r, default), cap)
               for r, segs in sorted(demands.items())]
    n = _fill(ladders, cap)
    out: dict[str, RoleAllocation] = {}
    for lad, k in zip(ladders, n, strict=True):
        res = lad.resources_at(k)
        stopped = None
        if k < lad.ucum[-1]:
            stopped = "quota" if k >= lad.hi else "share"
        out[lad.name] = RoleAllocation(lad.granted_by_job(k), to_res(res), lad._share(res),
                                       stopped)
    return out


def _total(ladders: Sequence[_RoleLadder], n: Sequence[int]) -> Vec:
    t = [0.0, 0.0, 0.0, 0.0]
    for lad, k in zip(ladders, n, strict=True):
        r = lad.resources_at(k)
        t[0] += r[0]
        t[1] += r[1]
        t[2] += r[2]
        t[3] += r[3]
    return (t[0], t[1], t[2], t[3])


def _fill(ladders: Sequence[_RoleLadder], cap: Vec) -> list[int]:
    """Units per role: bisection on the common level, then unit-by-unit progressive filling.

    If guarantees and deadline needs alone oversubscribe the cluster, those protected
    units are shared out first by the same method and nothing else is granted.
    """
    full = [lad.hi for lad in ladders]
    if _fits(_total(ladders, full), cap):
        return full
    floor = [lad.lo for lad in ladders]
    if not _fits(_total(ladders, floor), cap):
        zero = [0] * len(ladders)
        return _progressive(ladders, _bisect(ladders, cap, zero, floor), floor, cap)
    return _progressive(ladders, _bisect(ladders, cap, floor, full), full, cap)


def _bisect(ladders: Sequence[_RoleLadder], cap: Vec, lo: list[int], hi: list[int]) -> list[int]:
    """The highest common level (to bisection precision) at which all roles fit."""
    lo_s = 0.0
    finite = [s for lad in ladders for s in lad.shares if s != INF]
    hi_s = max(finite, default=1.0)
    best = lo
    for _ in range(_BISECT_ROUNDS):
        mid = (lo_s + hi_s) / 2
        n = [min(h, max(low, lad.units_at_level(mid)))
             for lad, low, h in zip(ladders, lo, hi, strict=True)]
        if _fits(_total(ladders, n), cap):
            lo_s, best = mid, n
        else:
            hi_s = mid
    return list(best)


def _progressive(
    ladders: Sequence[_RoleLadder], n: list[int], upto: Sequence[int], cap: Vec,
) -> list[int]:
    """Give one unit at a time to the role with the lowest share until nothing fits."""
    used = list(_total(ladders, n))
    heap: list[tuple[float, int]] = [
        (lad._share(lad.resources_at(n[i])), i)
        for i, lad in enumerate(ladders) if n[i] < upto[i]
    ]
    heapq.heapify(heap)
    budget = sum(upto) + len(ladders)  # hard bound on iterations
    while heap and budget > 0:
        budget -= 1
        _, i = heapq.heappop(heap)
        lad = ladders[i]
        u = lad.unit_at(n[i])
        nxt = (used[0] + u[0], used[1] + u[1], used[2] + u[2], used[3] + u[3])
        if not _fits(nxt, cap):
            continue  # DRF: a role whose next unit does not fit is saturated
        used = list(nxt)
        n[i] += 1
        if n[i] < upto[i]:
            heapq.heappush(heap, (lad._share(lad.resources_at(n[i])), i))
    return n


# ---------------------------------------------------------------- preemption victims

TIER_ORDER = {Tier.REVOCABLE: 0, Tier.PREEMPTIBLE: 1, Tier.PREFERRED: 2}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running worker that could be preempted."""

    task_id: str
    job: str
    role: str
    tier: Tier
    resources: Resources
    checkpoint_age_s: float | None
    index: int = 0


def victim_order(c: Candidate) -> tuple[int, float, int]:
    """Tier first, then least work lost (most recent checkpoint), then highest index."""
    age = c.checkpoint_age_s if c.checkpoint_age_s is not None else INF
    return (TIER_ORDER[c.tier], age, -c.index)


def choose_victims(
    candidates: Sequence[Candidate], need: Resources, role_alloc: Resources,
    guarantee: Resources, max_victims: int, per_job_max: Mapping[str, int],
) -> list[Candidate]:
    """Victims of one role, in victim order, until ``need`` is freed or the budget ends.

    At most ``per_job_max[job]`` victims per job (its workers above its fair target), and
    a preferred task is skipped if the role would no longer cover its ``guarantee``.
    """
    chosen: list[Candidate] = []
    alloc = vec(role_alloc)
    want = list(vec(need))
    g = vec(guarantee)
    taken: dict[str, int] = {}
    for c in sorted(candidates, key=victim_order):
        if len(chosen) >= max_victims or all(x <= _EPS for x in want):
            break
        if taken.get(c.job, 0) >= per_job_max.get(c.job, 0):
            continue
        r = vec(c.resources)
        after = (alloc[0] - r[0], alloc[1] - r[1], alloc[2] - r[2], alloc[3] - r[3])
        if c.tier is Tier.PREFERRED and not _fits(g, after):
            continue
        if not any(x > _EPS and w > _EPS for x, w in zip(r, want, strict=True)):
            continue  # frees nothing anyone needs
        chosen.append(c)
        taken[c.job] = taken.get(c.job, 0) + 1
        alloc = after
        want = [w - x for w, x in zip(want, r, strict=True)]
    return chosen
