"""One localmesos agent: the executor HTTP API, real executor processes, status updates.

Owns what a Mesos agent owns: sandboxes, executor and command-task processes (each in its
own session / process group so a kill reaches every descendant), the per-task status
update streams (one unacknowledged update in flight per task, resent with doubling backoff
until the scheduler's ACK arrives through the master), and the executor event streams.

The master talks to an agent by plain method calls (both live in one process); the agent
reports to the master through the ``MasterPort`` protocol. Killing the agent "like a spot
reclaim" (``terminate``) SIGKILLs every process group it started and stops its HTTP site;
the master only learns of it through its health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
from aiohttp import web

from corral.localmesos import httputil
from corral.localmesos.protocol import (
    TERMINAL_STATES,
    Json,
    Pool,
    duration_text,
    event,
    id_of,
    ident,
    is_b64,
    is_uuid_b64,
    seconds_of,
    task_status,
)
from corral.localmesos.streams import EventStream

log = logging.getLogger("localmesos.agent")

EXECUTOR_CALLS = frozenset({"UNKNOWN", "SUBSCRIBE", "UPDATE", "MESSAGE"})
DEFAULT_KILL_GRACE = 3.0          # the command executor's default kill grace
DEFAULT_SHUTDOWN_GRACE = 5.0      # --executor_shutdown_grace_period
MAX_UPDATE_RETRY = 600.0          # status updates are resent at most every 10 minutes


class MasterPort(Protocol):
    """What an agent reports to its master."""

    def agent_status_update(self, agent_id: str, framework_id: str, status: Json,
                            latest_state: str) -> bool: ...

    def agent_executor_message(self, agent_id: str, framework_id: str, executor_id: str,
                               data: str) -> None: ...

    def agent_executor_exited(self, agent_id: str, framework_id: str, executor_id: str,
                              raw_status: int) -> None: ...


@dataclass
class AgentOptions:
    status_update_retry: float = 10.0
    executor_registration_timeout: float = 60.0
    heartbeat_interval: float = 15.0
    stop_grace: float = 1.0


@dataclass
class TaskRun:
    """The agent's view of one task."""

    framework_id: str
    task_id: str
    info: Json
    executor_id: str            # for command tasks the task id, as Mesos does
    command: bool
    state: str = "TASK_STAGING"
    updates: deque[Json] = field(default_factory=deque)
    retry: asyncio.TimerHandle | None = None
    retry_interval: float = 0.0
    proc: asyncio.subprocess.Process | None = None
    killing: bool = False
    forced: tuple[str, str] | None = None      # (state, reason) replacing the natural end
    drain_reason: str | None = None
    delivered: bool = False


@dataclass
class ExecutorRun:
    """A custom executor: its process, its stream and the tasks it runs."""

    framework_id: str
    executor_id: str
    info: Json
    container_id: str
    sandbox: Path
    tasks: set[str] = field(default_factory=set)
    queued: list[Json] = field(default_factory=list)    # LAUNCH events not yet delivered
    proc: asyncio.subprocess.Process | None = None
    stream: EventStream | None = None
    shutting_down: bool = False
    forced: tuple[str, str] | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


def raw_wait_status(returncode: int | None) -> int:
    """asyncio's decoded return code back into a waitpid() status word."""
    if returncode is None:
        return 0
    if returncode < 0:
        return -returncode
    return returncode << 8


