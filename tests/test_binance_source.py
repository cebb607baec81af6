"""BinanceSource end to end against the fake Binance on 127.0.0.1, fed real recorded data.

Klines: the real XRPUSDT 5m candles (REST backfill, and as kline stream messages for live bars);
streams: the real 2021 combined recording with its REST depth snapshots and exchangeInfo.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import free_port, require_data
from tests.fakes.binance_server import (
    FakeBinance,
    ManualClock,
    csv_kline_rows,
    read_recorded_2021,
    read_rest_depth_2021,
    ws_kline,
)
from tests.helpers import metric
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.events import BookDepth, BookTicker, Kline, MarketEvent, Trade
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceError
from ultra_signals.sources.binance.source import BinanceSource, closes_at

pytestmark = pytest.mark.timeout(90)
FIVE_M, FIFTEEN_M = 300_000, 900_000
SYMS_2021 = ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]


# -- helpers --------------------------------------------------------------------------------------------------
def _info() -> dict[str, Any]:
    return load_exchange_info_file(require_data("ws", "binance-futures-exchangeinfo-20210722.txt"))


def _xrp_rows() -> list[list[Any]]:
    return csv_kline_rows(require_data("klines", "XRPUSDT-5m.csv"), "5m")


def _settings(srv: FakeBinance, **over: Any) -> Settings:
    o: dict[str, Any] = {
        "runtime.source": "binance",
        "runtime.symbols": ["XRPUSDT"],
        "runtime.timeframes": ["5m"],
        "runtime.primary_timeframe": "5m",
        "runtime.warmup_bars": 50,
        # A source test feeds one timeframe: no higher one to confirm on (settings refuse mtf_confirm then).
        "sniper.mtf_confirm": False,
        "binance.rest_url": srv.rest_url,
        "binance.ws_url": srv.ws_url,
        "binance.silence_timeout_s": 30.0,
        "binance.reconnect_backoff_base_s": 0.02,
        "binance.reconnect_backoff_max_s": 0.1,
        "binance.close_grace_s": 0.2,
    }
    o.update(over)
    return load_settings(environ={}, overrides=o)


class Collector:
    """Runs ``source.events()`` in the background, like the runner does."""

    def __init__(self, src: BinanceSource) -> None:
        self.src = src
        self.events: list[MarketEvent] = []
        self.done = False
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for ev in self.src.events():
                self.events.append(ev)
        except BaseException as e:
            self.error = e
            raise
        finally:
            self.done = True

    def klines(self) -> list[Kline]:
        return [e for e in self.events if isinstance(e, Kline)]

    async def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not cond():
                if self.done:
                    raise AssertionError(f"source ended early: {self.error!r}")
                await asyncio.sleep(0.01)

        await asyncio.wait_for(loop(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.src.aclose()


def _run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 60))


def _run_value(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), 60))


def _same(k: Kline, row: list[Any]) -> bool:
    return (k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume, k.closed) == (
        row[0], row[6], float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]), True,
    )  # fmt: skip


# -- start-up checks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        (["XRPUSDT", "FOOUSDT"], "unknown on Binance USDⓈ-M: FOOUSDT"),
        (["BTCSTUSDT"], r"not trading: BTCSTUSDT \(status PENDING_TRADING\)"),
    ],
)
def test_unknown_or_halted_symbols_fail_before_anything_runs(symbols: list[str], message: str) -> None:
    async def go() -> None:
        async with FakeBinance(ManualClock(1_700_000_000_000).now_ms, exchange_info=_info()) as srv:
            src = BinanceSource(_settings(srv, **{"runtime.symbols": symbols}), Metrics())
            with pytest.raises(SourceError, match=message):
                async for _ in src.events():
                    pass
            await src.aclose()
            assert srv.connects == 0 and [p for p, _ in srv.rest_log] == ["/fapi/v1/exchangeInfo"]

    _run(go)


def test_unreachable_rest_is_a_source_error() -> None:
    async def go() -> None:
        port = free_port()
        s = load_settings(
            environ={},
            overrides={
                "runtime.source": "binance",
                "binance.rest_url": f"http://127.0.0.1:{port}",
                "binance.ws_url": f"ws://127.0.0.1:{port}",
                "binance.rest_max_retries": 1,
                "binance.reconnect_backoff_base_s": 0.01,
            },
        )
        src = BinanceSource(s, Metrics())
        with pytest.raises(SourceError, match=r"exchangeInfo from http://127\.0\.0\.1:\d+ failed"):
            async for _ in src.events():
                pass
        await src.aclose()

    _run(go)


def test_testnet_switches_base_urls_and_duration_sets_run_end() -> None:
    s = load_settings(environ={}, overrides={"runtime.source": "binance", "binance.testnet": True})
    clock = ManualClock(1_700_000_000_000)
    src = BinanceSource(s, Metrics(), duration_minutes=120, clock=clock)
    assert (src.rest_url, src.ws_url) == ("https://demo-fapi.binance.com", "wss://demo-fstream.binance.com")
    assert src.info.name == "binance" and not src.info.simulated and not src.info.historical
    assert src.run_start_ms == clock.now and src.run_end_ms == clock.now + 120 * 60_000
    assert BinanceSource(s, Metrics(), clock=clock).run_end_ms is None
    asyncio.run(src.aclose())


def test_closes_at_knows_binance_week_boundaries() -> None:
    monday = 1_704_067_200_000 + 0  # 2024-01-01 00:00 UTC was a Monday
    assert closes_at("1w", monday) and not closes_at("1w", monday + 86_400_000)
    assert closes_at("1h", monday + 3_600_000) and not closes_at("15m", monday + 60_000)


# -- klines: warm-up, live, repeats, malformed, drop + gap fill -----------------------------------------------
def test_warmup_live_repeat_malformed_drop_and_gap_fill() -> None:
    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)  # one minute into bar 300

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={("XRPUSDT", "5m"): rows}) as srv:
            src = BinanceSource(_settings(srv), m, clock=clock)
            assert src.run_start_ms == clock.now
            c = Collector(src)
            await c.wait(lambda: len(c.klines()) == 50)  # warm-up: the 50 closed bars before now
            await srv.wait_connections(2)  # /market and /public
            assert {cn.path for cn in srv.conns} == {"/market/stream", "/public/stream"}
            assert src.symbol_filters["XRPUSDT"].tick_size.as_tuple().exponent == -4

            clock.now = rows[301][0] + 1_000
            await srv.send(ws_kline("XRPUSDT", "5m", rows[301], closed=False))  # a forming bar: never closed
            await srv.send(ws_kline("XRPUSDT", "5m", rows[300]))
            await c.wait(lambda: len(c.klines()) == 51)
            await srv.repeat_last_kline()  # the same bar again
            await srv.send_raw('{"stream":"xrpusdt@kline_5m","data":{"e":"kline"', "/market")  # truncated
            await srv.send_raw('{"stream":"xrpusdt@kline_5m","data":{"e":"kline","s":"XRPUSDT","k":{}}}', "/market")
            await c.wait(lambda: metric(m, "ws_message_errors_total", {"kind": "schema"}) == 1)
            assert metric(m, "ws_message_errors_total", {"kind": "json"}) == 1

            assert srv.drop() == 2
            clock.now = rows[305][0] + 1_000  # bars 301..304 close while we are away
            await c.wait(lambda: len(c.klines()) == 55)  # refilled from REST on reconnect
            await srv.wait_connections(2)
            await srv.send(ws_kline("XRPUSDT", "5m", rows[304]))  # the exchange repeats the last bar
            clock.now = rows[306][0] + 1_000
            await srv.send(ws_kline("XRPUSDT", "5m", rows[305]))
            await c.wait(lambda: len(c.klines()) == 56)
            await asyncio.sleep(0.1)
            await c.stop()
        ks = c.klines()
        assert [k.open_time for k in ks] == [r[0] for r in rows[250:306]]  # in order, each exactly once
        assert all(_same(k, r) for k, r in zip(ks, rows[250:306], strict=True))
        assert src.stats.warmup_bars == 50 and src.stats.gap_bars_filled == 4
        assert src.stats.duplicate_bars_dropped == 2 and src.stats.open_klines_ignored == 1
        assert metric(m, "ws_reconnects_total", {"reason": "dropped"}) == 2
        assert metric(m, "ws_messages_total", {"stream": "kline"}) == 5
        # Warm-up asked REST once; the reconnect asked only for what was missing.
        kl = [p for path, p in srv.rest_log if path.endswith("/klines")]
        assert len(kl) == 2 and int(kl[1]["startTime"]) == rows[301][0]

    _run(go)


def test_stalled_stream_reconnects_and_backfills() -> None:
    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={("XRPUSDT", "5m"): rows}) as srv:
            src = BinanceSource(_settings(srv, **{"binance.silence_timeout_s": 0.4}), m, clock=clock)
            c = Collector(src)
            await c.wait(lambda: len(c.klines()) == 50)
            await srv.wait_connections(2)
            srv.stall()
            clock.now = rows[303][0] + 1_000
            await srv.send(ws_kline("XRPUSDT", "5m", rows[300]))  # swallowed by the stall
            await c.wait(lambda: metric(m, "ws_reconnects_total", {"reason": "silent"}) >= 1)
            await c.wait(lambda: len(c.klines()) == 53)  # bars 300..302 from REST after the reconnect
            srv.stall(False)
            await c.stop()
        assert [k.open_time for k in c.klines()] == [r[0] for r in rows[250:303]]
        assert src.stats.gap_bars_filled == 3

    _run(go)


# -- reconnects refill only what no live stream delivers ----------------------------------------------------------
SIX = ["XRPUSDT", "BTCUSDT", "ETHUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT"]
#: ``binance.max_streams_per_connection`` 2, klines only: market-0 {XRP, BTC}, market-1 {ETH, ADA}, market-2 {DOGE, LTC}.
_THREE_CONNS = {"runtime.symbols": SIX, "runtime.warmup_bars": 3, "binance.streams": "needed",
                "execution.broker": "none", "binance.max_streams_per_connection": 2}  # fmt: skip


def _kline_gets(srv: FakeBinance) -> int:
    return sum(1 for path, _ in srv.rest_log if path.endswith("/klines"))


def _drop_conns_of(srv: FakeBinance, symbols: list[str]) -> int:
    """Abort (TCP, no close frame) the connections carrying these symbols' 5m kline streams."""
    names = {f"{s.lower()}@kline_5m" for s in symbols}
    hit = [cn for cn in srv.conns if names & set(cn.streams.values())]
    for cn in hit:
        cn.ws.transport.abort()
    return len(hit)


