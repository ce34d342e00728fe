"""The job SDK: what user code running under Corral imports.

    from corral_executor import sdk

    state = sdk.restore() or {"next": 0}
    sdk.on_terminate(lambda: sdk.checkpoint(state))
    for i in range(state["next"], n):
        work(i)
        state["next"] = i + 1
        sdk.report_progress(i + 1, n)
        if sdk.should_checkpoint():
            sdk.checkpoint(state)

Checkpoints are committed atomically through fsspec under a *checkpoint URI* (by default
``CORRAL_CHECKPOINT_URI``, which the scheduler sets per task); where fsspec is not
installed (an agent with a bare ``python3``), ``file://`` URIs and plain paths still work
through the standard library:

- ``ckpt-<seq>.tmp`` is written, then moved to ``ckpt-<seq>``;
- ``LATEST`` (a small JSON pointer: seq, kind, sha256, previous seq) is then replaced
  atomically. Only what ``LATEST`` names is ever restored, so a crash at any point leaves
  the previous checkpoint in force; the two newest checkpoints are kept.

Under Corral a task writes only inside its own location: ``checkpoint(uri=...)`` must name
``CORRAL_CHECKPOINT_URI`` or a place under it (``restore`` may read from anywhere, e.g. a
warm start from another run). Any location must be absolute (``file:///...`` or an
absolute path) and hold no ``.``, ``..`` or empty segment.

Outside Corral (no ``CORRAL_*`` environment) the SDK still works: ``checkpoint``/``restore``
need an explicit ``uri=``, progress and the control files become no-ops, and
``master_address()`` is None unless ``CORRAL_MASTER_ADDRESS`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from corral_executor import control

#: Exit code after SIGTERM (128 + 15), as a shell reports it.
TERMINATED_EXIT_CODE = 143
KEEP_CHECKPOINTS = 2
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


class SdkError(RuntimeError):
    """The SDK cannot do what was asked; the message says why and what to set."""


class CheckpointError(SdkError):
    """A checkpoint could not be written, or a committed one cannot be read back."""


@dataclass(frozen=True)
class TaskInfo:
    """The CORRAL_* environment of this task (None/defaults outside Corral)."""

    task_id: str | None
    job: str | None
    role: str | None  # "master" | "worker"
    worker_index: int | None
    master_address: str | None
    port: int | None
    ports: tuple[int, ...]
    checkpoint_uri: str | None
    checkpoint_interval: float | None
    attempt: int
    control_dir: Path | None
    sandbox: Path | None


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SdkError(f"{name} must be an integer, got {raw!r}") from None


def task_info() -> TaskInfo:
    """Read the task's CORRAL_* environment."""
    env = os.environ
    ports_raw = env.get("CORRAL_PORTS", "").replace(",", " ").split()
    try:
        ports = tuple(int(p) for p in ports_raw)
    except ValueError:
        raise SdkError(f"CORRAL_PORTS must list integers, got {env['CORRAL_PORTS']!r}") from None
    interval_raw = env.get("CORRAL_CHECKPOINT_INTERVAL", "").strip()
    try:
        interval = float(interval_raw) if interval_raw else None
    except ValueError:
        raise SdkError(
            f"CORRAL_CHECKPOINT_INTERVAL must be seconds, got {interval_raw!r}"
        ) from None
    control_dir = env.get("CORRAL_CONTROL_DIR")
    sandbox = env.get("CORRAL_SANDBOX")
    return TaskInfo(
        task_id=env.get("CORRAL_TASK_ID") or None,
        job=env.get("CORRAL_JOB") or None,
        role=env.get("CORRAL_TASK_ROLE") or None,
        worker_index=_env_int("CORRAL_WORKER_INDEX"),
        master_address=env.get("CORRAL_MASTER_ADDRESS") or None,
        port=_env_int("CORRAL_PORT"),
        ports=ports,
        checkpoint_uri=env.get("CORRAL_CHECKPOINT_URI") or None,
        checkpoint_interval=interval,
        attempt=_env_int("CORRAL_ATTEMPT") or 0,
        control_dir=Path(control_dir) if control_dir else None,
        sandbox=Path(sandbox) if sandbox else None,
    )


