"""Replay of the recorded candle files: timeframes, warm-up, run window, gaps, order, strict parsing."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import require_data
from ultra_signals.core.events import Kline, MarketEvent, event_time
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.sources.base import MarketSource, SourceError
from ultra_signals.sources.candles_csv import BINANCE_HEADER, read_candles
from ultra_signals.sources.replay import KEEP_BYTES, ReplaySource

ALTS = ["ADABTC", "DASHBTC", "ETCBTC", "ETHBTC", "LTCBTC", "NXTBTC", "TRXBTC", "XLMBTC", "XMRBTC", "ZECBTC"]
HOUR = 3_600_000
DAY0 = 1_516_320_000_000  # 2018-01-19T00:00:00Z, inside the alt/BTC recordings


def klines(src: ReplaySource) -> list[Kline]:
    out = [ev for ev in src.iter_events() if isinstance(ev, Kline)]
    assert len(out) == len(src)
    return out


def assert_stream_order(evs: list[Kline], symbols: list[str]) -> None:
    """Event time, then coarsest first, then symbol order; no bar twice."""
    keys = [(event_time(k), -tf_ms(k.timeframe), symbols.index(k.symbol)) for k in evs]
    assert all(a < b for a, b in itertools.pairwise(keys))


def windows_with_bars(bars: list[Kline], tf: str) -> dict[int, list[Kline]]:
    groups: dict[int, list[Kline]] = defaultdict(list)
    for k in bars:
        groups[k.open_time - k.open_time % tf_ms(tf)].append(k)
    return groups


def test_ten_alt_series_replay_on_5m_15m_1h_with_1m_dropped() -> None:
    src = ReplaySource(require_data("klines"), ALTS, ["1m", "5m", "15m", "1h"], None, None, 48)
    info = src.info
    assert (info.name, info.simulated, info.historical) == ("replay", False, True)
    assert info.symbols == ALTS and info.timeframes == ["5m", "15m", "1h"]
    assert any(n.startswith("1m dropped") and "ADABTC 5m" in n for n in info.notices)
    evs = klines(src)
    assert_stream_order(evs, ALTS)
    # Exactly 48 hourly warm-up bars per symbol close before the run starts; warm-up comes first.
    before = Counter(k.symbol for k in evs if k.timeframe == "1h" and k.close_time < src.run_start_ms)
    assert before == dict.fromkeys(ALTS, 48)
    first_run = next(i for i, k in enumerate(evs) if k.close_time >= src.run_start_ms)
    assert all(k.close_time >= src.run_start_ms for k in evs[first_run:])
    assert src.run_start_ms % HOUR == 0 and src.run_end_ms == max(k.close_time + 1 for k in evs)
    assert Counter(k.timeframe for k in evs)["5m"] > 10 * 5000


def test_gaps_stay_gaps_and_every_recorded_bar_is_replayed() -> None:
    folder = require_data("klines")
    src = ReplaySource(folder, ALTS, ["5m", "15m", "1h"], None, None, 0)
    evs = klines(src)
    for sym in ALTS:
        rows = read_candles(folder / f"{sym}-5m.csv", sym, "5m")
        mine = [k for k in evs if k.symbol == sym]
        assert [k for k in mine if k.timeframe == "5m"] == rows  # no bar lost, none invented
        span = (rows[-1].open_time - rows[0].open_time) // 300_000 + 1
        for tf in ("15m", "1h"):
            groups = windows_with_bars(rows, tf)
            last_end = rows[-1].close_time + 1
            proven = [ws for ws in groups if ws + tf_ms(tf) <= last_end]  # a trailing unfinished window is not emitted
            got = [k for k in mine if k.timeframe == tf]
            assert [k.open_time for k in got] == sorted(proven)
            for k in got:
                g = groups[k.open_time]
                assert (k.open, k.high, k.low, k.close) == (
                    g[0].open,
                    max(b.high for b in g),
                    min(b.low for b in g),
                    g[-1].close,
                )
                assert k.volume == pytest.approx(sum(b.volume for b in g), rel=1e-12)
        if sym == "ADABTC":
            assert len(rows) < span  # the file has gaps, and they stayed gaps


def test_unittest_1m_file_aggregates_exactly() -> None:
    folder = require_data("klines")
    src = ReplaySource(folder, ["UNITTESTBTC"], ["1m", "5m", "15m", "1h", "4h"], None, None, 0)
    assert src.info.timeframes == ["1m", "5m", "15m", "1h", "4h"]
    evs = klines(src)
    rows = read_candles(folder / "UNITTESTBTC-1m.csv", "UNITTESTBTC", "1m")
    assert [k for k in evs if k.timeframe == "1m"] == rows
    span = (rows[-1].open_time - rows[0].open_time) // 60_000 + 1
    assert len(rows) == 13681 < span  # 1m gaps in the recording
    hours = windows_with_bars(rows, "1h")
    got = [k for k in evs if k.timeframe == "1h"]
    assert len(got) == len([ws for ws in hours if ws + HOUR <= rows[-1].close_time + 1])
    for k in got:
        g = hours[k.open_time]
        assert (k.open, k.high, k.low, k.close, k.volume) == (
            g[0].open,
            max(b.high for b in g),
            min(b.low for b in g),
            g[-1].close,
            sum(b.volume for b in g),
        )
    assert_stream_order(evs, ["UNITTESTBTC"])


def test_all_symbols_by_default_finest_file_preferred_and_short_warmup_noticed() -> None:
    src = ReplaySource(require_data("klines"), None, ["5m", "1h"], None, None, 210)
    assert src.info.symbols == sorted([*ALTS, "UNITTESTBTC", "XRPUSDT"])
    notices = "\n".join(src.info.notices)
    assert "XRPUSDT-mark-1h.csv skipped" in notices
    assert "XRPUSDT-1h.csv not used" in notices
    assert "warm-up shortened for XRPUSDT: 83 1h bars instead of 210 (the data holds 166)" in notices
    # The 2021 XRPUSDT data starts the run; the 2017/2018 series end long before it.
    assert "ADABTC has no bars in the run window" in notices


def test_explicit_window_and_too_little_warmup() -> None:
    folder = require_data("klines")
    src = ReplaySource(folder, ["ETHBTC", "LTCBTC"], ["5m", "15m", "1h"], DAY0, DAY0 + 6 * HOUR, 10)
    evs = klines(src)
    assert (src.run_start_ms, src.run_end_ms) == (DAY0, DAY0 + 6 * HOUR)
    assert max(event_time(k) for k in evs) == DAY0 + 6 * HOUR
    hours_before = Counter(k.symbol for k in evs if k.timeframe == "1h" and k.close_time < DAY0)
    assert hours_before == {"ETHBTC": 10, "LTCBTC": 10}
    assert min(k.open_time for k in evs) == DAY0 - 10 * HOUR  # warm-up trimmed to its span
    run = [k for k in evs if k.close_time >= DAY0]
    assert Counter(k.timeframe for k in run) == {"5m": 2 * 72, "15m": 2 * 24, "1h": 2 * 6}

    early = 1_515_560_100_000 + 5 * HOUR  # 05:55, the recording starts at 00:55: hours 00 (partial) to 04
    src = ReplaySource(folder, ["ETHBTC"], ["5m", "1h"], early, early + HOUR, 210)
    assert any(n.startswith("only 5 of 210 1h warm-up bars before the start for ETHBTC") for n in src.info.notices)


@pytest.mark.parametrize(
    ("symbols", "tfs", "start", "end", "match"),
    [
        (["BTCUSDT"], ["5m"], None, None, "no candle file for BTCUSDT"),
        (["ETHBTC"], ["7m"], None, None, "7m is not a multiple of 5m"),
        (["ETHBTC"], ["1m"], None, None, "none of the timeframes"),
        (["ETHBTC"], ["5m"], DAY0, DAY0 - 1, "empty run window"),
        (["ETHBTC"], ["5m"], 1_600_000_000_000, None, "empty run window"),
        (["ETHBTC"], ["5x"], None, None, "unknown timeframe"),
    ],
)
def test_impossible_requests_are_clear_errors(
    symbols: list[str], tfs: list[str], start: int | None, end: int | None, match: str
) -> None:
    with pytest.raises(SourceError, match=match):
        ReplaySource(require_data("klines"), symbols, tfs, start, end, 0)


def test_malformed_copy_names_file_and_line(tmp_path: Path) -> None:
    lines = (require_data("klines") / "ETHBTC-5m.csv").read_text().splitlines()
    ot, o, h, lo, c, v = lines[99].split(",")
    lines[99] = ",".join([ot, o, lo, h, c, v])  # high and low swapped on line 100
    (tmp_path / "ETHBTC-5m.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as e:
        ReplaySource(tmp_path, None, ["5m", "1h"], None, None, 0)
    assert f"{tmp_path / 'ETHBTC-5m.csv'}:100: high" in str(e.value) and "< low" in str(e.value)


@pytest.mark.parametrize("header", [True, False])
def test_binance_dump_replays_like_the_recorded_file(tmp_path: Path, header: bool) -> None:
    lines = (require_data("klines") / "ETHBTC-5m.csv").read_text().splitlines()
    rows = []
    for line in lines[1:]:
        ot, o, h, lo, c, v = line.split(",")
        rows.append(f"{ot},{o},{h},{lo},{c},{v},{int(ot) + 299_999},1.0,10,{float(v) / 2!r},0.5,0")
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "ETHBTC-5m.csv").write_text("\n".join(([",".join(BINANCE_HEADER)] if header else []) + rows) + "\n")
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(require_data("klines", "ETHBTC-5m.csv"), plain)

    def ohlcv(folder: Path) -> list[tuple[object, ...]]:
        src = ReplaySource(folder, None, ["5m", "15m", "1h"], None, None, 24)
        return [(k.timeframe, k.open_time, k.open, k.high, k.low, k.close, k.volume) for k in klines(src)]

    assert ohlcv(dump) == ohlcv(plain)
    src = ReplaySource(dump, None, ["5m", "1h"], None, None, 0)
    h1 = [k for k in klines(src) if k.timeframe == "1h"][1]  # the first hour holds a single 5m bar
    assert h1.trades == 120  # 12 five-minute bars of 10 trades: the dump's extra columns aggregate too


def test_async_stream_matches_and_aclose_stops_it() -> None:
    src = ReplaySource(require_data("klines"), ["ETHBTC", "LTCBTC"], ["5m", "15m"], None, None, 0)
    source: MarketSource = src  # satisfies the protocol (checked by mypy)

    async def take(limit: int | None) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        async for ev in source.events():
            out.append(ev)
            if limit is not None and len(out) == limit:
                await source.aclose()
        return out

    assert asyncio.run(take(None)) == list(src.iter_events())
    stopped = asyncio.run(take(10))
    assert 10 <= len(stopped) <= 4096  # stops at the next batch boundary, not at the end of the data


@pytest.mark.parametrize(("symbols", "tfs"), [(["ETHBTC", "LTCBTC"], ["5m", "15m"]), (["UNITTESTBTC"], ["1m", "5m"])])
def test_lists_hand_over_the_same_events_with_the_same_yields_to_the_loop(
    monkeypatch: pytest.MonkeyPatch, symbols: list[str], tfs: list[str]
) -> None:
    """``events().lists()`` (what the runner reads) is the one-by-one stream cut in lists: the same events, and
    the source gives the event loop its turn at the same places (before every 4,096 events and after the last)."""
    from ultra_signals.sources import replay
    from ultra_signals.sources.base import EventLists

    src = ReplaySource(require_data("klines"), symbols, tfs, None, None, 0)
    real_sleep = asyncio.sleep
    taken: list[MarketEvent] = []
    yields: list[int] = []

    async def sleep(delay: float) -> None:
        yields.append(len(taken))  # how many events had been handed over when the source yielded
        await real_sleep(delay)

    monkeypatch.setattr(replay.asyncio, "sleep", sleep)

    async def one_by_one() -> None:
        async for ev in src.events():
            taken.append(ev)

    async def in_lists() -> list[int]:
        stream = src.events()
        assert isinstance(stream, EventLists)
        sizes = []
        async for group in stream.lists():
            sizes.append(len(group))
            taken.extend(group)
        return sizes

    asyncio.run(one_by_one())
    want, want_yields = list(taken), list(yields)
    taken.clear()
    yields.clear()
    sizes = asyncio.run(in_lists())
    assert taken == want == list(src.iter_events()) and len(want) > 4096
    assert yields == want_yields == [*range(0, len(want), 4096), len(want)]
    assert max(sizes) == 256 and sum(sizes) == len(want)


def test_lists_stop_at_the_next_batch_boundary_after_aclose() -> None:
    src = ReplaySource(require_data("klines"), ["ETHBTC", "LTCBTC"], ["5m", "15m"], None, None, 0)

    async def take() -> int:
        n = 0
        stream = src.events()
        assert hasattr(stream, "lists")
        async for group in stream.lists():
            n += len(group)
            if n >= 10:
                await src.aclose()
        return n

    assert asyncio.run(take()) == 4096


def test_simulated_folder_is_labelled(tmp_path: Path) -> None:
    shutil.copy(require_data("klines", "ETHBTC-5m.csv"), tmp_path)
    (tmp_path / "SIMULATED.txt").write_text("simulated\n")
    src = ReplaySource(tmp_path, None, ["5m"], None, None, 0)
    assert src.info.simulated and "SIMULATED" in src.info.notices[0]


def test_file_without_a_complete_bar_of_the_timeframes_is_an_error(tmp_path: Path) -> None:
    lines = (require_data("klines") / "ETHBTC-5m.csv").read_text().splitlines()
    (tmp_path / "ETHBTC-5m.csv").write_text("\n".join([lines[0], *lines[2:5]]) + "\n")  # 01:00-01:10: no 1h end
    with pytest.raises(SourceError, match=r"ETHBTC: ETHBTC-5m\.csv holds no complete 1h bar"):
        ReplaySource(tmp_path, None, ["1h"], None, None, 0)


def test_duration_ends_the_run_that_long_after_its_default_start() -> None:
    folder = require_data("klines")
    by_duration = ReplaySource(folder, ["ETHBTC"], ["5m", "15m", "1h"], warmup_bars=50, duration_ms=6 * 3_600_000)
    by_end = ReplaySource(
        folder, ["ETHBTC"], ["5m", "15m", "1h"], warmup_bars=50, end_ms=by_duration.run_start_ms + 6 * 3_600_000
    )
    assert by_duration.run_end_ms == by_duration.run_start_ms + 6 * 3_600_000
    assert (by_duration.run_start_ms, by_duration.run_end_ms, len(by_duration)) == (
        by_end.run_start_ms,
        by_end.run_end_ms,
        len(by_end),
    )


def test_funding_files_become_funding_events(tmp_path: Path) -> None:
    """The recorded XRPUSDT funding rates replay as markPrice-style events: next funding time and its rate."""
    from ultra_signals.core.events import Funding

    shutil.copy(require_data("klines", "XRPUSDT-5m.csv"), tmp_path / "XRPUSDT-5m.csv")
    funding = tmp_path / "funding"
    funding.mkdir()
    shutil.copy(require_data("funding", "XRPUSDT-8h-funding.csv"), funding / "XRPUSDT-8h-funding.csv")
    plain = ReplaySource(tmp_path, ["XRPUSDT"], ["5m", "1h"], warmup_bars=10)
    src = ReplaySource(tmp_path, ["XRPUSDT"], ["5m", "1h"], warmup_bars=10, funding_dir=funding)
    evs = list(src.iter_events())
    fund = [e for e in evs if isinstance(e, Funding)]
    rows = [line.split(",") for line in (funding / "XRPUSDT-8h-funding.csv").read_text().splitlines()[1:]]
    rates = {int(t): float(r) for t, r in rows}
    times = sorted(rates)
    assert fund, "the funding file overlaps the candles: events expected"
    for f in fund:
        i = times.index(f.ts)
        assert f.next_funding_time == times[i + 1] and f.funding_rate == rates[times[i + 1]]
        assert f.mark_price > 0
    # Inserted in event time, the bars unchanged and in their order.
    assert [event_time(e) for e in evs] == sorted(event_time(e) for e in evs)
    assert [e for e in evs if isinstance(e, Kline)] == list(plain.iter_events())
    assert any("funding: 91 rates for XRPUSDT" in n for n in src.info.notices)


def test_bad_funding_row_names_file_and_line(tmp_path: Path) -> None:
    shutil.copy(require_data("klines", "XRPUSDT-5m.csv"), tmp_path / "XRPUSDT-5m.csv")
    (tmp_path / "XRPUSDT-funding.csv").write_text("funding_time,funding_rate\n1637193600017,0.0001\n163722,x\n")
    with pytest.raises(SourceError, match=r"XRPUSDT-funding.csv:3: expected an epoch-ms time and a rate"):
        ReplaySource(tmp_path, ["XRPUSDT"], ["5m"], warmup_bars=10)


# -- streaming (issue 13): the same events and decisions as the loader that built every bar up front ----------
STREAM_CASES = {
    "alts_5m_15m_1h_warm210": (ALTS, ["5m", "15m", "1h"], None, None, 210),
    "alts_1m_dropped_start_end": (ALTS, ["1m", "5m", "15m", "1h"], DAY0, DAY0 + 30 * HOUR, 24),
    "unittest_1m_to_4h": (["UNITTESTBTC"], ["1m", "5m", "15m", "1h", "4h"], None, None, 50),
    "xrpusdt_funding": (["XRPUSDT"], ["5m", "15m", "1h"], None, None, 10),
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
@pytest.mark.parametrize(("chunk_bars", "keep_bytes"), [(1, 0), (997, 0), (997, KEEP_BYTES), (65_536, KEEP_BYTES)])
def test_streaming_yields_exactly_the_eager_loaders_events(case: str, chunk_bars: int, keep_bytes: int) -> None:
    """Every event, in order, equal field for field, whatever the chunk size (1 = the smallest chunk possible) and
    whether the first read's blocks are kept for the stream or the files read again."""
    from tests.replay_eager import EagerReplaySource

    symbols, tfs, start, end, warm = STREAM_CASES[case]
    folder = require_data("klines")
    funding = require_data("funding") if case == "xrpusdt_funding" else None
    old = EagerReplaySource(folder, symbols, tfs, start, end, warm, funding_dir=funding)
    new = ReplaySource(
        folder, symbols, tfs, start, end, warm, funding_dir=funding, chunk_bars=chunk_bars, keep_bytes=keep_bytes
    )
    want = list(old.iter_events())
    got = list(new.iter_events())
    assert len(want) > 1000
    assert got == want and len(new) == len(old) == len(got)
    assert list(new.iter_events()) == want  # a second pass over kept blocks reads them afresh
    assert (new.run_start_ms, new.run_end_ms) == (old.run_start_ms, old.run_end_ms)
    assert new.info == old.info  # symbols, timeframes and every notice, in order
    if case == "xrpusdt_funding":
        assert any(not isinstance(ev, Kline) for ev in got), "the funding file overlaps the candles"


