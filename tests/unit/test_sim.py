"""The simulator: it drives Corral's real scheduler core (and no placement of its own),
every shipped scenario runs (shortened), every policy is deterministic, the fake Mesos
keeps its books, and the CLI behaves."""

from __future__ import annotations

import importlib
import inspect
import io
import json
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import corral.sim
from corral.core import effects as fx
from corral.core.handlers import offers as offers_handler
from corral.core.scheduler import Scheduler
from corral.sim.baselines import POLICIES
from corral.sim.cli import main
from corral.sim.engine import Simulation, run_scenario
from corral.sim.metrics import entitlements, jain
from corral.sim.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenarios

SHIPPED = shipped_scenarios()
# Horizons that keep each run to a few seconds but still exercise its feature.
SHORT = {"contention": 600, "new-role-arrival": 1900, "deadlines-80pct-load": 900,
         "spot-mix": 900, "scale-10k": 31, "day-10k": 60, "spot-heavy": 900}

TINY: dict[str, Any] = {
    "name": "tiny", "horizon_s": 900, "interval_s": 10,
    "agents": [{"count": 4, "cpus": 8, "mem": 16384, "revocable_fraction": 0.5},
               {"count": 6, "cpus": 8, "mem": 16384, "market": "spot"}],
    "market": {"spot_termination_rate_per_hour": 3.0, "replacement_delay_s": 60,
               "notice_fraction": 0.5, "notice_s": 60, "detect_s": 20,
               "revocation_rate_per_hour": 6.0, "revocation_s": 60},
    "roles": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
    "usage_interval_s": 20,
    "workloads": [
        {"role": "a", "jobs": 3, "every_s": 30, "work": [2000, 6000], "throughput": 1,
         "worker": {"cpus": 1, "mem": 1024}, "master": {"cpus": 0.5, "mem": 256},
         "max": 16, "deadline_slack": [2, 3], "checkpoint_interval_s": 20, "usage": 0.5},
        {"role": "b", "jobs": 2, "start_s": 100, "work": 20000, "throughput": [0.5, 2],
         "worker": {"cpus": 2, "mem": 2048}, "max": 32, "tier": "preemptible",
         "checkpoint_on_kill": True},
        {"role": "c", "jobs": 1, "start_s": 50, "work": 5000, "throughput": 1,
         "worker": {"cpus": 1, "mem": 512}, "max": 8, "tier": "revocable"},
    ],
}


def tiny(**over: Any) -> Any:
    return parse_scenario({**TINY, **over})


def without_timing(r: dict[str, Any]) -> dict[str, Any]:
    r = dict(r)
    r.pop("timing")
    return r


def test_all_required_scenarios_are_shipped() -> None:
    assert set(SHORT) == set(SHIPPED)
    big = load_scenario(SHIPPED["day-10k"])
    assert sum(g.count for g in big.agents) == 10_000
    assert sum(w.jobs for w in big.workloads) * len(big.roles) >= 1000
    assert big.horizon_s >= 6 * 3600


@pytest.mark.parametrize("name", sorted(SHORT))
def test_shipped_scenario_runs_shortened(name: str) -> None:
    sc = load_scenario(SHIPPED[name]).shortened(SHORT[name])
    r = run_scenario(sc, "corral")
    assert r["ticks"] >= 2 and r["jobs"]["arrived"] > 0
    assert 0 < r["utilization"] <= 1.0
    assert r["work"]["done"] > 0
    assert r["cost"]["total"] <= r["cost"]["all_on_demand"] + 1e-9
    assert r["mesos"]["unacknowledged_updates"] == 0
    if name == "new-role-arrival":
        cycles = r["fairness"]["cycles_to_fair_new_roles"]["newcomer"]
        assert cycles is not None and cycles <= 2
        assert 0 < r["preemptions"]["count"] <= 400 * 3  # the scenario's budget
    if name in ("spot-mix", "spot-heavy"):
        assert r["cost"]["ratio_to_on_demand"] < 0.4  # workers go to spot first


