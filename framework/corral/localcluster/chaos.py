"""``corral demo --chaos``: which spot machine the demo takes away, when, and what it says.

Pure: each function takes the job's view, the agents' rows (``corral.localmesos.control``)
and ``Chaos``, the demo's record of what it did and told, and returns a decision, a new
record and the lines to print. ``corral.localcluster.demo`` polls, carries the faults
out and prints.

The plan (``plan(notice)``): once a quarter of the chunks are done, a spot agent running a
worker (never the master's agent) is terminated with no notice; once half are done and
that loss has recovered, another such agent gets a notice of ``notice`` seconds before it
goes. What the job's accounting then shows is told as it happens: the loss and the work
it costs, the replacement and how long it took, the drain of the noticed worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from corral.core.views import JobState, JobView, LossView

# Mesos states after which a task runs no more.
_ENDED = frozenset({"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
                    "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR"})


@dataclass(frozen=True)
class Fault:
    """Take a spot machine away once ``at`` of the chunks are done; with a ``notice`` of
    that many seconds, or none."""

    at: float
    notice: float | None = None


@dataclass(frozen=True)
class Hit:
    """A fault carried out: the agent taken and the worker attempts it was running
    (workers go to spot agents first, so a spot machine often runs several)."""

    fault: Fault
    agent_id: str
    agent: str        # "agent-3 (spot)"
    workers: tuple[tuple[str, str], ...]   # (slot, task id) of each worker there
    percent: int      # of the chunks done when it happened

    @property
    def slots(self) -> str:
        """``worker-1`` or ``worker-1 and worker-3`` or ``worker-0, worker-1 and worker-3``."""
        names = [s for s, _ in self.workers]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class Chaos:
    """What the demo did and what it already told (never mutated: functions return a new
    one)."""

    plan: tuple[Fault, ...]
    hits: tuple[Hit, ...] = ()
    task_agent: Mapping[str, str] = field(default_factory=dict)  # task id -> agent id
    told_losses: frozenset[str] = frozenset()      # lost task ids
    told_recoveries: frozenset[str] = frozenset()
    told_drains: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        """Every planned fault was carried out."""
        return len(self.hits) == len(self.plan)

    @property
    def draining(self) -> tuple[tuple[Hit, str, str], ...]:
        """Noticed attempts (hit, slot, task id) whose end has not been told yet."""
        return tuple((h, slot, tid) for h in self.hits if h.fault.notice is not None
                     for slot, tid in h.workers if tid not in self.told_drains)


def plan(notice: float) -> Chaos:
    return Chaos(plan=(Fault(at=0.25), Fault(at=0.5, notice=notice)))


def agent_label(row: Mapping[str, Any]) -> str:
    market = (row.get("attributes") or {}).get("market") or "no market"
    return f"{row.get('name') or row['id']} ({market})"


def _attempt(task_id: str) -> str:
    """The attempt number at the end of a Corral task id (``corral.<...>.<slot>.<n>``)."""
    return task_id.rsplit(".", 1)[-1]


def next_fault(c: Chaos, view: JobView, rows: Iterable[Mapping[str, Any]]) -> Hit | None:
    """The fault to carry out now, or None: the plan's next one once its share of the
    chunks is done, the job runs and every earlier loss has recovered."""
    if c.complete or view.state is not JobState.RUNNING or view.progress.total <= 0:
        return None
    fault = c.plan[len(c.hits)]
    done = view.progress.done / view.progress.total
    if done < fault.at or any(x.recovered_at is None for x in view.resilience.recent):
        return None
    master = next((t.agent_id for t in view.tasks if t.slot == "master"), None)
    usable = {r["id"]: r for r in rows
              if r.get("alive") and not r.get("unavailability") and not r.get("draining")
              and (r.get("attributes") or {}).get("market") == "spot"}
    hit_before = {s for h in c.hits for s, _ in h.workers}  # others first, if possible
    running = sorted((t for t in view.tasks if t.slot.startswith("worker")
                      and t.state == "TASK_RUNNING" and t.task_id and t.agent_id in usable
                      and t.agent_id != master), key=lambda t: (t.slot in hit_before, t.slot))
    if not running:
        return None
    agent_id = running[0].agent_id
    assert agent_id is not None
    there = tuple((t.slot, t.task_id) for t in sorted(running, key=lambda t: t.slot)
                  if t.agent_id == agent_id and t.task_id)
    return Hit(fault, agent_id, agent_label(usable[agent_id]), there, round(100 * done))


def carried_out(c: Chaos, hit: Hit) -> Chaos:
    return replace(c, hits=(*c.hits, hit))


def describe_hit(hit: Hit) -> str:
    if hit.fault.notice is None:
        return (f"chaos    {hit.agent}, running {hit.slots}, terminated without notice "
                f"at {hit.percent}%")
    return (f"chaos    {hit.agent}, running {hit.slots}, gets a {hit.fault.notice:g} s notice "
            f"at {hit.percent}%, then goes")


def observe(c: Chaos, view: JobView, rows: Iterable[Mapping[str, Any]]
            ) -> tuple[Chaos, list[str]]:
    """Remember where tasks run, and tell each new loss and each recovery once."""
    labels = {r["id"]: agent_label(r) for r in rows}
    where = {**c.task_agent, **{t.task_id: t.agent_id for t in view.tasks
                                if t.task_id and t.agent_id}}
    lines: list[str] = []
    losses, recoveries = set(c.told_losses), set(c.told_recoveries)
    for x in view.resilience.recent:
        if x.task_id not in losses:
            losses.add(x.task_id)
            lines.append(_loss_line(x))
        if x.recovered_at is not None and x.task_id not in recoveries:
            recoveries.add(x.task_id)
            new = x.replacement_task_id or ""
            on = labels.get(where.get(new, ""), "another agent")
            after = "the notice" if x.kind == "notice" else "the loss"
            lines.append(f"replaced {x.slot} runs again as attempt {_attempt(new)} on {on}, "
                         f"{x.recovery_seconds or 0:.1f} s after {after}")
    return replace(c, task_agent=where, told_losses=frozenset(losses),
                   told_recoveries=frozenset(recoveries)), lines


def _loss_line(x: LossView) -> str:
    who = f"{x.slot} attempt {_attempt(x.task_id)}"
    if x.kind == "notice":
        return f"notice   {who} is told to drain; its replacement starts now"
    return (f"lost     {who} ({x.kind}): {x.work_lost_seconds:.1f} s of work since its "
            "last checkpoint will be redone")


def drains(c: Chaos, task_states: Mapping[str, str]) -> tuple[Chaos, list[str]]:
    """Tell how each noticed attempt ended, once Mesos reports it ended."""
    lines: list[str] = []
    told = set(c.told_drains)
    for h, slot, tid in c.draining:
        state = task_states.get(tid)
        if state not in _ENDED or tid in told:
            continue
        told.add(tid)
        who = f"{slot} attempt {_attempt(tid)}"
        if state == "TASK_FINISHED":
            lines.append(f"drained  {who} finished its chunk, checkpointed and exited "
                         f"before {h.agent} went")
        else:
            lines.append(f"drained  {who} did not finish draining in time: {state}")
    return replace(c, told_drains=frozenset(told)), lines


def summary(c: Chaos, view: JobView) -> list[str]:
    """The chaos part of the demo's summary: machines taken, losses, recovery, work lost."""
    r = view.resilience
    taken = [f"{h.agent} " + ("with no notice" if h.fault.notice is None
                              else f"after a {h.fault.notice:g} s notice")
             + f" (at {h.percent}%)" for h in c.hits]
    rec = [x.recovery_seconds for x in r.recent if x.recovery_seconds is not None]
    per = [f"{x.slot} attempt {_attempt(x.task_id)} {x.work_lost_seconds:.1f} s"
           + (", drained on notice" if x.kind == "notice" and x.work_lost_seconds == 0
              else "") for x in r.recent]
    lines = [f"  machines taken   {len(c.hits)} of {len(c.plan)} planned: "
             + ("; ".join(taken) if taken else "none")]
    if r.losses:
        lines.append(f"  losses           {r.losses}, recovered {r.recoveries}"
                     + (f": replacement running {', '.join(f'{s:.1f}' for s in rec)} s "
                        "after the loss or notice" if rec else ""))
        lines.append(f"  work lost        {r.work_lost_seconds:.1f} s of task time "
                     f"({'; '.join(per)})")
    else:
        lines.append("  losses           none")
    return lines
