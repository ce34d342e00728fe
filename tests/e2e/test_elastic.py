"""End to end: the elastic policy in a running scheduler sizes a job by its measured load.

The scheduler runs with a policy file that makes the policy quick enough to watch in a
test (a pass a second, backlogs should clear within 4 s, no cooldowns); the sample job
reports its backlog through the SDK and the scheduler measures throughput from it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import Cluster, running_cluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

POLICY = """\
interval_s: 1
target_duration_s: 4
roles:
  - {name: e2e, weight: 1}
policy: {cooldown_up_s: 0, cooldown_down_s: 0, hysteresis: 0}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory, policy: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-elastic", agents=3, spot=1,
                         scheduler_extra=["--policy", policy]) as c:
        yield c


def running_workers(view: object) -> int:
    return sum(1 for t in view.tasks  # type: ignore[attr-defined]
               if t.slot.startswith("worker") and t.state == "TASK_RUNNING")


def test_backlog_grows_the_job_and_status_says_why(elastic: Cluster) -> None:
    # One worker scores ~3 chunks/s; 90 chunks in 4 s need far more than the maximum 4.
    spec, out = elastic.scoring_spec(chunks=90, workers=1, max_workers=4, delay=0.3)
    with elastic.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        view = wait_for(c, key, lambda v: v.desired_workers == 4 or v.state.terminal,
                        timeout=60)
        assert view.desired_workers == 4, view
        assert view.target_reason.startswith("max: load wants"), view.target_reason
        assert "fair share" in view.target_reason
        status = subprocess.run(
            [sys.executable, "-m", "corral.cli", "--api", elastic.api, "status", key],
            capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert "target 4 (min 1, max 4): max: load wants" in status.stdout, status.stdout
        view = wait_for(c, key, lambda v: running_workers(v) == 4 or v.state.terminal,
                        timeout=60)
        assert running_workers(view) == 4, view
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    # Workers retired as the backlog ran out did not lose or double a chunk.
    result = elastic.verify(90, out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_elastic_keeps_the_size_asked_for(tmp_path_factory: pytest.TempPathFactory,
                                             policy: str) -> None:
    # The same quick policy would grow this job to 4 within seconds (test above).
    with running_cluster(tmp_path_factory, "corral-static", agents=2, spot=0,
                         scheduler_extra=["--no-elastic", "--policy", policy]) as static:
        spec, _out = static.scoring_spec(chunks=40, workers=1, max_workers=4, delay=0.3)
        with static.client() as c:
            key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
            view = wait_for(c, key, lambda v: v.progress.done >= 15 or v.state.terminal,
                            timeout=60)
            assert view.desired_workers == 1, view
            assert running_workers(view) <= 1, view
            final = wait_for(c, key, lambda v: v.state.terminal, timeout=120)
        assert final.state is JobState.FINISHED, final
