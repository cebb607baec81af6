"""A local fake Binance USDⓈ-M: REST (aiohttp) and combined-stream websockets (``websockets``) on 127.0.0.1.

It speaks the real protocol and serves real recorded payloads: the tests feed it lines from
``../shared/data/ws`` (sent byte for byte, only the combined wrapper's ``stream`` name is set to the name the
client subscribed, e.g. a recorded ``depth@0ms`` to a ``depth@100ms`` subscriber), kline rows for REST
backfill, the recorded exchangeInfo and depth snapshots.  Any path prefix works (``/stream``,
``/market/stream``, ``/public/stream``, ``/anything/fapi/v1/klines``).

Faults on command: :meth:`drop` (abort every connection, no close frame), :meth:`stall` (keep connections
open, pings answered, but send nothing), :meth:`skip_depth` (the exchange moves on but a diff never goes out),
:meth:`send_raw` (malformed JSON or anything else), :meth:`repeat_last_kline`, :meth:`fail_next` (HTTP 429 /
418 / 500 with ``Retry-After``).

Request weight, as Binance documents it and reports it in ``X-MBX-USED-WEIGHT-1M`` (the weight used in the current
minute of the fake's clock, all requests together): ``/fapi/v1/klines`` by its ``limit`` (default 500; [1,100) → 1,
[100,500) → 2, [500,1000] → 5, > 1000 → 10; more than 1,500 or less than 1 is refused with -1130), per
https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data;
``/fapi/v1/depth`` by its ``limit`` (5/10/20/50 → 2, 100 → 5, 500 (default) → 10, 1000 → 20; any other value is
refused with -1130), per https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Order-Book;
``/fapi/v1/ticker/24hr`` 1 for one symbol, 40 for all; anything else 1. A request that would take the minute past
2,400 is answered 429 (-1003) with ``Retry-After`` (the seconds left in the minute).

Depth snapshots behave like the exchange's: the book starts as the recorded snapshot and rolls forward with
every diff that the exchange "publishes" (sent or skipped) after it, so a resync after a skipped diff gets a
snapshot that links into the stream again.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ultra_signals.core.timeframes import tf_ms


async def close_servers(ws: Server | None, runner: web.AppRunner | None) -> None:
    """Stop a fake's websocket server (its close handshake waited for, bounded to 5 s), then its REST app."""
    if ws is not None:
        ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.wait_closed(), 5)
    if runner is not None:
        await runner.cleanup()


#: Binance USDⓈ-M's ``REQUEST_WEIGHT`` limit per minute (exchangeInfo ``rateLimits``): a request that would pass it is
#: answered 429 (-1003) with ``Retry-After`` until the minute ends, and is charged nothing.
WEIGHT_LIMIT_1M = 2400
#: ``/fapi/v1/klines`` weight tiers (highest limit of the tier, weight) and ``/fapi/v1/depth`` weights (the module
#: docstring cites the pages).
_KLINES_WEIGHT = ((99, 1), (499, 2), (1000, 5), (1500, 10))
_DEPTH_WEIGHT = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


def request_weight(path: str, params: dict[str, str]) -> int | None:
    """The weight Binance charges this public request, or None when its ``limit`` is one Binance refuses."""
    if path.endswith("/fapi/v1/klines"):
        try:
            limit = int(params.get("limit", "500"))
        except ValueError:
            return None
        return next((w for top, w in _KLINES_WEIGHT if 1 <= limit <= top), None)
    if path.endswith("/fapi/v1/depth"):
        try:
            return _DEPTH_WEIGHT.get(int(params.get("limit", "500")))
        except ValueError:
            return None
    if path.endswith("/fapi/v1/ticker/24hr"):
        return 1 if "symbol" in params else 40
    return 1


