"""Binance broker against the local fake USDⓈ-M trading server (signed REST, user data stream, real exchangeInfo)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import require_data
from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text
from tests.helpers import RecordingNotifier, until_or_fail
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.execution.breakers import TradingState, load_state
from ultra_signals.execution.brokers.base import BrokerError, OrderKind, client_order_id
from ultra_signals.execution.brokers.binance import BinanceBroker
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.transport.messages import plain_text
from ultra_signals.venues.binance.client import BinanceFuturesClient
from ultra_signals.venues.binance.endpoints import Endpoints

pytestmark = pytest.mark.timeout(60)
KEY, SECRET = "fake-api-key-0123", "fake-api-secret-4567"
T0 = 1_767_571_200_000


def exchange() -> FakeFuturesExchange:
    path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
    return FakeFuturesExchange(load_recorded_exchange_info_text(str(path)), KEY, SECRET)


def settings_for(ex: FakeFuturesExchange, tmp_path: Path, **over: Any) -> Settings:
    return load_settings(
        "canary",
        overrides={
            "runtime.source": "binance",
            "binance.rest_url": ex.rest_url,
            "binance.ws_url": ex.ws_url,
            "journal.url": f"sqlite:///{tmp_path}/journal.db",
            "execution.request_timeout_s": 0.5,
            **over,
        },
        environ={"ULTRA_SIGNALS_BINANCE__API_KEY": KEY, "ULTRA_SIGNALS_BINANCE__API_SECRET": SECRET},
    )


def decision(n: int, price: float = 32_000.0, side: Side = Side.LONG, symbol: str = "BTCUSDT") -> Decision:
    sign = 1 if side is Side.LONG else -1
    c = Candidate(
        symbol=symbol,
        timeframe="5m",
        bar_open_time=T0 + n * 300_000,
        ts=T0 + (n + 1) * 300_000,
        side=side,
        score=0.7,
        confidence=0.8,
        entry=price,
        stop=price - sign * 200.0,
        targets=(price + sign * 400.0,),
    )
    return Decision("canary-run", c, True, None)


Scenario = Callable[[FakeFuturesExchange, TradingExecutor, RecordingNotifier, Journal], Awaitable[None]]


def run_scenario(tmp_path: Path, scenario: Scenario, before_start: Callable[[FakeFuturesExchange], None] | None = None,
                 **over: Any) -> None:  # fmt: skip
    async def main() -> None:
        ex = exchange()
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        if before_start is not None:
            before_start(ex)
        s = settings_for(ex, tmp_path, **over)
        journal = Journal(s.journal.url)
        notifier = RecordingNotifier()
        executor = make_executor(s, Metrics(), journal, notifier, "canary-run")
        assert isinstance(executor, TradingExecutor) and executor.broker.name == "binance"
        try:
            await executor.start()
            await scenario(ex, executor, notifier, journal)
        finally:
            await executor.aclose()
            journal.close()
            await ex.stop()

    asyncio.run(main())


def test_entry_is_sized_from_real_filters_with_both_brackets_and_oco(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        assert e.filters is not None and e.filters["BTCUSDT"].step_size == Decimal("0.001")  # fetched, real
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain()
        await until_or_fail(lambda: e.trades[d.id].status == "open")
        entry = ex.orders_with_cid(client_order_id(d.id, OrderKind.ENTRY))
        assert len(entry) == 1 and entry[0].status == "FILLED"
        assert entry[0].qty == Decimal("0.015")  # canary max_notional 500 / 32000 = 0.015625 -> step 0.001
        assert ex.open_orders() == []  # no conditional order on /fapi/v1/order: they are algo orders now
        brackets = sorted(
            (a.type, a.trigger, a.qty, a.reduce_only, a.side, a.working_type) for a in ex.open_algo_orders()
        )
        assert brackets == [
            ("STOP_MARKET", Decimal("31800"), Decimal("0.015"), True, "SELL", "MARK_PRICE"),
            ("TAKE_PROFIT_MARKET", Decimal("32400"), Decimal("0.015"), True, "SELL", "MARK_PRICE"),
        ]
        assert {a.cid for a in ex.open_algo_orders()} == {
            client_order_id(d.id, OrderKind.STOP),
            client_order_id(d.id, OrderKind.TAKE_PROFIT),
        }
        assert ex.position("BTCUSDT") == Decimal("0.015")
        await ex.set_price("BTCUSDT", "31790")  # the stop triggers
        await until_or_fail(lambda: e.trades[d.id].status == "closed")
        await e.broker.drain()
        await until_or_fail(lambda: not ex.open_algo_orders())  # the take-profit was cancelled (no OCO on USDⓈ-M)
        assert ex.position("BTCUSDT") == 0
        t = ExecStore(j.engine).trade(d.id)
        assert t is not None and t["exit_kind"] == "stop" and t["pnl"] < 0
        kinds = [f["kind"] for f in ExecStore(j.engine).fills("canary-run")]
        assert kinds == ["entry", "stop"]
        # Every request that needed a signature carried a valid one (the fake refuses anything else).
        assert all("timestamp" in p for m, path, p in ex.requests if path == "/fapi/v1/order")

    run_scenario(tmp_path, scenario)


def test_timed_out_order_is_looked_up_not_sent_twice(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.delay_next("POST", "/fapi/v1/order", seconds=1.5)  # the order is placed; the answer comes too late
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain(10)
        cid = client_order_id(d.id, OrderKind.ENTRY)
        assert len(ex.orders_with_cid(cid)) == 1
        posts = [p["newClientOrderId"] for m, path, p in ex.requests if m == "POST" and path == "/fapi/v1/order"]
        assert posts[0] == cid and posts.count(cid) == 1  # sent once; the timeout was followed by a lookup
        assert any(m == "GET" and path == "/fapi/v1/order" for m, path, _ in ex.requests)  # it asked first
        await until_or_fail(lambda: len(ex.open_algo_orders()) == 2)  # and the brackets still went out
        assert ex.position("BTCUSDT") == Decimal("0.015")

    run_scenario(tmp_path, scenario)


def test_binance_rules_the_fake_enforces_and_the_broker_survives(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        params = {
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "price": "30000",
            "quantity": "0.010", "newClientOrderId": "manual-dup-test",
        }  # fmt: skip
        await b._request("POST", "/fapi/v1/order", params)
        with pytest.raises(BrokerError) as dup:
            await b._request("POST", "/fapi/v1/order", params)
        assert dup.value.code == -4116  # duplicated among open orders
        again = await b.place(params)  # the idempotent path returns the existing order instead
        assert again["clientOrderId"] == "manual-dup-test" and len(ex.orders_with_cid("manual-dup-test")) == 1
        with pytest.raises(BrokerError) as tick:
            await b._request("POST", "/fapi/v1/order", {**params, "price": "30000.005", "newClientOrderId": "t2"})
        assert tick.value.code == -4014
        bad = BinanceBroker(
            BinanceFuturesClient(
                Endpoints(ex.rest_url, ex.ws_url), api_key=SecretStr(KEY), api_secret=SecretStr("wrong")
            )
        )
        with pytest.raises(BrokerError) as sig:
            await bad.account_equity()
        assert sig.value.code == -1022 and "wrong" not in str(sig.value)
        await bad.aclose()
        async with httpx.AsyncClient(base_url=ex.rest_url, headers={"X-MBX-APIKEY": KEY}) as c:
            stale = await c.get(f"/fapi/v2/account?timestamp={int(time.time() * 1000) - 60_000}&signature=00")
            assert stale.json()["code"] == -1022  # a forged signature is refused before the clock is even read

    run_scenario(tmp_path, scenario)


def test_rejects_count_toward_the_order_error_breaker(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.fail_next("POST", "/fapi/v1/order", code=-2019, times=2)  # margin is insufficient, twice
        for i in (0, 1):
            e.on_signal(decision(i * 2))
            await e.broker.drain()
        assert [t.status for t in e.trades.values()] == ["cancelled", "cancelled"]
        assert e.blocking_reason() == "trading_halted"
        assert any("order_errors" in plain_text(x.payload) for x in n.notices)
        assert ex.open_orders() == [] and ex.positions == {}

    # Two errors 10 minutes apart in market time: inside a one-hour window.
    run_scenario(tmp_path, scenario, **{"execution.breakers.order_errors_window_s": 3600})


def test_kill_switch_leaves_no_order_and_no_position(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain()
        await until_or_fail(lambda: len(ex.open_algo_orders()) == 2)
        await ex.set_price("ETHUSDT", "2000")
        ex.open_outside("ETHUSDT", "-0.500", "2000")  # and one the runner never knew about
        report = await e.broker.kill()
        assert report.clean, report
        assert sorted(report.flattened) == ["BTCUSDT", "ETHUSDT"] and report.cancelled_orders == 2
        assert ex.open_orders() == [] and ex.open_algo_orders() == [] and ex.positions == {}

    run_scenario(tmp_path, scenario)


def test_reconciliation_halts_on_a_position_opened_outside(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        (found,) = e.reconciliations
        assert [x.kind for x in found] == ["unknown_position"] and found[0].symbol == "ETHUSDT"
        assert load_state(j).state is TradingState.HALTED and e.blocking_reason() == "trading_halted"
        assert any(
            x.kind == "breaker" and "reconcile" in plain_text(x.payload) and "ETHUSDT" in plain_text(x.payload)
            for x in n.notices
        )
        assert ex.position("ETHUSDT") == Decimal("0.5")  # never adopted, never closed behind the operator's back
        e.on_signal(decision(0))
        await e.broker.drain()
        assert ex.orders == {}

    run_scenario(tmp_path, scenario, before_start=lambda ex: ex.open_outside("ETHUSDT", "0.5", "2000"))


def test_missing_bracket_found_after_a_user_stream_reconnect(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        assert e.reconciliations == [[]]  # the start-up check agreed
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain()
        await until_or_fail(lambda: len(ex.open_algo_orders()) == 2 and e.trades[d.id].status == "open")
        stop = next(a for a in ex.open_algo_orders() if a.type == "STOP_MARKET")
        stop.status = "CANCELED"  # someone cancelled it in the app while the stream was down
        await ex.drop_streams()
        await until_or_fail(lambda: len(e.reconciliations) == 2, timeout=10)
        assert [x.kind for x in e.reconciliations[1]] == ["missing_bracket"]
        assert e.blocking_reason() == "trading_halted"

    run_scenario(tmp_path, scenario)


def test_listen_key_is_kept_alive(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        await until_or_fail(lambda: any(m == "PUT" and p == "/fapi/v1/listenKey" for m, p, _ in ex.requests), timeout=5)

    run_scenario(tmp_path, scenario, **{"execution.listen_key_keepalive_s": 0.2})


def test_missing_api_keys_are_a_clear_error(tmp_path: Path) -> None:
    s = load_settings(
        "canary", overrides={"runtime.source": "binance", "journal.url": f"sqlite:///{tmp_path}/j.db"}, environ={}
    )
    with pytest.raises(BrokerError, match=r"api_key and binance\.api_secret are required"):
        make_executor(s, None, Journal(s.journal.url), RecordingNotifier(), "r")
