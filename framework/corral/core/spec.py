"""Parse and validate a job spec from plain data (YAML, JSON, or a proto as a dict).

Validation collects every problem, each naming the offending field by its dotted path
(``workers.max``), so a user fixes a spec in one pass. Unknown keys are errors too: a
misspelt ``chekpoint`` silently ignored would lose a user's work.

Everything a spec accepts must also be storable and runnable: names match in full,
free-form strings have size limits and no control characters, and the whole spec fits
its share of a ZooKeeper znode (``corral.core.limits``); checkpoint URIs follow
``corral.core.checkpoints``. Errors are bounded: at most ``MAX_ERRORS`` are listed, and
user input echoed in a field name is escaped and cut.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

from corral.core import limits as lim
from corral.core.checkpoints import uri_problem
from corral.core.model import (
    NAME_RE,
    Constraints,
    JobSpec,
    RestartPolicy,
    TaskTemplate,
    Tier,
    WorkerPool,
    WorkloadKind,
)
from corral.core.resources import Resources

ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SpecError(ValueError):
    """A job spec is invalid; ``errors`` names each bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _Checker:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.dropped = 0  # problems past MAX_ERRORS: counted, not listed

    def err(self, path: str, msg: str) -> None:
        if len(self.errors) < lim.MAX_ERRORS:
            self.errors.append(FieldError(path, msg))
        else:
            self.dropped += 1

    def all_errors(self) -> list[FieldError]:
        if not self.dropped:
            return self.errors
        return [*self.errors, FieldError("spec", f"... and {self.dropped} more problems")]

    def mapping(self, data: Any, path: str, allowed: AbstractSet[str]) -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.err(path or "spec", "must be a mapping")
            return {}
        for k in data:
            if k not in allowed:
                shown = lim.shown(str(k))
                where = f"{path}.{shown}" if path else shown
                self.err(where, f"unknown field (expected one of: {', '.join(sorted(allowed))})")
        return data

    def name(self, data: Mapping[str, Any], key: str, path: str) -> str:
        v = data.get(key)
        if v is None:
            self.err(path, "is required")
            return ""
        if not isinstance(v, str) or not NAME_RE.fullmatch(v):
            self.err(path, "must be 1-63 characters of a-z, 0-9, '-' or '_', starting alphanumeric")
            return ""
        return v

    def number(
        self, data: Mapping[str, Any], key: str, path: str, default: float,
        lo: float = 0.0, hi: float = float("inf"), integer: bool = False,
    ) -> float:
        v = data.get(key, default)
        if v is None:
            v = default
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.err(path, f"must be a number, got {type(v).__name__}")
            return default
        if integer and int(v) != v:
            self.err(path, "must be a whole number")
            return default
        if not lo <= v <= hi:
            self.err(path, f"must be between {lo:g} and {hi:g}, got {v:g}")
            return default
        return int(v) if integer else float(v)

    def string_map(self, data: Any, path: str, max_entries: int = lim.LABEL_MAX_ENTRIES,
                   key_max: int = lim.MAP_KEY_MAX, value_max: int = lim.MAP_VALUE_MAX,
                   multiline_values: bool = False) -> tuple[tuple[str, str], ...]:
        """A mapping of strings with at most ``max_entries`` entries, keys and values
        within their lengths and free of control characters (values may hold tab and
        newline if ``multiline_values``)."""
        if data is None:
            return ()
        if not isinstance(data, Mapping):
            self.err(path, "must be a mapping of strings")
            return ()
        if len(data) > max_entries:
            self.err(path, f"has {len(data)} entries; the limit is {max_entries}")
            return ()
        out = []
        for k, v in data.items():
            bad_value = not isinstance(v, str | int | float) or isinstance(v, bool)
            where = f"{path}.{lim.shown(str(k))}"
            if not isinstance(k, str) or bad_value:
                self.err(where, "keys and values must be strings")
                continue
            problem = lim.text_problem(k, key_max)
            if problem:
                self.err(where, f"key {problem}")
                continue
            problem = lim.text_problem(str(v), value_max, multiline=multiline_values)
            if problem:
                self.err(where, f"value {problem}")
                continue
            out.append((k, str(v)))
        return tuple(sorted(out))

    def text(self, value: str, path: str, max_chars: int, multiline: bool = False) -> bool:
        """Check a free-form string's length and characters; False (and an error) if bad."""
        problem = lim.text_problem(value, max_chars, multiline=multiline)
        if problem:
            self.err(path, problem)
        return problem is None


