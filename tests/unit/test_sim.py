"""Simulator tests: every shipped scenario runs (shortened), determinism, CLI behaviour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.sim.cli import main
from corral.sim.engine import Simulation, run_scenario
from corral.sim.metrics import entitlements, jain
from corral.sim.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenarios

SHIPPED = shipped_scenarios()
# Horizons that keep each run to a second or two but still exercise its feature.
SHORT = {"contention": 900, "new-role-arrival": 2000, "deadlines-80pct-load": 3000,
         "spot-mix": 2400, "scale-10k": 40}

TINY = {
    "name": "tiny", "horizon_s": 600, "interval_s": 10,
    "agents": [{"count": 4, "cpus": 8, "mem": 16384},
               {"count": 4, "cpus": 8, "mem": 16384, "market": "spot"}],
    "market": {"spot_termination_rate_per_hour": 2.0, "replacement_delay_s": 60},
    "roles": [{"name": "a"}, {"name": "b"}],
    "workloads": [
        {"role": "a", "jobs": 3, "every_s": 30, "work": [2000, 6000], "throughput": 1,
         "worker": {"cpus": 1, "mem": 1024}, "master": {"cpus": 0.5, "mem": 256},
         "max": 16, "deadline_slack": [2, 3]},
        {"role": "b", "jobs": 2, "start_s": 100, "work": 20000, "throughput": [0.5, 2],
         "worker": {"cpus": 2, "mem": 2048}, "max": 32, "tier": "preemptible"},
    ],
}


def test_all_required_scenarios_are_shipped() -> None:
    assert set(SHORT) == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHORT))
def test_shipped_scenario_runs_shortened(name: str) -> None:
    sc = load_scenario(SHIPPED[name]).shortened(SHORT[name])
    r = run_scenario(sc, "corral")
    assert r["ticks"] >= 2 and r["jobs"]["arrived"] > 0
    assert 0 < r["utilization"] <= 1.0
    assert r["work"]["done"] > 0
    assert r["cost"]["total"] <= r["cost"]["all_on_demand"] + 1e-9
    if name == "new-role-arrival":
        cycles = r["fairness"]["cycles_to_fair_new_roles"]["newcomer"]
        assert cycles is not None and cycles <= 2
        assert r["preemptions"]["count"] <= 400 * 3  # the scenario's budget, 3 victim roles
    if name == "spot-mix":
        assert r["cost"]["ratio_to_on_demand"] < 0.6  # placed mostly on spot


@pytest.mark.parametrize("policy", ["corral", "drf", "adaptive", "fifo"])
def test_every_policy_runs_and_is_deterministic(policy: str) -> None:
    sc = parse_scenario(TINY)
    a = run_scenario(sc, policy, seed=7)
    b = run_scenario(sc, policy, seed=7)
    a.pop("timing")
    b.pop("timing")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["policy"] == policy


def test_seed_changes_the_run() -> None:
    sc = parse_scenario(TINY)
    a, b = run_scenario(sc, seed=1), run_scenario(sc, seed=2)
    a.pop("timing")
    b.pop("timing")
    assert a != b


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32))
def test_simulator_deterministic_for_any_seed(seed: int) -> None:
    sc = parse_scenario({**TINY, "horizon_s": 200})
    a, b = run_scenario(sc, seed=seed), run_scenario(sc, seed=seed)
    a.pop("timing")
    b.pop("timing")
    assert a == b


def test_invariants_hold_during_a_run() -> None:
    """Agents never over-committed; every task the sim tracks sits on a live agent."""
    sim = Simulation(parse_scenario(TINY), "corral", seed=3)
    orig = sim._tick

    def checked_tick() -> None:
        orig()
        for a in sim.agents:
            assert a.free[0] >= -1e-6 and a.free[1] >= -1e-6
            assert a.rev_free[0] >= -1e-6
            assert a.alive or not a.tasks
        for t in sim.tasks.values():
            assert t.id in sim.agents[t.agent].tasks

    sim._tick = checked_tick  # type: ignore[method-assign]
    r = sim.run()
    assert r["spot_terminations"] > 0  # the fault path was exercised


def test_corral_beats_load_only_on_deadlines() -> None:
    # The first burst of deadline jobs, fully resolved by 5400 s.
    sc = load_scenario(SHIPPED["deadlines-80pct-load"]).shortened(5400)
    corral = run_scenario(sc, "corral")["deadlines"]
    drf = run_scenario(sc, "drf")["deadlines"]
    assert corral["unresolved"] == drf["unresolved"] == 0
    assert corral["missed"] == 0 and drf["missed"] > 0


def test_cli_json_byte_identical_and_text(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
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


@pytest.mark.parametrize("argv,needle", [
    (["no-such-scenario"], "no scenario file"),
    (["contention", "--policy", "magic"], "invalid choice"),
    (["contention", "--horizon", "-1"], "--horizon must be positive"),
])
def test_cli_errors_are_one_line(argv: list[str], needle: str) -> None:
    err = io.StringIO()
    assert main(argv, out=io.StringIO(), err=err) == 2
    assert needle in err.getvalue() and "Traceback" not in err.getvalue()


def test_scenario_errors_name_every_field(tmp_path: Path) -> None:
    bad = {**TINY, "agents": [{"count": 0, "cpus": 8}], "roles": [{"name": "a"}],
           "workloads": [{**TINY["workloads"][0], "tier": "gold", "role": "zz"}]}
    with pytest.raises(ScenarioError) as e:
        parse_scenario(bad)
    msg = str(e.value)
    for field in ("agents[0].count", "agents[0].mem", "workloads[0].tier", "workloads[0].role"):
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
