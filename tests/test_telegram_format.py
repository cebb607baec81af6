"""Message texts: HTML that Telegram's parser accepts, splitting at 4096 UTF-16 units, typed notices rendered."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.telegram_server import HtmlError, parse_html
from ultra_signals.control.model import SignalRow
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.notices import Notice, SignalCard
from ultra_signals.transport.messages import signal_card
from ultra_signals.transport.telegram.format import (
    MAX_MESSAGE,
    digest_text,
    escape,
    kv_text,
    notice_parts,
    render,
    signals_text,
    split_text,
    utf16_len,
)


def decision(allowed: bool = True, reason: str | None = None, symbol: str = "BTCUSDT") -> Decision:
    c = Candidate(
        symbol=symbol,
        timeframe="5m",
        bar_open_time=1_767_571_200_000,
        ts=1_767_571_500_000,
        side=Side.LONG,
        score=0.62,
        confidence=0.71,
        entry=60123.5,
        stop=59800.25,
        targets=(60450.0, 60775.5, 61100.0),
    )
    return Decision(run_id="run1", candidate=c, allowed=allowed, reason=reason)


def test_escape_covers_what_telegram_html_requires() -> None:
    assert escape("a<b & c>d") == "a&lt;b &amp; c&gt;d"
    assert parse_html(escape("1 < 2 && 3 > 2")) == "1 < 2 && 3 > 2"


def test_fake_parser_refuses_what_telegram_refuses() -> None:
    for bad in ("a < b", "AT&T", "<b>open", "<script>x</script>", "x</b>"):
        with pytest.raises(HtmlError):
            parse_html(bad)


@pytest.mark.parametrize("mode, prefix", [("shadow", "SHADOW"), ("canary", "CANARY"), ("live", "LIVE")])
def test_signal_card_renders_with_bold_prefix(mode: str, prefix: str) -> None:
    d = decision()
    n = Notice.signal(d, mode)
    assert n.kind == "signal" and n.chat_key == d.id
    [html_text] = notice_parts(n)
    assert html_text.startswith(f"<b>{prefix}</b> | BTCUSDT | LONG | ENTRY:60123.5 | SL:59800.25 | ")
    assert parse_html(html_text) == signal_card(d, mode)


def test_blocked_notice_carries_its_decision() -> None:
    d = decision(False, "hourly_cap")
    n = Notice.signal(d, "shadow")
    assert n.kind == "blocked" and isinstance(n.payload, SignalCard) and n.payload.decision is d
    [html_text] = notice_parts(n)
    assert parse_html(html_text).endswith("| sniper:blocked:hourly_cap")


def test_titled_kinds_get_a_bold_title() -> None:
    [h] = render("breaker", "daily loss <5%> & halted")
    assert h.startswith("<b>Circuit breaker</b>\n")
    assert parse_html(h) == "Circuit breaker\ndaily loss <5%> & halted"


def test_long_message_is_split_into_valid_parts() -> None:
    text = "\n".join(f"line {i}: BTCUSDT <blocked> & hourly_cap " + "x" * 50 for i in range(300))
    parts = render("daily_summary", text)
    assert len(parts) >= 5
    plains = [parse_html(p) for p in parts]
    assert all(utf16_len(p) <= MAX_MESSAGE for p in plains)
    assert all(p.endswith(f"({i}/{len(parts)})") for i, p in enumerate(plains, start=1))
    body = "".join(re.sub(r"\n\(\d+/\d+\)$", "", p) for p in plains)
    assert body == "Daily summary\n" + text


def test_empty_text_still_makes_a_sendable_message() -> None:
    assert [parse_html(p) for p in render("info", "")] == ["(empty)"]


TEXT = st.text(
    alphabet=st.sampled_from([*list("ab <>&;\n"), "é", "😀", "𝄞", "\u2028"]),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, limit=st.integers(6, 60))
def test_split_keeps_every_character_and_fits_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(p for p in parts)
    assert all(utf16_len(escape(p)) <= limit for p in parts)


@settings(max_examples=100, deadline=None)
@given(text=TEXT, kind=st.sampled_from(["signal", "breaker", "info"]))
def test_rendered_parts_parse_and_fit(text: str, kind: str) -> None:
    for part in render(kind, text * 20):
        assert utf16_len(parse_html(part)) <= MAX_MESSAGE


def test_digest_counts_by_reason_and_symbol() -> None:
    blocked = [
        decision(False, "hourly_cap"),
        decision(False, "hourly_cap", symbol="ETHUSDT"),
        decision(False, "mtf_disagree"),
    ]
    text = digest_text("shadow", blocked, 3600)
    assert text.splitlines() == [
        "SHADOW | 3 blocked in the last 60 min",
        "by reason: hourly_cap 2, mtf_disagree 1",
        "by symbol: BTCUSDT 2, ETHUSDT 1",
    ]


def test_command_texts() -> None:
    assert kv_text("Caps", {"hour": {"count": 1, "cap": 2}}) == "Caps\nhour: count=1, cap=2"
    assert signals_text([]) == "No allowed signals yet."
    c = decision().candidate
    row = SignalRow(c.ts, c.symbol, c.side.value, c.entry, c.stop, c.targets)
    assert signals_text([row]).splitlines()[1] == (
        "2026-01-05 00:05Z BTCUSDT LONG ENTRY:60123.5 SL:59800.25 TP:60450/60775.5/61100"
    )
