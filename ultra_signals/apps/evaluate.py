"""``ultra-signals evaluate``: does the pipeline choose well?  Labels every candidate of a replay and compares.

One replay of the real engine (the same code as live, memory counters, no executor) gives every candidate with
its verdict.  Each candidate is labelled by :mod:`ultra_signals.research.outcomes` with the exits the executor
would place.  Then, walk-forward (``--train-days`` then ``--test-days``, rolling), a quality model
(:mod:`ultra_signals.research.quality`) is fitted only on candidates whose outcome was known before the test
window, scores the test window's candidates, and the selection policies (:mod:`ultra_signals.research.selection`)
are replayed over the run.  Reported for the walk-forward test windows, and separately for the final test (the
last ``--final-frac`` of the run, never used while developing a configuration): all candidates, the allowed ones,
each block reason, random selections at the same rate (many seeded draws), and the ranked variants, each with
count, mean R and its bootstrap interval, win rate, profit factor and the max drawdown of the sequence.

Every run appends its configuration to a ledger (``--ledger``) so the report says how many configurations were
evaluated on this data before this one, and how many times its final test has been looked at.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import multiprocessing
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ultra_signals.core.caps import policy_from
from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Side
from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.pipeline import SignalEngine
from ultra_signals.features.aggregation import window_runs
from ultra_signals.research import quality as q
from ultra_signals.research.outcomes import Bars, Outcome, label_columns
from ultra_signals.research.selection import DAY_MS, HOUR_MS, Policy, Row, Verdict, select
from ultra_signals.research.stats import paired_block_lift, random_baseline, summarize
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.candles_csv import CandleSeries, CandleSet, read_set, scan_folder
from ultra_signals.sources.replay import ReplaySource

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvaluationError", "evaluate"]


class EvaluationError(RuntimeError):
    """A clear, user-facing reason the evaluation cannot run."""


@dataclass(frozen=True, slots=True)
class EvalConfig:
    data: Path
    symbols: tuple[str, ...] | None
    horizon_ms: int = DAY_MS
    train_days: float = 5.0
    test_days: float = 2.0
    final_frac: float = 0.2
    jobs: int = 1
    draws: int = 1000
    seed: int = 7
    out: Path = Path("reports/evaluate")
    ledger: Path | None = None
    funding_dir: Path | None = None
    name: str = "evaluation"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: Evaluate a finished run from its journal (SQLAlchemy URL) instead of replaying; ``data`` gives the bars.
    journal: str | None = None
    run_id: str | None = None  # None: the journal's latest run


@dataclass(slots=True)
class Cand:
    key: str
    ts: int
    symbol: str
    timeframe: str
    bar_open_time: int
    long: bool
    reason: str | None
    entry: float
    stop: float
    targets: tuple[float, ...]
    x: list[float]
    outcome: Outcome | None = None
    quality: float = float("nan")
    fold: int = -1  # -1: in no test window (training only); 0..: walk-forward fold; FINAL: the final test


FINAL = 10_000


# -- 1. the engine over the replay -----------------------------------------------------------------------------


def collect(settings: Settings, cfg: EvalConfig) -> tuple[list[Cand], dict[str, Bars], str, int, int, list[str]]:
    """Every candidate of one replay with its engine verdict, and each symbol's bars of the finest timeframe."""
    try:
        src = ReplaySource(
            cfg.data,
            list(cfg.symbols) if cfg.symbols else None,
            settings.runtime.timeframes,
            None,
            None,
            settings.runtime.warmup_bars,
            funding_dir=cfg.funding_dir,
        )
    except SourceError as e:
        raise EvaluationError(str(e)) from None
    info = src.info
    label_tf = info.timeframes[0]
    eng = SignalEngine(settings, MemoryCounters(policy_from(settings.sniper)), "evaluate")
    eng.decide_from_ms = src.run_start_ms
    cands: list[Cand] = []
    rows: dict[str, list[tuple[int, float, float, float, float]]] = defaultdict(list)
    for ev in src.iter_events():
        if isinstance(ev, Kline) and ev.timeframe == label_tf and ev.closed:
            rows[ev.symbol].append((ev.open_time, ev.open, ev.high, ev.low, ev.close))
        d = eng.on_event(ev)
        if d is None:
            continue
        c = d.candidate
        long = c.side is Side.LONG
        cands.append(
            Cand(
                c.key,
                c.ts,
                c.symbol,
                c.timeframe,
                c.bar_open_time,
                long,
                d.reason,
                c.entry,
                c.stop,
                c.targets,
                q.feature_row(long, c.score, c.confidence, c.components, c.features),
            )
        )
    bars = {s: Bars.from_rows(r) for s, r in rows.items()}
    return cands, bars, label_tf, src.run_start_ms, src.run_end_ms, list(info.notices)


def _clean(d: Mapping[str, Any]) -> dict[str, float]:
    """A journaled components/features dict (NaN was stored as null) as floats (null → 0, as the model treats NaN)."""
    return {k: float(v) if v is not None else 0.0 for k, v in d.items()}


#: Settings a run's verdicts depend on: evaluating a journal with other values would compare other policies.
_RUN_KEYS = (("sniper",), ("runtime", "timeframes"), ("runtime", "signal_timeframes"), ("filters",))


