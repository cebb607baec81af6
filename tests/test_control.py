"""The operator actions, once per action, through each adapter: the CLI (in-process) and Telegram (fake Bot API).

Both adapters call the same :class:`ultra_signals.control.Control` over the same journal; each test asserts
the journal effect (what a runner reads) and the facts of the reply, so CLI and Telegram must behave alike.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.factories import T0, candidate
from tests.fakes.telegram_server import Delivered, FakeBotApi
from tests.helpers import until
from ultra_signals.apps.cli import app
from ultra_signals.control import (
    PAUSED_KEY,
    BalanceInfo,
    ConfirmationRequired,
    Control,
    ForceExitResult,
    InvalidInput,
    JournalView,
    NotAvailable,
    Refused,
    RunInfo,
    is_paused,
    parse_count,
    parse_days,
    parse_symbol,
)
from ultra_signals.core.config import load_settings
from ultra_signals.core.decision import Decision
from ultra_signals.execution.breakers import TradingState, halt_trading, load_state
from ultra_signals.execution.brokers.base import KillReport
from ultra_signals.journal.outbox import Outbox
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.transport.messages import fmt_price
from ultra_signals.transport.telegram.client import TelegramClient
from ultra_signals.transport.telegram.notifier import TelegramNotifier
from ultra_signals.transport.telegram.pacing import PacingRules

pytestmark = pytest.mark.timeout(120)

OPERATOR = "111"
HOUR = 3_600_000


@dataclass
class Answer:
    text: str
    ok: bool  # False: the action was refused (CLI exit code != 0, Telegram reply names the refusal)


class CliAdapter:
    name = "cli"
    by = "cli"

    def __init__(self, url: str) -> None:
        self.url = url
        self.cli = CliRunner()

    def __call__(self, action: str, arg: str | None = None, *, confirm: bool = True) -> Answer:
        argv = {
            "stop_entry": ["stop-entry"],
            "signals": ["signals", "-n", arg or "5"],
            "pnl": ["pnl", "--days", arg or "1"],
            "daily": ["pnl", "--daily", "--days", arg or "7"],
            "force_exit": ["force-exit", arg or ""],
        }.get(action, [action])
        if action in ("kill", "resume", "force_exit") and confirm:
            argv = [*argv, "--yes"]
        if action == "show_config":  # the CLI's own command for it (it reads no journal)
            res = self.cli.invoke(app, ["config", "show"])
        elif action == "version":
            res = self.cli.invoke(app, ["--version"])
        else:
            res = self.cli.invoke(app, [*argv, "--journal-url", self.url], input="n\n")
        return Answer(res.output, res.exit_code == 0)

    def window(self, name: str, used: int, cap: int) -> str:
        return f"{name}: {used} / {cap}"


def complete(replies: list[Delivered]) -> bool:
    """One reply, or all the parts ``(1/n)`` … ``(n/n)`` of a long one."""
    if not replies:
        return False
    m = re.search(r"\((\d+)/(\d+)\)$", replies[0].plain)
    return len(replies) == (int(m.group(2)) if m else 1)


class TelegramAdapter:
    name = "telegram"
    by = f"telegram:{OPERATOR}"

    def __init__(self, api: FakeBotApi, journal: Journal) -> None:
        self.api = api
        self.journal = journal

    def __call__(self, action: str, arg: str | None = None, *, confirm: bool = True) -> Answer:
        text = {
            "stop_entry": "/stopentry",
            "kill": "/kill confirm" if confirm else "/kill",
            "resume": "/resume confirm" if confirm else "/resume",
            "pnl": "/profit",
            "force_exit": "/forceexit",
        }.get(action, f"/{action}")
        if arg is not None:
            text += f" {arg}"
        if action == "force_exit" and confirm:
            text += " confirm"
        before = len(self.api.delivered_to(OPERATOR))

        async def go() -> None:
            n = TelegramNotifier(
                TelegramClient(self.api.url, self.api.token, timeout_s=2),
                Outbox(self.journal.engine, "test:shadow"),
                chat_ids=[OPERATOR],
                mode="shadow",
                rules=PacingRules(per_chat_interval_s=0.0),
                backoff_initial_s=0.05,
                idle_poll_s=0.05,
                allowed_chat_ids=[OPERATOR],
                poll_timeout_s=1,
            )
            handler = n.attach_commands(Control(self.journal, JournalView(self.journal), settings=load_settings()))
            assert handler is not None
            await n.start()
            self.api.push_update(OPERATOR, text)
            await until(lambda: complete(self.api.delivered_to(OPERATOR)[before:]), timeout=15.0)
            await n.aclose()

        asyncio.run(go())
        replies = self.api.delivered_to(OPERATOR)[before:]
        assert complete(replies), [r.plain for r in replies]
        plain = "".join(re.sub(r"\n\(\d+/\d+\)$", "", r.plain) for r in replies)
        refused = plain.startswith(("/", "usage:")) and not plain.startswith("/status:")
        return Answer(plain, not refused)

    def window(self, name: str, used: int, cap: int) -> str:
        return f"{name}: count={used}, cap={cap}"


Adapter = CliAdapter | TelegramAdapter


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/journal.db")
    yield j
    j.close()


@pytest.fixture(params=["cli", "telegram"])
def adapter(request: pytest.FixtureRequest, journal: Journal) -> Iterator[Adapter]:
    if request.param == "cli":
        yield CliAdapter(journal.url)
        return
    with FakeBotApi() as api:
        api.MAX_POLL_S = 0.3
        yield TelegramAdapter(api, journal)


def seed_run(j: Journal) -> list[Decision]:
    """Run r1: allowed at T0, T0+2h, T0+2h30m, blocked at T0+3h (the latest decision time); caps 2/h, 6/day."""
    j.start_run(
        "r1",
        mode="shadow",
        profile="shadow",
        source="replay",
        simulated=False,
        namespace="ns:shadow",
        settings={"sniper": {"max_signals_per_hour": 2, "daily_signal_cap": 6}},
    )
    out = []
    for i, (offset, ok) in enumerate([(0, True), (2 * HOUR, True), (2 * HOUR + HOUR // 2, True), (3 * HOUR, False)]):
        d = Decision("r1", candidate(open_time=T0 + offset + i), ok, None if ok else "hourly_cap")
        j.record(d, "ns:shadow", simulated=False)
        out.append(d)
    j.flush()
    return out


def seed_trade(j: Journal, d: Decision, status: str = "open") -> None:
    c = d.candidate
    ExecStore(j.engine).open_trade(
        {
            "decision_id": d.id,
            "run_id": "r1",
            "namespace": "ns",
            "broker": "paper",
            "symbol": c.symbol,
            "side": c.side.value,
            "status": status,
            "qty": 0.5,
            "entry_qty": 0.5,
            "entry_price": c.entry,
            "arrival_price": c.entry,
            "stop": 59123.5,
            "take_profit": 61234.5,
            "stop_cid": "s",
            "tp_cid": "t",
            "fees": 0.0,
            "funding": 0.0,
            "gross_pnl": 0.0,
            "opened_ts": c.ts,
        }
    )


def seed_closed(j: Journal, d: Decision, pnl: float, closed_ts: int, fees: float = 0.1) -> None:
    """A trade of run r1 closed at ``closed_ts`` (market time) with net ``pnl``."""
    seed_trade(j, d)
    ExecStore(j.engine).update_trade(
        d.id, status="closed", qty=0.0, exit_price=1.0, pnl=pnl, fees=fees, closed_ts=closed_ts, closed_wall=0.0
    )


def seed_pnl(j: Journal) -> list[Decision]:
    """Run r1 (market time T0+3h, 2026-01-05): +12.50 and -2.25 closed that day, +5.00 the day before, one open."""
    ds = seed_run(j)
    seed_closed(j, ds[0], 12.5, T0 + HOUR)
    seed_closed(j, ds[1], -2.25, T0 + 2 * HOUR)
    seed_closed(j, ds[2], 5.0, T0 - HOUR)
    seed_trade(j, ds[3])
    return ds


def operator_events(j: Journal) -> list[tuple[str, str]]:
    return [(e["name"], e["detail"]) for e in ExecStore(j.engine).events(kind="operator")]


# -- status --------------------------------------------------------------------------------------------------


def test_status_of_an_empty_journal(adapter: Adapter) -> None:
    a = adapter("status")
    assert a.ok and "no runs in the journal yet" in a.text
    assert "paused: no" in a.text and "trading: ACTIVE" in a.text


def test_status_shows_a_halt_its_cause_the_trips_and_the_windows(adapter: Adapter, journal: Journal) -> None:
    seed_run(journal)
    journal.set_state(PAUSED_KEY, "1")
    ExecStore(journal.engine).event("trip", "daily_loss", "day loss 32.00 USDT", run_id="r1", ts=T0)
    halt_trading(journal, "daily_loss", "day loss 32.00 USDT", by="breaker")
    a = adapter("status")
    assert a.ok
    assert "r1" in a.text and "paused: yes" in a.text
    assert "trading: HALTED since" in a.text and "by breaker (daily_loss: day loss 32.00 USDT)" in a.text
    assert "daily_loss (day loss 32.00 USDT)" in a.text  # the trip history
    assert adapter.window("hour", 1, 2) in a.text and adapter.window("day", 3, 6) in a.text


# -- caps ----------------------------------------------------------------------------------------------------


def test_caps_are_the_windows_at_the_latest_decision(adapter: Adapter, journal: Journal) -> None:
    seed_run(journal)
    a = adapter("caps")
    assert a.ok and adapter.window("hour", 1, 2) in a.text and adapter.window("day", 3, 6) in a.text


def test_caps_before_any_decision_is_a_clear_refusal(adapter: Adapter) -> None:
    a = adapter("caps")
    assert not a.ok and "no decisions yet" in a.text


# -- recent signals -------------------------------------------------------------------------------------------


def test_signals_are_the_last_n_allowed_oldest_first(adapter: Adapter, journal: Journal) -> None:
    ds = seed_run(journal)
    a = adapter("signals", "2")
    assert a.ok
    lines = [ln for ln in a.text.splitlines() if "ENTRY:" in ln]
    assert len(lines) == 2
    for line, d in zip(lines, ds[1:3], strict=True):
        c = d.candidate
        when = datetime.fromtimestamp(c.ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")
        assert line.startswith(f"{when} {c.symbol} {c.side.value} ENTRY:{fmt_price(c.entry)} SL:{fmt_price(c.stop)}")


def test_signals_refuses_a_bad_count(adapter: Adapter, journal: Journal) -> None:
    seed_run(journal)
    a = adapter("signals", "0")
    assert not a.ok and "positive" in a.text


# -- positions -------------------------------------------------------------------------------------------------


def test_positions_show_open_trades_with_stop_and_target(adapter: Adapter, journal: Journal) -> None:
    ds = seed_run(journal)
    assert "no open positions" in adapter("positions").text.lower()
    seed_trade(journal, ds[0])
    seed_trade(journal, ds[1], status="closed")
    a = adapter("positions")
    assert a.ok
    [line] = [ln for ln in a.text.splitlines() if "SL:" in ln]
    assert ds[0].candidate.symbol in line and "SL:59123.5" in line and "TP:61234.5" in line


# -- pause / resume / stop-entry ---------------------------------------------------------------------------------


def test_pause_sets_the_flag_the_runner_reads_and_names_who(adapter: Adapter, journal: Journal) -> None:
    a = adapter("pause")
    assert a.ok and "paused" in a.text.lower() and "until" in a.text
    assert is_paused(journal)
    assert operator_events(journal) == [("pause", f"new signals paused (by {adapter.by})")]
    assert adapter("pause").ok and len(operator_events(journal)) == 1  # idempotent, journaled once


def test_resume_clears_the_pause_and_a_breaker_halt(adapter: Adapter, journal: Journal) -> None:
    journal.set_state(PAUSED_KEY, "1")
    halt_trading(journal, "consecutive_losses", "4 losses in a row", by="breaker")
    a = adapter("resume")
    assert a.ok and "trading resumed (ACTIVE)" in a.text and "consecutive_losses" in a.text
    assert not is_paused(journal)
    rec = load_state(journal)
    assert rec.state is TradingState.ACTIVE and rec.by == adapter.by
    resumes = ExecStore(journal.engine).events(kind="resume")
    assert [e["name"] for e in resumes] == [adapter.by]


def test_stop_entry_moves_to_reducing_and_resume_undoes_it(adapter: Adapter, journal: Journal) -> None:
    a = adapter("stop_entry")
    assert a.ok and "REDUCING" in a.text and "no new entries" in a.text
    rec = load_state(journal)
    assert rec.state is TradingState.REDUCING and rec.by == adapter.by
    assert adapter("stop_entry").ok and load_state(journal).state is TradingState.REDUCING
    assert adapter("resume").ok and load_state(journal).state is TradingState.ACTIVE


def test_stop_entry_refuses_to_loosen_a_halt(adapter: Adapter, journal: Journal) -> None:
    halt_trading(journal, "reconcile", "ETHUSDT position differs", by="breaker")
    a = adapter("stop_entry")
    assert not a.ok and "HALTED" in a.text and "would loosen it" in a.text
    assert load_state(journal).state is TradingState.HALTED


# -- kill ----------------------------------------------------------------------------------------------------


def test_kill_without_confirmation_changes_nothing(adapter: Adapter, journal: Journal) -> None:
    a = adapter("kill", confirm=False)
    assert "nothing was changed" in a.text or "/kill confirm" in a.text
    assert load_state(journal).state is TradingState.ACTIVE
    assert ExecStore(journal.engine).events(kind="kill") == []


def test_kill_halts_and_journals_who(adapter: Adapter, journal: Journal) -> None:
    a = adapter("kill")
    assert "HALTED" in a.text and "kill_switch" in a.text and "paper positions" in a.text
    rec = load_state(journal)
    assert rec.state is TradingState.HALTED and rec.by == "kill" and adapter.by in (rec.detail or "")
    [ev] = ExecStore(journal.engine).events(kind="kill")
    assert ev["name"] == adapter.by


# -- PnL, balance, health, config, version, force-exit -------------------------------------------------------


def test_pnl_today_since_start_and_open(adapter: Adapter, journal: Journal) -> None:
    seed_pnl(journal)
    a = adapter("pnl")
    assert a.ok, a.text
    assert "today 2026-01-05: +10.25 USDT (2 trade(s), 1 win(s))" in a.text
    assert "since start: +15.25 USDT (3 trade(s), 2 win(s))" in a.text
    assert "open: 1 position(s)" in a.text


def test_daily_has_one_row_per_day_zero_days_included(adapter: Adapter, journal: Journal) -> None:
    seed_pnl(journal)
    a = adapter("daily", "3")
    assert a.ok, a.text
    rows = [ln for ln in a.text.splitlines() if ln.startswith("2026-01-0")]
    assert rows == [
        "2026-01-03: +0.00 USDT (no closed trades)",
        "2026-01-04: +5.00 USDT (1 trade(s), 1 win(s))",
        "2026-01-05: +10.25 USDT (2 trade(s), 1 win(s))",
    ]


def test_pnl_of_an_empty_journal_says_so(adapter: Adapter) -> None:
    a = adapter("pnl")
    assert a.ok and "no runs in the journal yet" in a.text.lower()


def test_balance_of_a_paper_run_from_the_journal_alone_is_a_clear_refusal(adapter: Adapter) -> None:
    a = adapter("balance")
    assert not a.ok and "paper broker's equity lives in the running runner" in a.text


def test_health_shows_state_trips_and_last_event(adapter: Adapter, journal: Journal) -> None:
    seed_run(journal)
    ExecStore(journal.engine).event("trip", "data_staleness", "feed 300.0 s old (max 120)", run_id="r1", ts=T0)
    halt_trading(journal, "data_staleness", "feed 300.0 s old (max 120)", by="breaker")
    a = adapter("health")
    assert a.ok, a.text
    assert "state: HALTED" in a.text and "data_staleness (feed 300.0 s old (max 120))" in a.text
    assert "2026-01-05T03:05:00" in a.text  # the last decision's market time (its bar close)


def test_show_config_hides_every_secret(adapter: Adapter, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "7423417722:AAH-real-looking-token_0123456789abcdef"
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    monkeypatch.setenv("ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN", token)
    monkeypatch.setenv("ULTRA_SIGNALS_BINANCE__API_KEY", key)
    a = adapter("show_config")
    assert a.ok, a.text
    assert token not in a.text and key not in a.text and token.split(":")[1] not in a.text
    assert "***" in a.text and "max_signals_per_hour" in a.text


def test_version_names_the_release(adapter: Adapter) -> None:
    from ultra_signals import __version__

    a = adapter("version")
    assert a.ok and f"ultra-signals {__version__}" in a.text


def test_force_exit_without_confirmation_or_executor_changes_nothing(adapter: Adapter, journal: Journal) -> None:
    ds = seed_run(journal)
    seed_trade(journal, ds[0])
    asked = adapter("force_exit", "BTCUSDT", confirm=False)
    if adapter.name == "telegram":  # the CLI refuses earlier: force-exit from a shell needs a Binance profile
        assert "Send /forceexit BTCUSDT confirm" in asked.text
    refused = adapter("force_exit", "BTCUSDT")
    assert not refused.ok  # CLI: not a Binance profile; Telegram over the journal alone: no executor here
    assert [p.status for p in Control(journal, JournalView(journal)).positions()] == ["open"]
    assert load_state(journal).state is TradingState.ACTIVE


def test_force_exit_refuses_a_bad_symbol(adapter: Adapter) -> None:
    a = adapter("force_exit", "BTC-USDT")
    assert not a.ok and "letters and digits" in a.text


def test_resume_of_a_breaker_halt_without_confirmation_changes_nothing(adapter: Adapter, journal: Journal) -> None:
    halt_trading(journal, "daily_loss", "day loss 32.00 USDT", by="breaker")
    a = adapter("resume", confirm=False)
    assert "daily_loss" in a.text
    assert load_state(journal).state is TradingState.HALTED
    assert ExecStore(journal.engine).events(kind="resume") == []


# -- the layer itself ----------------------------------------------------------------------------------------


class LiveView(JournalView):
    """The journal's run as the running process would see it: data ages and counter backend known."""

    def __init__(self, journal: Journal, ages: dict[str, float | None], backend: str) -> None:
        super().__init__(journal)
        self.ages = ages
        self.backend = backend

    def run_info(self) -> RunInfo | None:
        from dataclasses import replace

        run = super().run_info()
        return None if run is None else replace(run, data_age_s=self.ages, uptime_s=60.0, counter_backend=self.backend)

    def latency_ms(self) -> tuple[float | None, float | None]:
        return 1.5, 9.0


