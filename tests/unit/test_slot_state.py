"""The slot lifecycle table, pair by pair, against an expectation written independently.

``EXPECTED`` below is written from the lifecycle's rules (module docstring of
``corral.core.slot_state`` and docs/architecture.md), not generated from the table: one
line per edge, ``kinds state input -> next: actions``, with ``m``/``w`` for master and
worker. Every (kind, state, input) triple of the table is checked: an expected line must
match its edge exactly, and a triple with no expected line must have no edge (the input is
ignored). Lines may name several states or inputs separated by ``|``.
"""

from __future__ import annotations

import itertools

import pytest

from corral.core.model import TaskKind
from corral.core.slot_state import EDGES, Action, Input, Life, settle_input, step

EXPECTED = """
# A vacant slot follows its conditions (a master never waits for a master).
mw empty            in-backoff -> backoff:
mw empty            ready -> pending:
w  empty            no-master -> waiting-for-master:
mw backoff          unwanted -> empty:
mw backoff          ready -> pending:
w  backoff          no-master -> waiting-for-master:
w  waiting-for-master unwanted -> empty:
w  waiting-for-master in-backoff -> backoff:
w  waiting-for-master ready -> pending:
mw pending          unwanted -> empty:
mw pending          in-backoff -> backoff:
w  pending          no-master -> waiting-for-master:
# Placing writes the new task id before the LAUNCH goes out.
mw pending          placed -> launched: persist
# Mesos confirms, starts, ends an attempt.
mw launched|reconciling confirmed -> starting:
m  launched|reconciling|starting started -> running: recovered master-up
w  launched|reconciling|starting started -> running: recovered
m  launched|reconciling|starting|running succeeded -> ended: finish-job persist
w  launched|reconciling|starting|running succeeded -> ended: complete persist
m  launched|reconciling|starting|running failed -> ended: count-failure master-down persist
w  launched|reconciling|starting|running failed -> ended: count-failure persist
m  launched|reconciling|starting|running lost -> ended: count-loss master-down persist
w  launched|reconciling|starting|running lost -> ended: count-loss persist
mw launched|reconciling|starting|running unwanted -> kill-sent: kill
# No lost launch: silence is reconciled, then written off.
mw launched         staging-timeout|send-failed -> reconciling: reconcile
m  reconciling      reconcile-timeout -> ended: kill count-loss master-down persist
w  reconciling      reconcile-timeout -> ended: kill count-loss persist
# A notice: a running worker drains beside its replacement; a master is killed first.
w  running          notice -> draining: send-drain detach count-notice persist
w  launched|reconciling|starting notice -> kill-sent: kill detach count-notice persist
m  running          notice -> draining: send-drain kill count-notice
m  launched|reconciling|starting notice -> draining: kill count-notice
# Scale-down through the framework (Dask): retired by its master, killed at a deadline.
w  running          retire -> draining: ask-retire detach
# A kill in flight ends however the task ends; silence or a failed send retries it.
mw kill-sent        killed|succeeded|failed|lost -> ended: persist
mw kill-sent        kill-timeout -> kill-sent: kill reconcile
mw kill-sent        send-failed -> kill-sent: retry-kill
# A master being moved: its end frees the slot (its failure still counts).
m  draining         killed -> ended: master-down persist
m  draining         succeeded -> ended: finish-job persist
m  draining         failed -> ended: count-failure master-down persist
m  draining         lost -> ended: add-work-lost master-down persist
m  draining         kill-timeout -> draining: kill reconcile
m  draining         send-failed -> draining: retry-kill
# A detached worker finishes its last piece of work, or is stopped.
w  draining         succeeded|killed -> ended:
w  draining         failed|lost -> ended: add-work-lost
w  draining         deadline|unwanted -> kill-sent: kill
# Written off, yet alive: killed at once.
mw ended            confirmed|started -> ended: kill
"""


def _expected() -> dict[tuple[TaskKind, Life, Input], tuple[Life, frozenset[Action]]]:
    out: dict[tuple[TaskKind, Life, Input], tuple[Life, frozenset[Action]]] = {}
    for raw in EXPECTED.strip().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, actions = line.partition(":")
        left, _, nxt = head.partition("->")
        kinds, states, inputs = left.split()
        for k, s, i in itertools.product(kinds, states.split("|"), inputs.split("|")):
            kind = TaskKind.MASTER if k == "m" else TaskKind.WORKER
            key = (kind, Life(s), Input(i))
            assert key not in out, f"expectation lists {key} twice"
            out[key] = (Life(nxt.strip()), frozenset(Action(a) for a in actions.split()))
    return out


def test_every_state_input_pair_matches_the_expectation() -> None:
    expected = _expected()
    wrong: list[str] = []
    for kind, state, inp in itertools.product(TaskKind, Life, Input):
        edge = step(kind, state, inp)
        want = expected.get((kind, state, inp))
        got = None if edge is None else (edge.next, edge.actions)
        if got != want:
            wrong.append(f"{kind.value} {state.value} {inp.value}: table {got}, expected {want}")
    assert not wrong, "\n".join(wrong)
    assert len(EDGES) == len(expected)


def test_every_edge_explains_itself() -> None:
    assert all(e.why for e in EDGES.values())


def test_structural_rules() -> None:
    for (kind, state, inp), edge in EDGES.items():
        # Nothing leaves COMPLETED: a worker that exited 0 is done for good.
        assert state is not Life.COMPLETED
        # A master is never detached, so a job never has two masters.
        assert not (kind is TaskKind.MASTER and Action.DETACH in edge.actions)
        # A vacancy only moves to vacancies, except by being placed.
        if state.vacancy and inp is not Input.PLACED:
            assert edge.next.vacancy and not edge.actions


@pytest.mark.parametrize(("wanted", "backoff", "needs_master", "expected"), [
    (False, True, True, Input.UNWANTED),
    (True, True, True, Input.BACKOFF),
    (True, False, True, Input.NO_MASTER),
    (True, False, False, Input.READY),
])
def test_settle_input_priority(wanted: bool, backoff: bool, needs_master: bool,
                               expected: Input) -> None:
    assert settle_input(Life.PENDING, wanted=wanted, in_backoff=backoff,
                        needs_master=needs_master) is expected
