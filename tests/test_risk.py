"""The risk engine: the trading state in memory, trips that move it (persisted, alerted), restart, resume, kill.

Through the executor (the façade the runner uses) with the paper broker: the state a breaker sets survives a
restart, only an operator clears it, a kill from another process flattens what only this process holds, and the
decision path (``blocking_reason``) answers from memory without a single SQL statement.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import event

from tests.factories import T0, bar_decision, replay_settings
from tests.helpers import RecordingNotifier
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.events import Trade
from ultra_signals.execution.breakers import (
    RunnerHealth,
    StateRecord,
    TradingState,
    Trip,
    describe_state,
    load_state,
    resume_trading,
    save_state,
)
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.execution.risk import RiskEngine
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.transport.messages import plain_text
from ultra_signals.transport.notifier import ConsoleNotifier


def canary_settings(tmp_path: Path) -> Settings:
    # Replayed data: the paper broker, whatever execution.broker says.
    return replay_settings(tmp_path / "journal.db")


def lose_one(ex: TradingExecutor, run_id: str, n: int) -> None:
    d = bar_decision(run_id, n)
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
    ex.on_signal(bar_decision("run-a", 6))
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
    settings = replay_settings(tmp_path / "j.db", "production-phase3")
    assert settings.execution.breakers.action == "reducing"
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, RecordingNotifier(), "run-r")
    assert isinstance(ex, TradingExecutor)
    d = bar_decision("run-r", 0)
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
    settings = canary_settings(tmp_path)
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, RecordingNotifier(), "run-k")
    assert isinstance(ex, TradingExecutor)
    d = bar_decision("run-k", 0)
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


def test_blocking_reason_answers_from_memory_without_sql(tmp_path: Path) -> None:
    """The pipeline asks on every candidate: no SQL; another process's halt arrives with the health report."""
    settings = canary_settings(tmp_path)
    journal = Journal(settings.journal.url)
    ex = make_executor(settings, None, journal, RecordingNotifier(), "run-m")
    assert isinstance(ex, TradingExecutor)
    other = Journal(settings.journal.url)  # an operator's CLI, another process's connection
    save_state(other, StateRecord(TradingState.HALTED, "operator", "halted by hand", None, 1.0, "operator"))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(journal.engine, "before_cursor_execute", count)
    time.sleep(0.6)  # longer than the 0.5 s re-read the decision path used to do: a poll there would show here
    answers = {ex.blocking_reason() for _ in range(1_000)}
    assert answers == {None} and statements == []  # memory only: the halt is not seen on the decision path
    ex.on_health(RunnerHealth(T0, 1.0, 1.0, "redis", "block"))  # the runner's periodic report syncs the state
    assert statements  # ... which is where the journal is read
    statements.clear()
    assert ex.blocking_reason() == "trading_halted" and statements == []
    event.remove(journal.engine, "before_cursor_execute", count)
    other.close()
    journal.close()


def test_a_trip_is_persisted_at_once_and_repeated_trips_are_not_realerted(tmp_path: Path) -> None:
    settings = canary_settings(tmp_path)
    journal = Journal(settings.journal.url)
    notifier = RecordingNotifier()
    store = ExecStore(journal.engine)
    risk = RiskEngine(
        settings.execution, journal=journal, store=store, notifier=notifier, run_id="r", mode="canary", enforce=True
    )
    assert risk.blocking_reason() is None and risk.entry_refusal() is None
    risk.trip(Trip("order_errors", "2 order errors within 300 s", T0))
    assert load_state(journal).state is TradingState.HALTED  # written the moment it changed
    assert risk.entry_refusal() == ("trading_halted", "trading is HALTED")
    risk.trip(Trip("latency_p95", "slow", T0 + 1))  # already halted: journaled, not alerted again
    assert [n.kind for n in notifier.notices] == ["breaker"] and risk.trips == ["order_errors"]
    assert [e["name"] for e in store.events(kind="trip")] == ["order_errors", "latency_p95"]
    assert risk.sync() is None  # nothing new in the journal
    resume_trading(journal, by="test")
    risk.breakers.losses_in_a_row = 5
    change = risk.sync()
    assert change is not None and change.was is TradingState.HALTED and not change.killed
    assert risk.blocking_reason() is None and risk.breakers.losses_in_a_row == 0  # the streak starts over
    journal.close()


@pytest.mark.parametrize(("action", "reason"), [("halted", "trading_halted"), ("reducing", "trading_reducing")])
def test_breaker_action_sets_the_target_state_but_reconcile_always_halts(
    tmp_path: Path, action: str, reason: str
) -> None:
    settings = load_settings(
        "canary",
        overrides={"journal.url": f"sqlite:///{tmp_path}/j.db", "execution.breakers.action": action},
        environ={},
    )
    journal = Journal(settings.journal.url)
    risk = RiskEngine(
        settings.execution,
        journal=journal,
        store=ExecStore(journal.engine),
        notifier=RecordingNotifier(),
        run_id="r",
        mode="canary",
        enforce=True,
    )
    risk.on_health(RunnerHealth(T0, 1.0, 999.0, "redis", "block"))
    assert risk.blocking_reason() == reason
    risk.trip(Trip("reconcile", "unknown_position ETHUSDT", T0), force=True)
    assert risk.blocking_reason() == "trading_halted"
    journal.close()
