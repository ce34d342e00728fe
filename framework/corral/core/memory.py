"""The elastic policy's memory of one job: what it must remember between passes, and what
a new leader restores so a failover does not reset it.

The policy (``core.elastic``) reads a job's ``PolicyMemory`` at every pass and writes a new
one back through ``CoreState.set_policy``; it travels with the job's durable intent
(``core.intent.JobIntent.policy``), so after a failover the cooldowns still run from the
last change, the measured throughput is not measured again from nothing, the preemptions
the job suffered still count against its role's budget, and new workers keep their
right-sized reservation.

Vocabulary:

* *load target*: the policy's previous (dampened) load target; the base the next pass
  dampens against.
* *rate*: the job's throughput as measured from its progress reports: the ``done`` count
  at ``rate_at``, and the smoothed units per second (``rate_per_s``; valid once
  ``rate_measured``).
* *preempted_at*: times the policy preempted one of the job's workers, within the
  preemption window (one entry per victim); a role's budget counts its jobs' entries.
* *worker_size*: the right-sized reservation of new workers (None: the spec's), with the
  words that explain it and the largest use any worker was seen at (``peak``), below
  which a new size never goes.

Pure data: frozen, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.resources import Resources


@dataclass(frozen=True, slots=True)
class PolicyMemory:
    """What the elastic policy remembers about one job (see the module docstring)."""

    last_up_at: float | None = None
    last_down_at: float | None = None
    load_target: int | None = None
    rate_at: float | None = None
    rate_done: int = 0
    rate_per_s: float = 0.0
    rate_measured: bool = False
    preempted_at: tuple[float, ...] = ()
    worker_size: Resources | None = None
    size_reason: str = ""
    peak: Resources | None = None

    def is_empty(self) -> bool:
        return self == EMPTY_MEMORY


EMPTY_MEMORY = PolicyMemory()


@dataclass(frozen=True, slots=True)
class PolicyAction:
    """One worker the policy stopped, and why (shown by ``corral status``).

    ``kind``: ``preempted`` (taken for another role's fair share) or ``retired`` (the job's
    target fell: load, scaling by request, spares no longer needed)."""

    at: float
    kind: str
    slot: str
    task_id: str
    why: str


PREEMPTED = "preempted"
RETIRED = "retired"
