"""Tasks over raw HTTP: updates and acknowledgements, kills, reconciliation, executors."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp

from corral.localmesos import auth
from tests.localmesos.helpers import (
    async_test,
    b64,
    cluster,
    command_task,
    executor_task,
    scheduler,
)


@async_test
async def test_scheduler_from_the_docs_launch_ack_finish() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        assert await s.launch(o, [command_task(o, "t", "echo hello")]) == (202, "")
        seen = []
        for state in ("TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"):
            st = await s.update("t", state)
            assert st["agent_id"] == o["agent_id"] and len(base64.b64decode(st["uuid"])) == 16
            assert await s.ack(st) == (202, "")
            seen.append(st["state"])
        fail = await s.next("FAILURE")
        assert fail["failure"] == {"agent_id": o["agent_id"], "executor_id": {"value": "t"},
                                   "status": 0}
        fw = lm.master.frameworks[s.framework_id]
        assert await lm.wait_for(lambda: "t" not in fw.tasks)      # forgotten at terminal ACK
        sandboxes = list(Path(lm.work_dir).glob(   # type: ignore[arg-type]
            f"agents/*/frameworks/{s.framework_id}/executors/t/runs/*/stdout"))
        assert sandboxes and sandboxes[0].read_text() == "hello\n"


@async_test
async def test_unacknowledged_update_is_resent_with_same_uuid() -> None:
    async with cluster(agents=1, status_update_retry=0.1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "t", "sleep 30")])
        first = await s.update("t", "TASK_STARTING")
        again = await s.update("t", "TASK_STARTING", timeout=2)
        assert again["uuid"] == first["uuid"]
        # RUNNING is held back until STARTING is acknowledged.
        assert not any(e["type"] == "UPDATE" and e["update"]["status"]["state"] ==
                       "TASK_RUNNING" for e in s.all_events)
        await s.ack(first)
        running = await s.update("t", "TASK_RUNNING")
        await s.ack(running)
        await s.call({"type": "KILL", "kill": {"task_id": {"value": "t"},
                                               "agent_id": o["agent_id"]}})
        await s.until("t", "TASK_KILLED")


@async_test
async def test_kill_with_killing_state_and_grace() -> None:
    async with cluster(agents=1) as lm, scheduler(lm, "TASK_KILLING_STATE") as s:
        o = (await s.offers())[0]
        # The shell ignores SIGTERM: only the SIGKILL after the grace period ends it. It
        # says when the trap is set (TASK_RUNNING comes when the process starts, earlier).
        await s.launch(o, [command_task(o, "t", "trap '' TERM; touch trapped; sleep 30 & wait")])
        await s.until("t", "TASK_RUNNING")
        assert await lm.wait_for(lambda: any(Path(lm.work_dir).glob(  # type: ignore[arg-type]
            "agents/*/frameworks/*/executors/t/runs/*/trapped")))
        assert await s.call({"type": "KILL", "kill": {
            "task_id": {"value": "t"}, "agent_id": o["agent_id"],
            "kill_policy": {"grace_period": {"nanoseconds": 300_000_000}}}}) == (202, "")
        killing = await s.until("t", "TASK_KILLING")
        killed = await s.until("t", "TASK_KILLED", timeout=5)
        assert killed["timestamp"] - killing["timestamp"] >= 0.25
        agent = lm.master.agents[o["agent_id"]["value"]].agent
        assert not agent.pids


@async_test
async def test_kill_of_unknown_task_reconciles() -> None:
    async with cluster(agents=1) as lm, scheduler(lm, "PARTITION_AWARE") as s:
        o = (await s.offers())[0]
        await s.call({"type": "KILL", "kill": {"task_id": {"value": "ghost"},
                                               "agent_id": o["agent_id"]}})
        st = await s.update("ghost")
        assert st["state"] == "TASK_GONE" and st["reason"] == "REASON_RECONCILIATION"
        assert "uuid" not in st


@async_test
async def test_reconciliation_table() -> None:
    async with cluster(agents=2) as lm:
        for aware in (True, False):
            caps = ("PARTITION_AWARE",) if aware else ()
            async with scheduler(lm, *caps) as s:
                offers = await s.offers()
                o = offers[0]
                await s.launch(o, [command_task(o, "live", "sleep 30")])
                await s.until("live", "TASK_RUNNING")
                # Implicit: every task the master knows, latest state, no uuid.
                await s.call({"type": "RECONCILE", "reconcile": {"tasks": []}})
                st = await s.update("live")
                assert st["state"] == "TASK_RUNNING" and st["source"] == "SOURCE_MASTER"
                assert st["reason"] == "REASON_RECONCILIATION" and "uuid" not in st
                rows = [
                    ("live", o["agent_id"], "TASK_RUNNING", "TASK_RUNNING"),
                    ("unknown-on-registered", o["agent_id"], "TASK_GONE", "TASK_LOST"),
                    ("unknown-agent", {"value": "no-such-agent"}, "TASK_UNKNOWN", "TASK_LOST"),
                    ("no-agent", None, "TASK_UNKNOWN", "TASK_LOST"),
                ]
                for tid, agent, pa_state, legacy_state in rows:
                    item = {"task_id": {"value": tid}}
                    if agent is not None:
                        item["agent_id"] = agent
                    await s.call({"type": "RECONCILE", "reconcile": {"tasks": [item]}})
                    st = await s.update(tid)
                    assert st["state"] == (pa_state if aware else legacy_state), (tid, aware)
                    assert "uuid" not in st
                await s.call({"type": "TEARDOWN"})
        # Unreachable and gone-by-operator agents.
        async with scheduler(lm, "PARTITION_AWARE") as s:
            offers = await s.offers()
            ids = sorted(o["agent_id"]["value"] for o in offers)
            await lm.terminate_agent(ids[0])
            await lm.mark_gone(ids[1])
            assert await lm.wait_for(
                lambda: lm.master.agents[ids[0]].state == "unreachable", 5)
            for aid, state in ((ids[0], "TASK_UNREACHABLE"), (ids[1], "TASK_GONE_BY_OPERATOR")):
                await s.call({"type": "RECONCILE", "reconcile": {"tasks": [
                    {"task_id": {"value": "x-" + aid}, "agent_id": {"value": aid}}]}})
                st = await s.update("x-" + aid)
                assert st["state"] == state


@async_test
async def test_custom_executor_env_message_ack_shutdown() -> None:
    async with cluster(agents=1) as lm, scheduler(lm, checkpoint=True) as s:
        o = (await s.offers())[0]
        await s.launch(o, [executor_task(o, "t1", "ex1")], refuse=0)
        running = await s.until("t1", "TASK_RUNNING")
        assert running["source"] == "SOURCE_EXECUTOR"
        assert running["executor_id"] == {"value": "ex1"}
        agent = lm.master.agents[o["agent_id"]["value"]].agent
        (ex,) = agent.executors.values()
        env = json.loads((ex.sandbox / "env.json").read_text())
        assert env["MESOS_FRAMEWORK_ID"] == s.framework_id
        assert env["MESOS_EXECUTOR_ID"] == "ex1"
        assert env["MESOS_SANDBOX"] == env["MESOS_DIRECTORY"] == str(ex.sandbox)
        assert env["MESOS_AGENT_ENDPOINT"] == f"127.0.0.1:{agent.port}"
        assert env["MESOS_SLAVE_ID"] == agent.id
        assert env["MESOS_CHECKPOINT"] == "1"
        assert env["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"] == "1secs"
        assert env["MESOS_RECOVERY_TIMEOUT"] == "15mins"
        assert env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] == "2secs"
        assert env["MY_VAR"] == "x"
        assert await lm.wait_for(lambda: running["uuid"] in
                                 (ex.sandbox / "acks.txt").read_text()
                                 if (ex.sandbox / "acks.txt").exists() else False)
        # A second task joins the running executor; offers list the executor id.
        o2 = (await s.offers())[0]
        assert o2["executor_ids"] == [{"value": "ex1"}]
        await s.launch(o2, [executor_task(o2, "t2", "ex1")])
        await s.until("t2", "TASK_RUNNING")
        assert len(agent.executors) == 1
        # Framework → executor → framework message.
        assert await s.call({"type": "MESSAGE", "message": {
            "agent_id": o["agent_id"], "executor_id": {"value": "ex1"},
            "data": b64(b"ping")}}) == (202, "")
        msg = await s.next("MESSAGE")
        assert msg["message"] == {"agent_id": o["agent_id"], "executor_id": {"value": "ex1"},
                                  "data": b64(b"ping")}
        # Kill goes to the executor, which answers TASK_KILLED itself.
        await s.call({"type": "KILL", "kill": {"task_id": {"value": "t2"},
                                               "agent_id": o["agent_id"]}})
        await s.until("t2", "TASK_KILLED")
        # SHUTDOWN: the executor exits; its remaining task is killed; FAILURE follows.
        await s.call({"type": "SHUTDOWN", "shutdown": {"executor_id": {"value": "ex1"},
                                                       "agent_id": o["agent_id"]}})
        st = await s.until("t1", "TASK_KILLED")
        assert st["reason"] == "REASON_EXECUTOR_TERMINATED" and st["source"] == "SOURCE_AGENT"
        fail = await s.next("FAILURE")
        assert fail["failure"]["executor_id"] == {"value": "ex1"}
        assert fail["failure"]["status"] == 0


@async_test
async def test_executor_exit_fails_tasks_with_raw_status() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [executor_task(o, "t", "ex", data=b"fail")])
        st = await s.until("t", "TASK_FAILED")
        assert st["reason"] == "REASON_EXECUTOR_TERMINATED" and "uuid" in st
        fail = await s.next("FAILURE")
        assert fail["failure"] == {"agent_id": o["agent_id"], "executor_id": {"value": "ex"},
                                   "status": 3 << 8}
        # Executor resources are freed: the whole agent is offered again.
        await s.call({"type": "REVIVE"})
        o2 = (await s.offers())[0]
        cpus = next(r for r in o2["resources"] if r["name"] == "cpus")
        assert cpus["scalar"]["value"] == 4.0


@async_test
async def test_executor_api_errors() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [executor_task(o, "t", "ex")])
        await s.until("t", "TASK_RUNNING")
        agent = lm.master.agents[o["agent_id"]["value"]].agent
        ex = agent.executors[(s.framework_id, "ex")]
        assert lm.containers.executor_secret is not None
        token = auth.executor_token(lm.containers.executor_secret, s.framework_id, "ex",
                                    ex.container_id)
        url = f"http://127.0.0.1:{agent.port}/api/v1/executor"
        ids = {"framework_id": {"value": s.framework_id}, "executor_id": {"value": "ex"}}
        async with aiohttp.ClientSession() as http:
            async def post(body: object, ctype: str = "application/json",
                           bearer: str | None = token) -> int:
                headers = {"Content-Type": ctype}
                if bearer is not None:
                    headers["Authorization"] = f"Bearer {bearer}"
                async with http.post(url, data=json.dumps(body), headers=headers) as r:
                    return r.status
            assert await post({"type": "SUBSCRIBE"}) == 400          # no ids
            assert await post({"type": "SUBSCRIBE", "framework_id": {"value": "x"},
                               "executor_id": {"value": "ex"}}) == 400
            assert await post({**ids, "type": "BOGUS"}) == 400
            assert await post({**ids, "type": "UNKNOWN"}) == 501
            assert await post({**ids, "type": "HEARTBEAT"}) == 202
            assert await post({**ids, "type": "UPDATE"}, "application/x-protobuf") == 415
            status = {"task_id": {"value": "t"}, "state": "TASK_RUNNING",
                      "source": "SOURCE_EXECUTOR"}
            assert await post({**ids, "type": "UPDATE", "update": {"status": status}}) == 400
            staging = {**status, "state": "TASK_STAGING", "uuid": b64(b"0" * 16)}
            assert await post({**ids, "type": "UPDATE", "update": {"status": staging}}) == 400
            ok = {**status, "state": "TASK_FINISHED", "uuid": b64(b"1" * 16)}
            assert await post({**ids, "type": "MESSAGE", "message": {"data": b64(b"x")}}) \
                == 202
            assert await post({**ids, "type": "UPDATE", "update": {"status": ok}}) == 202
        st = await s.until("t", "TASK_FINISHED")
        assert st["uuid"] == b64(b"1" * 16)


@async_test
async def test_executor_authentication_refuses_forged_calls() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [executor_task(o, "t", "ex"), executor_task(o, "u", "ex2")],
                       refuse=0)
        await s.until("t", "TASK_RUNNING")
        await s.until("u", "TASK_RUNNING")
        agent = lm.master.agents[o["agent_id"]["value"]].agent
        ex = agent.executors[(s.framework_id, "ex")]
        ex2 = agent.executors[(s.framework_id, "ex2")]
        secret = lm.containers.executor_secret
        assert secret is not None
        # The executor got its token; its task-facing environment is the executor's own
        # business (Corral's executor drops it, tested with the executor).
        env = json.loads((ex.sandbox / "env.json").read_text())
        assert env["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"] == auth.executor_token(
            secret, s.framework_id, "ex", ex.container_id)
        url = f"http://127.0.0.1:{agent.port}/api/v1/executor"
        ids = {"framework_id": {"value": s.framework_id}, "executor_id": {"value": "ex"}}
        forged = {**ids, "type": "UPDATE", "update": {"status": {
            "task_id": {"value": "t"}, "state": "TASK_FINISHED",
            "source": "SOURCE_EXECUTOR", "uuid": b64(b"f" * 16), "message": "forged"}}}
        others = auth.executor_token(secret, s.framework_id, "ex2", ex2.container_id)
        wrong_key = auth.executor_token(b"k" * 32, s.framework_id, "ex", ex.container_id)
        async with aiohttp.ClientSession() as http:
            async def post(headers: dict[str, str]) -> tuple[int, str, str]:
                async with http.post(url, data=json.dumps(forged), headers={
                        "Content-Type": "application/json", **headers}) as r:
                    return r.status, r.headers.get("WWW-Authenticate", ""), await r.text()
            status, challenge, _ = await post({})
            assert (status, challenge) == (401, 'Bearer realm="mesos-agent-executor"')
            status, challenge, _ = await post({"Authorization": f"Bearer {wrong_key}"})
            assert status == 401 and 'error="invalid_token"' in challenge
            status, challenge, _ = await post({"Authorization": "Basic dTpw"})
            assert status == 401 and "Scheme 'Basic' unsupported" in challenge
            status, _, text = await post({"Authorization": f"Bearer {others}"})
            assert status == 403 and "'eid' claim" in text
        await asyncio.sleep(0.3)
        assert not [e for e in s.all_events if e["type"] == "UPDATE"
                    and e["update"]["status"].get("message") == "forged"]
        assert agent.tasks[(s.framework_id, "t")].state == "TASK_RUNNING"


@async_test
async def test_client_that_stops_reading_does_not_block_others() -> None:
    async with cluster(agents=1) as lm:
        # A raw socket subscriber that reads its response headers, then never reads again.
        reader, writer = await asyncio.open_connection("127.0.0.1", lm.master.port)
        body = json.dumps({"type": "SUBSCRIBE", "subscribe": {
            "framework_info": {"user": "u", "name": "stuck"}}}).encode()
        writer.write(b"POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        stream_id = next(line.split(b":", 1)[1].strip().decode()
                         for line in head.split(b"\r\n")
                         if line.lower().startswith(b"mesos-stream-id"))
        (stuck,) = lm.master.frameworks.values()
        flood = {"type": "RECONCILE", "framework_id": {"value": stuck.id}, "reconcile": {
            "tasks": [{"task_id": {"value": f"t{i}"}} for i in range(2000)]}}
        async with scheduler(lm) as s, aiohttp.ClientSession() as http:
            for _ in range(40):
                if not stuck.connected:
                    break
                async with http.post(lm.master_url + "/api/v1/scheduler",
                                     data=json.dumps(flood),
                                     headers={"Content-Type": "application/json",
                                              "Mesos-Stream-Id": stream_id}) as r:
                    assert r.status in (202, 403)
                # Meanwhile the well-behaved scheduler is served normally.
                assert await s.call({"type": "RECONCILE", "reconcile": {"tasks": []}}) \
                    == (202, "")
            # The stuck client was cut off, its framework removed (failover_timeout 0),
            # and its offer went to the scheduler that reads.
            assert await lm.wait_for(lambda: stuck.id in lm.master.completed_frameworks, 10)
            await s.offers(timeout=5)
        writer.close()
