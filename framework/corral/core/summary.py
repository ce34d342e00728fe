"""A job in a listing: the few fields ``corral jobs`` shows, bounded in size.

Pure. A full ``JobView`` carries the spec (up to ``SPEC_MAX_BYTES``) and one entry per
task, so a listing of full views has no useful bound; a ``JobSummary`` is at most a few
hundred bytes whatever the job, and ``GetJob`` gives the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.core.model import Tier, role_of
from corral.core.views import JobState, JobView, Progress

SUMMARY_MESSAGE_MAX = 256  # characters of the job's message a summary keeps


@dataclass(frozen=True)
class JobSummary:
    key: str
    state: JobState
    tier: Tier = Tier.PREFERRED
    priority: int = 0
    desired_workers: int = 0
    running_workers: int = 0
    workers_min: int = 0
    workers_max: int = 0
    progress: Progress = field(default_factory=Progress)
    submitted_at: float = 0.0
    finished_at: float | None = None
    message: str = ""
    version: int = 0

    @property
    def role(self) -> str:
        return role_of(self.key)


def running_workers(view: JobView) -> int:
    return sum(1 for t in view.tasks
               if t.slot.startswith("worker") and t.state == "TASK_RUNNING")


def summarize(view: JobView) -> JobSummary:
    spec = view.spec
    message = view.message
    if len(message) > SUMMARY_MESSAGE_MAX:
        message = message[: SUMMARY_MESSAGE_MAX - 3] + "..."
    return JobSummary(
        key=view.key, state=view.state, tier=spec.tier, priority=spec.priority,
        desired_workers=view.desired_workers, running_workers=running_workers(view),
        workers_min=spec.workers.min, workers_max=spec.workers.max, progress=view.progress,
        submitted_at=view.submitted_at, finished_at=view.finished_at, message=message,
        version=view.version,
    )
