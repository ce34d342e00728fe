"""Benchmark the executor's start: CPU seconds it spends until its task is RUNNING.

A scripted agent (aiohttp on 127.0.0.1:0, the literal v1 executor API) answers SUBSCRIBE
with SUBSCRIBED and LAUNCH of a ``sleep`` task, acknowledges every UPDATE, and when
TASK_RUNNING arrives reads the executor process's own CPU time (user + system, from
/proc/<pid>/stat); then it sends SHUTDOWN. That is interpreter start, imports, connecting,
subscribing, starting the task and reporting it: everything an agent pays per task.

Variants, each run ``--runs`` times (median, min, max printed):

* ``installed``: ``python -m corral_executor`` from this checkout with this interpreter
  (what agents with Corral installed run);
* ``zipapp``: the artifact agents fetch, ``python -S corral-executor.pyz``, with this
  interpreter and, if present, with the machine's stock ``/usr/bin/python3``;
* ``--baseline REF``: the executor of a git revision (e.g. the one before the standard-
  library rewrite) run like ``installed``, for a same-run ratio.

Run: ``python bench/bench_executor_start.py [--runs 9] [--baseline f49e414]``. Figures
are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from aiohttp import web

from corral.artifact import ARTIFACT_NAME, build

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def frame(event: dict) -> bytes:
    data = json.dumps(event).encode()
    return b"%d\n%s" % (len(data), data)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    fields = raw[raw.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def one_run(argv: list[str], env: dict[str, str], sandbox: Path) -> float:
    running = asyncio.get_running_loop().create_future()
    stream: asyncio.Queue[bytes | None] = asyncio.Queue()
    proc: asyncio.subprocess.Process | None = None

    async def api(request: web.Request) -> web.StreamResponse:
        call = await request.json()
        kind = call["type"]
        if kind == "SUBSCRIBE":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            stream.put_nowait(frame({"type": "SUBSCRIBED", "subscribed": {
                "executor_info": {"executor_id": call["executor_id"]},
                "framework_info": {"user": "bench", "name": "bench"},
                "agent_info": {"id": {"value": "S0"}, "hostname": "localhost"}}}))
            spec = {"command": "sleep 30", "usage_interval_seconds": 0}
            stream.put_nowait(frame({"type": "LAUNCH", "launch": {"task": {
                "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "S0"},
                "resources": [], "data": base64.b64encode(json.dumps(spec).encode()).decode()}}}))
            while (item := await stream.get()) is not None:
                await resp.write(item)
            return resp
        if kind == "UPDATE":
            status = call["update"]["status"]
            stream.put_nowait(frame({"type": "ACKNOWLEDGED", "acknowledged": {
                "task_id": status["task_id"], "uuid": status["uuid"]}}))
            if status["state"] == "TASK_RUNNING" and not running.done() and proc is not None:
                running.set_result(cpu_seconds(proc.pid))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/v1/executor", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    env = {**env, "MESOS_AGENT_ENDPOINT": f"127.0.0.1:{port}", "MESOS_FRAMEWORK_ID": "fw",
           "MESOS_EXECUTOR_ID": "t", "MESOS_SANDBOX": str(sandbox), "MESOS_CHECKPOINT": "0"}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=sandbox, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        cpu = await asyncio.wait_for(running, 30)
        stream.put_nowait(frame({"type": "SHUTDOWN"}))
        await asyncio.wait_for(proc.wait(), 30)
        return cpu
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        stream.put_nowait(None)
        await runner.cleanup()


def measure(name: str, argv: list[str], env: dict[str, str], runs: int) -> float:
    figures = []
    for _ in range(runs + 1):  # the first run warms the page cache and is not counted
        with tempfile.TemporaryDirectory() as d:
            figures.append(asyncio.run(one_run(argv, env, Path(d))))
    figures = figures[1:]
    med = statistics.median(figures)
    print(f"{name:<46} CPU s to RUNNING: median {med:.3f}  "
          f"min {min(figures):.3f}  max {max(figures):.3f}  (n={runs})")
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--baseline", default=None, help="git revision whose executor to compare")
    args = p.parse_args()
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, float] = {}
        if args.baseline:
            old = Path(tmp) / "old"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline,
                                      "executor/corral_executor"], check=True,
                                     capture_output=True).stdout
            with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tf:
                tf.extractall(old, filter="data")
            results["baseline"] = measure(
                f"baseline {args.baseline} (python -m)", [sys.executable, "-m",
                                                          "corral_executor"],
                {**base_env, "PYTHONPATH": str(old / "executor")}, args.runs)
        results["installed"] = measure(
            "installed (python -m corral_executor)", [sys.executable, "-m", "corral_executor"],
            {**base_env, "PYTHONPATH": str(ROOT / "executor")}, args.runs)
        pyz = build().write(Path(tmp) / ARTIFACT_NAME)
        results["zipapp"] = measure(f"zipapp ({Path(sys.executable).name} -S)",
                                    [sys.executable, "-S", str(pyz)], base_env, args.runs)
        stock = shutil.which("python3", path="/usr/bin")
        if stock and os.path.realpath(stock) != os.path.realpath(sys.executable):
            results["stock"] = measure(f"zipapp ({stock} -S, as agents run it)",
                                       [stock, "-S", str(pyz)], base_env, args.runs)
        if "baseline" in results:
            for k in ("installed", "zipapp"):
                print(f"ratio {k}/baseline: {results[k] / results['baseline']:.2f}")


if __name__ == "__main__":
    main()
