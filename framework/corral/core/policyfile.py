"""Policy settings as plain data: role fairness settings and policy knobs, validated.

Owns the YAML shape both the scheduler's policy file (``corral scheduler --policy FILE``)
and the simulator's scenarios use for roles (``weight``, ``guarantee``, ``limit``) and for
the policy knobs (``preemption_budget``, ``max_step_up``, ...), and ``Reader``, which reads
plain data and collects every problem with its dotted path instead of stopping at the
first. Pure: no I/O except ``load_policy_file``, which reads one file.

A policy file::

    interval_s: 5              # seconds between policy passes
    target_duration_s: 600     # how soon a job's backlog should clear
    roles:
      - {name: research, weight: 2, guarantee: {cpus: 8, mem: 16384}}
      - {name: adhoc, limit: {cpus: 16}, quota: {jobs: 20, cpus: 64}}
      - {name: interns, budget: {amount: 50, window_s: 604800}}
    policy: {preemption_budget: 20, min_share_diff: 0.05}

Roles it does not name weigh 1 with no guarantee, no limit and no quota. A ``limit``
bounds what a role *runs* (dimensions it does not name are unbounded); a ``quota`` (the
scheduler's file only) bounds what it may *submit*: ``jobs`` live at once and the total of
their largest footprints per dimension (``core.admission``); a ``budget`` (the scheduler's
file only, with ``--prices``) bounds what it may *spend* per window: over it, the role's
new jobs are held (``core.cost``).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

from corral.core.admission import DIMENSIONS, Quota
from corral.core.cost import DEFAULT_BUDGET_WINDOW, Budget
from corral.core.fairness import RolePolicy
from corral.core.policy import PolicyConfig
from corral.core.resources import Resources
from corral.core.scaling import ScalingConfig
from corral.core.sla import SlaConfig

POLICY_KNOBS: dict[str, tuple[float, float]] = {
    # Policy settings a file may override, with their allowed ranges.
    "preemption_budget": (0, 1e9),
    "preemption_window_s": (1, 1e9),
    "min_share_diff": (0, 1),
    "max_step_up": (1, 1e6),
    "max_step_down": (1, 1e6),
    "cooldown_up_s": (0, 1e9),
    "cooldown_down_s": (0, 1e9),
    "hysteresis": (0, 10),
    "sla_margin": (0, 10),
    "sla_startup_s": (0, 1e6),
    # Right-sizing of new workers (band_low 1 keeps every reservation as asked).
    "rightsizing_headroom": (1, 10),
    "rightsizing_band_low": (0.01, 1),
    "rightsizing_percentile": (1, 100),
    "rightsizing_min_samples": (1, 1e6),
    "prefer_spot": (0, 1),  # 1: workers go to spot agents (spot=true) first; 0: spread
}


class PolicyFileError(ValueError):
    """A policy file is unreadable or invalid; the message names every bad field."""


class Reader:
    """Reads plain data (parsed YAML or JSON), collecting errors in ``errors``."""

    def __init__(self, root: str = "document") -> None:
        self.root = root  # what the top level is called in messages
        self.errors: list[str] = []

    def map(self, d: Any, path: str, allowed: AbstractSet[str],
            required: AbstractSet[str] = frozenset()
            ) -> Mapping[str, Any]:
        if not isinstance(d, Mapping):
            self.errors.append(f"{path or self.root}: must be a mapping")
            return {}
        for k in d:
            if k not in allowed:
                self.errors.append(f"{path}.{k}".lstrip(".") + ": unknown field (expected one"
                                   f" of: {', '.join(sorted(allowed))})")
        for k in sorted(required - set(d)):
            self.errors.append(f"{path}.{k}".lstrip(".") + ": is required")
        return d

    def num(self, d: Mapping[str, Any], k: str, path: str, default: float | None = None,
            lo: float = 0.0, hi: float = float("inf")) -> float:
        v = d.get(k, default)
        where = f"{path}.{k}".lstrip(".")
        if isinstance(v, bool) or not isinstance(v, int | float):
            if k in d or default is None:
                self.errors.append(f"{where}: must be a number")
            return default if default is not None else lo
        if not lo <= v <= hi:
            self.errors.append(f"{where}: must be between {lo:g} and {hi:g}, got {v:g}")
            return default if default is not None else lo
        return float(v)

    def int(self, d: Mapping[str, Any], k: str, path: str, default: int | None = None,
            lo: int = 0, hi: int = 10**9) -> int:
        v = self.num(d, k, path, default, lo, hi)
        if int(v) != v:
            self.errors.append(f"{path}.{k}".lstrip(".") + ": must be a whole number")
        return int(v)

    def res(self, d: Any, path: str, required: bool = True) -> Resources:
        m = self.map(d if d is not None else ({} if not required else None), path,
                     {"cpus", "mem", "disk", "gpus"})
        return Resources(
            cpus=self.num(m, "cpus", path, 0.0 if not required else None, 0, 1e9),
            mem=self.num(m, "mem", path, 0.0 if not required else None, 0, 1e12),
            disk=self.num(m, "disk", path, 0.0, 0, 1e12),
            gpus=self.num(m, "gpus", path, 0.0, 0, 1e6),
        )

    def limit(self, d: Any, path: str) -> Resources:
        """A hard cap: the dimensions it names, the others unbounded (the largest value a
        policy file accepts), not zero."""
        r = self.res(d, path, False)
        given = d if isinstance(d, Mapping) else {}
        return Resources(
            cpus=r.cpus if "cpus" in given else 1e9, mem=r.mem if "mem" in given else 1e12,
            disk=r.disk if "disk" in given else 1e12, gpus=r.gpus if "gpus" in given else 1e6)

    def quota(self, d: Any, path: str) -> Quota:
        m = self.map(d, path, {"jobs", *DIMENSIONS})
        jobs = self.int(m, "jobs", path, None, 0, 10**9) if "jobs" in m else None
        bounds = {dim: self.num(m, dim, path, None, 0, 1e12) for dim in DIMENSIONS if dim in m}
        return Quota(jobs=jobs, resources=bounds)

    def budget(self, d: Any, path: str) -> Budget:
        m = self.map(d, path, {"amount", "window_s"}, {"amount"})
        return Budget(amount=self.num(m, "amount", path, None, 0, 1e15),
                      window_s=self.num(m, "window_s", path, DEFAULT_BUDGET_WINDOW, 60, 1e10))

    def roles(self, raw: Any, path: str = "roles", allow_count: bool = False,
              quotas: dict[str, Quota] | None = None,
              budgets: dict[str, Budget] | None = None) -> dict[str, RolePolicy]:
        """A list of ``{name, weight, guarantee, limit}``; with ``allow_count``, ``count: N``
        expands one entry into roles ``name-0..name-(N-1)`` (for simulations at scale).
        With ``quotas`` (a dict to fill) entries may also have a ``quota``; with
        ``budgets``, a ``budget``."""
        roles: dict[str, RolePolicy] = {}
        if raw is None:
            return roles
        if not isinstance(raw, list):
            self.errors.append(f"{path}: must be a list")
            return roles
        allowed = {"name", "weight", "guarantee", "limit"} | ({"count"} if allow_count else set())
        if quotas is not None:
            allowed.add("quota")
        if budgets is not None:
            allowed.add("budget")
        for i, r in enumerate(raw):
            where = f"{path}[{i}]"
            m = self.map(r, where, allowed, {"name"})
            pol = RolePolicy(
                weight=self.num(m, "weight", where, 1.0, 1e-6, 1e6),
                guarantee=self.res(m.get("guarantee"), f"{where}.guarantee", False),
                limit=(self.limit(m["limit"], f"{where}.limit") if m.get("limit")
                       else None))
            quota = self.quota(m["quota"], f"{where}.quota") if "quota" in m else None
            budget = self.budget(m["budget"], f"{where}.budget") if "budget" in m else None
            n = self.int(m, "count", where, 1, 1, 100_000) if allow_count else 1
            name = m.get("name")
            if "name" in m and (not isinstance(name, str) or not name):
                self.errors.append(f"{where}.name: must be a non-empty string")
                continue
            for k in range(n):
                full = str(name) if n == 1 else f"{name}-{k}"
                if full in roles:
                    self.errors.append(f"{where}.name: role {full!r} is named twice")
                roles[full] = pol
                if quotas is not None and quota is not None:
                    quotas[full] = quota
                if budgets is not None and budget is not None:
                    budgets[full] = budget
        return roles

    def knobs(self, raw: Any, path: str = "policy") -> dict[str, float]:
        pk = self.map(raw if raw is not None else {}, path, set(POLICY_KNOBS))
        return {k: self.num(pk, k, path, None, *POLICY_KNOBS[k]) for k in sorted(pk)
                if k in POLICY_KNOBS}

    def fail_if_errors(self, exc: type[ValueError], title: str) -> None:
        """Raise ``exc`` listing each bad field once (a missing field also fails its type
        check; say it once)."""
        if not self.errors:
            return
        seen: set[str] = set()
        msgs = []
        for e in self.errors:
            where = e.split(":", 1)[0]
            if where not in seen:
                seen.add(where)
                msgs.append(e)
        raise exc(f"{title}:\n  " + "\n  ".join(msgs))


def policy_config(knobs: Mapping[str, float] | None = None,
                  target_duration_s: float = ScalingConfig().target_duration_s
                  ) -> PolicyConfig:
    """A ``PolicyConfig`` with the defaults, overridden by ``knobs`` (see ``POLICY_KNOBS``)."""
    k = dict(knobs or {})
    base = ScalingConfig()
    scaling = ScalingConfig(
        target_duration_s=target_duration_s,
        hysteresis=k.get("hysteresis", base.hysteresis),
        cooldown_up_s=k.get("cooldown_up_s", base.cooldown_up_s),
        cooldown_down_s=k.get("cooldown_down_s", base.cooldown_down_s),
        max_step_up=int(k.get("max_step_up", base.max_step_up)),
        max_step_down=int(k.get("max_step_down", base.max_step_down)),
    )
    d = PolicyConfig()
    rs = d.rightsizing
    rightsizing = replace(
        rs, headroom=k.get("rightsizing_headroom", rs.headroom),
        band_low=k.get("rightsizing_band_low", rs.band_low),
        percentile=k.get("rightsizing_percentile", rs.percentile),
        min_samples=int(k.get("rightsizing_min_samples", rs.min_samples)))
    return PolicyConfig(
        rightsizing=rightsizing,
        scaling=scaling,
        sla=SlaConfig(margin=k.get("sla_margin", d.sla.margin),
                      startup_s=k.get("sla_startup_s", d.sla.startup_s)),
        preemption_budget=int(k.get("preemption_budget", d.preemption_budget)),
        preemption_window_s=k.get("preemption_window_s", d.preemption_window_s),
        min_share_diff=k.get("min_share_diff", d.min_share_diff),
        prefer_spot=bool(k.get("prefer_spot", 1.0 if d.prefer_spot else 0.0)),
    )


@dataclass(frozen=True, slots=True)
class SchedulerPolicy:
    """What a running scheduler's elastic policy is configured with."""

    roles: Mapping[str, RolePolicy] = field(default_factory=dict)
    config: PolicyConfig = field(default_factory=PolicyConfig)
    interval_s: float = 5.0
    quotas: Mapping[str, Quota] = field(default_factory=dict)  # what roles may submit
    budgets: Mapping[str, Budget] = field(default_factory=dict)  # what roles may spend


def parse_policy(data: Any) -> SchedulerPolicy:
    """A ``SchedulerPolicy`` from plain data, or ``PolicyFileError`` naming every bad field.
    An empty document gives the defaults."""
    r = Reader()
    top = r.map(data if data is not None else {}, "",
                {"interval_s", "target_duration_s", "roles", "policy"})
    quotas: dict[str, Quota] = {}
    budgets: dict[str, Budget] = {}
    roles = r.roles(top.get("roles"), quotas=quotas, budgets=budgets)
    knobs = r.knobs(top.get("policy"))
    duration = r.num(top, "target_duration_s", "", ScalingConfig().target_duration_s, 1, 1e9)
    interval = r.num(top, "interval_s", "", 5.0, 0.1, 86400)
    r.fail_if_errors(PolicyFileError, "invalid policy file")
    return SchedulerPolicy(roles=roles, config=policy_config(knobs, duration),
                           interval_s=interval, quotas=quotas, budgets=budgets)
