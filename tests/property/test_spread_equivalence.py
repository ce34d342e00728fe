"""Spread placement keeps only the best candidates per value (heaps): the plan must be
exactly the one the straightforward scan of every agent for every task makes.

``scan_spread`` is that scan (the algorithm placement used before the heaps), kept here
as the reference: least-used value among agents that can take a task, then the agent
with the best score less ``_HOST_SPREAD`` per task of the job already on it.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.model import Constraints, Offer, TaskKey, TaskKind
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, place, rank, stack
from corral.core.resources import Resources


def scan_spread(group, ctx, cap, score, jit, attr, job, plan) -> int:  # type: ignore[no-untyped-def]
    codes, table = ctx.pool.attr_codes(attr)
    used = np.array([job.spread_counts.get(v, 0) if v is not None else stack._BIG
                     for v in table], dtype=np.int64)
    assert np.array_equal(jit, rank.jitter(group[0].key.job, len(ctx.pool)))
    absent = np.iinfo(np.int64).max
    done = 0
    while done < len(group):
        cand = cap > 0
        if len(table) == 1:
            if not cand.any():
                break
            code, pick = 0, cand
        else:
            present = np.bincount(codes[cand], minlength=len(table)) > 0
            if not present.any():
                break
            code = int(np.argmin(np.where(present, used, absent)))
            pick = cand & (codes == code)
        spread_score = score - stack._HOST_SPREAD * ctx.counts
        i = int(np.argmax(np.where(pick, spread_score, -np.inf)))
        stack._assign(group, done, 1, i, ctx, cap, score, float(jit[i]), plan)
        used[code] += 1
        done += 1
    return done


MARKETS = ["a", "b", "c", None]
agent = st.tuples(st.sampled_from(MARKETS), st.sampled_from([0.5, 1, 2, 3, 4, 8]),
                  st.sampled_from([512, 1024, 4096]), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(agent, min_size=1, max_size=40), st.integers(1, 30),
       st.sampled_from([0.5, 1, 2]), st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                                     st.integers(0, 5)),
       st.dictionaries(st.integers(0, 39), st.integers(1, 3)), st.integers(0, 2**16))
def test_heaps_choose_what_the_scan_chooses(agents, n, cpus, spread, per_agent, seed) -> None:
    offers = [Offer(f"O{i}", f"S{i}", f"h{i}", Resources(c, m),
                    attributes=(() if mk is None else (("market", mk),)) + (("zone", "z"),),
                    unavailable_at=1e9 if soon else None)
              for i, (mk, c, m, soon) in enumerate(agents)]
    job = f"r/e/j{seed}"
    pending = [PendingTask(TaskKey(job, TaskKind.WORKER, i), Resources(cpus, 256),
                           constraints=Constraints(spread_over="market")) for i in range(n)]
    facts = PlacementFacts(jobs={job: JobFacts(
        master_running=True, spread_counts=spread,
        tasks_per_agent={f"S{i}": k for i, k in per_agent.items() if i < len(agents)})})
    heaps = place(pending, offers, facts)
    real = stack._choose_spread
    try:
        stack._choose_spread = scan_spread
        scanned = place(pending, offers, facts)
    finally:
        stack._choose_spread = real
    assert heaps.assignments == scanned.assignments
    assert heaps.vetoes == scanned.vetoes

