"""Daily summary read from a real journal."""

from __future__ import annotations

from pathlib import Path

from tests.factories import T0, candidate
from ultra_signals.core.decision import Decision
from ultra_signals.journal.writer import Journal
from ultra_signals.transport.telegram.summary import daily_stats, daily_summary_notice, day_start_ms

DAY = 86_400_000


def test_daily_summary_counts_one_utc_day_of_one_namespace(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    rows = [
        ("BTCUSDT", 0, True, None, "ns"),
        ("ETHUSDT", 600_000, True, None, "ns"),
        ("BTCUSDT", 900_000, False, "hourly_cap", "ns"),
        ("BTCUSDT", 1_200_000, False, "hourly_cap", "ns"),
        ("SOLUSDT", 1_500_000, False, "low_adx", "ns"),
        ("BTCUSDT", DAY, True, None, "ns"),  # the next day
        ("BTCUSDT", 1_800_000, True, None, "other"),  # another namespace
    ]
    for sym, off, ok, reason, ns in rows:
        j.record(Decision("r", candidate(symbol=sym, open_time=T0 + off), ok, reason), ns, simulated=False)
    j.flush()
    assert day_start_ms(T0 + 5 * 3_600_000) == T0
    s = daily_stats(j.engine, "ns", T0)
    assert (s.day, s.allowed, s.candidates) == ("2026-01-05", 2, 5)
    assert s.blocked_by_reason == {"hourly_cap": 2, "low_adx": 1}
    assert s.allowed_by_symbol == {"BTCUSDT": 1, "ETHUSDT": 1}
    n = daily_summary_notice(j.engine, "ns", "shadow", T0)
    assert n.kind == "daily_summary" and n.chat_key == "daily:ns:shadow:2026-01-05"
    assert n.text.splitlines()[1] == "signals allowed: 2 of 5 candidates"
    j.close()
