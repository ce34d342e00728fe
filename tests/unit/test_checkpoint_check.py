"""The submit-time checkpoint check, against real directories and permissions."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from corral.core.spec import parse_job_spec
from corral.runtime.checkpoint_check import CheckpointCheck


def spec(uri: str) -> object:
    return parse_job_spec({"role": "ml", "name": "j", "master": {"command": "m"},
                           "workers": {"command": "w"}, "checkpoint": {"uri": uri}})


def check(uri: str, prefixes: tuple[str, ...] = ()) -> list[str]:
    return [f"{e.field}: {e.message}" for e in asyncio.run(CheckpointCheck(prefixes)(spec(uri)))]


def test_a_writable_directory_passes_and_missing_parts_below_it_are_fine(tmp_path: Path) -> None:
    assert check(f"file://{tmp_path}") == []
    assert check(f"file://{tmp_path}/not/yet/made") == []


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    (problem,) = check(f"file://{tmp_path}/plain/ckpt")
    assert problem.startswith("checkpoint.uri: ") and "is not a directory" in problem


def test_a_directory_the_scheduler_cannot_write_is_refused() -> None:
    # As root the check must run as someone else (root may write anywhere): the scheduler
    # is run by an unprivileged account in production, as here by setpriv.
    base = Path(tempfile.mkdtemp(prefix="corral-ckpt-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        uri = f"file://{locked}/ckpt"
        if os.geteuid() != 0:
            (problem,) = check(uri)
        else:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop privileges")
            code = ("import asyncio, sys; from corral.runtime.checkpoint_check import "
                    "CheckpointCheck; from corral.core.spec import parse_job_spec; "
                    "s = parse_job_spec({'role': 'ml', 'name': 'j', 'master': {'command': "
                    "'m'}, 'workers': {'command': 'w'}, 'checkpoint': {'uri': sys.argv[1]}}); "
                    "print(*(e.message for e in asyncio.run(CheckpointCheck()(s))))")
            out = subprocess.run(
                [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", code, uri], capture_output=True, text=True,
                timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                cwd="/")
            assert out.returncode == 0, out.stderr
            problem = out.stdout
        assert f"{locked} is not writable by the scheduler" in problem
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


def test_a_path_nothing_of_which_exists_here_is_not_judged() -> None:
    assert check("file:///no-such-top-level-dir-corral/ckpt") == []


def test_prefixes_confine_the_location(tmp_path: Path) -> None:
    allowed = f"file://{tmp_path}/shared"
    assert check(f"{allowed}/team", (allowed,)) == []
    (problem,) = check(f"file://{tmp_path}/elsewhere", (allowed,))
    assert "must lie under one of this scheduler's checkpoint prefixes" in problem
    # Other schemes are checked against the prefixes only (nothing to probe from here).
    assert check("s3://bucket/ckpt") == []
    assert check("s3://bucket/ckpt", (allowed,)) != []
