"""Unit tests of the policy's parts: scaling dampening, SLA sizing, right-sizing, victims."""

from __future__ import annotations

from corral.core.fairness import Candidate, RolePolicy, Segment, allocate, choose_victims
from corral.core.model import Tier
from corral.core.resources import Resources
from corral.core.rightsizing import RightSizingConfig, lying_factor, rightsize
from corral.core.scaling import (
    ScaleMemory,
    ScalingConfig,
    WorkerState,
    choose_retirees,
    dampen,
    load_workers,
    remember,
)
from corral.core.sla import SlaConfig, miss_reason, sla_need

CFG = ScalingConfig(hysteresis=0.1, cooldown_up_s=30, cooldown_down_s=120,
                    max_step_up=5, max_step_down=2)


def test_load_workers_clears_backlog_within_duration() -> None:
    assert load_workers(6000, 10, 600) == 1
    assert load_workers(6001, 10, 600) == 2
    assert load_workers(0, 10, 600) == 0
    assert load_workers(100, 0, 600) is None


def test_hysteresis_keeps_small_changes() -> None:
    assert dampen(21, 20, ScaleMemory(), 1000, CFG).workers == 20
    assert dampen(21, 20, ScaleMemory(), 1000, CFG).note == "hysteresis"
    assert dampen(23, 20, ScaleMemory(), 1000, CFG).workers == 23


def test_cooldown_blocks_then_allows() -> None:
    mem = remember(ScaleMemory(), 10, 15, now=100.0)
    assert dampen(20, 15, mem, 110, CFG).note == "cooldown"
    assert dampen(20, 15, mem, 131, CFG).workers == 20
    # Shrinking waits the longer down cooldown after any change.
    assert dampen(10, 15, mem, 200, CFG).note == "cooldown"
    assert dampen(10, 15, mem, 221, CFG).workers == 13


def test_max_step_limits_each_move() -> None:
    d = dampen(100, 10, ScaleMemory(), 0, CFG)
    assert (d.workers, d.note) == (15, "max step")
    d = dampen(1, 10, ScaleMemory(), 0, CFG)
    assert (d.workers, d.note) == (8, "max step")


def test_retirees_idle_first_then_least_work_lost_then_highest_index() -> None:
    ws = [WorkerState("w0", 0), WorkerState("w1", 1, idle=True), WorkerState("w2", 2),
          WorkerState("w3", 3)]
    assert choose_retirees(ws, 2) == ("w1", "w3")   # unknown ages: highest index
    aged = [WorkerState("w0", 0, checkpoint_age_s=5.0), WorkerState("w1", 1,
                                                                     checkpoint_age_s=50.0),
            WorkerState("w2", 2, checkpoint_age_s=1.0), WorkerState("w3", 3)]
    assert choose_retirees(aged, 3) == ("w2", "w0", "w1")  # never-known age goes last
    assert choose_retirees(ws, 0) == ()


def test_sla_need_from_throughput_and_margin() -> None:
    cfg = SlaConfig(margin=0.25, startup_s=0)
    # 1000 units, 1 unit/s/worker, 100 s left, 25% margin -> 12.5 -> 13 workers.
    need = sla_need(1000, 1.0, deadline=200, now=100, max_workers=50, cfg=cfg)
    assert (need.workers, need.risk) == (13, None)


def test_sla_flags_job_that_cannot_make_it_at_max() -> None:
    need = sla_need(1000, 1.0, deadline=200, now=100, max_workers=5, cfg=SlaConfig(startup_s=0))
    assert need.workers == 5
    assert need.risk is not None and "maximum is 5" in need.risk
    late = sla_need(1000, 1.0, deadline=100, now=100, max_workers=5, cfg=SlaConfig())
    assert late.risk is not None and "deadline passed" in late.risk


def test_miss_reason_only_when_predicted_late() -> None:
    assert miss_reason(1000, 1.0, granted=12, needed=13, deadline=200, now=100,
                       why_short="share") is None  # 12 workers finish at t=183
    r = miss_reason(1000, 1.0, granted=5, needed=13, deadline=200, now=100, why_short="quota")
    assert r is not None and "quota" in r and "100s late" in r


def test_rightsizing_stays_in_band() -> None:
    cfg = RightSizingConfig(headroom=1.2, band_low=0.5, band_high=1.0)
    reserved = Resources(cpus=4, mem=8192, gpus=1)
    # Uses 1 cpu of 4: 1.2 cpus is inside [2, 4] -> lifted to the band floor 2.
    # Uses 6000 MiB of 8192: 7200 is inside the band.
    out = rightsize(reserved, Resources(cpus=1, mem=6000), cfg)
    assert out == Resources(cpus=2, mem=7200, gpus=1)
    # Measured above the reservation never exceeds band_high.
    assert rightsize(reserved, Resources(cpus=8, mem=9000), cfg) == reserved
    assert rightsize(reserved, None, cfg) == reserved
    assert rightsize(reserved, Resources(cpus=1, mem=1), RightSizingConfig(enabled=False)) \
        == reserved
    lf = lying_factor(reserved, Resources(cpus=1, mem=4096))
    assert (lf.cpus, lf.mem) == (0.25, 0.5)


