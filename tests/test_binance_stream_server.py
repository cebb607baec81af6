"""The load-generating fake itself (``tests/fakes/binance_stream_server.py``): strict where Binance is strict, or the
live benchmark would measure a protocol Binance does not speak.

Raw websocket clients and HTTP only (no project code but the order book, to check the diffs link to a snapshot).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes.binance_stream_server import MarketClock, StreamLoad
from ultra_signals.sources.binance.orderbook import BookState, OrderBook, Outcome
from ultra_signals.sources.binance.parse import DepthDiff, parse_depth_snapshot, parse_message

pytestmark = pytest.mark.timeout(60)
SYMS = ["AAAUSDT", "BBBUSDT"]


def _run(fn: Callable[[StreamLoad], Awaitable[None]]) -> None:
    async def go() -> None:
        now = time.time()
        srv = StreamLoad(SYMS, MarketClock(int(now * 1000), now, 1.0), ping_interval_s=None)
        srv.quiet_rate = 0.0  # only what a test asks for
        await srv.start()
        try:
            await asyncio.wait_for(fn(srv), 30)
        finally:
            await srv.stop()

    asyncio.run(go())


async def _recv_all(ws: object, seconds: float) -> list[bytes]:
    out: list[bytes] = []
    end = asyncio.get_running_loop().time() + seconds
    while True:
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return out
        try:
            out.append(await asyncio.wait_for(ws.recv(decode=False), left))  # type: ignore[attr-defined]
        except TimeoutError:
            return out


def test_streams_on_the_wrong_route_get_nothing_and_too_many_are_refused() -> None:
    """Binance routes book ticker and depth to /public and the rest to /market; the retired /stream sends nothing.
    More than 1024 streams on one connection: closed (1008)."""

    async def go(srv: StreamLoad) -> None:
        url = f"{srv.ws_url}/market/stream?streams=aaausdt@depth@100ms/aaausdt@aggTrade"
        async with connect(url) as ws:
            await asyncio.sleep(0.05)
            await srv.run_step(400.0, 0.3)
            got = await _recv_all(ws, 0.3)
        assert srv.misrouted == ["/market/stream: aaausdt@depth@100ms"]
        kinds = {orjson.loads(m)["stream"] for m in got}
        assert got and kinds == {"aaausdt@aggTrade"}
        many = "/".join(f"x{i}@t" for i in range(1025))  # short names: the count matters, not the names
        async with connect(f"{srv.ws_url}/market/stream?streams={many}") as ws:
            with pytest.raises(ConnectionClosed) as ei:
                await asyncio.wait_for(ws.recv(), 5)
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1008 and srv.rejected == 1

    _run(go)


def test_depth_diffs_chain_and_link_into_the_rest_snapshot() -> None:
    """U/u/pu chain per symbol, and /fapi/v1/depth answers the book the diffs rolled forward: a client that takes the
    snapshot mid-stream goes live without a resync."""

    async def go(srv: StreamLoad) -> None:
        async with connect(f"{srv.ws_url}/public/stream?streams=aaausdt@depth@100ms") as ws:
            await asyncio.sleep(0.05)
            await srv.run_step(300.0, 0.2)
            first = await _recv_all(ws, 0.2)
            async with httpx.AsyncClient(base_url=srv.rest_url) as http:
                snap = parse_depth_snapshot((await http.get("/fapi/v1/depth", params={"symbol": "AAAUSDT"})).json())
            await srv.run_step(300.0, 0.2)
            later = await _recv_all(ws, 0.2)
        diffs = [parse_message(m) for m in first + later]
        assert all(isinstance(d, DepthDiff) for d in diffs) and len(diffs) > 20
        chain = [d for d in diffs if isinstance(d, DepthDiff)]
        assert all(b.prev_final_id == a.final_id and b.first_id == a.final_id + 1 for a, b in itertools.pairwise(chain))
        book = OrderBook("AAAUSDT")
        book.apply_snapshot(snap)
        outcomes = [book.on_diff(d) for d in chain]
        assert Outcome.RESYNC not in outcomes and book.state is BookState.LIVE
        assert book.last_update_id == chain[-1].final_id

    _run(go)


def test_bars_close_for_every_symbol_at_each_boundary_and_rest_agrees() -> None:
    """A closed bar (x: true) per subscribed kline stream at each boundary of the market clock, equal to the REST
    kline of the same open time."""

    async def go(srv: StreamLoad) -> None:
        now = time.time()
        # A clock 600× the wall clock, just before a minute boundary: a bar closes within ~0.1 s.
        m0 = (int(now * 1000) // 60_000 + 1) * 60_000 - 30
        srv.clock = MarketClock(m0, now, 600.0)
        streams = "aaausdt@kline_1m/bbbusdt@kline_1m"
        async with connect(f"{srv.ws_url}/market/stream?streams={streams}") as ws:
            got = await _recv_all(ws, 0.5)
        closed = [orjson.loads(m)["data"]["k"] for m in got]
        closed = [k for k in closed if k["x"]]
        assert {k["s"] for k in closed} == set(SYMS)
        k = closed[0]
        async with httpx.AsyncClient(base_url=srv.rest_url) as http:
            rows = (await http.get("/fapi/v1/klines", params={"symbol": k["s"], "interval": "1m",
                                                              "startTime": k["t"], "endTime": k["t"]})).json()  # fmt: skip
        assert rows and rows[0][0] == k["t"] and rows[0][4] == k["c"] and rows[0][6] == k["T"]

    _run(go)


def test_rest_klines_page_like_binance_and_report_the_weight_used() -> None:
    """From ``startTime`` at most ``limit`` bars; without it the most recent ``limit``; a ``limit`` Binance refuses
    is refused (-1130) and charged nothing; klines are charged by their ``limit`` and every answer reports the
    minute's weight."""

    async def go(srv: StreamLoad) -> None:
        last_open = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
        srv.clock = MarketClock(last_open + 30_000, time.time(), 0.0)  # market time stands still
        charged = []
        async with httpx.AsyncClient(base_url=srv.rest_url) as http:
            base = {"symbol": SYMS[0], "interval": "1m"}
            answers = []
            for params in (
                {**base, "limit": 3},
                {**base, "startTime": last_open - 600_000, "limit": 4},
                {**base, "limit": 1501},
                {**base, "startTime": last_open - 600_000, "limit": 1000},
            ):
                before = srv.weight_total
                answers.append(await http.get("/fapi/v1/klines", params=params))
                charged.append(srv.weight_total - before)
        latest, ranged, refused, big = answers
        assert [r[0] for r in latest.json()] == [last_open - 120_000, last_open - 60_000, last_open]
        assert [r[0] for r in ranged.json()] == [last_open - 600_000 + i * 60_000 for i in range(4)]
        assert len(big.json()) == 11  # every bar from startTime to the one forming
        assert refused.status_code == 400 and refused.json()["code"] == -1130
        assert charged == [1, 1, 0, 5]
        assert all("X-MBX-USED-WEIGHT-1M" in r.headers for r in answers)  # the client's weight pause reads it

    _run(go)


