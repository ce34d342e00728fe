"""The localmesos command line: ``run`` a cluster, or poke a running one.

``main(argv)`` is what ``python -m corral.localmesos`` and ``corral localmesos`` call.
``run`` (the default) prints exactly one line, ``localmesos master at http://127.0.0.1:PORT``,
to stdout when ready and logs to stderr; SIGINT/SIGTERM stop it, killing every process it
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
               "reactivate")


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
    p.add_argument("--heartbeat-interval", type=float, default=d.heartbeat_interval)
    p.add_argument("--agent-health-timeout", type=float, default=d.agent_health_timeout)
    p.add_argument("--allocation-interval", type=float, default=d.allocation_interval)
    p.add_argument("--offer-timeout", type=float, default=None)
    p.add_argument("--status-update-retry", type=float, default=d.status_update_retry)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-max-mb", type=float, default=d.log_max_mb,
                   help="rotate a container's stdout/stderr past this size (default "
                        "%(default)s MB, as Mesos' logrotate container logger)")
    p.add_argument("--log-keep", type=int, default=d.log_keep,
                   help="rotated stdout/stderr copies kept (default %(default)s)")
    p.add_argument("--disk-watch-interval", type=float, default=d.disk_watch_interval,
                   help="seconds between checks of a container's sandbox against its disk "
                        "resource (default %(default)s)")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localmesos",
                                     description="A single-machine Mesos master and agents.")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub.add_parser("run", help="run a master and agents (default)"))

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
    control("agents", "list agents", agent=False)
    return parser


def _config(ns: argparse.Namespace) -> LocalMesosConfig:
    return LocalMesosConfig(
        port=ns.port, agents=ns.agents, cpus=ns.cpus, mem=ns.mem, disk=ns.disk, gpus=ns.gpus,
        ports=ns.ports, attributes=ns.attributes, spot=ns.spot, zk=ns.zk,
        heartbeat_interval=ns.heartbeat_interval, agent_health_timeout=ns.agent_health_timeout,
        allocation_interval=ns.allocation_interval, work_dir=ns.work_dir, quiet=ns.quiet,
        offer_timeout=ns.offer_timeout, status_update_retry=ns.status_update_retry,
        seed=ns.seed, log_max_mb=ns.log_max_mb, log_keep=ns.log_keep,
        disk_watch_interval=ns.disk_watch_interval)


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
    print(f"localmesos master at {lm.master_url}", flush=True)
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
            print(f"{a['id']}  {a['name']}  port={a['port']}  state={a['state']}"
                  f"{' draining' if a['draining'] else ''}  cpus={res['cpus']} "
                  f"mem={res['mem']}  market={a['attributes'].get('market', '')}")
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