@pytest.mark.parametrize("chunk_bars", [1, 997, 65_536])
@pytest.mark.parametrize("symbols", [["LTCBTC", "ETHBTC", "ADABTC"], ["ETHBTC"]])
def test_streaming_mixes_dump_and_plain_layouts_as_the_eager_loader(
    tmp_path: Path, chunk_bars: int, symbols: list[str]
) -> None:
    """A Binance dump (taker volume and trade count) alone or beside plain files in one run: each bar keeps its
    own optional fields (values and types: float/int, or None for the plain files' bars), whatever the chunking."""
    from tests.replay_eager import EagerReplaySource

    lines = (require_data("klines") / "ETHBTC-5m.csv").read_text().splitlines()
    rows = [",".join(BINANCE_HEADER)]
    for n, line in enumerate(lines[1:]):
        ot, o, h, lo, c, v = line.split(",")
        rows.append(f"{ot},{o},{h},{lo},{c},{v},{int(ot) + 299_999},1.0,{n % 17},{float(v) / 3!r},0.5,0")
    (tmp_path / "ETHBTC-5m.csv").write_text("\n".join(rows) + "\n")
    for name in ("LTCBTC-5m.csv", "ADABTC-5m.csv"):
        shutil.copy(require_data("klines", name), tmp_path / name)
    args = (tmp_path, symbols, ["5m", "15m", "1h"], None, None, 24)
    want = list(EagerReplaySource(*args).iter_events())
    got = list(ReplaySource(*args, chunk_bars=chunk_bars).iter_events())
    assert got == want and len(got) > 1000

    def optional(evs: list[MarketEvent]) -> list[tuple[object, ...]]:
        return [
            (type(e.taker_buy_volume), e.taker_buy_volume, type(e.trades), e.trades)
            for e in evs
            if isinstance(e, Kline)
        ]

    assert optional(got) == optional(want)
    kinds = {int, type(None)} if len(symbols) > 1 else {int}
    assert {type(e.trades) for e in got if isinstance(e, Kline)} == kinds


