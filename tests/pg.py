"""A real PostgreSQL for tests: Debian's ``postgresql`` package, started on a free loopback
port in a fresh data directory, stopped and restarted at will (outages), removed after.

PostgreSQL refuses to run as root; as root (CI) the server runs as the package's
``postgres`` user through ``runuser``. The fixture ``pg_server`` (one per test session)
and ``pg_url`` (a fresh database per test) are registered by the conftest files that
import them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.zk import free_port

INSTALL_HINT = "apt-get install postgresql"


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


class PostgresServer:
    """One PostgreSQL server; ``stop()`` then ``start()`` keeps its port and data."""

    def __init__(self, port: int | None = None) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL is not installed: run `{INSTALL_HINT}`")
        self.bin = bindir
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://corral@127.0.0.1:{self.port}/postgres"

    def db_url(self, name: str) -> str:
        return f"postgresql://corral@127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if not self.data.exists():
            subprocess.run([*self._as, str(self.bin / "initdb"), "-D", str(self.data),
                            "-U", "corral", "--auth=trust", "-E", "UTF8", "--no-sync"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=120)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self._proc = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p",
             str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.base}", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        import psycopg

        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_path.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.url, connect_timeout=1):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are cut off, as in an outage."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 2)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)

    def create_db(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.db_url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if pg_bin() is None:
        pytest.fail(f"PostgreSQL is not installed: run `{INSTALL_HINT}`")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    if not pg_server.running:
        pg_server.start()
    return pg_server.create_db()
