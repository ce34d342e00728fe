"""No launch or kill is ever lost: silence is reconciled, then written off and replaced.

Each scenario drives the core through a Mesos call that never took effect — an ACCEPT
Mesos never saw, one the shell could not send, a KILL never confirmed — and ends with the
job finished, never with two masters (checked after every event with ``validate``).
"""

from __future__ import annotations

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.scheduler import Scheduler
from corral.core.slot_state import Life
from corral.core.views import JobState
from tests.unit.test_scheduler import KEY, Harness, launches, make_spec, of

STAGING, RECONCILE = 30.0, 20.0


class Checked(Harness):
    """The harness, validating the core's invariants after every event."""

    def __init__(self) -> None:
        super().__init__(staging_timeout=STAGING, reconcile_timeout=RECONCILE)

    def __call__(self, event: ev.Event, dt: float = 0.1) -> list[fx.Effect]:
        out = super().__call__(event, dt)
        self.s.validate()
        masters = [a for a in self.s.state.attempts.values()
                   if a.key.kind.value == "master" and a.live and a.life.active]
        assert len(masters) <= 1, masters
        return out


def reconciles(out: list[fx.Effect]) -> list[str]:
    return [tid for r in of(out, fx.Reconcile) for tid, _ in r.tasks]


def finish(h: Harness, master: str, agent: str = "S1") -> None:
    h.status(master, "TASK_RUNNING", agent)
    h.status(master, "TASK_FINISHED", agent)
    assert h.s.view(KEY).state is JobState.FINISHED


def submitted(h: Harness) -> fx.TaskLaunch:
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(0), "r1"))
    (m,) = launches(h.offers(1))
    return m


def test_lost_accept_answered_task_lost_is_replaced_as_a_loss() -> None:
    h = Checked()
    m = submitted(h)              # the ACCEPT never reached Mesos: no update ever comes
    assert reconciles(h(ev.Tick(), STAGING - 1)) == []
    out = h(ev.Tick(), 2)         # past the staging timeout: ask Mesos explicitly
    assert reconciles(out) == [m.task_id]
    assert h.s.view(KEY).tasks[0].life == Life.RECONCILING.value
    h.status(m.task_id, "TASK_LOST", reason="REASON_RECONCILIATION", uuid=None)
    view = h.s.view(KEY)
    assert view.state is JobState.PENDING and view.resilience.losses == 1
    assert h.s.state.jobs[KEY].master.failures == 0    # not the job's failure
    (m2,) = launches(h.offers(2))
    assert m2.attempt == 2
    finish(h, m2.task_id, "S2")


def test_staging_timeout_answered_with_silence_is_written_off() -> None:
    h = Checked()
    m = submitted(h)
    h(ev.Tick(), STAGING + 1)
    out = h(ev.Tick(), RECONCILE + 1)   # no answer to the explicit reconciliation either
    # Written off: killed in case it exists after all, and replaced as a loss.
    assert fx.KillTask(m.task_id, "S1", 7.0) in of(out, fx.KillTask)
    assert h.s.view(KEY).resilience.losses == 1
    (m2,) = launches(h.offers(2))
    # The written-off attempt turns up alive later: killed at once, never a second master.
    out = h.status(m.task_id, "TASK_RUNNING", "S1")
    assert fx.KillTask(m.task_id, "S1", 7.0) in of(out, fx.KillTask)
    finish(h, m2.task_id, "S2")


def test_slow_launch_confirmed_by_reconciliation_is_kept() -> None:
    h = Checked()
    m = submitted(h)
    h(ev.Tick(), STAGING + 1)
    # Mesos knows it (still staging: a slow fetch): nothing is replaced.
    h.status(m.task_id, "TASK_STAGING", uuid=None, reason="REASON_RECONCILIATION")
    assert h.s.view(KEY).tasks[0].life == Life.STARTING.value
    assert of(h(ev.Tick(), RECONCILE + 10), fx.KillTask) == []
    assert launches(h.offers(2)) == []
    finish(h, m.task_id)


