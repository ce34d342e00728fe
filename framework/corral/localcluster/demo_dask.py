"""``corral demo --kind dask``: an unchanged Dask program as a Corral job, end to end.

It starts ``localmesos`` and a scheduler whose elastic policy reacts within seconds,
submits ``corral_executor.samples.dask_features`` as a ``kind: dask`` job that starts
with one worker, shows the job growing on Dask's backlog and shrinking after (with the
reason ``corral status`` gives), checks the result against the same program run with
pandas in this process, prints a summary and stops everything it started. The helpers
shared with the scoring demo (argument parsing, work directory, children) are in
``corral.localcluster.demo``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from corral.core.spec import parse_job_spec
from corral.core.views import JobView
from corral.localcluster.procs import Child, ChildFailed, start_localmesos, start_scheduler

PY = shlex.quote(sys.executable)
FEATURES = f"{PY} -m corral_executor.samples.dask_features"
# A policy a person can watch: a pass a second, no cooldowns, Dask's count taken as is.
POLICY = "interval_s: 1\npolicy: {cooldown_up_s: 0, cooldown_down_s: 3, hysteresis: 0}\n"


def job_spec(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    driver = (f"{FEATURES} --out {shlex.quote(str(out))} --partitions {args.chunks} "
              f"--rows {args.rows} --delay {args.delay:g} --linger 6")
    return {
        "kind": "dask", "role": "demo", "environment": "local",
        "name": f"features-{uuid.uuid4().hex[:6]}", "tier": "preemptible",
        "master": {"cpus": 0.5, "mem": 512},
        "driver": {"command": driver},
        "workers": {"cpus": 1, "mem": 512, "min": 1, "max": max(args.workers, 1),
                    "initial": 1},
        "constraints": {"spread_over": "market"},
        "kill_grace_seconds": 5,
    }


def _running(v: JobView) -> int:
    return sum(1 for t in v.tasks if t.slot.startswith("worker") and t.state == "TASK_RUNNING")


def _line(v: JobView) -> str:
    p = v.progress
    return (f"{v.state.value:<8} {p.done:>5}/{p.total or '?':<5} Dask tasks, workers "
            f"{_running(v)}/{v.desired_workers}  {v.target_reason}")


def run(args: argparse.Namespace, work: Path, logs: Path, children: list[Child]) -> int:
    from corral.api.client import ApiError, JobClient

    out, local = work / "out", work / "local"
    try:
        policy = work / "policy.yaml"
        policy.write_text(POLICY)
        spot = min(args.spot, args.agents)
        lm, master_url = start_localmesos(work / "mesos", logs, agents=args.agents,
                                          spot=spot, cpus=4, mem=4096)
        children.append(lm)
        print(f"corral demo: localmesos at {master_url} "
              f"({args.agents - spot} on-demand + {spot} spot agents)")
        sched, api = start_scheduler(master_url, logs, extra=["--policy", str(policy)])
        children.append(sched)
        print(f"corral demo: scheduler API at {api}")
        spec = parse_job_spec(job_spec(args, out))
        t0 = time.monotonic()
        peak = 0
        with JobClient(api, timeout=10) as client:
            view = client.submit(spec, request_id=uuid.uuid4().hex)
            print(f"corral demo: submitted {view.key}: a Dask scheduler and driver, 1..."
                  f"{args.workers} Dask workers")
            deadline = time.monotonic() + args.timeout
            final, shown, shown_at = view, None, 0.0
            for v in client.watch(view.key):
                final = v
                peak = max(peak, v.desired_workers)
                # A line when the size or state changes, else at most every 2 s.
                key = (v.state, _running(v), v.desired_workers)
                if key != shown or time.monotonic() - shown_at >= 2:
                    print(_line(v), flush=True)
                    shown, shown_at = key, time.monotonic()
                if time.monotonic() > deadline:
                    break
            if not final.state.terminal:
                print(f"corral demo: job not finished after {args.timeout:g}s; killing it")
                client.kill(view.key)
                return 1
        wall = time.monotonic() - t0
        return _summary(final, args, out, local, wall, peak, logs)
    except (ChildFailed, ApiError) as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2


def _summary(v: JobView, args: argparse.Namespace, out: Path, local: Path, wall: float,
             peak: int, logs: Path) -> int:
    mod = [sys.executable, "-m", "corral_executor.samples.dask_features"]
    subprocess.run([*mod, "--local", "--out", str(local), "--partitions", str(args.chunks),
                    "--rows", str(args.rows)], check=True, capture_output=True, timeout=300)
    check = subprocess.run([*mod, "compare", str(local), str(out)], capture_output=True,
                           text=True, timeout=60)
    from corral.localcluster.demo import print_summary

    return print_summary(v, wall, check, logs, [
        ("workers", f"1 at first, {peak} at most (Dask's adaptive target)"),
        ("Dask tasks", f"{v.progress.done} computed, {v.progress.rerun} recomputed"),
    ])
