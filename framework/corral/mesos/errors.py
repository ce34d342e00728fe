"""The exceptions the Mesos scheduler client raises, in one place.

The runtime shell catches these by type: ``NotConnected`` means "no live subscription,
try again after the next SUBSCRIBED", ``MesosCallError`` means the master refused a call,
``FrameworkRemoved`` means the framework id is dead for good and a new one is needed,
``AuthenticationFailed`` that the principal or secret is wrong.
"""

from __future__ import annotations


class MesosError(Exception):
    """Base class for every error of the Mesos client."""


class NotConnected(MesosError):
    """A call was made while there is no live subscription (or it ended mid-call)."""


class MesosCallError(MesosError):
    """The master answered a call with an unexpected HTTP status."""

    def __init__(self, status: int, body: str, call: str = "") -> None:
        self.status = status
        self.body = body
        self.call = call
        what = f"{call} " if call else ""
        super().__init__(f"Mesos {what}call failed: HTTP {status}: {body.strip()[:500]}")


class AuthenticationFailed(MesosCallError):
    """The master refused our credentials (HTTP 401), or refused our principal.

    Retrying with the same principal and secret cannot help: the operator must fix them.
    """


class MasterUnavailable(MesosError):
    """The master could not be reached or is not ready (no leader, recovering: 503)."""


class FrameworkRemoved(MesosError):
    """The master removed the framework (TEARDOWN or failover timeout expired).

    The framework id must not be used again; its tasks are gone.
    """

    def __init__(self, framework_id: str | None, message: str) -> None:
        self.framework_id = framework_id
        self.message = message
        super().__init__(f"framework {framework_id} was removed by the master: {message}")


class FrameworkFailedOver(MesosError):
    """Another scheduler subscribed with our framework id and took the stream from us."""

    def __init__(self, framework_id: str | None, message: str) -> None:
        self.framework_id = framework_id
        self.message = message
        super().__init__(f"framework {framework_id} failed over to another scheduler: {message}")
