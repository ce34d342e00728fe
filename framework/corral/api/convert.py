"""Translation between Corral's domain values and the ``corral.v1`` proto messages.

Specs travel as plain data in the middle: a proto ``JobSpec`` becomes the same dict a
YAML file would give (``spec_proto_to_dict``) and is then validated by
``corral.core.spec.parse_job_spec``, so validation and its field names live in one place.
Only fields the sender set appear in the dict, so unset fields take the validator's
defaults. Job snapshots (``JobView``) map field for field onto the ``Job`` message, and
``view_to_dict`` gives the JSON shape the CLI prints with ``--json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.core.cost import CostView
from corral.core.model import JobSpec, Tier
from corral.core.placement.types import Veto
from corral.core.spec import parse_job_spec, spec_to_dict
from corral.core.summary import JobSummary
from corral.core.views import (
    JobState,
    JobView,
    LossView,
    PolicyActionView,
    PolicyView,
    Progress,
    Resilience,
    TaskView,
    Why,
    render_why,
)

_TIER_TO_PB = {
    Tier.PREFERRED: pb.TIER_PREFERRED,
    Tier.PREEMPTIBLE: pb.TIER_PREEMPTIBLE,
    Tier.REVOCABLE: pb.TIER_REVOCABLE,
}
_TIER_FROM_PB = {v: k for k, v in _TIER_TO_PB.items()}

_STATE_TO_PB: dict[JobState, pb.JobState] = {
    JobState.PENDING: pb.JOB_STATE_PENDING, JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.FINISHED: pb.JOB_STATE_FINISHED, JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.KILLED: pb.JOB_STATE_KILLED}
assert set(_STATE_TO_PB) == set(JobState), "a job state with no wire value"
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}

# Fields copied as-is when set, per message. Maps are handled separately.
_TASK_SCALARS = ("cpus", "mem", "disk", "gpus", "ports", "image")
_WORKER_SCALARS = (*_TASK_SCALARS, "min", "max", "initial")
_TASK_MAPS = ("env",)
_INT_FIELDS = frozenset({"gpus", "ports", "min", "max", "initial", "priority",
                         "max_per_host", "max_failures"})


def _set_fields(msg: Any, data: Mapping[str, Any], scalars: tuple[str, ...],
                maps: tuple[str, ...] = ()) -> None:
    for f in scalars:
        v = data.get(f)
        if v is None:
            continue
        # The validator accepts 2.0 for a whole number; proto int fields do not.
        setattr(msg, f, int(v) if f in _INT_FIELDS else v)
    for f in maps:
        m = data.get(f)
        if m:
            getattr(msg, f).update({str(k): str(v) for k, v in m.items()})


def _get_fields(msg: Any, scalars: tuple[str, ...], maps: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in scalars:
        if msg.HasField(f):
            out[f] = getattr(msg, f)
    for f in maps:
        m = getattr(msg, f)
        if m:
            out[f] = dict(m)
    return out


def spec_dict_to_proto(data: Mapping[str, Any]) -> pb.JobSpec:
    """Plain spec data (as YAML or ``spec_to_dict`` gives it) → proto ``JobSpec``.

    Expects data that already passed ``parse_job_spec``; values are not re-validated.
    """
    msg = pb.JobSpec(
        role=data.get("role", ""),
        environment=data.get("environment", "") or "",
        name=data.get("name", ""),
    )
    tier = data.get("tier")
    if tier is not None:
        msg.tier = _TIER_TO_PB[Tier(tier)]
    _set_fields(msg, data, ("priority", "kill_grace_seconds", "deadline_seconds"), ("labels",))
    if data.get("master") is not None:
        msg.master.SetInParent()
        msg.master.command = data["master"].get("command", "")
        _set_fields(msg.master, data["master"], _TASK_SCALARS, _TASK_MAPS)
    if data.get("workers") is not None:
        msg.workers.SetInParent()
        msg.workers.command = data["workers"].get("command", "")
        _set_fields(msg.workers, data["workers"], _WORKER_SCALARS, _TASK_MAPS)
    if data.get("checkpoint") is not None:
        msg.checkpoint.SetInParent()
        _set_fields(msg.checkpoint, data["checkpoint"], ("uri", "interval_seconds"))
    if data.get("constraints") is not None:
        msg.constraints.SetInParent()
        _set_fields(msg.constraints, data["constraints"], ("max_per_host", "spread_over"),
                    ("attributes",))
    if data.get("restart") is not None:
        msg.restart.SetInParent()
        _set_fields(msg.restart, data["restart"],
                    ("max_failures", "backoff_seconds", "backoff_max_seconds"))
    if data.get("kind") is not None:
        msg.kind = str(data["kind"])
    if data.get("driver") is not None:
        msg.driver.SetInParent()
        msg.driver.command = data["driver"].get("command", "")
    return msg


def spec_proto_to_dict(msg: pb.JobSpec) -> dict[str, Any]:
    """Proto ``JobSpec`` → plain data for ``parse_job_spec``, holding only the set fields.

    Empty required strings are left out so the validator reports them as "is required".
    """
    d: dict[str, Any] = {}
    for f in ("role", "environment", "name"):
        if getattr(msg, f):
            d[f] = getattr(msg, f)
    if msg.tier != pb.TIER_UNSPECIFIED:
        # An unknown enum number (a newer client) becomes a value the validator rejects.
        d["tier"] = _TIER_FROM_PB[msg.tier].value if msg.tier in _TIER_FROM_PB else str(msg.tier)
    d.update(_get_fields(msg, ("priority", "kill_grace_seconds", "deadline_seconds"),
                         ("labels",)))
    # proto3 cannot tell an empty command from none: empty means "not given", which the
    # validator reports for kinds that need one and accepts for kinds that write it.
    if msg.HasField("master"):
        d["master"] = {**({"command": msg.master.command} if msg.master.command else {}),
                       **_get_fields(msg.master, _TASK_SCALARS, _TASK_MAPS)}
    if msg.HasField("workers"):
        d["workers"] = {**({"command": msg.workers.command} if msg.workers.command else {}),
                        **_get_fields(msg.workers, _WORKER_SCALARS, _TASK_MAPS)}
    if msg.HasField("checkpoint"):
        d["checkpoint"] = _get_fields(msg.checkpoint, ("uri", "interval_seconds"))
    if msg.HasField("constraints"):
        d["constraints"] = _get_fields(msg.constraints, ("max_per_host", "spread_over"),
                                       ("attributes",))
    if msg.HasField("restart"):
        d["restart"] = _get_fields(
            msg.restart, ("max_failures", "backoff_seconds", "backoff_max_seconds"))
    if msg.kind:
        d["kind"] = msg.kind
    if msg.HasField("driver"):
        d["driver"] = {"command": msg.driver.command} if msg.driver.command else {}
    return d


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    return spec_dict_to_proto(spec_to_dict(spec))


def spec_from_proto(msg: pb.JobSpec) -> JobSpec:
    """Validate and build a ``JobSpec``; raises ``SpecError`` naming every bad field."""
    return parse_job_spec(spec_proto_to_dict(msg))


def _opt(msg: Any, f: str) -> Any:
    return getattr(msg, f) if msg.HasField(f) else None


def why_to_proto(why: Why) -> pb.PendingWhy:
    msg = pb.PendingWhy(code=why.code, detail=why.detail, vetoes=[
        pb.Veto(check=v.check, agents=v.agents, example_agent=v.example, detail=v.detail)
        for v in why.vetoes])
    if why.until is not None:
        msg.until = why.until
    return msg


def why_from_proto(msg: pb.PendingWhy) -> Why:
    return Why(code=msg.code, detail=msg.detail, until=_opt(msg, "until"),
               vetoes=tuple(Veto(v.check, v.agents, v.example_agent, v.detail)
                            for v in msg.vetoes))


def task_to_proto(t: TaskView, now: float | None = None) -> pb.Task:
    """``now``: the server's clock, for the text's relative times (``render_why``)."""
    msg = pb.Task(slot=t.slot, state=t.state, attempt=t.attempt, revocable=t.revocable,
                  life=t.life)
    for f in ("task_id", "agent_id", "hostname", "reason", "message"):
        v = getattr(t, f)
        if v is not None:
            setattr(msg, f, v)
    if t.why is not None:
        msg.why.CopyFrom(why_to_proto(t.why))
        text = render_why(t.why, now)
        if text is not None:
            msg.pending_reason = text
    return msg


def task_from_proto(msg: pb.Task) -> TaskView:
    return TaskView(
        slot=msg.slot, task_id=_opt(msg, "task_id"), state=msg.state,
        agent_id=_opt(msg, "agent_id"), hostname=_opt(msg, "hostname"),
        reason=_opt(msg, "reason"), message=_opt(msg, "message"),
        why=why_from_proto(msg.why) if msg.HasField("why") else None, attempt=msg.attempt,
        revocable=msg.revocable, life=msg.life,
    )


def job_to_proto(v: JobView, now: float | None = None) -> pb.Job:
    """``now``: the server's clock, to render relative times in the tasks' reasons."""
    msg = pb.Job(
        key=v.key,
        spec=spec_to_proto(v.spec),
        state=_STATE_TO_PB[v.state],
        desired_workers=v.desired_workers,
        target_reason=v.target_reason,
        tasks=[task_to_proto(t, now) for t in v.tasks],
        progress=pb.Progress(done=v.progress.done, total=v.progress.total,
                             backlog=v.progress.backlog, rerun=v.progress.rerun),
        submitted_at=v.submitted_at,
        message=v.message,
        request_id=v.request_id,
        version=v.version,
    )
    if v.finished_at is not None:
        msg.finished_at = v.finished_at
    msg.resilience.CopyFrom(resilience_to_proto(v.resilience))
    if v.cost is not None:
        msg.cost.CopyFrom(cost_to_proto(v.cost))
    msg.policy.CopyFrom(policy_to_proto(v.policy))
    return msg


def cost_to_proto(c: CostView) -> pb.Cost:
    return pb.Cost(currency=c.currency, useful=c.useful, lost=c.lost,
                   checkpoint=c.checkpoint, spare=c.spare, total=c.total,
                   on_demand=c.on_demand, savings=c.savings, cpu_hours=dict(c.cpu_hours),
                   by_market=dict(c.by_market))


def cost_from_proto(msg: pb.Cost) -> CostView:
    return CostView(currency=msg.currency, useful=msg.useful, lost=msg.lost,
                    checkpoint=msg.checkpoint, spare=msg.spare, total=msg.total,
                    on_demand=msg.on_demand, savings=msg.savings,
                    cpu_hours=dict(sorted(msg.cpu_hours.items())),
                    by_market=dict(sorted(msg.by_market.items())))


def cost_to_dict(c: CostView) -> dict[str, Any]:
    """A cost as JSON (``corral status --json``'s ``cost``, the UI, the history)."""
    return {"currency": c.currency, "useful": c.useful, "lost": c.lost,
            "checkpoint": c.checkpoint, "spare": c.spare, "total": c.total,
            "on_demand": c.on_demand, "savings": c.savings,
            "cpu_hours": dict(c.cpu_hours), "by_market": dict(c.by_market)}


def policy_to_proto(p: PolicyView) -> pb.PolicyActions:
    msg = pb.PolicyActions(worker_cpus=p.worker_cpus, worker_mem=p.worker_mem,
                           size_reason=p.size_reason, preempted=p.preempted,
                           retired=p.retired)
    for a in p.recent:
        msg.recent.add(at=a.at, kind=a.kind, slot=a.slot, task_id=a.task_id, why=a.why)
    return msg


def policy_from_proto(msg: pb.PolicyActions) -> PolicyView:
    return PolicyView(
        worker_cpus=msg.worker_cpus, worker_mem=msg.worker_mem, size_reason=msg.size_reason,
        preempted=msg.preempted, retired=msg.retired,
        recent=tuple(PolicyActionView(a.at, a.kind, a.slot, a.task_id, a.why)
                     for a in msg.recent))


def resilience_to_proto(r: Resilience) -> pb.Resilience:
    msg = pb.Resilience(
        losses=r.losses, recoveries=r.recoveries, work_lost_seconds=r.work_lost_seconds,
        recovery_seconds_total=r.recovery_seconds_total,
        recovery_seconds_max=r.recovery_seconds_max, spare_workers=r.spare_workers,
        spare_reason=r.spare_reason)
    for x in r.recent:
        loss = msg.recent.add(slot=x.slot, task_id=x.task_id, kind=x.kind,
                              detected_at=x.detected_at, work_lost_seconds=x.work_lost_seconds)
        for f in ("recovered_at", "recovery_seconds", "replacement_task_id", "returned_at"):
            value = getattr(x, f)
            if value is not None:
                setattr(loss, f, value)
    return msg


def resilience_from_proto(msg: pb.Resilience) -> Resilience:
    return Resilience(
        losses=msg.losses, recoveries=msg.recoveries, work_lost_seconds=msg.work_lost_seconds,
        recovery_seconds_total=msg.recovery_seconds_total,
        recovery_seconds_max=msg.recovery_seconds_max, spare_workers=msg.spare_workers,
        spare_reason=msg.spare_reason,
        recent=tuple(LossView(
            slot=x.slot, task_id=x.task_id, kind=x.kind, detected_at=x.detected_at,
            work_lost_seconds=x.work_lost_seconds, recovered_at=_opt(x, "recovered_at"),
            recovery_seconds=_opt(x, "recovery_seconds"),
            replacement_task_id=_opt(x, "replacement_task_id"),
            returned_at=_opt(x, "returned_at")) for x in msg.recent))


def job_from_proto(msg: pb.Job) -> JobView:
    """Proto ``Job`` → ``JobView``; raises ``SpecError`` if the embedded spec is invalid and
    ``ValueError`` for a job state this client does not know."""
    if msg.state not in _STATE_FROM_PB:
        raise ValueError(f"job {msg.key} has unknown state number {msg.state}")
    p = msg.progress
    return JobView(
        key=msg.key,
        spec=spec_from_proto(msg.spec),
        state=_STATE_FROM_PB[msg.state],
        desired_workers=msg.desired_workers,
        tasks=tuple(task_from_proto(t) for t in msg.tasks),
        progress=Progress(done=p.done, total=p.total, backlog=p.backlog, rerun=p.rerun),
        submitted_at=msg.submitted_at,
        finished_at=_opt(msg, "finished_at"),
        message=msg.message,
        target_reason=msg.target_reason,
        request_id=msg.request_id,
        version=msg.version,
        resilience=resilience_from_proto(msg.resilience),
        cost=cost_from_proto(msg.cost) if msg.HasField("cost") else None,
        policy=policy_from_proto(msg.policy),
    )


def task_to_dict(t: TaskView, now: float | None = None) -> dict[str, Any]:
    """A task as JSON: its fields, ``why`` as data and ``pending_reason`` in words."""
    return {**asdict(t), "pending_reason": render_why(t.why, now)}


def view_to_dict(v: JobView, now: float | None = None) -> dict[str, Any]:
    """The JSON-ready form of a job, as ``corral --json`` prints it; ``cost`` only when
    the scheduler has a price table (so the document is unchanged without one)."""
    doc = {
        "key": v.key,
        "state": v.state.value,
        "desired_workers": v.desired_workers,
        "target_reason": v.target_reason,
        "tasks": [task_to_dict(t, now) for t in v.tasks],
        "progress": asdict(v.progress),
        "submitted_at": v.submitted_at,
        "finished_at": v.finished_at,
        "message": v.message,
        "request_id": v.request_id,
        "version": v.version,
        "resilience": asdict(v.resilience),
        "policy": asdict(v.policy),
        "spec": spec_to_dict(v.spec),
    }
    if v.cost is not None:
        doc["cost"] = cost_to_dict(v.cost)
    return doc


def summary_to_proto(s: JobSummary) -> pb.JobSummary:
    msg = pb.JobSummary(
        key=s.key, state=_STATE_TO_PB[s.state], tier=_TIER_TO_PB[s.tier], priority=s.priority,
        desired_workers=s.desired_workers, running_workers=s.running_workers,
        workers_min=s.workers_min, workers_max=s.workers_max,
        progress=pb.Progress(done=s.progress.done, total=s.progress.total,
                             backlog=s.progress.backlog, rerun=s.progress.rerun),
        submitted_at=s.submitted_at, message=s.message, version=s.version)
    if s.finished_at is not None:
        msg.finished_at = s.finished_at
    return msg


def summary_from_proto(msg: pb.JobSummary) -> JobSummary:
    """Proto ``JobSummary`` -> ``JobSummary``; ``ValueError`` for a state or tier this
    client does not know."""
    if msg.state not in _STATE_FROM_PB:
        raise ValueError(f"job {msg.key} has unknown state number {msg.state}")
    p = msg.progress
    return JobSummary(
        key=msg.key, state=_STATE_FROM_PB[msg.state],
        tier=_TIER_FROM_PB.get(msg.tier, Tier.PREFERRED), priority=msg.priority,
        desired_workers=msg.desired_workers, running_workers=msg.running_workers,
        workers_min=msg.workers_min, workers_max=msg.workers_max,
        progress=Progress(done=p.done, total=p.total, backlog=p.backlog, rerun=p.rerun),
        submitted_at=msg.submitted_at, finished_at=_opt(msg, "finished_at"),
        message=msg.message, version=msg.version)


def summary_to_dict(s: JobSummary) -> dict[str, Any]:
    """The JSON-ready form of a summary, as ``corral jobs --json`` prints it."""
    d = asdict(s)
    d["state"] = s.state.value
    d["tier"] = s.tier.value
    return d
