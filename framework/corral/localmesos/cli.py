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

from corral.localmesos import control
from corral.localmesos.cluster import LocalMesos, LocalMesosConfig

DEFAULT_MASTER = "http://127.0.0.1:5050"
SUBCOMMANDS = ("run", "terminate", "add-agent", "revocable", "qos-kill", "drain", "agents",
               "reactivate", "partition", "fail-master", "masters")


def _run_parser(p: argparse.ArgumentParser) -> None:
    d = LocalMesosConfig()
    g = p.add_argument_group("cluster")
    g.add_argument("--port", type=int, default=d.port, help="the master's HTTP port; 0 picks a "
                   "free one (default %(default)s, as Mesos)")
    g.add_argument("--agents", type=int, default=d.agents, help="agents to start "
                   "(default %(default)s)")
    g.add_argument("--spot", type=int, default=d.spot, metavar="N",
                   help="the last N agents are spot capacity, with attributes market:spot "
                        "and spot:true; the others have market:on-demand (default %(default)s)")
    g.add_argument("--cpus", type=float, default=d.cpus, help="cpus per agent "
                   "(default %(default)g)")
    g.add_argument("--mem", type=float, default=d.mem, help="memory per agent in MB "
                   "(default %(default)g)")
    g.add_argument("--disk", type=float, default=d.disk, help="disk per agent in MB "
                   "(default %(default)g)")
    g.add_argument("--gpus", type=float, default=d.gpus, help="GPUs per agent "
                   "(default %(default)g)")
    g.add_argument("--ports", default=d.ports, metavar="LO-HI",
                   help="port range the agents offer, split into equal slices, one per agent, "
                        "since they share one host (default %(default)s, as Mesos)")
    g.add_argument("--attributes", default=d.attributes, metavar="NAME:VALUE;...",
                   help="extra attributes for every agent, e.g. 'zone:a;rack:3' "
                        "(default: none)")
    g.add_argument("--zk", default=None, metavar="zk://HOST:PORT/PATH",
                   help="register the master in this ZooKeeper group, as a Mesos master does "
                        "(default: no ZooKeeper)")
    g.add_argument("--work-dir", default=None, help="where agents keep their sandboxes "
                   "(default: a temporary directory, removed on exit)")
    t = p.add_argument_group(
        "timing", "  Laptop defaults: a terminated agent is lost within seconds; Mesos' own\n"
                  "  master takes 75 s (agent_ping_timeout 15 s x max_agent_ping_timeouts 5).\n"
                  "  --agent-health-timeout 75 behaves like it.")
    t.add_argument("--agent-health-timeout", type=float, default=d.agent_health_timeout,
                   metavar="SECONDS",
                   help="the master pings every agent every SECONDS/5; an agent that misses 5 "
                        "pings in a row is lost and its tasks go TASK_LOST/TASK_UNREACHABLE "
                        "(default %(default)g; Mesos: 75)")
    t.add_argument("--heartbeat-interval", type=float, default=d.heartbeat_interval,
                   metavar="SECONDS", help="HEARTBEAT events on scheduler and executor streams "
                   "(default %(default)g, as Mesos)")
    t.add_argument("--allocation-interval", type=float, default=d.allocation_interval,
                   metavar="SECONDS", help="time between allocation rounds; a REVIVE, a new "
                   "subscription or freed resources also start one (default %(default)g, as "
                   "Mesos)")
    t.add_argument("--offer-timeout", type=float, default=None, metavar="SECONDS",
                   help="rescind offers not answered in time (default: never, as Mesos)")
    t.add_argument("--status-update-retry", type=float, default=d.status_update_retry,
                   metavar="SECONDS", help="an unacknowledged status update is resent after "
                   "SECONDS, doubling up to 10 min (default %(default)g, as Mesos)")
    o = p.add_argument_group("other")
    o.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the allocator's agent order (default %(default)s)")
    o.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    ms = p.add_argument_group("several masters (with --zk)")
    ms.add_argument("--masters", type=int, default=d.masters,
                    help="masters electing a leader in --zk, on ports --port, --port+1, ... "
                         "(default %(default)s)")
    ms.add_argument("--zk-session-timeout", type=float, default=d.zk_session_timeout,
                    metavar="SECONDS", help="each master's ZooKeeper session: how long a "
                    "crashed leader stays leading (default %(default)g)")
    ms.add_argument("--registration-backoff", type=float, default=d.registration_backoff,
                    metavar="SECONDS", help="agents re-register with a new leader after a "
                    "random delay up to this (default %(default)g)")
    ms.add_argument("--agent-reregister-timeout", type=float,
                    default=d.agent_reregister_timeout, metavar="SECONDS",
                    help="after a failover, agents not back by then are unreachable "
                         "(default %(default)g)")
    sc = p.add_argument_group("security and containers (as Mesos' flags of the same names)")
    sc.add_argument("--credentials", metavar="FILE", default=None,
                    help='principals and secrets: {"credentials": [{"principal": ..., '
                         '"secret": ...}]} or one "principal secret" per line '
                         '(default: none)')
    sc.add_argument("--authenticate-http-frameworks", action="store_true",
                    help="schedulers must authenticate (HTTP Basic) with --credentials "
                         "(default: off, as Mesos)")
    sc.add_argument("--authenticate-http-readwrite", action="store_true",
                    help="the operator API (/api/v1, /master/teardown) needs --credentials "
                         "(default: off, as Mesos)")
    sc.add_argument("--no-authenticate-http-executors", dest="authenticate_http_executors",
                    action="store_false",
                    help="let executors call the agent API without their token (default: "
                         "each executor gets a token in MESOS_EXECUTOR_AUTHENTICATION_TOKEN "
                         "and must send it)")
    sc.add_argument("--tls-cert", metavar="PEM", default=None,
                    help="serve the master and agents over https with this certificate "
                         "(default: plain http)")
    sc.add_argument("--tls-key", metavar="PEM", default=None,
                    help="its private key (default: none)")
    sc.add_argument("--tls-ca-file", metavar="PEM", default=None,
                    help="CAs executors check the agents' certificate against "
                         "(default: --tls-cert itself)")
    sc.add_argument("--no-switch-user", dest="switch_user", action="store_false",
                    help="as root, run containers as root instead of the framework's user "
                         "(default: the framework's user, as Mesos)")
    sc.add_argument("--images-on-host", action="store_true",
                    help="run tasks that ask for a container image on the host, saying so in "
                         "their status messages (default: fail them; localmesos has no "
                         "containerizer)")
    sc.add_argument("--fetcher-cache-size", type=int, default=d.fetcher_cache_size,
                    metavar="BYTES", help="fetcher cache capacity per agent (default 2 GiB, "
                    "as Mesos)")
    sc.add_argument("--executor-environment-variables", metavar="JSON", default=None,
                    help='the environment executors and tasks start from, e.g. '
                         '\'{"PATH": "/usr/bin:/bin"}\' (default: localmesos\' own)')
    sc.add_argument("--fetcher-stall-timeout", type=float, default=d.fetcher_stall_timeout,
                    metavar="SECONDS", help="a download making no progress this long fails "
                    "(default %(default)g s)")
    sb = p.add_argument_group("sandbox (real Mesos uses isolators; see docs/localmesos.md)")
    sb.add_argument("--log-max-mb", type=float, default=d.log_max_mb,
                    help="rotate a container's stdout/stderr past this size (default "
                         "%(default)s MB, as Mesos' logrotate container logger)")
    sb.add_argument("--log-keep", type=int, default=d.log_keep,
                    help="rotated stdout/stderr copies kept (default %(default)s)")
    sb.add_argument("--disk-watch-interval", type=float, default=d.disk_watch_interval,
                    help="seconds between checks of a container's sandbox against its disk "
                         "resource (default %(default)s)")



