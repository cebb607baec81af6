"""The Prometheus kit for real: promtool checks and rule unit tests, then a Prometheus server on loopback that
scrapes a running shadow, sees its series arrive and an alert rule fire, and evaluates every dashboard query.

Needs Debian's ``prometheus`` package (promtool and the server).  Without it these tests skip with the reason,
except under ``CI=true``, where they fail: CI must install it (``apt-get install -y prometheus``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, skip_or_fail_under_ci
from tests.test_dashboard import alert_exprs, dashboard_exprs, start_shadow, stop

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found: install Debian's prometheus package (apt-get install -y prometheus)"
        skip_or_fail_under_ci(msg, "under CI it must be installed")
    return path


@pytest.fixture
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture
def prometheus_bin() -> str:
    return _tool("prometheus")


def _run(cmd: list[str], cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_config(promtool: str) -> None:
    res = _run([promtool, "check", "config", "prometheus.yml"])
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_rules(promtool: str) -> None:
    res = _run([promtool, "check", "rules", "alerts.yml"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 20 rules found" in res.stdout


def test_promtool_rule_unit_tests(promtool: str) -> None:
    res = _run([promtool, "test", "rules", "alerts_test.yml"])
    assert res.returncode == 0, res.stdout + res.stderr
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {a["alertname"] for t in tested for a in t["alert_rule_test"] if a["exp_alerts"]}
    assert fired == {r["alert"] for r in rules}  # every alert is shown firing at least once


def test_alertmanager_config_routes_the_runner_absent_page_by_webhook_and_email() -> None:
    """The shipped Alertmanager example is valid to amtool and sends the page by a path that is not Telegram."""
    amtool = shutil.which("amtool")
    if amtool is None:
        skip_or_fail_under_ci(
            "amtool not found: install Debian's prometheus-alertmanager package", "under CI it must be installed"
        )
    assert amtool is not None
    cfg = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
    res = subprocess.run([amtool, "check-config", str(cfg)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
    # Which receiver gets the page (amtool's own routing, as Alertmanager will route it).
    res = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file", str(cfg), "--verify.receivers=ops-page",
         "severity=page", "alertname=UltraSignalsRunnerAbsentWithOpenPositions"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    doc = yaml.safe_load(cfg.read_text())
    page = next(r for r in doc["receivers"] if r["name"] == "ops-page")
    assert page.get("webhook_configs") and page.get("email_configs")
    assert "telegram" not in cfg.read_text().split("receivers:", 1)[1].lower()
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


# -- a real server ------------------------------------------------------------------------------------------


class PromApi:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(timeout=5)

    def get(self, path: str, **params: str) -> Any:
        r = self.http.get(self.base + path, params=params)
        body = r.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result


def wait_for(what: str, pred: Callable[[], bool], timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            if pred():
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path, prometheus_bin: str, promtool: str) -> Iterator[tuple[PromApi, Callable[[], None]]]:
    metrics_port, prom_port, dead_redis = free_port(), free_port(), free_port()
    # Redis enabled but nothing listens on its port: the counters fall back to memory, as in a Redis outage.
    shadow = start_shadow(
        tmp_path,
        metrics_port,
        "--duration", "300", "--speed", "900", "--hold-metrics", "120",
        env={
            "ULTRA_SIGNALS_REDIS__ENABLED": "true",
            "ULTRA_SIGNALS_REDIS__PORT": str(dead_redis),
            "ULTRA_SIGNALS_REDIS__HEALTH_CHECK_INTERVAL_S": "0.5",
        },
    )  # fmt: skip
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(PROM_DIR / "alerts.yml")]
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    cfg_path = tmp_path / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    res = _run([promtool, "check", "config", str(cfg_path)], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    prom_log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={cfg_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        cwd=tmp_path,
        stdout=prom_log,
        stderr=subprocess.STDOUT,
    )

    def alive() -> None:
        if prom.poll() is not None:
            raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        if shadow.poll() is not None:
            raise AssertionError(f"shadow exited: {(tmp_path / 'shadow.log').read_text()[-2000:]}")

    try:
        api = PromApi(f"http://127.0.0.1:{prom_port}")
        wait_for("Prometheus ready", lambda: httpx.get(api.base + "/-/ready", timeout=2).status_code == 200, 30, alive)
        yield api, alive
    finally:
        stop(prom)
        stop(shadow)
        prom_log.close()


@pytest.mark.timeout(150)
def test_prometheus_scrapes_a_running_shadow_and_evaluates_the_alerts(
    stack: tuple[PromApi, Callable[[], None]],
) -> None:
    api, alive = stack

    def up() -> bool:
        r = api.query('up{job="ultra-signals"}')
        return bool(r) and r[0]["value"][1] == "1"

    wait_for("the shadow target to be up", up, 30, alive)
    wait_for("decision series", lambda: bool(api.query("signals_candidates_total")), 30, alive)
    # The run is live while scraped: its market clock moves between scrapes.
    seen: set[str] = set()

    def clock_moves() -> bool:
        r = api.query("market_time_seconds")
        if r:
            seen.add(r[0]["value"][1])
        return len(seen) >= 2

    wait_for("the market clock to advance", clock_moves, 30, alive)

    def fallback_firing() -> bool:
        alerts = api.get("/api/v1/alerts")["alerts"]
        return any(
            a["labels"]["alertname"] == "UltraSignalsCounterFallbackActive" and a["state"] == "firing" for a in alerts
        )

    wait_for("UltraSignalsCounterFallbackActive to fire", fallback_firing, 30, alive)

    groups = api.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(alert_exprs()) == 20
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
        assert not r["lastEvaluation"].startswith("0001-"), r["name"]  # evaluated at least once

    backend = {r["metric"]["backend"]: r["value"][1] for r in api.query("sniper_counter_backend")}
    assert backend["memory"] == "1" and backend["redis"] == "0"
    assert api.query("sum(redis_errors_total) > 0")

    # Every dashboard query is valid PromQL to this server; the signal-path ones return data.
    empty = []
    for expr in dashboard_exprs():
        # Grafana's "All" of the shard variable is its allValue ".*" (which also matches a runner without a shard).
        if not api.query(expr.replace("$__rate_interval", "1m").replace("$shard", ".*")):
            empty.append(expr)
    musts = ("signals_candidates_total", "latency_tick_to_decision_ms_bucket", "feed_last_event_age_seconds")
    for must in (*musts, "inbox_pending", "signals_allowed_total{shard"):  # per-shard panels on a single runner
        assert any(must in e for e in dashboard_exprs() if e not in empty), must
    print(f"\ndashboard queries without data in this run (event-driven series): {len(empty)}")
    for e in empty:
        print("  ", e)
