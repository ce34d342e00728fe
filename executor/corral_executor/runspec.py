"""The task's run spec: what the scheduler puts in ``TaskInfo.data``.

On the wire ``data`` is base64 of a JSON object::

    {"command": "python3 -m job --flag", "env": {"CORRAL_JOB": "role/env/name", ...},
     "grace_seconds": 10.0, "usage_interval_seconds": 5.0}

Only ``command`` is required. Parsing is strict and reports what is wrong, because a bad
spec turns into a TASK_FAILED whose message is all the user sees.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_USAGE_INTERVAL_SECONDS = 5.0


class RunSpecError(ValueError):
    """``TaskInfo.data`` does not hold a valid run spec."""


@dataclass(frozen=True)
class RunSpec:
    command: str
    env: dict[str, str] = field(default_factory=dict)
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    usage_interval_seconds: float = DEFAULT_USAGE_INTERVAL_SECONDS


def _positive(doc: dict[str, Any], key: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunSpecError(f"run spec {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise RunSpecError(f"run spec {key!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_run_spec(data_b64: str | None) -> RunSpec:
    """Decode and validate ``TaskInfo.data`` (base64 JSON)."""
    if not data_b64:
        raise RunSpecError("task has no data: expected a base64 JSON run spec")
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RunSpecError(f"task data is not base64: {exc}") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RunSpecError(f"task data is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RunSpecError("run spec must be a JSON object")
    command = doc.get("command")
    if not isinstance(command, str) or not command.strip():
        raise RunSpecError("run spec 'command' must be a non-empty string")
    env = doc.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise RunSpecError("run spec 'env' must map strings to strings")
    return RunSpec(
        command=command,
        env=dict(env),
        grace_seconds=_positive(doc, "grace_seconds", DEFAULT_GRACE_SECONDS),
        usage_interval_seconds=_positive(
            doc, "usage_interval_seconds", DEFAULT_USAGE_INTERVAL_SECONDS
        ),
    )


def encode_run_spec(doc: dict[str, Any]) -> str:
    """base64 JSON of a run spec document (for schedulers and tests)."""
    return base64.b64encode(json.dumps(doc).encode()).decode()