CONTROL_EPILOG = """control a running localmesos (each takes --master URL, default http://127.0.0.1:5050):
  agents                       list agents
  terminate AGENT [--notice S] spot reclaim: kill at once, or after S seconds of notice
  add-agent [--spot ...]       start one more agent
  drain AGENT / reactivate AGENT
  revocable AGENT --cpus X     set an agent's oversubscription estimate
  qos-kill AGENT               QoS-kill revocable executors on an agent
  partition AGENT --seconds S  cut an agent off from the masters for S seconds
  masters / fail-master        list the masters / crash the leading one (--masters N)
`corral localmesos COMMAND --help` tells more. See docs/localmesos.md."""


def build_parser(prog: str = "corral localmesos") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="A single-machine Mesos master and agents (Mesos 1.11 v1 "
        "HTTP APIs). `run` is the default command.",
        epilog=CONTROL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub.add_parser(
        "run", help="run a master and agents (the default command)",
        description="Run a Mesos master and agents in this process until SIGINT/SIGTERM.\n"
                    "When ready it prints one line: localmesos master at URL.",
        epilog=CONTROL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))

    def control(name: str, help_text: str, agent: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--master", default=DEFAULT_MASTER,
                       help="the localmesos master's URL (default %(default)s)")
        if agent:
            p.add_argument("agent", metavar="AGENT",
                           help="agent id, agent-<n> name, or index n (see `agents`)")
        return p

    p = control("terminate", "kill an agent like a spot reclaim")
    p.add_argument("--notice", type=float, default=None, metavar="SECONDS",
                   help="give a maintenance notice (an inverse offer, a window from now) and "
                        "kill after SECONDS (default: kill at once, no notice)")
    p = control("add-agent", "start one more agent", agent=False)
    for name in ("cpus", "mem", "disk", "gpus"):
        p.add_argument(f"--{name}", type=float, default=None,
                       help=f"{name} of the new agent (default: as `run` was given)")
    p.add_argument("--ports", default=None, help="its port range (default: the next slice)")
    p.add_argument("--attributes", default=None, help="its extra attributes, NAME:VALUE;...")
    p.add_argument("--spot", action="store_true", help="make it spot capacity")
    p = control("revocable", "set an agent's revocable (oversubscription) estimate")
    for name in ("cpus", "mem", "disk", "gpus"):
        p.add_argument(f"--{name}", type=float, default=0.0,
                       help=f"revocable {name} (default 0)")
    p = control("qos-kill", "QoS-kill revocable executors on an agent")
    p.add_argument("--executor", default=None,
                   help="only this executor id (default: every revocable one)")
    p = control("drain", "drain an agent: no new offers, its tasks are killed after the grace")
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="kill grace for its tasks (default: each task's own)")
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
        seed=ns.seed, credentials=ns.credentials,
        authenticate_http_frameworks=ns.authenticate_http_frameworks,
        authenticate_http_readwrite=ns.authenticate_http_readwrite,
        authenticate_http_executors=ns.authenticate_http_executors,
        tls_cert=ns.tls_cert, tls_key=ns.tls_key, tls_ca_file=ns.tls_ca_file,
        switch_user=ns.switch_user, images_on_host=ns.images_on_host,
        fetcher_cache_size=ns.fetcher_cache_size,
        fetcher_stall_timeout=ns.fetcher_stall_timeout,
        executor_environment_variables=ns.executor_environment_variables,
        log_max_mb=ns.log_max_mb, log_keep=ns.log_keep,
        disk_watch_interval=ns.disk_watch_interval, masters=ns.masters,
        zk_session_timeout=ns.zk_session_timeout,
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


