"""Sample workload: distributed batch scoring of a NumPy model over chunked data.

The user's story is ``for chunk in partition(data): compute_prediction(chunk)``. Here the
loop is split into a *master* that owns the queue of chunks and *workers* that lease a
chunk, score it and report it complete::

    python -m corral_executor.samples.scoring make-data --data D --chunks 64
    python -m corral_executor.samples.scoring master --data D --out O     # CORRAL_PORT
    python -m corral_executor.samples.scoring worker --data D --out O     # CORRAL_MASTER_ADDRESS
    python -m corral_executor.samples.scoring verify --data D --out O
    python -m corral_executor.samples.scoring local  --data D --out O     # the baseline

Fault tolerance comes from three simple rules. Outputs are written atomically under a
name fixed by the chunk, so computing a chunk twice writes the same file once. A lease
that is not completed in time goes back to the queue (counted as a re-run), so a lost
worker costs one chunk of work. The master checkpoints its done set through the SDK, so a
relaunched master continues where the last one stopped.

Master HTTP API (JSON over POST): ``/lease {"worker"}`` → ``{"chunk": n}`` |
``{"status": "wait", "retry_after": s}`` | ``{"status": "done"}``; ``/complete
{"worker", "chunk"}`` → ``{"ok": true}``; ``GET /status`` → counts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from corral_executor import sdk

HIDDEN = 64
EXIT_GAVE_UP = 3
EXIT_USAGE = 2


class ScoringError(Exception):
    """A user-facing failure: printed without a traceback, exit code 1."""


# ---------------------------------------------------------------------------- data and model


def chunk_name(i: int) -> str:
    return f"chunk-{i:05d}.npy"


def make_data(data: Path, chunks: int, rows: int, features: int, seed: int) -> None:
    """Deterministic inputs and model: same arguments, same bytes."""
    rng = np.random.default_rng(seed)
    data.mkdir(parents=True, exist_ok=True)
    model = {
        "w": rng.standard_normal(features) / np.sqrt(features),
        "b": np.array(0.1),
        "w1": rng.standard_normal((features, HIDDEN)) / np.sqrt(features),
        "b1": rng.standard_normal(HIDDEN) * 0.1,
        "w2": rng.standard_normal(HIDDEN) / np.sqrt(HIDDEN),
        "b2": np.array(-0.05),
    }
    np.savez(data / "model.npz", **model)
    for i in range(chunks):
        x = rng.standard_normal((rows, features))
        np.save(data / chunk_name(i), x)
    manifest = {"chunks": chunks, "rows": rows, "features": features, "seed": seed}
    (data / "manifest.json").write_text(json.dumps(manifest))


def load_model(data: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(data / "model.npz") as z:
            return {k: z[k] for k in z.files}
    except OSError as exc:
        raise ScoringError(f"cannot load model from {data}: {exc} (run make-data first)") from None


def chunk_count(data: Path) -> int:
    try:
        return int(json.loads((data / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError) as exc:
        raise ScoringError(f"no usable manifest.json in {data}: {exc}") from None


def score_chunk(model: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logistic regression blended with a one-hidden-layer MLP: P(y=1 | x)."""
    linear = x @ model["w"] + model["b"]
    hidden = np.maximum(x @ model["w1"] + model["b1"], 0.0)
    mlp = hidden @ model["w2"] + model["b2"]
    logit = 0.5 * linear + 0.5 * mlp
    return 1.0 / (1.0 + np.exp(-logit))


def score_file(model: dict[str, np.ndarray], data: Path, i: int) -> np.ndarray:
    return score_chunk(model, np.load(data / chunk_name(i)))


def write_output(out: Path, i: int, scores: np.ndarray) -> None:
    """Atomic: a reader (or a verify) never sees a partial chunk file."""
    final = out / chunk_name(i)
    tmp = out / f".{chunk_name(i)}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, scores)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def output_ok(out: Path, i: int) -> bool:
    try:
        np.load(out / chunk_name(i))
    except (OSError, ValueError):
        return False
    return True


