"""A canary run end to end through the CLI against the strict Binance fake: the executable runbook of a canary.

``preflight -p canary`` → ``shadow -p canary --source binance`` with the Binance broker (not paper) → ``tca --run``
→ ``rollout gate``, each a real ``ultra-signals`` process. Market data and trading come from ONE local server
(``tests/fakes/binance_futures_server.py``: ``/market`` and ``/public`` streams, REST klines and exchangeInfo,
signed trading, the Algo Service, ``/private`` user data), whose single price path is a real Binance USDⓈ-M
recording (``../shared/data/klines/XRPUSDT-5m.csv``, replayed one bar a minute as 1m bars by
``tests/fakes/binance_price_path.py``). The pipeline decides on those bars, the broker places the entry and both
brackets as algo orders, the path then plays a recorded stretch that reaches the stop, the fake triggers it
(ALGO_UPDATE TRIGGERED → market order → ORDER_TRADE_UPDATE + ACCOUNT_UPDATE on ``/private``), and the runner closes
the trade from the user stream alone.

The run is configured for a test (the packaged profiles with a few keys changed, see ``TEST_KEYS``): one symbol,
the 1m timeframe only and relaxed score filters so a signal comes on the first live bar; caps, gateway, breakers,
account set-up and sizing stay the canary's. Everything else is the code a real canary runs. It lasts about two
minutes of wall time (a live source runs on the wall clock: a 1m bar closes once a minute).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEFAULTS, REDIS_URL, require_data
from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text
from tests.fakes.binance_price_path import PricePath, read_bars

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
KEY, SECRET = "canary-e2e-key-SECRET", "canary-e2e-secret-SECRET"
SYMBOL = "XRPUSDT"
RUN_MINUTES = 2  # one bar closes within the first minute of market time; the second leaves room for the stop

#: What the test changes in the packaged settings and canary profile (dotted keys), and why.
TEST_KEYS: dict[str, Any] = {
    # One symbol the recording has, on one timeframe that closes once a minute.
    "runtime.symbols": [SYMBOL],
    "runtime.timeframes": ["1m"],
    "runtime.primary_timeframe": "1m",
    # Relaxed filters: nearly every bar of the recording is a candidate, so the first live bar signals.
    "scoring.entry_threshold": 0.05,
    "filters.min_adx": 0.0,
    "filters.min_confidence": 0.0,
    "filters.min_atr_pct": 0.0,
    "sniper.mtf_confirm": False,
    # The take-profit three risk units away: the recorded stretch the path plays reaches the stop first.
    "execution.take_profit_target": 3,
    # The machine's Redis, in a namespace of this test's own (the `namespace` fixture deletes its keys after).
    "redis.url": REDIS_URL,
    "metrics.port": 0,
    "notifier.sink": "console",
}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def write_settings(tmp: Path, ex: FakeFuturesExchange, namespace: str) -> Path:
    """``settings.yaml`` and ``profiles/canary.yaml`` in ``tmp``: the packaged ones with TEST_KEYS and the fake's URLs."""
    base = yaml.safe_load((DEFAULTS / "settings.yaml").read_text(encoding="utf-8"))
    canary = yaml.safe_load((DEFAULTS / "profiles" / "canary.yaml").read_text(encoding="utf-8"))
    keys = {
        **TEST_KEYS,
        "redis.namespace": namespace,
        "journal.url": f"sqlite:///{tmp}/journal.db",
        "report.dir": str(tmp / "reports"),
        "binance.rest_url": ex.rest_url,
        "binance.ws_url": ex.ws_url,
        "binance.spot_rest_url": ex.rest_url,
    }
    for dotted, value in keys.items():
        _set(base, dotted, value)
        if dotted.split(".")[0] in canary:  # the profile wins over the base: change it there too
            _set(canary, dotted, value)
    (tmp / "profiles").mkdir(exist_ok=True)
    (tmp / "profiles" / "canary.yaml").write_text(yaml.safe_dump(canary), encoding="utf-8")
    path = tmp / "settings.yaml"
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    return path


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The fake's event loop, in a thread of this process; the CLI runs in child processes."""
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(10)
    lp.close()