def test_the_simulator_places_only_through_the_scheduler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decision comes out of ``Scheduler.handle``: placement runs only inside it,
    every task the fake Mesos runs was in a LaunchTasks effect it returned, and no
    simulator module imports placement or the policy pass."""
    inside = [False]
    outside: list[str] = []
    launched: set[str] = set()
    handled = [0]
    real_handle, real_place = Scheduler.handle, offers_handler.place

    def handle(self: Scheduler, event: Any, now: float) -> list[fx.Effect]:
        inside[0] = True
        handled[0] += 1
        try:
            out = real_handle(self, event, now)
        finally:
            inside[0] = False
        if handled[0] % 20 == 0:
            self.validate()  # every invariant of the core, every 20 events
        launched.update(t.task_id for e in out if isinstance(e, fx.LaunchTasks)
                        for t in e.tasks)
        return out

    def place(*args: Any, **kw: Any) -> Any:
        if not inside[0]:
            outside.append("place")
        return real_place(*args, **kw)

    monkeypatch.setattr(Scheduler, "handle", handle)
    monkeypatch.setattr(offers_handler, "place", place)
    for policy in POLICIES:
        launched.clear()
        sim = Simulation(tiny(horizon_s=400), policy, seed=3)
        sim.run()
        sim.sched.validate()
        assert sim.stats.launched == len(launched) > 0, policy
    assert handled[0] > 0 and not outside
    for mod in _sim_modules():
        src = inspect.getsource(mod)
        for pattern in (r"core\.placement", r"compute_targets", r"\bplace\("):
            assert not re.search(pattern, src), f"{mod.__name__} uses {pattern}"


def _sim_modules() -> Iterator[Any]:
    for info in pkgutil.iter_modules(corral.sim.__path__):
        yield importlib.import_module(f"corral.sim.{info.name}")


def test_fake_mesos_keeps_its_books_and_exercises_every_fault() -> None:
    sim = Simulation(tiny(), "corral", seed=5)
    orig = sim._allocate

    def checked() -> None:
        orig()
        for a in sim.agents:
            c, m, rc, rm = a.free()
            assert c >= -1e-6 and m >= -1e-6
            if not a.revoked:
                assert rc >= -1e-6 and rm >= -1e-6
            assert a.alive or a.registered or not a.tasks
        for t in sim.tasks.values():
            assert t.agent.tasks.get(t.id) is t
        for job in sim.jobs.values():
            assert job.productive == sum(1 for t in job.tasks.values() if t.seg is not None)
            assert job.done - job.lost <= job.work + 1e-6

    sim._allocate = checked  # type: ignore[method-assign]
    r = sim.run()
    assert r["spot"]["terminations"] > 0 and r["spot"]["with_notice"] > 0
    assert r["spot"]["revocations"] > 0
    assert r["jobs"]["finished"] > 0 and r["work"]["lost"] > 0
    losses = {x.kind for j in sim.sched.state.jobs.values() for x in j.accounting.recent}
    assert {"notice", "unreachable"} <= losses, losses


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_runs_and_is_deterministic(policy: str) -> None:
    sc = tiny(horizon_s=600)
    a = without_timing(run_scenario(sc, policy, seed=7))
    b = without_timing(run_scenario(sc, policy, seed=7))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["policy"] == policy and a["jobs"]["arrived"] == 6


def test_every_policy_meets_the_same_jobs_and_faults() -> None:
    sc = tiny(horizon_s=400)
    reports = [run_scenario(sc, p, seed=9) for p in POLICIES]
    assert len({json.dumps(r["spot"], sort_keys=True) for r in reports}) == 1
    assert reports[0]["spot"]["terminations"] > 0
    assert len({r["jobs"]["arrived"] for r in reports}) == 1


def test_seed_changes_the_run() -> None:
    sc = tiny(horizon_s=400)
    assert without_timing(run_scenario(sc, seed=1)) != without_timing(run_scenario(sc, seed=2))


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32))
def test_simulator_deterministic_for_any_seed(seed: int) -> None:
    sc = tiny(horizon_s=200)
    assert without_timing(run_scenario(sc, seed=seed)) == \
        without_timing(run_scenario(sc, seed=seed))


def test_corral_wins_where_it_should_and_the_baselines_differ() -> None:
    # New role into a full cluster: only preemption gets it its share (static baselines
    # hold what they have, dask-adaptive has no cross-job fairness).
    sc = load_scenario(SHIPPED["new-role-arrival"]).shortened(1900)
    got = {p: run_scenario(sc, p)["fairness"]["cycles_to_fair_new_roles"]["newcomer"]
           for p in ("corral", "drf")}
    assert got["corral"] is not None and got["corral"] <= 2 and got["drf"] is None
    # Spot: Corral's workers go to spot first; the static baselines spread over markets.
    sc = load_scenario(SHIPPED["spot-mix"]).shortened(900)
    corral, fifo = run_scenario(sc, "corral"), run_scenario(sc, "fifo")
    assert corral["cost"]["ratio_to_on_demand"] < fifo["cost"]["ratio_to_on_demand"]
    assert corral["rightsizing"]["cpus_per_worker_vs_spec"] < 1.0   # usage 0.6 measured


def test_cli_json_byte_identical_text_and_compare(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "horizon_s": 300}))
    outs = []
    for _ in range(2):
        buf = io.StringIO()
        assert main([str(path), "--seed", "5", "--json"], out=buf) == 0
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert "timing" not in json.loads(outs[0])
    buf = io.StringIO()
    assert main([str(path), "--policy", "fifo"], out=buf) == 0
    assert "policy fifo" in buf.getvalue() and "deadlines:" in buf.getvalue()
    buf = io.StringIO()
    assert main([str(path), "--compare"], out=buf) == 0
    header = buf.getvalue().splitlines()[1].split()
    assert header == list(POLICIES)
    buf = io.StringIO()
    assert main([str(path), "--compare", "--json"], out=buf) == 0
    assert sorted(json.loads(buf.getvalue())) == sorted(POLICIES)


@pytest.mark.parametrize("argv,needle", [
    (["no-such-scenario"], "no scenario file"),
    (["contention", "--policy", "magic"], "invalid choice"),
    (["contention", "--horizon", "-1"], "--horizon must be positive"),
    (["contention", "--seed", "-3"], "--seed must be >= 0"),
    (["contention", "--policy", "fifo", "--compare"], "not allowed with"),
])
def test_cli_errors_are_one_line(argv: list[str], needle: str) -> None:
    err = io.StringIO()
    assert main(argv, out=io.StringIO(), err=err) == 2
    assert needle in err.getvalue() and "Traceback" not in err.getvalue()


def test_scenario_errors_name_every_field(tmp_path: Path) -> None:
    bad = {**TINY, "agents": [{"count": 0, "cpus": 8}], "roles": [{"name": "a"}],
           "market": {"notice_fraction": 2, "spot_rate_schedule": [[1, 2, 3]]},
           "workloads": [{**TINY["workloads"][0], "tier": "gold", "role": "zz",
                          "checkpoint_on_kill": "yes"}]}
    with pytest.raises(ScenarioError) as e:
        parse_scenario(bad)
    msg = str(e.value)
    for field in ("agents[0].count", "agents[0].mem", "workloads[0].tier", "workloads[0].role",
                  "market.notice_fraction", "market.spot_rate_schedule[0]",
                  "workloads[0].checkpoint_on_kill"):
        assert field in msg
    p = tmp_path / "broken.yaml"
    p.write_text("agents: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(p)


def test_entitlements_and_jain() -> None:
    ent = entitlements({"a": 0.1, "b": 1.0, "c": 1.0}, {"a": 1, "b": 1, "c": 2})
    assert ent["a"] == pytest.approx(0.1)
    assert ent["b"] == pytest.approx(0.3) and ent["c"] == pytest.approx(0.6)
    assert jain([1, 1, 1]) == 1.0
    assert jain([1, 0]) == pytest.approx(0.5)


def test_text_report_names_each_new_role_in_words() -> None:
    from corral.sim.cli import _new_roles

    assert _new_roles({}) == "no role arrived mid-run"
    assert _new_roles({"prod": 6, "adhoc": 1, "late": None}) == (
        "new roles fair: adhoc after 1 cycle, late never, prod after 6 cycles")
