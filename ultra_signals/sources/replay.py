"""Replay a folder of candle CSV files as a market: warm-up history, then the run window, in event time.

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

Streaming (issue 13: memory flat in history length). Every file is read and checked once when the source is built
(errors surface before the run starts), keeping only what places the run window: each symbol's runs of consecutive
bars, the open times of its coarsest bars and the prices funding events need (and, when the whole history's parsed
blocks fit :data:`KEEP_BYTES`, those blocks, so a short history is parsed once). :meth:`ReplaySource.events` then
reads the files again (or the kept blocks), a chunk of event time at a time: every symbol's bars of that chunk are
aggregated (chunks are cut on boundaries that no bar of any timeframe straddles, so the bars are exactly the
whole-file ones) and interleaved by the order below, as columns: each :class:`~ultra_signals.core.events.Kline` is
built only when the consumer takes it, so a bar nothing keeps is freed as soon as it is handled. Memory is one chunk (and one read block per symbol), whatever
the history length, plus at most :data:`KEEP_BYTES` of kept blocks. Both reads take the files as column blocks
(:func:`~ultra_signals.sources.candles_csv.iter_blocks`, parsed by numpy), never a Python object per row before a
bar is emitted.
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
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ultra_signals.core.events import Funding, Kline, MarketEvent
from ultra_signals.core.timeframes import sort_timeframes, tf_ms
from ultra_signals.features.aggregation import WEEK_MS, WindowColumns, aggregate_columns, window_start
from ultra_signals.sources.base import SourceError, SourceInfo
from ultra_signals.sources.candles_csv import (
    BLOCK_ROWS,
    CandleSeries,
    CandleSet,
    FolderScan,
    Grid,
    iter_blocks,
    scan_folder,
    series_of_blocks,
)

#: Marker file the simulator's export leaves in a folder of generated candles.
SIMULATED_MARKER = "SIMULATED.txt"
#: Events handed over between two yields to the event loop (lets metrics/health tasks run during a replay).
_BATCH = 4096
#: Events per list handed over by :meth:`ReplaySource.batches` (divides ``_BATCH``; few enough that a list's bars
#: are handled before the garbage collector's young generation would keep them: see :meth:`ReplaySource._stream`).
_LIST = 256
#: Base bars (all symbols together) read per chunk of event time: bounds the replay's memory (see the module doc).
CHUNK_BARS = 65_536
#: Bytes of parsed blocks the first read may keep for the run (every symbol together): a history that fits is
#: parsed once instead of twice; a longer one is read again while streaming, so memory stays flat in its length.
KEEP_BYTES = 32 << 20

_N = TypeVar("_N", bound=np.generic)


@dataclass(slots=True)
class _SymbolScan:
    """What the first read of one symbol's file keeps: O(gaps + coarsest bars + funding times), never O(bars)."""

    cs: CandleSet
    base: str
    base_ms: int
    #: (first, last) open time of each run of consecutive base bars, in order.
    segments: list[tuple[int, int]] = field(default_factory=list)
    #: Per funding lookup time: (open time, open) of the first base bar at or after it.
    marks: list[tuple[int, float]] = field(default_factory=list)
    #: The checked blocks of the first read, when the whole history fits :data:`KEEP_BYTES` (else None: the
    #: stream reads the files again).
    kept: list[Grid] | None = None

    def starts(self, tf: str) -> npt.NDArray[np.int64]:
        """Open times of the ``tf`` bars this file yields (what ``aggregate_arrays`` would emit), ascending."""
        length = tf_ms(tf)
        base = self.base_ms
        if length == base:
            parts = [np.arange(a, b + 1, base, dtype=np.int64) for a, b in self.segments]
            return np.concatenate(parts)
        parts = [
            np.arange(window_start(a, length), window_start(b, length) + 1, length, dtype=np.int64)
            for a, b in self.segments
        ]
        ws = np.concatenate(parts)
        if len(ws) > 1:  # two runs of bars inside one window: one bar
            keep = np.empty(len(ws), dtype=bool)
            keep[0] = True
            np.not_equal(ws[1:], ws[:-1], out=keep[1:])
            ws = ws[keep]
        last = self.segments[-1][1]
        if len(ws) and last + base != window_start(last, length) + length:
            ws = ws[:-1]  # the final window's end is not proven (the file may stop mid-window)
        return ws


