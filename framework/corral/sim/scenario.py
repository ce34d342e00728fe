"""Simulator scenarios: the YAML format, parsed and validated into frozen dataclasses.

A scenario describes a cluster (agent groups with a market: on-demand or spot, and the
spot discount, termination rate — constant or as a schedule — or trace, the share of
terminations that come with a notice, revocation of oversubscribed resources, the delay
before a replacement agent), the roles (weight, guarantee, limit), workloads (groups of
jobs with arrival times, work, throughput, sizes, deadlines, how much of their reservation
they use, how often they checkpoint), and the timing of the fake Mesos (allocation
interval, how often executors report). Every problem is reported with its dotted path,
all at once, as ``ScenarioError``.

Units: times in seconds, cpus in cores, mem in MiB, work in abstract units, throughput in
units per second per worker, prices per cpu-hour, rates per agent per hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corral.core.fairness import RolePolicy
from corral.core.model import Tier
from corral.core.policyfile import Reader
from corral.core.resources import Resources
from corral.yamlfile import read_yaml_file


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; the message names every bad field."""


@dataclass(frozen=True, slots=True)
class AgentGroup:
    count: int
    cpus: float
    mem: float
    market: str  # "on_demand" | "spot"
    revocable_fraction: float = 0.0  # oversubscribed share of cpus/mem offered revocably


@dataclass(frozen=True, slots=True)
class Market:
    """Prices and the spot market's behaviour.

    ``spot_rate_schedule``: ``(from_s, rate_per_hour)`` steps overriding the constant rate
    from each ``from_s`` on (a peak hour, a quiet night). ``notice_fraction``: the share of
    terminations announced ``notice_s`` ahead (an inverse offer and unavailability on the
    agent's offers); the rest come without notice and Mesos notices them ``detect_s``
    later (its agent health checks). ``revocation_rate_per_hour``: per agent with
    oversubscribed resources, how often the estimate drops to zero for
    ``revocation_s`` (revocable tasks there are killed)."""

    on_demand_price: float = 0.04  # per cpu-hour
    spot_discount: float = 0.7  # spot price = on-demand * (1 - discount)
    spot_termination_rate_per_hour: float = 0.0  # per spot agent
    spot_trace: tuple[tuple[float, int], ...] = ()  # (time, agent number) terminations
    replacement_delay_s: float = 300.0
    spot_rate_schedule: tuple[tuple[float, float], ...] = ()
    notice_fraction: float = 0.0
    notice_s: float = 120.0
    detect_s: float = 75.0
    revocation_rate_per_hour: float = 0.0
    revocation_s: float = 300.0

    def rate_at(self, t: float) -> float:
        """Spot terminations per agent per hour at time ``t``."""
        rate = self.spot_termination_rate_per_hour
        for start, r in self.spot_rate_schedule:
            if t >= start:
                rate = r
        return rate

    def max_rate(self) -> float:
        return max([self.spot_termination_rate_per_hour,
                    *(r for _, r in self.spot_rate_schedule)])


@dataclass(frozen=True, slots=True)
class Workload:
    """A group of ``jobs`` similar jobs of one role. Ranges ``(lo, hi)`` are drawn uniformly
    per job from the seeded generator."""

    role: str
    jobs: int
    start_s: float
    every_s: float
    work: tuple[float, float]
    throughput: tuple[float, float]
    worker: Resources
    master: Resources
    min_workers: int
    max_workers: int
    initial_workers: int
    tier: Tier = Tier.PREFERRED
    priority: int = 0
    deadline_slack: tuple[float, float] | None = None  # x runtime at max workers
    checkpoint_interval_s: float = 60.0
    usage: float = 1.0  # measured / reserved per worker (the lying factor)
    startup_s: float = 20.0  # launch -> the worker contributes (start, restore)
    name: str = "job"
    checkpoint_on_kill: bool = False  # SIGTERM: the SDK's on_terminate checkpoints
    kill_grace_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    horizon_s: float
    interval_s: float
    seed: int
    agents: tuple[AgentGroup, ...]
    market: Market
    roles: Mapping[str, RolePolicy]
    workloads: tuple[Workload, ...]
    target_duration_s: float = 600.0
    description: str = ""
    policy: Mapping[str, float] = field(default_factory=dict)
    allocation_interval_s: float = 1.0   # the fake Mesos offers free resources this often
    progress_interval_s: float = 0.0     # masters report progress (0: every interval_s)
    usage_interval_s: float = 60.0       # executors report each worker's use
    overprovision: float = 1.0           # the core's spare-worker multiple

    def shortened(self, horizon_s: float) -> Scenario:
        return replace(self, horizon_s=min(self.horizon_s, horizon_s))