class ManualClock:
    """Market time the test moves by hand; shared by the fake exchange and the source under test."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


def stream_key(name: str) -> str:
    """Subscription identity without the update speed: ``btcusdt@depth@0ms`` and ``@depth@100ms`` match."""
    parts = name.split("@")
    if len(parts) >= 2 and parts[1] in ("depth", "markPrice"):
        return f"{parts[0]}@{parts[1]}"
    return "@".join(parts[:2])


# -- recordings ---------------------------------------------------------------------------------------------
def read_recorded_2021(path: Path) -> list[str]:
    """``<time>: <json>`` lines after the subscription URL line → raw JSON texts, in order."""
    out = []
    with path.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            line = line.rstrip("\n")
            if line:
                out.append(line.split(": ", 1)[1])
    return out


def read_rest_depth_2021(path: Path) -> dict[str, str]:
    """``<url> -> <time>: <json>`` lines → raw snapshot JSON per symbol."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        url, rest = line.split(" -> ", 1)
        sym = parse_qs(urlsplit(url).query)["symbol"][0]
        out[sym] = rest.split(": ", 1)[1]
    return out


def read_recorded_2024(path: Path) -> tuple[list[str], str]:
    """gzip ``<ns> <json>`` lines → (stream messages in order, the REST snapshot line's JSON)."""
    import gzip

    msgs, snapshot = [], ""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            raw = line.rstrip("\n").split(" ", 1)[1]
            if raw.startswith('{"stream"'):
                msgs.append(raw)
            elif '"lastUpdateId"' in raw[:40]:
                snapshot = raw
    return msgs, snapshot


def csv_kline_rows(path: Path, tf: str, shift_ms: int = 0) -> list[list[Any]]:
    """A candle CSV (open_time, open, high, low, close, volume) → REST kline rows, decimals kept as written.

    Fields the CSV lacks (quote volume, trades, taker buy volume) are zero.
    """
    length = tf_ms(tf)
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            t = int(r["open_time"]) + shift_ms
            rows.append(
                [t, r["open"], r["high"], r["low"], r["close"], r["volume"], t + length - 1, "0", 0, "0", "0", "0"]
            )
    return rows


def ws_kline(symbol: str, tf: str, row: list[Any], *, closed: bool = True, event_time: int | None = None) -> str:
    """A REST kline row as Binance's ``kline`` stream message (combined wrapper)."""
    k = {
        "t": row[0],
        "T": row[6],
        "s": symbol,
        "i": tf,
        "f": 0,
        "L": 0,
        "o": row[1],
        "c": row[4],
        "h": row[2],
        "l": row[3],
        "v": row[5],
        "n": row[8],
        "x": closed,
        "q": row[7],
        "V": row[9],
        "Q": row[10],
        "B": "0",
    }
    data = {"e": "kline", "E": event_time if event_time is not None else row[6] + 1, "s": symbol, "k": k}
    return json.dumps({"stream": f"{symbol.lower()}@kline_{tf}", "data": data}, separators=(",", ":"))


# -- depth reference book -----------------------------------------------------------------------------------
@dataclass
class _Book:
    """The exchange's true book: recorded snapshot rolled forward by every published diff after it."""

    raw_snapshot: str
    last_id: int = 0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    rolled: bool = False

    def __post_init__(self) -> None:
        snap = json.loads(self.raw_snapshot)
        self.last_id = snap["lastUpdateId"]
        self.bids = {p: q for p, q in snap["bids"]}
        self.asks = {p: q for p, q in snap["asks"]}

    def publish(self, diff: dict[str, Any]) -> None:
        if diff["u"] < self.last_id:
            return  # older than the snapshot
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.last_id = diff["u"]
        self.rolled = True

    def snapshot(self, limit: int, now_ms: int) -> str:
        if not self.rolled:
            return self.raw_snapshot
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        return json.dumps(
            {
                "lastUpdateId": self.last_id,
                "E": now_ms,
                "T": now_ms,
                "bids": [list(x) for x in bids],
                "asks": [list(x) for x in asks],
            }
        )


