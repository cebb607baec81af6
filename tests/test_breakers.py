"""Breakers: the pure rules, and the trading state through the executor (trip, alert, restart, resume)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import RecordingNotifier
from ultra_signals.core.config import BreakerSettings, Settings, load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.events import Trade
from ultra_signals.execution.breakers import (
    STATE_KEY,
    Breakers,
    RunnerHealth,
    TradingState,
    describe_state,
    load_state,
    resume_trading,
)
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.transport.messages import plain_text
from ultra_signals.transport.notifier import ConsoleNotifier

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


# -- through the executor -------------------------------------------------------------------------------------
def canary_settings(tmp_path: Path) -> Settings:
    return load_settings(
        "canary",
        overrides={
            "runtime.source": "replay",  # replayed data: the paper broker, whatever execution.broker says
            "journal.url": f"sqlite:///{tmp_path}/journal.db",
            "execution.latency_ms": 0,
        },
        environ={},
    )


def decision(run_id: str, n: int, price: float = 60_000.0) -> Decision:
    c = Candidate(
        symbol="BTCUSDT",
        timeframe="5m",
        bar_open_time=T0 + n * 5 * MIN,
        ts=T0 + (n + 1) * 5 * MIN,
        side=Side.LONG,
        score=0.6,
        confidence=0.8,
        entry=price,
        stop=price - 300.0,
        targets=(price + 300.0, price + 600.0),
    )
    return Decision(run_id, c, True, None)


def lose_one(ex: TradingExecutor, run_id: str, n: int) -> None:
    d = decision(run_id, n)
    ex.on_signal(d)
    ts = d.candidate.ts
    ex.on_market_event(Trade("BTCUSDT", ts + 100, 60_000.0, 0.1, False))  # entry fills
    ex.on_market_event(Trade("BTCUSDT", ts + 200, 59_650.0, 0.1, True))  # through the stop


def test_losing_streak_halts_alerts_survives_restart_and_resume_clears(tmp_path: Path) -> None:
    settings = canary_settings(tmp_path)
    assert settings.execution.breakers.consecutive_losses == 2
    journal = Journal(settings.journal.url)
    notifier = RecordingNotifier()
    metrics = Metrics()
    ex = make_executor(settings, metrics, journal, notifier, "run-a")
    assert isinstance(ex, TradingExecutor) and ex.broker.name == "paper"
    asyncio.run(ex.start())
    assert ex.blocking_reason() is None
    lose_one(ex, "run-a", 0)
    assert ex.blocking_reason() is None and notifier.notices == []
    lose_one(ex, "run-a", 3)
    # Tripped: HALTED, persisted, alerted, counted.
    assert ex.blocking_reason() == "trading_halted"
    assert load_state(journal).state is TradingState.HALTED
    (notice,) = notifier.notices
    assert (
        notice.kind == "breaker"
        and "consecutive_losses" in plain_text(notice.payload)
        and "CANARY" in plain_text(notice.payload)
    )
    assert metrics.registry.get_sample_value("trading_state") == 2
    assert metrics.registry.get_sample_value("breaker_trips_total", {"breaker": "consecutive_losses"}) == 1
    # HALTED blocks the next signal even if a caller forgot to ask first.
    ex.on_signal(decision("run-a", 6))
    assert ex.summary()["refused"] == {"trading_halted": 1}
    trades = ExecStore(journal.engine).trades("run-a")
    assert [t["status"] for t in trades] == ["closed", "closed"] and all(t["pnl"] < 0 for t in trades)
    asyncio.run(ex.aclose())

    # A restart over the same journal comes back HALTED.
    ex2 = make_executor(settings, Metrics(), journal, RecordingNotifier(), "run-b")
    asyncio.run(ex2.start())
    assert ex2.blocking_reason() == "trading_halted"
    assert "consecutive_losses" in describe_state(journal)

    # Only the operator resumes; the running executor sees it, and the streak starts over.
    msg = resume_trading(journal)
    assert "resumed" in msg and "HALTED" in msg and "consecutive_losses" in msg
    assert isinstance(ex2, TradingExecutor)
    ex2.refresh_state()
    assert ex2.blocking_reason() is None
    assert resume_trading(journal).startswith("trading is already ACTIVE")
    lose_one(ex2, "run-b", 10)
    assert ex2.blocking_reason() is None  # one loss after the resume is not a streak of two
    asyncio.run(ex2.aclose())

    # A fresh process after the resume rebuilds the streak from trades closed after the resume only.
    ex3 = make_executor(settings, Metrics(), journal, RecordingNotifier(), "run-c")
    assert isinstance(ex3, TradingExecutor) and ex3.breakers.losses_in_a_row == 1
    journal.close()


def test_breaker_alert_through_the_console_notifier(tmp_path: Path) -> None:
    settings = canary_settings(tmp_path)
    journal = Journal(settings.journal.url)
    console = Console(record=True, width=200)
    ex = make_executor(settings, None, journal, ConsoleNotifier(console), "run-x")
    assert isinstance(ex, TradingExecutor)
    ex.on_health(RunnerHealth(T0, 2_000.0, 1.0, "redis", "block"))
    assert ex.blocking_reason() == "trading_halted"
    assert "BREAKER latency_p95" in console.export_text()
    journal.close()


def test_reducing_action_blocks_entries_but_keeps_brackets(tmp_path: Path) -> None:
    settings = load_settings(
        "production-phase3",
        overrides={"runtime.source": "replay", "journal.url": f"sqlite:///{tmp_path}/j.db", "execution.latency_ms": 0},
        environ={},
    )
    assert settings.execution.breakers.action == "reducing"
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, RecordingNotifier(), "run-r")
    assert isinstance(ex, TradingExecutor)
    d = decision("run-r", 0)
    ex.on_signal(d)
    ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 10, 60_000.0, 0.1, False))
    ex.on_health(RunnerHealth(d.candidate.ts + 20, 1.0, 500.0, "redis", "block"))
    assert ex.blocking_reason() == "trading_reducing"
    snap = asyncio.run(ex.broker.snapshot())
    assert len(snap.positions) == 1 and len(snap.open_orders) == 2  # exits stay armed
    ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 30, 60_400.0, 0.1, False))  # take-profit
    assert ex.summary()["per_decision"][d.id]["exit_kind"] == "tp"
    journal.close()


@pytest.mark.parametrize("action", ["halted"])
def test_kill_state_from_another_process_flattens_paper(tmp_path: Path, action: str) -> None:
    from ultra_signals.execution.breakers import StateRecord, save_state

    settings = canary_settings(tmp_path)
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, RecordingNotifier(), "run-k")
    assert isinstance(ex, TradingExecutor)
    d = decision("run-k", 0)
    ex.on_signal(d)
    ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 10, 60_000.0, 0.1, False))
    save_state(journal, StateRecord(TradingState.HALTED, "kill_switch", "operator kill", None, 1.0, "kill"))
    ex.refresh_state()
    ex.on_market_event(Trade("BTCUSDT", d.candidate.ts + 20, 60_010.0, 0.1, False))
    snap = asyncio.run(ex.broker.snapshot())
    assert snap.positions == [] and snap.open_orders == [] and ex.blocking_reason() == "trading_halted"
    journal.close()


def test_shadow_breakers_are_what_if_and_never_halt(tmp_path: Path) -> None:
    settings = load_settings(
        "shadow",
        overrides={
            "journal.url": f"sqlite:///{tmp_path}/j.db",
            "execution.latency_ms": 0,
            "execution.breakers.consecutive_losses": 1,
        },
        environ={},
    )
    journal = Journal(settings.journal.url)
    notifier = RecordingNotifier()
    ex = make_executor(settings, None, journal, notifier, "shadow-run")
    assert isinstance(ex, TradingExecutor)
    lose_one(ex, "shadow-run", 0)
    lose_one(ex, "shadow-run", 3)
    assert ex.blocking_reason() is None and load_state(journal).state is TradingState.ACTIVE
    assert [plain_text(n.payload) for n in notifier.notices] == [
        "SHADOW | what-if BREAKER consecutive_losses would trip | 1 losing trades in a row"
    ]
    trips = ExecStore(journal.engine).events(kind="trip")
    assert len(trips) == 2 and all(t["detail"].startswith("what-if") for t in trips)
    journal.close()
