"""Operator commands over the fake Bot API: only allowed chats are answered; a pause reaches the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.telegram_server import FakeBotApi
from tests.helpers import until
from ultra_signals.bootstrap import build_runner
from ultra_signals.control import PAUSED_KEY, Control, ForceExitResult, JournalView
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.execution.breakers import TradingState, halt_trading, load_state
from ultra_signals.journal.outbox import Outbox
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.live.runner import Runner
from ultra_signals.live.view import RunnerView
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.factory import build_source
from ultra_signals.transport.telegram.client import TelegramClient
from ultra_signals.transport.telegram.commands import OFFSET_KEY, Command, parse_command
from ultra_signals.transport.telegram.notifier import TelegramNotifier, make_telegram_notifier
from ultra_signals.transport.telegram.pacing import PacingRules

pytestmark = pytest.mark.timeout(90)

OPERATOR, STRANGER = "111", "999"


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as a:
        a.MAX_POLL_S = 0.5
        yield a


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/journal.db")
    yield j
    j.close()


def notifier(
    api: FakeBotApi,
    journal: Journal,
    metrics: Metrics | None = None,
    *,
    mode: str = "shadow",
    allowed_users: tuple[str, ...] = (),
    allowed_chats: tuple[str, ...] = (OPERATOR,),
) -> TelegramNotifier:
    return TelegramNotifier(
        TelegramClient(api.url, api.token, timeout_s=2),
        Outbox(journal.engine, f"test:{mode}"),
        chat_ids=[OPERATOR],
        mode=mode,
        metrics=metrics,
        rules=PacingRules(per_chat_interval_s=0.02),
        backoff_initial_s=0.05,
        idle_poll_s=0.1,
        allowed_chat_ids=list(allowed_chats),
        allowed_users=list(allowed_users),
        poll_timeout_s=1,
    )


def converse(
    api: FakeBotApi,
    journal: Journal,
    lines: list[tuple[str, str]] | list[tuple[str, str, int, str]],
    metrics: Metrics | None = None,
    *,
    control: Control | None = None,
    **kw: Any,
) -> None:
    """Start a notifier with commands, send ``lines`` (chat, text[, user id, username]) one by one, wait for each
    to be handled."""

    async def go() -> None:
        n = notifier(api, journal, metrics, **kw)
        handler = n.attach_commands(control or Control(journal, JournalView(journal)))
        assert handler is not None
        await n.start()
        for line in lines:
            chat, text = line[0], line[1]
            before = handler.handled + handler.ignored
            if len(line) == 4:
                api.push_update(chat, text, user_id=line[2], username=line[3])
            else:
                api.push_update(chat, text)
            assert await until(lambda b=before: handler.handled + handler.ignored > b, timeout=15.0)  # type: ignore[misc]
        answered = sum(1 for line in lines if line[0] in n.allowed_chat_ids)
        await until(lambda: len(api.delivered) >= answered, timeout=15.0)
        await n.aclose()

    asyncio.run(go())


def test_parse_command() -> None:
    assert parse_command("/signals@UltraBot 3") == Command("signals", ("3",))
    assert parse_command("  /PAUSE ") == Command("pause", ())
    assert parse_command("hello") is None
    assert parse_command("/") is None


def test_unknown_chat_changes_nothing_and_is_counted(api: FakeBotApi, journal: Journal) -> None:
    m = Metrics()
    journal.set_state(PAUSED_KEY, "0")
    converse(api, journal, [(STRANGER, "/pause"), (STRANGER, "/status"), (OPERATOR, "/status")], m)
    assert journal.get_state(PAUSED_KEY) == "0"
    assert api.delivered_to(STRANGER) == []
    assert m.registry.get_sample_value("telegram_updates_ignored_total") == 2
    [reply] = api.delivered_to(OPERATOR)
    assert reply.plain.splitlines() == [
        "Status",
        "run: no runs in the journal yet",
        "paused: no",
        "trading: ACTIVE",
    ]


def test_operator_commands_and_replies(api: FakeBotApi, journal: Journal) -> None:
    lines = [
        (OPERATOR, "/help"),
        (OPERATOR, "/caps"),
        (OPERATOR, "/signals@UltraBot 2"),
        (OPERATOR, "/signals x"),
        (OPERATOR, "/pause"),
        (OPERATOR, "/status"),
        (OPERATOR, "/resume"),
        (OPERATOR, "/bogus"),
    ]
    converse(api, journal, lines)
    replies = [g.plain for g in api.delivered_to(OPERATOR)]
    assert len(replies) == len(lines)
    assert replies[0].startswith("/status: run, trading state") and "/stopentry" in replies[0]
    assert replies[1].startswith("/caps: no decisions yet")
    assert replies[2] == "No allowed signals yet."
    assert replies[3].startswith("usage: /signals [n]")
    assert replies[4].startswith("Paused")
    assert "paused: yes" in replies[5]
    assert replies[6].startswith("Resumed")
    assert replies[7].startswith("Unknown command /bogus")
    assert journal.get_state(PAUSED_KEY) == "0"
    assert journal.get_state(OFFSET_KEY) is not None


def test_handled_updates_are_not_answered_again_after_a_restart(api: FakeBotApi, journal: Journal) -> None:
    converse(api, journal, [(OPERATOR, "/help")])
    assert len(api.delivered) == 1
    converse(api, journal, [(OPERATOR, "/caps")])  # a new process over the same journal
    assert [g.plain.splitlines()[0] for g in api.delivered] == [
        "/status: run, trading state and breakers, pause, data freshness, counter backend",
        "/caps: no decisions yet: the cap windows start with the run's first decision",
    ]


# -- with the real runner ------------------------------------------------------------------------------------


def _settings(api: FakeBotApi) -> Settings:
    return load_settings(
        "shadow",
        environ={
            "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": api.token,
            "ULTRA_SIGNALS_TELEGRAM__API_URL": api.url,
            "ULTRA_SIGNALS_TELEGRAM__CHAT_IDS": OPERATOR,
            "ULTRA_SIGNALS_TELEGRAM__ALLOWED_CHAT_IDS": OPERATOR,
            "ULTRA_SIGNALS_TELEGRAM__PER_CHAT_INTERVAL_S": "0.02",
            "ULTRA_SIGNALS_TELEGRAM__POLL_TIMEOUT_S": "1",
            "ULTRA_SIGNALS_NOTIFIER__SINK": "telegram",
        },
    )


def _run(s: Settings, journal: Journal) -> tuple[Runner, dict[str, int]]:
    metrics = Metrics()
    n = make_telegram_notifier(s, metrics, journal.engine, "shadow")
    runner = build_runner(
        s,
        source=build_source(s, metrics, duration_minutes=1440),
        journal=journal,
        notifier=n,
        metrics=metrics,
        executor=True,  # the paper broker (shadow), which obeys the trading state
        serve_metrics=False,
    )
    st = asyncio.run(runner.run())
    return runner, {
        "allowed": sum(st.allowed.values()),
        "paused": st.blocked.get("paused", 0),
        "reducing": st.blocked.get("trading_reducing", 0),
    }


def test_a_stranger_cannot_pause_the_runner_but_the_operator_can(api: FakeBotApi, journal: Journal) -> None:
    converse(api, journal, [(STRANGER, "/pause")])
    _, before = _run(_settings(api), journal)
    assert before["allowed"] > 0 and before["paused"] == 0
    converse(api, journal, [(OPERATOR, "/pause")])
    _, after = _run(_settings(api), journal)  # the next run, a new process reading the same journal
    assert after["allowed"] == 0 and after["paused"] > 0
    cards = [g for g in api.delivered if "sniper:allowed" in g.plain]
    assert len(cards) == before["allowed"]  # only the first run's signals were announced


def test_runner_view_answers_from_the_running_runner(api: FakeBotApi, journal: Journal) -> None:
    api.push_update(OPERATOR, "/status")
    api.push_update(OPERATOR, "/caps")
    runner, stats = _run(_settings(api), journal)
    replies = [g.plain for g in api.delivered_to(OPERATOR) if g.plain.startswith(("Status", "Caps"))]
    assert len(replies) == 2
    status, caps = sorted(replies, key=lambda r: not r.startswith("Status"))
    assert f"run_id: {runner.run_id}" in status and "counter_backend: memory" in status
    assert "source: sim (SIMULATED)" in status and "paused: no" in status and "trading: ACTIVE" in status
    assert caps.splitlines()[1].startswith("hour: count=") and caps.splitlines()[1].endswith("cap=2")
    view = RunnerView(runner)
    rows = [r for r in journal.decisions(runner.run_id) if r["allowed"]]
    recent = view.recent_signals(3)
    assert [(r.ts, r.symbol, r.entry) for r in recent] == [(r["ts"], r["symbol"], r["entry"]) for r in rows[-3:]]
    assert stats["allowed"] == len(rows)
    final = view.caps()
    day = final.window("day")
    assert day is not None and day.cap == 6 and 0 < day.used <= 6
    info = view.run_info()
    assert (
        info.run_id == runner.run_id
        and info.status == "completed"
        and set(info.data_age_s) == set(runner.stats.symbols)
    )


def test_stop_entry_from_telegram_blocks_the_next_runs_entries(api: FakeBotApi, journal: Journal) -> None:
    converse(api, journal, [(OPERATOR, "/stopentry")])
    _, st = _run(_settings(api), journal)
    assert st["allowed"] == 0 and st["reducing"] > 0
    converse(api, journal, [(OPERATOR, "/resume")])
    _, st = _run(_settings(api), journal)
    assert st["allowed"] > 0 and st["reducing"] == 0


def test_resume_from_telegram_clears_a_breaker_halt_but_a_stranger_cannot(api: FakeBotApi, journal: Journal) -> None:
    from ultra_signals.execution.breakers import describe_state, halt_trading

    halt_trading(journal, "daily_loss", "3.2% of start-of-day equity")
    converse(api, journal, [(STRANGER, "/resume")])
    assert "HALTED" in describe_state(journal)
    converse(api, journal, [(OPERATOR, "/resume")])
    assert "HALTED" in describe_state(journal)  # a breaker's halt asks first
    converse(api, journal, [(OPERATOR, "/resume confirm")])
    assert "ACTIVE" in describe_state(journal)
    ask, reply = api.delivered_to(OPERATOR)
    assert "daily_loss" in ask.plain and "/resume confirm" in ask.plain
    assert "trading resumed (ACTIVE)" in reply.plain and "daily_loss" in reply.plain


# -- who may command: telegram.allowed_users ---------------------------------------------------------------------

GROUP = "-100200"


def refusals(journal: Journal) -> list[tuple[str, str]]:
    return [(e["name"], e["detail"]) for e in ExecStore(journal.engine).events(kind="refused")]


def test_allowed_users_gate_every_change_in_a_group(api: FakeBotApi, journal: Journal) -> None:
    """In an allowed group, a member not on the allow-list may read but not pause; the listed user may."""
    lines = [
        (GROUP, "/pause", 555, "stranger_in_group"),
        (GROUP, "/status", 555, "stranger_in_group"),
        (GROUP, "/pause", 222, "boss"),
    ]
    converse(api, journal, lines, allowed_chats=(GROUP,), allowed_users=("222",))
    refused, status, paused = (g.plain for g in api.delivered_to(GROUP))
    assert refused == "/pause: refused: user 555 is not in telegram.allowed_users"
    assert status.startswith("Status")
    assert paused.startswith("Paused") and journal.get_state(PAUSED_KEY) == "1"
    assert refusals(journal) == [
        ("pause", "user 555 is not in telegram.allowed_users (by telegram:555 (@stranger_in_group))")
    ]
    [ev] = ExecStore(journal.engine).events(kind="operator")
    assert ev["detail"] == "new signals paused (by telegram:222 (@boss))"


@pytest.mark.parametrize("command", ["/kill confirm", "/forceexit BTCUSDT confirm", "/resume confirm", "/stopentry"])
def test_in_canary_trade_commands_need_the_allow_list(api: FakeBotApi, journal: Journal, command: str) -> None:
    halt_trading(journal, "daily_loss", "day loss 40 USDT", by="breaker")
    converse(api, journal, [(OPERATOR, command)], mode="canary")
    [reply] = api.delivered_to(OPERATOR)
    name = command.split()[0][1:]
    assert reply.plain.startswith(f"/{name}: refused: in canary, /{name} needs telegram.allowed_users")
    assert "group membership is not authentication" in reply.plain
    assert load_state(journal).state is TradingState.HALTED and load_state(journal).by == "breaker"
    assert [n for n, _ in refusals(journal)] == [name]
    assert ExecStore(journal.engine).events(kind="kill") == []


def test_in_canary_a_listed_user_may_kill_and_reads_stay_open(api: FakeBotApi, journal: Journal) -> None:
    converse(
        api, journal, [(OPERATOR, "/health"), (OPERATOR, "/kill confirm")], mode="canary", allowed_users=(OPERATOR,)
    )
    health, kill = (g.plain for g in api.delivered_to(OPERATOR))
    assert health.startswith("Health") and "state: RUNNING" in health
    assert kill.startswith("Kill switch: trading HALTED")
    [ev] = ExecStore(journal.engine).events(kind="kill")
    assert ev["name"] == f"telegram:{OPERATOR}"


def test_forceexit_asks_then_closes_through_the_executor(api: FakeBotApi, journal: Journal) -> None:
    closed: list[str] = []

    async def close(symbol: str) -> ForceExitResult:
        closed.append(symbol)
        return ForceExitResult(symbol, "d-7", "closed", 0.5, exit_price=61000.0, pnl=-3.5, venue="paper")

    control = Control(journal, JournalView(journal), close=close)
    lines = [(OPERATOR, "/forceexit"), (OPERATOR, "/forceexit ethusdt"), (OPERATOR, "/forceexit ethusdt confirm")]
    converse(api, journal, lines, control=control)
    usage, ask, done = (g.plain for g in api.delivered_to(OPERATOR))
    assert usage.startswith("usage: /forceexit SYMBOL")
    assert "ETHUSDT" in ask and "Send /forceexit ETHUSDT confirm" in ask
    assert done == "Force-exit ETHUSDT (trade d-7, paper): closed at 61000, PnL -3.50 USDT"
    assert closed == ["ETHUSDT"]
    [ev] = ExecStore(journal.engine).events(kind="force_exit")
    assert ev["name"] == f"telegram:{OPERATOR}"


def test_the_running_runner_answers_health_balance_profit_and_positions(api: FakeBotApi, journal: Journal) -> None:
    for cmd in ("/health", "/balance", "/profit 2", "/positions", "/version"):
        api.push_update(OPERATOR, cmd)
    runner, _ = _run(_settings(api), journal)
    replies = {g.plain.split("\n", 1)[0].split(" ", 1)[0]: g.plain for g in api.delivered_to(OPERATOR)}
    health = replies["Health"]
    # Answered as the run starts: before the first decision no latency is known yet (the layer test covers it).
    assert "state: RUNNING" in health and "counter_backend: memory" in health and "stale: none" in health
    assert f"run: {runner.run_id}" in health and "data_age:" in health
    assert replies["Balance"].startswith("Balance (paper): ") and "started at 10000.00" in replies["Balance"]
    assert replies["PnL"].startswith(f"PnL of run {runner.run_id}") and "since start:" in replies["PnL"]
    positions = [g.plain for g in api.delivered_to(OPERATOR) if "open position" in g.plain.splitlines()[0]]
    assert len(positions) == 1  # "No open positions." or "n open position(s):" with their lines
    assert replies["ultra-signals"].splitlines()[1].startswith("git: ")


def test_allowed_users_are_user_ids_not_names() -> None:
    from ultra_signals.core.config import ConfigError

    s = load_settings("canary", environ={"ULTRA_SIGNALS_TELEGRAM__ALLOWED_USERS": "123456789, 42"})
    assert s.telegram.allowed_users == ["123456789", "42"]
    with pytest.raises(ConfigError, match=r"telegram.allowed_users.*user ids.*'@boss'"):
        load_settings("canary", environ={"ULTRA_SIGNALS_TELEGRAM__ALLOWED_USERS": "123,@boss"})
