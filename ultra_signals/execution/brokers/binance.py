"""Binance USDⓈ-M futures broker: orders through the venue client, brackets as algo orders, fills from ``/private``.

Idempotence is the rule everything here follows.  Client order ids (and ``clientAlgoId``s) derive from the
decision id, and Binance only refuses a duplicate id while the first order is still *open*, so after any
ambiguous failure (a timeout, a 5xx, a dropped connection: :class:`UnknownOutcome`) the broker asks the exchange
for that id before it sends anything again: a retried request never places a second order.

Brackets.  Since 2025-12-09 Binance refuses every conditional type on ``POST /fapi/v1/order`` (-4120); stop and
take-profit are ``CONDITIONAL`` algo orders (``POST /fapi/v1/algoOrder``: ``triggerPrice``, ``workingType``,
``quantity`` + ``reduceOnly``, ``clientAlgoId``).  They are placed once the entry is final (filled, or cancelled
after its post-only timeout and completed at market) for exactly the executed quantity.  We use ``quantity`` +
``reduceOnly`` rather than ``closePosition``: closePosition would also close whatever else is on the symbol (a
hand-made position the reconciliation must report, never silently close) and a stop sized to our own fill is
what the TCA and PnL account for.  USDⓈ-M has no OCO: when one bracket's order fills, the broker cancels the
other.  A triggered bracket places an ordinary order whose client id is Binance's, not ours; ``ALGO_UPDATE``
carries its order id (``ai``), which is how its fill is tied back to the trade (fills seen before that event wait
for it).  A bracket ``REJECTED`` or ``EXPIRED`` while the position is open is an incident: the executor is told
the bracket was rejected (it trips ``missing_bracket``, alerts and flattens).

User data comes only from the ``/private`` route (an unrouted connection carries public data only); the listen key
is kept alive and re-created on ``listenKeyExpired`` or -1125, and every reconnect is followed by orphan-bracket
cleanup and the executor's reconciliation.  At start, in canary and production, the account is prepared and
verified (one-way mode, margin type, leverage) before anything is traded; see
:mod:`ultra_signals.venues.binance.account`.  The API secret never leaves the venue client's signing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Side
from ultra_signals.core.events import MarketEvent
from ultra_signals.execution.brokers.base import (
    DUPLICATE_REASON,
    AccountSnapshot,
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
from ultra_signals.execution.liquidation import Bracket, parse_brackets
from ultra_signals.observability.metrics import Metrics
from ultra_signals.venues.binance.account import AccountReport, AccountSetupError, prepare_account
from ultra_signals.venues.binance.client import BinanceFuturesClient, client_from_settings
from ultra_signals.venues.binance.errors import (
    DUPLICATE_CLIENT_ID,
    LISTEN_KEY_MISSING,
    ORDER_DOES_NOT_EXIST,
    UNKNOWN_ORDER,
    IpBanned,
    UnknownOutcome,
    VenueError,
)

log = logging.getLogger(__name__)

WorkingType = Literal["MARK_PRICE", "CONTRACT_PRICE"]
BRACKET_TYPES = {OrderKind.STOP: "STOP_MARKET", OrderKind.TAKE_PROFIT: "TAKE_PROFIT_MARKET"}
OPEN_ALGO = ("NEW",)
_MAX_PENDING = 200  # fills of not-yet-identified orders kept while their ALGO_UPDATE is awaited
_PENDING_S = 5.0  # ... for at most this long


class OutcomeUnknown(BrokerError):
    """The request may or may not have been executed; query before sending anything again."""


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
        client: BinanceFuturesClient,
        *,
        keepalive_s: float = 1_800.0,
        max_attempts: int = 3,
        reconnect_delay_s: float = 1.0,
        stop_working_type: WorkingType = "MARK_PRICE",
        take_profit_working_type: WorkingType = "MARK_PRICE",
        setup_symbols: tuple[str, ...] = (),
        margin_type: Literal["ISOLATED", "CROSSED"] = "ISOLATED",
        max_leverage: float = 1.0,
        multi_assets_fallback: Literal["refuse", "crossed"] = "refuse",
        naked_window_alert_ms: float = 2_000.0,
    ) -> None:
        self.client = client
        self.keepalive_s = keepalive_s
        self.max_attempts = max_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.working_type: dict[OrderKind, WorkingType] = {
            OrderKind.STOP: stop_working_type,
            OrderKind.TAKE_PROFIT: take_profit_working_type,
        }
        self.setup_symbols = setup_symbols
        self.margin_type: Literal["ISOLATED", "CROSSED"] = margin_type
        self.max_leverage = max_leverage
        self.multi_assets_fallback: Literal["refuse", "crossed"] = multi_assets_fallback
        self.naked_window_alert_ms = naked_window_alert_ms
        self.account: AccountReport | None = None
        self._listener: BrokerListener | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_key: str | None = None
        self._ws: ClientConnection | None = None
        self._stream_up = asyncio.Event()
        self._refs: dict[str, tuple[float, int, OrderKind]] = {}  # client id -> (reference price, live ts, kind)
        self._plans: dict[str, EntryPlan] = {}  # decision digest -> plan (brackets, sibling cancel)
        self._filled: dict[str, asyncio.Event] = {}  # entry client id -> set when it fills
        self._actual: dict[str, str] = {}  # order id placed by a triggered algo order -> our clientAlgoId
        # order id -> (first seen, its ORDER_TRADE_UPDATEs) awaiting the ALGO_UPDATE that names it
        self._pending: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._positions: dict[str, Decimal] = {}  # symbol -> signed position, from ACCOUNT_UPDATE
        self.stream_connects = 0
        self.stream_urls: list[str] = []
        self.listen_keys_created = 0
        self.orphans_cancelled: list[str] = []
        self.naked_windows_ms: list[float] = []  # entry fill -> both brackets acknowledged
        self._watched: dict[str, str] = {}  # decision id -> symbol: brackets whose fills must never be missed
        self.recovered_fills = 0
        self._ban_reported: int | None = None
        self._unsubscribe_ban: Callable[[], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> BinanceBroker:
        b = settings.binance
        if b.api_key is None or b.api_secret is None:
            raise BrokerError(
                "binance broker: binance.api_key and binance.api_secret are required; set them in the environment"
                " (ULTRA_SIGNALS_BINANCE__API_KEY / __API_SECRET) or a secrets file, never in YAML"
            )
        e = settings.execution
        return cls(
            client_from_settings(settings, name="binance-trading", trading=True, metrics=metrics),
            keepalive_s=e.listen_key_keepalive_s,
            stop_working_type=e.stop_working_type,
            take_profit_working_type=e.take_profit_working_type,
            setup_symbols=tuple(settings.runtime.symbols) if settings.runtime.mode != "shadow" else (),
            margin_type=e.margin_type,
            max_leverage=e.max_leverage,
            multi_assets_fallback=e.multi_assets_fallback,
            naked_window_alert_ms=e.naked_window_alert_ms,
        )

    # -- REST ------
    async def _request(
        self, method: str, path: str, params: dict[str, Any] | None = None, signed: bool = True, order: bool = False
    ) -> Any:
        """One call through the venue client; its errors become :class:`BrokerError` with Binance's code."""
        try:
            if signed:
                return await self.client.signed(method, path, params, order=order)
            return await self.client.keyed(method, path, params)
        except IpBanned as e:
            if e.until_ms != self._ban_reported:  # one incident per ban, not one per refused call
                self._ban_reported = e.until_ms
                self._incident("ip_banned", str(e))
            raise BrokerError(str(e), e.code) from None
        except UnknownOutcome as e:
            raise OutcomeUnknown(str(e), e.code) from None
        except VenueError as e:
            raise BrokerError(str(e), e.code) from None

    async def fetch_exchange_info(self) -> dict[str, Any]:
        try:
            data = await self.client.public("GET", "/fapi/v1/exchangeInfo")
        except VenueError as e:
            raise BrokerError(str(e), e.code) from None
        if not isinstance(data, dict):
            raise BrokerError("exchangeInfo: not an object")
        return data

    async def account_equity(self) -> float:
        acct = await self._request("GET", "/fapi/v2/account")
        return float(acct["totalWalletBalance"])

    async def account_snapshot(self) -> AccountSnapshot:
        """``GET /fapi/v2/account``: wallet, unrealized PnL, margin balance and available balance (USDT).

        Fields as documented on "Account Information V2" (https://developers.binance.com/docs/derivatives/
        usds-margined-futures/account/rest-api/Account-Information-V2): ``totalWalletBalance``,
        ``totalUnrealizedProfit``, ``totalMarginBalance`` (wallet + unrealized), ``availableBalance``, and per
        position ``unrealizedProfit``.  A missing total falls back to the wallet (never to more than it).
        """
        acct = await self._request("GET", "/fapi/v2/account")
        try:
            wallet = float(acct["totalWalletBalance"])
            unrealized = float(acct.get("totalUnrealizedProfit") or 0.0)
            margin = float(acct.get("totalMarginBalance") or wallet + unrealized)
            available = float(acct["availableBalance"]) if "availableBalance" in acct else min(wallet, margin)
            per_symbol = {
                str(p["symbol"]): float(p.get("unrealizedProfit") or p.get("unRealizedProfit") or 0.0)
                for p in acct.get("positions", [])
                if isinstance(p, dict) and float(p.get("positionAmt") or 0.0) != 0
            }
        except (KeyError, TypeError, ValueError) as e:
            raise BrokerError(f"GET /fapi/v2/account: unreadable answer ({type(e).__name__}: {e})") from None
        return AccountSnapshot(wallet, unrealized, margin, available, per_symbol)

    async def leverage_brackets(self) -> dict[str, list[Bracket]]:
        """``GET /fapi/v1/leverageBracket`` for the symbols this run trades (maintenance margins by notional)."""
        out: dict[str, list[Bracket]] = {}
        for sym in self.setup_symbols:
            out.update(parse_brackets(await self._request("GET", "/fapi/v1/leverageBracket", {"symbol": sym})))
        return out

    async def query_order(self, symbol: str, cid: str) -> dict[str, Any] | None:
        try:
            data = await self._request("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": cid})
        except BrokerError as e:
            if e.code == ORDER_DOES_NOT_EXIST:
                return None
            raise
        return data if isinstance(data, dict) else None

    async def query_algo(self, cid: str) -> dict[str, Any] | None:
        """``GET /fapi/v1/algoOrder`` by ``clientAlgoId``; None when Binance does not know it."""
        try:
            data = await self._request("GET", "/fapi/v1/algoOrder", {"clientAlgoId": cid})
        except BrokerError as e:
            if e.code in (ORDER_DOES_NOT_EXIST, UNKNOWN_ORDER):
                return None
            raise
        return data if isinstance(data, dict) else None

    async def _place_once(self, path: str, params: dict[str, Any], cid: str, lookup: Any, what: str) -> dict[str, Any]:
        """Send a new order (or algo order) at most once, whatever happens to the requests on the way."""
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:  # the previous attempt may have reached the exchange: ask before sending again
                with contextlib.suppress(OutcomeUnknown):
                    existing = await lookup()
                    if existing is not None:
                        return dict(existing)
            try:
                data = await self._request("POST", path, params, order=True)
                return data if isinstance(data, dict) else {}
            except OutcomeUnknown as e:
                last = e
                self._error("order_timeout", f"{params['symbol']} {what} {cid}: {e}")
            except BrokerError as e:
                # Duplicated id after an attempt whose outcome we never heard: that attempt landed, it is ours.
                # On the first attempt the id was used before this request (another runner of the namespace, or
                # an earlier run): the venue refusing it is the exactly-once guard, not ours to adopt.
                if e.code == DUPLICATE_CLIENT_ID and last is not None:
                    existing = await lookup()
                    if existing is not None:
                        return dict(existing)
                raise
        found = await lookup()
        if found is not None:
            return dict(found)
        raise BrokerError(f"{params['symbol']} {what} {cid}: no answer after {self.max_attempts} attempts ({last})")

    async def place(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = str(params["newClientOrderId"])
        return await self._place_once(
            "/fapi/v1/order", params, cid, lambda: self.query_order(params["symbol"], cid), "order"
        )

    async def place_algo(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = str(params["clientAlgoId"])
        return await self._place_once("/fapi/v1/algoOrder", params, cid, lambda: self.query_algo(cid), "algo order")

    async def cancel(self, symbol: str, cid: str) -> dict[str, Any] | None:
        """Cancel an order; an unknown outcome is resolved by a query (and one more cancel if still open)."""
        for _ in range(2):
            try:
                data = await self._request("DELETE", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": cid})
                return data if isinstance(data, dict) else None
            except OutcomeUnknown:
                found = await self.query_order(symbol, cid)
                if found is None or found.get("status") not in ("NEW", "PARTIALLY_FILLED"):
                    return found
            except BrokerError as e:
                if e.code in (UNKNOWN_ORDER, ORDER_DOES_NOT_EXIST):
                    return None
                raise
        return await self.query_order(symbol, cid)

    async def cancel_algo(self, cid: str) -> dict[str, Any] | None:
        """Cancel an algo order by ``clientalgoid``; an unknown outcome is resolved by a query first."""
        for _ in range(2):
            try:
                data = await self._request("DELETE", "/fapi/v1/algoOrder", {"clientalgoid": cid})
                return data if isinstance(data, dict) else None
            except OutcomeUnknown:
                found = await self.query_algo(cid)
                if found is None or found.get("algoStatus") not in OPEN_ALGO:
                    return found
            except BrokerError as e:
                if e.code in (UNKNOWN_ORDER, ORDER_DOES_NOT_EXIST):
                    return None
                raise
        return await self.query_algo(cid)

    # -- Broker interface ------
    def bind(self, listener: BrokerListener) -> None:
        self._listener = listener
        if self._unsubscribe_ban is None:  # the IP's ban, whichever client of this process sees the 418
            self._unsubscribe_ban = self.client.bans.subscribe(self._on_ban)

    def _on_ban(self, until_ms: int, detail: str) -> None:
        """A 418 seen by any client of this host (market data too): the IP is banned, trading halts now."""
        if until_ms != self._ban_reported:  # one incident per ban, not one per refused call
            self._ban_reported = until_ms
            self._incident("ip_banned", detail)

    def submit(self, plan: EntryPlan) -> None:
        self._queue.put_nowait(("submit", plan))

    def close_position(self, symbol: str, side: Side, qty: Decimal, order_key: str, ts_ms: int) -> None:
        self._queue.put_nowait(("close", (symbol, side, qty, order_key, ts_ms)))

    def on_market_event(self, ev: MarketEvent) -> None:
        return None  # the exchange fills; market data is the runner's business

    async def start(self) -> None:
        """Clock, account set-up (refuse to trade if it fails), orphan cleanup, then the order and user tasks."""
        try:
            await self.client.sync_time()
        except VenueError as e:
            raise BrokerError(f"binance: cannot read the server time: {e}", e.code) from None
        if self.setup_symbols:
            try:
                self.account = await prepare_account(
                    self.client,
                    self.setup_symbols,
                    margin_type=self.margin_type,
                    max_leverage=self.max_leverage,
                    multi_assets_fallback=self.multi_assets_fallback,
                )
            except AccountSetupError as e:
                raise BrokerError(f"binance account set-up refused: {e}") from None
            log.info("binance account: %s", self.account.summary())
        await self.cleanup_orphan_brackets()
        self._tasks.append(asyncio.create_task(self._worker(), name="binance-orders"))
        self._tasks.append(asyncio.create_task(self._user_stream(), name="binance-user-stream"))
        self._tasks.append(asyncio.create_task(self._keepalive(), name="binance-listen-key"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stream_up.wait(), timeout=self.client.timeout_s)

    async def drain(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._queue.join(), timeout=timeout_s)

    async def aclose(self) -> None:
        if self._unsubscribe_ban is not None:
            self._unsubscribe_ban()
            self._unsubscribe_ban = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._listen_key:
            with contextlib.suppress(BrokerError):
                await self._request("DELETE", "/fapi/v1/listenKey", signed=False)
        await self.client.aclose()

    async def _open_algo_orders(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "/fapi/v1/openAlgoOrders")
        return [a for a in data if isinstance(a, dict)] if isinstance(data, list) else []

    async def snapshot(self) -> VenueSnapshot:
        """Positions, open orders and open algo orders (the brackets), as the reconciliation compares them."""
        risk = await self._request("GET", "/fapi/v2/positionRisk")
        orders = await self._request("GET", "/fapi/v1/openOrders")
        algos = await self._open_algo_orders()
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
        views += [
            OpenOrderView(
                a["symbol"],
                a["clientAlgoId"],
                a["orderType"],
                OrderSide(a["side"]),
                float(a.get("quantity") or 0),
                float(a.get("price") or 0),
                float(a.get("triggerPrice") or 0),
                bool(a.get("reduceOnly")) or bool(a.get("closePosition")),
            )
            for a in algos
        ]
        return VenueSnapshot(positions, views)

    async def recover_missed_fills(self, trades: dict[str, str] | None = None) -> int:
        """Fills that happened while nobody listened (runner down, stream gap), re-read and handed on.

        ``trades``: order key (what the ids derive from) -> symbol of the trades believed open (the executor's, at start); the ones this
        broker placed are always watched.  Per decision: the entry orders and the exit order are queried by
        client id; the stop and take-profit algo orders by ``clientAlgoId``, and one that triggered names its
        ``actualOrderId``.  Each order that executed has its ``userTrades`` turned into fills exactly as the
        stream would have delivered them (same trade ids: a fill seen twice counts once downstream).  Runs
        before the reconciliation, so a bracket that filled while we were away closes its trade instead of
        looking like a lost position, and an entry filled during a gap opens its trade.
        """
        self._watched.update(trades or {})
        found = 0
        for did, symbol in list(self._watched.items()):
            plan = self._plans.get(client_order_id(did, OrderKind.STOP).split("_", 1)[1])
            sources: list[tuple[str, OrderKind, bool]] = [
                (client_order_id(did, OrderKind.ENTRY), OrderKind.ENTRY, False),
                (client_order_id(did, OrderKind.ENTRY, 1), OrderKind.ENTRY, False),
                (client_order_id(did, OrderKind.EXIT), OrderKind.EXIT, False),
                (client_order_id(did, OrderKind.STOP), OrderKind.STOP, True),
                (client_order_id(did, OrderKind.TAKE_PROFIT), OrderKind.TAKE_PROFIT, True),
            ]
            for cid, kind, algo in sources:
                try:
                    if algo:
                        a = await self.query_algo(cid)
                        if a is None or not a.get("actualOrderId"):
                            continue
                        order_id, ref = str(a["actualOrderId"]), float(a.get("triggerPrice") or 0.0)
                        order_ts, order_qty = int(a.get("triggerTime") or 0), float(a.get("quantity") or 0.0)
                    else:
                        o = await self.query_order(symbol, cid)
                        if o is None or float(o.get("executedQty") or 0.0) <= 0:
                            continue
                        order_id, order_qty = str(o["orderId"]), float(o.get("origQty") or 0.0)
                        ref = plan.arrival_price if plan and kind is OrderKind.ENTRY else float(o.get("avgPrice") or 0)
                        order_ts = plan.ts_ms if plan and kind is OrderKind.ENTRY else int(o.get("updateTime") or 0)
                    rows = await self._request("GET", "/fapi/v1/userTrades", {"symbol": symbol, "orderId": order_id})
                except BrokerError as e:
                    self._error("recover", f"{symbol} {cid}: {e}")
                    continue
                for r in rows if isinstance(rows, list) else []:
                    fill = Fill(
                        client_id=cid,
                        symbol=symbol,
                        side=OrderSide(r["side"]),
                        kind=kind,
                        qty=float(r["qty"]),
                        price=float(r["price"]),
                        fee=float(r.get("commission") or 0.0),
                        liquidity="maker" if r.get("maker") else "taker",
                        ts_ms=int(r["time"]),
                        order_qty=order_qty or float(r["qty"]),
                        order_ts_ms=order_ts or int(r["time"]),
                        reference_price=ref,
                        trade_id=str(r["id"]),
                    )
                    found += 1
                    if self._listener is not None:
                        self._listener.on_fill(fill)
        self.recovered_fills += found
        return found

    async def cleanup_orphan_brackets(self) -> list[str]:
        """Cancel our stop / take-profit algo orders on symbols with no position (closed while we were away).

        Binance has no OCO and may keep a reduce-only conditional order after its position is gone; left alone it
        could open a new position the next time the price passes its trigger once another trade is open.
        Only our own ids are touched; someone else's order is the reconciliation's to report.
        """
        try:
            risk = await self._request("GET", "/fapi/v2/positionRisk")
            algos = await self._open_algo_orders()
        except BrokerError as e:
            self._error("orphan_cleanup", str(e))
            return []
        held = {str(p["symbol"]) for p in risk if Decimal(str(p["positionAmt"])) != 0}
        cancelled = []
        for a in algos:
            parsed = parse_client_id(str(a.get("clientAlgoId", "")))
            if parsed is None or parsed[0] not in BRACKET_TYPES or a["symbol"] in held:
                continue
            with contextlib.suppress(BrokerError):
                await self.cancel_algo(str(a["clientAlgoId"]))
                cancelled.append(str(a["clientAlgoId"]))
                self._status(str(a["clientAlgoId"]), str(a["symbol"]), "CANCELED", "orphan_bracket")
        self.orphans_cancelled += cancelled
        return cancelled

    async def kill(self) -> KillReport:
        """Cancel every open order and algo order (per symbol), then close every position at market, reduce-only."""
        report = KillReport()
        try:
            orders = await self._request("GET", "/fapi/v1/openOrders")
            for symbol in sorted({o["symbol"] for o in orders}):
                await self._request("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol})
            algos = await self._open_algo_orders()
            for symbol in sorted({a["symbol"] for a in algos}):
                await self._request("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": symbol})
            report.cancelled_orders = len(orders) + len(algos)
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
        except BrokerError as e:
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
                elif cmd == "cancel_algo":
                    await self.cancel_algo(arg)
                elif cmd == "orphans":
                    await self.cleanup_orphan_brackets()
            except BrokerError as e:
                if cmd == "submit" and e.code == DUPLICATE_CLIENT_ID:
                    # Another runner (or an earlier run) already placed this bar's entry: refused, not an error.
                    log.warning("binance %s: entry not placed: %s", arg.symbol, e)
                    self._status(arg.cid(OrderKind.ENTRY), arg.symbol, "REJECTED", DUPLICATE_REASON)
                else:
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
        self._watched[plan.key] = plan.symbol
        cid = plan.cid(OrderKind.ENTRY)
        # The id is run-independent, but Binance refuses a duplicate only among OPEN orders: a market entry
        # another runner (or an earlier run) already filled would be accepted again.  Ask first (one GET).
        if await self.query_order(plan.symbol, cid) is not None:
            raise BrokerError(
                f"{plan.symbol} entry {cid} already exists on the venue (another runner or an earlier run)",
                DUPLICATE_CLIENT_ID,
            )
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
            if resp.get("status") in ("NEW", "PARTIALLY_FILLED"):
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
        """Reduce-only CONDITIONAL algo stop-market and take-profit-market for exactly ``qty``, back to back."""
        side = close_side(plan.side).value
        started = time.monotonic()
        acked = 0
        for kind, trigger in ((OrderKind.STOP, plan.stop), (OrderKind.TAKE_PROFIT, plan.take_profit)):
            cid = plan.cid(kind)
            self._refs[cid] = (float(trigger), 0, kind)
            try:
                await self.place_algo(
                    {
                        "algoType": "CONDITIONAL",
                        "symbol": plan.symbol,
                        "side": side,
                        "type": BRACKET_TYPES[kind],
                        "triggerPrice": fmt_decimal(trigger),
                        "quantity": fmt_decimal(qty),
                        "reduceOnly": "true",
                        "workingType": self.working_type[kind],
                        "clientAlgoId": cid,
                    }
                )
                acked += 1
            except BrokerError as e:
                self._error("bracket", f"{plan.symbol} {BRACKET_TYPES[kind]}: {e}")
                self._status(cid, plan.symbol, "REJECTED", str(e)[:60])
        if acked == 2:
            naked = (time.monotonic() - started) * 1000.0
            self.naked_windows_ms.append(naked)
            report = getattr(self._listener, "on_naked_window", None)
            if report is not None:  # the executor: a metric, and an alert above the threshold
                report(plan.symbol, naked)
            elif naked > self.naked_window_alert_ms:
                log.warning("binance %s: brackets acknowledged %.0f ms after the fill", plan.symbol, naked)

    async def _close(self, symbol: str, side: Side, qty: Decimal, order_key: str, ts_ms: int) -> None:
        plan = self._plans.get(client_order_id(order_key, OrderKind.STOP).split("_", 1)[1])
        for kind in (OrderKind.STOP, OrderKind.TAKE_PROFIT):
            await self.cancel_algo(client_order_id(order_key, kind))
        cid = client_order_id(order_key, OrderKind.EXIT)
        self._watched.pop(order_key, None)
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

    # -- user data stream (/private) ------
    async def _user_stream(self) -> None:
        first = True
        while True:
            try:
                data = await self._request("POST", "/fapi/v1/listenKey", signed=False)
                self._listen_key = str(data["listenKey"])
                self.listen_keys_created += 1
                url = self.client.endpoints.user_stream_url(self._listen_key)
                self.stream_urls.append(url)
                async with connect(url, open_timeout=self.client.timeout_s) as ws:
                    self._ws = ws
                    self.stream_connects += 1
                    self._stream_up.set()
                    if not first:  # a gap: fills we may have missed first, then orphans, then the reconciliation
                        await self.recover_missed_fills()
                        await self.cleanup_orphan_brackets()
                        if self._listener is not None:
                            self._listener.on_reconnect()
                    first = False
                    async for raw in ws:
                        if self._on_stream(raw if isinstance(raw, str) else raw.decode()):
                            break  # listen key expired: a new one, a new connection
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, BrokerError, KeyError, TypeError) as e:
                self._error("user_stream", f"{type(e).__name__}: {e}")
            self._stream_up.clear()
            self._ws = None
            await asyncio.sleep(self.reconnect_delay_s)

    async def _keepalive(self) -> None:
        """PUT every ``keepalive_s``; -1125 (the key is gone) closes the stream so that a new key is made."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self._request("PUT", "/fapi/v1/listenKey", signed=False)
            except BrokerError as e:
                if e.code == LISTEN_KEY_MISSING and self._ws is not None:
                    self._error("listen_key", "listen key no longer exists (-1125): re-creating it")
                    with contextlib.suppress(Exception):
                        await self._ws.close()

    def _release_stale_pending(self) -> None:
        """Held fills no ALGO_UPDATE claimed within ``_PENDING_S`` are not a bracket's: hand them on as they are
        (an order placed by hand, say), so the executor sees a fill it did not place instead of nothing."""
        now = time.monotonic()
        for oid in [k for k, (t0, _) in self._pending.items() if now - t0 > _PENDING_S]:
            for o in self._pending.pop(oid)[1]:
                self._on_order(o, hold=False)

    def _on_stream(self, raw: str) -> bool:
        """Handle one user-stream message; True when the stream must be re-opened."""
        if self._pending:
            self._release_stale_pending()
        try:
            msg = json.loads(raw)
            kind = msg.get("e")
            if kind == "ORDER_TRADE_UPDATE":
                self._on_order(msg["o"])
            elif kind == "ALGO_UPDATE":
                self._on_algo(msg["o"], int(msg.get("E") or msg.get("T") or 0))
            elif kind == "ACCOUNT_UPDATE":
                self._on_account(msg["a"], int(msg.get("T") or msg.get("E") or 0))
            elif kind == "MARGIN_CALL":
                syms = ", ".join(sorted({str(p.get("s")) for p in msg.get("p", [])}))
                self._incident("margin_call", f"MARGIN_CALL on {syms or 'the account'}: {raw[:200]}")
            elif kind == "listenKeyExpired":
                self._error("listen_key", "listenKeyExpired: re-creating the listen key")
                return True
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
            self._error("user_stream_message", f"{type(e).__name__}: {raw[:120]!r}")
        return False

    def _on_account(self, a: dict[str, Any], ts: int) -> None:
        """Balances, positions, and funding: ``m`` is the reason (ORDER, FUNDING_FEE, …).

        A funding fee on an isolated position comes with that position in ``P``; on a cross position with no
        ``P`` at all, so it is attributed to the only open position we know of, and journaled as unattributed
        otherwise (never silently dropped).
        """
        for p in a.get("P", []):
            if p.get("ps", "BOTH") == "BOTH":
                self._positions[str(p["s"])] = Decimal(str(p["pa"]))
        for b in a.get("B", []):
            if b.get("a") != "USDT":
                continue
            if self._listener is not None:
                self._listener.on_equity(float(b["wb"]))
            if a.get("m") == "FUNDING_FEE":
                change = float(b.get("bc") or 0.0)
                syms = [str(p["s"]) for p in a.get("P", [])]
                if not syms:
                    syms = [s for s, q in self._positions.items() if q != 0]
                if len(syms) == 1 and self._listener is not None:
                    self._listener.on_funding(syms[0], change, ts)
                else:
                    self._error("funding_unattributed", f"funding fee {change} USDT for {syms or 'no known position'}")

    def _on_algo(self, a: dict[str, Any], ts: int) -> None:
        """An algo order changed: tie its actual order to our bracket; REJECTED/EXPIRED with a position is an incident."""
        cid, symbol, status = str(a["caid"]), str(a["s"]), str(a["X"])
        parsed = parse_client_id(cid)
        actual = str(a.get("ai") or "")
        if actual and parsed is not None:
            self._actual[actual] = cid
            ref, _, kind = self._refs.get(cid, (float(a.get("tp") or 0), ts, parsed[0]))
            self._refs[cid] = (float(a.get("tp") or ref), ts, kind)
            for o in self._pending.pop(actual, (0.0, []))[1]:
                self._on_order(o)
        if parsed is None:
            return
        position = self._positions.get(symbol, Decimal(0))
        if status in ("REJECTED", "EXPIRED") and position != 0:
            # The position is unprotected: the executor treats a rejected bracket as an incident (alert, halt,
            # flatten).  EXPIRED is reported the same way, with Binance's status in the reason.
            log.error("binance bracket %s %s %s with a position of %s", symbol, cid, status, position)
            self._status(cid, symbol, "REJECTED", f"algo {status}", ts)
            return
        self._status(cid, symbol, status, None, ts)

    def _on_order(self, o: dict[str, Any], hold: bool = True) -> None:
        cid, symbol, status, execution = str(o["c"]), str(o["s"]), str(o["X"]), str(o["x"])
        order_id = str(o.get("i", ""))
        exchange_close = cid.startswith(("autoclose-", "adl_autoclose", "settlement_autoclose-"))
        if exchange_close and execution == "TRADE":
            # Binance closed (part of) a position itself: liquidation (autoclose-), auto-deleveraging, or the
            # settlement of a delisted contract ("Event: Order Update" of USDⓈ-M user data).
            what = "ADL" if cid.startswith("adl") else "settlement" if cid.startswith("settlement") else "liquidation"
            self._incident(what, f"{symbol} {what} order {cid}: {o.get('S')} {o.get('l')} at {o.get('L')}")
            if status == "FILLED":  # the position is gone: its reduce-only brackets must not wait for a new one
                self._queue.put_nowait(("orphans", symbol))
        parsed = parse_client_id(cid)
        if parsed is None:
            mapped = self._actual.get(order_id)
            if mapped is not None:
                cid, parsed = mapped, parse_client_id(mapped)
            elif hold and o.get("R") and o.get("o") == "MARKET" and order_id and not exchange_close:
                # Perhaps the order a bracket triggered, its ALGO_UPDATE not seen yet: keep it for that event.
                if len(self._pending) >= _MAX_PENDING:
                    self._pending.pop(next(iter(self._pending)))
                self._pending.setdefault(order_id, (time.monotonic(), []))[1].append(o)
                return
        ts = int(o["T"])
        if execution == "TRADE" and float(o["l"]) > 0:
            ref, live_ts, known = self._refs.get(cid, (0.0, ts, None))
            kind = known or (parsed[0] if parsed else OrderKind.EXIT)
            if kind in (OrderKind.STOP, OrderKind.TAKE_PROFIT):
                ref = float(o.get("sp") or 0) or ref
                live_ts = live_ts or ts
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
                if plan is not None:  # no OCO on USDⓈ-M: one bracket filled, cancel the other
                    self._queue.put_nowait(("cancel_algo", plan.cid(sibling)))
                    self._watched.pop(plan.key, None)
        if parsed is not None and parsed[0] in (OrderKind.STOP, OrderKind.TAKE_PROFIT):
            return  # a bracket's status is its algo order's (ALGO_UPDATE), not the triggered order's
        self._status(cid, symbol, status, o.get("r") if status == "REJECTED" else None, ts)

    # -- listener helpers ------
    def _status(self, cid: str, symbol: str, status: str, reason: str | None, ts: int | None = None) -> None:
        if self._listener is not None:
            self._listener.on_order_update(cid, symbol, status, reason, ts or int(time.time() * 1000))

    def _error(self, kind: str, detail: str) -> None:
        log.warning("binance %s: %s", kind, detail)
        if self._listener is not None:
            self._listener.on_broker_error(kind, detail, None)

    def _incident(self, kind: str, detail: str) -> None:
        """Something that must halt or protect: the listener's ``on_incident`` if it has one, else an error."""
        log.error("binance incident %s: %s", kind, detail)
        handler = getattr(self._listener, "on_incident", None)
        if handler is not None:
            handler(kind, detail, None)
        else:
            self._error(kind, detail)
