"""Getting a container ready to launch on a localmesos agent, as a Mesos agent does.

Owns the steps between "launch this executor (or command task)" and starting its process:

* **User** (``--switch_user``, on by default): when localmesos runs as root, the container
  runs as ``CommandInfo.user`` or else ``FrameworkInfo.user`` (its uid, primary group and
  supplementary groups). As another user localmesos cannot switch and runs everything as
  itself (a documented deviation: Mesos would fail the launch).
* **Sandbox**: mode 0750, owned by that user (Mesos' ``createSandboxDirectory``), so other
  users' tasks cannot read it; its ``stdout``/``stderr`` are created for that user too.
* **Image**: localmesos has no containerizer. A container asking for an image fails with
  REASON_CONTAINER_LAUNCH_FAILED unless ``--images-on-host``, which runs it on the host
  and says so in every status update of it (``image_note``).
* **Fetch**: the ``CommandInfo.uris`` through the agent's ``FetchCache``, by the fetcher
  program (``fetcher.py``), which switches to the container's user itself (the
  interpreter it starts with need not be that user's to run); its output goes to the
  sandbox's stdout/stderr, as in Mesos.
* **Executor token** (``--authenticate-http-executors``, on by default): a JWT for this
  framework, executor and container in ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``.

A failure raises ``LaunchFailed`` with the message the agent puts in TASK_FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.localmesos import fetcher
from corral.localmesos.auth import executor_token

Json = dict[str, Any]
TOKEN_ENV = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN"
SANDBOX_MODE = 0o750
# What the fetcher program may see of the agent's environment (proxies, CA bundles).
_FETCHER_ENV = ("PATH", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy",
                "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class LaunchFailed(Exception):
    """The container cannot be launched; the message goes into TASK_FAILED."""


@dataclass(frozen=True)
class RunAs:
    """The Unix identity a container runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def spawn_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


@dataclass(frozen=True)
class ContainerOptions:
    """The agent flags these steps follow."""

    switch_user: bool = True
    images_on_host: bool = False
    executor_secret: bytes | None = None  # None: executor authentication off
    fetcher_cache_bytes: int = fetcher.DEFAULT_CACHE_BYTES
    fetcher_stall_timeout: float = fetcher.DEFAULT_STALL_TIMEOUT
    executor_env: dict[str, str] = field(default_factory=dict)  # e.g. LIBPROCESS_SSL_*
    # --executor-environment-variables: the environment containers start from (None: the
    # agent's own, which is what Mesos' containers inherit without that flag).
    base_env: dict[str, str] | None = None


def resolve_user(options: ContainerOptions, framework_info: Json, command: Json
                 ) -> RunAs | None:
    """Whom the container runs as, or None for "as localmesos itself"."""
    if not options.switch_user or os.geteuid() != 0:
        return None
    name = command.get("user") or framework_info.get("user")
    if not isinstance(name, str) or not name:
        return None
    try:
        pw = pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise LaunchFailed(f"Failed to chown directory to '{name}': Failed to get user "
                           f"information for '{name}'") from None
    groups = tuple(g for g in os.getgrouplist(name, pw.pw_gid) if g != pw.pw_gid)
    return RunAs(name, pw.pw_uid, pw.pw_gid, groups)


def prepare_sandbox(sandbox: Path, run_as: RunAs | None) -> None:
    """Mode 0750 and the container's owner on the sandbox and its stdout/stderr."""
    try:
        os.chmod(sandbox, SANDBOX_MODE)
        for name in ("stdout", "stderr"):
            (sandbox / name).touch(exist_ok=True)
        if run_as is not None:
            for path in (sandbox, sandbox / "stdout", sandbox / "stderr"):
                os.chown(path, run_as.uid, run_as.gid)
    except OSError as exc:
        raise LaunchFailed(f"Failed to create executor directory '{sandbox}': "
                           f"{exc.strerror or exc}") from None


def image_of(container: Any) -> str | None:
    """The image a ContainerInfo asks for (MESOS with a Docker/Appc image, or DOCKER)."""
    if not isinstance(container, dict):
        return None
    mesos_image = (container.get("mesos") or {}).get("image") or {}
    for kind in ("docker", "appc"):
        name = (mesos_image.get(kind) or {}).get("name")
        if isinstance(name, str) and name:
            return name
    docker = (container.get("docker") or {}).get("image")
    if isinstance(docker, str) and docker:
        return docker
    if container.get("type") == "DOCKER":
        return "(a Docker container)"
    return None


