"""Right-sizing: size new workers from what running workers actually use.

Users over-reserve (a "lying factor" of measured/reserved well below 1 is common) and
occasionally under-reserve. For each job we compare the reservation per worker with the
measured peak usage per worker and size *new* workers to ``measured * headroom``, kept
within a band around the user's reservation so a bad measurement cannot starve a job or
balloon it. Running workers keep their reservation: Mesos cannot resize a task.

Only cpus and mem are measured; disk and gpus keep the reservation.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.resources import Resources


@dataclass(frozen=True, slots=True)
class RightSizingConfig:
    """``band_low``/``band_high``: new size as a fraction of the reservation, inclusive.
    ``headroom``: multiplier over measured peak usage. ``enabled``: off keeps reservations.
    """

    enabled: bool = True
    headroom: float = 1.2
    band_low: float = 0.5
    band_high: float = 1.0


@dataclass(frozen=True, slots=True)
class LyingFactor:
    """measured / reserved per dimension; None where nothing was reserved or measured."""

    cpus: float | None
    mem: float | None


def lying_factor(reserved: Resources, measured: Resources | None) -> LyingFactor:
    if measured is None:
        return LyingFactor(None, None)
    cpus = measured.cpus / reserved.cpus if reserved.cpus > 0 else None
    mem = measured.mem / reserved.mem if reserved.mem > 0 else None
    return LyingFactor(cpus, mem)


def rightsize(
    reserved: Resources, measured: Resources | None, cfg: RightSizingConfig,
) -> Resources:
    """The per-worker reservation for new workers of a job."""
    if not cfg.enabled or measured is None:
        return reserved
    return Resources(
        cpus=_banded(reserved.cpus, measured.cpus, cfg),
        mem=_banded(reserved.mem, measured.mem, cfg),
        disk=reserved.disk,
        gpus=reserved.gpus,
    )


def _banded(reserved: float, measured: float, cfg: RightSizingConfig) -> float:
    if reserved <= 0:
        return reserved
    want = measured * cfg.headroom
    return min(reserved * cfg.band_high, max(reserved * cfg.band_low, want))
