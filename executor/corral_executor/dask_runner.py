"""Corral's side of a Dask job: the master task (a Dask scheduler, then the user's driver)
and the worker tasks (Dask workers), as Corral launches them for ``kind: dask``.

    python -m corral_executor.dask_runner scheduler --driver 'python3 features.py'
    python -m corral_executor.dask_runner worker --nthreads 2 --memory-limit 8589934592
    python -m corral_executor.dask_runner exec -- dask worker --name "$CORRAL_TASK_ID" ...

**scheduler** (the master task) starts a ``distributed.Scheduler`` in this process on
``$CORRAL_PORT``, then runs the driver (``/bin/sh -c``) with ``DASK_SCHEDULER_ADDRESS``
set, so ``distributed.Client()`` connects with no arguments, and exits with the driver's
exit code. While the driver runs it

- reports the Dask scheduler's own view of its load every ``--load-interval`` seconds
  through the SDK (``report_load``): ``Scheduler.adaptive_target()``, the rule Dask's
  ``Adaptive`` uses (queued work times expected durations, memory use), and the tasks
  waiting or running; and Dask's task counts as progress (``rerun``: tasks computed again);
- retires the workers the Corral scheduler names (``retire.json``, see ``sdk.
  retire_requests``) through Dask, so their in-memory results move to other workers
  before they close: no new tasks go to them, their running tasks finish, what they hold
  is copied elsewhere, then Dask closes them (by their deadline at the latest).

**worker** runs a ``distributed.Worker`` named ``$CORRAL_TASK_ID`` (how the Corral
scheduler names it when retiring it) with the slot's cpus as threads and its memory as
Dask's memory limit, connected to the master's scheduler (``sdk.master_address()``). If
the scheduler goes away (a relaunched master, with a new graph) it connects to the new
one; it exits 0 once Dask retired it, and 3 if no scheduler was reachable for
``--give-up-seconds``.

**exec** runs a user's own worker command with ``DASK_SCHEDULER_ADDRESS`` set.

``distributed`` is imported only here, only when a Dask task runs (``corral[dask]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from corral_executor import sdk
from corral_executor.net import accepts_connections

log = logging.getLogger("corral_executor.dask_runner")

#: Exit code when no Dask scheduler could be reached for ``--give-up-seconds``.
EXIT_NO_SCHEDULER = 3
#: Seconds before a retirement's deadline by which the worker must be closed.
RETIRE_MARGIN = 1.0
#: Dask task states that still need computing: the backlog Corral reports.
OUTSTANDING = ("waiting", "no-worker", "queued", "processing")
COUNTS_FILE = "dask-counts.json"


# ---------------------------------------------------------------------------- pure helpers


def load_detail(queued: int, wants: int) -> str:
    """The line ``corral status`` shows for a Dask job's load."""
    return f"dask: {queued} tasks queued, wants {wants}"


def scheduler_url(address: str) -> str:
    """``tcp://host:port`` for a ``host:port`` (or an address that already has a scheme)."""
    return address if "://" in address else f"tcp://{address}"


def contact_host(bind_host: str) -> str:
    """Where a process on this machine reaches a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it (a signal N becomes 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def new_retirements(requests: Iterable[tuple[str, float]],
                    handled: set[str]) -> list[tuple[str, float]]:
    """The requested retirements not acted on yet, in request order."""
    return [(name, by) for name, by in requests if name not in handled]


def outstanding(states: Iterable[Mapping[str, int]]) -> int:
    """Tasks still to compute, summed over task groups' state counters."""
    return sum(s.get(k, 0) for s in states for k in OUTSTANDING)


def worker_host() -> str | None:
    """The address this machine's workers advertise: ``CORRAL_BIND_HOST``, else the
    agent's own address (``MESOS_AGENT_ENDPOINT``: reachable from the rest of the
    cluster by construction), else Dask's guess."""
    host = os.environ.get("CORRAL_BIND_HOST")
    if host:
        return host
    endpoint = os.environ.get("MESOS_AGENT_ENDPOINT", "")
    if ":" in endpoint:
        return endpoint.rsplit(":", 1)[0].strip("[]") or None
    return None


# ---------------------------------------------------------------------------- master