def test_accept_the_shell_could_not_send_is_reconciled_then_replaced() -> None:
    h = Checked()
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(0), "r1"))
    out = h.offers(1)
    (accept,) = of(out, fx.LaunchTasks)
    m = accept.tasks[0]
    out = h(ev.EffectFailed(accept, "ConnectionResetError: connection reset"))
    assert reconciles(out) == [m.task_id]       # at once: it may or may not have arrived
    h.status(m.task_id, "TASK_UNKNOWN", reason="REASON_RECONCILIATION", uuid=None)
    (m2,) = launches(h.offers(2))
    assert m2.attempt == 2 and h.s.view(KEY).resilience.losses == 1
    finish(h, m2.task_id, "S2")


def test_accept_the_shell_could_not_send_while_mesos_is_away() -> None:
    h = Checked()
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(0), "r1"))
    (accept,) = of(h.offers(1), fx.LaunchTasks)
    m = accept.tasks[0]
    h(ev.EffectFailed(accept, "NotConnected"))
    h(ev.Disconnected("connection refused"))
    view = h.s.view(KEY)
    assert view.tasks[0].life == Life.RECONCILING.value
    out = h(ev.Tick(), RECONCILE + 1)     # the reconciliation could not be answered
    assert h.s.view(KEY).tasks[0].task_id is None
    assert "not connected to the Mesos master: connection refused" in (
        h.s.view(KEY).tasks[0].pending_reason or "")
    assert fx.KillTask(m.task_id, "S1", 7.0) in of(out, fx.KillTask)
    h(ev.Subscribed("fw-1"))
    (m2,) = launches(h.offers(2))
    finish(h, m2.task_id, "S2")


def test_lost_kill_is_sent_again_with_reconciliation() -> None:
    h = Checked()
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(1), "r1"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_RUNNING")
    (w,) = launches(h.offers(1))
    h.status(w.task_id, "TASK_RUNNING")
    out = h(ev.ScaleJob(KEY, 0))
    assert of(out, fx.KillTask) == [fx.KillTask(w.task_id, "S1", 7.0)]
    # The KILL never reached Mesos: after the grace and the retry interval, again.
    out = h(ev.Tick(), 7 + 30 + 1)
    assert of(out, fx.KillTask) == [fx.KillTask(w.task_id, "S1", 7.0)]
    assert reconciles(out) == [w.task_id]
    # A KILL the shell could not send is retried within seconds.
    (kill,) = of(out, fx.KillTask)
    h(ev.EffectFailed(kill, "NotConnected"))
    assert of(h(ev.Tick(), 3), fx.KillTask) == [kill]
    h.status(w.task_id, "TASK_KILLED")
    assert h.s.view(KEY).tasks[1:] == ()
    finish(h, m.task_id)


def test_kill_of_a_killed_job_is_retried_until_confirmed_and_the_job_ends() -> None:
    h = Checked()
    m = submitted(h)
    h.status(m.task_id, "TASK_RUNNING")
    h(ev.KillJob(KEY))
    kills = 0
    for _ in range(5):
        kills += len(of(h(ev.Tick(), 300), fx.KillTask))
    assert kills >= 3                      # never given up, backing off
    h.status(m.task_id, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.KILLED


def test_a_burst_of_due_timers_is_spread_over_events() -> None:
    from corral.core.handlers.context import CoreConfig
    from corral.core.state import TimerKind

    s = Scheduler(timers_per_event=3)
    for i in range(10):
        s.state.add_timer(5.0, TimerKind.STAGING, task_id=f"gone-{i}")  # stale: no attempt
    assert isinstance(s.config, CoreConfig)
    s.handle(ev.Tick(), 10.0)
    assert len(s.state.timers) == 7          # three fired, the rest wait
    for _ in range(3):
        s.handle(ev.Tick(), 11.0)
    assert not s.state.timers
