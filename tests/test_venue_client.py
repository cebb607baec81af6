"""The Binance venue client against the strict local fake: signing, clock offset, limits, 429/418/5xx, secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from pydantic import SecretStr

from tests.fakes.binance_futures_server import FakeFuturesExchange
from tests.helpers import run_client_on_fake
from ultra_signals.observability.metrics import Metrics
from ultra_signals.venues.binance.client import BinanceFuturesClient
from ultra_signals.venues.binance.endpoints import Endpoints
from ultra_signals.venues.binance.errors import IpBanned, RateLimited, UnknownOutcome, VenueError

pytestmark = pytest.mark.timeout(60)
KEY, SECRET = "venue-key-ABCDEF0123456789", "venue-secret-9876543210FEDCBA"


def run(test: Callable[[FakeFuturesExchange, BinanceFuturesClient], Awaitable[None]], **client_kw: object) -> None:
    run_client_on_fake(test, KEY, SECRET, btc_price="32000", timeout_s=0.5, **client_kw)


def order(cid: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010", "newClientOrderId": cid}


def posts(ex: FakeFuturesExchange, path: str = "/fapi/v1/order") -> int:
    return sum(1 for m, p, _ in ex.requests if m == "POST" and p == path)


def test_signed_call_measures_the_server_clock_first_and_reads_the_limit_headers() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        ex.clock_offset_ms = 3_000  # our clock is 3 s behind the server's
        acct = await c.signed("GET", "/fapi/v2/account")
        assert acct["totalWalletBalance"] == "10000"
        assert [p for _, p, _ in ex.requests] == ["/fapi/v1/time", "/fapi/v2/account"]
        assert 2_800 <= c.clock.offset_ms <= 3_200
        await c.signed("POST", "/fapi/v1/order", order("venue-1"), order=True)
        assert c.limits.weight["1m"] == 3 and c.limits.orders == {"10s": 1, "1m": 1}

    run(t)


def test_a_clock_jump_gives_one_1021_then_a_fresh_offset_and_success() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.clock_offset_ms = -20_000  # the local clock jumped 20 s ahead (server now 20 s behind us)
        await c.signed("POST", "/fapi/v1/order", order("jump-1"), order=True)
        assert len(ex.orders_with_cid("jump-1")) == 1  # placed once: the -1021 attempt was refused, not executed
        assert c.time_syncs == 2 and -20_300 <= c.clock.offset_ms <= -19_700
        assert posts(ex) == 2

    run(t)


def test_the_offset_is_refreshed_periodically() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.signed("GET", "/fapi/v2/account")
        await asyncio.sleep(0.06)
        await c.signed("GET", "/fapi/v2/account")
        assert c.time_syncs == 2

    run(t, time_refresh_s=0.05)


def test_429_waits_out_retry_after_for_every_request_then_sends_each_once() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.http_next("POST", "/fapi/v1/order", 429, retry_after=1)
        results = await asyncio.gather(
            *(c.signed("POST", "/fapi/v1/order", order(f"rl-{i}"), order=True) for i in range(3))
        )
        assert all(r["status"] == "FILLED" for r in results)
        assert posts(ex) == 4  # one refused, then each of the three exactly once: no burst of retries
        assert all(len(ex.orders_with_cid(f"rl-{i}")) == 1 for i in range(3))
        assert any(why == "429 Retry-After" and 0.5 < s <= 1.0 for why, s in c.waits)

    run(t)


def test_a_retry_after_longer_than_allowed_is_a_clear_error() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.http_next("POST", "/fapi/v1/order", 429, retry_after=600)
        with pytest.raises(RateLimited, match="Retry-After 600 s exceeds 30 s"):
            await c.signed("POST", "/fapi/v1/order", order("rl-long"), order=True)
        assert ex.orders_with_cid("rl-long") == []

    run(t, max_retry_after_s=30.0)


def test_418_bans_every_further_call_without_touching_the_network() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.http_next("GET", "/fapi/v2/account", 418, retry_after=300)
        with pytest.raises(IpBanned, match="trading is halted"):
            await c.signed("GET", "/fapi/v2/account")
        before = len(ex.requests)
        with pytest.raises(IpBanned, match="IP banned by Binance"):
            await c.signed("POST", "/fapi/v1/order", order("after-ban"), order=True)
        assert len(ex.requests) == before and ex.orders_with_cid("after-ban") == []

    run(t)


def test_5xx_on_a_read_is_retried_on_a_write_it_is_an_unknown_outcome() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.http_next("GET", "/fapi/v2/account", 503)
        assert (await c.signed("GET", "/fapi/v2/account"))["availableBalance"] == "10000"
        ex.http_next("POST", "/fapi/v1/order", 503, after_work=True)  # executed, answered 503
        with pytest.raises(UnknownOutcome, match="execution status unknown"):
            await c.signed("POST", "/fapi/v1/order", order("u-1"), order=True)
        assert len(ex.orders_with_cid("u-1")) == 1 and posts(ex) == 1  # never re-sent by the client

    run(t)


def test_a_timeout_on_a_write_is_an_unknown_outcome_not_a_resend() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.sync_time()
        ex.delay_next("POST", "/fapi/v1/order", seconds=1.0)
        with pytest.raises(UnknownOutcome, match="outcome unknown"):
            await c.signed("POST", "/fapi/v1/order", order("t-1"), order=True)
        assert posts(ex) == 1 and len(ex.orders_with_cid("t-1")) == 1

    run(t)


def test_refusals_carry_binance_code_and_never_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        with pytest.raises(VenueError) as e:
            await c.signed("POST", "/fapi/v1/order", {**order("x"), "type": "STOP_MARKET", "stopPrice": "31000"})
        assert e.value.code == -4120 and "Algo Order API" in str(e.value)
        bad = BinanceFuturesClient(
            Endpoints(ex.rest_url, ex.ws_url), api_key=SecretStr(KEY), api_secret=SecretStr("no")
        )
        with pytest.raises(VenueError) as sig:
            await bad.signed("GET", "/fapi/v2/account")
        await bad.aclose()
        assert sig.value.code == -1022
        texts = [str(e.value), str(sig.value), repr(c), repr(bad)]
        assert not any(KEY in s or SECRET in s or "signature=" in s for s in texts)
        # Request logging (httpx, httpcore at DEBUG, the fake's access log) shows URLs, never the key header.
        assert "httpx" in caplog.text and KEY not in caplog.text and SECRET not in caplog.text

    run(t)


def test_a_418_seen_by_the_market_data_client_bans_the_trading_client_too() -> None:
    """The ban is the IP's: separate connections on one host share it (a per-process ban state)."""

    async def t(ex: FakeFuturesExchange, trading: BinanceFuturesClient) -> None:
        m = Metrics()
        md = BinanceFuturesClient(Endpoints(ex.rest_url, ex.ws_url), name="md", role="market_data", metrics=m)
        try:
            await trading.sync_time()
            ex.http_next("GET", "/fapi/v1/klines", 418, retry_after=300)
            r = await md.send("GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m"})
            assert r.status_code == 418
            before = len(ex.requests)
            with pytest.raises(IpBanned, match="seen by md/market_data"):
                await trading.signed("POST", "/fapi/v1/order", order("after-md-ban"), order=True)
            again = await md.send("GET", "/fapi/v1/exchangeInfo")  # answered here, as Binance would, not sent
            assert again.status_code == 418 and 290 <= int(again.headers["retry-after"]) <= 300
            assert len(ex.requests) == before and ex.orders_with_cid("after-md-ban") == []
            assert trading.banned_until_ms is not None and trading.banned_until_ms == md.banned_until_ms
            sample = m.registry.get_sample_value
            assert sample("binance_rate_limited_total", {"role": "market_data", "status": "418"}) == 1.0
        finally:
            await md.aclose()

    run(t, role="trading")


