"""Running the task's command: spawn in its own process group, kill, measure.

``TaskProcess`` is the only code that signals the task. The command runs as
``/bin/sh -c <command>`` with ``start_new_session=True`` so it leads a fresh process
group: a kill reaches everything the command started, not just the shell. Usage is read
from Linux's ``/proc`` (every process of the task's session), with the standard library
only: the executor must run where nothing is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Clock ticks per second, for /proc CPU times.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Bytes read from the end of the stderr file for a failure message.
STDERR_TAIL_BYTES = 4096
STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_mb: float


def _proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(session id, CPU seconds incl. reaped children, RSS bytes) of one process from
    /proc/<pid>/stat; None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        session = int(fields[3])
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        rss = int(fields[21]) * _PAGE
    except (IndexError, ValueError):
        return None
    return session, ticks / _TICKS, rss


def session_usage(leader: int) -> Usage | None:
    """CPU seconds and RSS summed over every live process of ``leader``'s session (the
    task and what it started), counting children already reaped by their parents. None
    when the leader is gone."""
    root = _proc_stat(leader)
    if root is None:
        return None
    cpu, rss = root[1], root[2]
    try:
        names = os.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if not name.isdigit() or int(name) == leader:
            continue
        st = _proc_stat(int(name))
        if st is not None and st[0] == leader:
            cpu += st[1]
            rss += st[2]
    return Usage(cpu_seconds=cpu, rss_mb=rss / (1024 * 1024))


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (at most STDERR_TAIL_BYTES), or ''."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - STDERR_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class TaskProcess:
    """One running command and its process group."""

    def __init__(self, proc: asyncio.subprocess.Process, sandbox: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.sandbox = sandbox
        self._kill_deadline: float | None = None
        self._killer: asyncio.Task[None] | None = None
        self._last_sample: tuple[float, float] | None = None  # (monotonic, cpu_seconds)

    @classmethod
    async def start(cls, command: str, env: Mapping[str, str], sandbox: Path) -> TaskProcess:
        """Start ``command``; stdout/stderr append to files in the sandbox."""
        with open(sandbox / "stdout", "ab") as out, open(sandbox / "stderr", "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                cwd=str(sandbox),
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return cls(proc, sandbox)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait(self) -> int:
        """Wait for the command to exit, then clear out anything left in its group."""
        code = await self.proc.wait()
        # Background children of the command would otherwise outlive the task.
        self.signal_group(signal.SIGKILL)
        if self._killer is not None:
            self._killer.cancel()
        return code

    def signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill(self, grace_seconds: float) -> None:
        """SIGTERM the group now; SIGKILL it after ``grace_seconds`` if still alive.

        A later call with a shorter deadline shortens the wait (a KILL can escalate).
        """
        deadline = time.monotonic() + max(0.0, grace_seconds)
        if self._kill_deadline is not None and deadline >= self._kill_deadline:
            return
        first = self._kill_deadline is None
        self._kill_deadline = deadline
        if first:
            self.signal_group(signal.SIGTERM)
        if self._killer is not None:
            self._killer.cancel()
        self._killer = asyncio.get_running_loop().create_task(self._escalate(deadline))

    async def _escalate(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), delay)
        if self.running:
            self.signal_group(signal.SIGKILL)

    def force_kill(self) -> None:
        """SIGKILL the whole group immediately (executor teardown)."""
        self.signal_group(signal.SIGKILL)

    def sample_usage(self) -> tuple[Usage, float] | None:
        """CPU seconds and RSS of the command's session, plus CPU percent since the
        previous sample (0 on the first). None once the process is gone."""
        usage = session_usage(self.pid)
        if usage is None:
            return None
        cpu = usage.cpu_seconds
        now = time.monotonic()
        percent = 0.0
        if self._last_sample is not None:
            dt = now - self._last_sample[0]
            if dt > 0:
                percent = max(0.0, (cpu - self._last_sample[1]) / dt * 100.0)
        self._last_sample = (now, cpu)
        return usage, percent
