"""Fixtures for integration tests: a real ZooKeeper (see ``tests/zk.py``)."""

from tests.zk import zk_server, zk_url

__all__ = ["zk_server", "zk_url"]
