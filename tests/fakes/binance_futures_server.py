"""A strict local fake of Binance USDⓈ-M *trading* on 127.0.0.1: signed REST, the Algo Service, the routed user stream.

It accepts only what Binance accepts today, written from Binance's current pages (each behaviour names its source):

* Conditional types on ``POST /fapi/v1/order`` are refused with **-4120** "Order type not supported for this
  endpoint. Please use the Algo Order API endpoints instead." (in force since 2025-12-09; the exact answer is the
  one Binance returned to Freqtrade/ccxt users, http://digtime.cn/articles/1066 and
  https://github.com/ccxt/binance-rs/pull/289).
* Conditional orders live in the Algo Service (``POST/GET/DELETE /fapi/v1/algoOrder``, ``GET
  /fapi/v1/openAlgoOrders``, ``DELETE /fapi/v1/algoOpenOrders``) with ``algoType=CONDITIONAL``, ``triggerPrice``,
  ``workingType`` (default CONTRACT_PRICE), ``reduceOnly`` / ``closePosition``, ``clientAlgoId``
  (``^[.A-Z:/a-z0-9_-]{1,36}$``):
  https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/websocket-api/New-Algo-Order,
  .../trade/rest-api/Cancel-Algo-Order (``algoid``/``clientalgoid``; answer ``{"algoId", "clientAlgoId",
  "code": "200", "msg": "success"}``), .../trade/rest-api/Query-Algo-Order (``algoStatus``, ``actualOrderId``),
  and the portfolio-margin twin .../portfolio-margin/trade/Cancel-All-UM-Open-Algo-Orders (``symbol`` mandatory).
* ``ALGO_UPDATE`` with statuses NEW / TRIGGERING / TRIGGERED / FINISHED / CANCELED / REJECTED / EXPIRED and fields
  ``caid aid at o s S ps f q X ai ap aq act tp p wt R cp``:
  https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Algo-Order-Update.
  A conditional order whose position is gone when it triggers is EXPIRED (the page's example of system-led
  cancellation); one the matching engine refuses is REJECTED.
* User data is served ONLY on the ``/private`` route (``/private/ws/<listenKey>`` and
  ``/private/ws?listenKey=…``); a connection without a route gets public data only, so user events are never
  pushed there: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
  ("Connections that do not include a routed path … Streams belonging to /market or /private will not push data
  on unrouted connections") and the user-data-streams page (``wss://fstream.binance.com/private/ws/<listenKey>``;
  PUT on an unknown key answers -1125 "This listenKey does not exist."). Every websocket path is logged in
  :attr:`FakeFuturesExchange.ws_paths` so a test can assert that no unrouted user-data connection was made.
* Signed requests: ``X-MBX-APIKEY`` (-2015), HMAC-SHA256 over query string + body (-1022), ``timestamp`` within
  ``recvWindow`` and not more than 1 s ahead of the server (-1021). Binance's general info and error-code pages
  (quoted in https://developers.binance.com/docs/binance-spot-api-docs/errors for the shared 10xx codes).
* Filters from the real exchangeInfo recording: step (-1111), tick (-4014), quantity (-4003), min notional unless
  reduce-only (-4164); margin (-2019 "Margin is insufficient."); reduce-only that would not reduce (-2022
  "ReduceOnly Order is rejected."); ``newClientOrderId`` duplicated among open orders (-4116).
* Rate limits: every answer carries ``X-MBX-USED-WEIGHT-1M``, successful orders ``X-MBX-ORDER-COUNT-10S`` and
  ``-1M``; 429 and 418 carry ``Retry-After``; 5xx means "execution status unknown" — the fake can do the work and
  still answer 503 (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits and
  .../legacy-docs/binance-spot-api-docs/rest-api/http-return-codes; the futures pages say the same).
* Account set-up: ``GET/POST /fapi/v1/positionSide/dual``, ``GET /fapi/v1/multiAssetsMargin``, ``POST
  /fapi/v1/marginType`` (-4046 "No need to change margin type." when unchanged), ``POST /fapi/v1/leverage``
  (https://skills-rank.com/skill/binance/binance-skills-hub/derivatives-trading-usds-futures lists them).

Not verified against a Binance page, and marked so where used: the error code for a duplicated ``clientAlgoId``
(-4116 assumed, as for orders), the code for ISOLATED under Multi-Assets mode (-4168 assumed), the client id of the
order a triggered algo order places (the fake gives it its own ``autoclose``-free id; clients must tie it back
through ``ALGO_UPDATE.ai``), the exact event order between ``ALGO_UPDATE`` and ``ORDER_TRADE_UPDATE``, the shape of
``GET /fapi/v1/userTrades`` (fields as Binance has long documented them, not re-read today) and the FUNDING_FEE push
(isolated: with its ``P``; cross: balance only).

Market data (for a run whose market source and broker both point here, as they share ``binance.rest_url`` /
``binance.ws_url``): combined streams on the routed paths ``/market/stream?streams=…`` (klines, aggTrade,
markPrice…) and ``/public/stream?streams=…`` (bookTicker, depth), raw ones on ``/market/ws/<stream>`` and
``/public/ws/<stream>``; an unrouted connection (``/stream``, ``/ws/…``) gets ``/public`` streams only. Source:
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams and Binance's
routing table ("/public: high-frequency public market data, for example @depth; /market: regular market data, for
example @aggTrade and @markPrice; /private: user data. A connection with no routed path only receives /public
data", https://developers.binance.com/zh-CN/docs/products/caas/market-data-streams; the kline stream is /market as
in the migration notice of 2026-03-06, https://github.com/ccxt/go-binance/pull/809). The fake publishes only what
:meth:`publish_market` is given (``tests/fakes/binance_price_path.py`` drives it from a recording); it never
publishes depth diffs. ``GET /fapi/v1/exchangeInfo`` answers the recorded document with the fake's own
``serverTime`` (Binance stamps every answer with its current time; the recording's 2021 stamp would read as a
five-year clock offset).

Every error answer is logged in :attr:`FakeFuturesExchange.errors` (method, path, Binance code) so a test can
assert that, say, -4120 was never returned.

Prices move only when the test calls :meth:`set_price` (last price and, unless given apart, mark price).
Faults on command: :meth:`fail_next` (an error answer), :meth:`http_next` (429/418/5xx, optionally after doing the
work), :meth:`delay_next` (do the work, answer too late), :meth:`drop_streams`, :meth:`expire_listen_keys`,
:meth:`reject_next_trigger`, :attr:`clock_offset_ms` (the server's clock runs apart from ours) and
:meth:`open_outside` (a position opened by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from ultra_signals.core.instruments import SymbolFilters, parse_exchange_info

CONDITIONAL_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET")
ALGO_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
ERRORS = {
    -1001: (503, "Internal error; unable to process your request. Please try again."),
    -1021: (400, "Timestamp for this request is outside of the recvWindow."),
    -1022: (400, "Signature for this request is not valid."),
    -1102: (400, "Mandatory parameter was not sent, was empty/null, or malformed."),
    -1111: (400, "Precision is over the maximum defined for this asset."),
    -1116: (400, "Invalid orderType."),
    -1121: (400, "Invalid symbol."),
    -1125: (400, "This listenKey does not exist."),
    -1130: (400, "Data sent for parameter is not valid."),
    -2011: (400, "Unknown order sent."),
    -2013: (400, "Order does not exist."),
    -2015: (401, "Invalid API-key, IP, or permissions for action."),
    -2019: (400, "Margin is insufficient."),
    -2022: (400, "ReduceOnly Order is rejected."),
    -4003: (400, "Quantity less than or equal to zero."),
    -4014: (400, "Price not increased by tick size."),
    -4046: (400, "No need to change margin type."),
    -4059: (400, "No need to change position side."),
    -4061: (400, "Order's position side does not match user's setting."),
    -4116: (400, "ClientOrderId is duplicated."),
    -4120: (400, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."),
    -4164: (400, "Order's notional must be no smaller than 5 (unless you choose reduce only)."),
    -4168: (400, "Unable to adjust to isolated-margin mode under the Multi-Assets mode."),
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
    reduce_only: bool
    tif: str
    status: str = "NEW"
    executed: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    update_time: int = 0
    stop_price: Decimal = Decimal(0)

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
class FakeAlgoOrder:
    """A conditional order held by the Algo Service until its trigger (Query-Algo-Order page's fields)."""

    algo_id: int
    cid: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    trigger: Decimal
    working_type: str
    reduce_only: bool
    close_position: bool
    status: str = "NEW"
    actual_order_id: str = ""
    executed: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    create_time: int = 0
    update_time: int = 0
    trigger_time: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "algoId": self.algo_id,
            "clientAlgoId": self.cid,
            "algoType": "CONDITIONAL",
            "orderType": self.type,
            "symbol": self.symbol,
            "side": self.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": str(self.qty),
            "algoStatus": self.status,
            "actualOrderId": self.actual_order_id,
            "actualPrice": str(self.avg_price),
            "triggerPrice": str(self.trigger),
            "price": "0",
            "workingType": self.working_type,
            "priceMatch": "NONE",
            "closePosition": self.close_position,
            "priceProtect": False,
            "reduceOnly": self.reduce_only,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "triggerTime": self.trigger_time,
            "goodTillDate": 0,
        }


