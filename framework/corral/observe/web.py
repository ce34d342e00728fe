"""The scheduler's HTTP routes for people and monitoring (on ``--http``).

``add_routes(server, observer, auth)`` adds to the scheduler's one ``HttpServer``:

    GET /healthz                    200 while the process serves (open)
    GET /readyz                     200 while this replica leads and is subscribed to
                                    Mesos, else 503 with the reason (open)
    GET /metrics                    Prometheus text format (admin when --auth-file)
    GET /api/v1/jobs                ?role=R&state=S  jobs the caller may see
    GET /api/v1/jobs/{key}          one job: tasks, why pending, markets, checkpoint
                                    ages, progress samples, losses, cost (live or history)
    GET /api/v1/roles               weights, guarantees, limits, budgets, fair share, use
    GET /api/v1/agents              agents by market
    GET /api/v1/history             ?role=R&since=2d&state=FAILED&limit=N
    GET /api/v1/cost                ?role=R&since=7d
    GET /ui/...                     the same, as HTML pages (``ui.py``); /ui/login sets
                                    the token cookie

Every JSON answer is an object; errors are ``{"error": "..."}`` with 400 (bad query),
401 (credentials needed), 403 (a role the caller may not see), 404, 409 (no history),
503 (not the leader: ``leader`` names its API address when known).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.api.auth import AuthConfig, Principal
from corral.core.model import role_of
from corral.observe import reports
from corral.observe.history import BadQuery, parse_since
from corral.observe.webauth import COOKIE, allowed_roles, principal_of

if TYPE_CHECKING:
    from corral.http import HttpServer
    from corral.observe.observer import Observer

KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}\Z")
ROLE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
STATES = ("PENDING", "RUNNING", "FINISHED", "FAILED", "KILLED")




class NotLeading(RuntimeError):
    def __init__(self, leader: str | None) -> None:
        super().__init__("this replica does not lead" + (f"; the leader's API is at {leader}"
                                                         if leader else ""))
        self.leader = leader


def query_role(request: web.Request) -> str | None:
    role = request.query.get("role") or None
    if role is not None and not ROLE_RE.fullmatch(role):
        raise BadQuery("role: not a role name")
    return role


def query_state(request: web.Request) -> str | None:
    state = (request.query.get("state") or "").upper() or None
    if state is not None and state not in STATES:
        raise BadQuery(f"state: expected one of {', '.join(STATES)}")
    return state


def query_limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadQuery("limit: expected a whole number 1..1000")
    return int(raw)


# ----------------------------------------------------------------------- data


class Data:
    """What the JSON API and the HTML pages show, as plain data."""

    def __init__(self, obs: Observer) -> None:
        self.obs = obs

    async def _leader(self) -> Any:
        svc = self.obs.service()
        if svc is None:
            backend = self.obs.backend
            leader = None
            if backend is not None and hasattr(backend, "leader_address"):
                leader = await backend.leader_address()
            raise NotLeading(leader)
        return svc

    async def jobs(self, allowed: frozenset[str] | None, role: str | None,
                   state: str | None) -> list[dict[str, Any]]:
        from corral.api.convert import summary_to_dict
        from corral.core.summary import summarize

        svc = await self._leader()
        out = []
        for view in await svc.list(role):
            if not reports.visible(allowed, view.spec.role):
                continue
            if state and view.state.value != state:
                continue
            d = summary_to_dict(summarize(view))
            d["role"] = view.spec.role
            if view.cost is not None:
                d["cost"] = view.cost.total
                d["currency"] = view.cost.currency
            out.append(d)
        return sorted(out, key=lambda d: d["key"])

    async def job(self, allowed: frozenset[str] | None, key: str) -> dict[str, Any]:
        from corral.api.convert import view_to_dict
        from corral.core.views import NotFound

        if not KEY_RE.fullmatch(key):
            raise BadQuery("not a job key (role/environment/name)")
        role = role_of(key)
        if not reports.visible(allowed, role):
            raise PermissionError(f"you may not see jobs of role {role}")
        svc = self.obs.service()
        if svc is not None:
            try:
                view = await svc.get(key)
            except NotFound:
                view = None
            if view is not None:
                now = self.obs.clock()
                doc = view_to_dict(view, now)
                details = {d.slot: d for d in svc.core.job_detail(key, now)}
                for t in doc["tasks"]:
                    d = details.get(t["slot"])
                    t["market"] = d.market if d else None
                    t["checkpoint_age"] = d.checkpoint_age if d else None
                    t["checkpoint_seq"] = d.checkpoint_seq if d else None
                samples = self.obs.progress.get(key)
                doc["progress_samples"] = [list(p) for p in samples.points] if samples \
                    else []
                doc["source"] = "scheduler"
                return doc
        rec = await reports.history_job(self.obs, allowed, key)
        if rec is None:
            if svc is None:
                await self._leader()
            raise LookupError(f"no job {key} in the scheduler or its history")
        doc = dict(rec.record)
        doc["source"] = "history"
        return doc

    async def roles(self, allowed: frozenset[str] | None) -> list[dict[str, Any]]:
        from corral.api.convert import cost_to_dict
        from corral.core import cost

        svc = await self._leader()
        core = svc.core
        now = self.obs.clock()
        policy = svc.config.policy
        figures = core.role_figures(now)
        shares = core.fair_shares()
        capacity, _ = core.capacity()
        cap = (capacity.cpus, capacity.mem, capacity.disk, capacity.gpus)
        names = set(figures) | set(shares) | set(policy.roles)
        out = []
        for role in sorted(names):
            if not reports.visible(allowed, role):
                continue
            pol = policy.roles.get(role)
            f = figures.get(role)
            alloc = f.allocation if f else (0.0, 0.0, 0.0, 0.0)
            budget = policy.budgets.get(role)
            quota = policy.quotas.get(role)
            out.append({
                "role": role,
                "weight": pol.weight if pol else 1.0,
                "guarantee": pol.guarantee.as_dict() if pol else None,
                "limit": pol.limit.as_dict() if pol and pol.limit else None,
                "quota": {"jobs": quota.jobs, **dict(quota.resources)} if quota else None,
                "budget": {"amount": budget.amount, "window_s": budget.window_s}
                if budget else None,
                "fair_share": shares.get(role, 0.0),
                "allocation_share": max((x / c for x, c in zip(alloc, cap, strict=True)
                                         if c > 0), default=0.0),
                "allocation": dict(zip(("cpus", "mem", "disk", "gpus"), alloc, strict=True)),
                "jobs_active": f.jobs_active if f else 0,
                "workers_desired": f.workers_desired if f else 0,
                "workers_running": f.workers_running if f else 0,
                "cost": cost_to_dict(cost.priced(f.usage_all(), self.obs.prices))
                if f else None,
            })
        return out

    async def agents(self) -> dict[str, list[dict[str, Any]]]:
        svc = await self._leader()
        by_market: dict[str, list[dict[str, Any]]] = {}
        for a in svc.core.agents():
            by_market.setdefault(a.market, []).append({
                "agent_id": a.agent_id, "hostname": a.hostname, "tasks": a.tasks,
                "held": dict(zip(("cpus", "mem", "disk", "gpus"), a.held, strict=True)),
                "revocable": dict(zip(("cpus", "mem", "disk", "gpus"), a.revocable,
                                      strict=True)),
                "lost": a.lost, "draining_at": a.draining_at,
                "attributes": dict(a.attributes)})
        return dict(sorted(by_market.items()))

    async def history(self, allowed: frozenset[str] | None, role: str | None,
                      since: float | None, state: str | None, limit: int
                      ) -> list[dict[str, Any]]:
        recs = await reports.history(self.obs, allowed, role=role, since=since, state=state,
                                     limit=limit)
        out = []
        for r in recs:
            d = r.to_dict()
            d.pop("record")
            out.append(d)
        return out

    async def cost(self, allowed: frozenset[str] | None, role: str | None,
                   since: float | None) -> dict[str, Any]:
        rows, with_history = await reports.cost_report(self.obs, allowed, role=role,
                                                        since=since)
        return {"history": with_history, "roles": [reports.row_dict(r) for r in rows]}


# ----------------------------------------------------------------------- routes


Page = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, sort_keys=True, default=str), status=status,
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def error_status(exc: BaseException) -> tuple[int, dict[str, Any]]:
    from corral.core.views import NotFound

    if isinstance(exc, BadQuery):
        return 400, {"error": str(exc)}
    if isinstance(exc, PermissionError):
        return 403, {"error": str(exc)}
    if isinstance(exc, LookupError | NotFound):
        return 404, {"error": str(exc.args[0]) if exc.args else "not found"}
    if isinstance(exc, reports.NoHistory):
        return 409, {"error": str(exc)}
    if isinstance(exc, NotLeading):
        return 503, {"error": str(exc), "leader": exc.leader}
    raise exc


def add_routes(server: HttpServer, obs: Observer, auth: AuthConfig | None) -> None:
    """Serve metrics, health, the JSON API and the web UI on ``server``."""
    from corral.observe import ui

    data = Data(obs)

    def guarded(handler: Page, *, admin: bool = False, html: bool = False
                ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            who = principal_of(auth, request)
            if who is None:
                if html:
                    raise web.HTTPSeeOther("/ui/login")
                return _json({"error": "this Corral scheduler requires a bearer token "
                              "(Authorization: Bearer <token>)"}, 401)
            if admin and not who.admin:
                return _json({"error": f"{who.name} may not read every role's metrics "
                              "(an admin principal may)"}, 403)
            try:
                return await handler(request, who)
            except web.HTTPException:
                raise
            except Exception as exc:
                status, body = error_status(exc)
                if html:
                    return ui.error_page(status, body, who, auth is not None)
                return _json(body, status)

        return run

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        svc = obs.service()
        if svc is None:
            return web.Response(text="not the leader\n", status=503)
        if not svc.ready():
            return web.Response(text="not subscribed to the Mesos master\n", status=503)
        return web.Response(text="ready: leading and subscribed\n")

    async def metrics(_: web.Request, __: Principal) -> web.Response:
        body = generate_latest(obs.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def api_jobs(request: web.Request, who: Principal) -> web.Response:
        return _json({"jobs": await data.jobs(allowed_roles(who), query_role(request),
                                              query_state(request))})

    async def api_job(request: web.Request, who: Principal) -> web.Response:
        return _json(await data.job(allowed_roles(who), request.match_info["key"]))

    async def api_roles(_: web.Request, who: Principal) -> web.Response:
        return _json({"roles": await data.roles(allowed_roles(who))})

    async def api_agents(_: web.Request, __: Principal) -> web.Response:
        return _json({"markets": await data.agents()})

    async def api_history(request: web.Request, who: Principal) -> web.Response:
        since = parse_since(request.query.get("since"), time.time())
        return _json({"jobs": await data.history(
            allowed_roles(who), query_role(request), since, query_state(request),
            query_limit(request))})

    async def api_cost(request: web.Request, who: Principal) -> web.Response:
        since = parse_since(request.query.get("since"), time.time())
        return _json(await data.cost(allowed_roles(who), query_role(request), since))

    async def root(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    server.add_get("/", root)
    server.add_get("/healthz", healthz)
    server.add_get("/readyz", readyz)
    server.add_get("/metrics", guarded(metrics, admin=True))
    server.add_get("/api/v1/jobs", guarded(api_jobs))
    server.add_get("/api/v1/jobs/{key:.+}", guarded(api_job))
    server.add_get("/api/v1/roles", guarded(api_roles))
    server.add_get("/api/v1/agents", guarded(api_agents))
    server.add_get("/api/v1/history", guarded(api_history))
    server.add_get("/api/v1/cost", guarded(api_cost))
    ui.add_pages(server, data, guarded, auth, COOKIE)