class _P(Reader):
    """The shared reader plus number ranges and flags, which only scenarios use."""

    def flag(self, d: Mapping[str, Any], k: str, path: str, default: bool = False) -> bool:
        v = d.get(k, default)
        if not isinstance(v, bool):
            self.errors.append(f"{path}.{k}".lstrip(".") + ": must be true or false")
            return default
        return v

    def range(self, d: Mapping[str, Any], k: str, path: str, lo: float = 0.0,
              hi: float = float("inf")) -> tuple[float, float] | None:
        v = d.get(k)
        where = f"{path}.{k}".lstrip(".")
        if v is None:
            return None
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = [v, v]
        ok = (isinstance(v, list) and len(v) == 2
              and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v))
        if not ok or not lo <= v[0] <= v[1] <= hi:
            self.errors.append(f"{where}: must be a number or [low, high] within "
                               f"{lo:g}..{hi:g}")
            return None
        return float(v[0]), float(v[1])


def parse_scenario(data: Any) -> Scenario:
    """Build a ``Scenario`` from plain data or raise ``ScenarioError`` listing every problem."""
    p = _P("scenario")
    top = p.map(data, "", {"name", "description", "horizon_s", "interval_s", "seed", "agents",
                           "market", "roles", "workloads", "target_duration_s", "policy",
                           "allocation_interval_s", "progress_interval_s", "usage_interval_s",
                           "overprovision"},
                {"name", "horizon_s", "agents", "workloads"})
    agents = []
    raw_agents = top.get("agents", [])
    if not isinstance(raw_agents, list) or not raw_agents:
        p.errors.append("agents: must be a non-empty list")
        raw_agents = []
    for i, a in enumerate(raw_agents):
        path = f"agents[{i}]"
        m = p.map(a, path, {"count", "cpus", "mem", "market", "revocable_fraction"},
                  {"count", "cpus", "mem"})
        market = m.get("market", "on_demand")
        if market not in ("on_demand", "spot"):
            p.errors.append(f"{path}.market: must be on_demand or spot")
        agents.append(AgentGroup(p.int(m, "count", path, None, 1, 1_000_000),
                                 p.num(m, "cpus", path, None, 0.1, 1e6),
                                 p.num(m, "mem", path, None, 1, 1e12), str(market),
                                 p.num(m, "revocable_fraction", path, 0.0, 0, 1)))
    mk = p.map(top.get("market", {}), "market",
               {"on_demand_price", "spot_discount", "spot_termination_rate_per_hour",
                "spot_trace", "replacement_delay_s", "spot_rate_schedule", "notice_fraction",
                "notice_s", "detect_s", "revocation_rate_per_hour", "revocation_s"})
    schedule = []
    for i, step in enumerate(mk.get("spot_rate_schedule", []) or []):
        if (not isinstance(step, list) or len(step) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in step)
                or step[0] < 0 or not 0 <= step[1] <= 1e3):
            p.errors.append(f"market.spot_rate_schedule[{i}]: must be [from_s >= 0, "
                            "rate_per_hour within 0..1000]")
            continue
        schedule.append((float(step[0]), float(step[1])))
    trace = []
    for i, ev in enumerate(mk.get("spot_trace", []) or []):
        if (not isinstance(ev, list) or len(ev) != 2 or not isinstance(ev[0], int | float)
                or not isinstance(ev[1], int)):
            p.errors.append(f"market.spot_trace[{i}]: must be [time_s, spot_agent_number]")
            continue
        trace.append((float(ev[0]), int(ev[1])))
    market = Market(p.num(mk, "on_demand_price", "market", 0.04, 0, 1e6),
                    p.num(mk, "spot_discount", "market", 0.7, 0, 1),
                    p.num(mk, "spot_termination_rate_per_hour", "market", 0.0, 0, 1e3),
                    tuple(sorted(trace)),
                    p.num(mk, "replacement_delay_s", "market", 300.0, 0, 1e9),
                    tuple(sorted(schedule)),
                    p.num(mk, "notice_fraction", "market", 0.0, 0, 1),
                    p.num(mk, "notice_s", "market", 120.0, 1, 1e6),
                    p.num(mk, "detect_s", "market", 75.0, 0, 1e6),
                    p.num(mk, "revocation_rate_per_hour", "market", 0.0, 0, 1e3),
                    p.num(mk, "revocation_s", "market", 300.0, 1, 1e9))
    roles = p.roles(top.get("roles"), allow_count=True)
    knobs = p.knobs(top.get("policy"))
    workloads = []
    raw_wl = top.get("workloads", [])
    if not isinstance(raw_wl, list) or not raw_wl:
        p.errors.append("workloads: must be a non-empty list")
        raw_wl = []
    for i, w in enumerate(raw_wl):
        workloads.extend(_workload(p, w, f"workloads[{i}]", roles))
    sc = Scenario(
        name=str(top.get("name", "")), horizon_s=p.num(top, "horizon_s", "", None, 1, 1e9),
        interval_s=p.num(top, "interval_s", "", 10.0, 0.1, 1e6),
        seed=p.int(top, "seed", "", 1, 0, 2**63), agents=tuple(agents), market=market,
        roles=roles, workloads=tuple(workloads),
        target_duration_s=p.num(top, "target_duration_s", "", 600.0, 1, 1e9),
        description=str(top.get("description", "")), policy=knobs,
        allocation_interval_s=p.num(top, "allocation_interval_s", "", 1.0, 0.1, 3600),
        progress_interval_s=p.num(top, "progress_interval_s", "", 0.0, 0, 1e6),
        usage_interval_s=p.num(top, "usage_interval_s", "", 60.0, 1, 1e6),
        overprovision=p.num(top, "overprovision", "", 1.0, 0, 100),
    )
    p.fail_if_errors(ScenarioError, "invalid scenario")
    return sc


