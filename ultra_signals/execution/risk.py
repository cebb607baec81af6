"""The risk engine: the trading state in memory, the breakers that move it, the gateway's throttles.

Every question asked on the decision path (may this entry go out? why not?) is answered from memory: the
pipeline's ``trading_halted`` filter calls :meth:`RiskEngine.blocking_reason` on every candidate, so it must never
touch the journal.  The state is written to the journal the moment it changes (a trip), so a restart comes back
as it went down, and :meth:`RiskEngine.sync` picks up what other processes wrote (an operator's resume, the kill
switch) when the runner's periodic health report arrives (:meth:`TradingExecutor.on_health`), off the decision
path.  NautilusTrader's ``RiskEngine`` keeps its ``trading_state`` the same way: in memory, changed by commands and
published as an event.

Shadow runs place no orders: their breakers are what-if (journaled, counted, announced once each) and never move
the state that canary and production runs obey.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from ultra_signals.core.config import ExecutionSettings
from ultra_signals.core.notices import BreakerTrip, Notice, Notifier
from ultra_signals.execution.breakers import (
    BLOCK_REASON,
    STATE_GAUGE,
    Breakers,
    RunnerHealth,
    StateJournal,
    StateRecord,
    TradingState,
    Trip,
    load_state,
    save_state,
)
from ultra_signals.execution.gateway import Exposure, GatewayVerdict, RiskGateway
from ultra_signals.journal.trading import ExecStore
from ultra_signals.observability.metrics import Metrics

__all__ = ["RiskEngine", "StateChange"]


@dataclass(frozen=True, slots=True)
class StateChange:
    """What :meth:`RiskEngine.sync` found another process had written."""

    was: TradingState
    now: StateRecord

    @property
    def killed(self) -> bool:
        """The operator's kill switch (``ultra-signals kill``) set it."""
        return self.now.by == "kill"