def test_resume_is_refused_while_the_data_is_still_stale_and_the_refusal_is_journaled(journal: Journal) -> None:
    seed_run(journal)
    halt_trading(journal, "data_staleness", "feed 300.0 s old (max 120)", by="breaker")
    view = LiveView(journal, {"BTCUSDT": 300.0, "ETHUSDT": 2.0}, "redis")
    c = Control(journal, view, settings=load_settings())
    h = c.health()
    assert h.state == "HALTED" and h.stale == ("BTCUSDT",) and h.live
    assert (h.latency_p50_ms, h.latency_p99_ms) == (1.5, 9.0)
    with pytest.raises(Refused, match=r"data still stale: BTCUSDT 300 s \(max 120 s\)"):
        c.resume("telegram:111", confirm=True)
    assert load_state(journal).state is TradingState.HALTED
    [ev] = ExecStore(journal.engine).events(kind="refused")
    assert ev["name"] == "resume" and "telegram:111" in ev["detail"]
    view.ages["BTCUSDT"] = 1.0  # the feed is back
    with pytest.raises(ConfirmationRequired):
        c.resume("telegram:111")
    r = c.resume("telegram:111", confirm=True)
    assert r.unchecked is None and load_state(journal).state is TradingState.ACTIVE
    assert load_state(journal).by == "telegram:111"


