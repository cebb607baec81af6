"""The shadow report: what the run measured, the seven shadow criteria with their evidence, and a verdict.

Every figure here comes from the run's own measurements (:class:`RunStats`), its journal rows and its metrics
registry — never from settings or expectations.  A criterion that the run did not exercise FAILS with "not
exercised": a GO must rest on evidence, because operators put money behind it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ultra_signals.core.caps import DAY_MS, HOUR_MS
from ultra_signals.core.config import Settings
from ultra_signals.core.redaction import redact_url
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.execution.rollout import Criterion
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import RunStats
from ultra_signals.observability.latency import LatencyHistogram
from ultra_signals.observability.metrics import Metrics


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


def evaluate(st: RunStats, settings: Settings, rows: list[dict[str, Any]], metrics: Metrics) -> list[Criterion]:
    samples = _metric_samples(metrics)
    sn = settings.sniper
    out: list[Criterion] = []

    # 1. caps enforced (journal) and visible in metrics
    allowed_ts = [int(r["ts"]) for r in rows if r["allowed"]]
    h, d = max_in_sliding_window(allowed_ts, HOUR_MS), max_in_sliding_window(allowed_ts, DAY_MS)
    visible = {lab.get("window") for lab, _ in samples.get("sniper_window_count", [])} >= {"hour", "day"}
    cap_blocks = int(
        _total(samples, "signals_blocked_total", reason="hourly_cap")
        + _total(samples, "signals_blocked_total", reason="daily_cap")
    )
    exercised = cap_blocks > 0
    ok = h <= sn.max_signals_per_hour and d <= sn.daily_signal_cap and visible and sn.enabled and exercised
    out.append(
        Criterion(
            "caps_enforced",
            ok,
            f"journal: max {h} allowed in any sliding hour (cap {sn.max_signals_per_hour}), {d} in any sliding day "
            f"(cap {sn.daily_signal_cap}); {cap_blocks} cap rejections counted in signals_blocked_total; "
            f"sniper_window_count exported: {'yes' if visible else 'NO'}"
            + ("" if sn.enabled else "; sniper mode is DISABLED")
            + ("" if exercised else "; not exercised: demand never reached a cap in this run"),
            title="Caps enforced and visible in metrics",
        )
    )

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
    out.append(Criterion("mtf_blocked", ok, ev, title="MTF disagreements blocked"))

    # 3. no crash
    n_err = sum(st.errors.values())
    ok = st.crash is None and n_err == 0 and st.run_bars > 0 and st.status == "completed"
    ev = f"run {st.status}" if st.crash is None else f"CRASH: {st.crash}"
    ev += f"; {n_err} errors caught" + (f" ({dict(st.errors)})" if n_err else "")
    ev += f"; {st.run_bars:,} bars processed in the run window"
    out.append(Criterion("no_crash", ok, ev, title="No crash over the run"))

    # 4. latency
    p = latency_percentiles(st.latencies_ms)
    limit = settings.report.max_latency_p95_ms
    ok = p["n"] > 0 and p["p95"] < limit
    out.append(
        Criterion(
            "latency_p95",
            bool(ok),
            f"p95 {p['p95']:.3f} ms over {p['n']:,} decisions (p50 {p['p50']:.3f}, p99 {p['p99']:.3f}, max {p['max']:.3f})",
            title=f"Tick-to-decision p95 < {limit:g} ms",
        )
    )

    # 5. metrics refresh
    gap_limit = settings.report.max_metrics_gap_s
    ok = st.metrics_refreshes > 0 and st.metrics_max_gap_s <= gap_limit
    out.append(
        Criterion(
            "metrics_fresh",
            ok,
            f"{st.metrics_refreshes} refreshes; longest gap {st.metrics_max_gap_s:.2f} s (wall time)",
            title=f"Metrics updated at least every {gap_limit:g} s",
        )
    )

    # 6. every symbol fresh
    finest_s = tf_ms(st.timeframes[0]) / 1000 if st.timeframes else 60.0
    limit_s = max(settings.filters.max_data_age_s, 2 * finest_s)
    stale = []
    parts = []
    for sym in st.symbols:
        gap = st.max_feed_gap_s.get(sym, math.inf)
        final = st.final_feed_age_s.get(sym, math.inf)
        worst = max(gap if sym in st.max_feed_gap_s else 0.0, final)
        if sym not in st.max_feed_gap_s and final == math.inf:
            worst = math.inf
        parts.append(f"{sym} max gap {gap:g} s, final age {final:g} s")
        if worst > limit_s:
            stale.append(sym)
    ok = not stale and bool(st.symbols)
    out.append(
        Criterion(
            "symbols_fresh",
            ok,
            "; ".join(parts) + (f"; STALE: {', '.join(stale)}" if stale else ""),
            title=f"Every symbol fresh (market-time gap ≤ {limit_s:g} s)",
        )
    )

    # 7. counter backend
    failovers = _total(samples, "sniper_failovers_total")
    redis_errors = _total(samples, "redis_errors_total")
    if failovers == 0 and st.counter_backend_start == st.counter_backend_end:
        ok, ev = True, f"stable on {st.counter_backend_end} (0 failovers, {redis_errors:g} Redis errors)"
    else:
        ok = st.crash is None
        ev = (
            f"{failovers:g} failovers, {redis_errors:g} Redis errors; backend {st.counter_backend_start} → "
            f"{st.counter_backend_end}; decisions continued: {'yes' if ok else 'NO'}; "
            + "; ".join(st.counter_events[-5:])
        )
    out.append(Criterion("counter_backend", ok, ev, title="Counter backend stable or fallen back cleanly"))
    return out


def write_report(st: RunStats, settings: Settings, journal: Journal, metrics: Metrics) -> ReportResult:
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
        "metrics": {"refreshes": st.metrics_refreshes, "max_gap_s": st.metrics_max_gap_s, "port": st.metrics_port},
        "feed": {"max_gap_s": st.max_feed_gap_s, "final_age_s": st.final_feed_age_s},
        "criteria": [asdict(c) for c in criteria],
        "executor": st.executor_summary,
        "journal": redact_url(st.journal_url),
        "namespace": st.namespace,
    }
    md_path = out_dir / f"shadow_results_{st.run_id}.md"
    json_path = out_dir / f"shadow_results_{st.run_id}.json"
    json_path.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")
    charts = _charts(st, rows, out_dir) if settings.report.charts else []
    md_path.write_text(_markdown(st, data, criteria, verdict, charts), encoding="utf-8")
    return ReportResult([md_path, json_path, *charts], verdict, criteria, data)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _markdown(st: RunStats, data: dict[str, Any], criteria: list[Criterion], verdict: str, charts: list[Path]) -> str:
    lat = data["latency_ms"]
    label = "SIMULATED (built-in market simulator)" if st.simulated else st.source
    lines = [
        f"# Shadow results — run {st.run_id}",
        "",
        f"**Verdict: {verdict}**"
        + (
            "  \n**Source: SIMULATED** — a GO here validates the software path, not a market edge."
            if st.simulated
            else ""
        ),
        "",
        "## Run",
        f"- Status: {st.status}",
        f"- Source: {label}; mode {st.mode}; profile {st.profile}; symbols {', '.join(st.symbols)}; timeframes {', '.join(st.timeframes)}",
        f"- Market window: {_iso(st.market_start_ms)} → {_iso(st.market_end_ms)}"
        + (f" (planned end {_iso(st.planned_end_ms)})" if st.planned_end_ms else ""),
        f"- Wall time {st.wall_seconds:.2f} s; {st.input_bars:,} input bars incl. warm-up ({data['input_bars_per_s']:,.0f}/s); {st.run_bars:,} closed bars in the run window; events {dict(st.events)}",
        f"- Journal: {redact_url(st.journal_url)} (namespace {st.namespace})",
    ]
    lines += [f"- Notice: {n}" for n in st.notices]
    lines += [
        "",
        "## Decisions",
        f"- Candidates: {sum(st.candidates.values())} ({', '.join(f'{k} {v}' for k, v in sorted(st.candidates.items())) or 'none'})",
        f"- Allowed: {sum(st.allowed.values())} by symbol ({', '.join(f'{k} {v}' for k, v in sorted(st.allowed.items())) or 'none'}); "
        f"by side ({', '.join(f'{k} {v}' for k, v in sorted(st.allowed_side.items())) or 'none'})",
        f"- Blocked: {sum(st.blocked.values())} by reason ({', '.join(f'{k} {v}' for k, v in st.blocked.most_common()) or 'none'}); "
        f"by symbol ({', '.join(f'{k} {v}' for k, v in sorted(st.blocked_by_symbol.items())) or 'none'})",
        f"- Not evaluated (the source sent no data the filter needs; it let the candidate pass): "
        f"{', '.join(f'{k} on {v} candidates' for k, v in sorted(st.not_evaluated.items())) or 'none'}",
        "",
        "## Measured",
        f"- Tick-to-decision latency over {lat['n']:,} decision points: p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms, "
        f"p99 {lat['p99']:.3f} ms, max {lat['max']:.3f} ms",
        f"- Peak memory (max RSS) {st.peak_rss_mb:.1f} MB; CPU {st.cpu_seconds:.2f} s ({data['cpu_percent_avg']:.0f}% of one core on average)",
        f"- Errors: {dict(st.errors) or 'none'}; crash: {st.crash or 'none'}",
        f"- Counter backend: {st.counter_backend_start} → {st.counter_backend_end}; events: {st.counter_events or 'none'}",
        f"- Metrics refreshes: {st.metrics_refreshes}, longest gap {st.metrics_max_gap_s:.2f} s",
        "",
        "## Shadow criteria",
        "",
        "| # | criterion | result | evidence |",
        "|---|---|---|---|",
    ]
    for i, c in enumerate(criteria, 1):
        lines.append(f"| {i} | {c.title} | {'PASS' if c.passed else 'FAIL'} | {c.evidence.replace('|', '/')} |")
    lines += ["", f"**{verdict}**: {sum(c.passed for c in criteria)}/{len(criteria)} criteria passed.", ""]
    ex = st.executor_summary
    if ex:
        lines += _what_if(ex)
    if charts:
        lines += ["## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts]
    return "\n".join(lines) + "\n"


def _what_if(ex: dict[str, Any]) -> list[str]:
    """The executor's per-signal what-if results (paper fills on this run's own market data)."""
    lines = [f"## What-if ({ex.get('broker', 'broker')})", ""]
    head = {k: v for k, v in ex.items() if not isinstance(v, dict | list)}
    lines.append("- " + "; ".join(f"{k} {v}" for k, v in head.items()))
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
                + " | ".join(f"{c:.6g}" if isinstance(c, float) else str(c) for c in cells)
                + " |"
            )
    return [*lines, ""]


def _num_date(ms: int) -> float:
    """Matplotlib's date number for an epoch-ms timestamp (days since 1970-01-01 UTC)."""
    return ms / 86_400_000.0


def _charts(st: RunStats, rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for sym in st.symbols:
        series = st.prices.get(sym)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
        xs = [_num_date(t) for t, _ in series]
        ax.plot(xs, [p for _, p in series], color="#333333", linewidth=0.9, label=f"{sym} close")
        for allowed in (False, True):
            for side, marker, color in (("LONG", "^", "#1a9850"), ("SHORT", "v", "#d73027")):
                pts = [r for r in rows if r["symbol"] == sym and r["side"] == side and bool(r["allowed"]) is allowed]
                if not pts:
                    continue
                ax.scatter(
                    [_num_date(r["ts"]) for r in pts],
                    [r["entry"] for r in pts],
                    marker=marker,
                    color=color if allowed else "#999999",
                    alpha=1.0 if allowed else 0.25,
                    s=80 if allowed else 25,
                    label=f"{side} {'allowed' if allowed else 'blocked'} ({len(pts)})",
                    zorder=3 if allowed else 2,
                )
        title = f"{sym} — run {st.run_id}" + (" — SIMULATED" if st.simulated else "")
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.2)
        ax.xaxis_date()
        fig.autofmt_xdate()
        path = out_dir / f"shadow_{st.run_id}_{sym}.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
