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

Part 3 (real processes): Mesos master failover. localmesos runs three masters electing a
leader in ZooKeeper (``--mesos-session`` second sessions, agents re-registering after a
random delay up to ``--registration-backoff``) and one ``corral scheduler`` detects the
leader through ``zk://`` (HA mode, so it reconciles explicitly until every task is
answered). Each round crashes the leading master (``/localmesos/masters/fail``) and reads
the time from the crash, and from the new leader's election, to

    subscribed     Corral's SUBSCRIBED from the new leader (same framework id)
    reconciled     every task of Corral's answered by the new leader

then waits for the crashed master to be back as a follower. At the end every job must
still run its first attempt of every task.

Part 4 (real processes): partition heal. One master (``--health`` second agent health
timeout). Each round cuts off the agent running a job's master for longer than the health
timeout; Corral replaces the master; when the partition heals Mesos reports the old one
RUNNING again, and the round measures heal → Corral's KILL of the duplicate, and heal →
Mesos reporting it TASK_KILLED.

    python bench/bench_failover.py [--kills 20] [--handovers 20] [--session 4] [--jobs 1000]
        [--mesos-failovers 10] [--mesos-session 2] [--registration-backoff 1]
        [--heals 10] [--health 1] [--skip-failover] [--skip-reload]
"""

from __future__ import annotations

import argparse
import contextlib
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
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.api.client import ApiError, JobClient  # noqa: E402
from corral.core import events as ev  # noqa: E402
from corral.core.intent import JobIntent, TaskIntent, restore  # noqa: E402
from corral.core.job_state import JobPhase  # noqa: E402
from corral.core.scheduler import Scheduler  # noqa: E402
from corral.core.spec import parse_job_spec  # noqa: E402
from corral.core.views import JobState  # noqa: E402
from corral.localcluster.procs import Child, start_localmesos, start_scheduler  # noqa: E402
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
    show(f"{title} ({len(rows)} rounds; target: {target})",
         {name: [r[name] for r in rows if name in r] for name in MARKS}, head="kill ->")


def show(title: str, rows: dict[str, list[float]], head: str = "") -> None:
    """p50/p99/max of each named series, one line each."""
    width = max([len(head), *map(len, rows)]) + 2
    print(f"\n{title}")
    print(f"  {head:<{width}}{'p50':>8}{'p99':>8}{'max':>8}   (seconds)")
    for name, xs in rows.items():
        if xs:
            print(f"  {name:<{width}}{statistics.median(xs):8.3f}{pct(xs, 0.99):8.3f}"
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


# --------------------------------------------------------------------------- part 3


def post(url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=15) as r:
        return dict(json.loads(r.read()))


def get(url: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(url.rstrip("/") + path, timeout=15) as r:
        return dict(json.loads(r.read()))


def log_times(path: Path, text: str, since: float) -> list[float]:
    """asctime (epoch) of every line of a Python log containing ``text``, after ``since``."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if text in line:
            try:
                t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if t >= since:
                out.append(t)
    return out


