"""Breakers: the pure rules (trades, order errors, health) and the persisted state record."""

from __future__ import annotations

from pathlib import Path

from ultra_signals.core.config import BreakerSettings
from ultra_signals.execution.breakers import (
    STATE_KEY,
    Breakers,
    RunnerHealth,
    TradingState,
    load_state,
)
from ultra_signals.journal.writer import Journal

T0 = 1_767_571_200_000  # 2026-01-05 00:00 UTC
MIN = 60_000


def cfg(**kw: object) -> BreakerSettings:
    return BreakerSettings(**kw)  # type: ignore[arg-type]


def test_consecutive_losses_trip_and_a_win_resets_the_streak() -> None:
    b = Breakers(cfg(consecutive_losses=3))
    assert b.on_trade_closed(-1, T0, 1000) == []
    assert b.on_trade_closed(-1, T0 + 1, 999) == []
    assert b.on_trade_closed(+1, T0 + 2, 998) == []
    assert b.on_trade_closed(-1, T0 + 3, 999) == [] and b.on_trade_closed(-1, T0 + 4, 998) == []
    (trip,) = b.on_trade_closed(-1, T0 + 5, 997)
    assert trip.breaker == "consecutive_losses" and "3" in trip.detail


def test_daily_loss_uses_start_of_day_equity_and_resets_next_day() -> None:
    b = Breakers(cfg(daily_loss_pct=2.0, consecutive_losses=100))
    assert b.on_trade_closed(-15, T0 + MIN, 1000) == []
    trips = b.on_trade_closed(-5, T0 + 2 * MIN, 985)  # 20 = 2 % of 1000
    assert [t.breaker for t in trips] == ["daily_loss"]
    assert b.on_trade_closed(-15, T0 + 86_400_000, 980) == []  # a new UTC day starts from 980


def test_order_errors_within_window() -> None:
    b = Breakers(cfg(order_errors_n=3, order_errors_window_s=60))
    assert b.on_order_error(T0) == [] and b.on_order_error(T0 + 30_000) == []
    assert b.on_order_error(T0 + 61_000) == []  # the first one left the window
    assert [t.breaker for t in b.on_order_error(T0 + 62_000)] == ["order_errors"]


def test_health_breakers() -> None:
    b = Breakers(cfg(max_data_staleness_s=30, max_latency_p95_ms=500))
    ok = RunnerHealth(T0, 12.0, 3.0, "redis", "block")
    assert b.on_health(ok) == []
    bad = RunnerHealth(T0, 900.0, 45.0, "memory", "block")
    assert {t.breaker for t in b.on_health(bad)} == {"data_staleness", "latency_p95", "counter_backend_lost"}
    # Under the memory policy, running on memory counters is the plan, not a loss.
    assert b.on_health(RunnerHealth(T0, 1.0, 1.0, "memory", "memory")) == []


def test_unreadable_state_is_halted_not_active(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    j.set_state(STATE_KEY, "{not json")
    assert load_state(j).state is TradingState.HALTED
    j.close()


def test_daily_loss_counts_the_unrealized_pnl_of_open_positions() -> None:
    b = Breakers(cfg(daily_loss_pct=2.0, consecutive_losses=100))
    assert b.on_trade_closed(-12, T0 + MIN, 1000) == []  # 12 realized of a 20 limit
    assert b.on_unrealized(-7.99, 988, T0 + 2 * MIN) == []  # 19.99 in all
    (trip,) = b.on_unrealized(-8, 988, T0 + 3 * MIN)  # 20: realized 12 + unrealized 8
    assert trip.breaker == "daily_loss" and "realized 12.00, unrealized 8.00" in trip.detail
    assert b.on_unrealized(-15, 988, T0 + 4 * MIN) == []  # once a day from the marks, not on every report
    assert b.on_trade_closed(-1, T0 + 5 * MIN, 988) == []  # 13 realized: the realized rule alone is not reached
    assert b.day_pnl == -13  # the marks never touch the realized figure
    assert [t.breaker for t in b.on_trade_closed(-7, T0 + 6 * MIN, 987)] == ["daily_loss"]  # 20 realized
    # A new day starts from the wallet; yesterday's realized loss is gone, an open loss counts again.
    assert b.on_unrealized(-10, 987, T0 + 86_400_000) == []
    (again,) = b.on_unrealized(-20, 987, T0 + 86_400_000 + MIN)
    assert again.breaker == "daily_loss"


def test_unrealized_gains_offset_a_realized_loss() -> None:
    b = Breakers(cfg(daily_loss_pct=2.0, consecutive_losses=100))
    assert b.on_trade_closed(-19, T0 + MIN, 1000) == []
    assert b.on_unrealized(+5, 981, T0 + 2 * MIN) == []  # 14 net