class _Sink:
    """Stands for a client connection: the generator only collects frames per connection before writing them."""


def _frames(batch: dict[object, list[bytes]]) -> list[dict[str, object]]:
    """The JSON of every frame collected (all streams on one sink here), in order; the frames' headers are 2 bytes
    (short messages) or 4 bytes (126 ≤ length < 65536)."""
    out = []
    for frames in batch.values():
        for f in frames:
            out.append(orjson.loads(f[2:] if f[1] < 126 else f[4:]))
    return out


def _load(spread: str, streams: list[str], minute: int) -> tuple[StreamLoad, _Sink]:
    srv = StreamLoad(SYMS, MarketClock(minute + 1_000, time.time(), 1.0), close_spread=spread)
    sink = _Sink()
    srv.by_stream = dict.fromkeys(streams, sink)  # type: ignore[arg-type]
    return srv, sink


def test_close_spread_none_sends_every_symbols_closed_bar_at_the_boundary() -> None:
    """The worst case for a client: every subscribed kline stream's closed bar in the same write, event time = the
    boundary; at a 5m boundary the 1m and 5m bars both."""
    boundary = 1_700_000_100_000 // 300_000 * 300_000  # a 5m (and 1m) boundary
    streams = ["aaausdt@kline_1m", "aaausdt@kline_5m", "bbbusdt@kline_1m", "bbbusdt@aggTrade"]
    srv, _ = _load("none", streams, boundary)
    batch: dict[object, list[bytes]] = {}
    srv._closes(boundary, batch, srv._step, 0.0)  # type: ignore[arg-type]
    got = [(m["stream"], m["data"]["k"]["x"], m["data"]["E"]) for m in _frames(batch)]  # type: ignore[index]
    assert sorted(got) == [(s, True, boundary) for s in sorted(streams) if "kline" in s]
    assert not srv._pending