def _control_dir() -> Path | None:
    raw = os.environ.get("CORRAL_CONTROL_DIR")
    return Path(raw) if raw else None


# ---------------------------------------------------------------------------- checkpoints


def _resolve_uri(uri: str | None) -> str:
    uri = uri or os.environ.get("CORRAL_CHECKPOINT_URI")
    if not uri:
        raise SdkError(
            "no checkpoint location: pass uri=... or set CORRAL_CHECKPOINT_URI "
            "(Corral sets it for every task)"
        )
    return uri.rstrip("/")


def _segments(uri: str) -> tuple[str, list[str]]:
    """(scheme, path segments) of a location; ``SdkError`` if it is relative or has a
    ``.``, ``..`` or empty segment (either could reach outside where it seems to point)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    if scheme == "file" and not rest.startswith("/"):
        raise SdkError(f"checkpoint location {uri!r} must be absolute (file:///dir)")
    rest = rest.strip("/")
    parts = rest.split("/") if rest else []
    if any(p in ("", ".", "..") for p in parts):
        raise SdkError(f"checkpoint location {uri!r} must not contain '.', '..' or '//'")
    return scheme, parts


def _writable_location(uri: str | None) -> str:
    """Where ``checkpoint`` may write: the task's own location, or a place under it."""
    base = _resolve_uri(uri)
    own = os.environ.get("CORRAL_CHECKPOINT_URI")
    scheme, parts = _segments(base)
    if own and uri:
        own_scheme, own_parts = _segments(own.rstrip("/"))
        if scheme != own_scheme or parts[: len(own_parts)] != own_parts:
            raise SdkError(f"refusing to write a checkpoint to {uri!r}: outside this task's "
                           f"checkpoint location {own!r}")
    return base


class _LocalFS:
    """The few filesystem calls checkpoints make, on local paths (no fsspec needed)."""

    def open(self, path: str, mode: str) -> Any:
        return open(path, mode)

    def ls(self, path: str, detail: bool = False) -> list[str]:
        return [os.path.join(path, n) for n in os.listdir(path)]

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    def mv(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def rm(self, path: str) -> None:
        os.unlink(path)


def _fs(uri: str) -> tuple[Any, str]:
    try:
        import fsspec  # imported lazily: SDK users without checkpoints need not load it
    except ImportError:
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        if "://" in local or not local.startswith("/"):
            raise SdkError(f"cannot open checkpoint location {uri!r}: only file:// works "
                           "without fsspec (pip install fsspec for others)") from None
        return _LocalFS(), local
    try:
        return fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as exc:
        raise SdkError(f"cannot open checkpoint location {uri!r}: {exc}") from None


def _read_latest(fs: Any, base: str) -> dict[str, Any] | None:
    path = f"{base}/LATEST"
    try:
        with fs.open(path, "rb") as fh:
            raw = fh.read(control.MAX_CONTROL_BYTES)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        int(doc["seq"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint pointer {path} is unreadable: {raw[:80]!r}") from None
    return doc


def _committed_seqs(fs: Any, base: str) -> list[int]:
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _CKPT_RE.match(n)))


def _write_atomic(fs: Any, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, path)


def checkpoint(state: bytes | dict[str, Any], *, uri: str | None = None) -> int:
    """Commit ``state`` atomically and return its sequence number (1, 2, ...).

    A dict is stored as JSON and comes back from ``restore`` as a dict; bytes come back
    as bytes. Clears a pending ``should_checkpoint()`` request and tells the executor
    (with the seconds it took: the scheduler counts them as checkpoint overhead).
    """
    started = time.monotonic()
    if isinstance(state, dict):
        try:
            payload = json.dumps(state, sort_keys=True).encode()
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint dict is not JSON-serialisable: {exc}") from None
        kind = "json"
    elif isinstance(state, bytes | bytearray | memoryview):
        payload, kind = bytes(state), "bytes"
    else:
        raise CheckpointError(f"checkpoint state must be bytes or dict, not {type(state)}")
    base = _writable_location(uri)
    fs, root = _fs(base)
    try:
        fs.makedirs(root, exist_ok=True)
        latest = _read_latest(fs, root)
        prev = int(latest["seq"]) if latest else None
        # Past the highest on disk too: a crash after the move but before LATEST must
        # not make us reuse a number for different content.
        seq = max([prev or 0, *_committed_seqs(fs, root)]) + 1
        _write_atomic(fs, f"{root}/ckpt-{seq}", payload)
        pointer = {
            "seq": seq,
            "kind": kind,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "prev": prev,
        }
        if latest and prev is not None:
            pointer["prev_kind"] = latest.get("kind", "bytes")
            pointer["prev_sha256"] = latest.get("sha256")
        _write_atomic(fs, f"{root}/LATEST", json.dumps(pointer).encode())
        _prune(fs, root, keep={seq, prev} if prev is not None else {seq})
    except OSError as exc:
        raise CheckpointError(f"checkpoint to {base} failed: {exc}") from exc
    _tell_executor(base, seq, time.monotonic() - started)
    return seq


def _prune(fs: Any, root: str, keep: set[int]) -> None:
    for seq in _committed_seqs(fs, root):
        if seq not in keep and seq < max(keep):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(f"{root}/ckpt-{seq}")


def _tell_executor(uri: str, seq: int, seconds: float) -> None:
    cdir = _control_dir()
    if cdir is None:
        return
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"uri": uri, "seq": seq, "seconds": round(seconds, 6)}).encode()
        control.atomic_write(cdir / control.CHECKPOINT, record)
        (cdir / control.CHECKPOINT_NOW).unlink(missing_ok=True)
    except OSError as exc:
        print(f"corral sdk: could not record checkpoint for the executor: {exc}", file=sys.stderr)


