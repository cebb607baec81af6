"""Benchmark candles built from the shared real 1m recording, written to a temporary folder at bench time.

The shared data (``../shared/data/klines``, see its README) holds one real 1m series, ``UNITTESTBTC-1m.csv``
(13,681 bars, about 9.5 days).  A benchmark of N symbols × D days needs N × D × 1440 bars, so each synthetic
symbol walks the real rows in order from its own starting row (symbol i starts ``i × 4,561`` rows in, so the
symbols differ), wrapping around at the end, on a gapless 1m clock.  At each wrap the prices are rescaled so the
series continues where it was (no jump that would look like a crash to the indicators).  The result is real
intraminute price action, only re-timed; nothing is committed (the folder is a temporary one).
"""

from __future__ import annotations

import csv
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / "../shared/data"
SOURCE = SHARED / "klines" / "UNITTESTBTC-1m.csv"
#: 2021-01-01 00:00 UTC: where every synthetic series starts.
T0_MS = 1_609_459_200_000
MINUTE_MS = 60_000


def symbol_names(n: int) -> list[str]:
    """``S000USDT`` … : valid candle file symbols ([A-Z0-9]+), sorted in creation order."""
    return [f"S{i:03d}USDT" for i in range(n)]


def _rows(source: Path) -> list[tuple[float, float, float, float, float]]:
    with source.open(newline="") as fh:
        r = csv.reader(fh)
        next(r)
        return [(float(o), float(h), float(lo), float(c), float(v)) for _, o, h, lo, c, v in r]


def synthesise(out: Path, n_symbols: int, days: int, source: Path = SOURCE) -> list[str]:
    """Write ``<SYMBOL>-1m.csv`` for ``n_symbols`` symbols × ``days`` days into ``out``; returns the symbols."""
    if not source.exists():
        raise SystemExit(f"{source} is missing: the replay benchmark needs the shared data (see its README)")
    rows = _rows(source)
    n = len(rows)
    bars = days * 1440
    out.mkdir(parents=True, exist_ok=True)
    names = symbol_names(n_symbols)
    for i, sym in enumerate(names):
        start = (i * 4561) % n
        scale = 1.0
        prev_close: float | None = None
        with (out / f"{sym}-1m.csv").open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(("open_time", "open", "high", "low", "close", "volume"))
            for k in range(bars):
                j = (start + k) % n
                o, h, lo, c, v = rows[j]
                if k and j == 0 and prev_close is not None:
                    scale = prev_close / o  # wrap: continue from the last close
                w.writerow(
                    (
                        T0_MS + k * MINUTE_MS,
                        f"{o * scale:.10g}",
                        f"{h * scale:.10g}",
                        f"{lo * scale:.10g}",
                        f"{c * scale:.10g}",
                        f"{v:.10g}",
                    )
                )
                prev_close = c * scale
    return names
