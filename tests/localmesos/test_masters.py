"""Several masters electing a leader in a real ZooKeeper; redirects; leader crash.

Expectations follow Mesos 1.11: a non-leading master answers the scheduler and operator
APIs with 307 to the leader named in ZooKeeper (src/master/http.cpp ``redirect``); a new
leader recovers the registry and learns frameworks and tasks from re-registering agents
(src/master/master.cpp ``_recover``, ``__reregisterSlave``, ``recoverFramework``);
explicit reconciliation of a task on an agent that has not re-registered gets no answer
(``Master::reconcile``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import psutil
import pytest
from kazoo.client import KazooClient

from corral.localmesos import LocalMesos
from corral.localmesos.zk import parse_zk_url
from tests.localmesos.helpers import (
    Scheduler,
    async_test,
    cluster,
    command_task,
    framework_info,
)
from tests.zk import ZooKeeperServer, zk_server, zk_url

__all__ = ["zk_server", "zk_url"]
pytestmark = [pytest.mark.zk]

SESSION = 0.8    # the masters' ZooKeeper session timeout


@pytest.fixture(autouse=True)
def no_contender_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every master's contender process ends with its localmesos."""
    yield
    deadline = time.monotonic() + 5
    left = contenders()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = contenders()
    assert not left, f"contender processes outlived localmesos: {left}"


def contenders() -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "corral.localmesos.contender" in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{p.pid} {cmd}")
    return found


async def raw(url: str, method: str, path: str, body: Any = None
              ) -> tuple[int, dict[str, str], str]:
    """One request; the body is read unless it is a 200 event stream (SUBSCRIBE)."""
    async with aiohttp.ClientSession() as s, s.request(
            method, url + path, data=None if body is None else json.dumps(body),
            headers={"Content-Type": "application/json"}, allow_redirects=False) as r:
        stream = r.status == 200 and path == "/api/v1/scheduler"
        return r.status, dict(r.headers), "" if stream else await r.text()


