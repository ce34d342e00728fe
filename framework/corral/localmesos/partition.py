"""The network between each localmesos agent and the leading master: partitions, heals,
and following a new leading master.

Master and agents share one process, so "the network" is an object: ``AgentLink`` is the
agent's ``MasterPort`` (agent → master) and its ``AgentPort`` is what the master holds
for the agent (master → agent). While a link is *partitioned* every message either way is
lost, as on a cut network: the agent and its tasks keep running, the agent keeps resending
unacknowledged status updates (doubling its retry interval), executor messages and exits
are dropped, and the master's pings go unanswered until its health check marks the agent
unreachable (Mesos' ``SlaveObserver``; src/master/master.cpp ``markUnreachable``).

When the partition heals, an agent the master has meanwhile marked unreachable (or does
not know at all) re-registers — a Mesos agent notices the silence through its own ping
timeout, which equals the master's health timeout — and then resends its pending status
updates at once; one the master never missed simply carries on (pending updates go out at
their next retry). After a master failover a link forgets its master and re-registers with
the new leader after a random delay of up to the registration backoff, like a Mesos agent
(``--registration_backoff_factor``). ``reregister`` holds what the master does then.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from corral.core.resources import ZERO, Resources
from corral.localmesos.protocol import Json

if TYPE_CHECKING:
    from corral.localmesos.agent import Agent
    from corral.localmesos.master import Master

log = logging.getLogger("localmesos.partition")

MAX_PARTITION = 24 * 3600.0


class AgentPort:
    """The agent as one master reaches it: messages are lost while the link is cut, and
    for good once the agent is registered with another master (or that master crashed).

    Everything that is not a message (id, name, resources, sandbox pids, ...) is read from
    the agent itself; ``alive`` is what the master's pings see.
    """

    def __init__(self, link: AgentLink, master: Master) -> None:
        self._link = link
        self._master = master

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link.agent, name)

    @property
    def agent(self) -> Agent:
        assert self._link.agent is not None
        return self._link.agent

    @property
    def alive(self) -> bool:
        return self.agent.alive and self._link.up

    def _reaches(self) -> bool:
        return self._link.up and self._link.master is self._master and self.agent.alive

    def update_framework(self, framework_id: str, info: Json) -> None:
        if self._reaches():
            self.agent.update_framework(framework_id, info)

    def launch(self, framework_id: str, framework_info: Json, task: Json,
               executor: Json | None) -> None:
        if self._reaches():
            self.agent.launch(framework_id, framework_info, task, executor)

    def launch_group(self, framework_id: str, framework_info: Json, executor: Json,
                     tasks: list[Json]) -> None:
        if self._reaches():
            self.agent.launch_group(framework_id, framework_info, executor, tasks)

    def kill_task(self, framework_id: str, task_id: str, kill_policy: Json | None,
                  reason: str | None = None) -> None:
        if self._reaches():
            self.agent.kill_task(framework_id, task_id, kill_policy, reason)

    def shutdown_executor(self, framework_id: str, executor_id: str,
                          forced: tuple[str, str] | None = None) -> None:
        if self._reaches():
            self.agent.shutdown_executor(framework_id, executor_id, forced)

    def shutdown_framework(self, framework_id: str) -> None:
        if self._reaches():
            self.agent.shutdown_framework(framework_id)

    def acknowledge(self, framework_id: str, task_id: str, uuid_b64: str) -> None:
        if self._reaches():
            self.agent.acknowledge(framework_id, task_id, uuid_b64)

    def message(self, framework_id: str, executor_id: str, data: str) -> None:
        if self._reaches():
            self.agent.message(framework_id, executor_id, data)


class AgentLink:
    """One agent's connection to the master it is registered with (see module doc)."""

    def __init__(self, registration_backoff: float = 1.0,
                 rng: random.Random | None = None) -> None:
        self.agent: Agent | None = None
        self.master: Master | None = None    # the master the agent is registered with
        self.leader: Master | None = None    # the leading master, once it has recovered
        self.revocable: Resources = ZERO     # the agent's oversubscription estimate
        self.heals_at: float | None = None   # epoch seconds; None while connected
        self.registered_once = False
        self.reregistrations = 0
        self._backoff = registration_backoff
        self._rng = rng or random.Random(0)
        self._heal_timer: asyncio.TimerHandle | None = None
        self._register_timer: asyncio.TimerHandle | None = None

    @property
    def up(self) -> bool:
        return self.heals_at is None

    def port_for(self, master: Master) -> AgentPort:
        """What ``master`` holds for this agent once it is registered with it."""
        return AgentPort(self, master)

    # ------------------------------------------------------------------ agent → master

    def _target(self) -> Master | None:
        return self.master if self.up else None

    def agent_status_update(self, agent_id: str, framework_id: str, status: Json,
                            latest_state: str) -> bool:
        master = self._target()
        if master is None:
            return True     # lost on the way: the agent resends it later
        return master.agent_status_update(agent_id, framework_id, status, latest_state)

    def agent_executor_message(self, agent_id: str, framework_id: str, executor_id: str,
                               data: str) -> None:
        master = self._target()
        if master is not None:
            master.agent_executor_message(agent_id, framework_id, executor_id, data)

    def agent_executor_exited(self, agent_id: str, framework_id: str, executor_id: str,
                              raw_status: int) -> None:
        # Lost while cut off; the master learns the executor is gone when the agent
        # re-registers without it.
        master = self._target()
        if master is not None:
            master.agent_executor_exited(agent_id, framework_id, executor_id, raw_status)

    # ------------------------------------------------------------------ faults

    def partition(self, seconds: float) -> float:
        """Cut the link now for ``seconds``; returns when it heals (epoch seconds)."""
        if not seconds > 0 or seconds > MAX_PARTITION:
            raise ValueError(f"'seconds' must be within (0, {MAX_PARTITION:g}]")
        if self.agent is None or not self.agent.alive:
            raise ValueError("the agent is not running")
        if self._heal_timer is not None:
            self._heal_timer.cancel()
        self.heals_at = time.time() + seconds
        self._heal_timer = asyncio.get_running_loop().call_later(seconds, self.heal)
        log.info("agent %s partitioned from the master for %.3fs", self._name(), seconds)
        return self.heals_at

    def heal(self) -> None:
        if self._heal_timer is not None:
            self._heal_timer.cancel()
            self._heal_timer = None
        if self.heals_at is None:
            return
        self.heals_at = None
        log.info("agent %s partition healed", self._name())
        master = self.master
        if master is None or self.leader is not master:
            self._schedule_registration(0.0)
            return
        rec = master.agents.get(self._id())
        if rec is None or rec.state != "registered":
            self._register(master)

    def follow(self, leader: Master | None) -> None:
        """A new leading master finished recovery (None: no leader any more). The agent
        drops its old master and registers with the new one after its backoff."""
        self.leader = leader
        if self.master is not leader:
            self.master = None
        if self._register_timer is not None:
            self._register_timer.cancel()
            self._register_timer = None
        if leader is not None and self.master is None:
            self._schedule_registration(self._rng.uniform(0.0, self._backoff))

    def join(self, leader: Master | None) -> None:
        """A new agent: registers with the leading master at once, or with the next one."""
        self.leader = leader
        if leader is not None:
            self._register(leader)

    def stop(self) -> None:
        for timer in (self._heal_timer, self._register_timer):
            if timer is not None:
                timer.cancel()
        self._heal_timer = self._register_timer = None

    # ------------------------------------------------------------------ registration

    def _schedule_registration(self, delay: float) -> None:
        if self._register_timer is not None:
            self._register_timer.cancel()
        self._register_timer = asyncio.get_running_loop().call_later(
            delay, self._registration_due)

    def _registration_due(self) -> None:
        self._register_timer = None
        leader = self.leader
        if leader is not None and self.up and self.master is not leader:
            self._register(leader)

    def _register(self, master: Master) -> None:
        from corral.localmesos.reregister import register_new, reregister
        agent = self.agent
        if agent is None or not agent.alive or not self.up:
            return
        if not self.registered_once:
            register_new(master, self)
        else:
            reregister(master, self)
            self.reregistrations += 1
        self.registered_once = True
        # Registered: the status update manager resumes (src/slave/slave.cpp,
        # ``Slave::reregistered`` -> ``taskStatusUpdateManager->resume()``).
        if self.master is master:
            agent.resend_updates()

    def _id(self) -> str:
        return self.agent.id if self.agent is not None else "?"

    def _name(self) -> str:
        return f"agent-{self.agent.index}" if self.agent is not None else "?"
