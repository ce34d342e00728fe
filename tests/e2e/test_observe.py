"""What operators see, against a real scheduler on localmesos: the metrics page (parsed
with prometheus_client's own parser), the web UI in a real headless Chromium (Debian's
``chromium``, driven by Playwright; a screenshot is kept as a test artifact), the job
history surviving a scheduler restart, and ``corral history`` / ``corral cost``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.localcluster.procs import start_scheduler
from tests.e2e.conftest import EXTERNAL_MASTER, Cluster, running_cluster, wait_for
from tests.zk import free_port

pytestmark = pytest.mark.skipif(bool(EXTERNAL_MASTER), reason="reads the scheduler's "
                                "--http on this machine")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CORRAL_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts")
FAMILIES = {
    "corral_jobs", "corral_tasks", "corral_pending_tasks", "corral_workers_desired",
    "corral_workers_running", "corral_role_fair_share", "corral_role_allocation_share",
    "corral_placements", "corral_decision_seconds", "corral_event_loop_lag_seconds",
    "corral_offers", "corral_offers_held", "corral_losses", "corral_recoveries",
    "corral_work_lost_seconds", "corral_leader", "corral_leadership_terms",
    "corral_store_write_seconds", "corral_checkpoint_age_seconds", "corral_history_backlog",
    "corral_role_cost",
}


class Observed:
    def __init__(self, cluster: Cluster, http: str, history: str, prices: Path) -> None:
        self.cluster = cluster
        self.http = http
        self.history = history
        self.prices = prices

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.http + path, timeout=10) as r:
            return r.read().decode()

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Samples by sample name, and each family's name with no samples of its own
        (so a family with nothing to report yet is still seen)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(self.get("/metrics")):
            out.setdefault(fam.name, [])
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def corral(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral.cli", "--api",
                               self.cluster.api, *args], capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    side = tmp_path_factory.mktemp("observe")
    prices = side / "prices.yaml"
    prices.write_text("currency: USD\nmarkets:\n  on-demand: {cpu_hour: 0.05}\n"
                      "  spot: {cpu_hour: 0.015}\n")
    history = f"sqlite:///{side}/history.db"
    port = free_port()
    extra = ["--http", f"127.0.0.1:{port}", "--history", history, "--prices", str(prices)]
    with running_cluster(tmp_path_factory, "corral-observe", agents=2, spot=1,
                         scheduler_extra=extra) as c:
        yield Observed(c, f"http://127.0.0.1:{port}", history, prices)


def _value(m: dict[str, list[tuple[dict[str, str], float]]], family: str,
           **labels: str) -> float:
    return sum(v for lab, v in m.get(family, []) if all(lab.get(k) == x
                                                        for k, x in labels.items()))


def test_metrics_families_present_and_changing(observed: Observed) -> None:
    assert observed.get("/healthz") == "ok\n"
    # Ready once the scheduler has subscribed to Mesos (503 until then).
    deadline = time.monotonic() + 20
    while True:
        try:
            assert observed.get("/readyz").startswith("ready")
            break
        except urllib.error.HTTPError as e:
            assert e.code == 503 and time.monotonic() < deadline, e
            time.sleep(0.2)
    before = observed.metrics()
    assert set(before) >= FAMILIES, sorted(FAMILIES - set(before))
    c = observed.cluster
    spec, _ = c.scoring_spec(chunks=8, workers=2, name="metrics")
    with c.client() as client:
        view = client.submit(_spec(spec), "m1")
        wait_for(client, view.key, lambda v: v.state.value == "RUNNING", 60)
        running = observed.metrics()
        assert _value(running, "corral_jobs", role="e2e", state="RUNNING") >= 1
        assert _value(running, "corral_tasks", state="running", kind="master") >= 1
        assert _value(running, "corral_workers_desired", role="e2e") >= 2
        wait_for(client, view.key, lambda v: v.state.terminal, 90)
    deadline = time.monotonic() + 20
    after = observed.metrics()
    while _value(after, "corral_history_records_written_total") < 1 \
            and time.monotonic() < deadline:
        time.sleep(0.3)
        after = observed.metrics()
    assert _value(after, "corral_jobs", role="e2e", state="FINISHED") >= 1
    assert _value(after, "corral_placements_total") > _value(before, "corral_placements_total")
    assert _value(after, "corral_decision_seconds_count") > \
        _value(before, "corral_decision_seconds_count")
    assert _value(after, "corral_offers_total", outcome="received") > 0
    assert _value(after, "corral_history_records_written_total") >= 1
    assert _value(after, "corral_role_cost", role="e2e", category="useful") > 0
    assert _value(after, "corral_leader") == 1
    hist = observed.corral("history", "--json")
    assert hist.returncode == 0, hist.stderr
    assert "e2e/test/metrics" in [j["key"] for j in json.loads(hist.stdout)]
    cost = observed.corral("cost", "--json")
    assert cost.returncode == 0, cost.stderr
    rows = json.loads(cost.stdout)["roles"]
    assert rows and rows[0]["role"] == "e2e" and rows[0]["cost"]["total"] > 0
    status = observed.corral("status", "e2e/test/metrics")
    assert "cost       " in status.stdout and "USD" in status.stdout


def _spec(data: dict) -> object:
    from corral.core.spec import parse_job_spec

    return parse_job_spec(data)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_web_ui_in_a_headless_browser(observed: Observed) -> None:
    from playwright.sync_api import sync_playwright

    c = observed.cluster
    spec, _ = c.scoring_spec(chunks=8, workers=2, name="ui")
    spec["workers"]["cpus"] = 64        # no agent has 64 cpus: the workers stay pending
    with c.client() as client:
        view = client.submit(_spec(spec), "ui1")
        wait_for(client, view.key, lambda v: v.state.value == "RUNNING" and any(
            t.why is not None and t.why.vetoes for t in v.tasks), 60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="corral-chromium-")
    try:
        with sync_playwright() as pw:
            # A fresh profile directory: Playwright passes it as --user-data-dir.
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                viewport={"width": 1280, "height": 900},
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run",
                      "--disable-quic"])
            try:
                page = browser.new_page()
                page.goto(observed.http + "/ui/?role=e2e", timeout=20_000)
                assert page.locator("table.jobs").get_by_text("e2e/test/ui").count() == 1
                page.get_by_role("link", name="e2e/test/ui").click()
                page.wait_for_selector("table.tasks", timeout=10_000)
                tasks = page.locator("table.tasks").inner_text()
                assert "master" in tasks and "worker-0" in tasks and "TASK_RUNNING" in tasks
                assert "PENDING" in tasks and "cpus" in tasks   # why: the cpus veto
                page.screenshot(path=str(ARTIFACTS / "ui-job.png"), full_page=True)
                page.goto(observed.http + "/ui/roles", timeout=20_000)
                assert "e2e" in page.locator("table.roles").inner_text()
                page.goto(observed.http + "/ui/agents", timeout=20_000)
                assert "agents" in page.content()
            finally:
                browser.close()
    finally:
        import shutil

        shutil.rmtree(profile, ignore_errors=True)
    assert (ARTIFACTS / "ui-job.png").stat().st_size > 10_000
    with c.client() as client:
        client.kill(view.key)


def test_history_survives_a_scheduler_restart(observed: Observed) -> None:
    c = observed.cluster
    c.scheduler.stop(grace=10)
    logs = c.work / "logs"
    sched, api = start_scheduler(c.master_url, logs, name="scheduler-again", extra=[
        "--history", observed.history, "--prices", str(observed.prices)])
    try:
        p = subprocess.run([sys.executable, "-m", "corral.cli", "--api", api, "history",
                            "--json", "--role", "e2e", "--state", "FINISHED"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        keys = [j["key"] for j in json.loads(p.stdout)]
        assert "e2e/test/metrics" in keys
        text = subprocess.run([sys.executable, "-m", "corral.cli", "--api", api, "history"],
                              capture_output=True, text=True, timeout=60)
        assert "e2e/test/metrics" in text.stdout and "FINISHED" in text.stdout
    finally:
        sched.stop(grace=10)
