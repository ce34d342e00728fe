"""A real Corral cluster for end-to-end tests: localmesos and one scheduler, as processes.

The cluster is shared by a module's tests (starting it takes about a second); each test
submits its own jobs with unique names. After the module, every process is stopped and
the test checks that none of the processes started under the cluster's work directory
(executors, job tasks) outlived it.
"""

from __future__ import annotations

import contextlib
import random
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.api.client import JobClient
from corral.core.views import JobView
from corral.procs import Child, start_localmesos, start_scheduler

PY = shlex.quote(sys.executable)
SCORING = f"{PY} -m corral_executor.samples.scoring"


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``text`` (a unique work directory)."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if text in cmd or text in (p.info["cwd"] or ""):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_gone(text: str, timeout: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_mentioning(text)
    return left


def private_ports(size: int = 300) -> str:
    """A random ``--ports`` block below the kernel's ephemeral range: other test runs on
    the same machine use the default 31000-32000, and two tasks handed the same port
    would fail for reasons that have nothing to do with the test."""
    start = random.randrange(20000, 30000 - size)
    return f"{start}-{start + size - 1}"


@dataclass
class Cluster:
    work: Path
    master_url: str
    api: str
    localmesos: Child
    scheduler: Child

    def client(self) -> JobClient:
        return JobClient(self.api, timeout=10)

    def data(self, chunks: int, rows: int = 500) -> Path:
        d = self.work / f"data-{chunks}-{rows}"
        if not d.exists():
            subprocess.run(
                [sys.executable, "-m", "corral_executor.samples.scoring", "make-data",
                 "--data", str(d), "--chunks", str(chunks), "--rows", str(rows),
                 "--features", "16", "--seed", "3"],
                check=True, stdout=subprocess.DEVNULL, timeout=60,
            )
        return d

    def verify(self, chunks: int, out: Path) -> subprocess.CompletedProcess[str]:
        """Check the sample job's outputs in ``out`` against a single-process run."""
        return subprocess.run(
            [sys.executable, "-m", "corral_executor.samples.scoring", "verify",
             "--data", str(self.data(chunks)), "--out", str(out)],
            capture_output=True, text=True, timeout=60)

    def scoring_spec(self, *, chunks: int = 16, workers: int = 4, delay: float = 0.0,
                     name: str | None = None, max_workers: int | None = None,
                     **extra: Any) -> tuple[dict[str, Any], Path]:
        data = self.data(chunks)
        name = name or f"t{uuid.uuid4().hex[:8]}"
        out = self.work / "out" / name
        io = f"--data {shlex.quote(str(data))} --out {shlex.quote(str(out))}"
        spec = {
            "role": "e2e",
            "environment": "test",
            "name": name,
            "master": {"command": f"{SCORING} master {io} --host 127.0.0.1 "
                                  "--lease-seconds 10 --checkpoint-interval 1",
                       "cpus": 0.5, "mem": 128, "ports": 1},
            "workers": {"command": f"{SCORING} worker {io} --chunk-delay {delay} "
                                   "--give-up-seconds 30",
                        "cpus": 0.5, "mem": 128, "min": 1, "max": max_workers or max(workers, 1),
                        "initial": workers},
            "checkpoint": {"uri": (self.work / "ckpt" / name).as_uri(),
                           "interval_seconds": 1},
            "kill_grace_seconds": 2,
        }
        spec.update(extra)
        return spec, out


def wait_for(client: JobClient, key: str, pred: Any, timeout: float = 60.0) -> JobView:
    """Poll the job until ``pred(view)`` holds; fail with the last view otherwise."""
    deadline = time.monotonic() + timeout
    view = client.get(key)
    while not pred(view):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {key}; last view: {view}")
        time.sleep(0.2)
        view = client.get(key)
    return view


@contextlib.contextmanager
def running_cluster(tmp_path_factory: pytest.TempPathFactory, prefix: str, *, agents: int,
                    spot: int, localmesos_extra: list[str] | None = None,
                    scheduler_extra: list[str] | None = None,
                    scheduler_master: str | None = None) -> Iterator[Cluster]:
    """localmesos (4 cpus, 4 GiB per agent) and one scheduler in a fresh work directory;
    on exit both are stopped and no process started under it may outlive them. The
    scheduler is given localmesos' URL, or ``scheduler_master`` (e.g. a zk:// group)."""
    work = tmp_path_factory.mktemp(f"{prefix}-{uuid.uuid4().hex[:6]}")
    logs = work / "logs"
    logs.mkdir()
    lm, url = start_localmesos(work / "mesos", logs, agents=agents, spot=spot, cpus=4,
                               mem=4096, allocation_interval=0.1, extra=localmesos_extra)
    sched: Child | None = None
    try:
        sched, api = start_scheduler(scheduler_master or url, logs, extra=scheduler_extra)
        yield Cluster(work, url, api, lm, sched)
    finally:
        if sched is not None:
            sched.stop(grace=10)
        lm.stop(grace=15)
    left = wait_gone(str(work))
    assert not left, f"processes outlived the cluster: {[p.cmdline() for p in left]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-e2e", agents=3, spot=1) as c:
        yield c
