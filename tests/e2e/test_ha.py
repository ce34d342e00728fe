"""High availability end to end: real ZooKeeper, real localmesos, real scheduler replicas.

Every test runs the scoring sample job through a failover and checks that it still
finishes with every chunk scored exactly once (``scoring verify``), while a watcher polls
localmesos' state every 50 ms and records the most live master tasks any job ever had
(it must never exceed one). Replicas use 1.5 s ZooKeeper sessions.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.api.client import ApiError, JobClient
from corral.core.spec import parse_job_spec
from corral.core.views import JobState, JobView
from corral.localcluster.procs import Child, start_scheduler
from tests.e2e.conftest import (
    SCHEDULER_ARGS,
    Cluster,
    master_ssl_context,
    start_master,
    wait_gone,
    work_dir,
)
from tests.zk import ZooKeeperServer, zk_server

__all__ = ["zk_server"]  # the session-wide ZooKeeper fixture, used below

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION = "1.5"
LIVE = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"}


class MasterWatch(threading.Thread):
    """Polls localmesos /state; remembers the most live master tasks seen for one job."""

    def __init__(self, master_url: str) -> None:
        super().__init__(name="master-watch", daemon=True)
        self.url = master_url.rstrip("/") + "/state"
        self.max_masters: dict[str, int] = {}
        self.polls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            try:
                with urllib.request.urlopen(self.url, timeout=2,
                                            context=master_ssl_context()) as r:
                    state = json.load(r)
            except (OSError, ValueError):
                continue
            count: Counter[str] = Counter()
            for fw in state.get("frameworks", []):
                for t in fw.get("tasks", []):
                    parts = t["id"].split(".")
                    if len(parts) == 6 and parts[4] == "master" and t["state"] in LIVE:
                        count[".".join(parts[1:4])] += 1
            for job, n in count.items():
                self.max_masters[job] = max(self.max_masters.get(job, 0), n)
            self.polls += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@dataclass
class Ha:
    work: Path
    logs: Path
    master_url: str
    zk: str
    cluster: Cluster
    replicas: list[Child] = field(default_factory=list)

    def replica(self, name: str) -> tuple[Child, str]:
        child, api = start_scheduler(self.master_url, self.logs, name=name, extra=[
            *SCHEDULER_ARGS, "--zk", self.zk, "--identity", name,
            "--zk-session-timeout", SESSION, "--failover-timeout", "120"])
        self.replicas.append(child)
        return child, api

    def stop_replicas(self) -> None:
        for r in self.replicas:
            r.signal(signal.SIGCONT)
            r.stop(grace=10)
        self.replicas.clear()


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Ha]:
    # CORRAL_E2E_ZK=host:port[,host:port]: the replicas elect in that ensemble (a real
    # cluster's), under a fresh chroot; else in a ZooKeeper the tests start.
    hosts = os.environ.get("CORRAL_E2E_ZK")
    if not hosts:
        zk_server: ZooKeeperServer = request.getfixturevalue("zk_server")
        if not zk_server.running:
            zk_server.start()
        hosts = zk_server.hosts
    work = work_dir(tmp_path_factory, "corral-ha")
    logs = work / "logs"
    logs.mkdir()
    lm, url = start_master(work / "mesos", logs, agents=3, cpus=4, mem=4096,
                           allocation_interval=0.1)
    h = Ha(work, logs, url, f"zk://{hosts}/ha-{uuid.uuid4().hex[:8]}",
           Cluster(work, url, "", lm, lm))  # type: ignore[arg-type]
    try:
        yield h
    finally:
        h.stop_replicas()
        if lm is not None:
            lm.stop(grace=15)
    left = wait_gone(str(work))
    assert not left, f"processes outlived the test: {[p.cmdline() for p in left]}"


@pytest.fixture
def watch(ha: Ha) -> Iterator[MasterWatch]:
    w = MasterWatch(ha.master_url)
    w.start()
    try:
        yield w
    finally:
        w.stop()
        ha.stop_replicas()
    assert w.polls > 0
    assert all(n <= 1 for n in w.max_masters.values()), w.max_masters


def ask(api: str, key: str, timeout: float = 30.0) -> JobView:
    """Get the job from whichever replica leads, retrying through a failover."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with JobClient(api, timeout=2) as c:
                return c.get(key)
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def until_view(api: str, key: str, pred: object, timeout: float = 60.0) -> JobView:
    deadline = time.monotonic() + timeout
    view = ask(api, key)
    while not pred(view):  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out on {key}: {view}")
        time.sleep(0.2)
        view = ask(api, key)
    return view


