"""Benchmark spot loss: recovery time, work lost per loss, job time with K terminations.

Real processes: localmesos (``--agents`` agents, most of them spot, 1 s agent health
timeout, 0.1 s allocation) and one ``corral scheduler``. The batch-scoring sample runs
``--runs`` times in each of three scenarios:

    none      no faults (the baseline job time)
    abrupt    K spot agents hosting a worker are terminated with no notice
    notice    K spot agents hosting a worker get a ``--notice`` second maintenance
              window (a spot notice scaled down from two minutes), then are killed

After each termination a fresh spot agent is added, so capacity stays the same. Figures
come from the job's own accounting (``JobView.resilience``): recovery time is loss
detected → replacement RUNNING; work lost is the task time since the lost attempt's last
checkpoint. As a cross-check the master's re-run chunk count x the chunk time is printed
(work the job really did twice). Targets: with notice zero redone work; without notice at
most one checkpoint interval per lost worker; replacement RUNNING within 2 s.

    python bench/bench_spot.py [--runs 3] [--k 3] [--chunks 80] [--delay 0.5]
                               [--workers 4] [--notice 4] [--checkpoint 1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.api.client import JobClient  # noqa: E402
from corral.core.spec import parse_job_spec  # noqa: E402
from corral.core.views import JobState, JobView  # noqa: E402
from corral.localcluster.procs import start_localmesos, start_scheduler  # noqa: E402
from corral.localmesos import control  # noqa: E402

PY = shlex.quote(sys.executable)
SCORING = f"{PY} -m corral_executor.samples.scoring"


def agent_rows(url: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in control.agents(url)}


def spec_for(work: Path, data: Path, name: str, a: argparse.Namespace) -> tuple[dict, Path]:
    out = work / "out" / name
    io = f"--data {shlex.quote(str(data))} --out {shlex.quote(str(out))}"
    return {
        "role": "bench", "environment": "spot", "name": name,
        "master": {"command": f"{SCORING} master {io} --host 127.0.0.1 --lease-seconds 3 "
                              f"--checkpoint-interval {a.checkpoint}",
                   "cpus": 0.5, "mem": 128, "ports": 1},
        "workers": {"command": f"{SCORING} worker {io} --chunk-delay {a.delay} "
                               "--give-up-seconds 60",
                    "cpus": 0.5, "mem": 128, "min": 1, "max": a.workers,
                    "initial": a.workers},
        "checkpoint": {"uri": (work / "ckpt" / name).as_uri(),
                       "interval_seconds": a.checkpoint},
        "kill_grace_seconds": 2,
    }, out


def victim(url: str, view: JobView) -> str | None:
    """A live spot agent running one of the job's workers but not its master."""
    rows = agent_rows(url)
    master = next((t.agent_id for t in view.tasks if t.slot == "master"), None)
    for t in view.tasks:
        a = t.agent_id
        if (t.slot.startswith("worker") and t.state == "TASK_RUNNING" and a and a != master
                and rows.get(a, {}).get("alive") and not rows[a].get("unavailability")
                and rows[a].get("attributes", {}).get("market") == "spot"):
            return a
    return None


