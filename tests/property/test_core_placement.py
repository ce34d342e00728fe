"""Properties of placement: offers never over-committed, no key placed twice, pools never
mixed, every pending task either placed or vetoed with a reason."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.model import Constraints, Offer, TaskKey, TaskKind, Tier
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, place
from corral.core.placement.pool import milli
from corral.core.resources import Resources

amount = st.sampled_from([0, 0.1, 0.5, 1, 1.5, 2, 3.333, 4, 8])
mem = st.sampled_from([0, 64, 256, 1000, 2048, 4096])


@st.composite
def offers(draw) -> list[Offer]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        lo = draw(st.integers(1000, 1010))
        ranges = tuple((lo + 20 * k, lo + 20 * k + draw(st.integers(0, 3)))
                       for k in range(draw(st.integers(0, 2))))
        out.append(Offer(
            f"O{i}", f"S{draw(st.integers(0, 4))}", "h",
            Resources(draw(amount), draw(mem)),
            Resources(draw(amount), draw(mem)) if draw(st.booleans()) else Resources(),
            ranges,
            (("zone", draw(st.sampled_from("ab"))),),
        ))
    return out


@st.composite
def pending(draw) -> list[PendingTask]:
    out = []
    for j in range(draw(st.integers(1, 4))):
        job = f"r/e/j{j}"
        tier = draw(st.sampled_from(list(Tier)))
        cons = Constraints(
            max_per_host=draw(st.none() | st.integers(1, 3)),
            attributes=(("zone", "a"),) if draw(st.booleans()) else (),
            spread_over="zone" if draw(st.booleans()) else None,
        )
        res = Resources(draw(amount), draw(mem))
        ports = draw(st.integers(0, 3))
        if draw(st.booleans()):
            out.append(PendingTask(TaskKey(job, TaskKind.MASTER), res, ports, tier, cons))
        for i in range(draw(st.integers(0, 6))):
            out.append(PendingTask(TaskKey(job, TaskKind.WORKER, i), res, ports, tier, cons))
    return draw(st.permutations(out))


facts = st.builds(
    PlacementFacts,
    jobs=st.dictionaries(st.sampled_from([f"r/e/j{j}" for j in range(4)]),
                         st.builds(JobFacts, master_running=st.booleans(),
                                   tasks_per_agent=st.dictionaries(
                                       st.sampled_from([f"S{i}" for i in range(5)]),
                                       st.integers(0, 2)))),
    draining=st.dictionaries(st.sampled_from([f"S{i}" for i in range(5)]), st.just(0.0),
                             max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(pending(), offers(), facts)
def test_placement_invariants(tasks: list[PendingTask], offs: list[Offer],
                              f: PlacementFacts) -> None:
    plan = place(tasks, offs, f)
    by_agent: dict[str, list[Offer]] = defaultdict(list)
    for o in offs:
        by_agent[o.agent_id].append(o)
    placed_keys = [a.task.key for a in plan.placed()]
    # No key placed twice (in particular, no master twice).
    assert len(placed_keys) == len(set(placed_keys))
    # Every distinct pending key is either placed or vetoed with at least one reason.
    assert set(placed_keys) | set(plan.vetoes) == {t.key for t in tasks}
    assert not set(placed_keys) & set(plan.vetoes)
    assert all(reasons and all(reasons) for reasons in plan.vetoes.values())
    for agent, assigned in plan.assignments.items():
        mine = by_agent[agent]
        assert plan.offer_ids[agent] == tuple(o.id for o in mine)
        for pool in (False, True):
            offered = sum((milli(o.revocable if pool else o.resources) for o in mine), 0)
            used = sum((milli(a.task.resources) for a in assigned if a.revocable == pool), 0)
            assert (used <= offered).all()
        ports = [p for a in assigned for p in a.ports]
        assert len(ports) == len(set(ports))
        allowed = {p for o in mine for lo, hi in o.ports for p in range(lo, hi + 1)}
        assert set(ports) <= allowed
        for a in assigned:
            assert a.revocable == a.task.revocable             # a task never mixes pools
            assert len(a.ports) == a.task.ports
            if a.task.key.kind is TaskKind.WORKER:
                assert f.jobs.get(a.task.key.job, JobFacts()).master_running
            assert agent not in f.draining
            cons = a.task.constraints
            if cons.attributes:
                assert dict(mine[0].attributes)["zone"] == "a"
            if cons.max_per_host is not None:
                same = sum(1 for b in assigned if b.task.key.job == a.task.key.job)
                before = f.jobs.get(a.task.key.job, JobFacts()).tasks_per_agent.get(agent, 0)
                assert same + before <= cons.max_per_host
