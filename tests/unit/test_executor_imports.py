"""corral_executor is what every agent runs: standard library only, never ``corral``, grpc or
kazoo; it ships as one reproducible zipapp that runs with a bare ``python3 -I -S``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from corral.artifact import ARTIFACT_NAME, build

ROOT = Path(__file__).resolve().parents[2]


def _imported(modules: str, *, site: bool = False) -> set[str]:
    code = (
        "import sys\n"
        f"import {modules}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "executor"))
    out = subprocess.run(
        [sys.executable, *([] if site else ["-S"]), "-c", code], env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.strip().split(","))


def test_executor_and_sdk_import_only_the_standard_library() -> None:
    tops = _imported("corral_executor.main, corral_executor.sdk")
    foreign = sorted(tops - set(sys.stdlib_module_names) - {"corral_executor", "__main__"})
    assert foreign == [], foreign


def test_samples_stay_away_from_the_scheduler() -> None:
    tops = _imported("corral_executor.samples.scoring", site=True)  # it needs numpy
    assert not tops & {"grpc", "kazoo", "corral", "aiohttp"}


def test_workload_runners_import_dask_and_torch_only_when_they_run() -> None:
    # The Dask and torch runners are imported by every executor start path that names
    # them; their frameworks load only when a task of that kind runs.
    tops = _imported("corral_executor.dask_runner, corral_executor.torch_runner")
    assert not tops & {"grpc", "kazoo", "corral", "distributed", "dask", "torch"}


def test_artifact_is_reproducible_and_self_contained(tmp_path: Path) -> None:
    first, second = build(), build()
    assert first.data == second.data and first.sha256 == second.sha256
    assert first.versioned_path == f"/executor/{first.sha256}/{ARTIFACT_NAME}"
    pyz = first.write(tmp_path / ARTIFACT_NAME)
    with zipfile.ZipFile(pyz) as zf:
        names = set(zf.namelist())
    assert {"__main__.py", "corral_executor/main.py", "corral_executor/main.pyc",
            "corral_executor/sdk.py"} <= names
    assert not any("__pycache__" in n for n in names)
    # Isolated (-I: no PYTHONPATH, no user site) and without site-packages (-S): it runs,
    # and complains only about the environment an agent would give it.
    run = subprocess.run([sys.executable, "-I", "-S", str(pyz)], capture_output=True,
                         text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert run.returncode == 2, run.stderr
    assert "missing environment: MESOS_AGENT_ENDPOINT" in run.stderr
    # What a task does with the executor's PYTHONPATH: import the SDK from the archive,
    # from precompiled bytecode when the interpreter matches.
    probe = subprocess.run(
        [sys.executable, "-S", "-c",
         "import corral_executor.sdk as s, corral_executor.main as m; "
         "print(s.__file__); print(m.artifact_path())"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(pyz)})
    assert probe.returncode == 0, probe.stderr
    sdk_file, archive = probe.stdout.split()
    assert sdk_file == f"{pyz}/corral_executor/sdk.pyc"
    assert archive == str(pyz)
