"""The executor's imperative shell: HTTP to the agent, the task process, timers.

``python -m corral_executor`` runs ``main()``. The shell owns I/O only: it feeds events
(agent stream, process exit, usage samples, control files, timers, signals) one at a time
into ``state.handle`` and carries out the returned actions. The agent is reached at
``http(s)://$MESOS_AGENT_ENDPOINT/api/v1/executor`` (``agenthttp``): SUBSCRIBE holds a
RecordIO event stream open; every UPDATE and MESSAGE call goes out on its own request, in
order, from one sender queue so updates reach the agent in the order they were made.
With executor authentication on, the agent hands us a token in
``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``: it goes with every call as ``Bearer``, and is
taken out of the environment at once (as Mesos' executor library does) so the task never
sees it and cannot forge our updates.

The package needs only the standard library: it also runs as a zipapp fetched into the
sandbox (see ``corral.artifact``), and then puts that archive on the task's
``PYTHONPATH`` so the job can ``import corral_executor.sdk``.
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral_executor import agenthttp, control
from corral_executor import state as core
from corral_executor.durations import duration_env
from corral_executor.process import TaskProcess, stderr_tail
from corral_executor.recordio import Decoder, RecordIOError

log = logging.getLogger("corral_executor")

#: First delay between SUBSCRIBE attempts while recovering; doubles up to the agent's max.
INITIAL_BACKOFF = 0.1
#: Attempts for an UPDATE call that the agent did not accept while connected.
UPDATE_ATTEMPTS = 3
#: Seconds a non-streaming call (UPDATE, MESSAGE) may take in all.
CALL_TIMEOUT = 10.0
TOKEN_ENV = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN"


def hide_initial_environment() -> bool:
    """Make this process non-dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``).

    Erasing the token from ``os.environ`` does not erase it from the environment block
    the kernel shows in ``/proc/<pid>/environ``; our task runs as the same user and could
    read it there (or ptrace us) and forge our updates. A non-dumpable process's /proc
    files belong to root, so only root can. False where this is not possible."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def uuid4_bytes() -> bytes:
    """A random (version 4) UUID's 16 bytes, without importing ``uuid`` (start-up cost)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


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
    auth_token: str | None = None  # MESOS_EXECUTOR_AUTHENTICATION_TOKEN
    endpoint: agenthttp.Endpoint | None = None  # default: plain HTTP to agent_endpoint

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
                auth_token=env.get(TOKEN_ENV) or None,
                endpoint=agenthttp.Endpoint.from_env(env["MESOS_AGENT_ENDPOINT"], env),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def artifact_path() -> str | None:
    """The zipapp this package was imported from, or None when installed normally."""
    here = os.path.abspath(__file__)  # e.g. <sandbox>/corral-executor.pyz/corral_executor/main.py
    parent = os.path.dirname(os.path.dirname(here))
    return parent if os.path.isfile(parent) else None


def task_environment(
    base: Mapping[str, str], spec_env: Mapping[str, str], task_id: str, sandbox: Path,
    python_dir: str | None = None, archive: str | None = None,
) -> dict[str, str]:
    """The task's environment: ours, with ``python_dir`` (where the executor's own Python
    lives) first on PATH, then the spec's, then the CORRAL_* we own; with ``archive``
    (our zipapp) first on PYTHONPATH, so the job SDK imports from it.

    So ``python3`` in a task command is the interpreter running Corral's executor, which
    has the job SDK, whatever PATH the agent was started with (an unactivated virtualenv,
    a service manager's minimal PATH). A PATH in the spec's env wins over both.
    """
    env = dict(base)
    env.pop(TOKEN_ENV, None)  # the executor's credential, never the task's
    if python_dir:
        path = env.get("PATH", os.defpath)
        if path.split(os.pathsep, 1)[0] != python_dir:
            env["PATH"] = python_dir + os.pathsep + path
    env.update(spec_env)
    if archive:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (archive, env.get("PYTHONPATH")) if p)
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
        self.endpoint = config.endpoint or agenthttp.Endpoint.from_env(
            config.agent_endpoint, {})
        self._headers = {"Accept": "application/json"}
        if config.auth_token:
            self._headers["Authorization"] = f"Bearer {config.auth_token}"
        self.archive = artifact_path()
        self.control_dir = config.sandbox / ".corral"
        self._events: asyncio.Queue[core.Event] = asyncio.Queue()
        self._calls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._exit_code: asyncio.Future[int] | None = None
        self._process: TaskProcess | None = None
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

    def feed(self, event: core.Event) -> None:
        self._events.put_nowait(event)

    # ------------------------------------------------------------------ the core loop

    async def _dispatch_loop(self) -> None:
        # Nothing may end this loop: without it no kill, update or exit would ever happen
        # again and the task would wedge in its last state. A failing event or action is
        # logged and the loop goes on.
        while True:
            event = await self._events.get()
            try:
                self.state, actions = core.handle(
                    self.state, event, now=time.time(), new_uuid=uuid4_bytes
                )
            except Exception:
                log.exception("internal error handling %s; event dropped", type(event).__name__)
                continue
            for action in actions:
                try:
                    await self._perform(action)
                except Exception:
                    log.exception("internal error carrying out %s", type(action).__name__)

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
        try:
            env = task_environment(self.base_env, spec.env, task_id, self.config.sandbox,
                                   os.path.dirname(sys.executable) or None, self.archive)
            self._process = await TaskProcess.start(spec.command, env, self.config.sandbox)
        except Exception as exc:  # OSError, ValueError (a NUL byte), anything: TASK_FAILED
            reason = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            self.feed(core.ProcessStartFailed(reason))
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
                took = doc.get("seconds")
                seconds = float(took) if isinstance(took, int | float) and not isinstance(
                    took, bool) and 0 <= took < 1e6 else None
                self.feed(core.CheckpointCommitted(doc["uri"], doc["seq"], seconds))

    async def _control_poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            self._poll_control_once()

    # ------------------------------------------------------------------ the agent

    async def _send_loop(self) -> None:
        while True:
            call = await self._calls.get()
            try:
                await self._send(call)
            finally:
                self._calls.task_done()

    async def _send(self, call: dict[str, Any]) -> None:
        attempts = UPDATE_ATTEMPTS if call["type"] == "UPDATE" else 1
        for attempt in range(attempts):
            if not self.state.connected:
                # Updates wait in ``unacked`` and travel with the next SUBSCRIBE.
                return
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    resp = await agenthttp.post(self.endpoint, json.dumps(call).encode(),
                                                self._headers)
                    try:
                        if resp.status == 202:
                            return
                        body = (await resp.text(4096))[:200]
                    finally:
                        resp.close()
                log.warning("agent answered %s to %s: %s", resp.status, call["type"], body)
            except (TimeoutError, OSError) as exc:
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
            except (TimeoutError, OSError, RecordIOError) as exc:
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
        either: set[asyncio.Future[Any]] = {waiter, self._exit_code}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self._recover.is_set() and not self._exit_code.done()

    async def _stream_once(self) -> None:
        body = json.dumps(core.subscribe_call(self.state)).encode()
        async with asyncio.timeout(CALL_TIMEOUT):
            resp = await agenthttp.post(self.endpoint, body, self._headers)
        try:
            if resp.status != 200:
                async with asyncio.timeout(CALL_TIMEOUT):
                    text = (await resp.text(4096))[:200]
                raise SubscribeRejected(f"SUBSCRIBE answered {resp.status}: {text}")
            decoder = Decoder(max_record=16 * 1024 * 1024)  # agent events are small
            async for chunk in resp.chunks():
                for record in decoder.feed(chunk):
                    try:
                        event = core.decode_event(json.loads(record))
                    except ValueError as exc:
                        log.warning("bad event from agent: %s", exc)
                        continue
                    if event is not None:
                        self.feed(event)
        finally:
            resp.close()


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
    # Mesos' executor library erases the token too: nothing we start may see it.
    os.environ.pop(TOKEN_ENV, None)
    if config.auth_token:
        hide_initial_environment()
    try:
        return asyncio.run(Executor(config).run())
    except KeyboardInterrupt:
        return 130
