"""The Mesos fetcher in localmesos: URIs into sandboxes, extraction, the cache, failures,
and container images (refused, or run on the host saying so). Real HTTP server, real
fetcher processes, real tasks."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from corral.localmesos import fetcher
from tests.localmesos.helpers import (
    async_test,
    cluster,
    command_task,
    executor_task,
    scheduler,
)


class Files:
    """An HTTP server on 127.0.0.1:0 serving fixed bodies, counting GETs per path."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.gets: Counter[str] = Counter()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.gets[request.path] += 1
        body = self.bodies.get(request.path)
        if body is None:
            return web.Response(status=404, text="no such file")
        return web.Response(body=body)


@asynccontextmanager
async def serving(bodies: dict[str, bytes]) -> AsyncIterator[Files]:
    files = Files(bodies)
    app = web.Application()
    app.router.add_get("/{tail:.*}", files.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    files.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield files
    finally:
        await runner.cleanup()


def tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sandbox_of(lm: Any, task_id: str) -> Path:
    found = list(Path(lm.work_dir).glob(f"agents/*/frameworks/*/executors/{task_id}/runs/*"))
    assert len(found) == 1, found
    return found[0]


@async_test
async def test_fetches_extracts_and_marks_executable(tmp_path: Path) -> None:
    local = tmp_path / "notes.txt"
    local.write_text("from a file URI\n")
    bodies = {
        "/tool.sh": b"#!/bin/sh\necho tool ran\n",
        "/data.tar.gz": tarball({"d/a.txt": b"inside the tarball\n"}),
        "/single.txt.gz": gzip.compress(b"gunzipped\n"),
        "/keep.tar.gz": tarball({"k.txt": b"x"}),
    }
    async with serving(bodies) as files, cluster(agents=1) as lm, scheduler(lm) as s:
        uris = [
            {"value": files.url + "/tool.sh", "executable": True, "output_file": "bin/tool"},
            {"value": files.url + "/data.tar.gz"},                       # extract defaults on
            {"value": files.url + "/single.txt.gz", "extract": True},
            {"value": local.as_uri(), "extract": False},
            {"value": files.url + "/keep.tar.gz", "extract": False},
        ]
        o = (await s.offers())[0]
        cmd = "./bin/tool > out.txt && cat d/a.txt single.txt notes.txt >> out.txt"
        await s.launch(o, [command_task(o, "t", cmd, command={"value": cmd, "uris": uris})])
        await s.until("t", "TASK_FINISHED")
        box = sandbox_of(lm, "t")
        assert (box / "out.txt").read_text() == (
            "tool ran\ninside the tarball\ngunzipped\nfrom a file URI\n")
        assert oct((box / "bin" / "tool").stat().st_mode & 0o777) == "0o755"
        assert (box / "keep.tar.gz").exists() and not (box / "k.txt").exists()
        assert "Fetched '" in (box / "stderr").read_text()   # the fetcher logs there


@async_test
async def test_cache_downloads_once_per_uri_and_user() -> None:
    async with serving({"/big.bin": b"x" * 4096, "/fresh.bin": b"y"}) as files, \
            cluster(agents=1) as lm, scheduler(lm) as s:
        cached = {"value": files.url + "/big.bin", "cache": True}
        fresh = {"value": files.url + "/fresh.bin", "cache": False}
        for n in range(3):
            o = (await s.offers())[0]
            cmd = "test -s big.bin && test -s fresh.bin"
            await s.launch(o, [command_task(o, f"t{n}", cmd,
                                            command={"value": cmd, "uris": [cached, fresh]})])
            await s.until(f"t{n}", "TASK_FINISHED")
        assert files.gets["/big.bin"] == 1
        assert files.gets["/fresh.bin"] == 3
        agent = next(iter(lm.master.agents.values())).agent
        assert len(agent.fetch_cache.cached()) == 1


@async_test
async def test_failed_fetch_fails_the_launch_naming_the_uri() -> None:
    async with serving({}) as files, cluster(agents=1) as lm, scheduler(lm) as s:
        missing = files.url + "/missing.pyz"
        o = (await s.offers())[0]
        await s.launch(o, [command_task(o, "c", "true",
                                        command={"value": "true", "uris": [{"value": missing}]}),
                           executor_task(o, "e", "ex", executor={
                               **executor_task(o, "e")["executor"],
                               "executor_id": {"value": "ex"},
                               "command": {"value": "true", "uris": [
                                   {"value": missing, "cache": True}]}}),
                           command_task(o, "bad", "true", command={"value": "true", "uris": [
                               {"value": files.url + "/x", "output_file": "../escape"}]})],
                       refuse=0)
        for tid in ("c", "e"):
            st = await s.until(tid, "TASK_FAILED")
            assert st["reason"] == "REASON_CONTAINER_LAUNCH_FAILED", st
            assert st["source"] == "SOURCE_AGENT"
            assert f"Failed to fetch '{missing}'" in st["message"]
            assert "HTTP return code 404" in st["message"]
        # No TASK_STARTING first: the container never started.
        states = [e["update"]["status"]["state"] for e in s.all_events if e["type"] == "UPDATE"
                  and e["update"]["status"]["task_id"]["value"] in ("c", "e")]
        assert "TASK_STARTING" not in states and "TASK_RUNNING" not in states
        failure = await s.next("FAILURE", where=lambda e: e["failure"].get("executor_id")
                               == {"value": "ex"})
        assert failure["failure"]["status"] == -1
        st = await s.until("bad", "TASK_FAILED")
        assert "must be within the sandbox" in st["message"]
        agent = next(iter(lm.master.agents.values())).agent
        assert agent.fetch_cache.cached() == []   # a failed download leaves no entry


@async_test
async def test_container_images_are_refused_or_run_on_the_host_saying_so() -> None:
    image = {"type": "MESOS", "mesos": {"image": {"type": "DOCKER",
                                                  "docker": {"name": "python:3.12-slim"}}}}
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        task = executor_task(o, "t", "ex")
        task["executor"]["container"] = image
        await s.launch(o, [task, command_task(o, "c", "true", container=image)], refuse=0)
        for tid in ("t", "c"):
            st = await s.until(tid, "TASK_FAILED")
            assert st["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
            assert "cannot run container images (image 'python:3.12-slim')" in st["message"]
            assert "--images-on-host" in st["message"]
    async with cluster(agents=1, images_on_host=True) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        task = executor_task(o, "t", "ex", data=b"finish")
        task["executor"]["container"] = image
        await s.launch(o, [task, command_task(o, "c", "true", container=image)], refuse=0)
        note = "localmesos ran this on the host: image 'python:3.12-slim' was not used"
        for tid in ("t", "c"):
            st = await s.until(tid, "TASK_FINISHED")
            assert st["message"].startswith(note), st
        ran = [e["update"]["status"] for e in s.all_events if e["type"] == "UPDATE"]
        assert all(note in (st.get("message") or "") for st in ran), ran


def test_uri_rules_follow_mesos() -> None:
    assert fetcher.basename("http://h:1/a/b/c.tgz?x=1") == "c.tgz?x=1"
    assert fetcher.basename("/opt/x/file") == "file"
    for bad in ("http://host", "http://host/", "a\\b", "it's"):
        try:
            fetcher.basename(bad)
        except fetcher.FetchError:
            continue
        raise AssertionError(bad)
    for bad_out in ("", "/abs", "a/../../b"):
        try:
            fetcher.validate_output_file(bad_out)
        except fetcher.FetchError:
            continue
        raise AssertionError(bad_out)
    assert fetcher.local_path("file:///tmp/x") == "/tmp/x"
    assert fetcher.local_path("/tmp/x") == "/tmp/x"
    assert fetcher.local_path("https://h/x") is None
    for rel in ("file://rel/x", "rel/x"):
        try:
            fetcher.local_path(rel)
        except fetcher.FetchError:
            continue
        raise AssertionError(rel)


def test_fetcher_program_refuses_other_schemes(tmp_path: Path) -> None:
    info = {"sandbox_directory": str(tmp_path), "items": [
        {"uri": {"value": "hdfs://nn/x.tgz"}, "action": fetcher.BYPASS}]}
    assert fetcher.run(json.loads(json.dumps(info))) == 1
    assert not os.listdir(tmp_path)
