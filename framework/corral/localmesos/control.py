"""A blocking client for a running localmesos' own control endpoints (``/localmesos/...``).

The ``corral localmesos`` control commands, ``corral demo --chaos`` and the benchmarks use
it to list agents and inject faults. Errors are ``urllib.error.URLError`` (cannot reach)
and ``urllib.error.HTTPError`` (the call was refused; its body says why).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_TIMEOUT = 10.0


def request(master: str, method: str, path: str, body: dict[str, Any] | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Any:
    """One JSON call to ``master`` (``http://host:port``); returns the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(master.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def agents(master: str) -> list[dict[str, Any]]:
    """One row per agent: id, name (``agent-<n>``), alive, attributes, unavailability..."""
    return list(request(master, "GET", "/localmesos/agents")["agents"])


def agent_action(master: str, agent: str, action: str, body: dict[str, Any] | None = None
                 ) -> Any:
    """``terminate``, ``revocable``, ``qos-kill``, ``drain``, ``reactivate`` or ``partition``
    an agent."""
    path = f"/localmesos/agents/{urllib.parse.quote(agent, safe='')}/{action}"
    return request(master, "POST", path, body or {})


def terminate(master: str, agent: str, notice: float | None = None) -> Any:
    """A spot reclaim: kill at once, or after a maintenance notice of ``notice`` seconds."""
    return agent_action(master, agent, "terminate", {} if notice is None else {"notice": notice})


def add_agent(master: str, **fields: Any) -> str:
    """Start one more agent (fields as ``add-agent``'s flags); returns its id."""
    return str(request(master, "POST", "/localmesos/agents", fields)["agent_id"])


def task_states(master: str) -> dict[str, str]:
    """Task id -> Mesos state for every task the master knows, live or completed."""
    state = request(master, "GET", "/master/state")
    out: dict[str, str] = {}
    for fw in state.get("frameworks", []):
        for group in ("completed_tasks", "unreachable_tasks", "tasks"):
            for t in fw.get(group, []):
                out[str(t["id"])] = str(t["state"])
    return out
