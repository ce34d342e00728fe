"""Placement: vetoes with reasons, ordering rules, bin-packing, spreading, ports."""

from __future__ import annotations

from corral.core.model import Constraints, Offer, TaskKey, TaskKind, Tier
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, Plan, Veto, place
from corral.core.resources import Resources

JOB = "ml/prod/train"


def offer(i: int, cpus: float = 4, mem: float = 4096, *, rev: Resources | None = None,
          ports: tuple[tuple[int, int], ...] = ((31000, 31009),), attrs=(),
          unavailable_at: float | None = None, agent: str | None = None) -> Offer:
    return Offer(f"O{i}", agent or f"S{i}", f"host{i}", Resources(cpus, mem),
                 rev or Resources(), ports, tuple(attrs), unavailable_at)


def master(job: str = JOB, cpus: float = 1, ports: int = 1, **kw) -> PendingTask:
    return PendingTask(TaskKey(job, TaskKind.MASTER), Resources(cpus, 256), ports, **kw)


def worker(i: int, job: str = JOB, cpus: float = 1, ports: int = 0, **kw) -> PendingTask:
    return PendingTask(TaskKey(job, TaskKind.WORKER, i), Resources(cpus, 256), ports, **kw)


def running(*jobs: str, **kw) -> PlacementFacts:
    return PlacementFacts(jobs={j: JobFacts(master_running=True, **kw) for j in jobs})


def texts(plan: Plan, key: TaskKey) -> tuple[str, ...]:
    """The plan's vetoes for ``key`` in words, as ``corral status`` shows them."""
    return tuple(v.render() for v in plan.vetoes[key])


def where(plan) -> dict[str, str]:
    return {a.task.key.label(): a.agent_id for a in plan.placed()}


def test_master_placed_workers_wait_for_master() -> None:
    plan = place([master(), worker(0), worker(1)], [offer(1)])
    assert where(plan) == {"master": "S1"}
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0)) == ("master not running yet",)


def test_insufficient_cpus_reason_names_agent_and_amounts() -> None:
    plan = place([worker(0, cpus=2)], [offer(1, cpus=1.5)], running(JOB))
    (reason,) = texts(plan, TaskKey(JOB, TaskKind.WORKER, 0))
    assert reason == "insufficient cpus on agent S1 (need 2, have 1.5)"
    assert plan.unused_offer_ids() == ["O1"]


def test_attribute_constraint_reason() -> None:
    c = Constraints(attributes=(("zone", "a"),))
    plan = place([worker(0, constraints=c)], [offer(1, attrs=[("zone", "b")])], running(JOB))
    (reason,) = texts(plan, TaskKey(JOB, TaskKind.WORKER, 0))
    assert reason.startswith("attribute zone=b, need a")
    plan = place([worker(0, constraints=c)], [offer(1, attrs=[("zone", "b")]),
                                              offer(2, attrs=[("zone", "a")])], running(JOB))
    assert where(plan) == {"worker-0": "S2"}


def test_max_per_host_counts_existing_and_this_round() -> None:
    c = Constraints(max_per_host=1)
    facts = running(JOB, tasks_per_agent={"S3": 1})
    plan = place([worker(0, constraints=c), worker(1, constraints=c)], [offer(3)], facts)
    assert plan.placed() == []
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0)) == ("max_per_host 1 reached on agent S3",)
    plan = place([worker(i, constraints=c) for i in range(3)], [offer(1), offer(2)], running(JOB))
    assert sorted(where(plan).values()) == ["S1", "S2"]
    assert len(plan.vetoes) == 1


def test_revocable_tier_needs_revocable_and_preferred_never_uses_it() -> None:
    rev_only = offer(1, cpus=0, mem=0, rev=Resources(8, 8192))
    plain = offer(2)
    plan = place([worker(0, tier=Tier.REVOCABLE)], [plain], running(JOB))
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0))[0].startswith(
        "revocable tier needs revocable resources")
    plan = place([worker(0, tier=Tier.PREFERRED)], [rev_only], running(JOB))
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0))[0].startswith(
        "preferred tier never uses revocable resources")
    plan = place([worker(0, tier=Tier.REVOCABLE)], [rev_only], running(JOB))
    (a,) = plan.placed()
    assert a.revocable and a.agent_id == "S1"


def test_master_of_revocable_job_uses_non_revocable_only() -> None:
    both = offer(1, cpus=1, rev=Resources(8, 8192))
    plan = place([master(tier=Tier.REVOCABLE), worker(0, tier=Tier.REVOCABLE)], [both],
                 running(JOB))
    kinds = {a.task.key.label(): a.revocable for a in plan.placed()}
    assert kinds == {"master": False, "worker-0": True}