@pytest.mark.parametrize("keep_bytes", [KEEP_BYTES, 500_000, 0])
def test_history_is_kept_from_the_first_read_only_when_it_all_fits(tmp_path: Path, keep_bytes: int) -> None:
    """Within the budget the stream reuses the first read's blocks (the files are not opened again); when the
    symbols together exceed it (two files of 276 KB parsed against 500 KB), none is kept and the files are
    read again, so memory stays bounded whatever the history's length."""
    for name in ("ETCBTC-5m.csv", "LTCBTC-5m.csv"):
        shutil.copy(require_data("klines", name), tmp_path / name)
    src = ReplaySource(tmp_path, ["ETCBTC", "LTCBTC"], ["5m", "1h"], warmup_bars=10, keep_bytes=keep_bytes)
    want = list(src.iter_events())
    for name in ("ETCBTC-5m.csv", "LTCBTC-5m.csv"):
        (tmp_path / name).unlink()
    if keep_bytes == KEEP_BYTES:
        assert list(src.iter_events()) == want
    else:
        with pytest.raises(SourceError, match=r"ETCBTC-5m\.csv"):
            list(src.iter_events())


@pytest.mark.parametrize("case", ["alts_5m_15m_1h_warm210", "xrpusdt_funding", "unittest_1m_to_4h"])
def test_streaming_decisions_are_byte_identical_to_the_eager_loaders(case: str, tmp_path: Path) -> None:
    """The whole pipeline (paper executor on) over both loaders: the --decisions-out files are the same bytes."""
    from tests.replay_eager import EagerReplaySource
    from ultra_signals.bootstrap import build_runner
    from ultra_signals.core.config import load_settings
    from ultra_signals.journal.writer import Journal
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.transport.notifier import NullNotifier

    symbols, tfs, start, end, warm = STREAM_CASES[case]
    folder = require_data("klines")
    funding = require_data("funding") if case == "xrpusdt_funding" else None
    s = load_settings(overrides={"runtime.timeframes": ",".join(tfs), "runtime.primary_timeframe": tfs[0]}, environ={})
    sources: dict[str, MarketSource] = {
        "eager": EagerReplaySource(folder, symbols, s.runtime.timeframes, start, end, warm, funding_dir=funding),
        "stream": ReplaySource(folder, symbols, s.runtime.timeframes, start, end, warm, funding_dir=funding),
    }
    for name, src in sources.items():
        journal = Journal(f"sqlite:///{tmp_path}/{name}.db")
        runner = build_runner(
            s,
            source=src,
            journal=journal,
            notifier=NullNotifier(),
            metrics=Metrics(),
            serve_metrics=False,
            decisions_out=tmp_path / f"{name}.jsonl",
            run_id="same-run",
        )
        stats = asyncio.run(runner.run())
        journal.close()
        assert stats.crash is None and not stats.errors
    want = (tmp_path / "eager.jsonl").read_bytes()
    assert want.count(b"\n") > 20 and b'"allowed"' in want
    assert (tmp_path / "stream.jsonl").read_bytes() == want