def _load(fs: Any, root: str, seq: int, kind: str, sha: str | None) -> bytes | dict[str, Any]:
    path = f"{root}/ckpt-{seq}"
    with fs.open(path, "rb") as fh:
        payload = fh.read()
    if sha is not None and hashlib.sha256(payload).hexdigest() != sha:
        raise CheckpointError(f"checkpoint {path} does not match its recorded sha256")
    if kind == "json":
        try:
            value = json.loads(payload)
        except ValueError:
            raise CheckpointError(f"checkpoint {path} is not valid JSON") from None
        if not isinstance(value, dict):
            raise CheckpointError(f"checkpoint {path} does not hold a JSON object")
        return value
    return payload


def restore(*, uri: str | None = None) -> bytes | dict[str, Any] | None:
    """The latest committed checkpoint, or None if none was ever committed.

    A torn write (a ``.tmp``, or a ``ckpt-N`` that ``LATEST`` does not name) is ignored.
    If the newest checkpoint is damaged the previous one is returned; if both are, this
    raises ``CheckpointError`` rather than silently starting over.
    """
    base = _resolve_uri(uri)
    fs, root = _fs(base)
    try:
        latest = _read_latest(fs, root)
        if latest is None:
            return None
        try:
            return _load(
                fs, root, int(latest["seq"]), latest.get("kind", "bytes"), latest.get("sha256")
            )
        except (CheckpointError, FileNotFoundError) as exc:
            prev = latest.get("prev")
            if prev is None:
                raise CheckpointError(f"latest checkpoint at {base} is unusable: {exc}") from exc
            print(f"corral sdk: {exc}; falling back to checkpoint {prev}", file=sys.stderr)
            try:
                return _load(
                    fs, root, int(prev), latest.get("prev_kind", "bytes"), latest.get("prev_sha256")
                )
            except FileNotFoundError:
                raise CheckpointError(f"checkpoints at {base} are missing: {exc}") from exc
    except OSError as exc:
        raise CheckpointError(f"restore from {base} failed: {exc}") from exc


