"""End-to-end launch latency: submit a 1 + 50 worker job on localmesos until all RUNNING.

Starts a real localmesos (10 agents) and a real ``corral scheduler``, then for each run
submits a job whose master and 50 workers each run ``sleep`` under Corral's executor, and
measures submit → master RUNNING, → first worker RUNNING, → all 51 RUNNING by polling the
gRPC API every 50 ms. Prints per-run figures and the median; kills each job before the next.

    python bench/bench_e2e.py [--runs 3] [--workers 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from corral.api.client import JobClient
from corral.core.spec import parse_job_spec
from corral.localcluster.procs import Child, start_localmesos, start_scheduler


def one_run(client: JobClient, workers: int) -> dict[str, float]:
    name = f"bench{uuid.uuid4().hex[:6]}"
    spec = parse_job_spec({
        "role": "bench", "environment": "e2e", "name": name,
        "master": {"command": "sleep 300", "cpus": 0.2, "mem": 64, "ports": 1},
        "workers": {"command": "sleep 300", "cpus": 0.2, "mem": 64,
                    "min": workers, "max": workers, "initial": workers},
        "kill_grace_seconds": 1,
    })
    t0 = time.monotonic()
    view = client.submit(spec, request_id=uuid.uuid4().hex)
    marks: dict[str, float] = {}
    deadline = t0 + 180
    while time.monotonic() < deadline:
        view = client.get(view.key)
        running = {t.slot for t in view.tasks if t.state == "TASK_RUNNING"}
        now = time.monotonic() - t0
        if "master" in running:
            marks.setdefault("master_running", now)
        if len(running - {"master"}) >= 1:
            marks.setdefault("first_worker_running", now)
        if len(running) == workers + 1:
            marks["all_running"] = now
            break
        time.sleep(0.05)
    client.kill(view.key)
    end = time.monotonic() + 60
    while time.monotonic() < end and not client.get(view.key).state.terminal:
        time.sleep(0.2)
    return marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-e2e-"))
    lm, url = start_localmesos(work / "mesos", work, agents=10, cpus=8, mem=16384,
                               extra=["--quiet"])
    sched: Child | None = None
    try:
        sched, api = start_scheduler(url, work, extra=["--log-level", "WARNING"])
        results = []
        with JobClient(api, timeout=10) as client:
            for i in range(args.runs):
                marks = one_run(client, args.workers)
                results.append(marks)
                print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in marks.items()),
                      flush=True)
        print(f"\n1 master + {args.workers} workers, 10 agents, allocation interval 0.2 s, "
              f"{args.runs} runs (median):")
        for key in ("master_running", "first_worker_running", "all_running"):
            vals = [r[key] for r in results if key in r]
            if vals:
                print(f"  submit -> {key:<22} {statistics.median(vals):6.2f} s "
                      f"(min {min(vals):.2f}, max {max(vals):.2f})")
            else:
                print(f"  submit -> {key:<22} not reached")
        return 0
    finally:
        if sched is not None:
            sched.stop(grace=10)
        lm.stop(grace=20)


if __name__ == "__main__":
    sys.exit(main())
