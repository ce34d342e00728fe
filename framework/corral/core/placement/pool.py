"""The offers of one placement round, merged per agent into arrays placement can scan fast.

Mesos lets one ACCEPT use several offers of the same agent, so offers are merged per
agent. Amounts are kept as int64 milli-units (Mesos scalars have three decimals), which
makes "fits" exact and lets a whole round's feasibility be a few numpy operations instead
of a Python loop per (task, offer). Two pools per agent: index 0 is non-revocable, 1 is
revocable; a task takes from exactly one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from corral.core.model import Offer
from corral.core.resources import Resources

DIMS = ("cpus", "mem", "disk", "gpus")


def milli(r: Resources) -> np.ndarray:
    return np.array([round(r.cpus * 1000), round(r.mem * 1000), round(r.disk * 1000),
                     round(r.gpus * 1000)], dtype=np.int64)


class AgentPool:
    """Free resources and ports per agent for one round; mutated as tasks are placed."""

    def __init__(self, offers: Sequence[Offer], draining: Mapping[str, float],
                 now: float) -> None:
        index: dict[str, int] = {}
        merged: list[list[Offer]] = []
        for o in offers:
            i = index.get(o.agent_id)
            if i is None:
                index[o.agent_id] = len(merged)
                merged.append([o])
            else:
                merged[i].append(o)
        n = len(merged)
        self.index = index
        self.agent_ids = [m[0].agent_id for m in merged]
        self.hostnames = [m[0].hostname for m in merged]
        self.offer_ids = [tuple(o.id for o in m) for m in merged]
        self.attrs = [dict(m[0].attributes) for m in merged]
        # One row per agent of summed amounts (plain floats), turned into milli-units in
        # one numpy pass: building an array per offer dominated large rounds.
        plain: list[tuple[float, float, float, float]] = []
        revocable: list[tuple[float, float, float, float]] = []
        self.port_ranges: list[list[list[int]]] = []
        ports_free: list[int] = []
        unavailable: list[float] = []
        for m in merged:
            if len(m) == 1:
                o = m[0]
                r, v = o.resources, o.revocable
                plain.append((r.cpus, r.mem, r.disk, r.gpus))
                revocable.append((v.cpus, v.mem, v.disk, v.gpus))
                ranges = [[lo, hi] for lo, hi in o.ports if hi >= lo]
                at = o.unavailable_at if o.unavailable_at is not None else math.inf
            else:
                plain.append(_sum(o.resources for o in m))
                revocable.append(_sum(o.revocable for o in m))
                ranges = [[lo, hi] for o in m for lo, hi in o.ports if hi >= lo]
                at = min((o.unavailable_at for o in m if o.unavailable_at is not None),
                         default=math.inf)
            ranges = _merge(ranges) if len(ranges) > 1 else ranges
            self.port_ranges.append(ranges)
            free = 0
            for lo, hi in ranges:
                free += hi - lo + 1
            ports_free.append(free)
            unavailable.append(at)
        self.free = np.zeros((2, 4, n), dtype=np.int64)
        if n:
            self.free[0] = np.rint(np.array(plain, dtype=np.float64).T * 1000)
            self.free[1] = np.rint(np.array(revocable, dtype=np.float64).T * 1000)
        self.ports_free = np.array(ports_free, dtype=np.int64)
        unavailable_at = np.array(unavailable, dtype=np.float64)
        self.has_pool: np.ndarray = np.any(self.free, axis=1)  # (2, n): offered anything
        self.unavailable_at = unavailable_at
        self.drain_at = np.array([draining.get(a, math.inf) for a in self.agent_ids],
                                 dtype=np.float64)
        # Draining: an inverse offer arrived, or the maintenance window already began.
        self.draining = np.isfinite(self.drain_at) | (unavailable_at <= now)
        # Normalisers for bin-packing scores: the largest free amount per dimension.
        self.scale = np.maximum(self.free.max(axis=2, initial=0), 1).astype(np.float64)
        self._attr_cache: dict[tuple[str, str], np.ndarray] = {}
        self._codes_cache: dict[str, tuple[np.ndarray, list[str | None]]] = {}

    def __len__(self) -> int:
        return len(self.agent_ids)

    def attr_mask(self, name: str, value: str) -> np.ndarray:
        key = (name, value)
        m = self._attr_cache.get(key)
        if m is None:
            m = np.array([a.get(name) == value for a in self.attrs], dtype=bool)
            self._attr_cache[key] = m
        return m

    def attr_codes(self, name: str) -> tuple[np.ndarray, list[str | None]]:
        """Each agent's value of attribute ``name`` as an int code, and the code table."""
        hit = self._codes_cache.get(name)
        if hit is None:
            table: list[str | None] = []
            lookup: dict[str | None, int] = {}
            codes = np.empty(len(self.attrs), dtype=np.int64)
            for i, a in enumerate(self.attrs):
                v = a.get(name)
                c = lookup.get(v)
                if c is None:
                    c = lookup[v] = len(table)
                    table.append(v)
                codes[i] = c
            hit = self._codes_cache[name] = (codes, table)
        return hit

    def take(self, i: int, pool: int, need: np.ndarray, nports: int,
             k: int) -> list[tuple[int, ...]]:
        """Take ``k`` tasks' worth from agent ``i``; return each task's ports."""
        self.free[pool, :, i] -= need * k
        self.ports_free[i] -= nports * k
        return [self._take_ports(i, nports) for _ in range(k)]

    def _take_ports(self, i: int, n: int) -> tuple[int, ...]:
        got: list[int] = []
        ranges = self.port_ranges[i]
        while len(got) < n and ranges:
            lo, hi = ranges[0]
            want = min(n - len(got), hi - lo + 1)
            got.extend(range(lo, lo + want))
            if lo + want > hi:
                ranges.pop(0)
            else:
                ranges[0][0] = lo + want
        return tuple(got)


def _sum(rs: Iterable[Resources]) -> tuple[float, float, float, float]:
    c = m = d = g = 0.0
    for r in rs:
        c, m, d, g = c + r.cpus, m + r.mem, d + r.disk, g + r.gpus
    return c, m, d, g


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted, non-overlapping port ranges: offers of one agent should hold disjoint
    ports, but a port must never be handed out twice even if they do not."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out
