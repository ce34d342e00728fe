"""End to end: a ``kind: torch`` job (PyTorch elastic) on localmesos loses a worker's
machine mid-training and finishes anyway: the loss is a membership change.

The training script is ``corral_executor.samples.torch_train`` (DDP linear regression on
the CPU, checkpoints with ``torch.save`` to a file URL); runs only where torch is
installed (``.ci/run`` installs the CPU build).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Iterator

import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import Cluster, running_cluster, wait_for
from tests.e2e.test_chaos import fault, task

pytest.importorskip("torch")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def torch_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "corral-torch", agents=3, spot=0,
                         localmesos_extra=["--agent-health-timeout", "1"]) as c:
        yield c


def checkpoint_step(path: object) -> int:
    import torch

    try:
        return int(torch.load(path, weights_only=False)["step"])
    except Exception:
        return 0


def test_torch_job_survives_losing_a_worker(torch_cluster: Cluster) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    out = torch_cluster.work / "out" / name
    ckpt = torch_cluster.work / "ckpt" / name / "model.pt"
    spec = {
        "kind": "torch", "role": "e2e", "environment": "test", "name": name,
        "master": {"cpus": 0.5, "mem": 512},
        "workers": {"command": f"-m corral_executor.samples.torch_train --out "
                               f"{shlex.quote(str(out))} --ckpt {ckpt.as_uri()} "
                               "--steps 200 --step-delay 0.04",
                    "cpus": 1, "mem": 1024, "min": 1, "max": 2, "initial": 2},
        "kill_grace_seconds": 3,
    }
    with torch_cluster.client() as c:
        key = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex).key
        # Kill a worker's machine once training is under way (a checkpoint past step 20)
        # and the master is elsewhere.
        deadline = time.monotonic() + 120
        while checkpoint_step(ckpt) < 20 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert checkpoint_step(ckpt) >= 20, c.get(key)
        view = c.get(key)
        master_agent = task(view, "master").agent_id
        victim = next(t for t in view.tasks if t.slot.startswith("worker")
                      and t.state == "TASK_RUNNING" and t.agent_id != master_agent)
        fault(torch_cluster, victim.agent_id, "terminate")
        final = wait_for(c, key, lambda v: v.state.terminal, timeout=150)
    assert final.state is JobState.FINISHED, final
    assert task(final, "master").attempt == 1, final          # the job never restarted
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 200
    # Training resumed from its checkpoint in a new rendezvous round after the loss.
    assert len(result["worlds"]) >= 2, result
    for got, want in zip(result["weights"], result["true_weights"], strict=True):
        assert abs(got - want) < 0.02, result
    assert abs(result["bias"] - result["true_bias"]) < 0.02, result
    losses = [x for x in final.resilience.recent if x.task_id == victim.task_id]
    assert losses and losses[0].kind in ("lost", "unreachable"), final.resilience
