"""Every retry and backoff rule of the Mesos client, named and defined in one place.

Two call policies, chosen per call type by whether repeating it is harmless:

* ``SAFE`` retries only failures where the master cannot have acted on the request: the
  TCP connect failed, or it answered 503 (no leader / recovering). ACCEPT and MESSAGE use
  it, because a repeated ACCEPT of an offer the first attempt already used would make the
  master report the launched tasks TASK_LOST (REASON_INVALID_OFFERS).
* ``IDEMPOTENT`` also retries ambiguous failures (timeout or disconnect after sending):
  DECLINE, REVIVE, SUPPRESS, KILL, SHUTDOWN, ACKNOWLEDGE, RECONCILE and TEARDOWN have the
  same effect when applied twice.

A 307 answer is followed (to its Location) within the same attempt budget; any other 4xx
is the caller's bug and is never retried. Reconnecting the event stream is not a retry
of one request but a supervision loop, so it has its own ``Backoff`` (exponential, capped,
seeded jitter, reset by a healthy subscription).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from corral.mesos.errors import MasterUnavailable

log = logging.getLogger("corral.mesos.retry")


class Redirected(Exception):
    """A call was answered 307; retry it at ``location`` (the leading master)."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(f"redirected to {location}")


def _never_reached_master(exc: BaseException) -> bool:
    # ClientConnectorError: the connection was never established, nothing was sent.
    return isinstance(exc, MasterUnavailable | Redirected | aiohttp.ClientConnectorError)


def _transient(exc: BaseException) -> bool:
    return _never_reached_master(exc) or isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError)


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """A named tenacity policy for one class of scheduler calls."""

    name: str
    retry_on: Callable[[BaseException], bool]
    attempts: int = 4
    wait_initial: float = 0.2
    wait_max: float = 2.0

    def with_limits(self, attempts: int, wait_initial: float, wait_max: float) -> CallPolicy:
        return CallPolicy(self.name, self.retry_on, attempts, wait_initial, wait_max)

    def retrying(self) -> AsyncRetrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("mesos call retry (%s policy) attempt %d after %r",
                     self.name, state.attempt_number, exc)

        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.wait_initial, max=self.wait_max),
            retry=retry_if_exception(self.retry_on),
            before_sleep=before_sleep,
            reraise=True,
        )


SAFE = CallPolicy("safe", _never_reached_master)
IDEMPOTENT = CallPolicy("idempotent", _transient)

# Which policy each call type runs under. Anything not listed is SAFE.
POLICY_BY_CALL: dict[str, CallPolicy] = {
    "ACCEPT": SAFE,
    "MESSAGE": SAFE,
    "DECLINE": IDEMPOTENT,
    "ACCEPT_INVERSE_OFFERS": IDEMPOTENT,
    "DECLINE_INVERSE_OFFERS": IDEMPOTENT,
    "REVIVE": IDEMPOTENT,
    "SUPPRESS": IDEMPOTENT,
    "KILL": IDEMPOTENT,
    "SHUTDOWN": IDEMPOTENT,
    "ACKNOWLEDGE": IDEMPOTENT,
    "RECONCILE": IDEMPOTENT,
    "TEARDOWN": IDEMPOTENT,
}


class Backoff:
    """Exponential reconnect delays: ``initial * 2**n`` capped at ``maximum``, with jitter.

    Jitter spreads many schedulers reconnecting to a restarted master; it comes from a
    seeded ``random.Random`` so a run can be replayed. Each delay lies in [d/2, d].
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        d = min(self.maximum, self.initial * (2.0 ** min(self.failures, 60)))
        self.failures += 1
        return d * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.failures = 0
