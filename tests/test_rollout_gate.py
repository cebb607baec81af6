"""The gate never promotes on simulation, on paper fills, on a handful of trades or without a demonstrated edge.

The canary cases build a canary run's journal rows directly (a live Binance canary cannot run here): the run,
its fills and trades, and its report JSON with every shadow criterion passed, so each test changes exactly one
piece of evidence and shows the verdict it leads to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from ultra_signals.apps.cli import app
from ultra_signals.apps.rollout import Verdict, evaluate
from ultra_signals.core.config import RolloutSettings
from ultra_signals.execution.edge import expectancy, trade_r
from ultra_signals.journal.schema import runs
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

HOUR = 3600.0


def _canary_run(
    tmp_path: Path,
    journal: Journal,
    *,
    run_id: str = "canary-1",
    source: str = "binance",
    wall_hours: float = 25.0,
    trades_r: list[float] = (),  # type: ignore[assignment]
    real: bool = True,
    exits: bool = True,
    settings: dict[str, Any] | None = None,
) -> None:
    journal.start_run(
        run_id, mode="canary", profile="canary", source=source, simulated=False, namespace="ns:canary",
        settings=settings or {},
    )  # fmt: skip
    journal.end_run(run_id, "completed", {}, 0, int(wall_hours * HOUR * 1000))
    now = time.time()
    with journal.engine.begin() as c:
        c.execute(update(runs).where(runs.c.run_id == run_id).values(started_at=now - wall_hours * HOUR, ended_at=now))
    store = ExecStore(journal.engine)
    for i, r in enumerate(trades_r):
        did = f"{run_id}:BTCUSDT:5m:{i}"
        entry, stop, qty = 100.0, 99.0, 2.0  # risk 2 USDT
        store.open_trade(
            {
                "decision_id": did, "run_id": run_id, "namespace": "ns:canary",
                "broker": "binance" if real else "paper", "symbol": "BTCUSDT", "side": "LONG", "status": "closed",
                "qty": 0.0, "entry_qty": qty, "entry_price": entry, "exit_price": entry + r, "exit_kind": "tp",
                "arrival_price": entry, "stop": stop, "take_profit": 101.0, "stop_cid": f"s{i}", "tp_cid": f"t{i}",
                "pnl": r * 2.0, "opened_ts": i * 60_000,
            }
        )  # fmt: skip
        kinds = ["entry", "tp" if r > 0 else "stop"] if exits else ["entry"]
        for k in kinds:
            store.fill(
                {
                    "run_id": run_id, "decision_id": did, "client_id": f"{k}{i}", "trade_id": f"{k}{i}",
                    "symbol": "BTCUSDT", "side": "BUY", "kind": k, "qty": qty, "price": entry,
                    "reference_price": entry, "slippage_bps": 1.5, "fee": 0.01, "liquidity": "taker",
                    "order_qty": qty, "order_ts": i * 60_000, "ts": i * 60_000, "simulated": 0 if real else 1,
                }
            )  # fmt: skip
    report = tmp_path / "reports"
    report.mkdir(exist_ok=True)
    crit = [{"name": n, "passed": True, "evidence": "ok"} for n in ("caps_enforced", "no_crash", "metrics_fresh")]
    (report / f"shadow_results_{run_id}.json").write_text(json.dumps({"criteria": crit}))


def _by_name(v: Any) -> dict[str, Any]:
    return {c.name: c for c in v.criteria}


def test_bootstrap_expectancy_interval_contains_the_mean() -> None:
    e = expectancy([1.0, -1.0, 2.0, -0.5, 0.5] * 10, samples=500)
    assert e.n == 50 and e.low_r < e.mean_r < e.high_r
    assert expectancy([]).n == 0
    assert trade_r({"entry_price": 100.0, "stop": 98.0, "entry_qty": 1.0, "pnl": 4.0}) == 2.0
    assert trade_r({"entry_price": 100.0, "stop": 100.0, "entry_qty": 1.0, "pnl": 4.0}) is None


def test_canary_with_fewer_than_min_fills_is_no_go(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[1.0, 1.0, 1.0])
    v = evaluate(j, "canary-1", tmp_path / "reports", RolloutSettings())
    c = _by_name(v)["fills_within_slippage"]
    assert not c.passed and "entry 3" in c.evidence and "need ≥ 5 entries" in c.evidence
    assert v.label == "NO-GO" and not v.promotable


def test_paper_fills_never_satisfy_a_canary(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[1.0] * 40, real=False)
    v = evaluate(j, "canary-1", tmp_path / "reports", RolloutSettings())
    c = _by_name(v)["fills_within_slippage"]
    assert not c.passed and "SIMULATED paper fills never count" in c.evidence
    assert not _by_name(v)["edge"].passed and "0 trades" in _by_name(v)["edge"].evidence  # paper trades: no edge
    assert v.label == "NO-GO"


def test_entries_without_exit_fills_lack_slippage_evidence(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[1.0] * 40, exits=False)
    c = _by_name(evaluate(j, "canary-1", tmp_path / "reports"))["fills_within_slippage"]
    assert not c.passed and "no stop or target fill" in c.evidence


def test_negative_expectancy_lower_bound_is_no_demonstrated_edge(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[1.0, -1.0, -1.0, 0.5] * 10)
    v = evaluate(j, "canary-1", tmp_path / "reports")
    edge = _by_name(v)["edge"]
    assert _by_name(v)["fills_within_slippage"].passed
    assert not edge.passed and "no demonstrated edge" in edge.evidence and "40 closed trades" in edge.evidence
    assert v.label == "NO-GO"


def test_too_few_signals_is_no_demonstrated_edge(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[2.0] * 10)
    edge = _by_name(evaluate(j, "canary-1", tmp_path / "reports"))["edge"]
    assert not edge.passed and "10 trades < 30" in edge.evidence


def test_a_short_canary_is_no_go(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, wall_hours=1.0, trades_r=[1.0, 0.5, 2.0] * 12)
    v = evaluate(j, "canary-1", tmp_path / "reports")
    c = _by_name(v)["wall_duration"]
    assert not c.passed and "need ≥ 24 h" in c.evidence and v.label == "NO-GO"


def test_a_canary_with_every_piece_of_evidence_is_go(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(tmp_path, j, trades_r=[1.0, 0.5, 2.0, -1.0] * 10)
    v = evaluate(j, "canary-1", tmp_path / "reports")
    failed = {c.name: c.evidence for c in v.criteria if not c.passed and c.kind != "info"}
    # The canary-only drills (breakers, restart, cards) are not in these constructed rows: only they may fail.
    assert set(failed) <= {"breakers_exercised", "counters_survived_restart", "cards_correct"}, failed
    for name in ("fills_within_slippage", "edge", "wall_duration", "live_source"):
        assert _by_name(v)[name].passed, _by_name(v)[name].evidence


def test_a_testnet_canary_is_a_drill_that_never_promotes(tmp_path: Path) -> None:
    """Fills on Binance's demo exchange prove the order path, not the market: a testnet canary with every other
    piece of evidence is judged on its testnet runs and named so, never promoted; its hours do not count for a
    real canary run of the same namespace."""
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    _canary_run(
        tmp_path, j, trades_r=[1.0, 0.5, 2.0, -1.0] * 10, settings={"binance": {"testnet": True, "api_key": "***"}}
    )
    v = evaluate(j, "canary-1", tmp_path / "reports")
    src, wall = _by_name(v)["live_source"], _by_name(v)["wall_duration"]
    assert not src.passed and "TESTNET" in src.evidence and "never promotes" in src.evidence
    assert wall.passed and "over 1 testnet canary runs" in wall.evidence
    assert not v.promotable
    # With the canary-only drills passed too (not in these constructed rows) it is a GO that says where it ran.
    drilled = Verdict(v.run_id, v.stage, v.next_stage, [c for c in v.criteria if c.kind != "engineering" or c.passed])
    assert drilled.go and not drilled.promotable
    assert drilled.label == "GO on the Binance testnet — not eligible for promotion"
    _canary_run(tmp_path, j, run_id="canary-2", wall_hours=1.0, trades_r=[1.0] * 5, settings={"binance": {}})
    real = _by_name(evaluate(j, "canary-2", tmp_path / "reports"))
    assert real["live_source"].passed
    assert not real["wall_duration"].passed and "over 1 live canary runs" in real["wall_duration"].evidence


@pytest.mark.timeout(120)
def test_a_sim_shadow_go_is_not_promotable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10: `make shadow` was GO on the simulator and `rollout gate` promoted it to canary."""
    import os

    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("ULTRA_SIGNALS_")]:
        monkeypatch.delenv(k)
    url = f"sqlite:///{tmp_path}/journal.db"
    cli = CliRunner()
    r = cli.invoke(app, ["shadow", "--duration", "1440", "--metrics-port", "0", "--journal", url])
    assert r.exit_code == 0, r.output  # GO on the simulator: the software path is sound
    [rep] = (tmp_path / "reports").glob("shadow_results_*.json")
    data = json.loads(rep.read_text())
    assert data["verdict"] == "GO", [c for c in data["criteria"] if not c["passed"]]
    assert "not eligible for promotion" in rep.with_suffix(".md").read_text()
    gate = cli.invoke(app, ["rollout", "gate", "--run", data["run_id"], "--journal-url", url])
    assert gate.exit_code == 1, gate.output
    assert "GO on simulation — not eligible for promotion" in gate.output
    assert "next stage" not in gate.output
