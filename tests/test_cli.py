"""The command line as an operator runs it: subprocesses of ``python -m ultra_signals`` in a scratch folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, require_data
from tests.helpers import cli_env, copy_packaged_settings, run_cli


def test_shadow_on_the_embedded_default_produces_signals_journal_and_report(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "decisions.jsonl"
    p = run_cli(tmp_path, "shadow", "--duration", "120", "--metrics-port", str(port), "--decisions-out", str(out))
    # The seed's 120 minutes cannot reach the daily cap: it says so up front, the verdict is NO-GO, exit status 1.
    assert p.returncode == 1, p.stderr[-3000:]
    assert "the daily cap (6) cannot be reached" in p.stdout and "exit status 1: NO-GO" in p.stdout
    assert "SIMULATED" in p.stdout
    cards = [line for line in p.stdout.splitlines() if line.startswith("SHADOW | ") and "sniper:allowed" in line]
    assert cards, p.stdout[-3000:]
    assert all(" | ENTRY:" in c and " | SL:" in c and " | TP:" in c and c.endswith("SIMULATED") for c in cards)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["decision"] == "allowed" for r in rows) == len(cards)
    reports = list((tmp_path / "reports").glob("shadow_results_*.json"))
    assert len(reports) == 1
    rep = json.loads(reports[0].read_text())
    assert rep["simulated"] is True and rep["verdict"] == "NO-GO"
    caps = next(c for c in rep["criteria"] if c["name"] == "caps_enforced")
    assert not caps["passed"] and "day (cap 6)" in caps["evidence"] and "not exercised" in caps["evidence"]
    assert [c["name"] for c in rep["criteria"]] == [
        "caps_enforced",
        "mtf_blocked",
        "no_crash",
        "latency_p95",
        "metrics_fresh",
        "symbols_fresh",
        "counter_backend",
    ]
    assert sum(rep["allowed_by_symbol"].values()) == len(cards)
    assert len(list((tmp_path / "reports").glob("shadow_*_*.svg"))) >= 1
    assert (tmp_path / "var" / "journal.db").exists()
    md = reports[0].with_suffix(".md").read_text()
    assert "SIMULATED" in md and "## Shadow criteria" in md
    # The CLI's run holds the garbage collector (observability/gc_pauses.py): at least settle's full collection.
    assert rep["gc"]["collections"][2] >= 1 and "- Garbage collector: " in md
    # The run's own evaluation table (the simulator's bars regenerated), or why there is none.
    ev = rep["evaluation"]
    assert ev["status"] in ("ok", "not_enough_data") and ev["candidates"] == len(rows)
    assert "## Evaluation of this run's candidates" in md


def _replay(tmp_path: Path, symbols: str, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``replay`` over the shared 5m recordings from 2018-01-20, as a user runs it."""
    data = require_data("klines")
    args = ("--symbols", symbols, "--from", "2018-01-20", "--to", to, "--metrics-port", "0", *extra)
    return run_cli(tmp_path, "replay", "--data", str(data), *args)


