"""docs/tutorial.md and README's "Run it yourself", run as written.

The tutorial: every ```bash block, in order, in one bash. README: its "Run it yourself"
commands with the job spec that follows them as ``job.yaml``.

So the tutorial cannot rot. What a newcomer would set up by hand is set up here the same
way: a directory whose ``corral`` and ``python3`` are this checkout's (like an activated
virtualenv), and a ZooKeeper (Debian's package, started by tests/zk.py). The commands are
the file's own, with free loopback ports in place of the ones it names (5050, 7070-7072,
2181), so that the test never talks to anything else on the machine. The environment
holds no CORRAL_API or CORRAL_MASTER: the tutorial must say every address it uses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_gone
from tests.zk import ZooKeeperServer, free_port, zk_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.zk, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
MARK = "@@ tutorial block "


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def with_ports(script: str, ports: dict[str, str]) -> str:
    for old, new in ports.items():
        script = script.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        script = script.replace(f"--port {old}", f"--port {new}")
    return script


def test_every_localmesos_control_command_names_its_master() -> None:
    """The control commands would otherwise default to port 5050, which the test cannot
    replace: the tutorial must spell the address out."""
    for block in bash_blocks(TUTORIAL.read_text()):
        for line in block.splitlines():
            m = re.search(r"corral localmesos (agents|terminate|add-agent|drain)\b.*", line)
            if m:
                assert "--master http://127.0.0.1:5050" in m.group(0), line


def virtualenv_like(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A home directory, and an environment whose ``corral`` and ``python3`` are this
    checkout's (as in an activated virtualenv) and which names no Corral address."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "corral").write_text(f'#!/bin/sh\nexec {sys.executable} -m corral.cli "$@"\n')
    (bin_dir / "corral").chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORRAL_") and k not in ("TMPDIR",)}
    env.update({"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "framework"),
                                               str(ROOT / "executor")])})
    return home, env


def run_script(script: str, home: Path, env: dict[str, str], timeout: float
               ) -> tuple[int, str]:
    """Run ``script`` in bash in its own session; afterwards nothing it started is left."""
    proc = subprocess.Popen(["bash", "-c", script], cwd=home, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        raise AssertionError(f"the commands did not finish in time:\n{out}") from None
    finally:
        # Whatever it left running (localmesos, schedulers) goes now.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            wait_gone(str(home), timeout=15)
    return proc.returncode, out


def test_readme_run_it_yourself_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run it yourself"):]
    commands = bash_blocks(section)[0]
    spec = re.search(r"^```yaml\n(.*?)^```$", section, flags=re.S | re.M)
    assert spec is not None
    home, env = virtualenv_like(tmp_path)
    (home / "job.yaml").write_text(spec.group(1))
    ports = {p: str(free_port()) for p in ("5050", "7070")}
    data = str(tmp_path / "corral")
    (home / "job.yaml").write_text(spec.group(1).replace("/tmp/corral", data))
    script = with_ports("set -eo pipefail\nexport CORRAL_API=127.0.0.1:7070\n"
                        + commands.replace("/tmp/corral", data), ports)
    code, out = run_script(script, home, env, timeout=120)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in home.glob("*.log"))
    assert code == 0, f"{out}\n{logs}"
    assert "ml-team/prod/nightly-scoring FINISHED" in out
    assert not wait_gone(str(home), timeout=15)


def test_the_tutorial_runs_as_written(tmp_path: Path, zk_server: ZooKeeperServer  # noqa: F811
                                      ) -> None:
    blocks = bash_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 10, "the tutorial lost its commands?"
    ports = {p: str(free_port()) for p in ("5050", "7070", "7071", "7072")}
    script = "set -eo pipefail\n" + "".join(
        f"echo '{MARK}{i}'\n{block}" for i, block in enumerate(blocks))
    script = with_ports(script, ports).replace("127.0.0.1:2181", zk_server.hosts)
    for old in ports:
        assert f"127.0.0.1:{old}" not in script

    home, env = virtualenv_like(tmp_path)
    code, out = run_script(script, home, env, timeout=180)
    work = home / "corral-tutorial"
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in work.glob("*.log"))
    assert code == 0, f"{out}\n{logs}"

    said = dict(zip(range(len(blocks)), re.split(rf"^{MARK}\d+\n", out, flags=re.M)[1:],
                    strict=True))
    text = "\n".join(said.values())
    assert "market=spot" in text and "agent-2" in text
    assert "ml-team/default/scoring\n" in text
    # The spot machine cost something, and everything lost came back.
    losses = re.search(r"^losses     (\d+), recovered (\d+)", text, flags=re.M)
    assert losses and int(losses.group(1)) >= 1 and losses.group(1) == losses.group(2), text
    assert text.count("OK: 80 chunks identical") == 2, text
    assert f"127.0.0.1:{ports['7071']}\n" in text            # b named a as the leader
    assert "ml-team/default/scoring-ha FINISHED" in text      # finished after the failover
    assert not wait_gone(str(home), timeout=15)