def leader_of(api: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with JobClient(api, timeout=2) as c:
                return c.leader()
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def verified(ha: Ha, chunks: int, out: Path) -> None:
    r = ha.cluster.verify(chunks, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"OK: {chunks} chunks identical" in r.stdout


def submit(api: str, spec: dict[str, object]) -> str:
    with JobClient(api, timeout=10) as c:
        return c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key


def finished(ha: Ha, api: str, key: str, chunks: int, out: Path) -> JobView:
    final = until_view(api, key, lambda v: v.state.terminal, timeout=90)
    assert final.state is JobState.FINISHED, final
    assert final.progress.done == final.progress.total == chunks
    verified(ha, chunks, out)
    return final


def test_sigterm_hands_over_and_the_cli_follows(ha: Ha, watch: MasterWatch) -> None:
    a, api_a = ha.replica("a")
    leader_of(api_a)  # a leads before b exists
    _, api_b = ha.replica("b")
    assert leader_of(api_b) == api_a  # a follower names the leader; the client follows
    spec, out = ha.cluster.scoring_spec(chunks=16, workers=2, delay=0.2)
    key = submit(api_b, spec)
    until_view(api_b, key, lambda v: v.state is JobState.RUNNING)
    assert a.stop(grace=10) == 0  # SIGTERM: resign, then exit
    assert leader_of(api_b) == api_b
    finished(ha, api_b, key, 16, out)
    a_log, b_log = (ha.logs / "a.log").read_text(), (ha.logs / "b.log").read_text()
    assert "resigned leadership" in a_log
    assert "elected leader as b" in b_log and "reconciliation finished" in b_log


def test_leader_sigkill_while_scaling(ha: Ha, watch: MasterWatch) -> None:
    a, api_a = ha.replica("a2")
    leader_of(api_a)
    _, api_b = ha.replica("b2")
    spec, out = ha.cluster.scoring_spec(chunks=30, workers=1, max_workers=4, delay=0.3)
    key = submit(api_a, spec)
    until_view(api_a, key, lambda v: v.state is JobState.RUNNING)
    with JobClient(api_a, timeout=10) as c:
        c.scale(key, 4)
    a.signal(signal.SIGKILL)  # mid-scale: workers may be launching right now
    assert leader_of(api_b) == api_b
    final = finished(ha, api_b, key, 30, out)
    assert final.desired_workers == 4  # the scale survived the failover


def test_partitioned_old_leader_is_fenced(ha: Ha, watch: MasterWatch) -> None:
    a, api_a = ha.replica("a3")
    leader_of(api_a)
    _, api_b = ha.replica("b3")
    spec, out = ha.cluster.scoring_spec(chunks=40, workers=2, max_workers=3, delay=0.5)
    key = submit(api_a, spec)
    until_view(api_a, key, lambda v: v.state is JobState.RUNNING)
    a.signal(signal.SIGSTOP)  # a partition: a keeps running but hears nothing
    deadline = time.monotonic() + 30
    while leader_of(api_b) != api_b:
        assert time.monotonic() < deadline, "b never took over"
        time.sleep(0.1)
    with JobClient(api_b, timeout=10) as c:
        c.scale(key, 3)  # the new leader acts: launches a worker
    until_view(api_b, key, lambda v: v.state.terminal or any(
        t.slot == "worker-2" and t.state == "TASK_RUNNING" for t in v.tasks))
    a_log = ha.logs / "a3.log"
    mark = a_log.stat().st_size
    a.signal(signal.SIGCONT)
    # a wakes up with its old view of the world; it must not launch or kill anything.
    deadline = time.monotonic() + 20
    while leader_of(api_a) != api_b:
        assert time.monotonic() < deadline, "a did not notice it was deposed"
        time.sleep(0.2)
    time.sleep(1.0)
    after = a_log.read_text(errors="replace")[mark:] if a_log.stat().st_size > mark else ""
    assert "not acting any more" in after or "deposed" in after, after[-2000:]
    acted = [line for line in after.splitlines()
             if "launching " in line or "killing " in line]
    assert acted == [], acted
    final = finished(ha, api_b, key, 40, out)
    assert any(t.slot == "worker-2" for t in final.tasks)
