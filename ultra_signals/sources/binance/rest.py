"""Binance USDⓈ-M public REST: exchangeInfo, paginated klines, depth snapshots, polite under rate limits.

Politeness is part of correctness here: Binance answers a client that ignores 429 with a 418 IP ban, and a
banned shadow run sees nothing.  So every answer's ``X-MBX-USED-WEIGHT-1M`` is read and calls pause near
the limit; 429/418 wait out ``Retry-After`` (a ban longer than we are willing to wait is a clear error);
transport errors and 5xx back off exponentially.  Every request is counted in
``rest_requests_total{endpoint,status}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ultra_signals.core.backoff import backoff_delay
from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.binance.parse import (
    DepthSnapshot,
    ParseError,
    parse_depth_snapshot,
    parse_rest_kline,
)
from ultra_signals.venues.binance.client import BinanceFuturesClient
from ultra_signals.venues.binance.endpoints import Endpoints

log = logging.getLogger(__name__)

KLINES_MAX_LIMIT = 1500


class RestError(RuntimeError):
    """A REST call failed for good (after retries, or an answer that retrying cannot fix)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


#: ``/fapi/v1/depth`` weight by ``limit``
#: (https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Order-Book).
_DEPTH_WEIGHT = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


def request_weight(endpoint: str, params: dict[str, Any] | None) -> int:
    """What Binance charges this public request (what it will add to ``X-MBX-USED-WEIGHT-1M``), known before it is
    sent so that requests in flight count against the minute: klines by ``limit`` ([1,100) → 1, [100,500) → 2,
    [500,1000] → 5, > 1000 → 10, :meth:`BinanceRest.closed_klines`' page), depth by ``limit``, the all-symbol 24 h
    ticker 40, anything else 1."""
    p = params or {}
    if endpoint.endswith("/klines"):
        limit = int(p.get("limit", 500))
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint.endswith("/depth"):
        return _DEPTH_WEIGHT.get(int(p.get("limit", 500)), 20)
    if endpoint.endswith("/ticker/24hr") and "symbol" not in p:
        return 40
    return 1


def weight_pause_s(used: int, soft_limit: int, now_s: float) -> float:
    """Seconds to wait before the next call: until the next minute once ``used`` reaches the soft limit."""
    if used < soft_limit:
        return 0.0
    return 60.0 - (now_s % 60.0) + 0.05