class _Stop:
    """SIGTERM/SIGINT as an asyncio event (Corral kills the task with SIGTERM)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.event.set)


def _counts_plugin() -> Any:
    """A scheduler plugin counting computations: ``computed`` (a task reached memory),
    ``recomputed`` (a task still known to the scheduler reached memory again: its
    result was lost, e.g. with a worker) and ``rescheduled`` (a task assigned to a
    worker was taken back before it finished, whether it had started or not), plus
    ``first_task_at``: when the first task went to a worker (seconds since the epoch)."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TaskCounts(SchedulerPlugin):
        name = "corral-counts"

        def __init__(self) -> None:
            self.computed = 0
            self.recomputed = 0
            self.rescheduled = 0
            self.first_task_at: float | None = None
            self._done: set[Any] = set()

        def transition(self, key: Any, start: str, finish: str, *args: Any,
                       **kwargs: Any) -> None:
            if finish == "processing" and self.first_task_at is None:
                self.first_task_at = time.time()
            if start == "processing" and finish == "memory":
                self.computed += 1
                if key in self._done:
                    self.recomputed += 1
                self._done.add(key)
            elif start == "processing" and finish in ("released", "waiting", "no-worker",
                                                       "queued"):
                self.rescheduled += 1
            elif finish == "forgotten":
                self._done.discard(key)

        def snapshot(self) -> dict[str, Any]:
            return {"computed": self.computed, "recomputed": self.recomputed,
                    "rescheduled": self.rescheduled, "first_task_at": self.first_task_at}

    return TaskCounts()


def _report(sched: Any, counts: Any) -> None:
    queued = outstanding(tg.states for tg in list(sched.task_groups.values()))
    wants = int(sched.adaptive_target())
    sdk.report_load(min(wants, 100_000), min(queued, 10**12), load_detail(queued, wants))
    done = counts.computed
    sdk.report_progress(done, done + queued, backlog=queued, rerun=counts.recomputed)


async def _load_loop(sched: Any, counts: Any, interval: float) -> None:
    while True:
        try:
            _report(sched, counts)
        except Exception as exc:  # a report is a hint: never let it stop the job
            log.warning("load report failed: %r", exc)
        await asyncio.sleep(interval)


async def retire(sched: Any, name: str, by: float, poll: float = 0.2) -> str:
    """Retire Dask worker ``name`` by time ``by``, losing nothing it computed.

    1. ``retire_workers(remove=False)``: Dask sends it no new tasks and copies its
       in-memory results to other workers;
    2. wait until its running tasks finish (asked of the worker itself);
    3. ``retire_workers(close_workers=True)``: copy what finished meanwhile, remove and
       close it. Past ``by - RETIRE_MARGIN`` it closes whatever is still running.

    Returns "retired", "deadline" (closed at the deadline), "refused" (Dask had no worker
    to take its results: the last one), "gone" or "unknown" (no such worker joined before
    the deadline: one still starting is waited for).
    """
    deadline = by - RETIRE_MARGIN

    def address() -> str | None:
        for addr, ws in list(sched.workers.items()):
            if str(ws.name) == name:
                return str(addr)
        return None

    # A worker still starting (or retrying its join) is asked as soon as it joins.
    addr = address()
    while addr is None and time.time() < deadline:
        await asyncio.sleep(poll)
        addr = address()
    if addr is None:
        return "unknown"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            sched.retire_workers(names=[name], close_workers=False, remove=False),
            max(0.1, deadline - time.time()))
    while time.time() < deadline and address() is not None:
        try:
            running = await asyncio.wait_for(sched.rpc(addr).call_stack(), 5)
        except Exception:
            break
        if not running:
            break
        await asyncio.sleep(poll)
    if address() is None:
        return "gone"
    try:
        retired = await asyncio.wait_for(
            sched.retire_workers(names=[name], close_workers=True, remove=True),
            max(0.1, deadline - time.time()))
        if addr not in retired and address() is not None:
            # Dask refused (no other worker can take its results): Corral's deadline
            # kill stops it; the job wanted it gone anyway.
            log.warning("retiring %s: Dask found no worker to take its results", name)
            return "refused"
    except TimeoutError:
        log.warning("retiring %s: deadline reached, closing it", name)
        with contextlib.suppress(Exception):
            await sched.remove_worker(addr, stimulus_id=f"corral-retire-{time.time()}",
                                      close=True)
        return "deadline"
    return "retired"


