"""Translation between Mesos JSON and the core's values, without I/O.

Inbound: one Mesos scheduler event (a dict from the RecordIO stream) becomes zero or
more core events. Outbound: a ``LaunchTasks`` effect becomes the TaskInfo JSON of
Corral's custom executor (its ``CommandInfo.uris`` when the fetcher ships it, and a
MESOS container with the task's Docker image: a custom executor's tasks run in the
executor's container, so the image goes on ``ExecutorInfo.container``). Malformed input
never raises out of here: it becomes no event plus a reason the shell logs, because one
bad record must not stop the scheduler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from corral.core import events as ev
from corral.core.effects import TaskLaunch
from corral.core.resources import Resources
from corral.mesos import codec

log = logging.getLogger(__name__)

Json = dict[str, Any]

# What Corral's executor itself takes out of a task's request (Mesos counts executor
# resources separately; carving them out keeps the total equal to what placement used).
# An OFFERS event of more offers becomes several core events of at most this many.
OFFERS_PER_EVENT = 1000
EXECUTOR_CPUS = 0.05
EXECUTOR_MEM = 32.0


def _nanos_to_seconds(d: Mapping[str, Any] | None) -> float | None:
    if not d or "nanoseconds" not in d:
        return None
    return int(d["nanoseconds"]) / 1e9


def _inverse_offer(d: Mapping[str, Any]) -> ev.InverseOffer:
    unav = d.get("unavailability") or {}
    agent = d.get("agent_id") or {}
    url = d.get("url") or {}
    return ev.InverseOffer(
        id=str((d.get("id") or {}).get("value", "")),
        agent_id=agent.get("value"),
        hostname=(url.get("address") or {}).get("hostname"),
        start=_nanos_to_seconds(unav.get("start")),
        duration=_nanos_to_seconds(unav.get("duration")),
    )


def _message(m: Mapping[str, Any]) -> ev.Event | None:
    raw = codec.decode_bytes(str(m.get("data", "")))
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("executor message is not a JSON object")
    return ev.ExecutorMessage(
        agent_id=str((m.get("agent_id") or {}).get("value", "")),
        executor_id=str((m.get("executor_id") or {}).get("value", "")),
        data=data,
    )


def _failure(f: Mapping[str, Any]) -> ev.Event | None:
    agent = str((f.get("agent_id") or {}).get("value", ""))
    executor = (f.get("executor_id") or {}).get("value")
    if executor is None:
        return ev.AgentLost(agent)
    status = f.get("status")
    return ev.ExecutorExited(agent, str(executor), None if status is None else int(status))


def event_from_mesos(event: Mapping[str, Any]) -> list[ev.Event]:
    """The core events one Mesos scheduler event means (possibly none)."""
    kind = event.get("type")
    try:
        if kind == "SUBSCRIBED":
            return [ev.Subscribed(str(event["subscribed"]["framework_id"]["value"]))]
        if kind == "OFFERS":
            offers = tuple(codec.offers_from_event(event))
            # A large event becomes several core events (each one decision, placed and
            # answered on its own): one event of 10,000 offers held the core ~300 ms.
            return [ev.OffersReceived(offers[i:i + OFFERS_PER_EVENT])
                    for i in range(0, len(offers), OFFERS_PER_EVENT)] or \
                [ev.OffersReceived(())]
        if kind == "RESCIND":
            return [ev.OfferRescinded(str(event["rescind"]["offer_id"]["value"]))]
        if kind == "INVERSE_OFFERS":
            offers = event["inverse_offers"]["inverse_offers"]
            return [ev.InverseOffersReceived(tuple(_inverse_offer(o) for o in offers))]
        if kind == "RESCIND_INVERSE_OFFER":
            return [ev.InverseOfferRescinded(
                str(event["rescind_inverse_offer"]["inverse_offer_id"]["value"]))]
        if kind == "UPDATE":
            f = codec.task_status_fields(event["update"]["status"])
            return [ev.StatusUpdate(
                task_id=f["task_id"], state=f["state"], agent_id=f["agent_id"],
                executor_id=f["executor_id"], reason=f["reason"], source=f["source"],
                message=f["message"] or "", uuid=f["uuid"], timestamp=f["timestamp"],
            )]
        if kind == "MESSAGE":
            msg = _message(event["message"])
            return [msg] if msg else []
        if kind == "FAILURE":
            fail = _failure(event["failure"])
            return [fail] if fail else []
        if kind == "ERROR":
            log.error("Mesos master error: %s", (event.get("error") or {}).get("message"))
            return []
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring malformed %s event: %s", kind, exc)
        return []
    return []


def _split_executor(res: Resources) -> tuple[Resources, Resources]:
    """(executor's share, task's share) of a task's resources."""
    exe = Resources(cpus=min(EXECUTOR_CPUS, res.cpus / 2), mem=min(EXECUTOR_MEM, res.mem / 2))
    return exe, res - exe


class _ResourceMarks(TypedDict):
    """What marks every resource entry of one launch (codec's keyword arguments)."""

    revocable: bool
    role: str
    allocation_role: str | None


def task_info(
    launch: TaskLaunch, agent_id: str, executor_command: str, *, role: str = "*",
    allocation_role: str | None = None, usage_interval: float = 5.0,
    uris: Sequence[Mapping[str, Any]] = (),
) -> Json:
    """TaskInfo JSON running ``launch`` under Corral's executor (one executor per task)."""
    exe_res, task_res = _split_executor(launch.resources)
    kw: _ResourceMarks = {
        "revocable": launch.revocable, "role": role, "allocation_role": allocation_role,
    }
    task_json = codec.scalar_resources_json(task_res, **kw)
    if launch.ports:
        task_json.append(codec.ports_resource_json(list(launch.ports), **kw))
    executor = codec.executor_info_json(
        executor_id=launch.task_id,
        name=f"corral executor for {launch.name}",
        command=executor_command,
        env={},
        resources_json=codec.scalar_resources_json(exe_res, **kw),
        shutdown_grace_seconds=launch.grace_seconds + 5.0,
        uris=uris,
        container=codec.docker_image_container_json(launch.image) if launch.image else None,
    )
    data = json.dumps({
        "command": launch.command,
        "env": dict(launch.env),
        "grace_seconds": launch.grace_seconds,
        "usage_interval_seconds": usage_interval,
    }).encode()
    return codec.task_info_json(
        task_id=launch.task_id, name=launch.name, agent_id=agent_id,
        resources_json=task_json, executor=executor, data=data,
        labels={"corral.job": launch.key.job, "corral.slot": launch.key.label()},
        kill_grace_seconds=launch.grace_seconds,
    )
