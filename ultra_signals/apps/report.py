"""The shadow report: what the run measured, the seven shadow criteria with their evidence, and a verdict.

Every figure here comes from the run's own measurements (:class:`RunStats`), its journal rows and its metrics
registry — never from settings or expectations.  A criterion that the run did not exercise FAILS with "not
exercised": a GO must rest on evidence, because operators put money behind it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ultra_signals.apps.rollout import Criterion
from ultra_signals.core.caps import policy_from
from ultra_signals.core.config import Settings
from ultra_signals.core.redaction import redact_url
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import RunStats
from ultra_signals.observability.latency import LatencyHistogram
from ultra_signals.observability.metrics import Metrics

if TYPE_CHECKING:
    from ultra_signals.sources.candles_csv import CandleSeries, CandleSet


def _crit(name: str, title: str, passed: bool, evidence: str) -> Criterion:
    """A shadow criterion: the rollout gate's :class:`Criterion` with the report's heading."""
    return Criterion(name, passed, evidence, title=title)


@dataclass(slots=True)
class ReportResult:
    paths: list[Path]
    verdict: str  # "GO" | "NO-GO"
    criteria: list[Criterion]
    data: dict[str, Any]


def latency_percentiles(samples: list[float] | LatencyHistogram) -> dict[str, float]:
    """n, p50, p95, p99, max: exact on a list, to 1 % on the runner's bounded histogram."""
    if isinstance(samples, LatencyHistogram):
        return samples.percentiles()
    if not samples:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    import numpy as np

    arr = np.asarray(samples)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": len(samples), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max())}