def test_a_reconnect_refills_only_pairs_no_live_stream_delivers() -> None:
    """Three kline connections; bars close while some are away (their close messages not yet sent, as during
    the seconds a real close spreads over).  A reconnect asks REST for the pairs of the connections that were
    down, not for those whose own connection stayed up (their stream delivers the close): no bar lost or
    repeated, all in order, and 2, 4 and 6 klines requests where asking every due pair per reconnect made 6, 6 and
    6 (the outage of every connection asks each pair once either way)."""
    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={(s, "5m"): rows for s in SIX}) as srv:
            src = BinanceSource(_settings(srv, **_THREE_CONNS), m, clock=clock)
            c = Collector(src)
            await c.wait(lambda: len(c.klines()) == 18)  # warm-up: bars 297..299 of each symbol
            await srv.wait_connections(3)
            assert sorted(sorted(cn.streams.values()) for cn in srv.conns) == [
                ["adausdt@kline_5m", "ethusdt@kline_5m"], ["btcusdt@kline_5m", "xrpusdt@kline_5m"],
                ["dogeusdt@kline_5m", "ltcusdt@kline_5m"],
            ]  # fmt: skip
            gets = [_kline_gets(srv)]

            async def close_bar(i: int, n: int) -> None:
                for s in SIX:  # every connection gets it; a repeat on a refilled pair is dropped
                    await srv.send(ws_kline(s, "5m", rows[i]))
                await c.wait(lambda: len(c.klines()) == n)
                gets.append(_kline_gets(srv))

            clock.now = rows[301][0] + 1_000
            await close_bar(300, 24)  # live on every connection: nothing asked of REST
            # Bar 301 closes, market-0 drops and is back before the close messages go out.
            clock.now = rows[302][0] + 1_000
            assert _drop_conns_of(srv, ["XRPUSDT"]) == 1
            await srv.wait_connects(4)
            await c.wait(lambda: len(c.klines()) >= 26)  # XRP and BTC from REST
            assert src.stats.refills_skipped == 4  # ETH..LTC were due but streaming
            await close_bar(301, 30)
            # Bar 302 closes while market-0 and market-1 are away; market-2 stays up.
            clock.now = rows[303][0] + 1_000
            assert _drop_conns_of(srv, ["XRPUSDT", "ETHUSDT"]) == 2
            await srv.wait_connects(6)
            await c.wait(lambda: len(c.klines()) >= 34)
            await close_bar(302, 36)
            # Bar 303 closes during an outage of every connection: every pair is asked, once.
            clock.now = rows[304][0] + 1_000
            assert srv.drop() == 3
            await srv.wait_connects(9)
            await c.wait(lambda: len(c.klines()) >= 42)
            await close_bar(303, 42)
            await asyncio.sleep(0.1)
            await c.stop()
        ks = c.klines()
        assert len(ks) == 42
        for s in SIX:  # each bar exactly once, in order
            assert [k.open_time for k in ks if k.symbol == s] == [r[0] for r in rows[297:304]], s
        assert [k.close_time for k in ks] == sorted(k.close_time for k in ks)
        assert [b - a for a, b in itertools.pairwise(gets)] == [0, 2, 4, 6]
        assert src.stats.gap_bars_filled == 12 and src.stats.duplicate_bars_dropped == 12
        assert metric(m, "ws_reconnects_total", {"reason": "dropped"}) == 6

    _run(go)


