"""The scheduler process's policy for Python's cyclic garbage collector.

CPython frees almost everything by reference counting; the cyclic collector exists for
reference cycles. Its oldest generation is walked whole whenever it has grown by a
quarter, and at 100,000 running tasks the core's state is ~1.3 million objects: one such
pass stops the event loop for ~200 ms, at a moment allocation chooses (in a status
update, an offers event, a policy tick or an API call).

The core leaves no cycles behind (a dropped job is unlinked: ``CoreState.let_go``), so
the objects that live long need not be walked again and again. This policy:

- every ``freeze_every_s``, after collecting the young generations (so young cycles are
  freed, not kept), moves every surviving object to the permanent generation
  (``gc.freeze``): later passes walk only what was allocated since;
- once every ``full_every_s``, or once the objects frozen since the last full pass
  number ``growth`` times those it left (a heap that grew, or turned over, that much),
  unfreezes and collects everything once (cycles among long-lived objects made outside
  the core, e.g. by libraries, are freed then) and freezes again.

Nothing here walks the frozen heap except the full pass: the freeze counts only what it
freezes (``gc.get_freeze_count`` walks every frozen object, ~1.3 million at 100,000
tasks, so it is read only after a full pass).

Frozen objects are still freed by reference counting when nothing refers to them; only
cycles among them wait for the next full pass. The full pass is the one pause left (its
length is logged); between full passes the collector's pauses cover a few seconds of
allocation. ``corral-scheduler --gc-full-every 0`` leaves Python's defaults alone.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Frozen objects may grow this much (besides ``growth``) before a full pass: a small heap
# is not worth one.
_MIN_GROWTH = 100_000


@dataclass
class GcPolicy:
    """When to freeze the heap and when to collect it whole (see the module docstring).
    ``after_turn`` is called by the shell after each turn of the core loop."""

    freeze_every_s: float = 5.0
    full_every_s: float = 3600.0
    growth: float = 0.5
    full_passes: int = 0
    last_full_s: float = 0.0             # how long the last full pass took
    _frozen_at: float = field(default=float("-inf"), repr=False)
    _full_at: float | None = field(default=None, repr=False)
    _base: int = field(default=0, repr=False)   # frozen objects after the last full pass
    _since: int = field(default=0, repr=False)  # objects frozen since then

    def __post_init__(self) -> None:
        if not self.freeze_every_s > 0 or not self.full_every_s > 0:
            raise ValueError("freeze_every_s and full_every_s must be positive")
        if not self.growth > 0:
            raise ValueError("growth must be positive")

    def after_turn(self, now: float | None = None) -> None:
        """Freeze or collect if it is time (``now``: a monotonic clock's seconds)."""
        now = time.monotonic() if now is None else now
        if self._full_at is None or now - self._full_at >= self.full_every_s \
                or self._since > self._base * self.growth + _MIN_GROWTH:
            self.full(now)
        elif now - self._frozen_at >= self.freeze_every_s:
            gc.collect(1)
            self._since += sum(len(gc.get_objects(g)) for g in range(3))
            gc.freeze()
            self._frozen_at = now

    def full(self, now: float) -> None:
        """Collect everything once, then freeze what survives."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.last_full_s = time.perf_counter() - started
        self.full_passes += 1
        self._base = gc.get_freeze_count()
        self._since = 0
        self._full_at = self._frozen_at = now
        log.info("garbage collector: full pass over %d objects in %.0f ms (%d freed)",
                 self._base, self.last_full_s * 1e3, freed)

    def stop(self) -> None:
        """Give the heap back to Python's own collector (the process goes on without
        this policy)."""
        gc.unfreeze()
        self._full_at = None
