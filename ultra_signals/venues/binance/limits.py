"""Request-weight and order-count accounting from Binance's response headers, and the per-process IP ban.

Every answer carries ``X-MBX-USED-WEIGHT-(n)(unit)`` (IP weight used in the current window); every successful
order answer ``X-MBX-ORDER-COUNT-(n)(unit)`` (orders placed by the account in the window).  Binance's USDⓈ-M
limits today: 2400 weight per minute, 300 orders per 10 s and 1200 per minute.  We slow down *before* the limit
(a 429 ignored becomes a 418 ban), which is why the thresholds here are below Binance's.

A 418 bans the *IP*, not a key or a connection (Binance USDⓈ-M "General Info", section LIMITS:
https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info — "IP bans are tracked and
scale in duration for repeat offenders"; "The limits on the API are based on the IPs, not the API keys").  The
market-data client and the trading client keep separate connections but share the IP, so the ban lives here, one
:class:`BanState` per REST host per process: a ban either client sees stops both, and its listeners (the broker)
halt trading at once.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^x-mbx-(used-weight|order-count)-(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(slots=True)
class RateState:
    weight: dict[str, int] = field(default_factory=dict)  # "1m" -> used weight
    orders: dict[str, int] = field(default_factory=dict)  # "10s", "1m" -> orders placed
    weight_soft_limit: int = 2000
    order_soft_limits: dict[str, int] = field(default_factory=lambda: {"10s": 250, "1m": 1000})

    def update(self, headers: Mapping[str, str]) -> None:
        for name, value in headers.items():
            m = _HEADER.match(name.lower())
            if m is None:
                continue
            try:
                n = int(value)
            except ValueError:
                continue
            key = f"{m.group(2)}{m.group(3)}"
            (self.weight if m.group(1) == "used-weight" else self.orders)[key] = n

    def pause_ms(self, now_ms: int, *, order: bool) -> int:
        """How long to wait before the next request so that it stays under the soft limits (0: go)."""
        wait = 0
        if self.weight.get("1m", 0) >= self.weight_soft_limit:
            wait = max(wait, _to_window_end(now_ms, "1m"))
        if order:
            for window, limit in self.order_soft_limits.items():
                if self.orders.get(window, 0) >= limit:
                    wait = max(wait, _to_window_end(now_ms, window))
        return wait

    def window_passed(self, window: str) -> None:
        """Forget a count once its window is over (the next answer brings the fresh one)."""
        self.orders.pop(window, None)
        self.weight.pop(window, None)


def _to_window_end(now_ms: int, window: str) -> int:
    m = re.match(r"^(\d+)([smhd])$", window)
    if m is None:
        return 0
    size = int(m.group(1)) * _UNIT_MS[m.group(2)]
    return size - now_ms % size + 50


BanListener = Callable[[int, str], None]


class BanState:
    """One host's IP ban in this process: until when, who saw it, and who must hear of it.

    Every :class:`~ultra_signals.venues.binance.client.BinanceFuturesClient` of one REST host holds the same
    instance (:func:`ban_state_for`); a 418 seen by any of them bans all of them until ``until_ms`` (local wall
    time).  Listeners are called synchronously with ``(until_ms, detail)`` when a ban starts or grows longer.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.until_ms: int | None = None
        self.detail = ""
        self.seen_by = ""  # the client (name, role) whose request got the 418
        self._listeners: list[BanListener] = []

    def remaining_ms(self, now_ms: int) -> int:
        """How long the ban still lasts (0: not banned; an expired ban is forgotten)."""
        if self.until_ms is None:
            return 0
        if now_ms >= self.until_ms:
            self.until_ms = None
            return 0
        return self.until_ms - now_ms

    def ban(self, until_ms: int, detail: str, seen_by: str) -> None:
        """A 418 said: banned until ``until_ms``.  A shorter ban than the one known does not shorten it."""
        if self.until_ms is not None and until_ms <= self.until_ms:
            return
        self.until_ms, self.detail, self.seen_by = until_ms, detail, seen_by
        log.error("binance IP ban on %s seen by %s until %d: %s", self.host, seen_by, until_ms, detail)
        for listener in list(self._listeners):
            listener(until_ms, detail)

    def subscribe(self, listener: BanListener) -> Callable[[], None]:
        """Hear every ban of this host (a ban already running is told at once); returns the unsubscribe."""
        self._listeners.append(listener)
        if self.until_ms is not None:
            listener(self.until_ms, self.detail)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe


_BANS: dict[str, BanState] = {}
_BANS_LOCK = threading.Lock()


def ban_key(rest_url: str) -> str:
    """The host (and port) a ban applies to: mainnet and testnet are separate services with separate bans."""
    parts = urlsplit(rest_url)
    return (parts.netloc or rest_url).lower()


def ban_state_for(rest_url: str) -> BanState:
    """This process's ban state for the REST host of ``rest_url`` (created on first use)."""
    key = ban_key(rest_url)
    with _BANS_LOCK:
        state = _BANS.get(key)
        if state is None:
            state = _BANS[key] = BanState(key)
        return state


def reset_bans() -> None:
    """Forget every ban of this process (tests: each starts with none)."""
    with _BANS_LOCK:
        _BANS.clear()
