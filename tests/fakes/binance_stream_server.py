"""A load-generating fake of Binance USDⓈ-M market streams on 127.0.0.1, for ``bench/bench_live.py``.

Where ``tests/fakes/binance_server.py`` replays recordings message by message for correctness tests, this one
*generates* the whole market's traffic at a chosen rate (tens of thousands of messages a second) for many
symbols, with the shapes and the per-symbol mix of the real recording in ``../shared/data/ws`` (2021-07-22,
4 symbols × 30 s: per symbol and second about 6.4 ``depth@100ms`` diffs of ~5 levels, 5.1 ``bookTicker``,
0.76 ``aggTrade``, 0.56 updates per ``kline`` stream, plus ``markPrice@1s``).  It runs in its own process in the
benchmark so that its CPU is not charged to the client under test.

The protocol, as documented by Binance and kept strictly:

- combined streams at ``/market/stream?streams=…`` (klines, trades, mark price) and ``/public/stream?streams=…``
  (``bookTicker``, ``depth``): since 2026-04-23 a stream on the wrong route (or on the retired ``/stream``)
  gets *nothing*, silently, like the real server
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Important-WebSocket-Change-Notice);
  such streams are counted in :attr:`StreamLoad.misrouted` so the benchmark can fail loudly;
- at most 1024 streams per connection; more and the connection is closed (1008)
  (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams);
- the server pings (``ping_interval_s``) and drops a client that does not answer within ``ping_timeout_s``
  (Binance: every 3 minutes, 10 minutes to answer; the bench uses seconds, stricter);
- depth diffs chain by ``U``/``u``/``pu`` per symbol; ``/fapi/v1/depth`` answers a snapshot of the book the diffs
  roll forward, so a client that resyncs links in again;
- klines close on the market clock's minute boundaries (``x: true``), one message per subscribed timeframe
  closing there; *when* is :attr:`StreamLoad.close_spread`:

  - ``"none"`` (the default, the worst case for a client): every symbol's closed bars in the same write, at the
    boundary;
  - ``"trade"`` (what the real exchange does): a symbol's closed bars go out just before its first trade of the new
    bar (no kline update of the new bar before them), or at the sweep ``close_sweep_s`` after the boundary if it has
    none. The recording in ``../shared/data/ws/binance-futures-ws-20210722.txt`` (the minute boundary 1626992760000,
    4 symbols) shows exactly that: SUSHIUSDT's closed 1m bar has ``E`` = +203 ms, 5 ms after its first trade of the
    new minute (``T`` = +198), CTKUSDT's +791 ms, 7 ms after its first trade (+784); AKROUSDT and KEEPUSDT, with no
    trade in the new minute, +2003 and +2004 ms (a sweep ~2 s after the boundary). Binance documents the kline
    stream's "Update Speed 250ms" (pushes at most every 250 ms, "if existing",
    https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams),
    and the recording agrees (updates of one stream ≥ 279 ms apart) but has no fixed per-stream phase (``E`` mod 250
    ms varies over the whole cycle within one stream), so the model has no phase: only the trade trigger and the
    sweep. Four samples: the model is that simple on purpose (no per-symbol lateness beyond the trigger, the sweep a
    constant 2 s). How spread the closes are therefore follows the fake's own trade rate per symbol (the recorded
    mix scaled to the rate asked): at 20,000 msgs/s over 100 symbols each trades ~10 times a second, so half the
    symbols close within ~70 ms; a quiet market leaves most to the sweep. The sweep is wall time (what the client
    feels), also when the market clock runs faster than the wall clock.

The market clock may run faster than the wall clock (``speed``) so bars close every few seconds of a bench.
Event times (``E``, ``T``) are market time; ``wall_of(E)`` maps them back to the wall time they were sent,
which is how the benchmark measures lag from the exchange's send to the decision.

Data frames are written to the transport as ready-made unmasked text frames (RFC 6455 §5.2), many per write:
a Python websocket library's per-message cost would make the generator, not the client, the bottleneck.
Control frames (pings, pongs, close) still go through ``websockets``.

An outage, for ``bench_live.py --outage``: :meth:`StreamLoad.drop_all` cuts every websocket connection at once
(reset: no close frame, ``SO_LINGER`` 0 so the kernel sends RST instead of flushing its send buffer, and whatever
sat in the fake's write buffers is gone, as on a dropped network path) and refuses every new handshake with HTTP 503 until :meth:`StreamLoad.accept`; the client's
connect fails and it backs off, as when the exchange is unreachable.  REST keeps answering (the gap fill after the
reconnect is what is measured).  The market clock keeps running: bars close meanwhile and nobody receives them,
and every order book moves on (its update ids jump at :meth:`StreamLoad.accept`), so each client book resyncs.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from tests.fakes.binance_server import WEIGHT_LIMIT_1M, close_servers, request_weight

MAX_STREAMS_PER_CONNECTION = 1024
PUBLIC_KINDS = ("bookTicker", "depth")
#: Messages per symbol and second per stream kind, from the 2021-07-22 recording (see the module docstring).
RECORDED_MIX = {"depth": 6.4, "bookTicker": 5.1, "aggTrade": 0.76, "kline": 0.56, "markPrice": 1.0}
#: When closed bars go out (:attr:`StreamLoad.close_spread`, the module docstring).
CLOSE_SPREADS = ("none", "trade")
TF_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000}


def text_frame(payload: bytes) -> bytes:
    """One unmasked FIN text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


