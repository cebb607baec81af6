"""Resolve ``runtime.symbols: all`` and ``runtime.shard`` into the concrete symbol list of this runner.

Runs once at start, before the source is built (the source subscribes to a fixed list); while a live run lasts,
:class:`UniverseRefresher` reads exchangeInfo again every hour to gate and report listings and delistings. With ``symbols: all`` the
universe comes from Binance's ``exchangeInfo`` (and ``/fapi/v1/ticker/24hr`` when a volume floor is set), selected
by :func:`ultra_signals.core.universe.select`; with a hand-written list the shard applies to that list, so one
settings file can serve a whole fleet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ultra_signals.core.config import Settings
from ultra_signals.core.instruments import ExchangeInfoError, parse_exchange_info
from ultra_signals.core.universe import (
    EntryGate,
    Shard,
    Universe,
    UniverseChange,
    UniverseRules,
    assign,
    diff,
    select,
)
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Resolved:
    symbols: list[str]
    no_entries: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def _volumes(tickers: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(tickers, list):
        for t in tickers:
            if isinstance(t, dict) and isinstance(t.get("symbol"), str):
                try:
                    out[t["symbol"]] = float(t.get("quoteVolume", "nan"))
                except (TypeError, ValueError):
                    continue
    return out


async def fetch_selection(settings: Settings, metrics: Metrics) -> tuple[Universe, int]:
    """The rules' selection from the exchange now, and how many contracts exchangeInfo listed (Binance only).

    Ages are measured on the exchange's clock (``serverTime``), the wall clock only if it does not say.
    """
    from ultra_signals.sources.binance.rest import BinanceRest, RestError
    from ultra_signals.venues.binance.endpoints import endpoints_from_settings

    b = settings.binance
    rt = settings.runtime
    url = endpoints_from_settings(b).rest
    rest = BinanceRest(url, metrics, timeout_s=b.rest_timeout_s, max_retries=b.rest_max_retries)
    try:
        info = await rest.exchange_info()
        vols = _volumes(await rest.get("/fapi/v1/ticker/24hr")) if rt.min_quote_volume > 0 else None
    except RestError as e:
        raise SourceError(f"runtime.symbols: all: could not read the universe from {url}: {e}") from None
    finally:
        await rest.aclose()
    try:
        instruments = parse_exchange_info(info)
    except ExchangeInfoError as e:
        raise SourceError(f"runtime.symbols: all: {e}") from None
    server = info.get("serverTime") if isinstance(info, dict) else None
    now = server if isinstance(server, int) else int(time.time() * 1000)
    rules = UniverseRules(min_quote_volume=rt.min_quote_volume, min_listing_age_days=rt.min_listing_age_days)
    return select(instruments, now, rules, vols), len(instruments)


async def fetch_universe(settings: Settings, metrics: Metrics) -> Resolved:
    """Every USDⓈ-M perpetual the rules keep, from the exchange (Binance source only)."""
    uni, contracts = await fetch_selection(settings, metrics)
    notices = [f"universe: {len(uni.watch)} USDⓈ-M perpetuals (of {contracts} contracts)"]
    return Resolved(uni.watch, dict(uni.no_entries), notices)


class UniverseRefresher:
    """Reads exchangeInfo again every ``interval_s`` of **wall** time while a live run lasts (``symbols: all``).

    Listings and delistings happen on the exchange's calendar, not the market data's: a live runner refreshes on
    the wall clock.  A replay has no exchange to ask and a fixed recorded universe — it does not refresh.  Each
    refresh is diffed (:func:`ultra_signals.core.universe.diff`) against what this runner watches, what its
    executor holds and what it gates, and the change goes to ``on_change`` (the gate, notices, incidents: wired by
    the composition root).  A failed refresh keeps everything as it was, logged and counted
    (``errors{kind="universe_refresh"}``); it never stops the run.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        watched: list[str],
        gate: EntryGate,
        on_change: Callable[[UniverseChange], None],
        held: Callable[[], list[str]] = list,
        interval_s: float | None = None,
        fetch: Callable[[], Awaitable[Universe]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.watched = list(watched)
        self.gate = gate
        self.on_change = on_change
        self.held = held
        self.interval_s = settings.runtime.universe_refresh_s if interval_s is None else interval_s
        self.shard = Shard.parse(settings.runtime.shard) if settings.runtime.shard else None
        self._fetch = fetch
        self.refreshes = 0
        self.failures = 0

    async def _selection(self) -> Universe:
        if self._fetch is not None:
            return await self._fetch()
        return (await fetch_selection(self.settings, self.metrics))[0]

    async def refresh_once(self) -> UniverseChange | None:
        try:
            uni = await self._selection()
        except SourceError as e:
            self.failures += 1
            self.metrics.errors.labels(kind="universe_refresh").inc()
            log.warning("universe refresh failed (gates unchanged): %s", e)
            return None
        self.refreshes += 1
        change = diff(uni, watched=self.watched, held=self.held(), gate=self.gate.blocked, shard=self.shard)
        self.on_change(change)
        return change

    async def run(self) -> None:
        """Every ``interval_s``, until cancelled (the runner cancels it at the end of the run)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh_once()


def apply_shard(resolved: Resolved, shard: str | None) -> Resolved:
    if shard is None:
        return resolved
    sh = Shard.parse(shard)
    mine = assign(resolved.symbols, sh)
    if not mine:
        raise SourceError(f"runtime.shard {sh}: this shard owns none of the {len(resolved.symbols)} symbols")
    notices = [*resolved.notices, f"shard {sh}: {len(mine)} of {len(resolved.symbols)} symbols"]
    no_entries = {s: r for s, r in resolved.no_entries.items() if s in mine}
    return Resolved(mine, no_entries, notices)
