"""The executor: allowed decisions in, sized and gated orders with brackets out, breakers watching it all.

The runner calls it from its decision loop, so every entry point is cheap and synchronous: the paper broker
fills on market events in the same call, the Binance broker queues its I/O onto its own task.  The trading
state (ACTIVE / REDUCING / HALTED) is read from and written to the journal, so a halt survives restarts and an
operator's resume from another process reaches a running executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Decision, Side
from ultra_signals.core.events import BookTicker, MarketEvent, event_time
from ultra_signals.core.instruments import SymbolFilters, parse_exchange_info
from ultra_signals.core.notices import BreakerTrip, Notice, Notifier
from ultra_signals.execution.base import Executor
from ultra_signals.execution.breakers import (
    BLOCK_REASON,
    DAY_MS,
    STATE_GAUGE,
    Breakers,
    RunnerHealth,
    StateRecord,
    TradingState,
    Trip,
    load_state,
    save_state,
)
from ultra_signals.execution.brokers.base import (
    Broker,
    EntryPlan,
    Fill,
    OrderKind,
    client_order_id,
    parse_client_id,
)
from ultra_signals.execution.brokers.paper import PaperBroker
from ultra_signals.execution.gateway import RiskGateway
from ultra_signals.execution.liquidation import Bracket, check_liquidation
from ultra_signals.execution.reconcile import Discrepancy, Expected, reconcile
from ultra_signals.execution.sizing import round_to, size_order
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics

__all__ = ["Executor", "NullExecutor", "RunnerHealth", "TradingExecutor", "make_executor"]

_QTY_EPS = 1e-12


@dataclass(slots=True)
class _Trade:
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

    @property
    def sign(self) -> float:
        return 1.0 if self.side is Side.LONG else -1.0


@dataclass(slots=True)
class _RunTally:
    refused: Counter[str] = field(default_factory=Counter)
    trips: list[str] = field(default_factory=list)
    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0


class TradingExecutor:
    """Sizing → gateway → broker, with the breakers and the persisted trading state around it."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker,
        journal: Journal,
        notifier: Notifier,
        run_id: str,
        metrics: Metrics | None = None,
        namespace: str | None = None,
        simulated: bool = True,
        filters: dict[str, SymbolFilters] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.execution
        self.broker = broker
        self.journal = journal
        self.notifier = notifier
        self.metrics = metrics
        self.run_id = run_id
        #: Optional hook: None when this executor may place orders, else a reason code (ExecutorLease.blocking_reason).
        self.lease_gate: Callable[[], str | None] | None = None
        self.namespace = namespace or settings.redis.namespace
        self.simulated = simulated
        self.filters = filters
        self.filters_source = "given" if filters is not None else "none"
        self.store = ExecStore(journal.engine)
        self.gateway = RiskGateway(self.cfg.throttles)
        self.breakers = Breakers(self.cfg.breakers)
        # Shadow places no orders: its breakers are what-if (journaled, counted, announced once each) and never
        # move the trading state that canary and production runs obey.
        self.enforce = settings.runtime.mode != "shadow"
        self._what_if_trips: set[str] = set()
        self.equity = self.cfg.paper_equity_usdt
        self.equity_start = self.equity
        self.now_ms = 0
        self.trades: dict[str, _Trade] = {}  # every trade of this run (and open ones from before) by decision id
        self._by_symbol: dict[str, str] = {}  # symbol -> decision id of its open/pending trade
        self._by_digest: dict[str, str] = {}  # client id digest -> decision id
        self._books: dict[str, BookTicker] = {}
        self.tally = _RunTally()
        self.state = load_state(journal)
        self.leverage_brackets: dict[str, list[Bracket]] = {}  # symbol -> Binance's maintenance brackets
        self._state_read = time.monotonic()
        self._seeded_day = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reconciliations: list[list[Discrepancy]] = []
        broker.bind(self)
        self._seed_streak()
        self._load_open_trades()
        self._set_state_gauge()

    # -- startup ------
    def _seed_streak(self) -> None:
        """The loss streak since the last resume, rebuilt from the journal (a restart must not forget it)."""
        resumed_at = self.state.at if self.state.state is TradingState.ACTIVE and self.state.by else None
        streak = 0
        for t in self.store.closed_trades(self.namespace, self.broker.name):
            if resumed_at is not None and (t.get("closed_wall") or 0) < resumed_at:
                continue
            streak = streak + 1 if (t["pnl"] or 0.0) < 0 else 0
        self.breakers.losses_in_a_row = streak

    def _load_open_trades(self) -> None:
        if self.broker.name == "paper":
            return  # what-if positions die with their run (they are marked open_at_end on close)
        for row in self.store.open_trades(self.namespace, self.broker.name):
            t = _Trade(
                row["decision_id"],
                row["symbol"],
                Side(row["side"]),
                row["arrival_price"],
                row["stop_cid"],
                row["tp_cid"],
                row["opened_ts"],
                status=row["status"],
                qty=row["qty"],
                entry_qty=row["entry_qty"],
                entry_price=row["entry_price"] or 0.0,
                fees=row["fees"],
                funding=row["funding"],
                gross=row["gross_pnl"],
            )
            self._remember(t)

    def _remember(self, t: _Trade) -> None:
        self.trades[t.decision_id] = t
        if t.status in ("pending", "open"):
            self._by_symbol[t.symbol] = t.decision_id
        parsed = parse_client_id(t.stop_cid)
        if parsed is not None:
            self._by_digest[parsed[1]] = t.decision_id

    async def start(self) -> None:
        if self.filters is None:
            if self.cfg.exchange_info_file:
                self.filters = parse_exchange_info(load_exchange_info_file(self.cfg.exchange_info_file))
                self.filters_source = self.cfg.exchange_info_file
            else:
                fetch = getattr(self.broker, "fetch_exchange_info", None)
                if fetch is not None:
                    self.filters = parse_exchange_info(await fetch())
                    self.filters_source = "exchange"
        await self.broker.start()
        fetch_brackets = getattr(self.broker, "leverage_brackets", None)
        if fetch_brackets is not None:
            self.leverage_brackets = await fetch_brackets()
        equity = getattr(self.broker, "account_equity", None)
        if equity is not None:
            self.equity = self.equity_start = float(await equity())
        if self.broker.name != "paper":
            recover = getattr(self.broker, "recover_missed_fills", None)
            if recover is not None:  # brackets that filled while the runner was down close their trades first
                await recover({t.decision_id: t.symbol for t in self.trades.values() if t.status == "open"})
            await self.reconcile()

    async def aclose(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await self.broker.drain(5.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker.name == "paper":
            for t in self.trades.values():
                if t.status in ("pending", "open"):
                    t.status = "open_at_end"
                    self.store.update_trade(t.decision_id, status="open_at_end")
        await self.broker.aclose()

    # -- runner entry points ------
    def on_market_event(self, ev: MarketEvent) -> None:
        ts = event_time(ev)
        if ts > self.now_ms:
            self.now_ms = ts
        if isinstance(ev, BookTicker):
            self._books[ev.symbol] = ev
        self.broker.on_market_event(ev)

    def blocking_reason(self) -> str | None:
        if time.monotonic() - self._state_read >= 0.5:
            self.refresh_state()
        return BLOCK_REASON.get(self.state.state)

    def on_health(self, h: RunnerHealth) -> None:
        self.refresh_state()
        for trip in self.breakers.on_health(h):
            self._trip(trip)

    def on_signal(self, decision: Decision) -> None:
        if not decision.allowed:
            return
        c = decision.candidate
        ts = c.ts
        self.now_ms = max(self.now_ms, ts)
        if self.state.state is not TradingState.ACTIVE:
            self._refuse(decision, BLOCK_REASON[self.state.state], f"trading is {self.state.state.value}")
            return
        lease_reason = self.lease_gate() if self.lease_gate is not None else None
        if lease_reason is not None:  # another executor holds this account (execution/lease.py)
            self._refuse(decision, lease_reason, "this executor does not hold the account's lease")
            return
        if c.symbol in self._by_symbol:
            self._refuse(decision, "position_open", f"{c.symbol} already has trade {self._by_symbol[c.symbol]}")
            return
        filters = self._filters(c.symbol)
        if filters is None:
            self._refuse(decision, "unknown_symbol", f"{c.symbol} is not in exchangeInfo")
            return
        targets = c.targets
        if not targets:
            self._refuse(decision, "no_target", "the candidate has no target")
            return
        tp = targets[min(self.cfg.take_profit_target, len(targets)) - 1]
        post_only = self.cfg.maker_first or self.cfg.entry_type == "limit_post_only"
        sizing = size_order(
            side=c.side,
            equity=self.equity,
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
        open_notional = {
            self.trades[d].symbol: self.trades[d].qty * (self.trades[d].entry_price or self.trades[d].arrival)
            for d in self._by_symbol.values()
        }
        verdict = self.gateway.check(symbol=c.symbol, notional=sizing.notional, ts_ms=ts, open_notional=open_notional)
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
        )
        trade = _Trade(
            decision.id,
            c.symbol,
            c.side,
            c.entry,
            plan.cid(OrderKind.STOP),
            plan.cid(OrderKind.TAKE_PROFIT),
            ts,
        )
        self.store.open_trade(
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
            }
        )
        self._remember(trade)
        self.gateway.record(ts)
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
        self.broker.submit(plan)

    def _filters(self, symbol: str) -> SymbolFilters | None:
        if self.filters is None:
            return SymbolFilters.unfiltered(symbol)
        return self.filters.get(symbol)

    def _refuse(self, decision: Decision, reason: str, detail: str) -> None:
        c = decision.candidate
        self.tally.refused[reason] += 1
        self._count("refused")
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

    # -- broker listener ------
    def _trade_for(self, client_id: str) -> _Trade | None:
        parsed = parse_client_id(client_id)
        if parsed is None:
            return None
        did = self._by_digest.get(parsed[1])
        return self.trades.get(did) if did else None

    def on_fill(self, fill: Fill) -> None:
        t = self._trade_for(fill.client_id)
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
            return
        if self.metrics is not None:
            self.metrics.fill_slippage.observe(fill.slippage_bps)
        if t is None:
            self._trip(
                Trip(
                    "reconcile",
                    f"fill of an order we did not place: {fill.client_id} {fill.symbol}",
                    fill.ts_ms,
                ),
                force=True,
            )
            return
        t.fills += 1
        t.fees += fill.fee
        self.tally.fees += fill.fee
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
        else:
            closed = min(fill.qty, t.qty)
            t.exit_price = (
                (t.exit_price * t.exit_qty + fill.price * closed) / (t.exit_qty + closed) if closed else t.exit_price
            )
            t.exit_qty += closed
            t.qty -= closed
            t.gross += t.sign * (fill.price - t.entry_price) * closed
            t.exit_kind = fill.kind.value
            if t.qty <= _QTY_EPS * max(1.0, t.entry_qty):
                self._close(t, fill.ts_ms)
            else:
                self.store.update_trade(t.decision_id, qty=t.qty, fees=t.fees, gross_pnl=t.gross)
        self._position_gauge(t.symbol)

    def _close(self, t: _Trade, ts: int) -> None:
        t.qty = 0.0
        t.status = "closed"
        t.closed_ts = ts
        t.pnl = t.gross - t.fees + t.funding
        self._by_symbol.pop(t.symbol, None)
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
        if self.broker.name == "paper":
            self.equity += t.pnl
        self.tally.realized += t.pnl
        if self.metrics is not None:
            self.metrics.pnl_realized.set(self.tally.realized)
        self._seed_day(ts)
        for trip in self.breakers.on_trade_closed(t.pnl, ts, equity_before):
            self._trip(trip)

    def _seed_day(self, ts: int) -> None:
        """Once per run: today's realized PnL from earlier runs, so a restart keeps the day's loss."""
        if self._seeded_day:
            return
        self._seeded_day = True
        day = ts // DAY_MS
        earlier = [
            r
            for r in self.store.closed_trades(self.namespace, self.broker.name, since_ms=day * DAY_MS)
            if r["run_id"] != self.run_id and r["pnl"] is not None
        ]
        pnl = sum(float(r["pnl"]) for r in earlier)
        self.breakers.seed(
            losses_in_a_row=self.breakers.losses_in_a_row,
            day=day,
            day_start_equity=self.equity - pnl,
            day_pnl=pnl,
        )

    def _position_gauge(self, symbol: str) -> None:
        if self.metrics is None:
            return
        did = self._by_symbol.get(symbol)
        t = self.trades.get(did) if did else None
        self.metrics.position_notional.labels(symbol=symbol).set(t.qty * t.entry_price if t else 0.0)

    def on_order_update(self, client_id: str, symbol: str, status: str, reason: str | None, ts_ms: int) -> None:
        t = self._trade_for(client_id)
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
        if t is None or parsed is None:
            return
        if parsed[0] is OrderKind.ENTRY and status in ("REJECTED", "EXPIRED", "CANCELED") and t.status == "pending":
            fallback_coming = status == "EXPIRED" and reason == "post_only_timeout" and self.cfg.market_fallback
            if not fallback_coming:
                t.status = "cancelled"
                self._by_symbol.pop(t.symbol, None)
                self.store.update_trade(t.decision_id, status="cancelled")
        elif parsed[0] in (OrderKind.STOP, OrderKind.TAKE_PROFIT) and status == "REJECTED" and t.status == "open":
            flatten = self.cfg.bracket_incident_action == "flatten"
            then = "closing the position" if flatten else "position left open: protect it by hand"
            self._trip(Trip("missing_bracket", f"{symbol} {kind} rejected ({reason}); {then}", ts_ms), force=True)
            if flatten:
                self.broker.close_position(symbol, t.side, Decimal(str(t.qty)), t.decision_id, ts_ms)

    def on_naked_window(self, symbol: str, ms: float) -> None:
        """Entry filled, brackets acknowledged ``ms`` later: measured always, alerted above the threshold."""
        if self.metrics is not None:
            self.metrics.naked_window.observe(ms)
        if ms > self.cfg.naked_window_alert_ms:
            detail = f"{symbol}: no stop for {ms:.0f} ms after the entry fill (alert above {self.cfg.naked_window_alert_ms:.0f} ms)"
            self.store.event("naked_window", symbol, detail, run_id=self.run_id, ts=self.now_ms)
            self.notifier.publish(
                Notice.plain("breaker", f"{self.settings.runtime.mode.upper()} | NAKED POSITION | {detail}")
            )

    def on_incident(self, kind: str, detail: str, ts_ms: int | None) -> None:
        """The venue says trading must stop now (IP ban, liquidation, margin call): journaled, HALTED, alerted."""
        ts = ts_ms if ts_ms is not None else self.now_ms
        self.store.event("incident", kind, detail, run_id=self.run_id, ts=ts)
        self._trip(Trip(kind, detail, ts or None), force=True)

    def on_broker_error(self, kind: str, detail: str, ts_ms: int | None) -> None:
        ts = ts_ms if ts_ms is not None else self.now_ms
        self._count("error")
        self.store.event("order_error", kind, detail, run_id=self.run_id, ts=ts)
        for trip in self.breakers.on_order_error(ts):
            self._trip(trip)

    def on_funding(self, symbol: str, amount: float, ts_ms: int) -> None:
        did = self._by_symbol.get(symbol)
        t = self.trades.get(did) if did else None
        if t is None:
            return
        t.funding += amount
        self.tally.funding += amount
        self.store.update_trade(t.decision_id, funding=t.funding)

    def on_equity(self, equity: float) -> None:
        self.equity = equity

    def on_reconnect(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reconcile())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- trading state ------
    def refresh_state(self) -> None:
        """Pick up an operator's resume or kill made from another process."""
        self._state_read = time.monotonic()
        rec = load_state(self.journal)
        if rec == self.state:
            return
        was = self.state.state
        self.state = rec
        if rec.state is TradingState.ACTIVE and was is not TradingState.ACTIVE:
            self.breakers.reset()
        if rec.by == "kill" and self.broker.name == "paper":
            for did in list(self._by_symbol.values()):
                t = self.trades[did]
                if t.status == "open":
                    self.broker.close_position(t.symbol, t.side, Decimal(str(t.qty)), did, self.now_ms)
        self._set_state_gauge()

    def _set_state_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.trading_state.set(STATE_GAUGE[self.state.state])

    def _trip(self, trip: Trip, force: bool = False) -> None:
        if not self.enforce:
            self.store.event("trip", trip.breaker, f"what-if: {trip.detail}", run_id=self.run_id, ts=trip.ts_ms)
            if trip.breaker not in self._what_if_trips:
                self._what_if_trips.add(trip.breaker)
                self.tally.trips.append(trip.breaker)
                if self.metrics is not None:
                    self.metrics.breaker_trips.labels(breaker=trip.breaker).inc()
                self.notifier.publish(Notice(BreakerTrip(self.settings.runtime.mode, trip.breaker, trip.detail, None)))
            return
        target = TradingState.HALTED if force or self.cfg.breakers.action == "halted" else TradingState.REDUCING
        self.store.event("trip", trip.breaker, trip.detail, run_id=self.run_id, ts=trip.ts_ms)
        if STATE_GAUGE[target] <= STATE_GAUGE[self.state.state]:
            return  # already at least this stopped: journaled, not re-alerted
        self.state = StateRecord(target, trip.breaker, trip.detail, trip.ts_ms, time.time(), "breaker")
        save_state(self.journal, self.state)
        self.tally.trips.append(trip.breaker)
        if self.metrics is not None:
            self.metrics.breaker_trips.labels(breaker=trip.breaker).inc()
        self._set_state_gauge()
        self.notifier.publish(Notice(BreakerTrip(self.settings.runtime.mode, trip.breaker, trip.detail, target.value)))

    async def reconcile(self) -> list[Discrepancy]:
        """Journal versus venue; any mismatch halts new entries and alerts."""
        expected = [
            Expected(
                t.decision_id,
                t.symbol,
                t.sign * t.qty,
                t.stop_cid,
                t.tp_cid,
                confirmed=t.status == "open",
            )
            for t in self.trades.values()
            if t.status in ("pending", "open")
        ]
        try:
            snap = await self.broker.snapshot()
        except Exception as e:
            self.on_broker_error("reconcile", f"snapshot failed: {e}", None)
            return []
        found = reconcile(expected, snap)
        self.reconciliations.append(found)
        self.store.event(
            "reconcile",
            "mismatch" if found else "ok",
            "; ".join(map(str, found)) or "agree",
            run_id=self.run_id,
        )
        if found:
            self._trip(Trip("reconcile", "; ".join(map(str, found[:5])), self.now_ms or None), force=True)
        return found

    # -- report ------
    def summary(self) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {}
        for t in self.trades.values():
            per[t.decision_id] = {
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
        closed = [t for t in self.trades.values() if t.status == "closed"]
        return {
            "broker": self.broker.name,
            "simulated": self.simulated,
            "filters": self.filters_source,
            "equity_start": self.equity_start,
            "equity_end": self.equity,
            "realized_pnl": round(self.tally.realized, 6),
            "fees": round(self.tally.fees, 6),
            "funding": round(self.tally.funding, 6),
            "trades": len(self.trades),
            "closed": len(closed),
            "wins": sum(1 for t in closed if (t.pnl or 0) > 0),
            "losses": sum(1 for t in closed if (t.pnl or 0) < 0),
            "refused": dict(self.tally.refused),
            "trips": list(self.tally.trips),
            "trading_state": self.state.state.value,
            "per_decision": per,
        }


class NullExecutor:
    """``execution.broker: none``: signals only; the trading state still blocks (a halt is a halt)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def on_market_event(self, ev: MarketEvent) -> None:
        return None

    def on_signal(self, decision: Decision) -> None:
        return None

    def on_health(self, h: RunnerHealth) -> None:
        return None

    def blocking_reason(self) -> str | None:
        return None

    def summary(self) -> dict[str, Any]:
        return {"broker": "none"}

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def make_executor(
    settings: Settings,
    metrics: Metrics | None,
    journal: Journal,
    notifier: Notifier,
    run_id: str,
    namespace: str | None = None,
) -> Executor:
    """The executor the settings ask for.

    Shadow mode, and any run on simulated or replayed data, gets the paper broker whatever
    ``execution.broker`` says: an exchange broker must never trade on prices that are not the market's now.
    """
    cfg = settings.execution
    if cfg.broker == "none":
        return NullExecutor(journal)
    live_market = settings.runtime.source == "binance"
    broker: Broker
    if cfg.broker == "binance" and settings.runtime.mode != "shadow" and live_market:
        from ultra_signals.execution.brokers.binance import BinanceBroker

        broker = BinanceBroker.from_settings(settings)
        simulated = False
    else:
        broker = PaperBroker(
            fee_taker_bps=cfg.fee_taker_bps,
            fee_maker_bps=cfg.fee_maker_bps,
            half_spread_bps=cfg.slippage_half_spread_bps,
            impact_bps_per_10k_usdt=cfg.slippage_impact_bps_per_10k_usdt,
            latency_ms=cfg.latency_ms,
        )
        simulated = True
    return TradingExecutor(
        settings,
        broker=broker,
        journal=journal,
        notifier=notifier,
        run_id=run_id,
        metrics=metrics,
        namespace=namespace,
        simulated=simulated,
    )


def new_client_id(decision_id: str, kind: OrderKind) -> str:
    """Re-exported for callers that need an order id for a decision (e.g. the kill switch's exits)."""
    return client_order_id(decision_id, kind)
