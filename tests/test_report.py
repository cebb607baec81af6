"""The shadow report states only what was measured, and a criterion the run did not exercise fails."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require_data
from ultra_signals.apps.report import evaluate, latency_percentiles, max_in_sliding_window, write_report
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.caps import HOUR_MS
from ultra_signals.core.config import load_settings
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import RunStats
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.transport.notifier import NullNotifier


@given(st.lists(st.integers(0, 10 * HOUR_MS), max_size=60), st.integers(1, 3 * HOUR_MS))
def test_sliding_window_maximum_matches_brute_force(times: list[int], length: int) -> None:
    brute = max((sum(1 for t in times if a <= t < a + length) for a in times), default=0)
    assert max_in_sliding_window(times, length) == brute


def test_latency_percentiles() -> None:
    p = latency_percentiles([float(i) for i in range(1, 101)])
    assert p["n"] == 100 and p["p50"] == pytest.approx(50.5) and p["max"] == 100.0
    assert latency_percentiles([])["n"] == 0


def _replay_run(tmp_path: Path, **over: object) -> tuple[RunStats, Journal, Metrics]:
    s = load_settings(
        overrides={
            "runtime.timeframes": "5m,15m,1h",
            "execution.broker": "none",
            "report.dir": str(tmp_path / "reports"),
            **over,
        },
        environ={},
    )
    src = ReplaySource(
        require_data("klines"),
        ["ETHBTC", "XMRBTC"],
        s.runtime.timeframes,
        1_516_406_400_000,
        1_516_665_600_000,
        s.runtime.warmup_bars,
    )
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    metrics = Metrics()
    runner = build_runner(
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=metrics, executor=False, serve_metrics=False
    )
    return asyncio.run(runner.run()), journal, metrics


def test_report_from_a_real_replay(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(
        overrides={"runtime.timeframes": "5m,15m,1h", "report.dir": str(tmp_path / "reports")}, environ={}
    )
    res = write_report(stats, s, journal, metrics)
    md, js = res.paths[0], res.paths[1]
    data = json.loads(js.read_text())
    assert data["simulated"] is False and data["source"] == "replay"
    assert sum(data["allowed_by_symbol"].values()) == sum(1 for r in journal.decisions(stats.run_id) if r["allowed"])
    assert data["latency_ms"]["n"] == len(stats.latencies_ms) > 0
    assert data["peak_rss_mb"] > 0 and data["cpu_seconds"] > 0
    by_name = {c.name: c for c in res.criteria}
    assert by_name["caps_enforced"].passed and by_name["no_crash"].passed and by_name["mtf_blocked"].passed
    assert "SIMULATED" not in md.read_text().split("## Run")[0]
    assert [p.suffix for p in res.paths[2:]] == [".png", ".png"]
    journal.close()


def test_criteria_fail_when_not_exercised_or_broken(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path, **{"sniper.mtf_confirm": False})
    s = load_settings(overrides={"sniper.mtf_confirm": False}, environ={})
    rows = journal.decisions(stats.run_id)
    crit = {c.name: c for c in evaluate(stats, s, rows, metrics)}
    assert not crit["mtf_blocked"].passed and "DISABLED" in crit["mtf_blocked"].evidence
    stats.crash = "RuntimeError: feed died"
    stats.errors = Counter({"crash": 1})
    stats.metrics_max_gap_s = 45.0
    stats.max_feed_gap_s["ETHBTC"] = 10_000.0
    crit = {c.name: c for c in evaluate(stats, s, rows, metrics)}
    assert not crit["no_crash"].passed and "feed died" in crit["no_crash"].evidence
    assert not crit["metrics_fresh"].passed and "45.00" in crit["metrics_fresh"].evidence
    assert not crit["symbols_fresh"].passed and "STALE: ETHBTC" in crit["symbols_fresh"].evidence
    journal.close()


def test_caps_criterion_fails_when_no_cap_was_reached(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(
        tmp_path, **{"sniper.max_signals_per_hour": 50, "sniper.daily_signal_cap": 500}
    )
    s = load_settings(overrides={"sniper.max_signals_per_hour": 50, "sniper.daily_signal_cap": 500}, environ={})
    crit = {c.name: c for c in evaluate(stats, s, journal.decisions(stats.run_id), metrics)}
    assert not crit["caps_enforced"].passed and "not exercised" in crit["caps_enforced"].evidence
    journal.close()
