"""The same Dask computation on a LocalCluster of N workers and as a Corral job with N
workers on localmesos: wall time, its ratio, and the time from submit to the first task.

Each run executes the unchanged Dask program ``corral_executor.samples.dask_features``
(``--partitions`` partitions, ``--delay`` seconds of simulated load work each):

(a) LocalCluster: N worker processes of 1 thread; the cluster is started first (its start
    time is printed apart), then the driver runs with ``DASK_SCHEDULER_ADDRESS`` set.
    "submit" is starting the driver.
(b) Corral: a ``kind: dask`` job with min = max = N workers of 1 cpu on localmesos (a
    scheduler with ``--no-elastic``, so both sides use N workers throughout). "submit" is
    the SubmitJob call; the job's wall time ends when the job is FINISHED.

"First task" is when the Dask scheduler first handed a task to a worker (the
``first_task_at`` Corral's scheduler plugin records), measured from submit. Prints each
run (the two sides interleaved), then the medians, the wall-time ratio Corral /
LocalCluster and the overhead Corral adds (seconds), and a JSON line with the figures.

    python bench/bench_dask.py [--workers 4] [--runs 3] [--partitions 120] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from corral.api.client import JobClient
from corral.core.spec import parse_job_spec
from corral.localcluster.procs import Child, start_localmesos, start_scheduler
from corral_executor import dask_runner

MEM_MB = 512


def driver_argv(out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "corral_executor.samples.dask_features", "--out", str(out),
            "--partitions", str(args.partitions), "--rows", str(args.rows),
            "--delay", f"{args.delay:g}"]


def local_run(args: argparse.Namespace, work: Path, i: int) -> dict[str, float]:
    from distributed import Client, LocalCluster

    t_start = time.time()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=f"{MEM_MB}MiB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        started = time.time() - t_start
        plugin = dask_runner._counts_plugin()
        client.register_plugin(plugin, name=plugin.name)
        env = dict(os.environ, DASK_SCHEDULER_ADDRESS=cluster.scheduler_address)
        t0 = time.time()
        subprocess.run(driver_argv(work / f"local-{i}", args), env=env, check=True,
                       capture_output=True, timeout=600)
        wall = time.time() - t0
        counts = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["corral-counts"].snapshot())
    return {"cluster_start": started, "wall": wall,
            "first_task": counts["first_task_at"] - t0}


def corral_run(client: JobClient, args: argparse.Namespace, work: Path,
               i: int) -> dict[str, float]:
    name = f"bench{uuid.uuid4().hex[:6]}"
    out = work / f"corral-{i}"
    driver = " ".join(shlex.quote(a) for a in driver_argv(out, args))
    n = args.workers
    spec = parse_job_spec({
        "kind": "dask", "role": "bench", "environment": "dask", "name": name,
        "master": {"cpus": 0.5, "mem": 512}, "driver": {"command": driver},
        "workers": {"cpus": 1, "mem": MEM_MB, "min": n, "max": n, "initial": n},
        "kill_grace_seconds": 2,
    })
    t0 = time.time()
    view = client.submit(spec, request_id=uuid.uuid4().hex)
    deadline = time.monotonic() + 600
    while not view.state.terminal and time.monotonic() < deadline:
        time.sleep(0.1)
        view = client.get(view.key)
    wall = time.time() - t0
    if view.state.value != "FINISHED":
        raise SystemExit(f"job {view.key} ended {view.state.value}: {view.message}")
    tid = f"corral.{view.key.replace('/', '.')}.master.1"
    (found,) = (work / "mesos").glob(f"agents/*/frameworks/*/executors/{tid}/runs/*/"
                                     "dask-counts.json")
    counts = json.loads(found.read_text())
    return {"wall": wall, "first_task": counts["first_task_at"] - t0}


def check(work: Path, a: str, b: str) -> None:
    r = subprocess.run([sys.executable, "-m", "corral_executor.samples.dask_features",
                        "compare", str(work / a), str(work / b)], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"results differ: {r.stdout}{r.stderr}")


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=120)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--delay", type=float, default=0.2)
    args = ap.parse_args()
    if min(args.workers, args.runs, args.partitions, args.rows) < 1:
        print("--workers, --runs, --partitions and --rows must be at least 1",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="corral-bench-dask-"))
    local: list[dict[str, float]] = []
    corral: list[dict[str, float]] = []
    children: list[Child] = []
    try:
        agents = math.ceil(args.workers / 3) + 1
        lm, url = start_localmesos(work / "mesos", work, agents=agents, cpus=4, mem=4096,
                                   allocation_interval=0.1)
        children.append(lm)
        sched, api = start_scheduler(url, work, extra=["--no-elastic"])
        children.append(sched)
        with JobClient(api, timeout=10) as client:
            # Interleaved, so both sides see the same load from whatever else runs here.
            for i in range(args.runs):
                local.append(local_run(args, work, i))
                print(f"LocalCluster run {i + 1}: " + ", ".join(
                    f"{k} {v:.2f}s" for k, v in local[-1].items()), flush=True)
                corral.append(corral_run(client, args, work, i))
                print(f"Corral run {i + 1}:       " + ", ".join(
                    f"{k} {v:.2f}s" for k, v in corral[-1].items())
                    + f" (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for c in reversed(children):
            c.stop(grace=10)
    for i in range(args.runs):
        check(work, f"local-{i}", f"corral-{i}")
    lw, cw = med(local, "wall"), med(corral, "wall")
    ls = med(local, "cluster_start")
    figures: dict[str, Any] = {
        "workers": args.workers, "partitions": args.partitions, "delay": args.delay,
        "runs": args.runs,
        "local_cluster_start_s": round(ls, 2), "local_wall_s": round(lw, 2),
        "local_first_task_s": round(med(local, "first_task"), 2),
        "corral_wall_s": round(cw, 2), "corral_first_task_s": round(med(corral, "first_task"), 2),
        "wall_ratio": round(cw / lw, 3), "wall_ratio_incl_cluster_start": round(cw / (lw + ls), 3),
        "overhead_s": round(cw - lw, 2),
    }
    print()
    print(f"median of {args.runs} runs, {args.workers} workers, {args.partitions} partitions "
          f"x {args.delay:g}s (results identical on both sides)")
    print(f"  LocalCluster: wall {lw:.2f}s (cluster start {ls:.2f}s before it), "
          f"submit -> first task {figures['local_first_task_s']:.2f}s")
    print(f"  Corral:       wall {cw:.2f}s (from submit, everything started for the job), "
          f"submit -> first task {figures['corral_first_task_s']:.2f}s")
    print(f"  ratio Corral / LocalCluster: {figures['wall_ratio']:.2f} "
          f"({figures['wall_ratio_incl_cluster_start']:.2f} counting the LocalCluster's "
          f"start); Corral adds {figures['overhead_s']:.2f}s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
