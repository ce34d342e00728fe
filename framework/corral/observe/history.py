"""The job history: every job's record written to a database when it ends, and read back.

ZooKeeper keeps only live intent, and the core retires finished jobs after a while
(``CoreConfig.finished_jobs_kept``/``finished_job_ttl``); the history is where they live
on: SQLite by default (``--history sqlite:///path/history.db``), PostgreSQL for
production (``--history postgresql://user@host:5432/db``).

Writing never touches the scheduler's event loop: ``HistoryWriter.put`` appends to a
bounded in-memory queue, and one thread writes batches in transactions. A database that
is slow or down only grows the backlog (``corral_history_backlog``); the thread retries
with backoff and writes the backlog when the database returns, in order. Past
``max_backlog`` records the oldest are dropped with an error log and a counter
(``corral_history_dropped_total``): memory stays bounded whatever the outage. A record is
keyed by (job key, submission time), and the first write wins (``ON CONFLICT DO
NOTHING``): a new leader re-records the finished jobs it restores, which are poorer
copies of what the old leader wrote.

Schema migrations: a small versioned scheme. ``corral_schema`` holds one row with the
version; ``MIGRATIONS`` lists the statements that take version N-1 to N, per dialect; on
open, every missing migration runs in one transaction (concurrent openers serialise on
the schema row's lock in PostgreSQL, on the file lock in SQLite). A database newer than
this Corral is refused with a clear message. To change the schema, append a migration;
never edit one that shipped (docs/operations.md, "Job history").
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from corral.core.model import role_of

log = logging.getLogger("corral.history")
_T = TypeVar("_T")

SCHEMA_VERSION = 1

_JOBS_V1 = """
CREATE TABLE corral_jobs (
    job_key TEXT NOT NULL,
    submitted_at DOUBLE PRECISION NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,
    finished_at DOUBLE PRECISION,
    recorded_at DOUBLE PRECISION NOT NULL,
    tier TEXT NOT NULL,
    message TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    work_lost_seconds DOUBLE PRECISION NOT NULL,
    cost_total DOUBLE PRECISION NOT NULL,
    cost_useful DOUBLE PRECISION NOT NULL,
    cost_lost DOUBLE PRECISION NOT NULL,
    cost_checkpoint DOUBLE PRECISION NOT NULL,
    cost_spare DOUBLE PRECISION NOT NULL,
    cost_on_demand DOUBLE PRECISION NOT NULL,
    currency TEXT NOT NULL,
    cpu_hours DOUBLE PRECISION NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_key, submitted_at)
)"""

# version N -> (sqlite statements, postgresql statements) taking N-1 to N.
MIGRATIONS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: ((_JOBS_V1,
         "CREATE INDEX corral_jobs_finished ON corral_jobs (finished_at)",
         "CREATE INDEX corral_jobs_role ON corral_jobs (role, finished_at)"),
        (_JOBS_V1,
         "CREATE INDEX corral_jobs_finished ON corral_jobs (finished_at)",
         "CREATE INDEX corral_jobs_role ON corral_jobs (role, finished_at)")),
}

COLUMNS = ("job_key", "submitted_at", "role", "state", "finished_at", "recorded_at", "tier",
           "message", "tasks", "attempts", "losses", "work_lost_seconds", "cost_total",
           "cost_useful", "cost_lost", "cost_checkpoint", "cost_spare", "cost_on_demand",
           "currency", "cpu_hours", "record")
MAX_LIMIT = 10_000


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadQuery(ValueError):
    """A query parameter is malformed; the message names it."""


def parse_since(text: str | None, now: float) -> float | None:
    """``2d``, ``36h``, ``90m``, ``1w``, ``45s`` ago, or seconds since the epoch."""
    if not text:
        return None
    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", t)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        v = float(t)
    except ValueError:
        raise BadQuery(f"since: expected a duration like 2d, 36h, 90m, or seconds since "
                       f"the epoch, got {text[:40]!r}") from None
    if not math.isfinite(v) or v < 0:
        raise BadQuery("since: must be a time >= 0")
    return v



class HistoryError(ValueError):
    """A bad ``--history`` URL, or a database this Corral cannot use."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One finished job as the history keeps it. ``record``: the full document (spec,
    tasks, losses, cost and usage) as plain data."""

    job_key: str
    submitted_at: float
    role: str
    state: str
    finished_at: float | None
    recorded_at: float
    tier: str = ""
    message: str = ""
    tasks: int = 0
    attempts: int = 0
    losses: int = 0
    work_lost_seconds: float = 0.0
    cost_total: float = 0.0
    cost_useful: float = 0.0
    cost_lost: float = 0.0
    cost_checkpoint: float = 0.0
    cost_spare: float = 0.0
    cost_on_demand: float = 0.0
    currency: str = ""
    cpu_hours: float = 0.0
    record: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> tuple[Any, ...]:
        return tuple(json.dumps(self.record, sort_keys=True, separators=(",", ":"))
                     if c == "record" else getattr(self, c) for c in COLUMNS)

    @staticmethod
    def from_row(row: Sequence[Any]) -> HistoryRecord:
        d = dict(zip(COLUMNS, row, strict=True))
        d["record"] = json.loads(d["record"]) if d["record"] else {}
        return HistoryRecord(**d)

    def to_dict(self) -> dict[str, Any]:
        d = {c: getattr(self, c) for c in COLUMNS if c != "record"}
        d["record"] = dict(self.record)
        return d


@dataclass(frozen=True, slots=True)
class Query:
    """Which records to read: ``roles`` None means every role (an admin or an open
    API); an empty set means none."""

    roles: frozenset[str] | None = None
    role: str | None = None
    since: float | None = None          # finished at or after (seconds since the epoch)
    state: str | None = None
    limit: int = 100
    before: tuple[float, str] | None = None   # page: strictly older than (finished, key)


@dataclass(frozen=True, slots=True)
class RoleCost:
    role: str
    jobs: int
    currency: str
    total: float
    useful: float
    lost: float
    checkpoint: float
    spare: float
    on_demand: float
    cpu_hours: float

    @property
    def savings(self) -> float:
        return self.on_demand - self.total


# ----------------------------------------------------------------------- databases


class Database:
    """One connection to the history database, with the dialect's placeholders."""

    dialect = ""
    mark = "?"

    def connect(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class SqliteDatabase(Database):
    dialect = "sqlite"
    mark = "?"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> Any:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def describe(self) -> str:
        return f"sqlite:///{self.path}"


class PostgresDatabase(Database):
    dialect = "postgresql"
    mark = "%s"

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout

    def connect(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise HistoryError("--history postgresql:// needs the psycopg package "
                               "(pip install 'corral[history]')") from None
        return psycopg.connect(self.url, autocommit=True,
                               connect_timeout=max(1, int(self.connect_timeout)),
                               options="-c statement_timeout=30000")

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"postgresql://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def open_database(url: str) -> Database:
    """The database a ``--history`` URL names; ``HistoryError`` says what is wrong."""
    url = url.strip()
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if rest in ("/:memory:", ":memory:"):
            return SqliteDatabase(":memory:")
        # As file:// URLs: sqlite:///var/lib/corral/history.db is /var/lib/corral/...
        path = "/" + unquote(rest).lstrip("/")
        if not rest.startswith("/") or path == "/" or path.endswith("/"):
            raise HistoryError(f"--history {url!r}: expected sqlite:///absolute/path/file.db")
        return SqliteDatabase(path)
    if url.startswith(("postgresql://", "postgres://")):
        if not urlsplit(url).hostname and "host=" not in url:
            raise HistoryError(f"--history: {url!r} names no host")
        return PostgresDatabase(url)
    raise HistoryError(f"--history {url!r}: expected sqlite:///path or postgresql://...")


def migrate(db: Database, conn: Any) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
    cur = conn.cursor()
    pg = db.dialect == "postgresql"
    cur.execute("BEGIN" if pg else "BEGIN IMMEDIATE")
    try:
        cur.execute("CREATE TABLE IF NOT EXISTS corral_schema (id INTEGER PRIMARY KEY, "
                    "version INTEGER NOT NULL)")
        cur.execute("SELECT version FROM corral_schema WHERE id = 1"
                    + (" FOR UPDATE" if pg else ""))
        row = cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise HistoryError(f"the history database {db.describe()} has schema version "
                               f"{found}; this Corral knows up to {SCHEMA_VERSION} (written "
                               "by a newer Corral?)")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version][1 if pg else 0]:
                cur.execute(stmt)
        if found == 0:
            cur.execute(f"INSERT INTO corral_schema (id, version) VALUES (1, {db.mark})",
                        (SCHEMA_VERSION,))
        elif found < SCHEMA_VERSION:
            cur.execute(f"UPDATE corral_schema SET version = {db.mark} WHERE id = 1",
                        (SCHEMA_VERSION,))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return found


def insert(db: Database, conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write ``rows`` (``HistoryRecord.row()``) in one transaction; an existing (key,
    submitted_at) is kept."""
    marks = ", ".join([db.mark] * len(COLUMNS))
    sql = (f"INSERT INTO corral_jobs ({', '.join(COLUMNS)}) VALUES ({marks}) "
           "ON CONFLICT (job_key, submitted_at) DO NOTHING")
    cur = conn.cursor()
    cur.execute("BEGIN")
    try:
        cur.executemany(sql, rows)
        cur.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # the connection itself may be gone
            cur.execute("ROLLBACK")
        raise


def _where(db: Database, q: Query) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    m = db.mark
    if q.roles is not None:
        if not q.roles:
            return "WHERE 1 = 0", []
        clauses.append(f"role IN ({', '.join([m] * len(q.roles))})")
        args.extend(sorted(q.roles))
    if q.role:
        clauses.append(f"role = {m}")
        args.append(q.role)
    if q.since is not None:
        clauses.append(f"finished_at >= {m}")
        args.append(q.since)
    if q.state:
        clauses.append(f"state = {m}")
        args.append(q.state)
    if q.before is not None:
        clauses.append(f"(finished_at < {m} OR (finished_at = {m} AND job_key < {m}))")
        args.extend([q.before[0], q.before[0], q.before[1]])
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def select(db: Database, conn: Any, q: Query) -> list[HistoryRecord]:
    where, args = _where(db, q)
    limit = max(1, min(q.limit, MAX_LIMIT))
    cur = conn.cursor()
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM corral_jobs {where} "
                f"ORDER BY finished_at DESC, job_key DESC LIMIT {limit}", args)
    return [HistoryRecord.from_row(r) for r in cur.fetchall()]


def select_one(db: Database, conn: Any, key: str, roles: frozenset[str] | None
               ) -> HistoryRecord | None:
    """The newest record of ``key`` (None: none the caller may see)."""
    role = role_of(key)
    if roles is not None and role not in roles:
        return None
    cur = conn.cursor()
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM corral_jobs WHERE job_key = {db.mark} "
                "ORDER BY submitted_at DESC LIMIT 1", [key])
    row = cur.fetchone()
    return HistoryRecord.from_row(row) if row else None


def spend_rows(db: Database, conn: Any, role: str, since: float
               ) -> list[tuple[str, float, float]]:
    """(job key, submitted_at, cost) of the role's jobs finished since ``since``."""
    cur = conn.cursor()
    cur.execute(f"SELECT job_key, submitted_at, cost_total FROM corral_jobs WHERE role = "
                f"{db.mark} AND finished_at >= {db.mark}", [role, since])
    return [(r[0], float(r[1]), float(r[2] or 0.0)) for r in cur.fetchall()]


def cost_by_role(db: Database, conn: Any, q: Query) -> list[RoleCost]:
    where, args = _where(db, q)
    cur = conn.cursor()
    cur.execute("SELECT role, currency, COUNT(*), SUM(cost_total), SUM(cost_useful), "
                "SUM(cost_lost), SUM(cost_checkpoint), SUM(cost_spare), "
                f"SUM(cost_on_demand), SUM(cpu_hours) FROM corral_jobs {where} "
                "GROUP BY role, currency ORDER BY role, currency", args)
    return [RoleCost(role=r[0], currency=r[1], jobs=int(r[2]), total=float(r[3] or 0),
                     useful=float(r[4] or 0), lost=float(r[5] or 0),
                     checkpoint=float(r[6] or 0), spare=float(r[7] or 0),
                     on_demand=float(r[8] or 0), cpu_hours=float(r[9] or 0))
            for r in cur.fetchall()]


# ----------------------------------------------------------------------- the store


class HistoryStore:
    """Reads (for the API, the UI and ``corral history``) on a connection of their own.

    Every method blocks: call it from a thread (``asyncio.to_thread``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Connect and migrate (``HistoryError`` or the driver's error if it cannot)."""
        with self._lock:
            conn = self.db.connect()
            migrate(self.db, conn)
            self._conn = conn

    def _run(self, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)``; a failure other than HistoryError reconnects and tries once
        more."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self.db.connect()
                    return fn(self._conn)
                except HistoryError:
                    raise
                except Exception:
                    self._close()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable: the second attempt returned or raised")

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def query(self, q: Query) -> list[HistoryRecord]:
        return self._run(lambda c: select(self.db, c, q))

    def get(self, key: str, roles: frozenset[str] | None) -> HistoryRecord | None:
        return self._run(lambda c: select_one(self.db, c, key, roles))

    def costs(self, q: Query) -> list[RoleCost]:
        return self._run(lambda c: cost_by_role(self.db, c, q))

    def spend(self, role: str, since: float) -> list[tuple[str, float, float]]:
        return self._run(lambda c: spend_rows(self.db, c, role, since))


class HistoryWriter:
    """A bounded queue of records and one thread writing them (see the module).

    ``on_written(n, seconds)`` / ``on_failure(error)`` / ``on_dropped(n)`` report to the
    metrics; ``backlog`` is what waits (queued plus the batch being written)."""

    def __init__(self, db: Database, *, max_backlog: int = 100_000, batch: int = 500,
                 retry_min: float = 0.2, retry_max: float = 5.0, linger: float = 0.2,
                 on_written: Callable[[int, float], None] | None = None,
                 on_failure: Callable[[str], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.max_backlog = max_backlog
        self.batch = batch
        self.retry_min, self.retry_max = retry_min, retry_max
        self.linger = linger
        # Rows, encoded by ``put`` on the caller's thread: the writer thread only talks to
        # the database (whose driver releases the GIL), so it takes little from the loop.
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._inflight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.written = 0
        self.failures = 0
        self.dropped = 0
        self.last_error = ""
        self._on_written = on_written
        self._on_failure = on_failure
        self._on_dropped = on_dropped

    @property
    def backlog(self) -> int:
        return len(self._queue) + self._inflight

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-history",
                                        daemon=True)
        self._thread.start()

    def put(self, record: HistoryRecord) -> None:
        """Queue one record (never blocks on the database)."""
        dropped = 0
        row = record.row()
        with self._cond:
            self._queue.append(row)
            while len(self._queue) > self.max_backlog:
                self._queue.popleft()
                dropped += 1
            if len(self._queue) == 1 or len(self._queue) >= self.batch:
                self._cond.notify()  # the first of a batch, or a full one
        if dropped:
            self.dropped += dropped
            log.error("job history backlog over %d records: dropped the %d oldest (the "
                      "database has been unavailable: %s)", self.max_backlog, dropped,
                      self.last_error or "unknown")
            if self._on_dropped is not None:
                self._on_dropped(dropped)

    def flush(self, timeout: float) -> bool:
        """Wait until the backlog is written (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.backlog and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            return not self.backlog

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Write what is queued (for up to ``flush_seconds``), then stop the thread."""
        self.flush(flush_seconds)
        with self._cond:
            self._stopping = True
            self._stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=flush_seconds + 5.0)
        if self.backlog:
            log.error("job history: %d records not written at shutdown (%s)", self.backlog,
                      self.last_error or "stopping")
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _take(self) -> list[tuple[Any, ...]]:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait(1.0)
            # Linger a little for a fuller batch: fewer wake-ups of this thread, so fewer
            # moments it takes the interpreter from the scheduler's loop.
            deadline = time.monotonic() + self.linger
            while len(self._queue) < self.batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            self._inflight = len(batch)
            return batch

    def _run(self) -> None:
        delay = self.retry_min
        batch: list[tuple[Any, ...]] = []
        while True:
            if not batch:
                batch = self._take()
                if not batch:
                    if self._stopping:
                        return
                    continue
            started = time.monotonic()
            try:
                if self._conn is None:
                    conn = self.db.connect()
                    migrate(self.db, conn)
                    self._conn = conn
                insert(self.db, self._conn, batch)
            except Exception as exc:
                self._close()
                self.failures += 1
                text = str(exc).strip()
                why = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
                if why != self.last_error:
                    log.warning("job history: cannot write to %s (%s); %d records wait, "
                                "retrying", self.db.describe(), why, self.backlog)
                self.last_error = why
                if self._on_failure is not None:
                    self._on_failure(why)
                # Back off; new records do not cut the wait short (only stopping does).
                if self._stop.wait(delay):
                    return
                delay = min(self.retry_max, delay * 2)
                continue
            took = time.monotonic() - started
            if self.last_error:
                log.info("job history: %s writable again", self.db.describe())
                self.last_error = ""
            delay = self.retry_min
            self.written += len(batch)
            if self._on_written is not None:
                self._on_written(len(batch), took)
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()
            batch = []


# ----------------------------------------------------------------------- records


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def record_from(view: Any, usage: Mapping[str, Any], recorded_at: float,
                extra: Mapping[str, Any] | None = None) -> HistoryRecord:
    """A history record from a finished job's ``JobView``, its stored usage and ``extra``
    fields for the document (progress samples)."""
    from corral.api.convert import view_to_dict

    doc = view_to_dict(view)
    doc["usage"] = usage
    doc.update(extra or {})
    c = view.cost
    attempts = sum(t.attempt for t in view.tasks)
    cpu_hours = sum(_finite(v[0]) / 3600.0 for cats in usage.values() for v in cats.values())
    return HistoryRecord(
        job_key=view.key, submitted_at=view.submitted_at, role=view.spec.role,
        state=view.state.value, finished_at=view.finished_at, recorded_at=recorded_at,
        tier=view.spec.tier.value, message=view.message[:2000], tasks=len(view.tasks),
        attempts=attempts, losses=view.resilience.losses,
        work_lost_seconds=view.resilience.work_lost_seconds,
        cost_total=c.total if c else 0.0, cost_useful=c.useful if c else 0.0,
        cost_lost=c.lost if c else 0.0, cost_checkpoint=c.checkpoint if c else 0.0,
        cost_spare=c.spare if c else 0.0, cost_on_demand=c.on_demand if c else 0.0,
        currency=c.currency if c else "", cpu_hours=round(cpu_hours, 4), record=doc)


def roles_filter(may: Iterable[str] | None) -> frozenset[str] | None:
    return None if may is None else frozenset(may)
