"""The control directory: files through which the executor and the job SDK talk.

The executor creates ``$MESOS_SANDBOX/.corral`` and passes it to the task as
``CORRAL_CONTROL_DIR``. Files are written atomically (temporary file, then
``os.replace``) so a reader never sees half a file. Direction of each file:

- ``progress.json``    task → executor: ``{"done","total","backlog","rerun"}``
- ``checkpoint.json``  task → executor: ``{"uri","seq","seconds"}`` of the last committed
  checkpoint (``seconds``: how long writing it took)
- ``load.json``        task → executor: ``{"workers","queued","detail"}``, the workers the
  task's own framework wants (a Dask scheduler's adaptive target), see ``sdk.report_load``
- ``master_address``   executor → task: ``host:port`` of the job's current master
- ``checkpoint_now``   executor → task: present while a checkpoint is requested
- ``draining``         executor → task: present once the task should wind down
- ``retire.json``      executor → task: ``{"workers": [{"name", "by"}]}``, workers the
  scheduler asked this master to retire through its framework (Dask) by time ``by``
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.json"
MASTER_ADDRESS = "master_address"
CHECKPOINT_NOW = "checkpoint_now"
DRAINING = "draining"
LOAD = "load.json"
RETIRE = "retire.json"

#: Largest control file either side reads; these files are tiny by design.
MAX_CONTROL_BYTES = 64 * 1024


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when missing, oversized or not an object."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONTROL_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_CONTROL_BYTES:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------- load

#: Bounds of a load report (``load.json`` and the ``load`` message built from it).
MAX_LOAD_WORKERS = 100_000
MAX_LOAD_QUEUED = 10**12
MAX_LOAD_DETAIL = 160


def check_load(doc: Any) -> tuple[int, int, str]:
    """``(workers, queued, detail)`` of a load document, or ``ValueError`` naming the
    bad field: whole numbers in range, and a short single-line printable detail."""
    if not isinstance(doc, dict):
        raise ValueError("load report must be a JSON object")
    out: list[int] = []
    for key, hi in (("workers", MAX_LOAD_WORKERS), ("queued", MAX_LOAD_QUEUED)):
        v = doc.get(key, 0 if key == "queued" else None)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise ValueError(f"load field {key!r} must be an integer in 0..{hi}, got {v!r}")
        out.append(v)
    detail = doc.get("detail", "")
    if not isinstance(detail, str) or len(detail) > MAX_LOAD_DETAIL \
            or not detail.isprintable():
        raise ValueError(f"load field 'detail' must be printable text of at most "
                         f"{MAX_LOAD_DETAIL} characters")
    return out[0], out[1], detail


# ---------------------------------------------------------------------------- retire

#: Most workers one retire list holds, and the longest worker name in it.
MAX_RETIRE = 1000
MAX_RETIRE_NAME = 200


def check_retire(doc: Any) -> tuple[tuple[str, float], ...]:
    """``((name, by), ...)`` from a ``retire`` message or ``retire.json``; ``ValueError``
    when a name is not a short printable string or a deadline not a number."""
    if not isinstance(doc, dict):
        raise ValueError("retire document must be a JSON object")
    rows = doc.get("workers")
    if not isinstance(rows, list) or len(rows) > MAX_RETIRE:
        raise ValueError(f"retire 'workers' must be a list of at most {MAX_RETIRE}")
    out = []
    for row in rows:
        name = row.get("name") if isinstance(row, dict) else None
        by = row.get("by") if isinstance(row, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= MAX_RETIRE_NAME \
                or not name.isprintable():
            raise ValueError(f"retire worker name must be printable text of 1.."
                             f"{MAX_RETIRE_NAME} characters, got {name!r}"[:300])
        if isinstance(by, bool) or not isinstance(by, int | float) or not math.isfinite(by):
            raise ValueError(f"retire deadline 'by' must be a number, got {by!r}"[:300])
        out.append((name, float(by)))
    return tuple(out)
