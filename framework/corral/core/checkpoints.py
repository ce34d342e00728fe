"""Where a job's checkpoints live, and which checkpoint URIs a spec may name.

Pure. A spec's ``checkpoint.uri`` is a *base*: every task writes under its own
*location* ``<base>/<role>/<environment>/<name>/<slot>`` (``task_location``), so two jobs
never share a location whatever bases they name: names cannot contain ``/`` and a base
may hold no ``.``, ``..`` or empty segment, so a location has exactly one reading. A job
resubmitted under the same key (same role, environment and name) finds its previous
checkpoints: that is the key's own history.

Rules for a base (``uri_problem``): one of ``CHECKPOINT_SCHEMES``; no control characters,
``?`` or ``#``; at most ``URI_MAX`` characters; ``file://`` must be followed by an
absolute path (``file:///data/ckpt``; ``file://data`` and ``file://../x`` are relative
to whatever directory the writer runs in, i.e. a sandbox) outside the system's own
directories (``SYSTEM_DIRS``: /etc, /usr, ...); object stores need a bucket.

Operators may further restrict bases to a list of prefixes (``under_prefix``;
``corral scheduler --checkpoint-prefix``), compared segment by segment.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.core.limits import URI_MAX, control_problem

CHECKPOINT_SCHEMES = ("file", "s3", "gs", "memory")
_FORBIDDEN = "?#"
#: Top-level directories a file:// base may not lie in: the system's own (tasks may run as
#: root; a job must not be able to drop files into /etc or /usr).
SYSTEM_DIRS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32",
                         "proc", "run", "sbin", "sys", "usr"})


def split_uri(uri: str) -> tuple[str, list[str]]:
    """``scheme://a/b/c`` -> (``scheme``, [``a``, ``b``, ``c``]); a trailing ``/`` is
    ignored. For ``file`` the list is the absolute path's parts."""
    scheme, _, rest = uri.partition("://")
    rest = rest.rstrip("/")
    if scheme == "file":
        rest = rest[1:]  # the leading "/" of the absolute path
    return scheme, rest.split("/") if rest else []


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a checkpoint base, or None."""
    if len(uri) > URI_MAX:
        return f"is {len(uri)} characters long; the limit is {URI_MAX}"
    bad = control_problem(uri)
    if bad:
        return bad
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "must be a URI such as file:///data/ckpt or s3://bucket/path"
    if scheme not in CHECKPOINT_SCHEMES:
        return f"scheme must be one of {', '.join(CHECKPOINT_SCHEMES)}"
    if any(c in uri for c in _FORBIDDEN):
        return "must not contain '?' or '#'"
    if scheme == "file" and not rest.startswith("/"):
        return ("a file:// URI needs an absolute path, file:///dir (file://dir is relative "
                "to the directory the task runs in)")
    _, parts = split_uri(uri)
    if scheme in ("s3", "gs") and (not parts or not parts[0]):
        return f"a {scheme}:// URI needs a bucket, {scheme}://bucket/path"
    for p in parts:
        if p in ("", ".", ".."):
            return "must not contain empty, '.' or '..' path segments"
    if scheme == "file" and (not parts or parts[0] in SYSTEM_DIRS):
        where = f"/{parts[0]}" if parts else "/"
        return f"must not be in {where}, a system directory"
    return None


def task_location(base: str, job_key: str, slot_label: str) -> str:
    """The location one slot of job ``job_key`` checkpoints to under ``base``."""
    return f"{base.rstrip('/')}/{job_key}/{slot_label}"


def under_prefix(uri: str, prefixes: Sequence[str]) -> bool:
    """True if ``uri`` lies at or under one of ``prefixes`` (segment-wise, same scheme)."""
    scheme, parts = split_uri(uri)
    for prefix in prefixes:
        p_scheme, p_parts = split_uri(prefix)
        if p_scheme == scheme and parts[: len(p_parts)] == p_parts:
            return True
    return False
