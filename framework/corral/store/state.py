"""Durable, fenced intent in ZooKeeper: framework id, jobs, launched tasks, progress.

Vocabulary:
  ``Batch``     a set of changes (jobs' intents put or deleted, the framework id);
                ``StateStore.write`` applies it in as few ZooKeeper transactions (multi)
                as fit in ``max_txn_bytes``, rewriting only the znodes whose part of the
                intent changed (record, task shards, progress).
  *unit*        the znode operations for one job (or the framework id). A unit is committed
                in one transaction, so a job's record, tasks and progress change together.
                Only a task map larger than one transaction is written ahead as new-
                generation shards, which become visible in the final transaction that
                points the job record at them.
  *fence*       every transaction starts with ``check(<root>/epoch, version)`` and
                ``check(<lease node>)``: once a newer leader bumped the epoch, or our
                session died, the whole transaction fails and ``Fenced`` is raised.
  *mirror*      what this store knows is in ZooKeeper (children of each job node, the last
                written records). The leader is the only writer, so after ``load`` the
                mirror is exact; after an uncertain failure (reply lost) it is re-read
                before the remaining units are planned again, which makes retries
                idempotent.

All methods block; ``load_async``/``write_async`` run them in a worker thread so the
runtime's event loop never waits on ZooKeeper.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)

from corral.core.intent import JobIntent, TaskIntent
from corral.store import records as rec
from corral.store.election import Fence
from corral.store.errors import Fenced, StateCorrupt, StoreError
from corral.store.layout import (
    PROGRESS,
    SHARD_RE,
    epoch_path,
    framework_id_path,
    job_key_from_node,
    job_node_name,
    jobs_dir,
    shard_name,
)
from corral.store.records import StoredState, head_of
from corral.store.retry import TRANSIENT, operation_policy

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 200 * 1024
# A multi request must fit in jute.maxbuffer (1 MB) with its headers; stay well below.
DEFAULT_TXN_BYTES = 768 * 1024
_OP_OVERHEAD = 32  # bytes a ZooKeeper op adds beyond its path and data (header, ACL, ...)
_FID = "\0framework_id"  # batch key of the framework-id unit (never a job key)


class _Replan(Exception):
    """The mirror was wrong (a create found a node, a delete found none): re-read, retry."""


# -- batches --------------------------------------------------------------------------

@dataclass
class Batch:
    """Changes to write together. A later change of the same job overrides an earlier one."""

    framework_id: str | None = None
    jobs: dict[str, JobIntent | None] = field(default_factory=dict)  # None: delete

    def set_framework_id(self, framework_id: str) -> Batch:
        if not isinstance(framework_id, str) or not framework_id:
            raise ValueError("framework id must be a non-empty string")
        self.framework_id = framework_id
        return self

    def put_job(self, intent: JobIntent) -> Batch:
        """Create or replace a job's whole intent (record, tasks and progress)."""
        rec.validate_intent(intent)
        job_node_name(intent.key)  # validates the key
        self.jobs[intent.key] = intent
        return self

    def delete_job(self, key: str) -> Batch:
        job_node_name(key)
        self.jobs[key] = None
        return self

    def __bool__(self) -> bool:
        return self.framework_id is not None or bool(self.jobs)


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What a write cost: ZooKeeper transactions committed, ops in them, bytes of data."""

    transactions: int = 0
    ops: int = 0
    bytes: int = 0


# -- planning -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Op:
    kind: str  # "create" | "set" | "delete"
    path: str
    data: bytes = b""
    key: str = ""  # the job whose children this op changes ("" for none)
    child: str = ""  # the child name under the job node ("" for the job node itself)

    @property
    def size(self) -> int:
        return len(self.path) + len(self.data) + _OP_OVERHEAD


@dataclass
class _Known:
    """The mirror of one job's logical content, as last written or loaded."""

    head: JobIntent
    gen: int
    shards: int
    tasks: dict[str, TaskIntent]
    progress: dict[str, int]


