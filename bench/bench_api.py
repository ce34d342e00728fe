"""The API under watch load: submit latency and event-loop lag with 1,000 WatchJob streams.

Starts a real localmesos (one agent, in a child process) and, in this process, a real
scheduler (``SchedulerService`` + the gRPC API) whose event loop carries a lag probe (a
20 ms sleep; lag = how late it wakes). A client process then

1. submits ``--watchers`` jobs that can never be placed (they stay PENDING, so no task
   processes run and only the API and the core are measured),
2. opens one WatchJob stream on each of them (the "watchers" run only) and waits until
   every stream has delivered its first view,
3. submits ``--jobs`` more such jobs, all at once, each with a ``--deadline`` second
   deadline, and reports each submit's latency (failed submits are counted apart by
   status code: DEADLINE_EXCEEDED, or CANCELLED when a call waited longer than gRPC's
   30 s ``server_max_unrequested_time_in_server`` for a busy event loop to take it up).

The same is done twice with a fresh scheduler: without watchers, then with. Printed: per
run the submit p50/p99/max and timeouts, the loop lag p50/p99/max during the submits; then
the with/without ratios (the issue's goal: <= 1.5x).

    python bench/bench_api.py [--watchers 1000] [--jobs 1000] [--deadline 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from corral.api.convert import spec_to_proto
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.gen.corral.v1 import jobs_pb2_grpc as pb_grpc
from corral.api.server import start_api_server
from corral.core.spec import parse_job_spec
from corral.localcluster.procs import start_localmesos
from corral.runtime.service import RuntimeConfig, SchedulerService

PROBE_SECONDS = 0.02
CHANNELS = 10  # client channels the streams and submits are spread over


def unplaceable(name: str) -> pb.JobSpec:
    return spec_to_proto(parse_job_spec({
        "role": "bench", "environment": "api", "name": name,
        "master": {"command": "true", "cpus": 0.1, "mem": 32},
        "workers": {"command": "true", "cpus": 0.1, "mem": 32, "min": 0, "max": 1,
                    "initial": 0},
        "constraints": {"attributes": {"zone": "nowhere"}},
    }))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ------------------------------------------------------------------ the client process


async def client_main(address: str, watchers: int, watch: bool, jobs: int,
                      deadline: float) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [pb_grpc.JobServiceStub(c) for c in channels]

    async def submit(i: int, name: str, timeout: float) -> float | str:
        t0 = time.monotonic()
        try:
            await stubs[i % CHANNELS].SubmitJob(
                pb.SubmitJobRequest(request_id=name, spec=unplaceable(name)), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            return e.code().name
        return time.monotonic() - t0

    # 1. The jobs to watch (in batches, so seeding is not itself the test).
    for start in range(0, watchers, 100):
        await asyncio.gather(*(submit(i, f"watched-{i}", 120)
                               for i in range(start, min(watchers, start + 100))))
    streams: list[Any] = []
    first = asyncio.Event()
    got_first = 0

    async def follow(i: int) -> None:
        nonlocal got_first
        call = stubs[i % CHANNELS].WatchJob(pb.WatchJobRequest(key=f"bench/api/watched-{i}"))
        streams.append(call)
        try:
            async for _ in call:
                got_first += 1
                if got_first == watchers:
                    first.set()
                break
            async for _ in call:  # keep consuming every update until cancelled
                pass
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass

    tasks = []
    if watch:
        tasks = [asyncio.ensure_future(follow(i)) for i in range(watchers)]
        await asyncio.wait_for(first.wait(), 300)
    # 3. The measured submits, all at once.
    t_start = time.time()
    results = await asyncio.gather(*(submit(i, f"new-{i}", deadline) for i in range(jobs)))
    t_end = time.time()
    for t in tasks:
        t.cancel()
    for c in streams:
        c.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()
    lat = [r for r in results if isinstance(r, float)]
    errors: dict[str, int] = {}
    for r in results:
        if isinstance(r, str):
            errors[r] = errors.get(r, 0) + 1
    return {"t_start": t_start, "t_end": t_end, "latencies": lat, "errors": errors}


# ------------------------------------------------------------------ the scheduler side


async def one_run(master: str, watchers: int, watch: bool, jobs: int, deadline: float
                  ) -> dict[str, Any]:
    config = RuntimeConfig(master=master, framework_name=f"bench-api-{int(watch)}",
                           failover_timeout=1.0, elastic=False)
    service = SchedulerService(config)
    await service.start()
    server, port = await start_api_server(service, "127.0.0.1:0")
    lags: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(PROBE_SECONDS)
            lags.append((time.time(), time.monotonic() - t0 - PROBE_SECONDS))

    probing = asyncio.ensure_future(probe())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", f"127.0.0.1:{port}",
            "--watchers", str(watchers), "--jobs", str(jobs), "--deadline", str(deadline),
            *(["--watch"] if watch else []), stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 900)
        if proc.returncode != 0:
            raise SystemExit(f"client process failed with {proc.returncode}")
        result = json.loads(out)
    finally:
        stop.set()
        await probing
        await server.stop(0)
        await service.stop()
    result["lags"] = [lag for when, lag in lags if result["t_start"] <= when <= result["t_end"]]
    return result


def show(label: str, r: dict[str, Any]) -> None:
    lat, lags = r["latencies"], r["lags"]
    print(f"{label:>12}: submit p50 {pct(lat, .5) * 1000:8.1f} ms  p99 "
          f"{pct(lat, .99) * 1000:8.1f} ms  max {max(lat, default=0) * 1000:8.1f} ms  "
          f"ok {len(lat)}  errors {r['errors'] or 'none'}  | loop lag p50 "
          f"{pct(lags, .5) * 1000:6.1f} ms  p99 {pct(lags, .99) * 1000:7.1f} ms  "
          f"max {max(lags, default=0) * 1000:7.1f} ms  | submits took "
          f"{r['t_end'] - r['t_start']:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--deadline", type=float, default=60.0,
                    help="seconds each measured submit may take")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client_main(args.client, args.watchers, args.watch,
                                                 args.jobs, args.deadline))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        lm, master = start_localmesos(work / "lm", work / "logs", agents=1)
        try:
            base = asyncio.run(one_run(master, args.watchers, False, args.jobs, args.deadline))
            loaded = asyncio.run(one_run(master, args.watchers, True, args.jobs, args.deadline))
        finally:
            lm.stop()
    print(f"{args.jobs} submits at once, {args.watchers} jobs in the core; "
          f"{args.watchers} WatchJob streams in the second run")
    show("no watchers", base)
    show("watchers", loaded)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b > 0 else "n/a"

    lb, ll = base["latencies"], loaded["latencies"]
    print(f"ratio with/without watchers: submit p50 {ratio(pct(ll, .5), pct(lb, .5))}, "
          f"p99 {ratio(pct(ll, .99), pct(lb, .99))}; loop lag p99 "
          f"{ratio(pct(loaded['lags'], .99), pct(base['lags'], .99))} "
          f"(target <= 1.5x); failed submits {sum(loaded['errors'].values())} vs "
          f"{sum(base['errors'].values())} (latencies are of the successful ones)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
