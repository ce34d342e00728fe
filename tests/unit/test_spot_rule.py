"""The over-provisioning rule (``core.spot``) and loss accounting (``core.accounting``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.core.accounting import JobAccounting, work_lost
from corral.core.spot import OverProvision, lead_time, peak_in_window, spare_workers


def test_peak_in_window() -> None:
    assert peak_in_window([], 5) == 0
    assert peak_in_window([1.0], 5) == 1
    assert peak_in_window([0, 1, 2, 10, 11, 30], 2) == 3
    assert peak_in_window([0, 10, 20], 9.99) == 1
    assert peak_in_window([20, 0, 10], 10) == 2            # unsorted input, closed interval


@given(st.lists(st.floats(0, 1000), max_size=40), st.floats(0.1, 100))
def test_peak_matches_brute_force(times: list[float], window: float) -> None:
    brute = max((sum(1 for u in times if t <= u <= t + window) for t in times), default=0)
    assert peak_in_window(times, window) == brute


def test_spare_workers_rule() -> None:
    rule = OverProvision(multiple=1.5, horizon_seconds=100, default_lead_seconds=10)
    s = spare_workers([50, 55, 58], [], 60, rule, room=10)
    assert (s.peak, s.lead_seconds, s.workers) == (3, 10, 5)     # ceil(3 x 1.5)
    # Observed recoveries set the lead time: 2 s windows see at most 2 of them.
    s = spare_workers([50, 55, 56], [1.0, 2.0], 60, rule, room=10)
    assert (s.peak, s.lead_seconds, s.workers) == (2, 2.0, 3)
    s = spare_workers([50, 55, 58], [], 60, rule, room=2)
    assert s.workers == 2 and "capped at 2" in s.reason
    s = spare_workers([50, 55, 58], [], 200, rule, room=10)      # all older than the horizon
    assert s.workers == 0 and "no terminations" in s.reason
    s = spare_workers([50], [], 60, OverProvision(multiple=0), room=10)
    assert s.workers == 0 and s.reason == "over-provisioning off"
    assert lead_time([0.01], rule) == rule.min_lead_seconds


def test_rule_rejects_bad_settings() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            OverProvision(multiple=bad)
    with pytest.raises(ValueError):
        OverProvision(horizon_seconds=0)


def test_work_lost() -> None:
    assert work_lost(100, None, None) == 0.0                     # never ran
    assert work_lost(100, 40, None) == 60                        # since start
    assert work_lost(100, 40, 90) == 10                          # since checkpoint
    assert work_lost(100, 95, 90) == 5                           # checkpoint predates start
    assert work_lost(100, 120, None) == 0.0


def test_accounting_records_and_bounds() -> None:
    a = JobAccounting(keep=3)
    a.lost("worker-0", "t1", "lost", 10.0, 4.0)
    a.lost("worker-1", "t2", "notice", 11.0, 0.0)
    a.running("worker-1", "t3", 11.5)
    a.add_work("worker-1", "t2", 12.0, 2.0)                      # drained task died late
    a.running("worker-0", "t4", 12.0)
    assert (a.losses, a.recoveries, a.work_lost_seconds) == (2, 2, 6.0)
    assert a.recovery_seconds_max == 2.0 and a.recovery_seconds_total == 2.5
    r0, r1 = a.recent
    assert (r0.recovery_seconds, r0.replacement_task_id) == (2.0, "t4")
    assert (r1.work_lost_seconds, r1.recovery_seconds) == (2.0, 0.5)
    a.running("worker-0", "t5", 20.0)                            # no open loss: no change
    assert a.recoveries == 2
    for i in range(5):
        a.lost(f"worker-{i + 5}", f"x{i}", "lost", 30.0 + i, 1.0)
    assert len(a.recent) == 3 and a.losses == 7 and a.work_lost_seconds == 11.0
    a.forget("worker-9")
    assert "worker-9" not in a.open_slots()
