"""The Mesos fetcher for localmesos: ``CommandInfo.uris`` into a sandbox, with a cache.

Two halves, as in Mesos (``src/slave/containerizer/fetcher.cpp`` and
``src/launcher/fetcher.cpp``):

* ``FetchCache`` lives in the agent. For each URI it decides the action: bypass the cache
  (``cache: false``), download into the cache (first use), or retrieve from it (the same
  user fetched that URI before; a download still under way is waited for). Entries are
  keyed by ``user@uri``, named ``c<n>-<basename>`` in ``<cache dir>/<user>``, and evicted
  least recently used first once the cache holds more than its capacity.
* ``main()`` is the fetcher *program* the agent runs once per container with a
  ``FetcherInfo`` JSON in ``MESOS_FETCHER_INFO`` (this file runs as a script with
  ``python -I -S``, so it imports nothing but the standard library). Started by a root
  agent, it switches to the FetcherInfo's ``user`` before touching anything, as Mesos'
  fetcher does with ``os::su``, so file permissions hold for what it reads and writes. For each item
  it downloads ``http(s)://`` with ``urllib`` (redirects followed, HTTP 200 required, a
  read that stalls for ``stall_timeout`` fails), copies ``file://`` and absolute paths,
  then, as the URI asks: marks it ``executable`` (0755), or ``extract``s ``.tar``,
  ``.tgz``, ``.tar.gz``, ``.tbz2``, ``.tar.bz2``, ``.txz``, ``.tar.xz``, ``.zip`` and
  gunzips ``.gz`` into the sandbox, under ``output_file`` or the URI's basename. It
  exits 1 on the first failure, with ``Failed to fetch '<uri>': <why>`` as its last
  stderr line, which the agent puts in the TASK_FAILED message.

Deviations: no ``hdfs://``/``s3://`` (Mesos hands those to a Hadoop client) and no
``ftp://``; no ``--frameworks_home`` (a relative path is an error); an ``output_file``
may not climb out of the sandbox with ``..``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the fetcher program must start fast: asyncio only where the agent runs
    import asyncio

BYPASS = "BYPASS_CACHE"
DOWNLOAD = "DOWNLOAD_AND_CACHE"
RETRIEVE = "RETRIEVE_FROM_CACHE"
ARCHIVES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip")
NET_SCHEMES = ("http://", "https://")
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_CACHE_BYTES = 2 * 1024 ** 3
EXECUTABLE_MODE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH

Json = dict[str, Any]


class FetchError(Exception):
    """One URI could not be fetched; the message names why."""


# ---------------------------------------------------------------------------- URI rules


def basename(uri: str) -> str:
    """Mesos' ``Fetcher::basename``: the last path segment (query strings included)."""
    if any(c in uri for c in "\\'\0"):
        raise FetchError("Illegal characters in URI")
    index = uri.find("://")
    if index > 1:
        path = uri[index + 3:]
        if "/" not in path or len(path) <= path.find("/") + 1:
            raise FetchError(f"Malformed URI (missing path): {uri}")
        return path[path.rfind("/") + 1:]
    return posixpath.basename(uri)


def validate_output_file(path: str) -> None:
    if not path:
        raise FetchError("URI output file path is empty")
    if path.startswith("/"):
        raise FetchError("URI output file must be within the sandbox directory")
    if ".." in path.split("/") or "\0" in path:
        raise FetchError("URI output file must be within the sandbox directory")


def validate_uris(uris: Iterable[Any]) -> None:
    """Mesos' ``validateUris`` (run by the agent before anything is fetched)."""
    for uri in uris:
        if not isinstance(uri, dict) or not isinstance(uri.get("value"), str):
            raise FetchError("Could not fetch: a URI needs a string 'value'")
        try:
            basename(uri["value"].lstrip())
            if "output_file" in uri:
                validate_output_file(str(uri["output_file"]))
        except FetchError as exc:
            raise FetchError(f"Could not fetch: {exc}") from None


def local_path(uri: str) -> str | None:
    """A local source path for ``file://`` or scheme-less URIs, None for network URIs."""
    if not uri.startswith("file://") and "://" in uri:
        return None
    path = urllib.parse.unquote(uri[len("file://"):]) if uri.startswith("file://") else uri
    if path.startswith("localhost/"):
        path = path[len("localhost"):]
    if not path.startswith("/"):
        if uri.startswith("file://"):
            raise FetchError("File URI only supports absolute paths")
        raise FetchError("A relative path was passed for the resource but the Mesos "
                         "framework home was not specified. Please either provide this "
                         "config option or avoid using a relative path")
    return path