def subscribe_body() -> dict[str, Any]:
    return {"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info()}}


async def wait_leader(lm: LocalMesos, other_than: str | None = None,
                      timeout: float = 15.0) -> str:
    assert lm.masters is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lead = lm.masters.leading()
        if lead is not None and lead.master is not None and lead.master.id != other_than:
            return lead.url
        await asyncio.sleep(0.02)
    raise AssertionError(f"no new leader within {timeout}s: {lm.masters.rows()}")


def test_three_masters_one_leads_others_redirect(zk_url: str) -> None:
    @async_test
    async def body() -> None:
        async with cluster(agents=1, masters=3, zk=zk_url, zk_session_timeout=SESSION) as lm:
            assert lm.masters is not None
            leaders = [p for p in lm.masters.procs if p.leading]
            assert len(leaders) == 1 and lm.master_url == leaders[0].url
            hosts, path = parse_zk_url(zk_url)
            zk = KazooClient(hosts=hosts)
            zk.start(timeout=10)
            try:
                assert sorted(zk.get_children(path)) == sorted(
                    p.node for p in lm.masters.procs)
            finally:
                zk.stop()
                zk.close()
            for proc in lm.masters.procs:
                status, headers, _ = await raw(proc.url, "POST", "/api/v1/scheduler",
                                               subscribe_body())
                if proc.leading:
                    assert status == 200
                    continue
                assert status == 307
                assert headers["Location"] == \
                    f"//127.0.0.1:{leaders[0].port}/api/v1/scheduler"
                for path_ in ("/master/state", "/state"):
                    st, h, _ = await raw(proc.url, "GET", path_)
                    assert st == 307 and h["Location"].endswith(f":{leaders[0].port}{path_}")
                st, _, _ = await raw(proc.url, "POST", "/api/v1", {"type": "GET_HEALTH"})
                assert st == 307
                assert (await raw(proc.url, "GET", "/health"))[0] == 200
                # The localmesos control endpoints answer on every master.
                st, _, text = await raw(proc.url, "GET", "/localmesos/agents")
                assert st == 200 and json.loads(text)["agents"][0]["state"] == "registered"
    body()


def test_leader_crash_new_leader_recovers_agents_frameworks_tasks(
        zk_url: str, zk_server: ZooKeeperServer) -> None:
    @async_test
    async def body() -> None:
        async with cluster(agents=2, masters=3, zk=zk_url, zk_session_timeout=SESSION,
                           registration_backoff=0.3) as lm:
            assert lm.masters is not None
            old_url, old_id = lm.master_url, lm.master.id
            s = Scheduler(old_url)
            s2: Scheduler | None = None
            try:
                info = framework_info("PARTITION_AWARE", failover_timeout=60)
                await s.subscribe(info)
                fid = s.framework_id
                offer = (await s.offers())[0]
                aid = offer["agent_id"]["value"]
                await s.launch(offer, [command_task(offer, "t", "sleep 30")], refuse=0)
                await s.until("t", "TASK_RUNNING")
                pids = set(lm.master.agents[aid].agent.pids)
                t0 = time.monotonic()
                out = await lm.fail_master(restart_after=0.2)
                assert out["master_id"] == old_id
                await asyncio.wait_for(s.closed.wait(), 5)   # the stream is cut at once
                # Until the session expires ZooKeeper still names the dead master.
                other = next(p for p in lm.masters.procs if p.alive)
                st, headers, _ = await raw(other.url, "POST", "/api/v1/scheduler",
                                           subscribe_body())
                assert st in (307, 503), st
                new_url = await wait_leader(lm, other_than=old_id)
                took = time.monotonic() - t0
                assert SESSION * 0.5 < took < SESSION + 5, took
                assert lm.master.id != old_id and new_url != old_url
                # The agents re-register with the new leader (after their backoff)...
                assert await lm.wait_for(lambda: all(
                    lm.master.agent_state(a) == "registered" for a in lm.agent_ids), 5)
                # ...which recovers the framework from them, not connected, not active.
                fws = (await _operator(new_url, "GET_FRAMEWORKS"))["get_frameworks"]
                (fw,) = fws["frameworks"]
                assert fw["framework_info"]["id"] == {"value": fid}
                assert fw["recovered"] and not fw["connected"] and not fw["active"]
                # The scheduler re-subscribes with its id and finds its task.
                s2 = Scheduler(new_url)
                await s2.subscribe(framework_info("PARTITION_AWARE", failover_timeout=60),
                                   framework_id=fid)
                assert s2.framework_id == fid
                await s2.call({"type": "RECONCILE", "reconcile": {"tasks": [
                    {"task_id": {"value": "t"}, "agent_id": {"value": aid}}]}})
                st_ = await s2.update("t", "TASK_RUNNING")
                assert st_["reason"] == "REASON_RECONCILIATION"
                assert all(psutil.pid_exists(p) for p in pids)
                # The crashed master comes back as a new, non-leading incarnation.
                assert await lm.wait_for(lambda: all(p.alive for p in lm.masters.procs), 10)
                back = next(p for p in lm.masters.procs if p.url == old_url)
                assert back.incarnations == 2 and not back.leading
                st, headers, _ = await raw(old_url, "POST", "/api/v1/scheduler",
                                           subscribe_body())
                assert st == 307 and headers["Location"].startswith(
                    "//127.0.0.1:" + new_url.rsplit(":", 1)[1])
                # Kills reach the agent through the new leader.
                await s2.call({"type": "KILL", "kill": {"task_id": {"value": "t"},
                                                        "agent_id": {"value": aid}}})
                await s2.until("t", "TASK_KILLED")
            finally:
                await s.close()
                if s2 is not None:
                    await s2.close()
    body()


def test_reconciliation_waits_for_agents_to_reregister() -> None:
    @async_test
    async def body() -> None:
        # One master, no ZooKeeper: it crashes and restarts on the same port.
        async with cluster(agents=1, registration_backoff=1.5) as lm:
            s = Scheduler(lm.master_url)
            s2: Scheduler | None = None
            try:
                await s.subscribe(framework_info("PARTITION_AWARE"))
                fid = s.framework_id
                offer = (await s.offers())[0]
                aid = offer["agent_id"]["value"]
                await s.launch(offer, [command_task(offer, "t", "sleep 30")], refuse=0)
                await s.until("t", "TASK_RUNNING")
                old = lm.master.id
                url = lm.master_url
                await lm.fail_master(restart_after=0.1)
                assert await lm.wait_for(lambda: lm.masters is not None and
                                         lm.masters.leading() is not None and
                                         lm.master.id != old, 5)
                assert lm.master_url == url
                s2 = Scheduler(url)
                await s2.subscribe(framework_info("PARTITION_AWARE"), framework_id=fid)
                assert lm.master.agent_state(aid) == "recovering"
                agents = (await _operator(url, "GET_AGENTS"))["get_agents"]
                assert agents["agents"] == [] and len(agents["recovered_agents"]) == 1
                for task in ([{"task_id": {"value": "t"}, "agent_id": {"value": aid}}],
                             [{"task_id": {"value": "t"}}]):
                    await s2.call({"type": "RECONCILE", "reconcile": {"tasks": task}})
                await asyncio.sleep(0.3)
                assert not [e for e in s2.pending if e["type"] == "UPDATE"]
                # Once the agent is back, the master answers from what it reported.
                assert await lm.wait_for(lambda: lm.master.agent_state(aid) == "registered",
                                         5)
                await s2.call({"type": "RECONCILE", "reconcile": {"tasks": [
                    {"task_id": {"value": "t"}, "agent_id": {"value": aid}}]}})
                assert (await s2.update("t", "TASK_RUNNING"))["reason"] == \
                    "REASON_RECONCILIATION"
                # No update was sent for the recovered agent's tasks on re-registration.
                assert not [e for e in s2.all_events if e["type"] == "UPDATE"
                            and e["update"]["status"].get("reason") ==
                            "REASON_AGENT_REREGISTERED"]
            finally:
                await s.close()
                if s2 is not None:
                    await s2.close()
    body()


def test_no_leader_answers_503_and_masters_contend_again(zk_url: str) -> None:
    @async_test
    async def body() -> None:
        async with cluster(agents=0, masters=2, zk=zk_url, zk_session_timeout=SESSION) as lm:
            assert lm.masters is not None
            follower = next(p for p in lm.masters.procs if not p.leading)
            old = lm.master.id
            hosts, path = parse_zk_url(zk_url)
            zk = KazooClient(hosts=hosts)
            zk.start(timeout=10)
            try:
                for child in zk.get_children(path):     # the group loses every node
                    zk.delete(f"{path}/{child}")
            finally:
                zk.stop()
                zk.close()
            seen = set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                st, _, text = await raw(follower.url, "POST", "/api/v1/scheduler",
                                        subscribe_body())
                seen.add((st, text if st == 503 else ""))
                lead = lm.masters.leading()
                if lead is not None and lead.master is not None and lead.master.id != old:
                    break
                await asyncio.sleep(0.02)
            assert (503, "No leader elected") in seen, seen
            new = await wait_leader(lm, other_than=old)
            assert (await raw(new, "POST", "/api/v1/scheduler", subscribe_body()))[0] == 200
    body()


async def _operator(url: str, kind: str) -> dict[str, Any]:
    st, _, text = await raw(url, "POST", "/api/v1", {"type": kind})
    assert st == 200, (st, text)
    return json.loads(text)


def test_masters_config_errors() -> None:
    from corral.localmesos import LocalMesosConfig
    for bad in ({"masters": 2}, {"masters": 0}, {"masters": 10, "zk": "zk://h:1/m"},
                {"zk_session_timeout": 0}, {"registration_backoff": -1}):
        with pytest.raises(ValueError):
            LocalMesosConfig(**bad).validate()
