"""A local fake Binance USDⓈ-M *trading* API on 127.0.0.1: signed REST, user data stream, fills on command.

What it checks as Binance does: the API key header, HMAC-SHA256 signatures over the query string plus body,
``timestamp`` within ``recvWindow``, exchangeInfo filters (tick, step, min quantity, min notional, served from
the real 2021-07-22 recording), reduce-only orders that would not reduce, and ``newClientOrderId`` duplicated
among *open* orders (Binance's rule: a filled order's id is not protected, which is why the client must ask
before it retries).  Prices move only when the test calls :meth:`set_price`: market orders fill at the
current price, resting limits fill when traded through (as maker), stop- and take-profit-market orders
trigger and fill, and every change is pushed on the user data stream as ``ORDER_TRADE_UPDATE`` and
``ACCOUNT_UPDATE`` events.

Faults on command: :meth:`fail_next` (an error answer), :meth:`delay_next` (process the request, then answer
too late: the client times out although the order exists), :meth:`drop_streams` (close user streams), and
:meth:`open_outside` (a position opened by hand, outside the runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from ultra_signals.core.instruments import SymbolFilters, parse_exchange_info

ERRORS = {
    -1021: (400, "Timestamp for this request is outside of the recvWindow."),
    -1022: (400, "Signature for this request is not valid."),
    -1102: (400, "Mandatory parameter was not sent, was empty/null, or malformed."),
    -1111: (400, "Precision is over the maximum defined for this asset."),
    -1121: (400, "Invalid symbol."),
    -2011: (400, "Unknown order sent."),
    -2013: (400, "Order does not exist."),
    -2015: (401, "Invalid API-key, IP, or permissions for action."),
    -2022: (400, "ReduceOnly Order is rejected."),
    -4003: (400, "Quantity less than or equal to zero."),
    -4014: (400, "Price not increased by tick size."),
    -4116: (400, "ClientOrderId is duplicated."),
    -4164: (400, "Order's notional must be no smaller than 5 (unless you choose reduce only)."),
}


class ApiError(Exception):
    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status, default = ERRORS.get(code, (400, "error"))
        self.msg = msg or default


@dataclass
class FakeOrder:
    order_id: int
    cid: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal
    stop_price: Decimal
    reduce_only: bool
    tif: str
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    update_time: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.cid,
            "price": str(self.price),
            "avgPrice": str(self.avg_price),
            "origQty": str(self.qty),
            "executedQty": str(self.executed),
            "cumQuote": str(self.executed * self.avg_price),
            "timeInForce": self.tif,
            "type": self.type,
            "origType": self.type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": str(self.stop_price),
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "updateTime": self.update_time,
        }


@dataclass
class _Fault:
    method: str
    path: str
    kind: str  # fail | delay
    code: int = 0
    seconds: float = 0.0
    times: int = 1


@dataclass
class FakeFuturesExchange:
    exchange_info_text: str
    api_key: str
    api_secret: str
    balance: Decimal = Decimal("10000")
    taker_fee: Decimal = Decimal("0.0004")
    maker_fee: Decimal = Decimal("0.0002")
    prices: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol -> (signed qty, entry)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    listen_keys: dict[str, float] = field(default_factory=dict)  # key -> wall time of its last keepalive

    def __post_init__(self) -> None:
        self.filters: dict[str, SymbolFilters] = parse_exchange_info(json.loads(self.exchange_info_text))
        self._ids = itertools.count(8_000_000_001)
        self._trade_ids = itertools.count(500_000_001)
        self._faults: list[_Fault] = []
        self._streams: dict[str, list[web.WebSocketResponse]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.pushed: list[dict[str, Any]] = []

    # -- lifecycle ------
    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/fapi/{tail:.*}", self._rest)
        app.router.add_get("/ws/{key}", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        await self.drop_streams()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- test controls ------
    def fail_next(self, method: str, path: str, code: int, times: int = 1) -> None:
        self._faults.append(_Fault(method, path, "fail", code=code, times=times))

    def delay_next(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        self._faults.append(_Fault(method, path, "delay", seconds=seconds, times=times))

    async def drop_streams(self) -> None:
        for conns in self._streams.values():
            for ws in list(conns):
                await ws.close()
        self._streams.clear()

    async def set_price(self, symbol: str, price: str | Decimal) -> None:
        """The market trades at ``price``: resting and conditional orders react, in order of placement."""
        p = Decimal(str(price))
        self.prices[symbol] = p
        for o in sorted(self.orders.values(), key=lambda o: o.order_id):
            if o.symbol != symbol or o.status != "NEW":
                continue
            buy = o.side == "BUY"
            if o.type == "LIMIT" and ((buy and p < o.price) or (not buy and p > o.price)):
                await self._execute(o, o.price, maker=True)
            elif o.type in ("STOP_MARKET", "TAKE_PROFIT_MARKET") and self._triggered(o, p):
                await self._execute(o, p, maker=False)

    @staticmethod
    def _triggered(o: FakeOrder, p: Decimal) -> bool:
        """Stops trigger when the price moves against the position, take-profits when it moves for it."""
        rising = o.side == "BUY"  # a buy closes a short: its stop is above, its take-profit below
        if o.type == "STOP_MARKET":
            return p >= o.stop_price if rising else p <= o.stop_price
        return p <= o.stop_price if rising else p >= o.stop_price

    def open_outside(self, symbol: str, qty: str, price: str) -> None:
        """A position nobody told the runner about (opened by hand in the app, another bot...)."""
        self.positions[symbol] = (Decimal(qty), Decimal(price))

    def open_orders(self, symbol: str | None = None) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.status == "NEW" and (symbol is None or o.symbol == symbol)]

    def orders_with_cid(self, cid: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.cid == cid]

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]

    # -- HTTP ------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        method = request.method
        body = await request.text()
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        self.requests.append((method, path, {k: v for k, v in params.items() if k != "signature"}))
        delay = 0.0
        for f in list(self._faults):
            if f.method == method and f.path == path:
                f.times -= 1
                if f.times <= 0:
                    self._faults.remove(f)
                if f.kind == "fail":
                    return self._error(ApiError(f.code))
                delay = f.seconds
                break
        try:
            if path == "/fapi/v1/exchangeInfo":
                result: Any = json.loads(self.exchange_info_text)
            elif path == "/fapi/v1/time":
                result = {"serverTime": int(time.time() * 1000)}
            elif path == "/fapi/v1/listenKey":
                self._check_key(request)
                result = self._listen_key(method)
            else:
                self._check_key(request)
                self._check_signature(request.query_string, body, params)
                result = await self._signed(method, path, params)
        except ApiError as e:
            if delay:
                await asyncio.sleep(delay)
            return self._error(e)
        if delay:
            await asyncio.sleep(delay)  # the work is done; the answer comes too late
        return web.json_response(result)

    @staticmethod
    def _error(e: ApiError) -> web.Response:
        return web.json_response({"code": e.code, "msg": e.msg}, status=e.status)

    def _check_key(self, request: web.Request) -> None:
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise ApiError(-2015)

    def _check_signature(self, query: str, body: str, params: dict[str, str]) -> None:
        total = query + body
        if "signature=" not in total:
            raise ApiError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        payload, _, sig = total.rpartition("&signature=") if "&signature=" in total else ("", "", "")
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig):
            raise ApiError(-1022)
        try:
            ts = int(params["timestamp"])
            window = int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            raise ApiError(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            ) from None
        now = int(time.time() * 1000)
        if ts >= now + 1000 or now - ts > window:
            raise ApiError(-1021)

    def _listen_key(self, method: str) -> dict[str, Any]:
        if method == "POST":
            key = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:60]
            self.listen_keys[key] = time.time()
            return {"listenKey": key}
        if method == "PUT":
            for k in self.listen_keys:
                self.listen_keys[k] = time.time()
            return {}
        if method == "DELETE":
            self.listen_keys.clear()
            return {}
        raise ApiError(-1102)

    async def _signed(self, method: str, path: str, p: dict[str, str]) -> Any:
        if path == "/fapi/v1/order":
            if method == "POST":
                return await self._new_order(p)
            if method == "GET":
                return self._find(p).as_json()
            if method == "DELETE":
                o = self._find(p, unknown=-2011)
                if o.status != "NEW":
                    raise ApiError(-2011)
                await self._set_status(o, "CANCELED")
                return o.as_json()
        if path == "/fapi/v1/openOrders" and method == "GET":
            return [o.as_json() for o in self.open_orders(p.get("symbol"))]
        if path == "/fapi/v1/allOpenOrders" and method == "DELETE":
            if "symbol" not in p:
                raise ApiError(-1102)
            for o in self.open_orders(p["symbol"]):
                await self._set_status(o, "CANCELED")
            return {"code": 200, "msg": "The operation of cancel all open order is done."}
        if path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk") and method == "GET":
            syms = [p["symbol"]] if "symbol" in p else sorted(set(self.positions) | set(self.prices))
            return [self._position_json(s) for s in syms]
        if path in ("/fapi/v2/account", "/fapi/v3/account") and method == "GET":
            bal = str(self.balance)
            return {
                "totalWalletBalance": bal,
                "totalMarginBalance": bal,
                "availableBalance": bal,
                "assets": [{"asset": "USDT", "walletBalance": bal, "availableBalance": bal}],
                "positions": [self._position_json(s) for s in sorted(self.positions)],
            }
        raise web.HTTPNotFound()

    def _position_json(self, symbol: str) -> dict[str, Any]:
        qty, entry = self.positions.get(symbol, (Decimal(0), Decimal(0)))
        mark = self.prices.get(symbol, entry)
        return {
            "symbol": symbol,
            "positionAmt": str(qty),
            "entryPrice": str(entry),
            "markPrice": str(mark),
            "unRealizedProfit": str(qty * (mark - entry)),
            "leverage": "5",
            "marginType": "cross",
            "positionSide": "BOTH",
        }

    def _find(self, p: dict[str, str], unknown: int = -2013) -> FakeOrder:
        for o in self.orders.values():
            if o.symbol == p.get("symbol") and (
                ("orderId" in p and str(o.order_id) == p["orderId"]) or o.cid == p.get("origClientOrderId")
            ):
                if "origClientOrderId" in p:  # the newest order with this id
                    return max(self.orders_with_cid(o.cid), key=lambda x: x.order_id)
                return o
        raise ApiError(unknown)

    async def _new_order(self, p: dict[str, str]) -> dict[str, Any]:
        for key in ("symbol", "side", "type"):
            if not p.get(key):
                raise ApiError(-1102, f"Mandatory parameter '{key}' was not sent, was empty/null, or malformed.")
        f = self.filters.get(p["symbol"])
        if f is None:
            raise ApiError(-1121)
        typ = p["type"]
        qty = Decimal(p.get("quantity", "0"))
        price = Decimal(p.get("price", "0"))
        stop = Decimal(p.get("stopPrice", "0"))
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        step = f.market_step_size if typ != "LIMIT" else f.step_size
        if qty <= 0 or qty < (f.market_min_qty if typ != "LIMIT" else f.min_qty):
            raise ApiError(-4003)
        if qty % step != 0:
            raise ApiError(-1111)
        for px in (price, stop):
            if px and px % f.tick_size != 0:
                raise ApiError(-4014)
        cid = p.get("newClientOrderId") or f"x-{next(self._ids)}"
        if any(o.cid == cid for o in self.open_orders()):
            raise ApiError(-4116)
        ref = price or stop or self.prices.get(p["symbol"], Decimal(0))
        if not reduce_only and qty * ref < f.min_notional:
            raise ApiError(-4164)
        pos = self.position(p["symbol"])
        if reduce_only and typ == "MARKET" and (pos == 0 or (pos > 0) == (p["side"] == "BUY")):
            raise ApiError(-2022)
        o = FakeOrder(
            next(self._ids), cid, p["symbol"], p["side"], typ, qty, price, stop, reduce_only,
            p.get("timeInForce", "GTC"), update_time=int(time.time() * 1000),
        )  # fmt: skip
        self.orders[o.order_id] = o
        await self._push_order(o, "NEW", None)
        if typ == "MARKET":
            mark = self.prices.get(o.symbol)
            if mark is None:
                raise ApiError(-1121, "no market price for the symbol in the fake")
            await self._execute(o, mark, maker=False)
        elif typ == "LIMIT" and o.tif == "GTX":
            mark = self.prices.get(o.symbol)
            if mark is not None and ((o.side == "BUY" and price >= mark) or (o.side == "SELL" and price <= mark)):
                await self._set_status(o, "EXPIRED")  # post-only would have taken liquidity
        return o.as_json()

    async def _execute(self, o: FakeOrder, price: Decimal, *, maker: bool) -> None:
        pos, entry = self.positions.get(o.symbol, (Decimal(0), Decimal(0)))
        qty = o.qty - o.executed
        signed = qty if o.side == "BUY" else -qty
        if o.reduce_only:
            if pos == 0 or (pos > 0) == (o.side == "BUY"):
                await self._set_status(o, "EXPIRED")
                return
            qty = min(qty, abs(pos))
            signed = qty if o.side == "BUY" else -qty
        new = pos + signed
        realized = Decimal(0)
        if pos != 0 and (pos > 0) != (signed > 0):  # reducing
            closed = min(abs(signed), abs(pos))
            realized = closed * (price - entry) * (1 if pos > 0 else -1)
            new_entry = entry if new != 0 and (new > 0) == (pos > 0) else (price if new != 0 else Decimal(0))
        else:
            new_entry = (abs(pos) * entry + qty * price) / abs(new) if new != 0 else Decimal(0)
        fee = qty * price * (self.maker_fee if maker else self.taker_fee)
        self.balance += realized - fee
        if new == 0:
            self.positions.pop(o.symbol, None)
        else:
            self.positions[o.symbol] = (new, new_entry)
        o.executed += qty
        o.avg_price = price
        o.status = "FILLED"
        o.update_time = int(time.time() * 1000)
        await self._push_order(
            o, "TRADE", {"l": str(qty), "L": str(price), "n": str(fee), "m": maker, "rp": str(realized)}
        )
        await self._push(
            {
                "e": "ACCOUNT_UPDATE",
                "E": o.update_time,
                "T": o.update_time,
                "a": {
                    "m": "ORDER",
                    "B": [{"a": "USDT", "wb": str(self.balance), "cw": str(self.balance), "bc": "0"}],
                    "P": [
                        {
                            "s": o.symbol,
                            "pa": str(new),
                            "ep": str(new_entry),
                            "cr": "0",
                            "up": "0",
                            "mt": "cross",
                            "iw": "0",
                            "ps": "BOTH",
                        }
                    ],
                },
            }
        )

    async def _set_status(self, o: FakeOrder, status: str) -> None:
        o.status = status
        o.update_time = int(time.time() * 1000)
        await self._push_order(o, status, None)

    async def _push_order(self, o: FakeOrder, execution: str, trade: dict[str, Any] | None) -> None:
        t = trade or {}
        await self._push(
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": o.update_time,
                "T": o.update_time,
                "o": {
                    "s": o.symbol,
                    "c": o.cid,
                    "S": o.side,
                    "o": o.type,
                    "f": o.tif,
                    "q": str(o.qty),
                    "p": str(o.price),
                    "ap": str(o.avg_price),
                    "sp": str(o.stop_price),
                    "x": execution,
                    "X": o.status,
                    "i": o.order_id,
                    "l": t.get("l", "0"),
                    "z": str(o.executed),
                    "L": t.get("L", "0"),
                    "N": "USDT",
                    "n": t.get("n", "0"),
                    "T": o.update_time,
                    "t": next(self._trade_ids) if trade else 0,
                    "b": "0",
                    "a": "0",
                    "m": t.get("m", False),
                    "R": o.reduce_only,
                    "wt": "CONTRACT_PRICE",
                    "ot": o.type,
                    "ps": "BOTH",
                    "cp": False,
                    "rp": t.get("rp", "0"),
                },
            }
        )

    async def _push(self, event: dict[str, Any]) -> None:
        self.pushed.append(event)
        text = json.dumps(event)
        for conns in self._streams.values():
            for ws in list(conns):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)

    # -- user data stream ------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        key = request.match_info["key"]
        if key not in self.listen_keys:
            raise web.HTTPBadRequest(text=json.dumps({"code": -1125, "msg": "This listenKey does not exist."}))
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        self._streams.setdefault(key, []).append(ws)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            conns = self._streams.get(key, [])
            if ws in conns:
                conns.remove(ws)
        return ws

    def stream_count(self) -> int:
        return sum(len(c) for c in self._streams.values())


def load_recorded_exchange_info_text(path: str) -> str:
    """The raw JSON answer out of the ``<url> -> <time>: <json>`` recording line, byte for byte."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return first[first.index(": {") + 2 :].rstrip("\n")
