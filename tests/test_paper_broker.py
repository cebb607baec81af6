"""Paper broker: fills on event time with the slippage model, brackets (OCO), post-only with fallback, funding."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from ultra_signals.core.decision import Side
from ultra_signals.core.events import BookTicker, Funding, Kline, MarketEvent, Trade
from ultra_signals.execution.brokers.base import EntryPlan, Fill, OrderKind, OrderSide
from ultra_signals.execution.brokers.paper import PaperBroker

T0 = 1_700_000_000_000


class Recorder:
    """A BrokerListener that keeps what it is told."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.updates: list[tuple[str, str, str | None]] = []
        self.funding: list[tuple[str, float, int]] = []

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    def on_order_update(self, client_id: str, symbol: str, status: str, reason: str | None, ts_ms: int) -> None:
        self.updates.append((client_id, status, reason))

    def on_broker_error(self, kind: str, detail: str, ts_ms: int | None) -> None:
        raise AssertionError(f"unexpected broker error {kind}: {detail}")

    def on_funding(self, symbol: str, amount: float, ts_ms: int) -> None:
        self.funding.append((symbol, amount, ts_ms))

    def on_equity(self, equity: float) -> None:
        return None

    def on_reconnect(self) -> None:
        return None


def broker(latency_ms: float = 50.0, impact: float = 0.0) -> tuple[PaperBroker, Recorder]:
    b = PaperBroker(
        fee_taker_bps=5.0, fee_maker_bps=2.0, half_spread_bps=1.0, impact_bps_per_10k_usdt=impact, latency_ms=latency_ms
    )
    r = Recorder()
    b.bind(r)
    return b, r


def plan(side: Side = Side.LONG, **kw: object) -> EntryPlan:
    base: dict[str, object] = {
        "decision_id": "run1:BTCUSDT:5m:1",
        "run_id": "run1",
        "symbol": "BTCUSDT",
        "side": side,
        "qty": Decimal("0.5"),
        "stop": Decimal("99") if side is Side.LONG else Decimal("101"),
        "take_profit": Decimal("102") if side is Side.LONG else Decimal("98"),
        "arrival_price": 100.0,
        "ts_ms": T0,
    }
    base.update(kw)
    return EntryPlan(**base)  # type: ignore[arg-type]


def feed(b: PaperBroker, events: list[MarketEvent]) -> None:
    for ev in events:
        b.on_market_event(ev)


def trade(ts: int, price: float, sym: str = "BTCUSDT") -> Trade:
    return Trade(sym, ts, price, 1.0, False)


def test_market_entry_waits_for_latency_then_pays_half_spread_and_fee() -> None:
    b, r = broker(latency_ms=50)
    b.submit(plan())
    feed(b, [trade(T0 + 10, 100.0)])  # inside the latency: not yet
    assert r.fills == []
    feed(b, [trade(T0 + 60, 100.2)])
    (f,) = r.fills
    assert f.kind is OrderKind.ENTRY and f.side is OrderSide.BUY and f.ts_ms == T0 + 60
    assert f.price == pytest.approx(100.2 * (1 + 1e-4))  # half spread of 1 bp, no book seen
    assert f.fee == pytest.approx(0.5 * f.price * 5e-4)
    assert f.slippage_bps == pytest.approx((f.price - 100.0) / 100.0 * 1e4)
    snap = asyncio.run(b.snapshot())
    kinds = sorted((o.order_type, o.stop_price, o.qty, o.reduce_only) for o in snap.open_orders)
    assert kinds == [("STOP_MARKET", 99.0, 0.5, True), ("TAKE_PROFIT_MARKET", 102.0, 0.5, True)]
    assert [(p.symbol, p.qty) for p in snap.positions] == [("BTCUSDT", 0.5)]


def test_book_ticker_prices_and_size_impact() -> None:
    b, r = broker(latency_ms=0, impact=10.0)  # 10 bps per 10k USDT
    b.submit(plan(side=Side.SHORT, qty=Decimal("100")))  # ~10k notional -> ~10 bps impact
    feed(b, [BookTicker("BTCUSDT", T0 + 1, 99.9, 5, 100.1, 5)])
    (f,) = r.fills
    assert f.side is OrderSide.SELL
    assert f.price == pytest.approx(99.9 * (1 - 10e-4 * 100 * 99.9 / 10_000))


def test_stop_fills_and_cancels_take_profit() -> None:
    b, r = broker(latency_ms=0)
    b.submit(plan())
    feed(b, [trade(T0 + 1, 100.0), trade(T0 + 2, 99.5), trade(T0 + 3, 98.7), trade(T0 + 4, 103.0)])
    assert [f.kind for f in r.fills] == [OrderKind.ENTRY, OrderKind.STOP]
    stop = r.fills[1]
    assert stop.side is OrderSide.SELL and stop.price < 98.7 and stop.reference_price == 99.0
    assert stop.slippage_bps > 0  # sold below the trigger
    assert any(status == "CANCELED" and reason == "oco" for _, status, reason in r.updates)
    snap = asyncio.run(b.snapshot())
    assert snap.positions == [] and snap.open_orders == []


