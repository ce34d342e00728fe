"""Loss accounting through the API: proto round trip, JSON form and ``corral status``."""

from __future__ import annotations

import io

from corral import cli
from corral.api.convert import job_from_proto, job_to_proto, view_to_dict
from corral.core import events as ev
from corral.core.scheduler import Scheduler
from corral.core.views import LossView, Resilience
from tests.unit.test_spot_core import KEY, Harness, launches, make_spec, running_job


def _view_with_losses() -> object:
    h = Harness()
    _, ws = running_job(h, spec=make_spec(2, labels=(("overprovision", "1"),)))
    tid, agent = ws[0]
    h.status(tid, "TASK_LOST", agent, dt=2.0)
    placed = {t.key.index: (a, t) for a, t in launches(h.offers("S1", "S2", "S3"))}
    assert sorted(placed) == [0, 2]            # the replacement and one spare worker
    agent, t = placed[0]
    h.status(t.task_id, "TASK_RUNNING", agent, dt=0.5)
    h(ev.Tick(), 0.1)
    return h.s.view(KEY)


def test_resilience_round_trips_through_proto() -> None:
    view = _view_with_losses()
    r = view.resilience  # type: ignore[attr-defined]
    assert r.losses == 1 and r.recoveries == 1 and r.spare_workers == 1
    back = job_from_proto(job_to_proto(view))  # type: ignore[arg-type]
    assert back.resilience == r
    assert view_to_dict(back)["resilience"]["recent"][0]["kind"] == "lost"
    # Unset optionals stay None (a loss still recovering).
    open_loss = Resilience(losses=1, recent=(LossView("worker-1", "t", "notice", 5.0),))
    v2 = back.__class__(**{**back.__dict__, "resilience": open_loss})
    assert job_from_proto(job_to_proto(v2)).resilience == open_loss


def test_status_prints_losses_and_spares() -> None:
    view = _view_with_losses()
    out = io.StringIO()
    cli._print_status(view, out)
    text = out.getvalue()
    assert "losses     1, recovered 1" in text and "work lost" in text
    assert "spare      1: 1 termination(s)" in text
    (line,) = [x for x in text.splitlines() if x.startswith("  lost ")]
    assert "worker-0" in line and "lost 2.1s" in line and "back in 0.60s" in line
    fresh = Scheduler()
    fresh.handle(ev.SubmitJob(make_spec(1), "r"), 1.0)
    out = io.StringIO()
    cli._print_status(fresh.view(KEY), out)
    assert "losses     none" in out.getvalue()
