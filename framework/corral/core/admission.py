"""Whether a role may submit one more job: its quota, and whether the job could ever run.

Pure. ``admission_problem`` takes the role's policy (``RolePolicy`` and ``Quota`` from the
policy file), the role's *live* jobs (not yet FINISHED, FAILED or KILLED) and the new
spec, and returns what is wrong, with the numbers, or None:

- a job whose *least* footprint (master + ``workers.min`` workers) exceeds the role's
  ``limit`` could never start: it would wait forever, so it is refused;
- ``quota.jobs`` bounds the role's live jobs;
- ``quota.cpus/mem/disk/gpus`` bound the sum of the live jobs' *largest* footprints
  (master + ``workers.max`` workers), so what a role has asked for is bounded even while
  the elastic policy runs its jobs smaller. Only the dimensions a quota names are bounded.

``Admissions`` is the small piece of state the shell keeps so that submits that are
admitted but not yet handled by the core count as live too (otherwise concurrent submits
could each pass against the same count).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from corral.core.fairness import RolePolicy
from corral.core.model import JobSpec
from corral.core.resources import Resources

DIMENSIONS = ("cpus", "mem", "disk", "gpus")


class QuotaExceeded(RuntimeError):
    """The role may not submit this job now; the message says why, with the numbers."""


@dataclass(frozen=True)
class Quota:
    """What a role may have submitted at once. None / absent dimensions: no bound."""

    jobs: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)  # dimension -> bound


def least(spec: JobSpec) -> Resources:
    """What the job needs to start: its master and ``workers.min`` workers."""
    return spec.master.resources + spec.workers.template.resources.scale(spec.workers.min)


def largest(spec: JobSpec) -> Resources:
    """The most the job may ever hold: its master and ``workers.max`` workers."""
    return spec.master.resources + spec.workers.template.resources.scale(spec.workers.max)


def admission_problem(spec: JobSpec, role: RolePolicy | None, quota: Quota | None,
                      live: Iterable[JobSpec]) -> str | None:
    """Why ``spec`` may not be admitted next to the role's ``live`` jobs, or None."""
    need = least(spec)
    if role is not None and role.limit is not None:
        for dim in DIMENSIONS:
            want, cap = getattr(need, dim), getattr(role.limit, dim)
            if want > cap:
                return (f"job {spec.key} needs at least {want:g} {dim} to start (master + "
                        f"workers.min={spec.workers.min}) but role {spec.role} is limited to "
                        f"{cap:g} {dim}: it could never run")
    if quota is None:
        return None
    jobs = list(live)
    if quota.jobs is not None and len(jobs) + 1 > quota.jobs:
        return (f"role {spec.role} has {len(jobs)} live jobs; its quota is {quota.jobs} "
                "(wait for one to end or kill one)")
    if quota.resources:
        mine, others = largest(spec), Resources()
        for other in jobs:
            others = others + largest(other)
        for dim, bound in sorted(quota.resources.items()):
            have, add = getattr(others, dim), getattr(mine, dim)
            if have + add > bound + 1e-9:
                return (f"role {spec.role} would hold up to {have + add:g} {dim} (live jobs "
                        f"{have:g} + this job {add:g}, counting workers.max); its quota is "
                        f"{bound:g} {dim}")
    return None


class Admissions:
    """Submits admitted but not yet handled, per role (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: dict[str, list[JobSpec]] = {}

    @contextmanager
    def admitting(self, spec: JobSpec, role: RolePolicy | None, quota: Quota | None,
                  live: Iterable[JobSpec]) -> Iterator[None]:
        """Raise ``QuotaExceeded`` if ``spec`` is over quota; else count it as live until
        the ``with`` block (the submit) ends."""
        pending = self._pending.setdefault(spec.role, [])
        problem = admission_problem(spec, role, quota, [*live, *pending])
        if problem:
            if not pending:
                self._pending.pop(spec.role, None)
            raise QuotaExceeded(problem)
        pending.append(spec)
        try:
            yield
        finally:
            pending.remove(spec)
            if not pending:
                self._pending.pop(spec.role, None)