def _workload(p: _P, w: Any, path: str, roles: Mapping[str, RolePolicy]) -> list[Workload]:
    m = p.map(w, path, {"role", "roles", "name", "jobs", "start_s", "every_s", "work",
                        "throughput", "worker", "master", "min", "max", "initial", "tier",
                        "priority", "deadline_slack", "checkpoint_interval_s", "usage",
                        "startup_s", "checkpoint_on_kill", "kill_grace_s"},
              {"jobs", "work", "throughput", "worker"})
    names: list[str]
    if "roles" in m:  # a prefix: one copy of the workload per role that starts with it
        names = [r for r in roles if r.startswith(str(m["roles"]))]
        if not names:
            p.errors.append(f"{path}.roles: no role starts with {m['roles']!r}")
    else:
        names = [str(m.get("role", ""))]
        if names[0] not in roles:
            p.errors.append(f"{path}.role: {names[0]!r} is not a declared role")
    tier = m.get("tier", "preferred")
    if tier not in {t.value for t in Tier}:
        p.errors.append(f"{path}.tier: must be one of preferred, preemptible, revocable")
        tier = "preferred"
    lo = p.int(m, "min", path, 1, 0, 100_000)
    hi = p.int(m, "max", path, max(lo, 8), 0, 100_000)
    if hi < lo:
        p.errors.append(f"{path}.max: must be at least min ({lo})")
    base = dict(
        jobs=p.int(m, "jobs", path, None, 1, 1_000_000),
        start_s=p.num(m, "start_s", path, 0.0, 0, 1e9),
        every_s=p.num(m, "every_s", path, 0.0, 0, 1e9),
        work=p.range(m, "work", path, 1e-9) or (1.0, 1.0),
        throughput=p.range(m, "throughput", path, 1e-9) or (1.0, 1.0),
        worker=p.res(m.get("worker"), f"{path}.worker"),
        master=p.res(m.get("master"), f"{path}.master", False),
        min_workers=lo, max_workers=hi,
        initial_workers=p.int(m, "initial", path, lo, 0, 100_000),
        tier=Tier(tier), priority=p.int(m, "priority", path, 0, -1000, 1000),
        deadline_slack=p.range(m, "deadline_slack", path, 1e-3),
        checkpoint_interval_s=p.num(m, "checkpoint_interval_s", path, 60.0, 0.1, 1e9),
        usage=p.num(m, "usage", path, 1.0, 0.01, 10),
        startup_s=p.num(m, "startup_s", path, 20.0, 0, 1e6),
        name=str(m.get("name", "job")),
        checkpoint_on_kill=p.flag(m, "checkpoint_on_kill", path),
        kill_grace_s=p.num(m, "kill_grace_s", path, 10.0, 0, 3600),
    )
    return [Workload(role=r, **base) for r in names]  # type: ignore[arg-type]


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    return parse_scenario(read_yaml_file(path, "scenario", ScenarioError))


SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios shipped with Corral, by name."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}
