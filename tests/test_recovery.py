"""Recovery: what a run takes over from the journal (open trades, the day's loss) and reconciliation's failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

from tests.conftest import free_port
from tests.factories import T0, bar_decision, replay_settings
from tests.helpers import RecordingNotifier
from ultra_signals.core.events import Trade
from ultra_signals.execution.brokers.base import Broker, OrderKind, client_order_id
from ultra_signals.execution.brokers.binance import BinanceBroker
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.venues.binance.client import BinanceFuturesClient
from ultra_signals.venues.binance.endpoints import Endpoints


def unreachable_binance() -> BinanceBroker:
    """A real Binance broker whose venue does not answer (a port nobody listens on): never started here."""
    url = f"127.0.0.1:{free_port()}"
    client = BinanceFuturesClient(
        Endpoints(f"http://{url}", f"ws://{url}"), api_key=SecretStr("k"), api_secret=SecretStr("s"), timeout_s=1
    )
    return BinanceBroker(client)


def open_trade_row(store: ExecStore, broker: str, did: str) -> None:
    store.open_trade(
        {
            "decision_id": did, "run_id": "earlier", "namespace": "ns", "broker": broker, "symbol": "BTCUSDT",
            "side": "LONG", "status": "open", "qty": 0.008, "entry_qty": 0.008, "entry_price": 60_000.0,
            "arrival_price": 60_000.0, "stop": 59_700.0, "take_profit": 60_300.0,
            "stop_cid": client_order_id(did, OrderKind.STOP), "tp_cid": client_order_id(did, OrderKind.TAKE_PROFIT),
            "fees": 0.2, "funding": 0.0, "gross_pnl": 0.0, "opened_ts": T0,
        }
    )  # fmt: skip


def test_open_trades_are_recovered_only_from_a_venue_whose_positions_outlive_the_run(tmp_path: Path) -> None:
    s = replay_settings(tmp_path / "j.db")
    journal = Journal(s.journal.url)
    store = ExecStore(journal.engine)
    open_trade_row(store, "binance", "earlier:BTCUSDT:5m:1")
    open_trade_row(store, "paper", "earlier:BTCUSDT:5m:2")
    brokers: list[Broker] = [unreachable_binance()]
    live = TradingExecutor(s, broker=brokers[0], journal=journal, notifier=RecordingNotifier(), run_id="now",
                           namespace="ns")  # fmt: skip
    assert list(live.trades) == ["earlier:BTCUSDT:5m:1"] and live.trades["earlier:BTCUSDT:5m:1"].qty == 0.008
    live.on_signal(bar_decision("now", 3, targets=(60_300.0,)))  # the recovered trade holds the symbol
    assert live.summary()["refused"] == {"position_open": 1}
    asyncio.run(live.aclose())
    row = store.trade("earlier:BTCUSDT:5m:1")
    assert row is not None and row["status"] == "open"  # a real position does not end with the run
    paper = make_executor(s, None, journal, RecordingNotifier(), "now2", namespace="ns")
    assert isinstance(paper, TradingExecutor) and paper.trades == {}  # what-if positions died with their run
    journal.close()


def test_a_restart_keeps_the_days_loss_for_the_daily_loss_breaker(tmp_path: Path) -> None:
    # 0.05 % of 10 000 = 5 USDT; one stop-out at the canary's 500 USDT cap loses about 3.
    s = replay_settings(
        tmp_path / "j.db", **{"execution.breakers.daily_loss_pct": 0.05, "execution.breakers.consecutive_losses": 9}
    )
    journal = Journal(s.journal.url)

    def lose(ex: TradingExecutor, run_id: str, n: int) -> float:
        d = bar_decision(run_id, n, targets=(60_300.0,))
        ex.on_signal(d)
        ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 100, 60_000.0, 0.1, False))
        ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 200, 59_650.0, 0.1, True))
        pnl = ex.trades[d.id].pnl
        assert pnl is not None and -5.0 < pnl < 0
        return pnl

    first = make_executor(s, None, journal, RecordingNotifier(), "run-1", namespace="ns")
    assert isinstance(first, TradingExecutor)
    lose(first, "run-1", 0)
    assert first.blocking_reason() is None
    asyncio.run(first.aclose())
    second = make_executor(s, None, journal, RecordingNotifier(), "run-2", namespace="ns")
    assert isinstance(second, TradingExecutor)
    lose(second, "run-2", 3)
    assert second.blocking_reason() == "trading_halted"
    (trip,) = ExecStore(journal.engine).events(kind="trip")
    assert trip["name"] == "daily_loss"
    journal.close()


def test_a_reconciliation_that_cannot_reach_the_venue_is_an_order_error_not_an_agreement(tmp_path: Path) -> None:
    s = replay_settings(tmp_path / "j.db")
    journal = Journal(s.journal.url)
    ex = TradingExecutor(s, broker=unreachable_binance(), journal=journal, notifier=RecordingNotifier(), run_id="r")
    assert asyncio.run(ex.reconcile()) == []
    assert ex.reconciliations == []  # nothing was compared
    (err,) = ExecStore(journal.engine).events(kind="order_error")
    assert err["name"] == "reconcile" and "snapshot failed" in err["detail"]
    assert ExecStore(journal.engine).events(kind="reconcile") == []
    journal.close()
