"""The localmesos command line: ``run`` a cluster, or poke a running one.

``main(argv)`` is what ``python -m corral.localmesos`` and ``corral localmesos`` call.
``run`` (the default) prints exactly one line, ``localmesos master at http://127.0.0.1:PORT``
(the leading master; with ``--masters N`` followed by ``(masters: URL ...)``), to stdout
when ready and logs to stderr; SIGINT/SIGTERM stop it, killing every process it
started. The control subcommands talk to the ``/localmesos/...`` endpoints of ``--master``.
Errors print one line to stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from corral.localmesos.cluster import LocalMesos, LocalMesosConfig

DEFAULT_MASTER = "http://127.0.0.1:5050"
SUBCOMMANDS = ("run", "terminate", "add-agent", "revocable", "qos-kill", "drain", "agents",
               "reactivate", "partition", "fail-master", "masters")


def _run_parser(p: argparse.ArgumentParser) -> None:
    d = LocalMesosConfig()
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--agents", type=int, default=d.agents)
    p.add_argument("--cpus", type=float, default=d.cpus)
    p.add_argument("--mem", type=float, default=d.mem)
    p.add_argument("--disk", type=float, default=d.disk)
    p.add_argument("--gpus", type=float, default=d.gpus)
    p.add_argument("--ports", default=d.ports)
    p.add_argument("--attributes", default=d.attributes)
    p.add_argument("--spot", type=int, default=d.spot,
                   help="the last N agents are spot (market:spot, spot:true)")
    p.add_argument("--zk", default=None, help="zk://host:port/path to register in")
    p.add_argument("--masters", type=int, default=d.masters,
                   help="masters electing a leader in --zk (ports --port, --port+1, ...)")
    p.add_argument("--zk-session-timeout", type=float, default=d.zk_session_timeout,
                   help="each master's ZooKeeper session: how long a crashed leader "
                        "stays leading")
    p.add_argument("--registration-backoff", type=float, default=d.registration_backoff,
                   help="agents re-register with a new leader after a random delay "
                        "up to this")
    p.add_argument("--agent-reregister-timeout", type=float,
                   default=d.agent_reregister_timeout,
                   help="after a failover, agents not back by then are unreachable")
    p.add_argument("--heartbeat-interval", type=float, default=d.heartbeat_interval)
    p.add_argument("--agent-health-timeout", type=float, default=d.agent_health_timeout)
    p.add_argument("--allocation-interval", type=float, default=d.allocation_interval)
    p.add_argument("--offer-timeout", type=float, default=None)
    p.add_argument("--status-update-retry", type=float, default=d.status_update_retry)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localmesos",
                                     description="A single-machine Mesos master and agents.")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub.add_parser("run", help="run the master(s) and agents (default)"))

    def control(name: str, help_text: str, agent: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--master", default=DEFAULT_MASTER)
        if agent:
            p.add_argument("agent", help="agent id, agent-<n> name, or index")
        return p

    p = control("terminate", "kill an agent like a spot reclaim")
    p.add_argument("--notice", type=float, default=None,
                   help="seconds of maintenance notice before the kill")
    p = control("add-agent", "start one more agent", agent=False)
    for name in ("cpus", "mem", "disk", "gpus"):
        p.add_argument(f"--{name}", type=float, default=None)
    p.add_argument("--ports", default=None)
    p.add_argument("--attributes", default=None)
    p.add_argument("--spot", action="store_true")
    p = control("revocable", "set an agent's revocable (oversubscription) estimate")
    for name in ("cpus", "mem", "disk", "gpus"):
        p.add_argument(f"--{name}", type=float, default=0.0)
    p = control("qos-kill", "QoS-kill revocable executors on an agent")
    p.add_argument("--executor", default=None)
    p = control("drain", "drain an agent")
    p.add_argument("--grace", type=float, default=None)
    control("reactivate", "offer a drained agent again")
    p = control("partition", "cut an agent off from the masters; its tasks keep running")
    p.add_argument("--seconds", type=float, required=True,
                   help="how long until the partition heals")
    p = control("fail-master", "crash the leading master", agent=False)
    p.add_argument("--restart-after", type=float, default=1.0,
                   help="seconds after its ZooKeeper node is gone until it restarts "
                        "(default 1)")
    p.add_argument("--no-restart", action="store_true", help="leave it down")
    control("masters", "list masters", agent=False)
    control("agents", "list agents", agent=False)
    return parser


def _config(ns: argparse.Namespace) -> LocalMesosConfig:
    return LocalMesosConfig(
        port=ns.port, agents=ns.agents, cpus=ns.cpus, mem=ns.mem, disk=ns.disk, gpus=ns.gpus,
        ports=ns.ports, attributes=ns.attributes, spot=ns.spot, zk=ns.zk,
        heartbeat_interval=ns.heartbeat_interval, agent_health_timeout=ns.agent_health_timeout,
        allocation_interval=ns.allocation_interval, work_dir=ns.work_dir, quiet=ns.quiet,
        offer_timeout=ns.offer_timeout, status_update_retry=ns.status_update_retry,
        seed=ns.seed, masters=ns.masters, zk_session_timeout=ns.zk_session_timeout,
        registration_backoff=ns.registration_backoff,
        agent_reregister_timeout=ns.agent_reregister_timeout)


async def _serve(config: LocalMesosConfig) -> int:
    lm = LocalMesos(config)
    atexit.register(lm.kill_all_now)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await lm.start()
    except Exception as e:  # a port in use, ZooKeeper unreachable, ...
        await lm.stop()
        print(f"localmesos: cannot start: {e}", file=sys.stderr)
        return 1
    others = f" (masters: {' '.join(lm.master_urls)})" if config.masters > 1 else ""
    print(f"localmesos master at {lm.master_url}{others}", flush=True)
    try:
        await stop.wait()
    finally:
        logging.getLogger("localmesos").info("stopping")
        await lm.stop()
    return 0


def _request(master: str, method: str, path: str, body: dict[str, Any] | None = None
             ) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(master.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def _control(ns: argparse.Namespace) -> int:
    cmd = ns.command
    if cmd == "agents":
        out = _request(ns.master, "GET", "/localmesos/agents")
        for a in out["agents"]:
            res = a["resources"]
            cut = " partitioned" if a.get("partitioned_until") else ""
            print(f"{a['id']}  {a['name']}  port={a['port']}  state={a['state']}"
                  f"{' draining' if a['draining'] else ''}{cut}  cpus={res['cpus']} "
                  f"mem={res['mem']}  market={a['attributes'].get('market', '')}")
        return 0
    if cmd == "masters":
        out = _request(ns.master, "GET", "/localmesos/masters")
        for m in out["masters"]:
            role = "leading" if m["leading"] else ("up" if m["alive"] else "down")
            print(f"{m['url']}  {role}  id={m['id'] or '-'}  node={m['node'] or '-'}")
        return 0
    if cmd == "fail-master":
        body = {"restart_after": None if ns.no_restart else ns.restart_after}
        print(json.dumps(_request(ns.master, "POST", "/localmesos/masters/fail", body)))
        return 0
    if cmd == "add-agent":
        body = {k: getattr(ns, k) for k in ("cpus", "mem", "disk", "gpus", "ports",
                                            "attributes") if getattr(ns, k) is not None}
        body["spot"] = ns.spot
        out = _request(ns.master, "POST", "/localmesos/agents", body)
        print(out["agent_id"])
        return 0
    path = f"/localmesos/agents/{urllib.request.quote(ns.agent, safe='')}"
    if cmd == "terminate":
        body = {} if ns.notice is None else {"notice": ns.notice}
        out = _request(ns.master, "POST", path + "/terminate", body)
    elif cmd == "revocable":
        out = _request(ns.master, "POST", path + "/revocable",
                       {"cpus": ns.cpus, "mem": ns.mem, "disk": ns.disk, "gpus": ns.gpus})
    elif cmd == "qos-kill":
        body = {} if ns.executor is None else {"executor_id": ns.executor}
        out = _request(ns.master, "POST", path + "/qos-kill", body)
    elif cmd == "drain":
        body = {} if ns.grace is None else {"grace": ns.grace}
        out = _request(ns.master, "POST", path + "/drain", body)
    elif cmd == "partition":
        out = _request(ns.master, "POST", path + "/partition", {"seconds": ns.seconds})
    else:
        out = _request(ns.master, "POST", path + "/reactivate", {})
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
        args = ["run", *args]
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:
        return int(e.code or 0)
    if ns.command == "run":
        try:
            config = _config(ns)
            config.validate()
        except ValueError as e:
            print(f"localmesos: {e}", file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.WARNING if ns.quiet else logging.INFO,
                            stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            return asyncio.run(_serve(config))
        except KeyboardInterrupt:
            return 130
    try:
        return _control(ns)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        print(f"localmesos: {ns.command} failed: HTTP {e.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"localmesos: cannot reach {ns.master}: {e}", file=sys.stderr)
        return 1
