"""Agents (re-)registering with the leading master, and a new leader's recovery.

Each step follows Mesos 1.11's src/master/master.cpp:

* ``recover`` — ``Master::_recover``: a newly elected master reads the registry; its
  admitted agents become *recovered* (known, not yet re-registered: explicit
  reconciliation of their tasks gets no answer), its unreachable and gone agents keep
  their times, the maintenance schedule is restored. After ``agent_reregister_timeout``
  the recovered agents that did not come back are marked unreachable
  (``recoveredSlavesTimeout`` → ``markUnreachable(duringMasterFailover)``): the master
  knows none of their tasks, so frameworks only get the FAILURE (``sendSlaveLost``).
* ``reregister`` — ``Master::_reregisterSlave`` and ``__reregisterSlave``: a gone agent is
  told to shut down; an agent already registered is left alone; otherwise every task it
  reports is re-added except those of frameworks removed at the master, and — unless the
  agent was recovered from the registry — each one is reported to its (connected)
  framework in the state the agent gives, ``SOURCE_MASTER``, ``REASON_AGENT_REREGISTERED``
  (v0 ``REASON_SLAVE_REREGISTERED``), no uuid, message "Unreachable agent re-reregistered"
  (sic) or "Unknown agent reregistered". 1.11 does this for every framework: the
  ``partitionAwareFrameworks`` set computed there is never used, and
  src/tests/partition_tests.cpp ``ReregisterSlaveNotPartitionAware`` expects the
  non-partition-aware task back as TASK_RUNNING, not shut down. Then the agent's tasks
  leave ``unreachable_tasks`` (and ``completed_tasks``), frameworks removed at the master
  are shut down on the agent, and frameworks the master does not know are recovered from
  the agent's FrameworkInfo (``updateSlaveFrameworks`` → ``recoverFramework``: present but
  neither connected nor active until their scheduler subscribes; their
  ``failover_timeout`` does not run, MESOS-4659).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.localmesos import validation
from corral.localmesos.master import (
    AgentRecord,
    ExecutorRecord,
    FrameworkRecord,
    Master,
    TaskRecord,
    capabilities_of,
)
from corral.localmesos.protocol import (
    TERMINAL_STATES,
    Json,
    Pool,
    ResourceError,
    event,
    ident,
    parse_resources,
    task_status,
)
from corral.localmesos.registry import AdmittedAgent, RegistryState

if TYPE_CHECKING:
    from corral.localmesos.agent import Agent
    from corral.localmesos.partition import AgentLink
    from corral.localmesos.registry import RegistryState

log = logging.getLogger("localmesos.reregister")

REREGISTERED_UNREACHABLE = "Unreachable agent re-reregistered"   # Mesos' own spelling
REREGISTERED_UNKNOWN = "Unknown agent reregistered"
_shutting_down: set[asyncio.Task[None]] = set()   # gone agents told to shut down


@dataclass(frozen=True)
class ReportedTask:
    framework_id: str
    task_id: str
    info: Json
    executor_id: str | None     # None for a command task
    state: str


@dataclass(frozen=True)
class ReportedExecutor:
    framework_id: str
    executor_id: str
    info: Json


@dataclass(frozen=True)
class AgentReport:
    """What a re-registering agent tells the master (ReregisterSlaveMessage)."""

    agent_id: str
    frameworks: dict[str, Json]
    tasks: tuple[ReportedTask, ...]
    executors: tuple[ReportedExecutor, ...]


def report_of(agent: Agent) -> AgentReport:
    """The agent's tasks (every one not yet forgotten: live, or terminal and not yet
    acknowledged), its executors and the frameworks they belong to."""
    tasks = tuple(ReportedTask(fid, tid, run.info, None if run.command else run.executor_id,
                               run.state)
                  for (fid, tid), run in sorted(agent.tasks.items()))
    executors = tuple(ReportedExecutor(fid, eid, ex.info)
                      for (fid, eid), ex in sorted(agent.executors.items()))
    used = {t.framework_id for t in tasks} | {e.framework_id for e in executors}
    frameworks = {fid: info for fid, info in agent.frameworks.items() if fid in used}
    return AgentReport(agent.id, frameworks, tasks, executors)


# ---------------------------------------------------------------------------- recovery


def recover(master: Master, state: RegistryState, reregister_timeout: float) -> None:
    """A newly elected master takes over the registry (``Master::_recover``)."""
    master.recovered_agents = dict(state.admitted)
    master.unreachable_times = dict(state.unreachable)
    master.gone_times = dict(state.gone)
    master.restore_maintenance(list(state.maintenance), state.down_machines)
    if master.recovered_agents:
        master.recovery_timer = asyncio.get_running_loop().call_later(
            reregister_timeout, recovered_agents_timeout, master, reregister_timeout)
    log.info("master %s recovered the registry: %d agents to re-register, %d unreachable, "
             "%d gone", master.id, len(state.admitted), len(state.unreachable),
             len(state.gone))


def recovered_agents_timeout(master: Master, timeout: float) -> None:
    """Agents recovered from the registry that never came back become unreachable."""
    master.recovery_timer = None
    now = time.time()
    for aid in sorted(master.recovered_agents):
        del master.recovered_agents[aid]
        master.unreachable_times[aid] = now
        master.record(functools.partial(RegistryState.mark_unreachable, agent_id=aid, when=now))
        log.info("agent %s did not re-register within %gs after master failover; "
                 "marked unreachable", aid, timeout)
        for fw in master.frameworks.values():
            master._send(fw, event("FAILURE", {"agent_id": ident(aid)}))


# ---------------------------------------------------------------------------- registration


def register_new(master: Master, link: AgentLink) -> AgentRecord:
    """A new agent registers (``Master::registerSlave``): admitted with nothing on it."""
    link.master = master
    return master.add_agent(link.port_for(master), link.revocable)  # type: ignore[arg-type]


def reregister(master: Master, link: AgentLink) -> AgentRecord | None:
    """The agent behind ``link`` re-registers with ``master`` (see module docstring)."""
    assert link.agent is not None
    report = report_of(link.agent)
    aid = report.agent_id
    old = master.agents.get(aid)
    if aid in master.gone_times or (old is not None and old.state == "gone"):
        log.warning("refusing re-registration of agent %s: it has been marked gone", aid)
        link.master = None
        task = asyncio.ensure_future(link.agent.terminate())  # ShutdownMessage: it exits
        _shutting_down.add(task)
        task.add_done_callback(_shutting_down.discard)
        return None
    if old is not None and old.state == "registered":
        link.master = master        # a spurious re-registration: nothing to re-admit
        return old
    recovered = master.recovered_agents.pop(aid, None)
    unreachable = aid in master.unreachable_times
    message = REREGISTERED_UNREACHABLE if unreachable else REREGISTERED_UNKNOWN
    earlier: dict[tuple[str, str], TaskRecord] = {}
    kept: list[ReportedTask] = []
    for t in report.tasks:
        if t.framework_id in master.completed_frameworks:
            continue    # its framework is shut down on the agent below
        fw = master.frameworks.get(t.framework_id)
        if recovered is None:
            if fw is not None:
                prior = fw.unreachable.pop(t.task_id, None)
                if prior is not None:
                    earlier[(fw.id, t.task_id)] = prior
                _forget_completed(fw, t.task_id)
            status = task_status(t.task_id, t.state, source="SOURCE_MASTER", agent_id=aid,
                                 reason="REASON_AGENT_REREGISTERED", message=message,
                                 executor_id=t.executor_id)
            if fw is None or not fw.connected:
                log.info("dropping update %s of task %s for %s framework %s", t.state,
                         t.task_id, "unknown" if fw is None else "disconnected",
                         t.framework_id)
            else:
                master._send_update(fw, status)
        kept.append(t)
    # Every task of this agent is reachable again: none stays in unreachable_tasks.
    for fw in master.frameworks.values():
        for tid in [tid for tid, task in fw.unreachable.items() if task.agent_id == aid]:
            del fw.unreachable[tid]
    master.unreachable_times.pop(aid, None)
    link.master = master
    port = link.port_for(master)
    rec = master.add_agent(port, link.revocable)  # type: ignore[arg-type]
    _restore_drain(rec, old, recovered)
    for fid, info in sorted(report.frameworks.items()):
        if fid not in master.frameworks and fid not in master.completed_frameworks:
            _recover_framework(master, fid, info)
    for t in kept:
        fw = master.frameworks.get(t.framework_id)
        if fw is not None:
            _readd_task(rec, fw, t, earlier.get((fw.id, t.task_id)))
    for ex in report.executors:
        fw = master.frameworks.get(ex.framework_id)
        if fw is not None:
            _readd_executor(rec, fw, ex)
    for fid in sorted(report.frameworks):
        fw = master.frameworks.get(fid)
        if fid in master.completed_frameworks:
            log.info("shutting down framework %s at re-registered agent %s: it has been "
                     "removed at the master", fid, aid)
            port.shutdown_framework(fid)
        elif fw is not None:
            port.update_framework(fid, fw.info)
    if master.maintenance_windows:
        master.set_maintenance(master.maintenance_windows)
    log.info("agent %s re-registered with master %s (%s; %d tasks)", aid, master.id,
             "recovered" if recovered is not None else message.lower(), len(kept))
    master.request_allocation()
    return rec


def _forget_completed(fw: FrameworkRecord, task_id: str) -> None:
    # MESOS-9940: a task the master declared terminal may come back running.
    if any(t.task_id == task_id for t in fw.completed):
        kept = [t for t in fw.completed if t.task_id != task_id]
        fw.completed.clear()
        fw.completed.extend(kept)


def _restore_drain(rec: AgentRecord, old: AgentRecord | None,
                   recovered: AdmittedAgent | None) -> None:
    if old is not None:
        rec.draining, rec.drain_grace = old.draining, old.drain_grace
    elif recovered is not None:
        rec.draining, rec.drain_grace = recovered.draining, recovered.drain_grace


def _recover_framework(master: Master, fid: str, info: Json) -> FrameworkRecord:
    roles, _multi = validation.framework_roles(info)
    fw = FrameworkRecord(fid, {**info, "id": ident(fid)}, roles, capabilities_of(info),
                         recovered=True)
    master.frameworks[fid] = fw
    log.info("recovering framework %s (%s) from a re-registering agent", fid,
             info.get("name"))
    return fw


def _pool(resources: object) -> Pool:
    try:
        return parse_resources(resources)
    except ResourceError:
        return Pool()


def _role(info: Json, fw: FrameworkRecord) -> str:
    for r in info.get("resources") or []:
        role = (r.get("allocation_info") or {}).get("role") if isinstance(r, dict) else None
        if isinstance(role, str):
            return role
    return fw.roles[0] if fw.roles else "*"


def _readd_task(rec: AgentRecord, fw: FrameworkRecord, t: ReportedTask,
                prior: TaskRecord | None) -> None:
    task = prior or TaskRecord(fw.id, t.task_id, rec.id, t.executor_id, t.info,
                               _role(t.info, fw), _pool(t.info.get("resources")))
    task.state = t.state
    task.freed = t.state in TERMINAL_STATES
    fw.tasks[t.task_id] = task
    rec.tasks.add((fw.id, t.task_id))
    if not task.freed:
        rec.used = rec.used + task.pool
        fw.add_alloc(task.role, task.pool.scalars)


def _readd_executor(rec: AgentRecord, fw: FrameworkRecord, ex: ReportedExecutor) -> None:
    pool = _pool(ex.info.get("resources"))
    role = _role(ex.info, fw)
    rec.executors[(fw.id, ex.executor_id)] = ExecutorRecord(fw.id, ex.executor_id, ex.info,
                                                            role, pool)
    rec.used = rec.used + pool
    fw.add_alloc(role, pool.scalars)