async def _retire_loop(sched: Any, poll: float) -> None:
    handled: set[str] = set()
    running: set[asyncio.Task[str]] = set()
    while True:
        for name, by in new_retirements(sdk.retire_requests(), handled):
            handled.add(name)
            log.info("retiring Dask worker %s (by %.0f)", name, by)
            t = asyncio.get_running_loop().create_task(retire(sched, name, by))
            running.add(t)
            t.add_done_callback(running.discard)
        await asyncio.sleep(poll)


async def run_scheduler(driver: str, host: str, load_interval: float) -> int:
    """The master task: Dask scheduler, driver, load and retirements. Returns the exit
    code (the driver's, or 143 when stopped)."""
    from distributed import Scheduler

    stop = _Stop()
    info = sdk.task_info()
    # A second master port serves Dask's HTTP endpoints (and its dashboard, if bokeh is
    # installed); without one they go to a free port, never Dask's fixed default 8787.
    http = info.ports[1] if len(info.ports) > 1 else 0
    sched = Scheduler(host=host, port=info.port or 0, dashboard=None if http else False,
                      dashboard_address=f":{http}", idle_timeout=None)
    await sched
    counts = _counts_plugin()
    sched.add_plugin(counts, name=counts.name)
    url = f"tcp://{contact_host(host)}:{sched.port}"
    log.info("Dask scheduler at %s; starting the driver", sched.address)
    env = dict(os.environ, DASK_SCHEDULER_ADDRESS=url)
    driver_proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", driver, env=env)
    helpers = [asyncio.get_running_loop().create_task(c) for c in (
        _load_loop(sched, counts, load_interval), _retire_loop(sched, 0.2))]
    stopped = asyncio.get_running_loop().create_task(stop.event.wait())
    waiter = asyncio.get_running_loop().create_task(driver_proc.wait())
    try:
        await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            # Corral is stopping the task: the driver shares our process group and got
            # the same SIGTERM; give it a moment, then make sure.
            with contextlib.suppress(ProcessLookupError):
                driver_proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 5)
            code = sdk.TERMINATED_EXIT_CODE
        else:
            code = exit_status(waiter.result())
    finally:
        for t in (*helpers, stopped):
            t.cancel()
        if not waiter.done():
            with contextlib.suppress(ProcessLookupError):
                driver_proc.kill()
        _write_counts(counts.snapshot())
        with contextlib.suppress(Exception):
            _report(sched, counts)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sched.close(), 10)
    log.info("driver exited with %d", code)
    return code


def _write_counts(counts: dict[str, Any]) -> None:
    sandbox = sdk.task_info().sandbox
    if sandbox is not None:
        with contextlib.suppress(OSError):
            (sandbox / COUNTS_FILE).write_text(json.dumps(counts))


# ---------------------------------------------------------------------------- worker


def _worker_class() -> Any:
    from distributed import Worker
    from distributed.core import Status

    class CorralWorker(Worker):
        """A Dask worker that remembers whether the scheduler was retiring it."""

        retiring = False

        def handle_worker_status_change(self, status: str, stimulus_id: str) -> None:
            super().handle_worker_status_change(status, stimulus_id)
            self.retiring = self.status == Status.closing_gracefully

    return CorralWorker


async def _wait_for_scheduler(stop: asyncio.Event, give_up: float) -> str | None:
    """The master's ``host:port`` once something listens there; None on give-up/stop."""
    deadline = time.monotonic() + give_up
    delay = 0.05
    while time.monotonic() < deadline and not stop.is_set():
        addr = sdk.master_address()
        if addr:
            up = await asyncio.to_thread(accepts_connections, addr)
            if up:
                return addr
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 1.0)
    return None


