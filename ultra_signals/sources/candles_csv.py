"""Candle CSV files: find them in a folder, read them strictly, write them.

Two layouts are read, told apart by their column count:

(a) ours (and ``../shared/data/klines``): ``open_time,open,high,low,close,volume``, open_time in epoch ms,
    with a header row;
(b) Binance's public kline dumps (data.binance.vision): 12 columns ``open_time, open, high, low, close,
    volume, close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``, with or
    without a header row.  Dumps from 2025 on give times in microseconds; they are converted to ms.

File names are ``<SYMBOL>-<timeframe>.csv``; Binance's dated names ``<SYMBOL>-<timeframe>-YYYY-MM.csv`` and
``...-YYYY-MM-DD.csv`` are read too and concatenated in date order.  Anything else with a dash after the
symbol (``XRPUSDT-mark-1h.csv`` holds mark prices, not trades of XRPUSDT) is skipped with a notice: reading it
as candles would put a different price series under the symbol's name.

Why strict: a replay decides on every bar, so a silently mis-parsed row (swapped columns, a bar out of
order, a file of 1m bars named -5m) would produce signals from data that never existed.  Every rejected row
raises :class:`SourceError` naming the file, the line and what is wrong.

Speed (issue 13): files are read in blocks of at most :data:`BLOCK_ROWS` lines, each converted by numpy's text
reader (``np.loadtxt``: the same ``PyOS_string_to_double`` as ``float()``, so bit-identical values, and strict
integers) and checked with array comparisons; about a quarter of the CPU of a row-by-row parse, and memory stays
one block whatever the file's length.  Whenever numpy refuses a block or a check flags a row, the file is read
again row by row (:func:`_parse`, the reference) from where the bulk reader stopped, so a rejected file gets the
row parser's message (file:line and wording) and anything numpy is stricter about than ``float()``/``int()``
(underscores, quotes, non-ASCII digits) is still read.  Columns stay numpy arrays so a replay builds Kline objects
only for bars it emits (bench/bench_sources.py).
"""

from __future__ import annotations

import collections
import csv
import itertools
import logging
import math
import os
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO

import numpy as np
import numpy.typing as npt

from ultra_signals.core.events import Kline
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.features.aggregation import WEEK_MS, WEEK_OFFSET_MS, window_start
from ultra_signals.sources.base import SourceError

