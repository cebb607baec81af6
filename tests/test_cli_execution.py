"""``ultra-signals kill`` against the strict Binance fake: algo brackets and orders cancelled, positions flattened."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import require_data
from tests.fakes.binance_futures_server import FakeAlgoOrder, FakeFuturesExchange, load_recorded_exchange_info_text
from ultra_signals.apps.cli import app
from ultra_signals.execution.breakers import TradingState, halt_trading, load_state
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

pytestmark = pytest.mark.timeout(60)
KEY, SECRET = "cli-kill-key-SECRET", "cli-kill-secret-SECRET"


@pytest.fixture
def fake() -> Iterator[tuple[FakeFuturesExchange, asyncio.AbstractEventLoop]]:
    path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
    ex = FakeFuturesExchange(load_recorded_exchange_info_text(str(path)), KEY, SECRET)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(ex.start(), loop).result(10)
    yield ex, loop
    asyncio.run_coroutine_threadsafe(ex.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def on(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)


def test_kill_cancels_algo_brackets_and_orders_and_flattens(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop]
) -> None:
    ex, loop = fake
    on(loop, ex.set_price("BTCUSDT", "32000"))
    ex.open_outside("BTCUSDT", "0.015", "32000")
    ex.algo_orders[1] = FakeAlgoOrder(
        1, "stop-by-hand", "BTCUSDT", "SELL", "STOP_MARKET", Decimal("0.015"), Decimal("31000"), "MARK_PRICE",
        True, False,
    )  # fmt: skip
    env = {
        "ULTRA_SIGNALS_BINANCE__API_KEY": KEY,
        "ULTRA_SIGNALS_BINANCE__API_SECRET": SECRET,
        "ULTRA_SIGNALS_BINANCE__REST_URL": ex.rest_url,
        "ULTRA_SIGNALS_BINANCE__WS_URL": ex.ws_url,
    }
    url = f"sqlite:///{tmp_path}/journal.db"
    r = CliRunner().invoke(app, ["kill", "--yes", "--profile", "canary", "--journal-url", url], env=env)
    assert r.exit_code == 0, r.output
    assert ex.open_algo_orders() == [] and ex.open_orders() == [] and ex.positions == {}
    assert ("DELETE", "/fapi/v1/algoOpenOrders") in [(m, p) for m, p, _ in ex.requests]
    assert "HALTED" in r.output.upper()
    assert KEY not in r.output and SECRET not in r.output


def test_tca_and_the_rollout_gate_read_the_fills_of_an_algo_bracket_trade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live trade through the broker (entry at market, stop as an algo order triggered by the fake's price path),
    then ``tca --run`` and ``rollout gate`` on its journal: tca reports both real (not simulated) fills, the gate
    judges the entry fill's slippage."""
    from tests.helpers import RecordingNotifier, until_or_fail
    from tests.test_binance_broker import decision, entered, exchange, settings_for
    from ultra_signals.execution.executor import TradingExecutor, make_executor
    from ultra_signals.journal.writer import Journal
    from ultra_signals.observability.metrics import Metrics

    async def trade() -> str:
        ex = exchange()
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        s = settings_for(ex, tmp_path)
        journal = Journal(s.journal.url)
        # What the runner does around a run (it is not started here: no market data source in this test).
        journal.start_run("canary-run", mode="canary", profile="canary", source="binance", simulated=False,
                          namespace="venue-test", settings={})  # fmt: skip
        e = make_executor(s, Metrics(), journal, RecordingNotifier(), "canary-run")
        assert isinstance(e, TradingExecutor)
        try:
            await e.start()
            d = decision(0)
            e.on_signal(d)
            await e.broker.drain()
            await until_or_fail(entered(ex, e, d))
            await ex.set_price("BTCUSDT", "31790")
            await until_or_fail(lambda: e.trades[d.id].status == "closed")
            journal.end_run("canary-run", "completed", e.summary(), d.candidate.ts, d.candidate.ts + 3_600_000)
        finally:
            await e.aclose()
            journal.close()
            await ex.stop()
        return s.journal.url

    url = asyncio.run(trade())
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    tca = cli.invoke(app, ["tca", "--run", "canary-run", "--profile", "canary", "--journal-url", url])
    assert tca.exit_code == 0, tca.output
    md = (tmp_path / "reports" / "tca_canary-run.md").read_text()
    assert "SIMULATED" not in md and "stop" in md and "entry" in md
    gate = cli.invoke(app, ["rollout", "gate", "--run", "canary-run", "--profile", "canary", "--journal-url", url])
    assert gate.exit_code in (0, 1), gate.output
    assert "rollout gate" in gate.output and ("NO-GO" in gate.output) == (gate.exit_code == 1)
    from ultra_signals.apps.rollout import evaluate

    journal = Journal(url)
    fills = {c.name: c for c in evaluate(journal, "canary-run", tmp_path / "reports").criteria}["fills_within_slippage"]
    journal.close()
    # The gate reads the algo bracket's real fills (the entry and the stop that closed it, with their slippage), and
    # one round trip is not enough evidence for a stage: rollout.min_fills asks for 5 entries.
    ev = fills.evidence
    assert "entry 1" in ev and "stop 1" in ev and "SIMULATED" not in ev and "paper" not in ev.lower()
    assert not fills.passed and "need ≥ 5 entries" in ev


