"""Which symbols a runner watches: the USDⓈ-M perpetual universe from ``exchangeInfo``, and this runner's shard.

Pure: the exchange document and the 24 h volumes come in as data, so the selection is testable on a recording and
identical in every runner that sees the same document.

Sharding is rendezvous (highest-random-weight) hashing on the symbol: every runner computes, for each symbol, a
score per shard and takes the symbols whose best score is its own. Nothing is shared or stored, ``n`` runners cover
every symbol exactly once, and going from ``n`` to ``n+1`` runners moves only the symbols the new shard wins —
about ``1/(n+1)`` of them — instead of reshuffling everything as ``hash % n`` would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ultra_signals.core.instruments import SymbolFilters

DAY_MS = 86_400_000
#: Binance gives perpetuals a ``deliveryDate`` in 2100; a date before this horizon means a delisting is scheduled.
DELIVERY_HORIZON_MS = 4_000_000_000_000  # 2096-10-02


class ShardError(ValueError):
    """A shard spec that is not ``i/n`` with ``0 <= i < n``."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"i/n"`` (0-based index ``i`` of ``n`` runners) → Shard; a clear error otherwise."""
        parts = spec.strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ShardError(f"shard {spec!r} must look like i/n, e.g. 0/4 (runner 0 of 4)")
        i, n = int(parts[0]), int(parts[1])
        if n < 1 or not 0 <= i < n:
            raise ShardError(f"shard {spec!r}: need 0 <= i < n and n >= 1")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _weight(symbol: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}:{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(symbol: str, count: int) -> int:
    """The shard (0-based, of ``count``) that owns ``symbol``."""
    return max(range(count), key=lambda i: (_weight(symbol, i), i))


def assign(symbols: Iterable[str], shard: Shard) -> list[str]:
    """The symbols ``shard`` owns, in sorted order."""
    return sorted(s for s in set(symbols) if owner(s, shard.count) == shard.index)


@dataclass(frozen=True, slots=True)
class UniverseRules:
    quote_asset: str = "USDT"
    min_quote_volume: float = 0.0  # 24 h quote volume; 0 keeps every symbol
    min_listing_age_days: float = 0.0


@dataclass(frozen=True, slots=True)
class Universe:
    """``watch``: symbols to follow now. ``no_entries``: among them, those that must take no new entry (too young,
    or a delisting is scheduled); their features still update and an open position is still managed."""

    watch: list[str]
    no_entries: dict[str, str]  # symbol → reason
    left_out: dict[str, str]  # symbol → why it is not watched at all


def select(
    instruments: Mapping[str, SymbolFilters],
    now_ms: int,
    rules: UniverseRules,
    quote_volume_24h: Mapping[str, float] | None = None,
) -> Universe:
    """Every USDⓈ-M perpetual trading against ``rules.quote_asset`` (status TRADING), filtered by volume."""
    watch: list[str] = []
    no_entries: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for name in sorted(instruments):
        f = instruments[name]
        if f.contract_type != "PERPETUAL":
            left_out[name] = f"contract type {f.contract_type or 'unknown'}"
            continue
        if f.quote_asset != rules.quote_asset:
            left_out[name] = f"quote asset {f.quote_asset or 'unknown'}"
            continue
        if not f.trading:
            left_out[name] = f"status {f.status or 'unknown'}"
            continue
        if rules.min_quote_volume > 0:
            vol = (quote_volume_24h or {}).get(name)
            if vol is None or vol < rules.min_quote_volume:
                left_out[name] = (
                    f"24 h quote volume {vol if vol is not None else 'unknown'} < {rules.min_quote_volume:g}"
                )
                continue
        watch.append(name)
        if 0 < f.delivery_ms < DELIVERY_HORIZON_MS:
            no_entries[name] = f"delisting scheduled (deliveryDate {f.delivery_ms})"
        elif rules.min_listing_age_days > 0 and now_ms - f.onboard_ms < rules.min_listing_age_days * DAY_MS:
            age = (now_ms - f.onboard_ms) / DAY_MS
            no_entries[name] = f"listed {age:.1f} days ago (< {rules.min_listing_age_days:g})"
    return Universe(watch, no_entries, left_out)


# -- at runtime: the hourly exchangeInfo refresh ----------------------------------------------------------------
#: The reason code a gated symbol's candidates carry (the filter sits right after the trading state).
NO_ENTRIES = "no_entries"
#: ``select`` leaves a symbol out for these reasons while it still trades: not a delisting.
_STILL_TRADING = ("24 h quote volume",)


@dataclass(frozen=True, slots=True)
class UniverseChange:
    """What one refresh found, for one runner (its watched symbols and the symbols its executor holds).

    ``listed``: tradable, in this runner's shard, not watched — the source subscribes a fixed list, so they are
    picked up at the next restart.  ``closed``: watched, entries stop now (delisting scheduled, …).
    ``reopened``: watched, entries allowed again.  ``delisted``: watched or held, no longer in the universe
    (status not TRADING, or gone from exchangeInfo).
    """

    listed: dict[str, str]
    closed: dict[str, str]
    reopened: list[str]
    delisted: dict[str, str]

    @property
    def empty(self) -> bool:
        return not (self.listed or self.closed or self.reopened or self.delisted)


def diff(
    new: Universe,
    *,
    watched: Iterable[str],
    held: Iterable[str],
    gate: Mapping[str, str],
    shard: Shard | None,
) -> UniverseChange:
    """Compare a fresh selection with what the runner watches, holds and gates now."""
    watched_set, held_set = set(watched), set(held)
    in_universe = set(new.watch)
    mine = set(assign(in_universe, shard)) if shard is not None else in_universe
    listed = {s: "tradable" for s in sorted(mine - watched_set) if s not in new.no_entries}
    delisted: dict[str, str] = {}
    for s in sorted(watched_set | held_set):
        if s in in_universe:
            continue
        why = new.left_out.get(s, "not in exchangeInfo")
        if not why.startswith(_STILL_TRADING):
            delisted[s] = why
    closed = {
        s: why
        for s, why in sorted(new.no_entries.items())
        if s in watched_set and s not in delisted and gate.get(s) != why
    }
    reopened = [s for s in sorted(gate) if s in in_universe and s not in new.no_entries and s not in delisted]
    return UniverseChange(listed, closed, reopened, delisted)


class EntryGate:
    """Symbols that take no new entries right now, and why: read on the decision path (a dict lookup), changed
    only by the refresh.  Exits and open positions are untouched."""

    def __init__(self, blocked: Mapping[str, str] | None = None) -> None:
        self.blocked: dict[str, str] = dict(blocked or {})

    def reason(self, symbol: str) -> str | None:
        return NO_ENTRIES if symbol in self.blocked else None

    def apply(self, change: UniverseChange) -> None:
        for s, why in (*change.closed.items(), *change.delisted.items()):
            self.blocked[s] = why
        for s in change.reopened:
            self.blocked.pop(s, None)


@dataclass(slots=True)
class EntryGateFilter:
    """The engine's filter for the gate (a :class:`~ultra_signals.engine.risk_filters.RiskFilter` by shape)."""

    gate: EntryGate
    name: str = NO_ENTRIES

    def check(self, ctx: Any) -> str | None:
        return self.gate.reason(ctx.candidate.symbol)
