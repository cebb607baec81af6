"""The order router: refusals in order with their reasons, the plan the broker gets, the broker's news back."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from tests.factories import T0, bar_decision, paper_broker, replay_settings
from tests.helpers import RecordingNotifier
from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Decision
from ultra_signals.core.events import BookTicker, Trade
from ultra_signals.core.instruments import SymbolFilters
from ultra_signals.execution.breakers import TradingState, load_state
from ultra_signals.execution.brokers.base import EntryPlan, OrderKind, client_order_id
from ultra_signals.execution.executor import TradingExecutor
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics


def executor(
    s: Settings, filters: dict[str, SymbolFilters] | None = None, metrics: Metrics | None = None
) -> TradingExecutor:
    return TradingExecutor(
        s,
        broker=paper_broker(s),
        journal=Journal(s.journal.url),
        notifier=RecordingNotifier(),
        run_id="r",
        filters=filters,
        metrics=metrics,
    )


def decision(n: int, symbol: str = "BTCUSDT", targets: tuple[float, ...] = (60_300.0,)) -> Decision:
    return bar_decision("r", n, symbol=symbol, targets=targets)


def btc_filters() -> dict[str, SymbolFilters]:
    f = replace(SymbolFilters.unfiltered("BTCUSDT"), tick_size=Decimal("0.10"), step_size=Decimal("0.001"))
    return {"BTCUSDT": replace(f, market_step_size=Decimal("0.001"))}


def refusals(ex: TradingExecutor) -> list[str | None]:
    return [o["reason"] for o in ExecStore(ex.journal.engine).orders("r") if o["status"] == "refused"]


def test_refusals_name_their_reason(tmp_path: Path) -> None:
    ex = executor(replay_settings(tmp_path / "j.db"), filters=btc_filters())
    ex.on_signal(decision(0, symbol="DOGEUSDT"))  # not in exchangeInfo
    ex.on_signal(decision(1, targets=()))  # nothing to aim at
    ex.on_signal(decision(2))  # goes out
    ex.on_signal(decision(3))  # the symbol is taken
    assert refusals(ex) == ["unknown_symbol", "no_target", "position_open"]
    assert ex.summary()["refused"] == {"unknown_symbol": 1, "no_target": 1, "position_open": 1}
    plan_row = ExecStore(ex.journal.engine).trade(decision(2).id)
    assert plan_row is not None and plan_row["status"] == "pending"  # journaled before the broker saw it
    ex.journal.close()


def test_maker_first_rests_post_only_at_the_touch_rounded_to_the_tick(tmp_path: Path) -> None:
    ex = executor(replay_settings(tmp_path / "j.db", **{"execution.maker_first": True}), filters=btc_filters())
    d = decision(0)
    ex.on_market_event(BookTicker("BTCUSDT", d.candidate.ts - 1, 59_990.07, 1.0, 59_990.2, 1.0))
    ex.on_signal(d)
    snap = asyncio.run(ex.broker.snapshot())
    (order,) = snap.open_orders
    assert (
        order.order_type == "LIMIT"
        and order.price == 59_990.0
        and order.client_id == client_order_id(d.order_key("default"), OrderKind.ENTRY)
    )
    ex.journal.close()


def test_an_entry_that_dies_frees_the_symbol_unless_its_fallback_is_coming(tmp_path: Path) -> None:
    ex = executor(replay_settings(tmp_path / "j.db"))
    d = decision(0)
    ex.on_signal(d)
    cid = client_order_id(d.order_key("default"), OrderKind.ENTRY)
    ex.on_order_update(cid, "BTCUSDT", "EXPIRED", "post_only_timeout", d.candidate.ts + 1)  # a market retry follows
    assert ex.trades[d.id].status == "pending"
    ex.on_order_update(cid, "BTCUSDT", "REJECTED", "margin", d.candidate.ts + 2)
    assert ex.trades[d.id].status == "cancelled"
    ex.on_signal(decision(3))  # the symbol is free again
    assert refusals(ex) == []
    ex.journal.close()


def test_a_rejected_bracket_on_an_open_position_halts_and_closes_it(tmp_path: Path) -> None:
    ex = executor(replay_settings(tmp_path / "j.db"))
    d = decision(0)
    ex.on_signal(d)
    ts = d.candidate.ts
    ex.on_market_event(Trade("BTCUSDT", ts + 10, 60_000.0, 0.1, False))
    assert ex.trades[d.id].status == "open"
    ex.on_order_update(client_order_id(d.order_key("default"), OrderKind.STOP), "BTCUSDT", "REJECTED", "-2021", ts + 20)
    assert load_state(ex.journal).state is TradingState.HALTED and ex.blocking_reason() == "trading_halted"
    ex.on_market_event(Trade("BTCUSDT", ts + 30, 60_010.0, 0.1, False))
    assert ex.trades[d.id].status == "closed" and ex.trades[d.id].exit_kind == "exit"
    ex.journal.close()


def test_broker_errors_are_journaled_at_market_time_and_count_toward_the_breaker(tmp_path: Path) -> None:
    ex = executor(replay_settings(tmp_path / "j.db"))
    ex.on_market_event(Trade("BTCUSDT", T0 + 5, 60_000.0, 0.1, False))
    ex.on_broker_error("order", "HTTP 400 -2019", None)  # no venue time: the latest market time
    ex.on_broker_error("order", "HTTP 400 -2019", T0 + 9)
    events = ExecStore(ex.journal.engine).events(kind="order_error")
    assert [e["ts"] for e in events] == [T0 + 5, T0 + 9]
    assert ex.blocking_reason() == "trading_halted"  # canary: two errors within five minutes
    ex.journal.close()


def ack_latency(m: Metrics) -> tuple[float, float]:
    """(count, sum in ms) of ``latency_decision_to_ack_ms``."""
    count = m.registry.get_sample_value("latency_decision_to_ack_ms_count")
    total = m.registry.get_sample_value("latency_decision_to_ack_ms_sum")
    assert count is not None and total is not None
    return count, total


def test_decision_to_ack_is_timed_on_the_wall_clock_from_the_decision_to_the_entry_ack(tmp_path: Path) -> None:
    m = Metrics()
    ex = executor(replay_settings(tmp_path / "j.db"), metrics=m)
    readings = iter([100.0, 100.25])  # decision reaches the router, then the paper broker's NEW comes back
    ex.router.wall_clock = lambda: next(readings)
    d = decision(0)
    ex.on_signal(d)  # market entry: the paper broker acknowledges (NEW) inside submit
    assert ack_latency(m) == (1.0, 250.0)
    ts = d.candidate.ts
    ex.on_market_event(Trade("BTCUSDT", ts + 10, 60_000.0, 0.1, False))  # fills: FILLED is not a second ack
    assert ex.trades[d.id].status == "open"
    assert ack_latency(m) == (1.0, 250.0)
    ex.journal.close()


def test_decision_to_ack_uses_the_real_monotonic_clock_by_default(tmp_path: Path) -> None:
    m = Metrics()
    ex = executor(replay_settings(tmp_path / "j.db"), metrics=m)
    ex.on_signal(decision(0))
    count, total = ack_latency(m)
    assert count == 1.0 and total >= 0.0
    ex.journal.close()


def test_a_refused_or_rejected_entry_is_not_an_ack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics()
    ex = executor(replay_settings(tmp_path / "j.db"), filters=btc_filters(), metrics=m)
    ex.on_signal(decision(0, symbol="DOGEUSDT"))  # refused before the broker: nothing to time
    assert ack_latency(m) == (0.0, 0.0)
    sent: list[EntryPlan] = []
    monkeypatch.setattr(ex.broker, "submit", sent.append)  # a venue that answers later, as Binance's stream does
    d = decision(1)
    ex.on_signal(d)
    assert len(sent) == 1 and ack_latency(m) == (0.0, 0.0)  # sent, not yet acknowledged
    cid = client_order_id(d.id, OrderKind.ENTRY)
    ex.on_order_update(cid, "BTCUSDT", "REJECTED", "-2019", d.candidate.ts + 1)  # the first answer: a refusal
    ex.on_order_update(cid, "BTCUSDT", "NEW", None, d.candidate.ts + 2)  # anything later is not the first ack
    ex.on_order_update(client_order_id("x", OrderKind.ENTRY), "BTCUSDT", "NEW", None, d.candidate.ts + 3)
    assert ack_latency(m) == (0.0, 0.0)
    ex.journal.close()
