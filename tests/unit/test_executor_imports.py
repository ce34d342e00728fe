"""corral_executor is what every agent runs: it must not pull in grpc, kazoo or corral."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_executor_package_imports_stay_small() -> None:
    code = (
        "import sys\n"
        "import corral_executor.main, corral_executor.sdk, corral_executor.samples.scoring\n"
        "import corral_executor.dask_runner, corral_executor.torch_runner\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules}\n"
        "             & {'grpc', 'kazoo', 'corral', 'distributed', 'dask', 'torch'})\n"
        "print(','.join(bad))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "executor"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
