"""Binance USDⓈ-M futures broker: signed REST for orders, the user data stream for fills and positions.

Idempotence is the rule everything here follows.  Client order ids derive from the decision id, and Binance
only refuses a duplicate id while the first order is still *open*, so after any ambiguous failure (a timeout,
a dropped connection) the broker asks the exchange for that id before it sends anything again: a retried
request never places a second order.  Fills are taken from the user data stream only (deduplicated by trade id
downstream), REST answers drive the next step (brackets after the entry fills).  The API secret never leaves
:meth:`_sign`; errors carry Binance's code and message, never the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Side
from ultra_signals.core.events import MarketEvent
from ultra_signals.execution.brokers.base import (
    BrokerCapabilities,
    BrokerError,
    BrokerListener,
    EntryPlan,
    Fill,
    KillReport,
    OpenOrderView,
    OrderKind,
    OrderSide,
    PositionView,
    VenueSnapshot,
    client_order_id,
    close_side,
    fmt_decimal,
    open_side,
    parse_client_id,
)

TESTNET_REST = "https://testnet.binancefuture.com"
TESTNET_WS = "wss://fstream.binancefuture.com"
DUPLICATE_CLIENT_ID = -4116
ORDER_DOES_NOT_EXIST = -2013
UNKNOWN_ORDER = -2011


class BinanceBroker:
    name = "binance"
    capabilities = BrokerCapabilities(
        simulated_fills=False,
        positions_outlive_run=True,
        reports_equity=True,
        provides_exchange_info=True,
        external_kill=True,
        needs_market_events=False,
    )

    def __init__(
        self,
        *,
        rest_url: str,
        ws_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        recv_window_ms: int = 5_000,
        timeout_s: float = 5.0,
        keepalive_s: float = 1_800.0,
        max_attempts: int = 3,
        reconnect_delay_s: float = 1.0,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url.rstrip("/")
        self._key = api_key
        self._secret = api_secret
        self.recv_window_ms = recv_window_ms
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.max_attempts = max_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self._listener: BrokerListener | None = None
        self._http: httpx.AsyncClient | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_key: str | None = None
        self._ws: ClientConnection | None = None
        self._stream_up = asyncio.Event()
        self._refs: dict[str, tuple[float, int, OrderKind]] = {}  # client id -> (reference price, live ts, kind)
        self._plans: dict[str, EntryPlan] = {}  # decision digest -> plan (brackets, OCO)
        self._filled: dict[str, asyncio.Event] = {}  # entry client id -> set when it fills
        self.stream_connects = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> BinanceBroker:
        b = settings.binance
        if b.api_key is None or b.api_secret is None:
            raise BrokerError(
                "binance broker: binance.api_key and binance.api_secret are required; set them in the environment"
                " (ULTRA_SIGNALS_BINANCE__API_KEY / __API_SECRET) or a secrets file, never in YAML"
            )
        e = settings.execution
        return cls(
            rest_url=TESTNET_REST if b.testnet else b.rest_url,
            ws_url=TESTNET_WS if b.testnet else b.ws_url,
            api_key=b.api_key,
            api_secret=b.api_secret,
            recv_window_ms=e.recv_window_ms,
            timeout_s=e.request_timeout_s,
            keepalive_s=e.listen_key_keepalive_s,
        )

    # -- REST ------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.rest_url,
                timeout=self.timeout_s,
                headers={"X-MBX-APIKEY": self._key.get_secret_value()},
            )
        return self._http

    def _sign(self, params: dict[str, Any]) -> str:
        q = urlencode({**params, "timestamp": int(time.time() * 1000), "recvWindow": self.recv_window_ms})
        sig = hmac.new(self._secret.get_secret_value().encode(), q.encode(), hashlib.sha256).hexdigest()
        return f"{q}&signature={sig}"

    async def _request(self, method: str, path: str, params: dict[str, Any] | None = None, signed: bool = True) -> Any:
        query = self._sign(params or {}) if signed else urlencode(params or {})
        r = await self._client().request(method, f"{path}?{query}" if query else path)
        try:
            data = r.json()
        except json.JSONDecodeError:
            data = None
        if r.status_code >= 400:
            code = data.get("code") if isinstance(data, dict) else None
            msg = data.get("msg") if isinstance(data, dict) else r.text[:200]
            raise BrokerError(f"{method} {path}: HTTP {r.status_code} {code} {msg}", code)
        return data

    async def fetch_exchange_info(self) -> dict[str, Any]:
        data = await self._request("GET", "/fapi/v1/exchangeInfo", signed=False)
        if not isinstance(data, dict):
            raise BrokerError("exchangeInfo: not an object")
        return data

    async def account_equity(self) -> float:
        acct = await self._request("GET", "/fapi/v2/account")
        return float(acct["totalWalletBalance"])

    async def query_order(self, symbol: str, cid: str) -> dict[str, Any] | None:
        try:
            data = await self._request("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": cid})
        except BrokerError as e:
            if e.code == ORDER_DOES_NOT_EXIST:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def place(self, params: dict[str, Any]) -> dict[str, Any]:
        """Place an order at most once, whatever happens to the requests on the way."""
        cid = str(params["newClientOrderId"])
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                # The previous attempt may have reached the exchange: ask before sending again.
                with contextlib.suppress(httpx.TransportError):
                    existing = await self.query_order(params["symbol"], cid)
                    if existing is not None:
                        return existing
            try:
                data = await self._request("POST", "/fapi/v1/order", params)
                return data if isinstance(data, dict) else {}
            except httpx.TransportError as e:  # timeout, reset: the outcome is unknown
                last = e
                self._error("order_timeout", f"{params['symbol']} {cid}: {type(e).__name__}")
            except BrokerError as e:
                if e.code == DUPLICATE_CLIENT_ID:
                    existing = await self.query_order(params["symbol"], cid)
                    if existing is not None:
                        return existing
                raise
        found = await self.query_order(params["symbol"], cid)
        if found is not None:
            return found
        raise BrokerError(f"{params['symbol']} {cid}: no answer after {self.max_attempts} attempts ({last!r})")

    async def cancel(self, symbol: str, cid: str) -> dict[str, Any] | None:
        try:
            data = await self._request("DELETE", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": cid})
        except BrokerError as e:
            if e.code in (UNKNOWN_ORDER, ORDER_DOES_NOT_EXIST):
                return None
            raise
        return data if isinstance(data, dict) else None

    # -- Broker interface ------
    def bind(self, listener: BrokerListener) -> None:
        self._listener = listener

    def submit(self, plan: EntryPlan) -> None:
        self._queue.put_nowait(("submit", plan))

    def close_position(self, symbol: str, side: Side, qty: Decimal, decision_id: str, ts_ms: int) -> None:
        self._queue.put_nowait(("close", (symbol, side, qty, decision_id, ts_ms)))

    def on_market_event(self, ev: MarketEvent) -> None:
        return None  # the exchange fills; market data is the runner's business

    async def start(self) -> None:
        self._client()
        self._tasks.append(asyncio.create_task(self._worker(), name="binance-orders"))
        self._tasks.append(asyncio.create_task(self._user_stream(), name="binance-user-stream"))
        self._tasks.append(asyncio.create_task(self._keepalive(), name="binance-listen-key"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stream_up.wait(), timeout=self.timeout_s)

    async def drain(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._queue.join(), timeout=timeout_s)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                if self._listen_key:
                    await self._request("DELETE", "/fapi/v1/listenKey", signed=False)
            await self._http.aclose()
            self._http = None

    async def snapshot(self) -> VenueSnapshot:
        risk = await self._request("GET", "/fapi/v2/positionRisk")
        orders = await self._request("GET", "/fapi/v1/openOrders")
        positions = [
            PositionView(p["symbol"], float(p["positionAmt"]), float(p["entryPrice"]))
            for p in risk
            if float(p["positionAmt"]) != 0
        ]
        views = [
            OpenOrderView(
                o["symbol"],
                o["clientOrderId"],
                o["type"],
                OrderSide(o["side"]),
                float(o["origQty"]),
                float(o["price"]),
                float(o["stopPrice"]),
                bool(o["reduceOnly"]),
            )
            for o in orders
        ]
        return VenueSnapshot(positions, views)

    async def kill(self) -> KillReport:
        """Cancel every open order (per symbol), then close every position at market, reduce-only."""
        report = KillReport()
        try:
            orders = await self._request("GET", "/fapi/v1/openOrders")
            for symbol in sorted({o["symbol"] for o in orders}):
                await self._request("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol})
            report.cancelled_orders = len(orders)
            risk = await self._request("GET", "/fapi/v2/positionRisk")
            stamp = int(time.time() * 1000)
            for p in risk:
                amt = Decimal(str(p["positionAmt"]))
                if amt == 0:
                    continue
                await self.place(
                    {
                        "symbol": p["symbol"],
                        "side": "SELL" if amt > 0 else "BUY",
                        "type": "MARKET",
                        "quantity": fmt_decimal(abs(amt)),
                        "reduceOnly": "true",
                        "newClientOrderId": client_order_id(f"kill:{p['symbol']}:{stamp}", OrderKind.EXIT),
                        "newOrderRespType": "RESULT",
                    }
                )
                report.flattened.append(p["symbol"])
            snap = await self.snapshot()
            report.remaining_orders = len(snap.open_orders)
            report.remaining_positions = len(snap.positions)
        except (BrokerError, httpx.HTTPError) as e:
            report.errors.append(str(e))
        return report

    # -- order work (its own task: the decision loop never waits on the exchange) ------
    async def _worker(self) -> None:
        while True:
            cmd, arg = await self._queue.get()
            try:
                if cmd == "submit":
                    await self._enter(arg)
                elif cmd == "close":
                    await self._close(*arg)
                elif cmd == "cancel":
                    await self.cancel(*arg)
            except (BrokerError, httpx.HTTPError) as e:
                self._error("order", str(e))
                if cmd == "submit":
                    self._status(arg.cid(OrderKind.ENTRY), arg.symbol, "REJECTED", str(e)[:60])
            except Exception as e:  # a bug must not kill the order task
                self._error("order_bug", f"{type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    async def _enter(self, plan: EntryPlan) -> None:
        digest = plan.cid(OrderKind.STOP).split("_", 1)[1]
        self._plans[digest] = plan
        cid = plan.cid(OrderKind.ENTRY)
        base = {"symbol": plan.symbol, "side": open_side(plan.side).value, "newOrderRespType": "RESULT"}
        self._refs[cid] = (plan.arrival_price, plan.ts_ms, OrderKind.ENTRY)
        if plan.entry_type == "limit_post_only" and plan.limit_price is not None:
            filled_evt = self._filled.setdefault(cid, asyncio.Event())
            resp = await self.place(
                {
                    **base,
                    "type": "LIMIT",
                    "timeInForce": "GTX",
                    "price": fmt_decimal(plan.limit_price),
                    "quantity": fmt_decimal(plan.qty),
                    "newClientOrderId": cid,
                }
            )
            filled = Decimal(str(resp.get("executedQty", "0")))
            if resp.get("status") == "NEW":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(filled_evt.wait(), timeout=plan.limit_timeout_ms / 1000.0)
                if not filled_evt.is_set():
                    cancelled = await self.cancel(plan.symbol, cid)
                    final = cancelled or await self.query_order(plan.symbol, cid) or {}
                    filled = Decimal(str(final.get("executedQty", "0")))
                    self._status(cid, plan.symbol, "EXPIRED", "post_only_timeout")
                else:
                    final = await self.query_order(plan.symbol, cid) or {}
                    filled = Decimal(str(final.get("executedQty", plan.qty)))
            rest = plan.qty - filled
            if rest > 0 and plan.market_fallback:
                fb = plan.cid(OrderKind.ENTRY, 1)
                self._refs[fb] = (plan.arrival_price, plan.ts_ms, OrderKind.ENTRY)
                resp = await self.place(
                    {**base, "type": "MARKET", "quantity": fmt_decimal(rest), "newClientOrderId": fb}
                )
                filled += Decimal(str(resp.get("executedQty", "0")))
        else:
            resp = await self.place(
                {**base, "type": "MARKET", "quantity": fmt_decimal(plan.qty), "newClientOrderId": cid}
            )
            filled = Decimal(str(resp.get("executedQty", "0")))
        if filled > 0:
            await self._brackets(plan, filled)
        elif plan.entry_type == "limit_post_only" and not plan.market_fallback:
            self._status(cid, plan.symbol, "CANCELED", "post_only_unfilled")

    async def _brackets(self, plan: EntryPlan, qty: Decimal) -> None:
        """Reduce-only stop-market and take-profit-market, sent back to back as soon as the entry filled."""
        side = close_side(plan.side).value
        for kind, typ, trigger in (
            (OrderKind.STOP, "STOP_MARKET", plan.stop),
            (OrderKind.TAKE_PROFIT, "TAKE_PROFIT_MARKET", plan.take_profit),
        ):
            cid = plan.cid(kind)
            self._refs[cid] = (float(trigger), 0, kind)
            try:
                await self.place(
                    {
                        "symbol": plan.symbol,
                        "side": side,
                        "type": typ,
                        "stopPrice": fmt_decimal(trigger),
                        "quantity": fmt_decimal(qty),
                        "reduceOnly": "true",
                        "workingType": "CONTRACT_PRICE",
                        "newClientOrderId": cid,
                    }
                )
            except (BrokerError, httpx.HTTPError) as e:
                self._error("bracket", f"{plan.symbol} {typ}: {e}")
                self._status(cid, plan.symbol, "REJECTED", str(e)[:60])

    async def _close(self, symbol: str, side: Side, qty: Decimal, decision_id: str, ts_ms: int) -> None:
        plan = self._plans.get(client_order_id(decision_id, OrderKind.STOP).split("_", 1)[1])
        for kind in (OrderKind.STOP, OrderKind.TAKE_PROFIT):
            await self.cancel(symbol, client_order_id(decision_id, kind))
        cid = client_order_id(decision_id, OrderKind.EXIT)
        self._refs[cid] = (plan.arrival_price if plan else 0.0, ts_ms, OrderKind.EXIT)
        await self.place(
            {
                "symbol": symbol,
                "side": close_side(side).value,
                "type": "MARKET",
                "quantity": fmt_decimal(qty),
                "reduceOnly": "true",
                "newClientOrderId": cid,
                "newOrderRespType": "RESULT",
            }
        )

    # -- user data stream ------
    async def _user_stream(self) -> None:
        first = True
        while True:
            try:
                data = await self._request("POST", "/fapi/v1/listenKey", signed=False)
                self._listen_key = str(data["listenKey"])
                async with connect(f"{self.ws_url}/ws/{self._listen_key}", open_timeout=self.timeout_s) as ws:
                    self._ws = ws
                    self.stream_connects += 1
                    self._stream_up.set()
                    if not first and self._listener is not None:
                        self._listener.on_reconnect()
                    first = False
                    async for raw in ws:
                        if self._on_stream(raw if isinstance(raw, str) else raw.decode()):
                            break  # listen key expired: a new one, a new connection
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, BrokerError, httpx.HTTPError) as e:
                self._error("user_stream", f"{type(e).__name__}: {e}")
            self._stream_up.clear()
            await asyncio.sleep(self.reconnect_delay_s)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            with contextlib.suppress(BrokerError, httpx.HTTPError):
                await self._request("PUT", "/fapi/v1/listenKey", signed=False)

    def _on_stream(self, raw: str) -> bool:
        """Handle one user-stream message; True when the stream must be re-opened."""
        try:
            msg = json.loads(raw)
            kind = msg.get("e")
            if kind == "ORDER_TRADE_UPDATE":
                self._on_order(msg["o"])
            elif kind == "ACCOUNT_UPDATE":
                for b in msg["a"].get("B", []):
                    if b.get("a") == "USDT" and self._listener is not None:
                        self._listener.on_equity(float(b["wb"]))
            elif kind == "listenKeyExpired":
                return True
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._error("user_stream_message", f"{type(e).__name__}: {raw[:120]!r}")
        return False

    def _on_order(self, o: dict[str, Any]) -> None:
        cid, symbol, status, execution = str(o["c"]), str(o["s"]), str(o["X"]), str(o["x"])
        ts = int(o["T"])
        if execution == "TRADE" and float(o["l"]) > 0:
            ref, live_ts, kind = self._refs.get(cid, (0.0, ts, None))
            parsed = parse_client_id(cid)
            kind = kind or (parsed[0] if parsed else OrderKind.EXIT)
            if kind in (OrderKind.STOP, OrderKind.TAKE_PROFIT):
                ref = float(o.get("sp") or ref)
                live_ts = ts
            fill = Fill(
                client_id=cid,
                symbol=symbol,
                side=OrderSide(o["S"]),
                kind=kind,
                qty=float(o["l"]),
                price=float(o["L"]),
                fee=float(o.get("n") or 0.0),
                liquidity="maker" if o.get("m") else "taker",
                ts_ms=ts,
                order_qty=float(o["q"]),
                order_ts_ms=live_ts or ts,
                reference_price=ref,
                trade_id=str(o.get("t", "")),
            )
            if self._listener is not None:
                self._listener.on_fill(fill)
            if status == "FILLED" and kind is OrderKind.ENTRY:
                self._filled.setdefault(cid, asyncio.Event()).set()
            if status == "FILLED" and kind in (OrderKind.STOP, OrderKind.TAKE_PROFIT) and parsed is not None:
                sibling = OrderKind.TAKE_PROFIT if kind is OrderKind.STOP else OrderKind.STOP
                plan = self._plans.get(parsed[1])
                if plan is not None:  # one cancels the other
                    self._queue.put_nowait(("cancel", (symbol, plan.cid(sibling))))
        self._status(cid, symbol, status, o.get("r") if status == "REJECTED" else None, ts)

    # -- listener helpers ------
    def _status(self, cid: str, symbol: str, status: str, reason: str | None, ts: int | None = None) -> None:
        if self._listener is not None:
            self._listener.on_order_update(cid, symbol, status, reason, ts or int(time.time() * 1000))

    def _error(self, kind: str, detail: str) -> None:
        if self._listener is not None:
            self._listener.on_broker_error(kind, detail, None)
