"""Conformance of ``POST /api/v1/scheduler`` over raw HTTP, from the Mesos v1 docs.

Every request body here is literal JSON; responses and events are checked literally.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.localmesos.helpers import (
    Scheduler,
    async_test,
    cluster,
    command_task,
    framework_info,
    scheduler,
)

JSON = {"Content-Type": "application/json"}


async def _post(url: str, body: bytes | str, headers: dict[str, str] | None = None,
                method: str = "POST") -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.request(
            method, url + "/api/v1/scheduler", data=body,
            headers=JSON if headers is None else headers,
            skip_auto_headers=("Content-Type",)) as r:
        return r.status, await r.text(), dict(r.headers)


# ------------------------------------------------------------------ error codes


@async_test
async def test_request_level_error_codes() -> None:
    async with cluster(agents=0) as lm:
        url = lm.master_url
        sub = json.dumps({"type": "SUBSCRIBE",
                          "subscribe": {"framework_info": framework_info()}})
        status, _, headers = await _post(url, "", method="GET")
        assert status == 405 and headers.get("Allow") == "POST"
        assert (await _post(url, sub, headers={}))[0] == 400          # no Content-Type
        status, text, _ = await _post(url, sub, {"Content-Type": "application/x-protobuf"})
        assert status == 415 and "JSON" in text
        assert (await _post(url, sub, {"Content-Type": "text/plain"}))[0] == 415
        status, text, _ = await _post(url, "{not json")
        assert status == 400 and "parse" in text
        assert (await _post(url, "[1,2]"))[0] == 400
        assert (await _post(url, json.dumps({"type": "NOPE"})))[0] == 400
        assert (await _post(url, json.dumps({"type": "UNKNOWN"})))[0] == 501
        assert (await _post(url, json.dumps({"type": "UPDATE_FRAMEWORK"})))[0] == 501
        status, _, _ = await _post(url, sub, {**JSON, "Accept": "application/x-protobuf"})
        assert status == 406
        status, text, _ = await _post(url, sub, {**JSON, "Mesos-Stream-Id": "x"})
        assert status == 400 and "Mesos-Stream-Id" in text
        # Required FrameworkInfo fields missing: a parse failure, 400.
        bad = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "x"}}}
        assert (await _post(url, json.dumps(bad)))[0] == 400
        status, text, _ = await _post(url, json.dumps(
            {"type": "TEARDOWN", "framework_id": {"value": "nope"}}),
            {**JSON, "Mesos-Stream-Id": "x"})
        assert status == 400 and "Framework cannot be found" in text
        assert (await _post(url, json.dumps({"type": "TEARDOWN"})))[0] == 400
        status, text, _ = await _post(url, b"{" + b" " * (9 * 1024 * 1024) + b"}")
        assert status == 413
        # The master still serves after all that.
        async with scheduler(lm) as s:
            assert s.status == 200


@async_test
async def test_stream_id_is_required_and_must_match() -> None:
    async with cluster(agents=0) as lm, scheduler(lm) as s:
        status, text = await s.call({"type": "REVIVE"}, stream_id=None)
        assert status == 400 and "Mesos-Stream-Id" in text
        status, text = await s.call({"type": "REVIVE"}, stream_id="wrong")
        assert status == 400 and "didn't match" in text
        assert await s.call({"type": "REVIVE"}) == (202, "")


@async_test
async def test_missing_payload_fields_are_400() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        assert (await s.call({"type": "KILL"}))[0] == 400
        assert (await s.call({"type": "KILL", "kill": {}}))[0] == 400
        assert (await s.call({"type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "bm90LXV1aWQ="}}
        ))[0] == 400
        assert (await s.call({"type": "SHUTDOWN", "shutdown": {
            "executor_id": {"value": "e"}}}))[0] == 400
        assert (await s.call({"type": "MESSAGE", "message": {
            "agent_id": {"value": "a"}, "executor_id": {"value": "e"}, "data": "@@"}}))[0] \
            == 400
        offer = (await s.offers())[0]
        task = command_task(offer, "t", "true")
        del task["name"]
        status, text = await s.launch(offer, [task])
        assert status == 400 and "name" in text
        bad_op = {"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
                                               "operations": [{"type": "TELEPORT"}]}}
        assert (await s.call(bad_op))[0] == 400
        bad_res = command_task(offer, "t", "true")
        bad_res["resources"] = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": -1}}]
        assert (await s.launch(offer, [bad_res]))[0] == 400


@async_test
async def test_semantic_subscribe_failure_is_200_error_and_close() -> None:
    async with cluster(agents=0) as lm:
        s = Scheduler(lm.master_url)
        try:
            await s.subscribe(framework_info(roles=["a"]), expect_subscribed=False)
            assert s.status == 200
            # Mesos names the stream before the master decides, so it is always there.
            assert s.stream_id, "a refused SUBSCRIBE still carries Mesos-Stream-Id"
            ev = await s.next("ERROR")
            assert "MULTI_ROLE" in ev["error"]["message"]
            await asyncio.wait_for(s.closed.wait(), 5)
        finally:
            await s.close()


# ------------------------------------------------------------------ subscribe, heartbeat


@async_test
async def test_subscribed_event_and_heartbeats() -> None:
    async with cluster(agents=0, heartbeat_interval=0.1) as lm, scheduler(lm) as s:
        assert s.resp is not None and s.resp.headers["Content-Type"] == "application/json"
        assert s.stream_id
        first = s.all_events[0]
        assert first["type"] == "SUBSCRIBED"
        sub = first["subscribed"]
        assert sub["framework_id"]["value"] == f"{lm.master.id}-0000"
        assert sub["heartbeat_interval_seconds"] == 0.1
        info = sub["master_info"]
        assert info["version"] == "1.11.0" and info["port"] == lm.master.port
        await s.next("HEARTBEAT", 2)
        await s.next("HEARTBEAT", 2)


@async_test
async def test_failover_same_id_old_stream_gets_error() -> None:
    async with cluster(agents=1) as lm:
        a = Scheduler(lm.master_url)
        b = Scheduler(lm.master_url)
        try:
            await a.subscribe(framework_info(failover_timeout=60))
            await a.offers()
            await b.subscribe(framework_info(failover_timeout=60), a.framework_id)
            assert b.framework_id == a.framework_id and b.stream_id != a.stream_id
            ev = await a.next("ERROR")
            assert ev["error"]["message"] == "Framework failed over"
            await asyncio.wait_for(a.closed.wait(), 5)
            await b.offers()    # offers are re-made to the new scheduler
            status, _ = await a.call({"type": "REVIVE"})     # old stream id is now wrong
            assert status == 400
        finally:
            await a.close()
            await b.close()


@async_test
async def test_disconnect_then_failover_timeout_removes_framework() -> None:
    async with cluster(agents=1) as lm:
        a = Scheduler(lm.master_url)
        await a.subscribe(framework_info(failover_timeout=0.5))
        offer = (await a.offers())[0]
        await a.launch(offer, [command_task(offer, "t", "sleep 30")])
        await a.until("t", "TASK_RUNNING")
        fid, sid = a.framework_id, a.stream_id
        await a.close()
        fw = lm.master.frameworks[fid]
        assert await lm.wait_for(lambda: not fw.connected, 3)
        assert not fw.offers            # offers taken back
        # Known but not subscribed: 403.
        status, _, _ = await _post(lm.master_url, json.dumps(
            {"type": "REVIVE", "framework_id": {"value": fid}}),
            {**JSON, "Mesos-Stream-Id": sid or ""})
        assert status == 403
        assert await lm.wait_for(lambda: fid in lm.master.completed_frameworks, 3)
        agent = lm.master.agents[offer["agent_id"]["value"]].agent
        assert await lm.wait_for(lambda: not agent.pids, 5)   # its task was killed
        c = Scheduler(lm.master_url)
        try:
            await c.subscribe(framework_info(), fid, expect_subscribed=False)
            ev = await c.next("ERROR")
            assert ev["error"]["message"] == "Framework has been removed"
        finally:
            await c.close()


@async_test
async def test_teardown_kills_tasks_and_closes_stream() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        offer = (await s.offers())[0]
        await s.launch(offer, [command_task(offer, "t", "sleep 30")])
        await s.until("t", "TASK_RUNNING")
        assert await s.call({"type": "TEARDOWN"}) == (202, "")
        await asyncio.wait_for(s.closed.wait(), 5)
        assert s.framework_id in lm.master.completed_frameworks
        agent = lm.master.agents[offer["agent_id"]["value"]].agent
        assert await lm.wait_for(lambda: not agent.pids, 5)


# ------------------------------------------------------------------ offers


@async_test
async def test_offer_shape() -> None:
    async with cluster(agents=1, attributes="zone:a;rack:3") as lm, scheduler(lm) as s:
        offer = (await s.offers())[0]
        rec = next(iter(lm.master.agents.values()))
        assert offer["id"]["value"].startswith(f"{lm.master.id}-O")
        assert offer["agent_id"]["value"] == f"{lm.master.id}-S0"
        assert offer["framework_id"]["value"] == s.framework_id
        assert offer["hostname"] == "127.0.0.1"
        assert offer["url"]["address"]["port"] == rec.agent.port
        res = {r["name"]: r for r in offer["resources"]}
        assert res["cpus"] == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0},
                               "role": "*"}
        assert res["ports"]["type"] == "RANGES"
        assert res["ports"]["ranges"]["range"] == [{"begin": 31000, "end": 31099}]
        attrs = {a["name"]: a for a in offer["attributes"]}
        assert attrs["zone"] == {"name": "zone", "type": "TEXT", "text": {"value": "a"}}
        assert attrs["rack"] == {"name": "rack", "type": "SCALAR", "scalar": {"value": 3.0}}
        assert attrs["market"]["text"]["value"] == "on-demand"
        assert attrs["host"]["text"]["value"] == "agent-0"
        assert offer["executor_ids"] == [] and "allocation_info" not in offer


@async_test
async def test_multi_role_offers_carry_allocation_info() -> None:
    async with cluster(agents=1) as lm, scheduler(lm, "MULTI_ROLE", roles=["ml"]) as s:
        offer = (await s.offers())[0]
        assert offer["allocation_info"] == {"role": "ml"}
        assert all(r["allocation_info"] == {"role": "ml"} for r in offer["resources"])


@async_test
async def test_gpu_agents_only_offered_to_gpu_frameworks() -> None:
    async with cluster(agents=1, gpus=1) as lm:
        async with scheduler(lm) as plain:
            await asyncio.sleep(0.3)
            assert not any(e["type"] == "OFFERS" for e in plain.all_events)
        async with scheduler(lm, "GPU_RESOURCES") as gpu:
            offer = (await gpu.offers())[0]
            assert any(r["name"] == "gpus" for r in offer["resources"])


@async_test
async def test_decline_filter_revive_and_suppress() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        offer = (await s.offers())[0]
        assert await s.call({"type": "DECLINE", "decline": {
            "offer_ids": [offer["id"]], "filters": {"refuse_seconds": 60}}}) == (202, "")
        await asyncio.sleep(0.3)
        assert sum(e["type"] == "OFFERS" for e in s.all_events) == 1   # filtered
        assert await s.call({"type": "REVIVE"}) == (202, "")
        again = (await s.offers())[0]
        assert again["id"] != offer["id"]
        assert await s.call({"type": "SUPPRESS", "suppress": {"roles": []}}) == (202, "")
        await s.call({"type": "DECLINE", "decline": {
            "offer_ids": [again["id"]], "filters": {"refuse_seconds": 0}}})
        n = sum(e["type"] == "OFFERS" for e in s.all_events)
        await asyncio.sleep(0.3)
        assert sum(e["type"] == "OFFERS" for e in s.all_events) == n     # suppressed
        await s.call({"type": "REVIVE", "revive": {"roles": ["*"]}})
        await s.offers()


@async_test
async def test_drf_alternates_between_frameworks() -> None:
    async with cluster(agents=4) as lm, scheduler(lm) as a, scheduler(lm) as b:
        await asyncio.sleep(0.3)
        got_a = sum(len(e["offers"]["offers"]) for e in a.all_events if e["type"] == "OFFERS")
        got_b = sum(len(e["offers"]["offers"]) for e in b.all_events if e["type"] == "OFFERS")
        # A subscribed first and took all four agents; B gets none until A gives some back.
        assert got_a + got_b == 4
        offers = [o for e in a.all_events if e["type"] == "OFFERS" for o in e["offers"]["offers"]]
        await a.call({"type": "DECLINE", "decline": {"offer_ids": [o["id"] for o in offers],
                                                     "filters": {"refuse_seconds": 60}}})
        await asyncio.sleep(0.3)
        got_b = sum(len(e["offers"]["offers"]) for e in b.all_events if e["type"] == "OFFERS")
        assert got_b == 4


@async_test
async def test_offer_timeout_rescinds() -> None:
    async with cluster(agents=1, offer_timeout=0.2) as lm, scheduler(lm) as s:
        offer = (await s.offers())[0]
        ev = await s.next("RESCIND", 3)
        assert ev["rescind"]["offer_id"] == offer["id"]


# ------------------------------------------------------------------ accept validation


@async_test
async def test_invalid_offers_give_task_lost_or_dropped() -> None:
    async with cluster(agents=2) as lm:
        for caps, state in (((), "TASK_LOST"), (("PARTITION_AWARE",), "TASK_DROPPED")):
            async with scheduler(lm, *caps) as s:
                offers = await s.offers()
                o = offers[0]
                # Unknown offer.
                fake = {**o, "id": {"value": "nope"}}
                await s.launch(fake, [command_task(o, "t1", "true")])
                st = await s.update("t1")
                assert st["state"] == state and st["reason"] == "REASON_INVALID_OFFERS"
                assert st["source"] == "SOURCE_MASTER" and "uuid" not in st
                # Mixed agents.
                if len(offers) == 2:
                    body = {"type": "ACCEPT", "accept": {
                        "offer_ids": [offers[0]["id"], offers[1]["id"]],
                        "operations": [{"type": "LAUNCH", "launch": {
                            "task_infos": [command_task(o, "t2", "true")]}}]}}
                    await s.call(body)
                    st = await s.update("t2")
                    assert st["state"] == state and st["reason"] == "REASON_INVALID_OFFERS"
                # Reused offer: the first ACCEPT used it up.
                o = (await s.offers())[0]
                await s.launch(o, [command_task(o, "t3", "true")])
                await s.launch(o, [command_task(o, "t4", "true")])
                st = await s.update("t4")
                assert st["state"] == state
                await s.call({"type": "TEARDOWN"})


@async_test
async def test_invalid_tasks_give_task_error() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        both = command_task(o, "both", "true")
        both["executor"] = {"executor_id": {"value": "e"}, "command": {"value": "true"}}
        neither = command_task(o, "neither", "true")
        del neither["command"]
        big = command_task(o, "big", "true", cpus=100)
        dup1 = command_task(o, "dup", "sleep 5")
        dup2 = command_task(o, "dup", "sleep 5")
        mixed = command_task(o, "mixed", "true")
        mixed["resources"].append({"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1},
                                   "revocable": {}})
        empty = command_task(o, "empty", "true")
        empty["resources"] = []
        await s.launch(o, [both, neither, big, dup1, dup2, mixed, empty])
        bad = {"both", "neither", "big", "mixed", "empty"}
        statuses = await s.settle(lambda sts: len(sts) >= 7)
        by_id: dict[str, list[dict]] = {}
        for st in statuses:
            by_id.setdefault(st["task_id"]["value"], []).append(st)
        for tid in bad:
            (st,) = by_id[tid]
            assert st["state"] == "TASK_ERROR", tid
            assert st["reason"] == "REASON_TASK_INVALID" and "uuid" not in st
            assert st["source"] == "SOURCE_MASTER"
        states = [st["state"] for st in by_id["dup"]]
        assert "TASK_STARTING" in states      # the first one runs
        err = next(st for st in by_id["dup"] if st["state"] == "TASK_ERROR")
        assert "duplicate" in err["message"]


@async_test
async def test_executor_info_mismatch_is_task_error() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        ex = {"executor_id": {"value": "e"}, "command": {"value": "sleep 30"}}
        t1 = command_task(o, "a", "x")
        del t1["command"]
        t1["executor"] = ex
        t2 = dict(t1, task_id={"value": "b"},
                  executor={**ex, "command": {"value": "sleep 31"}})
        await s.launch(o, [t1, t2])
        st = await s.update("b")
        assert st["state"] == "TASK_ERROR" and "not compatible" in st["message"]
        await s.call({"type": "TEARDOWN"})


@async_test
async def test_unused_resources_are_declined_with_the_filter() -> None:
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "t", "sleep 30", cpus=1)], refuse=60)
        await s.until("t", "TASK_RUNNING")
        await asyncio.sleep(0.3)
        assert sum(e["type"] == "OFFERS" for e in s.all_events) == 1
        await s.call({"type": "REVIVE"})
        again = (await s.offers())[0]
        cpus = next(r for r in again["resources"] if r["name"] == "cpus")
        assert cpus["scalar"]["value"] == 3.0
