"""Agent partitions against Mesos 1.11 (raw HTTP, real task processes).

What each test expects is what src/master/master.cpp (``__removeSlave``, ``reconcile``,
``__reregisterSlave``) does and src/tests/partition_tests.cpp checks
(``ReregisterSlavePartitionAware``, ``ReregisterSlaveNotPartitionAware``): the agent keeps
running its tasks while cut off, is marked unreachable after the health timeout, and on
re-registration its tasks come back as they are on the agent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import psutil

from corral.localmesos import LocalMesos
from tests.localmesos.helpers import (
    Scheduler,
    async_test,
    cluster,
    command_task,
    framework_info,
    scheduler,
)


async def operator(lm: LocalMesos, kind: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            lm.master_url + "/api/v1", data=json.dumps({"type": kind}),
            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def tasks_by_list(lm: LocalMesos) -> dict[str, dict[str, str]]:
    """GET_TASKS as {list name: {task id: state}}."""
    doc = (await operator(lm, "GET_TASKS"))["get_tasks"]
    return {k: {t["task_id"]["value"]: t["state"] for t in doc[k]}
            for k in ("tasks", "unreachable_tasks", "completed_tasks")}


async def post(lm: LocalMesos, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            lm.master_url + path, data=json.dumps(body),
            headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


def task_pids(lm: LocalMesos, agent_id: str) -> set[int]:
    return set(lm.master.agents[agent_id].agent.pids)


async def running_task(s: Scheduler, task_id: str = "t") -> tuple[str, dict[str, Any]]:
    offer = (await s.offers())[0]
    await s.launch(offer, [command_task(offer, task_id, "sleep 30")], refuse=0)
    await s.until(task_id, "TASK_RUNNING")
    return offer["agent_id"]["value"], offer


@async_test
async def test_partition_aware_task_unreachable_then_running_again() -> None:
    async with cluster(agents=1) as lm, scheduler(lm, "PARTITION_AWARE") as s:
        aid, _ = await running_task(s)
        pids = task_pids(lm, aid)
        other = (await s.offers())[0]        # the rest of the agent, outstanding
        status, out = await post(lm, f"/localmesos/agents/{aid}/partition", {"seconds": 2.0})
        assert status == 200 and out["agent_id"] == aid and out["heals_at"] > time.time()

        st = await s.update("t", "TASK_UNREACHABLE", timeout=5)
        assert st["reason"] == "REASON_AGENT_REMOVED" and st["source"] == "SOURCE_MASTER"
        assert st["message"] == "health check timed out" and "uuid" not in st
        assert abs(st["unreachable_time"]["nanoseconds"] / 1e9 - time.time()) < 2
        assert (await s.next("RESCIND"))["rescind"]["offer_id"] == other["id"]
        assert (await s.next("FAILURE"))["failure"] == {"agent_id": {"value": aid}}
        lists = await tasks_by_list(lm)
        assert lists["unreachable_tasks"] == {"t": "TASK_UNREACHABLE"}
        assert lists["tasks"] == {} and lists["completed_tasks"] == {}
        assert all(psutil.pid_exists(p) for p in pids)      # the task keeps running
        # Explicit reconciliation of the unreachable task, as Master::reconcile answers it.
        await s.call({"type": "RECONCILE", "reconcile": {"tasks": [
            {"task_id": {"value": "t"}, "agent_id": {"value": aid}}]}})
        rec = await s.update("t", "TASK_UNREACHABLE")
        assert rec["reason"] == "REASON_RECONCILIATION"
        assert rec["message"] == "Reconciliation: Task is unreachable"
        assert rec["unreachable_time"] == st["unreachable_time"]

        back = await s.update("t", "TASK_RUNNING", timeout=5)
        assert back["reason"] == "REASON_AGENT_REREGISTERED" and "uuid" not in back
        assert back["message"] == "Unreachable agent re-reregistered"
        assert back["source"] == "SOURCE_MASTER"
        lists = await tasks_by_list(lm)
        assert lists["tasks"] == {"t": "TASK_RUNNING"} and lists["unreachable_tasks"] == {}
        assert lm.master.agents[aid].state == "registered"
        # The agent is usable again: a kill reaches it.
        await s.call({"type": "KILL", "kill": {"task_id": {"value": "t"},
                                               "agent_id": {"value": aid}}})
        await s.until("t", "TASK_KILLED")


@async_test
async def test_not_partition_aware_task_lost_then_running_again() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        aid, _ = await running_task(s)
        pids = task_pids(lm, aid)
        await lm.partition(aid, 2.0)
        st = await s.update("t", "TASK_LOST", timeout=5)
        assert st["reason"] == "REASON_AGENT_REMOVED" and "unreachable_time" in st
        # partition_tests.cpp: "the state endpoint lists the task in unreachable_tasks"
        # in its backwards-compatible state.
        assert (await tasks_by_list(lm))["unreachable_tasks"] == {"t": "TASK_LOST"}
        back = await s.update("t", "TASK_RUNNING", timeout=5)
        assert back["reason"] == "REASON_AGENT_REREGISTERED"
        assert all(psutil.pid_exists(p) for p in pids)      # not shut down (1.11)
        lists = await tasks_by_list(lm)
        assert lists == {"tasks": {"t": "TASK_RUNNING"}, "unreachable_tasks": {},
                         "completed_tasks": {}}


@async_test
async def test_short_partition_loses_messages_and_delays_updates() -> None:
    async with cluster(agents=1, agent_health_timeout=3.0) as lm, \
            scheduler(lm, "PARTITION_AWARE") as s:
        aid, offer = await running_task(s, "long")
        offer = (await s.offers())[0]
        await s.launch(offer, [command_task(offer, "short", "sleep 0.4")], refuse=0)
        await s.until("short", "TASK_RUNNING")
        await lm.partition(aid, 1.0)
        # A kill sent while cut off is lost; the task that ends meanwhile is reported late.
        await s.call({"type": "KILL", "kill": {"task_id": {"value": "long"},
                                               "agent_id": {"value": aid}}})
        await asyncio.sleep(0.8)
        assert not [e for e in s.pending if e["type"] == "UPDATE"]
        fin = await s.update("short", "TASK_FINISHED", timeout=5)
        assert "uuid" in fin and fin["source"] == "SOURCE_EXECUTOR"
        await s.ack(fin)
        assert lm.master.agents[aid].state == "registered"      # never marked unreachable
        assert (await tasks_by_list(lm))["tasks"]["long"] == "TASK_RUNNING"
        lost = [e for e in s.all_events
                if e["type"] == "FAILURE" and "executor_id" not in e["failure"]]
        assert not lost and not [e for e in s.all_events if e["type"] == "RESCIND"]


@async_test
async def test_task_finished_while_unreachable_and_torn_down_framework() -> None:
    async with cluster(agents=1) as lm:
        a = Scheduler(lm.master_url)
        b = Scheduler(lm.master_url)
        try:
            await a.subscribe(framework_info("PARTITION_AWARE"))
            aid, _ = await running_task(a, "a-long")
            offer = (await a.offers())[0]
            await a.launch(offer, [command_task(offer, "a-short", "sleep 1")], refuse=0)
            await a.until("a-short", "TASK_RUNNING")
            await b.subscribe(framework_info("PARTITION_AWARE"))
            offer = (await b.offers())[0]
            await b.launch(offer, [command_task(offer, "b", "sleep 30")], refuse=0)
            await b.until("b", "TASK_RUNNING")
            await lm.partition(aid, 2.5)
            await a.update("a-short", "TASK_UNREACHABLE", timeout=5)
            # Framework b goes away while the agent is cut off.
            assert (await b.call({"type": "TEARDOWN"}))[0] == 202
            # a-short ended during the partition: it comes back TASK_FINISHED (no uuid,
            # from the master), then the agent's own update (with a uuid) follows.
            back = await a.update("a-short", "TASK_FINISHED", timeout=5)
            assert back["reason"] == "REASON_AGENT_REREGISTERED" and "uuid" not in back
            await a.until("a-short", "TASK_FINISHED")
            assert (await a.update("a-long", "TASK_RUNNING"))["reason"] == \
                "REASON_AGENT_REREGISTERED"
            # b's task is not re-added; its framework is shut down on the agent.
            assert await lm.wait_for(lambda: ("b" not in {
                t for (_f, t), run in lm.master.agents[aid].agent.tasks.items()
                if run.state == "TASK_RUNNING"}), timeout=10)
            lists = await tasks_by_list(lm)
            assert "b" not in lists["tasks"] and "a-long" in lists["tasks"]
        finally:
            await a.close()
            await b.close()


@async_test
async def test_partition_endpoint_rejects_bad_requests() -> None:
    async with cluster(agents=1) as lm:
        aid = lm.agent_ids[0]
        assert (await post(lm, "/localmesos/agents/nope/partition", {"seconds": 1}))[0] == 404
        for body in ({}, {"seconds": -1}, {"seconds": "x"}, {"seconds": 1e9}, []):
            status, out = await post(lm, f"/localmesos/agents/{aid}/partition", body)
            assert status == 400 and "error" in out, (body, out)
        await lm.terminate_agent(aid)
        status, out = await post(lm, f"/localmesos/agents/{aid}/partition", {"seconds": 1})
        assert status == 400 and "not running" in out["error"]
