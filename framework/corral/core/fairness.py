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
level; each probe evaluates every role at once with numpy over the roles' cumulative
segment boundaries (``_Ladders``), closed-form inside a segment. Heap-based progressive
filling, one unit at a time, then hands out the little that bisection leaves. The pass
costs O(bisection rounds * segments) in array operations plus O(roles log roles) in
Python, instead of O(units * log roles) for unit-at-a-time filling.

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

import numpy as np

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
    """``units`` units of ``unit`` for ``job``, in role priority order.

    A NamedTuple rather than a frozen dataclass: a pass builds thousands of these and
    tuple construction is several times cheaper; it is just as immutable.
    """

    job: str
    unit: Resources
    units: int   # not ``count``: that would hide tuple.count
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


def to_res(v: Sequence[float]) -> Resources:
    return Resources(*(max(0.0, x) for x in v))


def _fits(a: Vec, b: Vec) -> bool:
    return (a[0] <= b[0] + _EPS and a[1] <= b[1] + _EPS
            and a[2] <= b[2] + _EPS and a[3] <= b[3] + _EPS)


class _Ladders:
    """All roles' demand as cumulative *boundaries* in numpy arrays.

    Role ``r`` owns boundaries ``bstart[r] .. bstart[r] + nseg_r``; boundary ``j`` holds the
    cumulative resources (``cum``) and units (``ucum``) of the role's first ``j`` segments,
    and ``nunit``/``ncnt`` describe the segment that follows it (zero after the last).
    "How many units of each role fit under these per-role bounds" is then a handful of
    array operations for all roles at once, which is what makes a bisection probe cheap.
    """

    def __init__(self, names: list[str], segs: list[Sequence[Segment]],
                 pols: list[RolePolicy], cap: Vec) -> None:
        nroles = len(names)
        nseg = np.array([len(x) for x in segs], dtype=np.int64)
        flat = [sg for x in segs for sg in x]
        nb = len(flat) + nroles
        self.names, self.segs, self.cap = names, segs, np.array(cap, dtype=np.float64)
        self.w = np.array([p.weight if p.weight > 0 else 1.0 for p in pols])
        self.bstart = np.concatenate(([0], np.cumsum(nseg + 1)[:-1])).astype(np.int64)
        brole = np.repeat(np.arange(nroles), nseg + 1)
        seg_role = np.repeat(np.arange(nroles), nseg)
        # Boundary index just before each segment: its position plus one per earlier role.
        seg_b = np.arange(len(flat), dtype=np.int64) + seg_role
        # Attribute access inline rather than vec(): this runs once per segment per pass.
        units = np.array([(u.cpus, u.mem, u.disk, u.gpus) for u in [sg[1] for sg in flat]],
                         dtype=np.float64).reshape(-1, 4)
        cnt = np.maximum(np.array([sg[2] for sg in flat], dtype=np.int64), 0)
        step = np.zeros((nb, 4))
        ustep = np.zeros(nb, dtype=np.int64)
        step[seg_b + 1] = units * cnt[:, None]
        ustep[seg_b + 1] = cnt
        g, ug = np.cumsum(step, axis=0), np.cumsum(ustep)
        self.cum = g - g[self.bstart[brole]]
        self.ucum = ug - ug[self.bstart[brole]]
        self.nunit = np.zeros((nb, 4))
        self.ncnt = np.zeros(nb, dtype=np.int64)
        self.nunit[seg_b] = units
        self.ncnt[seg_b] = cnt
        self.brole, self.seg_role, self.seg_b, self.cnt = brole, seg_role, seg_b, cnt
        self.demand = self.ucum[self.bstart + nseg]
        # A dimension the cluster lacks acts as a zero limit: such units can never run.
        limit = np.array([vec(p.limit) if p.limit is not None else (INF,) * 4 for p in pols]
                         ).reshape(-1, 4)
        limit = np.minimum(limit, np.where(self.cap > 0, INF, 0.0))
        self.hi = np.minimum(self.demand, self.units_under(limit))
        guar = np.array([vec(p.guarantee) for p in pols]).reshape(-1, 4)
        protected = np.array([_leading_protected(x) for x in segs], dtype=np.int64)
        self.lo = np.minimum(np.maximum(self.units_under(guar), protected), self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self.cap > 0, self.cum / np.where(self.cap > 0, self.cap, 1.0),
                             np.where(self.cum > _EPS, INF, 0.0))
        shares = ratio.max(axis=1) / self.w[brole]
        self.shares = shares
        finite = shares[np.isfinite(shares)]
        self.max_share = float(finite.max()) if finite.size else 1.0
        # Sorted keys for "which boundary is at or below n units" across all roles at once.
        self._big = int(self.ucum.max(initial=0)) + 2
        self._key = self.ucum + brole * self._big

    def units_under(self, bound: np.ndarray) -> np.ndarray:
        """Per role, the largest prefix in units whose cumulative resources fit ``bound``."""
        fits = np.all(self.cum <= bound[self.brole] + _EPS, axis=1)
        return self._prefix(fits, bound)

    def at_level(self, s: float) -> np.ndarray:
        """Units per role at weighted share level ``s`` (before clamping to lo/hi)."""
        # Boundary shares are precomputed, so "fits under the level" is one comparison.
        return self._prefix(self.shares <= s + 1e-12, s * self.w[:, None] * self.cap[None, :])

    def _prefix(self, fits: np.ndarray, bound: np.ndarray) -> np.ndarray:
        # Fitting is monotone along a role's boundaries, so the count of fitting
        # boundaries locates the last one; the next segment contributes whole units.
        k = self.bstart + np.add.reduceat(fits, self.bstart, dtype=np.int64) - 1
        nu = self.nunit[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(nu > 0, np.floor((bound - self.cum[k] + _EPS) / np.where(nu > 0, nu, 1)),
                         INF).min(axis=1)
        # All-zero units give +inf here: the whole next segment fits.
        m = np.maximum(np.minimum(m, self.ncnt[k]), 0)
        return self.ucum[k] + m.astype(np.int64)

    def resources_at(self, n: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self._key, n + np.arange(len(n)) * self._big, side="right") - 1
        return self.cum[k] + (n - self.ucum[k])[:, None] * self.nunit[k]

    def fits(self, n: np.ndarray) -> bool:
        return bool(np.all(self.resources_at(n).sum(axis=0) <= self.cap + _EPS))


def _leading_protected(segs: Sequence[Segment]) -> int:
    n = 0
    for sg in segs:
        if not sg.protected:
            break
        n += max(0, sg.units)
    return n


def allocate(
    demands: Mapping[str, Sequence[Segment]], capacity: Resources,
    roles: Mapping[str, RolePolicy], default: RolePolicy = DEFAULT_ROLE,
) -> dict[str, RoleAllocation]:
    """Weighted DRF allocation of ``capacity`` over roles' prioritised demands."""
    if not demands:
        return {}
    names = sorted(demands)
    lad = _Ladders(names, [demands[r] for r in names],
                   [roles.get(r, default) for r in names], vec(capacity))
    n = _fill(lad)
    res = lad.resources_at(n)
    take = np.clip(n[lad.seg_role] - lad.ucum[lad.seg_b], 0, lad.cnt).tolist()
    granted: list[dict[str, int]] = [{} for _ in names]
    i = 0
    for r, segs in enumerate(lad.segs):
        g = granted[r]
        for sg in segs:
            g[sg.job] = g.get(sg.job, 0) + take[i]
            i += 1
    out: dict[str, RoleAllocation] = {}
    cap = lad.cap
    for r, name in enumerate(names):
        k, v = int(n[r]), res[r]
        share = max((float(v[d] / cap[d]) for d in range(4) if cap[d] > 0), default=0.0)
        stopped = None
        if k < lad.demand[r]:
            stopped = "quota" if k >= lad.hi[r] else "share"
        out[name] = RoleAllocation(granted[r], to_res(tuple(v.tolist())),
                                   share / float(lad.w[r]), stopped)
    return out


def _fill(lad: _Ladders) -> np.ndarray:
    """Units per role: bisection on the common level, then unit-by-unit progressive filling.

    If guarantees and deadline needs alone oversubscribe the cluster, those protected
    units are shared out first by the same method and nothing else is granted.
    """
    if lad.fits(lad.hi):
        return lad.hi
    if lad.fits(lad.lo):
        lo, hi = lad.lo, lad.hi
    else:
        lo, hi = np.zeros_like(lad.lo), lad.lo
    lo_s, hi_s, best = 0.0, lad.max_share, lo
    for _ in range(_BISECT_ROUNDS):
        mid = (lo_s + hi_s) / 2
        n = np.clip(lad.at_level(mid), lo, hi)
        if lad.fits(n):
            lo_s, best = mid, n
        else:
            hi_s = mid
    return _progressive(lad, best.copy(), hi)


def _progressive(lad: _Ladders, n: np.ndarray, upto: np.ndarray) -> np.ndarray:
    """Give one unit at a time to the role with the lowest share until nothing fits."""
    held = lad.resources_at(n).tolist()
    used = [sum(h[d] for h in held) for d in range(4)]
    cap = lad.cap.tolist()
    w = lad.w.tolist()
    nunit = lad.nunit.tolist()
    bstart, key = lad.bstart.tolist(), lad._key.tolist()
    nl, up = n.tolist(), upto.tolist()

    def share(r: int) -> float:
        h = held[r]
        return max((h[d] / cap[d] for d in range(4) if cap[d] > 0), default=0.0) / w[r]

    heap = [(share(r), r) for r in range(len(nl)) if nl[r] < up[r]]
    heapq.heapify(heap)
    budget = int(sum(up)) + len(nl)  # hard bound on iterations
    while heap and budget > 0:
        budget -= 1
        _, r = heapq.heappop(heap)
        k = bisect_right(key, nl[r] + r * lad._big, lo=bstart[r]) - 1
        u = nunit[k]
        if any(used[d] + u[d] > cap[d] + _EPS for d in range(4)):
            continue  # DRF: a role whose next unit does not fit is saturated
        for d in range(4):
            used[d] += u[d]
            held[r][d] += u[d]
        nl[r] += 1
        if nl[r] < up[r]:
            heapq.heappush(heap, (share(r), r))
    return np.array(nl, dtype=np.int64)


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
