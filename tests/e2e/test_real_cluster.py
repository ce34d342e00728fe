"""End to end as on a production cluster: the executor shipped by the fetcher, to agents
whose environment cannot import Corral; the framework authenticated over TLS; executors
authenticated; a hijack attempt refused.

With localmesos the cluster is set up like a secured Mesos: ``--tls-cert/--tls-key``,
``--credentials`` with ``--authenticate-http-frameworks`` and ``-readwrite``, executor
authentication (localmesos' default) and ``--executor-environment-variables`` holding only
``PATH=/usr/bin:/bin``, so executors and tasks get the machine's stock ``python3`` and
nothing of this checkout. The scheduler serves the executor with ``--http``. Against an
external master (``CORRAL_E2E_MASTER``) the job runs the same way with the flags in
``CORRAL_E2E_SCHEDULER_ARGS`` (which must ship the executor: ``--http`` or
``--executor-uri``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from corral.core.spec import parse_job_spec
from corral.core.views import JobState
from tests.e2e.conftest import (
    EXTERNAL_MASTER,
    SCHEDULER_ARGS,
    Cluster,
    running_cluster,
    wait_for,
)
from tests.tlsutil import make_certs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BARE_PATH = "/usr/bin:/bin"

# The job: stdlib and the SDK only. The master waits for every worker's report and
# checks that Corral itself is out of reach; a worker reports what it could import.
JOB = r'''
import json, os, sys, time
from pathlib import Path
from corral_executor import sdk

out = Path(sys.argv[2])
info = sdk.task_info()
def importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False
report = {"slot": info.role, "index": info.worker_index, "python": sys.executable,
          "corral": importable("corral"), "aiohttp": importable("aiohttp"),
          "sdk": sdk.__file__, "token": "MESOS_EXECUTOR_AUTHENTICATION_TOKEN" in os.environ}
if sys.argv[1] == "worker":
    (out / f"worker-{info.worker_index}.json").write_text(json.dumps(report))
    while True:
        time.sleep(1)
sdk.checkpoint({"started": True})
deadline = time.time() + 60
while time.time() < deadline:
    done = sorted(out.glob("worker-*.json"))
    sdk.report_progress(len(done), 2)
    if len(done) == 2:
        break
    time.sleep(0.2)
(out / "master.json").write_text(json.dumps(report))
sys.exit(0 if len(done) == 2 and sdk.restore() == {"started": True} else 1)
'''


def _stock_python() -> str:
    found = shutil.which("python3", path=BARE_PATH)
    if found is None:
        pytest.skip(f"no python3 on {BARE_PATH}")
    check = subprocess.run([found, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                           capture_output=True, text=True, timeout=30)
    if check.stdout.strip() != "True":
        pytest.skip(f"{found} is older than Python 3.11")
    return found


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if EXTERNAL_MASTER:
        if not {"--http", "--executor-uri"} & {a.split("=")[0] for a in SCHEDULER_ARGS}:
            pytest.skip("CORRAL_E2E_SCHEDULER_ARGS must ship the executor (--http or "
                        "--executor-uri) for this test")
        with running_cluster(tmp_path_factory, "corral-real", agents=0, spot=0) as c:
            yield c
        return
    _stock_python()
    keys = tmp_path_factory.mktemp("keys")
    certs = make_certs(keys / "tls")
    creds = keys / "credentials.json"
    creds.write_text(json.dumps({"credentials": [{"principal": "corral", "secret": "s3cret"}]}))
    secret = keys / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    with running_cluster(
            tmp_path_factory, "corral-real", agents=2, spot=1,
            localmesos_extra=[
                "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
                "--tls-ca-file", str(certs.ca), "--credentials", str(creds),
                "--authenticate-http-frameworks", "--authenticate-http-readwrite",
                "--executor-environment-variables", json.dumps({"PATH": BARE_PATH})],
            scheduler_extra=[
                "--http", "127.0.0.1:0", "--principal", "corral", "--secret-file",
                str(secret), "--master-ca-file", str(certs.ca)]) as c:
        c.ca = certs.ca  # type: ignore[attr-defined]
        yield c


def test_job_runs_where_corral_cannot_be_imported(secured: Cluster) -> None:
    script = secured.work / "job.py"
    script.write_text(JOB)
    out = secured.work / "out" / uuid.uuid4().hex[:8]
    out.mkdir(parents=True)
    out.chmod(0o777)
    cmd = f"python3 {shlex.quote(str(script))} {{}} {shlex.quote(str(out))}"
    spec = {
        "role": "e2e", "environment": "real", "name": f"bare-{uuid.uuid4().hex[:6]}",
        "master": {"command": cmd.format("master"), "cpus": 0.2, "mem": 64},
        "workers": {"command": cmd.format("worker"), "cpus": 0.2, "mem": 64,
                    "min": 2, "max": 2, "initial": 2},
        "checkpoint": {"uri": (secured.work / "ckpt").as_uri(), "interval_seconds": 5},
        "kill_grace_seconds": 1,
    }
    with secured.client() as c:
        job = c.submit(parse_job_spec(spec), request_id=uuid.uuid4().hex)
        final = wait_for(c, job.key, lambda v: v.state.terminal, timeout=120)
    assert final.state is JobState.FINISHED, final
    assert final.progress.done == final.progress.total == 2
    reports = [json.loads((out / f"{n}.json").read_text())
               for n in ("master", "worker-0", "worker-1")]
    for r in reports:
        assert r["corral"] is False and r["aiohttp"] is False, r
        # The SDK came out of the archive the fetcher put in the sandbox...
        assert "/corral-executor.pyz/corral_executor/sdk.py" in r["sdk"], r
        # ...and the executor's credential did not reach the job.
        assert r["token"] is False, r
    if secured.localmesos is not None:
        # The agent's stock python3 from the bare PATH ran everything, not this one.
        assert {r["python"] for r in reports} == {_stock_python()}
        log = secured.scheduler.log_path.read_text()
        assert "agents fetch the executor from http://" in log


def test_hijack_without_credentials_gets_401(secured: Cluster) -> None:
    import asyncio
    import ssl

    state_ctx = ssl.create_default_context(cafile=str(secured.ca))  # type: ignore[attr-defined]

    async def go() -> tuple[int, str, int]:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=state_ctx)) as h:
            # The framework id is no secret: the master's state shows it to anyone.
            async with h.get(secured.master_url + "/master/state") as r:
                fid = next(f["id"] for f in (await r.json())["frameworks"]
                           if f["principal"] == "corral")
            body = {"type": "SUBSCRIBE", "framework_id": {"value": fid}, "subscribe": {
                "framework_info": {"user": "mallory", "name": "corral", "id": {"value": fid}}}}
            async with h.post(secured.master_url + "/api/v1/scheduler", data=json.dumps(body),
                              headers={"Content-Type": "application/json"}) as r:
                status, challenge = r.status, r.headers.get("WWW-Authenticate", "")
            teardown = {"type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}}
            async with h.post(secured.master_url + "/api/v1", data=json.dumps(teardown),
                              headers={"Content-Type": "application/json"}) as r:
                return status, challenge, r.status

    status, challenge, teardown_status = asyncio.run(go())
    assert (status, challenge) == (401, 'Basic realm="mesos-master-scheduler"')
    assert teardown_status == 401
    # Corral's subscription was not disturbed.
    assert secured.scheduler.alive()
    assert "failed over" not in secured.scheduler.log_path.read_text().lower()
