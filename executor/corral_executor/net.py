"""One network check shared by the runners and the scheduler: whether anything accepts
TCP connections at ``host:port`` (an IPv6 host may be bracketed)."""

from __future__ import annotations

import socket


def accepts_connections(address: str, timeout: float = 1.0) -> bool:
    """True if a TCP connection to ``address`` succeeds within ``timeout`` seconds; False
    on any failure, including an address that is not ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