def test_a_connection_still_down_is_refilled_by_another_ones_reconnect() -> None:
    """Statuses in consumer order, driven by hand: market-1 stays down while market-0 comes back, so market-0's
    reconnect also fills market-1's pairs (their bars must not wait for market-1), but not market-2's (up); when
    market-1 is back, only its own pairs are asked again.  Every pair per reconnect would be 6 and 6 requests."""
    from ultra_signals.sources.binance.ws import WsMessage, WsStatus, build_urls

    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)

    async def go() -> None:
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={(s, "5m"): rows for s in SIX}) as srv:
            src = BinanceSource(_settings(srv, **_THREE_CONNS), Metrics(), clock=clock)
            src._track_kline_conns(build_urls(src.ws_url, src.streams(), "split", 2))
            await src._warmup_bars()
            gets = _kline_gets(srv)

            async def handle(*items: WsStatus | WsMessage) -> list[tuple[str, int]]:
                for it in items:
                    src._inbox.push(it)
                return [(e.symbol, e.open_time) for e in await _drain(src) if isinstance(e, Kline)]

            def ws(sym: str, i: int) -> WsMessage:
                return WsMessage("market-2", ws_kline(sym, "5m", rows[i]).encode(), 0, 0.0)

            assert await handle(*(WsStatus(f"market-{i}", True, "start") for i in range(3))) == []
            assert _kline_gets(srv) == gets
            clock.now = rows[301][0] + 1_000  # bar 300 closed while market-0 and market-1 were down
            assert await handle(WsStatus("market-1", False, "dropped"), WsStatus("market-0", False, "dropped")) == []
            got = await handle(WsStatus("market-0", True, "dropped"))
            assert got == [(s, rows[300][0]) for s in sorted(SIX[:4])]  # market-0's and market-1's, not market-2's
            assert _kline_gets(srv) == gets + 4 and src.stats.refills_skipped == 2
            assert await handle(ws("DOGEUSDT", 300), ws("LTCUSDT", 300)) == [("DOGEUSDT", rows[300][0]),
                                                                            ("LTCUSDT", rows[300][0])]  # fmt: skip
            clock.now = rows[302][0] + 1_000  # bar 301 closed; market-1 comes back
            got = await handle(WsStatus("market-1", True, "dropped"))
            assert got == [("ADAUSDT", rows[301][0]), ("ETHUSDT", rows[301][0])]
            assert _kline_gets(srv) == gets + 6
            await src.aclose()

    _run(go)


def _rows_15m(rows5: list[list[Any]]) -> list[list[Any]]:
    out = []
    for i in range(0, len(rows5) - 2):
        a, b, cc = rows5[i : i + 3]
        if a[0] % FIFTEEN_M or b[0] != a[0] + FIVE_M or cc[0] != a[0] + 2 * FIVE_M:
            continue
        hi = max((x[2] for x in (a, b, cc)), key=float)
        lo = min((x[3] for x in (a, b, cc)), key=float)
        vol = str(sum(float(x[5]) for x in (a, b, cc)))
        out.append([a[0], a[1], hi, lo, cc[4], vol, a[0] + FIFTEEN_M - 1, "0", 0, "0", "0", "0"])
    return out


