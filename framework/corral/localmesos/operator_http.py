"""Operator endpoints: ``POST /api/v1``, ``GET /master/state``, ``/health``, ``/version``,
and the localmesos-only fault injection endpoints under ``/localmesos/``.

Owns the JSON shapes of the operator API (``GET_STATE`` and friends, maintenance and
draining, TEARDOWN) and of the v0 ``/master/state`` document that web UIs and scripts
read; ``POST /master/teardown`` (``frameworkId=...``) is the v0 teardown. With
``--authenticate-http-readwrite``, ``/api/v1`` and ``/master/teardown`` need HTTP Basic
credentials (realm ``mesos-master-readwrite``); the ``/localmesos/`` endpoints never do.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from corral.localmesos import auth, httputil
from corral.localmesos.maintenance import MaintenanceError
from corral.localmesos.master import AgentRecord, FrameworkRecord, Master, TaskRecord
from corral.localmesos.masters import NoLeader
from corral.localmesos.protocol import (
    TERMINAL_STATES,
    VERSION,
    Json,
    id_of,
    ident,
    ns,
    seconds_of,
)

if TYPE_CHECKING:
    from corral.localmesos.cluster import LocalMesos

OPERATOR_CALLS = frozenset({
    "UNKNOWN", "GET_HEALTH", "GET_FLAGS", "GET_VERSION", "GET_METRICS", "GET_LOGGING_LEVEL",
    "SET_LOGGING_LEVEL", "LIST_FILES", "READ_FILE", "GET_STATE", "GET_AGENTS",
    "GET_FRAMEWORKS", "GET_EXECUTORS", "GET_OPERATIONS", "GET_TASKS", "GET_ROLES",
    "GET_WEIGHTS", "UPDATE_WEIGHTS", "GET_MASTER", "SUBSCRIBE", "RESERVE_RESOURCES",
    "UNRESERVE_RESOURCES", "CREATE_VOLUMES", "DESTROY_VOLUMES", "GROW_VOLUME",
    "SHRINK_VOLUME", "GET_MAINTENANCE_STATUS", "GET_MAINTENANCE_SCHEDULE",
    "UPDATE_MAINTENANCE_SCHEDULE", "START_MAINTENANCE", "STOP_MAINTENANCE", "DRAIN_AGENT",
    "DEACTIVATE_AGENT", "REACTIVATE_AGENT", "GET_QUOTA", "UPDATE_QUOTA", "SET_QUOTA",
    "REMOVE_QUOTA", "TEARDOWN", "MARK_AGENT_GONE",
})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


# ---------------------------------------------------------------------------- shapes


def task_json(task: TaskRecord) -> Json:
    out: Json = {
        "name": task.info.get("name", ""), "task_id": ident(task.task_id),
        "framework_id": ident(task.framework_id), "agent_id": ident(task.agent_id),
        "state": task.state, "resources": task.pool.to_json(),
        "statuses": task.statuses[-10:],
    }
    if task.executor_id:
        out["executor_id"] = ident(task.executor_id)
    for key in ("labels", "discovery", "container", "health_check", "kill_policy"):
        if key in task.info:
            out[key] = task.info[key]
    return out


def agent_json(master: Master, rec: AgentRecord) -> Json:
    a = rec.agent
    out: Json = {
        "agent_info": a.agent_info(), "active": rec.state == "registered",
        "deactivated": rec.draining, "pid": a.pid_text,
        "registered_time": ns(rec.registered_time),
        "total_resources": rec.total.to_json() + _rev(rec),
        "allocated_resources": rec.used.to_json(),
        "offered_resources": rec.offered.to_json(),
        "version": VERSION,
    }
    drain = master.drain_state(rec)
    if drain is not None:
        out["drain_info"] = {"state": drain, "config": {
            "max_grace_period": ns(rec.drain_grace or 0), "mark_gone": False}}
    return out


def _rev(rec: AgentRecord) -> list[Json]:
    from corral.localmesos.protocol import Pool
    return Pool(revocable=rec.revocable_total).to_json()


def framework_json(fw: FrameworkRecord) -> Json:
    out: Json = {"framework_info": fw.info, "active": fw.active, "connected": fw.connected,
                 "recovered": fw.recovered, "registered_time": ns(fw.registered_time)}
    if fw.unregistered_time is not None:
        out["unregistered_time"] = ns(fw.unregistered_time)
    return out


def get_agents(master: Master) -> Json:
    return {"agents": [agent_json(master, r) for r in master.agents.values()
                       if r.state == "registered"],
            "recovered_agents": [a.info for _, a in sorted(master.recovered_agents.items())]}


def get_frameworks(master: Master) -> Json:
    return {"frameworks": [framework_json(f) for f in master.frameworks.values()],
            "completed_frameworks": [framework_json(f)
                                     for f in master.completed_frameworks.values()]}


def get_tasks(master: Master) -> Json:
    tasks: list[Json] = []
    unreachable: list[Json] = []
    completed: list[Json] = []
    for fw in list(master.frameworks.values()) + list(master.completed_frameworks.values()):
        tasks.extend(task_json(t) for t in fw.tasks.values())
        unreachable.extend(task_json(t) for t in fw.unreachable.values())
        completed.extend(task_json(t) for t in fw.completed)
    return {"tasks": tasks, "unreachable_tasks": unreachable, "completed_tasks": completed}


def get_executors(master: Master) -> Json:
    return {"executors": [{"agent_id": ident(r.id), "executor_info": ex.info}
                          for r in master.agents.values() for ex in r.executors.values()]}


def get_state(master: Master) -> Json:
    return {"get_tasks": get_tasks(master), "get_executors": get_executors(master),
            "get_frameworks": get_frameworks(master), "get_agents": get_agents(master)}


def _flat_task(task: TaskRecord) -> Json:
    return {"id": task.task_id, "name": task.info.get("name", ""),
            "framework_id": task.framework_id, "executor_id": task.executor_id or "",
            "slave_id": task.agent_id, "state": task.state, "resources": task.pool.flat(),
            "statuses": [{"state": s.get("state"), "timestamp": s.get("timestamp")}
                         for s in task.statuses[-10:]]}


def _flat_framework(master: Master, fw: FrameworkRecord) -> Json:
    used: dict[str, float] = {}
    offered: dict[str, float] = {}
    for t in fw.tasks.values():
        if t.state not in TERMINAL_STATES:
            for k, v in t.pool.scalars.as_dict().items():
                used[k] = used.get(k, 0.0) + v
    for oid in fw.offers:
        o = master.offers[oid]
        for k, v in o.pool.scalars.as_dict().items():
            offered[k] = offered.get(k, 0.0) + v
    info = fw.info
    return {
        "id": fw.id, "name": info.get("name", ""), "user": info.get("user", ""),
        "hostname": info.get("hostname", ""), "webui_url": info.get("webui_url", ""),
        "failover_timeout": info.get("failover_timeout", 0), "checkpoint":
        info.get("checkpoint", False), "role": info.get("role", "*"),
        "roles": list(fw.roles), "principal": info.get("principal", ""),
        "capabilities": sorted(fw.capabilities), "active": fw.active,
        "connected": fw.connected, "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time or 0, "used_resources": used,
        "offered_resources": offered,
        "tasks": [_flat_task(t) for t in fw.tasks.values()],
        "unreachable_tasks": [_flat_task(t) for t in fw.unreachable.values()],
        "completed_tasks": [_flat_task(t) for t in fw.completed],
        "offers": [{"id": oid, "slave_id": master.offers[oid].agent_id,
                    "resources": master.offers[oid].pool.flat()} for oid in fw.offers],
        "executors": [],
    }


def master_state(master: Master) -> Json:
    """The v0 ``/master/state`` document."""
    slaves = []
    for rec in master.agents.values():
        if rec.state != "registered":
            continue
        a = rec.agent
        slaves.append({
            "id": rec.id, "pid": a.pid_text, "hostname": a.hostname, "port": a.port,
            "registered_time": rec.registered_time, "resources": rec.total.flat(),
            "used_resources": rec.used.flat(), "offered_resources": rec.offered.flat(),
            "unreserved_resources": rec.total.flat(), "attributes": dict(a.attributes),
            "active": True, "deactivated": rec.draining, "version": VERSION,
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
        })
    info = master.master_info()
    return {
        "version": VERSION, "id": master.id, "pid": info["pid"], "hostname": master.hostname,
        "start_time": master.start_time, "elected_time": master.start_time,
        "leader": info["pid"], "leader_info": info,
        "activated_slaves": len(slaves),
        "deactivated_slaves": sum(1 for r in master.agents.values() if r.draining),
        "unreachable_slaves": len(master.unreachable_times),
        "slaves": slaves,
        "frameworks": [_flat_framework(master, f) for f in master.frameworks.values()],
        "completed_frameworks": [_flat_framework(master, f)
                                 for f in master.completed_frameworks.values()],
        "orphan_tasks": [], "unregistered_frameworks": [],
        "flags": {"allocation_interval": f"{master.options.allocation_interval}secs"},
    }


# ---------------------------------------------------------------------------- handlers


def add_routes(app: web.Application, lm: LocalMesos, master: Master) -> None:
    """The operator and control routes of one master (``lm.masters`` answers 307/503 for
    the Mesos ones while it does not lead)."""

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=200, text="")

    async def version(_request: web.Request) -> web.Response:
        return _json({"version": VERSION, "build_user": "localmesos", "git_tag": VERSION,
                      "build_date": "", "build_time": 0})

    async def state(_request: web.Request) -> web.Response:
        return _json(master_state(master))

    def unauthorized(request: web.Request) -> web.Response | None:
        if not master.options.authenticate_readwrite:
            return None
        got = auth.basic_principal(request.headers.get("Authorization"),
                                   master.options.credentials, auth.READWRITE_REALM)
        if isinstance(got, auth.Challenge):
            return web.Response(status=401, text=got.message,
                                headers={"WWW-Authenticate": got.www_authenticate})
        return None

    async def teardown_v0(request: web.Request) -> web.Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"},
                                text=f"Expecting 'POST', received '{request.method}'")
        form = await request.post()
        fid = form.get("frameworkId")
        if not isinstance(fid, str):
            return httputil.bad_request(
                "Missing 'frameworkId' query parameter in the request body")
        return _teardown(master, fid)

    async def operator_api(request: web.Request) -> web.Response:
        denied = unauthorized(request)
        if denied is not None:
            return denied
        call, error = await httputil.read_call(request, OPERATOR_CALLS)
        if error is not None:
            return error
        assert call is not None
        return await _operator_call(lm, master, call)

    async def agents(_request: web.Request) -> web.Response:
        return _json({"agents": lm.agent_info()})

    async def fault(request: web.Request) -> web.Response:
        body, error = await _body(request)
        if error is not None:
            return error
        action = request.match_info.get("action", "add")
        try:
            return await _fault(lm, request.match_info.get("agent"), action, body)
        except LookupError as e:
            return _error(404, str(e))
        except NoLeader as e:
            return _error(503, str(e))
        except (TypeError, ValueError) as e:
            return _error(400, str(e))

    async def masters(_request: web.Request) -> web.Response:
        assert lm.masters is not None
        return _json({"masters": lm.masters.rows(), "leader": lm.masters.leader_info})

    async def fail_master(request: web.Request) -> web.StreamResponse:
        body, error = await _body(request)
        if error is not None:
            return error
        try:
            restart = _num(body, "restart_after") if "restart_after" in body else 1.0
            if restart is not None and not 0 <= restart <= 3600:
                raise ValueError("'restart_after' must be within 0..3600 seconds, or null")
        except ValueError as e:
            return _error(400, str(e))
        assert lm.masters is not None
        lead = lm.masters.leading()
        if lead is None or lead.master is None:
            return _error(409, "no master is leading")
        doc = {"master_id": lead.master.id, "url": lead.url, "restart_after": restart}
        crash = lm.in_background(lm.fail_master(restart))
        if lead.master is not master:
            await crash
            return _json(doc)
        # This very master crashes, cutting every connection to it: answer first.
        resp = web.Response(status=200, text=json.dumps(doc), content_type="application/json")
        await resp.prepare(request)
        await resp.write_eof()
        await asyncio.shield(crash)
        return resp

    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/master/state", state)
    app.router.add_get("/master/state.json", state)
    app.router.add_get("/state", state)
    app.router.add_route("*", "/api/v1", operator_api)
    app.router.add_route("*", "/master/teardown", teardown_v0)
    app.router.add_get("/localmesos/agents", agents)
    app.router.add_post("/localmesos/agents", fault)
    app.router.add_post("/localmesos/agents/{agent}/{action}", fault)
    app.router.add_get("/localmesos/masters", masters)
    app.router.add_post("/localmesos/masters/fail", fail_master)


async def _body(request: web.Request) -> tuple[Json, web.Response | None]:
    body: Any = {}
    if request.can_read_body:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError as e:
            return {}, _error(400, f"body is not JSON: {e}")
    if not isinstance(body, dict):
        return {}, _error(400, "body must be a JSON object")
    return body, None


def _num(body: Json, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{key}' must be a number")
    return float(value)


async def _fault(lm: LocalMesos, agent: str | None, action: str, body: Json) -> web.Response:
    if agent is None:
        attrs = body.get("attributes")
        ports = body.get("ports")
        if attrs is not None and not isinstance(attrs, str):
            raise ValueError("'attributes' must be a string like 'zone:a;rack:1'")
        if ports is not None and not isinstance(ports, str):
            raise ValueError("'ports' must be a string like '40000-40100'")
        aid = await lm.add_agent(_num(body, "cpus"), _num(body, "mem"), _num(body, "disk"),
                                 _num(body, "gpus"), ports, attrs, bool(body.get("spot")))
        return _json({"agent_id": aid})
    if action == "terminate":
        aid = await lm.terminate_agent(agent, _num(body, "notice"))
        return _json({"agent_id": aid})
    if action == "revocable":
        await lm.set_revocable(agent, _num(body, "cpus") or 0.0, _num(body, "mem") or 0.0,
                               _num(body, "disk") or 0.0, _num(body, "gpus") or 0.0)
        return _json({"agent_id": lm.resolve(agent).id})
    if action == "qos-kill":
        exec_id = body.get("executor_id")
        killed = await lm.qos_kill(agent, exec_id if isinstance(exec_id, str) else None)
        return _json({"killed": [{"framework_id": f, "executor_id": e} for f, e in killed]})
    if action == "drain":
        await lm.drain(agent, _num(body, "grace"))
        return _json({"agent_id": lm.resolve(agent).id})
    if action == "reactivate":
        lm.leader().reactivate(lm.resolve(agent))
        return _json({"agent_id": lm.resolve(agent).id})
    if action == "partition":
        seconds = _num(body, "seconds")
        if seconds is None:
            raise ValueError("'seconds' (how long the partition lasts) is required")
        aid, heals_at = await lm.partition(agent, seconds)
        return _json({"agent_id": aid, "heals_at": heals_at})
    return _error(404, f"unknown action {action!r}")


def _machines(payload: Any) -> Any:
    return payload.get("machines") if isinstance(payload, dict) else None


def _teardown(master: Master, framework_id: str) -> web.Response:
    """Operator TEARDOWN: remove the framework and everything of it (Mesos: 200)."""
    fw = master.frameworks.get(framework_id)
    if fw is None:
        return httputil.bad_request("No framework found with specified ID")
    master.teardown(fw, by="the operator")
    return web.Response(status=200)


async def _operator_call(lm: LocalMesos, master: Master, call: Json) -> web.Response:
    kind = call["type"]
    simple = {
        "GET_STATE": lambda: get_state(master), "GET_AGENTS": lambda: get_agents(master),
        "GET_FRAMEWORKS": lambda: get_frameworks(master),
        "GET_TASKS": lambda: get_tasks(master), "GET_EXECUTORS": lambda: get_executors(master),
        "GET_HEALTH": lambda: {"healthy": True},
        "GET_VERSION": lambda: {"version_info": {"version": VERSION}},
        "GET_MASTER": lambda: {"master_info": master.master_info(),
                               "start_time": master.start_time,
                               "elected_time": master.start_time},
        "GET_MAINTENANCE_SCHEDULE": lambda: {"schedule": {
            "windows": master.maintenance_windows}},
        "GET_MAINTENANCE_STATUS": lambda: {"status": master.maintenance_status()},
    }
    if kind in simple:
        return _json({"type": kind, kind.lower(): simple[kind]()})
    try:
        if kind == "TEARDOWN":
            payload = call.get("teardown")
            fid = id_of(payload.get("framework_id")) if isinstance(payload, dict) else None
            if fid is None:
                raise ValueError("Expecting 'teardown.framework_id' to be present")
            return _teardown(master, fid)
        if kind == "UPDATE_MAINTENANCE_SCHEDULE":
            payload = call.get("update_maintenance_schedule")
            schedule = payload.get("schedule") if isinstance(payload, dict) else None
            windows = schedule.get("windows", []) if isinstance(schedule, dict) else None
            if not isinstance(windows, list):
                raise ValueError("Expecting 'update_maintenance_schedule.schedule' "
                                 "to be present")
            master.set_maintenance(windows)
            return web.Response(status=200)
        if kind == "START_MAINTENANCE":
            hit = master.start_maintenance(_machines(call.get("start_maintenance")))
            for down in hit:
                await down.agent.terminate()
            return web.Response(status=200)
        if kind == "STOP_MAINTENANCE":
            master.stop_maintenance(_machines(call.get("stop_maintenance")))
            return web.Response(status=200)
        if kind in ("DRAIN_AGENT", "REACTIVATE_AGENT", "MARK_AGENT_GONE",
                    "DEACTIVATE_AGENT"):
            payload = call.get(kind.lower())
            aid = id_of(payload.get("agent_id")) if isinstance(payload, dict) else None
            if aid is None:
                raise ValueError(f"Expecting '{kind.lower()}.agent_id' to be present")
            rec = master.agents.get(aid)
            if rec is None or rec.state != "registered":
                return web.Response(status=400, text=f"Unknown agent {aid}")
            assert isinstance(payload, dict)
            if kind == "DRAIN_AGENT":
                master.drain(rec, seconds_of(payload.get("max_grace_period")))
            elif kind == "REACTIVATE_AGENT":
                master.reactivate(rec)
            elif kind == "DEACTIVATE_AGENT":
                rec.draining = True
            else:
                await lm.mark_gone(aid)
            return web.Response(status=200)
    except (ValueError, MaintenanceError) as e:
        return httputil.bad_request(str(e))
    return web.Response(status=501, text=f"Operator call {kind} is not implemented by "
                                         f"localmesos")


def now_ns() -> int:
    return int(time.time() * 1e9)
