"""The replay loader as it was before streaming (issue 13), kept verbatim as the reference the streaming
:class:`~ultra_signals.sources.replay.ReplaySource` is compared against (tests/test_replay.py): it built every
Kline of every timeframe before the run.  Not used by the product.

Its original description follows.

Replay a folder of candle CSV files as a market: warm-up history, then the run window, in event time.

How a folder becomes a stream (each choice is reported in ``info.notices`` when it changes what you asked):

- Symbols: the ones asked for, or (``symbols=None``) every symbol with a candle file, alphabetically.
- Timeframes: each symbol is read from its *finest* file and every configured timeframe is aggregated from
  it (:func:`~ultra_signals.features.aggregation.aggregate_arrays`, the batch form of ``BarAggregator``).
  A coarser file of the same symbol (``XRPUSDT-1h.csv`` beside ``XRPUSDT-5m.csv``) is not used: one source
  of truth per symbol means the 1h bar always agrees with the 5m bars inside it, which a separately
  recorded file need not do (the recorded XRPUSDT-1h.csv indeed matches none of the 5m file's hours).
  A configured timeframe finer than some symbol's finest file is dropped for the whole run (every symbol
  then offers the same timeframes, so multi-timeframe rules mean the same thing for each); a coarser one
  that is not a multiple of the finest file's timeframe is an error.
- Run window: from ``start_ms`` (default: as early as possible while leaving ``warmup_bars`` bars of the
  coarsest timeframe before it for every symbol) to ``end_ms`` inclusive (default: the last bar's close).
  With an explicit start, warm-up is the last ``warmup_bars`` coarsest bars before it (and the finer bars of
  that span); with too little data the warm-up is shortened, with a notice, rather than leaving no run.
- A bar is warm-up when it closes before ``run_start_ms`` (``close_time < run_start_ms``): so the warm-up's
  last bars have event time ``run_start_ms`` itself, and the first run bar the next instant a bar closes.
- Order: event time, then coarsest timeframe first, then symbol order.  Gaps in the files stay gaps; the
  last window of a file is only emitted when its last bar is there (the file may stop mid-hour).

Everything is read, checked and ordered when the source is built (errors surface before the run starts),
and :meth:`ReplaySource.events` iterates a precomputed list: the runner, not the source, is the bottleneck.
A folder written by the simulator (it holds ``SIMULATED.txt``) replays labelled simulated.

Funding: where ``funding_dir`` (default: the candle folder) holds ``<SYMBOL>-funding.csv`` or
``<SYMBOL>-<anything>-funding.csv`` (``funding_time`` epoch ms, ``funding_rate``: the layout of the shared
``funding/`` recordings), the replay emits a :class:`~ultra_signals.core.events.Funding` event at each recorded
funding time carrying the *next* funding time and the rate charged then, as Binance's ``markPrice`` stream
announces them; the mark price is the open of the first bar at or after it.  So ``near_funding`` and the
paper broker's funding charges work on a replay.  Without a file there is no funding event (and no notice
is needed: candle files of spot pairs have no funding).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ultra_signals.core.events import Funding, Kline, MarketEvent, event_time
from ultra_signals.core.timeframes import sort_timeframes, tf_ms
from ultra_signals.features.aggregation import aggregate_arrays
from ultra_signals.sources.base import SourceError, SourceInfo
from ultra_signals.sources.candles_csv import FolderScan, read_set, scan_folder
from ultra_signals.sources.replay import SIMULATED_MARKER, _read_funding

#: Events handed over between two yields to the event loop (lets metrics/health tasks run during a replay).
_BATCH = 4096


class EagerReplaySource:
    """A :class:`~ultra_signals.sources.base.MarketSource` over recorded candles (see the module doc)."""

    def __init__(
        self,
        data_dir: str | Path,
        symbols: Sequence[str] | None,
        timeframes: Sequence[str],
        start_ms: int | None = None,
        end_ms: int | None = None,
        warmup_bars: int = 0,
        duration_ms: int | None = None,
        funding_dir: str | Path | None = None,
    ) -> None:
        """``duration_ms`` (without ``end_ms``) ends the run that long after its start, wherever the start falls."""
        if warmup_bars < 0:
            raise SourceError(f"warmup_bars must be >= 0 (got {warmup_bars})")
        if not timeframes:
            raise SourceError("replay needs at least one timeframe")
        for tf in timeframes:
            try:
                tf_ms(tf)
            except ValueError as e:
                raise SourceError(str(e)) from None
        root = Path(data_dir)
        scan = scan_folder(root)
        notices = list(scan.notices)
        simulated = (root / SIMULATED_MARKER).exists()
        if simulated:
            notices.insert(0, f"{root} holds SIMULATED candles ({SIMULATED_MARKER}): labelled simulated")
        chosen = self._symbols(scan, symbols, root)
        bases = {s: min(scan.sets[s], key=tf_ms) for s in chosen}
        tfs = self._timeframes(list(timeframes), bases, notices)
        for s in chosen:
            unused = [tf for tf in scan.sets[s] if tf != bases[s]]
            for tf in sorted(unused, key=tf_ms):
                names = ", ".join(p.name for p in scan.sets[s][tf].paths)
                notices.append(f"{names} not used: {s} {tf} bars are aggregated from its finest file ({bases[s]})")

        per_symbol = [self._load(scan, s, bases[s], tfs) for s in chosen]
        coarsest = tfs[-1]
        run_start, warm_from = self._window(chosen, per_symbol, coarsest, start_ms, warmup_bars, notices)
        data_end = max(max(k.close_time for k in bars) + 1 for bars in per_symbol)
        if end_ms is None and duration_ms is not None:
            end_ms = run_start + duration_ms
        run_end = data_end if end_ms is None else end_ms
        if run_end <= run_start:
            raise SourceError(
                f"empty run window: start {run_start} is not before the end {run_end}"
                + (" of the data" if end_ms is None else " (end_ms)")
            )
        bars = self._merge(chosen, per_symbol, tfs, warm_from, run_start, run_end, notices)
        funding = self._funding(Path(funding_dir) if funding_dir is not None else root, chosen, per_symbol, notices)
        self._events: list[MarketEvent] = list(bars)
        if funding and bars:
            first, last = event_time(bars[0]), event_time(bars[-1])
            funding = [f for f in funding if first <= f.ts <= last]
            # Stable: at equal event time the bars (closing at that instant) come before the funding event.
            self._events = sorted([*bars, *funding], key=event_time)
        if not bars or bars[-1].close_time < run_start:  # sorted: the last bar closes last
            raise SourceError(f"no bars close inside the run window [{run_start}, {run_end}]")
        self._run_start = run_start
        self._run_end = run_end
        self._closed = False
        #: Wall time (s) this source produced the event last yielded: the start of tick-to-decision.
        self.received_at: float | None = None
        self._info = SourceInfo(
            name="replay",
            simulated=simulated,
            symbols=chosen,
            timeframes=tfs,
            historical=True,
            notices=notices,
        )

    # -- construction steps ------------------------------------------------------------------------------

    @staticmethod
    def _symbols(scan: FolderScan, symbols: Sequence[str] | None, root: Path) -> list[str]:
        found = sorted(scan.sets)
        if not found:
            raise SourceError(f"{root}: no <SYMBOL>-<timeframe>.csv candle files")
        if symbols is None:
            return found
        missing = [s for s in symbols if s not in scan.sets]
        if missing:
            raise SourceError(f"{root}: no candle file for {', '.join(missing)} (found: {', '.join(found)})")
        return list(dict.fromkeys(symbols))

    @staticmethod
    def _timeframes(wanted: list[str], bases: dict[str, str], notices: list[str]) -> list[str]:
        kept = []
        for tf in sort_timeframes(wanted):
            length = tf_ms(tf)
            finer_for = [s for s, b in bases.items() if length < tf_ms(b)]
            if finer_for:
                detail = ", ".join(f"{s} {bases[s]}" for s in finer_for)
                notices.append(f"{tf} dropped: finer than the finest candle file ({detail})")
                continue
            for s, b in bases.items():
                if length % tf_ms(b):
                    raise SourceError(
                        f"timeframe {tf} cannot be built from {s}-{b} candles: {tf} is not a multiple of {b}"
                    )
            kept.append(tf)
        if not kept:
            raise SourceError(f"none of the timeframes {wanted} can be replayed from these files")
        return kept

    @staticmethod
    def _load(scan: FolderScan, symbol: str, base: str, tfs: list[str]) -> list[Kline]:
        """One symbol's bars of every configured timeframe (any order; :meth:`_merge` orders them)."""
        cs = scan.sets[symbol][base]
        series = read_set(cs)
        if not len(series):
            raise SourceError(f"{', '.join(str(p) for p in cs.paths)}: no bars")
        targets = [tf for tf in tfs if tf != base]
        out: list[Kline] = []
        if targets:
            out = aggregate_arrays(
                symbol,
                base,
                targets,
                series.open_time,
                series.open,
                series.high,
                series.low,
                series.close,
                series.volume,
                series.taker_buy_volume,
                series.trades,
            )
        if base in tfs:
            out.extend(series.klines())  # base bars are only built when they are emitted
        if not out:
            raise SourceError(f"{symbol}: {', '.join(p.name for p in cs.paths)} holds no complete {'/'.join(tfs)} bar")
        return out

    @staticmethod
    def _funding(folder: Path, chosen: list[str], per_symbol: list[list[Kline]], notices: list[str]) -> list[Funding]:
        """Funding events from ``<SYMBOL>[-*]-funding.csv`` files (see the module doc)."""
        if not folder.is_dir():
            raise SourceError(f"funding folder {folder} does not exist or is not a folder")
        out: list[Funding] = []
        for s, bars in zip(chosen, per_symbol, strict=True):
            paths = sorted({*folder.glob(f"{s}-funding.csv"), *folder.glob(f"{s}-*-funding.csv")})
            if not paths:
                continue
            rates: dict[int, float] = {}
            for path in paths:
                rates.update(_read_funding(path))
            times = sorted(rates)
            finest = min((k.close_time - k.open_time for k in bars), default=0)
            base = sorted((k.open_time, k.open) for k in bars if k.close_time - k.open_time == finest)
            opens = np.fromiter((o for o, _ in base), np.int64, len(base))
            for t, nxt in itertools.pairwise(times):
                i = int(np.searchsorted(opens, t, side="left"))
                if i >= len(base):
                    break
                out.append(Funding(s, t, base[i][1], rates[nxt], nxt))
            notices.append(f"funding: {len(times)} rates for {s} from {', '.join(p.name for p in paths)}")
        return out

    @staticmethod
    def _window(
        chosen: list[str],
        per_symbol: list[list[Kline]],
        coarsest: str,
        start_ms: int | None,
        warmup_bars: int,
        notices: list[str],
    ) -> tuple[int, list[int]]:
        """Run start, and per symbol the open time from which warm-up bars are kept."""
        coarse = [sorted(k.open_time for k in bars if k.timeframe == coarsest) for bars in per_symbol]
        span = tf_ms(coarsest) - 1  # open time -> close time
        first_open = min(min(k.open_time for k in bars) for bars in per_symbol)
        if start_ms is not None:
            run_start = start_ms
        elif warmup_bars == 0:
            run_start = first_open
        else:
            ends = []
            for s, opens in zip(chosen, coarse, strict=True):
                n = warmup_bars if len(opens) > warmup_bars else len(opens) // 2
                if n < warmup_bars:
                    notices.append(
                        f"warm-up shortened for {s}: {n} {coarsest} bars instead of {warmup_bars} "
                        f"(the data holds {len(opens)}); indicators may not be warm at the start"
                    )
                if n:
                    ends.append(opens[n - 1] + span + 1)
            run_start = max(ends) if ends else first_open
        warm_from = []
        for s, opens in zip(chosen, coarse, strict=True):
            before = sum(1 for o in opens if o + span < run_start)
            if warmup_bars == 0:
                warm_from.append(run_start)
            elif before >= warmup_bars:
                warm_from.append(opens[before - warmup_bars])
            else:
                warm_from.append(-1)
                if start_ms is not None:
                    notices.append(
                        f"only {before} of {warmup_bars} {coarsest} warm-up bars before the start for {s}; "
                        "indicators may not be warm at the start"
                    )
        return run_start, warm_from

    @staticmethod
    def _merge(
        chosen: list[str],
        per_symbol: list[list[Kline]],
        tfs: list[str],
        warm_from: list[int],
        run_start: int,
        run_end: int,
        notices: list[str],
    ) -> list[Kline]:
        """Cut each symbol to its window, then interleave: event time, coarsest first, symbol order."""
        nsym = len(chosen)
        # One integer sort key per bar: (event time, timeframe rank coarsest first, symbol index).
        rank = {tf: (len(tfs) - 1 - i) * nsym for i, tf in enumerate(tfs)}
        span = len(tfs) * nsym
        bars: list[Kline] = []
        keys: list[npt.NDArray[np.int64]] = []
        for i, (s, ks, lo) in enumerate(zip(chosen, per_symbol, warm_from, strict=True)):
            n = len(ks)
            opens = np.fromiter((k.open_time for k in ks), np.int64, n)
            closes = np.fromiter((k.close_time for k in ks), np.int64, n)
            ranks = np.fromiter((rank[k.timeframe] for k in ks), np.int64, n)
            keep = (opens >= lo) & (closes < run_end)
            if not bool(np.any(keep & (closes >= run_start))):
                notices.append(f"{s} has no bars in the run window")
            idx = np.flatnonzero(keep)
            bars.extend([ks[j] for j in idx.tolist()])
            keys.append(((closes + 1) * span + ranks + i)[idx])
        order = np.argsort(np.concatenate(keys), kind="stable").tolist() if keys else []
        return [bars[j] for j in order]

    # -- MarketSource --------------------------------------------------------------------------------------

    @property
    def info(self) -> SourceInfo:
        return self._info

    async def open(self) -> None:
        return None  # the window is fixed by the files / settings: nothing to learn

    @property
    def run_start_ms(self) -> int:
        return self._run_start

    @property
    def run_end_ms(self) -> int:
        return self._run_end

    def __len__(self) -> int:
        return len(self._events)

    def iter_events(self) -> Iterator[MarketEvent]:
        """The same stream as :meth:`events`, synchronously (benchmarks, tools, tests)."""
        return iter(self._events)

    async def events(self) -> AsyncIterator[MarketEvent]:
        events = self._events
        for lo in range(0, len(events), _BATCH):
            if self._closed:
                return
            await asyncio.sleep(0)
            for ev in events[lo : lo + _BATCH]:
                self.received_at = time.time()  # "received" = produced by this source (see the runner's latency)
                yield ev

    async def aclose(self) -> None:
        self._closed = True
