"""Operator API, /master/state, /health, /version, the CLI process and control commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import psutil

from corral.localmesos import cli
from tests.localmesos.helpers import (
    Scheduler,
    async_test,
    cluster,
    command_task,
    framework_info,
    scheduler,
)


async def _op(url: str, body: dict) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as s, s.post(
            url + "/api/v1", data=json.dumps(body),
            headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


@async_test
async def test_operator_reads_and_v0_endpoints() -> None:
    async with cluster(agents=2) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "t", "sleep 30")], refuse=0)
        await s.until("t", "TASK_RUNNING")
        url = lm.master_url
        status, state = await _op(url, {"type": "GET_STATE"})
        assert status == 200 and state["type"] == "GET_STATE"
        gs = state["get_state"]
        assert [t["task_id"]["value"] for t in gs["get_tasks"]["tasks"]] == ["t"]
        assert gs["get_tasks"]["tasks"][0]["state"] == "TASK_RUNNING"
        assert len(gs["get_agents"]["agents"]) == 2
        assert gs["get_frameworks"]["frameworks"][0]["framework_info"]["id"]["value"] \
            == s.framework_id
        for kind in ("GET_AGENTS", "GET_FRAMEWORKS", "GET_TASKS", "GET_HEALTH", "GET_VERSION"):
            status, body = await _op(url, {"type": kind})
            assert status == 200 and kind.lower() in body
        assert (await _op(url, {"type": "NOPE"}))[0] == 400
        assert (await _op(url, {"type": "GET_QUOTA"}))[0] == 501
        async with aiohttp.ClientSession() as h:
            async with h.get(url + "/health") as r:
                assert r.status == 200
            async with h.get(url + "/version") as r:
                assert (await r.json())["version"] == "1.11.0"
            async with h.get(url + "/master/state") as r:
                ms = await r.json()
        assert ms["id"] == lm.master.id and ms["activated_slaves"] == 2
        assert ms["frameworks"][0]["tasks"][0]["state"] == "TASK_RUNNING"
        assert {sl["id"] for sl in ms["slaves"]} == set(lm.agent_ids)


@async_test
async def test_maintenance_schedule_and_drain_via_operator_api() -> None:
    async with cluster(agents=2) as lm, scheduler(lm, "PARTITION_AWARE") as s:
        o = (await s.offers())[0]
        aid = o["agent_id"]["value"]
        name = f"agent-{lm.master.agents[aid].agent.index}"
        await s.launch(o, [command_task(o, "t", "sleep 30")], refuse=0)
        await s.until("t", "TASK_RUNNING")
        start = int((time.time() + 60) * 1e9)
        status, _ = await _op(lm.master_url, {"type": "UPDATE_MAINTENANCE_SCHEDULE",
                                              "update_maintenance_schedule": {"schedule": {
                                                  "windows": [{
                                                      "machine_ids": [{"hostname": name}],
                                                      "unavailability": {"start": {
                                                          "nanoseconds": start}}}]}}})
        assert status == 200
        inv = (await s.next("INVERSE_OFFERS"))["inverse_offers"]["inverse_offers"][0]
        assert inv["unavailability"]["start"]["nanoseconds"] == start
        assert (await _op(lm.master_url, {"type": "UPDATE_MAINTENANCE_SCHEDULE"}))[0] == 400
        status, _ = await _op(lm.master_url, {"type": "START_MAINTENANCE", "start_maintenance": {
            "machines": [{"hostname": name}]}})
        assert status == 200
        st = await s.update("t", "TASK_GONE_BY_OPERATOR")
        assert "uuid" not in st
        other = next(a for a in lm.agent_ids if a != aid)
        status, _ = await _op(lm.master_url, {"type": "DRAIN_AGENT", "drain_agent": {
            "agent_id": {"value": other}, "max_grace_period": {"nanoseconds": 10**8}}})
        assert status == 200
        assert lm.master.agents[other].draining


async def _start_sleeper(url: str) -> None:
    s = Scheduler(url)
    try:
        await s.subscribe(framework_info(failover_timeout=60))
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "t", "sleep 60")])
        await s.until("t", "TASK_RUNNING")
    finally:
        await s.close()


def test_cli_run_control_and_sigterm(tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.localmesos", "--port", "0", "--agents", "2",
         "--spot", "1", "--work-dir", str(tmp_path), "--heartbeat-interval", "0.5",
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        line = proc.stdout.readline().strip()   # type: ignore[union-attr]
        assert line.startswith("localmesos master at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert cli.main(["agents", "--master", url]) == 0
        assert cli.main(["add-agent", "--master", url, "--cpus", "1"]) == 0
        assert cli.main(["revocable", "agent-0", "--master", url, "--cpus", "1"]) == 0
        assert cli.main(["drain", "agent-1", "--master", url, "--grace", "1"]) == 0
        assert cli.main(["qos-kill", "agent-0", "--master", url]) == 0
        assert cli.main(["terminate", "agent-2", "--master", url]) == 0
        assert cli.main(["terminate", "no-such", "--master", url]) == 1
        asyncio.run(_start_sleeper(url))
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("sleep" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not [c for c in children if c.is_running()
                    and c.status() != psutil.STATUS_ZOMBIE]
        assert "Traceback" not in proc.stderr.read()   # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_bad_arguments_exit_cleanly(capsys) -> None:
    assert cli.main(["--agents", "1", "--spot", "3"]) == 2
    assert "--spot" in capsys.readouterr().err
    assert cli.main(["--attributes", "nocolon"]) == 2
    assert cli.main(["agents", "--master", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_help_documents_every_run_flag_with_its_default(capsys) -> None:
    import argparse

    for argv in (["--help"], ["run", "--help"]):
        assert cli.main(argv) == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: corral localmesos run ")
        assert "Mesos: 75" in text and "terminate AGENT" in text
    run = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices["run"]
    for action in run._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            if action.dest != "quiet":
                assert "default" in action.help, action.dest
    # The laptop default that makes a terminated agent visible in seconds.
    assert cli.LocalMesosConfig().agent_health_timeout == 5.0


@async_test
async def test_maintenance_calls_are_validated_and_status_reports_answers() -> None:
    async with cluster(agents=2) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        aid = o["agent_id"]["value"]
        name = f"agent-{lm.master.agents[aid].agent.index}"
        await s.launch(o, [command_task(o, "t", "sleep 30")], refuse=0)
        await s.until("t", "TASK_RUNNING")
        machine = {"hostname": name}

        async def call(kind: str, payload: dict) -> tuple[int, dict | str]:
            return await _op(lm.master_url, {"type": kind, kind.lower(): payload})

        # Not scheduled: cannot go down (or come up).
        status, text = await call("START_MAINTENANCE", {"machines": [machine]})
        assert status == 400 and "is not part of a maintenance schedule" in str(text)
        status, text = await call("START_MAINTENANCE", {"machines": []})
        assert (status, text) == (400, "List of machines is empty")
        status, text = await call("START_MAINTENANCE", {"machines": [{"ip": "not-an-ip"}]})
        assert status == 400
        status, text = await call("START_MAINTENANCE", {"machines": [{}]})
        assert (status, text) == (400, "Both 'hostname' and 'ip' for a machine are empty")
        window = {"machine_ids": [machine],
                  "unavailability": {"start": {"nanoseconds": int((time.time() + 60) * 1e9)}}}
        twice = {"schedule": {"windows": [window, window]}}
        status, text = await call("UPDATE_MAINTENANCE_SCHEDULE", twice)
        assert status == 400 and "appears more than once" in str(text)
        negative = {**window, "unavailability": {**window["unavailability"],
                                                 "duration": {"nanoseconds": -1}}}
        status, text = await call("UPDATE_MAINTENANCE_SCHEDULE",
                                  {"schedule": {"windows": [negative]}})
        assert (status, text) == (400, "Unavailability 'duration' is negative")
        assert (await call("UPDATE_MAINTENANCE_SCHEDULE",
                           {"schedule": {"windows": [window]}}))[0] == 200
        inv = (await s.next("INVERSE_OFFERS"))["inverse_offers"]["inverse_offers"][0]
        status, body = await _op(lm.master_url, {"type": "GET_MAINTENANCE_STATUS"})
        assert status == 200 and isinstance(body, dict)
        draining = body["get_maintenance_status"]["status"]["draining_machines"]
        assert draining[0]["id"] == machine
        assert [st["status"] for st in draining[0]["statuses"]] == ["UNKNOWN"]
        assert await s.call({"type": "DECLINE_INVERSE_OFFERS", "decline_inverse_offers": {
            "inverse_offer_ids": [inv["id"]]}}) == (202, "")
        body = (await _op(lm.master_url, {"type": "GET_MAINTENANCE_STATUS"}))[1]
        assert isinstance(body, dict)
        statuses = body["get_maintenance_status"]["status"]["draining_machines"][0]["statuses"]
        assert statuses[0]["status"] == "DECLINE"
        assert statuses[0]["framework_id"] == {"value": s.framework_id}
        # DRAINING machines cannot be brought up; DOWN ones cannot leave the schedule.
        status, text = await call("STOP_MAINTENANCE", {"machines": [machine]})
        assert status == 400 and "is not in DOWN mode and cannot be brought up" in str(text)
        assert (await call("START_MAINTENANCE", {"machines": [machine]}))[0] == 200
        await s.update("t", "TASK_LOST")
        status, text = await call("START_MAINTENANCE", {"machines": [machine]})
        assert status == 400 and "is not in DRAINING mode" in str(text)
        status, text = await call("UPDATE_MAINTENANCE_SCHEDULE", {"schedule": {"windows": []}})
        assert status == 400 and "is deactivated and cannot be removed" in str(text)
        body = (await _op(lm.master_url, {"type": "GET_MAINTENANCE_STATUS"}))[1]
        assert isinstance(body, dict)
        assert body["get_maintenance_status"]["status"] == {"down_machines": [machine]}
        assert (await call("STOP_MAINTENANCE", {"machines": [machine]}))[0] == 200
        body = (await _op(lm.master_url, {"type": "GET_MAINTENANCE_SCHEDULE"}))[1]
        assert isinstance(body, dict)
        assert body["get_maintenance_schedule"]["schedule"]["windows"] == []
