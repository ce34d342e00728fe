"""HA replicas in-process against a real ZooKeeper and a real (in-process) localmesos.

Each test runs ``Replica`` objects on one event loop: election and takeover, write-ahead
persistence restored by the next leader, a leader whose session expires or whose
ZooKeeper restarts stops acting at once and comes back with a new term, a write under a
stale fence halts the leader, corrupt state is refused, duplicate identities and an
unreachable ZooKeeper give clear errors.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from corral.core.spec import parse_job_spec
from corral.core.views import JobState, NotLeader
from corral.localmesos import LocalMesos, LocalMesosConfig
from corral.runtime.replica import Replica
from corral.runtime.service import RuntimeConfig
from corral.store import DuplicateIdentity, ZooKeeperUnavailable, parse_zk_url
from tests.zk import ZooKeeperServer, expire_session, free_port

pytestmark = pytest.mark.timeout(90)

SESSION = 1.0  # seconds; the test ZooKeeper ticks every 200 ms


def spec(name: str, workers: int = 2) -> Any:
    return parse_job_spec({
        "role": "it", "environment": "test", "name": name,
        "master": {"command": "sleep 60", "cpus": 0.1, "mem": 32},
        "workers": {"command": "sleep 60", "cpus": 0.1, "mem": 32, "min": 0, "max": 6,
                    "initial": workers},
        "kill_grace_seconds": 0.5,
    })


async def until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.05)


def replica(master: str, zk_url: str, name: str, **kw: Any) -> Replica:
    config = RuntimeConfig(master=master, framework_name="corral-ha-it", failover_timeout=60,
                           tick_seconds=0.2)
    return Replica(config, zk_url, name, f"127.0.0.1:{free_port()}", session_timeout=SESSION,
                   connect_within=kw.pop("connect_within", 5.0), **kw)


def mesos_config(tmp: Path) -> LocalMesosConfig:
    return LocalMesosConfig(port=0, agents=2, cpus=4, mem=4096, allocation_interval=0.05,
                            heartbeat_interval=0.5, work_dir=str(tmp / "mesos"), quiet=True)


def live_masters(lm: LocalMesos, key: str) -> list[str]:
    """Master task ids of ``key`` that localmesos holds as live."""
    prefix = "corral." + key.replace("/", ".") + ".master."
    out = []
    for fw in lm.master.frameworks.values():
        for t in fw.tasks.values():
            if t.task_id.startswith(prefix) and t.state in ("TASK_STAGING", "TASK_STARTING",
                                                     "TASK_RUNNING", "TASK_KILLING"):
                out.append(t.task_id)
    return out


async def stop_all(*rs: Replica) -> None:
    for r in rs:
        await r.stop()


def running(r: Replica, key: str) -> Callable[[], bool]:
    def check() -> bool:
        svc = r.service
        if svc is None or key not in svc.core.job_keys():
            return False
        v = svc.core.view(key)
        return v.state is JobState.RUNNING and all(
            t.state == "TASK_RUNNING" for t in v.tasks)
    return check


def test_takeover_restores_jobs_and_adopts_tasks(zk_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalMesos(mesos_config(tmp_path)) as lm:
            a = replica(lm.master_url, zk_url, "a")
            b = replica(lm.master_url, zk_url, "b")
            await a.start()
            await until(lambda: a.service is not None and a.service.reconciled(),
                        what="a leads")
            await b.start()
            with pytest.raises(NotLeader) as follower:
                await b.get("it/test/none")
            assert follower.value.leader == a.api_address
            view = await a.submit(spec("j1"), "req-1")
            await until(running(a, view.key), what="job running under a")
            first_ids = {t.task_id for t in a.service.core.view(view.key).tasks}  # type: ignore[union-attr]
            await a.scale(view.key, 3)
            # a stops acting and its session ends without a resignation (SIGKILL is in e2e).
            assert a.service is not None
            a.service.halt("test: simulated crash")
            await a.service.stop()
            a._stopping = True
            assert a._client is not None
            a._client.stop()
            await until(running(b, view.key), timeout=20, what="b takes over")
            assert b.service is not None
            v = b.service.core.view(view.key)
            assert v.desired_workers == 3 and v.request_id == "req-1"
            # The tasks a launched were adopted (same ids), not relaunched.
            assert first_ids <= {t.task_id for t in v.tasks}
            assert len(live_masters(lm, view.key)) == 1
            # The same request id is still idempotent under the new leader.
            again = await b.submit(spec("j1"), "req-1")
            assert again.key == view.key
            await b.stop()
            a._client.close()
    asyncio.run(main())


def durable_task_ids(zk: KazooClient, root: str) -> set[str]:
    """Every task id in any task shard under ``root`` (read straight from ZooKeeper)."""
    out: set[str] = set()
    jobs = f"{root}/state/jobs"
    for job in zk.get_children(jobs):
        for child in zk.get_children(f"{jobs}/{job}"):
            if child.startswith("tasks-"):
                data, _ = zk.get(f"{jobs}/{job}/{child}")
                out |= set(json.loads(data)["tasks"])
    return out


def test_tasks_are_durable_before_they_are_launched(zk_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalMesos(mesos_config(tmp_path)) as lm:
            a = replica(lm.master_url, zk_url, "a")
            await a.start()
            await until(lambda: a.service is not None and a.service.reconciled())
            svc = a.service
            assert svc is not None
            addr = parse_zk_url(zk_url)
            zk = KazooClient(addr.hosts)
            zk.start(5)
            checked: list[tuple[set[str], set[str]]] = []
            original = svc.client.launch

            async def launch(offer_ids: Any, infos: Any, refuse: Any = None) -> None:
                ids = {i["task_id"]["value"] for i in infos}
                durable = await asyncio.to_thread(durable_task_ids, zk, addr.path)
                checked.append((ids, durable))
                await original(offer_ids, infos, refuse)

            svc.client.launch = launch  # type: ignore[method-assign]
            try:
                view = await a.submit(spec("j5", workers=3), "req-5")
                await until(running(a, view.key), what="running")
            finally:
                zk.stop()
                zk.close()
            launched = set().union(*(ids for ids, _ in checked))
            assert len(launched) == 4  # the master and three workers
            for ids, durable in checked:
                assert ids <= durable, f"launched before being stored: {ids - durable}"
            assert len(live_masters(lm, view.key)) == 1
            await a.stop()
    asyncio.run(main())


def test_session_expiry_stops_acting_then_new_term(zk_url: str, zk_server: ZooKeeperServer,
                                                   tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalMesos(mesos_config(tmp_path)) as lm:
            a = replica(lm.master_url, zk_url, "a")
            await a.start()
            await until(lambda: a.service is not None and a.service.reconciled())
            view = await a.submit(spec("j2", workers=1), "req-2")
            await until(running(a, view.key), what="running")
            old = a.service
            assert old is not None and a._client is not None
            await asyncio.to_thread(expire_session, a._client, zk_server.hosts)
            # Deposed: the old term stopped acting (no launch, kill or write after this).
            await until(lambda: not old.acting, what="old term halted")
            # kazoo opens a new session; the replica contends again and leads a new term.
            await until(lambda: a.terms >= 2 and a.service is not None, timeout=20,
                        what="new term")
            await until(running(a, view.key), timeout=20, what="job adopted again")
            assert len(live_masters(lm, view.key)) == 1
            await a.stop()
    asyncio.run(main())


def test_zookeeper_restart_mid_run(zk_url: str, zk_server: ZooKeeperServer,
                                   tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalMesos(mesos_config(tmp_path)) as lm:
            a = replica(lm.master_url, zk_url, "a")
            await a.start()
            await until(lambda: a.service is not None and a.service.reconciled())
            view = await a.submit(spec("j3", workers=1), "req-3")
            await until(running(a, view.key), what="running")
            old = a.service
            assert old is not None
            await asyncio.to_thread(zk_server.stop)
            # The connection drops (SUSPENDED): the leader stops acting before ZooKeeper
            # is even back.
            await until(lambda: not old.acting, timeout=5, what="halt on SUSPENDED")
            await asyncio.to_thread(zk_server.start)
            await until(lambda: a.service is not None and a.service is not old
                        and a.service.reconciled(), timeout=30, what="re-elected")
            await until(running(a, view.key), timeout=20, what="job carried on")
            assert len(live_masters(lm, view.key)) == 1
            await a.stop()
    asyncio.run(main())


def test_stale_fence_halts_the_leader(zk_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalMesos(mesos_config(tmp_path)) as lm:
            a = replica(lm.master_url, zk_url, "a")
            await a.start()
            await until(lambda: a.service is not None and a.service.reconciled())
            svc = a.service
            assert svc is not None
            # Someone else took a newer epoch (a successor we have not heard of yet).
            addr = parse_zk_url(zk_url)
            zk = KazooClient(addr.hosts)
            zk.start(5)
            try:
                data, _ = zk.get(f"{addr.path}/epoch")
                zk.set(f"{addr.path}/epoch", str(int(data) + 1).encode())
            finally:
                zk.stop()
                zk.close()
            with pytest.raises(NotLeader):
                await a.submit(spec("j4"), "req-4")
            assert not svc.acting and "Fenced" in svc.halt_reason
            assert live_masters(lm, "it/test/j4") == []
            # It steps down and contends again; alone, it leads a new term from ZooKeeper,
            # where the refused job never arrived.
            await until(lambda: a.service is not None and a.service is not svc
                        and a.service.reconciled(), timeout=20, what="new term")
            assert "it/test/j4" not in a.service.core.job_keys()  # type: ignore[union-attr]
            await a.stop()
    asyncio.run(main())


def test_corrupt_state_is_refused(zk_url: str, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    addr = parse_zk_url(zk_url)
    zk = KazooClient(addr.hosts)
    zk.start(5)
    try:
        zk.create(f"{addr.path}/state/jobs/it.test.bad", b"{not json", makepath=True)
    finally:
        zk.stop()
        zk.close()

    async def main() -> None:
        a = replica("http://127.0.0.1:1", zk_url, "a", recheck_seconds=0.3)
        await a.start()
        await until(lambda: a.refused, what="refusal")
        assert a.service is None
        with pytest.raises(NotLeader, match="refuses to lead"):
            await a.get("it/test/bad")
        # An operator fixes the state: the replica contends again, without a restart.
        fix = KazooClient(addr.hosts)
        fix.start(5)
        try:
            fix.delete(f"{addr.path}/state/jobs/it.test.bad")
        finally:
            fix.stop()
            fix.close()
        await until(lambda: a.service is not None and a.refused is None, timeout=20,
                    what="leading again once the state is fixed")
        await a.stop()
    caplog.set_level("ERROR", logger="corral.replica")
    asyncio.run(main())
    assert "it.test.bad" in (caplog.text or "")
    assert "refusing to lead" in caplog.text


def test_without_zookeeper_the_api_answers_unavailable_at_once(
        zk_server: ZooKeeperServer, zk_url: str) -> None:
    async def main() -> None:
        a = replica("http://127.0.0.1:1", zk_url, "a")
        b = replica("http://127.0.0.1:1", zk_url, "b")
        await a.start()
        await until(lambda: a.service is not None, what="a leads")
        await b.start()
        await until(lambda: b.leader_address(), what="b knows the leader")
        zk_server.stop()
        try:
            for r in (a, b):
                await until(lambda r=r: not r.zookeeper_reachable(), timeout=10,
                            what="ZooKeeper gone")
                started = time.monotonic()
                with pytest.raises(NotLeader, match="cannot reach ZooKeeper"):
                    await r.get("it/test/anything")
                assert time.monotonic() - started < 1.0
        finally:
            zk_server.start()
        await a.stop()
        await b.stop()
    asyncio.run(main())


def test_duplicate_identity_and_unreachable_zookeeper(zk_url: str) -> None:
    async def main() -> None:
        a = replica("http://127.0.0.1:1", zk_url, "same")
        await a.start()
        b = replica("http://127.0.0.1:1", zk_url, "same")
        with pytest.raises(DuplicateIdentity, match="same"):
            await b.start()
        await a.stop()
        dead = f"zk://127.0.0.1:{free_port()}/corral"
        c = replica("http://127.0.0.1:1", dead, "c", connect_within=1.0)
        started = time.monotonic()
        with pytest.raises(ZooKeeperUnavailable, match="cannot reach ZooKeeper"):
            await c.start()
        assert time.monotonic() - started < 10
    asyncio.run(main())


def test_cli_reports_unreachable_zookeeper() -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "corral.runtime.main", "--api", "127.0.0.1:0",
         "--zk", f"zk://127.0.0.1:{port}/corral", "--zk-connect-timeout", "1",
         "--master", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert f"cannot reach ZooKeeper at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "corral.runtime.main", "--api", "127.0.0.1:0",
         "--zk", "http://nope", "--master", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode == 2 and "bad --zk" in bad.stderr and "Traceback" not in bad.stderr

