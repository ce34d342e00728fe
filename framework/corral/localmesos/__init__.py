"""localmesos: a single-machine Mesos master and agents following the v1 HTTP APIs.

Public API: ``LocalMesos`` (start/stop, ``master_url``, agents, fault injection) and
``LocalMesosConfig``; the CLI is ``corral.localmesos.cli.main``.
"""

from corral.localmesos.cluster import AgentNotFound, LocalMesos, LocalMesosConfig
from corral.localmesos.masters import NoLeader

__all__ = ["AgentNotFound", "LocalMesos", "LocalMesosConfig", "NoLeader"]
