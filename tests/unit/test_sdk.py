"""The job SDK: atomic checkpoints over fsspec, progress and control files, SIGTERM hook.

Everything runs against real files in tmp_path through ``file://`` URIs; the SIGTERM
test uses a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral_executor import control, sdk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def corral_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cdir = tmp_path / "sandbox" / ".corral"
    cdir.mkdir(parents=True)
    for k in list(os.environ):
        if k.startswith("CORRAL_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("CORRAL_CONTROL_DIR", str(cdir))
    monkeypatch.setenv("CORRAL_CHECKPOINT_URI", (tmp_path / "ckpt" / "worker-0").as_uri())
    return cdir


def ckpt_dir(tmp_path: Path) -> Path:
    return tmp_path / "ckpt" / "worker-0"


def test_restore_before_any_checkpoint_is_none(corral_env: Path) -> None:
    assert sdk.restore() is None


def test_checkpoint_roundtrip_dict_and_bytes(corral_env: Path, tmp_path: Path) -> None:
    assert sdk.checkpoint({"done": [1, 2], "n": 3}) == 1
    assert sdk.restore() == {"done": [1, 2], "n": 3}
    assert sdk.checkpoint(b"\x00raw\xff") == 2
    assert sdk.restore() == b"\x00raw\xff"
    pointer = json.loads((ckpt_dir(tmp_path) / "LATEST").read_text())
    assert pointer["seq"] == 2 and pointer["kind"] == "bytes" and pointer["prev"] == 1


def test_only_two_newest_checkpoints_are_kept(corral_env: Path, tmp_path: Path) -> None:
    for i in range(5):
        sdk.checkpoint({"i": i})
    names = sorted(p.name for p in ckpt_dir(tmp_path).iterdir())
    assert names == ["LATEST", "ckpt-4", "ckpt-5"]
    assert sdk.restore() == {"i": 4}


def test_torn_write_is_ignored(corral_env: Path, tmp_path: Path) -> None:
    sdk.checkpoint({"good": 1})
    d = ckpt_dir(tmp_path)
    # A writer that died mid-way: a tmp file, and even a moved file LATEST never named.
    (d / "ckpt-2.tmp").write_bytes(b'{"half')
    (d / "ckpt-2").write_bytes(b'{"torn": true}')
    assert sdk.restore() == {"good": 1}
    # The next commit does not reuse the orphan's number and cleans it away.
    assert sdk.checkpoint({"good": 2}) == 3
    assert sdk.restore() == {"good": 2}
    assert not (d / "ckpt-2").exists()


def test_damaged_latest_falls_back_to_previous(corral_env: Path, tmp_path: Path) -> None:
    sdk.checkpoint({"v": 1})
    sdk.checkpoint({"v": 2})
    (ckpt_dir(tmp_path) / "ckpt-2").write_bytes(b'{"v": 666}')  # bit rot
    assert sdk.restore() == {"v": 1}


def test_both_damaged_is_an_error_not_a_fresh_start(corral_env: Path, tmp_path: Path) -> None:
    sdk.checkpoint({"v": 1})
    sdk.checkpoint({"v": 2})
    (ckpt_dir(tmp_path) / "ckpt-2").write_bytes(b"x")
    (ckpt_dir(tmp_path) / "ckpt-1").unlink()
    with pytest.raises(sdk.CheckpointError, match="missing"):
        sdk.restore()


def test_explicit_uri_and_no_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CHECKPOINT_URI", raising=False)
    monkeypatch.delenv("CORRAL_CONTROL_DIR", raising=False)
    with pytest.raises(sdk.SdkError, match="CORRAL_CHECKPOINT_URI"):
        sdk.checkpoint({"a": 1})
    uri = (tmp_path / "elsewhere").as_uri()
    assert sdk.checkpoint({"a": 1}, uri=uri) == 1
    assert sdk.restore(uri=uri) == {"a": 1}
    # Outside Corral: progress is a no-op, no requests, no master.
    sdk.report_progress(1, 2)
    assert not sdk.should_checkpoint() and not sdk.draining()


def test_bad_state_type_is_rejected(corral_env: Path) -> None:
    with pytest.raises(sdk.CheckpointError):
        sdk.checkpoint([1, 2])  # type: ignore[arg-type]
    with pytest.raises(sdk.CheckpointError, match="JSON"):
        sdk.checkpoint({"x": object()})


def test_checkpoint_is_reported_and_clears_request(corral_env: Path, tmp_path: Path) -> None:
    (corral_env / control.CHECKPOINT_NOW).touch()
    assert sdk.should_checkpoint()
    seq = sdk.checkpoint({"x": 1})
    assert not sdk.should_checkpoint()
    doc = json.loads((corral_env / control.CHECKPOINT).read_text())
    seconds = doc.pop("seconds")
    assert doc == {"uri": ckpt_dir(tmp_path).as_uri(), "seq": seq}
    assert 0 <= seconds < 5  # how long writing it took, for the cost ledger


def test_progress_file(corral_env: Path) -> None:
    sdk.report_progress(5, 64, backlog=40, rerun=2)
    doc = json.loads((corral_env / control.PROGRESS).read_text())
    assert doc == {"done": 5, "total": 64, "backlog": 40, "rerun": 2}
    with pytest.raises(sdk.SdkError):
        sdk.report_progress(-1, 3)
    # No stray temporary files next to it.
    assert sorted(p.name for p in corral_env.iterdir()) == [control.PROGRESS]


def test_master_address_prefers_control_file(
    corral_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sdk.master_address() is None
    monkeypatch.setenv("CORRAL_MASTER_ADDRESS", "10.0.0.1:3000")
    assert sdk.master_address() == "10.0.0.1:3000"
    control.atomic_write(corral_env / control.MASTER_ADDRESS, b"10.0.0.9:4000")
    assert sdk.master_address() == "10.0.0.9:4000"


def test_draining_flag(corral_env: Path) -> None:
    assert not sdk.draining()
    (corral_env / control.DRAINING).touch()
    assert sdk.draining()


def test_task_info_reads_env(corral_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_JOB", "ml/prod/score")
    monkeypatch.setenv("CORRAL_TASK_ROLE", "worker")
    monkeypatch.setenv("CORRAL_WORKER_INDEX", "3")
    monkeypatch.setenv("CORRAL_PORTS", "31000,31001")
    monkeypatch.setenv("CORRAL_PORT", "31000")
    monkeypatch.setenv("CORRAL_ATTEMPT", "2")
    monkeypatch.setenv("CORRAL_CHECKPOINT_INTERVAL", "30")
    info = sdk.task_info()
    assert (info.job, info.role, info.worker_index) == ("ml/prod/score", "worker", 3)
    assert info.ports == (31000, 31001) and info.port == 31000
    assert info.attempt == 2 and info.checkpoint_interval == 30.0
    assert info.control_dir == corral_env
    monkeypatch.setenv("CORRAL_WORKER_INDEX", "three")
    with pytest.raises(sdk.SdkError, match="CORRAL_WORKER_INDEX"):
        sdk.task_info()


def test_on_terminate_runs_hook_then_exits_143(tmp_path: Path) -> None:
    uri = (tmp_path / "ck").as_uri()
    script = (
        "import time\n"
        "from corral_executor import sdk\n"
        f"sdk.on_terminate(lambda: sdk.checkpoint({{'final': True}}, uri={uri!r}))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "executor"))
    env.pop("CORRAL_CONTROL_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert code == 143
    assert sdk.restore(uri=uri) == {"final": True}
    time.sleep(0)


def test_checkpoints_work_without_fsspec(corral_env: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # An agent with a bare python3: ``import fsspec`` fails; file:// must still work.
    monkeypatch.setitem(sys.modules, "fsspec", None)
    for i in range(3):
        assert sdk.checkpoint({"i": i}) == i + 1
    assert sdk.restore() == {"i": 2}
    assert sorted(p.name for p in ckpt_dir(tmp_path).iterdir()) == ["LATEST", "ckpt-2",
                                                                     "ckpt-3"]
    plain = ckpt_dir(tmp_path) / "plain"   # a plain path, under its own location
    assert sdk.checkpoint(b"x", uri=str(plain)) == 1
    assert sdk.restore(uri=str(plain)) == b"x"
    monkeypatch.setenv("CORRAL_CHECKPOINT_URI", "s3://bucket/ckpt/worker-0")
    with pytest.raises(sdk.SdkError, match="only file:// works without fsspec"):
        sdk.checkpoint(b"x")


@pytest.mark.parametrize("where", [
    "file:///etc",                       # another place entirely
    "{own}/../../worker-1",              # climbs out of its location
    "{own}-evil",                        # shares a prefix, not a segment
    "file://relative/dir",               # relative to the working directory
    "memory://{own_path}",               # another filesystem
])
def test_a_task_refuses_to_write_outside_its_location(
        corral_env: Path, tmp_path: Path, where: str) -> None:
    own = ckpt_dir(tmp_path).as_uri()
    uri = where.format(own=own, own_path=ckpt_dir(tmp_path))
    with pytest.raises(sdk.SdkError, match=r"outside|absolute|'\.\.'"):
        sdk.checkpoint({"a": 1}, uri=uri)
    assert not (tmp_path / "ckpt" / "worker-1").exists()
    assert not Path("/etc/LATEST").exists()


def test_a_task_may_write_under_its_location(corral_env: Path, tmp_path: Path) -> None:
    own = ckpt_dir(tmp_path).as_uri()
    assert sdk.checkpoint({"a": 1}, uri=f"{own}/extra") == 1
    assert sdk.checkpoint({"a": 2}, uri=f"{own}/") == 1
    assert sdk.restore() == {"a": 2}


def test_outside_corral_a_location_must_still_be_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CHECKPOINT_URI", raising=False)
    monkeypatch.delenv("CORRAL_CONTROL_DIR", raising=False)
    with pytest.raises(sdk.SdkError, match="absolute"):
        sdk.checkpoint({"a": 1}, uri="file://../x")
    with pytest.raises(sdk.SdkError, match=r"'\.\.'"):
        sdk.checkpoint({"a": 1}, uri=f"{tmp_path.as_uri()}/a/../b")


def test_load_file_and_retire_requests(corral_env: Path) -> None:
    sdk.report_load(12, 840, "dask: 840 tasks queued, wants 12")
    doc = json.loads((corral_env / control.LOAD).read_text())
    assert doc == {"workers": 12, "queued": 840, "detail": "dask: 840 tasks queued, wants 12"}
    for args in ((-1,), (1.5,), (1, -2), (1, 0, "x" * 161), (1, 0, "tab\there")):
        with pytest.raises(sdk.SdkError, match="report_load"):
            sdk.report_load(*args)  # type: ignore[arg-type]
    assert sdk.retire_requests() == ()
    control.atomic_write(corral_env / control.RETIRE,
                         b'{"workers": [{"name": "w.1", "by": 5}]}')
    assert sdk.retire_requests() == (("w.1", 5.0),)
    control.atomic_write(corral_env / control.RETIRE, b'{"workers": [{"name": 3}]}')
    assert sdk.retire_requests() == ()


def test_load_outside_corral_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CONTROL_DIR", raising=False)
    sdk.report_load(3)
    assert sdk.retire_requests() == ()