def stream_kind(stream: str) -> str:
    """``btcusdt@depth@100ms`` → ``depth``; ``btcusdt@kline_5m`` → ``kline``; ``…@markPrice@1s`` → ``markPrice``."""
    kind = stream.split("@", 2)[1] if "@" in stream else stream
    return "kline" if kind.startswith("kline_") else kind


class MarketClock:
    """Market time that runs ``speed`` times the wall clock from ``(market0_ms, wall0_s)``; shared by both ends."""

    def __init__(self, market0_ms: int, wall0_s: float, speed: float) -> None:
        self.market0_ms, self.wall0_s, self.speed = market0_ms, wall0_s, speed

    def now_ms(self) -> int:
        return self.market0_ms + int((time.time() - self.wall0_s) * 1000.0 * self.speed)

    def wall_of(self, market_ms: int) -> float:
        return self.wall0_s + (market_ms - self.market0_ms) / 1000.0 / self.speed


def _price(sym_i: int, t_ms: int) -> float:
    """A deterministic, smooth-ish price path per symbol: REST and the stream agree on every bar."""
    base = 1.0 + sym_i * 0.37
    x = t_ms / 60_000.0
    return base * (
        1.0 + 0.03 * math.sin(x / 97.0 + sym_i) + 0.01 * math.sin(x / 13.0 + 2 * sym_i) + 0.002 * math.sin(x)
    )


