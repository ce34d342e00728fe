"""The policy's capacity estimate, kept incrementally, always equals a full recount.

A full recount is written here independently: for every agent Mesos has not reported
lost, the room its last offers had left plus what our live tasks hold there.
"""

from __future__ import annotations

import random

from corral.core import events as ev
from corral.core.elastic import Elastic
from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool
from corral.core.resources import Resources
from corral.core.scheduler import Scheduler


def recount(s: Scheduler, offered: dict[str, Resources]) -> tuple[float, float]:
    cpus = mem = 0.0
    for agent_id in set(offered) | set(s.state.agents):
        agent = s.state.agents.get(agent_id)
        if agent is not None and agent.lost:
            continue
        room = offered.get(agent_id, Resources())
        cpus, mem = cpus + room.cpus, mem + room.mem
        for tid in agent.tasks if agent is not None else ():
            att = s.state.attempts[tid]
            cpus, mem = cpus + att.resources.cpus, mem + att.resources.mem
    return cpus, mem


def test_capacity_follows_offers_launches_losses_and_returns() -> None:
    rng = random.Random(3)
    el = Elastic(interval=1e9)
    s = Scheduler(elastic=el)
    s.handle(ev.Subscribed("fw"), 0.0)
    t = TaskTemplate("x", Resources(1, 256))
    for j in range(6):
        s.handle(ev.SubmitJob(JobSpec("r", "e", f"j{j}", master=t,
                                      workers=WorkerPool(t, 1, 8, 4)), f"q{j}"), 0.0)
    offered: dict[str, Resources] = {}
    now, n = 1.0, 0
    for step in range(200):
        now += 1.0
        roll = rng.random()
        if roll < 0.5:
            offers = []
            for a in rng.sample(range(12), 3):
                n += 1
                offers.append(Offer(f"O{n}", f"S{a}", f"h{a}", Resources(4, 2048)))
            out = s.handle(ev.OffersReceived(tuple(offers)), now)
            for o in offers:
                offered[o.agent_id] = o.resources
            for e in out:
                for task in getattr(e, "tasks", ()):
                    left = offered[e.agent_id]
                    offered[e.agent_id] = Resources(max(0.0, left.cpus - task.resources.cpus),
                                                    max(0.0, left.mem - task.resources.mem))
                    s.handle(ev.StatusUpdate(task.task_id, "TASK_RUNNING", e.agent_id,
                                             uuid="u"), now)
        elif roll < 0.65 and s.state.attempts:
            att = rng.choice(list(s.state.attempts.values()))
            if att.live and att.agent_id:
                s.handle(ev.StatusUpdate(att.task_id, "TASK_LOST", att.agent_id,
                                         reason="REASON_AGENT_REMOVED", uuid="u"), now)
        elif roll < 0.72:
            s.handle(ev.AgentLost(f"S{rng.randrange(12)}"), now)
        cpus, mem = recount(s, offered)
        got, _ = el.capacity(s.state)
        assert abs(got.cpus - cpus) < 1e-6 and abs(got.mem - mem) < 1e-6, (step, got,
                                                                             cpus, mem)
