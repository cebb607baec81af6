"""The executor: allowed decisions in, sized and gated orders with brackets out, breakers watching it all.

A thin façade over four parts, each one concept (NautilusTrader separates them the same way, behind a message
bus; here they are plain objects calling each other):

* :mod:`~ultra_signals.execution.risk` — the trading state (in memory), the breakers, the gateway's throttles;
* :mod:`~ultra_signals.execution.portfolio` — trades, fills, PnL, funding, equity, exposure;
* :mod:`~ultra_signals.execution.router` — decision → plan → broker, and the broker's order news back;
* :mod:`~ultra_signals.execution.recovery` — start-up seeding, open-trade recovery, reconciliation.

The runner calls it from its decision loop, so every entry point is cheap and synchronous: the paper broker
fills on market events in the same call, the Binance broker queues its I/O onto its own task.  What the broker
can do by itself is read from its declared :class:`~ultra_signals.execution.brokers.base.BrokerCapabilities`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Decision
from ultra_signals.core.events import MarketEvent
from ultra_signals.core.instruments import SymbolFilters
from ultra_signals.core.notices import Notice, Notifier
from ultra_signals.execution.base import Executor
from ultra_signals.execution.breakers import Breakers, RunnerHealth, Trip
from ultra_signals.execution.brokers.base import Broker, Fill
from ultra_signals.execution.brokers.paper import PaperBroker
from ultra_signals.execution.portfolio import Portfolio, TradeRecord
from ultra_signals.execution.reconcile import Discrepancy
from ultra_signals.execution.recovery import Recovery
from ultra_signals.execution.risk import RiskEngine
from ultra_signals.execution.router import OrderRouter
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics

__all__ = ["Executor", "NullExecutor", "RunnerHealth", "TradingExecutor", "make_executor"]


class TradingExecutor:
    """Wires risk, portfolio, router and recovery; implements :class:`Executor` and the broker's listener."""

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
        simulated: bool | None = None,
        filters: dict[str, SymbolFilters] | None = None,
    ) -> None:
        cfg = settings.execution
        caps = broker.capabilities
        self.settings = settings
        self.broker = broker
        self.journal = journal
        self.run_id = run_id
        self.namespace = namespace or settings.redis.namespace
        self.simulated = caps.simulated_fills if simulated is None else simulated
        store = self.store = ExecStore(journal.engine)
        self.metrics = metrics
        self.notifier = notifier
        self.risk = RiskEngine(
            cfg,
            journal=journal,
            store=store,
            notifier=notifier,
            run_id=run_id,
            mode=settings.runtime.mode,
            enforce=settings.runtime.mode != "shadow",
            metrics=metrics,
        )
        self.portfolio = Portfolio(
            store=store,
            run_id=run_id,
            simulated=self.simulated,
            books_pnl_into_equity=not caps.reports_equity,
            equity=cfg.paper_equity_usdt,
            metrics=metrics,
            leverage=float(math.ceil(cfg.max_leverage)),  # what account setup sets per symbol
        )
        self.router = OrderRouter(
            cfg,
            broker=broker,
            portfolio=self.portfolio,
            risk=self.risk,
            store=store,
            run_id=run_id,
            namespace=self.namespace,
            filters=filters,
            metrics=metrics,
        )
        self.on_market_event = self.router.on_market_event
        self.recovery = Recovery(
            cfg,
            broker=broker,
            store=store,
            portfolio=self.portfolio,
            risk=self.risk,
            router=self.router,
            run_id=run_id,
            namespace=self.namespace,
        )
        broker.bind(self)
        self.recovery.seed()

    # -- views the tests and the report read ------
    @property
    def trades(self) -> dict[str, TradeRecord]:
        return self.portfolio.trades

    @property
    def filters(self) -> dict[str, SymbolFilters] | None:
        return self.router.filters

    @property
    def breakers(self) -> Breakers:
        return self.risk.breakers

    @property
    def reconciliations(self) -> list[list[Discrepancy]]:
        return self.recovery.reconciliations

    # -- lifecycle ------
    async def start(self) -> None:
        await self.recovery.start()

    async def aclose(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await self.broker.drain(5.0)
        await self.recovery.aclose()
        if not self.broker.capabilities.positions_outlive_run:
            self.portfolio.mark_open_at_end()  # what-if positions die with their run
        await self.broker.aclose()

    # -- runner entry points ------
    #: Every market event goes straight to :meth:`OrderRouter.on_market_event` (bound in ``__init__``): the runner
    #: calls it for every bar of every timeframe, and a forwarding method was one Python call more per event.
    on_market_event: Callable[[MarketEvent], None]

    def blocking_reason(self) -> str | None:
        """From memory: the pipeline's filter chain asks on every candidate."""
        return self.risk.blocking_reason()

    def on_health(self, h: RunnerHealth) -> None:
        """The runner's periodic report: pick up state written by other processes, then the health breakers."""
        self.refresh_state()
        self.risk.on_health(h)
        if self.portfolio.open_notional():  # the daily loss counts what is still open
            self.recovery.seed_day(h.ts_ms)
            self.risk.on_marks(self.portfolio.exposure(), h.ts_ms)

    def on_signal(self, decision: Decision) -> None:
        if decision.allowed:
            self.router.on_signal(decision)

    def refresh_state(self) -> None:
        """Pick up an operator's resume or kill made from another process (off the decision path)."""
        change = self.risk.sync()
        if change is not None and change.killed and not self.broker.capabilities.external_kill:
            self.router.flatten()  # the kill command cannot reach positions only this process holds

    # -- broker listener ------
    def on_fill(self, fill: Fill) -> None:
        result = self.portfolio.on_fill(fill)
        if result is None:
            return  # already booked
        if result.trade is None:
            self.risk.trip(
                Trip("reconcile", f"fill of an order we did not place: {fill.client_id} {fill.symbol}", fill.ts_ms),
                force=True,
            )
            return
        closed = result.closed
        if closed is not None:
            self.recovery.seed_day(closed.ts_ms)
            self.risk.on_trade_closed(closed.pnl, closed.ts_ms, closed.equity_before)
        self.portfolio.position_gauge(result.trade.symbol)

    def on_order_update(self, client_id: str, symbol: str, status: str, reason: str | None, ts_ms: int) -> None:
        self.router.on_order_update(client_id, symbol, status, reason, ts_ms)

    def on_broker_error(self, kind: str, detail: str, ts_ms: int | None) -> None:
        self.router.on_broker_error(kind, detail, ts_ms)

    def on_naked_window(self, symbol: str, ms: float) -> None:
        """Entry filled, brackets acknowledged ``ms`` later: measured always, alerted above the threshold."""
        if self.metrics is not None:
            self.metrics.naked_window.observe(ms)
        limit = self.settings.execution.naked_window_alert_ms
        if ms > limit:
            detail = f"{symbol}: no stop for {ms:.0f} ms after the entry fill (alert above {limit:.0f} ms)"
            self.store.event("naked_window", symbol, detail, run_id=self.run_id, ts=self.router.now_ms)
            self.notifier.publish(
                Notice.plain("breaker", f"{self.settings.runtime.mode.upper()} | NAKED POSITION | {detail}")
            )

    def on_incident(self, kind: str, detail: str, ts_ms: int | None) -> None:
        """The venue says trading must stop now (IP ban, liquidation, margin call): journaled, HALTED, alerted."""
        ts = ts_ms if ts_ms is not None else self.router.now_ms
        self.store.event("incident", kind, detail, run_id=self.run_id, ts=ts)
        self.risk.trip(Trip(kind, detail, ts or None), force=True)

    @property
    def lease_gate(self) -> Callable[[], str | None] | None:
        """The account lease's check (``execution/lease.py``): None while this executor may place orders."""
        return self.router.lease_gate

    @lease_gate.setter
    def lease_gate(self, gate: Callable[[], str | None] | None) -> None:
        self.router.lease_gate = gate

    def on_funding(self, symbol: str, amount: float, ts_ms: int) -> None:
        self.portfolio.on_funding(symbol, amount)

    def on_equity(self, equity: float) -> None:
        self.portfolio.equity = equity

    def on_reconnect(self) -> None:
        self.recovery.on_reconnect()

    async def reconcile(self) -> list[Discrepancy]:
        return await self.recovery.reconcile()

    # -- report ------
    def summary(self) -> dict[str, Any]:
        return {
            "broker": self.broker.name,
            "simulated": self.simulated,
            "filters": self.router.filters_source,
            **self.portfolio.results(),
            "refused": dict(self.router.refused),
            "trips": list(self.risk.trips),
            "trading_state": self.risk.state.state.value,
            "per_decision": self.portfolio.per_decision(),
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

        broker = BinanceBroker.from_settings(settings, metrics)
        simulated = False
    else:
        broker = PaperBroker.from_settings(settings)
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
