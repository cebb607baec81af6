"""Ledger reconciliation rules (pure): commissions by trade id, fills without commissions, per-symbol totals."""

from __future__ import annotations

from pathlib import Path

from ultra_signals.execution.ledger import reconcile_ledger, write_csv

DAY = 1_767_571_200_000


def fill(tid: str, fee: float, ts: int = DAY + 1000, simulated: int = 0) -> dict[str, object]:
    return {"trade_id": tid, "fee": fee, "symbol": "BTCUSDT", "ts": ts, "simulated": simulated, "decision_id": "d"}


def income(kind: str, amount: float, tid: str = "", ts: int = DAY + 1000) -> dict[str, object]:
    return {"incomeType": kind, "income": str(amount), "symbol": "BTCUSDT", "time": ts, "tranId": 1, "tradeId": tid}


def test_matched_day_is_clean_and_simulated_or_other_days_are_ignored(tmp_path: Path) -> None:
    rep = reconcile_ledger(
        [income("COMMISSION", -0.19, "1"), income("COMMISSION", -0.2, "2"), income("REALIZED_PNL", 1.5, "2")],
        [fill("1", 0.19), fill("2", 0.2), fill("3", 9.0, simulated=1), fill("4", 1.0, ts=DAY - 5)],
        [{"broker": "binance", "symbol": "BTCUSDT", "closed_ts": DAY + 2000, "gross_pnl": 1.5, "funding": 0.0}],
        day_start_ms=DAY, day_end_ms=DAY + 86_400_000,
    )  # fmt: skip
    assert rep.clean, rep.problems
    assert [r["status"] for r in rep.rows] == ["matched", "matched", ""]
    csv = write_csv(rep, tmp_path / "l.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[1].split(",")[2] == "COMMISSION"


def test_fee_mismatch_missing_commission_and_pnl_totals_are_named() -> None:
    rep = reconcile_ledger(
        [income("COMMISSION", -0.5, "1"), income("REALIZED_PNL", 2.0, "1")],
        [fill("1", 0.19), fill("2", 0.2)],
        [{"broker": "binance", "symbol": "BTCUSDT", "closed_ts": DAY + 2000, "gross_pnl": 1.0, "funding": 0.0}],
        day_start_ms=DAY, day_end_ms=DAY + 86_400_000,
    )  # fmt: skip
    text = "\n".join(rep.problems)
    assert "trade 1: fee 0.5 on the exchange, 0.19 journaled" in text
    assert "trade 2: journaled fill with no commission on the exchange" in text
    assert "exchange_realized_pnl 2.000000 vs journal_gross_pnl 1.000000" in text