def test_coarsest_first_at_a_shared_close_and_a_lost_close_is_fetched() -> None:
    rows = _xrp_rows()
    r15 = _rows_15m(rows)
    i = next(j for j in range(300, 400) if rows[j][0] % FIFTEEN_M == 0)  # bar i opens on a 15m boundary
    clock = ManualClock(rows[i][0] + 1_000)

    async def go() -> None:
        m = Metrics()
        klines = {("XRPUSDT", "5m"): rows, ("XRPUSDT", "15m"): r15}
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines=klines) as srv:
            over = {"runtime.timeframes": ["5m", "15m"], "runtime.warmup_bars": 4}
            src = BinanceSource(_settings(srv, **over), m, clock=clock)
            c = Collector(src)
            await c.wait(lambda: len(c.klines()) == 8)
            warm = c.klines()
            assert [(k.timeframe, k.close_time + 1) for k in warm[-2:]] == [("15m", rows[i][0]), ("5m", rows[i][0])]
            await srv.wait_connections(2)
            j15 = next(x for x in r15 if x[0] == rows[i][0])
            clock.now = rows[i + 3][0] + 500
            for row in (rows[i], rows[i + 1]):
                await srv.send(ws_kline("XRPUSDT", "5m", row))
            await srv.send(ws_kline("XRPUSDT", "5m", rows[i + 2]))  # 5m first, as the network may deliver
            await srv.send(ws_kline("XRPUSDT", "15m", j15))
            await c.wait(lambda: len(c.klines()) == 12)
            # Next 15m boundary: its 15m close message is lost; after the grace REST supplies it.
            clock.now = rows[i + 6][0] + 500
            for row in rows[i + 3 : i + 6]:
                await srv.send(ws_kline("XRPUSDT", "5m", row))
            await c.wait(lambda: len(c.klines()) == 16)
            await c.stop()
        live = [(k.timeframe, k.open_time) for k in c.klines()[8:]]
        assert live == [
            ("5m", rows[i][0]), ("5m", rows[i + 1][0]), ("15m", rows[i][0]), ("5m", rows[i + 2][0]),
            ("5m", rows[i + 3][0]), ("5m", rows[i + 4][0]), ("15m", rows[i + 3][0]), ("5m", rows[i + 5][0]),
        ]  # fmt: skip
        assert src.stats.bars_fetched_after_grace == 1

    _run(go)


def test_duration_ends_the_stream_at_run_end() -> None:
    rows = _xrp_rows()
    clock = ManualClock(rows[300][0] + 60_000)

    async def go() -> None:
        async with FakeBinance(clock.now_ms, exchange_info=_info(), klines={("XRPUSDT", "5m"): rows}) as srv:
            src = BinanceSource(
                _settings(srv, **{"runtime.warmup_bars": 3}), Metrics(), duration_minutes=10, clock=clock
            )
            c = Collector(src)
            await c.wait(lambda: len(c.klines()) == 3)
            assert src.run_end_ms == src.run_start_ms + 600_000
            clock.now = src.run_end_ms + 1_000  # grace 0.2 s has passed on the exchange clock too
            await asyncio.wait_for(c.task, 5)  # the stream ends by itself, even with a silent feed
            await src.aclose()
        assert c.done and c.error is None

    _run(go)


def test_the_run_window_is_on_the_exchanges_clock(tmp_path: Any) -> None:
    """Our clock 2 minutes slow: the run starts at the exchange's "now", so a bar that closed a minute before the
    start is warm-up, not a decision point, and the run ends on the exchange's clock.  (Before, the window was
    fixed on the local clock: bar 300, closed 60 s before the start, fell inside it and went to the engine as a
    run bar, and a --duration run ended two minutes early.)"""
    from ultra_signals.bootstrap import build_runner
    from ultra_signals.journal.writer import Journal
    from ultra_signals.transport.notifier import NullNotifier

    rows = _xrp_rows()
    skew = 120_000
    clock = ManualClock(rows[301][0] + 60_000 - skew)  # ours; the exchange's is one minute into bar 301

    async def go() -> Any:
        async with FakeBinance(
            lambda: clock.now + skew, exchange_info=_info(), klines={("XRPUSDT", "5m"): rows}
        ) as srv:
            over = {"runtime.warmup_bars": 60, "scoring.entry_threshold": 0.01}
            settings = _settings(srv, **over)
            src = BinanceSource(settings, Metrics(), duration_minutes=10, clock=clock)
            assert src.run_start_ms == clock.now  # before open(): our clock, the exchange's offset unknown
            journal = Journal(f"sqlite:///{tmp_path}/j.db")
            runner = build_runner(
                settings, source=src, journal=journal, notifier=NullNotifier(), metrics=Metrics(), executor=False,
                serve_metrics=False, serve_web=False,
            )  # fmt: skip
            task = asyncio.create_task(runner.run())
            await srv.wait_connections(2)  # the runner opened the source: the window is on the exchange's clock
            assert src.server_offset_ms == skew
            assert (src.run_start_ms, src.run_end_ms) == (rows[301][0] + 60_000, rows[301][0] + 660_000)
            clock.now = src.run_end_ms - skew + 1_000  # past the end and its grace on the exchange's clock
            stats = await asyncio.wait_for(task, 10)
            journal.close()
            return stats

    stats = _run_value(go)
    assert stats.market_start_ms == rows[301][0] + 60_000
    # Bars 241..300, all closed before the start on the exchange's clock: warm-up, none a decision point.
    assert (stats.warmup_events, stats.run_bars, stats.crash) == (60, 0, None)
    assert sum(stats.candidates.values()) == 0


# -- the 2021 recording: trades, tickers, depth, order book -----------------------------------------------------
def _recording() -> tuple[list[str], dict[str, str]]:
    msgs = read_recorded_2021(require_data("ws", "binance-futures-ws-20210722.txt"))
    snaps = read_rest_depth_2021(require_data("ws", "binance-futures-rest-depth-20210722.txt"))
    return msgs, snaps


def _replay_book(snapshot: str, diffs: list[dict[str, Any]]) -> tuple[dict[float, float], dict[float, float]]:
    snap = json.loads(snapshot)
    bids = {float(p): float(q) for p, q in snap["bids"]}
    asks = {float(p): float(q) for p, q in snap["asks"]}
    for d in diffs:
        if d["u"] < snap["lastUpdateId"]:
            continue
        for side, lv in ((bids, d["b"]), (asks, d["a"])):
            for p, q in lv:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
    return bids, asks