def _control(ns: argparse.Namespace) -> int:
    cmd = ns.command
    if cmd == "agents":
        for a in control.agents(ns.master):
            res = a["resources"]
            cut = " partitioned" if a.get("partitioned_until") else ""
            print(f"{a['id']}  {a['name']}  port={a['port']}  state={a['state']}"
                  f"{' draining' if a['draining'] else ''}{cut}  cpus={res['cpus']} "
                  f"mem={res['mem']}  market={a['attributes'].get('market', '')}")
        return 0
    if cmd == "masters":
        out = control.request(ns.master, "GET", "/localmesos/masters")
        for m in out["masters"]:
            role = "leading" if m["leading"] else ("up" if m["alive"] else "down")
            print(f"{m['url']}  {role}  id={m['id'] or '-'}  node={m['node'] or '-'}")
        return 0
    if cmd == "fail-master":
        body = {"restart_after": None if ns.no_restart else ns.restart_after}
        print(json.dumps(control.request(ns.master, "POST", "/localmesos/masters/fail", body)))
        return 0
    if cmd == "add-agent":
        body = {k: getattr(ns, k) for k in ("cpus", "mem", "disk", "gpus", "ports",
                                            "attributes") if getattr(ns, k) is not None}
        print(control.add_agent(ns.master, spot=ns.spot, **body))
        return 0
    if cmd == "terminate":
        out = control.terminate(ns.master, ns.agent, ns.notice)
    elif cmd == "revocable":
        out = control.agent_action(ns.master, ns.agent, "revocable", {
            "cpus": ns.cpus, "mem": ns.mem, "disk": ns.disk, "gpus": ns.gpus})
    elif cmd == "qos-kill":
        body = {} if ns.executor is None else {"executor_id": ns.executor}
        out = control.agent_action(ns.master, ns.agent, "qos-kill", body)
    elif cmd == "drain":
        body = {} if ns.grace is None else {"grace": ns.grace}
        out = control.agent_action(ns.master, ns.agent, "drain", body)
    elif cmd == "partition":
        out = control.agent_action(ns.master, ns.agent, "partition", {"seconds": ns.seconds})
    else:
        out = control.agent_action(ns.master, ns.agent, "reactivate")
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None, prog: str = "corral localmesos") -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        args = ["run", *args]  # also for --help: `run` is what most want to read about
    parser = build_parser(prog)
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:
        return int(e.code or 0)
    if ns.command == "run":
        try:
            config = _config(ns)
            config.validate()
            config.load_credentials()
            config.server_ssl()
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
