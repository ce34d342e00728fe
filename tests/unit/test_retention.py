"""Nothing finished stays in the core forever: ended attempts and finished jobs leave it.

An attempt that ended and holds nothing is forgotten at once (its slot still shows it as
the last attempt); a late update about it is handled like one about any unknown task of
ours. Finished jobs stay visible while among the newest ``finished_jobs_kept`` and
younger than ``finished_job_ttl``, then leave the core and the store.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import pytest

from corral.core import effects as fx
from corral.core import events as ev
from corral.core.views import JobState, NotFound
from tests.unit.test_scheduler import KEY, Harness, launches, make_spec, of, started


def test_ended_attempts_are_forgotten_and_late_updates_are_harmless() -> None:
    h = Harness()
    _m, ws = started(h, workers=2)
    w = ws[0].task_id
    h.status(w, "TASK_RUNNING")
    h.status(w, "TASK_LOST", reason="REASON_AGENT_REMOVED")
    assert w not in h.s.state.attempts
    (again,) = launches(h.offers(2))
    h.status(again.task_id, "TASK_RUNNING", "S2")
    # A late duplicate of the terminal update: nothing to do.
    out = h.status(w, "TASK_LOST", reason="REASON_AGENT_REMOVED")
    assert not of(out, fx.KillTask) and not launches(out)
    # The lost task turns up alive after its replacement runs: killed.
    out = h.status(w, "TASK_RUNNING")
    assert of(out, fx.KillTask) == [fx.KillTask(w, "S1", 7.0)]
    h.s.validate()


def test_a_finished_job_keeps_its_view_until_it_is_retired() -> None:
    h = Harness(finished_jobs_kept=1, finished_job_ttl=60.0)
    m, ws = started(h, workers=1)
    h.status(ws[0].task_id, "TASK_RUNNING")
    h.status(m, "TASK_FINISHED")
    out = h.status(ws[0].task_id, "TASK_KILLED")
    view = h.s.view(KEY)
    assert view.state is JobState.FINISHED
    assert {t.slot for t in view.tasks} == {"master"}
    assert view.tasks[0].state == "TASK_FINISHED"
    assert not h.s.state.attempts            # nothing live, nothing kept but the view
    # A second job finishes: only the newest one is kept.
    h(ev.SubmitJob(make_spec(0, name="other"), "r2"))
    (m2,) = launches(h.offers(1))
    h.status(m2.task_id, "TASK_FINISHED")
    out = h(ev.Tick())
    assert fx.PersistJob(KEY) in out          # the store forgets it too
    with pytest.raises(NotFound):
        h.s.view(KEY)
    assert h.s.view("ml/prod/other").state is JobState.FINISHED
    # And after the time-to-live, the other one as well.
    h(ev.Tick(), 61)
    assert h.s.views() == []
    assert h.s.intent("ml/prod/other") is None


def test_a_killed_job_is_retired_only_once_nothing_of_it_runs() -> None:
    h = Harness(finished_jobs_kept=0, finished_job_ttl=0.0)
    m, ws = started(h, workers=1)
    h(ev.KillJob(KEY))
    h.status(m, "TASK_KILLED")
    h(ev.Tick(), 5)
    assert KEY in h.s.job_keys()      # a worker still being killed: not retired yet
    h.status(ws[0].task_id, "TASK_KILLED")
    assert h.s.view(KEY).state is JobState.KILLED
    h(ev.Tick(), 1)
    assert h.s.views() == []


def test_resubmitting_a_finished_key_keeps_the_new_job() -> None:
    h = Harness(finished_jobs_kept=0, finished_job_ttl=0.0)
    h(ev.SubmitJob(make_spec(0), "r1"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_FINISHED")
    h(ev.SubmitJob(make_spec(0), "r2"))
    h(ev.Tick(), 5)
    assert h.s.view(KEY).request_id == "r2" and h.s.view(KEY).state is JobState.PENDING


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects only the cyclic collector could free that the block left behind."""
    found: list[object] = []
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(o for o in gc.garbage
                     if type(o).__module__.startswith("corral.core"))
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


def test_dropped_jobs_are_freed_by_reference_counting() -> None:
    """A job replaced by a resubmission (its kill's last update arriving after it) or
    retired leaves no reference cycle behind: the runtime freezes its heap between full
    collections (``runtime.gcpolicy``), so a cycle would be kept until the next one."""
    h = Harness(finished_jobs_kept=0, finished_job_ttl=0.0)
    with cyclic_garbage() as garbage:
        m, ws = started(h, workers=3)
        for w in ws:
            h.status(w.task_id, "TASK_RUNNING")
        h.status(m, "TASK_FINISHED")             # ended; its workers are being killed
        for w in ws[1:]:
            h.status(w.task_id, "TASK_KILLED")
        assert h.s.view(KEY).state is JobState.FINISHED
        h.s.take_ended(h.now)                      # what the shell does every turn
        h(ev.SubmitJob(make_spec(1), "req-2"))     # replaces it, one worker still live
        assert h.s.view(KEY).state is JobState.PENDING
        h.status(ws[0].task_id, "TASK_KILLED")     # the old job's last word
        h.s.take_ended(h.now)
        (m2,) = launches(h.offers(1))
        h.status(m2.task_id, "TASK_FINISHED")
        h.s.take_ended(h.now)
        h(ev.Tick(), 5)                             # retired
        assert h.s.views() == []
        h.s.validate()
    assert garbage == []
