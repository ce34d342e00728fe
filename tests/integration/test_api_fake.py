"""An in-memory ``JobBackend`` and a helper serving it, for the API and CLI tests.

``FakeBackend`` is a FAKE standing in for the real scheduler (which needs Mesos): it keeps
jobs in a dict, follows the ``JobBackend`` contract (idempotent submit by request id,
AlreadyExists, Conflict on finished jobs, ValueError outside min..max, NotLeader when told
it is a follower) and lets a test drive a job's state and progress. The gRPC server in
front of it is real. This module holds no tests itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from typing import Any

from corral.api.server import start_api_server
from corral.core.model import JobSpec
from corral.core.views import (
    WHY_MASTER,
    WHY_OFFERS,
    AlreadyExists,
    Conflict,
    JobState,
    JobView,
    NotFound,
    NotLeader,
    Progress,
    TaskView,
    Why,
)


class FakeBackend:
    """In-memory jobs; a fake for the scheduler (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}
        self.requests: dict[str, str] = {}        # request id -> job key
        self.leader: str | None = None            # set with follower=True
        self.follower = False
        self.is_ready = True
        self.clock = 1_700_000_000.0
        self.calls: list[tuple[str, Any]] = []
        self.views_built = 0                      # views handed out by get()
        self._changed = asyncio.Event()

    def _check_leader(self) -> None:
        if self.follower:
            raise NotLeader(self.leader)

    def ready(self) -> bool:
        return self.is_ready

    def _get(self, key: str) -> JobView:
        try:
            return self.jobs[key]
        except KeyError:
            raise NotFound(f"no job {key}") from None

    def _put(self, view: JobView) -> JobView:
        self.jobs[view.key] = view
        # Wake every watcher, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        return view

    def update(self, key: str, **changes: Any) -> JobView:
        """Test hook: change a job (state, progress, ...) and bump its version."""
        v = self._get(key)
        if "state" in changes and JobState(changes["state"]).terminal:
            changes.setdefault("finished_at", self.clock + 60)
        return self._put(dataclasses.replace(v, version=v.version + 1, **changes))

    async def submit(self, spec: JobSpec, request_id: str) -> JobView:
        self._check_leader()
        self.calls.append(("submit", request_id))
        if request_id in self.requests:
            return self.jobs[self.requests[request_id]]
        old = self.jobs.get(spec.key)
        if old is not None and not old.state.terminal:
            raise AlreadyExists(f"job {spec.key} exists (request {old.request_id})")
        self.requests[request_id] = spec.key
        tasks = (
            TaskView("master", None, "PENDING", why=Why(WHY_OFFERS, "waiting for an offer")),
            *(TaskView(f"worker-{i}", None, "PENDING",
                       why=Why(WHY_MASTER, "master not running"))
              for i in range(spec.workers.initial)),
        )
        return self._put(JobView(
            key=spec.key, spec=spec, state=JobState.PENDING,
            desired_workers=spec.workers.initial, tasks=tasks, submitted_at=self.clock,
            request_id=request_id, version=1, target_reason="initial",
        ))

    async def get(self, key: str) -> JobView:
        self._check_leader()
        self.views_built += 1
        return self._get(key)

    async def list(self, role: str | None = None) -> list[JobView]:
        self._check_leader()
        return [v for v in self.jobs.values() if role is None or v.spec.role == role]

    async def keys(self, role: str | None = None) -> Sequence[str]:
        return [v.key for v in await self.list(role)]

    async def kill(self, key: str) -> JobView:
        self._check_leader()
        v = self._get(key)
        if v.state.terminal:
            raise Conflict(f"job {key} already ended {v.state.value}")
        return self.update(key, state=JobState.KILLED, message="killed by user")

    async def scale(self, key: str, workers: int) -> JobView:
        self._check_leader()
        v = self._get(key)
        if v.state.terminal:
            raise Conflict(f"job {key} already ended {v.state.value}")
        w = v.spec.workers
        if not w.min <= workers <= w.max:
            raise ValueError(f"workers: must be within {w.min}..{w.max}, got {workers}")
        return self.update(key, desired_workers=workers, target_reason="set by user")

    async def watch(self, key: str) -> AsyncIterator[JobView]:
        self._check_leader()
        v = self._get(key)
        yield v
        while not v.state.terminal:
            changed = self._changed
            if self.jobs[key].version == v.version:
                await changed.wait()
            nv = self.jobs[key]
            if nv.version != v.version:
                v = nv
                yield v


def make_running(backend: FakeBackend, key: str, done: int, total: int) -> JobView:
    """Test hook: the master and workers running, with some progress."""
    v = backend.jobs[key]
    tasks = tuple(
        dataclasses.replace(t, task_id=f"corral.{key.replace('/', '.')}.{t.slot}.1",
                            state="TASK_RUNNING", attempt=1, agent_id="a1",
                            hostname="host-1", why=None)
        for t in v.tasks
    )
    return backend.update(key, state=JobState.RUNNING, tasks=tasks,
                          progress=Progress(done=done, total=total))


class ServerThread:
    """A real grpc.aio server over a ``FakeBackend``, on its own event loop in a thread.

    The CLI tests run the ``corral`` command as a subprocess against it; ``call`` runs a
    function on the server's loop so tests can change the fake safely.
    """

    def __init__(self, backend_factory: type[FakeBackend] = FakeBackend,
                 **server_options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.backend: FakeBackend = self.call(backend_factory)
        self.server, self.port = asyncio.run_coroutine_threadsafe(
            start_api_server(self.backend, **server_options), self.loop).result(timeout=10)
        self.address = f"127.0.0.1:{self.port}"

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        fut: Future[Any] = Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "server thread did not stop"
        self.loop.close()
