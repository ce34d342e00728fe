"""Parse ``zk://host:port[,host:port...]/path`` URLs into the hosts kazoo takes and a root.

The path is Corral's root znode (``/corral`` by default); everything Corral writes lives
under it, so several Corral clusters can share one ZooKeeper ensemble.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORT = 2181
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
# ZooKeeper forbids these in path components; "." and ".." are forbidden as whole names.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ZkAddress:
    """``hosts``: ``"h1:p1,h2:p2"`` for kazoo; ``path``: the absolute root znode."""

    hosts: str
    path: str

    def __str__(self) -> str:
        return f"zk://{self.hosts}{self.path}"


def _host_port(item: str, url: str) -> str:
    if not item:
        raise ValueError(f"{url!r}: empty host in the host list")
    host, sep, port_s = item.rpartition(":")
    if not sep:
        host, port_s = item, str(DEFAULT_PORT)
    if not _HOST_RE.match(host):
        raise ValueError(f"{url!r}: {host!r} is not a valid host name or IPv4 address")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{url!r}: port {port_s!r} must be a number from 1 to 65535")
    return f"{host}:{int(port_s)}"


def parse_zk_url(url: str, default_path: str = "/corral") -> ZkAddress:
    """Parse ``zk://h1:p1,h2:p2/corral``; a missing port means 2181, a missing path
    ``default_path``. Raises ``ValueError`` saying what is wrong."""
    if not isinstance(url, str) or not url.startswith("zk://"):
        raise ValueError(f"{url!r}: a ZooKeeper URL looks like zk://host:2181/corral")
    rest = url[len("zk://"):]
    if "@" in rest.split("/", 1)[0]:
        raise ValueError(f"{url!r}: credentials in ZooKeeper URLs are not supported")
    hosts_part, slash, path = rest.partition("/")
    if not hosts_part:
        raise ValueError(f"{url!r}: no hosts; a ZooKeeper URL looks like zk://host:2181/corral")
    hosts = ",".join(_host_port(h.strip(), url) for h in hosts_part.split(","))
    path = "/" + path.strip("/") if slash and path.strip("/") else default_path
    for part in path.strip("/").split("/"):
        if part in ("", ".", "..") or _BAD_PATH_CHARS.search(part):
            raise ValueError(f"{url!r}: {path!r} is not a valid znode path")
    if "?" in path or "#" in path:
        raise ValueError(f"{url!r}: query strings and fragments are not supported")
    return ZkAddress(hosts=hosts, path=path)
