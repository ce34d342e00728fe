"""The Resources value type: scalar amounts a task needs or an offer holds.

Mesos scalars carry three decimals of precision, so amounts are rounded to 1/1000 on
construction and arithmetic never drifts. Ports are not scalars; they live on ``Offer``
and ``TaskTemplate`` as counts and ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

# Amounts are quantised to Mesos' three decimals: an integer number of thousandths,
# divided by 1000 (the nearest double to the three-decimal value).
_SCALE = 1000


@dataclass(frozen=True, slots=True, init=False)
class Resources:
    """Amounts of cpus, mem (MiB), disk (MiB) and gpus."""

    cpus: float
    mem: float
    disk: float
    gpus: float

    def __init__(self, cpus: float = 0.0, mem: float = 0.0, disk: float = 0.0,
                 gpus: float = 0.0) -> None:
        # Hand-written (no dataclass __post_init__ walking fields): values are built on
        # every offer, launch and policy pass.
        # Spelled out per field: this runs ~10^5 times per policy pass at 100,000 tasks.
        setter = object.__setattr__
        setter(self, "cpus", round(cpus * _SCALE) / _SCALE)
        setter(self, "mem", round(mem * _SCALE) / _SCALE)
        setter(self, "disk", round(disk * _SCALE) / _SCALE)
        setter(self, "gpus", round(gpus * _SCALE) / _SCALE)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus + other.cpus, self.mem + other.mem,
            self.disk + other.disk, self.gpus + other.gpus,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus - other.cpus, self.mem - other.mem,
            self.disk - other.disk, self.gpus - other.gpus,
        )

    def scale(self, k: float) -> Resources:
        return Resources(self.cpus * k, self.mem * k, self.disk * k, self.gpus * k)

    def fits(self, other: Resources) -> bool:
        """True if ``self`` fits inside ``other``."""
        return (
            self.cpus <= other.cpus and self.mem <= other.mem
            and self.disk <= other.disk and self.gpus <= other.gpus
        )

    def is_empty(self) -> bool:
        return self.cpus <= 0 and self.mem <= 0 and self.disk <= 0 and self.gpus <= 0

    def nonnegative(self) -> bool:
        return self.cpus >= 0 and self.mem >= 0 and self.disk >= 0 and self.gpus >= 0

    def dominant_share(self, total: Resources) -> float:
        """The largest fraction of ``total`` this takes in any dimension (DRF)."""
        share = 0.0
        for mine, whole in (
            (self.cpus, total.cpus), (self.mem, total.mem),
            (self.disk, total.disk), (self.gpus, total.gpus),
        ):
            if whole > 0:
                share = max(share, mine / whole)
        return share

    def as_dict(self) -> dict[str, float]:
        return {"cpus": self.cpus, "mem": self.mem, "disk": self.disk, "gpus": self.gpus}


ZERO = Resources()
