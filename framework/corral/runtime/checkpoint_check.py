"""Submit-time checks of a job's checkpoint base that need the scheduler's host.

``CheckpointCheck`` is a ``SubmitCheck`` for ``api.server``: the base must lie under one
of the operator's ``--checkpoint-prefix`` URIs (if any are given), and a ``file://``
location must be writable *where that can be told from here*: the deepest part of the
job's location that exists on the scheduler's host must be a directory the scheduler
may write into, on a writable filesystem. A path none of whose directories exist here
(below ``/``) is not judged: it may exist only on the agents. On localmesos, agents and
scheduler share the host, so every file:// location is checked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from corral.core.checkpoints import split_uri, task_location, under_prefix
from corral.core.model import JobSpec
from corral.core.spec import FieldError

FIELD = "checkpoint.uri"


def local_problem(location: Path) -> str | None:
    """Why the scheduler could not write at ``location`` (an absolute path), or None."""
    probe = location
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if probe == Path(probe.anchor):
        return None  # nothing of it exists here: it may live only on the agents
    if not probe.is_dir():
        return f"{probe} exists and is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by the scheduler (uid {os.geteuid()})"
    try:
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{probe} is on a read-only filesystem"
    except OSError as e:
        return f"{probe} cannot be inspected: {e.strerror or e}"
    return None


class CheckpointCheck:
    """The checkpoint-base checks a submit must pass (see the module docstring)."""

    def __init__(self, prefixes: Sequence[str] = ()) -> None:
        self.prefixes = tuple(prefixes)

    async def __call__(self, spec: JobSpec) -> list[FieldError]:
        uri = spec.checkpoint_uri
        if not uri:
            return []
        if self.prefixes and not under_prefix(uri, self.prefixes):
            return [FieldError(FIELD, "must lie under one of this scheduler's checkpoint "
                                      f"prefixes: {', '.join(self.prefixes)}")]
        scheme, _ = split_uri(uri)
        if scheme != "file":
            return []
        where = Path(split_uri_path(task_location(uri, spec.key, "master")))
        problem = await asyncio.to_thread(local_problem, where.parent)
        return [FieldError(FIELD, problem)] if problem else []


def split_uri_path(file_uri: str) -> str:
    """The absolute path of a ``file://`` URI."""
    _, parts = split_uri(file_uri)
    return "/" + "/".join(parts)
