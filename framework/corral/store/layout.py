"""Where Corral keeps things in ZooKeeper, relative to its root znode (``/corral``).

::

    <root>/election/n_<uuid>_<seq>        ephemeral-sequential, one per replica (LeaderInfo JSON)
    <root>/epoch                          decimal epoch number; bumped by each new leader
    <root>/state/framework_id             {"format": 1, "framework_id": "..."}
    <root>/state/jobs/<role>.<env>.<name> {"format": 1, "key", "spec", "desired_workers",
                                           "state", "request_id", "tasks": {"gen", "shards"}}
    <root>/state/jobs/<job>/progress      {"format": 1, "progress": {"<slot>": <seq>}}
    <root>/state/jobs/<job>/tasks-<gen>-<i>  {"format": 1, "tasks": {"<task id>": {...}}}

docs/operations.md explains the layout for operators.
"""

from __future__ import annotations

import re

from corral.core.model import NAME_RE

FORMAT = 1
ELECTION = "election"
EPOCH = "epoch"
STATE = "state"
PROGRESS = "progress"
SHARD_RE = re.compile(r"^tasks-(\d{1,9})-(\d{1,6})$")


def election_dir(root: str) -> str:
    return f"{root}/{ELECTION}"


def epoch_path(root: str) -> str:
    return f"{root}/{EPOCH}"


def state_dir(root: str) -> str:
    return f"{root}/{STATE}"


def framework_id_path(root: str) -> str:
    return f"{root}/{STATE}/framework_id"


def jobs_dir(root: str) -> str:
    return f"{root}/{STATE}/jobs"


def job_node_name(key: str) -> str:
    """``role/env/name`` -> ``role.env.name`` (names never contain dots, see NAME_RE)."""
    parts = key.split("/")
    if len(parts) != 3 or not all(NAME_RE.match(p) for p in parts):
        raise ValueError(f"{key!r} is not a job key (role/environment/name)")
    return ".".join(parts)


def job_key_from_node(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) != 3 or not all(NAME_RE.match(p) for p in parts):
        return None
    return "/".join(parts)


def shard_name(gen: int, index: int) -> str:
    return f"tasks-{gen}-{index:04d}"