def _flag(uri: Mapping[str, Any], key: str, default: bool) -> bool:
    value = uri.get(key, default)
    return value if isinstance(value, bool) else default


# ---------------------------------------------------------------------------- the program


def _download(uri: str, dest: str, stall: float) -> None:
    tmp = dest + ".part"
    local = local_path(uri)
    try:
        if local is not None:
            try:
                shutil.copyfile(local, tmp)
            except OSError as exc:
                raise FetchError(f"Failed to copy '{local}': {exc.strerror or exc}") from None
        elif uri.startswith(NET_SCHEMES):
            req = urllib.request.Request(uri, headers={"User-Agent": "localmesos-fetcher"})
            try:
                with urllib.request.urlopen(req, timeout=stall) as resp, open(tmp, "wb") as out:
                    if resp.status != 200:
                        raise FetchError("Error downloading resource, received HTTP return "
                                         f"code {resp.status}")
                    shutil.copyfileobj(resp, out, 1024 * 1024)
            except urllib.error.HTTPError as exc:
                raise FetchError("Error downloading resource, received HTTP return code "
                                 f"{exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                why = getattr(exc, "reason", None) or exc
                raise FetchError(f"Error downloading resource: {why}") from None
        else:
            scheme = uri.split("://", 1)[0]
            raise FetchError(f"URI scheme '{scheme}' is not supported by localmesos' "
                             "fetcher (http://, https://, file:// and absolute paths are)")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _extract(source: str, sandbox: str) -> bool:
    """Extract an archive into ``sandbox``; False if ``source`` is not one."""
    try:
        if source.endswith(".zip"):
            with zipfile.ZipFile(source) as zf:
                zf.extractall(sandbox)  # names with '..' or '/' are made safe by zipfile
            return True
        if source.endswith(ARCHIVES):
            with tarfile.open(source) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(sandbox, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(sandbox)
            return True
        if source.endswith(".gz"):
            target = os.path.join(sandbox, os.path.basename(source[:-3]))
            with gzip.open(source, "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            return True
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise FetchError(f"Failed to extract archive '{source}' to '{sandbox}': {exc}") from None
    return False


def fetch_item(item: Json, sandbox: str, cache_dir: str | None, stall: float) -> str:
    """Fetch one FetcherInfo item; returns what it produced (for the log)."""
    uri = item["uri"]
    value = str(uri["value"]).lstrip()
    out_name = str(uri.get("output_file") or basename(value))
    dest = os.path.join(sandbox, out_name)
    if os.path.dirname(out_name):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
    action = item.get("action", BYPASS)
    if action == BYPASS:
        source = dest
        _download(value, dest, stall)
    else:
        if not cache_dir or not item.get("cache_filename"):
            raise FetchError("No cache file name for: " + value)
        source = os.path.join(cache_dir, str(item["cache_filename"]))
        if action == DOWNLOAD and not os.path.exists(source):
            _download(value, source, stall)
    if _flag(uri, "executable", False):
        if source != dest:
            shutil.copyfile(source, dest)
        os.chmod(dest, EXECUTABLE_MODE)
        return dest
    if _flag(uri, "extract", True) and _extract(source, sandbox):
        return sandbox
    if source != dest:
        shutil.copyfile(source, dest)
    return dest


def switch_user(name: str) -> None:
    """Become ``name`` (groups, then gid, then uid): Mesos' ``os::su``."""
    import pwd

    pw = pwd.getpwnam(name)
    os.initgroups(name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def run(info: Json) -> int:
    """Fetch every item of a FetcherInfo; 0 on success, 1 after the first failure."""
    user = info.get("user")
    if user and os.geteuid() == 0:
        try:
            switch_user(str(user))
        except (KeyError, OSError) as exc:
            print(f"Fetcher could not switch to user '{user}': {exc}", file=sys.stderr)
            return 1
    sandbox = str(info["sandbox_directory"])
    cache_dir = info.get("cache_directory")
    stall = float((info.get("stall_timeout") or {}).get("nanoseconds",
                                                        DEFAULT_STALL_TIMEOUT * 1e9)) / 1e9
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    for item in info.get("items", []):
        value = str(item["uri"]["value"])
        try:
            got = fetch_item(item, sandbox, cache_dir, stall)
        except (FetchError, OSError) as exc:
            print(f"Failed to fetch '{value}': {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"Fetched '{value}' to '{got}'", file=sys.stderr, flush=True)
    return 0


def main() -> int:
    raw = os.environ.get("MESOS_FETCHER_INFO")
    if not raw:
        print("Missing MESOS_FETCHER_INFO environment variable", file=sys.stderr)
        return 1
    try:
        info = json.loads(raw)
    except ValueError as exc:
        print(f"Failed to parse MESOS_FETCHER_INFO: {exc}", file=sys.stderr)
        return 1
    return run(info)


# ---------------------------------------------------------------------------- the cache


@dataclasses.dataclass
class _Entry:
    key: str
    user: str | None
    filename: str
    done: asyncio.Future[bool]
    size: int = 0
    used: float = 0.0
    references: int = 0


class FetchCache:
    """One agent's fetcher cache (see module docstring); all methods run in its loop."""

    def __init__(self, directory: str, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.directory = directory
        self.capacity = capacity
        self._entries: dict[str, _Entry] = {}
        self._serial = 0
        self.downloads = 0  # entries created (for tests and the log)

    def user_dir(self, user: str | None) -> str:
        return os.path.join(self.directory, user) if user else self.directory

    async def plan(self, uris: list[Json], user: str | None
                   ) -> tuple[list[Json], list[_Entry], list[_Entry]]:
        """FetcherInfo items for ``uris``, the entries this fetch will create (to settle
        with ``settle``) and all entries it holds references on (to ``release``)."""
        import asyncio

        items: list[Json] = []
        created: list[_Entry] = []
        held: list[_Entry] = []
        for uri in uris:
            value = str(uri["value"]).lstrip()
            if not _flag(uri, "cache", False):
                items.append({"uri": uri, "action": BYPASS})
                continue
            key = f"{user}@{value}" if user else value
            entry = self._entries.get(key)
            if entry is not None and entry not in created:
                entry.references += 1
                held.append(entry)
                ok = await asyncio.shield(entry.done)
                if ok and self._entries.get(key) is entry:
                    entry.used = time.monotonic()
                    items.append({"uri": uri, "action": RETRIEVE,
                                  "cache_filename": entry.filename})
                else:  # its download failed: fetch straight into the sandbox
                    items.append({"uri": uri, "action": BYPASS})
                continue
            if entry is None:
                self._serial += 1
                entry = _Entry(key, user, f"c{self._serial}-{basename(value)}",
                               asyncio.get_running_loop().create_future(), references=1,
                               used=time.monotonic())
                self._entries[key] = entry
                created.append(entry)
                held.append(entry)
                self.downloads += 1
                items.append({"uri": uri, "action": DOWNLOAD, "cache_filename": entry.filename})
            else:  # the same URI twice in one command: one download serves both
                entry.references += 1
                held.append(entry)
                items.append({"uri": uri, "action": DOWNLOAD, "cache_filename": entry.filename})
        return items, created, held

    def settle(self, created: list[_Entry], ok: bool, user: str | None) -> None:
        """After the fetcher ran: keep (and size) new entries, or drop them on failure."""
        for entry in created:
            path = os.path.join(self.user_dir(user), entry.filename)
            if ok and os.path.exists(path):
                entry.size = os.path.getsize(path)
                if not entry.done.done():
                    entry.done.set_result(True)
                continue
            self._entries.pop(entry.key, None)
            if not entry.done.done():
                entry.done.set_result(False)
            with contextlib.suppress(OSError):
                os.unlink(path)

    def release(self, held: list[_Entry]) -> None:
        for entry in held:
            entry.references = max(0, entry.references - 1)
        self._evict()

    def _evict(self) -> None:
        total = sum(e.size for e in self._entries.values())
        for entry in sorted(self._entries.values(), key=lambda e: e.used):
            if total <= self.capacity:
                return
            if entry.references or not entry.done.done():
                continue
            self._entries.pop(entry.key, None)
            total -= entry.size
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.user_dir(entry.user), entry.filename))

    def cached(self) -> list[str]:
        return sorted(self._entries)


if __name__ == "__main__":
    sys.exit(main())
