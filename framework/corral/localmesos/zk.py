"""Registering the localmesos master in ZooKeeper the way Mesos masters do.

A Mesos master announces itself as an EPHEMERAL|SEQUENTIAL child ``json.info_<10 digits>``
of the ``zk://`` path, holding its MasterInfo as JSON; detectors pick the lowest sequence
number. kazoo appends the 10-digit suffix. The node vanishes with the session, so a
crashed localmesos is no longer "leading".
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

from kazoo.client import KazooClient


def parse_zk_url(url: str) -> tuple[str, str]:
    """``zk://h1:p1,h2:p2/mesos`` → (``h1:p1,h2:p2``, ``/mesos``)."""
    parsed = urlparse(url)
    if parsed.scheme != "zk" or not parsed.netloc:
        raise ValueError(f"not a zk:// URL: {url!r}")
    path = parsed.path.rstrip("/") or "/"
    return parsed.netloc, path


class ZkRegistration:
    def __init__(self, url: str, master_info: dict[str, Any], timeout: float = 10.0) -> None:
        self.hosts, self.path = parse_zk_url(url)
        self.master_info = master_info
        self.timeout = timeout
        self.client: KazooClient | None = None
        self.node: str | None = None

    def register(self) -> str:
        """Connect and create the ephemeral sequential node; its full path."""
        self.client = KazooClient(hosts=self.hosts, timeout=self.timeout)
        self.client.start(timeout=self.timeout)
        prefix = self.path.rstrip("/") + "/json.info_"
        self.node = self.client.create(prefix, json.dumps(self.master_info).encode(),
                                       ephemeral=True, sequence=True, makepath=True)
        return self.node

    def close(self) -> None:
        if self.client is not None:
            self.client.stop()
            self.client.close()
            self.client = None