async def _send_until_snapshots(srv: FakeBinance, msgs: list[str], symbols: list[str]) -> int:
    """Publish until every symbol had a diff and asked for its snapshot; returns how many were sent."""
    need = set(symbols)
    for n, raw in enumerate(msgs):
        await srv.send(raw)
        data = json.loads(raw)["data"]
        need.discard(data["s"] if data["e"] == "depthUpdate" else "")
        if not need:

            async def asked() -> None:
                while len({p["symbol"] for path, p in srv.rest_log if path.endswith("/depth")}) < len(symbols):
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(asked(), 5)
            await asyncio.sleep(0.05)
            return n + 1
    raise AssertionError("recording ran out before every symbol had a depth diff")


def test_recorded_stream_through_the_source() -> None:
    msgs, snaps = _recording()
    clock = ManualClock(1_626_992_741_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), depth_snapshots=snaps) as srv:
            over = {"runtime.symbols": SYMS_2021, "runtime.timeframes": ["1m"], "runtime.primary_timeframe": "1m",
                    "runtime.warmup_bars": 0}  # fmt: skip
            src = BinanceSource(_settings(srv, **over), m, clock=clock)
            c = Collector(src)
            await srv.wait_connections(2)
            sent = await _send_until_snapshots(srv, msgs, SYMS_2021)
            for raw in msgs[sent:]:
                await srv.send(raw)
            await c.wait(lambda: sum(isinstance(e, BookTicker) for e in c.events) == 613)
            # Repeats (as in a planned reconnect's overlap) add nothing and break nothing.
            for raw in [x for x in msgs if "aggTrade" in x[:40]][-3:] + [x for x in msgs if "depth" in x[:40]][-3:]:
                await srv.send(raw)
            await srv.send(msgs[-1])
            await asyncio.sleep(0.2)
            await c.stop()
        closed = [json.loads(x)["data"]["k"] for x in msgs if '"x":true' in x]
        ks = c.klines()
        assert len(ks) == 4 and [(k.symbol, k.open_time, k.close) for k in ks] == [
            (k["s"], k["t"], float(k["c"])) for k in closed
        ]
        assert sum(isinstance(e, Trade) for e in c.events) == 91
        assert sum(isinstance(e, BookTicker) for e in c.events) == 613
        for sym in SYMS_2021:
            diffs = [json.loads(x)["data"] for x in msgs if f'"s":"{sym}"' in x and "depthUpdate" in x]
            bids, asks = _replay_book(snaps[sym], diffs)
            assert (src.books[sym].bids, src.books[sym].asks) == (bids, asks), sym
            depth = [e for e in c.events if isinstance(e, BookDepth) and e.symbol == sym]
            assert depth and all(b.ts - a.ts >= 1000 for a, b in itertools.pairwise(depth))
        assert metric(m, "ws_messages_total", {"stream": "depth"}) == 764 + 3
        assert metric(m, "ws_messages_total", {"stream": "aggTrade"}) == 91 + 3
        assert sum(metric(m, "orderbook_resyncs_total", {"symbol": s}) for s in SYMS_2021) == 0
        assert src.stats.message_errors == {} and src.stats.duplicate_ticks_dropped >= 4
        # Taker flow per 1m bar, against the recorded aggTrades summed independently.
        trades = [json.loads(x)["data"] for x in msgs if "SUSHIUSDT" in x[:200] and '"aggTrade"' in x]
        for bar_open in sorted({t["T"] - t["T"] % 60_000 for t in trades}):
            mine = [t for t in trades if t["T"] - t["T"] % 60_000 == bar_open]
            flow = src.flow.bar("SUSHIUSDT", bar_open)
            assert flow is not None and flow.trades == len(mine)
            assert flow.taker_buy_qty == pytest.approx(sum(float(t["q"]) for t in mine if not t["m"]))
            assert flow.taker_sell_qty == pytest.approx(sum(float(t["q"]) for t in mine if t["m"]))
        signed = sum(float(t["q"]) * (-1 if t["m"] else 1) for t in trades)
        assert src.flow.cvd("SUSHIUSDT") == pytest.approx(signed)

    _run(go)


def test_skipped_depth_diff_resyncs_from_a_new_snapshot() -> None:
    msgs, snaps = _recording()
    msgs = [x for x in msgs if '"s":"SUSHIUSDT"' in x]
    clock = ManualClock(1_626_992_741_000)

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), depth_snapshots=snaps) as srv:
            over = {"runtime.symbols": ["SUSHIUSDT"], "runtime.timeframes": ["1m"], "runtime.primary_timeframe": "1m",
                    "runtime.warmup_bars": 0}  # fmt: skip
            src = BinanceSource(_settings(srv, **over), m, clock=clock)
            c = Collector(src)
            await srv.wait_connections(2)
            sent = await _send_until_snapshots(srv, msgs, ["SUSHIUSDT"])
            half = sent + (len(msgs) - sent) // 2
            for raw in msgs[sent:half]:
                await srv.send(raw)
            await c.wait(lambda: src.books["SUSHIUSDT"].state.value == "live")
            srv.skip_depth("SUSHIUSDT")
            for raw in msgs[half:]:
                await srv.send(raw)
                await asyncio.sleep(0.002)
            await c.wait(lambda: metric(m, "orderbook_resyncs_total", {"symbol": "SUSHIUSDT"}) == 1)
            await c.wait(lambda: src.books["SUSHIUSDT"].state.value == "live")
            await asyncio.sleep(0.1)
            await c.stop()
        diffs = [json.loads(x)["data"] for x in msgs if "depthUpdate" in x]
        bids, asks = _replay_book(snaps["SUSHIUSDT"], diffs)
        book = src.books["SUSHIUSDT"]
        assert book.last_update_id == diffs[-1]["u"]
        # The fresh snapshot is limited to 1000 levels a side, like Binance's: compare the top 200.
        assert sorted(book.bids.items())[-200:] == sorted(bids.items())[-200:]
        assert sorted(book.asks.items())[:200] == sorted(asks.items())[:200]
        assert src.stats.resyncs == {"SUSHIUSDT": 1}
        assert len([p for path, p in srv.rest_log if path.endswith("/depth")]) == 2

    _run(go)