_TASK_KEYS = {"command", "cpus", "mem", "disk", "gpus", "ports", "env", "image"}


def _task(c: _Checker, data: Any, path: str, extra: AbstractSet[str] = frozenset(),
          command: str = "required") -> TaskTemplate:
    """A task template; ``command`` is "required", "optional" or the kind that writes
    it (then the user may not set it)."""
    d = c.mapping(data, path, _TASK_KEYS | extra)
    if data is None:
        c.err(path, "is required")
    cmd = d.get("command")
    if command not in ("required", "optional"):
        if cmd is not None:
            c.err(f"{path}.command", f"is written by Corral for kind {command}; "
                  + ("put your program in driver.command" if command == "dask"
                     else "put your training script in workers.command"))
        cmd = ""
    elif cmd is None and command == "optional":
        cmd = ""
    elif not isinstance(cmd, str) or not cmd.strip():
        c.err(f"{path}.command", "is required and must be a non-empty string")
        cmd = ""
    elif not c.text(cmd, f"{path}.command", lim.COMMAND_MAX, multiline=True):
        cmd = ""
    res = Resources(
        cpus=c.number(d, "cpus", f"{path}.cpus", 1.0, lo=0.01, hi=1024),
        mem=c.number(d, "mem", f"{path}.mem", 256.0, lo=16, hi=4 * 1024 * 1024),
        disk=c.number(d, "disk", f"{path}.disk", 0.0, hi=64 * 1024 * 1024),
        gpus=c.number(d, "gpus", f"{path}.gpus", 0.0, hi=64, integer=True),
    )
    env = _env(c, d.get("env"), f"{path}.env")
    image = d.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        c.err(f"{path}.image", "must be a non-empty string")
        image = None
    elif image is not None and not c.text(image, f"{path}.image", lim.IMAGE_MAX):
        image = None
    ports = int(c.number(d, "ports", f"{path}.ports", 0, hi=16, integer=True))
    return TaskTemplate(command=cmd, resources=res, ports=ports, env=env, image=image)


def _env(c: _Checker, data: Any, path: str) -> tuple[tuple[str, str], ...]:
    """A task's environment: sized, printable, proper names, none of Corral's own."""
    env = c.string_map(data, path, lim.ENV_MAX_ENTRIES, lim.ENV_KEY_MAX, lim.ENV_VALUE_MAX,
                       multiline_values=True)
    for k, _ in env:
        if not ENV_RE.fullmatch(k):
            c.err(f"{path}.{lim.shown(k)}", "is not a valid environment variable name")
        elif k.startswith(("CORRAL_", "MESOS_")):
            c.err(f"{path}.{k}", "CORRAL_ and MESOS_ variables are set by Corral")
    return env


def _checkpoint_uri(c: _Checker, uri: Any) -> str | None:
    """The checkpoint base, if it is one (``corral.core.checkpoints.uri_problem``)."""
    if uri is None:
        return None
    if not isinstance(uri, str):
        c.err("checkpoint.uri", "must be a URI such as file:///data/ckpt or s3://bucket/path")
        return None
    problem = uri_problem(uri)
    if problem:
        c.err("checkpoint.uri", problem)
        return None
    return uri


def _whole_spec_size(c: _Checker, spec: JobSpec) -> None:
    """The spec must fit its share of the znode it is stored in."""
    size = lim.stored_size(spec_to_dict(spec))
    if size > lim.SPEC_MAX_BYTES:
        c.err("spec", f"is {size} bytes as stored; the limit is {lim.SPEC_MAX_BYTES} "
                      "(ZooKeeper keeps a job in one znode of at most 1 MiB)")


_KINDS = ", ".join(k.value for k in WorkloadKind)
# Who writes each slot's command, per kind: the user ("required"/"optional") or Corral.
_MASTER_COMMAND = {WorkloadKind.COMMAND: "required", WorkloadKind.DASK: "dask",
                   WorkloadKind.TORCH: "torch"}
_WORKER_COMMAND = {WorkloadKind.COMMAND: "required", WorkloadKind.DASK: "optional",
                   WorkloadKind.TORCH: "required"}


