"""The control directory: files through which the executor and the job SDK talk.

The executor creates ``$MESOS_SANDBOX/.corral`` and passes it to the task as
``CORRAL_CONTROL_DIR``. Files are written atomically (temporary file, then
``os.replace``) so a reader never sees half a file. Direction of each file:

- ``progress.json``    task → executor: ``{"done","total","backlog","rerun"}``
- ``checkpoint.json``  task → executor: ``{"uri","seq","seconds"}`` of the last committed
  checkpoint (``seconds``: how long writing it took)
- ``master_address``   executor → task: ``host:port`` of the job's current master
- ``checkpoint_now``   executor → task: present while a checkpoint is requested
- ``draining``         executor → task: present once the task should wind down
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.json"
MASTER_ADDRESS = "master_address"
CHECKPOINT_NOW = "checkpoint_now"
DRAINING = "draining"

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
