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
from ultra_signals.counters.windows import max_window_count
from ultra_signals.journal import queries
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal


@dataclass(frozen=True, slots=True)
class Criterion:
    """One check of a verdict, with the evidence it rests on: the shadow report's criteria and the rollout gate's.

    ``title`` is the human heading the shadow report prints (the gate's criteria go by ``name``).
    """

    name: str
    passed: bool
    evidence: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    run_id: str
    stage: str
    next_stage: str | None
    criteria: list[Criterion]

    @property
    def go(self) -> bool:
        return bool(self.criteria) and all(c.passed for c in self.criteria)

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"


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


def evaluate(journal: Journal, run_id: str, report_dir: str | Path = "reports") -> Verdict:
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
    if stage != "shadow":
        crit += _execution_criteria(journal, run, s)
    verdict = Verdict(run_id, stage, next_stage(stage), crit)
    ExecStore(journal.engine).event(
        "gate",
        stage,
        {"verdict": verdict.label, "criteria": [asdict(c) for c in crit]},
        run_id=run_id,
    )
    return verdict


def _execution_criteria(journal: Journal, run: dict[str, Any], s: dict[str, Any]) -> list[Criterion]:
    run_id = str(run["run_id"])
    ex = s.get("execution", {})
    store = ExecStore(journal.engine)
    out: list[Criterion] = []

    # Long enough: the stage's minimum span of market time.
    span_min = ((run.get("market_end_ms") or 0) - (run.get("market_start_ms") or 0)) / 60_000.0
    need = float(ex.get("min_run_minutes", 60.0))
    out.append(Criterion("run_length", span_min >= need, f"{span_min:.0f} min of market time (need ≥ {need:.0f})"))

    # Fills within the slippage tolerance (entries, against the arrival price at the decision).
    tol = float(ex.get("slippage_tolerance_bps", 10.0))
    fills = store.fills(run_id)
    entries = [f for f in fills if f["kind"] == "entry"]
    worst = max((abs(f["slippage_bps"]) for f in entries), default=0.0)
    sim = " (SIMULATED paper fills)" if any(f["simulated"] for f in fills) else ""
    out.append(
        Criterion(
            "fills_within_slippage",
            bool(entries) and worst <= tol,
            f"{len(entries)} entry fills, worst |slippage| {worst:.2f} bps (tolerance {tol:g}){sim}"
            if entries
            else "no entry fills: nothing to judge",
        )
    )

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