def kline_row(sym_i: int, tf: str, open_ms: int) -> list[Any]:
    length = TF_MS[tf]
    o, c = _price(sym_i, open_ms), _price(sym_i, open_ms + length)
    mid = _price(sym_i, open_ms + length // 2)
    hi, lo = max(o, c, mid) * 1.0007, min(o, c, mid) * 0.9993
    vol = 1000.0 + 500.0 * (1.0 + math.sin(open_ms / 7_777_777.0 + sym_i)) * length / 60_000
    close_ms = open_ms + length - 1
    return [open_ms, f"{o:.6f}", f"{hi:.6f}", f"{lo:.6f}", f"{c:.6f}", f"{vol:.3f}", close_ms, "0", 100, "0", "0", "0"]


@dataclass
class _Book:
    """The exchange's book of one symbol on a fixed price grid; diffs move it, snapshots read it."""

    tick: float
    mid_ticks: int
    last_id: int
    bids: dict[int, str] = field(default_factory=dict)
    asks: dict[int, str] = field(default_factory=dict)

    def snapshot(self, limit: int, now_ms: int) -> bytes:
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return orjson.dumps(
            {
                "lastUpdateId": self.last_id,
                "E": now_ms,
                "T": now_ms,
                "bids": [[f"{p * self.tick:.6f}", q] for p, q in bids],
                "asks": [[f"{p * self.tick:.6f}", q] for p, q in asks],
            }
        )


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    route: str
    streams: set[str]


@dataclass
class Step:
    """What the generator sent during one rate step."""

    rate: float
    start_s: float
    end_s: float
    sent: int = 0
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    max_write_buffer: int = 0


class StreamLoad:
    """The fake exchange: REST (aiohttp) + combined-stream websockets (``websockets``) on 127.0.0.1."""

    def __init__(
        self,
        symbols: list[str],
        clock: MarketClock,
        *,
        ping_interval_s: float | None = 2.0,
        ping_timeout_s: float | None = 5.0,
        seed: int = 7,
        close_spread: str = "none",
        close_sweep_s: float = 2.0,
    ) -> None:
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        self.clock = clock
        self._ping = (ping_interval_s, ping_timeout_s)
        self._rng = random.Random(seed)
        self.books = {
            s: _Book(tick=_price(i, 0) / 10_000.0, mid_ticks=10_000, last_id=1_000_000 + i * 17)
            for i, s in enumerate(symbols)
        }
        for b in self.books.values():
            for k in range(1, 60):
                b.bids[b.mid_ticks - k] = f"{self._rng.uniform(1, 500):.1f}"
                b.asks[b.mid_ticks + k] = f"{self._rng.uniform(1, 500):.1f}"
        self.conns: list[_Conn] = []
        self.by_stream: dict[str, _Conn] = {}
        self.misrouted: list[str] = []
        self.rejected = 0
        self.connects = 0
        #: Outage (:meth:`drop_all` … :meth:`accept`): handshakes are answered 503 while set; ``refused`` counts them.
        self.refusing = False
        self.refused = 0
        self.rest_calls: dict[str, int] = {}
        #: REST weight used in the current wall-clock minute (what ``X-MBX-USED-WEIGHT-1M`` says), and since start.
        self.used_weight = 0
        self.weight_total = 0
        self._weight_minute = -1
        #: Requests answered 429 because they would have taken the minute past Binance's 2,400.
        self.weight_refused = 0
        self._trade_id = 1
        self._ticker_id = 1
        self._mark_e: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None
        self.rest_url = ""
        self.ws_url = ""
        self._step = Step(0.0, 0.0, 0.0)  # where the closer counts bars sent outside any step
        self._closer_task: asyncio.Task[None] | None = None
        self._stepping = False
        self._subs_cache: tuple[int, list[tuple[str, str, str, float]], list[float]] | None = None
        #: Messages/s between steps (a quiet market): every stream stays alive for the client's silence watchdog.
        self.quiet_rate = 5.0 * len(symbols)
        #: Data frames written to a client since start (steps, trickle, bar closes); ``unsent``: not written
        #: because the connection was closing.
        self.sent_total = 0
        self.unsent = 0
        #: Stop all traffic (trickle and bar closes), e.g. to count what was sent against what was received.
        self.paused = False
        #: When closed bars go out: ``"none"`` all at the boundary, ``"trade"`` at the symbol's first trade of the
        #: new bar or the sweep (the module docstring); may change between steps.
        if close_spread not in CLOSE_SPREADS:
            raise ValueError(f"close_spread must be one of {CLOSE_SPREADS}, not {close_spread!r}")
        self.close_spread = close_spread
        self.close_sweep_s = close_sweep_s
        #: ``"trade"``: closed bars waiting for their symbol's first trade, per symbol (boundary order), with the
        #: wall time of their sweep.  Every entry leaves by its sweep at the latest.
        self._pending: dict[str, tuple[float, list[tuple[str, str, int]]]] = {}
        #: ``"trade"``: how long after its boundary each symbol's closed bars went out (wall seconds), sweep or not.
        self.close_delays_s: deque[float] = deque(maxlen=100_000)

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self, rest_port: int = 0, ws_port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", rest_port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.rest_url = f"http://127.0.0.1:{port}"
        self._ws = await serve(
            self._handler,
            "127.0.0.1",
            ws_port,
            ping_interval=self._ping[0],
            ping_timeout=self._ping[1],
            max_queue=None,
            max_size=2**16,
            process_request=self._process_request,
        )
        self.ws_url = f"ws://127.0.0.1:{next(iter(self._ws.sockets)).getsockname()[1]}"
        self._closer_task = asyncio.create_task(self._closer())

    async def stop(self) -> None:
        if self._closer_task is not None:
            self._closer_task.cancel()
            await asyncio.gather(self._closer_task, return_exceptions=True)
        await close_servers(self._ws, self._runner)

    # -- outage ---------------------------------------------------------------------------------------------
    def drop_all(self) -> tuple[int, int]:
        """Start an outage: abort every websocket connection (no close frame; frames still in the fake's write
        buffers are discarded) and refuse new ones until :meth:`accept`.  Returns (connections dropped, bytes that
        were waiting in their write buffers and are lost)."""
        self.refusing = True
        conns = list(self.conns)
        lost_bytes = 0
        for c in conns:
            tr = c.ws.transport
            lost_bytes += tr.get_write_buffer_size()
            sock = tr.get_extra_info("socket")
            if sock is not None:  # a reset (RST), not an orderly FIN after the kernel's buffer: nothing more arrives
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tr.abort()
        return len(conns), lost_bytes

    def accept(self) -> None:
        """End the outage: handshakes succeed again.  Every book has moved meanwhile (its update id jumps, as the
        exchange's diffs went on without us), so a client's next diff does not continue the last one it saw."""
        self.refusing = False
        for b in self.books.values():
            b.last_id += self._rng.randint(1_000, 5_000)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if not self.refusing:
            return None
        self.refused += 1
        return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "fake outage\n")

    # -- REST ---------------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.Response:
        path, p = request.path, request.query
        key = path.rsplit("/", 1)[-1]
        self.rest_calls[key] = self.rest_calls.get(key, 0) + 1
        now = self.clock.now_ms()
        # Request weight as Binance charges it (tests/fakes/binance_server.py's docstring cites the pages), in the
        # wall clock's minute (Binance's window is real time, whatever the market clock's speed).
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self.used_weight = minute, 0
        weight = request_weight(path, dict(p))
        if weight is None:
            return self._json({"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}, 400)
        if self.used_weight + weight > WEIGHT_LIMIT_1M:
            self.weight_refused += 1
            return web.Response(
                body=orjson.dumps({"code": -1003, "msg": "Too many requests; current limit is 2400 request weight."}),
                status=429,
                content_type="application/json",
                headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight), "Retry-After": str(60 - int(time.time()) % 60)},
            )
        self.used_weight += weight
        self.weight_total += weight
        if path.endswith("/fapi/v1/exchangeInfo"):
            return self._json({"serverTime": now, "symbols": [self._symbol_info(s) for s in self.symbols]})
        if path.endswith("/fapi/v1/klines"):
            sym, tf = p.get("symbol", ""), p.get("interval", "")
            if sym not in self.index or tf not in TF_MS:
                return self._json({"code": -1121, "msg": "Invalid symbol."}, 400)
            length = TF_MS[tf]
            end = min(int(p.get("endTime", str(now))), now)
            limit = int(p.get("limit", "500"))  # 1..1500: request_weight refused anything else
            if "startTime" in p:  # from startTime on, at most ``limit`` bars
                start = int(p["startTime"])
                first = start + (-start) % length
                opens = range(first, end + 1, length)[:limit]
            else:  # no startTime: the most recent ``limit`` bars up to endTime
                opens = range(end - end % length, -1, -length)[:limit][::-1]
            return self._json([kline_row(self.index[sym], tf, t) for t in opens])
        if path.endswith("/fapi/v1/depth"):
            book = self.books.get(p.get("symbol", ""))
            if book is None:
                return self._json({"code": -1121, "msg": "Invalid symbol."}, 400)
            body = book.snapshot(int(p.get("limit", "500")), now)
            return web.Response(
                body=body, content_type="application/json", headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
            )
        if path.endswith("/fapi/v1/time"):
            return self._json({"serverTime": now})
        return self._json({"code": -1, "msg": f"fake: no route {path}"}, 404)

    def _json(self, obj: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=orjson.dumps(obj),
            status=status,
            content_type="application/json",
            headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight)},
        )

    def _symbol_info(self, s: str) -> dict[str, Any]:
        tick = f"{self.books[s].tick:.8f}"
        return {
            "symbol": s,
            "status": "TRADING",
            "contractType": "PERPETUAL",
            "baseAsset": s.removesuffix("USDT"),
            "quoteAsset": "USDT",
            "pricePrecision": 6,
            "quantityPrecision": 1,
            "onboardDate": 1_569_398_400_000,
            "deliveryDate": 4_133_404_800_000,
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": tick, "minPrice": tick, "maxPrice": "1000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.1", "minQty": "0.1", "maxQty": "1000000"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.1", "minQty": "0.1", "maxQty": "100000"},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
            ],
        }

    # -- websocket ----------------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        names = [n for n in parse_qs(url.query).get("streams", [""])[0].split("/") if n]
        if len(names) > MAX_STREAMS_PER_CONNECTION:
            self.rejected += 1
            await ws.close(CloseCode.POLICY_VIOLATION, f"too many streams ({len(names)} > 1024)")
            return
        route = url.path.rsplit("/stream", 1)[0].rsplit("/", 1)[-1]  # "/market/stream" → "market"
        served = set()
        for n in names:
            public = stream_kind(n).startswith(PUBLIC_KINDS)
            if (route == "public" and public) or (route == "market" and not public):
                served.add(n)
            else:
                self.misrouted.append(f"{url.path}: {n}")
        conn = _Conn(ws, route, served)
        self.conns.append(conn)
        self.connects += 1
        for n in served:
            self.by_stream[n] = conn
        try:
            await ws.wait_closed()
        finally:
            self.conns.remove(conn)
            for n in served:
                if self.by_stream.get(n) is conn:
                    del self.by_stream[n]

    # -- generation ---------------------------------------------------------------------------------------
    def _subscribed(self) -> list[tuple[str, str, str, float]]:
        """(stream, symbol, kind, weight) for every served stream, weighted by the recorded mix."""
        out = []
        for stream in self.by_stream:
            kind = stream_kind(stream)
            sym = stream.split("@", 1)[0].upper()
            if sym in self.index and kind in RECORDED_MIX:
                out.append((stream, sym, kind, RECORDED_MIX[kind]))
        out.sort()
        return out

    def _message(self, stream: str, sym: str, kind: str, now: int) -> bytes:
        rng = self._rng
        data: dict[str, Any]
        if kind == "depth":
            b = self.books[sym]
            first = b.last_id + 1
            b.last_id += rng.randint(1, 40)
            bids, asks = [], []
            for _ in range(rng.randint(2, 8)):
                off = rng.randint(1, 40)
                side, arr, tick = (
                    (b.bids, bids, b.mid_ticks - off) if rng.random() < 0.5 else (b.asks, asks, b.mid_ticks + off)
                )
                q = "0" if rng.random() < 0.2 and off > 1 else f"{rng.uniform(1, 500):.1f}"
                if q == "0":
                    side.pop(tick, None)
                else:
                    side[tick] = q
                arr.append([f"{tick * b.tick:.6f}", q])
            data = {"e": "depthUpdate", "E": now, "T": now, "s": sym, "U": first, "u": b.last_id, "pu": first - 1,
                    "b": bids, "a": asks}  # fmt: skip
        elif kind == "bookTicker":
            b = self.books[sym]
            self._ticker_id += 1
            bid, ask = (b.mid_ticks - 1) * b.tick, (b.mid_ticks + 1) * b.tick
            data = {"e": "bookTicker", "u": self._ticker_id, "s": sym, "b": f"{bid:.6f}", "B": f"{rng.uniform(1, 900):.1f}",
                    "a": f"{ask:.6f}", "A": f"{rng.uniform(1, 900):.1f}", "T": now, "E": now}  # fmt: skip
        elif kind == "aggTrade":
            self._trade_id += 1
            p = _price(self.index[sym], now)
            data = {"e": "aggTrade", "E": now, "a": self._trade_id, "s": sym, "p": f"{p:.6f}", "q": f"{rng.uniform(0.1, 50):.1f}",
                    "f": self._trade_id, "l": self._trade_id, "T": now, "m": rng.random() < 0.5}  # fmt: skip
        elif kind == "markPrice":
            # E grows per symbol, as on the real stream (the client drops a repeat as a duplicate).
            now = self._mark_e[sym] = max(now, self._mark_e.get(sym, 0) + 1)
            p = _price(self.index[sym], now)
            nxt = now - now % 28_800_000 + 28_800_000
            data = {"e": "markPriceUpdate", "E": now, "s": sym, "p": f"{p:.6f}", "i": f"{p:.6f}", "P": f"{p:.6f}",
                    "r": "0.00010000", "T": nxt}  # fmt: skip
        else:  # an update of the bar still forming (x: false)
            tf = stream.rsplit("_", 1)[1]
            length = TF_MS[tf]
            return self._kline(stream, sym, tf, now - now % length, now, closed=False)
        return orjson.dumps({"stream": stream, "data": data})

    def _kline(self, stream: str, sym: str, tf: str, open_ms: int, now: int, *, closed: bool) -> bytes:
        r = kline_row(self.index[sym], tf, open_ms)
        k = {"t": r[0], "T": r[6], "s": sym, "i": tf, "f": 1, "L": 100, "o": r[1], "c": r[4], "h": r[2], "l": r[3],
             "v": r[5], "n": r[8], "x": closed, "q": r[7], "V": r[9], "Q": r[10], "B": "0"}  # fmt: skip
        return orjson.dumps({"stream": stream, "data": {"e": "kline", "E": now, "s": sym, "k": k}})

    def _closes(self, boundary: int, out: dict[_Conn, list[bytes]], step: Step, wall: float | None = None) -> None:
        """Every subscribed kline stream whose bar closes at ``boundary``: one closed bar each, written now
        (``close_spread`` ``"none"``) or held for the symbol's first trade, until ``wall`` + the sweep (``"trade"``)."""
        spread = self.close_spread
        wall = time.time() if wall is None else wall
        for stream in list(self.by_stream):
            if "@kline_" not in stream:
                continue
            tf = stream.rsplit("_", 1)[1]
            if boundary % TF_MS[tf]:
                continue
            sym = stream.split("@", 1)[0].upper()
            if sym not in self.index:
                continue
            if spread == "none":
                self._send_close(stream, sym, tf, boundary, out, step, event_ms=boundary)
            else:
                self._pending.setdefault(sym, (wall + self.close_sweep_s, []))[1].append((stream, tf, boundary))

    def _send_close(
        self,
        stream: str,
        sym: str,
        tf: str,
        boundary: int,
        out: dict[_Conn, list[bytes]],
        step: Step,
        *,
        event_ms: int | None = None,
    ) -> None:
        """One closed bar; its event time is the market time it is written at, unless given."""
        conn = self.by_stream.get(stream)
        if conn is None:  # the client left meanwhile: nothing to write to
            return
        length = TF_MS[tf]
        now = max(boundary, self.clock.now_ms()) if event_ms is None else event_ms
        out.setdefault(conn, []).append(text_frame(self._kline(stream, sym, tf, boundary - length, now, closed=True)))
        step.sent += 1
        step.sent_by_kind["kline_closed"] = step.sent_by_kind.get("kline_closed", 0) + 1

    def _release(self, sym: str, out: dict[_Conn, list[bytes]], step: Step, wall: float) -> None:
        """``sym``'s waiting closed bars, oldest boundary first (its first trade of the new bar, or the sweep)."""
        entry = self._pending.pop(sym, None)
        if entry is None:
            return
        sweep_at, closes = entry
        for stream, tf, boundary in closes:
            self._send_close(stream, sym, tf, boundary, out, step)
        self.close_delays_s.append(wall - (sweep_at - self.close_sweep_s))

    def _sweep(self, out: dict[_Conn, list[bytes]], step: Step, wall: float) -> None:
        """Closed bars whose symbol had no trade within ``close_sweep_s`` of the boundary: now."""
        for sym in [s for s, (at, _) in self._pending.items() if at <= wall]:
            self._release(sym, out, step, wall)

    async def _closer(self) -> None:
        """Close every subscribed kline stream's bar on each boundary of the market clock, steps or not; between
        steps, a quiet market's trickle (``quiet_rate``) keeps every stream alive."""
        last = self.clock.now_ms() // 60_000
        t0, quiet_sent = time.time(), 0
        while True:
            if self.paused:
                await asyncio.sleep(0.01)
                continue
            minute = self.clock.now_ms() // 60_000
            wall = time.time()
            batch: dict[_Conn, list[bytes]] = {}
            self._sweep(batch, self._step, wall)
            if minute > last:
                for m in range(last + 1, minute + 1):
                    self._closes(m * 60_000, batch, self._step, wall)
                last = minute
            if self._stepping:
                t0, quiet_sent = time.time(), 0
            else:
                due = int((time.time() - t0) * self.quiet_rate) - quiet_sent
                quiet_sent += max(0, due)
                self._fill(max(0, due), batch, self._step, self._subscribed_cum())
            self._write(batch, self._step)
            await asyncio.sleep(0.002)

    def _subscribed_cum(self) -> tuple[list[tuple[str, str, str, float]], list[float]]:
        if self._subs_cache is not None and self._subs_cache[0] == len(self.by_stream):
            return self._subs_cache[1], self._subs_cache[2]
        subs = self._subscribed()
        total_w = sum(w for *_, w in subs) or 1.0
        cum: list[float] = []
        acc = 0.0
        for *_, w in subs:
            acc += w / total_w
            cum.append(acc)
        self._subs_cache = (len(self.by_stream), subs, cum)
        return subs, cum

    def _fill(
        self,
        n: int,
        batch: dict[_Conn, list[bytes]],
        step: Step,
        sc: tuple[list[tuple[str, str, str, float]], list[float]],
    ) -> None:
        """``n`` messages drawn from the recorded mix over every served stream."""
        subs, cum = sc
        if not subs:
            return
        clock = self.clock.now_ms
        pending = self._pending
        rng = self._rng
        last = len(subs) - 1
        for _ in range(n):
            now = clock()  # per message: a late batch must not carry an older send time than it was written at
            stream, sym, kind, _w = subs[min(bisect.bisect_left(cum, rng.random()), last)]
            if pending and sym in pending:
                # Binance updates a kline stream after the trades, and closes the bar at the symbol's first trade
                # of the new one: no update of the new bar precedes the close.  Such a draw is drawn again (at
                # most twice, then dropped); a trade of the symbol sends its closed bars first.
                for _retry in range(2):
                    if kind != "kline" or sym not in pending:
                        break
                    stream, sym, kind, _w = subs[min(bisect.bisect_left(cum, rng.random()), last)]
                if sym in pending:
                    if kind == "kline":
                        continue
                    if kind == "aggTrade":
                        self._release(sym, batch, step, time.time())
                        now = clock()
            conn = self.by_stream.get(stream)
            if conn is None:
                continue
            batch.setdefault(conn, []).append(text_frame(self._message(stream, sym, kind, now)))
            step.sent += 1
            step.sent_by_kind[kind] = step.sent_by_kind.get(kind, 0) + 1

    def _write(self, batch: dict[_Conn, list[bytes]], step: Step) -> None:
        for conn, frames in batch.items():
            tr = conn.ws.transport
            if tr.is_closing() or conn.ws.state is not State.OPEN:
                self.unsent += len(frames)  # the client is gone (or going): never written, not "sent"
                continue
            try:
                tr.write(b"".join(frames))
            except RuntimeError:  # closing handshake under way (write_eof): as above
                self.unsent += len(frames)
                continue
            self.sent_total += len(frames)
            step.max_write_buffer = max(step.max_write_buffer, tr.get_write_buffer_size())

    async def run_step(self, rate: float, seconds: float, tick_s: float = 0.005) -> Step:
        """Send ``rate`` messages/s (the recorded mix over every served stream) for ``seconds``; bars closing
        meanwhile (sent by the closer task) are counted in the step too."""
        sc = self._subscribed_cum()
        t0 = time.time()
        step = self._step = Step(rate, t0, t0 + seconds)
        self._stepping = True
        filler = 0
        try:
            while True:
                now_wall = time.time()
                if now_wall >= step.end_s:
                    break
                due = max(0, int((now_wall - t0) * rate) - filler)
                filler += due
                batch: dict[_Conn, list[bytes]] = {}
                self._fill(due, batch, step, sc)
                self._write(batch, step)
                await asyncio.sleep(tick_s)
        finally:
            self._stepping = False
            self._step = Step(0.0, time.time(), time.time())
        return step

    async def idle(self, seconds: float) -> None:
        """A quiet market for ``seconds``: the trickle and bar closes only."""
        await asyncio.sleep(seconds)