# -- end to end: `ultra-signals shadow --source binance` against the fake exchange ------------------------------
def _live_dataset(now_ms: int) -> tuple[list[list[Any]], list[list[Any]], int]:
    """Real XRPUSDT candles re-spaced to 1m, rebased so that bars keep closing over the next minutes.

    Returns (1m rows, 5m rows aggregated from them, the first 1m boundary after ``now_ms``).
    """
    src = _xrp_rows()
    first_boundary = now_ms - now_ms % 60_000 + 60_000
    end = first_boundary + 30 * 60_000  # the data runs half an hour into the future
    n = len(src) - 1
    start = end - n * 60_000
    start -= start % FIVE_M  # 5m bars aligned
    rows1 = []
    for i, r in enumerate(src):
        t = start + i * 60_000
        rows1.append([t, r[1], r[2], r[3], r[4], r[5], t + 59_999, "0", 0, "0", "0", "0"])
    rows5 = []
    for i in range(0, len(rows1) - 4, 5):
        grp = rows1[i : i + 5]
        hi = max((x[2] for x in grp), key=float)
        lo = min((x[3] for x in grp), key=float)
        vol = f"{sum(float(x[5]) for x in grp):.1f}"
        rows5.append([grp[0][0], grp[0][1], hi, lo, grp[-1][4], vol, grp[0][0] + FIVE_M - 1, "0", 0, "0", "0", "0"])
    return rows1, rows5, first_boundary


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_shadow_run_against_the_fake_exchange(tmp_path: Any) -> None:
    """The real CLI, as an operator runs it, on a local Binance: decisions, metrics and a report."""
    import os
    import shutil
    import signal
    import sys
    import time

    import httpx
    import yaml

    from tests.conftest import DEFAULTS, REPO

    base = yaml.safe_load((DEFAULTS / "settings.yaml").read_text())
    base["runtime"].update(symbols=["XRPUSDT"], timeframes=["1m", "5m"], primary_timeframe="1m")
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump(base))
    shutil.copytree(DEFAULTS / "profiles", tmp_path / "profiles")
    now = int(time.time() * 1000)
    rows1, rows5, _ = _live_dataset(now)
    by_open5 = {r[0]: r for r in rows5}
    by_close1 = {r[6] + 1: r for r in rows1}

    async def feed(srv: FakeBinance, conn: Any) -> None:
        if "xrpusdt@kline_1m" not in conn.streams.values():
            return
        # Three bars close inside the run window (sent ahead of the wall clock, as market time may run);
        # then a bar far past the window ends the run.
        t = int(time.time() * 1000)
        first = t - t % 60_000 + 60_000  # the next minute close after the source connected
        for b in (first, first + 60_000, first + 120_000, first + 300_000):
            r1 = by_close1[b]
            await srv.send_to(conn, ws_kline("XRPUSDT", "1m", r1))
            r5 = by_open5.get(b - FIVE_M)
            if r5 is not None:
                await srv.send_to(conn, ws_kline("XRPUSDT", "5m", r5))
            await asyncio.sleep(0.3)

    async def go() -> dict[str, Any]:
        klines = {("XRPUSDT", "1m"): rows1, ("XRPUSDT", "5m"): rows5}
        async with FakeBinance(lambda: int(time.time() * 1000), exchange_info=_info(), klines=klines,
                               on_connect=feed) as srv:  # fmt: skip
            env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_")}
            env.update(
                # runtime.* comes from a settings file: with a CLI flag on the runtime section (--source),
                # ULTRA_SIGNALS_RUNTIME__* variables are not applied (reported to the lead).
                ULTRA_SIGNALS_SETTINGS=str(settings_file),
                ULTRA_SIGNALS_BINANCE__REST_URL=srv.rest_url,
                ULTRA_SIGNALS_BINANCE__WS_URL=srv.ws_url,
                ULTRA_SIGNALS_SCORING__ENTRY_THRESHOLD="0.01",  # every warm bar proposes: decisions to see
                ULTRA_SIGNALS_REPORT__DIR=str(tmp_path / "reports"),
                ULTRA_SIGNALS_REPORT__CHARTS="false",
                ULTRA_SIGNALS_NOTIFIER__SINK="console",
                COLUMNS="200",
            )
            cmd = [sys.executable, "-m", "ultra_signals", "shadow", "--source", "binance", "--duration", "4",
                   "--metrics-port", "0", "--hold-metrics", "20", "--journal", f"sqlite:///{tmp_path}/j.db",
                   "--decisions-out", str(tmp_path / "decisions.jsonl")]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            assert proc.stdout is not None
            out: list[str] = []
            port = None
            try:
                while True:
                    line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
                    if not line:
                        break
                    out.append(line)
                    if "metrics were served on" in line:
                        port = int(line.rsplit(":", 1)[1].split("/")[0])
                    if "holding the metrics endpoint" in line:
                        break
                assert port is not None, "".join(out)
                async with httpx.AsyncClient() as client:
                    scraped = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        await asyncio.wait_for(proc.wait(), 10)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            return {"out": "".join(out), "metrics": scraped, "rest": list(srv.rest_log)}

    res = asyncio.run(go())
    out, scraped = res["out"], res["metrics"]
    reports = list((tmp_path / "reports").glob("shadow_results_*.json"))
    assert len(reports) == 1, out
    data = json.loads(reports[0].read_text())
    assert data["source"] == "binance" and data["simulated"] is False and data["crash"] is None
    # Every closed 1m bar of the run window was decided on, and nothing else: 3 from the stream, a 4th when a
    # minute closed while the run was starting up.  That 4th may come in the REST warm-up batch (then counted among
    # the 210 warm-up input bars) or after it, so the window is taken from the journal, not from input_bars.
    live_1m = data["input_bars"] - 210  # input_bars counts the 210 warm-up bars too
    assert live_1m in (3, 4), out
    from ultra_signals.journal.writer import Journal

    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    run = journal.run(data["run_id"])
    journal.close()
    assert run is not None
    start, end = int(run["market_start_ms"]), int(run["market_end_ms"])
    window = list(range(start - start % 60_000 + 60_000, end + 1, 60_000))  # closes (event time) in (start, end]
    decided = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert sorted(d["ts"] for d in decided if d["timeframe"] == "1m") == window, out
    assert len(window) in (3, 4) and sum(data["candidates_by_symbol"].values()) == len(decided), out
    assert data["events"].get("Kline", 0) >= 3
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
               if line and not line.startswith("#")}  # fmt: skip
    assert samples["ws_connected"] == 0.0  # exported, and reset when the source closed at the end
    assert samples['ws_messages_total{stream="kline"}'] >= 4
    assert 'rest_requests_total{endpoint="/fapi/v1/klines",status="200"} 2.0' in scraped
    assert 'rest_requests_total{endpoint="/fapi/v1/exchangeInfo",status="200"} 1.0' in scraped
    assert "signals_candidates_total" in scraped
    assert [p for p, _ in res["rest"]][:1] == ["/fapi/v1/exchangeInfo"]


