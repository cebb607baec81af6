"""Bounded latency statistics for a 24/7 process: an HDR-style log-bucket histogram.

A list of every tick-to-decision latency grows without end (about 36 KB per symbol-day); this keeps counts in
buckets whose width is 1 % of their value, so memory is bounded by the value range (a few thousand buckets from
1 µs to 1000 s, whatever the run length) and every percentile is within 1 % of the exact one.  ``count``,
``min`` and ``max`` are exact.  A small ring of the most recent samples serves the executor's rolling p95.
"""

from __future__ import annotations

import math
from collections import deque

#: Relative bucket width: a reported percentile is within this fraction of the exact sample percentile.
PRECISION = 0.01
_LOG_BASE = math.log1p(PRECISION)
_FLOOR_MS = 1e-3  # everything at or below 1 µs shares the first bucket


class LatencyHistogram:
    """``append`` like a list; ``percentiles()`` like :func:`numpy.percentile` on all samples, to 1 %."""

    __slots__ = ("_buckets", "_recent", "count", "max", "min", "total")

    def __init__(self, recent: int = 500) -> None:
        self._buckets: dict[int, int] = {}
        self._recent: deque[float] = deque(maxlen=recent)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def append(self, ms: float) -> None:
        if not math.isfinite(ms):
            return
        ms = max(ms, 0.0)
        i = self._index(ms)
        self._buckets[i] = self._buckets.get(i, 0) + 1
        self._recent.append(ms)
        self.count += 1
        self.total += ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    @property
    def last(self) -> float:
        return self._recent[-1] if self._recent else math.nan

    @property
    def buckets(self) -> int:
        """Buckets in use: the memory this holds, whatever the number of samples."""
        return len(self._buckets)

    def recent(self) -> list[float]:
        """The latest samples (at most ``recent`` of them), oldest first."""
        return list(self._recent)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) with numpy's default (linear) rank, read off the buckets."""
        if not self.count:
            return math.nan
        if q <= 0:
            return self.min
        if q >= 1:
            return self.max
        rank = q * (self.count - 1)  # numpy's "linear" method: between sorted[floor] and sorted[ceil]
        lo, hi = self._at(math.floor(rank)), self._at(math.ceil(rank))
        frac = rank - math.floor(rank)
        return min(max(lo + (hi - lo) * frac, self.min), self.max)

    def percentiles(self) -> dict[str, float]:
        """The report's shape: n, p50, p95, p99, max."""
        if not self.count:
            return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
        return {
            "n": self.count,
            "p50": self.quantile(0.50),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self.max,
        }

    # -- plumbing ---------------------------------------------------------------------------------------------
    @staticmethod
    def _index(ms: float) -> int:
        if ms <= _FLOOR_MS:
            return 0
        return 1 + int(math.log(ms / _FLOOR_MS) / _LOG_BASE)

    @staticmethod
    def _value(i: int) -> float:
        """A bucket's representative value: the geometric middle of its bounds (error ≤ half the width)."""
        if i == 0:
            return _FLOOR_MS
        lo = _FLOOR_MS * math.exp((i - 1) * _LOG_BASE)
        return lo * math.sqrt(1.0 + PRECISION)

    def _at(self, k: int) -> float:
        """The k-th smallest sample (0-based), to the bucket's precision; exact at the ends."""
        if k <= 0:
            return self.min
        if k >= self.count - 1:
            return self.max
        seen = 0
        for i in sorted(self._buckets):
            seen += self._buckets[i]
            if seen > k:
                return self._value(i)
        return self.max
