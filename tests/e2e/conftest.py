"""A real Corral cluster for end-to-end tests: localmesos and one scheduler, as processes.

The cluster is shared by a module's tests (starting it takes about a second); each test
submits its own jobs with unique names. After the module, every process is stopped and
the test checks that none of the processes started under the cluster's work directory
(executors, job tasks) outlived it.

**Against any Mesos** (the acceptance test for a real cluster, see vagrant/README.md):
``CORRAL_E2E_MASTER=http://host:5050 pytest tests/e2e`` uses that master instead of
starting localmesos, and

* ``CORRAL_E2E_SCHEDULER_ARGS``: more ``corral scheduler`` flags (``--principal``,
  ``--secret-file``, ``--master-ca-file``, ``--http``, ``--http-advertise``, ...);
* ``CORRAL_E2E_WORKDIR``: where data, outputs and checkpoints go: a directory the agents
  see at the same path (the Vagrant cluster shares ``/vagrant``);
* ``CORRAL_E2E_TASK_PYTHON``: the interpreter job commands run with on the agents
  (default: this one, the same path there);
* ``CORRAL_E2E_MASTER_CA_FILE``: CAs for the test's own reads of an https master;
* ``CORRAL_E2E_ZK``: a ZooKeeper ensemble (``host:port,...``) for the HA tests' replicas
  (default: one the tests start from Debian's ``zookeeper`` package).

Tests that inject faults through localmesos' own endpoints, or look for the job's
processes on this machine, are skipped by name (``LOCALMESOS_ONLY``), saying why.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import ssl
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
from corral.localcluster.procs import Child, start_localmesos, start_scheduler

EXTERNAL_MASTER = os.environ.get("CORRAL_E2E_MASTER") or None
SCHEDULER_ARGS = shlex.split(os.environ.get("CORRAL_E2E_SCHEDULER_ARGS", ""))
WORK_ROOT = os.environ.get("CORRAL_E2E_WORKDIR") or None
MASTER_CA_FILE = os.environ.get("CORRAL_E2E_MASTER_CA_FILE") or None
TASK_PYTHON = os.environ.get("CORRAL_E2E_TASK_PYTHON") or sys.executable

PY = shlex.quote(TASK_PYTHON)
SCORING = f"{PY} -m corral_executor.samples.scoring"

# Skipped against an external master, by test (or module) name, with the reason.
LOCALMESOS_ONLY = {
    "test_chaos.py": "injects faults through localmesos' /localmesos/agents endpoints",
    "test_jobs.py::test_kill_mid_run_stops_every_process":
        "looks for the job's processes on this machine",
    "test_real_cluster.py::test_hijack_without_credentials_gets_401":
        "on a master without framework authentication it would take Corral's framework over",
    "test_framework_removed.py": "tears Corral's framework down (every task of it dies)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not EXTERNAL_MASTER:
        return
    for item in items:
        module = Path(str(item.fspath)).name
        why = LOCALMESOS_ONLY.get(module) or LOCALMESOS_ONLY.get(f"{module}::{item.name}")
        if why:
            item.add_marker(pytest.mark.skip(reason=f"localmesos only: {why}"))


def master_ssl_context() -> ssl.SSLContext | None:
    """For the tests' own HTTP reads of the master (``CORRAL_E2E_MASTER_CA_FILE``)."""
    return ssl.create_default_context(cafile=MASTER_CA_FILE) if MASTER_CA_FILE else None


def work_dir(tmp_path_factory: pytest.TempPathFactory, prefix: str) -> Path:
    """A fresh work directory: under ``CORRAL_E2E_WORKDIR`` (shared with the agents) when
    set, else a pytest temporary directory."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    if WORK_ROOT:
        path = Path(WORK_ROOT) / name
        path.mkdir(parents=True)
        path.chmod(0o777)  # tasks may run as another user on the agents
        return path
    return tmp_path_factory.mktemp(name)


def start_master(work: Path, logs: Path, **localmesos: Any) -> tuple[Child | None, str]:
    """localmesos (a Child) and its URL, or (None, the external master's URL)."""
    if EXTERNAL_MASTER:
        return None, EXTERNAL_MASTER
    return start_localmesos(work, logs, **localmesos)


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
    localmesos: Child | None  # None against an external master
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
    on exit both are stopped and no process started under it may outlive them. Against
    an external master (``CORRAL_E2E_MASTER``) only the scheduler is started. The scheduler
    is given localmesos' URL, or ``scheduler_master`` (e.g. a zk:// group)."""
    work = work_dir(tmp_path_factory, prefix)
    logs = work / "logs"
    logs.mkdir()
    extra = list(localmesos_extra or [])
    if "--ports" not in extra:
        extra += ["--ports", private_ports()]  # never the ports of another run's tasks
    lm, url = start_master(work / "mesos", logs, agents=agents, spot=spot, cpus=4,
                           mem=4096, allocation_interval=0.1, extra=extra)
    sched: Child | None = None
    try:
        sched, api = start_scheduler(scheduler_master or url, logs,
                                     extra=[*SCHEDULER_ARGS, *(scheduler_extra or [])])
        yield Cluster(work, url, api, lm, sched)
    finally:
        if sched is not None:
            sched.stop(grace=10)
        if lm is not None:
            lm.stop(grace=15)
    left = wait_gone(str(work))
    assert not left, f"processes outlived the cluster: {[p.cmdline() for p in left]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-e2e", agents=3, spot=1) as c:
        yield c