class _ChunkColumns:
    """One chunk's bars of every symbol and timeframe as columns, to be put in event order and built on demand."""

    __slots__ = ("close", "close_time", "code", "high", "keys", "low", "open", "open_time", "taker", "trades", "volume")

    def __init__(self) -> None:
        self.keys: list[npt.NDArray[np.int64]] = []
        self.code: list[npt.NDArray[np.intp]] = []
        self.open_time: list[npt.NDArray[np.int64]] = []
        self.close_time: list[npt.NDArray[np.int64]] = []
        self.open: list[npt.NDArray[np.float64]] = []
        self.high: list[npt.NDArray[np.float64]] = []
        self.low: list[npt.NDArray[np.float64]] = []
        self.close: list[npt.NDArray[np.float64]] = []
        self.volume: list[npt.NDArray[np.float64]] = []
        self.taker: list[npt.NDArray[np.float64] | None] = []
        self.trades: list[npt.NDArray[np.float64] | None] = []

    def add(
        self,
        g: WindowColumns,
        keep: npt.NDArray[np.intp],
        closes: npt.NDArray[np.int64],
        keys: npt.NDArray[np.int64],
        code: int,
    ) -> None:
        """The rows ``keep`` of one symbol's bars of one timeframe (``code``), with their close times and keys."""
        self.keys.append(keys)
        self.code.append(np.full(len(keep), code, dtype=np.intp))
        self.open_time.append(g.start[keep])
        self.close_time.append(closes)
        self.open.append(g.open[keep])
        self.high.append(g.high[keep])
        self.low.append(g.low[keep])
        self.close.append(g.close[keep])
        self.volume.append(g.volume[keep])
        self.taker.append(None if g.taker is None else g.taker[keep])
        self.trades.append(None if g.trades is None else g.trades[keep])

    def klines(
        self, code_sym: npt.NDArray[np.object_], code_tf: npt.NDArray[np.object_]
    ) -> tuple[Iterator[Kline], npt.NDArray[np.int64]]:
        """The bars in key order, each built as it is taken (Python values, as ``tolist`` gives them), and the
        sorted keys.  Optional fields: NaN marks a bar without one (``None``), as :func:`aggregate_arrays` does."""
        if not self.keys:
            return iter(()), np.empty(0, dtype=np.int64)
        keys = np.concatenate(self.keys)
        order = np.argsort(keys, kind="stable")

        def col(parts: Sequence[npt.NDArray[_N]]) -> npt.NDArray[_N]:
            return np.concatenate(parts)[order]

        code = col(self.code)
        args: list[Iterable[object]] = [
            code_sym[code].tolist(),
            code_tf[code].tolist(),
            col(self.open_time).tolist(),
            col(self.close_time).tolist(),
            *(col(p).tolist() for p in (self.open, self.high, self.low, self.close, self.volume)),
        ]
        if any(t is not None for t in self.taker) or any(t is not None for t in self.trades):
            sizes = [len(k) for k in self.keys]
            tk = col([np.full(n, np.nan) if t is None else t for t, n in zip(self.taker, sizes, strict=True)])
            tr = col([np.full(n, np.nan) if t is None else t for t, n in zip(self.trades, sizes, strict=True)])
            taker: list[float | None] = tk.tolist()
            if np.isnan(tk).any():
                taker = [None if t != t else t for t in tk.tolist()]
            trades: list[int | None] = (
                [None if q != q else int(q) for q in tr.tolist()]
                if np.isnan(tr).any()
                else tr.astype(np.int64).tolist()
            )
            args += [itertools.repeat(True, len(keys)), taker, trades]
        return itertools.starmap(Kline, zip(*args, strict=True)), keys[order]


