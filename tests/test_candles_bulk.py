"""The bulk candle reader (numpy, a block at a time) gives exactly the row parser's bars, and exactly its errors.

The row parser (``iter_blocks(..., bulk=False)``) is the reference: on generated files, valid ones and ones with one
defect injected at a random line, both readers must yield bit-identical rows or fail with the identical message
(file:line and wording).  Small block sizes put block boundaries everywhere, dated files chain.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import require_data
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.candles_csv import (
    BINANCE_HEADER,
    HEADER,
    iter_blocks,
    read_candles,
    read_set,
    scan_folder,
)

PROPS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure is reproducible, not flaky
)
LENGTHS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1w": 604_800_000}
T0 = 1_636_934_400_000 - 604_800_000  # Monday 2021-11-08 00:00 UTC: aligned to every timeframe above

price = st.one_of(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    st.sampled_from([5e-05, 1e-05, 1.0, 2.5, 100.0, 0.1]),
)
text_of = st.sampled_from(
    [repr, lambda x: f"{x:.8f}", lambda x: f"{x:.3e}", lambda x: str(int(x)) if x >= 1 else repr(x)]
)

#: Defects of the 12-column Binance layout only (the file generated for them is always a Binance dump).
BINANCE_ONLY = (
    "close_time_wrong",
    "count_negative",
    "count_decimal",
    "taker_above_volume",
    "taker_negative",
    "ignore_text",
)
DEFECTS = [
    "ot_decimal",
    "ot_exponent",
    "ot_plus",
    "ot_spaces",
    "ot_underscore",
    "ot_nan",
    "ot_repeat",
    "ot_back",
    "ot_misaligned",
    "ot_negative",
    "ot_micro_partial",
    "price_nan",
    "price_inf",
    "price_zero",
    "price_negative",
    "price_text",
    "price_underscore",
    "price_quoted",
    "price_unicode_digit",
    "price_spaces",
    "high_below_low",
    "close_above_high",
    "close_below_low",
    "volume_negative",
    "volume_minus_zero",
    "extra_column",
    "missing_column",
    "trailing_comma",
    "whitespace_line",
    "comment_line",
    "nul",
    "bad_header",
    "header_again",
    "blank_line",
    *BINANCE_ONLY,
]


@st.composite
def candle_files(draw: st.DrawFn, defect: str | None) -> tuple[str, list[bytes], int]:
    """(timeframe, the bytes of 1-3 chained files, block rows): a valid series, perhaps with one defect."""
    tf = draw(st.sampled_from(list(LENGTHS)))
    length = LENGTHS[tf]
    binance = draw(st.booleans()) if defect not in BINANCE_ONLY else True
    micros = binance and draw(st.booleans())
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 5]), min_size=n, max_size=n))
    fmt = draw(text_of)
    rows: list[list[str]] = []
    t = T0
    for g in gaps:
        t += g * length
        lo = draw(price)
        hi = lo * draw(st.sampled_from([1.0, 1.001, 1.5]))
        o, c = (lo, hi) if draw(st.booleans()) else (hi, lo)
        v = draw(st.sampled_from([0.0, 1.0, 123.456, 1e-05, 9289043.5]))
        fields = [str(t * 1000 if micros else t), *(fmt(x) for x in (o, hi, lo, c)), fmt(v)]
        # text -> float may move a price by an ulp: keep only rows the row parser accepts (low <= open/close <= high)
        lo_f, hi_f, o_f, c_f = (float(x) for x in (fields[3], fields[2], fields[1], fields[4]))
        if not (0 < lo_f <= min(o_f, c_f) and max(o_f, c_f) <= hi_f):
            fields[1:5] = [repr(lo)] * 4
        if binance:
            close = (t + length) * 1000 - 1 if micros else t + length - 1
            taker = float(fields[5]) / 2
            fields += [str(close), "123.5", str(draw(st.integers(0, 900))), repr(taker), "61.75", "0"]
        rows.append(fields)
    lines = [",".join(r) for r in rows]
    if defect:
        lines = inject(draw, defect, lines, rows, length)
    header = draw(st.booleans())
    nfiles = draw(st.integers(1, min(3, len(lines))))
    cuts = sorted(draw(st.lists(st.integers(1, len(lines)), min_size=nfiles - 1, max_size=nfiles - 1)))
    parts = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    files = []
    for i, part in enumerate(parts):
        head = [",".join(BINANCE_HEADER if binance else HEADER)] if header and (i == 0 or binance) else []
        body = head + part
        if draw(st.booleans()):
            body.append("")  # a blank line at the end, as editors leave it
        data = eol.join(body) + (eol if draw(st.booleans()) else "")
        raw = data.encode()
        if i == 0 and draw(st.booleans()):
            raw = b"\xef\xbb\xbf" + raw
        files.append(raw)
    return tf, files, draw(st.sampled_from([1, 2, 3, 7, 4096]))


def inject(draw: st.DrawFn, kind: str, lines: list[str], rows: list[list[str]], length: int) -> list[str]:
    """One defect at a random data line (or the header, for the header defects)."""
    i = draw(st.integers(0, len(lines) - 1))
    f = list(rows[i])
    ot = int(f[0])
    edits: dict[str, Callable[[], object]] = {
        "ot_decimal": lambda: f.__setitem__(0, f"{ot}.0"),
        "ot_exponent": lambda: f.__setitem__(0, f"{ot / 1000:.6f}e3"),
        "ot_plus": lambda: f.__setitem__(0, f"+{ot}"),
        "ot_spaces": lambda: f.__setitem__(0, f" {ot} "),
        "ot_underscore": lambda: f.__setitem__(0, f"{ot:_}"),
        "ot_nan": lambda: f.__setitem__(0, "nan"),
        "ot_repeat": lambda: f.__setitem__(0, rows[i - 1][0] if i else f[0]),
        "ot_back": lambda: f.__setitem__(0, str(ot - 3 * length)),
        "ot_misaligned": lambda: f.__setitem__(0, str(ot + 1)),
        "ot_negative": lambda: f.__setitem__(0, str(-ot)),
        "ot_micro_partial": lambda: f.__setitem__(0, str(ot * 1000 + 7 if ot < 10**14 else ot + 7)),
        "price_nan": lambda: f.__setitem__(draw(st.integers(1, 4)), "nan"),
        "price_inf": lambda: f.__setitem__(draw(st.integers(1, 5)), draw(st.sampled_from(["inf", "-inf", "1e400"]))),
        "price_zero": lambda: f.__setitem__(3, "0"),
        "price_negative": lambda: f.__setitem__(3, "-1.5"),
        "price_text": lambda: f.__setitem__(draw(st.integers(1, 5)), "abc"),
        "price_underscore": lambda: f.__setitem__(5, "1_000"),
        "price_quoted": lambda: f.__setitem__(2, f'"{f[2]}"'),
        "price_unicode_digit": lambda: f.__setitem__(5, "\u0661"),
        "price_spaces": lambda: f.__setitem__(1, f" {f[1]}\t"),
        "high_below_low": lambda: f.__setitem__(2, repr(float(f[3]) / 2)),
        "close_above_high": lambda: f.__setitem__(4, repr(float(f[2]) * 2)),
        "close_below_low": lambda: f.__setitem__(4, repr(float(f[3]) / 2)),
        "volume_negative": lambda: f.__setitem__(5, "-1.0"),
        "volume_minus_zero": lambda: f.__setitem__(5, "-0"),
        "extra_column": lambda: f.append("7"),
        "missing_column": lambda: f.pop(),
        "trailing_comma": lambda: f.append(""),
        "close_time_wrong": lambda: f.__setitem__(6, str(int(f[6]) + 1)),
        "count_negative": lambda: f.__setitem__(8, "-1"),
        "count_decimal": lambda: f.__setitem__(8, "3.0"),
        "taker_above_volume": lambda: f.__setitem__(9, repr(float(f[5]) * 2 + 1)),
        "taker_negative": lambda: f.__setitem__(9, "-0.5"),
        "ignore_text": lambda: f.__setitem__(11, "x"),
    }
    out = list(lines)
    if kind in edits:
        edits[kind]()
        out[i] = ",".join(f)
    elif kind == "whitespace_line":
        out.insert(i, draw(st.sampled_from([" ", "\t", "  "])))
    elif kind == "comment_line":
        out.insert(i, "# a comment")
    elif kind == "nul":
        out[i] = out[i] + "\x00"
    elif kind == "bad_header":
        out.insert(0, "time,o,h,l,c,v")
    elif kind == "header_again":
        out.insert(i, ",".join(HEADER))
    elif kind == "blank_line":
        out.insert(i, "")
    return out


def outcome(folder: Path, tf: str, rows: int, *, bulk: bool) -> tuple[int, bytes] | str:
    """(width, the rows' bytes) or the error message; any other exception fails the test."""
    cs = scan_folder(folder).sets["XRPUSDT"][tf]
    try:
        grids = list(iter_blocks(cs, rows, bulk=bulk))
    except SourceError as e:
        return str(e)
    assert all(1 <= len(g) <= rows for g in grids)
    if not grids:
        return 0, b""
    return grids[0].shape[1], np.concatenate(grids).tobytes()


def write(folder: Path, tf: str, files: list[bytes]) -> None:
    if len(files) == 1:
        (folder / f"XRPUSDT-{tf}.csv").write_bytes(files[0])
        return
    for day, raw in enumerate(files, start=1):
        (folder / f"XRPUSDT-{tf}-2021-11-{day:02d}.csv").write_bytes(raw)


class _Fallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(case: tuple[str, list[bytes], int]) -> tuple[tuple[int, bytes] | str, tuple[int, bytes] | str, list[str]]:
    tf, files, rows = case
    handler = _Fallbacks()
    logger = logging.getLogger("ultra_signals.sources.candles_csv")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write(folder, tf, files)
            return outcome(folder, tf, rows, bulk=True), outcome(folder, tf, rows, bulk=False), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.mark.timeout(300)
@PROPS
@given(case=candle_files(defect=None))
def test_valid_files_are_read_in_bulk_to_the_row_parsers_exact_rows(case: tuple[str, list[bytes], int]) -> None:
    bulk, rows, fallbacks = run(case)
    assert bulk == rows
    assert not isinstance(rows, str), rows  # the generator makes valid files
    assert fallbacks == []  # and the bulk reader took every one of them itself


@pytest.mark.timeout(120)
@pytest.mark.parametrize("defect", DEFECTS)
def test_one_defect_gives_the_row_parsers_rows_or_its_exact_error(defect: str) -> None:
    @settings(PROPS, max_examples=40)
    @given(case=candle_files(defect=defect))
    def check(case: tuple[str, list[bytes], int]) -> None:
        bulk, rows, _ = run(case)
        assert bulk == rows

    check()


def test_bulk_and_row_reads_of_the_shared_recordings_are_identical() -> None:
    scan = scan_folder(require_data("klines"))
    for by_tf in scan.sets.values():
        for cs in by_tf.values():
            bulk = np.concatenate(list(iter_blocks(cs, 1000)))
            rows = np.concatenate(list(iter_blocks(cs, 1000, bulk=False)))
            assert bulk.tobytes() == rows.tobytes(), cs.paths


def test_a_defect_after_the_first_block_fails_with_the_row_parsers_message(tmp_path: Path) -> None:
    lines = (require_data("klines", "XRPUSDT-5m.csv")).read_text().splitlines()
    lines[1500] = lines[1500].replace(",", ",x", 1)
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(path))}:1501: open 'x[0-9.]+' is not a number$"):
        read_candles(path, "XRPUSDT", "5m")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(path))}:1501: "):
        read_set(scan_folder(tmp_path).sets["XRPUSDT"]["5m"])
