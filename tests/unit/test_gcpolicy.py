"""The runtime's garbage-collector policy (``corral.runtime.gcpolicy``), on this process's
real collector: what it freezes, when it collects whole, and that young cycles are never
frozen. Each test gives the heap back to Python's collector when it ends."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from corral.runtime.gcpolicy import GcPolicy


class Node:
    """A weakly referenceable object that can sit in a cycle."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def policy() -> Iterator[GcPolicy]:
    p = GcPolicy(freeze_every_s=5.0, full_every_s=3600.0)
    try:
        yield p
    finally:
        p.stop()
        gc.collect()


def cycle() -> weakref.ref[Node]:
    return weakref.ref(Node())


def test_first_turn_collects_whole_and_freezes(policy: GcPolicy) -> None:
    young = cycle()
    policy.after_turn(0.0)
    assert policy.full_passes == 1 and policy.last_full_s > 0
    assert young() is None                 # the full pass freed it
    assert gc.get_freeze_count() > 0


def test_survivors_are_frozen_every_interval_and_young_cycles_freed_first(
        policy: GcPolicy) -> None:
    policy.after_turn(0.0)
    frozen = gc.get_freeze_count()
    kept = [[i] for i in range(20_000)]
    policy.after_turn(1.0)                 # before the interval: nothing frozen
    assert gc.get_freeze_count() <= frozen
    young = cycle()
    policy.after_turn(6.0)
    assert young() is None                 # collected, not frozen
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert policy.full_passes == 1


def test_a_frozen_cycle_waits_for_the_next_full_pass(policy: GcPolicy) -> None:
    policy.after_turn(0.0)
    node = Node()
    ref = weakref.ref(node)
    policy.after_turn(6.0)                 # frozen while still referenced
    del node
    gc.collect()
    assert ref() is not None               # the collector no longer walks it
    policy.after_turn(12.0)
    assert ref() is not None and policy.full_passes == 1
    policy.after_turn(3600.0)              # the hourly full pass
    assert ref() is None and policy.full_passes == 2


def test_a_grown_heap_gets_a_full_pass_before_the_hour(policy: GcPolicy) -> None:
    policy.growth = 0.01
    policy.after_turn(0.0)
    kept = [[i] for i in range(150_000)]
    policy.after_turn(6.0)                 # frozen: the heap grew past the allowance
    assert policy.full_passes == 1
    policy.after_turn(7.0)
    assert policy.full_passes == 2 and len(kept) == 150_000


def test_stop_gives_the_heap_back() -> None:
    p = GcPolicy()
    p.after_turn(0.0)
    assert gc.get_freeze_count() > 0
    p.stop()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("kw", [{"freeze_every_s": 0.0}, {"full_every_s": float("nan")},
                                {"growth": -1.0}])
def test_bad_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GcPolicy(**kw)
