"""The operator actions through the HTTP adapter, on the same seeded journals as tests/test_control.py.

test_control.py runs each action through the CLI and Telegram; this runs the same scenarios through the web API
(a journal-only app, as a shell would have: ``Control(journal, JournalView(journal), settings)``) and asserts the
same journal effects and the same facts, in JSON instead of text, so all three adapters are held to one behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import T0
from tests.test_control import operator_events, seed_pnl, seed_run, seed_trade
from tests.test_web import Client, W
from tests.web_run import WRITE
from ultra_signals.control import PAUSED_KEY, Control, JournalView, is_paused
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.execution.breakers import TradingState, halt_trading, load_state
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.web.app import create_app

BY = "web:127.0.0.1"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/journal.db")
    yield j
    j.close()


def _settings(**env: str) -> Settings:
    return load_settings(env={"ULTRA_SIGNALS_WEB__WRITE_TOKEN": WRITE, **env})


@pytest.fixture
def web(journal: Journal) -> Client:
    s = _settings()
    s = s.model_copy(update={"web": s.web.model_copy(update={"write_burst": 1000})})
    return Client(create_app(Control(journal, JournalView(journal), settings=s), s), ("127.0.0.1", 50000))


def post(web: Client, action: str, **body: Any) -> Any:
    return web.post(f"/api/v1/control/{action}", json=body, headers=W)


def test_status_of_an_empty_journal(web: Client) -> None:
    s = web.get("/api/v1/status").json()
    assert s["run"] is None and s["paused"] is False and s["trading"]["state"] == "ACTIVE"


def test_status_shows_a_halt_its_cause_the_trips_and_the_windows(web: Client, journal: Journal) -> None:
    seed_run(journal)
    journal.set_state(PAUSED_KEY, "1")
    ExecStore(journal.engine).event("trip", "daily_loss", "day loss 32.00 USDT", run_id="r1", ts=T0)
    halt_trading(journal, "daily_loss", "day loss 32.00 USDT", by="breaker")
    s = web.get("/api/v1/status").json()
    assert s["run"]["run_id"] == "r1" and s["paused"] is True
    t = s["trading"]
    assert (t["state"], t["breaker"], t["detail"], t["by"]) == (
        "HALTED",
        "daily_loss",
        "day loss 32.00 USDT",
        "breaker",
    )
    assert t["line"].startswith("HALTED since") and t["line"].endswith("by breaker (daily_loss: day loss 32.00 USDT)")
    assert s["trips"] == [{"breaker": "daily_loss", "detail": "day loss 32.00 USDT", "ts_ms": T0}]


def test_caps_are_the_windows_at_the_latest_decision(web: Client, journal: Journal) -> None:
    seed_run(journal)
    c = web.get("/api/v1/caps").json()
    assert c["windows"] == [{"name": "hour", "used": 1, "cap": 2}, {"name": "day", "used": 3, "cap": 6}]


def test_caps_before_any_decision_is_a_clear_refusal(web: Client) -> None:
    r = web.get("/api/v1/caps")
    assert r.status_code == 404 and r.json()["error"] == "not_available" and "no decisions yet" in r.json()["detail"]


def test_signals_are_the_last_n_allowed(web: Client, journal: Journal) -> None:
    ds = seed_run(journal)
    sig = web.get("/api/v1/signals", params={"limit": 2}).json()["signals"]
    want = [d.candidate for d in ds[1:3]][::-1]  # newest first
    assert [(x["ts"], x["symbol"], x["side"], x["entry"], x["stop"]) for x in sig] == [
        (c.ts, c.symbol, c.side.value, c.entry, c.stop) for c in want
    ]
    assert web.get("/api/v1/signals", params={"limit": 0}).status_code == 422


def test_positions_show_open_trades_with_stop_and_target(web: Client, journal: Journal) -> None:
    ds = seed_run(journal)
    assert web.get("/api/v1/positions").json()["positions"] == []
    seed_trade(journal, ds[0])
    seed_trade(journal, ds[1], status="closed")
    [p] = web.get("/api/v1/positions").json()["positions"]
    assert (p["symbol"], p["stop"], p["target"], p["status"]) == (ds[0].candidate.symbol, 59123.5, 61234.5, "open")


def test_pause_sets_the_flag_the_runner_reads_and_names_who(web: Client, journal: Journal) -> None:
    r = post(web, "pause")
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["changed"] is True
    assert is_paused(journal)
    assert operator_events(journal) == [("pause", f"new signals paused (by {BY})")]
    r = post(web, "pause")
    assert r.status_code == 200 and r.json()["changed"] is False and len(operator_events(journal)) == 1


def test_resume_clears_the_pause_and_a_breaker_halt(web: Client, journal: Journal) -> None:
    journal.set_state(PAUSED_KEY, "1")
    halt_trading(journal, "consecutive_losses", "4 losses in a row", by="breaker")
    r = post(web, "resume", confirm=True)
    assert r.status_code == 200 and r.json()["trading"]["state"] == "ACTIVE" and "consecutive_losses" in r.text
    assert not is_paused(journal)
    rec = load_state(journal)
    assert rec.state is TradingState.ACTIVE and rec.by == BY
    assert [e["name"] for e in ExecStore(journal.engine).events(kind="resume")] == [BY]


def test_resume_of_a_breaker_halt_without_confirmation_changes_nothing(web: Client, journal: Journal) -> None:
    halt_trading(journal, "daily_loss", "day loss 32.00 USDT", by="breaker")
    r = post(web, "resume")
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required" and "daily_loss" in r.text
    assert load_state(journal).state is TradingState.HALTED
    assert ExecStore(journal.engine).events(kind="resume") == []


def test_stop_entry_moves_to_reducing_and_resume_undoes_it(web: Client, journal: Journal) -> None:
    r = post(web, "stop-entry")
    assert r.status_code == 200 and r.json()["trading"]["state"] == "REDUCING" and "no new entries" in r.text
    rec = load_state(journal)
    assert rec.state is TradingState.REDUCING and rec.by == BY
    assert post(web, "stop-entry").json()["changed"] is False
    assert post(web, "resume").status_code == 200 and load_state(journal).state is TradingState.ACTIVE


def test_stop_entry_refuses_to_loosen_a_halt(web: Client, journal: Journal) -> None:
    halt_trading(journal, "reconcile", "ETHUSDT position differs", by="breaker")
    r = post(web, "stop-entry")
    assert r.status_code == 400 and "HALTED" in r.text and "would loosen it" in r.text
    assert load_state(journal).state is TradingState.HALTED


def test_kill_without_confirmation_changes_nothing(web: Client, journal: Journal) -> None:
    r = post(web, "kill")
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required"
    assert load_state(journal).state is TradingState.ACTIVE and ExecStore(journal.engine).events(kind="kill") == []


def test_kill_halts_and_journals_who(web: Client, journal: Journal) -> None:
    r = post(web, "kill", confirm=True)
    assert r.status_code == 200 and r.json()["trading"]["breaker"] == "kill_switch"
    assert r.json()["result"]["exchange"] is False  # the paper broker: the runner flattens its own positions
    rec = load_state(journal)
    assert rec.state is TradingState.HALTED and rec.by == "kill" and BY in (rec.detail or "")
    [ev] = ExecStore(journal.engine).events(kind="kill")
    assert ev["name"] == BY


def test_pnl_today_since_start_and_open(web: Client, journal: Journal) -> None:
    seed_pnl(journal)
    p = web.get("/api/v1/pnl").json()
    assert (p["today"], p["realized_today"], p["trades_today"], p["wins_today"]) == ("2026-01-05", 10.25, 2, 1)
    assert (p["realized_total"], p["trades_total"], p["wins_total"]) == (15.25, 3, 2)
    assert p["open_positions"] == 1


def test_daily_has_one_row_per_day_zero_days_included(web: Client, journal: Journal) -> None:
    seed_pnl(journal)
    days = web.get("/api/v1/pnl", params={"days": 3}).json()["days"]
    assert [(d["day"], d["realized"], d["trades"], d["wins"]) for d in days] == [
        ("2026-01-03", 0.0, 0, 0),
        ("2026-01-04", 5.0, 1, 1),
        ("2026-01-05", 10.25, 2, 1),
    ]


def test_pnl_of_an_empty_journal_says_so(web: Client) -> None:
    p = web.get("/api/v1/pnl").json()
    assert p["run_id"] is None and p["trades_total"] == 0 and p["today"] is None


def test_balance_of_a_paper_run_from_the_journal_alone_is_a_clear_refusal(web: Client) -> None:
    r = web.get("/api/v1/balance")
    assert r.status_code == 404 and "paper broker's equity lives in the running runner" in r.json()["detail"]


def test_health_shows_state_trips_and_last_event(web: Client, journal: Journal) -> None:
    seed_run(journal)
    ExecStore(journal.engine).event("trip", "data_staleness", "feed 300.0 s old (max 120)", run_id="r1", ts=T0)
    halt_trading(journal, "data_staleness", "feed 300.0 s old (max 120)", by="breaker")
    h = web.get("/api/v1/health").json()
    assert h["state"] == "HALTED" and h["live"] is False
    assert h["trips"] == [{"breaker": "data_staleness", "detail": "feed 300.0 s old (max 120)", "ts_ms": T0}]
    assert h["last_event"].startswith("2026-01-05T03:05:00")  # the last decision's market time (its bar close)


def test_show_config_hides_every_secret(journal: Journal) -> None:
    token = "7423417722:AAH-real-looking-token_0123456789abcdef"
    key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
    s = _settings(ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN=token, ULTRA_SIGNALS_BINANCE__API_KEY=key)
    web = Client(create_app(Control(journal, JournalView(journal), settings=s), s), ("127.0.0.1", 1))
    r = web.get("/api/v1/config")
    assert r.status_code == 200
    for secret in (token, key, token.split(":")[1], WRITE):
        assert secret not in r.text
    shown = r.json()["settings"]
    assert shown["telegram"]["bot_token"] == "***" and shown["sniper"]["max_signals_per_hour"] > 0


def test_version_names_the_release(web: Client) -> None:
    from ultra_signals import __version__

    assert web.get("/api/v1/version").json()["version"] == __version__


def test_force_exit_without_confirmation_or_executor_changes_nothing(web: Client, journal: Journal) -> None:
    ds = seed_run(journal)
    seed_trade(journal, ds[0])
    r = post(web, "force-exit", symbol="BTCUSDT")
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required"
    r = post(web, "force-exit", symbol="BTCUSDT", confirm=True)
    assert r.status_code == 404 and r.json()["error"] == "not_available"  # the journal alone has no executor
    assert [p.status for p in Control(journal, JournalView(journal)).positions()] == ["open"]
    assert load_state(journal).state is TradingState.ACTIVE


def test_force_exit_refuses_a_bad_symbol(web: Client) -> None:
    assert post(web, "force-exit", symbol="BTC-USDT", confirm=True).status_code == 422
    r = post(web, "force-exit", symbol="B", confirm=True)  # passes the schema, refused by control's own rule
    assert r.status_code == 400 and "letters and digits" in r.json()["detail"]
