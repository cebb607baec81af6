"""The order router: refusals in order with their reasons, the plan the broker gets, the broker's news back."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from tests.factories import MIN, T0, bar_decision, paper_broker, replay_settings
from tests.helpers import RecordingNotifier
from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.events import BookTicker, Trade
from ultra_signals.core.instruments import SymbolFilters
from ultra_signals.execution.breakers import RunnerHealth, TradingState, load_state
from ultra_signals.execution.brokers.base import EntryPlan, OrderKind, client_order_id
from ultra_signals.execution.executor import TradingExecutor
from ultra_signals.execution.liquidation import Bracket
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


# -- risk the account can survive: portfolio limits, unrealized PnL, leverage-bracket caps ---------------------------


def candidate_decision(n: int, symbol: str, side: Side, entry: float, stop: float, target: float) -> Decision:
    c = Candidate(symbol=symbol, timeframe="5m", bar_open_time=T0 + n * 5 * MIN, ts=T0 + (n + 1) * 5 * MIN, side=side,
                  score=0.6, confidence=0.8, entry=entry, stop=stop, targets=(target,))  # fmt: skip
    return Decision("r", c, True, None)


def refused_count(m: Metrics, reason: str) -> float:
    return m.registry.get_sample_value("entries_refused_total", {"reason": reason}) or 0.0


def test_a_portfolio_limit_refuses_the_next_entry_with_its_reason_journaled_and_counted(tmp_path: Path) -> None:
    m = Metrics()
    s = replay_settings(
        tmp_path / "j.db",
        **{
            "execution.throttles.max_open_positions": 5,
            "execution.portfolio.max_total_notional_usdt": 10_000.0,
            "execution.portfolio.max_same_direction_notional_usdt": 10_000.0,
            "execution.portfolio.max_same_direction_positions": 1,
        },
    )
    ex = executor(s, metrics=m)
    ex.on_signal(candidate_decision(0, "BTCUSDT", Side.LONG, 60_000.0, 59_700.0, 60_300.0))  # pending, not filled
    second = candidate_decision(1, "ETHUSDT", Side.LONG, 3_000.0, 2_985.0, 3_015.0)
    ex.on_signal(second)  # a second long while the first is still pending: counted at its planned size
    ex.on_signal(candidate_decision(2, "SOLUSDT", Side.SHORT, 150.0, 151.0, 149.0))  # the other side is free
    assert refusals(ex) == ["portfolio_same_direction"]
    (row,) = [o for o in ExecStore(ex.journal.engine).orders("r") if o["status"] == "refused"]
    assert row["decision_id"] == second.id and "BTCUSDT" in row["detail"] and "max 1" in row["detail"]
    assert refused_count(m, "portfolio_same_direction") == 1.0
    assert {t.symbol for t in ex.trades.values()} == {"BTCUSDT", "SOLUSDT"}
    ex.journal.close()


def test_total_notional_limit_refuses_across_symbols(tmp_path: Path) -> None:
    m = Metrics()
    s = replay_settings(
        tmp_path / "j.db",
        **{
            "execution.throttles.max_open_positions": 5,
            "execution.portfolio.max_total_notional_usdt": 900.0,
            "execution.portfolio.max_same_direction_positions": 5,
        },
    )
    ex = executor(s, metrics=m)
    ex.on_signal(candidate_decision(0, "BTCUSDT", Side.LONG, 60_000.0, 59_700.0, 60_300.0))  # 500 USDT (canary cap)
    ex.on_market_event(Trade("BTCUSDT", T0 + 5 * MIN + 10, 60_000.0, 0.1, False))  # filled
    ex.on_signal(candidate_decision(1, "ETHUSDT", Side.SHORT, 3_000.0, 3_015.0, 2_985.0))  # 500 more: 1000 > 900
    assert refusals(ex) == ["portfolio_total_notional"] and refused_count(m, "portfolio_total_notional") == 1.0
    ex.journal.close()


def test_the_days_loss_with_an_open_positions_unrealized_pnl_halts_and_refuses_the_next_entry(tmp_path: Path) -> None:
    m = Metrics()
    s = replay_settings(
        tmp_path / "j.db",
        **{
            "execution.paper_equity_usdt": 1_000.0,
            "execution.risk_fraction": 0.05,
            "execution.throttles.max_open_positions": 5,
            "execution.portfolio.max_total_notional_usdt": 10_000.0,
        },
    )  # canary: daily_loss_pct 1.0, so 10 USDT
    ex = executor(s, metrics=m)
    d = candidate_decision(0, "BTCUSDT", Side.LONG, 60_000.0, 50_000.0, 61_000.0)  # a stop far away
    ex.on_signal(d)
    ts = d.candidate.ts
    ex.on_market_event(Trade("BTCUSDT", ts + 10, 60_000.0, 0.1, False))
    t = ex.trades[d.id]
    assert t.status == "open" and t.qty == pytest.approx(0.005)  # 50 USDT at risk over 10 000
    ex.on_market_event(BookTicker("BTCUSDT", ts + 20, 56_999.0, 1.0, 57_001.0, 1.0))  # mid 57 000: -15 USDT open
    assert t.status == "open"  # nothing closed: the realized loss of the day is 0
    ex.on_signal(candidate_decision(1, "ETHUSDT", Side.SHORT, 3_000.0, 3_015.0, 2_985.0))
    assert refusals(ex) == ["daily_loss"] and refused_count(m, "daily_loss") == 1.0
    assert load_state(ex.journal).state is TradingState.HALTED and load_state(ex.journal).breaker == "daily_loss"
    (trip,) = ExecStore(ex.journal.engine).events(kind="trip")
    assert "(realized 0.00, unrealized 15.0" in trip["detail"]  # 15 and the paper entry's slippage
    ex.journal.close()


def test_the_health_report_trips_the_daily_loss_on_marks_alone(tmp_path: Path) -> None:
    s = replay_settings(tmp_path / "j.db", **{"execution.paper_equity_usdt": 1_000.0, "execution.risk_fraction": 0.05})
    ex = executor(s)
    d = candidate_decision(0, "BTCUSDT", Side.LONG, 60_000.0, 50_000.0, 61_000.0)
    ex.on_signal(d)
    ts = d.candidate.ts
    ex.on_market_event(Trade("BTCUSDT", ts + 10, 60_000.0, 0.1, False))
    ex.on_market_event(BookTicker("BTCUSDT", ts + 20, 58_499.0, 1.0, 58_501.0, 1.0))  # -7.5: under the limit
    ex.on_health(RunnerHealth(ts + 30, 1.0, 0.0, "redis", "block"))
    assert ex.blocking_reason() is None
    ex.on_market_event(BookTicker("BTCUSDT", ts + 40, 57_999.0, 1.0, 58_001.0, 1.0))  # -10: the limit
    ex.on_health(RunnerHealth(ts + 50, 1.0, 0.0, "redis", "block"))
    assert ex.blocking_reason() == "trading_halted" and load_state(ex.journal).breaker == "daily_loss"
    ex.journal.close()


def test_an_entry_above_the_leverage_brackets_notional_cap_is_refused(tmp_path: Path) -> None:
    """Binance's leverage brackets cap the notional per leverage (``GET /fapi/v1/leverageBracket``): at the 5x the
    account is set to, only the brackets that allow 5x or more count; the router refuses what lies beyond."""
    ex = executor(replay_settings(tmp_path / "j.db"))
    ex.router.leverage_brackets = {
        "BTCUSDT": [Bracket(0.0, 300.0, 0.004, 0.0, 125.0), Bracket(300.0, 1e6, 0.05, 13.8, 4.0)],
    }
    ex.on_signal(candidate_decision(0, "BTCUSDT", Side.LONG, 60_000.0, 57_000.0, 61_000.0))  # 500 USDT at 5x
    assert refusals(ex) == ["leverage_bracket_cap"]
    (row,) = [o for o in ExecStore(ex.journal.engine).orders("r") if o["status"] == "refused"]
    assert "300 allowed at 5x" in row["detail"]
    ex.router.leverage_brackets = {"BTCUSDT": [Bracket(0.0, 1e6, 0.004, 0.0, 125.0)]}
    ex.on_signal(candidate_decision(1, "BTCUSDT", Side.LONG, 60_000.0, 57_000.0, 61_000.0))
    assert refusals(ex) == ["leverage_bracket_cap"]  # within the cap: the second one went out
    assert [t.symbol for t in ex.trades.values()] == ["BTCUSDT"]
    ex.journal.close()