def collect_journal(
    settings: Settings, cfg: EvalConfig
) -> tuple[list[Cand], dict[str, Bars], str, int, int, list[str]]:
    """Every candidate of a finished run, from its journal; each symbol's bars from ``cfg.data``."""
    from ultra_signals.journal.writer import Journal, JournalError

    assert cfg.journal is not None
    try:
        journal = Journal(cfg.journal)
    except JournalError as e:
        raise EvaluationError(f"journal {cfg.journal}: {e}") from None
    try:
        run_id = cfg.run_id or journal.latest_run_id()
        run = journal.run(run_id) if run_id else None
        if run is None:
            raise EvaluationError(f"journal: no run {cfg.run_id!r}" if cfg.run_id else "journal: it holds no run")
        if run["status"] == "running" or run["market_start_ms"] is None:
            raise EvaluationError(f"run {run_id} has not finished (status {run['status']}): evaluate a finished run")
        used = json.loads(run["settings_json"])
        mine = settings.model_dump(mode="json")
        for path in _RUN_KEYS:
            a: Any = used
            b: Any = mine
            for k in path:
                a, b = (a or {}).get(k), (b or {}).get(k)
            if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
                raise EvaluationError(
                    f"run {run_id} ran with other {'.'.join(path)} settings than these ({a} vs {b}): "
                    "pass the run's settings (--profile/--set/--timeframes) so the replayed policies are the run's"
                )
        rows = journal.decisions(str(run_id))
    finally:
        journal.close()
    if not rows:
        raise EvaluationError(f"run {run_id} journaled no candidate: nothing to evaluate")
    symbols = sorted({str(r["symbol"]) for r in rows})
    try:
        src = ReplaySource(cfg.data, symbols, settings.runtime.timeframes[:1], None, None, 0)
    except SourceError as e:
        raise EvaluationError(f"bars for labelling: {e}") from None
    label_tf = src.info.timeframes[0]
    bar_rows: dict[str, list[tuple[int, float, float, float, float]]] = defaultdict(list)
    for ev in src.iter_events():
        if isinstance(ev, Kline) and ev.closed:
            bar_rows[ev.symbol].append((ev.open_time, ev.open, ev.high, ev.low, ev.close))
    cands = cands_from_rows(rows, str(run_id))
    notices = [f"candidates from run {run_id} in {cfg.journal}; bars from {cfg.data}", *src.info.notices]
    bars = {sym: Bars.from_rows(b) for sym, b in bar_rows.items()}
    return cands, bars, label_tf, int(run["market_start_ms"]), int(run["market_end_ms"]), notices


def _loads(text: str) -> Any:
    """``json.loads``'s value for a journal column, with orjson (3 columns per candidate: a third of the report's
    table was the standard library's decoder).  orjson refuses the ``NaN``/``Infinity`` literals ``json.dumps``
    writes (an older journal's targets may hold them): those go through ``json.loads`` itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def cands_from_rows(rows: Sequence[Mapping[str, Any]], run_id: str, *, features: bool = True) -> list[Cand]:
    """A run's journaled decisions (``Journal.decisions``) as candidates with their verdicts.

    ``features=False``: no quality-model row (``x`` empty), for callers that never fit a model (the report's run
    table): decoding two JSON maps per candidate for nothing was a third of that table's cost.
    """
    cands = []
    for r in rows:
        long = r["side"] == "LONG"
        key = str(r["decision_id"])[len(run_id) + 1 :]
        cands.append(
            Cand(
                key,
                int(r["ts"]),
                str(r["symbol"]),
                str(r["timeframe"]),
                int(key.rsplit(":", 1)[1]),
                long,
                r["reason"],
                float(r["entry"]),
                float(r["stop"]),
                tuple(float(t) for t in _loads(r["targets_json"])),
                q.feature_row(
                    long,
                    float(r["score"]),
                    float(r["confidence"]),
                    _clean(_loads(r["components_json"])),
                    _clean(_loads(r["features_json"])),
                )
                if features
                else [],
            )
        )
    return cands


# -- 2. labels ---------------------------------------------------------------------------------------------------


def read_funding(folder: Path | None, symbol: str) -> list[tuple[int, float]]:
    """``<SYMBOL>-*funding.csv`` (``funding_time`` epoch ms, ``funding_rate``) from ``folder``, if any."""
    if folder is None or not folder.is_dir():
        return []
    out: list[tuple[int, float]] = []
    for path in sorted(folder.glob(f"{symbol}-*funding.csv")) + sorted(folder.glob(f"{symbol}-funding.csv")):
        with path.open() as fh:
            header = fh.readline().strip().split(",")
            if header[:2] != ["funding_time", "funding_rate"]:
                raise EvaluationError(f"{path}:1: expected the header funding_time,funding_rate, got {header}")
            for n, line in enumerate(fh, start=2):
                parts = line.strip().split(",")
                if not parts or parts == [""]:
                    continue
                try:
                    out.append((int(parts[0]), float(parts[1])))
                except (ValueError, IndexError):
                    raise EvaluationError(f"{path}:{n}: not an epoch-ms time and a rate: {line.strip()!r}") from None
    return sorted(set(out))


def _notional(settings: Settings, entry: float, stop: float) -> float:
    """The executor's sizing (risk, leverage and notional limits, no rounding) as a notional, for the impact."""
    ex = settings.execution
    dist = abs(entry - stop)
    if dist <= 0 or entry <= 0:
        return 0.0
    eq = ex.paper_equity_usdt
    qty = min(eq * ex.risk_fraction / dist, eq * ex.max_leverage / entry, ex.max_notional_usdt / entry)
    return qty * entry


