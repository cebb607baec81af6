"""The order router: an allowed decision in, a sized and gated entry plan out to the broker, order news back.

Checks run cheapest first and every refusal is journaled with its reason: trading state (the risk engine, from
memory), one trade per symbol (the portfolio), the symbol's filters, a target to aim at, sizing, the gateway's
throttles.  What passes becomes an :class:`EntryPlan` (market, or post-only at the touch when maker-first) whose
trade row is journaled before the broker sees it.  The broker's order updates and errors come back here: an
entry that died frees its symbol, a rejected bracket on an open position halts and flattens it.  This is the
part NautilusTrader calls the execution engine: commands out to the venue client, order events in.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal

from ultra_signals.core.config import ExecutionSettings
from ultra_signals.core.decision import Decision, Side
from ultra_signals.core.events import BookTicker, Kline, MarketEvent, event_time
from ultra_signals.core.instruments import SymbolFilters
from ultra_signals.execution.breakers import Trip
from ultra_signals.execution.brokers.base import DUPLICATE_REASON, Broker, EntryPlan, OrderKind, parse_client_id
from ultra_signals.execution.liquidation import Bracket, check_liquidation
from ultra_signals.execution.portfolio import Portfolio, TradeRecord
from ultra_signals.execution.risk import RiskEngine
from ultra_signals.execution.sizing import round_to, size_order
from ultra_signals.journal.trading import ExecStore
from ultra_signals.observability.metrics import Metrics

__all__ = ["OrderRouter"]

#: Order statuses that mean the venue accepted the entry (Binance ORDER_TRADE_UPDATE ``X``).
_ACK_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED", "FILLED"})
#: Entries waiting for their first ack, at most (oldest dropped unobserved beyond it).
_MAX_AWAITING_ACK = 1024


class OrderRouter:
    def __init__(
        self,
        cfg: ExecutionSettings,
        *,
        broker: Broker,
        portfolio: Portfolio,
        risk: RiskEngine,
        store: ExecStore,
        run_id: str,
        namespace: str,
        filters: dict[str, SymbolFilters] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.broker = broker
        self.portfolio = portfolio
        self.risk = risk
        self.store = store
        self.run_id = run_id
        self.namespace = namespace
        self.metrics = metrics
        self.filters = filters
        self.filters_source = "given" if filters is not None else "none"
        self.refused: Counter[str] = Counter()  # entries refused in this run, by reason
        self.now_ms = 0  # latest market time seen (events and decisions)
        self._books: dict[str, BookTicker] = {}
        #: The broker's market-event entry point, bound once; None for a broker that does not read market events.
        self._broker_event: Callable[[MarketEvent], None] | None = (
            broker.on_market_event if broker.capabilities.needs_market_events else None
        )
        #: The portfolio's held symbols (the same dict, never replaced): tested here without a call per event.
        self._held = portfolio.held
        #: None when this executor may place orders, else a reason code (``ExecutorLease.blocking_reason``).
        self.lease_gate: Callable[[], str | None] | None = None
        #: The venue's maintenance-margin brackets per symbol (filled at start; empty: no liquidation check).
        self.leverage_brackets: dict[str, list[Bracket]] = {}
        #: Wall-clock source for ``latency_decision_to_ack_ms`` (seconds, monotonic). A latency, not a window, so it
        #: is the one wall-clock reading here; injectable so a test can pin it. Never journaled.
        self.wall_clock: Callable[[], float] = time.monotonic
        #: Entry client id -> wall-clock reading when its decision reached the router, until the first ack.
        self._awaiting_ack: dict[str, float] = {}

    def on_market_event(self, ev: MarketEvent) -> None:
        """Every market event (the executor hands them straight here): the market clock, the marks of held
        symbols, and the broker's simulated fills.  A bar of a symbol not held costs the clock, one dict lookup and
        the broker's own check (issue 13: 166,320 bars of a 30-day replay, a few hundred fills)."""
        if type(ev) is Kline:  # every event of a replay: its time without event_time's own type test
            ts = ev.close_time + 1 if ev.closed else ev.open_time
        else:
            ts = event_time(ev)
            if isinstance(ev, BookTicker):
                self._books[ev.symbol] = ev
        if ts > self.now_ms:
            self.now_ms = ts
        if ev.symbol in self._held:  # marks of held symbols: unrealized PnL for sizing and the limits
            self.portfolio.on_market_event(ev)
        if self._broker_event is not None:
            self._broker_event(ev)

    # -- decision → plan → broker ------
    def on_signal(self, decision: Decision) -> None:
        decided_at = self.wall_clock()  # the decision reaches the executor now: decision → ack starts here
        c = decision.candidate
        ts = c.ts
        self.now_ms = max(self.now_ms, ts)
        held = self.risk.entry_refusal()
        if held is not None:
            self._refuse(decision, *held)
            return
        lease_reason = self.lease_gate() if self.lease_gate is not None else None
        if lease_reason is not None:  # another executor holds this account (execution/lease.py)
            self._refuse(decision, lease_reason, "this executor does not hold the account's lease")
            return
        holding = self.portfolio.holding(c.symbol)
        if holding is not None:
            self._refuse(decision, "position_open", f"{c.symbol} already has trade {holding.decision_id}")
            return
        filters = self.filters_for(c.symbol)
        if filters is None:
            self._refuse(decision, "unknown_symbol", f"{c.symbol} is not in exchangeInfo")
            return
        targets = c.targets
        if not targets:
            self._refuse(decision, "no_target", "the candidate has no target")
            return
        tp = targets[min(self.cfg.take_profit_target, len(targets)) - 1]
        post_only = self.cfg.maker_first or self.cfg.entry_type == "limit_post_only"
        exposure = self.portfolio.exposure()  # equity with unrealized PnL, margin held, every open position
        lost = self.risk.loss_refusal(exposure, ts)  # before sizing: a deep loss may leave nothing to size from
        if lost is not None:
            self._refuse(decision, lost.reason or "daily_loss", lost.detail)
            return
        sizing = size_order(
            side=c.side,
            equity=exposure.equity,
            available=self.portfolio.available(exposure),
            entry=c.entry,
            stop=c.stop,
            take_profit=tp,
            filters=filters,
            risk_fraction=self.cfg.risk_fraction,
            max_leverage=self.cfg.max_leverage,
            max_notional=self.cfg.max_notional_usdt,
            market=not post_only or self.cfg.market_fallback,
        )
        if not sizing.ok:
            self._refuse(decision, sizing.reason or "sizing", sizing.detail)
            return
        brackets = self.leverage_brackets.get(c.symbol)
        if brackets:  # the venue told us its maintenance margins: the stop must fire well before liquidation
            ok, why, detail = check_liquidation(
                long=c.side is Side.LONG, entry=float(sizing.entry), stop=float(sizing.stop), qty=float(sizing.qty),
                leverage=float(math.ceil(self.cfg.max_leverage)), brackets=brackets,
                min_buffer=self.cfg.min_liquidation_buffer,
            )  # fmt: skip
            if not ok:
                self._refuse(decision, why, detail)
                return
        verdict = self.risk.check_entry(
            symbol=c.symbol, notional=sizing.notional, ts_ms=ts, open_notional=exposure.notional,
            long=c.side is Side.LONG, exposure=exposure,
        )  # fmt: skip
        if not verdict.ok:
            self._refuse(decision, verdict.reason or "throttle", verdict.detail)
            return
        limit_price = None
        if post_only:
            book = self._books.get(c.symbol)
            touch = (book.bid if c.side is Side.LONG else book.ask) if book else c.entry
            limit_price = round_to(Decimal(str(touch)), filters.tick_size, ROUND_FLOOR)
        plan = EntryPlan(
            decision_id=decision.id,
            run_id=self.run_id,
            symbol=c.symbol,
            side=c.side,
            qty=sizing.qty,
            stop=sizing.stop,
            take_profit=sizing.take_profit,
            arrival_price=c.entry,
            ts_ms=ts,
            entry_type="limit_post_only" if post_only else "market",
            limit_price=limit_price,
            limit_timeout_ms=int(self.cfg.limit_timeout_s * 1000),
            market_fallback=self.cfg.market_fallback,
            order_key=decision.order_key(self.namespace),  # run-independent: a second runner's entry is refused
        )
        trade = TradeRecord(
            decision.id, c.symbol, c.side, c.entry, plan.cid(OrderKind.STOP), plan.cid(OrderKind.TAKE_PROFIT), ts,
            order_key=plan.key, planned_qty=float(sizing.qty),
        )  # fmt: skip
        self.portfolio.open_trade(
            trade,
            {
                "decision_id": decision.id,
                "run_id": self.run_id,
                "namespace": self.namespace,
                "broker": self.broker.name,
                "symbol": c.symbol,
                "side": c.side.value,
                "status": "pending",
                "qty": 0.0,
                "entry_qty": 0.0,
                "arrival_price": c.entry,
                "stop": float(sizing.stop),
                "take_profit": float(sizing.take_profit),
                "stop_cid": trade.stop_cid,
                "tp_cid": trade.tp_cid,
                "fees": 0.0,
                "funding": 0.0,
                "gross_pnl": 0.0,
                "opened_ts": ts,
            },
        )
        self.risk.entry_sent(ts)
        self.store.order_event(
            self.run_id,
            c.symbol,
            "submitted",
            decision_id=decision.id,
            client_id=plan.cid(OrderKind.ENTRY),
            kind="entry",
            detail=sizing.detail,
            ts=ts,
        )
        self._count("submitted")
        if self.metrics is not None:
            if len(self._awaiting_ack) >= _MAX_AWAITING_ACK:  # a broker that never answers must not grow this
                self._awaiting_ack.pop(next(iter(self._awaiting_ack)))
            self._awaiting_ack[plan.cid(OrderKind.ENTRY)] = decided_at  # before submit: a paper ack is synchronous
        self.broker.submit(plan)

    def filters_for(self, symbol: str) -> SymbolFilters | None:
        if self.filters is None:
            return SymbolFilters.unfiltered(symbol)
        return self.filters.get(symbol)

    def _refuse(self, decision: Decision, reason: str, detail: str) -> None:
        c = decision.candidate
        self.refused[reason] += 1
        self._count("refused")
        if self.metrics is not None:
            self.metrics.entries_refused.labels(reason=reason).inc()
        self.store.order_event(
            self.run_id,
            c.symbol,
            "refused",
            decision_id=decision.id,
            kind="entry",
            reason=reason,
            detail=detail,
            ts=c.ts,
        )

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.orders.labels(status=status).inc()

    # -- exits ------
    def close(self, t: TradeRecord, ts_ms: int) -> None:
        """Market reduce-only close of one trade's position (and its brackets)."""
        self.broker.close_position(t.symbol, t.side, Decimal(str(t.qty)), t.key, ts_ms)

    def flatten(self) -> None:
        """Close every open position at market: the kill switch, for a venue only this process can reach."""
        for t in list(self.portfolio.open_trades()):
            if t.status == "open":
                self.close(t, self.now_ms)

    # -- order news from the broker ------
    def on_order_update(self, client_id: str, symbol: str, status: str, reason: str | None, ts_ms: int) -> None:
        t = self.portfolio.trade_for(client_id)
        parsed = parse_client_id(client_id)
        kind = parsed[0].value if parsed else None
        self.store.order_event(
            self.run_id,
            symbol,
            status,
            decision_id=t.decision_id if t else None,
            client_id=client_id,
            kind=kind,
            reason=reason,
            ts=ts_ms,
        )
        self._count(status.lower())
        self._observe_ack(client_id, status)
        if t is None or parsed is None:
            return
        if parsed[0] is OrderKind.ENTRY and status in ("REJECTED", "EXPIRED", "CANCELED") and t.status == "pending":
            fallback_coming = status == "EXPIRED" and reason == "post_only_timeout" and self.cfg.market_fallback
            if not fallback_coming:
                self.portfolio.cancel(t, not_ours=reason == DUPLICATE_REASON)
        elif parsed[0] in (OrderKind.STOP, OrderKind.TAKE_PROFIT) and status == "REJECTED" and t.status == "open":
            flatten = self.cfg.bracket_incident_action == "flatten"
            then = "closing the position" if flatten else "position left open: protect it by hand"
            self.risk.trip(Trip("missing_bracket", f"{symbol} {kind} rejected ({reason}); {then}", ts_ms), force=True)
            if flatten:
                self.close(t, ts_ms)

    def _observe_ack(self, client_id: str, status: str) -> None:
        """The entry's first order update ends its wait; only an acceptance (NEW, or a fill for a market order that
        fills at once) is an acknowledgement worth timing, a rejection or expiry just stops the clock unobserved."""
        decided_at = self._awaiting_ack.pop(client_id, None)
        if decided_at is None or self.metrics is None or status not in _ACK_STATUSES:
            return
        self.metrics.decision_to_ack.observe(max(0.0, (self.wall_clock() - decided_at) * 1000.0))

    def on_broker_error(self, kind: str, detail: str, ts_ms: int | None) -> None:
        ts = ts_ms if ts_ms is not None else self.now_ms
        self._count("error")
        self.store.event("order_error", kind, detail, run_id=self.run_id, ts=ts)
        self.risk.on_order_error(ts)