def test_resume_is_refused_while_redis_is_still_gone(journal: Journal) -> None:
    seed_run(journal)
    halt_trading(journal, "counter_backend_lost", "counter backend is 'blocked' under the block policy", by="breaker")
    view = LiveView(journal, {}, "blocked")
    c = Control(journal, view, settings=load_settings())
    with pytest.raises(Refused, match="counter backend is still 'blocked'"):
        c.resume("cli", confirm=True)
    view.backend = "redis"
    assert c.resume("cli", confirm=True).trading.startswith("trading resumed")


def test_resume_from_a_shell_says_what_it_could_not_check(journal: Journal) -> None:
    seed_run(journal)
    halt_trading(journal, "data_staleness", "feed 300.0 s old (max 120)", by="breaker")
    r = Control(journal, JournalView(journal), settings=load_settings()).resume("cli", confirm=True)
    assert r.unchecked is not None and "data age" in r.unchecked


def test_an_operator_stop_entry_and_a_pause_resume_without_confirmation(journal: Journal) -> None:
    c = Control(journal, JournalView(journal))
    c.stop_entry("cli")
    c.pause("cli")
    r = c.resume("cli")
    assert not is_paused(journal) and load_state(journal).state is TradingState.ACTIVE and r.was_paused


def test_pnl_unrealised_from_the_marks_the_view_knows(journal: Journal) -> None:
    ds = seed_pnl(journal)
    report = Control(journal, JournalView(journal)).pnl(2)
    assert report.unrealized is None and report.open_positions == 1 and report.marked == 0
    assert [d.day for d in report.days] == ["2026-01-04", "2026-01-05"]
    assert report.fees_total == pytest.approx(0.3)

    class Marked(JournalView):
        def positions(self) -> list[Any]:
            from ultra_signals.control.view import open_positions

            return open_positions(journal, "r1", {ds[3].candidate.symbol: ds[3].candidate.entry + 100.0})

    marked = Control(journal, Marked(journal)).pnl()
    sign = 1.0 if ds[3].candidate.side.value == "LONG" else -1.0
    assert marked.unrealized == pytest.approx(sign * 100.0 * 0.5) and marked.marked == 1


