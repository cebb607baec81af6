"""Paper broker: what-if fills on market event time, for shadow reports and replayed canaries.

It fills at the next trade or book price after the decision (plus ``latency_ms``), never at the decision's
own price, with a slippage model of half the spread plus a linear size impact, taker or maker fees,
reduce-only stop and take-profit brackets (one cancels the other), and funding on open positions at funding
times.  When a symbol has no trades or book tickers (candle replay) it falls back to bar prices: the next
bar's open for entries and each bar's range for brackets, stop first when a bar touches both (the
pessimistic order).  Everything runs synchronously inside :meth:`on_market_event`, so a replay at any
speed gives the same fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ultra_signals.core.decision import Side
from ultra_signals.core.events import BookTicker, Funding, Kline, MarketEvent, Trade
from ultra_signals.execution.brokers.base import (
    AccountSnapshot,
    BrokerCapabilities,
    BrokerError,
    BrokerListener,
    EntryPlan,
    Fill,
    KillReport,
    OpenOrderView,
    OrderKind,
    OrderSide,
    PositionView,
    VenueSnapshot,
    client_order_id,
    close_side,
    open_side,
)
from ultra_signals.execution.liquidation import Bracket

if TYPE_CHECKING:
    from ultra_signals.core.config import Settings


@dataclass(slots=True, eq=False)  # identity: two identical-looking orders are still two orders
class _Order:
    cid: str
    order_key: str  # what its client id derives from (EntryPlan.key)
    symbol: str
    side: OrderSide
    kind: OrderKind
    qty: float
    style: str  # market | limit | stop | tp
    price: float  # limit price or trigger price (0 for market)
    live_from_ms: int
    order_ts_ms: int
    reference: float
    expires_ms: int | None = None
    fallback: EntryPlan | None = None  # post-only entry: the plan to send at market on timeout


@dataclass(slots=True)
class _Position:
    order_key: str
    side: Side
    qty: float
    entry_price: float
    opened_ms: int


def _exit_at_market(
    symbol: str, pos: _Position, order_key: str, live_from_ms: int, order_ts_ms: int, ref: float
) -> _Order:
    """The market order that flattens ``pos`` (a close request, or a kill), its exit id from the trade's ``order_key``."""
    return _Order(
        client_order_id(order_key, OrderKind.EXIT),
        order_key,
        symbol,
        close_side(pos.side),
        OrderKind.EXIT,
        pos.qty,
        "market",
        0.0,
        live_from_ms,
        order_ts_ms,
        ref,
    )


@dataclass(slots=True)
class _Quote:
    buy: float  # price a market buy would pay before impact
    sell: float
    high: float  # range of prices seen by this event (a bar's high/low; the price itself for a tick)
    low: float
    open: float
    ts: int
    bar: bool = False  # a candle: its open is the first price after a decision at its open time