def write_success(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / "._SUCCESS.tmp"
    tmp.write_text(json.dumps(summary, sort_keys=True))
    os.replace(tmp, out / "_SUCCESS")
    for stray in out.glob(".chunk-*.tmp"):  # left by workers killed mid-write
        stray.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the queue


@dataclass
class ChunkQueue:
    """Which chunks are pending, leased (to whom, until when) and done. Thread-safe."""

    total: int
    lease_seconds: float
    done: set[int] = field(default_factory=set)
    leases: dict[int, tuple[str, float]] = field(default_factory=dict)
    ever_leased: set[int] = field(default_factory=set)
    reruns: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _expire(self, now: float) -> None:
        for chunk, (_, until) in list(self.leases.items()):
            if until <= now:
                del self.leases[chunk]

    def lease(self, worker: str, now: float) -> dict[str, Any]:
        with self.lock:
            if len(self.done) >= self.total:
                return {"status": "done"}
            self._expire(now)
            for chunk in range(self.total):
                if chunk not in self.done and chunk not in self.leases:
                    if chunk in self.ever_leased:
                        self.reruns += 1
                    self.ever_leased.add(chunk)
                    self.leases[chunk] = (worker, now + self.lease_seconds)
                    return {"chunk": chunk}
            soonest = min(until for _, until in self.leases.values())
            return {"status": "wait", "retry_after": round(min(1.0, max(0.05, soonest - now)), 3)}

    def complete(self, chunk: int) -> None:
        with self.lock:
            self.done.add(chunk)
            self.leases.pop(chunk, None)

    def counts(self) -> dict[str, int]:
        with self.lock:
            done = len(self.done)
            leased = len(self.leases)
            return {
                "done": done,
                "total": self.total,
                "leased": leased,
                "backlog": self.total - done - leased,
                "rerun": self.reruns,
            }

    def finished(self) -> bool:
        with self.lock:
            return len(self.done) >= self.total


# ---------------------------------------------------------------------------- master


class _Handler(BaseHTTPRequestHandler):
    server: _MasterServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per call
        pass

    def _reply(self, code: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/status":
            self._reply(200, self.server.queue.counts())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        try:
            length = min(int(self.headers.get("Content-Length", "0")), 64 * 1024)
            doc = json.loads(self.rfile.read(length) or b"{}")
            worker = str(doc.get("worker", "?"))
        except (ValueError, AttributeError):
            self._reply(400, {"error": "body must be a JSON object"})
            return
        queue = self.server.queue
        if self.path == "/lease":
            answer = queue.lease(worker, time.monotonic())
            with self.server.seen_lock:
                self.server.last_seen[worker] = time.monotonic()
                if answer.get("status") == "done":
                    self.server.told_done.add(worker)
            self._reply(200, answer)
        elif self.path == "/complete":
            chunk = doc.get("chunk")
            if not isinstance(chunk, int) or not 0 <= chunk < queue.total:
                self._reply(400, {"error": f"bad chunk {chunk!r}"})
            elif not output_ok(self.server.out, chunk):
                self._reply(409, {"error": f"no output for chunk {chunk}"})
            else:
                queue.complete(chunk)
                self._reply(200, {"ok": True})
        else:
            self._reply(404, {"error": "not found"})


class _MasterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], queue: ChunkQueue, out: Path) -> None:
        self.queue = queue
        self.out = out
        self.told_done: set[str] = set()
        self.last_seen: dict[str, float] = {}
        self.seen_lock = threading.Lock()
        super().__init__(addr, _Handler)


def input_identity(data: Path) -> dict[str, Any]:
    """What the outputs in an output directory were computed from: the data set's
    manifest and the model's digest (``make-data`` is deterministic, so equal identities
    mean equal output bytes)."""
    try:
        manifest = json.loads((data / "manifest.json").read_text())
        digest = hashlib.sha256((data / "model.npz").read_bytes()).hexdigest()
    except (OSError, ValueError) as exc:
        raise ScoringError(f"cannot read the data set in {data}: {exc}") from None
    return {"manifest": manifest, "model_sha256": digest}


