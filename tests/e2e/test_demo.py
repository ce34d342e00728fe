"""``corral demo`` as a user runs it: the real command, start to clean finish."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import wait_gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_demo_scores_everything_and_cleans_up(tmp_path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--chunks", "16", "--rows", "1000",
         "--workers", "3", "--agents", "3", "--spot", "1", "--work-dir", str(work),
         "--timeout", "120"],
        capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "FINISHED" in out
    assert "chunks scored    16/16" in out
    assert "OK: 16 chunks identical" in out
    assert "Traceback" not in result.stderr
    assert not wait_gone(str(work), timeout=10)


def test_demo_kind_dask_runs_a_dask_program_that_grows_and_cleans_up(tmp_path) -> None:
    pytest.importorskip("distributed")
    work = tmp_path / "demo-dask"
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--kind", "dask", "--chunks", "60",
         "--rows", "500", "--delay", "0.15", "--workers", "3", "--agents", "2", "--spot", "1",
         "--work-dir", str(work), "--timeout", "150"],
        capture_output=True, text=True, timeout=220, stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "FINISHED" in out and "dask: " in out and "tasks queued, wants" in out
    # It grew on Dask's backlog (how far depends on how long the tasks took here).
    assert re.search(r"workers +1 at first, [23] at most", out), out
    assert "0 recomputed" in out
    assert "OK: 1000 users' features identical" in out
    assert "Traceback" not in result.stderr
    assert not wait_gone(str(work), timeout=10)


def test_demo_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--workers", "0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "at least 1" in result.stderr
    assert "Traceback" not in result.stderr