class PaperBroker:
    name = "paper"
    capabilities = BrokerCapabilities(
        simulated_fills=True,
        positions_outlive_run=False,
        reports_equity=False,
        provides_exchange_info=False,
        external_kill=False,
        needs_market_events=True,
    )

    def __init__(
        self,
        *,
        fee_taker_bps: float,
        fee_maker_bps: float,
        half_spread_bps: float,
        impact_bps_per_10k_usdt: float,
        latency_ms: float,
    ) -> None:
        self.fee_taker = fee_taker_bps / 10_000.0
        self.fee_maker = fee_maker_bps / 10_000.0
        self.half_spread_bps = half_spread_bps
        self.impact_per_usdt = impact_bps_per_10k_usdt / 10_000.0 / 10_000.0
        self.latency_ms = int(latency_ms)
        self._listener: BrokerListener | None = None
        self._orders: dict[str, list[_Order]] = {}
        self._positions: dict[str, _Position] = {}
        self._book: dict[str, BookTicker] = {}
        # The last reference price per symbol: a tick's mid, or (candle replay) the last closed bar, priced only
        # when read (:meth:`_reference`).  ``_orders`` holds a symbol only while something rests on it.
        self._last_tick: dict[str, tuple[float, int]] = {}
        self._last_bar: dict[str, Kline] = {}
        self._tick_symbols: set[str] = set()
        self._funding: dict[str, tuple[float, int]] = {}  # symbol -> (announced rate, funding time)
        self._funded: dict[str, int] = {}  # symbol -> latest funding time already charged
        self._brackets_for: dict[str, EntryPlan] = {}  # entry client id -> its plan (brackets on fill)
        self._seq = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PaperBroker:
        """The costs and latency ``execution`` configures: the one place a replay's or a shadow's paper broker is
        built from settings (the executor, drills and tests), so they cannot drift apart."""
        c = settings.execution
        return cls(
            fee_taker_bps=c.fee_taker_bps,
            fee_maker_bps=c.fee_maker_bps,
            half_spread_bps=c.slippage_half_spread_bps,
            impact_bps_per_10k_usdt=c.slippage_impact_bps_per_10k_usdt,
            latency_ms=c.latency_ms,
        )

    # -- Broker interface ------
    def bind(self, listener: BrokerListener) -> None:
        self._listener = listener

    def submit(self, plan: EntryPlan) -> None:
        side = open_side(plan.side)
        qty = float(plan.qty)
        if plan.entry_type == "limit_post_only" and plan.limit_price is not None:
            order = _Order(
                plan.cid(OrderKind.ENTRY),
                plan.key,
                plan.symbol,
                side,
                OrderKind.ENTRY,
                qty,
                "limit",
                float(plan.limit_price),
                plan.ts_ms + self.latency_ms,
                plan.ts_ms,
                plan.arrival_price,
                expires_ms=plan.ts_ms + plan.limit_timeout_ms,
                fallback=plan,
            )
        else:
            order = self._market(plan.cid(OrderKind.ENTRY), plan, side, qty, plan.ts_ms, plan.arrival_price)
        self._orders.setdefault(plan.symbol, []).append(order)
        self._brackets_for[order.cid] = plan
        self._emit_status(order.cid, plan.symbol, "NEW", None, plan.ts_ms)

    def close_position(self, symbol: str, side: Side, qty: Decimal, order_key: str, ts_ms: int) -> None:
        self._cancel_brackets(symbol, ts_ms)
        pos = self._positions.get(symbol)
        if pos is None:
            return
        ref = self._reference(symbol, (pos.entry_price, ts_ms))[0]
        order = _exit_at_market(symbol, pos, order_key, ts_ms + self.latency_ms, ts_ms, ref)
        self._orders.setdefault(symbol, []).append(order)

    async def start(self) -> None:
        return None

    async def fetch_exchange_info(self) -> dict[str, Any]:
        raise BrokerError("the paper broker has no exchangeInfo: set execution.exchange_info_file for real filters")

    async def account_equity(self) -> float:
        raise BrokerError("the paper broker has no account: the executor keeps the paper equity")

    async def account_snapshot(self) -> AccountSnapshot:
        raise BrokerError("the paper broker has no account: the executor keeps the paper equity")

    async def leverage_brackets(self) -> dict[str, list[Bracket]]:
        return {}  # no venue margin rules: paper trades have no liquidation price

    async def recover_missed_fills(self, trades: dict[str, str] | None = None) -> int:
        return 0  # paper positions die with the run

    async def snapshot(self) -> VenueSnapshot:
        positions = [
            PositionView(s, p.qty if p.side is Side.LONG else -p.qty, p.entry_price) for s, p in self._positions.items()
        ]
        orders = [
            OpenOrderView(
                o.symbol,
                o.cid,
                {"market": "MARKET", "limit": "LIMIT", "stop": "STOP_MARKET", "tp": "TAKE_PROFIT_MARKET"}[o.style],
                o.side,
                o.qty,
                o.price if o.style == "limit" else 0.0,
                o.price if o.style in ("stop", "tp") else 0.0,
                o.kind is not OrderKind.ENTRY,
            )
            for lst in self._orders.values()
            for o in lst
        ]
        return VenueSnapshot(positions, orders)

    async def kill(self) -> KillReport:
        """Cancel everything and close every position at the last price seen (the paper has no later one)."""
        report = KillReport()
        for symbol in list(self._orders):
            report.cancelled_orders += len(self._orders[symbol])
            for o in self._orders.pop(symbol):
                self._emit_status(o.cid, symbol, "CANCELED", "kill", o.order_ts_ms)
        for symbol, pos in list(self._positions.items()):
            price, ts = self._reference(symbol, (pos.entry_price, pos.opened_ms))
            order = _exit_at_market(symbol, pos, pos.order_key, ts, ts, price)
            self._fill(order, self._impact(price, order), ts, maker=False)
            report.flattened.append(symbol)
        return report

    async def drain(self, timeout_s: float = 5.0) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # -- market events ------
    def on_market_event(self, ev: MarketEvent) -> None:
        if type(ev) is Kline and ev.symbol not in self._orders:
            # The common case (every bar of every timeframe in a replay): nothing resting on the symbol, so
            # nothing can fill; only the reference price moves, and it is worked out from the bar when someone
            # reads it (:meth:`_reference`).  The coarser timeframes' bars are not skipped: a bracket resting on
            # the symbol fills on them today (a 5m bar arrives before the 1m bar closing at the same time).
            if ev.closed:
                self._last_bar[ev.symbol] = ev
            return
        if isinstance(ev, Funding):
            self._on_funding(ev)
            return
        quote = self._quote(ev)
        if quote is None:
            return
        symbol = ev.symbol
        before = list(self._orders.get(symbol, ()))
        for order in before:
            if order in self._orders.get(symbol, ()):  # an earlier fill on this event may have cancelled it
                self._try_order(order, quote)
        # Brackets born from a fill on this event see the rest of it too (a bar's range after its open).
        for order in [o for o in self._orders.get(symbol, ()) if o not in before and o.style in ("stop", "tp")]:
            if quote.bar:
                self._try_bracket(order, quote)
        if isinstance(ev, Kline):  # a bar quote: priced when read, as on the fast path
            self._last_bar[symbol] = ev
        else:
            self._last_tick[symbol] = ((quote.buy + quote.sell) / 2.0, quote.ts)

    def _reference(self, symbol: str, default: tuple[float, int]) -> tuple[float, int]:
        """The last price seen on ``symbol`` and its time (``default`` before any): a tick's mid once the symbol has
        ticks (its bars no longer count), else the mid of the last closed bar's open as its quote in :meth:`_quote`
        has it (same float operations, same result as storing it on every bar did)."""
        tick = self._last_tick.get(symbol)
        if tick is not None:
            return tick
        bar = self._last_bar.get(symbol)
        if bar is None:
            return default
        half = self.half_spread_bps / 10_000.0 * bar.open
        return (((bar.open + half) + (bar.open - half)) / 2.0, bar.open_time)

    def _quote(self, ev: MarketEvent) -> _Quote | None:
        if isinstance(ev, BookTicker):
            self._tick_symbols.add(ev.symbol)
            self._book[ev.symbol] = ev
            mid = (ev.bid + ev.ask) / 2.0
            return _Quote(ev.ask, ev.bid, mid, mid, mid, ev.ts)
        if isinstance(ev, Trade):
            self._tick_symbols.add(ev.symbol)
            half = self._half_spread(ev.symbol) * ev.price
            return _Quote(ev.price + half, ev.price - half, ev.price, ev.price, ev.price, ev.ts)
        if isinstance(ev, Kline) and ev.closed and ev.symbol not in self._tick_symbols:
            half = self.half_spread_bps / 10_000.0 * ev.open
            # A bar is known at its close, but its prices start at its open: fills may use it from open_time.
            return _Quote(ev.open + half, ev.open - half, ev.high, ev.low, ev.open, ev.open_time, bar=True)
        return None

    def _half_spread(self, symbol: str) -> float:
        book = self._book.get(symbol)
        if book is not None and book.bid > 0 and book.ask > book.bid:
            return (book.ask - book.bid) / (book.ask + book.bid)
        return self.half_spread_bps / 10_000.0

    def _impact(self, price: float, order: _Order) -> float:
        frac = self.impact_per_usdt * order.qty * price
        return price * (1 + frac) if order.side is OrderSide.BUY else price * (1 - frac)

    def _try_order(self, o: _Order, q: _Quote) -> None:
        live_from = o.live_from_ms - (self.latency_ms if q.bar else 0)  # bars are coarser than latency
        if q.ts < live_from and o.style in ("market", "limit"):
            return
        if o.style == "market":
            base = q.buy if o.side is OrderSide.BUY else q.sell
            self._fill(o, self._impact(base, o), max(q.ts, o.live_from_ms), maker=False)
        elif o.style == "limit":
            crossed = q.low < o.price if o.side is OrderSide.BUY else q.high > o.price
            if crossed:
                self._fill(o, o.price, q.ts, maker=True)
            elif o.expires_ms is not None and q.ts >= o.expires_ms:
                self._remove(o)
                self._emit_status(o.cid, o.symbol, "EXPIRED", "post_only_timeout", q.ts)
                plan = o.fallback
                if plan is not None and plan.market_fallback:
                    fb = self._market(plan.cid(OrderKind.ENTRY, 1), plan, o.side, o.qty, q.ts, plan.arrival_price)
                    self._orders.setdefault(o.symbol, []).append(fb)
                    self._brackets_for[fb.cid] = plan
                    self._emit_status(fb.cid, o.symbol, "NEW", None, q.ts)
        elif q.ts >= o.live_from_ms:
            self._try_bracket(o, q)

    def _try_bracket(self, o: _Order, q: _Quote) -> None:
        sell = o.side is OrderSide.SELL  # closing a long
        if o.style == "stop":
            hit = q.low <= o.price if sell else q.high >= o.price
            base = min(q.open, o.price) if sell else max(q.open, o.price)
        else:
            hit = q.high >= o.price if sell else q.low <= o.price
            base = max(q.open, o.price) if sell else min(q.open, o.price)
        if not hit:
            return
        if q.high == q.low:  # a tick: it fills at the tick's own price, not the trigger
            base = q.sell if sell else q.buy
        else:
            half = self.half_spread_bps / 10_000.0 * base
            base = base - half if sell else base + half
        o.order_ts_ms = q.ts
        self._fill(o, self._impact(base, o), q.ts, maker=False)

    # -- bookkeeping ------
    def _market(self, cid: str, plan: EntryPlan, side: OrderSide, qty: float, ts: int, ref: float) -> _Order:
        return _Order(
            cid,
            plan.key,
            plan.symbol,
            side,
            OrderKind.ENTRY,
            qty,
            "market",
            0.0,
            ts + self.latency_ms,
            plan.ts_ms,
            ref,
        )

    def _remove(self, o: _Order) -> None:
        lst = self._orders.get(o.symbol, [])
        if o in lst:
            lst.remove(o)
        if not lst:
            self._orders.pop(o.symbol, None)

    def _cancel_brackets(self, symbol: str, ts: int) -> None:
        for o in list(self._orders.get(symbol, ())):
            if o.style in ("stop", "tp"):
                self._remove(o)
                self._emit_status(o.cid, symbol, "CANCELED", "oco", ts)

    def _fill(self, o: _Order, price: float, ts: int, *, maker: bool) -> None:
        self._remove(o)
        fee = o.qty * price * (self.fee_maker if maker else self.fee_taker)
        self._seq += 1
        fill = Fill(
            client_id=o.cid,
            symbol=o.symbol,
            side=o.side,
            kind=o.kind,
            qty=o.qty,
            price=price,
            fee=fee,
            liquidity="maker" if maker else "taker",
            ts_ms=ts,
            order_qty=o.qty,
            order_ts_ms=o.order_ts_ms,
            reference_price=o.reference if o.style in ("market", "limit") else o.price,
            trade_id=f"paper-{self._seq}",
        )
        if o.kind is OrderKind.ENTRY:
            plan = self._brackets_for.pop(o.cid)
            self._positions[o.symbol] = _Position(o.order_key, plan.side, o.qty, price, ts)
            # Brackets go live at once with the fill (bars: from the bar that filled, pessimistically).
            for kind, style, trig in (
                (OrderKind.STOP, "stop", float(plan.stop)),
                (OrderKind.TAKE_PROFIT, "tp", float(plan.take_profit)),
            ):
                br = _Order(
                    plan.cid(kind),
                    o.order_key,
                    o.symbol,
                    close_side(plan.side),
                    kind,
                    o.qty,
                    style,
                    trig,
                    ts,
                    ts,
                    trig,
                )
                self._orders.setdefault(o.symbol, []).append(br)
        else:
            self._positions.pop(o.symbol, None)
            self._cancel_brackets(o.symbol, ts)
        self._emit_status(o.cid, o.symbol, "FILLED", None, ts)
        if self._listener is not None:
            self._listener.on_fill(fill)

    def _on_funding(self, ev: Funding) -> None:
        """Charge the rate announced before a funding time once the market clock has passed it."""
        prev = self._funding.get(ev.symbol)
        pos = self._positions.get(ev.symbol)
        if prev is not None:
            rate, funding_time = prev
            due = ev.ts >= funding_time and self._funded.get(ev.symbol) != funding_time
            if due:
                self._funded[ev.symbol] = funding_time
                if pos is not None and pos.opened_ms < funding_time:
                    signed = pos.qty if pos.side is Side.LONG else -pos.qty
                    amount = -signed * ev.mark_price * rate  # longs pay a positive rate
                    if self._listener is not None:
                        self._listener.on_funding(ev.symbol, amount, funding_time)
        if ev.next_funding_time > ev.ts or prev is None:
            self._funding[ev.symbol] = (ev.funding_rate, ev.next_funding_time)

    def _emit_status(self, cid: str, symbol: str, status: str, reason: str | None, ts: int) -> None:
        if self._listener is not None:
            self._listener.on_order_update(cid, symbol, status, reason, ts)

    def positions(self) -> dict[str, PositionView]:
        return {
            s: PositionView(s, p.qty if p.side is Side.LONG else -p.qty, p.entry_price)
            for s, p in self._positions.items()
        }
