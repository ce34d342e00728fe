"""The batch-scoring sample: queue rules in-process, then master and workers as real
subprocesses on 127.0.0.1 (no Mesos): a clean run, a worker killed mid-run, and a master
restarted from its checkpoint. Every run is checked bit-for-bit by ``verify``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from corral_executor import sdk
from corral_executor.samples import scoring

ROOT = Path(__file__).resolve().parents[2]
MOD = "corral_executor.samples.scoring"


# ---------------------------------------------------------------------------- in-process


def test_queue_hands_out_each_chunk_once_then_waits_then_done() -> None:
    q = scoring.ChunkQueue(total=2, lease_seconds=10)
    assert q.lease("a", 0.0) == {"chunk": 0}
    assert q.lease("b", 0.0) == {"chunk": 1}
    wait = q.lease("c", 1.0)
    assert wait["status"] == "wait" and 0 < wait["retry_after"] <= 1.0
    q.complete(0)
    q.complete(1)
    assert q.lease("c", 2.0) == {"status": "done"}
    assert q.reruns == 0


def test_expired_lease_is_handed_out_again_as_a_rerun() -> None:
    q = scoring.ChunkQueue(total=1, lease_seconds=5)
    assert q.lease("lost", 0.0) == {"chunk": 0}
    assert q.lease("b", 4.9)["status"] == "wait"
    assert q.lease("b", 5.0) == {"chunk": 0}
    assert q.reruns == 1
    assert q.counts() == {"done": 0, "total": 1, "leased": 1, "backlog": 0, "rerun": 1}


def test_local_then_verify_and_verify_catches_a_changed_chunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    assert scoring.main(["make-data", "--data", str(data), "--chunks", "3", "--rows", "50"]) == 0
    assert scoring.main(["local", "--data", str(data), "--out", str(out)]) == 0
    assert scoring.main(["verify", "--data", str(data), "--out", str(out)]) == 0
    assert "OK: 3 chunks identical" in capsys.readouterr().out
    bad = np.load(out / "chunk-00001.npy")
    bad[7] = np.nextafter(bad[7], 2.0)  # one ulp: bit-for-bit means bit-for-bit
    np.save(out / "chunk-00001.npy", bad)
    assert scoring.main(["verify", "--data", str(data), "--out", str(out)]) == 1
    assert "chunk-00001.npy: differs" in capsys.readouterr().out


def test_make_data_is_deterministic(tmp_path: Path) -> None:
    for d in ("a", "b"):
        scoring.make_data(tmp_path / d, chunks=2, rows=10, features=4, seed=7)
    assert (tmp_path / "a" / "chunk-00001.npy").read_bytes() == (
        tmp_path / "b" / "chunk-00001.npy"
    ).read_bytes()


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert scoring.main(["local", "--data", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    assert "manifest.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------- subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Master and workers as real processes; ``close`` kills whatever is still alive."""

    def __init__(self, tmp: Path, chunks: int) -> None:
        self.tmp = tmp
        self.data, self.out = tmp / "data", tmp / "out"
        self.port = free_port()
        self.procs: list[subprocess.Popen[str]] = []
        scoring.make_data(self.data, chunks=chunks, rows=300, features=16, seed=7)
        self.chunks = chunks

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env["PYTHONPATH"] = str(ROOT / "executor")
        env["CORRAL_MASTER_ADDRESS"] = f"127.0.0.1:{self.port}"
        env.update(extra)
        return env

    def master(self, *args: str, **env: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", MOD, "master", "--data", str(self.data)]
        cmd += ["--out", str(self.out), "--host", "127.0.0.1", *args]
        return self._spawn(cmd, self.env(CORRAL_PORT=str(self.port), **env), "master")

    def worker(self, i: int, *args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", MOD, "worker", "--data", str(self.data)]
        cmd += ["--out", str(self.out), "--give-up-seconds", "20", *args]
        return self._spawn(cmd, self.env(CORRAL_TASK_ID=f"worker-{i}"), f"worker-{i}")

    def _spawn(self, cmd: list[str], env: dict[str, str], name: str) -> subprocess.Popen[str]:
        with open(self.tmp / f"{name}.log", "a") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def status(self) -> dict[str, int] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=1) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_done_at_least(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st is not None and st["done"] >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} chunks done in time; status={self.status()}")

    def verify(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", MOD, "verify", "--data", str(self.data), "--out", str(self.out)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def outputs(self) -> list[str]:
        return sorted(p.name for p in self.out.iterdir() if p.name.startswith("chunk-"))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in self.tmp.glob("*.log"))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture()
def cluster_factory(tmp_path: Path) -> Iterator[type[Cluster]]:
    made: list[Cluster] = []

    class Tracked(Cluster):
        def __init__(self, chunks: int) -> None:  # type: ignore[override]
            super().__init__(tmp_path, chunks)
            made.append(self)

    yield Tracked  # type: ignore[misc]
    for c in made:
        c.close()


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[int]:
    return [p.wait(timeout) for p in procs]


def test_master_and_three_workers_score_everything(cluster_factory: type[Cluster]) -> None:
    c = cluster_factory(24)  # type: ignore[call-arg]
    master = c.master()
    workers = [c.worker(i) for i in range(3)]
    assert wait_all([master, *workers]) == [0, 0, 0, 0], c.logs()
    assert c.verify().strip() == "OK: 24 chunks identical"
    summary = json.loads((c.out / "_SUCCESS").read_text())
    assert summary["chunks"] == 24 and summary["reruns"] == 0
    assert c.outputs() == [scoring.chunk_name(i) for i in range(24)]
    # Idempotent: a master started after success just confirms and exits 0.
    assert c.master().wait(30) == 0


def test_killed_worker_loses_only_its_lease(cluster_factory: type[Cluster]) -> None:
    c = cluster_factory(16)  # type: ignore[call-arg]
    master = c.master("--lease-seconds", "1.0")
    workers = [c.worker(i, "--chunk-delay", "0.15") for i in range(3)]
    c.wait_done_at_least(3)
    # Mid-chunk with near certainty: each chunk holds its lease for 0.15 s of sleep.
    workers[0].send_signal(signal.SIGKILL)
    assert workers[0].wait(10) == -signal.SIGKILL
    assert wait_all([master, *workers[1:]]) == [0, 0, 0], c.logs()
    assert c.verify().strip() == "OK: 16 chunks identical"
    assert c.outputs() == [scoring.chunk_name(i) for i in range(16)]
    assert not list(c.out.glob(".chunk-*")), "stray temporary outputs"
    summary = json.loads((c.out / "_SUCCESS").read_text())
    assert summary["reruns"] >= 1, c.logs()


def test_restarted_master_continues_from_checkpoint(cluster_factory: type[Cluster]) -> None:
    c = cluster_factory(20)  # type: ignore[call-arg]
    ckpt = (c.tmp / "ckpt" / "master").as_uri()
    env = {"CORRAL_CHECKPOINT_URI": ckpt, "CORRAL_CHECKPOINT_INTERVAL": "0.1"}
    first = c.master(**env)
    worker = c.worker(0, "--chunk-delay", "0.1")
    c.wait_done_at_least(5)
    first.send_signal(signal.SIGTERM)  # the SDK hook checkpoints, then exits 143
    assert first.wait(10) == 143, c.logs()
    saved = sdk.restore(uri=ckpt)
    assert isinstance(saved, dict) and len(saved["done"]) >= 5
    second = c.master(**env)
    assert second.wait(60) == 0, c.logs()
    assert worker.wait(30) == 0, c.logs()
    log = (c.tmp / "master.log").read_text()
    restored = [line for line in log.splitlines() if "restored" in line]
    assert len(restored) == 1
    assert int(restored[0].split()[2]) == len(saved["done"])
    assert c.verify().strip() == "OK: 20 chunks identical"


def test_master_lost_before_its_first_checkpoint_keeps_the_finished_chunks(
        cluster_factory: type[Cluster]) -> None:
    """SIGKILL (no SDK hook runs) before any checkpoint: the next master finds the
    finished chunks in the output directory, so progress does not go back to zero and
    nothing is scored twice."""
    c = cluster_factory(20)  # type: ignore[call-arg]
    ckpt = (c.tmp / "ckpt" / "master").as_uri()
    env = {"CORRAL_CHECKPOINT_URI": ckpt, "CORRAL_CHECKPOINT_INTERVAL": "600"}
    first = c.master(**env)
    worker = c.worker(0, "--chunk-delay", "0.1")
    c.wait_done_at_least(6)
    before = c.status()
    first.kill()
    first.wait(10)
    assert sdk.restore(uri=ckpt) is None  # it never checkpointed
    second = c.master(**env)
    c.wait_done_at_least(before["done"])  # type: ignore[index]  # at once, not re-scored
    assert second.wait(60) == 0, c.logs()
    assert worker.wait(30) == 0, c.logs()
    found = [ln for ln in (c.tmp / "master.log").read_text().splitlines() if "found" in ln]
    assert len(found) == 1 and int(found[0].split()[2]) >= before["done"], c.logs()  # type: ignore[index]
    summary = json.loads((c.out / "_SUCCESS").read_text())
    assert summary["reruns"] == 0, c.logs()
    assert c.verify().strip() == "OK: 20 chunks identical"


def test_outputs_of_other_inputs_are_removed_not_trusted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    scoring.make_data(tmp_path / "a", chunks=2, rows=10, features=4, seed=1)
    scoring.make_data(tmp_path / "b", chunks=2, rows=10, features=4, seed=2)
    assert scoring.main(["local", "--data", str(tmp_path / "a"), "--out", str(out)]) == 0
    a = scoring.input_identity(tmp_path / "a")
    assert scoring.claim_outputs(out, a) is True
    assert scoring.claim_outputs(out, scoring.input_identity(tmp_path / "b")) is False
    assert not list(out.glob("chunk-*.npy")) and not (out / "_SUCCESS").exists()