def test_weight_and_order_counts_are_exported_per_role_and_429s_counted() -> None:
    m = Metrics()

    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        await c.signed("GET", "/fapi/v2/account")
        await c.signed("POST", "/fapi/v1/order", order("metrics-1"), order=True)
        sample = m.registry.get_sample_value
        assert sample("binance_used_weight", {"role": "trading", "window": "1m"}) == c.limits.weight["1m"] > 0
        assert sample("binance_order_count", {"role": "trading", "window": "10s"}) == 1.0
        assert sample("binance_order_count", {"role": "trading", "window": "1m"}) == 1.0
        # Both series exist at 0 before any refusal: Prometheus' increase() sees the first one.
        assert sample("binance_rate_limited_total", {"role": "trading", "status": "429"}) == 0.0
        assert sample("binance_rate_limited_total", {"role": "trading", "status": "418"}) == 0.0
        ex.http_next("GET", "/fapi/v2/account", 429, retry_after=0)
        await c.signed("GET", "/fapi/v2/account")  # waits 0 s, then succeeds
        assert sample("binance_rate_limited_total", {"role": "trading", "status": "429"}) == 1.0
        assert sample("binance_used_weight", {"role": "market_data", "window": "1m"}) is None  # another role

    run(t, role="trading", metrics=m)