def check_image(options: ContainerOptions, container: Any) -> str | None:
    """The note to put in every status of a container run without its image, or None
    when it has none; LaunchFailed when images are refused."""
    image = image_of(container)
    if image is None:
        return None
    if not options.images_on_host:
        raise LaunchFailed(
            f"localmesos cannot run container images (image '{image}'): it has no "
            "containerizer and runs every command on the host. Start it with "
            "--images-on-host to run such tasks on the host anyway")
    return image_note(image)


def image_note(image: str) -> str:
    return f"localmesos ran this on the host: image '{image}' was not used"


def executor_env(options: ContainerOptions, framework_id: str, executor_id: str,
                 container_id: str) -> dict[str, str]:
    """The extra environment of a custom executor: its token and the TLS settings."""
    env = dict(options.executor_env)
    if options.executor_secret is not None:
        env[TOKEN_ENV] = executor_token(options.executor_secret, framework_id, executor_id,
                                        container_id)
    return env


async def fetch(cache: fetcher.FetchCache, uris: list[Json], sandbox: Path,
                container_id: str, run_as: RunAs | None, stall: float,
                track: Callable[[int | None, bool], None]) -> None:
    """Run the fetcher program for ``uris`` into ``sandbox`` (as ``run_as``).

    ``track(pid, started)`` lets the agent kill a fetch in flight with the container.
    """
    if not uris:
        return
    prefix = f"Failed to fetch all URIs for container '{container_id}'"
    try:
        fetcher.validate_uris(uris)
    except fetcher.FetchError as exc:
        raise LaunchFailed(f"{prefix}: {exc}") from None
    user = run_as.name if run_as else None
    items, created, held = await cache.plan(uris, user)
    ok = False
    try:
        cache_dir = cache.user_dir(user)
        os.makedirs(cache_dir, exist_ok=True)
        if run_as is not None:
            os.chown(cache_dir, run_as.uid, run_as.gid)
        info = {"sandbox_directory": str(sandbox), "cache_directory": cache_dir,
                "items": items, "stall_timeout": {"nanoseconds": int(stall * 1e9)}}
        if user:
            info["user"] = user
        env = {k: v for k, v in os.environ.items() if k in _FETCHER_ENV}
        env["MESOS_FETCHER_INFO"] = json.dumps(info)
        with open(sandbox / "stdout", "ab") as out, open(sandbox / "stderr", "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", fetcher.__file__, env=env, cwd=sandbox,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        track(proc.pid, True)
        try:
            code = await proc.wait()
        finally:
            track(proc.pid, False)
        ok = code == 0
    except OSError as exc:
        raise LaunchFailed(f"{prefix}: cannot run the fetcher: {exc}") from None
    finally:
        cache.settle(created, ok, user)
        cache.release(held)
    if not ok:
        raise LaunchFailed(f"{prefix}: {_last_failure(sandbox / 'stderr')}")


def _last_failure(stderr: Path) -> str:
    """The fetcher's ``Failed to fetch '<uri>': ...`` line from the sandbox's stderr."""
    with contextlib.suppress(OSError), open(stderr, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 8192))
        for line in reversed(fh.read().decode("utf-8", "replace").splitlines()):
            if line.startswith("Failed to fetch '"):
                return line[:1000]
    return "the fetcher failed (see the sandbox's stderr)"


@dataclass(frozen=True)
class Prepared:
    """A container ready to start: whom it runs as, its extra env, its status note."""

    run_as: RunAs | None
    env: dict[str, str]
    note: str | None  # appended to every status message (a container run without its image)


async def prepare(options: ContainerOptions, cache: fetcher.FetchCache, *,
                  framework_info: Json, framework_id: str, executor_id: str,
                  container_id: str, command: Json, container: Any, sandbox: Path,
                  custom_executor: bool, track: Callable[[int | None, bool], None]
                  ) -> Prepared:
    """User, sandbox, image, fetch and token, in the order a Mesos agent goes through
    them; ``LaunchFailed`` carries the TASK_FAILED message."""
    try:
        run_as = resolve_user(options, framework_info, command)
    except LaunchFailed as exc:
        raise LaunchFailed(f"Failed to create executor directory '{sandbox}': {exc}") from None
    prepare_sandbox(sandbox, run_as)
    try:
        note = check_image(options, container)
        uris = command.get("uris") or []
        if not isinstance(uris, list):
            raise LaunchFailed("Failed to fetch all URIs: 'uris' is not a list")
        await fetch(cache, uris, sandbox, container_id, run_as,
                    options.fetcher_stall_timeout, track)
    except LaunchFailed as exc:
        raise LaunchFailed(f"Failed to launch container: {exc}") from None
    env = executor_env(options, framework_id, executor_id, container_id) \
        if custom_executor else {}
    return Prepared(run_as, env, note)
