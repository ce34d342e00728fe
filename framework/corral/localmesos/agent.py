"""One localmesos agent: the executor HTTP API, real executor processes, status updates.

Owns what a Mesos agent owns: sandboxes, executor and command-task processes (each in its
own session / process group so a kill reaches every descendant), the per-task status
update streams (one unacknowledged update in flight per task, resent with doubling backoff
until the scheduler's ACK arrives through the master), and the executor event streams.

Before a container starts, ``containers.prepare`` runs the steps a Mesos agent does: the
user to run as, the sandbox's owner and mode, the image check, the fetcher
(``CommandInfo.uris`` through this agent's ``FetchCache``) and, with executor
authentication on, the executor's token; the executor API checks that token on every call
(401 without or with a bad one, 403 for another executor's). Executor updates are
acknowledged to the executor once the agent holds them, as Mesos does (not when the
scheduler acknowledges). The master talks to an agent by plain method calls (both live in
one process); the agent reports to the master through the ``MasterPort`` protocol.
Killing the agent "like a spot reclaim" (``terminate``) SIGKILLs every process group it
started and stops its HTTP site; the master only learns of it through its health checks.
What keeps a container inside its sandbox (orphan sweeps, log rotation, the disk limit)
is ``localmesos.sandbox``.
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

from corral.localmesos import auth, containers, httputil
from corral.localmesos.fetcher import FetchCache
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
from corral.localmesos.sandbox import SandboxLimits, SandboxWatch, disk_mb, sweep
from corral.localmesos.streams import EventStream

log = logging.getLogger("localmesos.agent")

EXECUTOR_CALLS = frozenset({"UNKNOWN", "SUBSCRIBE", "UPDATE", "MESSAGE", "HEARTBEAT"})
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
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    containers: containers.ContainerOptions = field(
        default_factory=containers.ContainerOptions)
    ssl_context: Any = None  # serve the executor API over TLS


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
    forced_message: str | None = None          # and its message (a container limitation)
    drain_reason: str | None = None
    delivered: bool = False
    note: str | None = None                    # appended to every status message
    seen_uuids: set[str] = field(default_factory=set)


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
    forced_message: str | None = None     # and its message (a container limitation)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    launch_error: str | None = None       # the container never started: why
    note: str | None = None               # appended to every status message


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
        self.sandboxes = SandboxWatch(options.sandbox)
        self.fetch_cache = FetchCache(str(work_dir / "agents" / agent_id / "fetch"),
                                      options.containers.fetcher_cache_bytes)

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid_text(self) -> str:
        return f"slave({self.index + 1})@{self.hostname}:{self.port}"

    def url_json(self) -> Json:
        scheme = "https" if self.options.ssl_context is not None else "http"
        return {"scheme": scheme, "address": {"hostname": self.hostname, "ip": "127.0.0.1",
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
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.options.ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the one site's socket, bound now
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
        await self.sandboxes.stop()
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
        # (The executor got its ACKNOWLEDGED when we took the update: ``_executor_update``.)
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
        message = _noted(message, run.note)
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
        if isinstance(status.get("uuid"), str):
            run.seen_uuids.add(status["uuid"])
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
        base = self.options.containers.base_env
        env = dict(os.environ) if base is None else dict(base)
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

    async def _spawn(self, command: Json, sandbox: Path, env: dict[str, str],
                     run_as: containers.RunAs | None = None) -> asyncio.subprocess.Process:
        value = command.get("value", "")
        creds = run_as.spawn_kwargs() if run_as is not None else {}
        shell = command.get("shell", True)
        out = open(sandbox / "stdout", "ab")  # noqa: SIM115 - handed to the child
        err = open(sandbox / "stderr", "ab")  # noqa: SIM115
        try:
            if shell:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", str(value), cwd=sandbox, env=env, stdout=out, stderr=err,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True, **creds)
            else:
                argv = [str(a) for a in command.get("arguments") or []] or [str(value)]
                proc = await asyncio.create_subprocess_exec(
                    *argv, executable=str(value), cwd=sandbox, env=env, stdout=out,
                    stderr=err, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                    **creds)
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

    def _track(self, pid: int | None, started: bool) -> None:
        """A helper process (the fetcher) of a container: killed with the agent."""
        if pid is None:
            return
        if started:
            self.pids.add(pid)
            self.seen_pids.add(pid)
        else:
            self.pids.discard(pid)

    async def _prepare(self, framework_id: str, executor_id: str, container_id: str,
                       command: Json, container: Any, sandbox: Path, custom: bool
                       ) -> containers.Prepared | str:
        """The container's user, sandbox, image check, fetch and token; or why not."""
        try:
            return await containers.prepare(
                self.options.containers, self.fetch_cache,
                framework_info=self.frameworks.get(framework_id, {}),
                framework_id=framework_id, executor_id=executor_id,
                container_id=container_id, command=command, container=container,
                sandbox=sandbox, custom_executor=custom, track=self._track)
        except containers.LaunchFailed as exc:
            log.warning("container %s of %s cannot launch: %s", container_id, executor_id, exc)
            return str(exc)

    async def _run_executor(self, ex: ExecutorRun) -> None:
        grace = seconds_of(ex.info.get("shutdown_grace_period"))
        grace = DEFAULT_SHUTDOWN_GRACE if grace is None else grace
        command = ex.info.get("command") or {}
        prep = await self._prepare(ex.framework_id, ex.executor_id, ex.container_id, command,
                                   ex.info.get("container"), ex.sandbox, custom=True)
        if isinstance(prep, str):
            ex.launch_error = prep
            ex.forced = ("TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED")
            self._executor_exited(ex, None)
            return
        ex.note = prep.note
        for task_id in ex.tasks:
            run = self.tasks.get((ex.framework_id, task_id))
            if run is not None:
                run.note = prep.note
        env = self._env(ex.framework_id, ex.executor_id, ex.sandbox, command, grace)
        env.update(prep.env)
        rc: int | None = None
        if ex.shutting_down or not self.alive:
            self._executor_exited(ex, None)   # shut down while it was being fetched
            return
        try:
            ex.proc = await self._spawn(command, ex.sandbox, env, prep.run_as)
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the command or env
            log.warning("executor %s failed to start: %s", ex.executor_id, e)
            rc = 127
        if ex.proc is not None:
            loop = asyncio.get_running_loop()
            ex.timers.append(loop.call_later(
                self.options.executor_registration_timeout, self._registration_timeout, ex))
            tasks = [self.tasks[(ex.framework_id, t)].info for t in ex.tasks
                     if (ex.framework_id, t) in self.tasks]
            self.sandboxes.watch(ex.container_id, ex.sandbox, disk_mb([ex.info, *tasks]),
                                 lambda message: self._disk_exceeded(ex, message))
            if ex.shutting_down:      # shut down before it even started
                _destroy(ex.proc.pid)
            rc = await ex.proc.wait()
            self.sandboxes.unwatch(ex.container_id)
            # The leader may be gone but its children live on in the group: reap them too.
            _killpg(ex.proc.pid, signal.SIGKILL)
            self.pids.discard(ex.proc.pid)
            # Whatever is left of the container (detached, reparented) dies with it.
            n = await asyncio.to_thread(sweep, ex.sandbox)
            if n:
                log.info("executor %s exited; killed %d process(es) it left behind",
                         ex.executor_id, n)
        self._executor_exited(ex, rc)

    @staticmethod
    def _disk_exceeded(container: ExecutorRun | TaskRun, message: str) -> None:
        """The sandbox outgrew its disk: destroy the container (an executor's, or a command
        task's), failing its tasks with the limitation."""
        container.forced = ("TASK_FAILED", "REASON_CONTAINER_LIMITATION_DISK")
        container.forced_message = message
        if container.proc is not None:
            _destroy(container.proc.pid)

    def _task_ended(self, ex: ExecutorRun) -> None:
        """A task of ``ex`` is terminal: once none is live, sweep what the tasks left
        (processes of the sandbox outside the executor's own process group)."""
        if ex.proc is None or any(
                self.tasks[(ex.framework_id, t)].state not in TERMINAL_STATES
                for t in ex.tasks if (ex.framework_id, t) in self.tasks):
            return
        self._spawn_bg(asyncio.to_thread(sweep, ex.sandbox, ex.proc.pid))

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
        # A container that never started has no exit status: Mesos reports -1.
        never_ran = ex.launch_error is not None or (rc is None and ex.proc is None)
        status = -1 if never_ran else raw_wait_status(rc)
        message = (ex.launch_error or ex.forced_message
                   or f"Executor terminated with status {status}")
        for task_id in sorted(ex.tasks):
            run = self.tasks.get((ex.framework_id, task_id))
            if run is not None and run.state not in TERMINAL_STATES:
                self._update(run, state, "SOURCE_AGENT", run.drain_reason or reason, message)
        self.master.agent_executor_exited(self.id, ex.framework_id, ex.executor_id, status)

    async def _run_command(self, run: TaskRun) -> None:
        command = run.info.get("command") or {}
        container_id = str(uuid.uuid4())
        sandbox = self._sandbox(run.framework_id, run.task_id, container_id)
        env = self._env(run.framework_id, run.task_id, sandbox, command, DEFAULT_SHUTDOWN_GRACE)
        env["MESOS_TASK_ID"] = run.task_id
        prep = await self._prepare(run.framework_id, run.task_id, container_id, command,
                                   run.info.get("container"), sandbox, custom=False)
        if isinstance(prep, str):
            self._update(run, "TASK_FAILED", "SOURCE_AGENT", "REASON_CONTAINER_LAUNCH_FAILED",
                         prep)
            self.master.agent_executor_exited(self.id, run.framework_id, run.task_id, -1)
            return
        run.note = prep.note
        self._update(run, "TASK_STARTING", "SOURCE_EXECUTOR")
        if run.killing:
            self._update(run, "TASK_KILLED", "SOURCE_EXECUTOR", run.drain_reason,
                         "Killed before the command started")
            return
        try:
            run.proc = await self._spawn(command, sandbox, env, prep.run_as)
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the command or env
            self._update(run, "TASK_FAILED", "SOURCE_EXECUTOR", "REASON_COMMAND_EXECUTOR_FAILED",
                         f"Failed to launch command {shlex.quote(str(command.get('value')))}: "
                         f"{e}")
            return
        if run.killing:
            _destroy(run.proc.pid)
        else:
            self._update(run, "TASK_RUNNING", "SOURCE_EXECUTOR")
        self.sandboxes.watch(container_id, sandbox, disk_mb([run.info]),
                             lambda message: self._disk_exceeded(run, message))
        rc = await run.proc.wait()
        self.sandboxes.unwatch(container_id)
        _killpg(run.proc.pid, signal.SIGKILL)
        self.pids.discard(run.proc.pid)
        await asyncio.to_thread(sweep, sandbox)
        if not self.alive:
            return
        if run.forced is not None:
            self._update(run, run.forced[0], "SOURCE_AGENT", run.forced[1],
                         run.forced_message or "Container preempted by the QoS controller")
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
        secret = self.options.containers.executor_secret
        claims: dict[str, str] | None = None
        if secret is not None:
            # libprocess authenticates before the handler runs (any method, any body).
            got = auth.bearer_claims(request.headers.get("Authorization"), secret)
            if isinstance(got, auth.Challenge):
                return web.Response(status=401, text=got.message,
                                    headers={"WWW-Authenticate": got.www_authenticate})
            claims = got
        call, error = await httputil.read_call(request, EXECUTOR_CALLS)
        if error is not None:
            return error
        assert call is not None
        if call["type"] == "HEARTBEAT":
            # Mesos answers before looking at the ids (its executor library sends dummies).
            return web.Response(status=202)
        fw_id, exec_id = id_of(call.get("framework_id")), id_of(call.get("executor_id"))
        if fw_id is None or exec_id is None:
            return httputil.bad_request("Expecting 'framework_id' and 'executor_id' "
                                        "to be present")
        if fw_id not in self.frameworks:
            return httputil.bad_request("Framework cannot be found")
        ex = self.executors.get((fw_id, exec_id))
        if ex is None:
            return httputil.bad_request("Executor cannot be found")
        if claims is not None:
            wrong = auth.claims_error(claims, fw_id, exec_id, ex.container_id)
            if wrong is not None:
                return web.Response(status=403, text=wrong)
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
        resent = (call.get("subscribe") or {}).get("unacknowledged_updates")
        for update in resent if isinstance(resent, list) else []:
            # Mesos feeds these through its status update manager again (a duplicate is
            # only acknowledged): here, the ones we never got are taken now.
            status = update.get("status") if isinstance(update, dict) else None
            if isinstance(status, dict):
                self._take_update(status, ex, stream)
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
        if (ex.framework_id, task_id) not in self.tasks or task_id not in ex.tasks:
            return httputil.bad_request(f"Task {task_id} is unknown to this executor")
        self._take_update(status, ex, ex.stream)
        return web.Response(status=202)

    def _take_update(self, status: Json, ex: ExecutorRun, stream: EventStream | None) -> None:
        """Record an executor's (checked) update and acknowledge it to the executor at
        once: Mesos' agent does so when its status update manager has it, long before
        the scheduler acknowledges."""
        task_id = id_of(status.get("task_id")) or ""
        run = self.tasks.get((ex.framework_id, task_id))
        uuid_b64 = status.get("uuid")
        if run is None or task_id not in ex.tasks or not is_uuid_b64(uuid_b64):
            return
        if uuid_b64 not in run.seen_uuids:
            fixed = dict(status)
            fixed["agent_id"] = ident(self.id)
            fixed["executor_id"] = ident(ex.executor_id)
            fixed.setdefault("source", "SOURCE_EXECUTOR")
            fixed.setdefault("timestamp", time.time())
            if run.drain_reason and fixed.get("state") in TERMINAL_STATES:
                fixed["reason"] = run.drain_reason
            note = _noted(fixed.get("message"), ex.note)
            if note is not None:
                fixed["message"] = note
            self._record(run, fixed)
            run.seen_uuids.add(str(uuid_b64))
            if fixed.get("state") in TERMINAL_STATES:
                self._task_ended(ex)
        if stream is not None and not stream.closed:
            stream.send(event("ACKNOWLEDGED", {"task_id": ident(task_id), "uuid": uuid_b64}))


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="")


def _noted(message: Any, note: str | None) -> str | None:
    """A status message with the container's note (localmesos ran it without its image)."""
    text = message if isinstance(message, str) and message else None
    if note is None:
        return text
    return f"{note}; {text}" if text else note


def _event_task_ids(ev: Json) -> list[str]:
    if ev.get("type") == "LAUNCH":
        return [id_of(ev["launch"]["task"].get("task_id")) or ""]
    if ev.get("type") == "LAUNCH_GROUP":
        return [id_of(t.get("task_id")) or "" for t in ev["launch_group"]["task_group"]["tasks"]]
    return []


def _event_has_task(ev: Json, task_id: str) -> bool:
    return task_id in _event_task_ids(ev)
