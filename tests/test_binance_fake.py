"""The strict fake itself: it must refuse what Binance refuses, or the broker's tests prove nothing.

Raw signed HTTP (no project code but the fake), each assertion the documented answer (pages cited in the fake).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import require_data
from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text

pytestmark = pytest.mark.timeout(60)
KEY, SECRET = "fake-key", "fake-secret"


class Raw:
    def __init__(self, ex: FakeFuturesExchange, http: httpx.AsyncClient) -> None:
        self.ex, self.http = ex, http

    async def signed(self, method: str, path: str, params: dict[str, Any], ts: int | None = None,
                     secret: str = SECRET, key: str = KEY) -> tuple[int, Any]:  # fmt: skip
        q = urlencode({**params, "timestamp": ts or int(time.time() * 1000), "recvWindow": 5000})
        sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
        r = await self.http.request(method, f"{path}?{q}&signature={sig}", headers={"X-MBX-APIKEY": key})
        return r.status_code, r.json()


def run(test: Callable[[Raw], Awaitable[None]]) -> None:
    async def main() -> None:
        path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
        ex = FakeFuturesExchange(load_recorded_exchange_info_text(str(path)), KEY, SECRET)
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        try:
            async with httpx.AsyncClient(base_url=ex.rest_url, timeout=2) as http:
                await test(Raw(ex, http))
        finally:
            await ex.stop()

    asyncio.run(main())


BASE = {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.010"}


@pytest.mark.parametrize("typ", ["STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"])
def test_conditional_types_on_the_order_endpoint_are_4120(typ: str) -> None:
    async def t(r: Raw) -> None:
        status, body = await r.signed("POST", "/fapi/v1/order", {**BASE, "type": typ, "stopPrice": "31000"})
        assert (status, body) == (
            400,
            {
                "code": -4120,
                "msg": "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            },
        )
        assert r.ex.orders == {}

    run(t)


def test_algo_order_lifecycle_and_its_user_data_on_private_only() -> None:
    async def t(r: Raw) -> None:
        status, _ = await r.signed("POST", "/fapi/v1/order", {**BASE, "side": "BUY", "type": "MARKET"})
        assert status == 200
        key = (await r.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})).json()["listenKey"]
        async with (
            connect(f"{r.ex.ws_url}/ws/{key}") as unrouted,
            connect(f"{r.ex.ws_url}/private/ws/{key}") as private,
        ):
            await asyncio.sleep(0.05)
            algo = {**BASE, "algoType": "CONDITIONAL", "type": "STOP_MARKET", "triggerPrice": "31800",
                    "reduceOnly": "true", "workingType": "MARK_PRICE", "clientAlgoId": "my-stop-1"}  # fmt: skip
            status, body = await r.signed("POST", "/fapi/v1/algoOrder", algo)
            assert status == 200 and body["algoStatus"] == "NEW" and body["clientAlgoId"] == "my-stop-1"
            status, dup = await r.signed("POST", "/fapi/v1/algoOrder", algo)
            assert dup["code"] == -4116
            _, open_ = await r.signed("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})
            assert [a["clientAlgoId"] for a in open_] == ["my-stop-1"]
            await r.ex.set_price("BTCUSDT", "31700", mark="31900")  # last below, mark above: MARK_PRICE waits
            assert r.ex.position("BTCUSDT") == Decimal("0.010")
            await r.ex.set_price("BTCUSDT", "31790")
            assert r.ex.position("BTCUSDT") == 0
            _, q = await r.signed("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "my-stop-1"})
            assert q["algoStatus"] == "FINISHED" and q["actualOrderId"]
            seen = []
            while True:
                msg = json.loads(await asyncio.wait_for(private.recv(), 2))
                seen.append((msg["e"], msg["o"].get("X")) if "o" in msg else (msg["e"], None))
                if msg["e"] == "ALGO_UPDATE" and msg["o"]["X"] == "FINISHED":
                    break
            algo_states = [x for e, x in seen if e == "ALGO_UPDATE"]
            assert algo_states == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
            assert ("ORDER_TRADE_UPDATE", "FILLED") in seen
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(unrouted.recv(), 0.2)  # unrouted: no user data, ever
        assert r.ex.unrouted_user_connections() == [f"/ws/{key}"]

    run(t)


def test_algo_cancel_query_and_cancel_all() -> None:
    async def t(r: Raw) -> None:
        await r.signed("POST", "/fapi/v1/order", {**BASE, "side": "BUY", "type": "MARKET"})
        for i, typ in enumerate(("STOP_MARKET", "TAKE_PROFIT_MARKET")):
            trig = "31000" if typ == "STOP_MARKET" else "33000"
            await r.signed("POST", "/fapi/v1/algoOrder", {**BASE, "algoType": "CONDITIONAL", "type": typ,
                           "triggerPrice": trig, "reduceOnly": "true", "clientAlgoId": f"a{i}"})  # fmt: skip
        status, body = await r.signed("DELETE", "/fapi/v1/algoOrder", {"clientalgoid": "a0"})
        assert status == 200 and body["code"] == "200" and body["clientAlgoId"] == "a0"
        status, body = await r.signed("DELETE", "/fapi/v1/algoOrder", {"clientalgoid": "a0"})
        assert body["code"] == -2011
        status, body = await r.signed("DELETE", "/fapi/v1/algoOpenOrders", {})
        assert body["code"] == -1102  # symbol is mandatory
        await r.signed("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "BTCUSDT"})
        assert r.ex.open_algo_orders() == []
        status, body = await r.signed("POST", "/fapi/v1/algoOrder", {**BASE, "algoType": "VP", "type": "STOP_MARKET",
                                      "triggerPrice": "31000"})  # fmt: skip
        assert status == 400

    run(t)


def test_signature_timestamp_key_filters_margin_and_reduce_only() -> None:
    async def t(r: Raw) -> None:
        mkt = {**BASE, "side": "BUY", "type": "MARKET"}
        assert (await r.signed("POST", "/fapi/v1/order", mkt, secret="nope"))[1]["code"] == -1022
        assert (await r.signed("POST", "/fapi/v1/order", mkt, key="nope"))[0:2][1]["code"] == -2015
        old = int(time.time() * 1000) - 10_000
        assert (await r.signed("POST", "/fapi/v1/order", mkt, ts=old))[1]["code"] == -1021
        ahead = int(time.time() * 1000) + 2_000
        assert (await r.signed("POST", "/fapi/v1/order", mkt, ts=ahead))[1]["code"] == -1021
        assert (await r.signed("POST", "/fapi/v1/order", {**mkt, "quantity": "0.0105"}))[1]["code"] == -1111
        await r.ex.set_price("BTCUSDT", "4000")  # 0.001 x 4000 = 4 USDT, under the recorded 5 USDT minimum
        assert (await r.signed("POST", "/fapi/v1/order", {**mkt, "quantity": "0.001"}))[1]["code"] == -4164
        await r.ex.set_price("BTCUSDT", "32000")
        assert (await r.signed("POST", "/fapi/v1/order", {**mkt, "quantity": "10"}))[1]["code"] == -2019
        red = {**BASE, "type": "MARKET", "reduceOnly": "true"}
        assert (await r.signed("POST", "/fapi/v1/order", red))[1]["code"] == -2022
        assert r.ex.orders == {}

    run(t)


def test_injected_faults_429_418_5xx_and_listen_key_expiry() -> None:
    async def t(r: Raw) -> None:
        r.ex.http_next("GET", "/fapi/v2/account", 429, retry_after=3)
        resp = await r.http.get("/fapi/v1/time")
        assert resp.headers["X-MBX-USED-WEIGHT-1M"]
        status, body = await r.signed("GET", "/fapi/v2/account", {})
        assert status == 429 and body["code"] == -1003
        r.ex.http_next("POST", "/fapi/v1/order", 503, after_work=True)
        status, _ = await r.signed("POST", "/fapi/v1/order", {**BASE, "side": "BUY", "type": "MARKET",
                                    "newClientOrderId": "five"})  # fmt: skip
        assert status == 503 and len(r.ex.orders_with_cid("five")) == 1  # done, though the answer says 503
        key = (await r.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})).json()["listenKey"]
        async with connect(f"{r.ex.ws_url}/private/ws?listenKey={key}") as ws:
            await asyncio.sleep(0.05)
            await r.ex.expire_listen_keys()
            assert json.loads(await asyncio.wait_for(ws.recv(), 2))["e"] == "listenKeyExpired"
        put = await r.http.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY})
        assert put.json()["code"] == -1125

    run(t)


def test_market_streams_go_only_to_their_route_and_unrouted_connections_get_public_data_only() -> None:
    """/market carries klines, aggTrade, markPrice; /public bookTicker and depth; no route: /public data only."""

    async def t(r: Raw) -> None:
        base = r.ex.ws_url
        names = "btcusdt@kline_1m/btcusdt@bookTicker"
        kline = {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {"t": 0, "x": True}}
        ticker = {"e": "bookTicker", "u": 1, "s": "BTCUSDT", "b": "1", "B": "1", "a": "2", "A": "1"}
        async with (
            connect(f"{base}/market/stream?streams={names}") as market,
            connect(f"{base}/public/stream?streams={names}") as public,
            connect(f"{base}/stream?streams={names}") as unrouted,
            connect(f"{base}/market/ws/btcusdt@kline_1m") as raw,
        ):
            await asyncio.wait_for(_until(lambda: r.ex.market_subscribers() == 4), 5)
            assert await r.ex.publish_market("btcusdt@kline_1m", kline) == 2  # /market combined and raw
            assert await r.ex.publish_market("btcusdt@bookTicker", ticker) == 2  # /public and unrouted
            assert json.loads(await asyncio.wait_for(market.recv(), 5)) == {"stream": "btcusdt@kline_1m", "data": kline}
            assert json.loads(await asyncio.wait_for(raw.recv(), 5)) == kline
            for ws in (public, unrouted):
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["data"] == ticker
            with pytest.raises(TimeoutError):  # nothing else was sent to /market
                await asyncio.wait_for(market.recv(), 0.3)
        assert r.ex.unrouted_user_connections() == []

    run(t)


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


def test_the_price_path_serves_history_and_a_forming_bar_and_triggers_a_stop_from_a_recorded_stretch() -> None:
    """One path for both sides: REST warm-up bars are the recording's (the forming bar included, as Binance
    answers), and once a position has both brackets the path plays a recorded stretch that triggers the stop."""
    from tests.fakes.binance_price_path import PricePath, read_bars

    async def t(r: Raw) -> None:
        ex = r.ex
        bars = read_bars(require_data("klines", "XRPUSDT-5m.csv"))
        path = PricePath(ex, "XRPUSDT", bars, history=50, tick_s=0.1, fast_tick_s=0.02)
        await path.start()
        try:
            rows = (await r.http.get("/fapi/v1/klines", params={"symbol": "XRPUSDT", "interval": "1m"})).json()
            assert len(rows) == 51 and rows[-1][6] > ex.now_ms()  # 50 closed bars, then the one forming
            assert [x[1:5] for x in rows[:50]] == [
                [str(b.open), str(b.high), str(b.low), str(b.close)] for b in bars[:50]
            ]
            assert rows[0][0] % 60_000 == 0 and all(b[0] - a[0] == 60_000 for a, b in itertools.pairwise(rows))
            price = ex.prices["XRPUSDT"]
            ex.open_outside("XRPUSDT", "-100", str(price))  # a short, with both brackets resting
            for typ, trigger in (
                ("STOP_MARKET", price * Decimal("1.01")),
                ("TAKE_PROFIT_MARKET", price * Decimal("0.97")),
            ):
                status, body = await r.signed(
                    "POST", "/fapi/v1/algoOrder",
                    {"algoType": "CONDITIONAL", "symbol": "XRPUSDT", "side": "BUY", "type": typ, "quantity": "100",
                     "reduceOnly": "true", "triggerPrice": str(trigger.quantize(Decimal("0.0001")))},
                )  # fmt: skip
                assert status == 200, body
            await asyncio.wait_for(_until(lambda: ex.position("XRPUSDT") == 0), 20)
            (stop,) = [a for a in ex.algo_orders.values() if a.type == "STOP_MARKET"]
            assert stop.status == "FINISHED" and path.stretches and ex.prices["XRPUSDT"] >= stop.trigger
        finally:
            await path.stop()

    run(t)
