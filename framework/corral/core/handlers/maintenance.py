"""Maintenance and machine loss: inverse offers, unavailability notices, lost agents and
executors.

A *notice* (an inverse offer, or an offer's unavailability window: how a spot
termination notice reaches Mesos) marks the agent draining: nothing new is placed there,
and every attempt on it gets the lifecycle input ``NOTICE`` (a running worker drains
beside a replacement started at once; a master is killed so it checkpoints and is then
moved — never two masters). Inverse offers are accepted once none of our tasks is left on
the agent.
"""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.handlers import lifecycle as lc
from corral.core.handlers.context import Ctx
from corral.core.slot_state import Input
from corral.core.state import CoreState


def on_inverse_offers(st: CoreState, e: ev.InverseOffersReceived, ctx: Ctx) -> None:
    for io in e.offers:
        if io.agent_id is None:
            ctx.note(f"inverse offer {io.id} without an agent ignored")
            continue
        start = io.start if io.start is not None else ctx.now
        end = start + io.duration if io.duration is not None else None
        agent = st.agent(io.agent_id)
        agent.inverse_offers.add(io.id)
        st.inverse_offers[io.id] = io.agent_id
        agent.drain = (start, end)
        notice(st, ctx, io.agent_id, start, end, f"inverse offer {io.id}")


def on_inverse_rescinded(st: CoreState, e: ev.InverseOfferRescinded, ctx: Ctx) -> None:
    agent_id = st.inverse_offers.pop(e.id, None)
    st.inverse_accepted.discard(e.id)
    if agent_id is None:
        return
    agent = st.agent(agent_id)
    agent.inverse_offers.discard(e.id)
    if not agent.inverse_offers:
        agent.drain = None


def notice(st: CoreState, ctx: Ctx, agent_id: str, start: float, end: float | None,
           why: str) -> None:
    """``agent_id`` goes away at ``start``: stop placing there, and move its attempts."""
    agent = st.agent(agent_id)
    if agent.drain is None:
        agent.drain = (start, end)
    moved = 0
    for tid in sorted(agent.tasks):
        att = st.attempts[tid]
        job = att.job
        if not job.active() or not att.life.active:
            continue  # already being killed, drained or written off
        att.deadline = start
        if lc.drive(st, ctx, att, Input.NOTICE) is not None:
            moved += 1
    ctx.note(f"agent {agent_id} unavailable from {start:.0f} ({why}); moving {moved} task(s)")


def accept_inverse_offers(st: CoreState, ctx: Ctx) -> None:
    """Accept the inverse offers of agents none of our tasks is left on."""
    ready = sorted(i for i, agent in st.inverse_offers.items()
                   if i not in st.inverse_accepted and not st.agent(agent).tasks)
    if ready:
        st.inverse_accepted.update(ready)
        ctx.emit(fx.AcceptInverseOffers(tuple(ready)))


def on_agent_lost(st: CoreState, e: ev.AgentLost, ctx: Ctx) -> None:
    # Mesos sends a status update for every task there; count nothing here.
    st.set_agent_lost(e.agent_id, True)
    ctx.note(f"agent {e.agent_id} lost")


def on_executor_exited(st: CoreState, e: ev.ExecutorExited, ctx: Ctx) -> None:
    ctx.note(f"executor {e.executor_id} on {e.agent_id} exited (status {e.status})")
