"""Corral's own lifecycle of a slot and of each attempt in it, as one transition table.

``task_state`` is the Mesos view of one attempt (TASK_STAGING ... TASK_LOST). This module
is Corral's view: what Corral is doing about a slot and its attempts. One enum, ``Life``,
covers both halves:

- *vacancy* states, for a slot with no current attempt: ``EMPTY`` (not wanted now: above
  the job's target, or the job is over), ``BACKOFF`` (waiting out the restart backoff after
  a failure), ``WAITING`` (a worker waiting for its master to run), ``PENDING`` (wanted
  and placeable: the next offer may take it), ``COMPLETED`` (a worker that exited 0: done
  for good);
- *attempt* states, for one Mesos task Corral launched: ``LAUNCHED`` (ACCEPT sent, Mesos
  has confirmed nothing yet), ``RECONCILING`` (no word within the staging timeout, or the
  ACCEPT could not be sent: explicit reconciliation asked), ``STARTING`` (Mesos knows
  it: staging or starting), ``RUNNING``, ``KILL_SENT`` (Corral asked for it to die),
  ``DRAINING`` (its agent goes away: a master is being moved, a worker finishes its last
  piece of work beside its replacement), ``ENDED`` (terminal, or written off).

A slot's state is its current attempt's state if it has one, else its vacancy. A worker
moved off a draining agent is *detached*: it leaves the slot (which is filled again at
once) and lives on as a retiring attempt in ``DRAINING`` or ``KILL_SENT``; it is the one
moment a slot has two live attempts. A master is never detached: it is killed first and
replaced after it has ended, so a job never runs two masters.

Every edge is ``(kind, state, input) -> (next state, actions)``; the actions are a closed
set the scheduler carries out (``Action``). An input with no edge is ignored with a reason,
like the Mesos table: updates arrive late, twice and out of order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.core.model import TaskKind


class Life(StrEnum):
    # vacancy (no current attempt)
    EMPTY = "empty"
    BACKOFF = "backoff"
    WAITING = "waiting-for-master"
    PENDING = "pending"
    COMPLETED = "completed"
    # attempt
    LAUNCHED = "launched"
    RECONCILING = "reconciling"
    STARTING = "starting"
    RUNNING = "running"
    KILL_SENT = "kill-sent"
    DRAINING = "draining"
    ENDED = "ended"

    @property
    def vacancy(self) -> bool:
        return self in VACANCY

    @property
    def active(self) -> bool:
        """An attempt Corral counts as filling its slot (not being killed, not ended)."""
        return self in ACTIVE


VACANCY = frozenset({Life.EMPTY, Life.BACKOFF, Life.WAITING, Life.PENDING, Life.COMPLETED})
ATTEMPT = frozenset(set(Life) - VACANCY)
ACTIVE = frozenset({Life.LAUNCHED, Life.RECONCILING, Life.STARTING, Life.RUNNING})
# States whose attempt Corral asked to die (a TASK_KILLED then is Corral's own doing).
KILL_REQUESTED = frozenset({Life.KILL_SENT})


class Input(StrEnum):
    # Conditions of a vacant slot (``settle`` picks the one that holds).
    UNWANTED = "unwanted"          # not wanted now; for an attempt: kill it
    BACKOFF = "in-backoff"         # wanted, but the restart backoff has not passed
    NO_MASTER = "no-master"        # a worker wanted, its master not running
    READY = "ready"                # wanted and placeable
    PLACED = "placed"              # an offer took it: ACCEPT with LAUNCH emitted
    # What Mesos says of an attempt (after ``task_state`` and ``classify``).
    CONFIRMED = "confirmed"        # TASK_STAGING / TASK_STARTING / TASK_KILLING
    STARTED = "started"            # TASK_RUNNING
    SUCCEEDED = "succeeded"        # TASK_FINISHED
    FAILED = "failed"              # the job's own failure
    LOST = "lost"                  # the infrastructure's doing (agent gone, revoked, ...)
    KILLED = "killed"              # the kill Corral asked for is done
    # Corral's own.
    NOTICE = "notice"              # the agent becomes unavailable (maintenance, spot)
    RETIRE = "retire"              # not wanted, and its framework can retire it gently
    DEADLINE = "deadline"          # a draining worker must stop now to checkpoint in time
    STAGING_TIMEOUT = "staging-timeout"      # launched, no word from Mesos
    RECONCILE_TIMEOUT = "reconcile-timeout"  # explicit reconciliation went unanswered
    KILL_TIMEOUT = "kill-timeout"  # a kill was not confirmed in its grace + retry time
    SEND_FAILED = "send-failed"    # the shell could not deliver the ACCEPT or KILL


class Action(StrEnum):
    PERSIST = "persist"            # the job's durable intent changed
    KILL = "kill"                  # KILL the attempt (arms the kill timeout)
    RETRY_KILL = "retry-kill"      # try the KILL again soon (it could not be sent)
    RECONCILE = "reconcile"        # explicit RECONCILE of the attempt
    SEND_DRAIN = "send-drain"      # tell the executor: checkpoint and wind down
    ASK_RETIRE = "ask-retire"      # ask the job's master to retire the worker (Dask)
    DETACH = "detach"              # the attempt leaves its slot, which is filled anew
    COUNT_FAILURE = "count-failure"  # the job's failure: restart limit and backoff
    COUNT_LOSS = "count-loss"      # an infrastructure loss: accounting, spares
    COUNT_NOTICE = "count-notice"  # moved ahead of a notice: accounting, spares
    ADD_WORK_LOST = "add-work-lost"  # a noticed attempt did not finish draining in time
    RECOVERED = "recovered"        # the slot runs again: close its open loss
    MASTER_UP = "master-up"        # the job's master runs (job RUNNING, workers told)
    MASTER_DOWN = "master-down"    # the job's master is gone and will be relaunched
    FINISH_JOB = "finish-job"      # the master exited 0: the job is done
    COMPLETE = "complete"          # a worker exited 0: its slot is done for good


@dataclass(frozen=True, slots=True)
class Edge:
    next: Life
    actions: frozenset[Action]
    why: str


_L, _I, _A = Life, Input, Action
_M, _W = TaskKind.MASTER, TaskKind.WORKER


def _build() -> dict[tuple[TaskKind, Life, Input], Edge]:
    edges: dict[tuple[TaskKind, Life, Input], Edge] = {}

    def add(kinds: tuple[TaskKind, ...], states: tuple[Life, ...], inp: Input, nxt: Life,
            actions: tuple[Action, ...], why: str) -> None:
        for k in kinds:
            for s in states:
                edges[(k, s, inp)] = Edge(nxt, frozenset(actions), why)

    both = (_M, _W)
    # --- vacancies: a vacant slot follows its conditions -------------------------------
    vacant = (_L.EMPTY, _L.BACKOFF, _L.WAITING, _L.PENDING)
    for state in vacant:
        kinds = (_W,) if state is _L.WAITING else both  # a master never waits for itself
        others = tuple(s for s in vacant if s is not state)
        if _L.EMPTY in others:
            add(kinds, (state,), _I.UNWANTED, _L.EMPTY, (), "no longer wanted")
        if _L.BACKOFF in others:
            add(kinds, (state,), _I.BACKOFF, _L.BACKOFF, (), "wait out the restart backoff")
        if _L.WAITING in others:
            add((_W,), (state,), _I.NO_MASTER, _L.WAITING, (), "wait for the master to run")
        if _L.PENDING in others:
            add(kinds, (state,), _I.READY, _L.PENDING, (), "wanted and placeable")
    add(both, (_L.PENDING,), _I.PLACED, _L.LAUNCHED, (_A.PERSIST,),
        "placed: the task id is durable before its LAUNCH goes out")

    # --- attempts: what Mesos reports -------------------------------------------------
    fresh = (_L.LAUNCHED, _L.RECONCILING)
    add(both, fresh, _I.CONFIRMED, _L.STARTING, (), "Mesos knows the task")
    add((_M,), (*fresh, _L.STARTING), _I.STARTED, _L.RUNNING, (_A.RECOVERED, _A.MASTER_UP),
        "the master runs: workers may start")
    add((_W,), (*fresh, _L.STARTING), _I.STARTED, _L.RUNNING, (_A.RECOVERED,), "running")
    working = (*fresh, _L.STARTING, _L.RUNNING)
    add((_M,), working, _I.SUCCEEDED, _L.ENDED, (_A.FINISH_JOB, _A.PERSIST),
        "the master exited 0: the job is done")
    add((_W,), working, _I.SUCCEEDED, _L.ENDED, (_A.COMPLETE, _A.PERSIST),
        "the worker exited 0: its slot is done")
    add((_M,), working, _I.FAILED, _L.ENDED, (_A.COUNT_FAILURE, _A.MASTER_DOWN, _A.PERSIST),
        "the master failed: counts against the restart limit")
    add((_W,), working, _I.FAILED, _L.ENDED, (_A.COUNT_FAILURE, _A.PERSIST),
        "the worker failed: counts against the restart limit")
    add((_M,), working, _I.LOST, _L.ENDED, (_A.COUNT_LOSS, _A.MASTER_DOWN, _A.PERSIST),
        "the master was lost to the infrastructure: relaunch, never counted")
    add((_W,), working, _I.LOST, _L.ENDED, (_A.COUNT_LOSS, _A.PERSIST),
        "lost to the infrastructure: relaunch, never counted")
    # --- attempts: Corral's own decisions ---------------------------------------------
    add(both, working, _I.UNWANTED, _L.KILL_SENT, (_A.KILL,), "no longer wanted: kill it")
    add(both, (_L.LAUNCHED,), _I.STAGING_TIMEOUT, _L.RECONCILING, (_A.RECONCILE,),
        "no word from Mesos since the launch: ask explicitly")
    add(both, (_L.LAUNCHED,), _I.SEND_FAILED, _L.RECONCILING, (_A.RECONCILE,),
        "the ACCEPT may not have reached Mesos: ask explicitly")
    add((_M,), (_L.RECONCILING,), _I.RECONCILE_TIMEOUT, _L.ENDED,
        (_A.KILL, _A.COUNT_LOSS, _A.MASTER_DOWN, _A.PERSIST),
        "Mesos never confirmed the launch: write it off (kill any trace) and replace it")
    add((_W,), (_L.RECONCILING,), _I.RECONCILE_TIMEOUT, _L.ENDED,
        (_A.KILL, _A.COUNT_LOSS, _A.PERSIST),
        "Mesos never confirmed the launch: write it off (kill any trace) and replace it")
    # A notice: a running worker drains beside its replacement; anything else is killed.
    add((_W,), (_L.RUNNING,), _I.NOTICE, _L.DRAINING,
        (_A.SEND_DRAIN, _A.DETACH, _A.COUNT_NOTICE, _A.PERSIST),
        "agent going away: checkpoint and finish beside a replacement")
    add((_W,), (*fresh, _L.STARTING), _I.NOTICE, _L.KILL_SENT,
        (_A.KILL, _A.DETACH, _A.COUNT_NOTICE, _A.PERSIST),
        "agent going away before the worker ran: nothing to drain, replace it")
    add((_M,), (_L.RUNNING,), _I.NOTICE, _L.DRAINING,
        (_A.SEND_DRAIN, _A.KILL, _A.COUNT_NOTICE),
        "agent going away: the master checkpoints on SIGTERM, then moves (never two)")
    add((_M,), (*fresh, _L.STARTING), _I.NOTICE, _L.DRAINING, (_A.KILL, _A.COUNT_NOTICE),
        "agent going away before the master ran: kill it, then move it")
    # Scale-down of a worker whose framework moves its results away first (Dask): the
    # job's master retires it; the deadline's kill is the backstop.
    add((_W,), (_L.RUNNING,), _I.RETIRE, _L.DRAINING, (_A.ASK_RETIRE, _A.DETACH),
        "not wanted: its framework retires it (results move first), killed at the deadline")
    # --- a kill in flight ---------------------------------------------------------------
    for inp in (_I.KILLED, _I.SUCCEEDED, _I.FAILED, _I.LOST):
        add(both, (_L.KILL_SENT,), inp, _L.ENDED, (_A.PERSIST,), "the unwanted attempt ended")
    killing = (_L.KILL_SENT,)
    add(both, killing, _I.KILL_TIMEOUT, _L.KILL_SENT, (_A.KILL, _A.RECONCILE),
        "the kill was not confirmed: kill again and ask Mesos")
    add(both, killing, _I.SEND_FAILED, _L.KILL_SENT, (_A.RETRY_KILL,),
        "the KILL could not be sent: try again soon")
    # --- draining -----------------------------------------------------------------------
    # A master being moved was killed on the notice; its end frees the slot.
    add((_M,), (_L.DRAINING,), _I.KILLED, _L.ENDED, (_A.MASTER_DOWN, _A.PERSIST),
        "the master stopped for the notice: relaunch it elsewhere")
    add((_M,), (_L.DRAINING,), _I.SUCCEEDED, _L.ENDED, (_A.FINISH_JOB, _A.PERSIST),
        "the master exited 0 while draining: the job is done")
    add((_M,), (_L.DRAINING,), _I.FAILED, _L.ENDED,
        (_A.COUNT_FAILURE, _A.MASTER_DOWN, _A.PERSIST),
        "the master failed while draining: counts against the restart limit")
    add((_M,), (_L.DRAINING,), _I.LOST, _L.ENDED,
        (_A.ADD_WORK_LOST, _A.MASTER_DOWN, _A.PERSIST),
        "the master was lost before it finished draining")
    add((_M,), (_L.DRAINING,), _I.KILL_TIMEOUT, _L.DRAINING, (_A.KILL, _A.RECONCILE),
        "the master's kill was not confirmed: kill again and ask Mesos")
    add((_M,), (_L.DRAINING,), _I.SEND_FAILED, _L.DRAINING, (_A.RETRY_KILL,),
        "the master's KILL could not be sent: try again soon")
    # A detached worker finishes its last piece of work, or is stopped at the deadline.
    add((_W,), (_L.DRAINING,), _I.SUCCEEDED, _L.ENDED, (), "the drained worker finished")
    add((_W,), (_L.DRAINING,), _I.KILLED, _L.ENDED, (), "the drained worker stopped")
    add((_W,), (_L.DRAINING,), _I.FAILED, _L.ENDED, (_A.ADD_WORK_LOST,),
        "the drained worker failed before finishing: its work is redone")
    add((_W,), (_L.DRAINING,), _I.LOST, _L.ENDED, (_A.ADD_WORK_LOST,),
        "the drained worker was lost before finishing: its work is redone")
    add((_W,), (_L.DRAINING,), _I.DEADLINE, _L.KILL_SENT, (_A.KILL,),
        "the agent goes away soon: stop so SIGTERM leaves time to checkpoint")
    add((_W,), (_L.DRAINING,), _I.UNWANTED, _L.KILL_SENT, (_A.KILL,),
        "the job no longer wants the drained worker")
    # --- written off, yet alive -----------------------------------------------------------
    for inp in (_I.CONFIRMED, _I.STARTED):
        add(both, (_L.ENDED,), inp, _L.ENDED, (_A.KILL,),
            "an attempt Corral wrote off turned up alive: kill it at once")
    return edges


EDGES: dict[tuple[TaskKind, Life, Input], Edge] = _build()


def step(kind: TaskKind, state: Life, inp: Input) -> Edge | None:
    """The edge ``inp`` takes from ``state`` for a slot of ``kind`` (None: ignored)."""
    return EDGES.get((kind, state, inp))


def settle_input(state: Life, *, wanted: bool, in_backoff: bool, needs_master: bool) -> Input:
    """The condition that holds for a vacant slot (the table then decides the move)."""
    if not wanted:
        return Input.UNWANTED
    if in_backoff:
        return Input.BACKOFF
    if needs_master:
        return Input.NO_MASTER
    return Input.READY