def synthetic_klines(close: float, n: int = 60, tf_ms: int = 300_000) -> list[list[Any]]:
    """Closed 5m bars ending now around ``close``, each 100 USDT high to low: ATR(14) = 100 (test data, not market)."""
    now = int(time.time() * 1000)
    last_open = now - now % tf_ms - tf_ms
    rows = []
    for i in range(n):
        t = last_open - (n - 1 - i) * tf_ms
        rows.append(
            [t, str(close), str(close + 50), str(close - 50), str(close), "10", t + tf_ms - 1, "0", 1, "0", "0", "0"]
        )
    return rows


def live_env(ex: FakeFuturesExchange) -> dict[str, str]:
    return {
        "ULTRA_SIGNALS_BINANCE__API_KEY": KEY,
        "ULTRA_SIGNALS_BINANCE__API_SECRET": SECRET,
        "ULTRA_SIGNALS_BINANCE__REST_URL": ex.rest_url,
        "ULTRA_SIGNALS_BINANCE__WS_URL": ex.ws_url,
        "ULTRA_SIGNALS_REDIS__ENABLED": "false",
    }


def btc_at_32000(
    fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop], tmp_path: Path
) -> tuple[FakeFuturesExchange, str]:
    """The strict fake with BTCUSDT at 32000 and 5m klines around it, and a fresh journal URL under ``tmp_path``."""
    ex, loop = fake
    on(loop, ex.set_price("BTCUSDT", "32000"))
    ex.klines[("BTCUSDT", "5m")] = synthetic_klines(32000.0)
    return ex, f"sqlite:///{tmp_path}/journal.db"


def test_force_enter_then_force_exit_on_the_strict_fake(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop]
) -> None:
    ex, url = btc_at_32000(fake, tmp_path)
    cli = CliRunner()
    common = ["--profile", "canary", "--journal-url", url]
    r = cli.invoke(app, ["force-enter", "BTCUSDT", "--side", "long", "--yes", *common], env=live_env(ex))
    assert r.exit_code == 0, r.output
    assert "open" in r.output and ex.position("BTCUSDT") == Decimal("0.015")
    stops = sorted((a.type, a.trigger, a.qty) for a in ex.open_algo_orders())
    assert stops == [
        ("STOP_MARKET", Decimal("31850"), Decimal("0.015")),
        ("TAKE_PROFIT_MARKET", Decimal("32150"), Decimal("0.015")),
    ]
    r2 = cli.invoke(app, ["force-exit", "BTCUSDT", "--yes", *common], env=live_env(ex))
    assert r2.exit_code == 0, r2.output
    assert "closed" in r2.output and ex.position("BTCUSDT") == 0 and ex.open_algo_orders() == []


