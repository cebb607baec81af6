"""ws.py against the fake Binance: routing, ping/pong, drops, stalls, planned swaps, backoff on refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import free_port, require_data
from tests.fakes.binance_server import FakeBinance, ManualClock, read_recorded_2021
from tests.helpers import metric
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.binance.ws import StreamPool, WsMessage, WsOptions, WsStatus, build_urls

pytestmark = pytest.mark.timeout(60)
SYMS = ("sushiusdt", "akrousdt", "keepusdt", "ctkusdt")


def _trades() -> list[str]:
    msgs = read_recorded_2021(require_data("ws", "binance-futures-ws-20210722.txt"))
    return [m for m in msgs if "@aggTrade" in m[:40]]


def _run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 40))


def _opts(**kw: float) -> WsOptions:
    base = {"silence_timeout_s": 5.0, "backoff_base_s": 0.02, "backoff_max_s": 0.1, "open_timeout_s": 2.0}
    base.update(kw)
    return WsOptions(**base)  # type: ignore[arg-type]


def _start_pool(ws_url: str, q: asyncio.Queue[WsMessage | WsStatus], m: Metrics, **opts: float) -> StreamPool:
    """A started pool on the aggTrade streams of SYMS, split routing, into ``q``."""
    pool = StreamPool(build_urls(ws_url, [f"{s}@aggTrade" for s in SYMS], "split", 200), q.put, m, _opts(**opts))
    pool.start()
    return pool


async def _drain(q: asyncio.Queue[WsMessage | WsStatus], until: Callable[[list[WsMessage | WsStatus]], bool],
                 got: list[WsMessage | WsStatus], timeout: float = 10.0) -> None:  # fmt: skip
    async def loop() -> None:
        while not until(got):
            got.append(await q.get())

    await asyncio.wait_for(loop(), timeout)


def test_build_urls_routes_and_chunks() -> None:
    streams = [f"s{i}usdt@kline_1m" for i in range(250)] + ["btcusdt@bookTicker", "btcusdt@depth@100ms"]
    split = build_urls("wss://fstream.binance.com/", streams, "split", 200)
    assert [(n, len(ss)) for n, _, ss in split] == [("market-0", 200), ("market-1", 50), ("public-0", 2)]
    assert split[0][1].startswith("wss://fstream.binance.com/market/stream?streams=s0usdt@kline_1m/")
    assert split[2][1] == "wss://fstream.binance.com/public/stream?streams=btcusdt@bookTicker/btcusdt@depth@100ms"
    legacy = build_urls("ws://127.0.0.1:1", streams, "legacy", 200)
    assert [len(ss) for _, _, ss in legacy] == [200, 52] and legacy[0][1].startswith("ws://127.0.0.1:1/stream?")


def test_pings_are_answered_with_the_same_payload() -> None:
    """Binance pings and drops clients that do not pong: websockets answers by itself, verified here."""

    async def go() -> None:
        m = Metrics()
        q: asyncio.Queue[WsMessage | WsStatus] = asyncio.Queue()
        async with FakeBinance(ManualClock(0).now_ms) as srv:
            pool = StreamPool(build_urls(srv.ws_url, ["btcusdt@aggTrade"], "split", 200), q.put, m, _opts())
            pool.start()
            await srv.wait_connections(1)
            for payload in (b"binance-ping-1", b"\x00\x01"):
                pong = await srv.conns[0].ws.ping(payload)
                await asyncio.wait_for(pong, 2.0)  # resolves only on a pong carrying this payload
            await pool.aclose()

    _run(go)


def test_drop_reconnects_with_backoff_and_reports_it() -> None:
    async def go() -> None:
        m = Metrics()
        q: asyncio.Queue[WsMessage | WsStatus] = asyncio.Queue()
        trades = _trades()
        async with FakeBinance(ManualClock(0).now_ms) as srv:
            pool = _start_pool(srv.ws_url, q, m)
            await srv.wait_connections(1)
            got: list[WsMessage | WsStatus] = []
            await _drain(q, lambda g: len(g) >= 1, got)
            assert metric(m, "ws_connected") == 1
            for raw in trades[:3]:
                await srv.send(raw)
            await _drain(q, lambda g: len(g) >= 4, got)
            assert srv.drop() == 1
            await _drain(q, lambda g: sum(isinstance(x, WsStatus) for x in g) >= 3, got)
            await srv.wait_connections(1)
            for raw in trades[3:6]:
                await srv.send(raw)
            await _drain(q, lambda g: len(g) >= 9, got)
            assert metric(m, "ws_connected") == 1
            await pool.aclose()
            assert metric(m, "ws_connected") == 0
        statuses = [(x.connected, x.reason) for x in got if isinstance(x, WsStatus)]
        assert statuses == [(True, "start"), (False, "dropped"), (True, "dropped")]
        assert [x.raw for x in got if isinstance(x, WsMessage)] == trades[:6]
        assert metric(m, "ws_reconnects_total", {"reason": "dropped"}) == 1

    _run(go)


def test_stalled_stream_is_detected_and_reconnected() -> None:
    async def go() -> None:
        m = Metrics()
        q: asyncio.Queue[WsMessage | WsStatus] = asyncio.Queue()
        trades = _trades()
        async with FakeBinance(ManualClock(0).now_ms) as srv:
            pool = _start_pool(srv.ws_url, q, m, silence_timeout_s=0.3)
            await srv.wait_connections(1)
            srv.stall()  # connection open, pings answered, no data: only silence detection can tell
            got: list[WsMessage | WsStatus] = []
            await _drain(q, lambda g: any(isinstance(x, WsStatus) and x.reason == "silent" for x in g), got)
            srv.stall(False)
            await srv.wait_connects(2)
            await srv.wait_connections(1)
            await srv.send(trades[0])
            await _drain(q, lambda g: any(isinstance(x, WsMessage) for x in g), got)
            await pool.aclose()
        assert metric(m, "ws_reconnects_total", {"reason": "silent"}) >= 1
        assert [x.raw for x in got if isinstance(x, WsMessage)] == [trades[0]]

    _run(go)


def test_planned_reconnect_opens_the_new_connection_before_closing_the_old() -> None:
    async def go() -> None:
        m = Metrics()
        q: asyncio.Queue[WsMessage | WsStatus] = asyncio.Queue()
        trades = _trades()
        async with FakeBinance(ManualClock(0).now_ms) as srv:
            pool = _start_pool(srv.ws_url, q, m, planned_reconnect_s=0.4)
            await srv.wait_connections(1)
            fewest = 1
            for raw in trades:  # ~1.4 s of messages across several planned swaps
                fewest = min(fewest, len(srv.conns))
                await srv.send(raw)
                await asyncio.sleep(0.015)
            await asyncio.sleep(0.2)
            await pool.aclose()
            connects = srv.connects
        got: list[WsMessage | WsStatus] = []
        while not q.empty():
            got.append(q.get_nowait())
        received = [x.raw for x in got if isinstance(x, WsMessage)]
        assert connects >= 3 and metric(m, "ws_reconnects_total", {"reason": "planned"}) >= 2
        assert fewest == 1  # never a moment without a connection
        assert set(received) == set(trades)  # nothing lost; repeats from the overlap are the consumer's job
        ids = [json.loads(r)["data"]["a"] for r in dict.fromkeys(received)]
        assert len(ids) == len(trades)

    _run(go)


def test_refused_connections_back_off_and_are_counted() -> None:
    async def go() -> None:
        m = Metrics()
        q: asyncio.Queue[WsMessage | WsStatus] = asyncio.Queue()
        url = f"ws://127.0.0.1:{free_port()}"
        pool = StreamPool(build_urls(url, ["btcusdt@aggTrade"], "split", 200), q.put, m, _opts(backoff_base_s=0.05))
        pool.start()
        await asyncio.sleep(0.6)
        await pool.aclose()
        n = metric(m, "ws_reconnects_total", {"reason": "connect_failed"})
        # Backoff 0.025..0.05, 0.05..0.1, then capped at 0.05..0.1: a handful in 0.6 s, not a storm.
        assert 3 <= n <= 20
        assert q.empty() and metric(m, "ws_connected") == 0

    _run(go)


def test_connection_attempts_stay_within_the_per_ip_budget() -> None:
    """Binance USDⓈ-M allows a limited number of new connections per IP per 5 minutes: the pool's limiter makes an
    attempt over the budget wait until the oldest one leaves the window (scaled down here: 2 per 0.2 s)."""
    from ultra_signals.sources.binance.ws import ConnectLimiter

    async def go() -> None:
        lim = ConnectLimiter(2, 0.2)
        order: list[int] = []

        async def attempt(i: int) -> None:
            await lim.acquire()
            order.append(i)

        first = [asyncio.create_task(attempt(i)) for i in range(2)]
        await asyncio.gather(*first)
        late = asyncio.create_task(attempt(2))
        await asyncio.sleep(0)
        assert order == [0, 1] and not late.done()  # the third waits for the window
        await asyncio.wait_for(late, 2)
        assert order == [0, 1, 2] and lim.waited == 1

    _run(go)
