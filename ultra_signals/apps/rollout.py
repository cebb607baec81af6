"""The gated rollout: shadow → canary → production phases 1–4, each step decided on measured evidence.

A gate reads what a finished run left behind (the runs and decisions tables, the execution journal, the
run's report JSON) and never re-runs anything: the verdict is GO only when every criterion passed, and each
criterion carries the evidence that decided it.  Verdicts are journaled, so ``rollout status`` shows the
stage, its runs and the gates it went through.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ultra_signals.core.caps import DAY_MS, HOUR_MS
from ultra_signals.core.config import STAGES as STAGES  # the profiles in rollout order: one list, in core
from ultra_signals.core.config import RolloutSettings
from ultra_signals.counters.windows import max_window_count
from ultra_signals.execution.edge import expectancy, trade_r
from ultra_signals.journal import queries
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

TESTNET_EVIDENCE = "Binance TESTNET (demo exchange, binance.testnet: true)"


@dataclass(frozen=True, slots=True)
class Criterion:
    """One check of a verdict, with the evidence it rests on: the shadow report's criteria and the rollout gate's.

    ``title`` is the human heading the shadow report prints (the gate's criteria go by ``name``).
    ``kind``: "engineering" criteria decide GO / NO-GO; "promotion" ones decide whether a GO may promote the stage
    (live data, long enough); "info" ones are shown and journaled but decide nothing (the edge in shadow).
    """

    name: str
    passed: bool
    evidence: str
    title: str = ""
    kind: str = "engineering"


@dataclass(frozen=True, slots=True)
class Verdict:
    run_id: str
    stage: str
    next_stage: str | None
    criteria: list[Criterion]

    @property
    def go(self) -> bool:
        deciding = [c for c in self.criteria if c.kind == "engineering"]
        return bool(deciding) and all(c.passed for c in deciding)

    @property
    def promotable(self) -> bool:
        """GO and every promotion condition met: the only verdict that may move the stage on (exit status 0)."""
        return self.go and all(c.passed for c in self.criteria if c.kind == "promotion")

    @property
    def blockers(self) -> list[Criterion]:
        return [c for c in self.criteria if c.kind == "promotion" and not c.passed]

    @property
    def label(self) -> str:
        if not self.go:
            return "NO-GO"
        if self.promotable:
            return "GO"
        src = next((c for c in self.blockers if c.name == "live_source"), None)
        if src is None:
            what = "GO"
        elif src.evidence.startswith(TESTNET_EVIDENCE):
            what = "GO on the Binance testnet"
        elif src.evidence.startswith("SIMULATED"):
            what = "GO on simulation"
        else:
            what = "GO on historical data"
        return f"{what} — not eligible for promotion"


def next_stage(stage: str) -> str | None:
    i = STAGES.index(stage) if stage in STAGES else -1
    return STAGES[i + 1] if 0 <= i < len(STAGES) - 1 else None


def previous_stage(stage: str) -> str | None:
    i = STAGES.index(stage) if stage in STAGES else -1
    return STAGES[i - 1] if i > 0 else None


class GateError(ValueError):
    """The run cannot be gated (unknown id, still running); the message says which and why."""


def _settings_of(run: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(run.get("settings_json") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _shadow_criteria(run_id: str, report_dir: Path) -> list[Criterion]:
    """The shadow report's criteria for this run, as written by ``apps/report.py`` at the end of the run."""
    path = report_dir / f"shadow_results_{run_id}.json"
    if not path.exists():
        return [Criterion("shadow_report", False, f"{path} not found: the run was made without --report")]
    data = json.loads(path.read_text(encoding="utf-8"))
    crit = data.get("criteria") or []
    if not crit:
        return [Criterion("shadow_report", False, f"{path} has no criteria")]
    return [Criterion(f"shadow:{c['name']}", bool(c["passed"]), str(c.get("evidence", ""))) for c in crit]


def _wall_hours(run: dict[str, Any]) -> float:
    start, end = run.get("started_at"), run.get("ended_at")
    if start is None or end is None:
        return 0.0
    return max(0.0, (float(end) - float(start)) / 3600.0)


def _is_testnet(run: dict[str, Any]) -> bool:
    """The run traded Binance's demo exchange (``binance.testnet: true`` in the settings it journaled)."""
    b = _settings_of(run).get("binance")
    return isinstance(b, dict) and bool(b.get("testnet"))


def _is_live(run: dict[str, Any]) -> bool:
    """The real market: Binance mainnet data (a testnet run's fills are demo fills, a drill that never promotes)."""
    return str(run.get("source")) == "binance" and not bool(run.get("simulated")) and not _is_testnet(run)


def _stage_runs(journal: Journal, run: dict[str, Any]) -> list[dict[str, Any]]:
    """This run and the earlier finished runs of its stage in its namespace (the stage's evidence so far)."""
    profile, ns = str(run["profile"]), str(run["namespace"])
    return [
        r
        for r in _runs_of(journal, profile).values()
        if r["namespace"] == ns and float(r["started_at"]) <= float(run["started_at"]) and r["status"] != "running"
    ]


def evaluate(
    journal: Journal, run_id: str, report_dir: str | Path = "reports", rollout: RolloutSettings | None = None
) -> Verdict:
    """The gate's verdict on a finished run (see the module doc); journaled as a ``gate`` event."""
    ro = rollout or RolloutSettings()
    run = journal.run(run_id)
    if run is None:
        raise GateError(f"run {run_id!r} is not in the journal {journal.url}")
    if run["status"] == "running":
        raise GateError(f"run {run_id} is still running: gate it once it has finished")
    stage = str(run["profile"])
    s = _settings_of(run)
    crit: list[Criterion] = [
        Criterion("run_completed", run["status"] == "completed", f"run status {run['status']!r}"),
        *_shadow_criteria(run_id, Path(report_dir)),
    ]
    crit += _promotion_criteria(journal, run, ro)
    if stage != "shadow":
        crit += _execution_criteria(journal, run, s, ro)
    crit.append(_edge_criterion(journal, run, ro))
    verdict = Verdict(run_id, stage, next_stage(stage), crit)
    ExecStore(journal.engine).event(
        "gate",
        stage,
        {"verdict": verdict.label, "promotable": verdict.promotable, "criteria": [asdict(c) for c in crit]},
        run_id=run_id,
    )
    return verdict


def _promotion_criteria(journal: Journal, run: dict[str, Any], ro: RolloutSettings) -> list[Criterion]:
    """Simulated, historical or testnet data never promotes; nor does a live run shorter than the stage's minimum."""
    stage = str(run["profile"])
    source = str(run.get("source"))
    live = _is_live(run)
    if live:
        src_ev = f"live source ({source})"
    elif _is_testnet(run):
        src_ev = (
            f"{TESTNET_EVIDENCE} ({source}): proves the order path on a demo market, not the market — never promotes"
        )
    elif bool(run.get("simulated")):
        src_ev = f"SIMULATED data ({source}): validates the software path, not the market — never promotes"
    else:
        src_ev = f"historical data ({source}): a replay of the past — never promotes"
    out = [Criterion("live_source", live, src_ev, kind="promotion")]
    need = float(ro.min_wall_hours.get(stage, 0.0))
    if stage == "shadow":
        hours = _wall_hours(run)
        ev = f"{hours:.2f} h of wall time in this run (need ≥ {need:g} h live)"
    else:
        # A testnet drill is judged on the testnet runs of its stage, a real canary on the live ones only.
        testnet = _is_testnet(run)
        runs_ = [
            r
            for r in _stage_runs(journal, run)
            if str(r.get("source")) == "binance" and not bool(r.get("simulated")) and _is_testnet(r) == testnet
        ]
        hours = sum(_wall_hours(r) for r in runs_)
        what = "testnet" if testnet else "live"
        ev = f"{hours:.2f} h of wall time over {len(runs_)} {what} {stage} runs (need ≥ {need:g} h)"
    out.append(Criterion("wall_duration", hours >= need, ev, kind="promotion" if stage == "shadow" else "engineering"))
    return out


def _edge_criterion(journal: Journal, run: dict[str, Any], ro: RolloutSettings) -> Criterion:
    """Expectancy per signal in R with its bootstrap interval: what-if fills in shadow, real fills from canary on.

    Deciding for stages whose next step is production (canary and up): the lower bound must clear
    ``rollout.min_expectancy_r`` over at least ``rollout.min_signals`` trades, or the gate says "no demonstrated edge".
    """
    stage = str(run["profile"])
    store = ExecStore(journal.engine)
    if stage == "shadow":
        trades = [t for t in store.trades(str(run["run_id"])) if t["status"] == "closed"]
        what = "what-if (paper) fills of this run"
    else:
        trades = [
            t
            for r in _stage_runs(journal, run)
            for t in store.trades(str(r["run_id"]))
            if t["status"] == "closed" and t["broker"] != "paper"
        ]
        what = f"real exchange fills of the {stage} stage"
    rs = [r for r in (trade_r(t) for t in trades) if r is not None]
    e = expectancy(rs, ro.bootstrap_samples, ro.confidence)
    ev = f"{e.describe()}; from {what}"
    deciding = stage != "shadow"
    if e.n < ro.min_signals:
        ok = False
        ev += f"; no demonstrated edge: {e.n} trades < {ro.min_signals} (rollout.min_signals)"
    elif not e.low_r > ro.min_expectancy_r:
        ok = False
        ev += f"; no demonstrated edge: lower bound {e.low_r:+.3f} R ≤ {ro.min_expectancy_r:+g} R (rollout.min_expectancy_r)"
    else:
        ok = True
    if not deciding:
        ev += "; shown for information (decides from canary on)"
    return Criterion("edge", ok, ev, kind="engineering" if deciding else "info")


def _execution_criteria(
    journal: Journal, run: dict[str, Any], s: dict[str, Any], ro: RolloutSettings
) -> list[Criterion]:
    run_id = str(run["run_id"])
    ex = s.get("execution", {})
    store = ExecStore(journal.engine)
    out: list[Criterion] = []

    # Long enough: the stage's minimum span of market time.
    span_min = ((run.get("market_end_ms") or 0) - (run.get("market_start_ms") or 0)) / 60_000.0
    need = float(ex.get("min_run_minutes", 60.0))
    out.append(Criterion("run_length", span_min >= need, f"{span_min:.0f} min of market time (need ≥ {need:.0f})"))

    # Fills within the slippage tolerance: real exchange fills only (paper fills never count), at least
    # rollout.min_fills entries over the stage, and slippage evidence on stop and target fills too.
    tol = float(ex.get("slippage_tolerance_bps", 10.0))
    fills = [f for r in _stage_runs(journal, run) for f in store.fills(str(r["run_id"]))]
    real = [f for f in fills if not f["simulated"]]
    paper = len(fills) - len(real)
    by_kind: dict[str, list[float]] = {}
    for f in real:
        by_kind.setdefault(str(f["kind"]), []).append(abs(float(f["slippage_bps"])))
    entries = by_kind.get("entry", [])
    exits = by_kind.get("stop", []) + by_kind.get("tp", [])
    worst = max((x for v in by_kind.values() for x in v), default=0.0)
    parts = [f"{k} {len(v)} (worst |slippage| {max(v):.2f} bps)" for k, v in sorted(by_kind.items())]
    ev = (
        f"real fills over the stage: {', '.join(parts) or 'none'}; tolerance {tol:g} bps; need ≥ {ro.min_fills} entries"
    )
    if paper:
        ev += f"; {paper} SIMULATED paper fills never count"
    if not exits:
        ev += "; no stop or target fill: exit slippage not evidenced"
    out.append(Criterion("fills_within_slippage", len(entries) >= ro.min_fills and bool(exits) and worst <= tol, ev))

    # Cards correct: every allowed signal (its card) led to an order with the card's side, stop and target,
    # or to a refusal with a journaled reason; none was silently dropped.
    rows = journal.decisions(run_id)
    allowed = [r for r in rows if r["allowed"]]
    trades = {t["decision_id"]: t for t in store.trades(run_id)}
    refused = {o["decision_id"]: o["reason"] for o in store.orders(run_id) if o["status"] == "refused"}
    bad: list[str] = []
    for r in allowed:
        t = trades.get(r["decision_id"])
        if t is None:
            if r["decision_id"] not in refused:
                bad.append(f"{r['decision_id']}: no order and no refusal")
            continue
        targets = json.loads(r["targets_json"])
        if t["side"] != r["side"]:
            bad.append(f"{r['decision_id']}: side {t['side']} vs card {r['side']}")
        if abs(t["stop"] - r["stop"]) > 1e-3 * r["stop"]:
            bad.append(f"{r['decision_id']}: stop {t['stop']} vs card {r['stop']}")
        if not any(abs(t["take_profit"] - x) <= 1e-3 * x for x in targets):
            bad.append(f"{r['decision_id']}: take-profit {t['take_profit']} not among card targets {targets}")
    out.append(
        Criterion(
            "cards_correct",
            bool(allowed) and not bad,
            f"{len(allowed)} cards: {len(trades)} orders, {len(refused)} refusals with reasons"
            + (f"; mismatches: {'; '.join(bad[:3])}" if bad else "; every order matches its card")
            if allowed
            else "no allowed signals: no card to check",
        )
    )

    # Breakers exercised during the stage: at least one trip journaled for a run of this profile, and
    # trading ACTIVE again afterwards (an operator resumed it: the path works end to end).
    profile = str(run["profile"])
    stage_runs = _runs_of(journal, profile)
    trips = [e for e in store.events(kind="trip") if e["run_id"] in stage_runs]
    resumes = store.events(kind="resume")
    resumed = bool(trips) and any(e["wall"] > trips[0]["wall"] for e in resumes)
    names = sorted({e["name"] for e in trips})
    out.append(
        Criterion(
            "breakers_exercised",
            bool(trips) and resumed,
            f"{len(trips)} trips ({', '.join(names) or 'none'}) in {len(stage_runs)} {profile} runs;"
            f" {'resumed by an operator afterwards' if resumed else 'no resume after a trip'}",
        )
    )

    # Counters survived a restart: several runs of the stage shared one namespace, and the union of their
    # allowed signals never broke the caps in any sliding window.
    ns = str(run["namespace"])
    ns_runs = [r for r in stage_runs.values() if r["namespace"] == ns]
    times = queries.allowed_times(journal.engine, ns)
    sn = s.get("sniper", {})
    cap_h, cap_d = int(sn.get("max_signals_per_hour", 0)), int(sn.get("daily_signal_cap", 0))
    worst_h = max((max_window_count(times, t, HOUR_MS) for t in times), default=0)
    worst_d = max((max_window_count(times, t, DAY_MS) for t in times), default=0)
    ok = len(ns_runs) >= 2 and worst_h <= cap_h and worst_d <= cap_d
    out.append(
        Criterion(
            "counters_survived_restart",
            ok,
            f"{len(ns_runs)} runs in namespace {ns!r}; busiest hour {worst_h}/{cap_h}, busiest day {worst_d}/{cap_d}"
            + ("" if len(ns_runs) >= 2 else "; no restart within the stage to judge"),
        )
    )

    # Reconciliation never disagreed.
    mism = [e for e in store.events(run_id=run_id, kind="reconcile") if e["name"] == "mismatch"]
    out.append(Criterion("reconciliation_clean", not mism, f"{len(mism)} reconciliation mismatches in the run"))
    return out


def _runs_of(journal: Journal, profile: str) -> dict[str, dict[str, Any]]:
    return {str(r["run_id"]): r for r in journal.runs(profile)}


def status(journal: Journal) -> dict[str, Any]:
    """Current stage (the latest run's profile), its runs, and every gate verdict, oldest first."""
    all_runs = journal.runs()
    gates = ExecStore(journal.engine).events(kind="gate")
    stage = str(all_runs[-1]["profile"]) if all_runs else None
    return {
        "stage": stage,
        "next_stage": next_stage(stage) if stage else STAGES[0],
        "previous_stage": previous_stage(stage) if stage else None,
        "runs": [
            {k: r[k] for k in ("run_id", "profile", "mode", "source", "status", "started_at", "ended_at")}
            for r in all_runs
        ],
        "gates": [
            {
                "run_id": g["run_id"],
                "stage": g["name"],
                "verdict": json.loads(g["detail"]).get("verdict"),
                "at": g["wall"],
            }
            for g in gates
        ],
    }