class BinanceRest:
    def __init__(
        self,
        base_url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        weight_soft_limit: int = 1800,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._m = metrics
        # The one venue client (its own connection pool: market data never queues behind orders); this class
        # keeps the back-fill's retry policy and metrics on top of it.
        self._venue = BinanceFuturesClient(
            Endpoints(self.base_url, ""),
            timeout_s=timeout_s,
            name="binance-market",
            role="market_data",
            metrics=metrics,
        )
        self._max_retries = max_retries
        self._backoff = (backoff_base_s, backoff_max_s)
        self._soft = weight_soft_limit
        self._max_retry_after = max_retry_after_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: Latest ``X-MBX-USED-WEIGHT-1M`` Binance reported (None before the first answer, and after a pause: a new
        #: minute).
        self.used_weight: int | None = None
        #: Weight of the requests sent and not answered yet: Binance has charged it, no header says so yet.
        self._in_flight = 0

    async def aclose(self) -> None:
        await self._venue.aclose()

    async def get(self, endpoint: str, params: dict[str, Any] | None = None, *, background: bool = False) -> Any:
        """GET ``endpoint`` with retries; the decoded JSON, or :class:`RestError`.

        ``background`` (depth snapshots): such a request waits for a new minute rather than take the minute's
        weight past half the soft limit, so the bars the consumer waits for (gap fill, warm-up) keep the other half.
        The weight counted is Binance's last report plus what is in flight: a reconnect's 100 depth snapshots
        (weight 20 each at limit 1000) were all sent before any answer reported them, used the whole soft limit, and
        the gap fill's klines then waited for the next minute with the consumer blocked (60 s of lag, measured with
        ``bench/bench_live.py --outage`` once the fakes charged Binance's real weights; 0.6 s with this).
        """
        soft = self._soft // 2 if background else self._soft
        weight = request_weight(endpoint, params)
        last = "no attempt"
        for attempt in range(self._max_retries + 1):
            # The minute's weight as far as we know it: Binance's last report plus what we sent since and is not
            # answered yet (concurrent snapshots all asked before any answer came back, and overshot the limit).
            for _minute in range(10):  # bounded: each pass waits for a new minute
                used = (self.used_weight or 0) + self._in_flight
                pause = weight_pause_s(used + weight, soft + 1, time.time()) if used else 0.0
                if pause <= 0:
                    break
                log.warning("binance REST weight %d (+%d) > %d: pausing %.1fs", used, weight, soft, pause)
                await self._sleep(pause)
                self.used_weight = None  # a new minute: Binance's count starts again (those woken with us count)
            self._in_flight += weight
            try:
                r = await self._venue.send("GET", endpoint, params)
            except httpx.HTTPError as e:
                self._m.rest_requests.labels(endpoint=endpoint, status="error").inc()
                last = f"{type(e).__name__}: {e}"
                await self._sleep(backoff_delay(attempt, *self._backoff, self._rng))
                continue
            finally:
                self._in_flight -= weight  # answered (its weight is in the header now) or failed
            self._m.rest_requests.labels(endpoint=endpoint, status=str(r.status_code)).inc()
            if "1m" in self._venue.limits.weight:  # X-MBX-USED-WEIGHT-1M, read by the venue client
                self.used_weight = self._venue.limits.weight.pop("1m")
            if r.status_code in (418, 429):
                wait = max(_retry_after(r, 0.0), backoff_delay(attempt, *self._backoff, self._rng))
                what = "IP banned (418)" if r.status_code == 418 else "rate limited (429)"
                if wait > self._max_retry_after:
                    raise RestError(
                        f"binance {endpoint}: {what}, Retry-After {wait:.0f}s exceeds the "
                        f"{self._max_retry_after:.0f}s we wait (binance.rest_max_retry_after_s)",
                        r.status_code,
                    )
                log.warning("binance %s: %s, waiting %.1fs", endpoint, what, wait)
                last = what
                await self._sleep(wait)
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                await self._sleep(backoff_delay(attempt, *self._backoff, self._rng))
                continue
            if r.status_code >= 400:
                raise RestError(
                    f"binance {endpoint} {params or ''}: HTTP {r.status_code}: {r.text[:200]}", r.status_code
                )
            try:
                return r.json()
            except ValueError:
                raise RestError(f"binance {endpoint}: answer is not JSON: {r.text[:200]!r}", r.status_code) from None
        raise RestError(f"binance {endpoint}: failed after {self._max_retries + 1} attempts ({last})")

    async def exchange_info(self) -> Any:
        return await self.get("/fapi/v1/exchangeInfo")

    async def depth(self, symbol: str, limit: int = 1000) -> DepthSnapshot:
        obj = await self.get("/fapi/v1/depth", {"symbol": symbol, "limit": limit}, background=True)
        try:
            return parse_depth_snapshot(obj)
        except ParseError as e:
            raise RestError(f"binance /fapi/v1/depth {symbol}: {e}") from None

    async def closed_klines(
        self, symbol: str, tf: str, start_ms: int, now_ms: int, limit: int = KLINES_MAX_LIMIT
    ) -> list[Kline]:
        """Every *closed* bar opening at or after ``start_ms`` (``close_time < now_ms``), page by page.

        REST also returns the bar still forming; it is left out, so nothing here can be mistaken for closed.
        Each page asks for no more bars than can exist up to ``now_ms`` (the forming one included): Binance
        charges a klines request by its ``limit`` ([1,100) → 1, [100,500) → 2, [500,1000] → 5, > 1000 → 10:
        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data),
        so a gap of a few bars costs weight 1 and a 210-bar warm-up 2, where asking 1,500 every time cost 10 each
        (a whole-market start or reconnect then ran into the 2,400-per-minute weight limit).
        """
        length = tf_ms(tf)
        limit = max(1, min(limit, KLINES_MAX_LIMIT))
        out: list[Kline] = []
        start = start_ms
        for _page in range(10_000):  # bounded: each page advances by at least one bar
            if start + length - 1 >= now_ms:
                break
            page = min(limit, (now_ms - 1 - start) // length + 1)  # bars opening in [start, now_ms)
            params = {
                "symbol": symbol,
                "interval": tf,
                "startTime": start,
                "endTime": now_ms - 1,
                "limit": page,
            }
            rows = await self.get("/fapi/v1/klines", params)
            if not isinstance(rows, list):
                raise RestError(f"binance /fapi/v1/klines {symbol} {tf}: expected a list, got {type(rows).__name__}")
            if not rows:
                break
            try:
                bars = [parse_rest_kline(row, symbol, tf) for row in rows]
            except ParseError as e:
                raise RestError(f"binance /fapi/v1/klines {symbol} {tf}: {e}") from None
            for b in bars:
                if b.open_time >= start and b.close_time < now_ms and (not out or b.open_time > out[-1].open_time):
                    out.append(b)
            nxt = bars[-1].open_time + length
            if nxt <= start or len(rows) < page:
                break
            start = nxt
        return out


def _retry_after(r: httpx.Response, default: float) -> float:
    v = r.headers.get("retry-after")
    if v is not None:
        try:
            return max(0.0, float(v))
        except ValueError:
            pass
    return default
