"""The Binance USDⓈ-M REST client every part of the program uses (market data, broker, preflight).

One instance per use: market data and trading keep separate connections (a burst of kline back-fill must not
queue behind, or in front of, an order).  What the client guarantees:

* **Signing** with a server-time offset (:class:`ServerClock`), measured before the first signed call, refreshed
  every ``time_refresh_s`` and on -1021, after which the refused request is sent once more (a -1021 request was
  refused, so re-sending it cannot duplicate anything).
* **Rate limits**: weight and order counts read from every answer's headers; requests wait *before* a soft limit.
  A 429 makes every request of this client wait out ``Retry-After`` (one shared "not before" instant: no burst
  when it lifts), then the refused request is sent again (429 means not executed).  A ``Retry-After`` longer
  than ``max_retry_after_s`` is a clear error instead of a silent hang.
* **418** (IP banned) raises :class:`IpBanned` and every further call fails fast until the ban ends: the caller
  halts trading.  The ban is the IP's, so it is shared by every client of the same host in the process
  (:class:`~ultra_signals.venues.binance.limits.BanState`): one the market-data client sees stops the trading
  client too, and the broker, subscribed to it, halts trading even when it was not sending anything.
* **Metrics** (when given a :class:`Metrics`): the weight and order counts of the latest answer as gauges
  (``binance_used_weight{role,window}``, ``binance_order_count{role,window}``) and every 429/418 counted
  (``binance_rate_limited_total{role,status}``), per client role (``market_data`` / ``trading``).
* **5xx, -1001/-1006/-1007, timeouts, resets**: reads (GET) are retried with backoff; writes raise
  :class:`UnknownOutcome` — Binance says the execution status is UNKNOWN — and the caller queries by client id
  before anything is sent again.
* **Secrets**: the key is attached per request (never stored on the shared httpx client's headers, never in
  ``repr``) and errors name method, path and Binance's answer only; see :class:`VenueError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from ultra_signals.observability.metrics import Metrics
from ultra_signals.venues.binance.clock import ServerClock, wall_ms
from ultra_signals.venues.binance.endpoints import Endpoints, endpoints_from_settings
from ultra_signals.venues.binance.errors import (
    INVALID_TIMESTAMP,
    UNKNOWN_EXECUTION,
    IpBanned,
    RateLimited,
    UnknownOutcome,
    VenueError,
)
from ultra_signals.venues.binance.limits import BanState, RateState, ban_state_for
from ultra_signals.venues.binance.signing import signed_query

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class BinanceFuturesClient:
    def __init__(
        self,
        endpoints: Endpoints,
        *,
        api_key: SecretStr | None = None,
        api_secret: SecretStr | None = None,
        recv_window_ms: int = 5_000,
        timeout_s: float = 5.0,
        time_refresh_s: float = 900.0,
        max_retry_after_s: float = 120.0,
        read_retries: int = 3,
        name: str = "binance",
        sleep: Sleep = asyncio.sleep,
        now_local_ms: Callable[[], int] = wall_ms,
        transport: httpx.AsyncBaseTransport | None = None,
        role: str = "market_data",
        metrics: Metrics | None = None,
        bans: BanState | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.name = name
        #: ``market_data`` or ``trading``: the label of this client's metrics.
        self.role = role
        self.metrics = metrics
        if metrics is not None:
            # Both series exist at 0 from the start, so the first 429 or 418 is an increase() Prometheus sees
            # (a series born at 1 shows no increase until its second count).
            for status in ("429", "418"):
                metrics.venue_rate_limited.labels(role=role, status=status)
        #: The IP ban of this host, shared by every client of the process (see the module docstring).
        self.bans = bans if bans is not None else ban_state_for(endpoints.rest)
        self._key = api_key
        self._secret = api_secret
        self.recv_window_ms = recv_window_ms
        self.timeout_s = timeout_s
        self.max_retry_after_s = max_retry_after_s
        self.read_retries = read_retries
        self.clock = ServerClock(refresh_s=time_refresh_s, now_local_ms=now_local_ms)
        self.limits = RateState()
        self._sleep = sleep
        self._now_local = now_local_ms
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._not_before_ms = 0  # 429: nobody sends before this instant
        self.waits: list[tuple[str, float]] = []  # (why, seconds) for every deliberate pause: tests and metrics
        self.time_syncs = 0

    def __repr__(self) -> str:  # the key must never be printable, even by accident
        return f"BinanceFuturesClient({self.name}, {self.endpoints.rest}, key={'set' if self._key else 'none'})"

    # -- plumbing ------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.endpoints.rest, timeout=self.timeout_s, transport=self._transport
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def has_keys(self) -> bool:
        return bool(self._key and self._key.get_secret_value() and self._secret and self._secret.get_secret_value())

    def _auth_headers(self) -> dict[str, str]:
        if self._key is None:
            raise VenueError(f"{self.name}: binance.api_key is not set")
        return {"X-MBX-APIKEY": self._key.get_secret_value()}

    async def _wait(self, why: str, seconds: float) -> None:
        if seconds <= 0:
            return
        self.waits.append((why, seconds))
        log.warning("%s: waiting %.2f s (%s)", self.name, seconds, why)
        await self._sleep(seconds)

    @property
    def banned_until_ms(self) -> int | None:
        """Until when this host's IP is banned (local wall ms), whichever client saw the 418; None: not banned."""
        return self.bans.until_ms if self.bans.remaining_ms(self._now_local()) else None

    def _account(self, r: httpx.Response) -> None:
        """Read the answer's weight and order-count headers; export them and any 429/418."""
        self.limits.update(r.headers)
        m = self.metrics
        if m is None:
            return
        for window, used in self.limits.weight.items():
            m.venue_used_weight.labels(role=self.role, window=window).set(used)
        for window, count in self.limits.orders.items():
            m.venue_order_count.labels(role=self.role, window=window).set(count)
        if r.status_code in (418, 429):
            m.venue_rate_limited.labels(role=self.role, status=str(r.status_code)).inc()

    def _ban(self, retry_s: float, where: str) -> int:
        until = self._now_local() + int(retry_s * 1000)
        self.bans.ban(
            until, f"{where}; IP banned for {retry_s:.0f} s (seen by {self.name})", f"{self.name}/{self.role}"
        )
        return max(until, self.bans.until_ms or until)  # a longer ban already known stays the one reported

    async def _gate(self, *, order: bool) -> None:
        now = self._now_local()
        left = self.bans.remaining_ms(now)
        if left:
            raise IpBanned(
                f"{self.name}: IP banned by Binance (HTTP 418, seen by {self.bans.seen_by}) for {left / 1000:.0f} s"
                " more; trading is halted",
                self.bans.until_ms or now + left,
            )
        if self._not_before_ms > now:
            await self._wait("429 Retry-After", (self._not_before_ms - now) / 1000.0)
        pause = self.limits.pause_ms(self._now_local(), order=order)
        if pause:
            await self._wait("near the order-count limit" if order else "near the request-weight limit", pause / 1000.0)
            self.limits.orders.clear() if order else self.limits.weight.clear()

    # -- time ------
    async def sync_time(self) -> int:
        """Measure ``server - local`` (ms) with ``GET /fapi/v1/time``; returns the offset."""
        sent = self._now_local()
        data = await self.request("GET", "/fapi/v1/time")
        received = self._now_local()
        if not isinstance(data, dict) or not isinstance(data.get("serverTime"), int):
            raise VenueError(f"{self.name}: GET /fapi/v1/time answered without serverTime")
        self.time_syncs += 1
        offset = self.clock.record(int(data["serverTime"]), sent, received)
        log.info("%s: server time offset %+d ms", self.name, offset)
        return offset

    # -- requests ------
    async def send(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """One unsigned request as it is (no retry, no wait): the raw answer, headers accounted.

        For callers with their own retry policy (market data back-fill); transport errors propagate as httpx's.
        While this host's IP is banned (a 418 seen by any client of the process) nothing is sent: the answer is
        the one Binance would give, a 418 with ``Retry-After`` set to the seconds left, made here, so the caller's
        own 418 handling applies and the ban is not prolonged by another request.
        """
        left = self.bans.remaining_ms(self._now_local())
        if left:
            headers = {"Retry-After": str(max(1, -(-left // 1000)))}
            body = {"code": -1003, "msg": f"IP banned (HTTP 418 seen by {self.bans.seen_by}); not sent"}
            request = httpx.Request(method, self.endpoints.rest + path)
            return httpx.Response(418, headers=headers, json=body, request=request)
        r = await self._client().request(method, path, params=dict(params) if params else None)
        self._account(r)
        if r.status_code == 418:
            self._ban(_retry_after_s(r.headers) or 120.0, f"{method} {path}: HTTP 418")
        return r

    async def request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, signed: bool = False,
        keyed: bool = False, order: bool = False,
    ) -> Any:  # fmt: skip
        """One logical call: signed (keys + timestamp + signature), keyed (API key only: listenKey) or public.

        ``order``: the call places an order (counts toward the order limits).  Writes (anything but GET) are
        never retried after an unknown outcome; see the module docstring.
        """
        write = method != "GET"
        attempts = 0
        resynced = False
        while True:
            attempts += 1
            await self._gate(order=order)
            if signed:
                if self._secret is None:
                    raise VenueError(f"{self.name}: binance.api_secret is not set")
                if self.clock.stale():
                    await self.sync_time()
                query = signed_query(params or {}, self._secret, self.clock.now_ms(), self.recv_window_ms)
            else:
                query = urlencode(params or {})
            headers = self._auth_headers() if (signed or keyed) else None
            url = f"{path}?{query}" if query else path
            try:
                r = await self._client().request(method, url, headers=headers)
            except httpx.TransportError as e:  # timeout, reset, refused: did it arrive?
                if write:
                    raise UnknownOutcome(f"{method} {path}: {type(e).__name__}: outcome unknown") from None
                if attempts > self.read_retries:
                    raise VenueError(f"{method} {path}: {type(e).__name__} after {attempts} attempts") from None
                await self._wait("transport error", min(0.2 * 2**attempts, 5.0))
                continue
            self._account(r)
            data = _json(r)
            code = data.get("code") if isinstance(data, dict) else None
            msg = data.get("msg") if isinstance(data, dict) else r.text[:200]
            if r.status_code < 400 and not (isinstance(code, int) and code < 0):
                return data
            where = f"{method} {path}: HTTP {r.status_code} {code} {msg}"
            if r.status_code == 429:
                retry = _retry_after_s(r.headers)
                if retry is None:  # the order-count 429 comes without Retry-After: the next 10 s window
                    retry = self.limits.pause_ms(self._now_local(), order=True) / 1000.0 or 10.0
                if retry > self.max_retry_after_s:
                    raise RateLimited(
                        f"{where}; Retry-After {retry:.0f} s exceeds {self.max_retry_after_s:.0f} s", code, 429
                    )
                self._not_before_ms = self._now_local() + int(retry * 1000)
                if attempts > self.read_retries:
                    raise RateLimited(f"{where}; still limited after {attempts} attempts", code, 429)
                continue  # 429 = refused, not executed: safe to send again once the wait is over
            if r.status_code == 418:
                retry = _retry_after_s(r.headers) or 120.0
                until = self._ban(retry, where)
                raise IpBanned(f"{where}; IP banned for {retry:.0f} s: trading is halted", until)
            if r.status_code >= 500 or code in UNKNOWN_EXECUTION:
                if write:
                    raise UnknownOutcome(f"{where}: execution status unknown", code, r.status_code)
                if attempts > self.read_retries:
                    raise VenueError(f"{where} after {attempts} attempts", code, r.status_code)
                await self._wait("server error", min(0.2 * 2**attempts, 5.0))
                continue
            if code == INVALID_TIMESTAMP and signed and not resynced:
                resynced = True  # the clock jumped: measure again, send once more (a -1021 was not executed)
                await self.sync_time()
                continue
            raise VenueError(where, code if isinstance(code, int) else None, r.status_code)

    async def public(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request(method, path, params)

    async def signed(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, order: bool = False
    ) -> Any:
        return await self.request(method, path, params, signed=True, order=order)

    async def keyed(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.request(method, path, params, keyed=True)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _retry_after_s(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def client_from_settings(
    settings: Any, *, name: str, trading: bool, metrics: Metrics | None = None
) -> BinanceFuturesClient:
    """The client for one use (``trading``: with keys and the execution timeouts; else market data)."""
    b = settings.binance
    endpoints = endpoints_from_settings(b)
    if trading:
        e = settings.execution
        return BinanceFuturesClient(
            endpoints,
            api_key=b.api_key,
            api_secret=b.api_secret,
            recv_window_ms=e.recv_window_ms,
            timeout_s=e.request_timeout_s,
            time_refresh_s=e.time_sync_interval_s,
            max_retry_after_s=b.rest_max_retry_after_s,
            name=name,
            role="trading",
            metrics=metrics,
        )
    return BinanceFuturesClient(
        endpoints,
        timeout_s=b.rest_timeout_s,
        max_retry_after_s=b.rest_max_retry_after_s,
        name=name,
        role="market_data",
        metrics=metrics,
    )
