"""Workload kinds in the core: launch commands, load reports sizing a job, and Dask
workers retired through their master on scale-down and on notice."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from corral.core import effects as fx
from corral.core import events as ev
from corral.core import workload as wl
from corral.core.elastic import Elastic
from corral.core.model import JobSpec, TaskKey, TaskKind, WorkloadKind
from corral.core.policy import JobDemand, PolicyState, compute_targets
from corral.core.resources import Resources
from corral.core.spec import parse_job_spec
from tests.unit.test_elastic import FAST, run_workers
from tests.unit.test_scheduler import KEY, Harness, launches, make_spec, of

DASK = {"kind": "dask", "role": "ml", "environment": "prod", "name": "train",
        "master": {"cpus": 1, "mem": 1024},
        "driver": {"command": "python3 features.py --out 's3://b/x y'"},
        "workers": {"cpus": 2.5, "mem": 3072, "min": 1, "max": 8, "initial": 2},
        "kill_grace_seconds": 7}


def dask_spec(**workers: object) -> JobSpec:
    return parse_job_spec({**DASK, "workers": {**DASK["workers"], **workers}})


def master_key(spec: object) -> TaskKey:
    return TaskKey(spec.key, TaskKind.MASTER)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- commands


def test_dask_master_runs_the_scheduler_and_the_quoted_driver() -> None:
    spec = dask_spec()
    cmd = wl.launch_command(spec, master_key(spec))
    argv = shlex.split(cmd.replace('"${CORRAL_PYTHON:-python3}"', "PY"))
    assert argv == ["PY", "-m", "corral_executor.dask_runner", "scheduler", "--driver",
                    "python3 features.py --out 's3://b/x y'"]
    assert cmd.startswith('"${CORRAL_PYTHON:-python3}" -m ')


def test_dask_worker_gets_slot_cpus_as_threads_and_memory_as_limit() -> None:
    spec = dask_spec()
    cmd = wl.launch_command(spec, TaskKey(spec.key, TaskKind.WORKER, 3))
    assert cmd.endswith("dask_runner worker --nthreads 2 --memory-limit 3221225472")
    assert wl.dask_threads(0.5) == 1 and wl.dask_threads(4.0) == 4
    assert spec.workers.template.ports == 1 and spec.master.ports == 1


def test_dask_custom_worker_command_runs_with_the_scheduler_address() -> None:
    spec = dask_spec(command="dask worker --name $CORRAL_TASK_ID")
    cmd = wl.launch_command(spec, TaskKey(spec.key, TaskKind.WORKER, 0))
    assert cmd.endswith("dask_runner exec -- /bin/sh -c 'dask worker --name $CORRAL_TASK_ID'")
    assert spec.workers.template.ports == 0
    assert not wl.retires_through_master(spec)
    assert wl.retires_through_master(dask_spec())


def test_torch_commands() -> None:
    spec = parse_job_spec({"kind": "torch", "role": "ml", "name": "t", "master": {},
                           "workers": {"command": "train.py --epochs 3", "min": 0, "max": 4,
                                       "gpus": 2}, "restart": {"max_failures": 5}})
    assert spec.master.command == "" and spec.master.ports == 1
    assert wl.launch_command(spec, master_key(spec)).endswith("torch_runner rendezvous")
    assert wl.launch_command(spec, TaskKey(spec.key, TaskKind.WORKER, 0)).endswith(
        "torch_runner worker --nnodes 1:4 --nproc-per-node 2 --max-restarts 5 -- "
        "train.py --epochs 3")


def test_command_kind_runs_the_commands_as_given() -> None:
    spec = make_spec()
    assert spec.kind is WorkloadKind.COMMAND
    assert wl.launch_command(spec, master_key(spec)) == "run-master"
    assert wl.launch_command(spec, TaskKey(spec.key, TaskKind.WORKER, 1)) == "run-worker"


# ---------------------------------------------------------------------------- load


@pytest.mark.parametrize("data,why", [
    ({"workers": -1, "queued": 0}, "workers"),
    ({"workers": True, "queued": 0}, "workers"),
    ({"workers": 1.5, "queued": 0}, "workers"),
    ({"workers": 100_001, "queued": 0}, "workers"),
    ({"workers": 1}, "queued"),
    ({"workers": 1, "queued": 10**12 + 1}, "queued"),
    ({"workers": 1, "queued": 0, "detail": "x" * 161}, "detail"),
    ({"workers": 1, "queued": 0, "detail": "two\nlines"}, "detail"),
    ({"workers": 1, "queued": 0, "detail": 5}, "detail"),
])
def test_bad_load_reports_are_refused_naming_the_field(data: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        wl.parse_load(data, "t", 0.0)


def test_only_the_current_masters_fresh_report_counts() -> None:
    r = wl.parse_load({"workers": 3, "queued": 9, "detail": "d"}, "m.1", 100.0)
    assert wl.usable_load(r, "m.1", 100.0 + wl.LOAD_MAX_AGE) == r
    assert wl.usable_load(r, "m.1", 100.1 + wl.LOAD_MAX_AGE) is None
    assert wl.usable_load(r, "m.2", 101.0) is None
    assert wl.usable_load(None, "m.1", 101.0) is None


def demand(**kw: object) -> JobDemand:
    base = dict(key="r/e/j", role="r", worker_resources=Resources(1, 1024),
                min_workers=1, max_workers=8, initial_workers=2, backlog=float("nan"))
    return JobDemand(**{**base, **kw})  # type: ignore[arg-type]


def test_policy_sizes_by_the_reported_count_within_max_and_share() -> None:
    cap = Resources(100, 100 * 1024)
    res = compute_targets([demand(wanted_workers=12, load_detail="dask: 840 tasks "
                                  "queued, wants 12")], cap, {}, PolicyState(), 0.0, FAST)
    t = res.targets["r/e/j"]
    assert (t.workers, t.reason) == (8, "max")
    assert t.detail == "dask: 840 tasks queued, wants 12; job maximum 8"
    # Fair share still bounds it: a second role's job takes half of a small cluster.
    small = Resources(6, 6 * 1024)
    other = demand(key="s/e/k", role="s", wanted_workers=6, initial_workers=6)
    res = compute_targets([demand(wanted_workers=12), other], small, {}, PolicyState(), 0.0,
                          FAST)
    assert res.targets["r/e/j"].workers == 3 and res.targets["r/e/j"].reason == "share"
    # ...and the minimum: wanting nothing keeps one.
    res = compute_targets([demand(wanted_workers=0, load_detail="dask: 0 tasks queued, "
                                  "wants 0")], cap, {}, PolicyState(), 0.0, FAST)
    t = res.targets["r/e/j"]
    assert (t.workers, t.reason) == (1, "min")
    assert t.detail.startswith("dask: 0 tasks queued, wants 0")


# ---------------------------------------------------------------------------- scheduler


def started_dask(h: Harness, **workers: object) -> tuple[str, list[fx.TaskLaunch]]:
    """A running Dask job: its master on agent S1, its workers (1 cpu each) on S2."""
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(dask_spec(cpus=1, mem=256, **workers), "req-1"))
    (m,) = launches(h.offers(1))
    assert "dask_runner scheduler" in m.command
    h.status(m.task_id, "TASK_RUNNING")
    ws = launches(h.offers(2))
    for t in ws:
        h.status(t.task_id, "TASK_RUNNING", agent="S2")
    return m.task_id, ws


def load(h: Harness, task_id: str, workers: int, queued: int, dt: float = 0.1) -> None:
    h(ev.ExecutorMessage("S1", task_id, {
        "kind": "load", "task_id": task_id, "workers": workers, "queued": queued,
        "detail": f"dask: {queued} tasks queued, wants {workers}"}), dt=dt)


def test_the_masters_load_report_sizes_a_dask_job() -> None:
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    master, ws = started_dask(h)
    load(h, master, 12, 840)
    h(ev.Tick(), dt=5)
    view = h.s.view(KEY)
    assert view.desired_workers == 8
    assert view.target_reason.startswith(
        "max: dask: 840 tasks queued, wants 12; job maximum 8; fair share"), view.target_reason
    # A worker's report, or a malformed one, changes nothing and leaves a note.
    load(h, ws[0].task_id, 1, 0)
    h(ev.ExecutorMessage("S1", master, {"kind": "load", "task_id": master, "workers": -3,
                                        "queued": 0}))
    notes = " | ".join(n for _, n in h.s.drain_notes())
    assert "not the job's current master" in notes and "workers must be" in notes
    h(ev.Tick(), dt=5)
    assert h.s.view(KEY).desired_workers == 8


def test_scale_down_asks_the_master_to_retire_then_kills_at_the_deadline() -> None:
    h = Harness(elastic=Elastic(config=FAST, interval=5.0))
    master, ws = started_dask(h, initial=3)
    load(h, master, 1, 0)
    out = h(ev.Tick(), dt=5)
    t0 = h.now
    retire = [e for e in of(out, fx.SendMessage) if e.data.get("kind") == "retire"]
    assert {r.executor_id for r in retire} == {master}
    names = [w["name"] for r in retire for w in r.data["workers"]]
    assert sorted(names) == sorted(t.task_id for t in ws if t.key.index >= 1)
    assert {w["by"] for r in retire for w in r.data["workers"]} == {
        h.now + wl.RETIRE_SECONDS}
    assert not of(out, fx.KillTask)                  # Dask closes them itself...
    # ...one does, exiting 0: a finished retiree is not a loss and not a completed slot.
    out = h.status(ws[1].task_id, "TASK_FINISHED", agent="S2")
    assert not launches(h.offers(3)) and h.s.view(KEY).resilience.losses == 0
    # Another change of target does not kill the retiree still moving its results.
    out = h(ev.ScaleJob(KEY, 1))
    assert not of(out, fx.KillTask)
    # The other one is killed when its deadline passes.
    out = h(ev.Tick(), dt=t0 + wl.RETIRE_SECONDS - 0.5 - h.now)
    assert not of(out, fx.KillTask)
    out = h(ev.Tick(), dt=0.6)
    assert [k.task_id for k in of(out, fx.KillTask)] == [ws[2].task_id]
    # Growing again relaunches the slot retired earlier.
    h(ev.ScaleJob(KEY, 2))
    assert [t.key.index for t in launches(h.offers(3))] == [1]


def test_without_a_running_master_scale_down_kills() -> None:
    h = Harness()
    master, ws = started_dask(h, initial=2)
    h.status(master, "TASK_LOST")           # master relaunching: nobody to ask
    out = h(ev.ScaleJob(KEY, 1))
    assert [k.task_id for k in of(out, fx.KillTask)] == [ws[1].task_id]
    assert not [e for e in of(out, fx.SendMessage) if e.data.get("kind") == "retire"]


def test_command_jobs_are_killed_on_scale_down_as_before() -> None:
    h = Harness()
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(make_spec(3, lo=1), "req-1"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_RUNNING")
    ws = launches(h.offers(1))
    run_workers(h, ws)
    out = h(ev.ScaleJob(KEY, 1))
    assert len(of(out, fx.KillTask)) == 2 and not [
        e for e in of(out, fx.SendMessage) if e.data.get("kind") == "retire"]


def test_notice_retires_dask_workers_through_the_master_before_the_window() -> None:
    h = Harness()
    master, ws = started_dask(h, initial=2)
    start = h.now + 30
    out = h(ev.InverseOffersReceived((ev.InverseOffer("IO1", "S2", None, start, 20),)))
    retire = [e for e in of(out, fx.SendMessage) if e.data.get("kind") == "retire"]
    noticed = {t.task_id for t in ws}
    assert len(retire) == 2 and all(r.executor_id == master for r in retire)
    assert {x["name"] for r in retire for x in r.data["workers"]} == noticed
    # By the window's start (the machine may go then) less the kill grace (7 s) and the
    # drain margin (1 s): what any drained task gets.
    assert {x["by"] for r in retire for x in r.data["workers"]} == {start - 8}
    assert not of(out, fx.KillTask)
    # Replacements go elsewhere at once; the retiring workers are killed at that time if
    # they are still there.
    assert len(launches(h.offers(3))) == len(noticed)
    assert not of(h(ev.Tick(), dt=5), fx.KillTask)
    out = h(ev.Tick(), dt=start - 8 + 0.1 - h.now)
    assert sorted(k.task_id for k in of(out, fx.KillTask)) == sorted(noticed)


def test_a_master_being_moved_is_not_asked_to_retire() -> None:
    h = Harness()
    h(ev.Subscribed("fw-1"))
    h(ev.SubmitJob(dask_spec(cpus=1, mem=256, initial=2), "req-1"))
    (m,) = launches(h.offers(1))
    h.status(m.task_id, "TASK_RUNNING")
    ws = launches(h.offers(1))                      # workers beside the master on S1
    run_workers(h, ws)
    out = h(ev.InverseOffersReceived((ev.InverseOffer("IO1", "S1", None, h.now + 1, 20),)))
    assert m.task_id in [k.task_id for k in of(out, fx.KillTask)]
    assert not [e for e in of(out, fx.SendMessage) if e.data.get("kind") == "retire"]


def test_spec_round_trips_with_kind_and_driver() -> None:
    from corral.api.convert import spec_from_proto, spec_to_proto
    from corral.core.spec import spec_to_dict

    spec = dask_spec()
    assert parse_job_spec(spec_to_dict(spec)) == spec
    assert spec_from_proto(spec_to_proto(spec)) == spec
    assert dataclasses.replace(spec, driver=None) != spec
