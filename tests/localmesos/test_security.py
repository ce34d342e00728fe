"""Framework and operator authentication, teardown by an operator, TLS, and tasks run as
the framework's user in sandboxes other users cannot read. Real HTTP, real processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pwd
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corral.localmesos import auth
from tests.localmesos.helpers import (
    Scheduler,
    async_test,
    cluster,
    command_task,
    framework_info,
)
from tests.tlsutil import make_certs


def basic(principal: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{principal}:{secret}".encode()).decode()


def creds_file(tmp_path: Path) -> str:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"credentials": [{"principal": "corral", "secret": "s3cret"},
                                                {"principal": "mallory", "secret": "m"}]}))
    return str(path)


async def post(url: str, body: Any, headers: dict[str, str] | None = None,
               ssl_ctx: Any = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)
                                     if ssl_ctx else None) as h, \
            h.post(url, data=json.dumps(body), headers={
                "Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, r.headers.get("WWW-Authenticate", ""), await r.text()


@async_test
async def test_framework_authentication_and_hijack_attempts(tmp_path: Path) -> None:
    async with cluster(agents=1, credentials=creds_file(tmp_path),
                       authenticate_http_frameworks=True,
                       authenticate_http_readwrite=True) as lm:
        sub = {"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info()}}
        url = lm.master_url + "/api/v1/scheduler"
        for headers in ({}, {"Authorization": basic("corral", "wrong")},
                        {"Authorization": "Basic !!!"}):
            status, challenge, _ = await post(url, sub, headers)
            assert (status, challenge) == (401, 'Basic realm="mesos-master-scheduler"')
        # A principal in FrameworkInfo must be the authenticated one.
        status, _, text = await post(url, {"type": "SUBSCRIBE", "subscribe": {
            "framework_info": framework_info(principal="someone-else")}},
            {"Authorization": basic("corral", "s3cret")})
        assert status == 400 and "does not match principal 'someone-else'" in text

        owner = Scheduler(lm.master_url, authorization=basic("corral", "s3cret"))
        await owner.subscribe(framework_info())
        fid = owner.framework_id
        assert fid is not None
        assert lm.master.frameworks[fid].info["principal"] == "corral"   # filled in
        # Hijack 1: Corral's framework id without credentials.
        raw = Scheduler(lm.master_url)
        await raw.subscribe(framework_info(), framework_id=fid, expect_subscribed=False)
        assert raw.status == 401
        await raw.close()
        # Hijack 2: the id with another principal's valid credentials.
        other = Scheduler(lm.master_url, authorization=basic("mallory", "m"))
        await other.subscribe(framework_info(), framework_id=fid, expect_subscribed=False)
        err = await other.next("ERROR")
        assert err["error"]["message"] == "Changing framework's principal is not allowed."
        await other.close()
        # Calls on the framework from another principal are refused too.
        status, _, text = await post(url, {"type": "REVIVE", "framework_id": {"value": fid}},
                                     {"Authorization": basic("mallory", "m"),
                                      "Mesos-Stream-Id": owner.stream_id or ""})
        assert status == 400 and "does not match principal 'corral'" in text
        assert lm.master.frameworks[fid].connected            # the owner is untouched
        assert await owner.call({"type": "REVIVE"}) == (202, "")

        # The operator API needs credentials too (--authenticate-http-readwrite).
        teardown = {"type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}}
        status, challenge, _ = await post(lm.master_url + "/api/v1", teardown)
        assert (status, challenge) == (401, 'Basic realm="mesos-master-readwrite"')
        assert fid in lm.master.frameworks
        await owner.close()


@async_test
async def test_operator_teardown_removes_the_framework_for_good() -> None:
    async with cluster(agents=1) as lm:
        s = Scheduler(lm.master_url)
        await s.subscribe(framework_info(failover_timeout=3600))
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "t", "sleep 30")])
        await s.until("t", "TASK_RUNNING")
        fid = s.framework_id
        status, _, text = await post(lm.master_url + "/api/v1", {
            "type": "TEARDOWN", "teardown": {"framework_id": {"value": "nope"}}})
        assert (status, text) == (400, "No framework found with specified ID")
        status, _, _ = await post(lm.master_url + "/api/v1", {
            "type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}})
        assert status == 200
        await s.closed.wait()                   # Mesos just closes the stream
        assert fid not in lm.master.frameworks
        again = Scheduler(lm.master_url)
        await again.subscribe(framework_info(), framework_id=fid, expect_subscribed=False)
        err = await again.next("ERROR")
        assert err["error"]["message"] == "Framework has been removed"
        await again.close()
        await s.close()
        # The v0 endpoint, on a second framework.
        s2 = Scheduler(lm.master_url)
        await s2.subscribe(framework_info())
        async with aiohttp.ClientSession() as h, h.post(
                lm.master_url + "/master/teardown", data={"frameworkId": s2.framework_id}) as r:
            assert r.status == 200
        await s2.closed.wait()
        await s2.close()


@async_test
async def test_tls_master(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls")
    async with cluster(agents=1, tls_cert=str(certs.cert), tls_key=str(certs.key)) as lm:
        assert lm.master_url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        s = Scheduler(lm.master_url, ssl=ctx)
        await s.subscribe(framework_info())
        o = (await s.offers())[0]
        assert o["url"]["scheme"] == "https"
        await s.launch(o, [command_task(o, "t", "true")])
        await s.until("t", "TASK_FINISHED")
        await s.close()
        # Unknown CA: refused by the client; plain HTTP to the TLS port: no answer.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(lm.master_url + "/api/v1", {"type": "GET_HEALTH"},
                       ssl_ctx=ssl.create_default_context())
        with pytest.raises(aiohttp.ClientError):
            await post(lm.master_url.replace("https", "http") + "/api/v1",
                       {"type": "GET_HEALTH"})


@async_test
async def test_suppressed_roles_at_subscribe() -> None:
    async with cluster(agents=1) as lm:
        # suppressed_roles must be roles of the framework: ERROR otherwise.
        status, _, text = await post(lm.master_url + "/api/v1/scheduler", {
            "type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info(),
                                               "suppressed_roles": ["other"]}},
            {"Accept": "application/json"})
        assert status == 200 and "Suppressed role 'other' is not contained" in text
        status, _, _ = await post(lm.master_url + "/api/v1/scheduler", {
            "type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info(),
                                               "suppressed_roles": "*"}})
        assert status == 400
        # Subscribed with "*" suppressed: no offers until REVIVE.
        s = Scheduler(lm.master_url)
        await _subscribe_with(s, framework_info(), suppressed=["*"])
        lm.master.request_allocation()
        with pytest.raises(TimeoutError):
            await s.offers(timeout=0.5)
        assert await s.call({"type": "REVIVE"}) == (202, "")
        assert await s.offers()
        await s.close()


async def _subscribe_with(s: Scheduler, info: dict[str, Any], suppressed: list[str]) -> None:
    """SUBSCRIBE with ``suppressed_roles`` through the helper's stream reader."""
    s.resp = await s.session.post(
        s.url + "/api/v1/scheduler",
        data=json.dumps({"type": "SUBSCRIBE", "subscribe": {
            "framework_info": info, "suppressed_roles": suppressed}}),
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    s.stream_id = s.resp.headers.get("Mesos-Stream-Id")
    s._reader = asyncio.ensure_future(s._read())
    ev = await s.next("SUBSCRIBED")
    s.framework_id = ev["subscribed"]["framework_id"]["value"]


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no user {name!r} on this machine")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@async_test
async def test_tasks_run_as_the_framework_user_in_private_sandboxes() -> None:
    nobody, daemon = _user("nobody"), _user("daemon")
    async with cluster(agents=1) as lm:
        a = Scheduler(lm.master_url)
        await a.subscribe(framework_info(user="nobody"))
        b = Scheduler(lm.master_url)
        await b.subscribe(framework_info(user="daemon"))
        o = (await a.offers())[0]
        # Each framework refuses the rest of its offer, so the next one gets the agent.
        await a.launch(o, [command_task(o, "secret", "id -u > me; echo s > private; sleep 30")],
                       refuse=3600)
        await a.until("secret", "TASK_RUNNING")
        box = next(Path(lm.work_dir).glob("agents/*/frameworks/*/executors/secret/runs/*"))
        st = box.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid,
                                                              0o750)
        assert await lm.wait_for(lambda: (box / "me").exists()
                                 and (box / "me").read_text().strip() == str(nobody.pw_uid))
        o = (await b.offers())[0]
        spy = f"cat {box}/private > got 2> err; echo $? > rc"
        await b.launch(o, [command_task(o, "spy", spy)], refuse=3600)
        await b.until("spy", "TASK_FINISHED")
        spy_box = next(Path(lm.work_dir).glob("agents/*/frameworks/*/executors/spy/runs/*"))
        assert spy_box.stat().st_uid == daemon.pw_uid
        assert (spy_box / "rc").read_text().strip() != "0"
        assert "Permission denied" in (spy_box / "err").read_text()
        assert (spy_box / "got").read_text() == ""
        for s in (a, b):     # give the agent back (an outstanding offer is never moved)
            assert await s.call({"type": "TEARDOWN"}) == (202, "")
        # An unknown user cannot run anything.
        c = Scheduler(lm.master_url)
        await c.subscribe(framework_info(user="no-such-user-here"))
        o = (await c.offers())[0]
        await c.launch(o, [command_task(o, "x", "true")])
        failed = await c.until("x", "TASK_FAILED")
        assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "Failed to get user information for 'no-such-user-here'" in failed["message"]
        for s in (a, b, c):
            await s.close()


