"""The pure parts of localmesos: resources, the DRF allocator, validation, reconciliation."""

from __future__ import annotations

import random

import pytest

from corral.core.resources import ZERO, Resources
from corral.localmesos import allocator, validation
from corral.localmesos.protocol import Pool, ResourceError, parse_resources


def test_parse_resources_round_trip() -> None:
    pool = Pool(Resources(2, 512), Resources(1, 0), frozenset(range(31000, 31003)))
    assert parse_resources(pool.to_json()) == pool
    with pytest.raises(ResourceError):
        parse_resources([{"name": "cpus", "type": "SCALAR"}])
    assert parse_resources([{"name": "fpga", "type": "SCALAR",
                             "scalar": {"value": 1}}]).unknown == 1


def _agent(aid: str, cpus: float = 4, gpus: float = 0) -> allocator.AgentSlot:
    return allocator.AgentSlot(aid, Pool(Resources(cpus, 1024, 0, gpus)), ZERO, gpus > 0)


def test_drf_gives_next_agent_to_poorest_framework() -> None:
    fws = [allocator.FrameworkSlot("a", ("*",), ZERO), allocator.FrameworkSlot("b", ("x",), ZERO)]
    grants = allocator.allocate([_agent("s1"), _agent("s2")], fws, Resources(8, 2048), 0,
                                random.Random(1))
    # Equal shares: "a" by id; then "a" holds half the cluster, so "b" gets the next agent.
    assert [g.framework_id for g in grants] == ["a", "b"]
    fws[0] = allocator.FrameworkSlot("a", ("*",), Resources(4, 1024),
                                     role_holds={"*": Resources(4, 1024)})
    grants = allocator.allocate([_agent("s1")], fws, Resources(8, 2048), 0, random.Random(1))
    assert [g.framework_id for g in grants] == ["b"]


def test_filters_suppression_and_gpus() -> None:
    f = allocator.Filter(Pool(Resources(4, 1024)), expires=10)
    fw = allocator.FrameworkSlot("a", ("*",), ZERO, filters={"s1": [f]})
    assert allocator.allocate([_agent("s1")], [fw], Resources(4, 1024), 5, random.Random()) == []
    assert len(allocator.allocate([_agent("s1")], [fw], Resources(4, 1024), 11,
                                  random.Random())) == 1
    sup = allocator.FrameworkSlot("a", ("*",), ZERO, suppressed=frozenset({"*"}))
    assert allocator.allocate([_agent("s1")], [sup], Resources(4), 0, random.Random()) == []
    plain = allocator.FrameworkSlot("a", ("*",), ZERO)
    assert allocator.allocate([_agent("g", gpus=1)], [plain], Resources(4), 0,
                              random.Random()) == []


def test_revocable_only_to_capable_frameworks() -> None:
    agent = allocator.AgentSlot("s1", Pool(Resources(1, 64)), Resources(2, 128), False)
    plain = allocator.FrameworkSlot("a", ("*",), ZERO)
    rev = allocator.FrameworkSlot("b", ("*",), Resources(1), revocable_capable=True)
    grants = allocator.allocate([agent], [plain, rev], Resources(1, 64), 0, random.Random())
    assert [(g.framework_id, g.resources.revocable) for g in grants] == [
        ("a", ZERO), ("b", Resources(2, 128))]


def test_offers_error_cases() -> None:
    offers = {"o1": ("f", "s1"), "o2": ("f", "s2"), "o3": ("g", "s1")}
    assert validation.offers_error(["o1"], "f", offers) is None
    for ids in (["x"], ["o1", "o1"], ["o1", "o2"], ["o3"], []):
        assert validation.offers_error(ids, "f", offers) is not None


@pytest.mark.parametrize(("known", "agent", "aware", "expected"), [
    ("TASK_RUNNING", "registered", True, "TASK_RUNNING"),
    ("TASK_UNREACHABLE", None, False, "TASK_LOST"),
    (None, "registered", True, "TASK_GONE"), (None, "registered", False, "TASK_LOST"),
    (None, "unreachable", True, "TASK_UNREACHABLE"), (None, "unreachable", False, "TASK_LOST"),
    (None, "gone", True, "TASK_GONE_BY_OPERATOR"), (None, "gone", False, "TASK_LOST"),
    (None, None, True, "TASK_UNKNOWN"), (None, None, False, "TASK_LOST"),
    (None, "recovering", True, None),
])
def test_reconcile_table(known: str | None, agent: str | None, aware: bool,
                         expected: str | None) -> None:
    assert validation.reconcile_state(known, agent, aware) == expected


def test_check_task_accepts_and_consumes() -> None:
    task = {"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "s"},
            "command": {"value": "true"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}]}
    check = validation.check_task(task, agent_id="s", remaining=Pool(Resources(2)),
                                  known_task_ids=set(), executors={})
    assert check.error is None and check.task_pool == Pool(Resources(1))
    assert validation.check_task(task, agent_id="other", remaining=Pool(Resources(2)),
                                 known_task_ids=set(), executors={}).error