# -- beyond capacity: the inbox merges depth diffs and book tickers, never klines (issue 13) ---------------------
def _offline_source(m: Metrics, shed_after: int) -> BinanceSource:
    """A source whose consumer is driven by hand: books live from the recorded snapshots, nothing connected."""
    from ultra_signals.sources.binance.parse import parse_depth_snapshot

    _, snaps = _recording()
    s = load_settings(
        environ={},
        overrides={"runtime.source": "binance", "runtime.symbols": SYMS_2021, "runtime.timeframes": ["1m"],
                   "runtime.primary_timeframe": "1m", "runtime.warmup_bars": 0, "sniper.mtf_confirm": False,
                   "binance.rest_url": "http://127.0.0.1:9", "binance.ws_url": "ws://127.0.0.1:9"},
    )  # fmt: skip
    src = BinanceSource(s, m, clock=ManualClock(1_626_992_741_000), shed_after=shed_after)
    for sym in SYMS_2021:
        src.books[sym].apply_snapshot(parse_depth_snapshot(json.loads(snaps[sym])))
    return src


async def _drain(src: BinanceSource) -> list[MarketEvent]:
    from ultra_signals.sources.binance.ws import WsMessage

    out: list[MarketEvent] = []
    inbox = src._inbox
    while len(inbox):
        item = inbox.pop()
        out += await src._handle(item)
        assert not isinstance(item, WsMessage) or item.raw  # every item a real message
    return out


def test_backlog_merges_depth_diffs_exactly_and_never_sheds_klines_or_trades() -> None:
    """The recorded stream arrives while the consumer is busy (all of it queued before it runs): beyond the mark
    depth diffs merge per stream and book tickers keep the latest; the books end exactly as a plain replay of every
    diff, every kline and trade is there in order, and every merged message is counted, none lost."""
    from ultra_signals.sources.binance.ws import WsMessage

    msgs, snaps = _recording()

    async def go() -> None:
        m = Metrics()
        src = _offline_source(m, shed_after=20)
        for raw in msgs:
            src._inbox.push(WsMessage("market-0", raw.encode(), 0, 0.0))
        queued = len(src._inbox)
        kline_items = [x for x in src._inbox.items if isinstance(x, WsMessage) and b"@kline_" in x.raw[:40]]
        events = await _drain(src)
        await src.aclose()
        assert queued < len(msgs) // 4  # merged: 1,535 messages in far fewer items
        assert len(kline_items) == 67  # klines are never merged
        ks = [e for e in events if isinstance(e, Kline)]
        closed = [json.loads(x)["data"]["k"] for x in msgs if '"x":true' in x]
        assert [(k.symbol, k.open_time, k.close) for k in ks] == [(c["s"], c["t"], float(c["c"])) for c in closed]
        assert sum(isinstance(e, Trade) for e in events) == 91
        for sym in SYMS_2021:
            diffs = [json.loads(x)["data"] for x in msgs if f'"s":"{sym}"' in x and "depthUpdate" in x]
            assert (src.books[sym].bids, src.books[sym].asks) == _replay_book(snaps[sym], diffs), sym
            assert src.books[sym].last_update_id == diffs[-1]["u"]
            tickers = [e for e in events if isinstance(e, BookTicker) and e.symbol == sym]
            last = [json.loads(x)["data"] for x in msgs if f'"s":"{sym}"' in x and '"bookTicker"' in x][-1]
            assert tickers and tickers[-1].bid == float(last["b"]) and tickers[-1].ask == float(last["a"])
        st = src.stats
        assert st.resyncs == {} and st.message_errors == {}
        assert st.messages == len(msgs)  # handled, merged or replaced: none lost
        assert st.coalesced["depth"] > 500 and st.coalesced["bookTicker"] > 400
        assert metric(m, "ws_messages_coalesced_total", {"stream": "depth"}) == st.coalesced["depth"]
        assert metric(m, "ws_messages_coalesced_total", {"stream": "bookTicker"}) == st.coalesced["bookTicker"]
        assert metric(m, "ws_messages_total", {"stream": "depth"}) == 764  # each merged diff counted as received

    _run(go)


def test_a_diff_missing_from_a_merged_run_resyncs_instead_of_vanishing() -> None:
    """A diff lost before the inbox breaks the U/u/pu chain inside a merged slot: the book resyncs (counted)."""
    from ultra_signals.sources.binance.ws import WsMessage

    msgs, _ = _recording()
    sushi = [x for x in msgs if '"s":"SUSHIUSDT"' in x and "depthUpdate" in x]

    async def go() -> None:
        m = Metrics()
        src = _offline_source(m, shed_after=0)
        for raw in sushi[:40]:  # the book goes live on these
            src._inbox.push(WsMessage("public-0", raw.encode(), 0, 0.0))
        await _drain(src)
        assert src.books["SUSHIUSDT"].state.value == "live"
        for i, raw in enumerate(sushi[40:80]):
            if i != 17:  # this one never arrived
                src._inbox.push(WsMessage("public-0", raw.encode(), 0, 0.0))
        assert len(src._inbox) == 1  # all merged into one slot
        await _drain(src)
        await src.aclose()
        assert src.stats.resyncs == {"SUSHIUSDT": 1}
        assert metric(m, "orderbook_resyncs_total", {"symbol": "SUSHIUSDT"}) == 1
        assert src.books["SUSHIUSDT"].need_snapshot()

    _run(go)


