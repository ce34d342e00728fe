"""ZooKeeper registration against a real standalone ZooKeeper (Debian package)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.localmesos.helpers import async_test, cluster

ZK_JAR = "/usr/share/java/zookeeper.jar"
pytestmark = [pytest.mark.zk,
              pytest.mark.skipif(not os.path.exists(ZK_JAR), reason="no Debian zookeeper")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def zk_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d: Path = tmp_path_factory.mktemp("zk")
    port = _free_port()
    (d / "zoo.cfg").write_text(f"tickTime=500\ndataDir={d}/data\nclientPort={port}\n"
                               "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n")
    proc = subprocess.Popen(
        ["java", "-cp", f"{ZK_JAR}:/usr/share/java/*",
         "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(d / "zoo.cfg")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_master_registers_ephemeral_sequential_json_info(zk_hosts: str) -> None:
    zk = KazooClient(hosts=zk_hosts)
    zk.start(timeout=15)

    @async_test
    async def body() -> None:
        async with cluster(agents=0, zk=f"zk://{zk_hosts}/mesos") as lm:
            children = zk.get_children("/mesos")
            assert len(children) == 1 and children[0].startswith("json.info_")
            assert len(children[0]) == len("json.info_") + 10
            data, stat = zk.get("/mesos/" + children[0])
            assert stat.ephemeralOwner != 0
            info = json.loads(data)
            assert info["id"] == lm.master.id and info["port"] == lm.master.port
            assert info["address"] == {"hostname": "127.0.0.1", "ip": "127.0.0.1",
                                       "port": lm.master.port}
            assert info["version"] == "1.11.0"
        # After stop the ephemeral node is gone with the session.
        assert zk.get_children("/mesos") == []

    try:
        body()
    finally:
        zk.stop()
        zk.close()