def test_force_enter_min_size_and_the_halt_rule(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop]
) -> None:
    ex, url = btc_at_32000(fake, tmp_path)
    journal = Journal(url)
    halt_trading(journal, "drill", "halted for the test")
    journal.close()
    cli = CliRunner()
    args = [
        "force-enter",
        "BTCUSDT",
        "--side",
        "short",
        "--min-size",
        "--yes",
        "--profile",
        "canary",
        "--journal-url",
        url,
    ]
    refused = cli.invoke(app, args, env=live_env(ex))
    assert refused.exit_code == 1 and "HALTED" in refused.output.upper() and ex.orders == {}
    r = cli.invoke(app, [*args, "--force"], env=live_env(ex))
    assert r.exit_code == 0, r.output
    assert ex.position("BTCUSDT") == Decimal("-0.001")  # the smallest size the recorded filters allow
    journal = Journal(url)
    assert load_state(journal).state is TradingState.HALTED  # --force did not resume trading
    journal.close()


def test_the_daily_ledger_matches_the_exchange_income_and_names_what_differs(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ex, url = btc_at_32000(fake, tmp_path)
    loop = fake[1]
    cli = CliRunner()
    common = ["--profile", "canary", "--journal-url", url]
    assert (
        cli.invoke(app, ["force-enter", "BTCUSDT", "--side", "long", "--yes", *common], env=live_env(ex)).exit_code == 0
    )
    on(loop, ex.set_price("BTCUSDT", "32100"))
    assert cli.invoke(app, ["force-exit", "BTCUSDT", "--yes", *common], env=live_env(ex)).exit_code == 0
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = cli.invoke(app, ["ledger", "--day", today, *common], env=live_env(ex))
    assert r.exit_code == 0, r.output
    assert "3 income items, clean" in r.output  # two commissions and the realised PnL of the exit
    rows = (tmp_path / "reports" / f"ledger_{today}.csv").read_text().splitlines()
    assert rows[0].startswith("time,symbol,type,amount") and sum("matched" in x for x in rows) == 2
    ex._book_income("BTCUSDT", "COMMISSION", Decimal("-0.5"), int(time.time() * 1000), "999")  # a trade we never saw
    bad = cli.invoke(app, ["ledger", "--day", today, *common], env=live_env(ex))
    assert bad.exit_code == 1 and "trade 999: commission -0.5 on the exchange, no journaled fill" in bad.output


def test_shadow_canary_refuses_a_hedge_mode_account_with_a_clear_error(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    ex, loop = fake
    monkeypatch.chdir(tmp_path)
    on(loop, ex.set_price("BTCUSDT", "32000"))
    ex.dual_side = True
    url = f"sqlite:///{tmp_path}/journal.db"
    args = ["shadow", "--profile", "canary", "--source", "binance", "--duration", "1", "--journal", url]
    r = CliRunner().invoke(app, [*args, "--metrics-port", "0"], env=live_env(ex))
    assert r.exit_code == 2, r.output
    assert "Hedge Mode" in r.output and "recorded as failed" in r.output and "Traceback" not in r.output
    assert ex.orders == {} and ex.algo_orders == {} and ex.margin_types == {}
    journal = Journal(url)
    (run,) = [journal.run(rid) for rid in [journal.latest_run_id()] if rid]
    journal.close()
    assert run is not None and run["status"] == "failed"


def test_force_enter_passes_the_portfolio_limits_like_any_entry(
    tmp_path: Path, fake: tuple[FakeFuturesExchange, asyncio.AbstractEventLoop]
) -> None:
    """A forced entry is refused by ``execution.portfolio`` exactly as a pipeline one: reason journaled, nothing sent."""
    ex, url = btc_at_32000(fake, tmp_path)
    env = {**live_env(ex), "ULTRA_SIGNALS_EXECUTION__PORTFOLIO__MAX_TOTAL_NOTIONAL_USDT": "100"}
    r = CliRunner().invoke(
        app, ["force-enter", "BTCUSDT", "--side", "long", "--yes", "--profile", "canary", "--journal-url", url], env=env
    )
    assert r.exit_code == 1 and "refused by the risk gateway" in r.output
    assert ex.orders == {} and ex.open_algo_orders() == []
    journal = Journal(url)
    (run,) = [x["run_id"] for x in journal.runs() if x["run_id"].startswith("manual-")]
    (refused,) = [o for o in ExecStore(journal.engine).orders(run) if o["status"] == "refused"]
    assert refused["reason"] == "portfolio_total_notional" and "over 100.00 in total" in refused["detail"]
    journal.close()
