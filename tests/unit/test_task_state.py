"""The task and job lifecycle tables: every (state, update) pair, and classification."""

from __future__ import annotations

import itertools

import pytest

from corral.core.job_state import EDGES as JOB_EDGES
from corral.core.job_state import JobInput, JobPhase, job_transition, public_state
from corral.core.task_state import (
    EDGES,
    LIVE,
    MESOS_STATES,
    TERMINAL,
    Cause,
    TaskState,
    classify,
    describe_failure,
    transition,
)
from corral.core.views import JobState

S = TaskState
TARGET = {m: S.LAUNCHED if m == "TASK_STAGING" else S(m.removeprefix("TASK_"))
          for m in MESOS_STATES}
ALL_PAIRS = list(itertools.product(list(TaskState), MESOS_STATES))


@pytest.mark.parametrize(("state", "update"), ALL_PAIRS)
def test_every_pair_is_defined_and_never_raises(state: TaskState, update: str) -> None:
    new, outcome = transition(state, update)
    if (state, update) in EDGES:
        assert outcome.applied
        assert new is TARGET[update]
        assert outcome.why and not outcome.why.startswith("ignored")
    else:
        assert not outcome.applied
        assert new is state
        assert outcome.why.startswith("ignored: ")


@pytest.mark.parametrize(("state", "update"), [p for p in ALL_PAIRS if p[0] in TERMINAL])
def test_terminal_states_absorb_everything(state: TaskState, update: str) -> None:
    new, outcome = transition(state, update)
    assert new is state and not outcome.applied
    assert "after terminal" in outcome.why


@pytest.mark.parametrize("state", [s for s in TaskState if s is not S.PENDING])
def test_duplicate_update_is_ignored(state: TaskState) -> None:
    update = state.mesos_name
    new, outcome = transition(state, update)
    assert new is state and not outcome.applied


@pytest.mark.parametrize(("state", "update", "why"), [
    (S.RUNNING, "TASK_STARTING", "stale TASK_STARTING after TASK_RUNNING (reordered)"),
    (S.RUNNING, "TASK_STAGING", "stale TASK_STAGING after TASK_RUNNING (reordered)"),
    (S.KILLING, "TASK_RUNNING", "stale TASK_RUNNING after TASK_KILLING (reordered)"),
    (S.FINISHED, "TASK_RUNNING", "TASK_RUNNING after terminal TASK_FINISHED"),
    (S.RUNNING, "TASK_RUNNING", "duplicate TASK_RUNNING"),
    (S.PENDING, "TASK_RUNNING", "never launched"),
    (S.RUNNING, "TASK_BOGUS", "unrecognised task state 'TASK_BOGUS'"),
])
def test_ignored_updates_say_why(state: TaskState, update: str, why: str) -> None:
    _, outcome = transition(state, update)
    assert not outcome.applied and why in outcome.why


def test_unreachable_is_not_terminal_and_may_come_back() -> None:
    assert not S.UNREACHABLE.terminal and not S.UNREACHABLE.live
    new, outcome = transition(S.RUNNING, "TASK_UNREACHABLE")
    assert new is S.UNREACHABLE and outcome.applied
    new, outcome = transition(new, "TASK_RUNNING")
    assert new is S.RUNNING and outcome.applied


def test_every_live_state_reaches_every_terminal_state() -> None:
    for state in [*LIVE, S.UNREACHABLE]:
        for update in MESOS_STATES:
            if TARGET[update] in TERMINAL:
                assert (state, update) in EDGES


