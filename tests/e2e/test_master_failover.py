"""Mesos master failover end to end: three localmesos masters in a real ZooKeeper, a real
scheduler detecting the leader through ``zk://``.

Mid-job the leading master crashes (``corral localmesos fail-master``): its node stays in
ZooKeeper until its 1 s session expires, then another master is elected, recovers the
registry, and the agents re-register with it. Corral must follow the new leader,
re-subscribe with its framework id and reconcile, and the job must finish with every task
it started still its first attempt and every output verified.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import Cluster, private_ports, running_cluster, wait_for
from tests.zk import ZooKeeperServer, zk_server

__all__ = ["zk_server"]  # the session-wide ZooKeeper fixture, used below

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


@pytest.fixture(scope="module")
def masters3(tmp_path_factory: pytest.TempPathFactory,
             zk_server: ZooKeeperServer) -> Iterator[tuple[Cluster, str]]:
    if not zk_server.running:
        zk_server.start()
    zk = f"zk://{zk_server.hosts}/mesos-{uuid.uuid4().hex[:8]}"
    with running_cluster(tmp_path_factory, "corral-failover", agents=3, spot=0,
                         scheduler_master=zk, localmesos_extra=[
                             "--masters", "3", "--zk", zk, "--zk-session-timeout", "1",
                             "--registration-backoff", "0.3", "--ports", private_ports()]
                         ) as c:
        yield c, zk


def masters(url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/localmesos/masters", timeout=10) as r:
        return list(json.loads(r.read())["masters"])


def test_leading_master_fails_mid_job_and_every_task_survives(
        masters3: tuple[Cluster, str]) -> None:
    cluster, _zk = masters3
    before = {m["url"]: m for m in masters(cluster.master_url)}
    (leader_url,) = [u for u, m in before.items() if m["leading"]]
    spec, out = cluster.scoring_spec(chunks=60, workers=3, delay=0.5)
    with cluster.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: (v.progress.done >= 3 and all(
            t.state == "TASK_RUNNING" for t in v.tasks)) or v.state.terminal, timeout=60)
        assert view.progress.done < 30, "the failover must come mid-job"
        started = {t.slot: t.task_id for t in view.tasks}
        attempts = {t.slot: t.attempt for t in view.tasks}
        # Crash the leader through the CLI, asking any master (here a follower).
        follower = next(u for u, m in before.items() if not m["leading"])
        done = subprocess.run(
            [sys.executable, "-m", "corral.localmesos", "fail-master", "--master", follower],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["url"] == leader_url
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    assert final.progress.done == final.progress.total == 60
    # Every task running at the failover is the one that finished its slot.
    assert {t.slot: t.task_id for t in final.tasks if t.task_id} == started
    assert {t.slot: t.attempt for t in final.tasks} == attempts
    assert final.resilience.losses == 0, final.resilience
    result = cluster.verify(60, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 60 chunks identical" in result.stdout

    # Another master leads; the crashed one came back as a follower.
    after = {m["url"]: m for m in masters(follower)}
    assert not after[leader_url]["leading"] and after[leader_url]["incarnations"] == 2
    (new_leader,) = [u for u, m in after.items() if m["leading"]]
    # Corral re-subscribed with the same framework id, at the new leader.
    log = (cluster.work / "logs" / "scheduler.log").read_text()
    subs = re.findall(r"mesos subscribed framework (\S+) at (\S+) ", log)
    assert len(subs) >= 2 and len({fid for fid, _ in subs}) == 1, subs
    assert subs[0][1] == leader_url and subs[-1][1] == new_leader, subs
