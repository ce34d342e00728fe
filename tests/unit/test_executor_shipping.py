"""Shipping the executor and talking to a real cluster, the pure parts: the TaskInfo's
fetcher URIs and image, FrameworkInfo's principal, the scheduler's flags, and the HTTP
routes serving the artifact (real aiohttp on 127.0.0.1:0)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from corral.artifact import ARTIFACT_NAME, STABLE_PATH, build
from corral.core.effects import TaskLaunch
from corral.core.model import TaskKey, TaskKind
from corral.core.resources import Resources
from corral.http import HttpServer
from corral.http.executor import add_routes, executor_setup
from corral.mesos.client import basic_auth
from corral.runtime import translate
from corral.runtime.main import build_parser, mesos_settings, read_secret
from corral.runtime.service import RuntimeConfig


def launch(image: str | None = None) -> TaskLaunch:
    return TaskLaunch(
        task_id="corral.r.e.n.master.1", key=TaskKey("r/e/n", TaskKind.MASTER), attempt=1,
        name="r/e/n master", command="python3 job.py", resources=Resources(1, 256),
        ports=(), revocable=False, env=(("CORRAL_JOB", "r/e/n"),), grace_seconds=5.0,
        hostname="agent-host", image=image)


def test_task_info_names_the_fetched_executor_and_the_image() -> None:
    command, uris = executor_setup("http://sched:7071/executor/abc/corral-executor.pyz")
    info = translate.task_info(launch("python:3.12-slim"), "S1", command, uris=uris)
    ex = info["executor"]
    assert ex["command"]["value"] == \
        'exec python3 -S "$MESOS_SANDBOX/corral-executor.pyz"'
    assert ex["command"]["uris"] == [{
        "value": "http://sched:7071/executor/abc/corral-executor.pyz", "cache": True,
        "executable": False, "extract": False, "output_file": ARTIFACT_NAME}]
    # A custom executor's tasks run in the executor's container: the image goes there.
    assert ex["container"] == {"type": "MESOS", "mesos": {"image": {
        "type": "DOCKER", "docker": {"name": "python:3.12-slim"}}}}
    assert "container" not in info
    plain = translate.task_info(launch(), "S1", "python3 -m corral_executor")
    assert "uris" not in plain["executor"]["command"]
    assert "container" not in plain["executor"]


def test_executor_setup_checks_the_uri() -> None:
    for ok in ("https://h/x.pyz", "file:///srv/x.pyz", "/srv/x.pyz"):
        assert executor_setup(ok, python="/usr/bin/python3.12", cache=False)[1][0]["cache"] \
            is False
    for bad in ("ftp://h/x", "relative.pyz", "hdfs://nn/x"):
        with pytest.raises(ValueError):
            executor_setup(bad)
    assert executor_setup("/x", python="my python")[0].startswith("exec 'my python' -S ")


def test_framework_info_carries_the_principal_never_the_secret() -> None:
    config = RuntimeConfig(principal="corral", secret="s3cret")
    info = config.framework_info("fw-1")
    assert info["principal"] == "corral" and "s3cret" not in json.dumps(info)
    assert "s3cret" not in repr(config)
    assert config.client_options()["credentials"] == ("corral", "s3cret")
    assert "principal" not in RuntimeConfig().framework_info()
    assert basic_auth("corral", "s3cret") == "Basic Y29ycmFsOnMzY3JldA=="
    with pytest.raises(ValueError):
        basic_auth("a:b", "x")


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_credential_and_tls_flags(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert read_secret(str(secret)) == "s3cret"
    config = RuntimeConfig()
    assert mesos_settings(_args("--principal", "corral", "--secret-file", str(secret)),
                          config) is None
    assert (config.principal, config.secret) == ("corral", "s3cret")
    assert "needs --principal" in str(mesos_settings(_args("--secret-file", str(secret)),
                                                     RuntimeConfig()))
    assert "without ':'" in str(mesos_settings(_args("--principal", "a:b"), RuntimeConfig()))
    for content in ("", "\n", "two\nlines", "x" * 5000):
        secret.write_text(content)
        with pytest.raises(ValueError):
            read_secret(str(secret))
    with pytest.raises(ValueError, match="cannot read"):
        read_secret(str(tmp_path / "missing"))
    assert "https://" in str(mesos_settings(
        _args("--master", "http://m:5050", "--master-ca-file", str(secret)), RuntimeConfig()))
    assert "cannot load" in str(mesos_settings(
        _args("--master", "https://m:5050", "--master-ca-file", str(tmp_path / "no.pem")),
        RuntimeConfig()))


def test_http_serves_the_artifact_at_both_paths() -> None:
    artifact = build()

    async def go() -> None:
        server = HttpServer()
        add_routes(server, artifact)
        port = await server.start("127.0.0.1:0")
        base = f"http://127.0.0.1:{port}"
        assert server.advertise() == base
        try:
            async with aiohttp.ClientSession() as s:
                for path in (STABLE_PATH, artifact.versioned_path):
                    async with s.get(base + path) as r:
                        assert r.status == 200 and await r.read() == artifact.data
                        assert r.headers["ETag"] == f'"{artifact.sha256}"'
                    async with s.head(base + path) as r:   # Mesos' cache asks the size
                        assert int(r.headers["Content-Length"]) == len(artifact.data)
                async with s.get(base + artifact.versioned_path,
                                 headers={"If-None-Match": f'"{artifact.sha256}"'}) as r:
                    assert r.status == 304
                async with s.get(base + "/executor/0000/corral-executor.pyz") as r:
                    assert r.status == 404
        finally:
            await server.stop()

    asyncio.run(go())


def test_written_artifact_is_not_left_half_done(tmp_path: Path) -> None:
    path = build().write(tmp_path / ARTIFACT_NAME)
    assert [p.name for p in tmp_path.iterdir()] == [ARTIFACT_NAME]
    assert stat.S_ISREG(os.stat(path).st_mode)


def test_advertised_base_fills_in_the_bound_port() -> None:
    from corral.runtime.main import advertised_base

    server = HttpServer()
    server.host, server.port = "0.0.0.0", 41234
    assert advertised_base("192.168.56.10", server) == "http://192.168.56.10:41234"
    assert advertised_base("http://sched.example/", server) == "http://sched.example:41234"
    assert advertised_base("http://sched:7071", server) == "http://sched:7071"
    assert advertised_base("[fd00::1]", server) == "http://[fd00::1]:41234"
    assert advertised_base("http://[fd00::1]:80", server) == "http://[fd00::1]:80"
