"""Candle CSV reading (our layout and Binance dumps) is strict and exact; writing round-trips bit for bit."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import require_data
from ultra_signals.core.events import Kline
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.candles_csv import (
    BINANCE_HEADER,
    CandleWriter,
    read_candles,
    read_set,
    scan_folder,
    write_candles,
)

FIVE = 300_000


def real_lines(name: str = "XRPUSDT-5m.csv") -> list[str]:
    return (require_data("klines") / name).read_text().splitlines()


def as_binance(lines: list[str], tf_ms: int, micros: bool = False) -> list[str]:
    """Our 6-column rows as Binance's 12-column dump rows (the extra columns made up but consistent)."""
    out = []
    for line in lines[1:]:
        ot, o, h, lo, c, v = line.split(",")
        t = int(ot)
        open_t, close_t = (t * 1000, (t + tf_ms) * 1000 - 1) if micros else (t, t + tf_ms - 1)
        out.append(f"{open_t},{o},{h},{lo},{c},{v},{close_t},123.5,42,{float(v) / 2!r},61.75,0")
    return out


def test_reads_the_recorded_layout_exactly() -> None:
    bars = read_candles(require_data("klines", "XRPUSDT-5m.csv"), "XRPUSDT", "5m")
    assert len(bars) == 1999
    assert bars[0] == Kline("XRPUSDT", "5m", 1636934400000, 1636934699999, 1.1893, 1.1954, 1.1891, 1.1941, 9289043.5)
    assert all(b.open_time - a.open_time == FIVE for a, b in itertools.pairwise(bars))


def test_scan_skips_suffixed_files_with_a_notice() -> None:
    scan = scan_folder(require_data("klines"))
    assert set(scan.sets["XRPUSDT"]) == {"5m", "1h"}
    assert "UNITTESTBTC" in scan.sets and "1m" in scan.sets["UNITTESTBTC"]
    assert not any(s.startswith("XRPUSDT") and "mark" in s for s in scan.sets)
    assert any("XRPUSDT-mark-1h.csv skipped" in n for n in scan.notices)


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("micros", [False, True])
def test_binance_dump_parses_to_the_same_bars(tmp_path: Path, header: bool, micros: bool) -> None:
    lines = real_lines()
    rows = as_binance(lines[:300], FIVE, micros)
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text("\n".join(([",".join(BINANCE_HEADER)] if header else []) + rows) + "\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(lines[:300]) + "\n")
    got = read_candles(path, "XRPUSDT", "5m")
    want = read_candles(plain, "XRPUSDT", "5m")
    assert [(k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume) for k in got] == [
        (k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume) for k in want
    ]
    assert got[0].trades == 42 and got[0].taker_buy_volume == want[0].volume / 2


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    bars = read_candles(require_data("klines", "ADABTC-5m.csv"), "ADABTC", "5m")
    path = tmp_path / "ADABTC-5m.csv"
    assert write_candles(path, bars) == len(bars)
    assert path.read_text().splitlines()[0] == "open_time,open,high,low,close,volume"
    assert read_candles(path, "ADABTC", "5m") == bars


def test_aborted_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-1m.csv"
    k = Kline("BTCUSDT", "1m", 60_000, 119_999, 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="increasing"), CandleWriter(path) as w:
        w.write(k)
        w.write(k)
    assert list(tmp_path.iterdir()) == []


BAD_ROWS = [
    ("1636934400000,1.2,1.1,1.3,1.2,5", "high 1.1 < low 1.3"),
    ("1636934400000,1.2,1.3,1.1,abc,5", "close 'abc' is not a number"),
    ("1636934400000,1.2,1.3,1.1,1.2", "5 columns, expected 6"),
    ("1636934400000,1.2,1.3,1.1,1.2,5,7", "7 columns, expected 6"),
    ("1636934400000,1.5,1.3,1.1,1.2,5", "outside [low 1.1, high 1.3]"),
    ("1636934400000,1.2,1.3,1.1,1.2,-5", "negative volume"),
    ("1636934400000,1.2,nan,1.1,1.2,5", "NaN"),
    ("1636934400000,1.2,inf,1.1,1.2,5", "infinite"),
    ("1636934400000,0,1.3,0,1.2,5", "price <= 0"),
    ("1636934400000,-1.2,1.3,-1.5,1.2,5", "price <= 0"),
    ("1636934400000,1.2,1.3,1.1,1.4,5", "outside [low 1.1, high 1.3]"),
    ("1636935360000,1.2,1.3,1.1,1.2,5", "not aligned to 5m"),
    ("1636934400000.5,1.2,1.3,1.1,1.2,5", "open_time '1636934400000.5' is not a whole number"),
]


@pytest.mark.parametrize(("row", "why"), BAD_ROWS)
def test_malformed_row_names_file_line_and_problem(tmp_path: Path, row: str, why: str) -> None:
    lines = real_lines()[:10]
    lines[5] = row  # data row 5 sits on line 6 of the file
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as e:
        read_candles(path, "XRPUSDT", "5m")
    assert f"{path}:6:" in str(e.value)
    assert why in str(e.value)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda ls: [*ls[:6], ls[4], *ls[6:]], "does not increase"),
        (lambda ls: [*ls[:6], ls[5], *ls[6:]], "repeats the previous bar"),
        (lambda ls: ["time,o,h,l,c,v", *ls[1:]], "unrecognised header"),
    ],
)
def test_order_and_header_problems(tmp_path: Path, mutate: object, why: str) -> None:
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text("\n".join(mutate(real_lines()[:10])) + "\n")  # type: ignore[operator]
    with pytest.raises(SourceError, match=why) as e:
        read_candles(path, "XRPUSDT", "5m")
    assert str(path) in str(e.value)


