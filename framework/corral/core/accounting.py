"""What losing machines cost a job: one record per loss, and the job's totals.

Vocabulary: a *loss* is one attempt Corral did not end on purpose and did not see finish —
its agent vanished, Mesos lost or revoked it, or a notice (maintenance window, inverse
offer, drain) made Corral move it. *Work lost* is the task time that will be done again:
the seconds between the attempt's last checkpoint (or its start, if it never
checkpointed) and the moment the loss was detected; a task that drained itself after a
notice loses nothing. A *recovery* ends when the slot's replacement reports RUNNING; its
*time* is detection → replacement RUNNING.

``JobAccounting`` is mutable and owned by the scheduler's job record (pure: every time is
an argument). It keeps the latest ``keep`` records and exact running totals, so a job
that survives thousands of losses stays small.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from corral.core.task_state import TaskState
from corral.core.views import LossView

# Kinds of loss, as shown to users.
LOST = "lost"                # the task vanished: TASK_LOST/GONE/DROPPED/..., agent removed
UNREACHABLE = "unreachable"  # the agent stopped answering; Mesos may bring the task back
REVOKED = "revoked"          # revocable resources taken back (REASON_CONTAINER_PREEMPTED)
NOTICE = "notice"            # moved ahead of a maintenance window / spot notice / drain


@dataclass(slots=True)
class _Open:
    index: int                 # position among all losses ever recorded
    record: LossView


def loss_kind(reason: str | None, mesos: TaskState) -> str:
    """The kind of an infrastructure loss from the attempt's last Mesos reason and state."""
    if reason == "REASON_CONTAINER_PREEMPTED":
        return REVOKED
    if mesos is TaskState.UNREACHABLE:
        return UNREACHABLE
    return LOST


def work_lost(now: float, running_since: float | None, checkpoint_at: float | None) -> float:
    """Seconds of task time redone after a loss detected at ``now``: since the later of
    the attempt's start and its slot's last checkpoint. Never negative; zero for an attempt
    that never ran."""
    if running_since is None:
        return 0.0
    since = running_since if checkpoint_at is None else max(running_since, checkpoint_at)
    return max(0.0, now - since)


class JobAccounting:
    """Losses, recoveries and their cost for one job."""

    def __init__(self, keep: int = 100) -> None:
        self.recent: deque[LossView] = deque(maxlen=keep)
        self.losses = 0
        self.recoveries = 0
        self.work_lost_seconds = 0.0
        self.recovery_seconds_total = 0.0
        self.recovery_seconds_max = 0.0
        self._open: dict[str, _Open] = {}     # slot label -> its unrecovered loss

    def lost(self, slot: str, task_id: str, kind: str, now: float, work: float) -> None:
        """Record a loss of ``slot``'s attempt ``task_id`` detected at ``now``. A slot lost
        again before it recovered keeps its first detection time (the outage goes on)."""
        rec = LossView(slot=slot, task_id=task_id, kind=kind, detected_at=now,
                       work_lost_seconds=round(work, 3))
        self.losses += 1
        self.work_lost_seconds += rec.work_lost_seconds
        prior = self._open.get(slot)
        if prior is not None:
            # The replacement itself was lost before running: the first outage continues;
            # its record stays open and absorbs this one's work.
            self._update(prior, replace(prior.record,
                                        work_lost_seconds=round(prior.record.work_lost_seconds
                                                                + rec.work_lost_seconds, 3)))
            return
        self.recent.append(rec)
        self._open[slot] = _Open(self.losses, rec)

    def add_work(self, slot: str, task_id: str, now: float, work: float) -> None:
        """More work turned out lost for a loss already recorded (a drained task that was
        killed by its deadline instead of finishing its checkpoint)."""
        if work <= 0:
            return
        self.work_lost_seconds += round(work, 3)
        for i, rec in enumerate(self.recent):
            if rec.task_id == task_id:
                new = replace(rec, work_lost_seconds=round(rec.work_lost_seconds + work, 3))
                self.recent[i] = new
                op = self._open.get(slot)
                if op is not None and op.record is rec:
                    op.record = new
                return

    def running(self, slot: str, task_id: str, now: float) -> None:
        """The slot's attempt ``task_id`` reports RUNNING: close its open loss, if any."""
        op = self._open.pop(slot, None)
        if op is None:
            return
        took = max(0.0, now - op.record.detected_at)
        self.recoveries += 1
        self.recovery_seconds_total += took
        self.recovery_seconds_max = max(self.recovery_seconds_max, took)
        self._update(op, replace(op.record, recovered_at=now, recovery_seconds=round(took, 3),
                                 replacement_task_id=task_id))

    def returned(self, task_id: str, now: float) -> bool:
        """A task recorded as lost turned up alive (its agent came back) after its
        replacement started: say so on its record (it is killed, nothing counts twice)."""
        for i, rec in enumerate(self.recent):
            if rec.task_id == task_id and rec.returned_at is None:
                new = replace(rec, returned_at=now)
                self.recent[i] = new
                for op in self._open.values():
                    if op.record is rec:
                        op.record = new
                return True
        return False

    def forget(self, slot: str) -> None:
        """The slot is no longer wanted (scaled down, job over): nothing will recover it."""
        self._open.pop(slot, None)

    def open_slots(self) -> frozenset[str]:
        return frozenset(self._open)

    def _update(self, op: _Open, new: LossView) -> None:
        for i, rec in enumerate(self.recent):
            if rec is op.record:
                self.recent[i] = new
                break
        op.record = new
