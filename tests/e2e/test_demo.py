"""``corral demo`` as a user runs it: the real command, start to clean finish."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

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


def test_demo_chaos_loses_two_spot_machines_and_still_gets_every_bit_right(tmp_path) -> None:
    """The demo a visitor sees first: one spot machine terminated without notice, another
    given a notice, live; the result is verified against the single-process baseline."""
    work = tmp_path / "chaos"
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--chaos", "--rows", "1000",
         "--work-dir", str(work), "--timeout", "150"],
        capture_output=True, text=True, timeout=220, stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    events = [ln.strip() for ln in out.splitlines() if ln.startswith("  ")]
    kinds = [e.split()[0] for e in events if e.split()[0] in
             ("chaos", "lost", "notice", "replaced", "drained")]
    # In the order it happened: the abrupt loss is detected and replaced before the
    # notice; the noticed worker drains and is replaced.
    assert kinds[:2] == ["chaos", "chaos"], out           # terminated, a new agent joins
    assert kinds.index("lost") < kinds.index("replaced") < kinds.index("notice"), out
    # Workers go to spot machines first, so a machine may take several with it: each is
    # lost (or noticed) and replaced, and each noticed one drains.
    lost, noticed = kinds.count("lost"), kinds.count("notice")
    assert lost >= 1 and noticed >= 1, out
    assert sorted(kinds) == sorted(["chaos"] * 4 + ["lost"] * lost + ["notice"] * noticed
                                   + ["replaced"] * (lost + noticed) + ["drained"] * noticed), out
    workers = r"worker-\d(?:, worker-\d)*(?: and worker-\d)?"
    assert re.search(rf"running {workers}, terminated without notice at \d+%", out), out
    assert re.search(rf"running {workers}, gets a 6 s notice at \d+%, then goes", out), out
    assert re.search(r"drained  worker-\d attempt \d finished its chunk, checkpointed and "
                     r"exited before agent-\d \(spot\) went", out), out
    assert "machines taken   2 of 2 planned" in out
    assert f"losses           {lost + noticed}, recovered {lost + noticed}: replacement " \
        "running" in out, out
    assert re.search(r"work lost        [\d.]+ s of task time .*0\.0 s, drained on notice", out)
    assert "chunks scored    48/48" in out
    assert "OK: 48 chunks identical" in out
    assert "Traceback" not in result.stderr
    assert not wait_gone(str(work), timeout=10)


def test_ctrl_c_while_making_data_removes_everything_without_a_traceback(tmp_path) -> None:
    """Ctrl-C during data generation: one line, exit 130, and the temporary directory (the
    data set can be gigabytes) is gone, as --help says."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "demo", "--chunks", "400", "--rows", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 60
        while not list(tmp.glob("corral-demo-*/data/chunk-*.npy")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, out + err
    assert err.strip() == "corral demo: interrupted, cleaning up", err
    assert list(tmp.iterdir()) == []
    assert not wait_gone(str(tmp), timeout=10)


def test_demo_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--workers", "0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "at least 1" in result.stderr
    assert "Traceback" not in result.stderr


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