def max_in_sliding_window(times: list[int], length_ms: int) -> int:
    """Most points in any half-open window ``[a, a+length)``, anywhere on the axis (two pointers on sorted times)."""
    ts = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - length_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _metric_samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(metrics.registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def fmt_duration(seconds: float) -> str:
    """``3 s``, ``12.5 min``, ``26.0 h``: a duration a reader takes in at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _window_name(rule_window: str, per_symbol: bool) -> str:
    return f"per-symbol {rule_window}" if per_symbol else rule_window


def _caps_criterion(st: RunStats, settings: Settings, rows: list[dict[str, Any]], visible: bool) -> Criterion:
    """Per window: never exceeded (journal) AND enforcement observed (a candidate refused by that window at its cap).

    A refusal counts for a window only when the journal shows that window full at the refused candidate's time
    (same window arithmetic as the counters), so an hourly refusal never passes for the daily window, and a
    per-symbol refusal never for a global one.  Both global windows must be exercised for a PASS; per-symbol
    windows, when configured, must never be exceeded and say whether they were exercised.
    """
    from ultra_signals.counters.windows import max_window_count

    sn = settings.sniper
    policy = policy_from(sn)
    allowed = sorted(int(r["ts"]) for r in rows if r["allowed"])
    by_sym: dict[str, list[int]] = {}
    for r in rows:
        if r["allowed"]:
            by_sym.setdefault(str(r["symbol"]), []).append(int(r["ts"]))
    for v in by_sym.values():
        v.sort()
    refused = [r for r in rows if not r["allowed"]]
    parts: list[str] = []
    ok = sn.enabled and visible
    for per_symbol, rules in ((False, policy.rules), (True, policy.symbol_rules)):
        for rule in rules:
            name = _window_name(rule.window, per_symbol)
            if per_symbol:
                worst = max((max_in_sliding_window(ts, rule.length_ms) for ts in by_sym.values()), default=0)
            else:
                worst = max_in_sliding_window(allowed, rule.length_ms)
            enforced = 0
            for r in refused:
                if r.get("reason") != rule.reason:
                    continue
                times = by_sym.get(str(r["symbol"]), []) if per_symbol else allowed
                if max_window_count(times, int(r["ts"]), rule.length_ms) >= rule.cap:
                    enforced += 1
            exceeded = worst > rule.cap
            if exceeded:
                verdict = f"EXCEEDED ({worst} > {rule.cap})"
                ok = False
            elif enforced:
                verdict = f"enforced: {enforced} candidates refused at the cap"
            else:
                verdict = "not exercised: no candidate was refused by this window"
                if not per_symbol:
                    ok = False
            parts.append(f"{name} (cap {rule.cap}): busiest {worst} (journal); {verdict}")
    ev = "; ".join(parts) + f"; sniper_window_count in the exporter's registry: {'yes' if visible else 'NO'}"
    if not sn.enabled:
        ev += "; sniper mode is DISABLED"
    # What this run's length can show: the daily window needs more than cap/hourly-cap hours of demand.
    hours_needed = sn.daily_signal_cap / sn.max_signals_per_hour
    span_h = st.market_seconds / 3600.0
    if span_h < hours_needed:
        ev += (
            f"; this run covered {fmt_duration(st.market_seconds)} of market time: at {sn.max_signals_per_hour}/hour "
            f"it can allow at most {sn.max_signals_per_hour * max(1, math.ceil(span_h))} signals, so the daily cap "
            f"({sn.daily_signal_cap}) cannot be reached — run ≥ {math.ceil(hours_needed)} h of market time "
            f"(make shadow covers one market day) to exercise it"
        )
    return _crit("caps_enforced", "Caps enforced per window and visible in metrics", ok, ev)


def _counter_criterion(
    st: RunStats, settings: Settings, samples: dict[str, list[tuple[dict[str, str], float]]]
) -> Criterion:
    failovers = _total(samples, "sniper_failovers_total")
    redis_errors = _total(samples, "redis_errors_total")
    title = "Counter backend stable or fallen back cleanly"
    shared_needed = st.profile != "shadow" or st.mode != "shadow"
    if not st.redis_enabled:
        ev = "memory only, not shared across runners (redis.enabled is false)"
        if shared_needed:
            return _crit(
                "counter_backend",
                title,
                False,
                ev + f"; not exercised: the {st.profile} stage needs caps shared through Redis",
            )
        return _crit("counter_backend", title, st.crash is None, ev)
    answered = st.counter_backend_start == "redis" or any(e.startswith("recovered") for e in st.counter_events)
    if not answered:
        return _crit(
            "counter_backend",
            title,
            False,
            f"Redis enabled but never reached: {redis_errors:g} Redis errors, backend {st.counter_backend_start} → "
            f"{st.counter_backend_end}; caps were per process, not shared"
            + (f"; {st.counter_events[0]}" if st.counter_events else ""),
        )
    if failovers == 0 and st.counter_backend_start == st.counter_backend_end:
        return _crit(
            "counter_backend",
            title,
            st.crash is None,
            f"Redis answered and stayed the backend (0 failovers, {redis_errors:g} Redis errors)",
        )
    recovered = [e for e in st.counter_events if e.startswith("recovered")]
    ok = st.crash is None
    ev = (
        f"Redis answered; {failovers:g} failovers, {redis_errors:g} Redis errors; backend {st.counter_backend_start} → "
        f"{st.counter_backend_end}; decisions continued: {'yes' if ok else 'NO'}; "
        + (f"reconciled after recovery: {recovered[-1]}" if recovered else "no recovery (reconcile) seen")
    )
    return _crit("counter_backend", title, ok, ev)


def _metrics_criterion(st: RunStats, settings: Settings) -> Criterion:
    gap_limit = settings.report.max_metrics_gap_s
    title = f"Metrics served at least every {gap_limit:g} s"
    if not st.metrics_enabled or not st.metrics_port:
        return _crit(
            "metrics_fresh",
            title,
            False,
            "exporter not running in this run (metrics.enabled is false, or serving was turned off): no scrape "
            "was served",
        )
    if st.scrapes_served == 0:
        why = f" (self-scrape errors: {'; '.join(st.self_scrape_errors[:2])})" if st.self_scrape_errors else ""
        return _crit("metrics_fresh", title, False, f"no /metrics request was served during the run{why}")
    ok = st.scrape_max_gap_s <= gap_limit
    who = f"{st.scrapes_self} the runner's own self-scrapes over HTTP, {st.scrapes_external} external"
    vals = ", ".join(f"{k} {_num(v)}" for k, v in sorted(st.scrape_values.items()) if "window" in k)
    return _crit(
        "metrics_fresh",
        title,
        ok,
        f"{st.scrapes_served} /metrics scrapes served ({who}); longest wall-clock gap without a scrape "
        f"{st.scrape_max_gap_s:.2f} s" + (f"; the last scrape saw {vals}" if vals else ""),
    )


def _num(v: float) -> str:
    """A number for humans: integers without a decimal point, others with at most 4 significant digits."""
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.6g}"


def evaluate(st: RunStats, settings: Settings, rows: list[dict[str, Any]], metrics: Metrics) -> list[Criterion]:
    samples = _metric_samples(metrics)
    sn = settings.sniper
    out: list[Criterion] = []

    # 1. caps enforced (journal), per window, and visible in metrics
    visible = {lab.get("window") for lab, _ in samples.get("sniper_window_count", [])} >= {"hour", "day"}
    out.append(_caps_criterion(st, settings, rows, visible))

    # 2. MTF disagreements blocked
    mtf_blocks = st.blocked.get("mtf_required", 0)
    against = sum(
        1
        for r in rows
        if r["allowed"] and json.loads(r["features_json"]).get("htf_trend", 0) != (1.0 if r["side"] == "LONG" else -1.0)
    )
    ok = sn.mtf_confirm and sn.enabled and mtf_blocks > 0 and against == 0
    ev = f"{mtf_blocks} candidates blocked with mtf_required; {against} allowed signals disagree with the higher timeframe"
    if not sn.mtf_confirm or not sn.enabled:
        ev += "; MTF confirmation is DISABLED"
    elif mtf_blocks == 0:
        ev += "; not exercised: no disagreement occurred in this run"
    out.append(_crit("mtf_blocked", "MTF disagreements blocked", ok, ev))

    # 3. no crash, over the wall time the run actually lasted (market time said separately)
    n_err = sum(st.errors.values())
    ok = st.crash is None and n_err == 0 and st.run_bars > 0 and st.status == "completed"
    ev = f"run {st.status}" if st.crash is None else f"CRASH: {st.crash}"
    ev += f"; {n_err} errors caught" + (f" ({', '.join(f'{k} {v}' for k, v in st.errors.items())})" if n_err else "")
    ev += f"; {st.run_bars:,} bars processed in the run window"
    ev += f"; wall time {fmt_duration(st.wall_seconds)}, market time {fmt_duration(st.market_seconds)}"
    if st.wall_seconds >= 120 * 60:
        ev += "; ran 120+ minutes of wall time"
    elif st.market_seconds >= 120 * 60:
        ev += "; NOT 120+ minutes of wall time: the 120+ minutes were market time"
    title = f"No crash over {fmt_duration(st.wall_seconds)} of wall time"
    out.append(_crit("no_crash", title, ok, ev))

    # 4. latency
    p = latency_percentiles(st.latencies_ms)
    limit = settings.report.max_latency_p95_ms
    ok = p["n"] > 0 and p["p95"] < limit
    out.append(
        _crit(
            "latency_p95",
            f"Tick-to-decision p95 < {limit:g} ms",
            bool(ok),
            f"p95 {p['p95']:.3f} ms over {p['n']:,} decisions (p50 {p['p50']:.3f}, p99 {p['p99']:.3f}, "
            f"max {p['max']:.3f}); measured from when the source received (live) or produced (sim/replay) the "
            f"message; event loop blocked at most {st.loop_lag_max_s * 1000:.1f} ms"
            if p["n"]
            else "no decision point in the run: not exercised",
        )
    )

    # 5. metrics actually served
    out.append(_metrics_criterion(st, settings))

    # 6. every symbol fresh
    finest_s = tf_ms(st.timeframes[0]) / 1000 if st.timeframes else 60.0
    limit_s = max(settings.filters.max_data_age_s, 2 * finest_s)
    stale: list[str] = []
    parts = []
    for sym in st.symbols:
        gap = st.max_feed_gap_s.get(sym, 0.0)
        final = st.final_feed_age_s.get(sym, math.inf)
        if not math.isfinite(final):
            parts.append(f"{sym}: no data received in the run")
            stale.append(sym)
            continue
        parts.append(f"{sym} max gap {_num(gap)} s, final age {_num(final)} s")
        if max(gap, final) > limit_s:
            stale.append(sym)
    ok = not stale and bool(st.symbols)
    out.append(
        _crit(
            "symbols_fresh",
            f"Every symbol fresh (market-time gap ≤ {limit_s:g} s)",
            ok,
            ("; ".join(parts) or "no symbols") + (f"; STALE: {', '.join(stale)}" if stale else ""),
        )
    )

    # 7. counter backend
    out.append(_counter_criterion(st, settings, samples))
    return out


def write_report(
    st: RunStats,
    settings: Settings,
    journal: Journal,
    metrics: Metrics,
    data_dir: str | None = None,
    parsed: Mapping[str, tuple[CandleSet, CandleSeries]] | None = None,
) -> ReportResult:
    """``data_dir``: a replay's candle folder when it came from the command line (else ``replay.data_dir``);
    ``parsed``: the candles the replay already parsed (:meth:`ReplaySource.parsed`), for the evaluation's labels."""
    rows = journal.decisions(st.run_id)
    criteria = evaluate(st, settings, rows, metrics)
    verdict = "GO" if all(c.passed for c in criteria) else "NO-GO"
    out_dir = Path(settings.report.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lat = latency_percentiles(st.latencies_ms)
    cpu_pct = st.cpu_seconds / st.wall_seconds * 100.0
    blocked_by_symbol = dict(st.blocked_by_symbol)
    data: dict[str, Any] = {
        "run_id": st.run_id,
        "verdict": verdict,
        "simulated": st.simulated,
        "source": st.source,
        "mode": st.mode,
        "profile": st.profile,
        "symbols": st.symbols,
        "timeframes": st.timeframes,
        "notices": st.notices,
        "market_window": {
            "start_ms": st.market_start_ms,
            "end_ms": st.market_end_ms,
            "planned_end_ms": st.planned_end_ms,
        },
        "wall_seconds": st.wall_seconds,
        "market_seconds": st.market_seconds,
        "release": st.release,
        "input_bars": st.input_bars,
        "input_bars_per_s": st.input_bars / st.wall_seconds,
        "events": dict(st.events),
        "candidates_by_symbol": dict(st.candidates),
        "allowed_by_symbol": dict(st.allowed),
        "allowed_by_side": dict(st.allowed_side),
        "blocked_by_reason": dict(st.blocked),
        "blocked_by_symbol": blocked_by_symbol,
        "not_evaluated_by_filter": dict(st.not_evaluated),
        "latency_ms": lat,
        "peak_rss_mb": st.peak_rss_mb,
        "cpu_seconds": st.cpu_seconds,
        "cpu_percent_avg": cpu_pct,
        "errors": dict(st.errors),
        "crash": st.crash,
        "status": st.status,
        "counter_backend": {
            "start": st.counter_backend_start,
            "end": st.counter_backend_end,
            "events": st.counter_events,
        },
        "metrics": {
            "enabled": st.metrics_enabled,
            "port": st.metrics_port,
            "scrapes_served": st.scrapes_served,
            "scrapes_self": st.scrapes_self,
            "scrapes_external": st.scrapes_external,
            "scrape_max_gap_s": st.scrape_max_gap_s,
            "last_scrape_values": st.scrape_values,
            "internal_refreshes": st.metrics_refreshes,
        },
        "event_loop_lag_max_s": st.loop_lag_max_s,
        "gc": {"collections": st.gc_collections, "max_full_ms": st.gc_max_full_ms},
        "feed": {"max_gap_s": st.max_feed_gap_s, "final_age_s": st.final_feed_age_s},
        "criteria": [asdict(c) for c in criteria],
        "executor": st.executor_summary,
        "journal": redact_url(st.journal_url),
        "namespace": st.namespace,
    }
    from ultra_signals.execution.edge import expectancy, trade_r
    from ultra_signals.journal.trading import ExecStore

    closed = [t for t in ExecStore(journal.engine).trades(st.run_id) if t["status"] == "closed"]
    rs = [r for r in (trade_r(t) for t in closed) if r is not None]
    data["edge"] = expectancy(rs, settings.rollout.bootstrap_samples, settings.rollout.confidence).describe()
    md_path = out_dir / f"shadow_results_{st.run_id}.md"
    json_path = out_dir / f"shadow_results_{st.run_id}.json"
    data["evaluation"] = run_evaluation(st, settings, rows, data_dir, parsed)
    json_path.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")
    charts = _charts(st, rows, out_dir) if settings.report.charts else []
    md = _markdown(st, data, criteria, verdict, charts) + evaluation_markdown(data["evaluation"])
    md_path.write_text(md, encoding="utf-8")
    return ReportResult([md_path, json_path, *charts], verdict, criteria, data)


def run_evaluation(
    st: RunStats,
    settings: Settings,
    rows: list[dict[str, Any]],
    data_dir: str | None,
    parsed: Mapping[str, tuple[CandleSet, CandleSeries]] | None = None,
) -> dict[str, Any]:
    """The ``evaluate`` table for this run's own candidates (issue 11): journal rows + the bars the run saw.

    Computed by :mod:`ultra_signals.apps.evaluate` (labels, summaries and random baseline from ``research``);
    never fails the report: a run whose candles cannot be had, or too short a run, says why instead.
    """
    from ultra_signals.apps.evaluate import EvaluationError, run_bars, run_table

    if not rows or st.market_start_ms is None or st.market_end_ms is None:
        return {"status": "not_enough_data", "why": "the run journaled no candidate"}
    try:
        bars, label_tf = run_bars(
            settings,
            st.source,
            st.symbols,
            st.timeframes,
            st.market_start_ms,
            st.market_end_ms,
            st.planned_end_ms,
            data_dir,
            parsed,
        )
        funding = settings.replay.funding_dir or data_dir or settings.replay.data_dir
        doc = run_table(
            settings,
            rows,
            st.run_id,
            bars,
            draws=settings.rollout.bootstrap_samples,
            funding_dir=Path(funding) if funding else None,
        )
    except EvaluationError as e:
        return {"status": "not_evaluated", "why": str(e)}
    doc["label_timeframe"] = label_tf
    return doc


def evaluation_markdown(ev: dict[str, Any]) -> str:
    """The report's "Evaluation of this run's candidates" section."""
    from ultra_signals.apps.evaluate import run_table_markdown

    head = ["", "## Evaluation of this run's candidates", ""]
    if ev.get("status") == "not_evaluated":
        return "\n".join([*head, f"**Not evaluated:** {ev['why']}.", ""])
    if "horizon_ms" not in ev:
        return "\n".join([*head, f"**Not enough data:** {ev.get('why', 'no candidates')}.", ""])
    return "\n".join([*head, *run_table_markdown(ev)])


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _tally(d: dict[str, Any] | Any) -> str:
    """``BookTicker 1,440, Kline 960`` rather than a Python dict."""
    items = sorted(dict(d).items(), key=lambda kv: (-kv[1], kv[0])) if d else []
    return ", ".join(f"{k} {_cell(v)}" for k, v in items) or "none"


def _cell(v: Any) -> str:
    """One value for the markdown: no ``None``/``True``, no 15-digit floats."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return _num(v) if abs(v) >= 1e-4 or v == 0 else f"{v:.3g}"
    return str(v)


def _ms(v: float) -> str:
    return f"{v:.3f} ms" if math.isfinite(v) else "n/a"


def promotion_note(st: RunStats) -> str | None:
    """Why a GO of this run cannot promote a stage (simulated or historical data), or None for a live run."""
    if st.simulated:
        return "SIMULATED data (built-in market simulator): a GO validates the software path, not a market edge — not eligible for promotion"
    if st.source in ("replay", "sim"):
        return f"historical data ({st.source}): a GO validates the software path on past candles — not eligible for promotion"
    return None


def _markdown(st: RunStats, data: dict[str, Any], criteria: list[Criterion], verdict: str, charts: list[Path]) -> str:
    lat = data["latency_ms"]
    label = "SIMULATED (built-in market simulator)" if st.simulated else st.source
    note = promotion_note(st)
    rel = st.release or {}
    lines = [
        f"# Shadow results — run {st.run_id}",
        "",
        f"**Verdict: {verdict}**" + (f"  \n**{note}.**" if note else ""),
        "",
        "## Run",
        f"- Status: {st.status}",
        f"- Release: ultra-signals {rel.get('version') or '?'}"
        + (f", git commit {rel['git_commit']}" if rel.get("git_commit") else " (not run from a git checkout)"),
        f"- Source: {label}; mode {st.mode}; profile {st.profile}; symbols {', '.join(st.symbols)}; timeframes {', '.join(st.timeframes)}",
        f"- Market window: {_iso(st.market_start_ms)} → {_iso(st.market_end_ms)}"
        + (f" (planned end {_iso(st.planned_end_ms)})" if st.planned_end_ms else ""),
        f"- Durations: wall time {fmt_duration(st.wall_seconds)}; market time {fmt_duration(st.market_seconds)}",
        f"- {st.input_bars:,} input bars incl. warm-up ({data['input_bars_per_s']:,.0f}/s); {st.run_bars:,} closed bars in "
        f"the run window; events {_tally(st.events)}",
        f"- Journal: {redact_url(st.journal_url)} (namespace {st.namespace})",
    ]
    lines += [f"- Notice: {n}" for n in st.notices]
    lines += [
        "",
        "## Decisions",
        f"- Candidates: {sum(st.candidates.values())} ({_tally(st.candidates)})",
        f"- Allowed: {sum(st.allowed.values())} by symbol ({_tally(st.allowed)}); by side ({_tally(st.allowed_side)})",
        f"- Blocked: {sum(st.blocked.values())} by reason ({_tally(st.blocked)}); by symbol ({_tally(st.blocked_by_symbol)})",
        f"- Not evaluated (the source sent no data the filter needs; it let the candidate pass): "
        f"{', '.join(f'{k} on {v} candidates' for k, v in sorted(st.not_evaluated.items())) or 'none'}",
        "",
        "## Measured",
        f"- Tick-to-decision latency (from the source's receipt of the message, queue included) over {lat['n']:,} "
        f"decision points: p50 {_ms(lat['p50'])}, p95 {_ms(lat['p95'])}, p99 {_ms(lat['p99'])}, max {_ms(lat['max'])}",
        f"- Event loop blocked at most {st.loop_lag_max_s * 1000:.1f} ms (heartbeat lateness)",
        *(
            [
                f"- Garbage collector: {st.gc_collections[2]} full collections (longest {st.gc_max_full_ms:.1f} ms), "
                f"{st.gc_collections[0] + st.gc_collections[1]} young ones"
            ]
            if st.gc_collections
            else []
        ),
        f"- Peak memory (max RSS) {st.peak_rss_mb:.1f} MB; CPU {st.cpu_seconds:.2f} s ({data['cpu_percent_avg']:.0f}% of one core on average)",
        f"- Errors: {_tally(st.errors)}; crash: {st.crash or 'none'}",
        f"- Counter backend: {st.counter_backend_start} → {st.counter_backend_end}; events: "
        + ("; ".join(st.counter_events) or "none"),
        f"- Metrics: {st.scrapes_served} /metrics scrapes served ({st.scrapes_self} self-scrapes over HTTP, "
        f"{st.scrapes_external} external), longest gap {st.scrape_max_gap_s:.2f} s"
        if st.metrics_port
        else "- Metrics: exporter not running",
        "",
        "## Shadow criteria",
        "",
        "| # | criterion | result | evidence |",
        "|---|---|---|---|",
    ]
    for i, c in enumerate(criteria, 1):
        lines.append(f"| {i} | {c.title} | {'PASS' if c.passed else 'FAIL'} | {c.evidence.replace('|', '/')} |")
    lines += ["", f"**{verdict}**: {sum(c.passed for c in criteria)}/{len(criteria)} criteria passed."]
    if note and verdict == "GO":
        lines.append(f"{note}.")
    lines.append("")
    ex = st.executor_summary
    if ex:
        lines += _what_if(ex)
        edge = data.get("edge")
        if edge:
            lines += [f"- Edge (what-if fills, net of fees, slippage and funding): {edge}", ""]
    if charts:
        lines += ["## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts]
    return "\n".join(lines) + "\n"


def _what_if(ex: dict[str, Any]) -> list[str]:
    """The executor's per-signal what-if results (paper fills on this run's own market data)."""
    lines = [f"## What-if ({ex.get('broker', 'broker')})", ""]
    head = {k: v for k, v in ex.items() if not isinstance(v, dict | list)}
    lines.append("- " + "; ".join(f"{k.replace('_', ' ')} {_cell(v)}" for k, v in head.items()))
    per = ex.get("per_decision") or {}
    if per:
        lines += [
            "",
            "| decision | symbol | side | status | qty | arrival | entry | exit | exit kind | fees | PnL |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for did, r in per.items():
            cells = [
                r.get(k, "")
                for k in ("symbol", "side", "status", "qty", "arrival", "entry", "exit", "exit_kind", "fees", "pnl")
            ]
            lines.append(
                f"| {did.rsplit(':', 2)[-2]} bar {_iso(int(did.rsplit(':', 1)[-1]))} | "
                + " | ".join(_cell(c) for c in cells)
                + " |"
            )
    return [*lines, ""]


def _primary_bar_ms(st: RunStats) -> int:
    """Length of the bars in ``st.prices`` (the primary timeframe, or the finest when unknown)."""
    return (
        tf_ms(st.primary_timeframe) if st.primary_timeframe else (tf_ms(st.timeframes[0]) if st.timeframes else 60_000)
    )


def _bar_open_ms(row: dict[str, Any], default_len_ms: int) -> int:
    """The open time of the bar a decision names (the last part of its id), else its time less one bar."""
    try:
        return int(str(row["decision_id"]).rsplit(":", 1)[-1])
    except (KeyError, ValueError):
        return int(row["ts"]) - default_len_ms


#: How each side's candidates are marked: LONG a green triangle up, SHORT a red one down.
_SIDE_MARKS: tuple[tuple[str, Literal["up", "down"], str], ...] = (
    ("LONG", "up", "#1a9850"),
    ("SHORT", "down", "#d73027"),
)


def _charts(st: RunStats, rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One SVG chart per symbol: its closes, and every candidate at its entry, allowed filled, blocked hollow."""
    from ultra_signals.apps.svgchart import Marks, price_chart

    paths = []
    primary_ms = tf_ms(st.timeframes[0]) if st.timeframes else 60_000
    # Each chart's markers, grouped in one pass over the rows (not one pass per symbol, side and verdict).
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["symbol"], r["side"], bool(r["allowed"])), []).append(r)
    # Prices are recorded at their close (event time = close + 1); the table names a signal by the open time of
    # its bar.  Both are drawn at the bar's open time, so a marker sits on the bar it names.
    bar_ms = _primary_bar_ms(st)
    for sym in st.symbols:
        series = st.prices.get(sym)
        if not series:
            continue
        marks = []
        for allowed in (False, True):  # allowed drawn last, on top
            for side, shape, color in _SIDE_MARKS:
                pts = groups.get((sym, side, allowed))
                if pts:
                    marks.append(
                        Marks(
                            f"{side} {'allowed' if allowed else 'blocked'}",
                            [_bar_open_ms(r, primary_ms) for r in pts],
                            [float(r["entry"]) for r in pts],
                            shape,
                            color,
                            filled=allowed,
                            size=6.0 if allowed else 4.0,
                            opacity=1.0 if allowed else 0.8,
                        )
                    )
        svg = price_chart(
            title=f"{sym} — run {st.run_id}" + (" — SIMULATED" if st.simulated else ""),
            x_label="bar open time (UTC)",
            y_label=f"{sym} price (close; markers at the signal's entry)",
            line_label=f"{sym} close",
            times_ms=[t - bar_ms for t, _ in series],
            prices=[p for _, p in series],
            marks=marks,
        )
        path = out_dir / f"shadow_{st.run_id}_{sym}.svg"
        path.write_text(svg, encoding="utf-8")
        paths.append(path)
    return paths