def test_credentials_file_formats(tmp_path: Path) -> None:
    text = tmp_path / "creds"
    text.write_text("corral s3cret\n\nother pw\n")
    assert auth.load_credentials(str(text)) == {"corral": "s3cret", "other": "pw"}
    for bad in ("{}", '{"credentials": [{"principal": "a:b", "secret": "x"}]}', "one two three",
                ""):
        text.write_text(bad)
        with pytest.raises(auth.CredentialsError):
            auth.load_credentials(str(text))
    with pytest.raises(auth.CredentialsError):
        auth.load_credentials(str(tmp_path / "missing"))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@async_test
async def test_corral_executor_as_a_user_keeps_its_token_from_the_task() -> None:
    """Corral's own executor, fetched as the zipapp from a file:// URI and run as nobody by
    the machine's stock python3: its task (also nobody) cannot read the executor's token
    from /proc, and does not get it in its environment."""
    from corral.artifact import build
    from corral.core.effects import TaskLaunch
    from corral.core.model import TaskKey, TaskKind
    from corral.core.resources import Resources
    from corral.http.executor import executor_setup
    from corral.runtime.translate import task_info

    _user("nobody")
    stock = "/usr/bin/python3"
    if not os.path.exists(stock):
        pytest.skip("no /usr/bin/python3")
    async with cluster(agents=1) as lm:
        assert lm.work_dir is not None
        pyz = build().write(Path(lm.work_dir) / "corral-executor.pyz")
        pyz.chmod(0o644)
        command, uris = executor_setup(pyz.as_uri(), python=stock)
        s = Scheduler(lm.master_url)
        await s.subscribe(framework_info(user="nobody"))
        o = (await s.offers())[0]
        probe = ("cat /proc/$PPID/environ > leak 2> err; echo $? > rc; "
                 "env > task-env; id -u > uid")
        launch = TaskLaunch(task_id="t", key=TaskKey("r/e/n", TaskKind.MASTER), attempt=1,
                            name="t", command=probe, resources=Resources(0.5, 128), ports=(),
                            revocable=False, env=(), grace_seconds=1.0, hostname="x")
        info = task_info(launch, o["agent_id"]["value"], command, uris=uris)
        await s.launch(o, [info])
        await s.until("t", "TASK_FINISHED", timeout=20)
        box = next(Path(lm.work_dir).glob("agents/*/frameworks/*/executors/t/runs/*"))
        assert (box / "uid").read_text().strip() == str(pwd.getpwnam("nobody").pw_uid)
        assert (box / "rc").read_text().strip() != "0"
        assert "Permission denied" in (box / "err").read_text()
        assert "MESOS_EXECUTOR_AUTHENTICATION_TOKEN" not in (box / "task-env").read_text()
        assert f"{box}/corral-executor.pyz" in (box / "task-env").read_text()  # PYTHONPATH
        await s.close()