def _label_symbol(
    args: tuple[list[Cand], Bars, list[tuple[int, float]], tuple[float, float, float], list[float], int, int],
) -> list[Outcome]:
    """``label_many`` of the candidates' trades (``Trade(c.long, c.entry, c.stop, c.targets, c.ts, Costs(fee, half,
    impact, notional))``), given as columns: a ``Trade`` and a ``Costs`` per candidate cost as much as the labels."""
    cands, bars, funding, (fee, half, impact), notionals, tp_index, horizon_ms = args
    m = len(cands)
    return label_columns(
        long=[c.long for c in cands],
        entry_ref=[c.entry for c in cands],
        stop=[c.stop for c in cands],
        targets=[c.targets for c in cands],
        decision_ts=[c.ts for c in cands],
        fee_taker_bps=[fee] * m,
        half_spread_bps=[half] * m,
        impact_bps_per_10k_usdt=[impact] * m,
        notional=notionals,
        take_profit_target=tp_index,
        horizon_ms=horizon_ms,
        bars=bars,
        funding=funding,
    )


def label_all(settings: Settings, cfg: EvalConfig, cands: list[Cand], bars: Mapping[str, Bars]) -> None:
    ex = settings.execution
    by_symbol: dict[str, list[Cand]] = defaultdict(list)
    for c in cands:
        by_symbol[c.symbol].append(c)
    costs = (ex.fee_taker_bps, ex.slippage_half_spread_bps, ex.slippage_impact_bps_per_10k_usdt)
    tasks = []
    for sym in sorted(by_symbol):
        group = by_symbol[sym]
        notionals = [_notional(settings, c.entry, c.stop) for c in group]
        funding = read_funding(cfg.funding_dir, sym) or read_funding(cfg.data, sym)
        tasks.append((group, bars[sym], funding, costs, notionals, ex.take_profit_target, cfg.horizon_ms))
    results = _map(_label_symbol, tasks, cfg.jobs)
    for (group, *_), outs in zip(tasks, results, strict=True):
        for c, o in zip(group, outs, strict=True):
            c.outcome = o


def _map(fn: Any, tasks: Sequence[Any], jobs: int) -> list[Any]:
    """``map`` over a process pool when ``jobs > 1`` (order kept, so the result does not depend on ``jobs``)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    with multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks))) as pool:
        return pool.map(fn, tasks)


# -- 3. walk-forward folds and the quality model ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fold:
    index: int
    train_from: int
    test_from: int
    test_to: int  # exclusive


def make_folds(run_start: int, run_end: int, cfg: EvalConfig) -> tuple[list[Fold], Fold]:
    """Rolling walk-forward windows over the first (1 − final_frac) of the run, and the final test window."""
    train = int(cfg.train_days * DAY_MS)
    test = int(cfg.test_days * DAY_MS)
    final_from = run_start + int((run_end - run_start) * (1.0 - cfg.final_frac))
    folds: list[Fold] = []
    t = run_start + train
    while t < final_from:
        folds.append(Fold(len(folds), t - train, t, min(t + test, final_from)))
        t += test
    return folds, Fold(FINAL, final_from - train, final_from, run_end + 1)


def _training_set(cands: Sequence[Cand], fold: Fold, bar_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of the training window whose outcome was fully known before the test window opened."""
    xs, ys = [], []
    for c in cands:
        o = c.outcome
        if o is None or not o.labelled or not (fold.train_from <= c.ts < fold.test_from):
            continue
        if o.exit_ts + bar_ms > fold.test_from:  # purge: its exit bar had not closed by then
            continue
        xs.append(c.x)
        ys.append(1.0 if o.exit_kind == "target" else 0.0)
    return np.asarray(xs, dtype=np.float64).reshape(-1, len(q.FEATURES)), np.asarray(ys, dtype=np.float64)


def _fit_fold(args: tuple[Sequence[Cand], Fold, int]) -> q.QualityModel:
    cands, fold, bar_ms = args
    x, y = _training_set(cands, fold, bar_ms)
    return q.fit(x, y)


def score_folds(cands: list[Cand], folds: Sequence[Fold], bar_ms: int, jobs: int) -> dict[int, q.QualityModel]:
    """Fit one model per fold (on the past only) and give each test-window candidate its quality."""
    models = _map(_fit_fold, [(cands, f, bar_ms) for f in folds], jobs)
    out: dict[int, q.QualityModel] = {}
    for f, m in zip(folds, models, strict=True):
        out[f.index] = m
        idx = [i for i, c in enumerate(cands) if f.test_from <= c.ts < f.test_to]
        if not idx:
            continue
        p = m.predict(np.asarray([cands[i].x for i in idx], dtype=np.float64))
        for i, pi in zip(idx, p, strict=True):
            cands[i].quality = float(pi)
            cands[i].fold = f.index
    return out


# -- 4. selection variants and the report's figures --------------------------------------------------------------


def variants(settings: Settings) -> dict[str, Policy]:
    """The selection policies compared (each one counts as a configuration tried).

    Ranked uses the settings' ``budget_reserve``, ``budget_window_hours`` and ``budget_min_history``; the
    same-direction variant uses ``max_same_direction`` per ``same_direction_window_min`` (3 per 6 h when unset).
    Quality comes from each fold's fitted model, not from ``sniper.quality``: the evaluation measures whether a
    model fitted on the past ranks the future well.
    """
    sn = settings.sniper
    caps = policy_from(sn)
    cd = sn.cooldown_bars
    window = int(sn.budget_window_hours * HOUR_MS)
    same = (sn.max_same_direction or 3, int(sn.same_direction_window_min * 60_000))
    return {
        "first_come": Policy(caps, cd, "first_come"),
        "ranked": Policy(caps, cd, "ranked", sn.budget_reserve, window, sn.budget_min_history),
        "ranked_same_dir": Policy(caps, cd, "ranked", sn.budget_reserve, window, sn.budget_min_history, same),
    }


