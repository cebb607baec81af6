"""Edge as evidence: expectancy per signal in R, net of fees, slippage and funding, with a bootstrap interval.

R is the trade's risk at entry: ``|entry fill - stop| × quantity``.  A trade's result in R is its net PnL
(fill prices, so slippage is in; fees out; funding in) over that risk.  The mean of those over the closed
trades is the expectancy; a percentile bootstrap (seeded, so the gate is reproducible) gives the interval, and
the count says how much it rests on.  In shadow the trades are the paper broker's what-if fills; from canary on
only the exchange's fills count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Expectancy:
    n: int
    mean_r: float
    low_r: float
    high_r: float
    confidence: float

    def describe(self) -> str:
        if self.n == 0:
            return "no closed trade: expectancy unknown"
        return (
            f"expectancy {self.mean_r:+.3f} R per signal over {self.n} closed trades "
            f"({self.confidence:.0%} bootstrap CI {self.low_r:+.3f} … {self.high_r:+.3f} R), net of fees, "
            f"slippage and funding"
        )


def trade_r(trade: dict[str, Any]) -> float | None:
    """One closed trade's net result in R, or None when it has no usable risk (never filled, stop at entry)."""
    entry, stop, qty, pnl = trade.get("entry_price"), trade.get("stop"), trade.get("entry_qty"), trade.get("pnl")
    if entry is None or stop is None or not qty or pnl is None:
        return None
    risk = abs(float(entry) - float(stop)) * float(qty)
    if risk <= 0 or not math.isfinite(risk):
        return None
    return float(pnl) / risk


def expectancy(rs: Iterable[float], samples: int = 2_000, confidence: float = 0.95, seed: int = 7) -> Expectancy:
    import numpy as np

    arr = np.asarray([r for r in rs if math.isfinite(r)], dtype=float)
    if arr.size == 0:
        return Expectancy(0, math.nan, math.nan, math.nan, confidence)
    rng = np.random.default_rng(seed)
    means = rng.choice(arr, size=(samples, arr.size), replace=True).mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return Expectancy(int(arr.size), float(arr.mean()), float(lo), float(hi), confidence)