def on(loop: asyncio.AbstractEventLoop, coro: Any, timeout: float = 10.0) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """One ``ultra-signals`` command in its own process, bounded in time; its output is also kept beside the
    journal (``<command>.log``) for whoever reads a failure."""
    r = subprocess.run(
        [sys.executable, "-m", "ultra_signals", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    (cwd / f"{'-'.join(a for a in args[:2] if not a.startswith('-'))}.log").write_text(
        f"$ ultra-signals {' '.join(args)}\n{r.stdout}\n--- stderr ---\n{r.stderr}", encoding="utf-8"
    )
    return r


def test_a_canary_end_to_end_through_the_cli_on_the_strict_fake(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, namespace: str
) -> None:
    info = load_recorded_exchange_info_text(str(require_data("ws", "binance-futures-exchangeinfo-20210722.txt")))
    bars = read_bars(require_data("klines", f"{SYMBOL}-5m.csv"))
    ex = FakeFuturesExchange(info, KEY, SECRET)
    on(loop, ex.start())
    path = PricePath(ex, SYMBOL, bars)
    try:
        settings = write_settings(tmp_path, ex, namespace)
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ULTRA_SIGNALS_")}
        env |= {
            "ULTRA_SIGNALS_SETTINGS": str(settings),
            "ULTRA_SIGNALS_BINANCE__API_KEY": KEY,
            "ULTRA_SIGNALS_BINANCE__API_SECRET": SECRET,
            "COLUMNS": "400",
        }
        on(loop, path.start())

        # A canary that has to create its journal at start begins HALTED (caps windows and trading state lost?,
        # bootstrap.halt_if_journal_lost): preflight says so, and a first canary creates its journal on purpose.
        pre = cli(["preflight", "-p", "canary"], env, tmp_path, 90)
        assert pre.returncode == 1 and "1 failed: journal" in pre.stdout, pre.stdout + pre.stderr
        db = cli(["db", "upgrade", "-p", "canary"], env, tmp_path, 60)
        assert db.returncode == 0 and "schema" in db.stdout, db.stdout + db.stderr
        pre = cli(["preflight", "-p", "canary"], env, tmp_path, 90)
        assert pre.returncode == 0, pre.stdout + pre.stderr
        assert "all checks passed" in pre.stdout
        assert ex.orders == {} and ex.algo_orders == {}  # preflight never trades

        run = cli(
            ["shadow", "-p", "canary", "--source", "binance", "--duration", str(RUN_MINUTES), "--metrics-port", "0"],
            env, tmp_path, 60 * RUN_MINUTES + 120,
        )  # fmt: skip
        out = run.stdout + run.stderr
        assert "Traceback" not in out, out
        assert run.returncode in (0, 1), out  # GO or NO-GO: a canary this short is never promotable
        assert KEY not in out and SECRET not in out

        # The venue side, from the fake's own log.
        entries = [p for m, p_, p in ex.requests if m == "POST" and p_ == "/fapi/v1/order"]
        algos = [p for m, p_, p in ex.requests if m == "POST" and p_ == "/fapi/v1/algoOrder"]
        assert entries, f"no entry order reached the fake:\n{out}"
        assert entries[0]["type"] == "MARKET" and entries[0]["symbol"] == SYMBOL
        kinds = sorted(a["type"] for a in algos[:2])
        assert kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET"], algos
        assert all(a["algoType"] == "CONDITIONAL" and a["reduceOnly"] == "true" for a in algos)
        assert path.stretches, "the price path never saw a position with both brackets resting"
        (stop,) = [a for a in ex.algo_orders.values() if a.type == "STOP_MARKET"][:1]
        assert stop.status == "FINISHED" and stop.actual_order_id, stop
        assert ex.orders[int(stop.actual_order_id)].status == "FILLED"
        assert ex.position(SYMBOL) == 0 and ex.open_algo_orders() == [] and ex.open_orders() == []
        # On /private, in order: the stop's ALGO_UPDATE TRIGGERED, the fill of the order it placed, the flat position.
        pushed = ex.pushed
        i = next(n for n, e in enumerate(pushed) if e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "TRIGGERED")
        assert pushed[i]["o"]["caid"] == stop.cid and pushed[i]["o"]["ai"] == stop.actual_order_id
        j = next(n for n, e in enumerate(pushed) if n > i and e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE")
        assert str(pushed[j]["o"]["i"]) == stop.actual_order_id and pushed[j]["o"]["X"] == "FILLED"
        assert pushed[j + 1]["e"] == "ACCOUNT_UPDATE" and float(pushed[j + 1]["a"]["P"][0]["pa"]) == 0.0
        # Never -4120, and no refused order: the only error on the order path is the broker's deliberate lookup of
        # the entry's client id before the first send (-2013 "Order does not exist": nobody placed it before).
        assert not [e for e in ex.errors if e[2] == -4120], ex.errors
        order_path = [e for e in ex.errors if e[1] in ("/fapi/v1/order", "/fapi/v1/algoOrder")]
        assert order_path in ([], [("GET", "/fapi/v1/order", -2013)]), ex.errors
        # User data only on /private/ws/<listenKey>; market data on its routes; nothing unrouted.
        assert ex.unrouted_user_connections() == []
        user = [p for p in ex.ws_paths if p.startswith("/private/")]
        assert user and all(p.startswith("/private/ws/") and p.split("/")[3] in ex._issued for p in user)
        others = [p for p in ex.ws_paths if not p.startswith("/private/")]
        assert others and all(p.startswith(("/market/stream?streams=", "/public/stream?streams=")) for p in others)
        assert any("@kline_1m" in p for p in others if p.startswith("/market/"))

        # The journal: the trade closed at its stop, from the user stream.
        from ultra_signals.journal.trading import ExecStore
        from ultra_signals.journal.writer import Journal

        journal = Journal(f"sqlite:///{tmp_path}/journal.db")
        try:
            run_id = journal.latest_run_id()
            assert run_id is not None
            trades = ExecStore(journal.engine).trades(run_id)
            fills = ExecStore(journal.engine).fills(run_id)
        finally:
            journal.close()
        assert len(trades) == 1, trades
        (trade,) = trades
        assert trade["status"] == "closed" and trade["exit_kind"] == "stop", trade
        assert trade["broker"] == "binance" and trade["symbol"] == SYMBOL
        assert sorted(f["kind"] for f in fills) == ["entry", "stop"], fills
        assert all(f["simulated"] == 0 for f in fills)
        # What the journal holds is what the venue did, as the user stream told it: prices, quantities, fees, PnL.
        venue = {
            "entry": ex.orders_with_cid(entries[0]["newClientOrderId"])[-1],
            "stop": ex.orders[int(stop.actual_order_id)],
        }
        for f in fills:
            o = venue[f["kind"]]
            commission = sum(float(t["commission"]) for t in ex.user_trades if t["orderId"] == o.order_id)
            assert f["price"] == pytest.approx(float(o.avg_price)) and f["qty"] == pytest.approx(float(o.executed))
            assert f["fee"] == pytest.approx(commission), (f, commission)
        realized = sum(float(t["realizedPnl"]) for t in ex.user_trades)
        assert trade["gross_pnl"] == pytest.approx(realized) and trade["exit_price"] == pytest.approx(
            float(venue["stop"].avg_price)
        )

        tca = cli(["tca", "--run", run_id, "-p", "canary"], env, tmp_path, 60)
        assert tca.returncode == 0, tca.stdout + tca.stderr
        md = (tmp_path / "reports" / f"tca_{run_id}.md").read_text(encoding="utf-8")
        assert "SIMULATED" not in md and "entry" in md and "stop" in md

        gate = cli(["rollout", "gate", "--run", run_id, "-p", "canary"], env, tmp_path, 60)
        assert gate.returncode in (0, 1), gate.stdout + gate.stderr
        assert "rollout gate" in gate.stdout and "entry 1" in gate.stdout and "stop 1" in gate.stdout
    finally:
        on(loop, path.stop())
        on(loop, ex.stop())