@dataclass
class _Unit:
    key: str
    head: list[_Op]  # must run first (creates of parent nodes)
    ahead: list[_Op]  # may run in earlier transactions (new-generation shards)
    tail: list[_Op]  # the switch: record update and removal of old shards
    known: _Known | None  # the mirror after the unit commits (None: job gone)
    split_head: list[_Op] | None = None  # head instead, if the unit must be split
    split_tail: list[_Op] | None = None  # tail instead, if the unit must be split

    @property
    def ops(self) -> list[_Op]:
        return self.head + self.ahead + self.tail

    @property
    def size(self) -> int:
        return sum(op.size for op in self.ops)


@dataclass
class _Txn:
    ops: list[_Op] = field(default_factory=list)
    done: list[_Unit] = field(default_factory=list)  # units whose last op is in here

    @property
    def size(self) -> int:
        return sum(op.size for op in self.ops)


class StateStore:
    """Durable intent under ``<root>/state`` (see ``corral.store.layout``).

    The leader calls ``adopt(fence)`` with the fence from its ``Elected`` event, ``load()``
    to resume, then ``write(batch)`` (or the one-change helpers). A follower may ``load``
    but cannot write. Writes raise ``Fenced`` once a newer leader exists.
    """

    def __init__(
        self,
        client: KazooClient,
        root: str,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        max_txn_bytes: int = DEFAULT_TXN_BYTES,
        retry_deadline: float = 15.0,
    ) -> None:
        if not 1024 <= shard_bytes <= rec.ZNODE_LIMIT // 2:
            raise ValueError("shard_bytes must be between 1 KiB and 512 KiB")
        if max_txn_bytes < 2 * shard_bytes:
            raise ValueError("max_txn_bytes must hold at least two shards")
        self._client = client
        self._root = root
        self._shard_bytes = shard_bytes
        self._max_txn = max_txn_bytes
        self._retry_deadline = retry_deadline
        self._lock = threading.Lock()
        self._fence: Fence | None = None
        self._loaded = False
        self._jobs: dict[str, _Known] = {}
        self._children: dict[str, set[str]] = {}  # job key -> child names; key in: exists
        self._fid_exists = False

    # -- leadership ---------------------------------------------------------------------

    @property
    def fence(self) -> Fence | None:
        return self._fence

    def adopt(self, fence: Fence) -> None:
        """Write under ``fence`` from now on (call on ``Elected``, then ``load``)."""
        with self._lock:
            self._fence = fence
            self._loaded = False  # a new term starts from what ZooKeeper holds

    def drop_fence(self) -> None:
        """Stop writing (call on ``Deposed``): writes raise ``Fenced`` without a round
        trip."""
        self._fence = None

    # -- reading ------------------------------------------------------------------------

    def load(self) -> StoredState:
        """Read and validate everything; raises ``StateCorrupt`` naming the bad znode."""
        with self._lock:
            state = operation_policy(self._retry_deadline, extra=(_Replan,))(self._load)
            self._loaded = True
            return state

    async def load_async(self) -> StoredState:
        return await asyncio.to_thread(self.load)

    def _get_all(self, paths: list[str]) -> list[tuple[bytes, object] | None]:
        """Read many znodes pipelined (one request each, no waiting in between)."""
        pending = [self._client.get_async(p) for p in paths]
        out: list[tuple[bytes, object] | None] = []
        for r in pending:
            try:
                out.append(r.get(timeout=self._retry_deadline))
            except NoNodeError:
                out.append(None)
        return out

    def _children_all(self, paths: list[str]) -> list[list[str] | None]:
        pending = [self._client.get_children_async(p) for p in paths]
        out: list[list[str] | None] = []
        for r in pending:
            try:
                out.append(list(r.get(timeout=self._retry_deadline)))
            except NoNodeError:
                out.append(None)
        return out

    def _load(self) -> StoredState:
        self._client.ensure_path(jobs_dir(self._root))
        epoch = self._read_epoch()
        fid_path = framework_id_path(self._root)
        fid_raw = self._get_all([fid_path])[0]
        fid = rec.decode_framework_id(fid_path, fid_raw[0]) if fid_raw else None

        jdir = jobs_dir(self._root)
        names = sorted(self._client.get_children(jdir))
        keys = []
        for name in names:
            key = job_key_from_node(name)
            if key is None:
                raise StateCorrupt(f"{jdir}/{name}", "unexpected znode (job znodes are named "
                                                     "role.environment.name)")
            keys.append(key)
        paths = [f"{jdir}/{n}" for n in names]
        datas = self._get_all(paths)
        kids = self._children_all(paths)
        if any(d is None for d in datas) or any(k is None for k in kids):
            raise _Replan("a job vanished while loading")  # a deposed leader still writing

        heads = []
        wanted: list[str] = []
        for key, path, data, children in zip(keys, paths, datas, kids, strict=True):
            assert data is not None and children is not None
            head, gen, shards = rec.decode_job(path, key, data[0])
            expected = {shard_name(gen, i) for i in range(shards)} | {PROGRESS}
            for child in children:
                if child not in expected and not SHARD_RE.match(child):
                    raise StateCorrupt(f"{path}/{child}", "unexpected znode")
            for child in sorted(expected):
                if child not in children:
                    what = ("progress markers" if child == PROGRESS
                            else f"task shard {child} (the job record names {shards} shards "
                                 f"of generation {gen})")
                    raise StateCorrupt(f"{path}/{child}", f"missing {what}")
            heads.append((key, path, head, gen, shards, set(children)))
            wanted.append(f"{path}/{PROGRESS}")
            wanted.extend(f"{path}/{shard_name(gen, i)}" for i in range(shards))

        blobs = dict(zip(wanted, self._get_all(wanted), strict=True))
        jobs: dict[str, JobIntent] = {}
        known: dict[str, _Known] = {}
        for key, path, head, gen, shards, present in heads:
            pdata = blobs[f"{path}/{PROGRESS}"]
            if pdata is None:
                raise _Replan("progress vanished while loading")
            progress = rec.decode_progress(f"{path}/{PROGRESS}", pdata[0])
            tasks: dict[str, TaskIntent] = {}
            for i in range(shards):
                spath = f"{path}/{shard_name(gen, i)}"
                sdata = blobs[spath]
                if sdata is None:
                    raise _Replan("a shard vanished while loading")
                part = rec.decode_shard(spath, sdata[0])
                dup = part.keys() & tasks.keys()
                if dup:
                    raise StateCorrupt(spath, f"task {min(dup)!r} also appears in an earlier "
                                              "shard")
                tasks.update(part)
            jobs[key] = replace(head, tasks=tuple(tasks[t] for t in sorted(tasks)),
                                progress=progress)
            known[key] = _Known(head, gen, shards, tasks, progress)
            self._children[key] = present
        self._children = {k: self._children[k] for k in known}
        self._jobs = known
        self._fid_exists = fid is not None
        return StoredState(framework_id=fid, jobs=jobs, epoch=epoch)

    def _read_epoch(self) -> int:
        path = epoch_path(self._root)
        try:
            data, _ = self._client.get(path)
        except NoNodeError:
            return 0
        try:
            return int(data.decode())
        except ValueError:
            raise StateCorrupt(path, f"epoch must be a decimal number, got {data[:40]!r}"
                               ) from None

    # -- writing ------------------------------------------------------------------------

    def write(self, batch: Batch) -> WriteStats:
        """Apply ``batch``; raises ``Fenced`` if this replica is no longer the leader."""
        with self._lock:
            fence = self._fence
            if fence is None:
                raise Fenced("not the leader: this replica holds no fence")
            if not self._loaded:
                raise StoreError("load() the state before writing, so writes start from "
                                 "what ZooKeeper holds")
            pending: dict[str, JobIntent | str | None] = dict(batch.jobs)
            if batch.framework_id is not None:
                pending[_FID] = batch.framework_id
            totals = [0, 0, 0]
            dirty = False

            def attempt() -> None:
                nonlocal dirty
                if dirty:
                    self._refresh(pending)
                    dirty = False
                for txn in self._pack([u for u in self._plan(pending) if u.ops]):
                    try:
                        self._commit(fence, txn)
                    except (_Replan, *TRANSIENT):
                        dirty = True
                        raise
                    totals[0] += 1
                    totals[1] += len(txn.ops)
                    totals[2] += sum(len(op.data) for op in txn.ops)
                    for unit in txn.done:
                        pending.pop(unit.key, None)
                pending.clear()  # units with no ops needed nothing

            try:
                operation_policy(self._retry_deadline, extra=(_Replan,))(attempt)
            except Fenced:
                self._fence = None
                raise
            except _Replan as e:
                raise StoreError(f"ZooKeeper state under {self._root} keeps changing under "
                                 f"the leader: {e}") from None
            return WriteStats(*totals)

    async def write_async(self, batch: Batch) -> WriteStats:
        return await asyncio.to_thread(self.write, batch)

    # One-change helpers: each is one batch (so one transaction for a small job).
    def save_framework_id(self, framework_id: str) -> WriteStats:
        return self.write(Batch().set_framework_id(framework_id))

    def put_job(self, intent: JobIntent) -> WriteStats:
        return self.write(Batch().put_job(intent))

    def put_jobs(self, intents: Iterable[JobIntent]) -> WriteStats:
        batch = Batch()
        for intent in intents:
            batch.put_job(intent)
        return self.write(batch)

    def delete_job(self, key: str) -> WriteStats:
        return self.write(Batch().delete_job(key))

    # -- write internals ----------------------------------------------------------------

    def _plan(self, pending: Mapping[str, JobIntent | str | None]) -> list[_Unit]:
        units = []
        for key, change in pending.items():
            if isinstance(change, str):
                path = framework_id_path(self._root)
                kind = "set" if self._fid_exists else "create"
                units.append(_Unit(_FID, [_Op(kind, path, rec.encode_framework_id(change))],
                                   [], [], None))
            else:
                units.append(self._plan_job(key, change))
        return units

    def _plan_job(self, key: str, intent: JobIntent | None) -> _Unit:
        path = f"{jobs_dir(self._root)}/{job_node_name(key)}"
        old = self._jobs.get(key)
        children = self._children.get(key)
        exists = children is not None
        children = children or set()
        if intent is None:
            ops = [_Op("delete", f"{path}/{c}", key=key, child=c) for c in sorted(children)]
            if exists:
                ops.append(_Op("delete", path, key=key))
            return _Unit(key, [], [], ops, None)

        record = head_of(intent)
        tasks = {t.task_id: t for t in intent.tasks}
        progress = dict(intent.progress)
        stale = {c for c in children if SHARD_RE.match(c)}
        if old is not None:
            stale -= {shard_name(old.gen, i) for i in range(old.shards)}

        ahead: list[_Op] = []
        tail: list[_Op] = []
        if old is None or tasks != old.tasks or stale:
            gens = [int(m.group(1)) for c in children if (m := SHARD_RE.match(c))]
            gen = max([old.gen if old else 0, *gens]) + 1
            blobs = rec.encode_shards(tasks, self._shard_bytes)
            ahead = [_Op("create", f"{path}/{shard_name(gen, i)}", b, key, shard_name(gen, i))
                     for i, b in enumerate(blobs)]
            shards = len(blobs)
            tail = [_Op("delete", f"{path}/{c}", key=key, child=c)
                    for c in sorted(children) if SHARD_RE.match(c)]
        else:
            gen, shards = old.gen, old.shards
        known = _Known(record, gen, shards, tasks, progress)
        data = rec.encode_job(key, record, gen, shards)
        if len(data) > rec.ZNODE_LIMIT // 2:
            raise ValueError(f"{key}: the job record is {len(data)} bytes; too large to store")

        head: list[_Op] = []
        split_head: list[_Op] = []
        split_tail: list[_Op] = []
        if not exists:
            head.append(_Op("create", path, data, key))
            # If the unit must be split, the job node first points at no tasks; the final
            # transaction points it at the new shards.
            split_head.append(_Op("create", path, rec.encode_job(key, record, 0, 0), key))
            split_tail.append(_Op("set", path, data, key))
        elif old is None or record != old.head or (gen, shards) != (old.gen, old.shards):
            tail.append(_Op("set", path, data, key))
        if PROGRESS not in children:
            op = _Op("create", f"{path}/{PROGRESS}", rec.encode_progress(progress), key,
                     PROGRESS)
            head.append(op)
            split_head.append(op)
        elif old is None or progress != old.progress:
            tail.append(_Op("set", f"{path}/{PROGRESS}", rec.encode_progress(progress), key,
                            PROGRESS))
        return _Unit(key, head, ahead, tail, known, split_head, tail + split_tail)

    def _pack(self, units: list[_Unit]) -> list[_Txn]:
        """Group units into transactions of at most ``max_txn_bytes``; only a unit larger
        than that is split (its new shards go ahead in their own transactions)."""
        budget = self._max_txn - 2 * _OP_OVERHEAD - 256  # the two fence checks
        txns: list[_Txn] = []
        cur = _Txn()
        for unit in units:
            if unit.size <= budget:
                if cur.ops and cur.size + unit.size > budget:
                    txns.append(cur)
                    cur = _Txn()
                cur.ops.extend(unit.ops)
                cur.done.append(unit)
                continue
            if cur.ops:
                txns.append(cur)
            cur = _Txn(ops=list(unit.split_head or []))
            for op in unit.ahead:
                if cur.ops and cur.size + op.size > budget:
                    txns.append(cur)
                    cur = _Txn()
                cur.ops.append(op)
            tail = unit.split_tail if unit.split_tail is not None else unit.tail
            if cur.ops and cur.size + sum(op.size for op in tail) > budget:
                txns.append(cur)
                cur = _Txn()
            cur.ops.extend(tail)
            cur.done.append(unit)
            if cur.size > budget:
                raise ValueError(f"{unit.key}: its final transaction alone exceeds "
                                 f"{self._max_txn} bytes")
        if cur.ops:
            txns.append(cur)
        return txns

    def _commit(self, fence: Fence, txn: _Txn) -> None:
        tx = self._client.transaction()
        tx.check(epoch_path(self._root), fence.version)
        tx.check(fence.lease, -1)
        for op in txn.ops:
            if op.kind == "create":
                tx.create(op.path, op.data)
            elif op.kind == "set":
                tx.set_data(op.path, op.data)
            else:
                tx.delete(op.path)
        try:
            results = tx.commit()
        except SessionExpiredError:
            raise Fenced(f"the ZooKeeper session behind epoch {fence.epoch} expired; another "
                         "replica may lead now") from None
        if isinstance(results[0], (BadVersionError, NoNodeError)):
            raise Fenced(f"epoch {fence.epoch} is over: a newer leader bumped "
                         f"{epoch_path(self._root)}; this replica must stop")
        if isinstance(results[1], NoNodeError):
            raise Fenced(f"leadership lease {fence.lease} is gone (session expired or "
                         "resigned); this replica must stop")
        failed = [(op, r) for op, r in zip(txn.ops, results[2:], strict=True)
                  if isinstance(r, Exception)
                  and not isinstance(r, (RolledBackError, RuntimeInconsistency))]
        if failed:
            op, err = failed[0]
            raise _Replan(f"{op.kind} {op.path}: {type(err).__name__}")
        self._apply(txn)

    def _apply(self, txn: _Txn) -> None:
        """Update the mirror after ``txn`` committed."""
        for op in txn.ops:
            if op.path == framework_id_path(self._root):
                self._fid_exists = op.kind != "delete"
            elif op.child:
                kids = self._children.setdefault(op.key, set())
                if op.kind == "delete":
                    kids.discard(op.child)
                else:
                    kids.add(op.child)
            elif op.kind == "create":
                self._children.setdefault(op.key, set())
            elif op.kind == "delete":
                self._children.pop(op.key, None)
        for unit in txn.done:
            if unit.key == _FID:
                continue
            if unit.known is None:
                self._jobs.pop(unit.key, None)
                self._children.pop(unit.key, None)
            else:
                self._jobs[unit.key] = unit.known

    def _refresh(self, pending: Mapping[str, object]) -> None:
        """Re-read which znodes exist for the jobs still to write (after a lost reply)."""
        keys = [k for k in pending if k != _FID]
        paths = [f"{jobs_dir(self._root)}/{job_node_name(k)}" for k in keys]
        for key, kids in zip(keys, self._children_all(paths), strict=True):
            if kids is None:
                self._children.pop(key, None)
                self._jobs.pop(key, None)
            else:
                self._children[key] = set(kids)
        self._fid_exists = self._client.exists(framework_id_path(self._root)) is not None
