"""WatchJob's deltas: what the server sends after the first message, and how a client
rebuilds the whole job from them.

A stream's first message is the whole ``Job``. Each later one carries the job's own
fields whole (they are small) but, in ``tasks``, only the slots whose tasks changed since
the stream's previous message, and in ``removed_slots`` the slots that are gone. Tasks are
grouped by slot because a slot may show two tasks at once (a draining attempt and its
replacement): a changed slot is sent with all of its tasks and replaces them all.

``DeltaEncoder`` is the server's side (one per stream), ``DeltaDecoder`` the client's.
Both are pure: protobuf messages in, protobuf messages out.
"""

from __future__ import annotations

import re

from corral.api.gen.corral.v1 import jobs_pb2 as pb

_WORKER = re.compile(r"worker-(\d+)")


def slot_order(slot: str) -> tuple[int, int, str]:
    """The order a job lists its slots in: the master, then workers by index."""
    if slot == "master":
        return (0, 0, "")
    m = _WORKER.fullmatch(slot)
    return (1, int(m.group(1)), "") if m else (2, 0, slot)


def _by_slot(job: pb.Job) -> dict[str, list[pb.Task]]:
    out: dict[str, list[pb.Task]] = {}
    for t in job.tasks:
        out.setdefault(t.slot, []).append(t)
    return out


class DeltaEncoder:
    """Turns each new ``Job`` of one stream into the message to send."""

    def __init__(self) -> None:
        self._sent: dict[str, bytes] | None = None   # slot -> its tasks as last sent

    def encode(self, job: pb.Job) -> pb.WatchJobResponse:
        groups = _by_slot(job)
        now = {slot: b"".join(t.SerializeToString(deterministic=True) for t in tasks)
               for slot, tasks in groups.items()}
        before, self._sent = self._sent, now
        if before is None:
            return pb.WatchJobResponse(job=job)
        changed = [slot for slot, data in now.items() if before.get(slot) != data]
        removed = sorted((s for s in before if s not in now), key=slot_order)
        delta = pb.Job()
        delta.CopyFrom(job)
        del delta.tasks[:]
        for slot in changed:
            delta.tasks.extend(groups[slot])
        return pb.WatchJobResponse(job=delta, delta=True, removed_slots=removed)


class DeltaDecoder:
    """Rebuilds the whole ``Job`` from a stream's messages, in the order they came."""

    def __init__(self) -> None:
        self._slots: dict[str, list[pb.Task]] | None = None

    def apply(self, resp: pb.WatchJobResponse) -> pb.Job:
        """The whole job after ``resp``. Raises ``ValueError`` on a delta before any
        whole job (a server that does not follow the protocol)."""
        if not resp.delta:
            self._slots = _by_slot(resp.job)
            return resp.job
        if self._slots is None:
            raise ValueError("WatchJob sent a delta before the whole job")
        for slot in resp.removed_slots:
            self._slots.pop(slot, None)
        self._slots.update(_by_slot(resp.job))
        whole = pb.Job()
        whole.CopyFrom(resp.job)
        del whole.tasks[:]
        for slot in sorted(self._slots, key=slot_order):
            whole.tasks.extend(self._slots[slot])
        return whole