def wait_log(path: Path, text: str, since: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log_times(path, text, since)
        if found:
            return found[0]
        time.sleep(0.02)
    return None


def mesos_failovers(args: argparse.Namespace, tmp: Path, zk: ZooKeeperServer) -> None:
    logs = tmp / "mlogs"
    logs.mkdir()
    mesos_zk = f"zk://{zk.hosts}/mesos-{uuid.uuid4().hex[:6]}"
    lm, url = start_localmesos(tmp / "mmesos", logs, agents=3, cpus=8, mem=8192,
                               allocation_interval=0.1, extra=[
                                   "--masters", "3", "--zk", mesos_zk,
                                   "--zk-session-timeout", f"{args.mesos_session:g}",
                                   "--registration-backoff", f"{args.registration_backoff:g}"])
    sched, api = start_scheduler(mesos_zk, logs, name="sched", extra=[
        "--zk", f"zk://{zk.hosts}/corral-{uuid.uuid4().hex[:6]}", "--identity", "sched",
        "--failover-timeout", "600", "--log-level", "INFO"])
    slog, mlog = logs / "sched.log", logs / "localmesos.log"
    rows: dict[str, list[float]] = {k: [] for k in (
        "crash -> new leader elected", "crash -> Corral re-subscribed",
        "crash -> Corral reconciled", "elected -> Corral re-subscribed",
        "elected -> Corral reconciled")}
    try:
        deadline = time.monotonic() + 30
        while leader([api]) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        keys = []
        with JobClient(api, timeout=10) as c:
            for i in range(args.live_jobs):
                keys.append(c.submit(parse_job_spec(job_spec(i)), f"mbench-{i}").key)
        deadline = time.monotonic() + 60
        with JobClient(api, timeout=10) as c:
            while time.monotonic() < deadline and not all(
                    all(t.state == "TASK_RUNNING" for t in c.get(k).tasks) for k in keys):
                time.sleep(0.2)
            first = {k: {t.slot: t.task_id for t in c.get(k).tasks} for k in keys}
        for rnd in range(args.mesos_failovers):
            t_crash = time.time()
            post(url, "/localmesos/masters/fail", {"restart_after": 0.5})
            elected = wait_log(mlog, "elected as the leading master", t_crash,
                               args.mesos_session + 30)
            sub = wait_log(slog, "subscribed as framework", t_crash, args.mesos_session + 30)
            rec = wait_log(slog, "reconciliation finished", t_crash, args.mesos_session + 60)
            marks = {"crash -> new leader elected": elected, "crash -> Corral re-subscribed": sub,
                     "crash -> Corral reconciled": rec}
            for name, t in marks.items():
                if t is not None:
                    rows[name].append(t - t_crash)
            if elected is not None:
                if sub is not None:
                    rows["elected -> Corral re-subscribed"].append(sub - elected)
                if rec is not None:
                    rows["elected -> Corral reconciled"].append(rec - elected)
            print(f"mesos failover {rnd + 1:2d}: " + ", ".join(
                f"{k.split('-> ')[1]} {v - t_crash:.3f}s" for k, v in marks.items()
                if v is not None), flush=True)
            deadline = time.monotonic() + 30     # the crashed master back as a follower
            while time.monotonic() < deadline and not all(
                    m["alive"] for m in get(url, "/localmesos/masters")["masters"]):  # type: ignore[union-attr]
                time.sleep(0.1)
        with JobClient(api, timeout=10) as c:
            now = {k: {t.slot: t.task_id for t in c.get(k).tasks} for k in keys}
            running = sum(c.get(k).state is JobState.RUNNING for k in keys)
        show(f"Mesos master failover ({args.mesos_failovers} crashes of the leader, "
             f"{args.mesos_session:g} s ZooKeeper sessions, agents re-register within "
             f"{args.registration_backoff:g} s)", rows)
        print(f"  jobs still RUNNING: {running} of {len(keys)}; tasks replaced: "
              f"{sum(now[k] != first[k] for k in keys)} jobs")
    finally:
        sched.stop(grace=10)
        lm.stop(grace=15)


# --------------------------------------------------------------------------- part 4


def partition_heals(args: argparse.Namespace, tmp: Path) -> None:
    logs = tmp / "plogs"
    logs.mkdir()
    lm, url = start_localmesos(tmp / "pmesos", logs, agents=3, cpus=8, mem=8192,
                               allocation_interval=0.1, extra=[
                                   "--agent-health-timeout", f"{args.health:g}"])
    sched, api = start_scheduler(url, logs, name="psched", extra=["--log-level", "INFO"])
    slog = logs / "psched.log"
    rows: dict[str, list[float]] = {"heal -> Corral kills the duplicate": [],
                                    "heal -> Mesos reports it TASK_KILLED": []}
    try:
        for rnd in range(args.heals):
            # One job of one task per round, so each round measures one duplicate.
            spec = job_spec(rnd) | {"name": f"heal{rnd}"}
            spec["workers"] = {**spec["workers"], "initial": 0}  # type: ignore[dict-item]
            with JobClient(api, timeout=10) as c:
                key = c.submit(parse_job_spec(spec), f"heal-{rnd}").key
                old = wait_master(c, key, attempt=1)
                heals_at = float(post(url, f"/localmesos/agents/{old.agent_id}/partition",
                                      {"seconds": args.health + 4.0})["heals_at"])
                wait_master(c, key, attempt=2, timeout=args.health + 20)
                if time.time() >= heals_at:
                    print(f"heal {rnd + 1:2d}: the replacement ran only after the heal; "
                          "not counted")
                    c.kill(key)
                    continue
                killed = wait_log(slog, f"killing {old.task_id} ", heals_at - 0.5, 20)
                gone = None
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and gone is None:
                    for fw in get(url, "/master/state")["frameworks"]:  # type: ignore[union-attr]
                        for t in fw["tasks"] + fw["completed_tasks"]:
                            if t["id"] == old.task_id and t["state"] == "TASK_KILLED":
                                gone = time.time()
                    time.sleep(0.02)
                c.kill(key)
            if killed is not None:
                rows["heal -> Corral kills the duplicate"].append(killed - heals_at)
            if gone is not None:
                rows["heal -> Mesos reports it TASK_KILLED"].append(gone - heals_at)
            print(f"heal {rnd + 1:2d}: kill {killed - heals_at if killed else float('nan'):.3f}s"
                  f", killed {gone - heals_at if gone else float('nan'):.3f}s", flush=True)
        show(f"Partition heal ({args.heals} partitions of a master's agent past a "
             f"{args.health:g} s health timeout; kill grace 0.5 s)", rows)
    finally:
        sched.stop(grace=10)
        lm.stop(grace=15)


def wait_master(c: JobClient, key: str, attempt: int, timeout: float = 30.0) -> Any:
    """The job's master once its ``attempt`` runs."""
    deadline = time.monotonic() + timeout
    while True:
        m = next(t for t in c.get(key).tasks if t.slot == "master")
        if m.attempt == attempt and m.state == "TASK_RUNNING":
            return m
        if time.monotonic() > deadline:
            raise RuntimeError(f"{key}: master attempt {attempt} not running: {m}")
        time.sleep(0.05)


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
    ap.add_argument("--skip-reload", action="store_true")
    ap.add_argument("--mesos-failovers", type=int, default=10)
    ap.add_argument("--mesos-session", type=float, default=2.0)
    ap.add_argument("--registration-backoff", type=float, default=1.0)
    ap.add_argument("--heals", type=int, default=10)
    ap.add_argument("--health", type=float, default=1.0)
    ap.add_argument("--keep", default=None, help="work directory to keep (logs) instead "
                                               "of a temporary one")
    args = ap.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=False)
    with (contextlib.nullcontext(args.keep) if args.keep
          else tempfile.TemporaryDirectory()) as tmp:
        zk = ZooKeeperServer(Path(tmp) / "zk")
        zk.start()
        try:
            if not args.skip_failover:
                failovers(args, Path(tmp), zk)
            if not args.skip_reload:
                big_reload(args, zk)
            if args.mesos_failovers > 0:
                mesos_failovers(args, Path(tmp), zk)
            if args.heals > 0:
                partition_heals(args, Path(tmp))
        finally:
            zk.stop()


if __name__ == "__main__":
    main()
