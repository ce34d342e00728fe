"""A real, standalone ZooKeeper for tests: start, stop, restart, expire sessions.

``ZooKeeperServer`` runs Debian's ``zookeeper`` package (``QuorumPeerMain`` with a one-node
config) as a subprocess on a free loopback port, with a 200 ms tick so tests may use
sessions of a second or two. The pytest fixtures ``zk_server`` (one server per test session)
and ``zk_url`` (a fresh ``zk://127.0.0.1:PORT/test-<uuid>`` root per test) are defined here
and registered by ``tests/integration/conftest.py``; other test directories import them the
same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
INSTALL_HINT = "apt-get install zookeeper"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def four_letter(port: int, word: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command (``ruok``, ``srvr``, ``cons``) and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """One standalone ZooKeeper process; ``restart()`` keeps its port and data."""

    def __init__(self, base_dir: Path, port: int | None = None, tick_ms: int = 200) -> None:
        if not ZOOKEEPER_JAR.exists():
            raise RuntimeError(f"ZooKeeper is not installed ({ZOOKEEPER_JAR} missing): "
                               f"run `{INSTALL_HINT}`")
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.tick_ms = tick_ms
        self.data_dir = self.base_dir / "data"
        self.config = self.base_dir / "zoo.cfg"
        self.log_path = self.base_dir / "zookeeper.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"tickTime={self.tick_ms}\n"
            f"dataDir={self.data_dir}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=*\n"
            "maxSessionTimeout=60000\n"
            # A fast restart must not wait on the previous process's log preallocation.
            "preAllocSize=1024\n"
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait (at most ``timeout`` s) until it answers ``imok``."""
        if self.running:
            return
        self._write_config()
        classpath = f"{ZOOKEEPER_JAR}:/usr/share/java/*"
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-cp", classpath,
                 "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self._proc.returncode}; "
                                   f"log {self.log_path}:\n{self._log_tail()}")
            try:
                if four_letter(self.port, "ruok", timeout=0.5) == "imok":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ZooKeeper on {self.hosts} not ready after {timeout:g} s; "
                           f"log {self.log_path}:\n{self._log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def expire_session(client: KazooClient, hosts: str, timeout: float = 10.0) -> None:
    """Make ZooKeeper expire ``client``'s session, and wait until the client knows it.

    A second client that attaches to the same session id and password and then closes it
    ends the session on the server; the first client then sees LOST (kazoo's own test
    harness does the same).
    """
    lost = threading.Event()

    def listener(state: KazooState) -> bool:
        if state == KazooState.LOST:
            lost.set()
            return True  # remove this listener
        return False

    client.add_listener(listener)
    deadline = time.monotonic() + timeout
    try:
        while not lost.is_set() and time.monotonic() < deadline:
            other = KazooClient(hosts, client_id=client.client_id, timeout=1.0)
            try:
                other.start(timeout=2.0)
                other.stop()
            except Exception:  # a failed attempt is simply retried
                pass
            finally:
                other.close()
            lost.wait(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        client.remove_listener(listener)
    if not lost.is_set():
        raise TimeoutError(f"session {client.client_id[0]:#x} did not expire in {timeout:g} s")


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper for the whole test session."""
    if not ZOOKEEPER_JAR.exists():
        pytest.fail(f"ZooKeeper is not installed ({ZOOKEEPER_JAR} missing): run "
                    f"`{INSTALL_HINT}`", pytrace=False)
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zk_url(zk_server: ZooKeeperServer) -> str:
    """A fresh root on the session's ZooKeeper, so tests never see each other's znodes."""
    if not zk_server.running:
        # A test that stopped the shared server must not break the tests after it.
        zk_server.start()
    return f"zk://{zk_server.hosts}/test-{uuid.uuid4().hex[:12]}"


def java_processes_for(server: ZooKeeperServer) -> list[int]:
    """Pids of running java processes using ``server``'s config (leftover checks)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(server.config).encode() in cmd:
            out.append(int(pid))
    return out
