"""Counts of slots and attempts by role, tier, kind and ``Life``, kept as they change.

What the metrics page shows as "tasks by state" must not cost a walk over every task per
scrape (the core holds 100k of them). ``Tally`` is a counter the state's mutators keep:
an attempt counts under its ``Life`` from ``add_attempt`` until it ends (``ENDED`` is not
counted) or leaves the core; a slot with no current attempt counts under its vacancy
while that is ``PENDING``, ``WAITING`` or ``BACKOFF`` (``EMPTY`` and ``COMPLETED`` slots
are not tasks anyone waits for). ``expected`` recounts from scratch, for ``validate``.

Pure; a key is ``(role, tier, kind, life)``, all strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from corral.core.slot_state import Life

if TYPE_CHECKING:
    from corral.core.state import Attempt, Job, Slot

Key = tuple[str, str, str, str]

COUNTED_VACANCIES = frozenset({Life.PENDING, Life.WAITING, Life.BACKOFF})


def _key(job: Job, kind: str, life: Life) -> Key:
    # Tier, TaskKind and Life are StrEnums: their members are the strings themselves
    # (equal and hashing alike), so no ``.value`` lookups on this hot path.
    return (job.spec.role, job.spec.tier, kind, life)


class Tally:
    """``(role, tier, kind, life) -> count`` of live slots and attempts."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()

    def _add(self, key: Key, n: int) -> None:
        c = self.counts[key] + n
        if c:
            self.counts[key] = c
        else:
            del self.counts[key]

    def attempt(self, att: Attempt, life: Life, n: int) -> None:
        """Count (n=+1) or uncount (n=-1) ``att`` under ``life``."""
        if life is not Life.ENDED:
            self._add(_key(att.job, att.key.kind, life), n)

    def vacancy(self, job: Job, slot: Slot, life: Life, n: int) -> None:
        if life in COUNTED_VACANCIES:
            self._add(_key(job, slot.key.kind, life), n)

    def items(self) -> Iterable[tuple[Key, int]]:
        return self.counts.items()


def expected(jobs: Iterable[Job], attempts: Iterable[Attempt]) -> Counter[Key]:
    """The tally recounted from scratch (``CoreState.validate`` compares)."""
    out: Counter[Key] = Counter()
    for job in jobs:
        for slot in job.slots():
            if slot.current is None and slot.vacancy in COUNTED_VACANCIES:
                out[_key(job, slot.key.kind, slot.vacancy)] += 1
    for att in attempts:
        if att.life is not Life.ENDED:
            out[_key(att.job, att.key.kind, att.life)] += 1
    return out
