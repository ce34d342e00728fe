"""Corral's side of a PyTorch elastic job (``kind: torch``): the rendezvous in the master
task and ``torchrun`` in each worker task.

    python -m corral_executor.torch_runner rendezvous
    python -m corral_executor.torch_runner worker --nnodes 1:4 --nproc-per-node 1 \\
        --max-restarts 3 -- train.py --epochs 3

**rendezvous** (the master task) serves a c10d ``TCPStore`` on ``$CORRAL_PORT``: the
store torchrun's c10d rendezvous backend keeps its state in. Workers join and leave it
freely; the task exits 0 once a worker reports that training finished (the job is then
FINISHED and Corral stops the rest).

**worker** runs ``torchrun --nnodes=MIN:MAX --rdzv-backend=c10d --rdzv-endpoint=<master>``
with the user's script and arguments (everything after ``--``, as torchrun takes them).
A lost or added worker is a membership change: the other agents restart their training
processes in a new rendezvous round (the script resumes from its own checkpoint), so the
job goes on as long as ``MIN`` nodes remain. When torchrun exits 0 the runner tells the
rendezvous that training finished and exits 0; another exit code is passed on. If the
master moves (a relaunched master is a new, empty store) torchrun is restarted against it.

``torch`` is imported only here, only when a torch task runs (``corral[torch]``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from types import FrameType

from corral_executor import sdk
from corral_executor.dask_runner import (
    EXIT_NO_SCHEDULER,
    exit_status,
    missing,
    worker_host,
)
from corral_executor.net import accepts_connections

#: The store key a worker sets when its torchrun finished training successfully.
FINISHED_KEY = "corral/finished"


def run_id() -> str:
    """The rendezvous id: the job's key, the same for every worker of the job."""
    return (os.environ.get("CORRAL_JOB") or "corral").replace("/", "-")


def torchrun_argv(master: str, nnodes: str, nproc: int, max_restarts: int,
                  script: list[str], *, local_addr: str | None = None,
                  last_call: int = 3, keep_alive: int = 1, join_timeout: int = 600) -> list[str]:
    """The torchrun command for one worker (a pure function, for tests and docs)."""
    conf = (f"is_host=false,last_call_timeout={last_call},keep_alive_interval={keep_alive},"
            f"keep_alive_max_attempt=3,join_timeout={join_timeout}")
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}", "--rdzv-backend=c10d", f"--rdzv-endpoint={master}",
            f"--rdzv-id={run_id()}", f"--rdzv-conf={conf}", f"--max-restarts={max_restarts}",
            "--monitor-interval=1"]
    if local_addr:
        argv.append(f"--local-addr={local_addr}")
    return [*argv, *script]


def torchrun_env(base: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """torchrun's environment. Sharing the rendezvous TCP store with the training
    processes is turned off: with it on, torch 2.13's elastic agents publish the
    bootstrap address only in their first round, so a node that joins a later round
    (a replacement worker) waits for it forever."""
    return {**base, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


class _Stopped(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def run_rendezvous(poll: float = 0.5) -> int:
    from torch.distributed import TCPStore

    port = sdk.task_info().port
    if not port:
        print("torch_runner: the master needs a port (CORRAL_PORT)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        store = TCPStore("0.0.0.0", port, is_master=True, multi_tenant=True,
                         wait_for_workers=False, timeout=timedelta(seconds=30))
        print(f"c10d rendezvous store on port {port}", file=sys.stderr, flush=True)
        while not store.check([FINISHED_KEY]):
            time.sleep(poll)
        who = store.get(FINISHED_KEY).decode(errors="replace")
        print(f"training finished (reported by {who})", file=sys.stderr, flush=True)
        return 0
    except _Stopped:
        return sdk.TERMINATED_EXIT_CODE


def _mark_finished(master: str) -> None:
    from torch.distributed import TCPStore

    host, _, port = master.rpartition(":")
    store = TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=10))
    store.set(FINISHED_KEY, os.environ.get("CORRAL_TASK_ID", "worker"))


def _wait_master(give_up: float) -> str | None:
    deadline = time.monotonic() + give_up
    delay = 0.05
    while time.monotonic() < deadline:
        addr = sdk.master_address()
        if addr and accepts_connections(addr):
            return addr
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    return None


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_worker(nnodes: str, nproc: int, max_restarts: int, script: list[str],
               give_up: float) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    proc: subprocess.Popen[bytes] | None = None
    try:
        while True:
            master = _wait_master(give_up)
            if master is None:
                print(f"torch_runner: no rendezvous reachable for {give_up:g}s",
                      file=sys.stderr)
                return EXIT_NO_SCHEDULER
            argv = torchrun_argv(master, nnodes, nproc, max_restarts, script,
                                 local_addr=worker_host())
            print(f"torch_runner: {' '.join(argv)}", file=sys.stderr, flush=True)
            proc = subprocess.Popen(argv, env=torchrun_env(os.environ))
            while proc.poll() is None and sdk.master_address() in (None, master):
                time.sleep(0.2)
            if proc.poll() is None:
                print("torch_runner: the master moved; joining its new rendezvous",
                      file=sys.stderr, flush=True)
                _stop(proc)
                continue
            code = exit_status(proc.returncode)
            if code == 0:
                _mark_finished(master)
            return code
    except _Stopped:
        if proc is not None and proc.poll() is None:
            _stop(proc)
        return sdk.TERMINATED_EXIT_CODE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m corral_executor.torch_runner",
                                description="Corral's torch rendezvous and worker tasks.")
    sub = p.add_subparsers(dest="role", required=True)
    sub.add_parser("rendezvous", help="serve the c10d store until training finishes")
    w = sub.add_parser("worker", help="run torchrun with the training script")
    w.add_argument("--nnodes", required=True, help="MIN:MAX nodes")
    w.add_argument("--nproc-per-node", type=int, default=1)
    w.add_argument("--max-restarts", type=int, default=3)
    w.add_argument("--give-up-seconds", type=float, default=300.0)
    w.add_argument("script", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if missing("torch", "torch_runner", "torch"):
        return 2
    if args.role == "rendezvous":
        return run_rendezvous()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        print("torch_runner worker: no training script given", file=sys.stderr)
        return 2
    return run_worker(args.nnodes, max(1, args.nproc_per_node), max(0, args.max_restarts),
                      script, args.give_up_seconds)


if __name__ == "__main__":
    sys.exit(main())
