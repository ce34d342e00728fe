"""Benchmark scheduler failover: SIGKILL and SIGTERM of the leader, and a large reload.

Part 1 (real processes): a private ZooKeeper, localmesos (3 agents) and two ``corral
scheduler --zk`` replicas with a ZooKeeper session timeout of ``--session`` seconds. A few
long-running jobs run. Each round scales one job up by one worker through the leader (so
there is something new to place), then kills the leader (SIGKILL rounds, then SIGTERM
rounds) and reads the new leader's log for the time from the kill to

    subscribed     the new leader's SUBSCRIBED from Mesos
    reconciled     its explicit reconciliation answered (it then places again)
    placement      its first LAUNCH

then starts a replacement replica so two always run. A watcher polls localmesos every
50 ms for live master tasks per job (a duplicate is two at once); at the end every job
must still exist, not failed, with its master running.

Part 2 (in-process): 1,000 jobs with 20,000 tasks in ZooKeeper; time a new leader's load
and validate, the restore into a fresh core, and the core's handling of the 20,000
reconciliation answers.

    python bench/bench_failover.py [--kills 20] [--handovers 20] [--session 4] [--jobs 1000]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.api.client import ApiError, JobClient  # noqa: E402
from corral.core import events as ev  # noqa: E402
from corral.core.intent import JobIntent, TaskIntent, restore  # noqa: E402
from corral.core.job_state import JobPhase  # noqa: E402
from corral.core.scheduler import Scheduler  # noqa: E402
from corral.core.spec import parse_job_spec  # noqa: E402
from corral.core.views import JobState  # noqa: E402
from corral.procs import Child, start_localmesos, start_scheduler  # noqa: E402
from corral.runtime.persist import intents_from  # noqa: E402
from corral.store import (  # noqa: E402
    Batch,
    Elected,
    LeaderElection,
    StateStore,
    close,
    connect,
)
from tests.zk import ZooKeeperServer  # noqa: E402

LIVE = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"}
MARKS = {"subscribed": "subscribed as framework", "reconciled": "reconciliation finished",
         "placement": "launching "}
T_RE = re.compile(r" t=(\d+\.\d+)")


class MasterWatch(threading.Thread):
    """Most live master tasks any job had at once, from localmesos /state."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url.rstrip("/") + "/state"
        self.worst: dict[str, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    state = json.load(r)
            except (OSError, ValueError):
                continue
            n: Counter[str] = Counter()
            for fw in state.get("frameworks", []):
                for t in fw.get("tasks", []):
                    p = t["id"].split(".")
                    if len(p) == 6 and p[4] == "master" and t["state"] in LIVE:
                        n[p[3]] += 1
            for job, c in n.items():
                self.worst[job] = max(self.worst.get(job, 0), c)


def job_spec(i: int) -> dict[str, object]:
    return {"role": "bench", "environment": "ha", "name": f"job{i}",
            "master": {"command": "sleep 3600", "cpus": 0.05, "mem": 16},
            "workers": {"command": "sleep 3600", "cpus": 0.05, "mem": 16, "min": 0,
                        "max": 60, "initial": 1},
            "kill_grace_seconds": 0.5}


def leader(apis: list[str]) -> str | None:
    for api in apis:
        try:
            with JobClient(api, timeout=1) as c:
                return c.leader()
        except ApiError:
            continue
    return None


def marks_after(log: Path, since: float, timeout: float) -> dict[str, float]:
    """The first t= of each mark in ``log`` later than ``since`` (waits for all)."""
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while time.monotonic() < deadline and len(found) < len(MARKS):
        for line in log.read_text(errors="replace").splitlines():
            m = T_RE.search(line)
            if not m or float(m.group(1)) < since:
                continue
            for name, text in MARKS.items():
                if name not in found and text in line:
                    found[name] = float(m.group(1))
        time.sleep(0.02)
    return found


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(title: str, rows: list[dict[str, float]], target: str) -> None:
    print(f"\n{title} ({len(rows)} rounds; target: {target})")
    print(f"  {'kill ->':<14}{'p50':>8}{'p99':>8}{'max':>8}   (seconds)")
    for name in MARKS:
        xs = [r[name] for r in rows if name in r]
        if xs:
            print(f"  {name:<14}{statistics.median(xs):8.3f}{pct(xs, 0.99):8.3f}"
                  f"{max(xs):8.3f}   n={len(xs)}")


def failovers(args: argparse.Namespace, tmp: Path, zk: ZooKeeperServer) -> None:
    logs = tmp / "logs"
    logs.mkdir()
    lm, url = start_localmesos(tmp / "mesos", logs, agents=3, cpus=8, mem=8192,
                               allocation_interval=0.1)
    zk_url = f"zk://{zk.hosts}/bench-{uuid.uuid4().hex[:6]}"
    replicas: dict[str, tuple[Child, str]] = {}
    serial = 0

    def add() -> None:
        nonlocal serial
        name = f"r{serial}"
        serial += 1
        replicas[name] = start_scheduler(url, logs, name=name, extra=[
            "--zk", zk_url, "--identity", name, "--zk-session-timeout", str(args.session),
            "--failover-timeout", "600", "--log-level", "INFO"])

    watch = MasterWatch(url)
    watch.start()
    try:
        add()
        time.sleep(0.5)
        add()
        apis = [a for _, a in replicas.values()]
        lead = leader(apis)
        assert lead
        keys = []
        with JobClient(lead, timeout=10) as c:
            for i in range(args.live_jobs):
                keys.append(c.submit(parse_job_spec(job_spec(i)), f"bench-{i}").key)
        time.sleep(2.0)
        results: dict[str, list[dict[str, float]]] = {"SIGKILL": [], "SIGTERM": []}
        plan = ["SIGKILL"] * args.kills + ["SIGTERM"] * args.handovers
        for rnd, how in enumerate(plan):
            apis = [a for _, a in replicas.values()]
            lead = leader(apis)
            name = next(n for n, (_, a) in replicas.items() if a == lead)
            key = keys[rnd % len(keys)]
            with JobClient(lead, timeout=10) as c:
                c.scale(key, c.get(key).desired_workers + 1)
            child, _ = replicas.pop(name)
            t_kill = time.time()
            if how == "SIGKILL":
                child.signal(signal.SIGKILL)
            else:
                child.signal(signal.SIGTERM)
            (other,) = replicas
            marks = marks_after(logs / f"{other}.log", t_kill, timeout=args.session + 20)
            results[how].append({k: v - t_kill for k, v in marks.items()})
            child.stop(grace=5)
            print(f"round {rnd + 1:2d} {how}: " + ", ".join(
                f"{k} {v - t_kill:.3f}s" for k, v in marks.items()), flush=True)
            add()
            time.sleep(0.3)
        time.sleep(1.0)
        apis = [a for _, a in replicas.values()]
        lead = leader(apis)
        lost = 0
        with JobClient(lead or apis[0], timeout=10) as c:
            for key in keys:
                v = c.get(key)
                if v.state is not JobState.RUNNING:
                    lost += 1
        report("SIGKILL of the leader", results["SIGKILL"],
               f"p99 within session timeout + 1 s = {args.session + 1:g} s")
        report("SIGTERM hand-over", results["SIGTERM"], "under 1 s")
        dup = {k: v for k, v in watch.worst.items() if v > 1}
        print(f"\nduplicate master tasks: {len(dup)} jobs {dup or ''}")
        print(f"lost jobs (not RUNNING at the end): {lost} of {len(keys)}")
    finally:
        watch.halt.set()
        for child, _ in replicas.values():
            child.stop(grace=10)
        lm.stop(grace=15)


def big_reload(args: argparse.Namespace, zk: ZooKeeperServer) -> None:
    per_job = args.tasks // args.jobs
    client, address = connect(f"zk://{zk.hosts}/bench-big-{uuid.uuid4().hex[:6]}")
    election = LeaderElection(client, address.path, "bench")
    try:
        election.join()
        e = election.events.get(timeout=10)
        assert isinstance(e, Elected)
        store = StateStore(client, address.path)
        store.adopt(e.fence)
        store.load()
        batch = Batch().set_framework_id("bench-fw")
        for j in range(args.jobs):
            spec = parse_job_spec(job_spec(j) | {"name": f"big{j}"})
            tasks = [TaskIntent(f"corral.bench.ha.big{j}.master.1", f"S{j % 50}")]
            tasks += [TaskIntent(f"corral.bench.ha.big{j}.worker-{i}.1", f"S{(j + i) % 50}")
                      for i in range(per_job - 1)]
            batch.put_job(JobIntent(spec, f"r{j}", per_job - 1, JobPhase.RUNNING,
                                    tasks=tuple(tasks), progress={"master": 3}))
        store.write(batch)
        loads, restores, recons = [], [], []
        for _ in range(args.runs):
            fresh = StateStore(client, address.path)
            fresh.adopt(e.fence)
            t0 = time.perf_counter()
            state = fresh.load()
            t1 = time.perf_counter()
            core = Scheduler()
            n = restore(core, state.framework_id, intents_from(state), now=1.0)
            t2 = time.perf_counter()
            core.handle(ev.Subscribed("bench-fw"), 1.0)
            for tid, agent in core.task_ids_to_reconcile():
                core.handle(ev.StatusUpdate(tid, "TASK_RUNNING", agent, uuid="u"), 2.0)
            t3 = time.perf_counter()
            assert n == args.jobs * per_job
            assert all(core.view(k).state is JobState.RUNNING for k in core.job_keys()[:10])
            loads.append(t1 - t0)
            restores.append(t2 - t1)
            recons.append(t3 - t2)
        med = statistics.median
        print(f"\nreload {args.jobs} jobs / {args.jobs * per_job} tasks "
              f"(median of {args.runs}):")
        print(f"  load + validate from ZooKeeper  {med(loads):.3f} s")
        print(f"  restore into a fresh core       {med(restores):.3f} s")
        print(f"  core handles all reconciliation answers  {med(recons):.3f} s")
        print(f"  total                           {med(loads) + med(restores) + med(recons):.3f} s")
    finally:
        election.close()
        close(client)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--handovers", type=int, default=20)
    ap.add_argument("--session", type=float, default=4.0)
    ap.add_argument("--live-jobs", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-failover", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zk = ZooKeeperServer(Path(tmp) / "zk")
        zk.start()
        try:
            if not args.skip_failover:
                failovers(args, Path(tmp), zk)
            big_reload(args, zk)
        finally:
            zk.stop()


if __name__ == "__main__":
    main()
