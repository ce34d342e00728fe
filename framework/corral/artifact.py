"""The executor artifact: ``corral_executor`` as one self-contained Python zipapp.

Agents need nothing installed but a stock ``python3`` (>= 3.11): the Mesos fetcher puts
``corral-executor.pyz`` into the sandbox (``CommandInfo.uris``), the executor command runs
it, and the executor puts the archive on its task's ``PYTHONPATH`` so the job can
``import corral_executor.sdk`` from it. ``corral_executor`` uses the standard library
only, which is what makes this work.

The archive is built reproducibly from the ``corral_executor`` package this process
imports: sorted entries, fixed timestamps, and next to each module a hash-checked ``.pyc``
compiled by this interpreter (zipimport cannot cache bytecode, so without it every
executor start would compile the sources; a ``python3`` of another version ignores the
``.pyc`` files and compiles). Its SHA-256 names it: ``versioned_path`` puts the digest in
the URL, so a fetcher cache (keyed by URI) never hands an agent an older executor.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ARTIFACT_NAME = "corral-executor.pyz"
MIN_PYTHON = (3, 11)
STABLE_PATH = f"/executor/{ARTIFACT_NAME}"
_EPOCH = (1980, 1, 1, 0, 0, 0)

# Runs on whatever python3 the agent has: keep it valid for old interpreters.
_MAIN = (
    "import sys\n"
    f"if sys.version_info < {MIN_PYTHON!r}:\n"
    "    sys.stderr.write('corral executor: needs Python >= "
    f"{'.'.join(map(str, MIN_PYTHON))}, but '\n"
    "                     + sys.executable + ' is ' + sys.version.split()[0] + '\\n')\n"
    "    raise SystemExit(2)\n"
    "from corral_executor.main import main\n"
    "raise SystemExit(main())\n"
)


@dataclass(frozen=True)
class Artifact:
    """The built archive and its digest."""

    data: bytes
    sha256: str

    @property
    def versioned_path(self) -> str:
        """The URL path that changes whenever the content does."""
        return f"/executor/{self.sha256}/{ARTIFACT_NAME}"

    def write(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.data)
        tmp.replace(path)
        return path


def package_dir() -> Path:
    """Where the ``corral_executor`` package this process would import lives."""
    spec = importlib.util.find_spec("corral_executor")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the corral_executor package is not importable")
    return Path(next(iter(spec.submodule_search_locations)))


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _bytecode(source: bytes, path: str) -> bytes:
    """A hash-checked .pyc (PEP 552) of ``source`` for this interpreter: the magic number,
    the flags (bit 0: hash-based, bit 1: checked), the 8-byte source hash, the code."""
    code = compile(source, path, "exec", dont_inherit=True, optimize=0)
    flags = (0b11).to_bytes(4, "little")
    digest = importlib.util.source_hash(source)
    return importlib.util.MAGIC_NUMBER + flags + digest + marshal.dumps(code)


def build(source: Path | None = None) -> Artifact:
    """Build the zipapp from ``source`` (default: the importable ``corral_executor``)."""
    pkg = source or package_dir()
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        raise RuntimeError(f"no Python files under {pkg}")
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")  # as zipapp does: a prefix zipimport skips
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_entry("__main__.py"), _MAIN)
        for f in files:
            rel = "corral_executor/" + f.relative_to(pkg).as_posix()
            src = f.read_bytes()
            zf.writestr(_entry(rel), src)
            zf.writestr(_entry(rel[:-3] + ".pyc"), _bytecode(src, rel))
    data = buf.getvalue()
    return Artifact(data, hashlib.sha256(data).hexdigest())


def main(argv: list[str] | None = None) -> int:
    """``corral executor-artifact --out FILE``: write the archive for operators to host."""
    import argparse

    p = argparse.ArgumentParser(
        prog="corral executor-artifact",
        description="Write Corral's executor as a self-contained zipapp, to host anywhere "
                    "agents can fetch from (then: corral scheduler --executor-uri URL). "
                    "Build it with the Python version your agents run for the fastest "
                    "executor start.")
    p.add_argument("--out", default=ARTIFACT_NAME, help="file to write (default %(default)s)")
    args = p.parse_args(argv)
    try:
        art = build()
        path = art.write(Path(args.out))
    except (OSError, RuntimeError) as exc:
        print(f"corral executor-artifact: {exc}", file=sys.stderr)
        return 1
    print(f"{path}  sha256={art.sha256}  bytes={len(art.data)}")
    return 0
