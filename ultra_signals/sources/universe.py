"""Resolve ``runtime.symbols: all`` and ``runtime.shard`` into the concrete symbol list of this runner.

Runs once at start, before the source is built (the source subscribes to a fixed list). With ``symbols: all`` the
universe comes from Binance's ``exchangeInfo`` (and ``/fapi/v1/ticker/24hr`` when a volume floor is set), selected
by :func:`ultra_signals.core.universe.select`; with a hand-written list the shard applies to that list, so one
settings file can serve a whole fleet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ultra_signals.core.config import Settings
from ultra_signals.core.instruments import ExchangeInfoError, parse_exchange_info
from ultra_signals.core.universe import Shard, UniverseRules, assign, select
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceError


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


async def fetch_universe(settings: Settings, metrics: Metrics) -> Resolved:
    """Every USDⓈ-M perpetual the rules keep, from the exchange (Binance source only)."""
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
    uni = select(instruments, now, rules, vols)
    notices = [f"universe: {len(uni.watch)} USDⓈ-M perpetuals (of {len(instruments)} contracts)"]
    return Resolved(uni.watch, dict(uni.no_entries), notices)


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