# ---------------------------------------------------------------------------- progress etc.


def report_progress(done: int, total: int, backlog: int | None = None, rerun: int = 0) -> None:
    """Tell the scheduler how far the task is (no-op outside Corral)."""
    for name, value in (("done", done), ("total", total), ("rerun", rerun)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SdkError(f"report_progress: {name} must be a non-negative int, got {value!r}")
    if backlog is not None and (not isinstance(backlog, int) or backlog < 0):
        raise SdkError(f"report_progress: backlog must be a non-negative int, got {backlog!r}")
    cdir = _control_dir()
    if cdir is None:
        return
    doc = {"done": done, "total": total, "backlog": backlog, "rerun": rerun}
    cdir.mkdir(parents=True, exist_ok=True)
    control.atomic_write(cdir / control.PROGRESS, json.dumps(doc).encode())


def report_load(workers: int, queued: int = 0, detail: str = "") -> None:
    """Tell the scheduler how many workers this job's own framework wants now (a master's
    view of its load, e.g. a Dask scheduler's adaptive target) and how many tasks wait.

    The elastic policy then sizes the job by ``workers`` instead of by its progress,
    still within the job's min/max, its role's fair share and its deadline; ``detail``
    (printable, at most 160 characters) is shown in ``corral status``. No-op outside
    Corral. Reports are hints: report again whenever the figure changes.
    """
    doc = {"workers": workers, "queued": queued, "detail": detail}
    try:
        control.check_load(doc)
    except ValueError as exc:
        raise SdkError(f"report_load: {exc}") from None
    cdir = _control_dir()
    if cdir is None:
        return
    cdir.mkdir(parents=True, exist_ok=True)
    control.atomic_write(cdir / control.LOAD, json.dumps(doc).encode())


def retire_requests() -> tuple[tuple[str, float], ...]:
    """Workers the scheduler asked this master to retire, as ``(name, by)`` pairs (``by``:
    seconds since the epoch by which each should be gone), oldest first. The list only
    grows; a master acts on the names it has not handled yet. Empty outside Corral."""
    cdir = _control_dir()
    if cdir is None:
        return ()
    doc = control.read_json(cdir / control.RETIRE)
    if doc is None:
        return ()
    try:
        return control.check_retire(doc)
    except ValueError:
        return ()


def master_address() -> str | None:
    """``host:port`` of the job's master: the executor's latest word, else the env."""
    cdir = _control_dir()
    if cdir is not None:
        try:
            text = (cdir / control.MASTER_ADDRESS).read_text().strip()
        except OSError:
            text = ""
        if text:
            return text
    return os.environ.get("CORRAL_MASTER_ADDRESS") or None


def should_checkpoint() -> bool:
    """True when the scheduler asked for a checkpoint; cleared by the next ``checkpoint``."""
    cdir = _control_dir()
    return cdir is not None and (cdir / control.CHECKPOINT_NOW).exists()


def draining() -> bool:
    """True once the scheduler wants this task to wind down (finish, checkpoint, exit)."""
    cdir = _control_dir()
    return cdir is not None and (cdir / control.DRAINING).exists()


_terminating = threading.Lock()


def on_terminate(fn: Callable[[], None]) -> None:
    """On SIGTERM run ``fn`` (e.g. a final checkpoint), then exit with code 143.

    Corral sends SIGTERM when it kills the task and SIGKILL after the grace period, so
    ``fn`` should take well under the job's grace seconds. A second SIGTERM while ``fn``
    runs is ignored. Must be called from the main thread.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        if not _terminating.acquire(blocking=False):
            return
        try:
            fn()
        except Exception as exc:  # the exit must happen even if the hook fails
            print(f"corral sdk: on_terminate hook failed: {exc!r}", file=sys.stderr)
        finally:
            sys.stderr.flush()
            sys.stdout.flush()
        raise SystemExit(TERMINATED_EXIT_CODE)

    signal.signal(signal.SIGTERM, handler)
