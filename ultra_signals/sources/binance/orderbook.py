"""A local order book kept exactly by Binance's documented USDⓈ-M procedure.

1. buffer diffs from the stream; 2. take a REST snapshot; 3. drop diffs with ``u < lastUpdateId``;
4. the first applied diff must bracket the snapshot (``U <= lastUpdateId <= u``; we also accept the diff whose
``pu`` equals ``lastUpdateId``, which continues the snapshot exactly); 5. each next diff's ``pu`` must equal
the previous ``u``, otherwise start again from a new snapshot.  Quantities are absolute; zero
removes a level (removing an unknown level is normal).

One extension, for the planned reconnect that overlaps two connections: a diff whose ``u`` is not after the
last applied one was already applied (the same update on the other connection), so it is skipped, not
treated as a break.  Pure state, no I/O: the source fetches snapshots and counts resyncs.
"""

from __future__ import annotations

import heapq
from collections import deque
from enum import Enum

from ultra_signals.core.events import BookDepth
from ultra_signals.sources.binance.parse import DepthDiff, DepthSnapshot


class BookState(Enum):
    WAITING_SNAPSHOT = "waiting_snapshot"  # diffs are buffered until a snapshot arrives
    SYNCING = "syncing"  # have a snapshot, waiting for the diff that brackets it
    LIVE = "live"


class Outcome(Enum):
    APPLIED = "applied"
    BUFFERED = "buffered"
    STALE = "stale"  # older than the book: dropped
    RESYNC = "resync"  # the chain broke (or the snapshot is too old): fetch a new snapshot


class OrderBook:
    __slots__ = ("_buffer", "asks", "bids", "last_update_id", "max_levels", "state", "symbol")

    def __init__(self, symbol: str, max_buffer: int = 5000, max_levels: int = 1000) -> None:
        self.symbol = symbol
        # Levels kept per side (the snapshot's depth): the diff stream also moves levels far from the touch,
        # and keeping every price ever seen grew the book without bound (4,973 levels in 6 minutes).
        self.max_levels = max_levels
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_update_id: int | None = None  # ``u`` of the last applied diff (or the snapshot's id)
        self.state = BookState.WAITING_SNAPSHOT
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)

    # -- stream side ------------------------------------------------------------------------------------
    def on_diff(self, d: DepthDiff) -> Outcome:
        if self.state is BookState.WAITING_SNAPSHOT:
            self._buffer.append(d)
            return Outcome.BUFFERED
        last = self.last_update_id
        assert last is not None
        if self.state is BookState.SYNCING:
            return self._first(d, last)
        if d.final_id <= last:
            return Outcome.STALE
        if d.prev_final_id != last:
            self._break(d)
            return Outcome.RESYNC
        self._apply(d)
        return Outcome.APPLIED

    def _first(self, d: DepthDiff, snapshot_id: int) -> Outcome:
        if d.final_id < snapshot_id:
            return Outcome.STALE
        # The documented bracket U <= lastUpdateId <= u, or a diff that starts exactly where the snapshot ends
        # (pu == lastUpdateId: USDⓈ-M ids are not contiguous, so U can be above an id that links).
        if d.first_id <= snapshot_id or d.prev_final_id == snapshot_id:
            self._apply(d)
            self.state = BookState.LIVE
            return Outcome.APPLIED
        # The snapshot is older than the stream: updates between them are unknown.
        self._break(d)
        return Outcome.RESYNC

    def _break(self, d: DepthDiff) -> None:
        self.state = BookState.WAITING_SNAPSHOT
        self._buffer.clear()
        self._buffer.append(d)

    # -- snapshot side ----------------------------------------------------------------------------------
    def need_snapshot(self) -> bool:
        return self.state is BookState.WAITING_SNAPSHOT

    def apply_snapshot(self, snap: DepthSnapshot) -> Outcome:
        """Load a snapshot and replay the buffered diffs on it; RESYNC if they do not link."""
        self.bids = {p: q for p, q in snap.bids if q > 0}
        self.asks = {p: q for p, q in snap.asks if q > 0}
        self.last_update_id = snap.last_update_id
        self.state = BookState.SYNCING
        pending = list(self._buffer)
        self._buffer.clear()
        out = Outcome.APPLIED
        for i, d in enumerate(pending):
            r = self.on_diff(d)
            if r is Outcome.RESYNC:
                self._buffer.extend(pending[i + 1 :])
                return Outcome.RESYNC
            out = r
        return out if self.state is BookState.LIVE else Outcome.BUFFERED

    def _apply(self, d: DepthDiff) -> None:
        for side, levels in ((self.bids, d.bids), (self.asks, d.asks)):
            for p, q in levels:
                if q == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.last_update_id = d.final_id
        # Amortized: prune once a side holds a quarter more than the tracked depth.
        limit = self.max_levels + max(self.max_levels // 4, 1)
        if len(self.bids) > limit:
            self.bids = dict(heapq.nlargest(self.max_levels, self.bids.items()))
        if len(self.asks) > limit:
            self.asks = dict(heapq.nsmallest(self.max_levels, self.asks.items()))

    # -- features ---------------------------------------------------------------------------------------
    def best(self) -> tuple[float, float] | None:
        if not self.bids or not self.asks:
            return None
        return max(self.bids), min(self.asks)

    def summary(self, ts: int, within_bps: float, levels: int) -> BookDepth | None:
        """Depth within ``within_bps`` of the mid (USDT, both sides) and top-``levels`` quantity imbalance."""
        if self.state is not BookState.LIVE:
            return None
        best = self.best()
        if best is None or best[0] >= best[1]:
            return None
        mid = (best[0] + best[1]) / 2.0
        lo, hi = mid * (1 - within_bps / 10_000.0), mid * (1 + within_bps / 10_000.0)
        bid_usdt = sum(p * q for p, q in self.bids.items() if p >= lo)
        ask_usdt = sum(p * q for p, q in self.asks.items() if p <= hi)
        qb = sum(q for _, q in heapq.nlargest(levels, self.bids.items()))
        qa = sum(q for _, q in heapq.nsmallest(levels, self.asks.items()))
        imbalance = (qb - qa) / (qb + qa) if qb + qa > 0 else 0.0
        return BookDepth(self.symbol, ts, bid_usdt, ask_usdt, imbalance, within_bps)
