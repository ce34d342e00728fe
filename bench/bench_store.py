"""Benchmark the ZooKeeper state store: save and load 1,000 jobs with 20,000 tasks.

Starts a private ZooKeeper (Debian package) on a free loopback port, then, for several
runs, writes the whole state in one batch, loads it back, and as a baseline writes the
same state with one ``write`` per job. Prints medians and the batch/baseline ratio.

    python bench/bench_store.py [--jobs 1000] [--tasks 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.core.intent import JobIntent, TaskIntent  # noqa: E402
from corral.core.job_state import JobPhase  # noqa: E402
from corral.core.spec import parse_job_spec  # noqa: E402
from corral.store.connection import close, connect  # noqa: E402
from corral.store.election import Elected, LeaderElection  # noqa: E402
from corral.store.state import Batch, StateStore  # noqa: E402
from tests.zk import ZooKeeperServer  # noqa: E402


def make_batch(jobs: int, tasks: int) -> list[Batch]:
    """One single-job batch per job (join them for the batched run)."""
    per_job = max(1, tasks // jobs)
    out = []
    for j in range(jobs):
        spec = parse_job_spec({"role": "bench", "name": f"job-{j}",
                               "master": {"command": "python train.py"},
                               "workers": {"command": "python worker.py", "max": per_job}})
        t = tuple(TaskIntent(f"corral.bench.default.job-{j}.worker-{i}.0", f"agent-{i % 50}-S3")
                  for i in range(per_job))
        out.append(Batch().put_job(JobIntent(spec, "", per_job, JobPhase.PENDING, tasks=t,
                                             progress={"master": 1})))
    return out


def merged(batches: list[Batch]) -> Batch:
    big = Batch()
    for b in batches:
        big.jobs.update(b.jobs)
    return big


def leader_store(hosts: str) -> tuple[StateStore, LeaderElection, object]:
    client, address = connect(f"zk://{hosts}/bench-{uuid.uuid4().hex[:8]}")
    election = LeaderElection(client, address.path, "bench")
    election.join()
    ev = election.events.get(timeout=10)
    assert isinstance(ev, Elected)
    store = StateStore(client, address.path)
    store.adopt(ev.fence)
    store.load()
    return store, election, client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    batches = make_batch(args.jobs, args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        zk = ZooKeeperServer(Path(tmp), tick_ms=2000)
        zk.start()
        try:
            save, load, baseline, txns, nbytes = [], [], [], 0, 0
            for _ in range(args.runs):
                store, election, client = leader_store(zk.hosts)
                t0 = time.perf_counter()
                stats = store.write(merged(batches))
                save.append(time.perf_counter() - t0)
                txns, nbytes = stats.transactions, stats.bytes
                t0 = time.perf_counter()
                state = store.load()
                load.append(time.perf_counter() - t0)
                assert sum(len(j.tasks) for j in state.jobs.values()) >= args.tasks
                election.close()
                close(client)  # type: ignore[arg-type]

                store, election, client = leader_store(zk.hosts)
                t0 = time.perf_counter()
                for b in batches:
                    store.write(b)
                baseline.append(time.perf_counter() - t0)
                election.close()
                close(client)  # type: ignore[arg-type]
        finally:
            zk.stop()
    med = statistics.median
    print(f"state: {args.jobs} jobs, {args.tasks} tasks, {nbytes / 1e6:.1f} MB of JSON")
    print(f"save (one batch):     median {med(save):.3f} s over {args.runs} runs, "
          f"{txns} transactions")
    print(f"load:                 median {med(load):.3f} s")
    print(f"save (one per job):   median {med(baseline):.3f} s  [baseline]")
    print(f"batched / baseline:   {med(save) / med(baseline):.2f}x the time")


if __name__ == "__main__":
    main()