def test_pnl_and_symbol_inputs() -> None:
    assert parse_days("") == 1 and parse_days("7") == 7 and parse_days("1000") == 90
    assert parse_symbol(" btcusdt ") == "BTCUSDT"
    for bad in ("0", "-1", "x"):
        with pytest.raises(InvalidInput):
            parse_days(bad)
    for bad in ("", "BTC/USDT", "B", "x" * 31):
        with pytest.raises(InvalidInput):
            parse_symbol(bad)


def test_force_exit_goes_through_close_and_is_journaled_with_who(journal: Journal) -> None:
    calls: list[str] = []

    async def close(symbol: str) -> ForceExitResult:
        calls.append(symbol)
        return ForceExitResult(symbol, "d-1", "closed", 0.5, exit_price=61000.0, pnl=12.5, venue="paper")

    c = Control(journal, JournalView(journal), close=close)
    with pytest.raises(ConfirmationRequired):
        asyncio.run(c.force_exit("BTCUSDT", confirm=False, by="cli"))
    assert calls == []
    r = asyncio.run(c.force_exit("btcusdt", confirm=True, by="telegram:111 (@op)"))
    assert calls == ["BTCUSDT"] and r.closed and r.by == "telegram:111 (@op)"
    [ev] = ExecStore(journal.engine).events(kind="force_exit")
    assert ev["name"] == "telegram:111 (@op)" and '"status": "closed"' in ev["detail"]


