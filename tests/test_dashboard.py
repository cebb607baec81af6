"""The Grafana dashboard: well-formed, covers what operators need, and queries only metrics the exporter exports.

The exported names come from a live ``/metrics`` scrape of a real ``ultra-signals shadow`` subprocess, so a
renamed metric breaks this test instead of silently emptying a panel.  The alert rules get the same check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "dashboards" / "sniper-mode-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_KEYWORDS |= {"inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        tok = m.group(0)
        if tok.lower() in _KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue
        names.add(tok)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def exported_names(exposition: str) -> tuple[set[str], set[str]]:
    """(every series name the exporter declares, the names that had samples in this scrape)."""
    declared: set[str] = set()
    sampled: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    for fam in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(fam.type, ("",)):
            declared.add(fam.name + suffix)
        for s in fam.samples:
            sampled.add(s.name)
    return declared | sampled, sampled


# -- the expression parser ---------------------------------------------------------------------------------


def test_metric_names_parser() -> None:
    assert metric_names('sum by (reason) (increase(signals_blocked_total{reason!="x"}[$__rate_interval]))') == {
        "signals_blocked_total"
    }
    assert metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(latency_tick_to_decision_ms_bucket[5m]))) > 500"
    ) == {"latency_tick_to_decision_ms_bucket"}
    assert metric_names(
        'max by (instance) (sniper_counter_backend{backend=~"memory|blocked"}) == 1 '
        "and on (instance) sum by (instance) (redis_errors_total) > 0"
    ) == {"sniper_counter_backend", "redis_errors_total"}
    assert metric_names("time() - metrics_last_update_timestamp_seconds > 6e1") == {
        "metrics_last_update_timestamp_seconds"
    }
    assert metric_names("sum(increase(runner_errors_total[1h])) or vector(0)") == {"runner_errors_total"}


# -- static checks -------------------------------------------------------------------------------------------


def test_dashboard_is_well_formed_grafana_json() -> None:
    d = dashboard()
    assert d["uid"] == "ultra-signals-sniper" and d["title"]
    ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds and ds[0]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() and t["datasource"] == p["datasource"] for t in p["targets"])


def test_dashboard_covers_the_operator_views() -> None:
    names = set().union(*(metric_names(e) for e in dashboard_exprs()))
    required = {
        "signals_blocked_total",  # rejections by reason
        "signals_allowed_total",  # allowed ...
        "signals_candidates_total",  # ... vs candidates
        "sniper_window_count",  # window counts ...
        "sniper_window_cap",  # ... vs caps
        "latency_tick_to_decision_ms_bucket",  # latency percentiles from the histogram
        "feed_last_event_age_seconds",  # freshness per symbol
        "sniper_counter_backend",  # counter backend
        "redis_errors_total",  # Redis errors
        "ws_reconnects_total",  # websocket reconnects
        "telegram_outbox_pending",  # Telegram outbox
    }
    assert required <= names, required - names
    latency = [e for e in dashboard_exprs() if "latency_tick_to_decision_ms_bucket" in e]
    assert {re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in latency} == {"0.5", "0.95", "0.99"}  # type: ignore[union-attr]


def registered_names() -> set[str]:
    """Every series name the registry of :class:`~ultra_signals.observability.metrics.Metrics` declares, labelled
    metrics without children included (their HELP/TYPE lines are exported before the first sample)."""
    from prometheus_client import generate_latest

    from ultra_signals.observability.metrics import Metrics

    declared, _ = exported_names(generate_latest(Metrics().registry).decode("utf-8"))
    return declared


def test_every_dashboard_and_alert_metric_is_registered_in_metrics_py() -> None:
    """Without a running process: each name a panel or an alert selects is declared by observability/metrics.py
    (the live-scrape test below checks the same against a shadow's /metrics)."""
    declared = registered_names()
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts.yml", alert_exprs())):
        for expr in exprs:
            missing = metric_names(expr) - declared - {"up"}  # `up` is Prometheus' own series
            assert not missing, f"{source}: {expr!r} uses {missing}, which observability/metrics.py does not register"


def test_the_registered_names_check_is_not_vacuous() -> None:
    declared = registered_names()
    assert {"binance_used_weight", "inbox_in_doubt_total", "inbox_delivery_to_execution_ms_bucket"} <= declared
    assert "binance_used_weight_total" not in declared and "no_such_metric" not in declared


#: The venue, risk, ingest and inbox series added for operators, each with a per-shard panel.
PER_SHARD = (
    "binance_used_weight",
    "binance_order_count",
    "binance_rate_limited_total",
    "entries_refused_total",
    "ws_messages_coalesced_total",
    "bracket_naked_window_ms_bucket",
    "inbox_pending",
    "inbox_undelivered",
    "inbox_in_doubt_total",
    "inbox_delivery_to_execution_ms_bucket",
)


def test_the_venue_risk_ingest_and_inbox_metrics_have_per_shard_panels() -> None:
    """Each has a panel, and that panel's query follows the dashboard's ``$shard`` variable."""
    for name in PER_SHARD:
        exprs = [e for e in dashboard_exprs() if name in metric_names(e)]
        assert exprs, f"no panel queries {name}"
        assert all('shard=~"$shard"' in e for e in exprs), f"{name}: a panel ignores the shard variable"
    weight = next(p for p in dashboard()["panels"] if "binance_used_weight" in p["targets"][0]["expr"])
    steps = [s["value"] for s in weight["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps[1:] == [1920, 2400]  # 80 % of Binance's 2400/min (the alert's threshold), and the limit


# -- against a live scrape -----------------------------------------------------------------------------------


def start_shadow(tmp: Path, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m ultra_signals shadow`` on the simulator, exporting on ``port``; output goes to a log file."""
    log = (tmp / "shadow.log").open("wb")
    cmd = [
        sys.executable, "-m", "ultra_signals", "shadow",
        "--metrics-port", str(port),
        "--journal", f"sqlite:///{tmp}/journal.db",
        "--no-report",
        *args,
    ]  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ULTRA_SIGNALS_")}
    full_env.update({"PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})})
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def sample_value(exposition: str, name: str) -> float | None:
    """Sum of the samples named ``name`` (None if there is none)."""
    total = None
    for fam in text_string_to_metric_families(exposition):
        for s in fam.samples:
            if s.name == name:
                total = (total or 0.0) + s.value
    return total


def scrape_when(url: str, proc: subprocess.Popen[bytes], ready: Callable[[str], bool], timeout: float = 60.0) -> str:
    """Scrape ``url`` until ``ready(exposition)``."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"shadow exited early with {proc.returncode}")
        try:
            text = httpx.get(url, timeout=2).text
            if ready(text):
                return text
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    missing = [n for n in SIGNAL_PATH if sample_value(text, n) is None] if text else "no answer"
    raise AssertionError(f"{url} not ready within {timeout}s (series without samples: {missing})")


#: Series a sim shadow must have real samples of (the signal path), not just a declaration.
SIGNAL_PATH = (
    "signals_candidates_total",
    "signals_blocked_total",
    "latency_tick_to_decision_ms_bucket",
    "feed_last_event_age_seconds",
    "sniper_window_count",
    "sniper_window_cap",
    "sniper_counter_backend",
    "run_info",
    "metrics_last_update_timestamp_seconds",
)


def _has_decisions(text: str) -> bool:
    """Decisions were made and the runner has refreshed its gauges since (it does so every 0.5-1 s)."""
    if (sample_value(text, "latency_tick_to_decision_ms_count") or 0) <= 0:
        return False
    return all(sample_value(text, name) is not None for name in SIGNAL_PATH)


@pytest.fixture
def shadow_scrape(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_shadow(tmp_path, port, "--duration", "180", "--hold-metrics", "60")
    try:
        yield scrape_when(f"http://127.0.0.1:{port}/metrics", proc, _has_decisions)
    finally:
        stop(proc)


@pytest.mark.timeout(120)
def test_every_dashboard_and_alert_metric_is_exported_by_a_running_shadow(shadow_scrape: str) -> None:
    declared, sampled = exported_names(shadow_scrape)
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts.yml", alert_exprs())):
        for expr in exprs:
            missing = metric_names(expr) - declared - {"up"}  # `up` is Prometheus' own series
            assert not missing, f"{source}: {expr!r} uses {missing}, which the exporter does not export"
    used = set().union(*(metric_names(e) for e in dashboard_exprs() + alert_exprs())) - {"up"}
    assert set(SIGNAL_PATH) <= sampled  # (the fixture waited for them; a shadow that never has them fails there)
    print(f"\nnames used but without samples in a sim shadow (event-driven): {sorted(used - sampled)}")


def test_compose_kit_mounts_files_that_exist() -> None:
    deploy = REPO / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"redis", "runner", "prometheus", "grafana", "alertmanager"}
    for name in ("prometheus", "grafana", "alertmanager"):
        for vol in compose["services"][name]["volumes"]:
            src = vol.split(":", 1)[0]
            if src.startswith((".", "/")):
                assert (deploy / src).exists(), f"{name} mounts {src}, which does not exist"
    prom = yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert prom["scrape_configs"][0]["job_name"] == "ultra-signals"  # the job the alerts select
    runner_env = compose["services"]["runner"]["environment"]
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [
        f"runner:{runner_env['ULTRA_SIGNALS_METRICS__PORT']}"
    ]
    assert runner_env["ULTRA_SIGNALS_METRICS__HOST"] == "0.0.0.0"  # reachable from the Prometheus container
    assert "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN" not in runner_env  # the token comes from the secrets file


def test_scrape_values_read_a_gzip_body_and_never_raise() -> None:
    """A scraper that accepts gzip gets a compressed body; the run's scrape evidence must read it (a run once
    crashed at its end parsing the compressed bytes as text)."""
    import gzip

    from ultra_signals.observability.metrics import ScrapeLog

    log = ScrapeLog()
    log.record("Prometheus/2.42", gzip.compress(b"signals_allowed_total 3.0\n"))
    assert log.last_values(["signals_allowed_total"]) == {"signals_allowed_total": 3.0}
    log.record("Prometheus/2.42", b"\x1f\x8b not really gzip")
    assert log.last_values(["signals_allowed_total"]) == {}
    log.record("Prometheus/2.42", b"\xff\xfe garbage {")
    assert log.last_values(["signals_allowed_total"]) == {}