def _labelled(c: Cand) -> bool:
    return c.outcome is not None and c.outcome.labelled


def _r(cands: Sequence[Cand]) -> np.ndarray:
    return np.asarray([c.outcome.r for c in cands if c.outcome is not None and c.outcome.labelled], dtype=np.float64)


def region_report(
    cands: Sequence[Cand], verdicts: Mapping[str, Sequence[Verdict]], in_region: Sequence[bool], cfg: EvalConfig
) -> dict[str, Any]:
    """Every group's figures over one region (the walk-forward test windows, or the final test)."""
    idx = [i for i, inside in enumerate(in_region) if inside and _labelled(cands[i])]
    sel = [cands[i] for i in idx]
    d, s = cfg.draws, cfg.seed
    groups: dict[str, Any] = {"all candidates": summarize(_r(sel), draws=d, seed=s).as_dict()}
    reached = [cands[i] for i in idx if cands[i].reason in (None, "cooldown", "hourly_cap", "daily_cap")]
    groups["reached the budget step"] = summarize(_r(reached), draws=d, seed=s).as_dict()
    if any((cands[i].reason is None) != (verdicts["first_come"][i].reason is None) for i in idx):
        groups["allowed: as journaled"] = summarize(_r([c for c in sel if c.reason is None]), draws=d, seed=s).as_dict()
    for name, vs in verdicts.items():
        groups[f"allowed: {name}"] = summarize(
            _r([cands[i] for i in idx if vs[i].reason is None]), draws=d, seed=s
        ).as_dict()
    reasons = Counter(cands[i].reason for i in idx if cands[i].reason is not None)
    for reason, _n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        groups[f"blocked: {reason}"] = summarize(_r([c for c in sel if c.reason == reason]), draws=d, seed=s).as_dict()
    for name, vs in verdicts.items():
        if name == "first_come":
            continue
        for reason in ("below_budget_threshold", "same_direction_cap"):
            g = [cands[i] for i in idx if vs[i].reason == reason]
            if g:
                groups[f"{name} blocked: {reason}"] = summarize(_r(g), draws=d, seed=s).as_dict()
    fc = _r([cands[i] for i in idx if verdicts["first_come"][i].reason is None])
    pool_all = _r(sel)
    pool_budget = _r(reached)
    baselines = {
        "random from all candidates": random_baseline(
            pool_all, fc.size, float(fc.mean()) if fc.size else math.nan, draws=d, seed=s
        ).as_dict(),
        "random from those that reached the budget step": random_baseline(
            pool_budget, fc.size, float(fc.mean()) if fc.size else math.nan, draws=d, seed=s + 1
        ).as_dict(),
    }
    lifts = {}
    # Ranked vs first-come: both drawn from the same candidates, compared on the same block resamples.  Blocks
    # are days when the period spans at least 10 of them, else hours (a short series has too few days).
    rr = _r(sel)
    span = (max(c.ts for c in sel) - min(c.ts for c in sel)) if sel else 0
    block_ms = DAY_MS if span >= 10 * DAY_MS else HOUR_MS
    days = np.asarray([c.ts // block_ms for c in sel], dtype=np.int64)
    in_fc = np.asarray([verdicts["first_come"][i].reason is None for i in idx], dtype=bool)
    for name, vs in verdicts.items():
        if name == "first_come":
            continue
        in_a = np.asarray([vs[i].reason is None for i in idx], dtype=bool)
        diff, ci = paired_block_lift(rr, in_a, in_fc, days, draws=d, seed=s)
        lifts[f"{name} − first_come"] = {"mean_r_diff": diff, "ci": ci, "n": [int(in_a.sum()), int(in_fc.sum())]}
    diff, ci = paired_block_lift(rr, in_fc, np.ones(rr.size, dtype=bool), days, draws=d, seed=s)
    lifts["first_come − all candidates"] = {"mean_r_diff": diff, "ci": ci, "n": [int(fc.size), int(pool_all.size)]}
    scored = [c for c in sel if c.quality == c.quality]
    qual: dict[str, Any] = {}
    if scored:
        p = np.asarray([c.quality for c in scored])
        y = np.asarray([1.0 if c.outcome and c.outcome.exit_kind == "target" else 0.0 for c in scored])
        qual = {
            "n": len(scored),
            "brier": q.brier(p, y),
            "brier_base_rate": q.brier(np.full_like(p, float(y.mean())), y),
            "calibration": q.calibration(p, y),
        }
    kinds = Counter(c.outcome.exit_kind for c in sel if c.outcome is not None)
    return {
        "groups": groups,
        "random": baselines,
        "lift": lifts,
        "lift_block": "day" if block_ms == DAY_MS else "hour",
        "quality": qual,
        "exit_kinds": dict(kinds),
    }


def _ledger(cfg: EvalConfig, config_hash: str, dataset: str, viewed_final: bool) -> dict[str, int]:
    if cfg.ledger is None:
        return {"configurations_before": 0, "final_test_views": 1}
    entries = []
    if cfg.ledger.exists():
        entries = [json.loads(line) for line in cfg.ledger.read_text().splitlines() if line.strip()]
    same = [e for e in entries if e.get("dataset") == dataset]
    before = len({e["config"] for e in same} - {config_hash})
    views = sum(1 for e in same if e.get("viewed_final")) + (1 if viewed_final else 0)
    cfg.ledger.parent.mkdir(parents=True, exist_ok=True)
    with cfg.ledger.open("a") as fh:
        fh.write(json.dumps({"dataset": dataset, "config": config_hash, "viewed_final": viewed_final}) + "\n")
    return {"configurations_before": before, "final_test_views": views}


def evaluate(settings: Settings, cfg: EvalConfig) -> dict[str, Any]:
    """Run the whole evaluation and write ``<out>/<name>.{md,json,png}``; returns the JSON document."""
    if cfg.horizon_ms <= 0 or cfg.train_days <= 0 or cfg.test_days <= 0 or not 0.0 < cfg.final_frac < 1.0:
        raise EvaluationError("horizon, --train-days and --test-days must be > 0 and --final-frac in (0, 1)")
    # The engine runs first-come (the replayed policies add the budget steps); its verdicts are the reference.
    sniper = settings.sniper.model_copy(update={"selection": "first_come", "max_same_direction": None})
    if cfg.journal is not None:
        if settings.sniper.selection != "first_come" or settings.sniper.max_same_direction is not None:
            raise EvaluationError("evaluating a journal needs a first_come run without max_same_direction")
        cands, bars, label_tf, run_start, run_end, notices = collect_journal(settings, cfg)
    else:
        reference = settings.model_copy(update={"sniper": sniper})
        cands, bars, label_tf, run_start, run_end, notices = collect(reference, cfg)
    if not cands:
        raise EvaluationError("the replay produced no candidate: nothing to evaluate")
    bar_ms = tf_ms(label_tf)
    label_all(settings, cfg, cands, bars)
    folds, final = make_folds(run_start, run_end, cfg)
    if not folds:
        raise EvaluationError(
            f"no walk-forward fold fits: the run spans {(run_end - run_start) / DAY_MS:.2f} days, "
            f"--train-days {cfg.train_days} leaves nothing before the final {cfg.final_frac:.0%}"
        )
    models = score_folds(cands, [*folds, final], bar_ms, cfg.jobs)
    rows = [Row(c.key, c.ts, c.symbol, c.timeframe, c.bar_open_time, c.long, c.reason, c.quality) for c in cands]
    pols = variants(settings)
    verdicts = {name: select(rows, pol, settings.sniper.daily_signal_cap) for name, pol in pols.items()}
    mismatch = [c.key for c, v in zip(cands, verdicts["first_come"], strict=True) if v.reason != c.reason]
    if mismatch and cfg.journal is None:
        raise EvaluationError(f"replaying first_come did not reproduce the engine's verdicts ({len(mismatch)} differ)")
    if mismatch:  # a journaled run may have started from restored counters, a pause, another runner's slots
        notices.append(
            f"replaying first_come differs from the journal's verdicts for {len(mismatch)} candidates "
            "(state restored at start or shared with other runners); the groups use the journal's verdicts, "
            "the policy comparisons the replay"
        )
    wf = [c.fold not in (-1, FINAL) for c in cands]
    fin = [c.fold == FINAL for c in cands]
    dataset = f"{cfg.data.resolve()}|{','.join(sorted(bars))}"
    cfg_doc = {
        "timeframes": settings.runtime.timeframes,
        "signal_timeframes": settings.runtime.signal_timeframes,
        "horizon_ms": cfg.horizon_ms,
        "train_days": cfg.train_days,
        "test_days": cfg.test_days,
        "final_frac": cfg.final_frac,
        "overrides": {k: str(v) for k, v in sorted(cfg.overrides.items())},
        "variants": sorted(pols),
        "take_profit_target": settings.execution.take_profit_target,
    }
    config_hash = hashlib.sha256(json.dumps(cfg_doc, sort_keys=True).encode()).hexdigest()[:12]
    ledger = _ledger(cfg, config_hash, dataset, viewed_final=True)
    doc: dict[str, Any] = {
        "name": cfg.name,
        "data": str(cfg.data),
        "journal": cfg.journal,
        "symbols": sorted(bars),
        "label_timeframe": label_tf,
        "run": [_iso(run_start), _iso(run_end)],
        "walk_forward": [
            {"fold": f.index, "train_from": _iso(f.train_from), "test": [_iso(f.test_from), _iso(f.test_to)]}
            for f in folds
        ],
        "final_test": [_iso(final.test_from), _iso(final.test_to)],
        "config": cfg_doc,
        "config_hash": config_hash,
        "configurations_tried": {
            "selection_variants_in_this_run": len(pols),
            "earlier_configurations_on_this_data": ledger["configurations_before"],
            "final_test_views_including_this_one": ledger["final_test_views"],
        },
        "candidates": len(cands),
        "engine_verdicts": dict(Counter(c.reason or "allowed" for c in cands)),
        "notices": notices,
        "walk_forward_test": region_report(cands, verdicts, wf, cfg),
        "final": region_report(cands, verdicts, fin, cfg),
        "final_model": models[FINAL].as_dict(),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / f"{cfg.name}.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    (cfg.out / f"{cfg.name}.md").write_text(markdown(doc))
    plot(cands, verdicts, wf, cfg.out / f"{cfg.name}.png", cfg)
    return doc


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(type(o).__name__)


# -- 5. outputs --------------------------------------------------------------------------------------------------


def _f(x: Any, nd: int = 3) -> str:
    if isinstance(x, float):
        return "—" if math.isnan(x) else ("∞" if math.isinf(x) else f"{x:+.{nd}f}")
    return str(x)


def _group_lines(groups: Mapping[str, Any]) -> list[str]:
    lines = [
        "| group | count | mean R | 95 % CI | win rate | profit factor | total R | max DD (R) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, g in groups.items():
        ci = g["mean_ci"]
        wr = "—" if g["win_rate"] != g["win_rate"] else f"{g['win_rate']:.0%}"
        pf = g["profit_factor"]
        pfs = "—" if pf != pf else "∞" if math.isinf(pf) else f"{pf:.2f}"
        lines.append(
            f"| {name} | {g['count']} | {_f(g['mean_r'])} | [{_f(ci[0])}, {_f(ci[1])}] | {wr} | {pfs} | "
            f"{g['total_r']:+.1f} | {g['max_drawdown_r']:.1f} |"
        )
    return lines


def _random_lines(random: Mapping[str, Any], allowed: str) -> list[str]:
    lines = [
        f"| random baseline (same count as {allowed}) | k | mean R of draws | 95 % of draws | P(random ≥ allowed) |",
        "|---|---:|---:|---|---:|",
    ]
    for name, b in random.items():
        iv = b["interval"]
        lines.append(
            f"| {name} ({b['draws']} draws) | {b['k']} | {_f(b['mean_r'])} | [{_f(iv[0])}, {_f(iv[1])}] | {_f(b['p_at_least'], 2)} |"
        )
    return lines


def _table(region: Mapping[str, Any]) -> list[str]:
    lines = _group_lines(region["groups"])
    lines.append("")
    lines += _random_lines(region["random"], "first_come allowed")
    lines.append("")
    lines.append(f"| lift (paired, {region['lift_block']}-block bootstrap) | mean R difference | 95 % CI | n |")
    lines.append("|---|---:|---|---|")
    for name, lf in region["lift"].items():
        lines.append(
            f"| {name} | {_f(lf['mean_r_diff'])} | [{_f(lf['ci'][0])}, {_f(lf['ci'][1])}] | {lf['n'][0]} vs {lf['n'][1]} |"
        )
    qd = region.get("quality") or {}
    if qd:
        lines.append("")
        lines.append(
            f"Quality model on these candidates: Brier {qd['brier']:.4f} vs {qd['brier_base_rate']:.4f} for the "
            f"base rate (lower is better; n={qd['n']}). Calibration (predicted → realised take-profit rate): "
            + ", ".join(f"{b['p_mean']:.2f}→{b['hit_rate']:.2f} (n={b['n']})" for b in qd["calibration"])
        )
    lines.append("")
    lines.append("Exits: " + ", ".join(f"{k} {v}" for k, v in sorted(region["exit_kinds"].items())))
    return lines


def markdown(doc: Mapping[str, Any]) -> str:
    ct = doc["configurations_tried"]
    out = [
        f"# Evaluation: {doc['name']}",
        "",
        f"Data `{doc['data']}`, symbols {', '.join(doc['symbols'])}; run {doc['run'][0]} → {doc['run'][1]} UTC; "
        f"labels on {doc['label_timeframe']} bars; {doc['candidates']} candidates.",
        f"Configuration `{doc['config_hash']}`: {json.dumps(doc['config'], sort_keys=True)}",
        f"Configurations tried: {ct['selection_variants_in_this_run']} selection variants in this run, "
        f"{ct['earlier_configurations_on_this_data']} other configurations evaluated earlier on this data; "
        f"final test looked at {ct['final_test_views_including_this_one']} time(s) including this one.",
        "",
        "Engine verdicts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(doc["engine_verdicts"].items(), key=lambda kv: -kv[1])),
        "",
        f"## Walk-forward test windows ({len(doc['walk_forward'])} folds)",
        "",
        *_table(doc["walk_forward_test"]),
        "",
        f"## Final test ({doc['final_test'][0]} → {doc['final_test'][1]}), reported separately",
        "",
        *_table(doc["final"]),
        "",
    ]
    return "\n".join(out)


def plot(
    cands: Sequence[Cand],
    verdicts: Mapping[str, Sequence[Verdict]],
    region: Sequence[bool],
    path: Path,
    cfg: EvalConfig,
) -> None:
    """Cumulative R over event time: first_come and ranked allowed, a random band at first_come's rate, all (scaled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = [i for i, inside in enumerate(region) if inside and _labelled(cands[i])]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if idx:
        t = np.asarray([cands[i].ts for i in idx], dtype="datetime64[ms]")
        r = np.asarray([cands[i].outcome.r for i in idx])  # type: ignore[union-attr]
        for name, vs in verdicts.items():
            m = np.asarray([vs[i].reason is None for i in idx])
            ax.step(t, np.cumsum(np.where(m, r, 0.0)), where="post", label=f"allowed: {name} ({int(m.sum())})")
        k = int(sum(1 for i in idx if verdicts["first_come"][i].reason is None))
        if 0 < k <= len(idx):
            rng = np.random.default_rng(cfg.seed)
            paths = np.empty((200, len(idx)))
            for j in range(200):
                m = np.zeros(len(idx))
                m[rng.choice(len(idx), size=k, replace=False)] = 1.0
                paths[j] = np.cumsum(m * r)
            lo, mid, hi = np.quantile(paths, [0.025, 0.5, 0.975], axis=0)
            ax.fill_between(t, lo, hi, step="post", alpha=0.2, color="grey", label="random at the same rate (95 %)")
            ax.step(t, mid, where="post", color="grey", lw=0.8)
            ax.step(t, np.cumsum(r) * k / len(idx), where="post", color="black", ls=":", label="all candidates × rate")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("cumulative R")
    ax.set_title(f"{cfg.name}: walk-forward test windows")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- 6. one run's own candidates (the shadow report's evaluation section) ---------------------------------------

#: Below this many labelled candidates (or with none allowed) the run's table says "not enough data".
MIN_RUN_CANDIDATES = 30


def run_bars(
    settings: Settings,
    source: str,
    symbols: Sequence[str],
    timeframes: Sequence[str],
    start_ms: int,
    end_ms: int,
    planned_end_ms: int | None,
    data_dir: str | None,
    parsed: Mapping[str, tuple[CandleSet, CandleSeries]] | None = None,
) -> tuple[dict[str, Bars], str]:
    """The finest-timeframe bars a finished run saw (opened at or after ``start_ms``, closed by ``end_ms``).

    A replay reads them again from its folder; the simulator is deterministic (seeded), so it generates them
    again with the run's own settings, symbols, timeframes and window.  A live run keeps no candles: that is an
    :class:`EvaluationError` with the reason (``evaluate --journal`` with recorded candles covers it).
    ``parsed``: a replay's candles it already parsed (:meth:`ReplaySource.parsed`), used for the same files.
    """
    label_tf = timeframes[0]
    if source == "replay":
        folder = data_dir or settings.replay.data_dir
        if not folder:
            raise EvaluationError("the replay's data folder is not known to the report")
        try:
            return replay_label_bars(folder, symbols, label_tf, start_ms, end_ms, parsed), label_tf
        except SourceError as e:
            raise EvaluationError(f"bars for labelling: {e}") from None
    if source == "sim":
        from ultra_signals.sources.sim import SimSource, parse_start

        sim_start = parse_start(settings.sim.start)
        minutes = -(-((planned_end_ms or end_ms) - sim_start) // 60_000)
        try:
            src: Any = SimSource(settings.sim, symbols, timeframes, max(1, minutes), settings.runtime.warmup_bars)
        except SourceError as e:
            raise EvaluationError(f"regenerating the simulated bars: {e}") from None
    else:
        raise EvaluationError(
            f"a {source} run keeps no candles to label its candidates with; record them and run "
            "`ultra-signals evaluate --journal URL --data DIR`"
        )
    rows: dict[str, list[tuple[int, float, float, float, float]]] = {sym: [] for sym in symbols}
    step = tf_ms(label_tf)
    for ev in src.iter_events():
        if (
            isinstance(ev, Kline)
            and ev.closed
            and ev.timeframe == label_tf
            and ev.symbol in rows
            and ev.open_time >= start_ms - step
            and ev.open_time + step <= end_ms + 1
        ):
            rows[ev.symbol].append((ev.open_time, ev.open, ev.high, ev.low, ev.close))
    return {sym: Bars.from_rows(r) for sym, r in rows.items()}, label_tf


def replay_label_bars(
    folder: str | Path,
    symbols: Sequence[str],
    label_tf: str,
    start_ms: int,
    end_ms: int,
    parsed: Mapping[str, tuple[CandleSet, CandleSeries]] | None = None,
) -> dict[str, Bars]:
    """The ``label_tf`` bars a replay of ``folder`` from ``start_ms`` to ``end_ms`` (no warm-up) yields, per symbol.

    The same bars as ``ReplaySource(folder, symbols, [label_tf], start_ms, end_ms, 0)`` streams (opened at or
    after ``start_ms``, closed before ``end_ms``), read as numpy columns instead: the report's labels need only
    (open time, o, h, l, c), and building a ``Kline`` per bar of a second replay was half the report's evaluation
    (issue 13).  Each symbol's finest file is read (as the replay does) and aggregated with numpy when it is
    finer than ``label_tf``; gaps stay gaps and a file's last window counts only when its last bar is there.
    Raises :class:`SourceError` with the replay's reasons (missing file, unusable timeframe, no bar in the window).
    ``parsed``: columns a replay already parsed, per symbol with the candle set they came from; a symbol's are used
    when they are of the same files as it would read here.
    """
    root = Path(folder)
    scan = scan_folder(root)
    found = sorted(scan.sets)
    if not found:
        raise SourceError(f"{root}: no <SYMBOL>-<timeframe>.csv candle files")
    missing = [s for s in symbols if s not in scan.sets]
    if missing:
        raise SourceError(f"{root}: no candle file for {', '.join(missing)} (found: {', '.join(found)})")
    chosen = list(dict.fromkeys(symbols))
    try:
        length = tf_ms(label_tf)
    except ValueError as e:
        raise SourceError(str(e)) from None
    bases = {s: min(scan.sets[s], key=tf_ms) for s in chosen}
    if any(length < tf_ms(b) for b in bases.values()):
        raise SourceError(f"none of the timeframes {[label_tf]} can be replayed from these files")
    for s, b in bases.items():
        if length % tf_ms(b):
            raise SourceError(
                f"timeframe {label_tf} cannot be built from {s}-{b} candles: {label_tf} is not a multiple of {b}"
            )
    if end_ms <= start_ms:
        raise SourceError(f"empty run window: start {start_ms} is not before the end {end_ms} (end_ms)")
    out: dict[str, Bars] = {}
    for s in chosen:
        cs = scan.sets[s][bases[s]]
        given = parsed.get(s) if parsed else None
        series = given[1] if given is not None and given[0] == cs else read_set(cs)
        if not len(series):
            raise SourceError(f"{', '.join(str(p) for p in cs.paths)}: no bars")
        ot, op, hi, lo, cl = _ohlc_windows(
            series.open_time, series.open, series.high, series.low, series.close, tf_ms(bases[s]), length
        )
        if not len(ot):
            raise SourceError(f"{s}: {', '.join(p.name for p in cs.paths)} holds no complete {label_tf} bar")
        i = int(np.searchsorted(ot, start_ms, side="left"))
        j = max(i, int(np.searchsorted(ot, end_ms - length, side="right")))  # open + length - 1 < end_ms
        out[s] = Bars(ot[i:j].copy(), op[i:j].copy(), hi[i:j].copy(), lo[i:j].copy(), cl[i:j].copy())
    if not any(len(bars) for bars in out.values()):
        raise SourceError(f"no bars close inside the run window [{start_ms}, {end_ms}]")
    return out


def _ohlc_windows(
    ot: npt.NDArray[np.int64],
    op: npt.NDArray[np.float64],
    hi: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    cl: npt.NDArray[np.float64],
    base_ms: int,
    length: int,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]:
    """Open time, open, high, low and close of the ``length`` bars that ``aggregate_arrays`` (the replay's
    aggregation) builds from checked base columns: the same windows, the final one only when its end is proven.
    High and low are a max and a min, so they are exact whatever the order; no sum is needed here."""
    n = len(ot)
    if length == base_ms or not n:
        return ot, op, hi, lo, cl
    # The file may stop mid-window: the replay does not emit that window, nor does this.
    ws, _, first, last, done = window_runs(ot, base_ms, length, final_proven=False)
    return (
        ws[first[:done]],
        op[first[:done]],
        np.maximum.reduceat(hi, first)[:done],
        np.minimum.reduceat(lo, first)[:done],
        cl[last[:done]],
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a block that allocates tens of thousands of acyclic objects (candidates,
    outcomes, tuples): the allocations kept triggering collections that walk every live object of the process (a
    replay holds many), about a tenth of the run table's CPU, to free nothing that reference counting does not.
    Restored as it was, also on an exception."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@_gc_paused()
def run_table(
    settings: Settings,
    rows: Sequence[Mapping[str, Any]],
    run_id: str,
    bars: Mapping[str, Bars],
    *,
    horizon_ms: int = DAY_MS,
    draws: int = 1000,
    seed: int = 7,
    funding_dir: Path | None = None,
) -> dict[str, Any]:
    """The evaluation table of one run's own candidates, with the run's own verdicts (no replayed policy).

    Groups: allowed, each block reason, all candidates; a random selection from all candidates at the allowed
    rate (many draws).  Labels, summaries and baselines are :mod:`ultra_signals.research`'s, as in ``evaluate``.
    Returns ``{"status": "ok" | "not_enough_data", ...}``.
    """
    cands = cands_from_rows(rows, run_id, features=False)
    cfg = EvalConfig(
        data=Path("."), symbols=None, horizon_ms=horizon_ms, draws=draws, seed=seed, funding_dir=funding_dir
    )
    empty = Bars.from_rows([])
    label_all(settings, cfg, cands, {sym: bars.get(sym, empty) for sym in {c.symbol for c in cands}})
    sel = [c for c in cands if _labelled(c)]
    allowed = [c for c in sel if c.reason is None]
    doc: dict[str, Any] = {
        "candidates": len(cands),
        "labelled": len(sel),
        "allowed_labelled": len(allowed),
        "horizon_ms": horizon_ms,
        "exit_kinds": dict(Counter(c.outcome.exit_kind for c in sel if c.outcome is not None)),
    }
    if len(sel) < MIN_RUN_CANDIDATES or not allowed:
        doc["status"] = "not_enough_data"
        doc["why"] = (
            f"{len(sel)} labelled candidates ({len(allowed)} allowed) of {len(cands)}; the table needs at least "
            f"{MIN_RUN_CANDIDATES} labelled candidates and one allowed"
        )
        return doc
    groups: dict[str, Any] = {"allowed": summarize(_r(allowed), draws=draws, seed=seed).as_dict()}
    reasons = Counter(c.reason for c in sel if c.reason is not None)
    for reason, _n in sorted(reasons.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        groups[f"blocked: {reason}"] = summarize(
            _r([c for c in sel if c.reason == reason]), draws=draws, seed=seed
        ).as_dict()
    groups["all candidates"] = summarize(_r(sel), draws=draws, seed=seed).as_dict()
    ar = _r(allowed)
    doc["status"] = "ok"
    doc["groups"] = groups
    doc["random"] = {
        "random from all candidates": random_baseline(
            _r(sel), ar.size, float(ar.mean()), draws=draws, seed=seed
        ).as_dict()
    }
    return doc


def run_table_markdown(doc: Mapping[str, Any]) -> list[str]:
    """The run table as markdown lines (the same columns as ``evaluate``'s report)."""
    out = [
        f"Candidates labelled with the executor's exits within {doc['horizon_ms'] / HOUR_MS:g} h, after fees and "
        "the paper broker's slippage, on the bars this run saw (a trade still open at the run's end is marked to "
        "its last bar: exit `data_end`). The run's own verdicts; no policy is replayed. Bootstrap 95 % intervals.",
        "",
    ]
    if doc.get("status") != "ok":
        return [*out, f"**Not enough data:** {doc.get('why', 'no candidates')}.", ""]
    exits = ", ".join(f"{k} {v}" for k, v in sorted(doc["exit_kinds"].items()))
    return [*out, *_group_lines(doc["groups"]), "", *_random_lines(doc["random"], "allowed"), "", f"Exits: {exits}", ""]
