"""Corral's Mesos client and scheduler against a localmesos that authenticates frameworks
and serves TLS: real certificates (``cryptography``), real HTTP, a real ``corral scheduler``
process for the exit-code contract."""

from __future__ import annotations

import asyncio
import getpass
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.localcluster.procs import start_localmesos
from corral.localmesos import LocalMesos, LocalMesosConfig
from corral.mesos.client import SchedulerClient
from corral.mesos.errors import AuthenticationFailed
from tests.tlsutil import make_certs

FW = {"user": getpass.getuser(), "name": "corral-credentials-test", "failover_timeout": 60.0}


def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"credentials": [{"principal": "corral", "secret": "s3cret"}]}))
    return path


def test_client_authenticates_over_tls_and_stops_on_bad_credentials(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls")
    config = LocalMesosConfig(port=0, agents=1, allocation_interval=0.05,
                              heartbeat_interval=0.2, credentials=str(credentials(tmp_path)),
                              authenticate_http_frameworks=True, tls_cert=str(certs.cert),
                              tls_key=str(certs.key))

    async def go() -> None:
        async with LocalMesos(config) as lm:
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            events: list[dict[str, Any]] = []

            async def on_event(ev: dict[str, Any]) -> None:
                events.append(ev)

            good = SchedulerClient(lm.master_url, FW, on_event, ssl_context=ctx,
                                   credentials=("corral", "s3cret"), request_timeout=5)
            task = asyncio.ensure_future(good.run())
            assert await good.wait_connected(10)
            fid = good.framework_id
            assert fid is not None
            assert lm.master.frameworks[fid].info["principal"] == "corral"
            await good.revive()                   # a call carries the credentials too
            await good.close()
            await asyncio.wait_for(task, 10)

            for creds in (("corral", "wrong"), None):
                bad = SchedulerClient(lm.master_url, FW, on_event, ssl_context=ctx,
                                      credentials=creds, request_timeout=5)
                started = time.monotonic()
                with pytest.raises(AuthenticationFailed) as exc:
                    await asyncio.wait_for(bad.run(), 10)
                assert time.monotonic() - started < 5     # no retry loop
                assert exc.value.status == 401
                assert "mesos-master-scheduler" in str(exc.value)

    asyncio.run(go())


def test_scheduler_with_a_wrong_secret_exits_2_saying_why(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lm, url = start_localmesos(tmp_path / "mesos", logs, agents=1, extra=[
        "--credentials", str(credentials(tmp_path)), "--authenticate-http-frameworks"])
    try:
        secret = tmp_path / "secret"
        secret.write_text("not-the-secret\n")
        secret.chmod(0o600)
        run = subprocess.run(
            [sys.executable, "-m", "corral.runtime.main", "--master", url,
             "--api", "127.0.0.1:0", "--principal", "corral", "--secret-file", str(secret)],
            capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr[-2000:]
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"corral scheduler: Mesos at {url} refused principal 'corral'")
        assert "HTTP 401" in last and "--secret-file" in last
        assert "Traceback" not in run.stderr
    finally:
        lm.stop(grace=10)
