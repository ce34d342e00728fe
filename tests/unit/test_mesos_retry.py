"""corral.mesos.retry: which failures each named policy retries, and the reconnect backoff."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from corral.mesos.errors import MasterUnavailable, MesosCallError, NotConnected
from corral.mesos.retry import IDEMPOTENT, POLICY_BY_CALL, SAFE, Backoff, Redirected


def connector_error() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "refused"))


def test_safe_policy_retries_only_what_never_reached_the_master() -> None:
    assert SAFE.retry_on(MasterUnavailable("503"))
    assert SAFE.retry_on(Redirected("http://m:1"))
    assert SAFE.retry_on(connector_error())
    # Ambiguous: the master may have acted, so an ACCEPT must not be repeated.
    assert not SAFE.retry_on(aiohttp.ServerDisconnectedError())
    assert not SAFE.retry_on(TimeoutError())
    for never in (MesosCallError(400, "bad"), NotConnected("x"), ValueError("x")):
        assert not SAFE.retry_on(never)
        assert not IDEMPOTENT.retry_on(never)


def test_idempotent_policy_also_retries_ambiguous_failures() -> None:
    for exc in (MasterUnavailable("503"), connector_error(), aiohttp.ServerDisconnectedError(),
                TimeoutError(), aiohttp.ClientPayloadError("cut")):
        assert IDEMPOTENT.retry_on(exc)


def test_policy_table() -> None:
    assert POLICY_BY_CALL["ACCEPT"] is SAFE
    assert POLICY_BY_CALL["MESSAGE"] is SAFE
    for kind in ("DECLINE", "KILL", "ACKNOWLEDGE", "RECONCILE", "REVIVE", "SUPPRESS",
                 "SHUTDOWN", "TEARDOWN"):
        assert POLICY_BY_CALL[kind] is IDEMPOTENT


def test_policy_stops_after_attempts_and_reraises() -> None:
    attempts = 0

    async def main() -> None:
        nonlocal attempts
        async for attempt in IDEMPOTENT.with_limits(3, 0.001, 0.002).retrying():
            with attempt:
                attempts += 1
                raise MasterUnavailable("still 503")

    with pytest.raises(MasterUnavailable):
        asyncio.run(main())
    assert attempts == 3


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    caps = [0.5, 1, 2, 4, 4, 4, 4, 4]
    for d, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= d <= cap
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5
    # Seeded: the same seed gives the same sequence.
    b1, b2 = Backoff(1, 15, random.Random("x")), Backoff(1, 15, random.Random("x"))
    assert [b1.next_delay() for _ in range(5)] == [b2.next_delay() for _ in range(5)]
    with pytest.raises(ValueError):
        Backoff(0, 1, random.Random())
    with pytest.raises(ValueError):
        Backoff(2, 1, random.Random())
