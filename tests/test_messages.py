"""The plain texts of the typed notices, byte for byte as operators read them before notices were typed."""

from __future__ import annotations

from tests.factories import T0, candidate
from ultra_signals.core.decision import Decision
from ultra_signals.core.notices import (
    BreakerTrip,
    CounterEvent,
    DailySummary,
    Notice,
    PlainText,
    RunStarted,
    RunStopped,
    SignalCard,
)
from ultra_signals.transport.messages import plain_text, signal_card


def test_run_start_and_stop() -> None:
    p = RunStarted("shadow", "r1", "sim", True, ("BTCUSDT", "ETHUSDT"), "memory", "memory")
    assert Notice(p).kind == "start"
    assert plain_text(p) == (
        "SHADOW | run r1 started | source sim SIMULATED | symbols BTCUSDT,ETHUSDT | counters memory (on_failure=memory)"
    )
    assert plain_text(RunStarted("live", "r2", "binance", False, ("BTCUSDT",), "redis", "block")) == (
        "LIVE | run r2 started | source binance | symbols BTCUSDT | counters redis (on_failure=block)"
    )
    stop = RunStopped("canary", "r1", "interrupted", 3, 40)
    assert Notice(stop).kind == "stop"
    assert plain_text(stop) == "CANARY | run r1 interrupted | allowed 3 | blocked 40"


def test_breaker_trips_enforced_and_what_if() -> None:
    enforced = BreakerTrip("canary", "daily_loss", "day loss 32.00 USDT ≥ 3% of 1000.00", "HALTED")
    assert Notice(enforced).kind == "breaker"
    assert plain_text(enforced) == (
        "CANARY | BREAKER daily_loss | trading HALTED | day loss 32.00 USDT ≥ 3% of 1000.00"
        " | resume: ultra-signals resume (or /resume)"
    )
    assert plain_text(BreakerTrip("shadow", "latency_p95", "p95 900 ms", None)) == (
        "SHADOW | what-if BREAKER latency_p95 would trip | p95 900 ms"
    )


def test_counter_events() -> None:
    start = CounterEvent("shadow", "start", "counter backend: redis at 127.0.0.1:6379")
    assert Notice(start).kind == "start"
    assert plain_text(start) == "SHADOW | counter backend: redis at 127.0.0.1:6379"
    fb = CounterEvent("live", "fallback", "redis -> memory")
    assert Notice(fb).kind == "fallback" and plain_text(fb) == "LIVE | redis -> memory"


def test_daily_summary_orders_symbols_by_name_and_reasons_by_count() -> None:
    p = DailySummary(
        "shadow", "2026-01-05", False, {"ETHUSDT": 1, "BTCUSDT": 2}, {"cooldown": 3, "low_adx": 33, "daily_cap": 3}
    )
    assert Notice(p).kind == "daily_summary"
    assert plain_text(p) == (
        "SHADOW | daily summary 2026-01-05 | allowed 3 (BTCUSDT 2, ETHUSDT 1)"
        " | blocked 39 (low_adx 33, cooldown 3, daily_cap 3)"
    )
    empty = DailySummary("live", "2026-01-06", True, {}, {"paused": 2}, simulated=True)
    assert plain_text(empty) == (
        "LIVE | daily summary 2026-01-06 (so far) | allowed 0 (none) | blocked 2 (paused 2) | SIMULATED"
    )


def test_signal_card_and_plain_text() -> None:
    d = Decision("r1", candidate(open_time=T0), True, None)
    n = Notice.signal(d, "shadow", simulated=True)
    assert n.kind == "signal" and n.chat_key == d.id and n.payload == SignalCard(d, "shadow", True)
    text = plain_text(n.payload)
    assert text == signal_card(d, "shadow", True) and text.endswith("| sniper:allowed | SIMULATED")
    assert plain_text(Notice.plain("info", "hello").payload) == "hello" and Notice(PlainText("x", "y")).kind == "x"
