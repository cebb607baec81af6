"""The portfolio books fills into trades: averages, partial exits, PnL, funding, equity, duplicates, strangers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ultra_signals.core.decision import Side
from ultra_signals.core.events import BookTicker, Trade
from ultra_signals.execution.brokers.base import AccountSnapshot, Fill, OrderKind, OrderSide, client_order_id
from ultra_signals.execution.portfolio import Portfolio, TradeRecord
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

T0 = 1_767_571_200_000
DID = "run:BTCUSDT:5m:1"


def fill(kind: OrderKind, side: OrderSide, qty: float, price: float, fee: float, ts: int, tid: str) -> Fill:
    return Fill(
        client_id=client_order_id(DID, kind),
        symbol="BTCUSDT",
        side=side,
        kind=kind,
        qty=qty,
        price=price,
        fee=fee,
        liquidity="taker",
        ts_ms=ts,
        order_qty=qty,
        order_ts_ms=ts,
        reference_price=price,
        trade_id=tid,
    )


def book(tmp_path: Path, *, books_pnl: bool) -> tuple[Portfolio, ExecStore, Journal]:
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    store = ExecStore(journal.engine)
    p = Portfolio(store=store, run_id="run", simulated=True, books_pnl_into_equity=books_pnl, equity=1_000.0)
    t = TradeRecord(
        DID, "BTCUSDT", Side.LONG, 100.0, client_order_id(DID, OrderKind.STOP), client_order_id(DID, OrderKind.TAKE_PROFIT), T0
    )  # fmt: skip
    row = {
        "decision_id": DID, "run_id": "run", "namespace": "ns", "broker": "paper", "symbol": "BTCUSDT",
        "side": "LONG", "status": "pending", "qty": 0.0, "entry_qty": 0.0, "arrival_price": 100.0, "stop": 98.0,
        "take_profit": 104.0, "stop_cid": t.stop_cid, "tp_cid": t.tp_cid, "fees": 0.0, "funding": 0.0,
        "gross_pnl": 0.0, "opened_ts": T0,
    }  # fmt: skip
    p.open_trade(t, row)
    return p, store, journal


@pytest.mark.parametrize("books_pnl", [True, False])
def test_partial_fills_average_and_the_close_books_net_pnl(tmp_path: Path, books_pnl: bool) -> None:
    p, store, journal = book(tmp_path, books_pnl=books_pnl)
    assert p.holding("BTCUSDT") is not None and p.open_notional() == {"BTCUSDT": 0.0}  # pending: nothing filled
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 1.0, 100.0, 0.1, T0 + 1, "a"))
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 3.0, 104.0, 0.3, T0 + 2, "b"))
    t = p.trades[DID]
    assert t.status == "open" and t.qty == 4.0 and t.entry_price == pytest.approx(103.0)
    assert p.open_notional() == {"BTCUSDT": pytest.approx(412.0)}
    p.on_funding("BTCUSDT", -0.5)
    first = p.on_fill(fill(OrderKind.TAKE_PROFIT, OrderSide.SELL, 1.0, 105.0, 0.1, T0 + 3, "c"))
    assert first is not None and first.closed is None and t.qty == 3.0  # a partial exit keeps the trade open
    last = p.on_fill(fill(OrderKind.TAKE_PROFIT, OrderSide.SELL, 3.0, 106.0, 0.3, T0 + 4, "d"))
    assert last is not None and last.closed is not None
    gross = (105.0 - 103.0) * 1.0 + (106.0 - 103.0) * 3.0
    assert last.closed.pnl == pytest.approx(gross - 0.8 - 0.5) and last.closed.equity_before == 1_000.0
    assert p.equity == (1_000.0 + last.closed.pnl if books_pnl else 1_000.0)  # a venue that reports equity says
    assert p.holding("BTCUSDT") is None and p.open_notional() == {}
    row = store.trade(DID)
    assert row is not None and row["status"] == "closed" and row["pnl"] == pytest.approx(last.closed.pnl)
    assert row["exit_kind"] == "tp" and row["funding"] == -0.5
    assert p.results()["wins"] == 1 and p.results()["realized_pnl"] == round(last.closed.pnl, 6)
    journal.close()


def test_a_fill_reported_twice_is_booked_once(tmp_path: Path) -> None:
    p, store, journal = book(tmp_path, books_pnl=True)
    f = fill(OrderKind.ENTRY, OrderSide.BUY, 1.0, 100.0, 0.1, T0 + 1, "same-trade-id")
    assert p.on_fill(f) is not None
    assert p.on_fill(f) is None  # the user stream replayed it
    assert p.trades[DID].qty == 1.0 and p.fees == pytest.approx(0.1) and len(store.fills("run")) == 1
    journal.close()


def test_a_fill_of_an_order_we_did_not_place_is_journaled_without_a_trade(tmp_path: Path) -> None:
    p, store, journal = book(tmp_path, books_pnl=True)
    stranger = Fill(
        "web_manual_1", "ETHUSDT", OrderSide.BUY, OrderKind.EXIT, 1.0, 2000.0, 0.8, "taker", T0, 1.0, T0, 2000.0, "x"
    )
    result = p.on_fill(stranger)
    assert result is not None and result.trade is None
    (row,) = store.fills("run")
    assert row["decision_id"] is None and row["client_id"] == "web_manual_1"
    journal.close()


def test_open_trades_of_a_run_that_ends_are_marked_open_at_end(tmp_path: Path) -> None:
    p, store, journal = book(tmp_path, books_pnl=True)
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 1.0, 100.0, 0.1, T0 + 1, "a"))
    p.mark_open_at_end()
    row = store.trade(DID)
    assert row is not None and row["status"] == "open_at_end" and list(p.open_trades()) == []
    journal.close()


def test_exposure_counts_a_pending_entry_at_its_planned_size_and_marks_open_ones(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    p = Portfolio(store=ExecStore(journal.engine), run_id="run", simulated=True, books_pnl_into_equity=True,
                  equity=1_000.0, leverage=5.0)  # fmt: skip
    t = TradeRecord(DID, "BTCUSDT", Side.LONG, 100.0, client_order_id(DID, OrderKind.STOP),
                    client_order_id(DID, OrderKind.TAKE_PROFIT), T0, planned_qty=2.0)  # fmt: skip
    p.remember(t)
    pending = p.exposure()
    assert pending.notional == {"BTCUSDT": 200.0} and pending.long == {"BTCUSDT": True}  # before any fill
    assert pending.margin_used == pytest.approx(40.0) and pending.unrealized == 0.0
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 2.0, 100.0, 0.0, T0 + 1, "a"))
    p.on_market_event(Trade("BTCUSDT", T0 + 2, 90.0, 0.1, False))
    p.on_market_event(Trade("ETHUSDT", T0 + 2, 1.0, 0.1, False))  # not held: ignored
    book = p.exposure()
    assert book.unrealized == pytest.approx(-20.0) and book.equity == pytest.approx(980.0)
    assert p.available(book) == pytest.approx(980.0 - 40.0)
    p.on_market_event(BookTicker("BTCUSDT", T0 + 3, 104.0, 1.0, 106.0, 1.0))  # mid 105
    assert p.exposure().unrealized == pytest.approx(10.0)
    journal.close()


def test_the_account_snapshot_sets_the_wallet_and_the_margin_held_outside_our_trades(tmp_path: Path) -> None:
    p, _, journal = book(tmp_path, books_pnl=False)
    p.leverage = 5.0
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 1.0, 100.0, 0.0, T0 + 1, "a"))  # ours: 20 USDT margin
    p.on_account(AccountSnapshot(wallet_balance=500.0, unrealized_pnl=-30.0, margin_balance=470.0,
                                 available_balance=400.0, unrealized_by_symbol={"BTCUSDT": -3.0}))  # fmt: skip
    assert p.equity == p.equity_start == 500.0
    assert p.external_margin == pytest.approx(470.0 - 400.0 - 20.0)  # a hand-made position holds the rest
    book_now = p.exposure()
    assert book_now.unrealized == pytest.approx(-3.0)  # the venue's figure until a price arrives
    assert p.available(book_now) == pytest.approx(497.0 - 70.0)
    journal.close()


@pytest.mark.parametrize(("cid", "kind", "what"), [("autoclose-1767571300000", "liq", "liquidation"),
                                                   ("adl_autoclose", "adl", "ADL"),
                                                   ("settlement_autoclose-BTCUSDT", "settle", "settlement")])  # fmt: skip
def test_a_liquidation_or_adl_fill_closes_our_trade_and_is_journaled(
    tmp_path: Path, cid: str, kind: str, what: str
) -> None:
    p, store, journal = book(tmp_path, books_pnl=True)
    p.on_fill(fill(OrderKind.ENTRY, OrderSide.BUY, 1.0, 100.0, 0.1, T0 + 1, "a"))
    p.on_funding("BTCUSDT", -0.25)
    closing = Fill(client_id=cid, symbol="BTCUSDT", side=OrderSide.SELL, kind=OrderKind.EXIT, qty=1.0, price=80.0,
                   fee=0.0, liquidity="taker", ts_ms=T0 + 9, order_qty=1.0, order_ts_ms=T0 + 9, reference_price=0.0,
                   trade_id="liq-1")  # fmt: skip
    result = p.on_fill(closing)
    assert result is not None and result.trade is not None and result.closed is not None
    row = store.trade(DID)
    assert row is not None and row["status"] == "closed" and row["exit_kind"] == kind
    assert row["pnl"] == pytest.approx(-20.0 - 0.1 - 0.25)  # the funding paid is in the trade's PnL
    (event,) = store.events(kind="exchange_close")
    assert event["name"] == kind and DID in event["detail"] and what.lower() in event["detail"].lower()
    assert p.holding("BTCUSDT") is None
    (booked,) = [f for f in store.fills("run") if f["client_id"] == cid]
    assert booked["decision_id"] == DID  # the fill row names the trade it closed
    journal.close()


def test_an_exchange_close_with_no_trade_of_ours_is_a_stranger(tmp_path: Path) -> None:
    p, store, journal = book(tmp_path, books_pnl=True)  # pending only: nothing of ours is open
    stray = Fill(client_id="autoclose-1", symbol="BTCUSDT", side=OrderSide.SELL, kind=OrderKind.EXIT, qty=1.0,
                 price=80.0, fee=0.0, liquidity="taker", ts_ms=T0 + 9, order_qty=1.0, order_ts_ms=T0 + 9,
                 reference_price=0.0, trade_id="liq-2")  # fmt: skip
    result = p.on_fill(stray)
    assert result is not None and result.trade is None  # the executor trips ``reconcile`` on it
    assert store.events(kind="exchange_close") == []
    journal.close()
