"""The ``corral`` command: submit and manage jobs over the gRPC API, and start the parts.

Job commands talk to the API at ``--api`` (or ``CORRAL_API``, default 127.0.0.1:7070):
``submit``, ``jobs``, ``status``, ``watch``, ``kill``, ``scale`` and ``leader``; ``--json``
prints machine-readable output instead of tables. The commands ``scheduler``,
``localmesos``, ``demo`` and ``sim`` hand the rest of the command line, unparsed, to the
module that owns them, imported only when used so the CLI works without them.

Exit codes: 0 success; 1 the job or request failed (not found, conflict, a watched job
that did not finish); 2 bad input or the API cannot be reached; 3 an internal error;
130 interrupted. Errors are one-line messages on stderr, never tracebacks (set
``CORRAL_DEBUG=1`` to see the traceback of an internal error).
"""

from __future__ import annotations

import argparse
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

DEFAULT_API = "127.0.0.1:7070"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Subcommands owned by other modules: name -> (module, help).
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "scheduler": ("corral.runtime.main", "run a scheduler replica (see `corral scheduler --help`)"),
    "localmesos": ("corral.localmesos.cli", "run a local Mesos master and agents"),
    "demo": ("corral.demo", "run the end-to-end demo"),
    "sim": ("corral.sim.cli", "run the scheduling simulator"),
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
    common.add_argument("--api", default=argparse.SUPPRESS, metavar="HOST:PORT",
                        help=f"the Corral API address (env CORRAL_API, default {DEFAULT_API})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of tables")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="per-call deadline (default 10)")

    p = argparse.ArgumentParser(
        prog="corral", parents=[common],
        description="Corral: distributed batch ML jobs on Mesos.",
        epilog="Exit codes: 0 ok, 1 failed / not found, 2 bad input or API unreachable.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("submit", parents=[common], help="submit a job from a YAML file")
    s.add_argument("file", metavar="FILE.yaml")
    s.add_argument("--request-id", help="idempotency key; resubmitting with it is safe "
                   "(default: a fresh random id)")
    s = sub.add_parser("jobs", parents=[common], help="list jobs")
    s.add_argument("--role", help="only jobs of this role")
    s = sub.add_parser("status", parents=[common], help="show a job, its target and tasks")
    s.add_argument("job", metavar="JOB", help="role/environment/name (or role/name)")
    s = sub.add_parser("watch", parents=[common],
                       help="follow a job's progress until it ends (exit 0 if FINISHED)")
    s.add_argument("job", metavar="JOB")
    s = sub.add_parser("kill", parents=[common], help="kill a job")
    s.add_argument("job", metavar="JOB")
    s = sub.add_parser("scale", parents=[common], help="set a job's desired worker count")
    s.add_argument("job", metavar="JOB")
    s.add_argument("workers", metavar="N", type=int)
    sub.add_parser("leader", parents=[common], help="print the address of the leading scheduler")
    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def _passthrough(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """If argv (after global options) names a pass-through command, return it and the rest."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--api", "--timeout"):
            i += 2
        elif a.startswith(("--api=", "--timeout=")) or a == "--json":
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
    return sum(1 for t in view.tasks if t.slot.startswith("worker") and t.state == "TASK_RUNNING")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _print_jobs(views: list[Any], out: TextIO) -> None:
    if not views:
        out.write("no jobs\n")
        return
    now = time.time()
    rows = [["KEY", "STATE", "WORKERS", "PROGRESS", "AGE"]]
    for v in sorted(views, key=lambda v: v.key):
        p = v.progress
        prog = f"{p.done}/{p.total} {_pct(p.done, p.total)}" if p.total else "-"
        rows.append([v.key, v.state.value, f"{_running_workers(v)}/{v.desired_workers}", prog,
                     _ago(v.submitted_at, now)])
    _table(rows, out)


def _print_status(v: Any, out: TextIO) -> None:
    now = time.time()
    w = v.spec.workers
    p = v.progress
    out.write(f"job        {v.key}  (version {v.version}, request {v.request_id or '-'})\n")
    out.write(f"state      {v.state.value}" + (f"  {v.message}" if v.message else "") + "\n")
    out.write(f"tier       {v.spec.tier.value}, priority {v.spec.priority}\n")
    out.write(f"workers    running {_running_workers(v)}, target {v.desired_workers} "
              f"(min {w.min}, max {w.max})"
              + (f": {v.target_reason}" if v.target_reason else "") + "\n")
    out.write(f"progress   {p.done}/{p.total} ({_pct(p.done, p.total)}), backlog {p.backlog}, "
              f"rerun {p.rerun}\n")
    out.write(f"submitted  {_ago(v.submitted_at, now)} ago\n")
    if v.finished_at is not None:
        out.write(f"finished   {_ago(v.finished_at, now)} ago\n")
    _print_resilience(v, out)
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
        out.write(f"  {x.kind:<11} {x.slot:<10} {x.task_id}  lost {x.work_lost_seconds:.1f}s, "
                  f"{took}\n")


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


def _bar(v: Any, width: int = 30) -> str:
    p = v.progress
    frac = min(1.0, p.done / p.total) if p.total > 0 else 0.0
    filled = int(frac * width)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {_pct(p.done, p.total):>4} "
            f"{p.done}/{p.total}  {v.state.value}  workers {_running_workers(v)}/"
            f"{v.desired_workers}")


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
    views = client.list(args.role)
    if args.json:
        from corral.api.convert import view_to_dict

        _dump([view_to_dict(v) for v in views], out)
    else:
        _print_jobs(views, out)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    return _show(args, client.get(args.key), out, _print_status)


def _cmd_watch(args: argparse.Namespace, client: Any, out: TextIO) -> int:
    from corral.api.convert import view_to_dict

    tty = out.isatty() and not args.json
    last = None
    for view in client.watch(args.key):
        last = view
        if args.json:
            _dump(view_to_dict(view), out)
        elif tty:
            out.write("\r" + _bar(view) + "\x1b[K")
        else:
            out.write(_bar(view) + "\n")
        out.flush()
    if tty:
        out.write("\n")
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
}


def _api_error(e: Any, args: argparse.Namespace) -> CliError:
    from corral.api.client import ErrorKind

    asked = e.address
    if e.kind is ErrorKind.UNREACHABLE:
        return CliError(EXIT_USAGE, f"cannot reach the Corral API at {asked} (is `corral "
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
    return CliError(EXIT_FAILED, e.message)


def run(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Run one command; raises ``CliError`` for user-facing failures."""
    pt = _passthrough(argv)
    if pt is not None:
        return _run_passthrough(*pt)
    args = _build_parser().parse_args(argv)
    args.api = getattr(args, "api", None) or os.environ.get("CORRAL_API") or DEFAULT_API
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", 10.0)
    if args.timeout <= 0:
        raise CliError(EXIT_USAGE, "--timeout must be positive")
    if hasattr(args, "job"):
        args.key = normalize_key(args.job)
    if args.command == "submit":
        # Validate locally first so every bad field shows at once, even with no API up.
        args.spec = _load_spec_file(args.file)

    from corral.api.client import ApiError, JobClient

    with JobClient(args.api, timeout=args.timeout) as client:
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
