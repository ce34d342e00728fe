"""The executor's imperative shell: HTTP to the agent, the task process, timers.

``python -m corral_executor`` runs ``main()``. The shell owns I/O only: it feeds events
(agent stream, process exit, usage samples, control files, timers, signals) one at a time
into ``state.handle`` and carries out the returned actions. The agent is reached at
``http://$MESOS_AGENT_ENDPOINT/api/v1/executor``: SUBSCRIBE holds a RecordIO event stream
open; every UPDATE and MESSAGE call goes out on its own request, in order, from one
sender queue so updates reach the agent in the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from corral_executor import control
from corral_executor import state as core
from corral_executor.durations import duration_env
from corral_executor.process import TaskProcess, stderr_tail
from corral_executor.recordio import RecordDecoder, RecordIOError

log = logging.getLogger("corral_executor")

#: First delay between SUBSCRIBE attempts while recovering; doubles up to the agent's max.
INITIAL_BACKOFF = 0.1
#: Attempts for an UPDATE call that the agent did not accept while connected.
UPDATE_ATTEMPTS = 3


class ConfigError(ValueError):
    """The environment the agent gave us is unusable."""


@dataclass(frozen=True)
class Config:
    agent_endpoint: str
    framework_id: str
    executor_id: str
    sandbox: Path
    checkpoint: bool
    recovery_timeout: float
    backoff_max: float
    shutdown_grace: float
    ack_timeout: float
    poll_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        missing = [
            k
            for k in ("MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID")
            if not env.get(k)
        ]
        if missing:
            raise ConfigError(f"missing environment: {', '.join(missing)} (set by the agent)")
        sandbox = Path(env.get("MESOS_SANDBOX") or env.get("MESOS_DIRECTORY") or os.getcwd())
        try:
            return cls(
                agent_endpoint=env["MESOS_AGENT_ENDPOINT"],
                framework_id=env["MESOS_FRAMEWORK_ID"],
                executor_id=env["MESOS_EXECUTOR_ID"],
                sandbox=sandbox,
                # The agent writes "1"/"0"; older agents wrote "true"/"false".
                checkpoint=env.get("MESOS_CHECKPOINT", "0").strip().lower() in ("1", "true"),
                recovery_timeout=duration_env(dict(env), "MESOS_RECOVERY_TIMEOUT", 15 * 60.0),
                backoff_max=duration_env(dict(env), "MESOS_SUBSCRIPTION_BACKOFF_MAX", 2.0),
                shutdown_grace=duration_env(dict(env), "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", 5.0),
                ack_timeout=float(env.get("CORRAL_EXECUTOR_ACK_TIMEOUT", "10")),
                poll_seconds=float(env.get("CORRAL_EXECUTOR_POLL_SECONDS", "0.5")),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def task_environment(
    base: Mapping[str, str], spec_env: Mapping[str, str], task_id: str, sandbox: Path
) -> dict[str, str]:
    """The task's environment: ours, then the spec's, then the CORRAL_* we own."""
    env = dict(base)
    env.update(spec_env)
    env["CORRAL_TASK_ID"] = task_id
    env["CORRAL_SANDBOX"] = str(sandbox)
    env["CORRAL_CONTROL_DIR"] = str(sandbox / ".corral")
    # The interpreter that runs this executor has corral_executor: the commands Corral
    # writes for its own workload runners (Dask, torch) start with it.
    env["CORRAL_PYTHON"] = sys.executable
    return env


class Executor:
    """One executor process: connection, task process and the event loop between them."""

    def __init__(self, config: Config, base_env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.state = core.ExecutorState(
            framework_id=config.framework_id,
            executor_id=config.executor_id,
            checkpoint=config.checkpoint,
            shutdown_grace=config.shutdown_grace,
            ack_timeout=config.ack_timeout,
        )
        self.url = f"http://{config.agent_endpoint}/api/v1/executor"
        self.control_dir = config.sandbox / ".corral"
        self._events: asyncio.Queue[core.Event] = asyncio.Queue()
        self._calls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._exit_code: asyncio.Future[int] | None = None
        self._process: TaskProcess | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._recover = asyncio.Event()
        self._seen: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._ack_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._exit_code = loop.create_future()
        self.control_dir.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(
                    sig, self.feed, core.Shutdown(f"executor received {signal.Signals(sig).name}")
                )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0)
        )
        try:
            self._tasks = [
                loop.create_task(self._dispatch_loop()),
                loop.create_task(self._send_loop()),
                loop.create_task(self._connection_loop()),
                loop.create_task(self._control_poll_loop()),
            ]
            return await self._exit_code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self._teardown()

    async def _teardown(self) -> None:
        # Flush calls already queued (the terminal update, last messages), briefly.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._calls.join(), 2.0)
        if self._process is not None and self._process.running:
            self._process.force_kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.proc.wait(), 5.0)
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def feed(self, event: core.Event) -> None:
        self._events.put_nowait(event)

    # ------------------------------------------------------------------ the core loop

    async def _dispatch_loop(self) -> None:
        while True:
            event = await self._events.get()
            self.state, actions = core.handle(
                self.state, event, now=time.time(), new_uuid=lambda: uuid.uuid4().bytes
            )
            for action in actions:
                await self._perform(action)

    async def _perform(self, action: core.Action) -> None:
        match action:
            case core.SendUpdate(status=status):
                self._calls.put_nowait(core.update_call(self.state, status))
            case core.SendMessage(payload=payload):
                self._calls.put_nowait(core.message_call(self.state, payload))
            case core.StartTask(task_id=task_id, spec=spec):
                await self._start_task(task_id, spec)
            case core.KillTask(grace_seconds=grace):
                if self._process is not None and self._process.running:
                    self._process.kill(grace)
            case core.WriteControl(name=name, data=data):
                try:
                    control.atomic_write(self.control_dir / name, data)
                except OSError as exc:
                    log.warning("cannot write control file %s: %s", name, exc)
            case core.ArmAckTimer(seconds=seconds):
                if self._ack_timer is not None:
                    self._ack_timer.cancel()
                self._ack_timer = asyncio.get_running_loop().call_later(
                    seconds, self.feed, core.AckTimerFired()
                )
            case core.Reconnect():
                if self._stream_task is not None:
                    self._stream_task.cancel()
            case core.StartRecovery():
                self._recover.set()
            case core.Exit(code=code):
                if self._exit_code is not None and not self._exit_code.done():
                    self._exit_code.set_result(code)
            case core.Log(message=message, level=level):
                log.log(logging.getLevelName(level.upper()), "%s", message)

    # ------------------------------------------------------------------ the task

    async def _start_task(self, task_id: str, spec: core.RunSpec) -> None:
        env = task_environment(self.base_env, spec.env, task_id, self.config.sandbox)
        try:
            self._process = await TaskProcess.start(spec.command, env, self.config.sandbox)
        except OSError as exc:
            self.feed(core.ProcessStartFailed(str(exc)))
            return
        self.feed(core.ProcessStarted(self._process.pid))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_process(self._process)))
        if spec.usage_interval_seconds > 0:
            self._tasks.append(
                loop.create_task(self._usage_loop(self._process, spec.usage_interval_seconds))
            )

    async def _watch_process(self, process: TaskProcess) -> None:
        code = await process.wait()
        # A last look at progress so the final figures are not lost to poll timing.
        self._poll_control_once()
        self.feed(core.ProcessExited(code, stderr_tail(self.config.sandbox / "stderr")))

    async def _usage_loop(self, process: TaskProcess, interval: float) -> None:
        process.sample_usage()  # baseline for the first CPU percent
        while process.running:
            await asyncio.sleep(interval)
            sample = process.sample_usage()
            if sample is None:
                return
            usage, percent = sample
            self.feed(core.UsageSampled(percent, usage.cpu_seconds, usage.rss_mb))

    # ------------------------------------------------------------------ control files

    def _poll_control_once(self) -> None:
        seen = self._seen
        for name in (control.PROGRESS, control.CHECKPOINT, control.LOAD):
            path = self.control_dir / name
            try:
                raw = path.read_bytes()[: control.MAX_CONTROL_BYTES]
            except OSError:
                continue
            if seen.get(name) == raw:
                continue
            seen[name] = raw
            doc = control.read_json(path)
            if doc is None:
                continue
            if name == control.PROGRESS:
                self.feed(core.ProgressChanged(doc))
            elif name == control.LOAD:
                self.feed(core.LoadChanged(doc))
            elif isinstance(doc.get("uri"), str) and isinstance(doc.get("seq"), int):
                self.feed(core.CheckpointCommitted(doc["uri"], doc["seq"]))

    async def _control_poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            self._poll_control_once()

    # ------------------------------------------------------------------ the agent

    async def _send_loop(self) -> None:
        assert self._session is not None
        while True:
            call = await self._calls.get()
            try:
                await self._send(call)
            finally:
                self._calls.task_done()

    async def _send(self, call: dict[str, Any]) -> None:
        assert self._session is not None
        attempts = UPDATE_ATTEMPTS if call["type"] == "UPDATE" else 1
        for attempt in range(attempts):
            if not self.state.connected:
                # Updates wait in ``unacked`` and travel with the next SUBSCRIBE.
                return
            try:
                async with self._session.post(
                    self.url,
                    json=call,
                    headers={"Accept": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10.0),
                ) as resp:
                    if resp.status == 202:
                        return
                    body = (await resp.text())[:200]
                    log.warning("agent answered %s to %s: %s", resp.status, call["type"], body)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("sending %s failed: %s", call["type"], exc)
            await asyncio.sleep(0.2 * (2**attempt))

    async def _connection_loop(self) -> None:
        backoff = INITIAL_BACKOFF
        deadline: float | None = None
        while True:
            subscribed_before = self.state.ever_subscribed
            self._stream_task = asyncio.get_running_loop().create_task(self._stream_once())
            try:
                await self._stream_task
                reason = "event stream ended"
            except asyncio.CancelledError:
                if self._exit_code is not None and self._exit_code.done():
                    raise
                reason = "subscription aborted"
            except (TimeoutError, aiohttp.ClientError, OSError, RecordIOError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except SubscribeRejected as exc:
                reason = str(exc)
            if self.state.connected or self.state.ever_subscribed != subscribed_before:
                # This attempt got through: the recovery window starts afresh.
                deadline, backoff = None, INITIAL_BACKOFF
            self._recover.clear()
            self.feed(core.Disconnected(reason))
            # The core decides: StartRecovery (keep trying) or stopping the task and exit.
            if not await self._recovery_requested():
                return
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.config.recovery_timeout
            if now >= deadline:
                self.feed(core.RecoveryExpired())
                return
            await asyncio.sleep(min(backoff, max(0.0, deadline - now)))
            backoff = min(backoff * 2, self.config.backoff_max)

    async def _recovery_requested(self) -> bool:
        """True once the core asks for recovery; False when it decided to exit."""
        assert self._exit_code is not None
        waiter = asyncio.ensure_future(self._recover.wait())
        try:
            await asyncio.wait({waiter, self._exit_code}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self._recover.is_set() and not self._exit_code.done()

    async def _stream_once(self) -> None:
        assert self._session is not None
        body = core.subscribe_call(self.state)
        async with self._session.post(
            self.url, json=body, headers={"Accept": "application/json"}
        ) as resp:
            if resp.status != 200:
                text = (await resp.text())[:200]
                raise SubscribeRejected(f"SUBSCRIBE answered {resp.status}: {text}")
            decoder = RecordDecoder()
            async for chunk in resp.content.iter_any():
                for record in decoder.feed(chunk):
                    try:
                        event = core.decode_event(json.loads(record))
                    except ValueError as exc:
                        log.warning("bad event from agent: %s", exc)
                        continue
                    if event is not None:
                        self.feed(event)


class SubscribeRejected(Exception):
    """The agent refused SUBSCRIBE with a non-200 status."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one executor with configuration from the agent's environment."""
    logging.basicConfig(
        level=os.environ.get("CORRAL_EXECUTOR_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s corral-executor %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"corral-executor: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(Executor(config).run())
    except KeyboardInterrupt:
        return 130