def test_candles_only_fill_at_next_open_and_stop_first_when_bar_touches_both() -> None:
    b, r = broker(latency_ms=50)
    b.submit(plan())
    bar = 60_000
    feed(
        b,
        [
            Kline("BTCUSDT", "1m", T0, T0 + bar - 1, 100.1, 100.5, 99.6, 100.2, 10),
            Kline("BTCUSDT", "1m", T0 + bar, T0 + 2 * bar - 1, 100.2, 102.5, 98.5, 100.0, 10),
        ],
    )
    assert [f.kind for f in r.fills] == [OrderKind.ENTRY, OrderKind.STOP]
    assert r.fills[0].price == pytest.approx(100.1 * (1 + 1e-4))
    assert r.fills[1].price == pytest.approx(99.0 * (1 - 1e-4))


def test_post_only_fills_as_maker_when_traded_through() -> None:
    b, r = broker(latency_ms=0)
    b.submit(plan(entry_type="limit_post_only", limit_price=Decimal("99.90")))
    feed(b, [trade(T0 + 1, 99.95), trade(T0 + 2, 99.90), trade(T0 + 3, 99.85)])
    (f,) = r.fills
    assert f.liquidity == "maker" and f.price == 99.90 and f.fee == pytest.approx(0.5 * 99.9 * 2e-4)
    assert f.slippage_bps == pytest.approx(-10.0)  # bought 10 bps under the arrival price


def test_post_only_timeout_falls_back_to_market_with_a_new_client_id() -> None:
    b, r = broker(latency_ms=0)
    p = plan(entry_type="limit_post_only", limit_price=Decimal("99.00"), limit_timeout_ms=30_000)
    b.submit(p)
    feed(b, [trade(T0 + 10_000, 100.1), trade(T0 + 30_000, 100.3), trade(T0 + 31_000, 100.4)])
    assert (p.cid(OrderKind.ENTRY), "EXPIRED", "post_only_timeout") in r.updates
    (f,) = r.fills
    assert f.client_id == p.cid(OrderKind.ENTRY, 1) != p.cid(OrderKind.ENTRY)
    assert f.liquidity == "taker" and f.ts_ms == T0 + 31_000  # the next price after the timeout


def test_post_only_without_fallback_just_expires() -> None:
    b, r = broker(latency_ms=0)
    b.submit(plan(entry_type="limit_post_only", limit_price=Decimal("99.00"), market_fallback=False))
    feed(b, [trade(T0 + 40_000, 100.3), trade(T0 + 50_000, 100.4)])
    assert r.fills == []
    assert asyncio.run(b.snapshot()).open_orders == []


def test_funding_charged_once_at_funding_time_on_open_positions() -> None:
    b, r = broker(latency_ms=0)
    ft = T0 + 3_600_000
    feed(b, [Funding("BTCUSDT", T0 - 1, 100.0, 0.0001, ft)])
    b.submit(plan())
    feed(b, [trade(T0 + 1, 100.0)])
    feed(b, [Funding("BTCUSDT", ft - 1000, 100.5, 0.0001, ft), Funding("BTCUSDT", ft + 1000, 101.0, 0.0002, ft)])
    feed(b, [Funding("BTCUSDT", ft + 2000, 101.0, 0.0002, ft + 8 * 3_600_000)])
    assert len(r.funding) == 1
    sym, amount, ts = r.funding[0]
    assert (sym, ts) == ("BTCUSDT", ft) and amount == pytest.approx(-0.5 * 101.0 * 0.0001)  # a long pays


def test_kill_flattens_and_cancels() -> None:
    b, r = broker(latency_ms=0)
    b.submit(plan())
    feed(b, [trade(T0 + 1, 100.0), trade(T0 + 2, 100.5)])
    report = asyncio.run(b.kill())
    assert report.flattened == ["BTCUSDT"] and report.cancelled_orders == 2
    snap = asyncio.run(b.snapshot())
    assert snap.positions == [] and snap.open_orders == []
    assert r.fills[-1].kind is OrderKind.EXIT and r.fills[-1].side is OrderSide.SELL


def test_same_events_same_fills() -> None:
    events: list[MarketEvent] = [trade(T0 + i * 700, 100 + ((i * 37) % 11 - 5) * 0.3) for i in range(60)]
    runs = []
    for _ in range(2):
        b, r = broker()
        b.submit(plan())
        feed(b, events)
        runs.append([(f.kind, f.price, f.ts_ms) for f in r.fills])
    assert runs[0] == runs[1] and len(runs[0]) == 2
