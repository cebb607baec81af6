"""``ultra-signals kill`` against the strict Binance fake: algo brackets and orders cancelled, positions flattened."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import require_data
from tests.fakes.binance_futures_server import FakeAlgoOrder, FakeFuturesExchange, load_recorded_exchange_info_text
from ultra_signals.apps.cli import app

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
    env: dict[str, str | None] = {
        "ULTRA_SIGNALS_TEST_DATA": None,  # the tests' own variable is not a setting
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
