"""Framework messages from Corral's executors: progress, usage and checkpoints.

The executor relays what the job reports through the SDK. Every field is checked: a
message with bad numbers is ignored with a note, never trusted. Progress changes the
job's view; a checkpoint marker is part of the job's durable intent (a successor tells a
replacement which checkpoint to restore); a usage sample (CPU percent, resident MiB) goes
to the policy, which right-sizes new workers from them.
"""

from __future__ import annotations

import math

from corral.core import events as ev
from corral.core.handlers.context import Ctx
from corral.core.handlers.lifecycle import slot_of
from corral.core.state import CoreState
from corral.core.views import Progress


def _count(x: object) -> int | None:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        return None
    return x


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
            job.progress[tid] = p
            st.mark_changed(job)
    elif kind == "usage":
        cpu, rss = data.get("cpu_percent"), data.get("rss_mb")
        if not all(isinstance(x, int | float) and not isinstance(x, bool)
                   and math.isfinite(x) and 0 <= x < 1e9 for x in (cpu, rss)):
            ctx.note(f"usage from {tid} ignored: bad numbers {dict(data)}")
            return
        job.usage[tid] = dict(data)
        if ctx.elastic is not None:
            ctx.elastic.observe_usage(att, float(cpu) / 100.0, float(rss))
    elif kind == "checkpoint":
        uri, seq = data.get("uri"), _count(data.get("seq"))
        if not isinstance(uri, str) or seq is None:
            ctx.note(f"checkpoint from {tid} ignored: bad fields {dict(data)}")
            return
        slot_of(job, att.key).checkpoint = (uri, seq, ctx.now)
        st.mark_changed(job, durable=True)
    else:
        ctx.note(f"message of unknown kind {kind!r} from {tid}")
