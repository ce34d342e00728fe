"""The torch runner's command line, built without torch (the e2e test runs it)."""

from __future__ import annotations

import sys

import pytest

from corral_executor import torch_runner


def test_torchrun_command_joins_the_masters_c10d_rendezvous(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_JOB", "ml/prod/train")
    argv = torch_runner.torchrun_argv("10.0.0.5:31000", "1:4", 2, 3,
                                      ["-m", "pkg.train", "--epochs", "3"],
                                      local_addr="10.0.0.9")
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nnodes=1:4" in argv and "--nproc-per-node=2" in argv
    assert "--rdzv-backend=c10d" in argv and "--rdzv-endpoint=10.0.0.5:31000" in argv
    assert "--rdzv-id=ml-prod-train" in argv and "--max-restarts=3" in argv
    assert "--local-addr=10.0.0.9" in argv
    conf = next(a for a in argv if a.startswith("--rdzv-conf="))
    assert "is_host=false" in conf              # the master hosts the store, never a worker
    assert argv[-4:] == ["-m", "pkg.train", "--epochs", "3"]


def test_torchrun_environment_turns_off_store_sharing() -> None:
    env = torch_runner.torchrun_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
