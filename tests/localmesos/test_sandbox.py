"""Containers stay in their sandbox: orphans swept when a task ends, stdout/stderr capped
by rotation, the ``disk`` resource enforced (TASK_FAILED, REASON_CONTAINER_LIMITATION_DISK).

Real localmesos over raw HTTP; the tasks are real shell commands and Corral's executor.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from corral.localmesos.sandbox import SandboxLimits, rotate, usage
from corral_executor.runspec import encode_run_spec
from tests.localmesos.helpers import async_test, cluster, command_task, scheduler

ROOT = Path(__file__).resolve().parents[2]


def alive(marker: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                p.info["cmdline"] or []):
            out.append(p.info["pid"])
    return out


async def gone(lm: Any, marker: str, timeout: float = 5.0) -> bool:
    return await lm.wait_for(lambda: not alive(marker), timeout=timeout)


def with_disk(task: dict[str, Any], mb: float) -> dict[str, Any]:
    task["resources"].append({"name": "disk", "type": "SCALAR", "scalar": {"value": mb}})
    return task


def corral_executor_task(offer: dict[str, Any], task_id: str, command: str) -> dict[str, Any]:
    env = [{"name": "PYTHONPATH",
            "value": os.pathsep.join([str(ROOT / "executor"), str(ROOT / "framework")])}]
    return {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
        "executor": {
            "executor_id": {"value": f"ex-{task_id}"}, "name": "corral executor",
            "command": {"value": f"exec {sys.executable} -m corral_executor",
                        "environment": {"variables": env}},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.05}}],
        },
        "data": encode_run_spec({"command": command, "usage_interval_seconds": 0}),
    }


@async_test
async def test_a_detached_process_dies_when_its_command_task_ends() -> None:
    marker = f"orphan-{uuid.uuid4().hex[:8]}"
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        cmd = f"setsid sh -c 'sleep 300; : {marker}' >/dev/null 2>&1 & echo started"
        await s.launch(o, [command_task(o, "t", cmd)])
        await s.until("t", "TASK_FINISHED")
        assert await gone(lm, marker), alive(marker)


@async_test
async def test_a_detached_process_dies_when_its_executor_task_ends() -> None:
    """Corral's executor kills its task's process group; a `setsid` child escapes it and
    is swept by the agent at the terminal update, while the executor itself lives on."""
    marker = f"orphan-{uuid.uuid4().hex[:8]}"
    async with cluster(agents=1) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        cmd = f"setsid sh -c 'sleep 300; : {marker}' >/dev/null 2>&1 & sleep 0.5"
        await s.launch(o, [corral_executor_task(o, "t", cmd)])
        await s.until("t", "TASK_RUNNING", timeout=15)
        assert await lm.wait_for(lambda: bool(alive(marker)), timeout=5)
        await s.until("t", "TASK_FINISHED", timeout=10)
        assert await gone(lm, marker), alive(marker)


@async_test
async def test_stdout_is_rotated_and_capped() -> None:
    limit = 64 * 1024
    async with cluster(agents=1, log_max_mb=limit / 1024 / 1024, log_keep=2) as lm, \
            scheduler(lm) as s:
        o = (await s.offers())[0]
        # ~2 MB in 20 bursts, a poll apart: far more than the three files may hold.
        cmd = ("i=0; while [ $i -lt 20 ]; do head -c 100000 /dev/zero | tr '\\0' x; "
               "i=$((i+1)); sleep 0.3; done; echo; echo last-line")
        await s.launch(o, [command_task(o, "t", cmd)])
        await s.until("t", "TASK_RUNNING")
        sandbox = next(Path(lm.work_dir).glob(  # type: ignore[arg-type]
            f"agents/*/frameworks/{s.framework_id}/executors/t/runs/*"))
        biggest = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sizes = [f.stat().st_size for f in sandbox.glob("stdout*")]
            biggest = max(biggest, sum(sizes))
            if (sandbox / "stdout").exists() and b"last-line" in (sandbox / "stdout"
                                                                   ).read_bytes()[-20:]:
                break
            await asyncio.sleep(0.05)
        await s.until("t", "TASK_FINISHED", timeout=10)
        names = sorted(f.name for f in sandbox.glob("stdout*"))
        assert names == ["stdout", "stdout.1", "stdout.2"]
        # At most the three files' worth plus what one poll interval lets through.
        assert biggest <= 3 * limit + 2 * 100_000, biggest
        assert (sandbox / "stdout.1").stat().st_size <= limit


def test_rotation_keeps_the_tail_and_shifts_older_copies(tmp_path: Path) -> None:
    limits = SandboxLimits(log_max_bytes=4096, log_keep=2)
    log = tmp_path / "stderr"
    for n, fill in enumerate((b"a", b"b", b"c")):
        log.write_bytes(fill * 5000 + f"end{n}".encode())
        assert rotate(log, limits)
        assert log.stat().st_size == 0
    assert (tmp_path / "stderr.1").read_bytes().endswith(b"end2")
    assert (tmp_path / "stderr.2").read_bytes().endswith(b"end1")
    assert not (tmp_path / "stderr.3").exists()
    assert (tmp_path / "stderr.1").stat().st_size == 4096
    log.write_bytes(b"small")
    assert not rotate(log, limits)


@async_test
async def test_a_command_task_over_its_disk_fails_with_the_disk_limitation() -> None:
    async with cluster(agents=1, disk_watch_interval=0.2) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        cmd = "head -c 3000000 /dev/urandom > big; sleep 30"
        await s.launch(o, [with_disk(command_task(o, "t", cmd), 1.0)])
        failed = await s.until("t", "TASK_FAILED", timeout=10)
        assert failed["reason"] == "REASON_CONTAINER_LIMITATION_DISK"
        assert failed["source"] == "SOURCE_AGENT"
        assert failed["message"].startswith("Disk usage (")
        assert failed["message"].endswith("exceeds quota (1.00MB)")
        # Without a disk resource, the same task is not limited.
        o2 = (await s.offers())[0]
        await s.launch(o2, [command_task(o2, "t2", "head -c 3000000 /dev/zero > big")])
        await s.until("t2", "TASK_FINISHED", timeout=10)


@async_test
async def test_an_executor_over_its_disk_fails_its_task_with_the_disk_limitation() -> None:
    async with cluster(agents=1, disk_watch_interval=0.2) as lm, scheduler(lm) as s:
        o = (await s.offers())[0]
        task = with_disk(corral_executor_task(
            o, "t", "head -c 3000000 /dev/urandom > big; sleep 30"), 1.0)
        await s.launch(o, [task])
        failed = await s.until("t", "TASK_FAILED", timeout=20)
        assert failed["reason"] == "REASON_CONTAINER_LIMITATION_DISK"
        assert "exceeds quota (1.00MB)" in failed["message"]
        agent = next(iter(lm.master.agents.values())).agent
        assert await lm.wait_for(lambda: not agent.executors, timeout=5)


def test_usage_counts_allocated_bytes_once_per_inode(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(os.urandom(100_000))
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(os.urandom(50_000))
    used = usage(tmp_path)
    assert 150_000 <= used <= 150_000 + 64 * 1024
