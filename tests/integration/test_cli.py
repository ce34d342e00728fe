"""The ``corral`` command, run for real as a subprocess against a real gRPC server.

The server runs in a thread of the test process over ``FakeBackend`` (test_api_fake.py),
a fake standing in for the scheduler, which needs Mesos. The CLI process, its channel and
the server are real.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import cli
from corral.core.views import JobState, Progress

sys.path.insert(0, str(Path(__file__).parent))
from test_api_fake import ServerThread, make_running

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
GOOD_YAML = """\
role: ml
name: score
tier: preemptible
master:
  command: run-master
  ports: 1
workers:
  command: run-worker
  cpus: 2
  min: 1
  max: 4
  initial: 2
labels:
  team: search
"""
KEY = "ml/default/score"


def corral(*args: str, api: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CORRAL_API", "CORRAL_DEBUG", "CORRAL_TOKEN", "CORRAL_CA_FILE",
                             "CORRAL_CONFIG")}
    full_env["XDG_CONFIG_HOME"] = str(ROOT / "tests" / "no-such-config-dir")  # no user config
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "framework"), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    argv = [sys.executable, "-m", "corral.cli", *(["--api", api] if api else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT)


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


def free_port() -> int:
    # Bind then release: nothing listens on the port afterwards.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[ServerThread]:
    st = ServerThread()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(GOOD_YAML)
    return p


def test_submit_prints_the_key_and_is_idempotent(server: ServerThread, job_file: Path) -> None:
    p = corral("submit", str(job_file), "--request-id", "req-1", api=server.address)
    assert (p.returncode, p.stdout) == (0, KEY + "\n"), p.stderr
    view = server.backend.jobs[KEY]
    assert view.spec.tier.value == "preemptible"
    assert view.spec.workers.template.resources.cpus == 2
    assert view.spec.labels == (("team", "search"),)
    assert view.request_id == "req-1"

    again = corral("submit", str(job_file), "--request-id", "req-1", api=server.address)
    assert (again.returncode, again.stdout) == (0, KEY + "\n")
    assert len(server.backend.jobs) == 1

    other = corral("submit", str(job_file), api=server.address)
    assert other.returncode == 1
    assert "exists" in other.stderr and KEY in other.stderr
    no_traceback(other)


def test_submit_json_output_parses(server: ServerThread, job_file: Path) -> None:
    p = corral("--json", "submit", str(job_file), api=server.address)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["key"] == KEY
    assert data["state"] == "PENDING"
    assert data["spec"]["workers"]["max"] == 4
    assert data["tasks"][0]["pending_reason"] == "waiting for an offer"
    assert data["request_id"].startswith("cli-")


def test_bad_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: ml\nname: [unclosed\nmaster: {}\n")
    p = corral("submit", str(bad), api=f"127.0.0.1:{free_port()}")
    assert p.returncode == 2
    assert f"{bad}: not valid YAML at line" in p.stderr
    no_traceback(p)

    missing = corral("submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "nope.yaml" in missing.stderr
    no_traceback(missing)


def test_every_bad_field_is_listed_before_calling_the_api(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: ML Team\nname: x\ntier: gold\nmaster: {cpus: -1}\n"
                   "workers: {command: w, min: 3, max: 1}\nchekpoint: {}\n")
    # Nothing listens at the address: the spec must be rejected locally, first.
    p = corral("submit", str(bad), api=f"127.0.0.1:{free_port()}")
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert lines[0] == f"corral: {bad}: invalid job spec:"
    fields = {ln.strip().split(":", 1)[0] for ln in lines[1:]}
    assert {"role", "tier", "master.cpus", "master.command", "workers.min",
            "chekpoint"} <= fields
    no_traceback(p)


def test_unreachable_api_says_how_to_fix_it(job_file: Path) -> None:
    port = free_port()
    for args in (("jobs",), ("status", KEY), ("submit", str(job_file)), ("watch", KEY)):
        p = corral(*args, env={"CORRAL_API": f"127.0.0.1:{port}"})
        assert p.returncode == 2, args
        assert p.stderr == (f"corral: cannot reach the Corral API at 127.0.0.1:{port} (is "
                            "`corral scheduler` running? set --api or CORRAL_API)\n")
        no_traceback(p)


def test_jobs_status_kill_scale(server: ServerThread, job_file: Path) -> None:
    assert corral("submit", str(job_file), api=server.address).returncode == 0
    server.call(make_running, server.backend, KEY, 250, 1000)

    table = corral("jobs", api=server.address)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["KEY", "STATE", "WORKERS", "PROGRESS", "AGE"]
    assert row.split()[:5] == [KEY, "RUNNING", "2/2", "250/1000", "25%"]
    assert corral("jobs", "--role", "nobody", api=server.address).stdout == "no jobs\n"
    listed = json.loads(corral("jobs", "--json", api=server.address).stdout)
    assert [j["key"] for j in listed] == [KEY]

    # role/name is short for role/default/name.
    status = corral("status", "ml/score", api=server.address)
    assert status.returncode == 0, status.stderr
    assert "state      RUNNING" in status.stdout
    assert "progress   250/1000 (25%)" in status.stdout
    assert "worker-1" in status.stdout and "host-1" in status.stdout

    scaled = corral("scale", KEY, "4", api=server.address)
    assert (scaled.returncode, scaled.stdout) == (0, f"{KEY}: desired workers 4\n")
    too_many = corral("scale", KEY, "40", api=server.address)
    assert too_many.returncode == 2
    assert "workers: must be within 1..4, got 40" in too_many.stderr
    no_traceback(too_many)

    killed = corral("kill", KEY, api=server.address)
    assert (killed.returncode, killed.stdout) == (0, f"{KEY}: kill requested, state KILLED\n")
    again = corral("kill", KEY, api=server.address)
    assert again.returncode == 1 and "already ended KILLED" in again.stderr


def test_status_shows_pending_reasons(server: ServerThread, job_file: Path) -> None:
    corral("submit", str(job_file), api=server.address)
    p = corral("status", KEY, api=server.address)
    rows = {ln.split()[0]: ln for ln in p.stdout.splitlines() if ln.startswith(("master",
                                                                                  "worker"))}
    assert "waiting for an offer" in rows["master"]
    assert "master not running" in rows["worker-0"]


def test_status_tells_a_loss_that_came_back(server: ServerThread, job_file: Path) -> None:
    from corral.core.views import LossView, Resilience

    corral("submit", str(job_file), api=server.address)
    tid = "corral.ml.default.score.worker-1.1"
    back = LossView("worker-1", tid, "unreachable", detected_at=server.backend.clock,
                    work_lost_seconds=4.0, recovered_at=server.backend.clock + 2,
                    recovery_seconds=2.0, replacement_task_id=tid[:-1] + "2",
                    returned_at=server.backend.clock + 30)
    server.call(server.backend.update, KEY, resilience=Resilience(
        losses=1, recoveries=1, work_lost_seconds=4.0, recovery_seconds_total=2.0,
        recovery_seconds_max=2.0, recent=(back,)))
    p = corral("status", KEY, api=server.address)
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if tid in ln)
    assert line.split()[:2] == ["unreachable", "worker-1"], line
    assert "lost 4.0s, back in 2.00s; it came back and was killed (the replacement kept " \
        "the slot)" in line, line


def test_unknown_job(server: ServerThread) -> None:
    for args in (("status", "ml/nope"), ("kill", "ml/x/nope"), ("watch", "ml/nope")):
        p = corral(*args, api=server.address)
        assert p.returncode == 1, args
        assert p.stderr.startswith("corral: no job named ml/"), p.stderr
        no_traceback(p)


def _watch_until(server: ServerThread, final: JobState, *extra: str) -> tuple[int, str]:
    """Start `corral watch`, drive the job through progress to ``final``, return its result."""
    full_env = {k: v for k, v in os.environ.items() if k != "CORRAL_API"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "--api", server.address, "watch", KEY, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()   # the job as it is now
        server.call(make_running, server.backend, KEY, 30, 100)
        second = proc.stdout.readline()
        server.call(server.backend.update, KEY, progress=Progress(done=100, total=100))
        server.call(server.backend.update, KEY, state=final)
        rest, err = proc.communicate(timeout=20)
        assert "Traceback" not in err
        return proc.returncode, first + second + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_watch_shows_progress_and_exits_by_outcome(server: ServerThread, job_file: Path) -> None:
    corral("submit", str(job_file), api=server.address)
    code, out = _watch_until(server, JobState.FINISHED)
    lines = out.splitlines()
    assert code == 0, out
    assert "PENDING" in lines[0] and "0/0" in lines[0]
    assert lines[1] == " 30% 30/100  RUNNING  workers 2/2"
    assert lines[-1] == f"{KEY} FINISHED"


def test_watch_of_a_failed_job_exits_1_and_json_streams(server: ServerThread,
                                                         job_file: Path) -> None:
    corral("submit", str(job_file), api=server.address)
    code, out = _watch_until(server, JobState.FAILED, "--json")
    assert code == 1
    states = [json.loads(ln)["state"] for ln in out.splitlines()]
    assert states[0] == "PENDING" and states[1] == "RUNNING" and states[-1] == "FAILED"


def test_follows_the_leader_once() -> None:
    leader, follower = ServerThread(), ServerThread()
    try:
        follower.backend.follower = True
        follower.backend.leader = leader.address
        p = corral("leader", api=follower.address)
        assert (p.returncode, p.stdout) == (0, leader.address + "\n"), p.stderr
        p = corral("leader", "--json", api=leader.address)
        assert json.loads(p.stdout) == {"leader": leader.address, "asked": leader.address}

        # Reads and writes land on the leader even when the follower is asked.
        p = corral("jobs", "--json", api=follower.address)
        assert (p.returncode, json.loads(p.stdout)) == (0, [])

        # A follower that points at another follower: follow once, then a clear error.
        leader.backend.follower = True
        leader.backend.leader = follower.address
        p = corral("jobs", api=follower.address)
        assert p.returncode == 2
        assert "is not the leader and points to" in p.stderr
        no_traceback(p)

        follower.backend.leader = None
        p = corral("jobs", api=follower.address)
        assert p.returncode == 2 and "no leader is known yet" in p.stderr

        # During a failover the follower still names the dead leader: say so, and name
        # the address the user gave.
        dead = f"127.0.0.1:{free_port()}"
        follower.backend.leader = dead
        p = corral("leader", api=follower.address)
        assert p.returncode == 2
        assert p.stderr == (f"corral: {follower.address} names {dead} as the leader, but "
                            f"{dead} does not answer: a failover is probably in progress; "
                            "retry in a few seconds\n")
    finally:
        follower.stop()
        leader.stop()


def test_submit_through_a_follower_lands_on_the_leader(job_file: Path) -> None:
    leader, follower = ServerThread(), ServerThread()
    try:
        follower.backend.follower = True
        follower.backend.leader = leader.address
        p = corral("submit", str(job_file), "--request-id", "r9", api=follower.address)
        assert p.returncode == 0, p.stderr
        assert list(leader.backend.jobs) == [KEY]
        assert follower.backend.jobs == {}
    finally:
        follower.stop()
        leader.stop()


def test_usage_errors_exit_2_without_traceback() -> None:
    p = corral("scale", KEY, "many")
    assert p.returncode == 2 and "invalid int value" in p.stderr
    p = corral("frobnicate")
    assert p.returncode == 2
    no_traceback(p)


def test_scheduler_rejects_a_bad_policy_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("roles:\n  - {name: ml, weight: -1}\npolicy: {max_step_up: 0}\n")
    # The master and API addresses are never used: the options are checked first.
    p = corral("scheduler", "--master", "http://127.0.0.1:9", "--policy", str(bad))
    assert p.returncode == 2, p.stderr
    assert "roles[0].weight" in p.stderr and "policy.max_step_up" in p.stderr, p.stderr
    no_traceback(p)
    p = corral("scheduler", "--master", "http://127.0.0.1:9", "--overprovision", "-1")
    assert p.returncode == 2 and "--overprovision must be a number >= 0" in p.stderr
    no_traceback(p)
    for bad_gc in ("5", "nan"):
        p = corral("scheduler", "--master", "http://127.0.0.1:9", "--gc-full-every", bad_gc)
        assert p.returncode == 2 and "--gc-full-every must be 0" in p.stderr, p.stderr
        no_traceback(p)


def test_scheduler_rejects_a_master_address_it_cannot_use() -> None:
    for master, says in (("htp://127.0.0.1:5050", "unknown scheme 'htp://'"),
                         ("zk://127.0.0.1:2181", "needs hosts and a path"),
                         ("127.0.0.1", "needs host:port")):
        p = corral("scheduler", "--master", master, "--api", "127.0.0.1:0")
        assert p.returncode == 2, (master, p.stderr)
        first = p.stderr.splitlines()[0]
        assert first.startswith("corral scheduler: bad --master: ") and says in first, p.stderr
        no_traceback(p)


def test_scheduler_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        api = f"127.0.0.1:{busy.getsockname()[1]}"
        p = corral("scheduler", "--master", "http://127.0.0.1:9", "--api", api)
    assert p.returncode == 2
    assert p.stderr == (f"corral scheduler: cannot listen for the Corral API on {api}: the "
                        "address is already in use (another scheduler? pick another --api "
                        "port)\n")  # and no gRPC add_port.cc line before it


def test_scheduler_options_configure_the_core(tmp_path: Path) -> None:
    from corral.runtime.main import build_parser, policy_settings
    from corral.runtime.service import RuntimeConfig

    good = tmp_path / "policy.yaml"
    good.write_text("interval_s: 2\nroles:\n  - {name: ml, weight: 3}\n")
    args = build_parser().parse_args(["--policy", str(good), "--overprovision", "2",
                                      "--spread-attribute", "zone"])
    config = RuntimeConfig()
    assert policy_settings(args, config) is None
    core = config.make_core()
    assert core.elastic is not None and core.elastic.interval == 2.0
    assert core.elastic.roles["ml"].weight == 3.0
    assert core.config.overprovision.multiple == 2.0 and core.config.default_spread == "zone"
    args = build_parser().parse_args(["--no-elastic", "--spread-attribute", ""])
    config = RuntimeConfig()
    assert policy_settings(args, config) is None
    core = config.make_core()
    assert core.elastic is None and core.config.default_spread is None


# In-process: the pass-through commands hand argv on untouched.


def test_passthrough_hands_the_rest_of_argv_to_the_owner(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("corral_test_fake_sim")
    fake.main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "corral_test_fake_sim", fake)
    monkeypatch.setitem(cli.PASSTHROUGH, "sim", ("corral_test_fake_sim", "sim"))
    assert cli.run(["--api", "x:1", "sim", "--help", "--agents", "5", "run"]) == 7
    assert seen == [["--help", "--agents", "5", "run"]]


def test_passthrough_to_a_missing_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(cli.PASSTHROUGH, "demo", ("corral.no_such_module_here", "demo"))
    with pytest.raises(cli.CliError) as ei:
        cli.run(["demo", "--fast"])
    assert ei.value.code == 2
    assert "corral demo is not available" in ei.value.lines[0]


def test_json_flag_works_before_and_after_the_command(server: ServerThread) -> None:
    for args in (("--json", "jobs"), ("jobs", "--json")):
        p = corral(*args, api=server.address)
        assert (p.returncode, json.loads(p.stdout)) == (0, [])


# ------------------------------------------------------------ credentials and replicas


def test_token_prints_a_token_and_the_hash_the_auth_file_wants() -> None:
    from corral.api.auth import hash_token

    p = corral("token", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert len(doc["token"]) >= 43 and doc["token_sha256"] == hash_token(doc["token"])
    assert json.loads(corral("token", "--json").stdout)["token"] != doc["token"]


def test_tls_token_and_config_file(tmp_path: Path, job_file: Path) -> None:
    from corral.api.auth import hash_token, parse_auth
    from corral.api.security import server_credentials
    from tests.certs import TestCA

    ca = TestCA(tmp_path / "pki")
    srv = ca.server()
    token = "s3cret-token-for-ml-0123456789"
    auth = parse_auth({"principals": [
        {"name": "alice", "token_sha256": hash_token(token), "roles": ["ml"]}]})
    server = ServerThread(credentials=server_credentials(srv.cert, srv.key), auth=auth)
    try:
        # Flags.
        p = corral("--ca-file", str(ca.pem), "--token", token, "submit", str(job_file),
                   api=server.address)
        assert (p.returncode, p.stdout) == (0, KEY + "\n"), p.stderr
        # Environment.
        p = corral("jobs", api=server.address,
                   env={"CORRAL_TOKEN": token, "CORRAL_CA_FILE": str(ca.pem)})
        assert p.returncode == 0 and KEY in p.stdout, p.stderr
        # The config file, with a path relative to it, named by CORRAL_CONFIG.
        cfg_dir = tmp_path / "cfg"
        cfg_dir.mkdir()
        (cfg_dir / "ca.pem").write_bytes(ca.pem.read_bytes())
        cfg = cfg_dir / "config.yaml"
        cfg.write_text(f"api: [{server.address}]\ntoken: {token}\nca_file: ca.pem\n")
        p = corral("status", KEY, env={"CORRAL_CONFIG": str(cfg)})
        assert p.returncode == 0 and "state      PENDING" in p.stdout, p.stderr
        # ... and found at $XDG_CONFIG_HOME/corral/config.yaml.
        xdg = tmp_path / "xdg"
        (xdg / "corral").mkdir(parents=True)
        (xdg / "corral" / "config.yaml").write_text(cfg.read_text().replace(
            "ca.pem", str(ca.pem)))
        p = corral("jobs", env={"XDG_CONFIG_HOME": str(xdg)})
        assert p.returncode == 0 and KEY in p.stdout, p.stderr
        # A flag beats the config file: a wrong token is refused by the server.
        p = corral("jobs", "--token", "wrong", env={"CORRAL_CONFIG": str(cfg)})
        assert p.returncode == 2 and "bearer token is not known" in p.stderr
        no_traceback(p)
        # No token at all.
        p = corral("--ca-file", str(ca.pem), "jobs", api=server.address)
        assert p.returncode == 2 and "requires credentials" in p.stderr
        no_traceback(p)
        # Another role's job.
        p = corral("--ca-file", str(ca.pem), "--token", token, "kill", "ads/default/x",
                   api=server.address)
        assert p.returncode == 1 and "permission denied: alice may not act for role ads" \
            in p.stderr
        # A bad config file is named with its problem.
        cfg.write_text("api: 3\ncolour: blue\n")
        p = corral("jobs", env={"CORRAL_CONFIG": str(cfg)})
        assert p.returncode == 2 and "colour: unknown setting" in p.stderr \
            and "api: must be" in p.stderr
        no_traceback(p)
    finally:
        server.stop()


def test_a_silent_replica_costs_a_share_of_the_deadline_not_all_of_it() -> None:
    """One address accepts connections and never answers (a frozen or cut-off replica);
    the CLI moves on to the next replica it knows."""
    live = ServerThread()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nothing ever reads or answers
    try:
        dead = f"127.0.0.1:{free_port()}"
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        p = corral("--timeout", "6", "jobs", api=f"{hung},{dead},{live.address}")
        took = time.monotonic() - started
        assert (p.returncode, p.stdout) == (0, "no jobs\n"), p.stderr
        assert took < 5.5, took  # a 2 s share on the silent one, the dead one at once
        other_dead = f"127.0.0.1:{free_port()}"
        p = corral("jobs", api=f"{dead},{other_dead}")
        assert p.returncode == 2 and p.stderr.startswith(
            f"corral: cannot reach the Corral API at any of {dead}, {other_dead} ")
        # Learned from a "not the leader" answer: a follower listed first hands over.
        follower = ServerThread()
        try:
            follower.backend.follower = True
            follower.backend.leader = live.address
            p = corral("leader", api=f"{follower.address},{dead}")
            assert (p.returncode, p.stdout) == (0, live.address + "\n"), p.stderr
        finally:
            follower.stop()
    finally:
        silent.close()
        live.stop()


def test_jobs_follows_every_page(server: ServerThread) -> None:
    from corral.core.spec import parse_job_spec

    async def many() -> None:
        for i in range(1_234):
            await server.backend.submit(parse_job_spec({
                "role": "ml", "name": f"j{i:04d}", "master": {"command": "m"},
                "workers": {"command": "w"}}), f"r{i}")

    server.call(lambda: asyncio.ensure_future(many()))
    deadline = time.monotonic() + 20
    while len(server.backend.jobs) < 1_234 and time.monotonic() < deadline:
        time.sleep(0.05)
    p = corral("jobs", "--json", api=server.address)
    assert p.returncode == 0, p.stderr
    keys = [j["key"] for j in json.loads(p.stdout)]
    assert len(keys) == 1_234 and keys == sorted(keys)


def test_a_scheduler_that_cannot_reach_mesos_says_so_in_the_pending_reason(
        tmp_path: Path, job_file: Path) -> None:
    from corral.localcluster.procs import start_scheduler

    # A real scheduler process pointed at a port nothing listens on: the job is taken,
    # stays pending, and its reason names the master and the failure.
    master = f"127.0.0.1:{free_port()}"
    sched, api = start_scheduler(f"http://{master}", tmp_path)
    try:
        p = corral("submit", str(job_file), api=api)
        assert p.returncode == 0, p.stderr
        deadline = time.monotonic() + 20
        while True:
            p = corral("status", KEY, api=api)
            no_traceback(p)
            if "not connected to the Mesos master: " in p.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "not connected to the Mesos master: " in p.stdout, p.stdout
        assert f"cannot connect to {master}: connection refused" in p.stdout, p.stdout
        assert "PENDING" in p.stdout, p.stdout
    finally:
        sched.stop(grace=5)
