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


def _replay_run(tmp_path: Path, serve: bool = True, **over: object) -> tuple[RunStats, Journal, Metrics]:
    s = load_settings(
        overrides={
            "runtime.timeframes": "5m,15m,1h",
            "execution.broker": "none",
            "report.dir": str(tmp_path / "reports"),
            "metrics.port": 0,
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
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=metrics, executor=False, serve_metrics=serve
    )
    try:
        return asyncio.run(runner.run()), journal, metrics
    finally:
        metrics.stop()


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
    assert [p.suffix for p in res.paths[2:]] == [".svg", ".svg"]
    journal.close()


def test_criteria_fail_when_not_exercised_or_broken(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path, **{"sniper.mtf_confirm": False})
    s = load_settings(overrides={"sniper.mtf_confirm": False}, environ={})
    rows = journal.decisions(stats.run_id)
    crit = {c.name: c for c in evaluate(stats, s, rows, metrics)}
    assert not crit["mtf_blocked"].passed and "DISABLED" in crit["mtf_blocked"].evidence
    stats.crash = "RuntimeError: feed died"
    stats.errors = Counter({"crash": 1})
    stats.scrape_max_gap_s = 45.0
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


def test_redis_enabled_but_never_reached_is_no_go(tmp_path: Path) -> None:
    """Issue 10: Redis on a dead port used to pass as "stable on memory"; now FAIL, and the verdict NO-GO."""
    from tests.conftest import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    over = {"redis.enabled": True, "redis.url": dead}
    stats, journal, metrics = _replay_run(tmp_path, **over)
    s = load_settings(overrides={**over, "report.dir": str(tmp_path / "reports")}, environ={})
    res = write_report(stats, s, journal, metrics)
    crit = {c.name: c for c in res.criteria}
    assert not crit["counter_backend"].passed
    assert "Redis enabled but never reached" in crit["counter_backend"].evidence
    assert res.verdict == "NO-GO"
    journal.close()


def test_redis_off_is_memory_only_and_not_exercised_for_canary(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(environ={})
    rows = journal.decisions(stats.run_id)
    crit = {c.name: c for c in evaluate(stats, s, rows, metrics)}
    assert "memory only, not shared across runners" in crit["counter_backend"].evidence
    stats.profile = "canary"
    crit = {c.name: c for c in evaluate(stats, s, rows, metrics)}
    assert not crit["counter_backend"].passed and "not exercised" in crit["counter_backend"].evidence
    journal.close()


def test_metrics_never_served_is_no_go(tmp_path: Path) -> None:
    """Issue 10: with the exporter off, the runner's internal refresh loop used to pass as "metrics fresh"."""
    stats, journal, metrics = _replay_run(tmp_path, **{"metrics.enabled": False})
    s = load_settings(overrides={"metrics.enabled": False, "report.dir": str(tmp_path / "reports")}, environ={})
    res = write_report(stats, s, journal, metrics)
    crit = {c.name: c for c in res.criteria}
    assert stats.metrics_refreshes > 0 and stats.scrapes_served == 0
    assert not crit["metrics_fresh"].passed and "no scrape was served" in crit["metrics_fresh"].evidence
    assert "exporter's registry" in crit["caps_enforced"].evidence  # not claimed as "exported"
    assert res.verdict == "NO-GO"
    journal.close()


def test_served_scrapes_are_counted_with_their_values(tmp_path: Path) -> None:
    """The exporter counts every /metrics it served; the runner's own self-scrapes (start, end) say so."""
    import urllib.request

    stats, journal, metrics = _replay_run(tmp_path)
    assert stats.scrapes_self >= 2 and stats.scrapes_served == stats.scrapes_self + stats.scrapes_external
    assert any(k.startswith("sniper_window_count{window=day}") for k in stats.scrape_values)
    s = load_settings(environ={})
    crit = {c.name: c for c in evaluate(stats, s, journal.decisions(stats.run_id), metrics)}
    assert crit["metrics_fresh"].passed and "self-scrapes over HTTP" in crit["metrics_fresh"].evidence
    # An external scrape is told apart from a self-scrape.
    port = metrics.serve("127.0.0.1", 0)
    before = metrics.scrapes.external
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert b"sniper_window_count" in r.read()
    assert metrics.scrapes.external == before + 1
    metrics.stop()
    journal.close()


def test_no_crash_claims_only_the_wall_time_the_run_lasted(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(environ={})
    crit = {c.name: c for c in evaluate(stats, s, journal.decisions(stats.run_id), metrics)}
    nc = crit["no_crash"]
    assert stats.wall_seconds < 7200 < stats.market_seconds
    assert "120+ minutes of wall time" not in nc.title and "NOT 120+ minutes of wall time" in nc.evidence
    assert "wall time" in nc.evidence and "market time" in nc.evidence
    journal.close()


def test_a_symbol_without_data_fails_with_a_readable_reason(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path)
    stats.symbols.append("NODATA")
    stats.final_feed_age_s["NODATA"] = float("inf")
    s = load_settings(environ={})
    crit = {c.name: c for c in evaluate(stats, s, journal.decisions(stats.run_id), metrics)}
    ev = crit["symbols_fresh"].evidence
    assert not crit["symbols_fresh"].passed and "NODATA: no data received in the run" in ev
    assert "inf" not in ev
    journal.close()


def test_markdown_has_no_python_reprs(tmp_path: Path) -> None:
    import re

    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(overrides={"report.dir": str(tmp_path / "reports"), "report.charts": False}, environ={})
    md = write_report(stats, s, journal, metrics).paths[0].read_text()
    assert not re.search(r"\{'|\bNone\b|\bTrue\b|\bFalse\b|\d\.\d{7,}", md), md
    assert "wall time" in md and "market time" in md and "Release: ultra-signals" in md
    journal.close()


def test_each_global_window_must_be_exercised_on_its_own(tmp_path: Path) -> None:
    """Hourly refusals do not count as the daily window's enforcement."""
    over = {"sniper.max_signals_per_hour": 2, "sniper.daily_signal_cap": 500}
    stats, journal, metrics = _replay_run(tmp_path, **over)
    s = load_settings(overrides=over, environ={})
    c = {c.name: c for c in evaluate(stats, s, journal.decisions(stats.run_id), metrics)}["caps_enforced"]
    assert not c.passed
    assert "hour (cap 2): busiest 2 (journal); enforced" in c.evidence
    assert "day (cap 500)" in c.evidence and "not exercised" in c.evidence.split("day (cap 500)")[1]
    journal.close()


def test_chart_marks_each_signal_at_the_bar_its_id_names(tmp_path: Path) -> None:
    """The table names a signal by its bar's open time; the chart puts its marker there, on the line's point of
    that bar, at its entry price; and every candidate of the symbol is counted in its group."""
    import re
    import xml.etree.ElementTree as ET

    from ultra_signals.apps.report import _bar_open_ms, _primary_bar_ms
    from ultra_signals.core.timeframes import tf_ms

    stats, journal, metrics = _replay_run(tmp_path)
    rows = journal.decisions(stats.run_id)
    assert rows
    for r in rows:
        tf = str(r["decision_id"]).split(":")[-2]
        assert _bar_open_ms(r, 0) == int(r["ts"]) - tf_ms(tf)  # the decision is at close + 1 of that bar
    bar_ms = _primary_bar_ms(stats)
    assert bar_ms == tf_ms(stats.primary_timeframe)
    s = load_settings(overrides={"report.dir": str(tmp_path / "reports")}, environ={})
    charts = {p.stem.rsplit("_", 1)[1]: p for p in write_report(stats, s, journal, metrics).paths[2:]}
    journal.close()
    ns = {"s": "http://www.w3.org/2000/svg"}
    checked = 0
    for sym, path in charts.items():
        root = ET.fromstring(path.read_text())
        line = root.find("s:polyline[@class='price']", ns)
        assert line is not None
        xy = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
        # The line's points are the recorded closes, drawn at their bar's open time.
        at = {t - bar_ms: (x, y, price) for (t, price), (x, y) in zip(stats.prices[sym], xy, strict=True)}
        groups = {g.attrib["data-label"]: g for g in root.findall("s:path[@class='marks']", ns)}
        mine = [r for r in rows if r["symbol"] == sym]
        assert sum(int(g.attrib["data-count"]) for g in groups.values()) == len(mine)
        allowed = groups.get("LONG allowed"), groups.get("SHORT allowed")
        drawn = {
            (float(x), float(y))
            for g in allowed
            if g is not None
            for x, y in re.findall(r"M(-?[\d.]+),(-?[\d.]+)", g.attrib["d"])
        }
        for r in mine:
            hit = at.get(_bar_open_ms(r, 0))
            if not r["allowed"] or hit is None or r["entry"] != hit[2]:
                continue
            x, y, _ = hit  # a market entry at that bar's close: the marker's apex is 6 px off the line's point
            apex = y - 6.0 if r["side"] == "LONG" else y + 6.0
            assert any(abs(dx - x) <= 0.05 and abs(dy - apex) <= 0.11 for dx, dy in drawn), (sym, r["decision_id"])
            checked += 1
    assert checked >= 1


# -- the evaluation table of the run's own candidates (issue 11, item 3) -------------------------------------


def test_report_carries_the_evaluation_table_of_its_replay(tmp_path: Path) -> None:
    """Labels from the bars the replay saw; each group is the run's own verdicts; random at the allowed rate."""
    from ultra_signals.apps.evaluate import EvalConfig, cands_from_rows, label_all
    from ultra_signals.research.stats import summarize

    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(
        overrides={"runtime.timeframes": "5m,15m,1h", "report.dir": str(tmp_path / "reports")}, environ={}
    )
    data_dir = require_data("klines")
    res = write_report(stats, s, journal, metrics, data_dir=str(data_dir))
    ev = res.data["evaluation"]
    rows = journal.decisions(stats.run_id)
    journal.close()
    assert ev["status"] == "ok" and ev["label_timeframe"] == "5m"
    allowed = sum(1 for r in rows if r["allowed"])
    reasons = Counter(r["reason"] for r in rows if not r["allowed"])
    assert ev["groups"]["allowed"]["count"] == allowed > 0  # every candidate had bars after it
    assert {k: g["count"] for k, g in ev["groups"].items() if k.startswith("blocked: ")} == {
        f"blocked: {k}": v for k, v in reasons.items()
    }
    assert ev["groups"]["all candidates"]["count"] == len(rows)
    assert ev["random"]["random from all candidates"]["k"] == allowed
    # The figures are research's own over the same labels (nothing recomputed differently in the report).
    cands = cands_from_rows(rows, stats.run_id)
    label_all(s, EvalConfig(data=data_dir, symbols=None), cands, _bars(data_dir, stats))
    mine = summarize(
        [c.outcome.r for c in cands if c.reason is None and c.outcome], draws=s.rollout.bootstrap_samples, seed=7
    )
    assert ev["groups"]["allowed"]["mean_r"] == pytest.approx(mine.mean_r)
    md = res.paths[0].read_text()
    section = md.split("## Evaluation of this run's candidates")[1]
    assert "| allowed |" in section and "| random from all candidates" in section and "Exits:" in section


def _bars(data_dir: Path, stats: RunStats) -> dict[str, object]:
    from ultra_signals.apps.evaluate import run_bars

    assert stats.market_start_ms is not None and stats.market_end_ms is not None
    s = load_settings(environ={})
    bars, _ = run_bars(
        s, "replay", stats.symbols, stats.timeframes, stats.market_start_ms, stats.market_end_ms, None, str(data_dir)
    )
    return bars  # type: ignore[return-value]


def test_report_says_not_evaluated_without_the_candles(tmp_path: Path) -> None:
    stats, journal, metrics = _replay_run(tmp_path)
    s = load_settings(overrides={"runtime.timeframes": "5m,15m,1h", "report.dir": str(tmp_path / "r")}, environ={})
    res = write_report(stats, s, journal, metrics)  # no data folder known: the replay's bars cannot be read
    journal.close()
    assert res.data["evaluation"]["status"] == "not_evaluated"
    assert "**Not evaluated:** the replay's data folder is not known to the report." in res.paths[0].read_text()


def _sim_run(tmp_path: Path, minutes: int) -> tuple[RunStats, Journal, Metrics, object]:
    from ultra_signals.sources.sim import SimSource

    s = load_settings(
        overrides={"execution.broker": "none", "report.dir": str(tmp_path / "reports"), "metrics.port": 0},
        environ={},
    )
    src = SimSource(s.sim, s.runtime.symbols, s.runtime.timeframes, minutes, s.runtime.warmup_bars)
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    metrics = Metrics()
    runner = build_runner(s, source=src, journal=journal, notifier=NullNotifier(), metrics=metrics, executor=False)
    try:
        return asyncio.run(runner.run()), journal, metrics, s
    finally:
        metrics.stop()


def test_a_short_sim_run_says_not_enough_data(tmp_path: Path) -> None:
    stats, journal, metrics, s = _sim_run(tmp_path, 30)
    res = write_report(stats, s, journal, metrics)  # type: ignore[arg-type]
    journal.close()
    ev = res.data["evaluation"]
    assert ev["status"] == "not_enough_data"
    assert "**Not enough data:**" in res.paths[0].read_text().split("## Evaluation of this run's candidates")[1]


def test_sim_bars_are_regenerated_exactly_as_the_run_saw_them(tmp_path: Path) -> None:
    """The simulator is seeded: the report's bars give back every candidate's entry (its bar's close)."""
    from ultra_signals.apps.evaluate import run_bars
    from ultra_signals.core.timeframes import tf_ms

    stats, journal, _metrics, s = _sim_run(tmp_path, 180)
    rows = journal.decisions(stats.run_id)
    journal.close()
    assert rows and stats.market_start_ms is not None and stats.market_end_ms is not None
    bars, label_tf = run_bars(
        s,  # type: ignore[arg-type]
        "sim",
        stats.symbols,
        stats.timeframes,
        stats.market_start_ms,
        stats.market_end_ms,
        stats.planned_end_ms,
        None,
    )
    step = tf_ms(label_tf)
    for r in rows:
        b = bars[r["symbol"]]
        last_open = int(str(r["decision_id"]).rsplit(":", 1)[1]) + tf_ms(r["timeframe"]) - step
        i = int((b.open_time == last_open).argmax())
        assert b.open_time[i] == last_open and b.close[i] == pytest.approx(r["entry"], rel=1e-12)