class RiskEngine:
    """Trading state, breakers and throttles; the only writer of ``trading_state`` inside a run."""

    def __init__(
        self,
        cfg: ExecutionSettings,
        *,
        journal: StateJournal,
        store: ExecStore,
        notifier: Notifier,
        run_id: str,
        mode: str,
        enforce: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.store = store
        self.notifier = notifier
        self.run_id = run_id
        self.mode = mode
        self.enforce = enforce
        self.metrics = metrics
        self.breakers = Breakers(cfg.breakers)
        self.gateway = RiskGateway(cfg.throttles, cfg.portfolio)
        self.state = load_state(journal)
        self.trips: list[str] = []  # breakers tripped in this run, in order (the report's "trips")
        self._what_if_trips: set[str] = set()
        self.set_state_gauge()

    # -- the decision path: memory only ------
    def blocking_reason(self) -> str | None:
        """``trading_halted`` / ``trading_reducing`` while new entries are held, else None."""
        return BLOCK_REASON.get(self.state.state)

    def entry_refusal(self) -> tuple[str, str] | None:
        """(reason, detail) when the trading state holds new entries."""
        state = self.state.state
        if state is TradingState.ACTIVE:
            return None
        return BLOCK_REASON[state], f"trading is {state.value}"

    def check_entry(
        self,
        *,
        symbol: str,
        notional: float,
        ts_ms: int,
        open_notional: Mapping[str, float],
        long: bool | None = None,
        exposure: Exposure | None = None,
    ) -> GatewayVerdict:
        """The gateway's verdict on one sized entry; with the book (``exposure``) the daily-loss breaker first
        hears the open positions' unrealized PnL, so an entry is refused (``daily_loss``) the moment the day's
        loss including what is still open reaches the limit, not one health tick later."""
        if exposure is not None:
            refused = self.loss_refusal(exposure, ts_ms)
            if refused is not None:
                return refused
        return self.gateway.check(
            symbol=symbol, notional=notional, ts_ms=ts_ms, open_notional=open_notional, long=long, exposure=exposure
        )

    def entry_sent(self, ts_ms: int) -> None:
        self.gateway.record(ts_ms)

    # -- facts in, trips out ------
    def on_trade_closed(self, pnl: float, ts_ms: int, equity_before: float) -> None:
        for trip in self.breakers.on_trade_closed(pnl, ts_ms, equity_before):
            self.trip(trip)

    def loss_refusal(self, exposure: Exposure, ts_ms: int) -> GatewayVerdict | None:
        """``daily_loss`` when the day's loss with the open positions' unrealized PnL trips the breaker now (the
        trip moves the state in canary and production; in shadow it is what-if and nothing is refused)."""
        trips = self._unrealized(exposure, ts_ms)
        if trips and self.enforce:
            return GatewayVerdict(False, trips[0].breaker, trips[0].detail)
        return None

    def on_marks(self, exposure: Exposure, ts_ms: int) -> None:
        """The runner's periodic health report: the open positions' unrealized PnL for the daily-loss breaker."""
        self._unrealized(exposure, ts_ms)

    def _unrealized(self, exposure: Exposure, ts_ms: int) -> list[Trip]:
        trips = self.breakers.on_unrealized(exposure.unrealized, exposure.equity - exposure.unrealized, ts_ms)
        for trip in trips:
            self.trip(trip)
        return trips

    def on_order_error(self, ts_ms: int) -> None:
        for trip in self.breakers.on_order_error(ts_ms):
            self.trip(trip)

    def on_health(self, h: RunnerHealth) -> None:
        for trip in self.breakers.on_health(h):
            self.trip(trip)

    def trip(self, trip: Trip, force: bool = False) -> None:
        """A breaker fired: journal it; in canary and production move the state (persisted at once) and alert.

        ``force`` halts whatever ``breakers.action`` says (reconciliation mismatches, a rejected bracket).
        """
        if not self.enforce:
            self.store.event("trip", trip.breaker, f"what-if: {trip.detail}", run_id=self.run_id, ts=trip.ts_ms)
            if trip.breaker not in self._what_if_trips:
                self._what_if_trips.add(trip.breaker)
                self.trips.append(trip.breaker)
                if self.metrics is not None:
                    self.metrics.breaker_trips.labels(breaker=trip.breaker).inc()
                self.notifier.publish(Notice(BreakerTrip(self.mode, trip.breaker, trip.detail, None)))
            return
        target = TradingState.HALTED if force or self.cfg.breakers.action == "halted" else TradingState.REDUCING
        self.store.event("trip", trip.breaker, trip.detail, run_id=self.run_id, ts=trip.ts_ms)
        if STATE_GAUGE[target] <= STATE_GAUGE[self.state.state]:
            return  # already at least this stopped: journaled, not re-alerted
        self.state = StateRecord(target, trip.breaker, trip.detail, trip.ts_ms, time.time(), "breaker")
        save_state(self.journal, self.state)
        self.trips.append(trip.breaker)
        if self.metrics is not None:
            self.metrics.breaker_trips.labels(breaker=trip.breaker).inc()
        self.set_state_gauge()
        self.notifier.publish(Notice(BreakerTrip(self.mode, trip.breaker, trip.detail, target.value)))

    # -- the state other processes write ------
    def sync(self) -> StateChange | None:
        """Read the persisted state (an operator's resume or kill from another process); the change, if any.

        Called from the runner's periodic health report, never from the decision path.  A resume to ACTIVE starts
        the breakers' streaks over.
        """
        rec = load_state(self.journal)
        if rec == self.state:
            return None
        was = self.state.state
        self.state = rec
        if rec.state is TradingState.ACTIVE and was is not TradingState.ACTIVE:
            self.breakers.reset()
        self.set_state_gauge()
        return StateChange(was, rec)

    def set_state_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.trading_state.set(STATE_GAUGE[self.state.state])
