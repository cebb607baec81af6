"""rest.py against the fake Binance on 127.0.0.1: pagination, closed bars only, 429/418/5xx, weight pauses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import free_port, require_data
from tests.fakes.binance_server import FakeBinance, ManualClock, csv_kline_rows
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.binance.rest import BinanceRest, RestError, weight_pause_s

pytestmark = pytest.mark.timeout(60)
FIVE_M = 300_000


def _rows() -> list[list[Any]]:
    return csv_kline_rows(require_data("klines", "XRPUSDT-5m.csv"), "5m")


def _count(m: Metrics, endpoint: str, status: str) -> float:
    v = m.registry.get_sample_value("rest_requests_total", {"endpoint": endpoint, "status": status})
    return v or 0.0


def _run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


def _client(server: FakeBinance, m: Metrics, sleeps: list[float] | None = None, **kw: Any) -> BinanceRest:
    async def record(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    return BinanceRest(server.rest_url, m, backoff_base_s=0.01, backoff_max_s=0.05, sleep=record, **kw)


def test_closed_klines_paginate_and_leave_out_the_forming_bar() -> None:
    rows = _rows()
    # "Now" is 2 minutes into bar 400: bars 0..399 are closed, bar 400 is forming.
    clock = ManualClock(rows[400][0] + 120_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, klines={("XRPUSDT", "5m"): rows}) as srv:
            rest = _client(srv, m)
            bars = await rest.closed_klines("XRPUSDT", "5m", rows[50][0], clock.now_ms(), limit=100)
            await rest.aclose()
        assert [b.open_time for b in bars] == [r[0] for r in rows[50:400]]
        for b, r in zip(bars, rows[50:400], strict=True):
            assert (b.open, b.high, b.low, b.close, b.volume) == tuple(float(x) for x in r[1:6])
            assert b.close_time == r[0] + FIVE_M - 1 and b.closed
        pages = [p for path, p in srv.rest_log if path.endswith("/klines")]
        assert len(pages) == 4 and all(int(p["limit"]) <= 1500 for p in pages)
        assert _count(m, "/fapi/v1/klines", "200") == 4

    _run(go)


def test_missing_bars_in_the_data_are_not_invented() -> None:
    rows = _rows()
    holey = rows[:100] + rows[103:200]  # three bars missing, like real data can be
    clock = ManualClock(rows[199][0] + FIVE_M)

    async def go() -> None:
        async with FakeBinance(clock.now_ms, klines={("XRPUSDT", "5m"): holey}) as srv:
            rest = _client(srv, Metrics())
            bars = await rest.closed_klines("XRPUSDT", "5m", rows[90][0], clock.now_ms(), limit=1500)
            await rest.aclose()
        assert [b.open_time for b in bars] == [r[0] for r in holey[90:]]

    _run(go)


def test_429_waits_retry_after_then_succeeds() -> None:
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        m = Metrics()
        sleeps: list[float] = []
        async with FakeBinance(clock.now_ms, exchange_info={"symbols": []}) as srv:
            srv.fail_next("/exchangeInfo", 429, retry_after="7")
            rest = _client(srv, m, sleeps)
            info = await rest.exchange_info()
            await rest.aclose()
        assert info["serverTime"] == clock.now
        assert sleeps == [7.0]  # Retry-After honoured (it exceeds the backoff)
        assert _count(m, "/fapi/v1/exchangeInfo", "429") == 1 and _count(m, "/fapi/v1/exchangeInfo", "200") == 1

    _run(go)


def test_418_ban_longer_than_we_wait_is_a_clear_error() -> None:
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms) as srv:
            srv.fail_next("/exchangeInfo", 418, retry_after="7200")
            rest = _client(srv, m, [], max_retry_after_s=120.0)
            with pytest.raises(RestError, match=r"IP banned \(418\).*7200s.*rest_max_retry_after_s"):
                await rest.exchange_info()
            await rest.aclose()
        assert _count(m, "/fapi/v1/exchangeInfo", "418") == 1

    _run(go)


def test_server_errors_are_retried_and_client_errors_are_not() -> None:
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        m = Metrics()
        sleeps: list[float] = []
        async with FakeBinance(clock.now_ms) as srv:
            srv.fail_next("/exchangeInfo", 503, times=2)
            rest = _client(srv, m, sleeps)
            await rest.exchange_info()
            assert _count(m, "/fapi/v1/exchangeInfo", "503") == 2 and len(sleeps) == 2
            with pytest.raises(RestError, match="HTTP 400"):
                await rest.depth("NOPE")  # unknown symbol: Binance's 400 is final
            assert _count(m, "/fapi/v1/depth", "400") == 1
            srv.fail_next("/exchangeInfo", 500, times=10)
            with pytest.raises(RestError, match="failed after 3 attempts"):
                await _client(srv, m, [], max_retries=2).exchange_info()
            await rest.aclose()

    _run(go)


def test_unreachable_server_counts_errors_and_gives_up() -> None:
    async def go() -> None:
        m = Metrics()
        rest = BinanceRest(f"http://127.0.0.1:{free_port()}", m, max_retries=2, backoff_base_s=0.01)
        with pytest.raises(RestError, match="ConnectError"):
            await rest.exchange_info()
        await rest.aclose()
        assert _count(m, "/fapi/v1/exchangeInfo", "error") == 3

    _run(go)


def test_weight_header_near_the_limit_pauses_until_the_next_minute() -> None:
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        sleeps: list[float] = []
        async with FakeBinance(clock.now_ms) as srv:
            srv.used_weight = 2000
            rest = _client(srv, Metrics(), sleeps, weight_soft_limit=1800)
            await rest.exchange_info()
            assert rest.used_weight == 2001 and sleeps == []
            await rest.exchange_info()  # the previous answer reported 2001 >= 1800: pause first
            await rest.aclose()
        assert len(sleeps) == 1 and 0 < sleeps[0] <= 60.05

    _run(go)
    assert weight_pause_s(100, 1800, 30.0) == 0.0
    assert weight_pause_s(1800, 1800, 30.0) == pytest.approx(30.05)


def test_exchange_info_through_rest_matches_recording() -> None:
    info = load_exchange_info_file(require_data("ws", "binance-futures-exchangeinfo-20210722.txt"))
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        async with FakeBinance(clock.now_ms, exchange_info=info) as srv:
            rest = _client(srv, Metrics())
            got = await rest.exchange_info()
            await rest.aclose()
        assert got["symbols"] == info["symbols"]

    _run(go)


def test_each_page_asks_no_more_bars_than_exist_and_pays_the_documented_weight() -> None:
    """Binance charges klines by ``limit`` (1 below 100, 2 below 500, 5 to 1,000, 10 above): a gap of a few bars
    asks for those few (weight 1), a warm-up of 210 for ~211 (weight 2), and only a long history pages at the cap."""
    rows = _rows()
    clock = ManualClock(rows[1500][0] + 120_000)  # bar 1500 is forming

    async def go() -> None:
        async with FakeBinance(clock.now_ms, klines={("XRPUSDT", "5m"): rows}) as srv:
            rest = _client(srv, Metrics())
            gap = await rest.closed_klines("XRPUSDT", "5m", rows[1495][0], clock.now_ms())
            after_gap = rest.used_weight
            warm = await rest.closed_klines("XRPUSDT", "5m", rows[1290][0], clock.now_ms())
            after_warm = rest.used_weight
            long = await rest.closed_klines("XRPUSDT", "5m", rows[0][0], clock.now_ms())
            await rest.aclose()
        assert [b.open_time for b in gap] == [r[0] for r in rows[1495:1500]]
        assert [b.open_time for b in warm] == [r[0] for r in rows[1290:1500]]
        assert [b.open_time for b in long] == [r[0] for r in rows[0:1500]]
        limits = [int(p["limit"]) for path, p in srv.rest_log if path.endswith("/klines")]
        assert limits == [6, 211, 1500]  # each counts the forming bar's slot; the long history fills one page
        assert (after_gap, after_warm - after_gap, srv.used_weight - after_warm) == (1, 2, 10)

    _run(go)


def test_the_fake_refuses_limits_binance_refuses_and_charges_weight_per_endpoint() -> None:
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        async with FakeBinance(clock.now_ms, depth_snapshots={}) as srv:
            rest = _client(srv, Metrics())
            for path, params in (("/fapi/v1/klines", {"limit": "1501"}), ("/fapi/v1/depth", {"limit": "7"})):
                with pytest.raises(RestError, match="-1130"):
                    await rest.get(path, {"symbol": "XRPUSDT", "interval": "5m", **params})
            assert srv.used_weight == 0  # a refused request is charged nothing
            await rest.exchange_info()
            assert srv.used_weight == 1
            clock.now += 60_000  # the next minute starts from zero
            await rest.exchange_info()
            await rest.aclose()
        assert srv.used_weight == 1

    _run(go)


def test_depth_snapshots_leave_half_the_weight_to_the_bars() -> None:
    """At 1,300 of a 1,800 soft limit a depth snapshot (background: half of it, 900) waits for the next minute, a
    klines request (the gap fill the consumer waits on) goes ahead; at 1,800 both wait."""
    rows = _rows()
    clock = ManualClock(rows[400][0] + 120_000)

    async def go() -> None:
        sleeps: list[float] = []
        async with FakeBinance(clock.now_ms, klines={("XRPUSDT", "5m"): rows}, depth_snapshots={}) as srv:
            rest = _client(srv, Metrics(), sleeps, weight_soft_limit=1800)
            await rest.exchange_info()  # learn the weight: 1
            srv.used_weight = 1299
            await rest.exchange_info()  # 1,300 now known to the client
            await rest.closed_klines("XRPUSDT", "5m", rows[398][0], clock.now_ms())
            assert sleeps == []
            with pytest.raises(RestError):  # the fake has no book for it; what matters is the wait before asking
                await rest.depth("XRPUSDT", 5)
            assert len(sleeps) == 1
            srv.used_weight = 1799
            await rest.exchange_info()
            await rest.closed_klines("XRPUSDT", "5m", rows[398][0], clock.now_ms())
            await rest.aclose()
        assert len(sleeps) == 2

    _run(go)


def test_past_the_minutes_2400_weight_the_fake_answers_429_and_the_client_waits_it_out() -> None:
    rows = _rows()
    clock = ManualClock(rows[400][0] + 120_000)

    async def go() -> None:
        sleeps: list[float] = []
        async with FakeBinance(clock.now_ms, klines={("XRPUSDT", "5m"): rows}) as srv:

            async def next_minute(s: float) -> None:
                sleeps.append(s)
                clock.now += 60_000  # Binance's minute ends while the client waits

            # No soft limit: the request goes out and meets Binance's own limit (several runners on one IP, say).
            rest = BinanceRest(
                srv.rest_url, Metrics(), backoff_base_s=0.01, backoff_max_s=0.05, sleep=next_minute,
                weight_soft_limit=10_000,
            )  # fmt: skip
            srv.used_weight = 2398
            await rest.exchange_info()  # 2,399
            bars = await rest.closed_klines("XRPUSDT", "5m", rows[300][0], clock.now_ms())  # weight 5: refused once
            await rest.aclose()
        assert len(bars) >= 100 and len(sleeps) >= 1
        asked = [p["limit"] for path, p in srv.rest_log if path.endswith("/klines")]
        assert asked == ["101", "101"]  # refused with 429, then the same request in the next minute
        assert 0 < sleeps[0] <= 60 and srv.used_weight == 2  # Retry-After: the rest of the minute; a fresh minute

    _run(go)


def test_requests_in_flight_count_against_the_minute_before_any_answer_reports_them() -> None:
    """60 depth snapshots asked at once at a known 700 of the minute's weight (weight 5 each, background, so a 900
    budget at a 1,800 soft limit): the first 40 go, the other 20 wait for the next minute, though no answer has
    reported the first 40's weight yet (the header alone let a reconnect's snapshots all go and overshoot)."""
    clock = ManualClock(1_700_000_000_000)

    async def go() -> None:
        sleeps: list[float] = []

        async def wait(s: float) -> None:  # a real pause lets the other requests run meanwhile; a new minute begins
            sleeps.append(s)
            clock.now = (clock.now // 60_000 + 1) * 60_000
            await asyncio.sleep(0)

        async with FakeBinance(clock.now_ms, depth_snapshots={}) as srv:
            rest = BinanceRest(srv.rest_url, Metrics(), sleep=wait, weight_soft_limit=1800)
            srv.used_weight = 699
            await rest.exchange_info()  # the client knows 700
            results = await asyncio.gather(*(rest.depth("XRPUSDT", 100) for _ in range(60)), return_exceptions=True)
            await rest.aclose()
        assert all(isinstance(r, RestError) for r in results)  # no book in the fake: only the waits matter here
        assert len(sleeps) == 20

    _run(go)