def _killpg(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _destroy(pid: int | None) -> None:
    """SIGKILL a container whose leader (executor or command) is ``pid`` and still lives:
    its process group and every descendant, whatever group or session it moved to (Corral's
    executor runs each task in a session of its own). Real Mesos destroys a container
    through its cgroup; localmesos has none, so it follows the process tree, collected
    before anything dies (an orphan is reparented and can no longer be found this way)."""
    if pid is None:
        return
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        family = []
    _killpg(pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.Error, OSError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error, OSError):
            child.kill()


def _destroy_orphans(sandbox: Path) -> int:
    """SIGKILL processes left running with ``MESOS_SANDBOX`` = ``sandbox`` after their
    executor died (they were reparented away from it). One scan of the process table, so
    only for an executor that exited with tasks still running. Returns how many."""
    wanted = str(sandbox)
    count = 0
    for proc in psutil.process_iter(["environ"]):
        env = proc.info.get("environ") or {}
        if env.get("MESOS_SANDBOX") == wanted:
            with contextlib.suppress(psutil.Error, OSError):
                proc.kill()
                count += 1
    return count


class Agent:
    def __init__(self, master: MasterPort, agent_id: str, index: int, work_dir: Path,
                 resources: Pool, attributes: list[tuple[str, str]],
                 options: AgentOptions, hostname: str = "127.0.0.1") -> None:
        self.master = master
        self.id = agent_id
        self.index = index
        self.hostname = hostname
        self.resources = resources
        self.attributes = attributes
        self.options = options
        self.work_dir = work_dir
        self.port = 0
        self.alive = False
        self.frameworks: dict[str, Json] = {}
        self.tasks: dict[tuple[str, str], TaskRun] = {}
        self.executors: dict[tuple[str, str], ExecutorRun] = {}
        self.pids: set[int] = set()
        self.seen_pids: set[int] = set()     # every process group ever started
        self._runner: web.AppRunner | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid_text(self) -> str:
        return f"slave({self.index + 1})@{self.hostname}:{self.port}"

    def url_json(self) -> Json:
        return {"scheme": "http", "address": {"hostname": self.hostname, "ip": "127.0.0.1",
                                              "port": self.port},
                "path": f"/slave({self.index + 1})"}

    def agent_info(self) -> Json:
        from corral.localmesos.protocol import attributes_json
        return {"id": ident(self.id), "hostname": self.hostname, "port": self.port,
                "resources": self.resources.to_json(),
                "attributes": attributes_json(self.attributes)}

    async def start(self) -> None:
        app = web.Application(client_max_size=httputil.MAX_BODY)
        app.router.add_route("*", "/api/v1/executor", self._executor_api)
        app.router.add_get("/health", _health)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self.alive = True

    def _spawn_bg(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def kill_all_now(self) -> None:
        """SIGKILL every container this agent started (safe from signal handlers)."""
        for pid in list(self.pids):
            _destroy(pid)

    async def terminate(self) -> None:
        """Die at once, like a reclaimed spot instance: no updates, no goodbyes."""
        if not self.alive:
            return
        self.alive = False
        self.kill_all_now()
        self._cancel_timers()
        for ex in self.executors.values():
            if ex.stream is not None:
                ex.stream.cut_off()
        await self._stop_site()
        await self._reap()

    async def stop(self) -> None:
        """Shut down for localmesos exit: SIGTERM, a short grace, then SIGKILL."""
        self.alive = False
        self._cancel_timers()
        for pid in list(self.pids):
            _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_grace
        while self.pids and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.kill_all_now()
        for ex in self.executors.values():
            if ex.stream is not None:
                ex.stream.cut_off()
        await self._stop_site()
        await self._reap()

    async def _reap(self) -> None:
        deadline = time.monotonic() + 5.0
        while self._bg and time.monotonic() < deadline:
            await asyncio.wait(list(self._bg), timeout=0.5)
        for task in list(self._bg):
            task.cancel()

    def _cancel_timers(self) -> None:
        for t in self.tasks.values():
            if t.retry is not None:
                t.retry.cancel()
        for ex in self.executors.values():
            for h in ex.timers:
                h.cancel()

    async def _stop_site(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ master → agent

    def update_framework(self, framework_id: str, info: Json) -> None:
        if framework_id in self.frameworks:
            self.frameworks[framework_id] = info

    def _partition_aware(self, framework_id: str) -> bool:
        info = self.frameworks.get(framework_id, {})
        return any(c.get("type") == "PARTITION_AWARE" for c in info.get("capabilities", []))

    def _killing_state(self, framework_id: str) -> bool:
        info = self.frameworks.get(framework_id, {})
        return any(c.get("type") == "TASK_KILLING_STATE"
                   for c in info.get("capabilities", []))

    def launch(self, framework_id: str, framework_info: Json, task: Json,
               executor: Json | None) -> None:
        """Run one task: under its custom executor, or as a command task."""
        self.frameworks[framework_id] = framework_info
        task_id = id_of(task["task_id"]) or ""
        if executor is None:
            run = TaskRun(framework_id, task_id, task, task_id, command=True)
            self.tasks[(framework_id, task_id)] = run
            self._spawn_bg(self._run_command(run))
            return
        exec_id = id_of(executor["executor_id"]) or ""
        run = TaskRun(framework_id, task_id, task, exec_id, command=False)
        self.tasks[(framework_id, task_id)] = run
        ex = self.executors.get((framework_id, exec_id))
        if ex is None:
            ex = self._new_executor(framework_id, exec_id, executor)
        ex.tasks.add(task_id)
        launch = event("LAUNCH", {"task": {**task, "executor": executor}})
        if ex.stream is not None and not ex.stream.closed:
            ex.stream.send(launch)
            run.delivered = True
        else:
            ex.queued.append(launch)

    def launch_group(self, framework_id: str, framework_info: Json, executor: Json,
                     tasks: list[Json]) -> None:
        self.frameworks[framework_id] = framework_info
        exec_id = id_of(executor["executor_id"]) or ""
        ex = self.executors.get((framework_id, exec_id))
        if ex is None:
            ex = self._new_executor(framework_id, exec_id, executor)
        runs = []
        for task in tasks:
            task_id = id_of(task["task_id"]) or ""
            run = TaskRun(framework_id, task_id, task, exec_id, command=False)
            self.tasks[(framework_id, task_id)] = run
            ex.tasks.add(task_id)
            runs.append(run)
        ev = event("LAUNCH_GROUP", {"task_group": {"tasks": tasks}})
        if ex.stream is not None and not ex.stream.closed:
            ex.stream.send(ev)
            for run in runs:
                run.delivered = True
        else:
            ex.queued.append(ev)

    def kill_task(self, framework_id: str, task_id: str, kill_policy: Json | None,
                  reason: str | None = None) -> None:
        run = self.tasks.get((framework_id, task_id))
        if run is None or run.state in TERMINAL_STATES:
            return
        run.drain_reason = reason
        if run.command:
            if not run.killing:
                self._spawn_bg(self._kill_command(run, kill_policy))
            return
        ex = self.executors.get((framework_id, run.executor_id))
        if ex is None:
            return
        if not run.delivered:
            ex.queued = [e for e in ex.queued if not _event_has_task(e, task_id)]
            ex.tasks.discard(task_id)
            self._update(run, "TASK_KILLED", "SOURCE_AGENT",
                         reason or "REASON_TASK_KILLED_DURING_LAUNCH",
                         "Killed before delivery to the executor")
            if not ex.tasks and ex.stream is None:
                self.shutdown_executor(framework_id, run.executor_id)
            return
        payload: Json = {"task_id": ident(task_id)}
        if kill_policy is not None:
            payload["kill_policy"] = kill_policy
        if ex.stream is not None:
            ex.stream.send(event("KILL", payload))

    def shutdown_executor(self, framework_id: str, executor_id: str,
                          forced: tuple[str, str] | None = None) -> None:
        ex = self.executors.get((framework_id, executor_id))
        if ex is None:
            run = self.tasks.get((framework_id, executor_id))
            if run is not None and run.command:      # a command task's "executor"
                if forced is not None:
                    run.forced = forced
                self.kill_task(framework_id, executor_id,
                               {"grace_period": {"nanoseconds": 0}} if forced else None)
            return
        if forced is not None:
            ex.forced = forced
        if ex.shutting_down:
            return
        ex.shutting_down = True
        grace = seconds_of(ex.info.get("shutdown_grace_period"))
        grace = DEFAULT_SHUTDOWN_GRACE if grace is None else grace
        if ex.stream is not None and not ex.stream.closed and forced is None:
            ex.stream.send(event("SHUTDOWN"))
        else:
            grace = 0.0
        pid = ex.proc.pid if ex.proc is not None else None
        loop = asyncio.get_running_loop()
        ex.timers.append(loop.call_later(grace, _destroy, pid))

    def shutdown_framework(self, framework_id: str) -> None:
        """The framework was removed: kill everything of it and forget its updates."""
        for (fw, exec_id) in list(self.executors):
            if fw == framework_id:
                self.shutdown_executor(fw, exec_id)
        for key, run in list(self.tasks.items()):
            if key[0] != framework_id:
                continue
            if run.retry is not None:
                run.retry.cancel()
            run.updates.clear()
            if run.command:
                self.kill_task(framework_id, run.task_id, None)

    def acknowledge(self, framework_id: str, task_id: str, uuid_b64: str) -> None:
        run = self.tasks.get((framework_id, task_id))
        if run is None or not run.updates or run.updates[0].get("uuid") != uuid_b64:
            return
        run.updates.popleft()
        if run.retry is not None:
            run.retry.cancel()
            run.retry = None
        ex = self.executors.get((framework_id, run.executor_id))
        if ex is not None and ex.stream is not None and not run.command:
            ex.stream.send(event("ACKNOWLEDGED", {"task_id": ident(task_id),
                                                 "uuid": uuid_b64}))
        if run.updates:
            self._forward(run, reset=True)
        elif run.state in TERMINAL_STATES:
            del self.tasks[(framework_id, task_id)]

    def message(self, framework_id: str, executor_id: str, data: str) -> None:
        ex = self.executors.get((framework_id, executor_id))
        if ex is not None and ex.stream is not None:
            ex.stream.send(event("MESSAGE", {"data": data}))

    def qos_kill(self, executor_id: str | None = None) -> list[tuple[str, str]]:
        """Kill executors (and command tasks) running on revocable resources."""
        killed: list[tuple[str, str]] = []
        for (fw, eid), ex in list(self.executors.items()):
            revocable = self._uses_revocable(ex.info) or any(
                self._uses_revocable(self.tasks[(fw, t)].info)
                for t in ex.tasks if (fw, t) in self.tasks)
            if (executor_id is None and revocable) or eid == executor_id:
                state = "TASK_GONE" if self._partition_aware(fw) else "TASK_LOST"
                self.shutdown_executor(fw, eid, (state, "REASON_CONTAINER_PREEMPTED"))
                killed.append((fw, eid))
        for (fw, tid), run in list(self.tasks.items()):
            if not run.command or run.state in TERMINAL_STATES:
                continue
            if (executor_id is None and self._uses_revocable(run.info)) or tid == executor_id:
                state = "TASK_GONE" if self._partition_aware(fw) else "TASK_LOST"
                self.shutdown_executor(fw, tid, (state, "REASON_CONTAINER_PREEMPTED"))
                killed.append((fw, tid))
        return killed

    @staticmethod
    def _uses_revocable(info: Json) -> bool:
        return any(isinstance(r, dict) and "revocable" in r for r in info.get("resources", []))

    # ------------------------------------------------------------------ status updates

    def _update(self, run: TaskRun, state: str, source: str, reason: str | None = None,
                message: str | None = None, extra: Json | None = None) -> None:
        status = task_status(run.task_id, state, source=source, agent_id=self.id,
                             reason=reason, message=message, executor_id=run.executor_id,
                             with_uuid=True)
        if extra:
            status.update(extra)
        self._record(run, status)

    def _record(self, run: TaskRun, status: Json) -> None:
        if run.state in TERMINAL_STATES:
            return      # nothing follows a terminal update
        run.state = status["state"]
        run.updates.append(status)
        if len(run.updates) == 1:
            self._forward(run, reset=True)

    def resend_updates(self) -> None:
        """(Re-)registered with a master: send every task's pending update now."""
        for run in list(self.tasks.values()):
            if run.updates:
                if run.retry is not None:
                    run.retry.cancel()
                    run.retry = None
                self._forward(run, reset=True)

    def _forward(self, run: TaskRun, reset: bool = False) -> None:
        if not self.alive or not run.updates:
            return
        if reset or run.retry_interval <= 0:
            run.retry_interval = self.options.status_update_retry
        else:
            run.retry_interval = min(run.retry_interval * 2, MAX_UPDATE_RETRY)
        known = self.master.agent_status_update(self.id, run.framework_id, run.updates[0],
                                                run.state)
        if not known:       # framework removed: nobody will ever acknowledge
            run.updates.clear()
            return
        loop = asyncio.get_running_loop()
        run.retry = loop.call_later(run.retry_interval, self._forward, run)

    # ------------------------------------------------------------------ processes

    def _sandbox(self, framework_id: str, executor_id: str, container_id: str) -> Path:
        path = (self.work_dir / "agents" / self.id / "frameworks" / framework_id / "executors"
                / executor_id / "runs" / container_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _env(self, framework_id: str, executor_id: str, sandbox: Path, command: Json,
             grace: float) -> dict[str, str]:
        checkpoint = bool(self.frameworks.get(framework_id, {}).get("checkpoint", False))
        env = dict(os.environ)
        env.update({
            "MESOS_FRAMEWORK_ID": framework_id,
            "MESOS_EXECUTOR_ID": executor_id,
            "MESOS_DIRECTORY": str(sandbox),
            "MESOS_SANDBOX": str(sandbox),
            "MESOS_AGENT_ENDPOINT": f"127.0.0.1:{self.port}",
            "MESOS_SLAVE_ID": self.id,
            "MESOS_SLAVE_PID": self.pid_text,
            "MESOS_CHECKPOINT": "1" if checkpoint else "0",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": duration_text(grace),
        })
        if checkpoint:
            env["MESOS_RECOVERY_TIMEOUT"] = "15mins"
            env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = "2secs"
        variables = (command.get("environment") or {}).get("variables") or []
        for var in variables:
            if isinstance(var, dict) and isinstance(var.get("name"), str):
                value = var.get("value", "")
                env[var["name"]] = value if isinstance(value, str) else str(value)
        return env

    async def _spawn(self, command: Json, sandbox: Path, env: dict[str, str]
                     ) -> asyncio.subprocess.Process:
        value = command.get("value", "")
        shell = command.get("shell", True)
        out = open(sandbox / "stdout", "ab")  # noqa: SIM115 - handed to the child
        err = open(sandbox / "stderr", "ab")  # noqa: SIM115
        try:
            if shell:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", str(value), cwd=sandbox, env=env, stdout=out, stderr=err,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
            else:
                argv = [str(a) for a in command.get("arguments") or []] or [str(value)]
                proc = await asyncio.create_subprocess_exec(
                    *argv, executable=str(value), cwd=sandbox, env=env, stdout=out,
                    stderr=err, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
            err.close()
        self.pids.add(proc.pid)
        self.seen_pids.add(proc.pid)
        return proc

    def _new_executor(self, framework_id: str, executor_id: str, info: Json) -> ExecutorRun:
        container_id = str(uuid.uuid4())
        sandbox = self._sandbox(framework_id, executor_id, container_id)
        ex = ExecutorRun(framework_id, executor_id, info, container_id, sandbox)
        self.executors[(framework_id, executor_id)] = ex
        self._spawn_bg(self._run_executor(ex))
        return ex

    async def _run_executor(self, ex: ExecutorRun) -> None:
        grace = seconds_of(ex.info.get("shutdown_grace_period"))
        grace = DEFAULT_SHUTDOWN_GRACE if grace is None else grace
        command = ex.info.get("command") or {}
        env = self._env(ex.framework_id, ex.executor_id, ex.sandbox, command, grace)
        rc: int | None = None
        try:
            ex.proc = await self._spawn(command, ex.sandbox, env)
        except OSError as e:
            log.warning("executor %s failed to start: %s", ex.executor_id, e)
            rc = 127
        if ex.proc is not None:
            loop = asyncio.get_running_loop()
            ex.timers.append(loop.call_later(
                self.options.executor_registration_timeout, self._registration_timeout, ex))
            if ex.shutting_down:      # shut down before it even started
                _destroy(ex.proc.pid)
            rc = await ex.proc.wait()
            # The leader may be gone but its children live on in the group: reap them too.
            _killpg(ex.proc.pid, signal.SIGKILL)
            self.pids.discard(ex.proc.pid)
            if any(self.tasks[(ex.framework_id, t)].state not in TERMINAL_STATES
                   for t in ex.tasks if (ex.framework_id, t) in self.tasks):
                # It died with tasks running: they die with its container.
                n = await asyncio.to_thread(_destroy_orphans, ex.sandbox)
                if n:
                    log.info("executor %s exited; killed %d process(es) it left behind",
                             ex.executor_id, n)
        self._executor_exited(ex, rc)

    def _registration_timeout(self, ex: ExecutorRun) -> None:
        if ex.stream is None and ex.proc is not None and ex.proc.returncode is None:
            log.warning("executor %s did not subscribe in time", ex.executor_id)
            ex.forced = ("TASK_FAILED", "REASON_EXECUTOR_REGISTRATION_TIMEOUT")
            _destroy(ex.proc.pid)

    def _executor_exited(self, ex: ExecutorRun, rc: int | None) -> None:
        for h in ex.timers:
            h.cancel()
        self.executors.pop((ex.framework_id, ex.executor_id), None)
        if ex.stream is not None:
            ex.stream.close()
        if not self.alive:
            return
        if ex.forced is not None:
            state, reason = ex.forced
        elif ex.shutting_down:
            state, reason = "TASK_KILLED", "REASON_EXECUTOR_TERMINATED"
        else:
            state, reason = "TASK_FAILED", "REASON_EXECUTOR_TERMINATED"
        for task_id in sorted(ex.tasks):
            run = self.tasks.get((ex.framework_id, task_id))
            if run is not None and run.state not in TERMINAL_STATES:
                self._update(run, state, "SOURCE_AGENT", run.drain_reason or reason,
                             f"Executor terminated with status {raw_wait_status(rc)}")
        self.master.agent_executor_exited(self.id, ex.framework_id, ex.executor_id,
                                          raw_wait_status(rc))

    async def _run_command(self, run: TaskRun) -> None:
        command = run.info.get("command") or {}
        container_id = str(uuid.uuid4())
        sandbox = self._sandbox(run.framework_id, run.task_id, container_id)
        env = self._env(run.framework_id, run.task_id, sandbox, command, DEFAULT_SHUTDOWN_GRACE)
        env["MESOS_TASK_ID"] = run.task_id
        self._update(run, "TASK_STARTING", "SOURCE_EXECUTOR")
        if run.killing:
            self._update(run, "TASK_KILLED", "SOURCE_EXECUTOR", run.drain_reason,
                         "Killed before the command started")
            return
        try:
            run.proc = await self._spawn(command, sandbox, env)
        except OSError as e:
            self._update(run, "TASK_FAILED", "SOURCE_EXECUTOR", "REASON_COMMAND_EXECUTOR_FAILED",
                         f"Failed to launch command {shlex.quote(str(command.get('value')))}: "
                         f"{e}")
            return
        if run.killing:
            _destroy(run.proc.pid)
        else:
            self._update(run, "TASK_RUNNING", "SOURCE_EXECUTOR")
        rc = await run.proc.wait()
        _killpg(run.proc.pid, signal.SIGKILL)
        self.pids.discard(run.proc.pid)
        if not self.alive:
            return
        if run.forced is not None:
            self._update(run, run.forced[0], "SOURCE_AGENT", run.forced[1],
                         "Container preempted by the QoS controller")
        elif run.killing:
            self._update(run, "TASK_KILLED", "SOURCE_EXECUTOR", run.drain_reason,
                         "Command terminated by a kill request")
        elif rc == 0:
            self._update(run, "TASK_FINISHED", "SOURCE_EXECUTOR", None,
                         "Command exited with status 0")
        elif rc is not None and rc < 0:
            self._update(run, "TASK_FAILED", "SOURCE_EXECUTOR", "REASON_COMMAND_EXECUTOR_FAILED",
                         f"Command terminated with signal {signal.Signals(-rc).name}")
        else:
            self._update(run, "TASK_FAILED", "SOURCE_EXECUTOR", "REASON_COMMAND_EXECUTOR_FAILED",
                         f"Command exited with status {rc}")
        self.master.agent_executor_exited(self.id, run.framework_id, run.task_id,
                                          raw_wait_status(rc))

    async def _kill_command(self, run: TaskRun, kill_policy: Json | None) -> None:
        run.killing = True
        grace = seconds_of((kill_policy or {}).get("grace_period"))
        if grace is None:
            grace = seconds_of((run.info.get("kill_policy") or {}).get("grace_period"))
        if grace is None:
            grace = DEFAULT_KILL_GRACE
        if self._killing_state(run.framework_id) and run.forced is None:
            self._update(run, "TASK_KILLING", "SOURCE_EXECUTOR")
        proc = run.proc
        if proc is None:
            return      # not spawned yet: _run_command sees ``killing`` and ends it
        if grace > 0:
            _killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        if proc.returncode is None:
            _destroy(proc.pid)
        else:  # reaped: its pid may be reused, but its group (if any is left) is still ours
            _killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ executor HTTP API

    async def _executor_api(self, request: web.Request) -> web.StreamResponse:
        call, error = await httputil.read_call(request, EXECUTOR_CALLS)
        if error is not None:
            return error
        assert call is not None
        fw_id, exec_id = id_of(call.get("framework_id")), id_of(call.get("executor_id"))
        if fw_id is None or exec_id is None:
            return httputil.bad_request("Expecting 'framework_id' and 'executor_id' "
                                        "to be present")
        if fw_id not in self.frameworks:
            return httputil.bad_request("Framework cannot be found")
        ex = self.executors.get((fw_id, exec_id))
        if ex is None:
            return httputil.bad_request("Executor cannot be found")
        kind = call["type"]
        if kind == "SUBSCRIBE":
            return await self._executor_subscribe(request, call, ex)
        if ex.stream is None:
            return web.Response(status=403, text="Executor is not subscribed")
        if kind == "UPDATE":
            return self._executor_update(call, ex)
        if kind == "MESSAGE":
            data = (call.get("message") or {}).get("data")
            if not is_b64(data):
                return httputil.bad_request("Expecting 'message.data' (base64) to be present")
            self.master.agent_executor_message(self.id, fw_id, exec_id, data)
            return web.Response(status=202)
        return web.Response(status=501, text=f"Call {kind} is not implemented")

    async def _executor_subscribe(self, request: web.Request, call: Json, ex: ExecutorRun
                                  ) -> web.StreamResponse:
        if not httputil.accepts_json(request):
            return web.Response(status=406, text="Expecting 'Accept' to allow "
                                                 "application/json")
        if not isinstance(call.get("subscribe", {}), dict):
            return httputil.bad_request("Expecting 'subscribe' to be present")
        old = ex.stream
        stream = EventStream(request, heartbeat=self.options.heartbeat_interval)
        ex.stream = stream
        if old is not None:
            old.close()
        await stream.open({})
        fw_info = dict(self.frameworks.get(ex.framework_id, {}))
        fw_info["id"] = ident(ex.framework_id)
        stream.send(event("SUBSCRIBED", {
            "executor_info": {**ex.info, "framework_id": ident(ex.framework_id)},
            "framework_info": fw_info,
            "agent_info": self.agent_info(),
            "container_id": {"value": ex.container_id},
        }))
        queued, ex.queued = ex.queued, []
        for ev in queued:
            stream.send(ev)
            for tid in _event_task_ids(ev):
                run = self.tasks.get((ex.framework_id, tid))
                if run is not None:
                    run.delivered = True
        if ex.shutting_down:
            stream.send(event("SHUTDOWN"))
        try:
            await stream.run()
        finally:
            if ex.stream is stream:
                ex.stream = None
        return stream.response  # type: ignore[return-value]

    def _executor_update(self, call: Json, ex: ExecutorRun) -> web.Response:
        update = call.get("update")
        status = update.get("status") if isinstance(update, dict) else None
        if not isinstance(status, dict):
            return httputil.bad_request("Expecting 'update.status' to be present")
        task_id = id_of(status.get("task_id"))
        state = status.get("state")
        if task_id is None:
            return httputil.bad_request("Expecting 'update.status.task_id' to be present")
        if not isinstance(state, str) or not state.startswith("TASK_"):
            return httputil.bad_request("'update.status.state' is missing or unknown")
        if state == "TASK_STAGING":
            return httputil.bad_request("An executor may not send TASK_STAGING")
        if not is_uuid_b64(status.get("uuid")):
            return httputil.bad_request("'update.status.uuid' must be a base64 16-byte UUID")
        run = self.tasks.get((ex.framework_id, task_id))
        if run is None or task_id not in ex.tasks:
            return httputil.bad_request(f"Task {task_id} is unknown to this executor")
        fixed = dict(status)
        fixed["agent_id"] = ident(self.id)
        fixed["executor_id"] = ident(ex.executor_id)
        fixed.setdefault("source", "SOURCE_EXECUTOR")
        fixed.setdefault("timestamp", time.time())
        if run.drain_reason and state in TERMINAL_STATES:
            fixed["reason"] = run.drain_reason
        self._record(run, fixed)
        return web.Response(status=202)


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="")


def _event_task_ids(ev: Json) -> list[str]:
    if ev.get("type") == "LAUNCH":
        return [id_of(ev["launch"]["task"].get("task_id")) or ""]
    if ev.get("type") == "LAUNCH_GROUP":
        return [id_of(t.get("task_id")) or "" for t in ev["launch_group"]["task_group"]["tasks"]]
    return []


def _event_has_task(ev: Json, task_id: str) -> bool:
    return task_id in _event_task_ids(ev)