def test_a_failing_close_is_reported_not_raised(journal: Journal) -> None:
    async def close(symbol: str) -> ForceExitResult:
        raise ConnectionError("exchange unreachable")

    r = asyncio.run(Control(journal, JournalView(journal), close=close).force_exit("ETHUSDT", confirm=True, by="cli"))
    assert not r.closed and r.errors == ("force-exit failed: ConnectionError: exchange unreachable",)
    assert len(ExecStore(journal.engine).events(kind="force_exit")) == 1


def test_balance_comes_from_the_wired_source_and_its_failure_is_not_available(journal: Journal) -> None:
    async def ok() -> BalanceInfo:
        return BalanceInfo("paper", "USDT", 10_012.5, 10_000.0)

    async def broken() -> BalanceInfo:
        raise ConnectionError("down")

    assert asyncio.run(Control(journal, JournalView(journal), balance=ok).balance()).equity == 10_012.5
    with pytest.raises(NotAvailable, match="ConnectionError: down"):
        asyncio.run(Control(journal, JournalView(journal), balance=broken).balance())


def test_show_config_needs_settings_and_redacts(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    token = "7423417722:AAH-real-looking-token_0123456789abcdef"
    monkeypatch.setenv("ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN", token)
    with pytest.raises(NotAvailable):
        Control(journal, JournalView(journal)).show_config()
    cfg = Control(journal, JournalView(journal), settings=load_settings()).show_config()
    assert cfg["telegram"]["bot_token"] == "***" and token not in json.dumps(cfg, default=str)


def test_parse_count() -> None:
    assert parse_count("") == 5 and parse_count("3") == 3 and parse_count("999") == 50
    for bad in ("0", "-1", "x", "2.5"):
        with pytest.raises(InvalidInput, match="positive whole number"):
            parse_count(bad)


def test_kill_reaches_the_exchange_through_flatten_and_reports_what_is_left(journal: Journal) -> None:
    calls: list[TradingState] = []

    async def flatten() -> KillReport:
        calls.append(load_state(journal).state)  # the halt comes first
        return KillReport(cancelled_orders=3, flattened=["BTCUSDT"], remaining_positions=1, errors=["ETHUSDT: -2022"])

    c = Control(journal, JournalView(journal), flatten=flatten)
    with pytest.raises(ConfirmationRequired):
        asyncio.run(c.kill(confirm=False, by="cli"))
    assert calls == []
    r = asyncio.run(c.kill(confirm=True, by="cli"))
    assert calls == [TradingState.HALTED]
    assert r.exchange and r.cancelled_orders == 3 and r.flattened == ("BTCUSDT",) and not r.clean


def test_a_failing_flatten_keeps_the_halt_and_says_why(journal: Journal) -> None:
    async def flatten() -> KillReport:
        raise ConnectionError("exchange unreachable")

    r = asyncio.run(Control(journal, JournalView(journal), flatten=flatten).kill(confirm=True, by="cli"))
    assert r.trading.state == "HALTED" and not r.clean
    assert r.errors == ("flatten failed: ConnectionError: exchange unreachable",)


def test_status_as_json_is_the_typed_result(journal: Journal) -> None:
    seed_run(journal)
    res = CliRunner().invoke(app, ["status", "--journal-url", journal.url, "--json"])
    assert res.exit_code == 0, res.output
    import json

    rep = json.loads(res.output)
    assert rep["paused"] is False and rep["trading"]["state"] == "ACTIVE"
    assert rep["run"]["run_id"] == "r1" and rep["run"]["status"] == "running"
    assert rep["caps"]["windows"] == [{"name": "hour", "used": 1, "cap": 2}, {"name": "day", "used": 3, "cap": 6}]


def test_caps_of_an_empty_journal_raise_not_available(journal: Journal) -> None:
    with pytest.raises(NotAvailable):
        Control(journal, JournalView(journal)).caps()


def test_bad_profile_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["pause", "--profile", "nope", "--journal-url", f"sqlite:///{tmp_path}/j.db"])
    assert res.exit_code == 2
    assert "profile 'nope'" in res.output