def _kind(c: _Checker, top: Mapping[str, Any]) -> tuple[WorkloadKind | None, str | None]:
    """The job's ``kind`` (None if invalid: the fields that depend on it go unchecked
    rather than reported against a kind the user did not mean) and its
    ``driver.command`` (required for dask, refused for the other kinds)."""
    raw = top.get("kind", WorkloadKind.COMMAND.value)
    try:
        kind = WorkloadKind(raw)
    except (ValueError, TypeError):
        c.err("kind", f"must be one of {_KINDS}; got {raw!r}"[:200])
        return None, None
    d = c.mapping(top.get("driver"), "driver", {"command"})
    if kind is not WorkloadKind.DASK:
        if "driver" in top:
            c.err("driver", f"is only for kind dask (this job is kind {kind.value})")
        return kind, None
    cmd = d.get("command")
    if not isinstance(cmd, str) or not cmd.strip():
        c.err("driver.command", "is required for kind dask and must be a non-empty string "
                                "(your Dask program, e.g. python3 features.py)")
        return kind, None
    return kind, cmd


def _kind_ports(c: _Checker, kind: WorkloadKind, top: Mapping[str, Any],
                master: TaskTemplate, workers: TaskTemplate) -> tuple[TaskTemplate,
                                                                      TaskTemplate]:
    """Ports a kind needs: the master's first port is the Dask scheduler's or the c10d
    store's (default 1, never 0); a Corral-run Dask worker listens on its first port."""
    if kind is WorkloadKind.COMMAND:
        return master, workers
    m = top.get("master")
    given: Mapping[str, Any] = m if isinstance(m, Mapping) else {}
    if "ports" not in given:
        master = replace(master, ports=max(master.ports, 1))
    elif master.ports < 1:
        c.err("master.ports", f"kind {kind.value} needs at least 1 (the "
              + ("Dask scheduler's" if kind is WorkloadKind.DASK else "rendezvous")
              + " port)")
    w = top.get("workers")
    wgiven: Mapping[str, Any] = w if isinstance(w, Mapping) else {}
    if kind is WorkloadKind.DASK and not workers.command and "ports" not in wgiven:
        workers = replace(workers, ports=1)
    return master, workers


def parse_job_spec(data: Any) -> JobSpec:
    """Build a ``JobSpec`` from plain data or raise ``SpecError`` naming every bad field."""
    c = _Checker()
    top = c.mapping(
        data, "",
        {"role", "environment", "name", "tier", "priority", "master", "workers",
         "checkpoint", "constraints", "kill_grace_seconds", "restart",
         "deadline_seconds", "labels", "kind", "driver"},
    )
    kind, driver = _kind(c, top)
    role = c.name(top, "role", "role")
    env = c.name(top, "environment", "environment") if "environment" in top else "default"
    name = c.name(top, "name", "name")
    tier_raw = top.get("tier", "preferred")
    try:
        tier = Tier(tier_raw)
    except ValueError:
        c.err("tier", f"must be one of preferred, preemptible, revocable; got {tier_raw!r}")
        tier = Tier.PREFERRED
    priority = int(c.number(top, "priority", "priority", 0, lo=-1000, hi=1000, integer=True))

    master = _task(c, top.get("master"), "master",
                   command=_MASTER_COMMAND[kind] if kind else "optional")
    wd = top.get("workers")
    worker_t = _task(c, wd, "workers", {"min", "max", "initial"},
                     command=_WORKER_COMMAND[kind] if kind else "optional")
    if kind is not None:
        master, worker_t = _kind_ports(c, kind, top, master, worker_t)
    wmap = wd if isinstance(wd, Mapping) else {}
    wmin = int(c.number(wmap, "min", "workers.min", 0, hi=10000, integer=True))
    wmax = int(c.number(wmap, "max", "workers.max", max(wmin, 1), hi=10000, integer=True))
    winit = int(c.number(wmap, "initial", "workers.initial", wmin, hi=10000, integer=True))
    if wmin > wmax:
        c.err("workers.min", f"must not exceed workers.max ({wmin} > {wmax})")
    elif not wmin <= winit <= wmax:
        c.err("workers.initial", f"must be within workers.min..workers.max ({wmin}..{wmax})")

    ck = c.mapping(top.get("checkpoint"), "checkpoint", {"uri", "interval_seconds"})
    uri = _checkpoint_uri(c, ck.get("uri"))
    interval = c.number(
        ck, "interval_seconds", "checkpoint.interval_seconds", 30.0, lo=0.1, hi=86400
    )

    cons = c.mapping(
        top.get("constraints"), "constraints", {"max_per_host", "attributes", "spread_over"}
    )
    mph = cons.get("max_per_host")
    if mph is not None:
        mph = int(c.number(cons, "max_per_host", "constraints.max_per_host", 1, lo=1, hi=10000,
                           integer=True))
    spread = cons.get("spread_over")
    if spread is not None and (not isinstance(spread, str) or not spread):
        c.err("constraints.spread_over", "must be an attribute name")
        spread = None
    elif spread is not None and not c.text(spread, "constraints.spread_over",
                                           lim.ATTRIBUTE_NAME_MAX):
        spread = None
    constraints = Constraints(
        max_per_host=mph,
        attributes=c.string_map(cons.get("attributes"), "constraints.attributes",
                                lim.ATTRIBUTE_MAX_ENTRIES),
        spread_over=spread,
    )

    rs = c.mapping(top.get("restart"), "restart", {"max_failures", "backoff_seconds",
                                                   "backoff_max_seconds"})
    restart = RestartPolicy(
        max_failures=int(c.number(rs, "max_failures", "restart.max_failures", 3, hi=1000,
                                  integer=True)),
        backoff_seconds=c.number(rs, "backoff_seconds", "restart.backoff_seconds", 2.0, hi=3600),
        backoff_max_seconds=c.number(rs, "backoff_max_seconds", "restart.backoff_max_seconds",
                                     60.0, hi=86400),
    )
    deadline = top.get("deadline_seconds")
    if deadline is not None:
        deadline = c.number(top, "deadline_seconds", "deadline_seconds", 0, lo=1, hi=365 * 86400)
    grace = c.number(top, "kill_grace_seconds", "kill_grace_seconds", 10.0, hi=3600)
    labels = c.string_map(top.get("labels"), "labels")

    if tier is Tier.REVOCABLE and master.resources.gpus > 0:
        c.err("master.gpus", "revocable jobs cannot request GPUs")

    if c.errors:
        raise SpecError(c.all_errors())
    spec = JobSpec(
        role=role, environment=env, name=name, tier=tier, priority=priority,
        master=master,
        workers=WorkerPool(template=worker_t, min=wmin, max=wmax, initial=winit),
        checkpoint_uri=uri, checkpoint_interval_seconds=interval,
        constraints=constraints, kill_grace_seconds=grace, restart=restart,
        deadline_seconds=deadline, labels=labels, kind=kind or WorkloadKind.COMMAND,
        driver=driver,
    )
    _whole_spec_size(c, spec)
    if c.errors:
        raise SpecError(c.all_errors())
    return spec


