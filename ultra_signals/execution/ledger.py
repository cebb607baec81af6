"""Daily ledger reconciliation: the exchange's income history against the journal's fills and trades.

Binance books every fee (``COMMISSION``, per trade id), every realised PnL (``REALIZED_PNL``) and every funding
payment (``FUNDING_FEE``) in ``GET /fapi/v1/income``.  The journal has our fills (with Binance's trade ids) and
trades (fees, funding, gross PnL).  Each exchange commission is matched to its journaled fill by trade id: a
commission with no fill is a trade we never heard about, a different amount is a fee we mis-recorded, and a
journaled exchange fill without a commission never happened on the exchange.  Per-symbol totals (fees, realised
PnL, funding) are compared as well, within ``tolerance`` USDT.  Pure: the caller fetches, this compares.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class LedgerReport:
    day_start_ms: int
    day_end_ms: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per income item, with the journal's side
    problems: list[str] = field(default_factory=list)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # symbol -> figure -> value

    @property
    def clean(self) -> bool:
        return not self.problems


def reconcile_ledger(
    income: list[dict[str, Any]],
    fills: list[dict[str, Any]],
    trades: list[dict[str, Any]],
    *,
    day_start_ms: int,
    day_end_ms: int,
    tolerance: float = 0.01,
) -> LedgerReport:
    rep = LedgerReport(day_start_ms, day_end_ms)
    live = [f for f in fills if not f.get("simulated") and day_start_ms <= int(f["ts"]) < day_end_ms]
    by_trade = {str(f["trade_id"]): f for f in live}
    seen: set[str] = set()
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for item in sorted(income, key=lambda r: (int(r["time"]), str(r.get("tranId", "")))):
        kind, sym, amount = str(item["incomeType"]), str(item.get("symbol", "")), float(item["income"])
        tid = str(item.get("tradeId") or "")
        row = {"time": int(item["time"]), "symbol": sym, "type": kind, "amount": amount, "asset": item.get("asset", ""),
               "tran_id": item.get("tranId", ""), "trade_id": tid, "journal_fee": "", "decision_id": "", "status": ""}  # fmt: skip
        totals[sym][f"exchange_{kind.lower()}"] += amount
        if kind == "COMMISSION":
            f = by_trade.get(tid)
            if f is None:
                row["status"] = "no_journal_fill"
                rep.problems.append(f"{sym} trade {tid}: commission {amount} on the exchange, no journaled fill")
            else:
                seen.add(tid)
                row["journal_fee"], row["decision_id"] = float(f["fee"]), f.get("decision_id") or ""
                if abs(-amount - float(f["fee"])) > tolerance:
                    row["status"] = "fee_mismatch"
                    rep.problems.append(f"{sym} trade {tid}: fee {-amount} on the exchange, {f['fee']} journaled")
                else:
                    row["status"] = "matched"
        rep.rows.append(row)
    for tid, f in by_trade.items():
        if tid not in seen:
            rep.problems.append(f"{f['symbol']} trade {tid}: journaled fill with no commission on the exchange")
    for f in live:
        totals[str(f["symbol"])]["journal_fees"] += float(f["fee"])
    for t in trades:
        closed = t.get("closed_ts")
        if t.get("broker") != "binance" or closed is None or not day_start_ms <= int(closed) < day_end_ms:
            continue
        totals[str(t["symbol"])]["journal_gross_pnl"] += float(t.get("gross_pnl") or 0.0)
        totals[str(t["symbol"])]["journal_funding"] += float(t.get("funding") or 0.0)
    for sym, fig in totals.items():
        for ex_key, j_key, sign in (("exchange_commission", "journal_fees", -1.0),
                                    ("exchange_realized_pnl", "journal_gross_pnl", 1.0)):  # fmt: skip
            if abs(sign * fig.get(ex_key, 0.0) - fig.get(j_key, 0.0)) > tolerance:
                rep.problems.append(f"{sym}: {ex_key} {fig.get(ex_key, 0.0):.6f} vs {j_key} {fig.get(j_key, 0.0):.6f}")
    rep.totals = {s: dict(v) for s, v in totals.items()}
    return rep


def write_csv(rep: LedgerReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["time", "symbol", "type", "amount", "asset", "tran_id", "trade_id", "journal_fee", "decision_id", "status"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rep.rows)
    return path