def test_draining_agent_vetoed_and_unavailability_avoided() -> None:
    facts = PlacementFacts(jobs={JOB: JobFacts(True)}, draining={"S1": 1000.0}, now=10.0)
    plan = place([worker(0)], [offer(1)], facts)
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0)) == (
        "agent S1 draining (unavailable at 1000)",)
    # A future maintenance window is only a ranking penalty: used when nothing else fits.
    soon = offer(1, cpus=1, unavailable_at=500.0)
    plan = place([worker(0)], [soon, offer(2, cpus=16)], running(JOB))
    assert where(plan) == {"worker-0": "S2"}
    plan = place([worker(0)], [soon], running(JOB))
    assert where(plan) == {"worker-0": "S1"}
    # A window that has begun vetoes.
    plan = place([worker(0)], [offer(1, unavailable_at=5.0)],
                 PlacementFacts(jobs={JOB: JobFacts(True)}, now=10.0))
    assert "draining" in texts(plan, TaskKey(JOB, TaskKind.WORKER, 0))[0]


def test_ports_allocated_distinct_and_no_ports_reason() -> None:
    plan = place([worker(i, ports=3) for i in range(4)], [offer(1, ports=((100, 109),))],
                 running(JOB))
    got = [p for a in plan.placed() for p in a.ports]
    assert len(plan.placed()) == 3 and len(got) == len(set(got)) == 9
    assert all(100 <= p <= 109 for p in got)
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 3)) == (
        "not enough ports on agent S1 (need 3, have 1)",)
    plan = place([worker(0, ports=1)], [offer(1, ports=())], running(JOB))
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0)) == ("no ports on agent S1",)


def test_offers_of_one_agent_are_merged() -> None:
    a = offer(1, cpus=1, agent="S9")
    b = offer(2, cpus=1, agent="S9", ports=((200, 200),))
    plan = place([worker(0, cpus=2, ports=2)], [a, b], running(JOB))
    assert plan.offer_ids == {"S9": ("O1", "O2")}
    (x,) = plan.placed()
    assert x.agent_id == "S9" and len(x.ports) == 2


def test_binpack_fills_fullest_agent_first() -> None:
    plan = place([worker(i) for i in range(3)], [offer(1, cpus=16), offer(2, cpus=3)],
                 running(JOB))
    assert set(where(plan).values()) == {"S2"}


def test_spread_over_attribute() -> None:
    c = Constraints(spread_over="zone")
    offers = [offer(i, cpus=16, attrs=[("zone", "abc"[i % 3])]) for i in range(6)]
    plan = place([worker(i, constraints=c) for i in range(6)], offers, running(JOB))
    zones = sorted(dict(offers[int(a.agent_id[1:])].attributes)["zone"] for a in plan.placed())
    assert zones == ["a", "a", "b", "b", "c", "c"]
    facts = running(JOB, spread_counts={"a": 2, "b": 2})
    plan = place([worker(i, constraints=c) for i in range(2)], offers, facts)
    zones = [dict(offers[int(a.agent_id[1:])].attributes)["zone"] for a in plan.placed()]
    assert zones == ["c", "c"]


def test_duplicate_master_key_placed_once_and_no_offers_reason() -> None:
    plan = place([master(), master()], [offer(1)])
    assert len(plan.placed()) == 1
    plan = place([master()], [])
    assert texts(plan, TaskKey(JOB, TaskKind.MASTER)) == ("no offers",)


def test_vetoes_summarise_many_agents() -> None:
    offers = [offer(i, cpus=0.5) for i in range(5)]
    plan = place([worker(0)], offers, running(JOB))
    assert texts(plan, TaskKey(JOB, TaskKind.WORKER, 0)) == (
        "insufficient cpus on agent S0 (need 1, have 0.5) (and 4 more agents)",)
    # As data: the check, how many agents it ruled out, one example.
    assert plan.vetoes[TaskKey(JOB, TaskKind.WORKER, 0)] == (
        Veto("resources.cpus", 5, "S0", "insufficient cpus on agent S0 (need 1, have 0.5)"),)


def test_vetoes_charge_each_agent_to_its_first_failing_check() -> None:
    c = Constraints(attributes=(("zone", "a"),))
    offers = [offer(1, attrs=[("zone", "b")]), offer(2, attrs=[("zone", "b")]),
              offer(3, cpus=0.5, attrs=[("zone", "a")])]
    plan = place([worker(0, constraints=c)], offers, running(JOB))
    vetoes = plan.vetoes[TaskKey(JOB, TaskKind.WORKER, 0)]
    assert [(v.check, v.agents, v.example) for v in vetoes] == [
        ("attributes", 2, "S1"), ("resources.cpus", 1, "S3")]


def test_masters_first_and_deterministic() -> None:
    tasks = [worker(0, job="a/b/w"), master(job="a/b/m", cpus=4)]
    plan = place(tasks, [offer(1, cpus=4)], running("a/b/w"))
    assert [a.task.key.job for a in plan.placed()] == ["a/b/m"]
    offers = [offer(i) for i in range(20)]
    w = [worker(i) for i in range(30)]
    assert where(place(w, offers, running(JOB))) == where(place(w, offers, running(JOB)))