def _task_to_dict(t: TaskTemplate) -> dict[str, Any]:
    d: dict[str, Any] = {"command": t.command} if t.command else {}
    d.update(**t.resources.as_dict(), ports=t.ports)
    if t.env:
        d["env"] = dict(t.env)
    if t.image:
        d["image"] = t.image
    return d


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The plain-data form of ``spec``; ``parse_job_spec(spec_to_dict(s)) == s``."""
    workers = _task_to_dict(spec.workers.template)
    workers.update(min=spec.workers.min, max=spec.workers.max, initial=spec.workers.initial)
    d: dict[str, Any] = {
        "role": spec.role,
        "environment": spec.environment,
        "name": spec.name,
        "tier": spec.tier.value,
        "priority": spec.priority,
        "master": _task_to_dict(spec.master),
        "workers": workers,
        "checkpoint": {"interval_seconds": spec.checkpoint_interval_seconds},
        "kill_grace_seconds": spec.kill_grace_seconds,
        "restart": {
            "max_failures": spec.restart.max_failures,
            "backoff_seconds": spec.restart.backoff_seconds,
            "backoff_max_seconds": spec.restart.backoff_max_seconds,
        },
    }
    if spec.checkpoint_uri:
        d["checkpoint"]["uri"] = spec.checkpoint_uri
    c = spec.constraints
    cons: dict[str, Any] = {}
    if c.max_per_host is not None:
        cons["max_per_host"] = c.max_per_host
    if c.attributes:
        cons["attributes"] = dict(c.attributes)
    if c.spread_over:
        cons["spread_over"] = c.spread_over
    if cons:
        d["constraints"] = cons
    if spec.deadline_seconds is not None:
        d["deadline_seconds"] = spec.deadline_seconds
    if spec.labels:
        d["labels"] = dict(spec.labels)
    if spec.kind is not WorkloadKind.COMMAND:
        d["kind"] = spec.kind.value
    if spec.driver is not None:
        d["driver"] = {"command": spec.driver}
    return d
