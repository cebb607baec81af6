"""TCA: per-order costs from journaled fills, per-symbol aggregates, the markdown report and its chart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ultra_signals.core.config import load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.events import BookTicker, Trade
from ultra_signals.execution import tca
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.execution.tca import aggregate, tca_rows, write_report
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.transport.notifier import NullNotifier

T0 = 1_767_571_200_000


def fill_row(cid: str, qty: float, price: float, ts: int, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "run_id": "r",
        "decision_id": "d",
        "client_id": cid,
        "symbol": "BTCUSDT",
        "side": "BUY",
        "kind": "entry",
        "qty": qty,
        "price": price,
        "reference_price": 100.0,
        "fee": qty * price * 5e-4,
        "order_qty": 2.0,
        "order_ts": T0,
        "ts": ts,
        "simulated": 1,
    }
    row.update(kw)
    return row


def test_partial_fills_aggregate_to_one_order_with_vwap_ratio_and_time() -> None:
    rows = tca_rows([fill_row("a", 0.5, 100.2, T0 + 100), fill_row("a", 1.0, 100.5, T0 + 900)])
    (r,) = rows
    assert r.avg_price == pytest.approx((0.5 * 100.2 + 1.0 * 100.5) / 1.5)
    assert r.slippage_bps == pytest.approx((r.avg_price - 100.0) / 100.0 * 1e4)
    assert r.fill_ratio == pytest.approx(0.75) and r.time_to_fill_ms == 900
    sell = tca_rows([fill_row("b", 1.0, 99.0, T0 + 5, side="SELL", kind="stop")])[0]
    assert sell.slippage_bps == pytest.approx(100.0)  # sold 1 % under the reference: 100 bps worse


def test_report_from_a_paper_run(tmp_path: Path) -> None:
    settings = load_settings(
        "canary",
        overrides={
            "runtime.source": "replay",
            "journal.url": f"sqlite:///{tmp_path}/j.db",
            "execution.breakers.consecutive_losses": 10,
        },
        environ={},
    )
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, NullNotifier(), "tca-run")
    assert isinstance(ex, TradingExecutor)
    for i, sym in enumerate(["BTCUSDT", "BTCUSDT"]):
        ts = T0 + i * 3_600_000
        c = Candidate(sym, "5m", ts - 300_000, ts, Side.LONG, 0.6, 0.8, 60_000.0, 59_700.0, (60_300.0,))
        ex.on_signal(Decision("tca-run", c, True, None))
        ex.on_market_event(BookTicker(sym, ts + 100, 60_010.0, 1.0, 60_012.0, 1.0))
        ex.on_market_event(Trade(sym, ts + 5_000, 60_350.0 if i == 0 else 59_650.0, 0.1, False))
    fills = ExecStore(journal.engine).fills("tca-run")
    rows = tca_rows(fills)
    assert [r.kind for r in rows] == ["entry", "tp", "entry", "stop"]
    entry = rows[0]
    assert entry.avg_price > 60_012.0 and entry.reference_price == 60_000.0  # paid the ask plus impact
    assert entry.slippage_bps == pytest.approx((entry.avg_price - 60_000.0) / 60_000.0 * 1e4)
    agg = aggregate(rows)
    assert agg["BTCUSDT"]["orders"] == 4 and agg["ALL"]["entries"] == 2
    md, png = write_report("tca-run", rows, tmp_path / "reports")
    text = md.read_text()
    assert "SIMULATED" in text and "| BTCUSDT | 4 | 2 |" in text and "tca-run" in text
    assert png is not None and png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"
    asyncio.run(ex.aclose())
    journal.close()


def test_empty_run_says_so(tmp_path: Path) -> None:
    md, png = write_report("nothing", [], tmp_path)
    assert png is None and "No fills" in md.read_text()


def trade_row(did: str, symbol: str, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"decision_id": did, "symbol": symbol, "side": "LONG", "status": "closed",
                              "entry_qty": 1.0, "exit_kind": "tp", "gross_pnl": 10.0, "fees": 1.0, "funding": 0.0,
                              "pnl": 9.0}  # fmt: skip
    row.update(kw)
    return row


def test_funding_and_exchange_closes_are_in_the_report_per_trade_and_per_symbol(tmp_path: Path) -> None:
    trades = [
        trade_row("d1", "BTCUSDT", funding=-0.75, pnl=10.0 - 1.0 - 0.75),
        trade_row("d2", "BTCUSDT", exit_kind="liq", gross_pnl=-50.0, fees=0.5, funding=0.25, pnl=-50.25),
        trade_row("d3", "ETHUSDT", status="open", exit_kind=None, gross_pnl=0.0, fees=0.2, funding=-0.1, pnl=None),
        trade_row("d4", "ETHUSDT", status="cancelled", entry_qty=0.0),  # never entered: not a cost
    ]
    costs = tca.trade_costs(trades)
    assert [c.decision_id for c in costs] == ["d1", "d2", "d3"]
    by = tca.funding_by_symbol(costs)
    assert by["BTCUSDT"]["funding"] == pytest.approx(-0.5) and by["ALL"]["funding"] == pytest.approx(-0.6)
    assert by["ALL"]["pnl"] == pytest.approx(8.25 - 50.25) and by["ETHUSDT"]["trades"] == 1
    md, _ = write_report("r", [], tmp_path, charts=False, trades=trades)
    text = md.read_text()
    assert "## Fees, funding and PnL per trade" in text and "FUNDING_FEE" in text
    assert "| ALL | 3 | -40.0000 | 1.7000 | -0.6000 | -42.0000 |" in text
    assert (
        "| d2 | BTCUSDT | LONG | closed | liq (liquidated by Binance) | -50.0000 | 0.5000 | +0.2500 | -50.2500 |"
        in text
    )
    assert "| d3 | ETHUSDT | LONG | open |  | +0.0000 | 0.2000 | -0.1000 |  |" in text
    assert "No fills were journaled" in text  # the fills part still says what it has


def test_a_paper_run_with_funding_shows_it_in_tca(tmp_path: Path) -> None:
    s = load_settings("shadow", overrides={"journal.url": f"sqlite:///{tmp_path}/j.db", "runtime.source": "replay",
                                           "execution.latency_ms": 0}, environ={})  # fmt: skip
    journal = Journal(s.journal.url)
    e = make_executor(s, None, journal, NullNotifier(), "r")
    assert isinstance(e, TradingExecutor)
    c = Candidate(symbol="BTCUSDT", timeframe="5m", bar_open_time=T0, ts=T0 + 300_000, side=Side.LONG, score=0.6,
                  confidence=0.8, entry=60_000.0, stop=59_000.0, targets=(61_000.0,))  # fmt: skip
    d = Decision("r", c, True, None)
    e.on_signal(d)
    e.on_market_event(Trade("BTCUSDT", T0 + 300_010, 60_000.0, 0.1, False))
    e.on_funding("BTCUSDT", -1.25, T0 + 300_020)  # what the broker reports at a funding time
    e.on_market_event(Trade("BTCUSDT", T0 + 300_030, 61_100.0, 0.1, False))  # take-profit
    row = ExecStore(journal.engine).trade(d.id)
    assert row is not None and row["status"] == "closed" and row["funding"] == pytest.approx(-1.25)
    assert row["pnl"] == pytest.approx(row["gross_pnl"] - row["fees"] - 1.25)
    md, _ = write_report("r", tca_rows(ExecStore(journal.engine).fills("r")), tmp_path, charts=False,
                         trades=ExecStore(journal.engine).trades("r"))  # fmt: skip
    assert "| ALL | 1 |" in md.read_text() and "-1.2500" in md.read_text()
    asyncio.run(e.aclose())
    journal.close()
