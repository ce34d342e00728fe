"""corral.localcluster.chaos: what ``corral demo --chaos`` takes away, when, and what it
says about it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from corral.core.spec import parse_job_spec
from corral.core.views import JobState, JobView, LossView, Progress, Resilience, TaskView
from corral.localcluster import chaos

SPEC = parse_job_spec({"role": "demo", "environment": "local", "name": "s",
                       "master": {"command": "m", "ports": 1},
                       "workers": {"command": "w", "min": 1, "max": 4, "initial": 3}})


def tid(slot: str, attempt: int = 1) -> str:
    return f"corral.demo.local.s.{slot}.{attempt}"


def row(aid: str, market: str, alive: bool = True, **extra: Any) -> dict[str, Any]:
    return {"id": aid, "name": f"agent-{aid[-1]}", "alive": alive,
            "attributes": {"market": market}, "unavailability": None, "draining": False,
            **extra}


ROWS = [row("S0", "on-demand"), row("S1", "spot"), row("S2", "spot")]


def view(done: int, *, losses: tuple[LossView, ...] = (), state: JobState = JobState.RUNNING,
         tasks: tuple[TaskView, ...] | None = None) -> JobView:
    tasks = tasks if tasks is not None else (
        TaskView("master", tid("master"), "TASK_RUNNING", "S1"),
        TaskView("worker-0", tid("worker-0"), "TASK_RUNNING", "S0"),
        TaskView("worker-1", tid("worker-1"), "TASK_RUNNING", "S1"),
        TaskView("worker-2", tid("worker-2"), "TASK_RUNNING", "S2"),
    )
    rec = sum(1 for x in losses if x.recovered_at is not None)
    return JobView(key="demo/local/s", spec=SPEC, state=state, desired_workers=3,
                   tasks=tasks, progress=Progress(done=done, total=40),
                   resilience=Resilience(losses=len(losses), recoveries=rec,
                                         work_lost_seconds=sum(x.work_lost_seconds
                                                               for x in losses),
                                         recent=losses))


def test_first_fault_waits_for_a_quarter_and_spares_the_masters_agent() -> None:
    c = chaos.plan(notice=5)
    assert chaos.next_fault(c, view(9), ROWS) is None          # 22 %: not yet
    hit = chaos.next_fault(c, view(10), ROWS)
    assert hit is not None
    # worker-1 runs on S1, which also holds the master: S2 is the one taken.
    assert (hit.agent_id, hit.workers, hit.percent) == (
        "S2", (("worker-2", tid("worker-2")),), 25)
    assert hit.fault.notice is None
    assert chaos.describe_hit(hit) == (
        "chaos    agent-2 (spot), running worker-2, terminated without notice at 25%")
    # No spot agent without the master: nothing to take.
    only_master = [row("S0", "on-demand"), row("S1", "spot"), row("S2", "spot", alive=False)]
    assert chaos.next_fault(c, view(10), only_master) is None
    assert chaos.next_fault(c, view(10, state=JobState.PENDING), ROWS) is None


def test_second_fault_is_a_notice_after_the_first_loss_recovered() -> None:
    c = chaos.plan(notice=5)
    first = chaos.next_fault(c, view(10), ROWS)
    assert first is not None
    c = chaos.carried_out(c, first)
    lost = LossView("worker-2", tid("worker-2"), "lost", 100.0, work_lost_seconds=1.5)
    moved = (TaskView("master", tid("master"), "TASK_RUNNING", "S1"),
             TaskView("worker-0", tid("worker-0"), "TASK_RUNNING", "S0"),
             TaskView("worker-1", tid("worker-1"), "TASK_RUNNING", "S3"),
             TaskView("worker-2", tid("worker-2", 2), "TASK_RUNNING", "S3"))
    rows = [*ROWS[:2], row("S2", "spot", alive=False), row("S3", "spot")]
    assert chaos.next_fault(c, view(25, losses=(lost,), tasks=moved), rows) is None
    back = replace(lost, recovered_at=101.2, recovery_seconds=1.2,
                   replacement_task_id=tid("worker-2", 2))
    hit = chaos.next_fault(c, view(25, losses=(back,), tasks=moved), rows)
    assert hit is not None and hit.fault.notice == 5 and hit.agent_id == "S3"
    # Every worker on the machine is named: worker-1 and the replacement of worker-2.
    assert hit.workers == (("worker-1", tid("worker-1")), ("worker-2", tid("worker-2", 2)))
    assert chaos.describe_hit(hit) == ("chaos    agent-3 (spot), running worker-1 and "
                                       "worker-2, gets a 5 s notice at 62%, then goes")
    c = chaos.carried_out(c, hit)
    assert c.complete and chaos.next_fault(c, view(30, losses=(back,)), rows) is None


def test_losses_recoveries_and_drains_are_told_once() -> None:
    c = chaos.plan(notice=5)
    c, lines = chaos.observe(c, view(10), ROWS)
    assert lines == []
    lost = LossView("worker-2", tid("worker-2"), "unreachable", 100.0, work_lost_seconds=1.5)
    c, lines = chaos.observe(c, view(12, losses=(lost,)), ROWS)
    assert lines == ["lost     worker-2 attempt 1 (unreachable): 1.5 s of work since its last "
                     "checkpoint will be redone"]
    back = replace(lost, recovered_at=101.2, recovery_seconds=1.2,
                   replacement_task_id=tid("worker-2", 2))
    tasks = (TaskView("worker-2", tid("worker-2", 2), "TASK_RUNNING", "S0"),)
    c, lines = chaos.observe(c, view(14, losses=(back,), tasks=tasks), ROWS)
    assert lines == ["replaced worker-2 runs again as attempt 2 on agent-0 (on-demand), "
                     "1.2 s after the loss"]
    assert chaos.observe(c, view(15, losses=(back,), tasks=tasks), ROWS)[1] == []

    hit = chaos.Hit(chaos.Fault(0.5, 5), "S1", "agent-1 (spot)",
                    (("worker-1", tid("worker-1")),), 50)
    c = chaos.carried_out(c, hit)
    notice = LossView("worker-1", tid("worker-1"), "notice", 110.0)
    c, lines = chaos.observe(c, view(20, losses=(back, notice)), ROWS)
    assert lines == ["notice   worker-1 attempt 1 is told to drain; its replacement starts now"]
    c, lines = chaos.drains(c, {tid("worker-1"): "TASK_RUNNING"})
    assert lines == [] and c.draining
    c, lines = chaos.drains(c, {tid("worker-1"): "TASK_FINISHED"})
    assert lines == ["drained  worker-1 attempt 1 finished its chunk, checkpointed and exited "
                     "before agent-1 (spot) went"]
    assert not c.draining


def test_summary_names_machines_losses_and_work_lost() -> None:
    c = chaos.plan(notice=5)
    c = chaos.carried_out(c, chaos.Hit(chaos.Fault(0.25), "S2", "agent-2 (spot)",
                                       (("worker-2", tid("worker-2")),), 25))
    lost = LossView("worker-2", tid("worker-2"), "lost", 100.0, 1.5, 101.2, 1.2,
                    tid("worker-2", 2))
    notice = LossView("worker-1", tid("worker-1"), "notice", 110.0, 0.0, 110.7, 0.7,
                      tid("worker-1", 2))
    assert chaos.summary(c, view(40, losses=(lost, notice), state=JobState.FINISHED)) == [
        "  machines taken   1 of 2 planned: agent-2 (spot) with no notice (at 25%)",
        "  losses           2, recovered 2: replacement running 1.2, 0.7 s after the loss "
        "or notice",
        "  work lost        1.5 s of task time (worker-2 attempt 1 1.5 s; worker-1 attempt 1 "
        "0.0 s, drained on notice)",
    ]
    assert not c.complete
