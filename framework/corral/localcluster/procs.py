"""Starting and stopping Corral's own helper processes (localmesos, schedulers).

``corral demo`` and the end-to-end tests start real subprocesses that announce readiness
with one line on stdout (``localmesos master at URL``, ``corral scheduler API at ADDR``).
``Child`` starts one in its own process group, waits (bounded) for that line, sends the
rest of its output to a log file, and on ``stop`` sends SIGTERM, waits, then SIGKILLs the
whole group so nothing outlives the caller.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class ChildFailed(RuntimeError):
    """A child process exited or stayed silent before it was ready."""


class Child:
    """A subprocess in its own process group that prints a readiness line."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``; raise ChildFailed on exit/timeout."""
        rx = re.compile(pattern)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    self._log.write(line + b"\n")
                    m = rx.search(text)
                    if m:
                        self._log.write(buf)
                        self._log.flush()
                        self._drain()
                        return m
            elif self.proc.poll() is not None:
                break
        self._log.flush()
        code = self.proc.poll()
        why = f"exited with code {code}" if code is not None else f"not ready after {timeout:g}s"
        raise ChildFailed(f"{self.name} {why}; see {self.log_path}")

    def _drain(self) -> None:
        """Copy the rest of stdout to the log so a chatty child never blocks on a pipe."""
        out = self.proc.stdout
        assert out is not None
        fd = out.fileno()  # read raw, as wait_for_line does (``out`` keeps it open)

        def pump() -> None:
            with contextlib.suppress(OSError, ValueError):
                for chunk in iter(lambda: os.read(fd, 4096), b""):
                    self._log.write(chunk)
                    self._log.flush()

        threading.Thread(target=pump, name=f"{self.name}-stdout", daemon=True).start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``grace``, then SIGKILL it. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        # The group may hold grandchildren even after the leader exited.
        self.signal(signal.SIGKILL)
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._log.flush()
        return code


def start_localmesos(work: Path, logs: Path, *, agents: int, spot: int = 0,
                     cpus: float = 4, mem: float = 4096, allocation_interval: float = 0.2,
                     extra: list[str] | None = None,
                     timeout: float = 30.0) -> tuple[Child, str]:
    """Start ``python -m corral.localmesos`` on a free port; return it and its master URL."""
    child = Child("localmesos", [
        sys.executable, "-m", "corral.localmesos", "--port", "0", "--agents", str(agents),
        "--spot", str(spot), "--cpus", f"{cpus:g}", "--mem", f"{mem:g}",
        "--allocation-interval", f"{allocation_interval:g}", "--work-dir", str(work),
        *(extra or []),
    ], logs / "localmesos.log")
    return child, _announced(child, r"localmesos master at (\S+)", timeout)


def start_scheduler(master_url: str, logs: Path, *, extra: list[str] | None = None,
                    name: str = "scheduler", timeout: float = 30.0) -> tuple[Child, str]:
    """Start ``corral scheduler`` with its API on a free port; return it and the API address."""
    child = Child(name, [
        sys.executable, "-m", "corral.runtime.main", "--master", master_url,
        "--api", "127.0.0.1:0", *(extra or []),
    ], logs / f"{name}.log")
    return child, _announced(child, r"corral scheduler API at (\S+)", timeout)


def _announced(child: Child, pattern: str, timeout: float) -> str:
    """The address ``child`` prints on the line matching ``pattern`` (its first group);
    a child that fails first or does not say it in time is stopped and ChildFailed raised."""
    try:
        return child.wait_for_line(pattern, timeout).group(1)
    except ChildFailed:
        child.stop(grace=5)
        raise
