"""Parsing of Mesos duration strings such as ``2secs``, ``15mins`` or ``250ms``.

The agent passes durations to executors in environment variables
(``MESOS_RECOVERY_TIMEOUT``, ``MESOS_SUBSCRIPTION_BACKOFF_MAX``,
``MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD``) in stout's ``Duration`` text form: a decimal
number followed by one of ns, us, ms, secs, mins, hrs, days, weeks.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 7 * 86400.0,
}
_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a Mesos duration string; ``ValueError`` with the offending text if bad."""
    match = _RE.match(text or "")
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(
            f"not a Mesos duration: {text!r} (expected e.g. '2secs', '15mins', '250ms')"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def duration_env(env: dict[str, str], name: str, default: float) -> float:
    """Seconds from ``env[name]`` or ``default`` when unset or empty."""
    raw = env.get(name, "")
    return parse_duration(raw) if raw.strip() else default
