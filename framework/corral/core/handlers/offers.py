"""Offers: placing pending slots, launching attempts, declining the rest.

An OFFERS event is answered in full within the event: every offer is either accepted
(with LAUNCH of the tasks placed on its agent) or declined with a refusal filter, unless
the reconciliation gate is closed (``session``), in which case the offers are held until
it opens. Placement (``core.placement``) is pure; this module builds its inputs from the
state (pending slots in job priority order, what of each job already runs where) and
turns its plan into attempts and effects. A slot placement could not take keeps the
plan's vetoes as its ``Why``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from corral.core import effects as fx
from corral.core import events as ev
from corral.core import workload
from corral.core.checkpoints import task_location
from corral.core.handlers import lifecycle as lc
from corral.core.handlers.context import Ctx
from corral.core.model import Constraints, Offer, TaskKey, TaskKind, task_id_for
from corral.core.placement import JobFacts, PendingTask, PlacementFacts, Plan, place
from corral.core.placement.types import Assignment
from corral.core.resources import Resources
from corral.core.slot_state import Input, Life, step
from corral.core.state import Attempt, CoreState, Job
from corral.core.task_state import TaskState
from corral.core.views import WHY_PLACEMENT, Why


def on_offers(st: CoreState, e: ev.OffersReceived, ctx: Ctx) -> None:
    observe(st, e.offers, ctx)
    if st.session.gated:
        st.session.held.extend(e.offers)  # placed once reconciliation is finished
        return
    decide(st, ctx, e.offers)


def on_rescinded(st: CoreState, e: ev.OfferRescinded, ctx: Ctx) -> None:
    held = st.session.held
    kept = [o for o in held if o.id != e.offer_id]
    if len(kept) != len(held):
        st.session.held = kept
        ctx.note(f"held offer {e.offer_id} rescinded")


def observe(st: CoreState, offers: tuple[Offer, ...] | list[Offer], ctx: Ctx) -> None:
    """What offers tell about their agents: host, attributes, that they are back, and
    maintenance windows (a spot notice reaches Mesos as an offer's unavailability)."""
    from corral.core.handlers import maintenance

    if ctx.elastic is not None:
        ctx.elastic.observe_offers(offers)
    for o in offers:
        agent = st.agent(o.agent_id)
        agent.attributes = dict(o.attributes)
        agent.hostname = o.hostname
        st.set_agent_lost(o.agent_id, False)
        if o.unavailable_at is not None and agent.drain is None:
            maintenance.notice(st, ctx, o.agent_id, o.unavailable_at, None,
                               f"offer unavailability from {o.unavailable_at:.0f}")
        elif o.unavailable_at is None and agent.drain is not None \
                and not agent.inverse_offers:
            # The window was cancelled (no inverse offer holds it): usable again.
            agent.drain = None


def decide(st: CoreState, ctx: Ctx, offers: tuple[Offer, ...] | list[Offer]) -> None:
    """Place what is pending on ``offers``; answer every offer."""
    cfg = ctx.config
    pending, facts, deferred = placement_inputs(st, ctx)
    st.resume_offers_at(deferred)
    if not pending:
        ids = tuple(o.id for o in offers)
        if ids:
            ctx.emit(fx.DeclineOffers(ids, cfg.refuse_long))
        return
    plan = place(pending, offers, facts)
    refuse = cfg.refuse_short if plan.vetoes or deferred is not None else cfg.refuse_long
    for agent, assigned in plan.assignments.items():
        launches = tuple(launch(st, ctx, a) for a in assigned)
        if ctx.elastic is not None:
            for a in assigned:
                ctx.elastic.observe_launch(agent, a.task.resources, a.revocable)
        ctx.emit(fx.LaunchTasks(plan.offer_ids[agent], agent, launches, refuse))
    unused = plan.unused_offer_ids()
    if unused:
        ctx.emit(fx.DeclineOffers(tuple(unused), refuse))
    record_vetoes(st, plan)


def placement_inputs(st: CoreState, ctx: Ctx
                     ) -> tuple[list[PendingTask], PlacementFacts, str | None]:
    """Pending tasks in placement order, what placement must know of their jobs, and the
    first job left for the next offers (``groups_per_offers``; None: none left).

    The order is priority, then submission; a policy may reorder the jobs (``order``: a
    baseline's placement order, e.g. lowest role share first) and constrain a job's
    masters or workers to agent attributes (``constraints``: e.g. spot agents first);
    placement itself is the same. After an event that left groups for later, the next
    one starts where it stopped and wraps around, so jobs that cannot be placed at the
    head of the order never starve the ones behind them."""
    cfg = ctx.config
    order = sorted(st.pending_jobs, key=lambda k: (-st.jobs[k].spec.priority, st.jobs[k].seq))
    policy = ctx.elastic
    if policy is not None:
        order = policy.order(st, order)
    resume = st.offers_resume
    if resume is not None and resume in st.pending_jobs and resume in order:
        at = order.index(resume)
        order = order[at:] + order[:at]
    pending: list[PendingTask] = []
    jobs: dict[str, JobFacts] = {}
    groups = 0
    deferred: str | None = None
    for k in order:
        job = st.jobs[k]
        if job.cost.held:
            continue  # its role is over budget (core.cost): not placed, says why
        kinds = {key.kind for key in job.pending}
        if groups and groups + len(kinds) > cfg.groups_per_offers:
            deferred = k
            break
        groups += len(kinds)
        spec = job.spec
        # What a task takes and where it may go are the same for a job's workers: work
        # them out once per kind.
        by_kind: dict[TaskKind, tuple[Resources, int, Constraints]] = {}
        for key in job.pending:
            how = by_kind.get(key.kind)
            if how is None:
                constraints = spec.constraints
                if policy is not None:
                    constraints = policy.constraints(st, job, key.kind) or constraints
                if constraints.spread_over is None and cfg.default_spread:
                    # Diversify by default: one spot market's reclaim takes only its share.
                    constraints = replace(constraints, spread_over=cfg.default_spread)
                how = by_kind[key.kind] = (
                    lc.launch_resources(job, key) + cfg.executor_overhead,
                    job.template(key).ports, constraints)
            pending.append(PendingTask(key, how[0], how[1], spec.tier, how[2]))
        jobs[k] = job_facts(st, ctx, job)
    return pending, PlacementFacts(jobs=jobs, draining=st.draining_agents(), now=ctx.now), \
        deferred


def job_facts(st: CoreState, ctx: Ctx, job: Job) -> JobFacts:
    """Where ``job``'s live tasks are: per agent (the state keeps the counts) and, for
    its workers, per value of the attribute it spreads over."""
    spread: Counter[str] = Counter()
    attr = job.spec.constraints.spread_over or ctx.config.default_spread
    if attr:
        for agent_id, n in job.workers_on.items():
            agent = st.agents.get(agent_id)
            value = agent.attributes.get(attr) if agent is not None else None
            if value is not None:
                spread[value] += n
    return JobFacts(master_running=job.master_running(), tasks_per_agent=job.on_agent,
                    spread_counts=spread)


def launch(st: CoreState, ctx: Ctx, a: Assignment) -> fx.TaskLaunch:
    """A new attempt for the placed slot (its task id is durable before the LAUNCH)."""
    key = a.task.key
    job = st.jobs[key.job]
    slot = lc.slot_of(job, key)
    edge = step(key.kind, slot.state, Input.PLACED)
    assert edge is not None and edge.next is Life.LAUNCHED, "placed a slot not PENDING"
    slot.attempts += 1
    n = slot.attempts
    tid = task_id_for(key, n)
    t = job.template(key)
    att = Attempt(job=job, key=key, number=n, task_id=tid, resources=a.task.resources,
                  life=Life.LAUNCHED, mesos=TaskState.LAUNCHED, agent_id=a.agent_id,
                  hostname=a.hostname, executor_id=tid, ports=a.ports, revocable=a.revocable,
                  launched_at=ctx.now, heard_at=ctx.now)
    st.add_attempt(att)   # marks the job changed and durable
    st.fill(slot, att)
    lc.arm_staging(st, ctx, att)
    return fx.TaskLaunch(
        task_id=tid, key=key, attempt=n, name=f"{job.key} {key.label()}",
        command=workload.launch_command(job.spec, key), resources=lc.launch_resources(job, key),
        ports=a.ports, revocable=a.revocable,
        env=build_env(job, key, n, a.ports), grace_seconds=job.spec.kill_grace_seconds,
        hostname=a.hostname, image=t.image,
    )


def build_env(job: Job, key: TaskKey, attempt: int,
              ports: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """The task's environment: the template's env, then every CORRAL_* variable."""
    spec = job.spec
    env: dict[str, str] = dict(job.template(key).env)
    env["CORRAL_JOB"] = spec.key
    env["CORRAL_TASK_ROLE"] = key.kind.value
    if key.kind is TaskKind.WORKER:
        env["CORRAL_WORKER_INDEX"] = str(key.index)
        if job.master_address:
            env["CORRAL_MASTER_ADDRESS"] = job.master_address
    if ports:
        env["CORRAL_PORT"] = str(ports[0])
        env["CORRAL_PORTS"] = ",".join(str(p) for p in ports)
    if spec.checkpoint_uri:
        # Under the job's own key: two jobs never share a checkpoint location.
        env["CORRAL_CHECKPOINT_URI"] = task_location(spec.checkpoint_uri, spec.key, key.label())
    env["CORRAL_CHECKPOINT_INTERVAL"] = f"{spec.checkpoint_interval_seconds:g}"
    env["CORRAL_ATTEMPT"] = str(attempt)
    return tuple(env.items())


def record_vetoes(st: CoreState, plan: Plan) -> None:
    for key, vetoes in plan.vetoes.items():
        job = st.jobs[key.job]
        slot = lc.slot_of(job, key)
        why = Why(WHY_PLACEMENT, vetoes=vetoes)
        if slot.why != why:
            slot.why = why
            st.mark_changed(job)