def run_once(url: str, api: str, work: Path, data: Path, scenario: str,
             a: argparse.Namespace) -> dict[str, Any]:
    name = f"{scenario}-{uuid.uuid4().hex[:6]}"
    spec, out = spec_for(work, data, name, a)
    started = time.monotonic()
    hits = 0
    with JobClient(api, timeout=10) as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        next_at = a.chunks / (a.k + 1)
        view = c.get(key)
        deadline = time.monotonic() + 600
        while not view.state.terminal and time.monotonic() < deadline:
            due = scenario != "none" and hits < a.k and \
                view.progress.done >= next_at * (hits + 1)
            # One termination at a time: the previous loss has recovered first.
            if due and all(x.recovered_at for x in view.resilience.recent):
                agent = victim(url, view)
                if agent is None and a.verbose:
                    print(f"  no victim among {[(t.slot, t.state, t.agent_id) for t in view.tasks]}"
                          f" {agent_rows(url)}", flush=True)
                if agent is not None:
                    control.terminate(url, agent, a.notice if scenario == "notice" else None)
                    control.add_agent(url, spot=True)
                    hits += 1
            time.sleep(0.1)
            view = c.get(key)
    took = time.monotonic() - started
    summary = json.loads((out / "_SUCCESS").read_text()) if (out / "_SUCCESS").exists() else {}
    ok = subprocess.run([sys.executable, "-m", "corral_executor.samples.scoring", "verify",
                         "--data", str(data), "--out", str(out)],
                        capture_output=True, text=True, timeout=120).returncode == 0
    r = view.resilience
    return {"scenario": scenario, "state": view.state.value, "seconds": took, "hits": hits,
            "verified": ok, "losses": list(r.recent), "reruns": summary.get("reruns", 0),
            "finished": view.state is JobState.FINISHED}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--k", type=int, default=3, help="terminations per faulty run")
    p.add_argument("--chunks", type=int, default=80)
    p.add_argument("--delay", type=float, default=0.5, help="seconds per chunk")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--notice", type=float, default=4.0)
    p.add_argument("--checkpoint", type=float, default=1.0, help="checkpoint interval (s)")
    p.add_argument("--agents", type=int, default=6)
    p.add_argument("--scenarios", default="none,abrupt,notice")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-spot-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        data = work / "data"
        subprocess.run([sys.executable, "-m", "corral_executor.samples.scoring", "make-data",
                        "--data", str(data), "--chunks", str(a.chunks), "--rows", "500",
                        "--features", "16", "--seed", "3"], check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
        lm, url = start_localmesos(work / "mesos", logs, agents=a.agents, spot=a.agents - 1,
                                   cpus=4, mem=4096, allocation_interval=0.1,
                                   extra=["--agent-health-timeout", "1"])
        sched = None
        results: dict[str, list[dict[str, Any]]] = {
            name: [] for name in a.scenarios.split(",") if name}
        if "none" not in results:
            results = {"none": [], **results}
        try:
            sched, api = start_scheduler(url, logs)
            for i in range(a.runs):
                for scenario in results:
                    r = run_once(url, api, work, data, scenario, a)
                    results[scenario].append(r)
                    print(f"run {i + 1} {scenario:<6} {r['state']:<8} {r['seconds']:6.1f}s "
                          f"terminations {r['hits']} losses {len(r['losses'])} "
                          f"reruns {r['reruns']} verified {r['verified']}", flush=True)
        finally:
            if sched is not None:
                sched.stop(grace=10)
            lm.stop(grace=15)
    report(results, a)
    return 0


def report(results: dict[str, list[dict[str, Any]]], a: argparse.Namespace) -> None:
    base = statistics.median(r["seconds"] for r in results["none"])
    print(f"\nsample job: {a.chunks} chunks x {a.delay:g}s on {a.workers} workers; "
          f"checkpoint interval {a.checkpoint:g}s; notice {a.notice:g}s; K={a.k}")
    print(f"{'scenario':<8} {'job time p50':>12} {'vs none':>8} {'losses':>7} "
          f"{'recovery p50':>13} {'p99':>6} {'max':>6} {'work lost/loss':>15} "
          f"{'max':>6} {'reruns x chunk':>15} {'all verified':>13}")
    for scenario, runs in results.items():
        secs = statistics.median(r["seconds"] for r in runs)
        losses = [x for r in runs for x in r["losses"]]
        rec = [x.recovery_seconds for x in losses if x.recovery_seconds is not None]
        lost = [x.work_lost_seconds for x in losses]
        per_loss = statistics.mean(lost) if lost else 0.0
        reruns = statistics.mean(r["reruns"] for r in runs) * a.delay
        print(f"{scenario:<8} {secs:11.1f}s {secs / base:7.2f}x {len(losses):7d} "
              f"{pct(rec, 0.5):12.2f}s {pct(rec, 0.99):5.2f}s {max(rec, default=0):5.2f}s "
              f"{per_loss:14.2f}s {max(lost, default=0):5.2f}s {reruns:14.1f}s "
              f"{all(r['verified'] and r['finished'] for r in runs)!s:>13}")
    print("targets: recovery <= 2 s; work lost with notice 0; without notice "
          f"<= {a.checkpoint:g}s (one checkpoint interval) per lost worker")


if __name__ == "__main__":
    raise SystemExit(main())