def test_the_operator_layer_imports_no_adapter() -> None:
    """control/ sits below its adapters (CLI, Telegram, HTTP) and the runner: importing one would be a cycle."""
    import ast

    root = Path(__file__).resolve().parents[1] / "ultra_signals"
    found = {}
    for f in sorted((root / "control").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ultra_signals."):
                found.setdefault(node.module.split(".")[1], []).append(f.name)
    assert found and {"core", "observability", "journal", "execution"} >= set(found) - {"control"}, found


def test_cli_pnl_and_health_as_json_are_the_typed_results(journal: Journal) -> None:
    import json

    seed_pnl(journal)
    res = CliRunner().invoke(app, ["pnl", "--days", "2", "--journal-url", journal.url, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["today"] == "2026-01-05" and rep["realized_total"] == pytest.approx(15.25)
    assert [d["day"] for d in rep["days"]] == ["2026-01-04", "2026-01-05"] and rep["unrealized"] is None
    res = CliRunner().invoke(app, ["health", "--journal-url", journal.url, "--json"])
    assert res.exit_code == 0, res.output
    h = json.loads(res.output)
    assert h["state"] == "RUNNING" and h["live"] is False and h["run"]["run_id"] == "r1"


def test_cli_resume_of_a_breaker_halt_asks_and_acts_on_yes(journal: Journal) -> None:
    halt_trading(journal, "order_errors", "5 order errors within 60 s", by="breaker")
    res = CliRunner().invoke(app, ["resume", "--journal-url", journal.url], input="y\n")
    assert res.exit_code == 0, res.output
    assert "order_errors" in res.output and "Resume?" in res.output and "trading resumed (ACTIVE)" in res.output
    assert load_state(journal).state is TradingState.ACTIVE and load_state(journal).by == "cli"
