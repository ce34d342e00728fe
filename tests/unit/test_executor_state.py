"""The executor's pure core: (state, event) → (state, actions), no I/O involved."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from corral_executor import state as core
from corral_executor.runspec import RunSpec, RunSpecError, encode_run_spec, parse_run_spec

SPEC = {"command": "run-job", "env": {"CORRAL_JOB": "a/b/c"}, "grace_seconds": 7.0}


class Driver:
    """Feeds events with a deterministic uuid sequence and a fixed clock."""

    def __init__(self, **kw: Any) -> None:
        self.state = core.ExecutorState(framework_id="fw", executor_id="ex", **kw)
        self._n = itertools.count(1)

    def uuid(self) -> bytes:
        return next(self._n).to_bytes(16, "big")

    def __call__(self, event: core.Event) -> list[core.Action]:
        self.state, actions = core.handle(self.state, event, now=1000.0, new_uuid=self.uuid)
        return actions

    def launched(self, spec: dict[str, Any] | None = None) -> None:
        self(core.Subscribed("agent-1"))
        self(core.Launch(task("t1", spec or SPEC)))
        self(core.ProcessStarted(42))


def task(task_id: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"task_id": {"value": task_id}, "data": encode_run_spec(spec), **extra}


def updates(actions: list[core.Action]) -> list[str]:
    return [a.status["state"] for a in actions if isinstance(a, core.SendUpdate)]


def of(actions: list[core.Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def test_launch_sends_starting_and_starts_the_command() -> None:
    d = Driver()
    d(core.Subscribed("agent-1"))
    actions = d(core.Launch(task("t1", SPEC)))
    assert updates(actions) == ["TASK_STARTING"]
    (start,) = of(actions, core.StartTask)
    assert start.task_id == "t1" and start.spec.command == "run-job"
    status = of(actions, core.SendUpdate)[0].status
    assert status["source"] == "SOURCE_EXECUTOR"
    assert status["agent_id"] == {"value": "agent-1"}
    assert base64.b64decode(status["uuid"]) == (1).to_bytes(16, "big")
    assert updates(d(core.ProcessStarted(42))) == ["TASK_RUNNING"]
    assert [s["state"] for s in d.state.unacked] == ["TASK_STARTING", "TASK_RUNNING"]


@pytest.mark.parametrize(
    ("code", "killed", "expected"),
    [(0, False, "TASK_FINISHED"), (3, False, "TASK_FAILED"), (-9, False, "TASK_FAILED"),
     (0, True, "TASK_KILLED"), (-15, True, "TASK_KILLED")],
)  # fmt: skip
def test_exit_maps_to_terminal_state(code: int, killed: bool, expected: str) -> None:
    d = Driver()
    d.launched()
    if killed:
        d(core.Kill("t1"))
    actions = d(core.ProcessExited(code, "line1\nlast words"))
    assert updates(actions) == [expected]
    assert of(actions, core.ArmAckTimer) == [core.ArmAckTimer(d.state.ack_timeout)]
    assert not of(actions, core.Exit), "exit waits for the terminal ack"
    if expected == "TASK_FAILED":
        message = of(actions, core.SendUpdate)[0].status["message"]
        assert "last words" in message
        assert ("signal 9" if code < 0 else f"code {code}") in message


def test_terminal_ack_exits_zero_and_ack_timer_also_ends_it() -> None:
    d = Driver()
    d.launched()
    actions = d(core.ProcessExited(0))
    terminal = of(actions, core.SendUpdate)[0].status
    # Acks of earlier updates do not end the executor.
    for status in d.state.unacked[:-1]:
        assert not of(d(core.Acknowledged("t1", status["uuid"])), core.Exit)
    assert of(d(core.Acknowledged("t1", terminal["uuid"])), core.Exit) == [core.Exit(0)]
    assert d.state.unacked == ()

    d2 = Driver()
    d2.launched()
    d2(core.ProcessExited(0))
    assert of(d2(core.AckTimerFired()), core.Exit) == [core.Exit(0)]
    assert d2(core.AckTimerFired()) == [], "exits once"


def test_unknown_ack_changes_nothing() -> None:
    d = Driver()
    d.launched()
    before = d.state
    d(core.Acknowledged("t1", "bm9wZQ=="))
    assert d.state == before


def test_kill_grace_precedence() -> None:
    d = Driver()
    d.launched()
    assert of(d(core.Kill("t1")), core.KillTask) == [core.KillTask(7.0)]
    d = Driver()
    d(core.Subscribed("a"))
    d(core.Launch(task("t1", SPEC, kill_policy={"grace_period": {"nanoseconds": 2_000_000_000}})))
    d(core.ProcessStarted(1))
    assert of(d(core.Kill("t1")), core.KillTask) == [core.KillTask(2.0)]
    # The KILL's own policy wins and may escalate a kill already under way.
    assert of(d(core.Kill("t1", 0.5)), core.KillTask) == [core.KillTask(0.5)]


def test_kill_of_other_task_or_after_terminal_is_ignored() -> None:
    d = Driver()
    d.launched()
    assert not of(d(core.Kill("other")), core.KillTask)
    d(core.ProcessExited(0))
    assert not of(d(core.Kill("t1")), core.KillTask)


def test_invalid_spec_fails_without_starting() -> None:
    d = Driver()
    d(core.Subscribed("a"))
    actions = d(core.Launch({"task_id": {"value": "t1"}, "data": "!!notbase64"}))
    assert updates(actions) == ["TASK_FAILED"]
    assert not of(actions, core.StartTask)
    assert "invalid run spec" in of(actions, core.SendUpdate)[0].status["message"]


def test_start_failure_is_task_failed() -> None:
    d = Driver()
    d(core.Subscribed("a"))
    d(core.Launch(task("t1", SPEC)))
    actions = d(core.ProcessStartFailed("no /bin/sh"))
    assert updates(actions) == ["TASK_FAILED"]


@pytest.mark.parametrize("stop", [core.Kill("t1"), core.Shutdown()])
def test_a_kill_while_the_process_starts_still_kills_it(stop: core.Event) -> None:
    """KILL (or SHUTDOWN) handled after StartTask but before ProcessStarted: the kill is
    answered at once, and the process that then starts is killed, not reported RUNNING."""
    d = Driver()
    d(core.Subscribed("a"))
    d(core.Launch(task("t1", SPEC)))
    assert updates(d(stop)) == ["TASK_KILLED"]
    actions = d(core.ProcessStarted(42))
    assert of(actions, core.KillTask) == [core.KillTask(0.0)] and not updates(actions)
    assert d.state.task_state == "TASK_KILLED"
    assert not updates(d(core.ProcessExited(-9)))


def test_a_launch_without_a_task_object_is_a_bad_event() -> None:
    for bad in ({"task": "x"}, {"task": {"task_id": "t1"}}):
        with pytest.raises(ValueError, match="task_id"):
            core.decode_event({"type": "LAUNCH", "launch": bad})


def test_second_launch_fails_only_the_newcomer() -> None:
    d = Driver()
    d.launched()
    actions = d(core.Launch(task("t2", SPEC)))
    statuses = of(actions, core.SendUpdate)
    assert [(s.status["task_id"]["value"], s.status["state"]) for s in statuses] == [
        ("t2", "TASK_FAILED")
    ]
    assert d.state.task_id == "t1" and d.state.task_state == "TASK_RUNNING"


def test_shutdown_kills_then_reports_killed() -> None:
    d = Driver(shutdown_grace=3.0)
    d.launched()
    actions = d(core.Shutdown())
    # Leave a second of the agent's grace period for reporting.
    assert of(actions, core.KillTask) == [core.KillTask(2.0)]
    assert updates(d(core.ProcessExited(-15))) == ["TASK_KILLED"]


def test_shutdown_with_no_task_exits_at_once() -> None:
    d = Driver()
    d(core.Subscribed("a"))
    assert of(d(core.Shutdown()), core.Exit) == [core.Exit(0)]


def test_disconnect_with_checkpoint_recovers_and_buffers_updates() -> None:
    d = Driver(checkpoint=True)
    d.launched()
    assert of(d(core.Disconnected("eof")), core.StartRecovery)
    # While disconnected the terminal update is only recorded, not sent.
    actions = d(core.ProcessExited(0))
    assert updates(actions) == [] and not of(actions, core.ArmAckTimer)
    call = core.subscribe_call(d.state)
    sent = [u["status"]["state"] for u in call["subscribe"]["unacknowledged_updates"]]
    assert sent == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert call["subscribe"]["unacknowledged_tasks"][0]["task_id"] == {"value": "t1"}
    assert call["framework_id"] == {"value": "fw"} and call["executor_id"] == {"value": "ex"}
    # Re-subscribed: now the terminal update needs its ack, bounded in time.
    assert of(d(core.Subscribed("agent-1")), core.ArmAckTimer)


def test_acked_task_is_not_resent() -> None:
    d = Driver(checkpoint=True)
    d.launched()
    d(core.Acknowledged("t1", d.state.unacked[0]["uuid"]))
    call = core.subscribe_call(d.state)
    assert call["subscribe"]["unacknowledged_tasks"] == []
    assert [u["status"]["state"] for u in call["subscribe"]["unacknowledged_updates"]] == [
        "TASK_RUNNING"
    ]


def test_disconnect_without_checkpoint_kills_and_exits_one() -> None:
    d = Driver(checkpoint=False)
    d.launched()
    actions = d(core.Disconnected("eof"))
    assert of(actions, core.KillTask) == [core.KillTask(7.0)]
    assert not of(actions, core.StartRecovery)
    assert of(d(core.ProcessExited(-15)), core.Exit) == [core.Exit(1)]


def test_recovery_expiry_kills_and_exits_one() -> None:
    d = Driver(checkpoint=True)
    d.launched()
    d(core.Disconnected("eof"))
    assert of(d(core.RecoveryExpired()), core.KillTask)
    assert of(d(core.ProcessExited(-9)), core.Exit) == [core.Exit(1)]


def test_initial_subscribe_failure_without_checkpoint_exits() -> None:
    d = Driver()
    assert of(d(core.Disconnected("connection refused")), core.Exit) == [core.Exit(1)]


def test_agent_error_reconnects() -> None:
    d = Driver()
    assert of(d(core.AgentError("bad")), core.Reconnect)


def test_scheduler_messages_become_control_writes() -> None:
    d = Driver()
    d.launched()

    def msg(doc: dict[str, Any]) -> list[core.Action]:
        return d(core.SchedulerMessage(json.dumps(doc).encode()))

    assert of(msg({"kind": "master_address", "address": "h:1"}), core.WriteControl) == [
        core.WriteControl("master_address", b"h:1")
    ]
    assert of(msg({"kind": "checkpoint_now"}), core.WriteControl) == [
        core.WriteControl("checkpoint_now")
    ]
    assert [w.name for w in of(msg({"kind": "drain"}), core.WriteControl)] == [
        "checkpoint_now",
        "draining",
    ]
    for bad in (b"not json", b'{"kind": "master_address", "address": 5}', b'{"kind":"x"}'):
        actions = d(core.SchedulerMessage(bad))
        assert not of(actions, core.WriteControl) and of(actions, core.Log)


def test_usage_progress_checkpoint_messages() -> None:
    d = Driver()
    d.launched()
    (usage,) = of(d(core.UsageSampled(55.123, 1.23456, 100.0)), core.SendMessage)
    assert usage.payload == {
        "kind": "usage",
        "task_id": "t1",
        "cpu_percent": 55.12,
        "cpu_seconds": 1.235,
        "rss_mb": 100.0,
    }
    (prog,) = of(d(core.ProgressChanged({"done": 2, "total": 10})), core.SendMessage)
    assert prog.payload == {
        "kind": "progress",
        "task_id": "t1",
        "done": 2,
        "total": 10,
        "backlog": 8,
        "rerun": 0,
    }
    assert not of(d(core.ProgressChanged({"done": "2", "total": 10})), core.SendMessage)
    (ck,) = of(d(core.CheckpointCommitted("file:///c", 4)), core.SendMessage)
    assert ck.payload == {"kind": "checkpoint", "task_id": "t1", "uri": "file:///c", "seq": 4}
    call = core.message_call(d.state, ck.payload)
    assert json.loads(base64.b64decode(call["message"]["data"])) == ck.payload


def test_decode_event_shapes() -> None:
    assert core.decode_event({"type": "HEARTBEAT"}) == core.Heartbeat()
    assert core.decode_event({"type": "SHUTDOWN"}) == core.Shutdown()
    assert core.decode_event({"type": "SOMETHING_NEW"}) is None
    kill = {
        "type": "KILL",
        "kill": {
            "task_id": {"value": "t"},
            "kill_policy": {"grace_period": {"nanoseconds": "1500000000"}},
        },
    }
    assert core.decode_event(kill) == core.Kill("t", 1.5)
    data = base64.b64encode(b"hi").decode()
    assert core.decode_event({"type": "MESSAGE", "message": {"data": data}}) == (
        core.SchedulerMessage(b"hi")
    )
    assert core.decode_event({"type": "ERROR", "error": {"message": "x"}}) == core.AgentError("x")
    sub = {"type": "SUBSCRIBED", "subscribed": {"agent_info": {"id": {"value": "S1"}}}}
    assert core.decode_event(sub) == core.Subscribed("S1")
    with pytest.raises(ValueError, match="LAUNCH"):
        core.decode_event({"type": "LAUNCH", "launch": {}})


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({}, "command"),
        ({"command": "x", "env": {"A": 1}}, "env"),
        ({"command": "x", "grace_seconds": -1}, "grace_seconds"),
        ({"command": "x", "usage_interval_seconds": "5"}, "usage_interval_seconds"),
    ],
)
def test_run_spec_validation(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(RunSpecError, match=error):
        parse_run_spec(encode_run_spec(doc))


def test_run_spec_defaults() -> None:
    assert parse_run_spec(encode_run_spec({"command": "x"})) == RunSpec(command="x")
    with pytest.raises(RunSpecError, match="no data"):
        parse_run_spec(None)
    with pytest.raises(RunSpecError, match="JSON object"):
        parse_run_spec(base64.b64encode(b"[1]").decode())


def test_load_reports_become_load_messages_validated() -> None:
    d = Driver()
    d.launched()
    (load,) = of(d(core.LoadChanged({"workers": 12, "queued": 840,
                                     "detail": "dask: 840 tasks queued, wants 12"})),
                 core.SendMessage)
    assert load.payload == {"kind": "load", "task_id": "t1", "workers": 12, "queued": 840,
                            "detail": "dask: 840 tasks queued, wants 12"}
    for bad in ({"workers": -1}, {"workers": True}, {"workers": 1, "queued": "9"},
                {"workers": 1, "detail": "x" * 161}, {"workers": 1, "detail": "a\x1bb"},
                {"workers": 10**6}):
        actions = d(core.LoadChanged(bad))
        assert not of(actions, core.SendMessage) and of(actions, core.Log), bad


def test_retire_messages_accumulate_in_the_retire_file() -> None:
    d = Driver()
    d.launched()

    def retire(*rows: tuple[str, float]) -> list[core.Action]:
        doc = {"kind": "retire", "workers": [{"name": n, "by": by} for n, by in rows]}
        return d(core.SchedulerMessage(json.dumps(doc).encode()))

    (w,) = of(retire(("w.1", 10.0)), core.WriteControl)
    assert w.name == "retire.json"
    assert json.loads(w.data) == {"workers": [{"name": "w.1", "by": 10.0}]}
    (w,) = of(retire(("w.2", 20.0), ("w.1", 15.0)), core.WriteControl)
    assert json.loads(w.data) == {"workers": [{"name": "w.2", "by": 20.0},
                                              {"name": "w.1", "by": 15.0}]}
    assert not of(retire(("w.1", 15.0)), core.WriteControl)   # a repeat changes nothing
    for bad in ({"kind": "retire", "workers": "w.1"},
                {"kind": "retire", "workers": [{"name": "", "by": 1}]},
                {"kind": "retire", "workers": [{"name": "w", "by": "soon"}]},
                {"kind": "retire", "workers": [{"name": "w\n", "by": 1}]},
                {"kind": "retire", "workers": [{"name": "w", "by": 1}] * 1001}):
        actions = d(core.SchedulerMessage(json.dumps(bad).encode()))
        assert not of(actions, core.WriteControl) and of(actions, core.Log), bad