class ReplaySource:
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
        chunk_bars: int = CHUNK_BARS,
        keep_bytes: int = KEEP_BYTES,
    ) -> None:
        """``duration_ms`` (without ``end_ms``) ends the run that long after its start, wherever the start falls.

        ``chunk_bars``: base bars (all symbols) read per chunk while streaming; any value gives the same events.
        ``keep_bytes``: parsed history kept from the first read for the stream (0: always read twice); any value
        gives the same events.
        """
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

        folder = Path(funding_dir) if funding_dir is not None else root
        funding_error: SourceError | None = None
        try:
            rates = self._funding_rates(folder, chosen)
        except SourceError as e:  # reported after the candle files, as before: their errors come first
            funding_error, rates = e, [([], {}, []) for _ in chosen]
        finest_ms = tf_ms(tfs[0])
        budget = [keep_bytes]
        scans = [
            self._scan(scan.sets[s][bases[s]], bases[s], tfs, rates[i][0], finest_ms, budget)
            for i, s in enumerate(chosen)
        ]
        if budget[0] < 0:  # the history does not fit: every symbol is read again while streaming
            for sc in scans:
                sc.kept = None
        # Per symbol and timeframe, the open times of the bars the files yield (computed one symbol at a time).
        coarsest = tfs[-1]
        coarse = [sc.starts(coarsest) for sc in scans]
        first_open, data_end = None, None
        for sc in scans:
            for tf in tfs:
                st = sc.starts(tf)
                if len(st):
                    a, b = int(st[0]), int(st[-1]) + tf_ms(tf)
                    first_open = a if first_open is None or a < first_open else first_open
                    data_end = b if data_end is None or b > data_end else data_end
        assert first_open is not None and data_end is not None  # _scan refused a symbol without bars
        run_start, warm_from = self._window(chosen, coarse, first_open, coarsest, start_ms, warmup_bars, notices)
        del coarse
        if end_ms is None and duration_ms is not None:
            end_ms = run_start + duration_ms
        run_end = data_end if end_ms is None else end_ms
        if run_end <= run_start:
            raise SourceError(
                f"empty run window: start {run_start} is not before the end {run_end}"
                + (" of the data" if end_ms is None else " (end_ms)")
            )
        n_bars, first_ev, last_ev = self._census(chosen, scans, tfs, warm_from, run_start, run_end, notices)
        if funding_error is not None:
            raise funding_error
        funding = self._funding(chosen, scans, tfs, rates, notices)
        if n_bars and first_ev is not None and last_ev is not None:
            funding = [f for f in funding if first_ev <= f.ts <= last_ev]
        else:
            funding = []
        if not n_bars or last_ev is None or last_ev - 1 < run_start:  # the last bar closes last
            raise SourceError(f"no bars close inside the run window [{run_start}, {run_end}]")
        self._scans = scans
        self._tfs = tfs
        self._warm_from = warm_from
        self._funding_events = sorted(funding, key=lambda f: (f.ts, chosen.index(f.symbol)))
        self._count = n_bars + len(funding)
        self._chunk_ms = self._chunk_span(scans, tfs, chunk_bars)
        # Rows per block read while streaming: one block per symbol is held, so fewer with many symbols.
        self._block_rows = min(BLOCK_ROWS, max(1024, chunk_bars // len(scans)))
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
    def _scan(
        cs: CandleSet, base: str, tfs: list[str], funding_times: list[int], finest_ms: int, budget: list[int]
    ) -> _SymbolScan:
        """Read and check one symbol's file(s) once, keeping only what :class:`_SymbolScan` holds.

        ``budget``: bytes of blocks the symbols may still keep (shared; below 0 once the history does not fit).
        """
        base_ms = tf_ms(base)
        sc = _SymbolScan(cs, base, base_ms)
        kept: list[Grid] | None = [] if budget[0] >= 0 else None
        # Funding marks: the first finest-timeframe bar opening at or after a funding time opens with the first
        # base bar at or after that time rounded up to the finest timeframe.
        need = np.asarray([window_start(t + finest_ms - 1, finest_ms) for t in funding_times], dtype=np.int64)
        nf = len(need)
        fi = 0
        segs = sc.segments
        marks = sc.marks
        seg_first = prev = -(1 << 62)
        n = 0
        for grid in iter_blocks(cs):
            if kept is not None:
                budget[0] -= grid.nbytes
                if budget[0] < 0:
                    kept = None
                else:
                    kept.append(grid)
            ot = grid[:, 0].astype(np.int64)
            # A run of consecutive bars ends before every bar that does not follow the previous one by base_ms.
            before = np.empty_like(ot)
            before[0] = prev
            before[1:] = ot[:-1]
            for j in np.flatnonzero(ot != before + base_ms).tolist():
                if n or j:
                    segs.append((seg_first, int(before[j])))
                seg_first = int(ot[j])
            prev = int(ot[-1])
            n += len(ot)
            if fi < nf and prev >= need[fi]:
                at = np.searchsorted(ot, need[fi:], side="left")  # the first bar at or after each funding time
                found = at[at < len(ot)].tolist()
                marks.extend((int(ot[j]), float(grid[j, 1])) for j in found)
                fi += len(found)
        if not n:
            raise SourceError(f"{', '.join(str(p) for p in cs.paths)}: no bars")
        segs.append((seg_first, prev))
        if not any(len(sc.starts(tf)) for tf in tfs):
            raise SourceError(
                f"{cs.symbol}: {', '.join(p.name for p in cs.paths)} holds no complete {'/'.join(tfs)} bar"
            )
        sc.kept = kept
        return sc

    @staticmethod
    def _funding_rates(folder: Path, chosen: list[str]) -> list[tuple[list[int], dict[int, float], list[Path]]]:
        """Per symbol: funding times (sorted), rates by time and the files, from ``<SYMBOL>[-*]-funding.csv``."""
        if not folder.is_dir():
            raise SourceError(f"funding folder {folder} does not exist or is not a folder")
        out: list[tuple[list[int], dict[int, float], list[Path]]] = []
        for s in chosen:
            paths = sorted({*folder.glob(f"{s}-funding.csv"), *folder.glob(f"{s}-*-funding.csv")})
            rates: dict[int, float] = {}
            for path in paths:
                rates.update(_read_funding(path))
            out.append((sorted(rates), rates, paths))
        return out

    @staticmethod
    def _funding(
        chosen: list[str],
        scans: list[_SymbolScan],
        tfs: list[str],
        rates: list[tuple[list[int], dict[int, float], list[Path]]],
        notices: list[str],
    ) -> list[Funding]:
        """Funding events from ``<SYMBOL>[-*]-funding.csv`` files (see the module doc)."""
        out: list[Funding] = []
        finest = tfs[0]
        length = tf_ms(finest)
        for s, sc, (times, by_time, paths) in zip(chosen, scans, rates, strict=True):
            if not paths:
                continue
            # The finest bar holding a mark must be one the file yields (its final window may be unproven).
            final_ws = None
            if length != sc.base_ms:
                last = sc.segments[-1][1]
                if last + sc.base_ms != window_start(last, length) + length:
                    final_ws = window_start(last, length)
            for (t, nxt), mark in zip(itertools.pairwise(times), sc.marks, strict=False):
                ot, price = mark
                if final_ws is not None and window_start(ot, length) == final_ws:
                    break
                out.append(Funding(s, t, price, by_time[nxt], nxt))
            notices.append(f"funding: {len(times)} rates for {s} from {', '.join(p.name for p in paths)}")
        return out

    @staticmethod
    def _window(
        chosen: list[str],
        coarse: list[npt.NDArray[np.int64]],
        first_open: int,
        coarsest: str,
        start_ms: int | None,
        warmup_bars: int,
        notices: list[str],
    ) -> tuple[int, list[int]]:
        """Run start, and per symbol the open time from which warm-up bars are kept."""
        span = tf_ms(coarsest) - 1  # open time -> close time
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
                    ends.append(int(opens[n - 1]) + span + 1)
            run_start = max(ends) if ends else first_open
        warm_from = []
        for s, opens in zip(chosen, coarse, strict=True):
            before = int(np.searchsorted(opens, run_start - span, side="left"))  # bars with o + span < run_start
            if warmup_bars == 0:
                warm_from.append(run_start)
            elif before >= warmup_bars:
                warm_from.append(int(opens[before - warmup_bars]))
            else:
                warm_from.append(-1)
                if start_ms is not None:
                    notices.append(
                        f"only {before} of {warmup_bars} {coarsest} warm-up bars before the start for {s}; "
                        "indicators may not be warm at the start"
                    )
        return run_start, warm_from

    @staticmethod
    def _census(
        chosen: list[str],
        scans: list[_SymbolScan],
        tfs: list[str],
        warm_from: list[int],
        run_start: int,
        run_end: int,
        notices: list[str],
    ) -> tuple[int, int | None, int | None]:
        """How many bars the run yields, and the event times of the first and last (window cut as in the stream)."""
        total = 0
        first: int | None = None
        last: int | None = None
        for s, sc, lo in zip(chosen, scans, warm_from, strict=True):
            inside = False
            for tf in tfs:
                opens = sc.starts(tf)
                closes = opens + (tf_ms(tf) - 1)
                keep = (opens >= lo) & (closes < run_end)
                kept = closes[keep]
                if len(kept):
                    total += len(kept)
                    a, b = int(kept[0]) + 1, int(kept[-1]) + 1
                    first = a if first is None or a < first else first
                    last = b if last is None or b > last else last
                    inside = inside or bool(kept[-1] >= run_start)
            if not inside:
                notices.append(f"{s} has no bars in the run window")
        return total, first, last

    @staticmethod
    def _chunk_span(scans: list[_SymbolScan], tfs: list[str], chunk_bars: int) -> int | None:
        """Event-time length of a streaming chunk: a multiple of every bar length, so no bar straddles two chunks.

        None (one chunk: the whole history at once) when a weekly bar is involved: weeks open on Mondays, which
        no epoch-aligned chunk boundary follows.
        """
        lengths = {tf_ms(tf) for tf in tfs} | {sc.base_ms for sc in scans}
        if any(x % WEEK_MS == 0 for x in lengths):
            return None
        lcm = math.lcm(*lengths)
        per_symbol = max(1, chunk_bars // max(1, len(scans)))
        want = per_symbol * min(sc.base_ms for sc in scans)
        return lcm * max(1, -(-want // lcm))

    # -- streaming -----------------------------------------------------------------------------------------

    def _stream(self) -> Generator[MarketEvent, None, None]:
        """Every event of the run in order, reading the files a chunk of event time at a time.

        A chunk's bars are ordered as columns and each :class:`Kline` is built only when it is asked for: a bar
        the run has handled is then freed at once (a 1m bar no stage keeps), instead of a whole chunk of them
        outliving the garbage collector's young generations and being walked again by its older ones.
        """
        scans = self._scans
        tfs = self._tfs
        nsym = len(scans)
        ntf = len(tfs)
        span = ntf * nsym
        mult = span + nsym  # keys: event time * mult + (bar: rank + symbol; funding: span + symbol)
        run_end = self._run_end
        chunk = self._chunk_ms
        # Per (symbol, timeframe) code = symbol * ntf + timeframe index: its names, as object columns.
        code_sym = np.array([sc.cs.symbol for sc in scans for _ in tfs], dtype=object)
        code_tf = np.array([tf for _ in scans for tf in tfs], dtype=object)
        readers = [iter_blocks(sc.cs, self._block_rows) if sc.kept is None else iter(sc.kept) for sc in scans]
        # Per symbol: the block being read (None once the files are done), its open times, the next row in it.
        blocks: list[Grid | None] = [None] * nsym
        opens_of: list[npt.NDArray[np.int64]] = [np.empty(0, dtype=np.int64)] * nsym
        at = [0] * nsym

        def refill(i: int) -> None:
            grid = next(readers[i], None)
            blocks[i] = grid
            if grid is not None:
                opens_of[i] = grid[:, 0].astype(np.int64)
                at[i] = 0

        for i in range(nsym):
            refill(i)
        index = {sc.cs.symbol: i for i, sc in enumerate(scans)}
        funding = self._funding_events
        fi = 0
        nf = len(funding)
        try:
            while True:
                live = [int(opens_of[i][at[i]]) for i in range(nsym) if blocks[i] is not None]
                if not live:
                    break
                t = min(live)
                if t > run_end:
                    break  # every bar still to come closes after the run's end
                end = t - t % chunk + chunk if chunk is not None else 1 << 62
                cols = _ChunkColumns()
                for i, sc in enumerate(scans):
                    grid = blocks[i]
                    if grid is None or opens_of[i][at[i]] >= end:
                        continue
                    pieces: list[Grid] = []
                    while grid is not None:
                        stop = int(np.searchsorted(opens_of[i], end, side="left"))
                        pieces.append(grid[at[i] : stop])
                        at[i] = stop
                        if stop < len(grid):
                            break
                        refill(i)  # the block is used up: the next one may hold more bars of this chunk
                        grid = blocks[i]
                        if grid is not None and opens_of[i][0] >= end:
                            break
                    rows = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
                    self._chunk_bars(cols, i, sc, rows, blocks[i] is not None, mult)
                fk: list[int] = []
                fev: list[Funding] = []
                while fi < nf and funding[fi].ts <= end:
                    f = funding[fi]
                    fev.append(f)
                    fk.append(f.ts * mult + span + index[f.symbol])
                    fi += 1
                if not cols.keys and not fev:
                    continue
                klines, keys = cols.klines(code_sym, code_tf)
                # Every key is distinct (a funding key's remainder is at least ``span``, a bar's below it), so the
                # order is the keys' order; each funding event goes where its key falls among the bars'.
                done = 0
                for f, pos in zip(fev, np.searchsorted(keys, fk).tolist(), strict=True):
                    yield from itertools.islice(klines, pos - done)
                    done = pos
                    yield f
                yield from klines
            yield from funding[fi:]  # at the last bar's event time (the list holds none later)
        finally:
            for it in readers:
                if isinstance(it, Generator):
                    it.close()

    def _chunk_bars(self, cols: _ChunkColumns, i: int, sc: _SymbolScan, rows: Grid, more: bool, mult: int) -> None:
        """Add one symbol's bars of every timeframe from one chunk of its base rows to ``cols`` (any order)."""
        series = CandleSeries.from_grid(sc.cs.symbol, sc.base, rows)
        tfs = self._tfs
        ntf = len(tfs)
        nsym = len(self._scans)
        lo = self._warm_from[i]
        run_end = self._run_end
        targets = [tf for tf in tfs if tf != sc.base]
        groups: list[WindowColumns] = []
        if targets:
            groups = aggregate_columns(
                sc.cs.symbol,
                sc.base,
                targets,
                series.open_time,
                series.open,
                series.high,
                series.low,
                series.close,
                series.volume,
                series.taker_buy_volume,
                series.trades,
                final_proven=more,
            )
        if sc.base in tfs:
            trades = series.trades
            groups.append(
                WindowColumns(
                    sc.base,
                    sc.base_ms,
                    series.open_time,
                    series.open,
                    series.high,
                    series.low,
                    series.close,
                    series.volume,
                    series.taker_buy_volume,
                    None if trades is None else trades.astype(np.float64),
                )
            )
        for g in groups:
            k = tfs.index(g.tf)
            closes = g.start + (g.length - 1)
            keep = np.flatnonzero((g.start >= lo) & (closes < run_end))
            if not len(keep):
                continue
            cols.add(
                g,
                keep,
                closes[keep],
                (closes[keep] + 1) * mult + ((ntf - 1 - k) * nsym + i),
                i * ntf + k,
            )

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
        return self._count

    def parsed(self) -> dict[str, tuple[CandleSet, CandleSeries]]:
        """Each symbol's finest candles as the first read parsed them, with the files they came from, where that read
        kept them (a history within ``keep_bytes``; else none).  The report labels the run's candidates with these
        instead of parsing the files once more (issue 13: ~0.1 s of a 30-day replay of three symbols)."""
        return {sc.cs.symbol: (sc.cs, series_of_blocks(sc.cs, sc.kept)) for sc in self._scans if sc.kept is not None}

    def iter_events(self) -> Generator[MarketEvent, None, None]:
        """The same stream as :meth:`events`, synchronously (benchmarks, tools, tests); each call reads afresh."""
        return self._stream()

    def events(self) -> AsyncIterator[MarketEvent]:
        """The run's events one by one, an asynchronous iterator that also offers them in lists (see
        :class:`_ReplayEvents`); each call reads afresh."""
        return _ReplayEvents(self)

    async def _one_by_one(self) -> AsyncGenerator[MarketEvent, None]:
        stream = self._stream()
        try:
            while not self._closed:
                await asyncio.sleep(0)
                # _BATCH events between two yields to the event loop, each taken from the stream only when the
                # runner asks for it (a batch built up front would keep its bars alive: see :meth:`_stream`).
                for n, ev in enumerate(stream, 1):
                    self.received_at = time.time()  # "received" = produced by this source (see the runner's latency)
                    yield ev
                    if n == _BATCH:
                        break
                else:
                    if not self._closed:
                        await asyncio.sleep(0)  # as a last, empty batch would
                    return
        finally:
            stream.close()

    async def _lists(self) -> AsyncIterator[list[MarketEvent]]:
        """:meth:`_one_by_one`'s events in lists of up to :data:`_LIST`, with its yields to the event loop (before
        every :data:`_BATCH` events and once after the last) and its stop at the next :data:`_BATCH` boundary after
        :meth:`aclose`."""
        stream = self._stream()
        try:
            while not self._closed:
                await asyncio.sleep(0)
                for i in range(_BATCH // _LIST):
                    batch = list(itertools.islice(stream, _LIST))
                    if batch:
                        yield batch
                    if len(batch) < _LIST:  # the stream is done
                        if (batch or i) and not self._closed:
                            await asyncio.sleep(0)  # as _one_by_one before it finds its last batch empty
                        return
        finally:
            stream.close()

    async def aclose(self) -> None:
        self._closed = True


class _ReplayEvents:
    """What :meth:`ReplaySource.events` returns: the events one by one, as every source's stream, or through
    :meth:`lists` (:class:`~ultra_signals.sources.base.EventLists`) the same stream in lists; one or the other."""

    __slots__ = ("_gen", "_src")

    def __init__(self, src: ReplaySource) -> None:
        self._src = src
        self._gen: AsyncGenerator[MarketEvent, None] | None = None

    def __aiter__(self) -> _ReplayEvents:
        return self

    def __anext__(self) -> Awaitable[MarketEvent]:
        gen = self._gen
        if gen is None:
            gen = self._gen = self._src._one_by_one()
        return gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()

    def lists(self) -> AsyncIterator[list[MarketEvent]]:
        if self._gen is not None:
            raise RuntimeError("this stream is already being read one event at a time")
        return self._src._lists()


def _read_funding(path: Path) -> dict[int, float]:
    """``funding_time,funding_rate`` rows; a bad row is an error naming the file and line."""
    out: dict[int, float] = {}
    with path.open() as fh:
        header = fh.readline().strip().split(",")
        if header[:2] != ["funding_time", "funding_rate"]:
            raise SourceError(f"{path}:1: expected the header funding_time,funding_rate (got {','.join(header)})")
        for n, line in enumerate(fh, start=2):
            text = line.strip()
            if not text:
                continue
            parts = text.split(",")
            try:
                t, r = int(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                raise SourceError(f"{path}:{n}: expected an epoch-ms time and a rate, got {text!r}") from None
            if not -1.0 < r < 1.0:
                raise SourceError(f"{path}:{n}: funding rate {r} is not a plausible rate")
            out[t] = r
    return out
