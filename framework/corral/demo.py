"""``corral demo``: Corral's main job on one machine, from nothing to a checked result.

``--kind dask`` runs an unchanged Dask program as a ``kind: dask`` job instead
(``corral.demo_dask``).

It starts ``localmesos`` (on-demand and spot agents) and one scheduler on local defaults
(no ZooKeeper needed for a single replica), makes a data set, submits the sample
batch-scoring job over gRPC, shows live progress, verifies the outputs bit for bit
against a single-process run, prints a summary, and stops every process it started —
also on Ctrl-C or SIGTERM.
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
from corral.procs import Child, ChildFailed, start_localmesos, start_scheduler

PY = shlex.quote(sys.executable)
SCORING = f"{PY} -m corral_executor.samples.scoring"


def build_parser(prog: str = "corral demo") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Start localmesos and a scheduler, run the sample batch-scoring job "
                    "(a master and its workers) or, with --kind dask, a Dask program that "
                    "Corral sizes by Dask's own load; verify the result, and clean up.",
    )
    p.add_argument("--kind", choices=("scoring", "dask"), default="scoring",
                   help="scoring: the SDK sample (default); dask: a plain Dask program as "
                        "a kind: dask job (needs corral[dask])")
    p.add_argument("--agents", type=int, default=4, help="agents to start (default 4)")
    p.add_argument("--spot", type=int, default=2,
                   help="how many of them are spot capacity (default 2)")
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
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where data, outputs, checkpoints and logs go "
                        "(default: a temporary directory, removed afterwards)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (implied by --work-dir)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="give up if the job has not finished after this many seconds "
                        "(default 300)")
    return p


def job_spec(args: argparse.Namespace, data: Path, out: Path, ckpt: Path) -> dict[str, Any]:
    common = f"--data {shlex.quote(str(data))} --out {shlex.quote(str(out))}"
    return {
        "role": "demo",
        "environment": "local",
        "name": f"scoring-{uuid.uuid4().hex[:6]}",
        "tier": "preemptible",
        "master": {"command": f"{SCORING} master {common} --lease-seconds 20 --host 127.0.0.1",
                   "cpus": 0.5, "mem": 256, "ports": 1},
        "workers": {"command": f"{SCORING} worker {common}", "cpus": 1, "mem": 384,
                    "min": 1, "max": max(args.workers, 1), "initial": max(args.workers, 1)},
        "checkpoint": {"uri": ckpt.as_uri(), "interval_seconds": 2},
        "constraints": {"spread_over": "market"},
        "kill_grace_seconds": 5,
    }


class _Progress:
    """A one-line progress bar on a terminal; plain lines otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last = ""

    def show(self, v: JobView) -> None:
        p = v.progress
        running = sum(1 for t in v.tasks if t.state == "TASK_RUNNING")
        width = 30
        frac = p.done / p.total if p.total else 0.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"{v.state.value:<8} [{bar}] {p.done}/{p.total or '?'} chunks, "
                f"{running} tasks running")
        if line == self._last:
            return
        self._last = line
        if self.tty:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)

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
            from corral import demo_dask

            code = demo_dask.run(args, work, logs, children)
        else:
            code = _run(args, work, data, out, ckpt, logs, children, t0)
        return code
    except KeyboardInterrupt:
        print("\ncorral demo: interrupted, cleaning up", file=sys.stderr)
        code = 130
        return code
    finally:
        for child in reversed(children):
            child.stop(grace=15)
        if keep or code != 0:
            print(f"corral demo: kept {work} (logs in {logs})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path, data: Path, out: Path, ckpt: Path,
         logs: Path, children: list[Child], t0: float) -> int:
    from corral.api.client import ApiError, JobClient

    try:
        print(f"corral demo: work directory {work}")
        subprocess.run(
            [sys.executable, "-m", "corral_executor.samples.scoring", "make-data",
             "--data", str(data), "--chunks", str(args.chunks), "--rows", str(args.rows),
             "--features", str(args.features), "--seed", "7"],
            check=True, stdout=subprocess.DEVNULL,
        )
        spot = min(args.spot, args.agents)
        lm, master_url = start_localmesos(
            work / "mesos", logs, agents=args.agents, spot=spot, cpus=4, mem=4096,
        )
        children.append(lm)
        print(f"corral demo: localmesos at {master_url} "
              f"({args.agents - spot} on-demand + {spot} spot agents)")
        sched, api = start_scheduler(master_url, logs)
        children.append(sched)
        print(f"corral demo: scheduler API at {api}")

        spec = parse_job_spec(job_spec(args, data, out, ckpt))
        with JobClient(api, timeout=10) as client:
            view = client.submit(spec, request_id=uuid.uuid4().hex)
            print(f"corral demo: submitted {view.key} (1 master + {args.workers} workers)")
            bar = _Progress()
            deadline = time.monotonic() + args.timeout
            final = view
            for v in client.watch(view.key):
                final = v
                bar.show(v)
                if time.monotonic() > deadline:
                    break
            bar.end()
            if not final.state.terminal:
                print(f"corral demo: job not finished after {args.timeout:g}s; killing it")
                client.kill(view.key)
                return 1
        wall = time.monotonic() - t0
        return _summary(final, data, out, wall, logs)
    except ChildFailed as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"corral demo: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"corral demo: making the data set failed ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncorral demo: interrupted, cleaning up", file=sys.stderr)
        return 130


def _summary(v: JobView, data: Path, out: Path, wall: float, logs: Path) -> int:
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
    return print_summary(v, wall, verify, logs, [
        ("tasks run", f"{attempts} (slots: {len(v.tasks)})"),
        ("chunks scored", f"{v.progress.done}/{v.progress.total}"),
        ("chunks re-run", str(info.get("reruns", v.progress.rerun))),
    ])


def print_summary(v: JobView, wall: float, verify: subprocess.CompletedProcess[str],
                  logs: Path, rows: list[tuple[str, str]]) -> int:
    """The closing summary of a demo; 0 if the job FINISHED and its check passed."""
    print()
    print(f"job {v.key}: {v.state.value}" + (f" ({v.message})" if v.message else ""))
    for label, value in [("wall time", f"{wall:.1f} s"), *rows,
                         ("verification", verify.stdout.strip() or verify.stderr.strip())]:
        print(f"  {label:<16} {value}")
    ok = v.state.value == "FINISHED" and verify.returncode == 0
    if not ok:
        print(f"  {'logs':<16} {logs}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    if dask:
        try:
            import distributed  # noqa: F401
        except ImportError:
            print("corral demo: --kind dask needs Dask: pip install 'corral[dask]'",
                  file=sys.stderr)
            return 2
    _terminate_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