def test_binance_close_time_must_match_the_file_timeframe(tmp_path: Path) -> None:
    rows = as_binance(real_lines()[:5], FIVE)
    path = tmp_path / "XRPUSDT-1m.csv"  # 5m bars under a 1m name
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(SourceError, match=r"XRPUSDT-1m.csv:1: close_time .* right timeframe"):
        read_candles(path, "XRPUSDT", "1m")


def test_blank_trailing_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text("\n".join(real_lines()[:10]) + "\n\n\n")
    assert len(read_candles(path, "XRPUSDT", "5m")) == 9


def test_dated_binance_files_chain_in_order(tmp_path: Path) -> None:
    rows = as_binance(real_lines()[:101], FIVE)
    (tmp_path / "XRPUSDT-5m-2021-11-15.csv").write_text("\n".join(rows[:60]) + "\n")
    (tmp_path / "XRPUSDT-5m-2021-11-16.csv").write_text("\n".join(rows[60:]) + "\n")
    scan = scan_folder(tmp_path)
    series = read_set(scan.sets["XRPUSDT"]["5m"])
    assert len(series) == 100 and series.trades is not None
    assert series.klines() == read_candles_concat(tmp_path)
    (tmp_path / "XRPUSDT-5m-2021-11-16.csv").write_text("\n".join(rows[50:]) + "\n")  # overlaps the first
    with pytest.raises(SourceError, match=r"XRPUSDT-5m-2021-11-16.csv:1: open_time \d+ does not increase"):
        read_set(scan_folder(tmp_path).sets["XRPUSDT"]["5m"])


def read_candles_concat(folder: Path) -> list[Kline]:
    out: list[Kline] = []
    for p in sorted(folder.glob("*.csv")):
        out += read_candles(p, "XRPUSDT", "5m")
    return out


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_windows_line_endings_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    lines = real_lines()[:10]
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(lines) + "\n")
    assert read_candles(path, "XRPUSDT", "5m") == read_candles(plain, "XRPUSDT", "5m")


def test_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_bytes(b"PK\x03\x04\xff\xfe\x00zipped")
    with pytest.raises(SourceError, match=r"XRPUSDT-5m\.csv: not a UTF-8 text file"):
        read_candles(path, "XRPUSDT", "5m")
