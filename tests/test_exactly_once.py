"""Exactly once across runners: two ``ultra-signals replay`` processes on the SAME symbols and namespace.

Both runners decide every bar (same data, same settings), each with its own journal and Redis client, paced so
their event times interleave.  For each (symbol, timeframe, bar) one of them wins the reservation; the union of
the journals holds each allowed bar once, the fake Bot API receives one card per allowed bar, and the loser's
row says who took it (``taken:<winner run id>``).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import require_data
from tests.fakes.telegram_server import FakeBotApi
from tests.helpers import cli_env
from tests.replay_procs import ReplayRunners

SYMBOLS = "ADABTC,ETHBTC,LTCBTC,XMRBTC"
FROM, TO, SPEED = "2018-01-19T00:00:00Z", "2018-01-20T12:00:00Z", 20_000

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_two_runners_on_the_same_symbols_reserve_journal_and_announce_each_bar_once(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    klines = require_data("klines")
    with FakeBotApi() as api:
        env = cli_env(
            ULTRA_SIGNALS_REDIS__ENABLED="true",
            ULTRA_SIGNALS_REDIS__URL=redis_url,
            ULTRA_SIGNALS_REDIS__NAMESPACE=namespace,
            ULTRA_SIGNALS_EXECUTION__BROKER="none",
            ULTRA_SIGNALS_NOTIFIER__SINK="telegram",
            ULTRA_SIGNALS_TELEGRAM__API_URL=api.url,
            ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN=api.token,
            ULTRA_SIGNALS_TELEGRAM__CHAT_IDS="4242",
            ULTRA_SIGNALS_TELEGRAM__ALLOWED_CHAT_IDS="4242",
            # Deliver everything before exit (the outbox would otherwise keep the rest for the next start).
            ULTRA_SIGNALS_TELEGRAM__PER_CHAT_INTERVAL_S="0",
            ULTRA_SIGNALS_TELEGRAM__DRAIN_TIMEOUT_S="60",
        )
        with ReplayRunners(tmp_path, env, cwd=tmp_path) as runners:
            for i in range(2):
                runners.start(
                    "--data", str(klines), "--symbols", SYMBOLS, "--timeframes", "5m,15m,1h",
                    "--from", FROM, "--to", TO, "--speed", str(SPEED),
                    "--journal", f"sqlite:///{tmp_path}/journal{i}.db",
                    "--namespace", namespace, "--metrics-port", "0", "--no-report",
                )  # fmt: skip
            runners.wait(timeout=150)
        cards = [d.plain for d in api.delivered_to("4242") if "sniper:allowed" in d.plain]

    rows: list[tuple[str, str, str, int, int, str | None]] = []
    runs: list[str] = []
    for i in range(2):
        with sqlite3.connect(tmp_path / f"journal{i}.db") as c:
            runs += [r for (r,) in c.execute("select run_id from runs")]
            rows += c.execute("select run_id, symbol, timeframe, ts, allowed, reason from decisions").fetchall()
    assert len(runs) == 2
    allowed = Counter((sym, tf, ts) for _run, sym, tf, ts, ok, _reason in rows if ok)
    taken = [(run, reason) for run, _s, _t, _ts, ok, reason in rows if not ok and (reason or "").startswith("taken")]
    # Not vacuous: signals went through, and the race was really run (each runner lost some bars to the other).
    assert allowed, "no allowed signal at all: the scenario exercised nothing"
    assert taken, "no bar was ever taken by the other runner: the two runners did not race"
    assert max(allowed.values()) == 1, [k for k, n in allowed.items() if n > 1]
    # Who took it is journaled, and it is the other runner.
    for run, reason in taken:
        winner = reason.split(":", 1)[1]
        assert winner in runs and winner != run
    # Every bar decided by one runner was decided by the other too: allowed once, taken once.
    allowed_keys = set(allowed)
    taken_keys = Counter(
        (s, t, ts) for _r, s, t, ts, ok, reason in rows if not ok and (reason or "").startswith("taken")
    )
    assert set(taken_keys) <= allowed_keys
    # One card per allowed bar in the union.
    assert len(cards) == sum(allowed.values())