def claim_outputs(out: Path, identity: dict[str, Any]) -> bool:
    """Make ``out`` hold outputs of ``identity`` only. True if outputs already there were
    computed from the same inputs (and so count as done); outputs of other inputs are
    removed, never mistaken for results."""
    marker = out / "_INPUT.json"
    try:
        same = json.loads(marker.read_text()) == identity
    except (OSError, ValueError):
        same = False
    if not same:
        for stale in (*out.glob("chunk-*.npy"), out / "_SUCCESS"):
            stale.unlink(missing_ok=True)
        tmp = out / "._INPUT.json.tmp"
        tmp.write_text(json.dumps(identity, sort_keys=True))
        os.replace(tmp, marker)
    return same


def run_master(args: argparse.Namespace) -> int:
    data, out = Path(args.data), Path(args.out)
    total = chunk_count(data)
    out.mkdir(parents=True, exist_ok=True)
    ours = claim_outputs(out, input_identity(data))
    if (out / "_SUCCESS").exists():
        missing = [i for i in range(total) if not output_ok(out, i)]
        if not missing:
            print(f"master: {out}/_SUCCESS exists and all {total} outputs are present")
            return 0
        print(f"master: _SUCCESS exists but {len(missing)} outputs are missing; rerunning")
        (out / "_SUCCESS").unlink()
    uri = (
        os.environ.get("CORRAL_CHECKPOINT_URI")
        or args.checkpoint_uri
        or (out / "_checkpoint" / "master").resolve().as_uri()
    )
    queue = ChunkQueue(total=total, lease_seconds=args.lease_seconds)
    restored = sdk.restore(uri=uri)
    if isinstance(restored, dict):
        # Trust the checkpoint only as far as the outputs on disk confirm it.
        queue.done = {i for i in restored.get("done", []) if output_ok(out, i)}
        queue.reruns = int(restored.get("reruns", 0))
        print(f"master: restored {len(queue.done)} done chunks from checkpoint")
    if ours:
        # Outputs are durable and written atomically: a chunk whose output is on disk was
        # scored, even after the last checkpoint (or with none: a master lost before its
        # first checkpoint). Counting them keeps progress from going backwards and keeps
        # finished chunks from being scored again.
        found = {i for i in range(total) if i not in queue.done and output_ok(out, i)}
        if found:
            queue.done |= found
            print(f"master: found {len(found)} more done chunks in {out} "
                  f"({len(queue.done)} of {total} done)")
    started = time.monotonic()

    def save() -> None:
        with queue.lock:
            state = {"done": sorted(queue.done), "reruns": queue.reruns}
        sdk.checkpoint(state, uri=uri)

    sdk.on_terminate(save)
    port = int(os.environ.get("CORRAL_PORT") or args.port)
    server = _MasterServer((args.host, port), queue, out)
    print(f"master: serving {total} chunks on {args.host}:{server.server_port}", flush=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    interval = float(os.environ.get("CORRAL_CHECKPOINT_INTERVAL") or args.checkpoint_interval)
    last_ckpt, last_saved_done = time.monotonic(), len(queue.done)
    last_progress: dict[str, int] = {}
    try:
        while not queue.finished():
            time.sleep(0.05)
            counts = queue.counts()
            progress = {k: counts[k] for k in ("done", "total", "backlog", "rerun")}
            if progress != last_progress:
                sdk.report_progress(**progress)
                last_progress = progress
            due = time.monotonic() - last_ckpt >= interval and counts["done"] != last_saved_done
            if due or sdk.should_checkpoint():
                save()
                last_ckpt, last_saved_done = time.monotonic(), counts["done"]
        save()
        counts = queue.counts()
        sdk.report_progress(counts["done"], counts["total"], 0, counts["rerun"])
        summary = {
            "chunks": total,
            "reruns": queue.reruns,
            "wall_seconds": round(time.monotonic() - started, 3),
        }
        write_success(out, summary)
        print(f"master: all {total} chunks done: {json.dumps(summary)}", flush=True)
        # Linger so live workers hear "done" rather than a refused connection; a worker
        # not heard from for a lease period is presumed gone.
        deadline = time.monotonic() + args.linger_seconds
        while time.monotonic() < deadline:
            now = time.monotonic()
            with server.seen_lock:
                live = {w for w, t in server.last_seen.items() if now - t < args.lease_seconds}
                if live <= server.told_done:
                    break
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    return 0


# ---------------------------------------------------------------------------- worker


def _post(address: str, path: str, doc: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class _MasterUnreachable(Exception):
    pass


class _Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.data, self.out = Path(args.data), Path(args.out)
        self.give_up = args.give_up_seconds
        self.delay = args.chunk_delay
        self.worker_id = os.environ.get("CORRAL_TASK_ID") or f"{socket.gethostname()}-{os.getpid()}"
        self.last_contact = time.monotonic()
        self.backoff = 0.05
        self.completed = 0
        self.interval = float(os.environ.get("CORRAL_CHECKPOINT_INTERVAL") or 30.0)
        self.last_ckpt = time.monotonic()

    def save(self) -> None:
        """Checkpoint the worker's own state. Chunk outputs are already durable, so this
        is small; it bounds what a lost worker costs to one checkpoint interval."""
        with contextlib.suppress(sdk.SdkError, OSError):
            sdk.checkpoint({"completed": self.completed})
        self.last_ckpt = time.monotonic()

    def call(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """One request to wherever the master is now; retried with backoff until the
        give-up time. The master may move, so its address is looked up on every try."""
        while True:
            address = sdk.master_address()
            try:
                if address is None:
                    raise _MasterUnreachable("no master address yet")
                answer = _post(address, path, doc, timeout=5.0)
                self.last_contact, self.backoff = time.monotonic(), 0.05
                return answer
            except urllib.error.HTTPError as exc:
                if exc.code == 409:  # our output vanished: recompute
                    return {"error": "conflict"}
                reason: str = f"HTTP {exc.code}"
            except (OSError, ValueError, _MasterUnreachable) as exc:
                reason = str(exc)
            if (self.out / "_SUCCESS").exists():
                return {"status": "done"}
            if time.monotonic() - self.last_contact > self.give_up:
                raise _MasterUnreachable(f"master at {address} unreachable: {reason}")
            time.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, 2.0)

    def run(self) -> int:
        model = load_model(self.data)
        self.out.mkdir(parents=True, exist_ok=True)
        # Outputs are atomic, so dying mid-chunk is clean: the lease simply expires.
        sdk.on_terminate(self.save)
        with contextlib.suppress(sdk.SdkError, OSError):
            state = sdk.restore()
            if isinstance(state, dict) and isinstance(state.get("completed"), int):
                # A replacement for a lost worker of this index continues its count.
                self.completed = state["completed"]
                print(f"worker {self.worker_id}: restored ({self.completed} chunks before)")
        while True:
            if sdk.draining():
                self.save()
                print(f"worker {self.worker_id}: draining after {self.completed} chunks")
                return 0
            if sdk.should_checkpoint() or time.monotonic() - self.last_ckpt >= self.interval:
                self.save()
            answer = self.call("/lease", {"worker": self.worker_id})
            if answer.get("status") == "done":
                print(f"worker {self.worker_id}: done after {self.completed} chunks")
                return 0
            if answer.get("status") == "wait":
                time.sleep(min(2.0, max(0.05, float(answer.get("retry_after", 0.2)))))
                continue
            chunk = int(answer["chunk"])
            scores = score_file(model, self.data, chunk)
            if self.delay:
                time.sleep(self.delay)
            write_output(self.out, chunk, scores)
            self.call("/complete", {"worker": self.worker_id, "chunk": chunk})
            self.completed += 1


def run_worker(args: argparse.Namespace) -> int:
    try:
        return _Worker(args).run()
    except _MasterUnreachable as exc:
        print(f"worker: giving up: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP


# ---------------------------------------------------------------------------- local, verify


def run_local(args: argparse.Namespace) -> int:
    data, out = Path(args.data), Path(args.out)
    total, model = chunk_count(data), load_model(data)
    out.mkdir(parents=True, exist_ok=True)
    claim_outputs(out, input_identity(data))
    started = time.monotonic()
    for i in range(total):
        write_output(out, i, score_file(model, data, i))
    summary = {"chunks": total, "reruns": 0, "wall_seconds": round(time.monotonic() - started, 3)}
    write_success(out, summary)
    print(f"local: {json.dumps(summary)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    data, out = Path(args.data), Path(args.out)
    total, model = chunk_count(data), load_model(data)
    problems: list[str] = []
    for i in range(total):
        try:
            got = np.load(out / chunk_name(i))
        except (OSError, ValueError):
            problems.append(f"{chunk_name(i)}: missing or unreadable")
            continue
        if not np.array_equal(got, score_file(model, data, i)):
            problems.append(f"{chunk_name(i)}: differs")
    expected = {chunk_name(i) for i in range(total)}
    problems += [f"{p.name}: unexpected" for p in out.glob("chunk-*.npy") if p.name not in expected]
    if problems:
        print(f"MISMATCH: {len(problems)} problem(s)")
        for line in problems:
            print(f"  {line}")
        return 1
    print(f"OK: {total} chunks identical")
    return 0


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m corral_executor.samples.scoring",
        description="Distributed batch scoring of a NumPy model over chunked data: a master "
                    "owns the queue of chunks, workers lease and score them. --data and --out "
                    "must be visible to the master and every worker.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    mk = sub.add_parser("make-data", help="write deterministic chunks and a model",
                        description="Write a deterministic data set: the same arguments "
                                    "always give the same bytes.")
    mk.add_argument("--data", required=True, help="directory to write the data set into")
    mk.add_argument("--chunks", type=int, default=64, help="chunks (default %(default)s)")
    mk.add_argument("--rows", type=int, default=2000, help="rows per chunk "
                    "(default %(default)s)")
    mk.add_argument("--features", type=int, default=32, help="features per row "
                    "(default %(default)s)")
    mk.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    helps = {
        "master": "serve the queue of chunks on $CORRAL_PORT (run by Corral as the job master)",
        "worker": "lease, score and complete chunks (run by Corral as a job worker)",
        "verify": "check every output against a single-process computation, bit for bit",
        "local": "score everything in this one process: the baseline",
    }
    for name, text in helps.items():
        sp = sub.add_parser(name, help=text, description=text)
        sp.add_argument("--data", required=True, help="the data set (from make-data)")
        sp.add_argument("--out", required=True, help="the output directory")
        if name == "master":
            sp.add_argument("--lease-seconds", type=float, default=30.0,
                            help="a chunk leased to a worker and not completed within this "
                                 "goes back to the queue, counted as a re-run "
                                 "(default %(default)g)")
            sp.add_argument("--host", default=os.environ.get("CORRAL_BIND_HOST", "0.0.0.0"),
                            help="address to listen on (default $CORRAL_BIND_HOST or 0.0.0.0)")
            sp.add_argument("--port", type=int, default=0,
                            help="port when CORRAL_PORT is unset (default: a free one)")
            sp.add_argument("--checkpoint-uri", default=None,
                            help="where to checkpoint when CORRAL_CHECKPOINT_URI is unset "
                                 "(default <out>/_checkpoint/master)")
            sp.add_argument("--checkpoint-interval", type=float, default=10.0,
                            help="seconds between checkpoints when CORRAL_CHECKPOINT_INTERVAL "
                                 "is unset (default %(default)g)")
            sp.add_argument("--linger-seconds", type=float, default=3.0,
                            help="after the last chunk, wait up to this long for live workers "
                                 "to hear 'done' (default %(default)g)")
        if name == "worker":
            sp.add_argument("--give-up-seconds", type=float, default=120.0,
                            help="exit 3 after this long without reaching the master "
                                 "(default %(default)g)")
            sp.add_argument("--chunk-delay", type=float, default=0.0,
                            help="sleep this long per chunk, to slow a demo down "
                                 "(default %(default)g)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "make-data":
            if args.chunks < 1 or args.rows < 1 or args.features < 1:
                raise ScoringError("--chunks, --rows and --features must be positive")
            make_data(Path(args.data), args.chunks, args.rows, args.features, args.seed)
            print(f"make-data: {args.chunks} chunks in {args.data}")
            return 0
        runner = {"master": run_master, "worker": run_worker, "verify": run_verify}
        return runner.get(args.cmd, run_local)(args)
    except (ScoringError, sdk.SdkError, OSError) as exc:
        print(f"scoring {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scoring {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
