"""Admission: a role's quota bounds what it may submit, and a job that could never start
under its role's limit is refused, each with the numbers."""

from __future__ import annotations

import pytest

from corral.core.admission import Admissions, Quota, QuotaExceeded, admission_problem
from corral.core.fairness import RolePolicy
from corral.core.resources import Resources
from corral.core.spec import parse_job_spec


def spec(name: str, *, role: str = "ml", cpus: float = 1, wmin: int = 0, wmax: int = 4):
    return parse_job_spec({
        "role": role, "name": name, "master": {"command": "m", "cpus": 1, "mem": 100},
        "workers": {"command": "w", "cpus": cpus, "mem": 100, "min": wmin, "max": wmax,
                    "initial": wmin}})


def test_no_policy_admits_everything() -> None:
    assert admission_problem(spec("a"), None, None, [spec(f"j{i}") for i in range(100)]) is None


def test_live_jobs_are_bounded() -> None:
    quota = Quota(jobs=2)
    assert admission_problem(spec("c"), None, quota, [spec("a")]) is None
    problem = admission_problem(spec("c"), None, quota, [spec("a"), spec("b")])
    assert problem == ("role ml has 2 live jobs; its quota is 2 (wait for one to end or "
                       "kill one)")


def test_total_largest_footprint_is_bounded_per_named_dimension() -> None:
    # Each job: master 1 cpu + 4 workers x 1 cpu = 5 cpus at most; mem is not bounded.
    quota = Quota(resources={"cpus": 12})
    assert admission_problem(spec("c"), None, quota, [spec("a")]) is None
    problem = admission_problem(spec("c"), None, quota, [spec("a"), spec("b")])
    assert problem is not None
    assert "up to 15 cpus (live jobs 10 + this job 5, counting workers.max)" in problem
    assert "quota is 12 cpus" in problem
    assert admission_problem(spec("big", wmax=100), None, Quota(resources={"mem": 1e6}),
                             []) is None


def test_a_job_that_could_never_start_under_the_limit_is_refused() -> None:
    role = RolePolicy(limit=Resources(cpus=4, mem=1e12, disk=1e12, gpus=1e6))
    assert admission_problem(spec("a", wmin=3), role, None, []) is None  # 1 + 3 = 4 cpus
    problem = admission_problem(spec("a", wmin=4), role, None, [])
    assert problem is not None and "needs at least 5 cpus" in problem
    assert "limited to 4 cpus: it could never run" in problem


def test_admitted_but_unhandled_submits_count_as_live() -> None:
    adm = Admissions()
    quota = Quota(jobs=2)
    with adm.admitting(spec("a"), None, quota, []), adm.admitting(spec("b"), None, quota, []):
        with pytest.raises(QuotaExceeded, match="2 live jobs"), \
                    adm.admitting(spec("c"), None, quota, []):
            pass
        # Another role is not affected.
        with adm.admitting(spec("x", role="other"), None, quota, []):
            pass
    # All ended (handled or failed): nothing is left pending.
    with adm.admitting(spec("d"), None, quota, [spec("a")]):
        pass
    assert adm._pending == {}
