"""The ``corral`` command: submit and manage jobs over the gRPC API, and start the parts.

Job commands talk to the API at ``--api`` (or ``CORRAL_API``, or ``api`` in the config
file ``~/.config/corral/config.yaml``; default 127.0.0.1:7070; several replicas as
``a:7070,b:7070``): ``submit``, ``jobs``, ``status``, ``watch``, ``kill``, ``scale``,
``leader``, and ``history`` and ``cost`` (the scheduler's job history and cost ledger);
``--json`` prints machine-readable output instead of tables (drawn with ``rich``;
``watch`` on a terminal is a live progress bar). Credentials: ``--token`` /
``CORRAL_TOKEN``, ``--ca-file``, ``--cert-file``/``--key-file``, ``--tls``,
or the config file (``corral.api.clientconfig``). ``corral token`` makes a bearer token
and prints the line for the scheduler's auth file. The commands ``scheduler``,
``localmesos``, ``demo``, ``sim`` and ``executor-artifact`` hand the rest of the command
line, unparsed, to the module that owns them, imported only when used so the CLI works
without them.

Exit codes: 0 success; 1 the job or request failed (not found, conflict, a watched job
that did not finish); 2 bad input or the API cannot be reached; 3 an internal error;
130 interrupted. Errors are one-line messages on stderr, never tracebacks (set
``CORRAL_DEBUG=1`` to see the traceback of an internal error).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

JOB_HELP = ("the job's key, role/environment/name as `corral jobs` lists it; role/name is "
            "short for role/default/name")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Subcommands owned by other modules: name -> (module, help).
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "scheduler": ("corral.runtime.main", "run a scheduler replica (see `corral scheduler --help`)"),
    "localmesos": ("corral.localmesos.cli", "run a local Mesos master and agents"),
    "demo": ("corral.localcluster.demo",
             "run the end-to-end demo (--chaos: while spot machines are taken away)"),
    "sim": ("corral.sim.cli", "run the scheduling simulator"),
    "executor-artifact": ("corral.artifact",
                          "write the executor zipapp agents fetch (for --executor-uri)"),
}


class CliError(Exception):
    """A user-facing failure: ``lines`` go to stderr, then exit with ``code``."""

    def __init__(self, code: int, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.code = code
        self.lines = lines


# ---------------------------------------------------------------------------- parsing


def _build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the subcommand; on the subcommands
    # their defaults are SUPPRESS so a value given before the subcommand is not reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=argparse.SUPPRESS, metavar="HOST:PORT[,...]",
                        help="the Corral API address, or several replicas' comma-separated "
                             "(env CORRAL_API, config `api`, default 127.0.0.1:7070)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of tables")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="per-call deadline over all replicas (default 10)")
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="config file (env CORRAL_CONFIG, default "
                             "~/.config/corral/config.yaml)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (env CORRAL_TOKEN, config `token`)")
    common.add_argument("--ca-file", default=argparse.SUPPRESS, metavar="FILE",
                        help="CA certificate(s) to verify the scheduler with; turns on TLS "
                             "(env CORRAL_CA_FILE, config `ca_file`)")
    common.add_argument("--cert-file", default=argparse.SUPPRESS, metavar="FILE",
                        help="client certificate for mutual TLS (config `cert_file`)")
    common.add_argument("--key-file", default=argparse.SUPPRESS, metavar="FILE",
                        help="the client certificate's key (config `key_file`)")
    common.add_argument("--tls", action="store_true", default=argparse.SUPPRESS,
                        help="use TLS trusting the system's CAs (config `tls: true`)")

    p = argparse.ArgumentParser(
        prog="corral", parents=[common],
        description="Corral: distributed batch ML jobs on Mesos.",
        epilog="JOB is a job's key, role/environment/name; role/name is short for "
               "role/default/name. Exit codes: 0 ok, 1 failed / not found, 2 bad input or "
               "API unreachable. A walkthrough: docs/tutorial.md.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("submit", parents=[common], help="submit a job from a YAML file")
    s.add_argument("file", metavar="FILE.yaml")
    s.add_argument("--request-id", help="idempotency key; resubmitting with it is safe "
                   "(default: a fresh random id)")
    s = sub.add_parser("jobs", parents=[common], help="list jobs")
    s.add_argument("--role", help="only jobs of this role")
    s = sub.add_parser("status", parents=[common], help="show a job, its target and tasks")
    s.add_argument("job", metavar="JOB", help=JOB_HELP)
    s = sub.add_parser("watch", parents=[common],
                       help="follow a job's progress until it ends (exit 0 if FINISHED)")
    s.add_argument("job", metavar="JOB", help=JOB_HELP)
    s = sub.add_parser("kill", parents=[common],
                       help="kill every task of a job; it ends KILLED (a job that already "
                            "ended is an error, exit 1)")
    s.add_argument("job", metavar="JOB", help=JOB_HELP)
    s = sub.add_parser("scale", parents=[common], help="set a job's desired worker count")
    s.add_argument("job", metavar="JOB", help=JOB_HELP)
    s.add_argument("workers", metavar="N", type=int,
                   help="desired workers, within the spec's workers.min..workers.max")
    sub.add_parser("leader", parents=[common], help="print the address of the leading scheduler")
    s = sub.add_parser("history", parents=[common],
                       help="finished jobs from the scheduler's job history, newest first")
    s.add_argument("--role", help="only jobs of this role")
    s.add_argument("--since", metavar="WHEN", help="finished within this long (2d, 36h, "
                   "90m) or since this time (seconds since the epoch)")
    s.add_argument("--state", type=str.upper, choices=("FINISHED", "FAILED", "KILLED"),
                   help="only jobs that ended so")
    s.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    s = sub.add_parser("cost", parents=[common],
                       help="what each role spent: finished jobs plus running ones")
    s.add_argument("--role", help="only this role")
    s.add_argument("--since", metavar="WHEN", help="finished jobs within this long (7d) "
                   "or since this time; running jobs always count (default: all time)")
    sub.add_parser("token", parents=[common],
                   help="make a new bearer token and print it with its auth-file line")
    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def _passthrough(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """If argv (after global options) names a pass-through command, return it and the rest."""
    i = 0
    valued = ("--api", "--timeout", "--config", "--token", "--ca-file", "--cert-file",
              "--key-file")
    while i < len(argv):
        a = argv[i]
        if a in valued:
            i += 2
        elif a.startswith(tuple(f"{v}=" for v in valued)) or a in ("--json", "--tls"):
            i += 1
        elif a in PASSTHROUGH:
            return a, list(argv[i + 1:])
        else:
            return None
    return None


def _run_passthrough(name: str, rest: list[str]) -> int:
    module_name = PASSTHROUGH[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only a missing target module means "not installed"; a missing import inside it
        # is a real error and gets reported as internal.
        if e.name and module_name.startswith(e.name):
            raise CliError(EXIT_USAGE, f"corral {name} is not available in this installation "
                           f"({module_name} is missing)") from None
        raise
    rc = module.main(rest)
    return rc if isinstance(rc, int) else EXIT_OK


# ------------------------------------------------------------------------- formatting


def normalize_key(job: str) -> str:
    """``role/name`` means ``role/default/name``; anything else is used as given."""
    parts = job.strip().strip("/").split("/")
    return f"{parts[0]}/default/{parts[1]}" if len(parts) == 2 else job.strip()


def _ago(then: float, now: float) -> str:
    s = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def _pct(done: int, total: int) -> str:
    return f"{100 * done / total:.0f}%" if total > 0 else "-"


def _running_workers(view: Any) -> int:
    from corral.core.summary import running_workers

    return running_workers(view)


def _console(out: TextIO) -> Any:
    """A rich console on ``out``: colours on a terminal; plain, unwrapped text elsewhere
    (scripts and tests read it line by line)."""
    from rich.console import Console

    tty = out.isatty()
    return Console(file=out, width=None if tty else 10_000, no_color=not tty,
                   color_system="auto" if tty else None, highlight=False, markup=False,
                   emoji=False, soft_wrap=not tty)


def _table(rows: list[list[str]], out: TextIO) -> None:
    """The first row is the header; drawn with rich (no borders, two spaces apart)."""
    from rich.table import Table
    from rich.text import Text

    console = _console(out)
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False,
                  header_style="bold" if out.isatty() else "", expand=False)
    for h in rows[0]:
        table.add_column(Text(h), no_wrap=True)
    for r in rows[1:]:
        table.add_row(*(Text(c) for c in r))
    with console.capture() as cap:
        console.print(table)
    for line in cap.get().splitlines():
        out.write(line.rstrip() + "\n")


def _print_jobs(summaries: list[Any], out: TextIO) -> None:
    if not summaries:
        out.write("no jobs\n")
        return
    now = time.time()
    rows = [["KEY", "STATE", "WORKERS", "PROGRESS", "AGE"]]
    for v in sorted(summaries, key=lambda v: v.key):
        p = v.progress
        prog = f"{p.done}/{p.total} {_pct(p.done, p.total)}" if p.total else "-"
        rows.append([v.key, v.state.value, f"{v.running_workers}/{v.desired_workers}", prog,
                     _ago(v.submitted_at, now)])
    _table(rows, out)


def _print_status(v: Any, out: TextIO) -> None:
    now = time.time()
    w = v.spec.workers
    p = v.progress
    out.write(f"job        {v.key}  (version {v.version}, request {v.request_id or '-'})\n")
    out.write(f"state      {v.state.value}" + (f"  {v.message}" if v.message else "") + "\n")
    out.write(f"tier       {v.spec.tier.value}, priority {v.spec.priority}\n")
    if v.spec.kind.value != "command":
        out.write(f"kind       {v.spec.kind.value}"
                  + (f", driver: {v.spec.driver}" if v.spec.driver else "") + "\n")
    out.write(f"workers    running {_running_workers(v)}, target {v.desired_workers} "
              f"(min {w.min}, max {w.max})"
              + (f": {v.target_reason}" if v.target_reason else "") + "\n")
    out.write(f"progress   {p.done}/{p.total} ({_pct(p.done, p.total)}), backlog {p.backlog}, "
              f"rerun {p.rerun}\n")
    out.write(f"submitted  {_ago(v.submitted_at, now)} ago\n")
    if v.finished_at is not None:
        out.write(f"finished   {_ago(v.finished_at, now)} ago\n")
    _print_resilience(v, out)
    _print_cost(v, out)
    _print_policy(v, out, now)
    if not v.tasks:
        out.write("\nno tasks yet\n")
        return
    out.write("\n")
    rows = [["SLOT", "STATE", "ATTEMPT", "HOST", "TASK ID", "WHY"]]
    from corral.core.views import render_why

    for t in v.tasks:
        pending = render_why(t.why, now) if t.state == "PENDING" else None
        why = pending or " ".join(x for x in (t.reason, t.message) if x)
        state = t.state + (" (revocable)" if t.revocable else "")
        rows.append([t.slot, state, str(t.attempt), t.hostname or "-", t.task_id or "-",
                     why or "-"])
    _table(rows, out)


def _print_resilience(v: Any, out: TextIO) -> None:
    """Losses to the infrastructure, what they cost, and the spare workers kept."""
    r = getattr(v, "resilience", None)
    if r is None:
        return
    if r.losses:
        mean = r.recovery_seconds_total / r.recoveries if r.recoveries else 0.0
        out.write(f"losses     {r.losses}, recovered {r.recoveries} "
                  f"(mean {mean:.2f}s, max {r.recovery_seconds_max:.2f}s), "
                  f"work lost {r.work_lost_seconds:.1f}s\n")
    else:
        out.write("losses     none\n")
    if r.spare_workers or r.spare_reason:
        out.write(f"spare      {r.spare_workers}"
                  + (f": {r.spare_reason}" if r.spare_reason else "") + "\n")
    for x in r.recent[-5:]:
        took = "recovering" if x.recovery_seconds is None else f"back in {x.recovery_seconds:.2f}s"
        came = ("; it came back and was killed (the replacement kept the slot)"
                if x.returned_at is not None else "")
        out.write(f"  {x.kind:<11} {x.slot:<10} {x.task_id}  lost {x.work_lost_seconds:.1f}s, "
                  f"{took}{came}\n")


def _money(x: float, currency: str = "") -> str:
    return f"{x:,.2f}" + (f" {currency}" if currency else "")


def _print_cost(v: Any, out: TextIO) -> None:
    """What the job cost (with the scheduler's --prices)."""
    c = getattr(v, "cost", None)
    if c is None:
        return
    out.write(f"cost       {_money(c.total, c.currency)}: useful {_money(c.useful)}, lost "
              f"{_money(c.lost)}, checkpoints {_money(c.checkpoint)}, idle spares "
              f"{_money(c.spare)}; all on-demand {_money(c.on_demand)}, saved "
              f"{_money(c.savings)}\n")


def _since(text: str | None) -> float | None:
    from corral.observe.history import BadQuery, parse_since

    try:
        return parse_since(text, time.time())
    except BadQuery as e:
        raise CliError(EXIT_USAGE, f"--{e}") from None


def _cmd_history(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    jobs = client.history(args.role, _since(args.since), args.state, args.limit)
    if args.json:
        _dump(jobs, out)
        return EXIT_OK
    if not jobs:
        out.write("no finished jobs\n")
        return EXIT_OK
    now = time.time()
    rows = [["KEY", "STATE", "FINISHED", "RAN", "TASKS", "LOSSES", "COST", "MESSAGE"]]
    for j in jobs:
        ran = (j["finished_at"] or j["submitted_at"]) - j["submitted_at"]
        c = j["cost"]
        rows.append([j["key"], j["state"], _ago(j["finished_at"] or now, now) + " ago",
                     _ago(now - ran, now), str(j["tasks"]), str(j["losses"]),
                     _money(c["total"], c["currency"]) if c else "-", j["message"][:80]])
    _table(rows, out)
    return EXIT_OK


def _cmd_cost(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    roles, with_history = client.cost_report(args.role, _since(args.since))
    if args.json:
        _dump({"history": with_history, "roles": roles}, out)
        return EXIT_OK
    if not roles:
        out.write("no jobs\n")
        return EXIT_OK
    rows = [["ROLE", "FINISHED", "RUNNING", "TOTAL", "USEFUL", "LOST", "CHECKPOINTS",
             "IDLE SPARES", "ON-DEMAND", "SAVED"]]
    for r in roles:
        c = r["cost"]
        rows.append([r["role"], str(r["finished_jobs"]), str(r["running_jobs"]),
                     _money(c["total"], c["currency"]), _money(c["useful"]),
                     _money(c["lost"]), _money(c["checkpoint"]), _money(c["spare"]),
                     _money(c["on_demand"]), _money(c["savings"])])
    _table(rows, out)
    if not with_history:
        out.write("(no job history on this scheduler: finished jobs are only those it "
                  "still holds)\n")
    if roles and not roles[0]["cost"]["currency"]:
        out.write("(the scheduler has no price table (--prices): amounts are 0)\n")
    return EXIT_OK


def _print_policy(v: Any, out: TextIO, now: float) -> None:
    """The size new workers get and the workers the policy preempted or retired, why."""
    p = getattr(v, "policy", None)
    if p is None:
        return
    if p.size_reason:
        out.write(f"sizing     {p.size_reason}\n")
    if p.preempted or p.retired:
        out.write(f"stopped    {p.preempted} preempted, {p.retired} retired by the policy\n")
    for a in p.recent[-5:]:
        out.write(f"  {a.kind:<11} {a.slot:<10} {a.task_id}  {_ago(a.at, now)} ago: "
                  f"{a.why}\n")


def _line(v: Any) -> str:
    """One watch line: progress, state and workers."""
    p = v.progress
    return (f"{_pct(p.done, p.total):>4} {p.done}/{p.total}  {v.state.value}  workers "
            f"{_running_workers(v)}/{v.desired_workers}")


class _LiveProgress:
    """``corral watch`` on a terminal: a rich progress bar redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
            TimeElapsedColumn(), console=_console(out), transient=False)
        self.task: Any = None

    def __enter__(self) -> _LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, v: Any) -> None:
        p = v.progress
        if self.task is None:
            self.task = self.progress.add_task(v.key, total=max(p.total, 1), text="")
        self.progress.update(self.task, completed=p.done, total=max(p.total, 1),
                             text=_line(v))


def _dump(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, sort_keys=True) + "\n")


def _show(args: argparse.Namespace, view: Any, out: TextIO,
          human: Callable[[Any, TextIO], object]) -> int:
    """One job view: its JSON with ``--json``, else what ``human`` writes."""
    if args.json:
        from corral.api.convert import view_to_dict

        _dump(view_to_dict(view), out)
    else:
        human(view, out)
    return EXIT_OK


# --------------------------------------------------------------------------- commands


def _load_spec_file(path: str) -> Any:
    import yaml

    from corral.core.spec import SpecError, parse_job_spec

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CliError(EXIT_USAGE, f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise CliError(EXIT_USAGE, f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_job_spec(data)
    except SpecError as e:
        raise CliError(EXIT_USAGE, f"{path}: invalid job spec:",
                       *(f"  {fe}" for fe in e.errors)) from None


def _cmd_submit(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    spec = args.spec
    view = client.submit(spec, args.request_id or f"cli-{uuid.uuid4()}")
    return _show(args, view, out, lambda v, o: o.write(v.key + "\n"))


def _cmd_jobs(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    summaries = client.list(args.role)  # every page
    if args.json:
        from corral.api.convert import summary_to_dict

        _dump([summary_to_dict(v) for v in summaries], out)
    else:
        _print_jobs(summaries, out)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    return _show(args, client.get(args.key), out, _print_status)


def _cmd_watch(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    from corral.api.convert import view_to_dict

    tty = out.isatty() and not args.json
    last = None
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(_LiveProgress(out)) if tty else None
        for view in client.watch(args.key):
            last = view
            if args.json:
                _dump(view_to_dict(view), out)
            elif live is not None:
                live.update(view)
            else:
                out.write(_line(view) + "\n")
            out.flush()
    if last is None or not last.state.terminal:
        # The server ends the stream only after a terminal state; anything else is a cut.
        raise CliError(EXIT_FAILED, f"the watch of {args.key} ended before the job did")
    if not args.json:
        out.write(f"{last.key} {last.state.value}" + (f": {last.message}" if last.message
                                                      else "") + "\n")
    return EXIT_OK if last.state.value == "FINISHED" else EXIT_FAILED


def _cmd_kill(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    return _show(args, client.kill(args.key), out, lambda v, o: o.write(
        f"{v.key}: kill requested, state {v.state.value}\n"))


def _cmd_scale(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    return _show(args, client.scale(args.key, args.workers), out, lambda v, o: o.write(
        f"{v.key}: desired workers {v.desired_workers}\n"))


def _cmd_leader(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    leader = client.leader()
    if args.json:
        _dump({"leader": leader, "asked": client.asked}, out)
    else:
        out.write(leader + "\n")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Any, TextIO], int]] = {
    "submit": _cmd_submit, "jobs": _cmd_jobs, "status": _cmd_status, "watch": _cmd_watch,
    "kill": _cmd_kill, "scale": _cmd_scale, "leader": _cmd_leader,
    "history": _cmd_history, "cost": _cmd_cost,
}


def _api_error(e: Any, args: argparse.Namespace) -> CliError:
    from corral.api.client import ErrorKind

    asked = e.address
    if e.kind is ErrorKind.UNREACHABLE:
        where = asked if len(e.tried) < 2 else "any of " + ", ".join(e.tried)
        return CliError(EXIT_USAGE, f"cannot reach the Corral API at {where} (is `corral "
                        "scheduler` running? set --api or CORRAL_API)")
    if e.kind is ErrorKind.INVALID:
        lines = e.lines
        if lines and lines[0].rstrip(":") == "invalid request":
            lines = lines[1:]
        return CliError(EXIT_USAGE, "the API rejected the request:", *(f"  {ln}" for ln in lines))
    if e.kind is ErrorKind.NOT_FOUND:
        return CliError(EXIT_FAILED, f"no job named {getattr(args, 'key', '?')}")
    if e.kind is ErrorKind.TIMEOUT:
        return CliError(EXIT_USAGE, f"the Corral API at {asked} did not answer in time")
    if e.kind is ErrorKind.NO_LEADER:
        return CliError(EXIT_USAGE, f"{asked}: {e.message}")
    if e.kind is ErrorKind.FAILOVER:
        return CliError(EXIT_USAGE, e.message)
    if e.kind is ErrorKind.UNAUTHENTICATED:
        return CliError(EXIT_USAGE, f"{asked}: {e.message} (set --token, CORRAL_TOKEN or "
                        "the config file's token)")
    if e.kind is ErrorKind.DENIED:
        return CliError(EXIT_FAILED, f"permission denied: {e.message}")
    if e.kind is ErrorKind.QUOTA:
        return CliError(EXIT_FAILED, f"over quota: {e.message}")
    return CliError(EXIT_FAILED, e.message)


def _cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    from corral.api.auth import hash_token, new_token

    token = new_token()
    if args.json:
        _dump({"token": token, "token_sha256": hash_token(token)}, out)
    else:
        out.write(f"token:        {token}\n"
                  f"token_sha256: {hash_token(token)}   # for the scheduler's auth file\n")
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    """A ``JobClient`` from the flags, environment and config file."""
    from corral.api.client import JobClient
    from corral.api.clientconfig import ConfigError, resolve
    from corral.api.security import TlsError, channel_credentials

    flags = {k: getattr(args, k, None) for k in
             ("api", "token", "ca_file", "cert_file", "key_file", "tls")}
    try:
        settings = resolve(flags, os.environ, getattr(args, "config", None))
        tls = channel_credentials(settings.ca_file, settings.cert_file, settings.key_file) \
            if settings.tls else None
    except (ConfigError, TlsError) as e:
        raise CliError(EXIT_USAGE, str(e)) from None
    return JobClient(settings.addresses, timeout=args.timeout, tls=tls, token=settings.token)


def run(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Run one command; raises ``CliError`` for user-facing failures."""
    pt = _passthrough(argv)
    if pt is not None:
        return _run_passthrough(*pt)
    args = _build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", 10.0)
    if args.timeout <= 0:
        raise CliError(EXIT_USAGE, "--timeout must be positive")
    if getattr(args, "limit", 1) < 1:
        raise CliError(EXIT_USAGE, "--limit must be at least 1")
    if args.command == "token":
        return _cmd_token(args, out)
    if hasattr(args, "job"):
        args.key = normalize_key(args.job)
    if args.command == "submit":
        # Validate locally first so every bad field shows at once, even with no API up.
        args.spec = _load_spec_file(args.file)

    from corral.api.client import ApiError

    with _client(args) as client:
        try:
            return COMMANDS[args.command](args, client, out)
        except ApiError as e:
            raise _api_error(e, args) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run(argv)
    except CliError as e:
        for line in e.lines:
            print(line if line.startswith(" ") else f"corral: {line}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("corral: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `corral jobs | head`: the reader left; nothing more to say.
        return EXIT_OK
    except Exception as e:
        if os.environ.get("CORRAL_DEBUG"):
            traceback.print_exc()
        print(f"corral: internal error: {type(e).__name__}: {e} "
              "(set CORRAL_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