def _cand(tid: str, tier: Tier, age: float | None, job: str = "r/e/j") -> Candidate:
    return Candidate(tid, job, "r", tier, Resources(cpus=1, mem=100), age)


def test_victims_by_tier_then_least_work_lost() -> None:
    cands = [
        _cand("pref-fresh", Tier.PREFERRED, 1.0),
        _cand("pe-old", Tier.PREEMPTIBLE, 500.0),
        _cand("pe-fresh", Tier.PREEMPTIBLE, 5.0),
        _cand("pe-never", Tier.PREEMPTIBLE, None),
    ]
    got = choose_victims(cands, Resources(cpus=3), Resources(cpus=10, mem=1000),
                         Resources(), 10, {"r/e/j": 10})
    assert [c.task_id for c in got] == ["pe-fresh", "pe-old", "pe-never"]


def test_victims_respect_guarantee_budget_and_per_job_cap() -> None:
    cands = [_cand(f"p{i}", Tier.PREFERRED, float(i)) for i in range(5)]
    # Role holds 5 cpus with a 4-cpu guarantee: only one preferred task may go.
    got = choose_victims(cands, Resources(cpus=5), Resources(cpus=5, mem=500),
                         Resources(cpus=4), 10, {"r/e/j": 5})
    assert [c.task_id for c in got] == ["p0"]
    got = choose_victims(cands, Resources(cpus=5), Resources(cpus=5, mem=500), Resources(),
                         2, {"r/e/j": 5})
    assert len(got) == 2
    got = choose_victims(cands, Resources(cpus=5), Resources(cpus=5, mem=500), Resources(),
                         10, {"r/e/j": 3})
    assert len(got) == 3


def test_allocate_weighted_drf_and_quota() -> None:
    unit = Resources(cpus=1, mem=1)
    demands = {r: [Segment(f"{r}/e/j", unit, 100)] for r in ("a", "b", "c")}
    roles = {"a": RolePolicy(weight=2.0), "c": RolePolicy(limit=Resources(cpus=10, mem=10))}
    out = allocate(demands, Resources(cpus=100, mem=100), roles)
    assert out["c"].granted["c/e/j"] == 10 and out["c"].stopped_by == "quota"
    assert out["a"].granted["a/e/j"] == 60 and out["b"].granted["b/e/j"] == 30
    assert out["a"].stopped_by == "share"


def test_allocate_priority_order_and_protected() -> None:
    unit = Resources(cpus=1)
    demands = {
        "a": [Segment("a/e/urgent", unit, 8, protected=True), Segment("a/e/low", unit, 50)],
        "b": [Segment("b/e/x", unit, 50)],
    }
    out = allocate(demands, Resources(cpus=20), {})
    assert out["a"].granted == {"a/e/urgent": 8, "a/e/low": 2}
    assert out["b"].granted == {"b/e/x": 10}
    # Protected demand beats share even when it exceeds an equal split.
    demands["a"][0] = Segment("a/e/urgent", unit, 15, protected=True)
    out = allocate(demands, Resources(cpus=20), {})
    assert out["a"].granted["a/e/urgent"] == 15 and out["b"].granted["b/e/x"] == 5


def test_allocate_guarantee_first_when_oversubscribed() -> None:
    unit = Resources(cpus=1)
    demands = {"a": [Segment("a/e/j", unit, 30)], "b": [Segment("b/e/j", unit, 30)]}
    roles = {"a": RolePolicy(guarantee=Resources(cpus=15))}
    out = allocate(demands, Resources(cpus=20), roles)
    assert out["a"].granted["a/e/j"] == 15 and out["b"].granted["b/e/j"] == 5


def test_allocate_edge_cases() -> None:
    assert allocate({}, Resources(cpus=10), {}) == {}
    gpu = Resources(cpus=1, gpus=1)
    demands = {
        "a": [Segment("a/e/gpu", gpu, 5)],  # the cluster has no GPUs: never granted
        "b": [],  # a role with nothing to ask for
        "c": [Segment("c/e/free", Resources(), 3), Segment("c/e/x", Resources(cpus=1), 4)],
    }
    out = allocate(demands, Resources(cpus=10), {})
    assert out["a"].granted == {"a/e/gpu": 0} and out["a"].stopped_by == "quota"
    assert out["b"].granted == {} and out["b"].stopped_by is None
    assert out["c"].granted == {"c/e/free": 3, "c/e/x": 4}


def test_allocate_mixed_dimensions_is_work_conserving() -> None:
    # a is cpu-heavy, b memory-heavy: DRF equalises dominant shares, then fills leftovers.
    demands = {"a": [Segment("a/e/j", Resources(cpus=4, mem=1), 100)],
               "b": [Segment("b/e/j", Resources(cpus=1, mem=4), 100)]}
    out = allocate(demands, Resources(cpus=40, mem=40), {})
    assert out["a"].granted["a/e/j"] == 8 and out["b"].granted["b/e/j"] == 8
    assert out["a"].share == out["b"].share == 0.8