def test_close_spread_trade_holds_each_symbols_close_until_its_first_trade_or_the_sweep() -> None:
    """As recorded from Binance (the fake's docstring): a symbol's closed bars go out just before its first trade of
    the new bar, never after an update of the new bar; a symbol with no trade gets them at the sweep."""
    boundary = 1_700_000_100_000 // 60_000 * 60_000
    # AAA trades; BBB has no trade stream: nothing releases its close but the sweep.
    streams = ["aaausdt@kline_1m", "aaausdt@aggTrade", "bbbusdt@kline_1m", "bbbusdt@bookTicker"]
    srv, _ = _load("trade", streams, boundary)
    sc = srv._subscribed_cum()
    batch: dict[object, list[bytes]] = {}
    srv._closes(boundary, batch, srv._step, 100.0)  # type: ignore[arg-type]
    assert batch == {} and set(srv._pending) == set(SYMS)
    srv._fill(400, batch, srv._step, sc)  # type: ignore[arg-type]
    srv._sweep(batch, srv._step, 101.99)  # type: ignore[arg-type]  # before the sweep (2 s): BBB still waits
    msgs = _frames(batch)
    kinds = [(m["stream"], m["data"].get("k", {}).get("x")) for m in msgs]  # type: ignore[union-attr]
    first_trade = kinds.index(("aaausdt@aggTrade", None))
    assert kinds[first_trade - 1] == ("aaausdt@kline_1m", True)  # just before it
    assert kinds.count(("aaausdt@kline_1m", True)) == 1
    assert ("aaausdt@kline_1m", False) not in kinds[:first_trade]  # no update of the new bar before the close
    assert ("bbbusdt@kline_1m", False) not in kinds and ("bbbusdt@kline_1m", True) not in kinds
    assert list(srv._pending) == ["BBBUSDT"]
    closed = [m["data"] for m in msgs if m["data"].get("k", {}).get("x")]  # type: ignore[union-attr]
    assert all(d["E"] >= boundary for d in closed)  # type: ignore[index]
    batch = {}
    srv._sweep(batch, srv._step, 102.0)  # type: ignore[arg-type]
    assert [(m["stream"], m["data"]["k"]["x"]) for m in _frames(batch)] == [("bbbusdt@kline_1m", True)]  # type: ignore[index]
    assert not srv._pending and srv._step.sent_by_kind["kline_closed"] == 2
    assert list(srv.close_delays_s)[-1] == pytest.approx(2.0)


def test_close_spread_is_checked() -> None:
    with pytest.raises(ValueError, match="close_spread"):
        StreamLoad(SYMS, MarketClock(0, 0.0, 1.0), close_spread="phase")


def test_an_outage_drops_every_connection_and_refuses_new_ones_until_accepted() -> None:
    """``drop_all``: every connection is cut (no close frame) and new handshakes get 503 until ``accept``; then a
    client connects and receives again."""

    async def go(srv: StreamLoad) -> None:
        url = f"{srv.ws_url}/market/stream?streams=aaausdt@aggTrade"
        async with connect(url) as ws, connect(f"{srv.ws_url}/public/stream?streams=aaausdt@depth@100ms") as wd:
            await asyncio.sleep(0.05)
            await srv.run_step(200.0, 0.1)
            assert await _recv_all(ws, 0.2)
            before = [orjson.loads(m)["data"] for m in await _recv_all(wd, 0.1)]
            dropped, _lost_bytes = srv.drop_all()
            assert dropped == 2
            with pytest.raises(ConnectionClosed) as ei:
                for _ in range(10_000):  # bounded: what was read before the cut, then the cut
                    await asyncio.wait_for(ws.recv(), 5)
            assert ei.value.rcvd is None  # aborted, not closed with a close frame
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 503 and srv.refused == 1
        for _ in range(500):  # bounded: the server notices the cut within a few loop turns
            if not srv.conns:
                break
            await asyncio.sleep(0.01)
        assert srv.conns == [] and srv.by_stream == {}
        srv.accept()
        async with connect(url) as ws, connect(f"{srv.ws_url}/public/stream?streams=aaausdt@depth@100ms") as wd:
            await asyncio.sleep(0.05)
            await srv.run_step(200.0, 0.1)
            got = await _recv_all(ws, 0.2)
            after = [orjson.loads(m)["data"] for m in await _recv_all(wd, 0.1)]
        assert got and {orjson.loads(m)["stream"] for m in got} == {"aaausdt@aggTrade"}
        assert srv.connects == 4 and srv.refused == 1
        # The book moved during the outage: the first diff after it does not continue the last one before.
        assert before and after and after[0]["pu"] > before[-1]["u"]

    _run(go)
