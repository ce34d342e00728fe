"""The scheduler's HTTP endpoints follow the API's authorisation: bearer tokens from the
same auth file, a principal sees only its roles, /metrics needs an admin, the health
checks are open; bad queries are 400s, never tracebacks. A real aiohttp server on
loopback over a real (unstarted) scheduler service whose core is fed events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from corral.api.auth import hash_token, parse_auth
from corral.core import events as ev
from corral.core.model import JobSpec, Offer, TaskTemplate, WorkerPool
from corral.core.resources import Resources
from corral.http import HttpServer
from corral.observe.observer import Observer
from corral.observe.web import add_routes
from corral.runtime.service import RuntimeConfig, SchedulerService

TOKENS = {"alice": "alice-token-0123456789", "ops": "ops-token-0123456789"}
AUTH = parse_auth({"principals": [
    {"name": "alice", "token_sha256": hash_token(TOKENS["alice"]), "roles": ["ml"]},
    {"name": "ops", "token_sha256": hash_token(TOKENS["ops"]), "admin": True},
]})


def _spec(role: str, name: str) -> JobSpec:
    return JobSpec(role, "prod", name, master=TaskTemplate("m", Resources(1, 64)),
                   workers=WorkerPool(TaskTemplate("w", Resources(64, 64)), 0, 2, 1))


@pytest.fixture
def site() -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    obs = Observer()
    svc = SchedulerService(RuntimeConfig(observer=obs))
    obs.backend = svc
    core = svc.core
    core.handle(ev.Subscribed("fw"), 1.0)
    core.handle(ev.SubmitJob(_spec("ml", "a"), "r1"), 2.0)
    core.handle(ev.SubmitJob(_spec("ads", "b"), "r2"), 2.0)
    core.handle(ev.OffersReceived((Offer("o1", "ag1", "h1", Resources(4, 4096),
                                         attributes=(("market", "spot"),)),)), 3.0)
    server = HttpServer()
    add_routes(server, obs, AUTH)
    port = loop.run_until_complete(server.start("127.0.0.1:0"))
    try:
        yield f"http://127.0.0.1:{port}", loop
    finally:
        loop.run_until_complete(server.stop())
        loop.run_until_complete(svc.client.close())
        loop.close()


def fetch(site: tuple[str, asyncio.AbstractEventLoop], path: str,
          token: str | None = None) -> tuple[int, str]:
    base, loop = site

    async def go() -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.get(base + path, headers=headers,
                                                       allow_redirects=False) as r:
            return r.status, await r.text()

    return loop.run_until_complete(go())


def test_health_is_open_everything_else_needs_a_known_token(site) -> None:
    assert fetch(site, "/healthz") == (200, "ok\n")
    status, _ = fetch(site, "/readyz")
    assert status == 503              # a service never subscribed to Mesos is not ready
    for path in ("/api/v1/jobs", "/api/v1/roles", "/metrics"):
        assert fetch(site, path)[0] == 401
        assert fetch(site, path, "not-a-token")[0] == 401
    status, _ = fetch(site, "/ui/")
    assert status == 303              # the UI sends a browser to its login form


def test_a_principal_sees_only_its_roles(site) -> None:
    status, body = fetch(site, "/api/v1/jobs", TOKENS["alice"])
    assert status == 200
    assert [j["key"] for j in json.loads(body)["jobs"]] == ["ml/prod/a"]
    assert fetch(site, "/api/v1/jobs/ads/prod/b", TOKENS["alice"])[0] == 403
    status, body = fetch(site, "/api/v1/jobs/ml/prod/a", TOKENS["alice"])
    assert status == 200
    doc = json.loads(body)
    master = doc["tasks"][0]
    assert master["market"] == "spot" and doc["source"] == "scheduler"
    worker = doc["tasks"][1]
    assert worker["state"] == "PENDING" and worker["pending_reason"]
    roles = json.loads(fetch(site, "/api/v1/roles", TOKENS["alice"])[1])["roles"]
    assert [r["role"] for r in roles] == ["ml"]
    ui = fetch(site, "/ui/", TOKENS["alice"])[1]
    assert "ml/prod/a" in ui and "ads/prod/b" not in ui
    # /metrics names every role: an admin only.
    assert fetch(site, "/metrics", TOKENS["alice"])[0] == 403
    status, text = fetch(site, "/metrics", TOKENS["ops"])
    assert status == 200 and 'corral_jobs{role="ads"' in text
    everything = json.loads(fetch(site, "/api/v1/jobs", TOKENS["ops"])[1])["jobs"]
    assert len(everything) == 2


def test_bad_queries_are_400s_and_no_history_is_409(site) -> None:
    t = TOKENS["ops"]
    assert fetch(site, "/api/v1/jobs?state=SLEEPING", t)[0] == 400
    assert fetch(site, "/api/v1/jobs?role=" + "x" * 100, t)[0] == 400
    assert fetch(site, "/api/v1/history?since=yesterday", t)[0] == 400
    assert fetch(site, "/api/v1/history", t)[0] == 409
    assert fetch(site, "/api/v1/jobs/no/such/job", t)[0] == 404
    status, body = fetch(site, "/ui/job/%3Cscript%3E/x/y", t)
    assert status == 400 and "<script>" not in body