def test_replay_command_over_recorded_candles(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    p = _replay(tmp_path, "ETHBTC,LTCBTC", "2018-01-22", "--decisions-out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "1m dropped" in p.stdout  # the 5m files replay on 5m/15m/1h
    # A fast replay is a batch job: no status page unless --web-port or --speed asks for one (issue 13).
    assert "web UI:" not in p.stdout and "status page not started" not in p.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["symbol"] for r in rows} == {"ETHBTC", "LTCBTC"}
    assert all(1_516_406_400_000 <= r["ts"] <= 1_516_579_200_000 for r in rows)  # decided inside --from..--to


def test_replay_pace_from_needs_speed(tmp_path: Path) -> None:
    p = run_cli(tmp_path, "replay", "--data", str(tmp_path), "--pace-from", "1700000000")
    assert p.returncode == 2 and "--pace-from" in p.stderr and "--speed" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_replay_serves_the_status_page_when_asked(tmp_path: Path) -> None:
    p = _replay(tmp_path, "ETHBTC", "2018-01-21", "--web-port", "0", "--no-report")
    assert p.returncode in (0, 1), p.stderr[-3000:]
    assert sum(ln.startswith("web UI: http://127.0.0.1:") for ln in p.stdout.splitlines()) == 1, p.stdout


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    p = run_cli(
        tmp_path,
        "config",
        "show",
        "--profile",
        "canary",
        "--json",
        env={
            "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": "999:TOPSECRET",
            "ULTRA_SIGNALS_REDIS__URL": "redis://:pw-SECRET@127.0.0.1:6379/0",
        },
    )
    assert p.returncode == 0, p.stderr
    assert "TOPSECRET" not in p.stdout and "pw-SECRET" not in p.stdout
    data = json.loads(p.stdout)
    assert data["telegram"]["bot_token"] == "***" and data["runtime"]["symbols"] == ["BTCUSDT"]


def test_bad_config_exits_with_a_message_naming_the_key(tmp_path: Path) -> None:
    p = run_cli(tmp_path, "config", "show", env={"ULTRA_SIGNALS_SNIPER__COOLDOWN_BARS": "-3"})
    assert p.returncode == 2
    assert "ULTRA_SIGNALS_SNIPER__COOLDOWN_BARS" in p.stderr and "sniper.cooldown_bars" in p.stderr
    assert "Traceback" not in p.stderr


def test_replay_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    p = run_cli(tmp_path, "replay", "--data", str(tmp_path / "nope"))
    assert p.returncode == 2 and "nope" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("profile", ["shadow", "canary"])
def test_preflight_table_and_exit_code(tmp_path: Path, profile: str) -> None:
    p = run_cli(tmp_path, "preflight", "--profile", profile, env={"ULTRA_SIGNALS_METRICS__PORT": str(free_port())})
    assert "preflight" in p.stdout and "disk" in p.stdout
    # The embedded default passes; canary needs Binance, Redis and secrets this machine does not give it.
    assert p.returncode == (0 if profile == "shadow" else 1), p.stdout


def test_replay_refuses_files_too_coarse_for_the_signal_timeframe(tmp_path: Path) -> None:
    folder = tmp_path / "coarse"
    folder.mkdir()
    shutil.copy(require_data("klines", "XRPUSDT-1h.csv"), folder / "XRPUSDT-1h.csv")
    p = run_cli(tmp_path, "replay", "--data", str(folder))
    assert p.returncode == 2 and "signal timeframe(s) 5m cannot be replayed" in p.stderr


def test_shadow_with_the_telegram_sink_delivers_one_card_per_allowed_signal(tmp_path: Path) -> None:
    from tests.fakes.telegram_server import FakeBotApi

    out = tmp_path / "d.jsonl"
    with FakeBotApi() as api:
        p = run_cli(
            tmp_path,
            "shadow", "--duration", "120", "--metrics-port", "0", "--decisions-out", str(out),
            env={
                "ULTRA_SIGNALS_NOTIFIER__SINK": "telegram",
                "ULTRA_SIGNALS_TELEGRAM__API_URL": api.url,
                "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": api.token,
                "ULTRA_SIGNALS_TELEGRAM__CHAT_IDS": "4242",
                "ULTRA_SIGNALS_TELEGRAM__ALLOWED_CHAT_IDS": "4242",
            },
        )  # fmt: skip
        assert p.returncode == 1, p.stderr[-3000:]  # NO-GO: 120 minutes cannot reach the daily cap
        allowed = [json.loads(x) for x in out.read_text().splitlines() if '"allowed"' in x]
        cards = [d.plain for d in api.delivered_to("4242") if "sniper:allowed" in d.plain]
    assert allowed and len(cards) == len(allowed)
    assert all(c.startswith("SHADOW | ") for c in cards)
    assert sorted(c.split(" | ")[1] for c in cards) == sorted(a["symbol"] for a in allowed)
    assert api.token not in p.stdout + p.stderr  # the token is never printed


def test_sigterm_ends_the_run_cleanly_with_journal_and_report(tmp_path: Path) -> None:
    import signal as sig
    import sqlite3
    import time

    copy_packaged_settings(tmp_path)
    env = cli_env(COLUMNS="200")
    # 120 market minutes at 60x take 2 minutes: long enough to be stopped in the middle.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ultra_signals", "shadow", "--duration", "120", "--speed", "60", "--metrics-port", "0",
         "--hold-metrics", "300"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        db = tmp_path / "var" / "journal.db"
        while time.monotonic() < deadline and not db.exists():
            time.sleep(0.2)
        time.sleep(4)
        proc.send_signal(sig.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]  # interrupted: exit status 1, and no 300 s metrics hold after it
    assert "holding the metrics endpoint" not in _out
    with sqlite3.connect(db) as c:
        [(status,)] = c.execute("select status from runs").fetchall()
    assert status == "interrupted"
    [rep] = (tmp_path / "reports").glob("shadow_results_*.json")
    data = json.loads(rep.read_text())
    assert data["status"] == "interrupted" and data["verdict"] == "NO-GO"
    assert "run interrupted" in next(c["evidence"] for c in data["criteria"] if c["name"] == "no_crash")


def test_sigterm_during_the_metrics_hold_ends_it_and_closes_the_journal(tmp_path: Path) -> None:
    import signal as sig
    import sqlite3
    import time

    copy_packaged_settings(tmp_path)
    env = cli_env(COLUMNS="200", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ultra_signals", "shadow", "--duration", "5", "--metrics-port", "0",
         "--hold-metrics", "300"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # ends at the hold line, or at EOF if the process died first
            seen.append(line)
            if "holding the metrics endpoint" in line or time.monotonic() > deadline:
                break
        assert "holding the metrics endpoint" in seen[-1], "".join(seen)[-3000:]
        time.sleep(0.5)
        proc.send_signal(sig.SIGTERM)
        _out, err = proc.communicate(timeout=30)  # the old code died of the signal here, journal not closed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 1), f"exit {proc.returncode}: {err[-3000:]}"  # the run's own verdict, not -15
    with sqlite3.connect(tmp_path / "var" / "journal.db") as c:
        [(status,)] = c.execute("select status from runs").fetchall()
    assert status == "completed"


def test_shadow_on_replayed_candles_runs_for_its_duration(tmp_path: Path) -> None:
    p = run_cli(
        tmp_path, "shadow", "--source", "replay", "--data", str(require_data("klines")), "--symbols", "ETHBTC",
        "--duration", "360", "--metrics-port", "0",
    )  # fmt: skip
    assert p.returncode == 1 and "exit status 1: NO-GO" in p.stdout, p.stderr[-3000:]  # no cap reached: NO-GO
    [rep] = (tmp_path / "reports").glob("shadow_results_*.json")
    window = json.loads(rep.read_text())["market_window"]
    assert window["planned_end_ms"] - window["start_ms"] == 360 * 60_000
    assert window["start_ms"] < window["end_ms"] <= window["planned_end_ms"]


def test_evaluate_command_writes_its_reports_and_refuses_bad_flags_clearly(tmp_path: Path) -> None:
    data = tmp_path / "klines"
    data.mkdir()
    shutil.copy(require_data("klines", "XRPUSDT-5m.csv"), data / "XRPUSDT-5m.csv")
    common = ("evaluate", "--data", str(data), "--timeframes", "5m,15m,1h", "--out", str(tmp_path / "ev"))
    p = run_cli(tmp_path, *common, "--train-days", "1", "--test-days", "0.5", "--draws", "50", "--name", "x")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "allowed: first_come" in p.stdout and (tmp_path / "ev" / "x.png").exists()
    assert (tmp_path / "reports" / "evaluate" / "ledger.jsonl").exists()  # configurations tried are counted
    bad = run_cli(tmp_path, *common, "--horizon", "soon")
    assert bad.returncode == 2 and "--horizon" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli(tmp_path, *common, "--set", "nokey")
    assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr
    bad = run_cli(tmp_path, *common, "--train-days", "30")
    assert bad.returncode == 2 and "no walk-forward fold" in bad.stderr


def test_version_and_exit_status_help(tmp_path: Path) -> None:
    from ultra_signals import __version__

    p = run_cli(tmp_path, "--version")
    assert p.returncode == 0 and p.stdout.startswith(f"ultra-signals {__version__}")
    for args in (("shadow", "--help"), ("replay", "--help"), ("rollout", "gate", "--help")):
        h = run_cli(tmp_path, *args)
        assert h.returncode == 0 and "Exit status" in h.stdout, h.stdout
    assert run_cli(tmp_path, "shadow", "--no-such-flag").returncode == 2  # usage error


def test_a_run_that_fails_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source dies mid-run: the run is recorded as failed, the report says CRASH, exit status 3."""
    from collections.abc import AsyncIterator

    from typer.testing import CliRunner

    from ultra_signals.apps.cli import app
    from ultra_signals.core.events import MarketEvent
    from ultra_signals.sources.sim import SimSource

    real = SimSource.events

    async def dying(self: SimSource) -> AsyncIterator[MarketEvent]:
        n = 0
        async for ev in real(self):
            n += 1
            if n > 20_000:
                raise RuntimeError("feed died")
            yield ev

    monkeypatch.setattr(SimSource, "events", dying)
    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("ULTRA_SIGNALS_")]:
        monkeypatch.delenv(k)
    r = CliRunner().invoke(app, ["shadow", "--duration", "120", "--metrics-port", "0"])
    assert r.exit_code == 3, r.output
    [rep] = (tmp_path / "reports").glob("shadow_results_*.json")
    data = json.loads(rep.read_text())
    assert data["status"] == "failed" and "feed died" in data["crash"] and data["verdict"] == "NO-GO"
