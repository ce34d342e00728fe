"""Named retry policies for ZooKeeper calls (tenacity), defined in one place.

Every call retried under these policies is idempotent, or is re-planned from freshly read
state before each attempt (see ``state.StateStore.write``), so repeating it after a lost
reply cannot apply a change twice.

``connect_policy``  starting a session: exponential backoff until a deadline (default 30 s).
``operation_policy`` one read or transaction: retried on connection loss and time-outs
                    only (never on session expiry: a new session means a new leader check).
"""

from __future__ import annotations

from kazoo.exceptions import ConnectionLoss, OperationTimeoutError
from kazoo.handlers.threading import KazooTimeoutError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

# Connection loss surfaces as ConnectionLoss from a call, OperationTimeoutError when the
# server is slow to reply, and KazooTimeoutError from ``KazooClient.start``.
TRANSIENT = (ConnectionLoss, OperationTimeoutError, KazooTimeoutError)


def connect_policy(deadline_s: float = 30.0) -> Retrying:
    """Retry session start-up with backoff (0.1 s doubling to 2 s) for ``deadline_s``."""
    return Retrying(
        stop=stop_after_delay(deadline_s),
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
        retry=retry_if_exception_type(TRANSIENT),
        reraise=True,
    )


def operation_policy(
    deadline_s: float = 15.0,
    attempts: int = 20,
    extra: tuple[type[BaseException], ...] = (),
) -> Retrying:
    """Retry one idempotent ZooKeeper operation through a short connection loss (and
    through the caller's own ``extra`` retryable errors)."""
    return Retrying(
        stop=stop_after_delay(deadline_s) | stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
        retry=retry_if_exception_type((*TRANSIENT, *extra)),
        reraise=True,
    )
