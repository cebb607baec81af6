"""Risk filters: an ordered pipeline of small checks, each passing or naming one reason code.

One concept for every guard (like Freqtrade's protections): a filter is anything with a ``name`` and a
``check(ctx) -> reason | None``.  The first refusal wins, so the order is part of the policy: cheap, state-free
guards first; sniper mode last (see :mod:`ultra_signals.engine.sniper`), because only a candidate that passed
everything else may take a cap slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Candidate
from ultra_signals.core.events import BookDepth, BookTicker, Funding
from ultra_signals.features.store import Features, FeatureStore

# Every reason code a decision can carry, in pipeline order.
REASONS = (
    "paused",
    "trading_halted",
    "trading_reducing",
    "no_entries",  # the symbol's delisting is announced or it left the universe (core/universe.py EntryGate)
    "warmup",
    "stale_data",
    "volatility_band",
    "trend_strength",
    "min_confidence",
    "max_spread",
    "min_depth",
    "near_funding",
    "mtf_required",
    "cooldown",
    "below_budget_threshold",
    "same_direction_cap",
    "hourly_cap",
    "daily_cap",
    "taken",  # another runner of the namespace won the bar (exactly once across runners)
)
SNIPER_REASONS = ("mtf_required", "cooldown", "below_budget_threshold", "same_direction_cap", "hourly_cap", "daily_cap")


@dataclass(slots=True)
class MarketState:
    """Latest microstructure per symbol, kept by the runner from book, depth and funding events."""

    book: dict[str, BookTicker] = field(default_factory=dict)
    depth: dict[str, BookDepth] = field(default_factory=dict)
    funding: dict[str, Funding] = field(default_factory=dict)


@dataclass(slots=True)
class FilterContext:
    candidate: Candidate
    features: Features  # of the candidate's own timeframe
    store: FeatureStore
    market: MarketState
    now_ms: int  # market clock
    not_evaluated: list[str] = field(default_factory=list)  # filters that lacked their data and let it pass


class RiskFilter(Protocol):
    name: str

    def check(self, ctx: FilterContext) -> str | None: ...


@dataclass(slots=True)
class FlagFilter:
    """Refuses while an external flag is up: operator pause, or the executor's HALTED/REDUCING state."""

    name: str
    reason_of: Callable[[], str | None]

    def check(self, ctx: FilterContext) -> str | None:
        return self.reason_of()


@dataclass(slots=True)
class WarmupFilter:
    name: str = "warmup"

    def check(self, ctx: FilterContext) -> str | None:
        return None if ctx.features.warm else "warmup"


@dataclass(slots=True)
class StaleDataFilter:
    """The bar must be recent on the market clock: a decision on an old bar (a feed that lagged) is refused."""

    max_age_ms: int
    name: str = "stale_data"

    def check(self, ctx: FilterContext) -> str | None:
        age = ctx.now_ms - (ctx.features.close_time + 1)
        return "stale_data" if age > self.max_age_ms else None


@dataclass(slots=True)
class VolatilityBandFilter:
    """ATR as % of price inside a band: too quiet gives no edge over fees, too wild gives stops that are noise."""

    min_pct: float
    max_pct: float
    name: str = "volatility_band"

    def check(self, ctx: FilterContext) -> str | None:
        f = ctx.features
        pct = f.atr / f.close * 100.0 if f.close > 0 else 0.0
        return None if self.min_pct <= pct <= self.max_pct else "volatility_band"


@dataclass(slots=True)
class TrendStrengthFilter:
    min_adx: float
    name: str = "trend_strength"

    def check(self, ctx: FilterContext) -> str | None:
        return None if ctx.features.adx >= self.min_adx else "trend_strength"


@dataclass(slots=True)
class MinConfidenceFilter:
    min_confidence: float
    name: str = "min_confidence"

    def check(self, ctx: FilterContext) -> str | None:
        return None if ctx.candidate.confidence >= self.min_confidence else "min_confidence"


@dataclass(slots=True)
class MaxSpreadFilter:
    """Needs a recent book ticker: a stale one is refused; none at all is refused or "not evaluated" (settings)."""

    max_bps: float
    max_age_ms: int
    when_missing: str = "refuse"
    name: str = "max_spread"

    def check(self, ctx: FilterContext) -> str | None:
        b = ctx.market.book.get(ctx.candidate.symbol)
        if b is None and self.when_missing == "not_evaluated":
            ctx.not_evaluated.append(self.name)
            return None
        if b is None or ctx.now_ms - b.ts > self.max_age_ms:
            return "max_spread"
        return None if b.spread_bps <= self.max_bps else "max_spread"


@dataclass(slots=True)
class MinDepthFilter:
    min_usdt: float
    max_age_ms: int
    when_missing: str = "refuse"
    name: str = "min_depth"

    def check(self, ctx: FilterContext) -> str | None:
        d = ctx.market.depth.get(ctx.candidate.symbol)
        if d is None and self.when_missing == "not_evaluated":
            ctx.not_evaluated.append(self.name)
            return None
        if d is None or ctx.now_ms - d.ts > self.max_age_ms:
            return "min_depth"
        return None if min(d.bid_depth_usdt, d.ask_depth_usdt) >= self.min_usdt else "min_depth"


@dataclass(slots=True)
class NearFundingFilter:
    """No new signal within N minutes before a funding time: the funding payment and the crowd around it skew fills."""

    blackout_ms: int
    name: str = "near_funding"

    def check(self, ctx: FilterContext) -> str | None:
        fd = ctx.market.funding.get(ctx.candidate.symbol)
        if fd is None:
            ctx.not_evaluated.append(self.name)
            return None
        until = fd.next_funding_time - ctx.now_ms
        return "near_funding" if 0 <= until <= self.blackout_ms else None


def standard_filters(settings: Settings) -> list[RiskFilter]:
    """The configured risk filters in order (sniper mode is appended by the engine)."""
    f = settings.filters
    age_ms = int(f.max_data_age_s * 1000)
    out: list[RiskFilter] = [
        WarmupFilter(),
        StaleDataFilter(age_ms),
        VolatilityBandFilter(f.min_atr_pct, f.max_atr_pct),
        TrendStrengthFilter(f.min_adx),
        MinConfidenceFilter(f.min_confidence),
    ]
    if f.max_spread_bps is not None:
        out.append(MaxSpreadFilter(f.max_spread_bps, age_ms, f.unavailable_data))
    if f.min_depth_usdt is not None:
        out.append(MinDepthFilter(f.min_depth_usdt, age_ms, f.unavailable_data))
    if f.funding_blackout_min is not None:
        out.append(NearFundingFilter(int(f.funding_blackout_min * 60_000)))
    return out


def first_refusal(filters: Sequence[RiskFilter], ctx: FilterContext) -> str | None:
    for flt in filters:
        reason = flt.check(ctx)
        if reason is not None:
            return reason
    return None
