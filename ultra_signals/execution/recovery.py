"""Recovery: what a run takes over from the journal and the venue when it starts, and reconciliation.

A restart must not forget anything that protects the account: the loss streak since the operator's last resume,
the day's realized loss (for the daily-loss breaker), and — on a venue whose positions outlive the process — the
trades still open, which are then compared with what the venue says is open (at start and after every reconnect
of its private stream).  Any mismatch halts new entries and alerts; nothing is adopted or dropped silently.
The journal is read here at start (and once, at the run's first close, for the day's loss), never on the
decision path.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ultra_signals.core.config import ExecutionSettings
from ultra_signals.core.decision import Side
from ultra_signals.core.instruments import parse_exchange_info
from ultra_signals.execution.breakers import DAY_MS, StateRecord, TradingState, Trip
from ultra_signals.execution.brokers.base import Broker, BrokerError, trade_order_key
from ultra_signals.execution.portfolio import Portfolio, TradeRecord
from ultra_signals.execution.reconcile import Discrepancy, Expected, reconcile
from ultra_signals.execution.risk import RiskEngine
from ultra_signals.execution.router import OrderRouter
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.journal.trading import ExecStore

__all__ = ["Recovery"]


class Recovery:
    def __init__(
        self,
        cfg: ExecutionSettings,
        *,
        broker: Broker,
        store: ExecStore,
        portfolio: Portfolio,
        risk: RiskEngine,
        router: OrderRouter,
        run_id: str,
        namespace: str,
    ) -> None:
        self.cfg = cfg
        self.broker = broker
        self.store = store
        self.portfolio = portfolio
        self.risk = risk
        self.router = router
        self.run_id = run_id
        self.namespace = namespace
        self.reconciliations: list[list[Discrepancy]] = []
        self._seeded_day = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- when the executor is built (synchronous: the journal only) ------
    def seed(self) -> None:
        """The loss streak, and the venue's open trades, from the journal."""
        self.seed_streak()
        if self.broker.capabilities.positions_outlive_run:
            self.load_open_trades()

    def seed_streak(self) -> None:
        """The loss streak since the last resume, rebuilt from the journal (a restart must not forget it)."""
        state: StateRecord = self.risk.state
        resumed_at = state.at if state.state is TradingState.ACTIVE and state.by else None
        streak = 0
        for t in self.store.closed_trades(self.namespace, self.broker.name):
            if resumed_at is not None and (t.get("closed_wall") or 0) < resumed_at:
                continue
            streak = streak + 1 if (t["pnl"] or 0.0) < 0 else 0
        self.risk.breakers.losses_in_a_row = streak

    def load_open_trades(self) -> None:
        """Trades left open by an earlier run on this namespace and venue: held again, to be reconciled."""
        for row in self.store.open_trades(self.namespace, self.broker.name):
            t = TradeRecord(
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
                order_key=trade_order_key(row["decision_id"], self.namespace, row["stop_cid"]),
            )
            self.portfolio.remember(t)

    # -- when the executor starts (the venue) ------
    async def start(self) -> None:
        """Filters and equity from where the settings and the venue say, then the broker, then a reconciliation."""
        caps = self.broker.capabilities
        router = self.router
        if router.filters is None:
            if self.cfg.exchange_info_file:
                router.filters = parse_exchange_info(load_exchange_info_file(self.cfg.exchange_info_file))
                router.filters_source = self.cfg.exchange_info_file
            elif caps.provides_exchange_info:
                router.filters = parse_exchange_info(await self.broker.fetch_exchange_info())
                router.filters_source = "exchange"
        await self.broker.start()
        router.leverage_brackets = await self.broker.leverage_brackets()
        if caps.reports_equity:  # wallet, unrealized PnL and available balance: sizing starts from all three
            self.portfolio.on_account(await self.broker.account_snapshot())
        if caps.positions_outlive_run:
            # Brackets that filled while the runner was down close their trades before anything is compared.
            open_trades = {t.key: t.symbol for t in self.portfolio.open_trades() if t.status == "open"}
            await self.broker.recover_missed_fills(open_trades)
            await self.reconcile()

    def seed_day(self, ts: int) -> None:
        """Once per run (its first close, or its first health report with a position open): today's realized PnL from
        earlier runs, so a restart keeps the day's loss."""
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
        b = self.risk.breakers
        b.seed(losses_in_a_row=b.losses_in_a_row, day=day, day_start_equity=self.portfolio.equity - pnl, day_pnl=pnl)

    # -- reconciliation ------
    async def reconcile(self) -> list[Discrepancy]:
        """Journal versus venue; any mismatch halts new entries and alerts."""
        expected = [
            Expected(t.decision_id, t.symbol, t.sign * t.qty, t.stop_cid, t.tp_cid, confirmed=t.status == "open")
            for t in self.portfolio.open_trades()
        ]
        try:
            snap = await self.broker.snapshot()
        except Exception as e:
            self.router.on_broker_error("reconcile", f"snapshot failed: {e}", None)
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
            self.risk.trip(Trip("reconcile", "; ".join(map(str, found[:5])), self.router.now_ms or None), force=True)
        return found

    def on_reconnect(self) -> None:
        """The venue's private stream came back: read the account again (what changed while the stream was away:
        deposits, hand-made positions' margin) and reconcile, on a task of our own (the caller must not wait)."""
        task = asyncio.get_running_loop().create_task(self._after_reconnect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_reconnect(self) -> list[Discrepancy]:
        if self.broker.capabilities.reports_equity:
            try:
                self.portfolio.on_account(await self.broker.account_snapshot(), at_start=False)
            except BrokerError as e:
                self.router.on_broker_error("account", f"account snapshot after a reconnect failed: {e}", None)
        return await self.reconcile()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
