"""``corral scheduler``: run one scheduler replica in the foreground.

It subscribes to the Mesos master, serves the gRPC job API, and stops cleanly on
SIGINT/SIGTERM. When ready it prints one line, ``corral scheduler API at HOST:PORT``,
so scripts (and ``corral demo``) can find a port chosen with ``--api 127.0.0.1:0``.
Stopping a scheduler does not tear the framework down: its tasks keep running and a
restarted scheduler (same framework id, within the failover timeout) adopts them.

Jobs are sized by the elastic policy (``core.elastic``) unless ``--no-elastic``;
``--policy FILE`` gives it role weights, guarantees, limits and knobs.

With ``--zk zk://host:port[,host:port]/root`` it runs as one of several replicas
(``runtime.replica``): the elected leader subscribes and acts, the others answer the API
with the leader's address. SIGTERM on the leader hands leadership over at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys

from corral.runtime.service import RuntimeConfig, SchedulerService, default_executor_command

log = logging.getLogger("corral.scheduler")


def build_parser(prog: str = "corral scheduler") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a Corral scheduler replica: subscribe to Mesos and serve the job API.",
    )
    p.add_argument(
        "--master", default=os.environ.get("CORRAL_MASTER", "http://127.0.0.1:5050"),
        help="Mesos master: http://host:port or zk://host:port[,host:port]/mesos "
             "(env CORRAL_MASTER; default %(default)s)",
    )
    p.add_argument(
        "--api", default=os.environ.get("CORRAL_API", "127.0.0.1:7070"),
        help="address for the gRPC job API; port 0 picks a free one (default %(default)s)",
    )
    p.add_argument("--name", default="corral", help="Mesos framework name (default corral)")
    p.add_argument("--mesos-role", default="*", help="Mesos role to subscribe with (default *)")
    p.add_argument("--user", default=None, help="Unix user tasks run as (default: current user)")
    p.add_argument(
        "--failover-timeout", type=float, default=7 * 24 * 3600.0,
        help="seconds Mesos keeps our tasks while no scheduler is connected (default 1 week)",
    )
    p.add_argument(
        "--executor-command", default=None,
        help=f"command agents run as Corral's executor (default: {default_executor_command()})",
    )
    p.add_argument(
        "--zk", default=os.environ.get("CORRAL_ZK"),
        help="run as an HA replica: ZooKeeper ensemble and root, "
             "zk://host:port[,host:port]/corral (env CORRAL_ZK; default: single replica)",
    )
    p.add_argument(
        "--identity", default=None,
        help="this replica's unique name among the replicas (default HOSTNAME-APIPORT)",
    )
    p.add_argument(
        "--zk-session-timeout", type=float, default=10.0,
        help="ZooKeeper session timeout in seconds: how long a dead leader goes unnoticed "
             "(default %(default)s)",
    )
    p.add_argument(
        "--zk-connect-timeout", type=float, default=30.0,
        help="seconds to keep retrying ZooKeeper at start-up (default %(default)s)",
    )
    g = p.add_argument_group("policy")
    g.add_argument(
        "--policy", metavar="FILE", default=os.environ.get("CORRAL_POLICY"),
        help="YAML policy file: role weights, guarantees and limits, and policy knobs "
             "(see docs/policy.md; env CORRAL_POLICY; default: every role weighs 1)",
    )
    g.add_argument(
        "--no-elastic", dest="elastic", action="store_false",
        help="keep every job at the worker count it asks for (changed only by "
             "`corral scale`); default: size jobs by load, fair share and deadline",
    )
    g.add_argument(
        "--overprovision", type=float, default=1.0, metavar="MULTIPLE",
        help="spare workers per job = most terminations seen within the replacement lead "
             "time x MULTIPLE; 0 turns it off; a job's label overprovision=M overrides "
             "(default %(default)s)",
    )
    g.add_argument(
        "--spread-attribute", default="market", metavar="ATTR",
        help="agent attribute a job's workers spread over when its spec names none, so "
             "one spot market's reclaim takes a fraction of a job; '' for none "
             "(default %(default)s)",
    )
    g.add_argument(
        "--usage-interval", type=float, default=5.0, metavar="SECONDS",
        help="how often executors report a task's CPU and memory use (what right-sizing "
             "measures; default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def policy_settings(args: argparse.Namespace, config: RuntimeConfig) -> str | None:
    """Apply the policy options to ``config``; an error message if one is bad."""
    from corral.core.policyfile import PolicyFileError
    from corral.yamlfile import load_policy_file

    if not (args.overprovision >= 0 and math.isfinite(args.overprovision)):
        return f"--overprovision must be a number >= 0, got {args.overprovision}"
    if not (0.1 <= args.usage_interval <= 3600):
        return f"--usage-interval must be between 0.1 and 3600 seconds, got {args.usage_interval}"
    config.usage_interval = args.usage_interval
    config.elastic = args.elastic
    config.overprovision = args.overprovision
    config.spread_attribute = args.spread_attribute or None
    if args.policy:
        try:
            config.policy = load_policy_file(args.policy)
        except PolicyFileError as exc:
            return str(exc)
    return None


async def _until_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _advertised(api: str, port: int) -> str:
    host = api.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.getfqdn()
    return f"{host}:{port}"


async def serve_replica(args: argparse.Namespace, config: RuntimeConfig) -> int:
    """HA mode: serve the API at once (followers redirect), contend for leadership."""
    from corral.api.server import start_api_server
    from corral.runtime.replica import Replica
    from corral.store import DuplicateIdentity, StoreError, ZooKeeperUnavailable, parse_zk_url

    try:
        parse_zk_url(args.zk)
    except ValueError as exc:
        print(f"corral scheduler: bad --zk: {exc}", file=sys.stderr)
        return 2
    replica = Replica(config, args.zk, "", session_timeout=args.zk_session_timeout,
                      connect_within=args.zk_connect_timeout)
    try:
        server, port = await start_api_server(replica, args.api)
    except Exception as exc:
        print(f"corral scheduler: cannot serve the API on {args.api}: {exc}", file=sys.stderr)
        return 2
    replica.api_address = _advertised(args.api, port)
    replica.identity = args.identity or f"{socket.gethostname()}-{port}"
    log.info("connecting to ZooKeeper at %s as replica %s", args.zk, replica.identity)
    try:
        await replica.start()
    except (ZooKeeperUnavailable, DuplicateIdentity, StoreError, ValueError) as exc:
        print(f"corral scheduler: {exc}", file=sys.stderr)
        await server.stop(grace=0)
        return 2
    print(f"corral scheduler API at {replica.api_address}", flush=True)

    await _until_stop_signal()
    log.info("stopping: handing leadership over")
    # Stop acting and resign first, so the next replica can take over while we close.
    await replica.stop()
    await server.stop(grace=0.5)
    return 0


async def serve(args: argparse.Namespace) -> int:
    from corral.api.server import start_api_server

    config = RuntimeConfig(
        master=args.master, framework_name=args.name, mesos_role=args.mesos_role,
        failover_timeout=args.failover_timeout,
    )
    if args.user:
        config.user = args.user
    if args.executor_command:
        config.executor_command = args.executor_command
    bad = policy_settings(args, config)
    if bad:
        print(f"corral scheduler: {bad}", file=sys.stderr)
        return 2
    if args.zk:
        return await serve_replica(args, config)
    service = SchedulerService(config)
    try:
        server, port = await start_api_server(service, args.api)
    except Exception as exc:  # grpc raises RuntimeError on a busy port
        print(f"corral scheduler: cannot serve the API on {args.api}: {exc}", file=sys.stderr)
        return 2
    await service.start()
    host = args.api.rsplit(":", 1)[0]
    print(f"corral scheduler API at {host}:{port}", flush=True)
    log.info("subscribing to Mesos at %s", args.master)

    await _until_stop_signal()
    log.info("stopping")
    await server.stop(grace=1.0)
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
