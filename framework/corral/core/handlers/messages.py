"""Framework messages from Corral's executors: progress, usage and checkpoints.

The executor relays what the job reports through the SDK. Every field is checked: a
message with bad numbers is ignored with a note, never trusted. Progress changes the
job's view; a checkpoint marker is part of the job's durable intent (a successor tells a
replacement which checkpoint to restore), and its reported duration moves that much of
the task's time to the cost ledger's checkpoint overhead (``core.cost``); a usage sample
(CPU percent, resident MiB) goes to the policy, which right-sizes new workers from them;
a master's load report (``core.workload``) sizes its job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from corral.core import cost, workload
from corral.core import events as ev
from corral.core.handlers.context import Ctx
from corral.core.handlers.lifecycle import slot_of
from corral.core.model import TaskKind
from corral.core.state import Attempt, CoreState
from corral.core.views import Progress


def _count(x: object) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        return None
    return x


def _on_load(st: CoreState, att: Attempt, data: Mapping[str, Any], ctx: Ctx) -> None:
    """A master's load report (``core.workload``: a Dask scheduler's adaptive target),
    kept for the elastic policy."""
    if att.key.kind is not TaskKind.MASTER or att.job.master.current is not att:
        ctx.note(f"load from {att.task_id} ignored: not the job's current master")
        return
    try:
        att.job.load = workload.parse_load(data, att.task_id, ctx.now)
    except ValueError as err:
        ctx.note(f"load from {att.task_id} ignored: {err}")
        return
    st.mark_changed(att.job)


def _sample(x: object) -> float | None:
    """A usage figure: a finite number in 0..1e9."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x) if 0 <= x < 1e9 else None


def _seconds(x: object) -> float | None:
    """A reported duration: a finite number of seconds, 0..MAX_CHECKPOINT_SECONDS."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x) if 0 <= x <= cost.MAX_CHECKPOINT_SECONDS else None


def on_message(st: CoreState, e: ev.ExecutorMessage, ctx: Ctx) -> None:
    data = e.data
    kind = data.get("kind")
    tid = data.get("task_id", e.executor_id)
    att = st.attempts.get(tid) if isinstance(tid, str) else None
    if att is None:
        ctx.note(f"message {kind!r} from {e.executor_id}: unknown task")
        return
    job = att.job
    if kind == "progress":
        nums = [_count(data.get(f)) for f in ("done", "total", "backlog", "rerun")]
        if any(x is None for x in nums):
            ctx.note(f"progress from {tid} ignored: bad numbers {dict(data)}")
            return
        p = Progress(*(x or 0 for x in nums))
        if job.progress.get(tid) != p:
            st.set_progress(job, tid, p)
    elif kind == "usage":
        cpu, rss = _sample(data.get("cpu_percent")), _sample(data.get("rss_mb"))
        if cpu is None or rss is None:
            ctx.note(f"usage from {tid} ignored: bad numbers {dict(data)}")
            return
        job.usage[tid] = dict(data)
        if ctx.elastic is not None:
            ctx.elastic.observe_usage(att, cpu / 100.0, rss)
    elif kind == "load":
        _on_load(st, att, data, ctx)
    elif kind == "checkpoint":
        uri, seq = data.get("uri"), _count(data.get("seq"))
        if not isinstance(uri, str) or seq is None:
            ctx.note(f"checkpoint from {tid} ignored: bad fields {dict(data)}")
            return
        slot_of(job, att.key).checkpoint = (uri, seq, ctx.now)
        cost.checkpointed(job, att, _seconds(data.get("seconds")), ctx.now)
        st.mark_changed(job, durable=True)
    else:
        ctx.note(f"message of unknown kind {kind!r} from {tid}")
