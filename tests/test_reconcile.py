"""Reconciliation rules: every disagreement between journal and venue is named, nothing is adopted or dropped."""

from __future__ import annotations

from ultra_signals.execution.brokers.base import (
    OpenOrderView,
    OrderKind,
    OrderSide,
    PositionView,
    VenueSnapshot,
    client_order_id,
)
from ultra_signals.execution.reconcile import Expected, reconcile

D = "run:BTCUSDT:5m:1"
STOP, TP = client_order_id(D, OrderKind.STOP), client_order_id(D, OrderKind.TAKE_PROFIT)


def order(cid: str, typ: str = "STOP_MARKET", sym: str = "BTCUSDT") -> OpenOrderView:
    return OpenOrderView(sym, cid, typ, OrderSide.SELL, 0.01, 0.0, 30_000.0, True)


def expected(qty: float = 0.01, confirmed: bool = True) -> Expected:
    return Expected(D, "BTCUSDT", qty, STOP, TP, confirmed)


def test_agreement_is_empty() -> None:
    snap = VenueSnapshot([PositionView("BTCUSDT", 0.01, 30_500)], [order(STOP), order(TP, "TAKE_PROFIT_MARKET")])
    assert reconcile([expected()], snap) == []


def test_unknown_position_is_reported_not_adopted() -> None:
    snap = VenueSnapshot([PositionView("ETHUSDT", -0.5, 2000)], [])
    (d,) = reconcile([], snap)
    assert (d.kind, d.symbol) == ("unknown_position", "ETHUSDT") and "-0.5" in d.detail


def test_missing_position_and_mismatch() -> None:
    assert [d.kind for d in reconcile([expected()], VenueSnapshot([], []))] == ["missing_position"]
    snap = VenueSnapshot([PositionView("BTCUSDT", 0.02, 30_500)], [order(STOP), order(TP, "TAKE_PROFIT_MARKET")])
    assert [d.kind for d in reconcile([expected()], snap)] == ["position_mismatch"]
    short = VenueSnapshot([PositionView("BTCUSDT", -0.01, 30_500)], [order(STOP), order(TP, "TAKE_PROFIT_MARKET")])
    assert [d.kind for d in reconcile([expected()], short)] == ["position_mismatch"]


def test_missing_bracket_each_named() -> None:
    snap = VenueSnapshot([PositionView("BTCUSDT", 0.01, 30_500)], [order(TP, "TAKE_PROFIT_MARKET")])
    (d,) = reconcile([expected()], snap)
    assert d.kind == "missing_bracket" and "stop" in d.detail and STOP in d.detail


def test_orphan_and_foreign_orders() -> None:
    other = client_order_id("run:ETHUSDT:5m:9", OrderKind.STOP)
    snap = VenueSnapshot([], [order(other, sym="ETHUSDT"), order("web_Abc123", "LIMIT", "SOLUSDT")])
    kinds = sorted(d.kind for d in reconcile([], snap))
    assert kinds == ["foreign_order", "orphan_order"]


def test_unconfirmed_entry_with_a_venue_position_needs_an_operator() -> None:
    snap = VenueSnapshot([PositionView("BTCUSDT", 0.01, 30_500)], [])
    assert [d.kind for d in reconcile([expected(0.0, confirmed=False)], snap)] == ["unconfirmed_entry"]
    # ...and an unconfirmed entry with nothing on the venue is simply not there yet.
    assert reconcile([expected(0.0, confirmed=False)], VenueSnapshot([], [])) == []
