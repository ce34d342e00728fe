"""Benchmark localmesos: 100 agents, 5,000 short command tasks from one raw-HTTP framework.

Prints offers/s, launches/s and status updates/s (sustained over the run, and the peak
one-second rate), wall time and peak RSS of this process (master + agents; the task
processes themselves are separate). Run: ``python bench/bench_localmesos.py [--tasks N]
[--agents N]``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import resource
import time
from collections import Counter

import aiohttp

from corral.localmesos import LocalMesos, LocalMesosConfig
from corral_executor.recordio import Decoder


async def run(n_agents: int, n_tasks: int, per_offer: int) -> None:
    lm = LocalMesos(LocalMesosConfig(port=0, agents=n_agents, cpus=4, mem=4096,
                                     allocation_interval=0.05, heartbeat_interval=5,
                                     ports="31000-31999"))
    await lm.start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
    url = lm.master_url + "/api/v1/scheduler"
    hdr = {"Content-Type": "application/json"}
    per_sec: dict[str, Counter[int]] = {k: Counter() for k in ("offers", "launches", "updates")}
    launched = 0
    done: set[str] = set()
    errors = 0
    t0 = time.monotonic()
    try:
        sub = await session.post(url, data=json.dumps({"type": "SUBSCRIBE", "subscribe": {
            # An existing user: as root, localmesos runs tasks as the framework's user.
            "framework_info": {"user": getpass.getuser(), "name": "bench"}}}), headers=hdr)
        hdr["Mesos-Stream-Id"] = sub.headers["Mesos-Stream-Id"]
        dec = Decoder()
        fid = None
        pending: set[asyncio.Task[object]] = set()

        async def call(body: dict) -> None:
            body["framework_id"] = {"value": fid}
            async with session.post(url, data=json.dumps(body), headers=hdr) as r:
                await r.read()

        def spawn(body: dict) -> None:
            t = asyncio.ensure_future(call(body))
            pending.add(t)
            t.add_done_callback(pending.discard)

        async for chunk in sub.content.iter_any():
            for rec in dec.feed(chunk):
                ev = json.loads(rec)
                sec = int(time.monotonic() - t0)
                if ev["type"] == "SUBSCRIBED":
                    fid = ev["subscribed"]["framework_id"]["value"]
                elif ev["type"] == "OFFERS":
                    for o in ev["offers"]["offers"]:
                        per_sec["offers"][sec] += 1
                        cpus = sum(r["scalar"]["value"] for r in o["resources"]
                                   if r["name"] == "cpus")
                        mem = sum(r["scalar"]["value"] for r in o["resources"]
                                  if r["name"] == "mem")
                        fit = int(min(cpus / 0.1 + 1e-6, mem / 32 + 1e-6))
                        k = max(0, min(per_offer, n_tasks - launched, fit))
                        tasks = [{"name": "b", "task_id": {"value": f"t{launched + i}"},
                                  "agent_id": o["agent_id"], "command": {"value": "true"},
                                  "resources": [{"name": "cpus", "type": "SCALAR",
                                                 "scalar": {"value": 0.1}},
                                                {"name": "mem", "type": "SCALAR",
                                                 "scalar": {"value": 32}}]}
                                 for i in range(k)]
                        launched += k
                        per_sec["launches"][sec] += k
                        spawn({"type": "ACCEPT", "accept": {
                            "offer_ids": [o["id"]], "filters": {"refuse_seconds": 0},
                            "operations": [{"type": "LAUNCH",
                                            "launch": {"task_infos": tasks}}] if k else []}})
                elif ev["type"] == "UPDATE":
                    st = ev["update"]["status"]
                    per_sec["updates"][sec] += 1
                    if "uuid" in st:
                        spawn({"type": "ACKNOWLEDGE", "acknowledge": {
                            "agent_id": st["agent_id"], "task_id": st["task_id"],
                            "uuid": st["uuid"]}})
                    if st["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_LOST"):
                        errors += 1
                    if st["state"] in ("TASK_FINISHED", "TASK_FAILED", "TASK_ERROR",
                                       "TASK_LOST"):
                        done.add(st["task_id"]["value"])
            if len(done) >= n_tasks:
                break
        wall = time.monotonic() - t0
        await asyncio.gather(*pending, return_exceptions=True)
        sub.close()
    finally:
        await session.close()
        await lm.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"agents={n_agents} tasks={n_tasks} terminal={len(done)} "
          f"failed/error/lost={errors} wall={wall:.1f}s")
    for k, c in per_sec.items():
        total = sum(c.values())
        print(f"{k:9s} total={total:6d} sustained={total / wall:8.1f}/s "
              f"peak={max(c.values(), default=0):6d}/s")
    print(f"peak RSS (localmesos process) = {rss_mb:.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--per-offer", type=int, default=4)
    a = p.parse_args()
    asyncio.run(run(a.agents, a.tasks, a.per_offer))


if __name__ == "__main__":
    main()
