"""The localmesos registry: what a newly elected master recovers after a failover.

Mesos keeps its registry in a replicated log (``src/master/registry.proto``, 1.11): the
admitted agents (with their drain and deactivation state), the unreachable agents and
when they became so, the gone agents, and the maintenance schedule. Frameworks and tasks
are *not* in it: a new leader learns them from the agents as they re-register
(``Master::_recover``, ``Master::__reregisterSlave``, ``Master::recoverFramework``).
localmesos keeps the same contents as one JSON document in a file
(``<work_dir>/registry.json``), written whole and atomically at every change; a master
recovers only from what it reads back from the file, never from another master's memory.

``RegistryState`` is the pure value (frozen, functional updates, one JSON codec);
``Registry`` is the small imperative shell that owns the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

Json = dict[str, Any]
FORMAT = 1


@dataclass(frozen=True)
class AdmittedAgent:
    """An agent the registry admits: its AgentInfo, drain state and deactivation."""

    info: Json
    draining: bool = False
    drain_grace: float | None = None


@dataclass(frozen=True)
class RegistryState:
    admitted: dict[str, AdmittedAgent] = field(default_factory=dict)
    unreachable: dict[str, float] = field(default_factory=dict)   # agent id -> epoch
    gone: dict[str, float] = field(default_factory=dict)          # agent id -> epoch
    maintenance: tuple[Json, ...] = ()                            # schedule windows
    down_machines: frozenset[str] = frozenset()

    # --- the registry operations (Mesos' RegistryOperation subclasses) ------------------

    def admit(self, agent_id: str, info: Json) -> RegistryState:
        """AdmitSlave / MarkSlaveReachable: the agent is (again) admitted."""
        prior = self.admitted.get(agent_id)
        entry = replace(prior, info=info) if prior else AdmittedAgent(info)
        return replace(self, admitted={**self.admitted, agent_id: entry},
                       unreachable=_without(self.unreachable, agent_id))

    def mark_unreachable(self, agent_id: str, when: float) -> RegistryState:
        """MarkSlaveUnreachable: out of the admitted list, into the unreachable one."""
        return replace(self, admitted=_without(self.admitted, agent_id),
                       unreachable={**self.unreachable, agent_id: when})

    def mark_gone(self, agent_id: str, when: float) -> RegistryState:
        """MarkSlaveGone: never admitted again."""
        return replace(self, admitted=_without(self.admitted, agent_id),
                       unreachable=_without(self.unreachable, agent_id),
                       gone={**self.gone, agent_id: when})

    def set_drain(self, agent_id: str, draining: bool, grace: float | None) -> RegistryState:
        prior = self.admitted.get(agent_id)
        if prior is None:
            return self
        entry = replace(prior, draining=draining, drain_grace=grace if draining else None)
        return replace(self, admitted={**self.admitted, agent_id: entry})

    def set_maintenance(self, windows: list[Json], down: set[str]) -> RegistryState:
        return replace(self, maintenance=tuple(windows), down_machines=frozenset(down))

    # --- codec --------------------------------------------------------------------------

    def to_json(self) -> Json:
        return {
            "format": FORMAT,
            "admitted": {aid: {"info": a.info, "draining": a.draining,
                               "drain_grace": a.drain_grace}
                         for aid, a in sorted(self.admitted.items())},
            "unreachable": dict(sorted(self.unreachable.items())),
            "gone": dict(sorted(self.gone.items())),
            "maintenance": list(self.maintenance),
            "down_machines": sorted(self.down_machines),
        }

    @staticmethod
    def from_json(doc: Any) -> RegistryState:
        """Parse a registry document; ValueError names what is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a localmesos registry (format {FORMAT})")
        admitted: dict[str, AdmittedAgent] = {}
        for aid, a in _mapping(doc, "admitted").items():
            if not isinstance(a, dict) or not isinstance(a.get("info"), dict):
                raise ValueError(f"registry: admitted agent {aid!r} has no info")
            grace = a.get("drain_grace")
            admitted[str(aid)] = AdmittedAgent(
                a["info"], bool(a.get("draining")),
                float(grace) if isinstance(grace, int | float) else None)
        maintenance = doc.get("maintenance", [])
        down = doc.get("down_machines", [])
        if not isinstance(maintenance, list) or not isinstance(down, list):
            raise ValueError("registry: 'maintenance' and 'down_machines' must be lists")
        return RegistryState(admitted, _times(doc, "unreachable"), _times(doc, "gone"),
                             tuple(w for w in maintenance if isinstance(w, dict)),
                             frozenset(str(m) for m in down))


class Registry:
    """The registry file: every change is written whole (temp file + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = RegistryState()
        self.writes = 0

    def reset(self) -> None:
        """A fresh cluster: an empty registry, whatever an earlier run left behind."""
        self.state = RegistryState()
        self._write()

    def apply(self, state: RegistryState) -> None:
        if state != self.state:
            self.state = state
            self._write()

    def recover(self) -> RegistryState:
        """What a newly elected master reads back (Registrar::recover)."""
        return RegistryState.from_json(json.loads(self.path.read_text()))

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), separators=(",", ":")))
        os.replace(tmp, self.path)
        self.writes += 1


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key} if key in d else d


def _mapping(doc: Json, key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"registry: {key!r} must be an object")
    return value


def _times(doc: Json, key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for aid, t in _mapping(doc, key).items():
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise ValueError(f"registry: {key} time of {aid!r} is not a number")
        out[str(aid)] = float(t)
    return out