def test_pings_are_answered_while_a_backlog_waits() -> None:
    """The consumer stalls (a slow runner) while thousands of messages arrive and the server pings every 0.1 s,
    dropping a client that does not answer within 0.3 s: the readers keep reading (the backlog waits in the
    inbox), so the connection stays up, and every message is handled afterwards."""
    msgs, snaps = _recording()
    clock = ManualClock(1_626_992_741_000)
    trades = [x for x in msgs if "aggTrade" in x[:40]]

    async def go() -> None:
        m = Metrics()
        async with FakeBinance(clock.now_ms, exchange_info=_info(), depth_snapshots=snaps, ping_interval_s=0.1) as srv:
            over = {"runtime.symbols": SYMS_2021, "runtime.timeframes": ["1m"], "runtime.primary_timeframe": "1m",
                    "runtime.warmup_bars": 0}  # fmt: skip
            src = BinanceSource(_settings(srv, **over), m, clock=clock)
            got: list[MarketEvent] = []
            stalled = asyncio.Event()

            async def slow_runner() -> None:
                async for ev in src.events():
                    got.append(ev)
                    if not stalled.is_set():
                        stalled.set()
                        await asyncio.sleep(1.5)  # the runner is busy; the event loop is not

            task = asyncio.create_task(slow_runner())
            await srv.wait_connections(2)
            await srv.send(trades[0])
            await asyncio.wait_for(stalled.wait(), 5)
            # Many repeats of the recording's trades (ids rewritten so none is a duplicate).
            base = json.loads(trades[1])
            for i in range(3000):
                base["data"]["a"] = 10_000_000 + i
                await srv.send(json.dumps(base, separators=(",", ":")))
            await asyncio.sleep(1.6)
            backlog = src.stats.max_backlog
            deadline = asyncio.get_running_loop().time() + 10
            while sum(isinstance(e, Trade) for e in got) < 3001 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            connects = srv.connects
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await src.aclose()
        assert backlog > 1000  # the backlog was real
        assert (
            connects == 2 and sum(metric(m, "ws_reconnects_total", {"reason": r}) for r in ("dropped", "silent")) == 0
        )
        assert sum(isinstance(e, Trade) for e in got) == 3001

    _run(go)


def test_sharded_runners_split_the_per_ip_connection_budget() -> None:
    from ultra_signals.sources.binance.source import connect_limiter

    assert connect_limiter(None).max_attempts == 300
    assert connect_limiter("0/4").max_attempts == 75 and connect_limiter("3/4").window_s == 300.0


@pytest.mark.parametrize(
    ("over", "kinds"),
    [
        ({}, ["kline", "trade", "markPrice", "bookTicker", "depth"]),  # "all", the default
        ({"binance.streams": "needed", "execution.broker": "none"}, ["kline"]),
        (
            {"binance.streams": "needed", "execution.broker": "none", "filters.max_spread_bps": 5.0},
            ["kline", "bookTicker"],
        ),
        (
            {"binance.streams": "needed", "execution.broker": "none", "filters.funding_blackout_min": 10.0},
            ["kline", "markPrice"],
        ),
        ({"binance.streams": "needed", "execution.broker": "none", "filters.min_depth_usdt": 1e4}, ["kline", "depth"]),
        ({"binance.streams": "needed", "execution.broker": "paper"}, ["kline", "trade", "markPrice", "bookTicker"]),
    ],
)
def test_the_needed_stream_set_subscribes_what_the_pipeline_reads(over: dict[str, Any], kinds: list[str]) -> None:
    """Klines feed every feature; book ticker, mark price and depth only the filters (and the executor's quotes,
    fills and funding) that read them: "needed" leaves out only what nothing reads."""
    o: dict[str, Any] = {"runtime.source": "binance", "runtime.symbols": ["BTCUSDT", "ETHUSDT"],
                         "runtime.timeframes": ["1m", "5m"], "runtime.primary_timeframe": "1m"}  # fmt: skip
    src = BinanceSource(load_settings(environ={}, overrides={**o, **over}), Metrics())
    assert src.stream_kinds() == kinds
    streams = src.streams()
    assert [s for s in streams if s.startswith("btcusdt@kline_")] == ["btcusdt@kline_1m", "btcusdt@kline_5m"]
    per_symbol = len(streams) // 2
    assert per_symbol == 2 + len(kinds) - 1
    assert any("@depth@" in s for s in streams) == ("depth" in kinds)
    assert any("@bookTicker" in s for s in streams) == ("bookTicker" in kinds)


def test_repeats_in_a_merged_run_are_skipped_like_one_by_one() -> None:
    """During a planned swap both connections deliver the same diffs; merged into one slot, the repeats are skipped
    (as STALE one by one) and do not break the chain: no resync, the book equals a plain replay."""
    from ultra_signals.sources.binance.ws import WsMessage

    msgs, snaps = _recording()
    sushi = [x for x in msgs if '"s":"SUSHIUSDT"' in x and "depthUpdate" in x]

    async def go() -> None:
        m = Metrics()
        src = _offline_source(m, shed_after=0)
        for raw in sushi[:40]:
            src._inbox.push(WsMessage("public-0", raw.encode(), 0, 0.0))
        await _drain(src)
        for raw in sushi[40:]:
            src._inbox.push(WsMessage("public-0", raw.encode(), 0, 0.0))
            src._inbox.push(WsMessage("public-0-next", raw.encode(), 0, 0.0))  # the successor's copy
        await _drain(src)
        await src.aclose()
        assert src.stats.resyncs == {}
        diffs = [json.loads(x)["data"] for x in sushi]
        book = src.books["SUSHIUSDT"]
        assert (book.bids, book.asks) == _replay_book(snaps["SUSHIUSDT"], diffs)
        assert book.last_update_id == diffs[-1]["u"]

    _run(go)
