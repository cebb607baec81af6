"""The operator actions, once per action, through each adapter: the CLI (in-process) and Telegram (fake Bot API).

Both adapters call the same :class:`ultra_signals.control.Control` over the same journal; each test asserts
the journal effect (what a runner reads) and the facts of the reply, so CLI and Telegram must behave alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories import T0, candidate
from tests.fakes.telegram_server import FakeBotApi
from tests.helpers import until
from ultra_signals.apps.cli import app
from ultra_signals.control import (
    PAUSED_KEY,
    ConfirmationRequired,
    Control,
    InvalidInput,
    JournalView,
    NotAvailable,
    is_paused,
    parse_count,
)
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
        argv = {"stop_entry": ["stop-entry"], "signals": ["signals", "-n", arg or "5"]}.get(action, [action])
        if action in ("kill", "resume") and confirm:
            argv = [*argv, "--yes"]
        res = self.cli.invoke(app, [*argv, "--journal-url", self.url], input="n\n")
        return Answer(res.output, res.exit_code == 0)

    def window(self, name: str, used: int, cap: int) -> str:
        return f"{name}: {used} / {cap}"


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
        }.get(action, f"/{action}")
        if arg is not None:
            text += f" {arg}"
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
            handler = n.attach_commands(Control(self.journal, JournalView(self.journal)))
            assert handler is not None
            await n.start()
            self.api.push_update(OPERATOR, text)
            await until(lambda: len(self.api.delivered_to(OPERATOR)) > before, timeout=15.0)
            await n.aclose()

        asyncio.run(go())
        replies = self.api.delivered_to(OPERATOR)[before:]
        assert len(replies) == 1, [r.plain for r in replies]
        plain = replies[0].plain
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


# -- the layer itself ----------------------------------------------------------------------------------------


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