@dataclass
class _Fault:
    method: str
    path: str
    kind: str  # fail | delay | http
    code: int = 0
    seconds: float = 0.0
    times: int = 1
    status: int = 0
    retry_after: int | None = None
    after_work: bool = False


@dataclass
class FakeFuturesExchange:
    exchange_info_text: str
    api_key: str
    api_secret: str
    balance: Decimal = Decimal("10000")
    taker_fee: Decimal = Decimal("0.0004")
    maker_fee: Decimal = Decimal("0.0002")
    prices: dict[str, Decimal] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    algo_orders: dict[int, FakeAlgoOrder] = field(default_factory=dict)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol -> (signed qty, entry)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    listen_keys: dict[str, float] = field(default_factory=dict)  # key -> wall time of its last keepalive
    #: Account set-up as Binance keeps it (defaults of a new account: one-way, single-asset, cross, 20x).
    dual_side: bool = False
    multi_assets: bool = False
    margin_types: dict[str, str] = field(default_factory=dict)  # symbol -> ISOLATED | CROSSED
    leverages: dict[str, int] = field(default_factory=dict)
    #: The server's clock minus ours: a test moves it to simulate a local clock jump (-1021).
    clock_offset_ms: int = 0
    #: ``GET /fapi/v1/leverageBracket`` rows (the same for every symbol here); test data shaped as Binance answers,
    #: not a copy of today's BTCUSDT tiers.
    leverage_brackets: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0},
            {"bracket": 2, "initialLeverage": 100, "notionalCap": 250000, "notionalFloor": 50000, "maintMarginRatio": 0.005, "cum": 50.0},
            {"bracket": 3, "initialLeverage": 50, "notionalCap": 3000000, "notionalFloor": 250000, "maintMarginRatio": 0.01, "cum": 1300.0},
        ]
    )  # fmt: skip
    #: ``GET /sapi/v1/account/apiRestrictions`` (https://developers.binance.com/docs/wallet/account/api-key-permission)
    api_restrictions: dict[str, Any] = field(
        default_factory=lambda: {
            "ipRestrict": True, "createTime": 1698645219000, "enableReading": True, "enableWithdrawals": False,
            "enableInternalTransfer": False, "enableMargin": False, "enableFutures": True,
            "permitsUniversalTransfer": False, "enableVanillaOptions": False, "enableSpotAndMarginTrading": False,
        }
    )  # fmt: skip
    used_weight: int = 0
    order_count: int = 0

    def __post_init__(self) -> None:
        self.filters: dict[str, SymbolFilters] = parse_exchange_info(json.loads(self.exchange_info_text))
        self._ids = itertools.count(8_000_000_001)
        self._algo_ids = itertools.count(3_000_000_001)
        self._trade_ids = itertools.count(500_000_001)
        self._faults: list[_Fault] = []
        self._reject_triggers = 0
        self._streams: dict[str, list[web.WebSocketResponse]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.pushed: list[dict[str, Any]] = []
        self.ws_paths: list[str] = []  # every websocket path asked for, with its query string
        self._issued: set[str] = set()  # every listen key ever handed out
        self.user_trades: list[dict[str, Any]] = []  # GET /fapi/v1/userTrades, fields as Binance answers
        self.klines: dict[tuple[str, str], list[list[Any]]] = {}  # (symbol, interval) -> REST kline rows
        self.income: list[dict[str, Any]] = []  # GET /fapi/v1/income rows (COMMISSION, REALIZED_PNL, FUNDING_FEE)
        self.errors: list[tuple[str, str, int]] = []  # every error answer: (method, path, Binance code)
        #: Market-data subscribers: (route, subscribed stream names, connection); route is market/public/unrouted.
        self._market_conns: list[tuple[str, set[str], bool, web.WebSocketResponse]] = []  # raw: /ws/<stream>
        self._tran_ids = itertools.count(9_000_000_001)

    # -- lifecycle ------
    async def start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/fapi/{tail:.*}", self._rest)
        app.router.add_route("*", "/sapi/{tail:.*}", self._rest)
        app.router.add_get("/private/ws/{key}", self._ws_private)
        app.router.add_get("/private/ws", self._ws_private)
        for route in ("market", "public"):
            app.router.add_get(f"/{route}/stream", self._ws_market)
            app.router.add_get(f"/{route}/ws/{{stream}}", self._ws_market)
        app.router.add_get("/stream", self._ws_market)
        app.router.add_get("/{tail:.*}", self._ws_other)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        await self.drop_streams()
        for *_, ws in list(self._market_conns):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    # -- test controls ------
    def fail_next(self, method: str, path: str, code: int, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with Binance error ``code`` (nothing is done)."""
        self._faults.append(_Fault(method, path, "fail", code=code, times=times))

    def delay_next(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        """Do the work, then answer ``seconds`` late: the client times out although the order exists."""
        self._faults.append(_Fault(method, path, "delay", seconds=seconds, times=times))

    def http_next(
        self, method: str, path: str, status: int, *, retry_after: int | None = None, after_work: bool = False,
        times: int = 1,
    ) -> None:  # fmt: skip
        """Answer HTTP ``status`` (429, 418, 502, 503 …); ``after_work``: the request was executed anyway."""
        self._faults.append(
            _Fault(method, path, "http", status=status, retry_after=retry_after, after_work=after_work, times=times)
        )

    def reject_next_trigger(self, times: int = 1) -> None:
        """The next triggered algo order is refused by the matching engine (ALGO_UPDATE REJECTED)."""
        self._reject_triggers += times

    async def drop_streams(self) -> None:
        for conns in self._streams.values():
            for ws in list(conns):
                await ws.close()
        self._streams.clear()

    async def expire_listen_keys(self) -> None:
        """Binance lets an unrenewed key lapse: ``listenKeyExpired`` on its stream, and the key is gone."""
        for key in list(self.listen_keys):
            await self._push({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}, only_key=key)
            del self.listen_keys[key]

    async def set_price(self, symbol: str, price: str | Decimal, mark: str | Decimal | None = None) -> None:
        """The market trades at ``price`` (mark ``mark``, same by default): resting and algo orders react."""
        p = Decimal(str(price))
        self.prices[symbol] = p
        self.marks[symbol] = Decimal(str(mark)) if mark is not None else p
        for o in sorted(self.orders.values(), key=lambda o: o.order_id):
            if o.symbol != symbol or o.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            buy = o.side == "BUY"
            if o.type == "LIMIT" and ((buy and p < o.price) or (not buy and p > o.price)):
                await self._execute(o, o.price, maker=True)
        for a in sorted(self.algo_orders.values(), key=lambda a: a.algo_id):
            if a.symbol == symbol and a.status == "NEW" and self._triggered(a):
                await self._trigger(a)

    async def pay_funding(self, symbol: str, amount: str) -> None:
        """A funding fee (negative: paid) on an open position, pushed as ACCOUNT_UPDATE reason FUNDING_FEE.

        Isolated positions come with their ``P`` entry, cross ones without (Binance's rule as we know it; not
        re-read on a page today).
        """
        amt = Decimal(amount)
        self.balance += amt
        self._book_income(symbol, "FUNDING_FEE", amt, self.now_ms(), "")
        qty, entry = self.positions.get(symbol, (Decimal(0), Decimal(0)))
        isolated = self.margin_types.get(symbol) == "ISOLATED"
        position = [{"s": symbol, "pa": str(qty), "ep": str(entry), "cr": "0", "up": "0", "mt": "isolated",
                     "iw": "0", "ps": "BOTH"}] if isolated else []  # fmt: skip
        now = self.now_ms()
        await self._push(
            {
                "e": "ACCOUNT_UPDATE", "E": now, "T": now,
                "a": {"m": "FUNDING_FEE", "B": [{"a": "USDT", "wb": str(self.balance), "cw": str(self.balance),
                                                  "bc": str(amt)}], "P": position},
            }
        )  # fmt: skip

    def _book_income(self, symbol: str, kind: str, amount: Decimal, ts: int, trade_id: str) -> None:
        """One ``GET /fapi/v1/income`` row (fields as Binance documents them; not re-read on a page today)."""
        self.income.append(
            {"symbol": symbol, "incomeType": kind, "income": str(amount), "asset": "USDT", "info": "",
             "time": ts, "tranId": next(self._tran_ids), "tradeId": trade_id}
        )  # fmt: skip

    async def liquidate(self, symbol: str) -> None:
        """The exchange closes the whole position itself (``autoclose-`` client id, as liquidations carry)."""
        qty, _ = self.positions[symbol]
        o = FakeOrder(
            next(self._ids), f"autoclose-{self.now_ms()}", symbol, "SELL" if qty > 0 else "BUY", "MARKET", abs(qty),
            Decimal(0), True, "IOC", update_time=self.now_ms(),
        )  # fmt: skip
        self.orders[o.order_id] = o
        await self._execute(o, self.prices[symbol], maker=False)

    async def fill_partially(self, cid: str, qty: str, price: str | None = None) -> None:
        """A resting limit order trades ``qty`` (as maker) without the price crossing it completely."""
        (o,) = [x for x in self.orders.values() if x.cid == cid and x.status in ("NEW", "PARTIALLY_FILLED")]
        await self._execute(o, Decimal(price) if price else o.price, maker=True, qty=Decimal(qty))

    def _triggered(self, a: FakeAlgoOrder) -> bool:
        """Stops trigger when the price moves against the position, take-profits when it moves for it."""
        ref = (self.marks if a.working_type == "MARK_PRICE" else self.prices).get(a.symbol)
        if ref is None:
            return False
        rising = a.side == "BUY"  # a buy closes a short: its stop is above, its take-profit below
        if a.type in ("STOP_MARKET", "STOP"):
            return ref >= a.trigger if rising else ref <= a.trigger
        return ref <= a.trigger if rising else ref >= a.trigger

    def open_outside(self, symbol: str, qty: str, price: str) -> None:
        """A position nobody told the runner about (opened by hand in the app, another bot...)."""
        self.positions[symbol] = (Decimal(qty), Decimal(price))

    def open_orders(self, symbol: str | None = None) -> list[FakeOrder]:
        return [
            o
            for o in self.orders.values()
            if o.status in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o.symbol == symbol)
        ]

    def open_algo_orders(self, symbol: str | None = None) -> list[FakeAlgoOrder]:
        return [a for a in self.algo_orders.values() if a.status == "NEW" and (symbol is None or a.symbol == symbol)]

    def orders_with_cid(self, cid: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.cid == cid]

    def algo_with_cid(self, cid: str) -> list[FakeAlgoOrder]:
        return [a for a in self.algo_orders.values() if a.cid == cid]

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]

    def unrouted_user_connections(self) -> list[str]:
        """Websocket paths that named a listen key without the ``/private`` route: never correct."""
        return [p for p in self.ws_paths if not p.startswith("/private") and any(k in p for k in self._issued)]

    # -- HTTP ------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        method = request.method
        body = await request.text()
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        for k, v in parse_qsl(body, keep_blank_values=True):
            params.setdefault(k, v)  # "If a parameter sent in both the query string and request body, the query
            # string parameter will be used." (general info)
        self.requests.append((method, path, {k: v for k, v in params.items() if k != "signature"}))
        self.used_weight += 1
        delay = 0.0
        http_fault: _Fault | None = None
        for f in list(self._faults):
            if f.method == method and f.path == path:
                f.times -= 1
                if f.times <= 0:
                    self._faults.remove(f)
                if f.kind == "fail":
                    return self._error(ApiError(f.code), request)
                if f.kind == "http":
                    http_fault = f
                    if not f.after_work:
                        return self._http_fault(f)
                else:
                    delay = f.seconds
                break
        is_order = False
        try:
            if path == "/fapi/v1/exchangeInfo":
                result: Any = json.loads(self.exchange_info_text)
                result["serverTime"] = self.now_ms()
            elif path == "/fapi/v1/time":
                result = {"serverTime": self.now_ms()}
            elif path == "/fapi/v1/ping":
                result = {}
            elif path == "/fapi/v1/klines":
                rows = self.klines.get((params.get("symbol", ""), params.get("interval", "")), [])
                lo, hi = int(params.get("startTime", 0)), int(params.get("endTime", 2**62))
                result = [r for r in rows if lo <= r[0] <= hi][: int(params.get("limit", 500))]
            elif path == "/fapi/v1/listenKey":
                self._check_key(request)
                result = self._listen_key(method)
            else:
                self._check_key(request)
                self._check_signature(request.query_string, body, params)
                is_order = method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder")
                result = await self._signed(method, path, params)
        except ApiError as e:
            if delay:
                await asyncio.sleep(delay)
            return self._error(e, request)
        if http_fault is not None:
            return self._http_fault(http_fault)
        if delay:
            await asyncio.sleep(delay)  # the work is done; the answer comes too late
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        if is_order:
            self.order_count += 1
            headers["X-MBX-ORDER-COUNT-10S"] = str(self.order_count)
            headers["X-MBX-ORDER-COUNT-1M"] = str(self.order_count)
        return web.json_response(result, headers=headers)

    def _error(self, e: ApiError, request: web.Request | None = None) -> web.Response:
        if request is not None:
            self.errors.append((request.method, request.path, e.code))
        return web.json_response(
            {"code": e.code, "msg": e.msg}, status=e.status, headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        )

    def _http_fault(self, f: _Fault) -> web.Response:
        headers = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}
        if f.retry_after is not None:
            headers["Retry-After"] = str(f.retry_after)
        if f.status == 429:
            body = {"code": -1003, "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE."}
        elif f.status == 418:
            body = {"code": -1003, "msg": "Way too many requests; IP banned until 1767571200000."}
        else:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        return web.json_response(body, status=f.status, headers=headers)

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
        if window > 60_000:
            raise ApiError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
        now = self.now_ms()
        if ts >= now + 1000 or now - ts > window:
            raise ApiError(-1021)

    def _listen_key(self, method: str) -> dict[str, Any]:
        """POST returns the active key (and extends it) or a new one; PUT on an unknown key is -1125."""
        if method == "POST":
            if self.listen_keys:
                key = next(iter(self.listen_keys))
            else:
                key = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:60]
                self._issued.add(key)
            self.listen_keys[key] = time.time()
            return {"listenKey": key}
        if method == "PUT":
            if not self.listen_keys:
                raise ApiError(-1125)
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
                if o.status not in ("NEW", "PARTIALLY_FILLED"):
                    raise ApiError(-2011)
                await self._set_status(o, "CANCELED")
                return o.as_json()
        if path == "/sapi/v1/account/apiRestrictions" and method == "GET":
            return dict(self.api_restrictions)
        if path == "/fapi/v1/leverageBracket" and method == "GET":
            syms = [p["symbol"]] if "symbol" in p else sorted(self.filters)
            return [{"symbol": sym, "brackets": [dict(b) for b in self.leverage_brackets]} for sym in syms]
        if path == "/fapi/v1/income" and method == "GET":
            lo, hi = int(p.get("startTime", 0)), int(p.get("endTime", 2**62))
            rows = [r for r in self.income if lo <= r["time"] <= hi and p.get("symbol", r["symbol"]) == r["symbol"]]
            return rows[: min(int(p.get("limit", 100)), 1000)]
        if path == "/fapi/v1/userTrades" and method == "GET":
            if "symbol" not in p:
                raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return [
                t for t in self.user_trades
                if t["symbol"] == p["symbol"] and ("orderId" not in p or str(t["orderId"]) == p["orderId"])
            ]  # fmt: skip
        if path == "/fapi/v1/openOrders" and method == "GET":
            return [o.as_json() for o in self.open_orders(p.get("symbol"))]
        if path == "/fapi/v1/allOpenOrders" and method == "DELETE":
            if "symbol" not in p:
                raise ApiError(-1102)
            for o in self.open_orders(p["symbol"]):
                await self._set_status(o, "CANCELED")
            return {"code": 200, "msg": "The operation of cancel all open order is done."}
        if path == "/fapi/v1/algoOrder":
            if method == "POST":
                return await self._new_algo(p)
            if method == "GET":
                return self._find_algo(p, unknown=-2013).as_json()
            if method == "DELETE":
                a = self._find_algo(p, unknown=-2011)
                if a.status != "NEW":
                    raise ApiError(-2011)
                await self._algo_status(a, "CANCELED")
                return {"algoId": a.algo_id, "clientAlgoId": a.cid, "code": "200", "msg": "success"}
        if path == "/fapi/v1/openAlgoOrders" and method == "GET":
            return [a.as_json() for a in self.open_algo_orders(p.get("symbol"))]
        if path == "/fapi/v1/algoOpenOrders" and method == "DELETE":
            if "symbol" not in p:
                raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            for a in self.open_algo_orders(p["symbol"]):
                await self._algo_status(a, "CANCELED")
            return {"code": 200, "msg": "The operation of cancel all open order is done."}
        if path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk") and method == "GET":
            syms = [p["symbol"]] if "symbol" in p else sorted(set(self.positions) | set(self.prices))
            return [self._position_json(s) for s in syms]
        if path in ("/fapi/v2/account", "/fapi/v3/account") and method == "GET":
            bal = str(self.balance)
            return {
                "canTrade": True,
                "totalWalletBalance": bal,
                "totalMarginBalance": bal,
                "availableBalance": bal,
                "assets": [{"asset": "USDT", "walletBalance": bal, "availableBalance": bal}],
                "positions": [self._position_json(s) for s in sorted(self.positions)],
            }
        if path == "/fapi/v1/positionSide/dual":
            if method == "GET":
                return {"dualSidePosition": self.dual_side}
            if method == "POST":
                want = p.get("dualSidePosition", "").lower() == "true"
                if want == self.dual_side:
                    raise ApiError(-4059)
                self.dual_side = want
                return {"code": 200, "msg": "success"}
        if path == "/fapi/v1/multiAssetsMargin" and method == "GET":
            return {"multiAssetsMargin": self.multi_assets}
        if path == "/fapi/v1/marginType" and method == "POST":
            sym, typ = p.get("symbol", ""), p.get("marginType", "")
            if sym not in self.filters:
                raise ApiError(-1121)
            if typ not in ("ISOLATED", "CROSSED"):
                raise ApiError(-1130, "Data sent for parameter 'marginType' is not valid.")
            if typ == "ISOLATED" and self.multi_assets:
                raise ApiError(-4168)  # code assumed, not verified on a Binance page
            if self.margin_types.get(sym, "CROSSED") == typ:
                raise ApiError(-4046)
            self.margin_types[sym] = typ
            return {"code": 200, "msg": "success"}
        if path == "/fapi/v1/leverage" and method == "POST":
            sym = p.get("symbol", "")
            if sym not in self.filters:
                raise ApiError(-1121)
            try:
                lev = int(p.get("leverage", ""))
            except ValueError:
                raise ApiError(-1130, "Data sent for parameter 'leverage' is not valid.") from None
            if not 1 <= lev <= 125:
                raise ApiError(-1130, "Data sent for parameter 'leverage' is not valid.")
            self.leverages[sym] = lev
            return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": sym}
        raise web.HTTPNotFound()

    def _position_json(self, symbol: str) -> dict[str, Any]:
        qty, entry = self.positions.get(symbol, (Decimal(0), Decimal(0)))
        mark = self.marks.get(symbol, entry)
        return {
            "symbol": symbol,
            "positionAmt": str(qty),
            "entryPrice": str(entry),
            "markPrice": str(mark),
            "unRealizedProfit": str(qty * (mark - entry)),
            "leverage": str(self.leverages.get(symbol, 20)),
            "marginType": self.margin_types.get(symbol, "CROSSED").lower().replace("crossed", "cross"),
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

    def _find_algo(self, p: dict[str, str], unknown: int) -> FakeAlgoOrder:
        """``algoId``/``clientAlgoId`` (query page) or ``algoid``/``clientalgoid`` (cancel page): one is needed."""
        low = {k.lower(): v for k, v in p.items()}
        aid, cid = low.get("algoid"), low.get("clientalgoid")
        if not aid and not cid:
            raise ApiError(-1102, "Either algoId or clientAlgoId must be sent.")
        found = [a for a in self.algo_orders.values() if (aid and str(a.algo_id) == aid) or (cid and a.cid == cid)]
        if not found:
            raise ApiError(unknown)
        return max(found, key=lambda a: a.algo_id)

    def _required_margin(self, symbol: str, qty: Decimal, price: Decimal) -> Decimal:
        return qty * price / Decimal(self.leverages.get(symbol, 20))

    async def _new_order(self, p: dict[str, str]) -> dict[str, Any]:
        for key in ("symbol", "side", "type"):
            if not p.get(key):
                raise ApiError(-1102, f"Mandatory parameter '{key}' was not sent, was empty/null, or malformed.")
        typ = p["type"]
        if typ in CONDITIONAL_TYPES:
            raise ApiError(-4120)
        if typ not in ("LIMIT", "MARKET"):
            raise ApiError(-1116)
        f = self.filters.get(p["symbol"])
        if f is None:
            raise ApiError(-1121)
        if self.dual_side and p.get("positionSide", "BOTH") == "BOTH":
            raise ApiError(-4061)
        qty = Decimal(p.get("quantity", "0"))
        price = Decimal(p.get("price", "0"))
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        step = f.market_step_size if typ != "LIMIT" else f.step_size
        if qty <= 0 or qty < (f.market_min_qty if typ != "LIMIT" else f.min_qty):
            raise ApiError(-4003)
        if qty % step != 0:
            raise ApiError(-1111)
        if price and price % f.tick_size != 0:
            raise ApiError(-4014)
        cid = p.get("newClientOrderId") or f"x-{next(self._ids)}"
        if not ALGO_ID_RE.match(cid):
            raise ApiError(-1130, "Data sent for parameter 'newClientOrderId' is not valid.")
        if any(o.cid == cid for o in self.open_orders()):
            raise ApiError(-4116)
        ref = price or self.prices.get(p["symbol"], Decimal(0))
        if not reduce_only and qty * ref < f.min_notional:
            raise ApiError(-4164)
        pos = self.position(p["symbol"])
        if reduce_only and (pos == 0 or (pos > 0) == (p["side"] == "BUY")):
            raise ApiError(-2022)
        if not reduce_only and self._required_margin(p["symbol"], qty, ref) > self.balance:
            raise ApiError(-2019)
        o = FakeOrder(
            next(self._ids), cid, p["symbol"], p["side"], typ, qty, price, reduce_only,
            p.get("timeInForce", "GTC"), update_time=self.now_ms(),
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

    async def _new_algo(self, p: dict[str, str]) -> dict[str, Any]:
        """New Algo Order: CONDITIONAL only; quantity unless closePosition; reduceOnly not with closePosition."""
        for key in ("algoType", "symbol", "side", "type"):
            if not p.get(key):
                raise ApiError(-1102, f"Mandatory parameter '{key}' was not sent, was empty/null, or malformed.")
        if p["algoType"] != "CONDITIONAL":
            raise ApiError(-1130, "Data sent for parameter 'algoType' is not valid.")
        typ = p["type"]
        if typ not in CONDITIONAL_TYPES:
            raise ApiError(-1116)
        if typ not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise ApiError(-1116, "the fake implements STOP_MARKET and TAKE_PROFIT_MARKET only")
        f = self.filters.get(p["symbol"])
        if f is None:
            raise ApiError(-1121)
        if self.dual_side and p.get("positionSide", "BOTH") == "BOTH":
            raise ApiError(-4061)
        working = p.get("workingType", "CONTRACT_PRICE")
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise ApiError(-1130, "Data sent for parameter 'workingType' is not valid.")
        if not p.get("triggerPrice"):
            raise ApiError(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        trigger = Decimal(p["triggerPrice"])
        if trigger <= 0 or trigger % f.tick_size != 0:
            raise ApiError(-4014)
        close_position = p.get("closePosition", "false").lower() == "true"
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        if close_position and ("quantity" in p or reduce_only):
            raise ApiError(-1130, "quantity and reduceOnly cannot be sent with closePosition=true")
        qty = Decimal(p.get("quantity", "0"))
        if not close_position:
            if qty <= 0 or qty < f.market_min_qty:
                raise ApiError(-4003)
            if qty % f.market_step_size != 0:
                raise ApiError(-1111)
        cid = p.get("clientAlgoId") or f"algo-{next(self._algo_ids)}"
        if not ALGO_ID_RE.match(cid):
            raise ApiError(-1130, "Data sent for parameter 'clientAlgoId' is not valid.")
        if any(a.cid == cid for a in self.open_algo_orders()):
            raise ApiError(-4116)  # code assumed: duplicated among open algo orders, as for orders
        now = self.now_ms()
        a = FakeAlgoOrder(
            next(self._algo_ids), cid, p["symbol"], p["side"], typ, qty, trigger, working, reduce_only,
            close_position, create_time=now, update_time=now,
        )  # fmt: skip
        self.algo_orders[a.algo_id] = a
        await self._push_algo(a)
        if self._triggered(a):  # Binance would reject one that would trigger at once; the fake triggers it
            await self._trigger(a)
        return a.as_json()

    async def _trigger(self, a: FakeAlgoOrder) -> None:
        pos = self.position(a.symbol)
        await self._algo_status(a, "TRIGGERING")
        if self._reject_triggers > 0:
            self._reject_triggers -= 1
            await self._algo_status(a, "REJECTED")
            return
        closes = pos != 0 and (pos > 0) == (a.side == "SELL")
        if (a.reduce_only or a.close_position) and not closes:
            await self._algo_status(a, "EXPIRED")
            return
        qty = abs(pos) if a.close_position else a.qty
        o = FakeOrder(
            next(self._ids), f"autoalgo_{a.algo_id}", a.symbol, a.side, "MARKET", qty, Decimal(0),
            a.reduce_only or a.close_position, "GTC", update_time=self.now_ms(), stop_price=a.trigger,
        )  # fmt: skip
        self.orders[o.order_id] = o
        a.actual_order_id = str(o.order_id)
        a.trigger_time = self.now_ms()
        await self._algo_status(a, "TRIGGERED")
        await self._push_order(o, "NEW", None)
        await self._execute(o, self.prices[a.symbol], maker=False)
        a.executed, a.avg_price = o.executed, o.avg_price
        await self._algo_status(a, "FINISHED")

    async def _expire_algos_without_position(self, symbol: str) -> None:
        """Conditional orders left when their position closed are cancelled by the system (EXPIRED)."""
        for a in self.open_algo_orders(symbol):
            if a.close_position:
                await self._algo_status(a, "EXPIRED")

    async def _execute(self, o: FakeOrder, price: Decimal, *, maker: bool, qty: Decimal | None = None) -> None:
        pos, entry = self.positions.get(o.symbol, (Decimal(0), Decimal(0)))
        qty = min(qty, o.qty - o.executed) if qty is not None else o.qty - o.executed
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
        o.avg_price = (o.avg_price * o.executed + price * qty) / (o.executed + qty)
        o.executed += qty
        o.status = "FILLED" if o.executed >= o.qty or (o.reduce_only and new == 0) else "PARTIALLY_FILLED"
        if o.type == "MARKET":
            o.status = "FILLED"
        o.update_time = self.now_ms()
        trade_id = next(self._trade_ids)
        self.user_trades.append(
            {
                "buyer": o.side == "BUY", "commission": str(fee), "commissionAsset": "USDT", "id": trade_id,
                "maker": maker, "orderId": o.order_id, "price": str(price), "qty": str(qty),
                "quoteQty": str(qty * price), "realizedPnl": str(realized), "side": o.side, "positionSide": "BOTH",
                "symbol": o.symbol, "time": o.update_time,
            }
        )  # fmt: skip
        self._book_income(o.symbol, "COMMISSION", -fee, o.update_time, str(trade_id))
        if realized:
            self._book_income(o.symbol, "REALIZED_PNL", realized, o.update_time, str(trade_id))
        await self._push_order(
            o, "TRADE", {"l": str(qty), "L": str(price), "n": str(fee), "m": maker, "rp": str(realized), "t": trade_id}
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
        if new == 0:
            await self._expire_algos_without_position(o.symbol)

    async def _set_status(self, o: FakeOrder, status: str) -> None:
        o.status = status
        o.update_time = self.now_ms()
        await self._push_order(o, status, None)

    async def _algo_status(self, a: FakeAlgoOrder, status: str) -> None:
        a.status = status
        a.update_time = self.now_ms()
        await self._push_algo(a)

    async def _push_algo(self, a: FakeAlgoOrder) -> None:
        await self._push(
            {
                "e": "ALGO_UPDATE",
                "T": a.update_time,
                "E": a.update_time,
                "o": {
                    "caid": a.cid,
                    "aid": a.algo_id,
                    "at": "CONDITIONAL",
                    "o": a.type,
                    "s": a.symbol,
                    "S": a.side,
                    "ps": "BOTH",
                    "f": "GTC",
                    "q": str(a.qty),
                    "X": a.status,
                    "ai": a.actual_order_id,
                    "ap": str(a.avg_price),
                    "aq": str(a.executed),
                    "act": "MARKET" if a.actual_order_id else "0",
                    "tp": str(a.trigger),
                    "p": "0",
                    "wt": a.working_type,
                    "R": a.reduce_only,
                    "cp": a.close_position,
                    "pP": False,
                    "gtd": 0,
                },
            }
        )

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
                    "t": t.get("t", 0),
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

    async def _push(self, event: dict[str, Any], only_key: str | None = None) -> None:
        self.pushed.append(event)
        text = json.dumps(event)
        for key, conns in self._streams.items():
            if only_key is not None and key != only_key:
                continue
            for ws in list(conns):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)

    # -- websockets ------
    async def _ws_private(self, request: web.Request) -> web.StreamResponse:
        """``/private/ws/<listenKey>`` or ``/private/ws?listenKey=<key>``: the user data stream."""
        self.ws_paths.append(request.path_qs)
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        if key not in self.listen_keys:
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
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

    async def _ws_other(self, request: web.Request) -> web.StreamResponse:
        """Any other path (``/ws/<listenKey>`` unrouted, ``/public``, ``/market``): accepted, no user data."""
        self.ws_paths.append(request.path_qs)
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        return ws

    async def _ws_market(self, request: web.Request) -> web.StreamResponse:
        """Market data: ``/market`` and ``/public`` carry their own streams; unrouted paths get ``/public`` only."""
        self.ws_paths.append(request.path_qs)
        first = request.path.strip("/").split("/", 1)[0]
        route = first if first in ("market", "public") else "unrouted"
        names = request.match_info.get("stream") or request.query.get("streams", "")
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        entry = (route, {n for n in names.split("/") if n}, "stream" in request.match_info, ws)
        self._market_conns.append(entry)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            if entry in self._market_conns:
                self._market_conns.remove(entry)
        return ws

    async def publish_market(self, stream: str, data: dict[str, Any]) -> int:
        """Send one market event to every subscriber of ``stream`` on a path that carries it; how many got it.

        Combined-stream connections get Binance's ``{"stream": …, "data": …}`` wrapper, raw ones the event alone.
        """
        kind = stream.split("@", 1)[1] if "@" in stream else stream
        route = "public" if kind.startswith(("bookTicker", "depth")) else "market"
        sent = 0
        for conn_route, names, raw, ws in list(self._market_conns):
            if stream not in names or conn_route not in (route, "unrouted" if route == "public" else route):
                continue
            text = json.dumps(data if raw else {"stream": stream, "data": data}, separators=(",", ":"))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(text)
                sent += 1
        return sent

    def market_subscribers(self) -> int:
        return len(self._market_conns)

    def stream_count(self) -> int:
        return sum(len(c) for c in self._streams.values())


def load_recorded_exchange_info_text(path: str) -> str:
    """The raw JSON answer out of the ``<url> -> <time>: <json>`` recording line, byte for byte."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return first[first.index(": {") + 2 :].rstrip("\n")
