"""The cost ledger (``core.cost``): what tasks held, where, for how long and why; prices,
savings, budgets; and the readouts metrics use (``core.readout``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.core import cost
from corral.core import effects as fx
from corral.core import events as ev
from corral.core.cost import Budget, CostConfig, PriceFileError, parse_prices
from corral.core.intent import export_job
from corral.core.policyfile import PolicyFileError, parse_policy
from corral.core.scheduler import Scheduler
from corral.core.views import WHY_BUDGET
from corral.store.records import decode_job, encode_job
from tests.unit.test_spot_core import KEY, Harness, launches, make_spec, running_job

PRICES = parse_prices({
    "currency": "EUR",
    "markets": {"on-demand": {"cpu_hour": 3.6, "mem_gib_hour": 0.0},
                "spot-a": {"cpu_hour": 1.2}, "spot-b": {"cpu_hour": 1.2},
                "spot-c": {"cpu_hour": 1.2}},
})


def _usage(h: Harness) -> dict[tuple[str, str], list[float]]:
    return h.s.job_usage(KEY, h.now)


def test_running_time_is_useful_on_each_market_and_priced() -> None:
    h = Harness(cost=CostConfig(prices=PRICES))
    running_job(h)   # master on S4 (on-demand), workers on spot markets, 1 cpu each
    start = h.now
    h(ev.Tick(), 100.0)
    u = _usage(h)
    # The master: 1 cpu (+ nothing else) x 100 s on on-demand; 2 workers on two spot markets.
    assert u[("on-demand", "useful")][0] == pytest.approx(100.0 + (h.now - start - 100.0), abs=1)
    spot = sum(v[0] for (m, c), v in u.items() if m.startswith("spot") and c == "useful")
    assert spot == pytest.approx(200.0, abs=2)
    view = h.s.view(KEY)
    c = view.cost
    assert c is not None and c.currency == "EUR"
    # 1 cpu-h costs 3.6 on demand, 1.2 on spot: per second 0.001 and 0.000333.
    assert c.useful == pytest.approx(100 * 0.001 + 200 * 1.2 / 3600, rel=0.03)
    assert c.on_demand == pytest.approx(300 * 0.001, rel=0.03)
    assert c.savings == pytest.approx(c.on_demand - c.total)
    assert c.lost == c.checkpoint == c.spare == 0


def test_a_loss_moves_work_since_the_checkpoint_to_lost() -> None:
    h = Harness(cost=CostConfig(prices=PRICES))
    _, ws = running_job(h)
    tid, agent = ws[0]
    h(ev.Tick(), 10.0)
    h.checkpoint(tid, agent, 1)
    h(ev.Tick(), 30.0)
    h.status(tid, "TASK_LOST", agent, reason="REASON_AGENT_REMOVED")
    u = _usage(h)
    lost = sum(v[0] for (_, c), v in u.items() if c == "lost")
    assert lost == pytest.approx(30.1, abs=0.3)          # since the checkpoint, 1 cpu
    assert h.s.counters()["loss:lost"] == 1
    assert h.s.counters()["work_lost_seconds"] == pytest.approx(lost, abs=0.01)
    c = h.s.view(KEY).cost
    assert c is not None and c.lost > 0


def test_reported_checkpoint_time_is_overhead() -> None:
    h = Harness()
    _, ws = running_job(h)
    tid, agent = ws[0]
    h(ev.Tick(), 20.0)
    h(ev.ExecutorMessage(agent, tid, {"kind": "checkpoint", "task_id": tid, "uri": "u",
                                      "seq": 1, "seconds": 4.0}))
    u = _usage(h)
    assert sum(v[0] for (_, c), v in u.items() if c == "checkpoint") == pytest.approx(4.0)
    # A hostile duration is ignored, not trusted.
    h(ev.ExecutorMessage(agent, tid, {"kind": "checkpoint", "task_id": tid, "uri": "u",
                                      "seq": 2, "seconds": 1e12}))
    u = _usage(h)
    assert sum(v[0] for (_, c), v in u.items() if c == "checkpoint") == pytest.approx(4.0)
    assert h.s.view(KEY).cost is None            # no price table: no money shown


def test_workers_above_the_target_are_spare() -> None:
    h = Harness()
    running_job(h, workers=2)
    h(ev.ScaleJob(KEY, 1))       # worker-1 is above the target until its kill is confirmed
    at = h.now
    h(ev.Tick(), 100.0)
    u = _usage(h)
    spare = sum(v[0] for (_, c), v in u.items() if c == "spare")
    # Two workers run, one is wanted: half of their 2 cpus is spare for 100 s.
    assert spare == pytest.approx((h.now - at) * 1.0, rel=0.01)
    assert spare > 99


def test_ledger_survives_the_store_and_old_documents_load() -> None:
    h = Harness()
    running_job(h)
    h(ev.Tick(), 50.0)
    h(ev.ScaleJob(KEY, 3))       # a change folds the ledger
    job = h.s.state.jobs[KEY]
    intent = export_job(job, h.s.state.attempts)
    assert intent.cost
    head, _, _ = decode_job("/j", KEY, encode_job(KEY, intent, 1, 1))
    assert head.cost == intent.cost
    # A record written before the ledger existed has no "cost" and loads with none.
    plain = encode_job(KEY, replace(intent, cost={}), 1, 1)
    assert b'"cost"' not in plain
    assert decode_job("/j", KEY, plain)[0].cost == {}


def test_budget_holds_new_jobs_of_a_role_over_it() -> None:
    cfg = CostConfig(prices=PRICES, budgets={"ml": Budget(amount=0.05, window_s=86400)})
    h = Harness(cost=cfg)
    running_job(h)
    h(ev.Tick(), 200.0)          # ~0.2 EUR spent by now: over budget
    h(ev.KillJob(KEY))
    other = replace(make_spec(1), name="next")
    h(ev.SubmitJob(other, "r2"))
    h(ev.Tick(), 11.0)
    view = h.s.view("ml/prod/next")
    why = view.tasks[0].why
    assert why is not None and why.code == WHY_BUDGET and "over its budget" in why.detail
    assert not launches(h.offers("S4"))                  # held: not placed
    assert h.s.pending_by_why().get((WHY_BUDGET, "")) == 1


def test_price_and_policy_files_name_every_bad_field() -> None:
    with pytest.raises(PriceFileError) as e:
        parse_prices({"markets": {"spot": {"cpu_hour": -1, "ram": 2}}, "on_demand": "x"})
    text = str(e.value)
    assert "markets.spot.cpu_hour" in text and "markets.spot.ram" in text
    assert "on_demand" in text
    with pytest.raises(PriceFileError):
        parse_prices({"markets": {}})
    pol = parse_policy({"roles": [{"name": "ml", "budget": {"amount": 10}}]})
    assert pol.budgets["ml"] == Budget(10.0)
    with pytest.raises(PolicyFileError, match=r"roles\[0\]\.budget\.amount"):
        parse_policy({"roles": [{"name": "ml", "budget": {"amount": "lots"}}]})


def test_readouts_come_from_indexes_and_agree_with_the_state() -> None:
    h = Harness()
    running_job(h, workers=2)
    s: Scheduler = h.s
    tally = dict(s.tally())
    assert tally[("ml", "preferred", "worker", "running")] == 2
    assert tally[("ml", "preferred", "master", "running")] == 1
    assert s.jobs_by_state() == {("ml", "RUNNING"): 1}
    fig = s.role_figures(h.now)["ml"]
    assert fig.workers_running == 2 and fig.workers_desired == 2
    assert fig.allocation[0] == pytest.approx(3.0)      # 1 cpu each: master + 2 workers
    h(ev.ScaleJob(KEY, 4))
    assert s.pending_by_why() == {("offers", ""): 2}
    s.validate()   # the tally matches a recount


def test_priced_without_a_table_keeps_cpu_hours() -> None:
    v = cost.priced({("spot", "useful"): [7200.0, 0, 0, 0]}, None)
    assert v.total == 0 and v.cpu_hours["useful"] == 2.0 and v.currency == ""


def test_spend_the_history_reports_counts_against_the_budget() -> None:
    cfg = CostConfig(prices=PRICES, budgets={"ml": Budget(amount=5.0)})
    h = Harness(cost=cfg)
    h(ev.Subscribed("fw"))
    h(ev.SpendReported((("ml", 6.0), ("bad", float("nan")))))
    h(ev.SubmitJob(make_spec(1), "r1"))
    h(ev.Tick(), 0.5)
    assert h.s.view(KEY).tasks[0].why.code == WHY_BUDGET  # type: ignore[union-attr]
    assert not launches(h.offers("S4"))
    h(ev.SpendReported((("ml", 1.0),)))     # older jobs left the window
    h(ev.Tick(), 0.5)
    assert launches(h.offers("S4"))


def test_running_ledgers_are_stored_a_few_per_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs started together are not all written in one tick: at most
    ``STORED_PER_CHECK`` ledgers per budget check, the rest at the next checks."""
    monkeypatch.setattr(cost, "STORED_PER_CHECK", 2)
    h = Harness(cost=CostConfig(prices=PRICES))
    h(ev.Subscribed("fw"))
    names = [f"j{i}" for i in range(5)]
    for i, name in enumerate(names):
        h(ev.SubmitJob(replace(make_spec(0), name=name), f"r{i}"))
    for (agent, t) in launches(h.offers("S1", "S2", "S3", "S4")):
        h.status(t.task_id, "TASK_RUNNING", agent)
    h(ev.Tick(), cost.BUDGET_CHECK_EVERY)
    stored = []
    for _ in range(3):
        out = h(ev.Tick(), cost.PERSIST_EVERY if not stored else cost.BUDGET_CHECK_EVERY)
        stored.append(sorted(e.key for e in out if isinstance(e, fx.PersistJob)))
    assert [len(s) for s in stored] == [2, 2, 1]
    assert sorted(k for s in stored for k in s) == sorted(f"ml/prod/{n}" for n in names)