async def run_worker(nthreads: int, memory_limit: int, give_up: float,
                     death_timeout: float) -> int:
    """A worker task: one Dask worker at a time, following the master. Exit code 0 once
    retired, 3 when no scheduler came back within ``give_up`` seconds, 143 on SIGTERM."""
    cls = _worker_class()
    stop = _Stop()
    info = sdk.task_info()
    name = info.task_id or socket.gethostname()
    while True:
        addr = await _wait_for_scheduler(stop.event, give_up)
        if stop.event.is_set():
            return sdk.TERMINATED_EXIT_CODE
        if addr is None:
            log.error("no Dask scheduler reachable for %gs; giving up", give_up)
            return EXIT_NO_SCHEDULER
        worker = cls(scheduler_url(addr), nthreads=nthreads, memory_limit=memory_limit,
                     name=name, host=worker_host(), port=info.port or 0, dashboard=False,
                     death_timeout=death_timeout)
        try:
            await worker
        except Exception as exc:
            log.warning("Dask worker could not join %s: %r; retrying", addr, exc)
            with contextlib.suppress(Exception):
                await worker.close(reason="corral-join-failed")
            await asyncio.sleep(1.0)
            continue
        log.info("Dask worker %s joined %s", name, addr)
        outcome = await _watch_worker(worker, addr, stop.event)
        if outcome == "retired":
            log.info("retired by the Dask scheduler; exiting")
            return 0
        if outcome == "stopped":
            return sdk.TERMINATED_EXIT_CODE
        log.info("Dask scheduler %s gone (%s); waiting for the master", addr, outcome)


async def _watch_worker(worker: Any, addr: str, stop: asyncio.Event) -> str:
    """Wait until the worker closes: "retired", "stopped" (SIGTERM), "moved" (the master
    has a new address) or "lost" (the scheduler went away)."""
    from distributed.core import Status

    while worker.status not in (Status.closed, Status.failed, Status.closing):
        if stop.is_set():
            # Corral kills this worker (scale-down with no master to ask, the job's end):
            # move what it holds first, within the kill's grace.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close_gracefully(reason="corral-sigterm"), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close(reason="corral-sigterm"), 5)
            return "stopped"
        if sdk.master_address() not in (None, addr):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close(reason="corral-master-moved"), 10)
            return "moved"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker.finished(), 10)
    return "retired" if worker.retiring else "lost"


# ---------------------------------------------------------------------------- exec


def run_exec(command: list[str]) -> int:
    """Replace this process with a user's worker command, ``DASK_SCHEDULER_ADDRESS`` set
    to the master's scheduler."""
    addr = sdk.master_address()
    if addr:
        os.environ["DASK_SCHEDULER_ADDRESS"] = scheduler_url(addr)
    os.execvp(command[0], command)
    return 127  # not reached


# ---------------------------------------------------------------------------- main


def missing(module: str, prog: str, extra: str) -> bool:
    """True (after saying so on stderr) when ``module`` cannot be imported here."""
    try:
        __import__(module)
    except ImportError:
        print(f"{prog}: the {module!r} package is not installed on this agent "
              f"(pip install 'corral[{extra}]')", file=sys.stderr)
        return True
    return False


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m corral_executor.dask_runner",
                                description="Corral's Dask master and worker tasks.")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("scheduler", help="a Dask scheduler, then the driver beside it")
    s.add_argument("--driver", required=True, help="the driver command (run by /bin/sh)")
    s.add_argument("--host", default=os.environ.get("CORRAL_BIND_HOST", "0.0.0.0"),
                   help="address to listen on (default $CORRAL_BIND_HOST or 0.0.0.0)")
    s.add_argument("--load-interval", type=_positive, default=1.0,
                   help="seconds between load reports (default 1)")
    w = sub.add_parser("worker", help="a Dask worker for the job's scheduler")
    w.add_argument("--nthreads", type=int, default=1)
    w.add_argument("--memory-limit", type=int, default=0, help="bytes (0: no limit)")
    w.add_argument("--give-up-seconds", type=_positive, default=300.0,
                   help="exit 3 when no scheduler is reachable this long (default 300)")
    w.add_argument("--death-timeout", type=_positive, default=60.0,
                   help="seconds a worker waits on an unreachable scheduler (default 60)")
    e = sub.add_parser("exec", help="run a worker command with DASK_SCHEDULER_ADDRESS")
    e.add_argument("command", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("CORRAL_DASK_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s corral-dask %(levelname)s %(message)s",
                        stream=sys.stderr)
    if args.role == "exec":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            print("dask_runner exec: no command given", file=sys.stderr)
            return 2
        return run_exec(cmd)
    if missing("distributed", "dask_runner", "dask"):
        return 2
    if args.role == "scheduler":
        return asyncio.run(run_scheduler(args.driver, args.host, args.load_interval))
    return asyncio.run(run_worker(max(1, args.nthreads), max(0, args.memory_limit),
                                  args.give_up_seconds, args.death_timeout))


if __name__ == "__main__":
    sys.exit(main())
