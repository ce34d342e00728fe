"""The lifecycle of one job as a transition table with a reason per edge.

A job is PENDING until its master runs, RUNNING while it does, and ends FINISHED (the
master exited 0), FAILED (Corral gave up: restart limit, invalid task) or KILLED (a user
asked). KILLING is Corral's internal step between the kill request and every task being
terminal; the API shows it as the state before the kill (see ``public_state``).

Inputs are what the scheduler observes about the job as a whole (``JobInput``). Like the
task table, ``job_transition`` never raises: an input with no edge is ignored with a reason.
"""

from __future__ import annotations

from enum import StrEnum

from corral.core.task_state import Outcome
from corral.core.views import JobState


class JobPhase(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    KILLING = "KILLING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.FINISHED, JobPhase.FAILED, JobPhase.KILLED)


class JobInput(StrEnum):
    MASTER_RUNNING = "master_running"
    MASTER_LOST = "master_lost"          # infrastructure took the master; it is relaunched
    MASTER_FINISHED = "master_finished"
    GAVE_UP = "gave_up"                  # a slot exceeded its restart limit, or similar
    KILL_REQUESTED = "kill_requested"
    ALL_TASKS_TERMINAL = "all_tasks_terminal"


_P, _I = JobPhase, JobInput

EDGES: dict[tuple[JobPhase, JobInput], tuple[JobPhase, str]] = {
    # The master started: workers may now be placed with its address.
    (_P.PENDING, _I.MASTER_RUNNING): (_P.RUNNING, "master running"),
    # A master can exit 0 before we ever saw it RUNNING (reordered or very short job).
    (_P.PENDING, _I.MASTER_FINISHED): (_P.FINISHED, "master finished"),
    # The master failed too often (or was invalid) before it ever ran.
    (_P.PENDING, _I.GAVE_UP): (_P.FAILED, "gave up"),
    # Killing a job that has not started still waits for any launched task to end.
    (_P.PENDING, _I.KILL_REQUESTED): (_P.KILLING, "kill requested"),
    # Losing the master's machine sends the job back to waiting for a new master.
    (_P.RUNNING, _I.MASTER_LOST): (_P.PENDING, "master lost; relaunching it"),
    # The master decides when the job is done; its exit 0 ends the job.
    (_P.RUNNING, _I.MASTER_FINISHED): (_P.FINISHED, "master finished"),
    # Some slot exceeded its restart limit.
    (_P.RUNNING, _I.GAVE_UP): (_P.FAILED, "gave up"),
    (_P.RUNNING, _I.KILL_REQUESTED): (_P.KILLING, "kill requested"),
    # The kill is complete once nothing of the job is left on any agent.
    (_P.KILLING, _I.ALL_TASKS_TERMINAL): (_P.KILLED, "killed; all tasks ended"),
}


def job_transition(phase: JobPhase, what: JobInput) -> tuple[JobPhase, Outcome]:
    """Apply ``what`` to a job in ``phase``. Never raises."""
    edge = EDGES.get((phase, what))
    if edge is not None:
        return edge[0], Outcome(True, edge[1])
    if phase.terminal:
        return phase, Outcome(False, f"ignored: {what.value} after terminal {phase.value}")
    if phase is JobPhase.KILLING:
        return phase, Outcome(False, f"ignored: {what.value} while killing")
    return phase, Outcome(False, f"ignored: {what.value} in {phase.value}")


def public_state(phase: JobPhase, master_running: bool) -> JobState:
    """The API's JobState: KILLING shows as RUNNING or PENDING until the kill completes."""
    if phase is JobPhase.KILLING:
        return JobState.RUNNING if master_running else JobState.PENDING
    return JobState(phase.value)
