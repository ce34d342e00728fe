"""Fixtures for integration tests: a real ZooKeeper (see ``tests/zk.py``) and a real
PostgreSQL (``tests/pg.py``)."""

from tests.pg import pg_server, pg_url
from tests.zk import zk_server, zk_url

__all__ = ["pg_server", "pg_url", "zk_server", "zk_url"]