HEADER = ("open_time", "open", "high", "low", "close", "volume")
BINANCE_HEADER = (
    *HEADER,
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
#: Open times above this are microseconds (as ms it would be the year 5138).
_MICROS_ABOVE = 10**14
_INF = math.inf
#: Lines per block of the bulk reader: numpy's per-call cost is already negligible at 1,024, and a streaming replay
#: holds one block per symbol (4,096 rows x 8 columns = 256 KiB).
BLOCK_ROWS = 4096
#: A checked block: one row per bar, columns ``open_time, open, high, low, close, volume`` (+ ``taker_buy_volume,
#: count`` for Binance dumps), all float64 (open times < 2**53 and trade counts are exact in it).
Grid = npt.NDArray[np.float64]
#: Lines the csv module reads as no row at all (a blank line carries no bar); numpy's reader skips them too.
_BLANK = frozenset(("\n", "\r\n", "\r"))
#: numpy's integer reader is strict (no "1.0", no "1e3"), like ``int()``; floats are read as ``float()`` reads them.
_DTYPE6 = np.dtype([(name, np.int64 if name == "open_time" else np.float64) for name in HEADER])
_DTYPE12 = np.dtype(
    [(name, np.int64 if name in ("open_time", "close_time", "count") else np.float64) for name in BINANCE_HEADER]
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<tf>[^-]+)(?P<date>-\d{4}-\d{2}(?:-\d{2})?)?\.csv$")


@dataclass(slots=True)
class CandleSet:
    """The file(s) holding one symbol's candles of one timeframe, in reading order."""

    symbol: str
    timeframe: str
    paths: list[Path] = field(default_factory=list)


@dataclass(slots=True)
class FolderScan:
    """What a folder holds: candle sets by symbol then timeframe, and notices about files not used."""

    sets: dict[str, dict[str, CandleSet]]
    notices: list[str]


def scan_folder(folder: str | Path) -> FolderScan:
    """Find the candle files of a folder (not recursive); say why any ``.csv`` is left out."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"candle folder {root} does not exist or is not a folder")
    sets: dict[str, dict[str, CandleSet]] = {}
    notices: list[str] = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() != ".csv" or not path.is_file():
            continue
        m = _NAME.match(path.name)
        tf = m.group("tf") if m else ""
        try:
            tf_ms(tf)
        except ValueError:
            m = None
        if m is None:
            notices.append(
                f"{path.name} skipped: not a <SYMBOL>-<timeframe>.csv candle file "
                "(a suffix such as -mark- means another price series)"
            )
            continue
        by_tf = sets.setdefault(m.group("symbol"), {})
        by_tf.setdefault(tf, CandleSet(m.group("symbol"), tf)).paths.append(path)
    for by_tf in sets.values():
        for cs in by_tf.values():
            plain = [p for p in cs.paths if p.stem.count("-") == 1]
            if plain and len(cs.paths) > 1:
                # The undated file and dated dumps would hold the same bars twice.
                raise SourceError(
                    f"{root}: both {plain[0].name} and dated files for {cs.symbol} {cs.timeframe}; keep one kind"
                )
    return FolderScan(sets, notices)


def _num(text: str, what: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SourceError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SourceError(f"{where}: {what} {text!r} is not a finite number")
    return v


def _int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SourceError(f"{where}: {what} {text!r} is not a whole number") from None


@dataclass(slots=True)
class CandleSeries:
    """One symbol's bars of one timeframe as numpy columns: cheap to aggregate, Klines only on demand.

    ``taker_buy_volume`` and ``trades`` are None for layout (a) files, which do not carry them.
    """

    symbol: str
    timeframe: str
    open_time: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    taker_buy_volume: npt.NDArray[np.float64] | None = None
    trades: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.open_time)

    @classmethod
    def from_grid(cls, symbol: str, timeframe: str, grid: Grid) -> CandleSeries:
        """Columns of a block (or blocks concatenated) as :func:`iter_blocks` gives them."""
        extra = grid.shape[1] == 8
        return cls(
            symbol,
            timeframe,
            grid[:, 0].astype(np.int64),
            grid[:, 1].copy(),
            grid[:, 2].copy(),
            grid[:, 3].copy(),
            grid[:, 4].copy(),
            grid[:, 5].copy(),
            grid[:, 6].copy() if extra else None,
            grid[:, 7].astype(np.int64) if extra else None,
        )

    def klines(self) -> list[Kline]:
        # starmap over columns: the cheapest way CPython has to build many frozen dataclasses.
        n = len(self.open_time)
        ot = self.open_time.tolist()
        cols: list[Iterable[object]] = [
            itertools.repeat(self.symbol, n),
            itertools.repeat(self.timeframe, n),
            ot,
            (self.open_time + (tf_ms(self.timeframe) - 1)).tolist(),
            *(a.tolist() for a in (self.open, self.high, self.low, self.close, self.volume)),
        ]
        if self.taker_buy_volume is not None and self.trades is not None:
            cols += [itertools.repeat(True, n), self.taker_buy_volume.tolist(), self.trades.tolist()]
        return list(itertools.starmap(Kline, zip(*cols, strict=True)))


def read_candles(path: str | Path, symbol: str, timeframe: str, *, after_ms: int = -1) -> list[Kline]:
    """Every bar of one file, checked.  ``after_ms``: open time the first bar must exceed (file chaining)."""
    grids = list(_file_blocks(Path(path), timeframe, after_ms, BLOCK_ROWS, bulk=True))
    return CandleSeries.from_grid(symbol, timeframe, _concat(grids)).klines()


def read_set(cs: CandleSet) -> CandleSeries:
    """All bars of a candle set as columns, its files chained in date order (each continues the previous)."""
    return series_of_blocks(cs, list(iter_blocks(cs)))


def series_of_blocks(cs: CandleSet, blocks: list[Grid]) -> CandleSeries:
    """The columns of a candle set's :func:`iter_blocks` blocks, all of them in order (what :func:`read_set` gives)."""
    return CandleSeries.from_grid(cs.symbol, cs.timeframe, _concat(blocks))


def iter_blocks(cs: CandleSet, rows: int = BLOCK_ROWS, *, bulk: bool = True) -> Generator[Grid, None, None]:
    """The checked bars of a candle set as :data:`Grid` blocks of 1 to ``rows`` rows, its files chained in date order.

    The streaming replay reads a file this way twice (scan, then run), holding no more than a block of it per
    symbol (issue 13).  ``bulk=False`` reads row by row only: the reference the bulk reader is tested against.
    """
    if rows < 1:
        raise ValueError(f"rows per block must be >= 1 (got {rows})")
    last = -1
    width = 0
    for path in cs.paths:
        first = True
        grid: Grid | None = None
        for grid in _file_blocks(path, cs.timeframe, last, rows, bulk=bulk):
            if first:
                first = False
                if width and width != grid.shape[1]:
                    raise SourceError(f"{path}: layout differs from {cs.paths[0].name} (6 versus 12 columns)")
                width = grid.shape[1]
            yield grid
        if grid is not None:
            last = int(grid[-1, 0])


def iter_set(cs: CandleSet) -> Generator[tuple[float, ...], None, None]:
    """The checked rows of a candle set one at a time (for callers that want rows, not columns).

    Rows are ``(open_time, open, high, low, close, volume)``, plus ``(taker_buy_volume, count)`` for Binance dumps.
    """
    for grid in iter_blocks(cs):
        for row in grid.tolist():
            if len(row) == 8:
                yield (int(row[0]), *row[1:7], int(row[7]))
            else:
                yield (int(row[0]), *row[1:])


def _concat(grids: list[Grid]) -> Grid:
    if not grids:
        return np.empty((0, 6), dtype=np.float64)
    return grids[0] if len(grids) == 1 else np.concatenate(grids)


def _file_blocks(p: Path, timeframe: str, after_ms: int, rows: int, *, bulk: bool) -> Generator[Grid, None, None]:
    """One file's checked bars in blocks: numpy's reader while every check passes, the row parser from there on."""
    done = 0
    if bulk:
        fh: TextIO | None
        try:
            fh = p.open(newline="", encoding="utf-8-sig")
        except OSError:
            fh = None  # the row parser reports it
        if fh is not None:
            with fh:
                for grid in _bulk_blocks(fh, timeframe, after_ms, rows):
                    if grid is None:
                        break
                    yield grid
                    done += len(grid)
                else:
                    return
            log.debug("%s: bulk read stopped after %d rows; reading on row by row", p, done)
    rest = _iter_rows(p, timeframe, after_ms)
    try:
        collections.deque(itertools.islice(rest, done), maxlen=0)  # rows the bulk reader already gave
        while batch := list(itertools.islice(rest, rows)):
            grid = np.array(batch, dtype=np.float64).reshape(len(batch), len(batch[0]))
            del batch
            yield grid
    finally:
        rest.close()


def _bulk_blocks(fh: Iterator[str], timeframe: str, after_ms: int, rows: int) -> Iterator[Grid | None]:
    """Checked blocks read by numpy; None (then nothing more) at the first block it or a check is unsure of.

    Every check of :func:`_parse` is here as an array operation; a flagged block is not reported from here but
    handed back to the row parser, which finds the row and words the message.
    """
    length = tf_ms(timeframe)
    weekly = length % WEEK_MS == 0
    last = after_ms
    dtype: np.dtype[np.void] | None = None
    while True:
        try:
            lines = list(itertools.islice(fh, rows))
        except UnicodeDecodeError:
            yield None
            return
        if not lines:
            return
        if dtype is None:  # the first non-blank line fixes the layout, as in _parse
            i = next((j for j, line in enumerate(lines) if line not in _BLANK), None)
            if i is None:
                continue
            try:
                first = next(csv.reader([lines[i]]))
            except (csv.Error, StopIteration):
                yield None
                return
            if len(first) not in (6, 12):
                yield None
                return
            dtype = _DTYPE6 if len(first) == 6 else _DTYPE12
            if first[0].strip() and not first[0].strip().isdigit():
                if tuple(c.strip().lower() for c in first) not in (HEADER, BINANCE_HEADER):
                    yield None
                    return
                i += 1
            lines = lines[i:]
            if not lines:
                continue
        grid = _bulk_grid(lines, dtype, length, weekly, last)
        del lines  # not held while suspended: a streaming replay keeps one reader per symbol
        if grid is None:
            yield None
            return
        if len(grid):
            yield grid
            last = int(grid[-1, 0])


def _bulk_grid(lines: list[str], dtype: np.dtype[np.void], length: int, weekly: bool, last: int) -> Grid | None:
    """One block through numpy and :func:`_parse`'s checks; None if any row would not pass them (or numpy balks)."""
    if lines[0] in _BLANK and all(line in _BLANK for line in lines):
        return np.empty((0, 6 if dtype is _DTYPE6 else 8), dtype=np.float64)  # numpy would warn of no data
    try:
        a = np.loadtxt(lines, dtype=dtype, delimiter=",", comments=None, quotechar=None, ndmin=1)
    except ValueError:
        return None
    n = len(a)
    if n != len(lines) and n != sum(1 for line in lines if line not in _BLANK):
        return None  # numpy skipped a line the csv module reads as a row
    ot = a["open_time"]
    micros = ot > _MICROS_ABOVE
    if micros.any():
        if (ot[micros] % 1000).any():
            return None
        ot = np.where(micros, ot // 1000, ot)
    o, h, lo, c, v = a["open"], a["high"], a["low"], a["close"], a["volume"]
    # As in _parse: NaN fails every comparison, the bounds reject inf and prices <= 0.
    ok = (lo > 0.0) & (lo <= o) & (o <= h) & (h < _INF) & (lo <= c) & (c <= h) & (v >= 0.0) & (v < _INF)
    if not ok.all() or ot[0] <= last or not (ot[1:] > ot[:-1]).all():
        return None
    off = ot - WEEK_OFFSET_MS if weekly else ot  # window_start's alignment, numpy's % floors like Python's
    if (off % length).any():
        return None
    if dtype is _DTYPE6:
        grid = np.empty((n, 6), dtype=np.float64)
    else:
        ct = a["close_time"]
        ct = np.where(ct > _MICROS_ABOVE, ct // 1000, ct)
        trades, taker = a["count"], a["taker_buy_volume"]
        if (ct != ot + (length - 1)).any() or not ((trades >= 0) & (taker >= 0.0) & (taker <= v * (1 + 1e-9))).all():
            return None
        grid = np.empty((n, 8), dtype=np.float64)
        grid[:, 6] = taker
        grid[:, 7] = trades
    grid[:, 0] = ot
    grid[:, 1] = o
    grid[:, 2] = h
    grid[:, 3] = lo
    grid[:, 4] = c
    grid[:, 5] = v
    return grid


class _Rows(Protocol):
    """What ``csv.reader`` gives: rows, and the line number for error messages."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def _iter_rows(p: Path, timeframe: str, after_ms: int) -> Generator[tuple[float, ...], None, None]:
    """The checked rows of one file, one at a time (the row parser: reference and fallback of the bulk reader).

    Rows are ``(open_time, o, h, l, c, v)`` or, for Binance dumps, + ``(taker_buy_volume, count)``.
    """
    try:
        fh = p.open(newline="", encoding="utf-8-sig")  # -sig: a spreadsheet-saved BOM is not a header typo
    except OSError as e:
        raise SourceError(f"{p}: cannot open: {e.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            yield from _parse(reader, p, timeframe, after_ms)
        except UnicodeDecodeError as e:
            raise SourceError(f"{p}: not a UTF-8 text file (byte {e.start} of a read block: {e.reason})") from None
        except csv.Error as e:
            raise SourceError(f"{p}:{reader.line_num}: unreadable CSV: {e}") from None


def _parse(reader: _Rows, p: Path, timeframe: str, after_ms: int) -> Iterator[tuple[float, ...]]:
    length = tf_ms(timeframe)
    weekly = length % WEEK_MS == 0
    last = after_ms
    first = next((r for r in reader if r), None)  # the first non-empty row fixes the layout
    if first is None:
        return
    rows: Iterable[list[str]] = reader
    if first[0].strip() and not first[0].strip().isdigit():
        _check_header(first, f"{p}:{reader.line_num}")
    else:
        rows = itertools.chain((first,), reader)
    ncols = len(first)
    if ncols not in (6, 12):
        raise SourceError(
            f"{p}:{reader.line_num}: {ncols} columns; expected 6 (open_time,open,high,low,close,volume) or Binance's 12"
        )
    # The hot loop checks with plain comparisons and builds messages only for a bad row.
    for row in rows:
        if len(row) != ncols:
            if not row:
                continue  # a blank line carries no bar (editors add them at the end)
            raise SourceError(f"{p}:{reader.line_num}: {len(row)} columns, expected {ncols}")
        try:
            ot = int(row[0])
            o = float(row[1])
            h = float(row[2])
            lo = float(row[3])
            c = float(row[4])
            v = float(row[5])
        except ValueError:
            raise SourceError(f"{p}:{reader.line_num}: {_number_problem(row)}") from None
        if ot > _MICROS_ABOVE:
            if ot % 1000:
                raise SourceError(f"{p}:{reader.line_num}: open_time {ot} looks like microseconds but is not whole ms")
            ot //= 1000
        # NaN fails every comparison, so this also rejects "nan"; the bounds reject "inf" and prices <= 0.
        if not (0.0 < lo <= o <= h < _INF and lo <= c <= h and 0.0 <= v < _INF):
            raise SourceError(f"{p}:{reader.line_num}: {_ohlcv_problem(o, h, lo, c, v)}")
        if ot <= last:
            raise SourceError(f"{p}:{reader.line_num}: {_order_problem(ot, last)}")
        if (window_start(ot, length) != ot) if weekly else ot % length:
            raise SourceError(f"{p}:{reader.line_num}: open_time {ot} is not aligned to {timeframe} bars")
        if ncols == 12:
            yield (ot, o, h, lo, c, v, *_binance_extra(row, timeframe, ot, length, v, f"{p}:{reader.line_num}"))
        else:
            yield (ot, o, h, lo, c, v)
        last = ot


def _number_problem(row: list[str]) -> str:
    for i, name in enumerate(HEADER):
        try:
            int(row[i]) if i == 0 else float(row[i])
        except ValueError:
            return f"{name} {row[i]!r} is not a {'whole ' if i == 0 else ''}number"
    return "unreadable numbers"  # pragma: no cover - only reached if the fast parse and this one disagree


def _order_problem(ot: int, last: int) -> str:
    if ot < 0:
        return f"open_time {ot} is negative"
    if ot == last:
        return f"open_time {ot} repeats the previous bar"
    return f"open_time {ot} does not increase (previous bar opened at {last})"


def _check_header(row: list[str], where: str) -> None:
    names = tuple(c.strip().lower() for c in row)
    if names not in (HEADER, BINANCE_HEADER):
        raise SourceError(
            f"{where}: unrecognised header {','.join(row)!r}; expected {','.join(HEADER)} "
            "or Binance's 12-column kline header"
        )


def _ohlcv_problem(o: float, h: float, lo: float, c: float, v: float) -> str:
    if any(math.isnan(x) for x in (o, h, lo, c, v)):
        return "NaN in open/high/low/close/volume"
    if any(math.isinf(x) for x in (o, h, lo, c, v)):
        return "infinite value in open/high/low/close/volume"
    if min(o, h, lo, c) <= 0:
        return f"price <= 0 (open {o!r}, high {h!r}, low {lo!r}, close {c!r})"
    if h < lo:
        return f"high {h!r} < low {lo!r}"
    if v < 0:
        return f"negative volume {v!r}"
    return f"open {o!r} / close {c!r} outside [low {lo!r}, high {h!r}]"


def _binance_extra(row: list[str], timeframe: str, ot: int, length: int, v: float, where: str) -> tuple[float, int]:
    """Check a dump row's close_time against its timeframe; return (taker_buy_volume, trade count)."""
    ct = _int(row[6], "close_time", where)
    if ct > _MICROS_ABOVE:
        ct //= 1000
    if ct != ot + length - 1:
        raise SourceError(
            f"{where}: close_time {ct} does not end a {timeframe} bar opened at {ot} "
            f"(expected {ot + length - 1}); is the file named with the right timeframe?"
        )
    trades = _int(row[8], "count", where)
    taker = _num(row[9], "taker_buy_volume", where)
    if trades < 0 or not 0.0 <= taker <= v * (1 + 1e-9):
        raise SourceError(f"{where}: count {trades} or taker_buy_volume {taker!r} out of range (volume {v!r})")
    return taker, trades


class CandleWriter:
    """Streams bars into a layout-(a) file; the file appears under its name only when closed cleanly."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fh = self._tmp.open("w", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh, lineterminator="\n")
        self._w.writerow(HEADER)
        self._last = -1
        self.rows = 0

    def write(self, k: Kline) -> None:
        if k.open_time <= self._last:
            raise ValueError(f"{self.path}: bars must be written in increasing open_time ({k.open_time})")
        self._last = k.open_time
        # repr() is the shortest text that reads back to the identical float.
        self._w.writerow((k.open_time, repr(k.open), repr(k.high), repr(k.low), repr(k.close), repr(k.volume)))
        self.rows += 1

    def close(self, *, keep: bool = True) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> CandleWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(keep=exc_type is None)


def write_candles(path: str | Path, klines: Iterable[Kline]) -> int:
    """Write bars (one symbol and timeframe, increasing open_time) in layout (a); returns the row count."""
    with CandleWriter(path) as w:
        for k in klines:
            w.write(k)
        return w.rows
