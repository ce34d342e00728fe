"""Right-sizing: size new workers from what running workers actually use.

Users over-reserve (a "lying factor" of measured/reserved well below 1 is common) and
occasionally under-reserve. For each job we compare the reservation per worker with what
its workers were measured to use (the executors' usage samples: CPU and resident memory)
and size *new* workers to the ``percentile`` of the samples times ``headroom``, kept
within a band around the user's reservation so a bad measurement cannot starve a job or
balloon it, and never below the most any worker of the job was seen to use (``peak``).
Running workers keep their reservation: Mesos cannot resize a task.

Only cpus and mem are measured; disk and gpus keep the reservation. Sizes are rounded up
(cpus to 0.01, memory to whole MiB) so a size never lands below its own measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral.core.resources import Resources


@dataclass(frozen=True, slots=True)
class RightSizingConfig:
    """``band_low``/``band_high``: new size as a fraction of the reservation, inclusive.
    ``headroom``: multiplier over the measured percentile. ``percentile``: of the samples
    (0..100). ``min_samples``: samples a job needs before it is right-sized; ``window``:
    the latest samples kept per job. ``enabled``: off keeps reservations."""

    enabled: bool = True
    headroom: float = 1.2
    band_low: float = 0.5
    band_high: float = 1.0
    percentile: float = 95.0
    min_samples: int = 6
    window: int = 240


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


def percentile(xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile of ``xs`` (nearest rank; 0 for no samples)."""
    if not xs:
        return 0.0
    ordered = sorted(xs)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rightsize(
    reserved: Resources, measured: Resources | None, cfg: RightSizingConfig,
    peak: Resources | None = None,
) -> Resources:
    """The per-worker reservation for new workers of a job: ``measured`` (the job's
    percentile) times the headroom, within the band, never below ``peak``."""
    if not cfg.enabled or measured is None:
        return reserved
    return Resources(
        cpus=_banded(reserved.cpus, measured.cpus, peak.cpus if peak else 0.0, cfg, 100),
        mem=_banded(reserved.mem, measured.mem, peak.mem if peak else 0.0, cfg, 1),
        disk=reserved.disk,
        gpus=reserved.gpus,
    )


def _banded(reserved: float, measured: float, peak: float, cfg: RightSizingConfig,
            steps: int) -> float:
    if reserved <= 0:
        return reserved
    want = max(measured * cfg.headroom, peak)
    size = min(reserved * cfg.band_high, max(reserved * cfg.band_low, want))
    # Up to the next step (0.01 cpus, 1 MiB); a tiny epsilon keeps exact fits exact.
    return min(reserved * max(cfg.band_high, 1.0), math.ceil(size * steps - 1e-9) / steps)


def explain(reserved: Resources, size: Resources, measured: Resources,
            cfg: RightSizingConfig, samples: int) -> str:
    """Words for ``corral status``: e.g. ``right-sized to 0.6 cpus from 1, 300 MiB from
    512: used 0.45 cpus, 210 MiB p95 of 40 samples``."""
    parts = []
    if size.cpus != reserved.cpus:
        parts.append(f"{size.cpus:g} cpus from {reserved.cpus:g}")
    if size.mem != reserved.mem:
        parts.append(f"{size.mem:g} MiB from {reserved.mem:g}")
    used = (f"used {measured.cpus:.2f} cpus, {measured.mem:.0f} MiB "
            f"p{cfg.percentile:g} of {samples} samples")
    if not parts:
        return f"reservation kept: {used}"
    return f"right-sized to {', '.join(parts)}: {used}"