@pytest.mark.parametrize(("state", "reason", "kill", "lost", "cause"), [
    (S.FINISHED, None, False, False, Cause.SUCCEEDED),
    (S.FAILED, "REASON_COMMAND_EXECUTOR_FAILED", False, False, Cause.JOB_FAILURE),
    (S.FAILED, None, False, False, Cause.JOB_FAILURE),
    (S.ERROR, "REASON_TASK_INVALID", False, False, Cause.JOB_FAILURE),
    (S.FAILED, "REASON_EXECUTOR_TERMINATED", False, False, Cause.JOB_FAILURE),
    (S.FAILED, "REASON_EXECUTOR_TERMINATED", False, True, Cause.INFRASTRUCTURE),
    (S.FAILED, "REASON_AGENT_REMOVED", False, False, Cause.INFRASTRUCTURE),
    (S.FAILED, "REASON_RECONCILIATION", False, False, Cause.JOB_FAILURE),
    (S.KILLED, "REASON_CONTAINER_PREEMPTED", False, False, Cause.INFRASTRUCTURE),
    (S.KILLED, "REASON_AGENT_DRAINING", True, False, Cause.INFRASTRUCTURE),
    (S.KILLED, None, True, False, Cause.KILLED),
    (S.KILLED, None, False, False, Cause.INFRASTRUCTURE),
    (S.LOST, "REASON_INVALID_OFFERS", False, False, Cause.INFRASTRUCTURE),
    (S.LOST, None, False, False, Cause.INFRASTRUCTURE),
    (S.DROPPED, None, False, False, Cause.INFRASTRUCTURE),
    (S.GONE, None, False, False, Cause.INFRASTRUCTURE),
    (S.GONE_BY_OPERATOR, None, False, False, Cause.INFRASTRUCTURE),
    (S.UNKNOWN, None, False, False, Cause.INFRASTRUCTURE),
    (S.UNREACHABLE, "REASON_AGENT_REMOVED", False, False, Cause.INFRASTRUCTURE),
])
def test_classify(state: TaskState, reason: str | None, kill: bool, lost: bool,
                  cause: Cause) -> None:
    assert classify(state, reason, kill_requested=kill, agent_lost=lost) is cause


def test_describe_failure() -> None:
    assert describe_failure(S.FAILED, None, "Command exited with status 1: boom") == \
        "exit code 1: Command exited with status 1: boom"
    assert describe_failure(S.FAILED, None, "exit code 127") == "exit code 127: exit code 127"
    assert describe_failure(S.ERROR, "REASON_TASK_INVALID", "bad") == "invalid task: bad"
    assert describe_failure(S.FAILED, "REASON_X", "") == "TASK_FAILED (REASON_X)"


def test_mesos_names() -> None:
    assert S.PENDING.mesos_name == "PENDING"
    assert S.LAUNCHED.mesos_name == "TASK_STAGING"
    assert S.GONE_BY_OPERATOR.mesos_name == "TASK_GONE_BY_OPERATOR"


# --- job lifecycle -----------------------------------------------------------------

@pytest.mark.parametrize(("phase", "what"), list(itertools.product(JobPhase, JobInput)))
def test_job_table_every_pair(phase: JobPhase, what: JobInput) -> None:
    new, outcome = job_transition(phase, what)
    if (phase, what) in JOB_EDGES:
        assert outcome.applied and new is JOB_EDGES[(phase, what)][0]
    else:
        assert not outcome.applied and new is phase and outcome.why.startswith("ignored")
    if phase.terminal:
        assert new is phase


def test_job_paths() -> None:
    p, _ = job_transition(JobPhase.PENDING, JobInput.MASTER_RUNNING)
    assert p is JobPhase.RUNNING
    p, o = job_transition(p, JobInput.MASTER_LOST)
    assert p is JobPhase.PENDING and "relaunching" in o.why
    p, _ = job_transition(p, JobInput.KILL_REQUESTED)
    assert p is JobPhase.KILLING
    p2, o = job_transition(p, JobInput.MASTER_FINISHED)
    assert p2 is JobPhase.KILLING and not o.applied
    p, _ = job_transition(p, JobInput.ALL_TASKS_TERMINAL)
    assert p is JobPhase.KILLED


def test_public_state_hides_killing() -> None:
    assert public_state(JobPhase.KILLING, True) is JobState.RUNNING
    assert public_state(JobPhase.KILLING, False) is JobState.PENDING
    assert public_state(JobPhase.FAILED, False) is JobState.FAILED
