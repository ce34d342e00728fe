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

On a real cluster (docs/operations.md): ``--http HOST:PORT`` serves the executor as a
zipapp that agents' fetchers download (or ``--executor-uri URL`` names a copy hosted
elsewhere), so agents need only ``python3``; ``--principal``/``--secret-file``
authenticate the framework; ``--master-ca-file`` checks an ``https://`` master. Mesos
refusing the credentials ends the process with exit code 2 and a message saying so.

Security (``api_security``): ``--tls-cert/--tls-key`` serve TLS, ``--client-ca`` requires
client certificates, ``--auth-file`` requires every call to authenticate and limits each
principal to its roles. Without an auth file the API is open, so it may only listen on a
loopback address unless ``--insecure``; with one but without TLS, tokens would cross the
network in clear text, which also needs ``--insecure`` off loopback. The start-up log says
which mode the API runs in.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.runtime.gcpolicy import GcPolicy
from corral.runtime.service import RuntimeConfig, SchedulerService, default_executor_command

if TYPE_CHECKING:
    from corral.http import HttpServer

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
    g = p.add_argument_group("real clusters: executor shipping, credentials, TLS")
    g.add_argument(
        "--http", metavar="HOST:PORT", default=os.environ.get("CORRAL_HTTP"),
        help="serve plain HTTP here: the executor artifact agents fetch at "
             "/executor/<sha256>/corral-executor.pyz (env CORRAL_HTTP; default: off)",
    )
    g.add_argument(
        "--http-advertise", metavar="URL", default=os.environ.get("CORRAL_HTTP_ADVERTISE"),
        help="base URL (or host) agents reach --http at; without a port, the bound one "
             "(default http://HOST:PORT, this machine's name for a wildcard HOST)",
    )
    g.add_argument(
        "--executor-uri", metavar="URL", default=os.environ.get("CORRAL_EXECUTOR_URI"),
        help="where agents fetch the executor artifact (`corral executor-artifact` writes "
             "it); wins over --http (env CORRAL_EXECUTOR_URI). Without this or --http, "
             "agents must have Corral installed at this interpreter's path",
    )
    g.add_argument(
        "--executor-python", default="python3",
        help="interpreter (>= 3.11) agents run the fetched executor with (default python3)",
    )
    g.add_argument(
        "--no-executor-cache", dest="executor_cache", action="store_false",
        help="do not let the fetcher cache the executor (use with an --executor-uri whose "
             "content changes without its URL changing)",
    )
    g.add_argument(
        "--principal", default=os.environ.get("CORRAL_PRINCIPAL"),
        help="Mesos framework principal, sent in FrameworkInfo and, with --secret-file, "
             "as HTTP Basic credentials on every call (env CORRAL_PRINCIPAL)",
    )
    g.add_argument(
        "--secret-file", metavar="FILE", default=os.environ.get("CORRAL_SECRET_FILE"),
        help="file holding the principal's secret (a trailing newline is ignored; "
             "env CORRAL_SECRET_FILE)",
    )
    g.add_argument(
        "--master-ca-file", metavar="FILE", default=os.environ.get("CORRAL_MASTER_CA_FILE"),
        help="PEM CA certificates to check an https:// master against; with a zk:// "
             "master, the masters found are spoken to over https (env "
             "CORRAL_MASTER_CA_FILE; default for https://: the system's CAs)",
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
    g = p.add_argument_group("security (see docs/operations.md)")
    g.add_argument("--tls-cert", metavar="FILE", help="serve the API over TLS with this "
                   "PEM certificate (chain)")
    g.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    g.add_argument("--client-ca", metavar="FILE", help="require every client to present a "
                   "certificate signed by these PEM CAs (mutual TLS)")
    g.add_argument("--auth-file", metavar="FILE", default=os.environ.get("CORRAL_AUTH_FILE"),
                   help="YAML principals (hashed bearer tokens, certificate subjects) and "
                        "the roles each may act for; without it the API is open "
                        "(env CORRAL_AUTH_FILE)")
    g.add_argument("--insecure", action="store_true",
                   help="allow an open API, or tokens without TLS, on a non-loopback address")
    g.add_argument("--checkpoint-prefix", action="append", default=[], metavar="URI",
                   help="jobs' checkpoint.uri must lie under one of these (repeatable; "
                        "default: anywhere allowed)")
    g = p.add_argument_group("observation: metrics, web UI, job history, costs "
                             "(docs/operations.md)")
    g.add_argument("--prices", metavar="FILE", default=os.environ.get("CORRAL_PRICES"),
                   help="YAML price table per market and resource-hour: jobs and roles "
                        "accumulate cost (env CORRAL_PRICES; default: no money shown)")
    g.add_argument("--history", metavar="URL", default=os.environ.get("CORRAL_HISTORY"),
                   help="job history database: sqlite:///path/history.db or "
                        "postgresql://user@host:5432/db (env CORRAL_HISTORY; default: none)")
    g.add_argument("--history-backlog", type=int, default=100_000, metavar="N",
                   help="job records kept in memory while the history database is "
                        "unavailable; beyond, the oldest are dropped (default %(default)s)")
    g.add_argument(
        "--usage-interval", type=float, default=5.0, metavar="SECONDS",
        help="how often executors report a task's CPU and memory use (what right-sizing "
             "measures; default %(default)s)",
    )
    p.add_argument(
        "--gc-full-every", type=float, default=3600.0, metavar="SECONDS",
        help="freeze the long-lived heap so Python's garbage collector does not walk the "
             "whole state in an event, and collect it whole this often (default "
             "%(default)s; 0: Python's defaults; see docs/operations.md)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def is_loopback(api: str) -> bool:
    """Whether HOST of ``api`` (HOST:PORT) is a loopback address."""
    import ipaddress

    host = api.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_security(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """``start_api_server`` keyword arguments from the security options, or an error."""
    from corral.api.auth import AuthFileError, parse_auth
    from corral.api.security import TlsError, server_credentials
    from corral.core.checkpoints import uri_problem
    from corral.runtime.checkpoint_check import CheckpointCheck
    from corral.yamlfile import read_yaml_file

    if bool(args.tls_cert) != bool(args.tls_key):
        return {}, "--tls-cert and --tls-key go together"
    if args.client_ca and not args.tls_cert:
        return {}, "--client-ca needs --tls-cert and --tls-key"
    for prefix in args.checkpoint_prefix:
        problem = uri_problem(prefix)
        if problem:
            return {}, f"--checkpoint-prefix {prefix!r}: {problem}"
    out: dict[str, Any] = {"submit_checks": (CheckpointCheck(args.checkpoint_prefix),)}
    try:
        if args.tls_cert:
            out["credentials"] = server_credentials(
                Path(args.tls_cert), Path(args.tls_key),
                Path(args.client_ca) if args.client_ca else None)
        if args.auth_file:
            data = read_yaml_file(args.auth_file, "auth file", AuthFileError)
            try:
                out["auth"] = parse_auth(data)
            except AuthFileError as e:
                raise AuthFileError(f"{args.auth_file}: {e}") from None
    except (TlsError, AuthFileError) as e:
        return {}, str(e)
    local = is_loopback(args.api)
    if not args.auth_file and not local and not args.insecure:
        return {}, (f"refusing to serve an open API on {args.api}: without --auth-file anyone "
                    "who reaches it may list, kill and scale every job. Give --auth-file, "
                    "listen on a loopback address, or pass --insecure")
    if args.auth_file and not args.tls_cert and not local and not args.insecure:
        return {}, (f"refusing to take bearer tokens in clear text on {args.api}: give "
                    "--tls-cert/--tls-key, listen on a loopback address, or pass --insecure")
    tls = "TLS" + (" with client certificates" if args.client_ca else "") \
        if args.tls_cert else "no TLS"
    # Said once the API listens (so a busy port stays a one-line error).
    if args.auth_file:
        out["mode"] = f"API authentication on ({args.auth_file}); {tls}"
    else:
        out["mode"] = ("API is OPEN (no --auth-file): every caller may act for every role; "
                       f"{tls}" + ("" if local else "; --insecure on a non-loopback address"))
    return out, None


def _server_options(security: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``start_api_server`` takes, from ``api_security``'s."""
    return {k: v for k, v in security.items() if k != "mode"}


def _say_mode(security: dict[str, Any]) -> None:
    """Log the API's security mode, once it listens."""
    mode = security.get("mode")
    if mode:
        (log.info if "authentication on" in mode else log.warning)("%s", mode)


def observe_settings(args: argparse.Namespace, config: RuntimeConfig) -> str | None:
    """Apply --prices and --history to ``config`` (its ``prices`` and ``observer``); an
    error message if one is bad."""
    from corral.core.cost import PriceFileError, parse_prices
    from corral.observe.history import HistoryError, open_database
    from corral.observe.observer import Observer
    from corral.yamlfile import read_yaml_file

    if args.prices:
        try:
            config.prices = parse_prices(read_yaml_file(args.prices, "price file",
                                                        PriceFileError))
        except PriceFileError as exc:
            return f"--prices {args.prices}: {exc}"
    if config.policy.budgets and config.prices is None:
        return "the policy file sets role budgets, which need --prices"
    db = None
    if args.history:
        try:
            db = open_database(args.history)
        except HistoryError as exc:
            return str(exc)
    if args.history_backlog < 1:
        return "--history-backlog must be at least 1"
    config.observer = Observer(history=db, prices=config.prices,
                               max_backlog=args.history_backlog)
    return None


def policy_settings(args: argparse.Namespace, config: RuntimeConfig) -> str | None:
    """Apply the policy options to ``config``; an error message if one is bad."""
    from corral.core.policyfile import PolicyFileError
    from corral.yamlfile import load_policy_file

    if not (args.overprovision >= 0 and math.isfinite(args.overprovision)):
        return f"--overprovision must be a number >= 0, got {args.overprovision}"
    if not (0.1 <= args.usage_interval <= 3600):
        return f"--usage-interval must be between 0.1 and 3600 seconds, got {args.usage_interval}"
    config.usage_interval = args.usage_interval
    if not (args.gc_full_every == 0 or 60 <= args.gc_full_every <= 7 * 86400):
        return ("--gc-full-every must be 0 (Python's defaults) or between 60 and 604800 "
                f"seconds, got {args.gc_full_every}")
    config.gc = GcPolicy(full_every_s=args.gc_full_every) if args.gc_full_every else None
    config.elastic = args.elastic
    config.overprovision = args.overprovision
    config.spread_attribute = args.spread_attribute or None
    if args.policy:
        try:
            config.policy = load_policy_file(args.policy)
        except PolicyFileError as exc:
            return str(exc)
    return None


MAX_SECRET_BYTES = 4096


def read_secret(path: str) -> str:
    """The secret in ``path`` (one trailing newline dropped); ValueError says why not."""
    try:
        st = os.stat(path)
        if st.st_size > MAX_SECRET_BYTES:
            raise ValueError(f"{path} is larger than {MAX_SECRET_BYTES} bytes")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        secret = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not secret or any(c in secret for c in "\0\r\n"):
        raise ValueError(f"{path} must hold the secret on one line")
    if st.st_mode & 0o077:
        log.warning("%s can be read by other users (mode %o); chmod 600 it",
                    path, st.st_mode & 0o777)
    return secret


def mesos_settings(args: argparse.Namespace, config: RuntimeConfig) -> str | None:
    """Apply credentials and TLS options to ``config``; an error message if one is bad."""
    import ssl

    if args.secret_file and not args.principal:
        return "--secret-file needs --principal"
    if args.principal is not None:
        if not args.principal or ":" in args.principal or not args.principal.isprintable():
            return "--principal must be non-empty, printable and without ':'"
        config.principal = args.principal
    if args.secret_file:
        try:
            config.secret = read_secret(args.secret_file)
        except ValueError as exc:
            return f"--secret-file: {exc}"
    if args.master_ca_file:
        if args.master.strip().startswith("http://"):
            return "--master-ca-file needs an https:// (or zk://) --master"
        try:
            ssl.create_default_context(cafile=args.master_ca_file)
        except (OSError, ssl.SSLError) as exc:
            return f"--master-ca-file: cannot load {args.master_ca_file}: {exc}"
        config.master_ca_file = args.master_ca_file
    return None


def advertised_base(advertise: str | None, server: HttpServer) -> str:
    """The base URL agents use for ``--http``: ``--http-advertise`` (a URL, or a bare
    host), with the bound port filled in where it names none; else the server's own."""
    if not advertise:
        return server.advertise()
    url = advertise.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    scheme, rest = url.split("://", 1)
    hostport = rest.split("/", 1)[0]
    has_port = hostport.rsplit("]", 1)[-1].count(":") == 1 if hostport.startswith("[") \
        else hostport.count(":") == 1
    return url if has_port else f"{scheme}://{hostport}:{server.port}"


async def start_http(args: argparse.Namespace, config: RuntimeConfig,
                     auth: Any = None) -> HttpServer | None:
    """Serve ``--http`` (the executor artifact; with an observer, metrics, health, the
    JSON API and the web UI, authorised by ``auth``) and point the executor at its
    fetched copy (``--http`` or ``--executor-uri``). Returns the server (None without
    --http)."""
    from corral.artifact import build
    from corral.http import HttpServer
    from corral.http.executor import add_routes, executor_setup

    server: HttpServer | None = None
    uri = args.executor_uri
    if uri:
        try:
            executor_setup(uri)
        except ValueError as exc:
            raise ValueError(f"--executor-uri: {exc}") from None
    if args.http:
        artifact = build()
        server = HttpServer()
        add_routes(server, artifact)
        if config.observer is not None:
            from corral.observe.web import add_routes as add_observe_routes

            add_observe_routes(server, config.observer, auth)
        try:
            await server.start(args.http)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot serve --http {args.http}: {exc}") from None
        base = advertised_base(args.http_advertise, server)
        print(f"corral scheduler HTTP at {server.advertise()}", flush=True)
        if not uri:
            uri = base + artifact.versioned_path
    if uri:
        command, uris = executor_setup(uri, python=args.executor_python,
                                       cache=args.executor_cache)
        config.executor_uris = uris
        if not args.executor_command:
            config.executor_command = command
        log.info("agents fetch the executor from %s", uri)
    return server


async def _until_stop_signal(stop: asyncio.Event | None = None) -> None:
    """Return on the first SIGINT or SIGTERM (or when ``stop`` is set)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _api_failure(api: str, exc: Exception) -> str:
    # start_api_server's OSError already names the address and the reason.
    return str(exc) if isinstance(exc, OSError) else f"cannot serve the API on {api}: {exc}"


def _advertised(api: str, port: int) -> str:
    host = api.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.getfqdn()
    return f"{host}:{port}"


async def serve_replica(args: argparse.Namespace, config: RuntimeConfig,
                        stop: asyncio.Event, security: dict[str, Any]) -> int:
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
    if config.observer is not None:
        config.observer.backend = replica
    try:
        server, port = await start_api_server(replica, args.api, observer=config.observer,
                                              **_server_options(security))
    except Exception as exc:
        print(f"corral scheduler: {_api_failure(args.api, exc)}", file=sys.stderr)
        return 2
    _say_mode(security)
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

    await _until_stop_signal(stop)
    log.info("stopping: handing leadership over")
    # Stop acting and resign first, so the next replica can take over while we close.
    await replica.stop()
    await server.stop(grace=0.5)
    return 0


async def serve(args: argparse.Namespace) -> int:
    from corral.mesos.detect import DetectorError, check_master

    try:
        check_master(args.master)
    except DetectorError as exc:
        print(f"corral scheduler: bad --master: {exc}", file=sys.stderr)
        return 2

    config = RuntimeConfig(
        master=args.master, framework_name=args.name, mesos_role=args.mesos_role,
        failover_timeout=args.failover_timeout,
    )
    if args.user:
        config.user = args.user
    if args.executor_command:
        config.executor_command = args.executor_command
    bad = policy_settings(args, config) or mesos_settings(args, config) \
        or observe_settings(args, config)
    security, bad_security = api_security(args)
    bad = bad or bad_security
    if bad:
        print(f"corral scheduler: {bad}", file=sys.stderr)
        return 2
    observer = config.observer
    try:
        if observer is not None:
            observer.start()
        http = await start_http(args, config, security.get("auth"))
    except Exception as exc:
        if observer is not None:
            observer.stop(0)
        print(f"corral scheduler: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    refused: list[str] = []

    def unauthorized(reason: str) -> None:
        refused.append(reason)
        stop.set()

    config.on_unauthorized = unauthorized
    try:
        code = await _serve_scheduler(args, config, stop, security)
    finally:
        if http is not None:
            await http.stop()
        if observer is not None:
            await asyncio.to_thread(observer.stop)
    if refused:
        who = f"principal {config.principal!r}" if config.principal else "no credentials"
        print(f"corral scheduler: Mesos at {args.master} refused {who}: {refused[0]}. "
              "Check --principal and --secret-file (and the master's --credentials).",
              file=sys.stderr)
        return 2
    return code


async def _serve_scheduler(args: argparse.Namespace, config: RuntimeConfig,
                           stop: asyncio.Event, security: dict[str, Any]) -> int:
    from corral.api.server import start_api_server

    if args.zk:
        return await serve_replica(args, config, stop, security)
    service = SchedulerService(config)
    if config.observer is not None:
        config.observer.backend = service
        config.observer.terms_started = 1
    try:
        server, port = await start_api_server(service, args.api, observer=config.observer,
                                              **_server_options(security))
    except Exception as exc:
        print(f"corral scheduler: {_api_failure(args.api, exc)}", file=sys.stderr)
        return 2
    _say_mode(security)
    await service.start()
    host = args.api.rsplit(":", 1)[0]
    print(f"corral scheduler API at {host}:{port}", flush=True)
    log.info("subscribing to Mesos at %s", args.master)

    await _until_stop_signal(stop)
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
