"""The portfolio: trades, their fills, PnL, funding, equity and open exposure.

One trade per allowed decision that reached the broker, keyed by decision id; its orders are found again from
their client ids (the decision's digest is in every one).  Every change is written to the journal's trade row at
once: the trade rows are what a restart recovers and reconciles, and what the breakers' daily loss and loss
streak are rebuilt from.  Like NautilusTrader's ``Portfolio``, it only books what fills say happened; it never
decides whether an order may go out (that is the risk engine) nor sends one (the router).

Equity.  :attr:`Portfolio.equity` is the wallet balance (realized money: the paper equity plus closed PnL, or
Binance's ``wb``).  What sizing and the limits use is :meth:`Portfolio.exposure`: the wallet plus the open
positions' unrealized PnL at the latest price the market data showed (the venue's own figure per symbol until
one arrives), the initial margin they hold, and what is still available for a new position's margin.

Exchange closes.  Binance liquidates with client ids ``autoclose-…``, auto-deleverages with ``adl_autoclose`` and
settles a delisted contract with ``settlement_autoclose-…``; such a fill is not one of our orders, but it closes
our position: it is booked on the symbol's open trade, which closes with exit kind ``liq``, ``adl`` or ``settle``
(the journal's column holds 8 characters), and journaled as an ``exchange_close`` event naming the trade.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ultra_signals.core.decision import Side
from ultra_signals.core.events import BookTicker, Funding, Kline, MarketEvent, Trade
from ultra_signals.execution.brokers.base import AccountSnapshot, Fill, OrderKind, parse_client_id
from ultra_signals.execution.gateway import Exposure
from ultra_signals.journal.trading import ExecStore
from ultra_signals.observability.metrics import Metrics

__all__ = ["Closed", "FillResult", "Portfolio", "TradeRecord", "exchange_close_kind"]

_QTY_EPS = 1e-12


def exchange_close_kind(client_id: str) -> str | None:
    """``liq`` / ``adl`` / ``settle`` for an order Binance placed itself to close a position.

    Binance USDⓈ-M user data, "Event: Order Update"
    (https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Order-Update):
    client ids starting with ``autoclose-`` are liquidation orders, ``adl_autoclose`` auto-deleveraging, and
    ``settlement_autoclose-`` the settlement of a delisted (or delivered) contract.
    """
    if client_id.startswith("adl_autoclose"):
        return "adl"
    if client_id.startswith("autoclose-"):
        return "liq"
    if client_id.startswith("settlement_autoclose-"):
        return "settle"
    return None


@dataclass(slots=True)
class TradeRecord:
    """One trade as the executor books it (mirrors its ``exec_trades`` row)."""

    decision_id: str
    symbol: str
    side: Side
    arrival: float
    stop_cid: str
    tp_cid: str
    opened_ts: int
    status: str = "pending"  # pending | open | closed | cancelled | open_at_end
    qty: float = 0.0
    entry_qty: float = 0.0
    entry_price: float = 0.0
    exit_qty: float = 0.0
    exit_price: float = 0.0
    exit_kind: str | None = None
    fees: float = 0.0
    funding: float = 0.0
    gross: float = 0.0
    pnl: float | None = None
    closed_ts: int | None = None
    fills: int = 0
    #: What its client ids derive from (``EntryPlan.key``); empty: the decision id (a trade of an old release).
    order_key: str = ""
    #: Quantity the entry was sized for: a pending entry's exposure before anything filled (memory only).
    planned_qty: float = 0.0

    @property
    def key(self) -> str:
        return self.order_key or self.decision_id

    @property
    def sign(self) -> float:
        return 1.0 if self.side is Side.LONG else -1.0

    @property
    def is_open(self) -> bool:
        """Pending (entry sent) or open (entry filled): it holds the symbol."""
        return self.status in ("pending", "open")


@dataclass(frozen=True, slots=True)
class Closed:
    """A trade that the fill closed: what the breakers need to hear."""

    trade: TradeRecord
    pnl: float
    ts_ms: int
    equity_before: float


@dataclass(frozen=True, slots=True)
class FillResult:
    trade: TradeRecord | None  # None: a fill of an order we did not place
    closed: Closed | None = None


class Portfolio:
    def __init__(
        self,
        *,
        store: ExecStore,
        run_id: str,
        simulated: bool,
        books_pnl_into_equity: bool,
        equity: float,
        metrics: Metrics | None = None,
        leverage: float = 1.0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.simulated = simulated
        self.books_pnl_into_equity = books_pnl_into_equity
        self.equity = equity
        self.equity_start = equity
        self.metrics = metrics
        self.trades: dict[str, TradeRecord] = {}  # every trade of this run (and open ones from before) by decision id
        self._by_symbol: dict[str, str] = {}  # symbol -> decision id of its open/pending trade
        #: The held symbols, read-only to others (the same dict as ``_by_symbol``, never replaced): the router skips
        #: :meth:`on_market_event` for every other symbol's events without a call.
        self.held: Mapping[str, str] = self._by_symbol
        self._by_digest: dict[str, str] = {}  # client id digest -> decision id
        self.realized = 0.0
        self.fees = 0.0
        self.funding = 0.0
        #: The account's leverage: an open position holds notional / leverage of initial margin.
        self.leverage = max(1.0, leverage)
        self._marks: dict[str, float] = {}  # latest market price per held symbol
        self._venue_upnl: dict[str, float] = {}  # the venue's unrealized PnL per symbol at the last snapshot
        #: Initial margin the venue holds beyond our own trades (hand-made positions, open orders), at the last
        #: account snapshot: it is not available to us either.
        self.external_margin = 0.0
        self.venue_available: float | None = None  # the venue's availableBalance at the last snapshot

    # -- lookups ------
    def remember(self, t: TradeRecord) -> None:
        self.trades[t.decision_id] = t
        if t.is_open:
            self._by_symbol[t.symbol] = t.decision_id
        parsed = parse_client_id(t.stop_cid)
        if parsed is not None:
            self._by_digest[parsed[1]] = t.decision_id

    def holding(self, symbol: str) -> TradeRecord | None:
        """The symbol's pending or open trade."""
        did = self._by_symbol.get(symbol)
        return self.trades.get(did) if did else None

    def open_trades(self) -> Iterator[TradeRecord]:
        """Pending and open trades, in the order they were opened."""
        return (t for t in self.trades.values() if t.is_open)

    def trade_for(self, client_id: str) -> TradeRecord | None:
        parsed = parse_client_id(client_id)
        if parsed is None:
            return None
        did = self._by_digest.get(parsed[1])
        return self.trades.get(did) if did else None

    def open_notional(self) -> dict[str, float]:
        """Exposure per symbol (filled price, else the arrival price of a pending entry), for the gateway.

        A pending entry counts at its planned size until it fills (then at what filled): the limits must see an
        entry the moment it is sent, not when the venue's fill comes back.
        """
        out = {}
        for d in self._by_symbol.values():
            t = self.trades[d]
            qty = t.qty if t.qty > 0 or t.status != "pending" else t.planned_qty
            out[t.symbol] = qty * (t.entry_price or t.arrival)
        return out

    # -- marks, equity, margin ------
    def on_market_event(self, ev: MarketEvent) -> None:
        """Remember the latest price of a symbol we hold (cheap: one dict lookup for every other symbol)."""
        if ev.symbol not in self._by_symbol:
            return
        if isinstance(ev, Trade):
            self._marks[ev.symbol] = ev.price
        elif isinstance(ev, Funding):
            self._marks[ev.symbol] = ev.mark_price
        elif isinstance(ev, Kline):
            self._marks[ev.symbol] = ev.close
        elif isinstance(ev, BookTicker) and ev.bid > 0 and ev.ask > 0:
            self._marks[ev.symbol] = (ev.bid + ev.ask) / 2.0

    def unrealized_pnl(self) -> float:
        """Unrealized PnL of the filled part of every open trade at the latest price (fees excluded)."""
        total = 0.0
        for d in self._by_symbol.values():
            t = self.trades[d]
            if t.qty <= 0 or t.entry_price <= 0:
                continue
            mark = self._marks.get(t.symbol)
            if mark is not None:
                total += t.sign * (mark - t.entry_price) * t.qty
            else:
                total += self._venue_upnl.get(t.symbol, 0.0)
        return total

    def exposure(self) -> Exposure:
        """The book for the risk gateway and the daily-loss breaker (equity includes unrealized PnL)."""
        notional = self.open_notional()
        unrealized = self.unrealized_pnl()
        return Exposure(
            notional=notional,
            long={self.trades[d].symbol: self.trades[d].side is Side.LONG for d in self._by_symbol.values()},
            equity=self.equity + unrealized,
            unrealized=unrealized,
            margin_used=sum(notional.values()) / self.leverage + self.external_margin,
            leverage=self.leverage,
        )

    def available(self, exposure: Exposure | None = None) -> float:
        """What a new position's initial margin can still come from: equity (with unrealized PnL) minus the
        margin already held.  Right after an account snapshot this is the venue's ``availableBalance`` (the
        margin it held beyond our trades is :attr:`external_margin`); after that our own entries and marks
        move it."""
        book = exposure or self.exposure()
        return book.equity - book.margin_used

    def on_account(self, snap: AccountSnapshot, *, at_start: bool = True) -> None:
        """The venue's account (at start, and again after each reconnect of its stream): wallet, its unrealized
        PnL per symbol, margin it holds beyond ours."""
        self.equity = snap.wallet_balance
        if at_start:
            self.equity_start = snap.wallet_balance
        self._venue_upnl = dict(snap.unrealized_by_symbol)
        own = sum(self.open_notional().values()) / self.leverage
        used_by_venue = snap.margin_balance - snap.available_balance
        self.external_margin = max(0.0, used_by_venue - own)
        self.venue_available = snap.available_balance

    # -- changes ------
    def open_trade(self, t: TradeRecord, row: dict[str, Any]) -> None:
        """A new trade whose entry is about to be sent: journaled first, then held."""
        self.store.open_trade(row)
        self.remember(t)

    def cancel(self, t: TradeRecord, *, not_ours: bool = False) -> None:
        """The entry died unfilled: the symbol is free again.

        ``not_ours``: the venue refused the entry as a duplicate, so the orders with these ids belong to another
        runner; their fills (the account's stream reaches every runner) must not be booked on this trade.
        """
        t.status = "cancelled"
        self._by_symbol.pop(t.symbol, None)
        if not_ours:
            parsed = parse_client_id(t.stop_cid)
            if parsed is not None and self._by_digest.get(parsed[1]) == t.decision_id:
                del self._by_digest[parsed[1]]
        self.store.update_trade(t.decision_id, status="cancelled")

    def on_fill(self, fill: Fill) -> FillResult | None:
        """Book one fill; None when it was already booked (a replayed stream event)."""
        t = self.trade_for(fill.client_id)
        closed_by = exchange_close_kind(fill.client_id) if t is None else None
        if closed_by is not None:
            held = self.holding(fill.symbol)
            t = held if held is not None and held.status == "open" else None
        inserted = self.store.fill(
            {
                "run_id": self.run_id,
                "decision_id": t.decision_id if t else None,
                "client_id": fill.client_id,
                "trade_id": fill.trade_id or f"{fill.client_id}-{fill.ts_ms}-{fill.qty}",
                "symbol": fill.symbol,
                "side": fill.side.value,
                "kind": fill.kind.value,
                "qty": fill.qty,
                "price": fill.price,
                "reference_price": fill.reference_price,
                "slippage_bps": fill.slippage_bps,
                "fee": fill.fee,
                "liquidity": fill.liquidity,
                "order_qty": fill.order_qty,
                "order_ts": fill.order_ts_ms,
                "ts": fill.ts_ms,
                "simulated": 1 if self.simulated else 0,
            }
        )
        if not inserted:
            return None
        if self.metrics is not None:
            self.metrics.fill_slippage.observe(fill.slippage_bps)
        if t is None:
            return FillResult(None)
        t.fills += 1
        t.fees += fill.fee
        self.fees += fill.fee
        if fill.kind is OrderKind.ENTRY:
            t.entry_price = (t.entry_price * t.entry_qty + fill.price * fill.qty) / (t.entry_qty + fill.qty)
            t.entry_qty += fill.qty
            t.qty += fill.qty
            t.status = "open"
            self.store.update_trade(
                t.decision_id,
                status="open",
                qty=t.qty,
                entry_qty=t.entry_qty,
                entry_price=t.entry_price,
                fees=t.fees,
                filled_ts=fill.ts_ms,
            )
            return FillResult(t)
        closed = min(fill.qty, t.qty)
        t.exit_price = (
            (t.exit_price * t.exit_qty + fill.price * closed) / (t.exit_qty + closed) if closed else t.exit_price
        )
        t.exit_qty += closed
        t.qty -= closed
        t.gross += t.sign * (fill.price - t.entry_price) * closed
        t.exit_kind = closed_by or fill.kind.value
        if closed_by is not None:
            what = {"liq": "liquidation", "adl": "auto-deleveraging (ADL)"}.get(closed_by, "settlement (delisting)")
            self.store.event(
                "exchange_close",
                closed_by,
                f"{t.symbol} trade {t.decision_id}: {what} order {fill.client_id} closed {closed:g} at {fill.price:g}",
                run_id=self.run_id,
                ts=fill.ts_ms,
            )
        if t.qty <= _QTY_EPS * max(1.0, t.entry_qty):
            return FillResult(t, self._close(t, fill.ts_ms))
        self.store.update_trade(t.decision_id, qty=t.qty, fees=t.fees, gross_pnl=t.gross)
        return FillResult(t)

    def _close(self, t: TradeRecord, ts: int) -> Closed:
        t.qty = 0.0
        t.status = "closed"
        t.closed_ts = ts
        t.pnl = t.gross - t.fees + t.funding
        self._by_symbol.pop(t.symbol, None)
        self._marks.pop(t.symbol, None)
        self._venue_upnl.pop(t.symbol, None)
        self.store.update_trade(
            t.decision_id,
            status="closed",
            qty=0.0,
            exit_price=t.exit_price,
            exit_kind=t.exit_kind,
            fees=t.fees,
            funding=t.funding,
            gross_pnl=t.gross,
            pnl=t.pnl,
            closed_ts=ts,
            closed_wall=time.time(),
        )
        equity_before = self.equity
        if self.books_pnl_into_equity:
            self.equity += t.pnl
        self.realized += t.pnl
        if self.metrics is not None:
            self.metrics.pnl_realized.set(self.realized)
        return Closed(t, t.pnl, ts, equity_before)

    def on_funding(self, symbol: str, amount: float) -> None:
        t = self.holding(symbol)
        if t is None:
            return
        t.funding += amount
        self.funding += amount
        self.store.update_trade(t.decision_id, funding=t.funding)

    def mark_open_at_end(self) -> None:
        """The run ends and its positions die with it (a simulated venue): say so in the journal."""
        for t in self.trades.values():
            if t.is_open:
                t.status = "open_at_end"
                self.store.update_trade(t.decision_id, status="open_at_end")

    def position_gauge(self, symbol: str) -> None:
        if self.metrics is None:
            return
        t = self.holding(symbol)
        self.metrics.position_notional.labels(symbol=symbol).set(t.qty * t.entry_price if t else 0.0)

    # -- report ------
    def per_decision(self) -> dict[str, dict[str, Any]]:
        return {
            t.decision_id: {
                "symbol": t.symbol,
                "side": t.side.value,
                "status": t.status,
                "qty": t.entry_qty,
                "arrival": t.arrival,
                "entry": t.entry_price or None,
                "exit": t.exit_price or None,
                "exit_kind": t.exit_kind,
                "fees": round(t.fees, 6),
                "funding": round(t.funding, 6),
                "pnl": None if t.pnl is None else round(t.pnl, 6),
            }
            for t in self.trades.values()
        }

    def results(self) -> dict[str, Any]:
        closed = [t for t in self.trades.values() if t.status == "closed"]
        return {
            "equity_start": self.equity_start,
            "equity_end": self.equity,
            "realized_pnl": round(self.realized, 6),
            "fees": round(self.fees, 6),
            "funding": round(self.funding, 6),
            "trades": len(self.trades),
            "closed": len(closed),
            "wins": sum(1 for t in closed if (t.pnl or 0) > 0),
            "losses": sum(1 for t in closed if (t.pnl or 0) < 0),
        }
