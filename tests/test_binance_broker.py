"""Binance broker against the local fake USDⓈ-M trading server (signed REST, user data stream, real exchangeInfo)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import require_data
from tests.fakes.binance_futures_server import FakeAlgoOrder, FakeFuturesExchange, load_recorded_exchange_info_text
from tests.helpers import RecordingNotifier, until_or_fail
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.execution.breakers import TradingState, load_state
from ultra_signals.execution.brokers.base import BrokerError, OrderKind, client_order_id, parse_client_id
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
        entry = ex.orders_with_cid(client_order_id(d.order_key("default"), OrderKind.ENTRY))
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
            client_order_id(d.order_key("default"), OrderKind.STOP),
            client_order_id(d.order_key("default"), OrderKind.TAKE_PROFIT),
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
        # Never a conditional type on /fapi/v1/order (-4120), never a user stream off the /private route.
        assert not [p for m, path, p in ex.requests if path == "/fapi/v1/order" and "STOP" in p.get("type", "")]
        assert ex.ws_paths and all(p.startswith("/private/ws/") for p in ex.ws_paths)
        assert ex.unrouted_user_connections() == []
        # The account was prepared before the first order: one-way checked, ISOLATED, leverage = the cap.
        assert ex.margin_types == {"BTCUSDT": "ISOLATED"} and ex.leverages == {"BTCUSDT": 5}
        first_order = next(i for i, (m, path, _) in enumerate(ex.requests) if path == "/fapi/v1/order")
        setup = [
            i for i, (m, path, _) in enumerate(ex.requests) if path in ("/fapi/v1/marginType", "/fapi/v1/leverage")
        ]
        assert setup and max(setup) < first_order

    run_scenario(tmp_path, scenario)


def test_timed_out_order_is_looked_up_not_sent_twice(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.delay_next("POST", "/fapi/v1/order", seconds=1.5)  # the order is placed; the answer comes too late
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain(10)
        cid = client_order_id(d.order_key("default"), OrderKind.ENTRY)
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
        # Client ids are run-independent: an id already used before our first attempt is someone else's order
        # (another runner, an earlier run), refused, never adopted; adopting is only for our own lost attempt
        # (test_timed_out_order_is_looked_up_not_sent_twice).
        with pytest.raises(BrokerError) as again:
            await b.place(params)
        assert again.value.code == -4116 and len(ex.orders_with_cid("manual-dup-test")) == 1
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


def entered(ex: FakeFuturesExchange, e: TradingExecutor, d: Decision) -> Callable[[], bool]:
    return lambda: len(ex.open_algo_orders()) == 2 and e.trades[d.id].status == "open"


async def enter(ex: FakeFuturesExchange, e: TradingExecutor, drain_s: float = 5.0) -> Decision:
    """Signal ``decision(0)`` and wait until its trade is open with both brackets resting at the exchange."""
    d = decision(0)
    e.on_signal(d)
    await e.broker.drain(drain_s)
    await until_or_fail(entered(ex, e, d))
    return d


def test_a_bracket_rejected_at_trigger_is_an_incident_and_the_position_is_closed(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = await enter(ex, e)
        ex.reject_next_trigger()  # the matching engine refuses the stop's order: the position is unprotected
        await ex.set_price("BTCUSDT", "31790")
        await until_or_fail(lambda: ex.position("BTCUSDT") == 0)  # flattened by the executor's incident path
        await e.broker.drain()
        assert e.blocking_reason() == "trading_halted"
        assert any(
            "missing_bracket" in plain_text(x.payload) and "algo REJECTED" in plain_text(x.payload) for x in n.notices
        )
        exits = ex.orders_with_cid(client_order_id(d.order_key("default"), OrderKind.EXIT))
        assert len(exits) == 1 and exits[0].status == "FILLED"

    run_scenario(tmp_path, scenario)


def test_a_bracket_refused_at_placement_is_an_incident(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.fail_next("POST", "/fapi/v1/algoOrder", code=-2019)
        d = decision(0)
        e.on_signal(d)
        await e.broker.drain()
        await until_or_fail(lambda: ex.position("BTCUSDT") == 0 and e.blocking_reason() == "trading_halted")
        await e.broker.drain()
        assert any("missing_bracket" in plain_text(x.payload) for x in n.notices)

    run_scenario(tmp_path, scenario)


def test_listen_key_expired_mid_trade_fills_still_arrive(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        d = await enter(ex, e)
        await ex.expire_listen_keys()
        await until_or_fail(lambda: b.listen_keys_created == 2 and ex.stream_count() == 1, timeout=10)
        await until_or_fail(lambda: len(e.reconciliations) == 2, timeout=10)  # reconciled after the reconnect
        assert e.reconciliations[1] == []
        await ex.set_price("BTCUSDT", "32410")  # the take-profit triggers on the new stream
        await until_or_fail(lambda: e.trades[d.id].status == "closed")
        assert e.trades[d.id].exit_kind == "tp"
        assert all(p.startswith("/private/ws/") for p in ex.ws_paths) and len(ex.ws_paths) == 2

    run_scenario(tmp_path, scenario, **{"binance.rest_timeout_s": 1.0})


def test_a_clock_jump_costs_one_1021_then_the_order_goes_through(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        syncs = b.client.time_syncs
        ex.clock_offset_ms = -30_000  # our clock jumped 30 s ahead of the exchange's
        d = await enter(ex, e)
        assert (
            b.client.time_syncs == syncs + 1
            and len(ex.orders_with_cid(client_order_id(d.order_key("default"), OrderKind.ENTRY))) == 1
        )

    run_scenario(tmp_path, scenario)


def test_429_on_the_order_path_waits_and_sends_once(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        ex.http_next("POST", "/fapi/v1/order", 429, retry_after=1)
        await enter(ex, e, drain_s=10)
        entry_posts = [p for m, path, p in ex.requests if m == "POST" and path == "/fapi/v1/order"]
        assert len(entry_posts) == 2  # the refused one, then one after Retry-After: no burst
        assert any(why == "429 Retry-After" for why, _ in b.client.waits)

    run_scenario(tmp_path, scenario)


def test_a_timed_out_bracket_is_looked_up_not_placed_twice(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.delay_next("POST", "/fapi/v1/algoOrder", seconds=1.0)
        d = await enter(ex, e, drain_s=10)
        stop = client_order_id(d.order_key("default"), OrderKind.STOP)
        assert len(ex.algo_with_cid(stop)) == 1
        assert any(m == "GET" and path == "/fapi/v1/algoOrder" for m, path, _ in ex.requests)

    run_scenario(tmp_path, scenario)


def test_an_unknown_cancel_outcome_is_resolved_by_a_query(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        d = await enter(ex, e)
        tp = client_order_id(d.order_key("default"), OrderKind.TAKE_PROFIT)
        ex.http_next("DELETE", "/fapi/v1/algoOrder", 503, after_work=True)  # cancelled, but the answer is a 503
        found = await b.cancel_algo(tp)
        assert found is not None and found["algoStatus"] == "CANCELED"
        deletes = [p for m, path, p in ex.requests if m == "DELETE" and path == "/fapi/v1/algoOrder"]
        assert len(deletes) == 1 and ("GET", "/fapi/v1/algoOrder") in [(m, path) for m, path, _ in ex.requests]

    run_scenario(tmp_path, scenario)


def test_orphan_brackets_are_cancelled_at_start(tmp_path: Path) -> None:
    orphan = client_order_id("gone-while-down", OrderKind.STOP)

    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        assert b.orphans_cancelled == [orphan] and ex.open_algo_orders() == []
        assert e.reconciliations == [[]] and e.blocking_reason() is None

    def leave_orphan(ex: FakeFuturesExchange) -> None:
        ex.algo_orders[1] = FakeAlgoOrder(1, orphan, "BTCUSDT", "SELL", "STOP_MARKET", Decimal("0.015"),
                                          Decimal("31000"), "MARK_PRICE", True, False)  # fmt: skip

    run_scenario(tmp_path, scenario, before_start=leave_orphan)


def test_the_naked_window_is_measured_and_alerted(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        ex.delay_next("POST", "/fapi/v1/algoOrder", seconds=0.2)  # injected latency on the stop
        await enter(ex, e)
        assert len(b.naked_windows_ms) == 1 and b.naked_windows_ms[0] >= 200.0
        assert ExecStore(j.engine).events(kind="naked_window")
        assert any("NAKED POSITION" in plain_text(x.payload) for x in n.notices)
        assert e.metrics is not None
        assert e.metrics.registry.get_sample_value("bracket_naked_window_ms_count") == 1
        assert e.blocking_reason() is None  # an alert, not an order error: no breaker counts it

    run_scenario(tmp_path, scenario, **{"execution.naked_window_alert_ms": 100})


def test_decision_to_ack_is_observed_from_the_user_stream(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.http_next("POST", "/fapi/v1/order", 429, retry_after=1)  # the first try is refused: accepted ≥ 1 s later
        await enter(ex, e, drain_s=10)
        assert e.metrics is not None
        r = e.metrics.registry
        assert r.get_sample_value("latency_decision_to_ack_ms_count") == 1  # the entry's first ack, once
        assert (r.get_sample_value("latency_decision_to_ack_ms_sum") or 0.0) >= 1000.0  # the wait is in it

    run_scenario(tmp_path, scenario)


def test_hedge_mode_is_refused_before_any_order(tmp_path: Path) -> None:
    async def main() -> None:
        ex = exchange()
        await ex.start()
        ex.dual_side = True
        s = settings_for(ex, tmp_path)
        journal = Journal(s.journal.url)
        executor = make_executor(s, Metrics(), journal, RecordingNotifier(), "canary-run")
        try:
            with pytest.raises(BrokerError, match="Hedge Mode"):
                await executor.start()
        finally:
            await executor.aclose()
            journal.close()
            await ex.stop()
        assert ex.orders == {} and ex.algo_orders == {}

    asyncio.run(main())


def test_a_418_ban_stops_every_further_order(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        ex.http_next("POST", "/fapi/v1/order", 418, retry_after=600)
        e.on_signal(decision(0))
        await e.broker.drain()
        before = len(ex.requests)
        e.on_signal(decision(2))
        await e.broker.drain()
        assert not [r for r in ex.requests[before:] if r[1] == "/fapi/v1/order"]  # nothing reached the exchange
        assert ex.orders == {}
        assert e.blocking_reason() == "trading_halted"
        incidents = ExecStore(j.engine).events(kind="incident")
        assert incidents and "ip_banned" in str(incidents[0])  # journaled as an incident
        assert any(
            "ip_banned" in plain_text(x.payload) and "HALTED" in plain_text(x.payload).upper() for x in n.notices
        )

    run_scenario(tmp_path, scenario)


class _Listener:
    def __init__(self) -> None:
        self.fills: list[Any] = []
        self.updates: list[tuple[str, str, str | None]] = []

    def on_fill(self, fill: Any) -> None:
        self.fills.append(fill)

    def on_order_update(self, cid: str, symbol: str, status: str, reason: str | None, ts: int) -> None:
        self.updates.append((cid, status, reason))

    def on_broker_error(self, kind: str, detail: str, ts: int | None) -> None:
        self.updates.append((kind, "error", detail))

    def on_funding(self, symbol: str, amount: float, ts: int) -> None: ...

    def on_equity(self, equity: float) -> None: ...

    def on_reconnect(self) -> None: ...


def test_a_triggered_order_seen_before_its_algo_update_is_still_tied_to_the_bracket() -> None:
    b = BinanceBroker(BinanceFuturesClient(Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9")))
    lst = _Listener()
    b.bind(lst)  # type: ignore[arg-type]
    stop = client_order_id("d-1", OrderKind.STOP)
    fill = {"e": "ORDER_TRADE_UPDATE", "T": 5, "o": {"s": "BTCUSDT", "c": "autoalgo_77", "S": "SELL", "o": "MARKET",
            "q": "0.015", "x": "TRADE", "X": "FILLED", "i": 901, "l": "0.015", "L": "31790", "n": "0.1", "T": 5,
            "t": 1, "m": False, "R": True, "sp": "31800"}}  # fmt: skip
    b._on_stream(json.dumps(fill))
    assert lst.fills == []  # not ours as far as we know yet: held, not dropped
    algo = {"e": "ALGO_UPDATE", "T": 6, "E": 6, "o": {"caid": stop, "aid": 77, "s": "BTCUSDT", "X": "TRIGGERED",
            "ai": "901", "tp": "31800"}}  # fmt: skip
    b._on_stream(json.dumps(algo))
    (f,) = lst.fills
    assert f.client_id == stop and f.kind is OrderKind.STOP and f.reference_price == 31800.0


def test_maker_first_partial_fill_timeout_cancel_then_market_rest_and_brackets_for_the_total(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        await ex.set_price("BTCUSDT", "32010")  # the post-only buy at 32000 rests below the market
        d = decision(0)
        e.on_signal(d)
        entry = client_order_id(d.order_key("default"), OrderKind.ENTRY)
        await until_or_fail(lambda: bool(ex.open_orders()))
        (resting,) = ex.open_orders()
        assert (resting.type, resting.tif, resting.price, resting.qty) == (
            "LIMIT",
            "GTX",
            Decimal("32000"),
            Decimal("0.015"),
        )
        await ex.fill_partially(entry, "0.005")  # a maker partial fill, then nothing until the timeout
        await e.broker.drain(10)
        assert ex.orders_with_cid(entry)[0].status == "CANCELED" and ex.orders_with_cid(entry)[0].executed == Decimal(
            "0.005"
        )
        (fallback,) = ex.orders_with_cid(client_order_id(d.order_key("default"), OrderKind.ENTRY, 1))
        assert (fallback.type, fallback.qty, fallback.status) == ("MARKET", Decimal("0.010"), "FILLED")
        assert ex.position("BTCUSDT") == Decimal("0.015")
        assert sorted((a.type, a.qty) for a in ex.open_algo_orders()) == [
            ("STOP_MARKET", Decimal("0.015")),
            ("TAKE_PROFIT_MARKET", Decimal("0.015")),
        ]  # brackets cover exactly what was filled, maker part and market part together
        await until_or_fail(lambda: e.trades[d.id].status == "open")
        fills = ExecStore(j.engine).fills("canary-run")
        assert sorted((f["liquidity"], f["qty"]) for f in fills) == [("maker", 0.005), ("taker", 0.01)]

    run_scenario(tmp_path, scenario, **{"execution.entry_type": "limit_post_only", "execution.limit_timeout_s": 0.3})


def test_maker_first_without_fallback_brackets_only_the_partial_fill(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        await ex.set_price("BTCUSDT", "32010")
        d = decision(0)
        e.on_signal(d)
        await until_or_fail(lambda: bool(ex.open_orders()))
        await ex.fill_partially(client_order_id(d.order_key("default"), OrderKind.ENTRY), "0.004")
        await e.broker.drain(10)
        assert ex.position("BTCUSDT") == Decimal("0.004")
        assert sorted(a.qty for a in ex.open_algo_orders()) == [Decimal("0.004"), Decimal("0.004")]

    run_scenario(
        tmp_path,
        scenario,
        **{
            "execution.entry_type": "limit_post_only",
            "execution.limit_timeout_s": 0.3,
            "execution.market_fallback": False,
        },
    )


def test_funding_fee_is_booked_on_the_trade_and_a_liquidation_is_an_incident(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = await enter(ex, e)
        await ex.pay_funding("BTCUSDT", "-0.12")
        await until_or_fail(lambda: e.trades[d.id].funding == pytest.approx(-0.12))
        assert ExecStore(j.engine).trade(d.id)["funding"] == pytest.approx(-0.12)  # type: ignore[index]
        await ex.liquidate("BTCUSDT")
        await until_or_fail(lambda: ex.position("BTCUSDT") == 0)
        await until_or_fail(lambda: any("liquidation" in str(r) for r in ExecStore(j.engine).events()))

    run_scenario(tmp_path, scenario)


def test_a_bracket_that_filled_while_the_runner_was_down_closes_its_trade_at_restart(tmp_path: Path) -> None:
    async def main() -> None:
        ex = exchange()
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        s = settings_for(ex, tmp_path)
        d = decision(0)
        journal = Journal(s.journal.url)
        first = make_executor(s, Metrics(), journal, RecordingNotifier(), "canary-run")
        assert isinstance(first, TradingExecutor)
        await first.start()
        first.on_signal(d)
        await first.broker.drain()
        await until_or_fail(entered(ex, first, d))
        await first.aclose()  # the runner stops; its position and brackets stay on the exchange
        await ex.set_price("BTCUSDT", "31790")  # the stop fills while nobody listens
        assert ex.position("BTCUSDT") == 0
        second = make_executor(s, Metrics(), journal, RecordingNotifier(), "canary-run-2")
        assert isinstance(second, TradingExecutor)
        try:
            await second.start()
            t = second.trades[d.id]
            assert t.status == "closed" and t.exit_kind == "stop"
            assert second.reconciliations == [[]] and second.blocking_reason() is None
            assert ex.open_algo_orders() == []  # the take-profit left behind was cancelled as an orphan
            b = second.broker
            assert isinstance(b, BinanceBroker) and b.recovered_fills == 2  # the entry (already journaled) and the stop
        finally:
            await second.aclose()
            journal.close()
            await ex.stop()

    asyncio.run(main())


def test_a_bracket_fill_during_a_stream_gap_is_recovered_at_reconnect(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = await enter(ex, e)
        await ex.drop_streams()
        await ex.set_price("BTCUSDT", "32410")  # the take-profit fills while the stream is down
        assert ex.position("BTCUSDT") == 0
        await until_or_fail(lambda: e.trades[d.id].status == "closed", timeout=10)
        assert e.trades[d.id].exit_kind == "tp"
        await until_or_fail(lambda: len(e.reconciliations) == 2, timeout=10)
        assert e.reconciliations[1] == [] and e.blocking_reason() is None

    run_scenario(tmp_path, scenario)


def test_bracket_incident_action_halt_keeps_the_position_and_halts(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        await enter(ex, e)
        ex.reject_next_trigger()
        await ex.set_price("BTCUSDT", "31790")
        await until_or_fail(lambda: e.blocking_reason() == "trading_halted")
        await e.broker.drain()
        assert ex.position("BTCUSDT") == Decimal("0.015")
        assert any("protect it by hand" in plain_text(x.payload) for x in n.notices)

    run_scenario(tmp_path, scenario, **{"execution.bracket_incident_action": "halt"})


def test_a_listen_key_gone_without_notice_is_recreated_after_keepalive_answers_1125(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        await until_or_fail(lambda: ex.stream_count() == 1)
        ex.listen_keys.clear()  # Binance dropped the key; no listenKeyExpired reached us
        await until_or_fail(lambda: b.listen_keys_created == 2 and ex.stream_count() == 1, timeout=10)
        assert len(ex.ws_paths) == 2 and all(p.startswith("/private/ws/") for p in ex.ws_paths)
        assert ExecStore(j.engine).events(kind="order_error")  # the -1125 was journaled, not swallowed
        await enter(ex, e)  # and fills keep arriving on the new key

    run_scenario(tmp_path, scenario, **{"execution.listen_key_keepalive_s": 0.2})


def test_a_held_fill_no_algo_update_claims_is_handed_on_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import ultra_signals.execution.brokers.binance as mod

    b = BinanceBroker(BinanceFuturesClient(Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9")))
    lst = _Listener()
    b.bind(lst)  # type: ignore[arg-type]
    fill = {"e": "ORDER_TRADE_UPDATE", "T": 5, "o": {"s": "BTCUSDT", "c": "web_by_hand", "S": "SELL", "o": "MARKET",
            "q": "0.015", "x": "TRADE", "X": "FILLED", "i": 902, "l": "0.015", "L": "31790", "n": "0.1", "T": 5,
            "t": 2, "m": False, "R": True}}  # fmt: skip
    b._on_stream(json.dumps(fill))
    assert lst.fills == []
    monkeypatch.setattr(mod, "_PENDING_S", 0.0)
    b._on_stream(json.dumps({"e": "ACCOUNT_UPDATE", "T": 6, "a": {"m": "ORDER", "B": [], "P": []}}))
    (f,) = lst.fills
    assert f.client_id == "web_by_hand" and f.kind is OrderKind.EXIT  # not ours: the executor will say so


def test_an_entry_filled_during_a_stream_gap_opens_its_trade_at_reconnect(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        b = e.broker
        assert isinstance(b, BinanceBroker)
        await until_or_fail(lambda: ex.stream_count() == 1)
        await ex.drop_streams()
        d = decision(0)
        e.on_signal(d)  # the entry fills while the user stream is down: its ORDER_TRADE_UPDATE is lost
        await b.drain()
        assert ex.position("BTCUSDT") == Decimal("0.015")
        await until_or_fail(lambda: e.trades[d.id].status == "open", timeout=10)
        await until_or_fail(lambda: len(e.reconciliations) == 2, timeout=10)
        assert e.reconciliations[1] == [] and e.blocking_reason() is None
        kinds = [f["kind"] for f in ExecStore(j.engine).fills("canary-run")]
        assert kinds == ["entry"]  # recovered once, never twice

    run_scenario(tmp_path, scenario)


def test_an_entry_whose_stop_is_too_close_to_liquidation_is_refused(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        assert e.router.leverage_brackets["BTCUSDT"][0].mmr == 0.004  # read from the exchange at start
        d = decision(0)  # stop 200 below 32000: 0.6% away, liquidation at 50x is ~1.6% away
        e.on_signal(d)
        await e.broker.drain()
        assert ex.orders == {} and d.id not in e.trades
        refused = [o for o in ExecStore(j.engine).orders("canary-run") if o["status"] == "refused"]
        assert refused and refused[0]["reason"] == "liquidation_buffer"

    run_scenario(
        tmp_path, scenario, **{"execution.max_leverage": 50, "execution.throttles.max_notional_per_order": 500}
    )


def run_pair(tmp_path: Path, scenario: Callable[..., Awaitable[None]], **over: Any) -> None:
    """Two executors of one namespace (different run ids, one journal each) trading one fake account."""

    async def main() -> None:
        ex = exchange()
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        pair: list[tuple[TradingExecutor, Journal]] = []
        try:
            for run in ("run-a", "run-b"):
                (tmp_path / run).mkdir()
                s = settings_for(ex, tmp_path / run, **over)
                journal = Journal(s.journal.url)
                executor = make_executor(s, Metrics(), journal, RecordingNotifier(), run)
                assert isinstance(executor, TradingExecutor) and executor.namespace == "default"
                pair.append((executor, journal))
                await executor.start()
            await scenario(ex, *pair)
        finally:
            for executor, journal in pair:
                await executor.aclose()
                journal.close()
            await ex.stop()

    asyncio.run(main())


def same_bar(run_id: str) -> Decision:
    d = decision(0)
    return Decision(run_id, d.candidate, True, None)


def assert_refused_as_duplicate(e: TradingExecutor, j: Journal, d: Decision) -> None:
    rows = [(o["status"], o["reason"]) for o in ExecStore(j.engine).orders(d.run_id) if o["decision_id"] == d.id]
    assert rows[0] == ("submitted", None) and rows[-1] == ("REJECTED", "duplicate_client_id")
    assert e.trades[d.id].status == "cancelled" and e.trades[d.id].qty == 0 and e.trades[d.id].fills == 0
    assert ExecStore(j.engine).events(d.run_id, "order_error") == []  # the guard working, not an order error


def test_a_restarted_runner_deciding_the_same_bar_again_is_refused_by_the_venue(tmp_path: Path) -> None:
    """Run A traded the bar (entry filled, stopped out); run B (a restart, a new run id, same namespace and
    journal) decides that bar again.  The entry's id is the namespace's bar key: B finds it on the venue and is
    refused, although Binance itself would accept the id again once the first order is no longer open."""

    async def main() -> None:
        ex = exchange()
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        s = settings_for(ex, tmp_path)
        journal = Journal(s.journal.url)
        da, db = same_bar("run-a"), same_bar("run-b")
        assert da.id != db.id and da.order_key("default") == db.order_key("default")
        cid = client_order_id(da.order_key("default"), OrderKind.ENTRY)
        ea = eb = None
        try:
            ea = make_executor(s, Metrics(), journal, RecordingNotifier(), "run-a")
            assert isinstance(ea, TradingExecutor)
            await ea.start()
            ea.on_signal(da)
            await ea.broker.drain()
            await until_or_fail(lambda: ea.trades[da.id].status == "open" and len(ex.open_algo_orders()) == 2)
            await ex.set_price("BTCUSDT", "31790")  # stopped out: the entry is FILLED, nothing is open
            await until_or_fail(lambda: ea.trades[da.id].status == "closed")
            await ea.broker.drain()
            await until_or_fail(lambda: not ex.open_algo_orders())
            await ea.aclose()
            eb = make_executor(s, Metrics(), journal, RecordingNotifier(), "run-b")
            assert isinstance(eb, TradingExecutor)
            await eb.start()
            eb.on_signal(db)
            await eb.broker.drain()
            await until_or_fail(lambda: eb.trades[db.id].status == "cancelled")
            assert len(ex.orders_with_cid(cid)) == 1 and ex.position("BTCUSDT") == 0
            posts = [p["newClientOrderId"] for m, path, p in ex.requests if m == "POST" and path == "/fapi/v1/order"]
            assert posts.count(cid) == 1  # the second runner never sent it
            assert_refused_as_duplicate(eb, journal, db)
            assert eb.risk.state.state is TradingState.ACTIVE
        finally:
            for e in (ea, eb):
                if e is not None:
                    await e.aclose()
            journal.close()
            await ex.stop()

    asyncio.run(main())


def test_two_executors_racing_on_one_bar_the_venue_refuses_the_duplicated_id(tmp_path: Path) -> None:
    """Two live executors of one namespace on one account decide the same bar (no lease in between): both ask
    the venue before either has placed (B's lookup answers late), both send; Binance's -4116 on the duplicated
    open order is B's refusal, journaled as such, never adopted as B's own order."""

    async def scenario(ex: FakeFuturesExchange, a: tuple[TradingExecutor, Journal], b: tuple[TradingExecutor, Journal]) -> None:  # fmt: skip
        (ea, _), (eb, jb) = a, b
        await ex.set_price("BTCUSDT", "32010")  # the post-only buy at 32000 rests: an open order
        da, db = same_bar("run-a"), same_bar("run-b")
        cid = client_order_id(da.order_key("default"), OrderKind.ENTRY)
        ex.delay_next("GET", "/fapi/v1/order", seconds=0.3)  # B's lookup: "unknown", answered late
        eb.on_signal(db)
        await until_or_fail(lambda: any(m == "GET" and path == "/fapi/v1/order" for m, path, _ in ex.requests))
        ea.on_signal(da)
        await until_or_fail(lambda: bool(ex.open_orders()))
        await until_or_fail(lambda: eb.trades[db.id].status == "cancelled")
        posts = [p["newClientOrderId"] for m, path, p in ex.requests if m == "POST" and path == "/fapi/v1/order"]
        assert posts == [cid, cid]  # both sent; the venue kept one
        assert len(ex.orders_with_cid(cid)) == 1 and ex.orders_with_cid(cid)[0].status == "NEW"
        assert_refused_as_duplicate(eb, jb, db)
        assert ea.trades[da.id].status == "pending"

    run_pair(tmp_path, scenario, **{"execution.entry_type": "limit_post_only", "execution.limit_timeout_s": 30})


def test_a_trade_opened_by_the_previous_release_is_still_recognised_after_the_upgrade(tmp_path: Path) -> None:
    """Before the run-independent key, client ids hashed the run-scoped decision id.  A trade left open by that
    release (its journal row and its brackets on the venue) is reconciled as ours and closed by its own stop."""
    old_did = f"old-run:BTCUSDT:5m:{T0}"
    stop, tp = client_order_id(old_did, OrderKind.STOP), client_order_id(old_did, OrderKind.TAKE_PROFIT)
    assert stop != client_order_id(f"default:BTCUSDT:5m:{T0}", OrderKind.STOP)
    assert parse_client_id(stop) == (OrderKind.STOP, stop.split("_", 1)[1])  # the old format parses as ours

    def left_by_the_old_release(ex: FakeFuturesExchange) -> None:
        ex.open_outside("BTCUSDT", "0.015", "32000")
        ex.algo_orders[1] = FakeAlgoOrder(1, stop, "BTCUSDT", "SELL", "STOP_MARKET", Decimal("0.015"),
                                          Decimal("31800"), "MARK_PRICE", True, False)  # fmt: skip
        ex.algo_orders[2] = FakeAlgoOrder(2, tp, "BTCUSDT", "SELL", "TAKE_PROFIT_MARKET", Decimal("0.015"),
                                          Decimal("32400"), "MARK_PRICE", True, False)  # fmt: skip
        journal = Journal(settings_for(ex, tmp_path).journal.url)
        ExecStore(journal.engine).open_trade(
            {
                "decision_id": old_did, "run_id": "old-run", "namespace": "default", "broker": "binance",
                "symbol": "BTCUSDT", "side": "LONG", "status": "open", "qty": 0.015, "entry_qty": 0.015,
                "entry_price": 32_000.0, "arrival_price": 32_000.0, "stop": 31_800.0, "take_profit": 32_400.0,
                "stop_cid": stop, "tp_cid": tp, "fees": 0.2, "funding": 0.0, "gross_pnl": 0.0, "opened_ts": T0,
            }
        )  # fmt: skip
        journal.close()

    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        t = e.trades[old_did]
        assert t.key == old_did  # the ids derive from the old decision id, not from the namespace's bar key
        assert e.reconciliations == [[]] and e.blocking_reason() is None  # position and brackets are ours
        await ex.set_price("BTCUSDT", "31790")  # its stop triggers
        await until_or_fail(lambda: t.status == "closed")
        assert t.exit_kind == "stop"

    run_scenario(tmp_path, scenario, before_start=left_by_the_old_release)


def test_a_liquidation_closes_its_trade_with_exit_kind_liq_journaled_alerted_and_halted(tmp_path: Path) -> None:
    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = await enter(ex, e)
        await ex.pay_funding("BTCUSDT", "-0.12")
        await until_or_fail(lambda: e.trades[d.id].funding == pytest.approx(-0.12))
        await ex.set_price("BTCUSDT", "31900")  # still above the stop: only Binance's own order closes it
        await ex.liquidate("BTCUSDT")
        await until_or_fail(lambda: e.trades[d.id].status == "closed")
        store = ExecStore(j.engine)
        row = store.trade(d.id)
        assert row is not None and row["exit_kind"] == "liq" and row["funding"] == pytest.approx(-0.12)
        assert row["pnl"] == pytest.approx(row["gross_pnl"] - row["fees"] - 0.12)  # funding is in the PnL
        (close,) = store.events(kind="exchange_close")
        assert close["name"] == "liq" and d.id in close["detail"] and "autoclose-" in close["detail"]
        liq_fill = [f for f in store.fills("canary-run") if f["client_id"].startswith("autoclose-")]
        assert len(liq_fill) == 1 and liq_fill[0]["decision_id"] == d.id  # tied back to the trade
        incidents = store.events(kind="incident")
        assert incidents and incidents[0]["name"] == "liquidation"
        assert e.blocking_reason() == "trading_halted"
        assert any("liquidation" in plain_text(x.payload) for x in n.notices)  # alerted
        assert not store.events(kind="trip") or all(t["name"] != "reconcile" for t in store.events(kind="trip"))
        await e.broker.drain()
        assert ex.open_algo_orders() == []  # the trade's stop and take-profit went with the position

    run_scenario(tmp_path, scenario)


def test_an_adl_order_from_the_user_stream_closes_its_trade_with_exit_kind_adl(tmp_path: Path) -> None:
    """Binance's ADL order (client id ``adl_autoclose``) as the user stream carries it ("Event: Order Update")."""

    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        d = await enter(ex, e)
        qty = str(e.trades[d.id].qty)
        adl = {"e": "ORDER_TRADE_UPDATE", "E": 10, "T": 10, "o": {"s": "BTCUSDT", "c": "adl_autoclose", "S": "SELL",
               "o": "LIMIT", "q": qty, "x": "TRADE", "X": "FILLED", "i": 777, "l": qty, "L": "32100", "n": "0",
               "T": 10, "t": 4242, "m": False, "R": False, "sp": "0"}}  # fmt: skip
        assert isinstance(e.broker, BinanceBroker)
        e.broker._on_stream(json.dumps(adl))
        store = ExecStore(j.engine)
        row = store.trade(d.id)
        assert row is not None and row["status"] == "closed" and row["exit_kind"] == "adl"
        assert [x["name"] for x in store.events(kind="exchange_close")] == ["adl"]
        assert [x["name"] for x in store.events(kind="incident")] == ["ADL"]
        assert e.blocking_reason() == "trading_halted"

    run_scenario(tmp_path, scenario)


def test_a_418_seen_by_the_market_data_client_halts_an_idle_broker(tmp_path: Path) -> None:
    """Binance bans the IP: the market-data client's 418 halts trading even though the broker sent nothing."""

    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        md = BinanceFuturesClient(Endpoints(ex.rest_url, ex.ws_url), name="binance-market", role="market_data")
        try:
            ex.http_next("GET", "/fapi/v1/klines", 418, retry_after=600)
            r = await md.send("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m"})
            assert r.status_code == 418
        finally:
            await md.aclose()
        assert e.blocking_reason() == "trading_halted"  # at once: no order had to fail first
        (incident,) = ExecStore(j.engine).events(kind="incident")
        assert incident["name"] == "ip_banned" and "binance-market" in incident["detail"]
        assert any("ip_banned" in plain_text(x.payload) for x in n.notices)
        before = len(ex.requests)
        e.on_signal(decision(0))
        await e.broker.drain()
        assert not [x for x in ex.requests[before:] if x[1] == "/fapi/v1/order"] and ex.orders == {}

    run_scenario(tmp_path, scenario)


def test_the_account_is_read_again_after_a_reconnect(tmp_path: Path) -> None:
    """Wallet and available balance move while the stream is away (a deposit here): sizing must not keep the old."""

    async def scenario(ex: FakeFuturesExchange, e: TradingExecutor, n: RecordingNotifier, j: Journal) -> None:
        assert e.portfolio.equity == e.portfolio.equity_start == 10_000.0  # GET /fapi/v2/account at start
        ex.balance = Decimal("12500")  # a transfer in: no ACCOUNT_UPDATE reached us
        await ex.expire_listen_keys()
        await until_or_fail(lambda: len(e.reconciliations) == 2, timeout=10)
        assert e.portfolio.equity == 12_500.0 and e.portfolio.equity_start == 10_000.0  # the run still started at 10k
        assert e.portfolio.exposure().equity == 12_500.0

    run_scenario(tmp_path, scenario, **{"binance.rest_timeout_s": 1.0})
