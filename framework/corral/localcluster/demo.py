"""``corral demo``: Corral's main job on one machine, from nothing to a checked result.

It starts ``localmesos`` (on-demand and spot agents) and one scheduler on local defaults
(no ZooKeeper needed for a single replica), makes a data set, submits the sample
batch-scoring job over gRPC, shows live progress, verifies the outputs bit for bit
against a single-process run, prints a summary, and stops every process it started —
also on Ctrl-C or SIGTERM. ``--chaos`` takes spot machines away while the job runs
(``chaos`` decides which and when, and words what happens). ``--kind dask`` runs an
unchanged Dask program as a ``kind: dask`` job instead (``demo_dask``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from corral.core.spec import parse_job_spec
from corral.core.views import JobView
from corral.localcluster import chaos
from corral.localcluster.procs import Child, ChildFailed, start_localmesos, start_scheduler
from corral.localmesos import control

PY = shlex.quote(sys.executable)
SCORING = f"{PY} -m corral_executor.samples.scoring"
POLL_SECONDS = 0.25
HEALTH_TIMEOUT = 2.0  # with --chaos: localmesos' agent health timeout (Mesos: 75 s)
KILL_GRACE = 2.0      # the job's kill grace: SIGTERM, then SIGKILL after this long
# Corral kills a draining task kill grace + 1 s before its machine goes; a notice must
# leave the worker time to finish its chunk before that.
MIN_NOTICE = KILL_GRACE + 1 + 1


def build_parser(prog: str = "corral demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Start localmesos and a scheduler, run the sample batch-scoring job "
                    "(a master and its workers) or, with --kind dask, a Dask program that "
                    "Corral sizes by Dask's own load; verify the result, and clean up. With "
                    "--chaos, spot machines are taken away while the scoring job runs.",
    )
    p.add_argument("--kind", choices=("scoring", "dask"), default="scoring",
                   help="scoring: the SDK sample (default); dask: a plain Dask program as "
                        "a kind: dask job (needs corral[dask])")
    p.add_argument("--chaos", action="store_true",
                   help="take spot machines away while the job runs: one with no notice "
                        "once 25%% of the chunks are done, another with --notice once 50%% "
                        "are; the progress shows each loss, replacement and drain, the "
                        "summary what they cost")
    p.add_argument("--notice", type=float, default=6.0, metavar="SECONDS",
                   help=f"with --chaos: the second machine's notice, at least {MIN_NOTICE:g} "
                        "(default %(default)g)")
    p.add_argument("--agents", type=int, default=None,
                   help="agents to start (default 4; 5 with --chaos)")
    p.add_argument("--spot", type=int, default=None,
                   help="how many of them are spot capacity (default 2; 3 with --chaos)")
    p.add_argument("--workers", type=int, default=4,
                   help="workers in the job (default 4; for dask: the most it may grow to)")
    p.add_argument("--chunks", type=int, default=None,
                   help="data chunks to score, or Dask partitions (default 48; dask 160)")
    p.add_argument("--rows", type=int, default=None,
                   help="rows per chunk (default 4000; dask 2000)")
    p.add_argument("--delay", type=float, default=0.25,
                   help="dask: seconds of simulated loading work per partition "
                        "(default 0.25)")
    p.add_argument("--features", type=int, default=32, help="features per row (default 32)")
    p.add_argument("--chunk-delay", type=float, default=None, metavar="SECONDS",
                   help="slow each chunk down by this much (default 0; 0.8 with --chaos, so "
                        "the faults land mid-job)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where data, outputs, checkpoints and logs go (default: a temporary "
                        "directory, removed afterwards; after a failure only the data set is "
                        "removed and the rest kept for a look)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (implied by --work-dir)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="give up if the job has not finished after this many seconds "
                        "(default 300)")
    return p


def job_spec(args: argparse.Namespace, data: Path, out: Path, ckpt: Path) -> dict[str, Any]:
    common = f"--data {shlex.quote(str(data))} --out {shlex.quote(str(out))}"
    # With chaos a lost worker's chunk comes back to the queue quickly.
    lease = 5 if args.chaos else 20
    return {
        "role": "demo",
        "environment": "local",
        "name": f"scoring-{uuid.uuid4().hex[:6]}",
        "tier": "preemptible",
        "master": {"command": f"{SCORING} master {common} --lease-seconds {lease} "
                              "--host 127.0.0.1",
                   "cpus": 0.5, "mem": 256, "ports": 1},
        "workers": {"command": f"{SCORING} worker {common} --chunk-delay {args.chunk_delay:g}",
                    "cpus": 1, "mem": 384, "min": 1, "max": max(args.workers, 1),
                    "initial": max(args.workers, 1)},
        "checkpoint": {"uri": ckpt.as_uri(), "interval_seconds": 2},
        "constraints": {"spread_over": "market"},
        "kill_grace_seconds": KILL_GRACE,
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


class _Progress:
    """A one-line progress bar on a terminal (plain lines otherwise), with event lines
    printed above it."""

    def __init__(self, chaos: bool) -> None:
        self.tty = sys.stdout.isatty()
        self.chaos = chaos
        self._last = ""

    def show(self, v: JobView) -> None:
        p = v.progress
        running = sum(1 for t in v.tasks if t.slot.startswith("worker")
                      and t.state == "TASK_RUNNING")
        width = 30
        frac = p.done / p.total if p.total else 0.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"{v.state.value:<8} [{bar}] {p.done}/{p.total or '?'} chunks, "
                f"{_plural(running, 'worker')} running")
        r = v.resilience
        if self.chaos and r.losses:
            line += (f", {_plural(r.losses, 'loss')}"
                     + (f" ({r.losses - r.recoveries} recovering)"
                        if r.losses > r.recoveries else ", all recovered"))
        if line == self._last:
            return
        self._last = line
        if self.tty:
            print("\r\x1b[K" + line, end="", flush=True)
        else:
            print(line, flush=True)

    def say(self, text: str) -> None:
        """An event line; the bar is drawn again under it."""
        if self.tty:
            print("\r\x1b[K  " + text + "\n" + self._last, end="", flush=True)
        else:
            print("  " + text, flush=True)

    def end(self) -> None:
        if self.tty:
            print()


def _terminate_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    keep = args.keep or args.work_dir is not None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="corral-demo-")).resolve()
    data, out, ckpt, logs = (work / d for d in ("data", "out", "ckpt", "logs"))
    for d in (data, out, ckpt, logs):
        d.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    t0 = time.monotonic()
    code = 1
    try:
        if args.kind == "dask":
            from corral.localcluster import demo_dask

            code = demo_dask.run(args, work, logs, children)
        else:
            code = _run(args, work, data, out, ckpt, logs, children, t0)
    except KeyboardInterrupt:
        code = 130
        print("\ncorral demo: interrupted, cleaning up", file=sys.stderr)
    finally:
        # A second Ctrl-C must not cut the clean-up short (each stop is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop(grace=10)
        _tidy(work, data, logs, keep=keep, code=code)
    return code


def _tidy(work: Path, data: Path, logs: Path, *, keep: bool, code: int) -> None:
    """Remove what the demo made, as --help says: everything after a success or an
    interruption; after a failure only the (large, regenerable) data set."""
    if keep:
        print(f"corral demo: kept {work} (logs in {logs})")
    elif code in (0, 130):
        shutil.rmtree(work, ignore_errors=True)
    else:
        shutil.rmtree(data, ignore_errors=True)
        print(f"corral demo: kept {work} for a look (logs in {logs}); removed its data set")


def _run(args: argparse.Namespace, work: Path, data: Path, out: Path, ckpt: Path,
         logs: Path, children: list[Child], t0: float) -> int:
    from corral.api.client import ApiError, JobClient

    try:
        print(f"corral demo: work directory {work}")
        # Its own session: a Ctrl-C reaches the demo, which stops it, not it directly.
        subprocess.run(
            [sys.executable, "-m", "corral_executor.samples.scoring", "make-data",
             "--data", str(data), "--chunks", str(args.chunks), "--rows", str(args.rows),
             "--features", str(args.features), "--seed", "7"],
            check=True, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        spot = min(args.spot, args.agents)
        health = ["--agent-health-timeout", f"{HEALTH_TIMEOUT:g}"] if args.chaos else []
        lm, master_url = start_localmesos(
            work / "mesos", logs, agents=args.agents, spot=spot, cpus=4, mem=4096,
            extra=health,
        )
        children.append(lm)
        print(f"corral demo: localmesos at {master_url} "
              f"({args.agents - spot} on-demand + {spot} spot agents"
              + (f"; a silent agent is lost after {HEALTH_TIMEOUT:g} s" if args.chaos else "")
              + ")")
        sched, api = start_scheduler(master_url, logs)
        children.append(sched)
        print(f"corral demo: scheduler API at {api}")

        spec = parse_job_spec(job_spec(args, data, out, ckpt))
        with JobClient(api, timeout=10) as client:
            view = client.submit(spec, request_id=uuid.uuid4().hex)
            print(f"corral demo: submitted {view.key} (1 master + {args.workers} workers)")
            final, done = _follow(client, view.key, args, master_url)
            if not final.state.terminal:
                print(f"corral demo: job not finished after {args.timeout:g}s; killing it")
                client.kill(view.key)
                return 1
        wall = time.monotonic() - t0
        return _summary(final, done, data, out, wall, logs)
    except ChildFailed as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"corral demo: making the data set failed ({exc})", file=sys.stderr)
        return 2
    except OSError as exc:  # localmesos' control endpoints, with --chaos
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2


def _follow(client: Any, key: str, args: argparse.Namespace, master_url: str
            ) -> tuple[JobView, chaos.Chaos | None]:
    """Show the job's progress until it ends (or the timeout); with --chaos, carry out
    the faults and tell what happens to the job."""
    bar = _Progress(args.chaos)
    record = chaos.plan(args.notice) if args.chaos else None
    deadline = time.monotonic() + args.timeout
    view = client.get(key)
    while True:
        if record is not None:
            record = _chaos_step(record, view, master_url, bar)
        bar.show(view)
        if view.state.terminal or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
        view = client.get(key)
    bar.end()
    return view, record


def _chaos_step(record: chaos.Chaos, view: JobView, master_url: str, bar: _Progress
                ) -> chaos.Chaos:
    rows = control.agents(master_url)
    record, lines = chaos.observe(record, view, rows)
    if record.draining:
        record, more = chaos.drains(record, control.task_states(master_url))
        lines += more
    hit = chaos.next_fault(record, view, rows)
    if hit is not None:
        control.terminate(master_url, hit.agent_id, hit.fault.notice)
        lines.append(chaos.describe_hit(hit))
        new = control.add_agent(master_url, spot=True)
        label = next((chaos.agent_label(r) for r in control.agents(master_url)
                      if r["id"] == new), new)
        lines.append(f"chaos    {label} joins, as a cloud replaces a reclaimed machine")
        record = chaos.carried_out(record, hit)
    for line in lines:
        bar.say(line)
    return record


def _summary(v: JobView, record: chaos.Chaos | None, data: Path, out: Path, wall: float,
             logs: Path) -> int:
    attempts = sum(t.attempt for t in v.tasks) if v.tasks else 0
    success = out / "_SUCCESS"
    info: dict[str, Any] = {}
    if success.exists():
        try:
            info = json.loads(success.read_text())
        except ValueError:
            info = {}
    verify = subprocess.run(
        [sys.executable, "-m", "corral_executor.samples.scoring", "verify",
         "--data", str(data), "--out", str(out)],
        capture_output=True, text=True,
    )
    problems: list[str] = []
    if record is not None and not record.complete:
        problems.append(f"  chaos            incomplete: the job ended before "
                        f"{len(record.plan) - len(record.hits)} planned fault(s); try more "
                        "--chunks or a larger --chunk-delay")
    return print_summary(v, wall, verify, logs, [
        ("tasks run", f"{attempts} (slots: {len(v.tasks)})"),
        ("chunks scored", f"{v.progress.done}/{v.progress.total}"),
        ("chunks re-run", str(info.get("reruns", v.progress.rerun))),
    ], chaos.summary(record, v) if record is not None else [], problems)


def print_summary(v: JobView, wall: float, verify: subprocess.CompletedProcess[str],
                  logs: Path, rows: list[tuple[str, str]], lines: list[str] | None = None,
                  problems: list[str] | None = None) -> int:
    """The closing summary of a demo: ``rows`` (label, value), then ``lines`` as they are,
    then the verification; 0 if the job FINISHED, its check passed and no ``problems``
    (printed lines) remain."""
    print()
    print(f"job {v.key}: {v.state.value}" + (f" ({v.message})" if v.message else ""))
    for label, value in [("wall time", f"{wall:.1f} s"), *rows]:
        print(f"  {label:<16} {value}")
    for line in lines or []:
        print(line)
    print(f"  {'verification':<16} {verify.stdout.strip() or verify.stderr.strip()}")
    ok = v.state.value == "FINISHED" and verify.returncode == 0 and not problems
    for line in problems or []:
        print(line)
    if not ok:
        print(f"  {'logs':<16} {logs}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.agents is None:
        args.agents = 5 if args.chaos else 4
    if args.spot is None:
        args.spot = 3 if args.chaos else 2
    if args.chunk_delay is None:
        args.chunk_delay = 0.8 if args.chaos else 0.0
    dask = args.kind == "dask"
    args.chunks = args.chunks if args.chunks is not None else (160 if dask else 48)
    args.rows = args.rows if args.rows is not None else (2000 if dask else 4000)
    if args.agents < 1 or args.workers < 1 or args.chunks < 1 or args.rows < 1:
        print("corral demo: --agents, --workers, --chunks and --rows must be at least 1",
              file=sys.stderr)
        return 2
    if not 0 <= args.delay <= 60:
        print("corral demo: --delay must be within 0..60 seconds", file=sys.stderr)
        return 2
    if dask and args.chaos:
        print("corral demo: --chaos runs the scoring job; it does not combine with --kind "
              "dask (tests/e2e/test_dask.py shows Dask jobs through spot loss)",
              file=sys.stderr)
        return 2
    if dask:
        try:
            import distributed  # noqa: F401
        except ImportError:
            print("corral demo: --kind dask needs Dask: pip install 'corral[dask]'",
                  file=sys.stderr)
            return 2
    if args.chaos and (min(args.spot, args.agents) < 2 or args.notice < MIN_NOTICE):
        print(f"corral demo: --chaos needs at least 2 spot agents and a --notice of at least "
              f"{MIN_NOTICE:g} s (the job's {KILL_GRACE:g} s kill grace + 1 s come off it "
              "before the machine goes)", file=sys.stderr)
        return 2
    if args.chunk_delay < 0 or args.timeout <= 0:
        print("corral demo: --chunk-delay must be >= 0 and --timeout positive", file=sys.stderr)
        return 2
    _terminate_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
