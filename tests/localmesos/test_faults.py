"""Fault injection with real processes: spot reclaim, notice, drain, revocation, QoS kill."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
import uuid

import psutil

from corral.localmesos import LocalMesos
from tests.localmesos.helpers import (
    async_test,
    cluster,
    command_task,
    executor_task,
    leftover_processes,
    scheduler,
)


def _pgids(lm: LocalMesos, agent_id: str) -> set[int]:
    return set(lm.master.agents[agent_id].agent.seen_pids)


@async_test
async def test_terminate_at_once_is_noticed_after_health_timeout() -> None:
    async with cluster(agents=0) as lm:
        for caps, state in (((), "TASK_LOST"), (("PARTITION_AWARE",), "TASK_UNREACHABLE")):
            await lm.add_agent()
            async with scheduler(lm, *caps) as s:
                o = (await s.offers())[0]
                aid = o["agent_id"]["value"]
                await s.launch(o, [command_task(o, "t", "sleep 30", cpus=1)], refuse=0)
                await s.until("t", "TASK_RUNNING")
                other = (await s.offers())[0]          # the rest of the agent, outstanding
                await lm.terminate_agent(aid)
                assert not leftover_processes(_pgids(lm, aid))   # SIGKILLed at once
                assert lm.master.agents[aid].state == "registered"   # not noticed yet
                before = time.time()
                st = await s.update("t", state, timeout=5)
                assert st["reason"] == "REASON_AGENT_REMOVED" and "uuid" not in st
                assert st["source"] == "SOURCE_MASTER"
                # When the master marked the agent unreachable (Mesos sets it PA or not).
                marked = int(st["unreachable_time"]["nanoseconds"]) / 1e9
                assert before - 1 <= marked <= time.time()
                fail = await s.next("FAILURE")
                assert fail["failure"] == {"agent_id": {"value": aid}}
                resc = await s.next("RESCIND")
                assert resc["rescind"]["offer_id"] == other["id"]
                await s.call({"type": "TEARDOWN"})


@async_test
async def test_terminate_with_notice_sends_unavailability_and_inverse_offers() -> None:
    async with cluster(agents=2) as lm, scheduler(lm, "PARTITION_AWARE") as s:
        offers = await s.offers()
        o = offers[0]
        aid = o["agent_id"]["value"]
        await s.launch(o, [command_task(o, "t", "sleep 30")], refuse=0)
        await s.until("t", "TASK_RUNNING")
        noticed = time.time()
        await lm.terminate_agent(f"agent-{lm.master.agents[aid].agent.index}", notice=0.6)
        inv = (await s.next("INVERSE_OFFERS"))["inverse_offers"]["inverse_offers"][0]
        assert inv["agent_id"] == {"value": aid} and inv["resources"] == []
        # Unavailable from when the machine goes, for good: no duration.
        start = inv["unavailability"]["start"]["nanoseconds"] / 1e9
        assert 0.5 < start - noticed < 0.7 and "duration" not in inv["unavailability"]
        # Re-made offers from that agent carry the unavailability.
        offer = await s.next("OFFERS", where=lambda e: any(
            x["agent_id"]["value"] == aid for x in e["offers"]["offers"]))
        remade = next(x for x in offer["offers"]["offers"] if x["agent_id"]["value"] == aid)
        assert "unavailability" in remade
        assert await s.call({"type": "ACCEPT_INVERSE_OFFERS", "accept_inverse_offers": {
            "inverse_offer_ids": [inv["id"]]}}) == (202, "")
        # Then the hard kill at the deadline, noticed after the health timeout.
        st = await s.update("t", "TASK_UNREACHABLE", timeout=5)
        assert st["reason"] == "REASON_AGENT_REMOVED"


@async_test
async def test_drain_kills_tasks_with_agent_draining_and_stops_offers() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "c", "sleep 30"),
                           executor_task(o, "e", "ex")], refuse=0)
        await s.until("c", "TASK_RUNNING")
        await s.until("e", "TASK_RUNNING")
        await lm.drain(o["agent_id"]["value"], grace=0.2)
        for tid in ("c", "e"):
            st = await s.until(tid, "TASK_KILLED")
            assert st["reason"] == "REASON_AGENT_DRAINING", tid
        n = sum(e["type"] == "OFFERS" for e in s.all_events)
        await s.call({"type": "REVIVE"})
        await asyncio.sleep(0.3)
        assert sum(e["type"] == "OFFERS" for e in s.all_events) == n
        await s.call({"type": "SHUTDOWN", "shutdown": {"executor_id": {"value": "ex"},
                                                       "agent_id": o["agent_id"]}})


@async_test
async def test_revocable_offers_shrink_and_qos_kill() -> None:
    async with cluster(agents=1) as lm:
        aid = lm.agent_ids[0]
        await lm.set_revocable(aid, cpus=2, mem=512)
        async with scheduler(lm) as plain:
            o = (await plain.offers())[0]
            assert not any("revocable" in r for r in o["resources"])
            await plain.call({"type": "TEARDOWN"})
        async with scheduler(lm, "REVOCABLE_RESOURCES", "PARTITION_AWARE") as s:
            o = (await s.offers())[0]
            rev = [r for r in o["resources"] if "revocable" in r]
            assert {r["name"]: r["scalar"]["value"] for r in rev} == {"cpus": 2.0, "mem": 512.0}
            assert all(r["revocable"] == {} for r in rev)
            await lm.set_revocable(aid, cpus=1, mem=256)     # shrink: rescind
            resc = await s.next("RESCIND")
            assert resc["rescind"]["offer_id"] == o["id"]
            o = (await s.offers())[0]
            task = command_task(o, "r", "sleep 30")
            task["resources"] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5},
                                  "revocable": {}}]
            await s.launch(o, [task], refuse=0)
            await s.until("r", "TASK_RUNNING")
            killed = await lm.qos_kill(aid)
            assert killed == [(s.framework_id, "r")]
            st = await s.until("r", "TASK_GONE")
            assert st["reason"] == "REASON_CONTAINER_PREEMPTED"
            assert await lm.wait_for(lambda: not lm.master.agents[aid].agent.pids)


@async_test
async def test_add_agent_at_run_time() -> None:
    async with cluster(agents=0) as lm, scheduler(lm) as s:
        aid = await lm.add_agent(cpus=1, mem=256, attributes="zone:b", spot=True)
        o = (await s.offers())[0]
        assert o["agent_id"]["value"] == aid
        attrs = {a["name"]: a.get("text", a.get("scalar")) for a in o["attributes"]}
        assert attrs["zone"] == {"value": "b"} and attrs["market"] == {"value": "spot"}
        assert attrs["spot"] == {"value": "true"}
        assert next(r for r in o["resources"] if r["name"] == "cpus")["scalar"]["value"] == 1.0


# A container is everything its executor started, as a cgroup would hold it: Corral's
# executor runs each task in a session of its own, outside the executor's process group.

def _marked(marker: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in (p.info["cmdline"] or []):
            found.append(p.pid)
    return found


async def _until_marked(marker: str, present: bool, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while bool(_marked(marker)) != present and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return _marked(marker)


def _session_spawning_task(offer: dict, marker: str, then: str) -> dict:
    """An executor that starts a grandchild in its own session, then runs ``then``."""
    task = executor_task(offer, "t", "ex-sess")
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
              f"'import time; time.sleep(60)', {marker!r}], start_new_session=True); {then}")
    task["executor"]["command"]["value"] = f"exec {sys.executable} -c {shlex.quote(script)}"
    return task


@async_test
async def test_terminate_kills_processes_in_other_sessions() -> None:
    marker = f"lm-sess-{uuid.uuid4().hex[:8]}"
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [_session_spawning_task(o, marker, "time.sleep(60)")], refuse=0)
        assert await _until_marked(marker, True), "the grandchild never started"
        await lm.terminate_agent(o["agent_id"]["value"])
        left = await _until_marked(marker, False, timeout=3)
        assert not left, f"outlived its agent: {left}"


@async_test
async def test_executor_exit_takes_its_running_tasks_processes() -> None:
    marker = f"lm-orphan-{uuid.uuid4().hex[:8]}"
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        # The executor dies at once, before it ever runs the task: its grandchild is
        # reparented away from it and must still go with its container.
        await s.launch(o, [_session_spawning_task(o, marker, "time.sleep(1); sys.exit(3)")],
                       refuse=0)
        st = await s.until("t", "TASK_FAILED", timeout=10)
        assert st["reason"] == "REASON_EXECUTOR_TERMINATED"
        left = await _until_marked(marker, False, timeout=3)
        assert not left, f"outlived its executor: {left}"