@dataclass
class Conn:
    ws: ServerConnection
    path: str
    streams: dict[str, str]  # stream_key -> subscribed name


class FakeBinance:
    def __init__(
        self,
        now_ms: Callable[[], int],
        *,
        exchange_info: dict[str, Any] | None = None,
        klines: dict[tuple[str, str], list[list[Any]]] | None = None,
        depth_snapshots: dict[str, str] | None = None,
        ping_interval_s: float | None = None,
        on_connect: Callable[[FakeBinance, Conn], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.now_ms = now_ms
        self.exchange_info = exchange_info or {"symbols": []}
        self.klines = klines or {}
        #: 24 h quote volume per symbol served by ``/fapi/v1/ticker/24hr``.
        self.quote_volumes: dict[str, float] = {}
        self.books = {s: _Book(raw) for s, raw in (depth_snapshots or {}).items()}
        self._ping_interval = ping_interval_s
        self._on_connect = on_connect
        self._feeders: list[asyncio.Task[None]] = []
        self.conns: list[Conn] = []
        self.connects = 0
        self.rest_log: list[tuple[str, dict[str, str]]] = []
        self.stalled = False
        self._skip: dict[str, int] = {}
        self._fail: list[tuple[str, int, str | None]] = []
        #: Weight used in the current minute of ``now_ms`` (the module docstring), as the header reports it.
        self.used_weight = 0
        self._weight_minute: int | None = None
        self.last_kline: str | None = None
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None
        self.rest_url = ""
        self.ws_url = ""
        self._connected = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.rest_url = f"http://127.0.0.1:{port}"
        self._ws = await serve(
            self._handler,
            "127.0.0.1",
            0,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
            max_queue=None,
        )
        wport = next(iter(self._ws.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{wport}"

    async def stop(self) -> None:
        for t in self._feeders:
            t.cancel()
        await asyncio.gather(*self._feeders, return_exceptions=True)
        await close_servers(self._ws, self._runner)

    # -- REST ---------------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.Response:
        path = request.path
        params = dict(request.query)
        self.rest_log.append((path, params))
        minute = self.now_ms() // 60_000
        if self._weight_minute is not None and minute != self._weight_minute:
            self.used_weight = 0  # Binance's window is the minute: a new one starts from zero
        self._weight_minute = minute
        weight = request_weight(path, params)
        if weight is None:
            body = {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
            return web.json_response(body, status=400, headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight)})
        if self.used_weight + weight > WEIGHT_LIMIT_1M:
            retry = str(60 - (self.now_ms() // 1000) % 60)
            return web.json_response(
                {"code": -1003, "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE."},
                status=429,
                headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight), "Retry-After": retry},
            )
        self.used_weight += weight
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        for i, (suffix, status, retry_after) in enumerate(self._fail):
            if path.endswith(suffix):
                del self._fail[i]
                if retry_after is not None:
                    headers["Retry-After"] = retry_after
                return web.json_response({"code": -1003, "msg": "fake fault"}, status=status, headers=headers)
        if path.endswith("/fapi/v1/exchangeInfo"):
            info = dict(self.exchange_info, serverTime=self.now_ms())
            return web.json_response(info, headers=headers)
        if path.endswith("/fapi/v1/klines"):
            return web.json_response(self._klines(params), headers=headers)
        if path.endswith("/fapi/v1/depth"):
            book = self.books.get(params.get("symbol", ""))
            if book is None:
                return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400, headers=headers)
            body = book.snapshot(int(params.get("limit", "1000")), self.now_ms())
            return web.Response(text=body, content_type="application/json", headers=headers)
        if path.endswith("/fapi/v1/ticker/24hr"):
            # https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/24hr-Ticker-Price-Change-Statistics
            # (no symbol: every symbol, weight 40); only the fields the universe reads are served.
            rows = [{"symbol": s, "quoteVolume": f"{v:.2f}"} for s, v in sorted(self.quote_volumes.items())]
            return web.json_response(rows, headers=headers)
        if path.endswith("/fapi/v1/time"):
            return web.json_response({"serverTime": self.now_ms()}, headers=headers)
        return web.json_response({"code": -1, "msg": f"fake: no route {path}"}, status=404, headers=headers)

    def _klines(self, p: dict[str, str]) -> Any:
        rows = self.klines.get((p.get("symbol", ""), p.get("interval", "")), [])
        now = self.now_ms()
        start = int(p.get("startTime", "0"))
        end = int(p.get("endTime", str(now)))
        limit = int(p.get("limit", "500"))  # 1..1500: anything else was refused with its weight
        # Like Binance: bars that have opened by now (the last one may still be forming), by open time.
        out = [r for r in rows if start <= r[0] <= min(end, now)]
        return out[:limit]

    def fail_next(self, path_suffix: str, status: int, retry_after: str | None = None, times: int = 1) -> None:
        self._fail.extend([(path_suffix, status, retry_after)] * times)

    # -- websocket ----------------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        names = parse_qs(url.query).get("streams", [""])[0].split("/")
        conn = Conn(ws, url.path, {stream_key(n): n for n in names if n})
        self.conns.append(conn)
        self.connects += 1
        self._connected.set()
        if self._on_connect is not None:
            self._feeders.append(asyncio.create_task(self._on_connect(self, conn)))
        try:
            await ws.wait_closed()
        finally:
            if conn in self.conns:
                self.conns.remove(conn)

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while len(self.conns) < n:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(_wait(), timeout)

    async def wait_connects(self, total: int, timeout: float = 5.0) -> None:
        """Until the server has accepted ``total`` connections since it started."""

        async def _wait() -> None:
            while self.connects < total:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(_wait(), timeout)

    async def send(self, raw: str) -> int:
        """Publish one recorded combined-stream message; returns how many connections it went to."""
        msg = json.loads(raw)
        name, data = msg["stream"], msg["data"]
        if data.get("e") == "depthUpdate":
            sym = data["s"]
            book = self.books.get(sym)
            if book is not None:
                book.publish(data)
            if self._skip.get(sym, 0) > 0:
                self._skip[sym] -= 1
                return 0
        if data.get("e") == "kline":
            self.last_kline = raw
        if self.stalled:
            return 0
        key = stream_key(name)
        sent = 0
        for c in list(self.conns):
            sub = c.streams.get(key)
            if sub is None:
                continue
            out = raw if sub == name else raw.replace(f'"stream":"{name}"', f'"stream":"{sub}"', 1)
            with contextlib.suppress(ConnectionClosed):
                await c.ws.send(out)
                sent += 1
        return sent

    async def send_to(self, conn: Conn, raw: str) -> None:
        """Send one combined-stream message to one connection (a scripted feed for that subscriber)."""
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(raw)

    async def send_raw(self, text: str, path_contains: str = "") -> None:
        """Send exactly ``text`` to every connection whose path contains ``path_contains`` (malformed JSON,
        unexpected events...)."""
        for c in [c for c in self.conns if path_contains in c.path]:
            with contextlib.suppress(ConnectionClosed):
                await c.ws.send(text)

    async def repeat_last_kline(self) -> None:
        assert self.last_kline is not None, "no kline sent yet"
        await self.send(self.last_kline)

    def drop(self) -> int:
        """Abort every connection at the TCP level (no close frame): what a network fault looks like."""
        n = len(self.conns)
        for c in list(self.conns):
            c.ws.transport.abort()
        return n

    def stall(self, on: bool = True) -> None:
        self.stalled = on

    def skip_depth(self, symbol: str, n: int = 1) -> None:
        """The next ``n`` diffs of ``symbol`` update the exchange's book but never reach the client."""
        self._skip[symbol] = self._skip.get(symbol, 0) + n
