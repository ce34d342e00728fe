"""Keeping each container inside its sandbox on localmesos: orphans, log size, disk.

A real Mesos agent gets these from its containerizer (see docs/localmesos.md): the
cgroups isolators kill every process of a container however it detached, the logrotate
container logger (``--container_logger=...LogrotateContainerLogger``, ``max_stdout_size``
10 MB by default) caps stdout/stderr, and the ``disk/du`` isolator with
``--enforce_container_disk_quota`` polls ``du`` every ``--container_disk_watch_interval``
and fails the container with REASON_CONTAINER_LIMITATION_DISK. localmesos has no cgroups
and lets processes write their files directly, so it does the same by polling:

- ``sweep(sandbox, keep_group)``: kill every process whose environment says it belongs to
  ``sandbox`` (``MESOS_SANDBOX``, which every descendant inherits, also through
  ``setsid cmd &``) or whose working directory is inside it, except the process group
  ``keep_group`` (a live executor's own: its tasks run in sessions of their own). The
  agent sweeps whenever a task ends (once its executor has no live task left) and
  whenever a container ends.
- ``rotate(path, limits)``: when ``stdout`` or ``stderr`` is over ``log_max_bytes``, its
  last ``log_max_bytes`` go to ``<name>.1`` (older copies shift up to ``log_keep``) and
  the file is truncated in place (writers append, so they carry on at its new end). A
  task writing faster than the poll sees can overshoot by what it writes in one poll.
- ``usage(sandbox)``: bytes allocated under the sandbox (``du``). A container with a
  ``disk`` resource that uses more is destroyed, its tasks TASK_FAILED with
  REASON_CONTAINER_LIMITATION_DISK and Mesos' message ``Disk usage (X) exceeds quota
  (Y)``. Containers without a ``disk`` resource are not limited (as in Mesos).

``SandboxWatch`` runs the polls for one agent: the agent calls ``watch`` when a container
starts and ``unwatch`` when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("localmesos.sandbox")

MB = 1024 * 1024
LOG_NAMES = ("stdout", "stderr")


@dataclass(frozen=True)
class SandboxLimits:
    """How localmesos keeps containers in their sandboxes (flags of ``localmesos run``)."""

    log_max_bytes: int = 10 * MB    # per stdout/stderr file, like Mesos' max_stdout_size
    log_keep: int = 2               # rotated copies kept: stdout.1 .. stdout.<keep>
    poll_seconds: float = 0.5       # how often logs are checked
    disk_watch_seconds: float = 1.0  # how often sandboxes are measured (Mesos default 15 s)

    def validate(self) -> None:
        if self.log_max_bytes < 4096:
            raise ValueError("--log-max-mb must be at least 4 KiB (0.004)")
        if not 0 <= self.log_keep <= 100:
            raise ValueError("--log-keep must be within 0..100")
        if self.poll_seconds <= 0 or self.disk_watch_seconds <= 0:
            raise ValueError("sandbox poll intervals must be > 0")


# ------------------------------------------------------------------------- orphans


def belongs_to(env: dict[str, str] | None, cwd: str | None, sandbox: str) -> bool:
    if env and env.get("MESOS_SANDBOX") == sandbox:
        return True
    if not cwd:
        return False
    return cwd == sandbox or cwd.startswith(sandbox + os.sep)


def sweep(sandbox: Path, keep_group: int | None = None) -> int:
    """SIGKILL every process of ``sandbox`` outside process group ``keep_group`` (one scan
    of the process table); returns how many were killed."""
    wanted, me = str(sandbox), os.getpid()
    count = 0
    for proc in psutil.process_iter(["pid", "environ", "cwd"]):
        info = proc.info
        if info["pid"] == me or not belongs_to(info.get("environ"), info.get("cwd"), wanted):
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if keep_group is not None and os.getpgid(info["pid"]) == keep_group:
                continue
            proc.kill()
            count += 1
    return count


# ---------------------------------------------------------------------------- logs


def rotate(path: Path, limits: SandboxLimits) -> bool:
    """Rotate ``path`` if it is over the limit (copy the tail, truncate in place)."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= limits.log_max_bytes:
        return False
    keep = limits.log_keep
    try:
        if keep > 0:
            for k in range(keep, 1, -1):
                older = path.with_name(f"{path.name}.{k - 1}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{k}"))
            with open(path, "rb") as src, open(path.with_name(f"{path.name}.1"), "wb") as dst:
                src.seek(max(0, size - limits.log_max_bytes))
                shutil.copyfileobj(src, dst, length=MB)
        os.truncate(path, 0)
    except OSError as e:
        log.warning("cannot rotate %s: %s", path, e)
        return False
    return True


# ---------------------------------------------------------------------------- disk


def usage(sandbox: Path) -> int:
    """Bytes allocated to files under ``sandbox`` (like ``du``; hard links once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(sandbox, onerror=lambda e: None):
        for name in (*dirs, *files):
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def disk_mb(infos: list[dict[str, Any]]) -> float:
    """MB of ``disk`` resources in these ExecutorInfo/TaskInfo JSON objects together."""
    return sum(float((r.get("scalar") or {}).get("value", 0.0))
               for info in infos for r in info.get("resources") or []
               if isinstance(r, dict) and r.get("name") == "disk")


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.2f}{unit}"
        n /= 1024
    return f"{n}B"


OnLimit = Callable[[str], None]  # called with the message, once


@dataclass
class _Watched:
    sandbox: Path
    disk_bytes: int | None
    on_limit: OnLimit
    measured_at: float = 0.0
    hit: bool = False
    rotations: int = field(default=0)


class SandboxWatch:
    """One agent's polls over its live containers (see the module docstring)."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, container_id: str, sandbox: Path, disk_mb: float, on_limit: OnLimit
              ) -> None:
        disk = int(disk_mb * MB) if disk_mb > 0 else None
        self._watched[container_id] = _Watched(sandbox, disk, on_limit)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unwatch(self, container_id: str) -> None:
        self._watched.pop(container_id, None)

    def rotations(self, container_id: str) -> int:
        w = self._watched.get(container_id)
        return w.rotations if w else 0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self.limits.poll_seconds)
            for cid, w in list(self._watched.items()):
                try:
                    await self._check(cid, w)
                except Exception:  # a poll must never end the watch of the others
                    log.exception("sandbox check of %s failed", w.sandbox)

    async def _check(self, cid: str, w: _Watched) -> None:
        for name in LOG_NAMES:
            if rotate(w.sandbox / name, self.limits):
                w.rotations += 1
        now = time.monotonic()
        if w.disk_bytes is None or w.hit or now - w.measured_at < self.limits.disk_watch_seconds:
            return
        w.measured_at = now
        used = await asyncio.to_thread(usage, w.sandbox)
        if used > w.disk_bytes and cid in self._watched and not w.hit:
            w.hit = True
            message = f"Disk usage ({human(used)}) exceeds quota ({human(w.disk_bytes)})"
            log.warning("container %s: %s", cid, message)
            w.on_limit(message)
