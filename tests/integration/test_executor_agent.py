"""The executor against a scripted Mesos agent speaking the literal v1 executor API.

``ScriptedAgent`` is an aiohttp server on 127.0.0.1:0 serving ``POST /api/v1/executor``:
SUBSCRIBE gets a RecordIO stream starting with SUBSCRIBED, UPDATE and MESSAGE calls are
recorded and answered 202. Tests push events (LAUNCH, KILL, ...) onto the open stream and
look at what the executor sent. The executor runs in-process (``Executor.run``) or as a
real ``python -m corral_executor`` subprocess; every test checks that no task process is
left behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web

from corral_executor.main import Config, Executor
from corral_executor.recordio import encode
from corral_executor.runspec import encode_run_spec

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK_ID = "fw-0000"
AGENT_ID = "agent-S0"


class ScriptedAgent:
    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.subscribes: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.bad_calls: list[str] = []
        self.authorization: list[str | None] = []
        self._stream: asyncio.Queue[bytes | None] | None = None
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/executor", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.close_stream()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---- the API

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            self.bad_calls.append(f"content-type {request.content_type}")
            return web.Response(status=415)
        call = await request.json()
        self.authorization.append(request.headers.get("Authorization"))
        for key in ("framework_id", "executor_id"):
            if not isinstance(call.get(key), dict) or "value" not in call[key]:
                self.bad_calls.append(f"{call.get('type')} without {key}")
                return web.Response(status=400)
        kind = call.get("type")
        self._changed.set()
        if kind == "SUBSCRIBE":
            return await self._subscribe(request, call)
        if kind == "UPDATE":
            status = call["update"]["status"]
            self.updates.append(status)
            if self.auto_ack:
                self.ack(status)
            return web.Response(status=202)
        if kind == "MESSAGE":
            self.messages.append(json.loads(base64.b64decode(call["message"]["data"])))
            return web.Response(status=202)
        self.bad_calls.append(f"unknown call {kind}")
        return web.Response(status=400)

    async def _subscribe(self, request: web.Request, call: dict[str, Any]) -> web.StreamResponse:
        self.subscribes.append(call)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._stream = queue
        self.push(
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": {"executor_id": call["executor_id"]},
                    "framework_info": {"user": "test", "name": "corral"},
                    "agent_info": {"id": {"value": AGENT_ID}, "hostname": "localhost"},
                },
            }
        )
        while True:
            record = await queue.get()
            if record is None:
                break
            # Split records across writes: the executor must not rely on chunk boundaries.
            half = len(record) // 2
            await resp.write(record[:half])
            await resp.write(record[half:])
        if self._stream is queue:
            self._stream = None
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # ---- test controls

    def push(self, event: dict[str, Any]) -> None:
        assert self._stream is not None, "no executor subscribed"
        self._stream.put_nowait(encode(json.dumps(event).encode()))

    def ack(self, status: dict[str, Any]) -> None:
        if self._stream is not None:
            self.push(
                {
                    "type": "ACKNOWLEDGED",
                    "acknowledged": {"task_id": status["task_id"], "uuid": status["uuid"]},
                }
            )

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.put_nowait(None)
            self._stream = None

    def launch(self, task_id: str, spec: dict[str, Any], **extra: Any) -> None:
        task = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": AGENT_ID},
            "resources": [],
            "data": encode_run_spec(spec),
            **extra,
        }
        self.push({"type": "LAUNCH", "launch": {"task": task}})

    def states(self) -> list[str]:
        return [u["state"] for u in self.updates]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; updates={self.states()} messages={self.messages[-3:]}"
                )
            await asyncio.sleep(0.02)


def make_config(agent: ScriptedAgent, sandbox: Path, **over: Any) -> Config:
    values: dict[str, Any] = {
        "agent_endpoint": agent.endpoint,
        "framework_id": FRAMEWORK_ID,
        "executor_id": "task-1",
        "sandbox": sandbox,
        "checkpoint": False,
        "recovery_timeout": 5.0,
        "backoff_max": 0.2,
        "shutdown_grace": 5.0,
        "ack_timeout": 2.0,
        "poll_seconds": 0.1,
    }
    values.update(over)
    return Config(**values)


def executor_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "executor"), str(ROOT / "framework"), env.get("PYTHONPATH", "")]
    )
    return env


def no_leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in (p.info["cmdline"] or [])):
                found.append(p)
    return found


Scenario = Callable[[ScriptedAgent, "asyncio.Task[int]"], Awaitable[None]]


def run_scenario(
    tmp_path: Path, scenario: Scenario, *, auto_ack: bool = True, **config: Any
) -> tuple[ScriptedAgent, int]:
    tmp_path.mkdir(parents=True, exist_ok=True)

    async def go() -> tuple[ScriptedAgent, int]:
        agent = ScriptedAgent(auto_ack=auto_ack)
        await agent.start()
        executor = Executor(make_config(agent, tmp_path, **config), base_env=executor_env())
        task = asyncio.get_running_loop().create_task(executor.run())
        try:
            await agent.wait_for(lambda: bool(agent.subscribes), timeout=5)
            await agent.wait_for(lambda: agent._stream is not None, timeout=5)
            await scenario(agent, task)
            code = await asyncio.wait_for(task, 15)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await agent.stop()
        return agent, code

    return asyncio.run(go())


def assert_update_shape(agent: ScriptedAgent) -> None:
    uuids = [base64.b64decode(u["uuid"]) for u in agent.updates]
    assert all(len(u) == 16 for u in uuids)
    assert len(set(uuids)) == len(uuids), "every update needs a fresh uuid"
    assert all(u["source"] == "SOURCE_EXECUTOR" for u in agent.updates)
    assert "TASK_STAGING" not in agent.states()
    assert not agent.bad_calls


# ---------------------------------------------------------------------------- tests


def test_task_runs_to_finished_with_env_and_output(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch(
            "task-1",
            {
                "command": "echo hello; echo oops >&2; env | grep ^CORRAL_ | sort > env.txt",
                "env": {"CORRAL_JOB": "ml/prod/score", "CORRAL_TASK_ROLE": "worker"},
                "usage_interval_seconds": 0,
            },
        )

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert_update_shape(agent)
    assert all(u["task_id"]["value"] == "task-1" for u in agent.updates)
    assert agent.updates[0]["agent_id"] == {"value": AGENT_ID}
    assert (tmp_path / "stdout").read_text() == "hello\n"
    assert (tmp_path / "stderr").read_text() == "oops\n"
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["CORRAL_JOB"] == "ml/prod/score"
    assert env["CORRAL_TASK_ROLE"] == "worker"
    assert env["CORRAL_TASK_ID"] == "task-1"
    assert env["CORRAL_CONTROL_DIR"] == str(tmp_path / ".corral")
    assert env["CORRAL_SANDBOX"] == str(tmp_path)
    assert (tmp_path / ".corral").is_dir()
    # First SUBSCRIBE has nothing to resend.
    assert agent.subscribes[0]["subscribe"] == {
        "unacknowledged_tasks": [],
        "unacknowledged_updates": [],
    }


def test_nonzero_exit_is_failed_with_code_and_stderr(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": "echo 'model file missing' >&2; exit 3"})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
    message = agent.updates[-1]["message"]
    assert "exited with code 3" in message
    assert "model file missing" in message


def test_invalid_run_spec_fails_the_task(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": ""})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_FAILED"]
    assert "invalid run spec" in agent.updates[0]["message"]


@pytest.mark.parametrize("spec", [
    {"command": "echo a\x00b"},                       # NUL in the command
    {"command": "true", "env": {"A": "x\x00y"}},      # NUL in an env value
    {"command": "true", "env": {"A=B": "1"}},          # '=' in an env name
])
def test_a_command_that_cannot_be_started_fails_the_task(tmp_path: Path, spec: dict) -> None:
    """Any exception starting the process (here ValueError from exec) is TASK_FAILED with
    the reason, and the executor still answers a later KILL and exits."""
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {**spec, "usage_interval_seconds": 0})
        await agent.wait_for(lambda: "TASK_FAILED" in agent.states())
        agent.push({"type": "KILL", "kill": {"task_id": {"value": "task-1"}}})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_STARTING", "TASK_FAILED"]
    assert "could not start: ValueError" in agent.updates[-1]["message"]


def test_kill_lets_a_trapping_task_exit_within_grace(tmp_path: Path) -> None:
    marker = f"corral-test-grace-{os.getpid()}"
    cmd = f"trap 'echo got-term > term.txt; exit 0' TERM; while :; do sleep 0.05; done # {marker}"

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": cmd, "grace_seconds": 5.0})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        started = time.monotonic()
        agent.push({"type": "KILL", "kill": {"task_id": {"value": "task-1"}}})
        await agent.wait_for(lambda: "TASK_KILLED" in agent.states())
        # The trap answered SIGTERM, so no need to wait out the 5 s grace.
        assert time.monotonic() - started < 4.0

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]
    assert (tmp_path / "term.txt").read_text().strip() == "got-term"
    assert not no_leftovers(marker)


def test_kill_policy_grace_then_sigkill_for_a_task_ignoring_sigterm(tmp_path: Path) -> None:
    marker = f"corral-test-ignore-{os.getpid()}"
    cmd = f"trap '' TERM; while :; do sleep 0.05; done # {marker}"

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": cmd, "grace_seconds": 60.0})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        started = time.monotonic()
        agent.push(
            {
                "type": "KILL",
                "kill": {
                    "task_id": {"value": "task-1"},
                    "kill_policy": {"grace_period": {"nanoseconds": "300000000"}},
                },
            }
        )
        await asyncio.sleep(0.15)
        # Still inside the grace period: the task ignores SIGTERM and is alive.
        assert "TASK_KILLED" not in agent.states()
        await agent.wait_for(lambda: "TASK_KILLED" in agent.states(), timeout=5)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 5.0

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states()[-1] == "TASK_KILLED"
    assert not no_leftovers(marker)


def test_shutdown_kills_the_task_and_exits(tmp_path: Path) -> None:
    marker = f"corral-test-shutdown-{os.getpid()}"

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": f"sleep 30 # {marker}", "grace_seconds": 1.0})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        agent.push({"type": "SHUTDOWN"})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]
    assert not no_leftovers(marker)


def test_unacknowledged_updates_resent_on_resubscribe(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": "sleep 1.5", "usage_interval_seconds": 0})
        await agent.wait_for(lambda: agent.states() == ["TASK_STARTING", "TASK_RUNNING"])
        agent.ack(agent.updates[0])  # STARTING acknowledged, RUNNING not
        await asyncio.sleep(0.1)
        agent.close_stream()
        await agent.wait_for(lambda: len(agent.subscribes) == 2 and agent._stream is not None)
        # While the task still runs, acknowledge whatever arrives from now on.
        agent.auto_ack = True
        for status in agent.subscribes[1]["subscribe"]["unacknowledged_updates"]:
            agent.ack(status["status"])

    agent, code = run_scenario(tmp_path, scenario, auto_ack=False, checkpoint=True, backoff_max=0.1)
    assert code == 0
    resub = agent.subscribes[1]["subscribe"]
    resent = [u["status"] for u in resub["unacknowledged_updates"]]
    assert [s["state"] for s in resent] == ["TASK_RUNNING"]
    assert resent[0]["uuid"] == agent.updates[1]["uuid"]
    # One update of the task was acknowledged, so the task itself is not resent.
    assert resub["unacknowledged_tasks"] == []
    assert agent.states()[-1] == "TASK_FINISHED"


def test_terminal_update_made_while_disconnected_travels_in_subscribe(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        # The task outlives the RUNNING update by a second, so a busy machine still sees
        # the agent go away before the task finishes (``== 2`` raced a 0.3 s task).
        agent.launch("task-1", {"command": "sleep 1", "usage_interval_seconds": 0})
        await agent.wait_for(lambda: len(agent.updates) >= 2)
        port = agent.port
        await agent.stop()  # agent process "restarts": nothing listens for a while
        assert agent.states() == ["TASK_STARTING", "TASK_RUNNING"]
        await asyncio.sleep(1.6)  # the task finishes meanwhile
        await agent.start(port)
        await agent.wait_for(lambda: len(agent.subscribes) == 2 and agent._stream is not None)
        for status in agent.subscribes[1]["subscribe"]["unacknowledged_updates"]:
            agent.ack(status["status"])

    agent, code = run_scenario(tmp_path, scenario, auto_ack=False, checkpoint=True, backoff_max=0.1)
    assert code == 0
    resub = agent.subscribes[1]["subscribe"]
    states = [u["status"]["state"] for u in resub["unacknowledged_updates"]]
    assert states == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    # Nothing was ever acknowledged: the task goes along too.
    assert [t["task_id"]["value"] for t in resub["unacknowledged_tasks"]] == ["task-1"]


def test_recovery_timeout_kills_task_and_exits_nonzero(tmp_path: Path) -> None:
    marker = f"corral-test-recovery-{os.getpid()}"

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": f"sleep 30 # {marker}", "grace_seconds": 0.2})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        await agent.stop()

    _, code = run_scenario(
        tmp_path, scenario, checkpoint=True, recovery_timeout=0.6, backoff_max=0.1
    )
    assert code == 1
    assert not no_leftovers(marker)


def test_disconnect_without_checkpoint_kills_task_and_exits(tmp_path: Path) -> None:
    marker = f"corral-test-nockpt-{os.getpid()}"

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": f"sleep 30 # {marker}", "grace_seconds": 0.2})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        agent.close_stream()

    agent, code = run_scenario(tmp_path, scenario, checkpoint=False)
    assert code == 1
    assert len(agent.subscribes) == 1
    assert not no_leftovers(marker)


def test_usage_progress_and_checkpoint_messages(tmp_path: Path) -> None:
    script = (
        "from corral_executor import sdk\n"
        "import time\n"
        "x = [0] * 2_000_000\n"
        "sdk.report_progress(3, 10, backlog=5, rerun=1)\n"
        "seq = sdk.checkpoint({'done': [1, 2, 3]})\n"
        "t = time.monotonic()\n"
        "while time.monotonic() - t < 0.8: sum(range(1000))\n"
    )
    (tmp_path / "job.py").write_text(script)
    ckpt_uri = (tmp_path / "ckpt").as_uri()

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch(
            "task-1",
            {
                "command": f"{sys.executable} job.py",
                "env": {"CORRAL_CHECKPOINT_URI": ckpt_uri},
                "usage_interval_seconds": 0.2,
            },
        )

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0, (tmp_path / "stderr").read_text()
    assert agent.states()[-1] == "TASK_FINISHED"
    kinds = {m["kind"] for m in agent.messages}
    assert {"usage", "progress", "checkpoint"} <= kinds
    progress = [m for m in agent.messages if m["kind"] == "progress"]
    assert progress[0] == {
        "kind": "progress",
        "task_id": "task-1",
        "done": 3,
        "total": 10,
        "backlog": 5,
        "rerun": 1,
    }
    ckpt = [m for m in agent.messages if m["kind"] == "checkpoint"]
    assert ckpt[0]["seq"] == 1 and ckpt[0]["uri"] == ckpt_uri
    usage = [m for m in agent.messages if m["kind"] == "usage"]
    assert all(m["task_id"] == "task-1" for m in usage)
    # The list of 2M ints alone is > 15 MB; the loop burns CPU.
    assert max(m["rss_mb"] for m in usage) > 15
    assert max(m["cpu_seconds"] for m in usage) > 0.1
    assert max(m["cpu_percent"] for m in usage) > 10


def test_scheduler_messages_reach_the_control_dir(tmp_path: Path) -> None:
    control = tmp_path / ".corral"

    def data(doc: dict[str, Any]) -> str:
        return base64.b64encode(json.dumps(doc).encode()).decode()

    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": "sleep 30", "grace_seconds": 0.5})
        await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
        for doc in (
            {"kind": "master_address", "address": "10.0.0.7:31001"},
            {"kind": "checkpoint_now"},
        ):
            agent.push({"type": "MESSAGE", "message": {"data": data(doc)}})
        await agent.wait_for(lambda: (control / "checkpoint_now").exists())
        assert (control / "master_address").read_text() == "10.0.0.7:31001"
        assert not (control / "draining").exists()
        agent.push({"type": "MESSAGE", "message": {"data": data({"kind": "drain"})}})
        await agent.wait_for(lambda: (control / "draining").exists())
        agent.push({"type": "KILL", "kill": {"task_id": {"value": "task-1"}}})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    assert agent.states()[-1] == "TASK_KILLED"


def test_second_launch_is_refused(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": "sleep 0.5"})
        agent.launch("task-2", {"command": "sleep 0.5"})

    agent, code = run_scenario(tmp_path, scenario)
    assert code == 0
    by_task = [(u["task_id"]["value"], u["state"]) for u in agent.updates]
    assert ("task-2", "TASK_FAILED") in by_task
    assert [s for t, s in by_task if t == "task-1"] == [
        "TASK_STARTING",
        "TASK_RUNNING",
        "TASK_FINISHED",
    ]


# ---------------------------------------------------------------------------- subprocess


def _spawn_executor(agent: ScriptedAgent, sandbox: Path, **env: str) -> subprocess.Popen[bytes]:
    full = executor_env()
    full.update(
        {
            "MESOS_AGENT_ENDPOINT": agent.endpoint,
            "MESOS_FRAMEWORK_ID": FRAMEWORK_ID,
            "MESOS_EXECUTOR_ID": "task-1",
            "MESOS_SANDBOX": str(sandbox),
            "MESOS_CHECKPOINT": "0",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
            "CORRAL_EXECUTOR_ACK_TIMEOUT": "2",
        }
    )
    full.update(env)
    # The child keeps its own copy of the log descriptor; ours can close at once.
    with open(sandbox / "executor.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "corral_executor"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            raise AssertionError("executor subprocess did not exit")
        await asyncio.sleep(0.05)
    return proc.returncode


def _one_task_in_a_subprocess_executor(sandbox: Path, command: str, **env: str
                                       ) -> ScriptedAgent:
    """A real ``python -m corral_executor`` runs ``command`` as its task and exits 0."""
    async def go() -> ScriptedAgent:
        agent = ScriptedAgent()
        await agent.start()
        proc = _spawn_executor(agent, sandbox, **env)
        try:
            await agent.wait_for(lambda: agent._stream is not None, timeout=10)
            agent.launch("task-1", {"command": command})
            assert await _wait_exit(proc, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            await agent.stop()
        return agent

    return asyncio.run(go())


def test_subprocess_executor_runs_a_task(tmp_path: Path) -> None:
    agent = _one_task_in_a_subprocess_executor(tmp_path, "echo done > out.txt; exit 0")
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert_update_shape(agent)
    assert (tmp_path / "out.txt").read_text() == "done\n"


def test_python3_in_a_task_is_the_executors_python_whatever_the_path(tmp_path: Path) -> None:
    """An agent started from an unactivated virtualenv (PATH without the venv's bin):
    ``python3`` in the task is still the interpreter running the executor, with the SDK."""
    agent = _one_task_in_a_subprocess_executor(
        tmp_path, "python3 -c 'import sys, corral_executor.sdk; print(sys.executable)' "
                  "> which.txt", PATH="/usr/bin:/bin")
    assert agent.states()[-1] == "TASK_FINISHED", agent.updates[-1]
    ran = Path((tmp_path / "which.txt").read_text().strip())
    assert ran.parent == Path(sys.executable).parent


def test_task_environment_puts_the_executors_python_first_unless_the_spec_sets_path(
) -> None:
    from corral_executor.main import task_environment

    base = {"PATH": "/usr/bin:/bin", "HOME": "/h"}
    env = task_environment(base, {"K": "v"}, "t1", Path("/sb"), "/venv/bin")
    assert env["PATH"] == "/venv/bin:/usr/bin:/bin" and env["K"] == "v"
    assert env["CORRAL_TASK_ID"] == "t1" and env["CORRAL_SANDBOX"] == "/sb"
    already = task_environment({"PATH": "/venv/bin:/bin"}, {}, "t1", Path("/sb"), "/venv/bin")
    assert already["PATH"] == "/venv/bin:/bin"
    own = task_environment(base, {"PATH": "/opt/x"}, "t1", Path("/sb"), "/venv/bin")
    assert own["PATH"] == "/opt/x"


def test_subprocess_executor_sigterm_kills_task_group(tmp_path: Path) -> None:
    marker = f"corral-test-subproc-{os.getpid()}"

    async def go() -> None:
        agent = ScriptedAgent()
        await agent.start()
        proc = _spawn_executor(agent, tmp_path)
        try:
            await agent.wait_for(lambda: agent._stream is not None, timeout=10)
            # A background grandchild in the group must die too.
            cmd = f"sleep 30 & sleep 30 # {marker}"
            agent.launch("task-1", {"command": cmd, "grace_seconds": 0.5})
            await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
            await agent.wait_for(lambda: len(no_leftovers(marker)) >= 1)
            proc.send_signal(signal.SIGTERM)
            assert await _wait_exit(proc, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            await agent.stop()
        assert agent.states()[-1] == "TASK_KILLED"
        await asyncio.sleep(0.1)
        assert not no_leftovers(marker)

    asyncio.run(go())


def test_subprocess_without_agent_env_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in executor_env().items() if not k.startswith("MESOS_")}
    out = subprocess.run(
        [sys.executable, "-m", "corral_executor"],
        env=env,
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert b"MESOS_AGENT_ENDPOINT" in out.stderr
    assert b"Traceback" not in out.stderr


@pytest.mark.parametrize("value", ["soon", "5 parsecs"])
def test_subprocess_bad_duration_is_a_clear_error(tmp_path: Path, value: str) -> None:
    env = executor_env()
    env.update(
        {
            "MESOS_AGENT_ENDPOINT": "127.0.0.1:1",
            "MESOS_FRAMEWORK_ID": "f",
            "MESOS_EXECUTOR_ID": "e",
            "MESOS_RECOVERY_TIMEOUT": value,
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "corral_executor"], env=env, capture_output=True, timeout=30
    )
    assert out.returncode == 2
    assert b"not a Mesos duration" in out.stderr


def test_scoring_worker_follows_master_address_message(tmp_path: Path) -> None:
    """End to end through the executor: the worker starts with a stale master address and
    finds the real master only through the scheduler's master_address MESSAGE."""
    from corral_executor.samples import scoring

    data, out = tmp_path / "data", tmp_path / "out"
    scoring.make_data(data, chunks=6, rows=100, features=8, seed=7)
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        stale = s.getsockname()[1]  # nothing listens here once closed
    mod = "corral_executor.samples.scoring"
    env = executor_env()
    env["CORRAL_PORT"] = "0"
    master = subprocess.Popen(
        [sys.executable, "-m", mod, "master", "--data", str(data), "--out", str(out),
         "--host", "127.0.0.1", "--linger-seconds", "5"],
        env={k: v for k, v in env.items() if k != "CORRAL_CONTROL_DIR"},
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert master.stdout is not None
        line = master.stdout.readline()
        address = line.split(" on ")[1].split()[0]

        async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
            cmd = f"{sys.executable} -m {mod} worker --data {data} --out {out}"
            agent.launch(
                "task-1",
                {"command": cmd, "env": {"CORRAL_MASTER_ADDRESS": f"127.0.0.1:{stale}"}},
            )
            await agent.wait_for(lambda: "TASK_RUNNING" in agent.states())
            await asyncio.sleep(0.3)
            assert not (out / "_SUCCESS").exists()
            doc = {"kind": "master_address", "address": address}
            data_b64 = base64.b64encode(json.dumps(doc).encode()).decode()
            agent.push({"type": "MESSAGE", "message": {"data": data_b64}})

        agent, code = run_scenario(tmp_path / "sandbox", scenario)
        assert master.wait(30) == 0
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(10)
    assert code == 0
    assert agent.states()[-1] == "TASK_FINISHED", (tmp_path / "sandbox" / "stderr").read_text()
    assert scoring.main(["verify", "--data", str(data), "--out", str(out)]) == 0


def test_token_goes_with_every_call_and_never_to_the_task(tmp_path: Path) -> None:
    async def scenario(agent: ScriptedAgent, task: asyncio.Task[int]) -> None:
        agent.launch("task-1", {"command": "env > env.txt", "usage_interval_seconds": 0})

    token = "header.claims.signature"
    base = {**executor_env(), "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": token}

    async def go() -> ScriptedAgent:
        agent = ScriptedAgent()
        await agent.start()
        executor = Executor(make_config(agent, tmp_path, auth_token=token), base_env=base)
        run = asyncio.get_running_loop().create_task(executor.run())
        try:
            await agent.wait_for(lambda: agent._stream is not None, timeout=5)
            await scenario(agent, run)
            assert await asyncio.wait_for(run, 15) == 0
        finally:
            await agent.stop()
        return agent

    agent = asyncio.run(go())
    assert agent.states() == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert agent.authorization and set(agent.authorization) == {f"Bearer {token}"}
    env = (tmp_path / "env.txt").read_text()
    assert "MESOS_EXECUTOR_AUTHENTICATION_TOKEN" not in env
    assert token not in env
