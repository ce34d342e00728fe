"""Workload kinds: the commands Corral runs for ``kind: dask`` and ``kind: torch``, the
load a job's master reports, and the request to a master to retire workers.

Vocabulary:

* *runner*: Corral's own program in a slot of a Dask or torch job
  (``corral_executor.dask_runner`` / ``corral_executor.torch_runner``), started with the
  executor's interpreter (``$CORRAL_PYTHON``, set by the executor).
* *load report*: a master's executor message ``{"kind": "load", "task_id", "workers",
  "queued", "detail"}``: the workers the job's own framework wants (a Dask scheduler's
  adaptive target), the tasks it has waiting, and a short text for ``corral status``.
  The elastic policy sizes the job by ``workers`` instead of by its progress, still
  bounded by min/max, fair share and deadline.
* *retire*: the scheduler's message to a Dask master naming workers (by task id, which
  is their Dask name) to retire through Dask by a deadline, so their in-memory results
  move to other workers before they stop.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.core.model import JobSpec, TaskKey, TaskKind, WorkloadKind

#: The interpreter running Corral's runners on an agent: the executor's own.
RUNNER_PYTHON = '"${CORRAL_PYTHON:-python3}"'
DASK_RUNNER = f"{RUNNER_PYTHON} -m corral_executor.dask_runner"
TORCH_RUNNER = f"{RUNNER_PYTHON} -m corral_executor.torch_runner"

#: Seconds a Dask master has to retire a worker on scale-down before Corral kills it.
RETIRE_SECONDS = 60.0
#: A load report older than this (seconds) no longer sizes the job.
LOAD_MAX_AGE = 30.0

# Bounds of a load report, as the executor enforces them too (corral_executor.control).
MAX_LOAD_WORKERS = 100_000
MAX_LOAD_QUEUED = 10**12
MAX_LOAD_DETAIL = 160


# ---------------------------------------------------------------------------- commands


def dask_threads(cpus: float) -> int:
    """Dask worker threads for a slot of ``cpus`` (whole cpus, at least one)."""
    return max(1, math.floor(cpus + 1e-9))


def torch_procs(gpus: float) -> int:
    """Training processes per torch worker: one per GPU, else one."""
    return max(1, int(gpus))


def launch_command(spec: JobSpec, key: TaskKey) -> str:
    """The shell command Corral launches in slot ``key`` of a job."""
    master = key.kind is TaskKind.MASTER
    tmpl = spec.master if master else spec.workers.template
    if spec.kind is WorkloadKind.DASK:
        if master:
            return f"{DASK_RUNNER} scheduler --driver {shlex.quote(spec.driver or '')}"
        if tmpl.command:
            return f"{DASK_RUNNER} exec -- /bin/sh -c {shlex.quote(tmpl.command)}"
        mem = int(tmpl.resources.mem * 1024 * 1024)
        return (f"{DASK_RUNNER} worker --nthreads {dask_threads(tmpl.resources.cpus)} "
                f"--memory-limit {mem}")
    if spec.kind is WorkloadKind.TORCH:
        if master:
            return f"{TORCH_RUNNER} rendezvous"
        w = spec.workers
        nodes = f"{max(1, w.min)}:{max(1, w.max)}"
        procs = torch_procs(tmpl.resources.gpus)
        return (f"{TORCH_RUNNER} worker --nnodes {nodes} --nproc-per-node {procs} "
                f"--max-restarts {spec.restart.max_failures} -- {tmpl.command}")
    return tmpl.command


# ---------------------------------------------------------------------------- load


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The latest load a job's master reported, and when it arrived."""

    task_id: str
    workers: int
    queued: int
    detail: str
    at: float


def parse_load(data: Mapping[str, Any], task_id: str, now: float) -> LoadReport:
    """A ``load`` message as a report; ``ValueError`` names the first bad field."""
    vals = []
    for field, hi in (("workers", MAX_LOAD_WORKERS), ("queued", MAX_LOAD_QUEUED)):
        v = data.get(field)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise ValueError(f"{field} must be an integer in 0..{hi}")
        vals.append(v)
    detail = data.get("detail", "")
    if not isinstance(detail, str) or len(detail) > MAX_LOAD_DETAIL \
            or not detail.isprintable():
        raise ValueError(f"detail must be printable text of at most {MAX_LOAD_DETAIL} "
                         "characters")
    return LoadReport(task_id, vals[0], vals[1], detail, now)


def usable_load(report: LoadReport | None, master_task_id: str | None,
                now: float) -> LoadReport | None:
    """The report if it is the running master's and fresh; None otherwise (a relaunched
    master's predecessor, or a master that stopped reporting, sizes nothing)."""
    if report is None or report.task_id != master_task_id:
        return None
    return report if now - report.at <= LOAD_MAX_AGE else None


# ---------------------------------------------------------------------------- retire


def retires_through_master(spec: JobSpec) -> bool:
    """Whether the job's workers are retired by asking its master (Dask moves their
    in-memory results first) instead of being killed outright."""
    return spec.kind is WorkloadKind.DASK and not spec.workers.template.command


def retire_message(names: Iterable[str], by: float) -> dict[str, Any]:
    """The scheduler → master message asking to retire ``names`` by time ``by``."""
    return {"kind": "retire", "workers": [{"name": n, "by": by} for n in names]}
