"""The master's maintenance book: machine modes, the schedule's rules, the status. Pure.

Follows ``src/master/maintenance.cpp`` and the maintenance handlers of
``src/master/http.cpp`` (Mesos 1.11): a machine named in the schedule is DRAINING (a new
one) until START_MAINTENANCE brings it DOWN; STOP_MAINTENANCE brings a DOWN machine UP,
which removes it from the machines and from the schedule. The checks and their messages
(each a 400 Bad Request):

* a MachineID needs a hostname or an IPv4 ip; a list of machines must be non-empty and
  without repeats;
* UPDATE_MAINTENANCE_SCHEDULE: every window has machines and a non-negative duration, a
  machine is in one window only, and a DOWN machine may not leave the schedule;
* START_MAINTENANCE: each machine is scheduled and DRAINING;
* STOP_MAINTENANCE: each machine is scheduled and DOWN.

GET_MAINTENANCE_STATUS lists the DRAINING machines with the inverse-offer answers of the
frameworks on their agents (``InverseOfferStatus``: UNKNOWN until ACCEPT or DECLINE), and
the DOWN machines.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
MachineKey = tuple[str, str]  # (hostname, ip) as given: Mesos compares MachineIDs exactly

DRAINING = "DRAINING"
DOWN = "DOWN"


class MaintenanceError(ValueError):
    """A maintenance call Mesos answers with 400 and this message."""


def key_of(machine: Mapping[str, Any]) -> MachineKey:
    return (str(machine.get("hostname") or ""), str(machine.get("ip") or ""))


def machine_json(key: MachineKey) -> Json:
    out: Json = {}
    if key[0]:
        out["hostname"] = key[0]
    if key[1]:
        out["ip"] = key[1]
    return out


def _text(key: MachineKey) -> str:
    return json.dumps(machine_json(key), separators=(",", ":"))


def check_machine(machine: Any) -> MachineKey:
    if not isinstance(machine, dict):
        raise MaintenanceError("A machine must be an object with 'hostname' and/or 'ip'")
    for name in ("hostname", "ip"):
        if name in machine and not isinstance(machine[name], str):
            raise MaintenanceError(f"A machine's '{name}' must be a string")
    key = key_of(machine)
    if not key[0] and not key[1]:
        raise MaintenanceError("Both 'hostname' and 'ip' for a machine are empty")
    if key[1]:
        try:
            ipaddress.IPv4Address(key[1])
        except ValueError:
            raise MaintenanceError(f"Failed to parse IP '{key[1][:64]}'") from None
    return key


def _add_unique(keys: list[MachineKey], machine: Any) -> None:
    key = check_machine(machine)
    if key in keys:
        raise MaintenanceError(f"Machine '{_text(key)}' appears more than once in the schedule")
    keys.append(key)


def check_machines(machines: Any) -> list[MachineKey]:
    if not isinstance(machines, list) or not machines:
        raise MaintenanceError("List of machines is empty")
    keys: list[MachineKey] = []
    for m in machines:
        _add_unique(keys, m)
    return keys


def _nanos(d: Any) -> int | None:
    if not isinstance(d, dict) or "nanoseconds" not in d:
        return None
    try:
        return int(d["nanoseconds"])
    except (TypeError, ValueError):
        raise MaintenanceError("'nanoseconds' must be an integer") from None


@dataclass
class Book:
    """Machine modes and the schedule (the master's ``machines`` and ``maintenance``)."""

    modes: dict[MachineKey, str] = field(default_factory=dict)
    windows: list[Json] = field(default_factory=list)

    def update_schedule(self, windows: Any) -> None:
        """UPDATE_MAINTENANCE_SCHEDULE: validate, then new machines DRAIN, removed go UP."""
        if not isinstance(windows, list):
            raise MaintenanceError("Expecting 'schedule.windows' to be a list")
        updated: list[MachineKey] = []
        for window in windows:
            if not isinstance(window, dict):
                raise MaintenanceError("A maintenance window must be an object")
            ids = window.get("machine_ids")
            if not isinstance(ids, list) or not ids:
                raise MaintenanceError("List of machines in the maintenance window is empty")
            unavailability = window.get("unavailability")
            if not isinstance(unavailability, dict) or _nanos(
                    unavailability.get("start")) is None:
                raise MaintenanceError("A maintenance window needs 'unavailability.start'")
            duration = _nanos(unavailability.get("duration"))
            if duration is not None and duration < 0:
                raise MaintenanceError("Unavailability 'duration' is negative")
            for m in ids:
                _add_unique(updated, m)
        for key, mode in self.modes.items():
            if mode == DOWN and key not in updated:
                raise MaintenanceError(f"Machine '{_text(key)}' is deactivated and cannot be "
                                       "removed from the schedule")
        self.modes = {k: self.modes.get(k, DRAINING) for k in updated}
        self.windows = windows

    def _require(self, keys: Iterable[MachineKey], mode: str, verb: str) -> None:
        for key in keys:
            if key not in self.modes:
                raise MaintenanceError(f"Machine '{_text(key)}' is not part of a maintenance "
                                       "schedule")
            if self.modes[key] != mode:
                raise MaintenanceError(f"Machine '{_text(key)}' is not in {mode} mode and "
                                       f"cannot be {verb}")

    def start(self, machines: Any) -> list[MachineKey]:
        """START_MAINTENANCE: DRAINING machines go DOWN."""
        keys = check_machines(machines)
        self._require(keys, DRAINING, "brought down")
        for key in keys:
            self.modes[key] = DOWN
        return keys

    def stop(self, machines: Any) -> list[MachineKey]:
        """STOP_MAINTENANCE: DOWN machines come UP and leave the schedule."""
        keys = check_machines(machines)
        self._require(keys, DOWN, "brought up")
        for key in keys:
            del self.modes[key]
        kept = []
        for window in self.windows:
            ids = [m for m in window.get("machine_ids", []) if key_of(m) not in keys]
            if ids:
                kept.append({**window, "machine_ids": ids})
        self.windows = kept
        return keys

    def is_down(self, key: MachineKey) -> bool:
        return self.modes.get(key) == DOWN

    def status(self, statuses: Mapping[MachineKey, list[Json]]) -> Json:
        """GET_MAINTENANCE_STATUS's ``status`` (``statuses``: per DRAINING machine, the
        InverseOfferStatus of each framework on its agents)."""
        draining = [{"id": machine_json(k), "statuses": list(statuses.get(k, []))}
                    for k, mode in self.modes.items() if mode == DRAINING]
        down = [machine_json(k) for k, mode in self.modes.items() if mode == DOWN]
        out: Json = {}
        if draining:
            out["draining_machines"] = draining
        if down:
            out["down_machines"] = down
        return out
