"""Live Binance USDⓈ-M market data as a :class:`~ultra_signals.sources.base.MarketSource`.

The promises the pipeline relies on, and where each is kept:

- *Only final bars decide*: a websocket kline is used only with ``x: true``; REST bars only once their close
  time has passed on the exchange's clock (``rest.closed_klines``).
- *A bar never triggers twice*: bars are identified by (symbol, timeframe, open time); per key the source
  remembers the latest open time emitted, and anything not newer (a repeat, a replay after a reconnect, the
  overlap of a planned swap) is dropped.
- *No hole in history*: at start, ``warmup_bars`` closed bars per timeframe come from REST; after every
  (re)connect (for the pairs of that connection and of any kline connection still down), and whenever a bar
  arrives that is not the successor of the previous one, the missing closed bars are fetched from REST first
  and emitted in order, before the live bar.
- *Coarsest first at a shared close*: bars closing at the same instant are held up to ``close_grace_s`` until
  every configured timeframe closing then has arrived; one still missing is fetched from REST.
- *Bad input never crashes*: malformed or unexpected messages are counted in
  ``ws_message_errors_total{kind}`` and skipped.

One consumer (``events()``) owns all state; websocket readers and snapshot fetches only put items on its
inbox, so there are no locks.

Beyond capacity (issue 13): the inbox never blocks a websocket reader (which would stop ``websockets`` from
reading the socket, and its pongs with it), and it never drops a message silently.  Once the backlog passes
``shed_after`` items, a new depth diff of a stream that already has one waiting joins it (one slot per stream,
at the position of the first): the consumer parses them all and applies the contiguous chain as one diff (levels
merged, later quantity wins; ``U`` of the first, ``u`` of the last, ``pu`` of the first), so the book ends
exactly where applying them one by one would, and a break in the chain still resyncs.  A book ticker joining a
waiting one replaces it (only the latest quote is state).  Klines, trades and mark prices are never merged or
dropped.  Every merged message is counted in ``ws_messages_coalesced_total{stream}`` and ``stats.coalesced``.
Past ``max_backlog`` items (only klines, trades and mark prices can get there) the reader waits for room.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from ultra_signals.core.backoff import backoff_delay
from ultra_signals.core.clock import Clock, WallClock
from ultra_signals.core.config import Settings
from ultra_signals.core.events import BookDepth, Funding, Kline, MarketEvent
from ultra_signals.core.instruments import SymbolFilters, parse_exchange_info
from ultra_signals.core.timeframes import tf_ms
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceError, SourceInfo
from ultra_signals.sources.binance.flow import FlowTracker
from ultra_signals.sources.binance.orderbook import BookState, OrderBook, Outcome, coalesce
from ultra_signals.sources.binance.parse import (
    BookTickerMsg,
    DepthDiff,
    DepthSnapshot,
    ParseError,
    TradeMsg,
    parse_message,
)
from ultra_signals.sources.binance.rest import (
    BinanceRest,
    RestError,
)
from ultra_signals.sources.binance.ws import (
    ConnectLimiter,
    StreamPool,
    WsMessage,
    WsOptions,
    WsStatus,
    build_urls,
)
from ultra_signals.venues.binance.endpoints import endpoints_from_settings

log = logging.getLogger(__name__)

_WEEK_ANCHOR_MS = 4 * 86_400_000  # Binance weeks open on Monday 00:00 UTC; the epoch was a Thursday


def closes_at(tf: str, boundary_ms: int) -> bool:
    """Whether a bar of ``tf`` closes exactly at ``boundary_ms`` (its close_time + 1)."""
    anchor = _WEEK_ANCHOR_MS if tf.endswith("w") else 0
    return (boundary_ms - anchor) % tf_ms(tf) == 0


#: Binance USDⓈ-M: new websocket connections per IP per 5 minutes (``ConnectLimiter``).
CONNECTS_PER_IP_5MIN = 300


def connect_limiter(shard: str | None) -> ConnectLimiter:
    """This process's share of the per-IP connection budget: runners sharded ``i/n`` are assumed to share one IP,
    so each may open at most ``300 // n`` connections per 5 minutes (a reconnect storm of all of them stays
    within Binance's limit)."""
    n = int(shard.split("/")[1]) if shard else 1
    return ConnectLimiter(max(1, CONNECTS_PER_IP_5MIN // max(1, n)), 300.0)


def _order(k: Kline) -> tuple[int, int, str]:
    """Event-time order; at a shared close the coarsest timeframe first."""
    return (k.close_time, -tf_ms(k.timeframe), k.symbol)


@dataclass(slots=True)
class SourceStats:
    """What the source did about faults, for the run report (metrics carry the same as counters)."""

    warmup_bars: int = 0
    live_bars: int = 0
    duplicate_bars_dropped: int = 0
    gap_bars_filled: int = 0
    #: (symbol, timeframe) pairs due for a check after a reconnect but not asked of REST because their own kline
    #: connection was up (its stream delivers their closes); counted once per reconnect that skipped them.
    refills_skipped: int = 0
    bars_fetched_after_grace: int = 0
    gaps_unfilled: int = 0
    duplicate_ticks_dropped: int = 0
    open_klines_ignored: int = 0
    message_errors: dict[str, int] = field(default_factory=dict)
    resyncs: dict[str, int] = field(default_factory=dict)
    #: Websocket messages accounted for: handled, merged into another, or replaced by a newer book ticker.
    messages: int = 0
    #: Messages merged into another under backlog, by stream type (depth, bookTicker).
    coalesced: dict[str, int] = field(default_factory=dict)
    #: Times a websocket reader waited for room (backlog at ``max_backlog``: klines/trades/mark prices only).
    backlog_waits: int = 0
    #: Largest backlog seen (items in the inbox).
    max_backlog: int = 0


@dataclass(slots=True, frozen=True)
class _SnapshotResult:
    symbol: str
    snapshot: DepthSnapshot | None
    error: str | None = None


@dataclass(slots=True)
class _Group:
    """Closed bars of one symbol sharing a close instant, waiting for the rest of their timeframes."""

    symbol: str
    boundary: int
    bars: dict[str, Kline]
    deadline: float


@dataclass(slots=True)
class _Merged:
    """Messages of one depth or bookTicker stream merged under backlog, waiting at the first one's place."""

    key: bytes | str
    kind: str
    msgs: list[WsMessage]
    taken: bool = False


_DEPTH_TAG, _TICKER_TAG = "@depth", "@bookTicker"


def _shed_key(raw: str | bytes) -> tuple[str | bytes, str] | None:
    """(stream name, kind) of a depth or bookTicker message in Binance's combined wrapper, read from its first
    bytes without parsing (``{"stream":"btcusdt@depth@100ms","data":…}``); None for anything else."""
    head = raw[:80]
    if isinstance(head, bytes):
        if not head.startswith(b'{"stream":"'):
            return None
        end = head.find(b'"', 11)
        if end < 0:
            return None
        name_b = head[11:end]
        if b"@depth" in name_b:
            return name_b, "depth"
        if b"@bookTicker" in name_b:
            return name_b, "bookTicker"
        return None
    if not head.startswith('{"stream":"'):
        return None
    end = head.find('"', 11)
    if end < 0:
        return None
    name = head[11:end]
    if _DEPTH_TAG in name:
        return name, "depth"
    if _TICKER_TAG in name:
        return name, "bookTicker"
    return None


class _Inbox:
    """The consumer's queue: FIFO, never blocks a websocket reader below ``max_backlog``, merges depth diffs and
    book tickers per stream beyond ``shed_after`` (see the module docstring)."""

    def __init__(self, shed_after: int, max_backlog: int, stats: SourceStats, coalesced: Any) -> None:
        self.items: deque[WsMessage | WsStatus | _SnapshotResult | _Merged] = deque()
        self.shed_after, self.max_backlog = shed_after, max_backlog
        self._slots: dict[bytes | str, _Merged] = {}
        self._stats = stats
        self._coalesced = coalesced  # the Prometheus counter
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: WsMessage | WsStatus | _SnapshotResult) -> Awaitable[None] | None:
        items = self.items
        n = len(items)
        if n < self.shed_after:
            if self._slots:  # below the mark again: later messages queue behind the waiting slots, in order
                self._slots.clear()
        elif type(item) is WsMessage:
            sk = _shed_key(item.raw)
            if sk is not None:
                key, kind = sk
                slot = self._slots.get(key)
                if slot is not None and not slot.taken:
                    if kind == "bookTicker":
                        slot.msgs[0] = item  # only the latest quote is state
                        self._stats.messages += 1  # the replaced one: accounted for, not lost
                    else:
                        slot.msgs.append(item)
                    self._stats.coalesced[kind] = self._stats.coalesced.get(kind, 0) + 1
                    self._coalesced.labels(stream=kind).inc()
                    return None
                slot = self._slots[key] = _Merged(key, kind, [item])
                items.append(slot)
                self._wake()
                return None
        items.append(item)
        if n + 1 > self._stats.max_backlog:
            self._stats.max_backlog = n + 1
        self._wake()
        if n + 1 >= self.max_backlog and type(item) is WsMessage:
            self._stats.backlog_waits += 1
            return self._wait_room()
        return None

    async def put(self, item: WsMessage | WsStatus | _SnapshotResult) -> None:
        r = self.push(item)
        if r is not None:
            await r

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait_room(self) -> None:
        while len(self.items) >= self.max_backlog:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    def pop(self) -> WsMessage | WsStatus | _SnapshotResult | _Merged:
        item = self.items.popleft()
        if type(item) is _Merged:
            item.taken = True
            if self._slots.get(item.key) is item:
                del self._slots[item.key]
        room = self._room
        if room is not None and not room.done() and len(self.items) < self.max_backlog // 2:
            room.set_result(None)
        return item

    async def wait(self, timeout: float) -> bool:
        """Until an item is there (True) or ``timeout`` seconds passed (False): one future, one timer."""
        if self.items:
            return True
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _settle, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None
        return bool(self.items)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class BinanceSource:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        duration_minutes: int | None = None,
        clock: Clock | None = None,
        *,
        rng: random.Random | None = None,
        shed_after: int = 5_000,
        max_backlog: int = 200_000,
    ) -> None:
        self._s = settings
        self._b = b = settings.binance
        self._m = metrics
        self._clock: Clock = clock or WallClock()
        self._rng = rng or random.Random()
        rt = settings.runtime
        self._symbols = list(rt.symbols)
        self._tfs = list(rt.timeframes)  # finest first
        self._warmup = rt.warmup_bars
        ends = endpoints_from_settings(b)
        self.rest_url, self.ws_url = ends.rest, ends.ws
        # The market time at which the live run starts: this instant, on the exchange's clock.  Taken here on
        # ours and moved by the exchange's offset once :meth:`open` has measured it (a local clock 30 s slow
        # would otherwise decide on a bar that closed 30 s before the start).  Bars that close before it are
        # warm-up; every bar closing after it is decided on, whether it arrived by REST (during warm-up) or by
        # websocket.
        self._run_start = self._clock.now_ms()
        self._run_end = None if duration_minutes is None else self._run_start + int(duration_minutes) * 60_000
        notices = [f"binance {'testnet' if b.testnet else 'mainnet'}: REST {self.rest_url}, ws {self.ws_url}"]
        self._info = SourceInfo("binance", False, self._symbols, self._tfs, False, notices)
        self._rest = BinanceRest(
            self.rest_url,
            metrics,
            timeout_s=b.rest_timeout_s,
            max_retries=b.rest_max_retries,
            backoff_base_s=b.reconnect_backoff_base_s,
            backoff_max_s=b.reconnect_backoff_max_s,
            weight_soft_limit=b.rest_weight_soft_limit,
            max_retry_after_s=b.rest_max_retry_after_s,
            rng=self._rng,
        )
        #: Trading rules per symbol from exchangeInfo (filled at start; the execution layer reuses them).
        self.symbol_filters: dict[str, SymbolFilters] = {}
        #: Taker flow and CVD per bar of the finest timeframe.
        self.flow = FlowTracker(self._tfs[0])
        self.books = {s: OrderBook(s, max_levels=max(b.depth_snapshot_limit, b.depth_levels)) for s in self._symbols}
        self.stats = SourceStats()
        self.server_offset_ms = 0
        #: Wall time (s) the socket read the message behind the event last yielded (REST and warm-up bars: when the
        #: source produced them).  The runner reads it right after each event: tick-to-decision includes the queue.
        self.received_at: float | None = None
        self._recv_at: dict[tuple[str, str, int], float] = {}  # closed bars waiting in a close group
        self._last_open: dict[tuple[str, str], int] = {}
        self._last_trade: dict[str, int] = {}
        self._last_ticker: dict[str, int] = {}
        self._last_mark: dict[str, int] = {}
        self._last_summary: dict[str, int] = {}
        self._last_event_ms: dict[str, int] = {}
        self._groups: dict[tuple[str, int], _Group] = {}
        self._snap_tasks: dict[str, asyncio.Task[None]] = {}
        self._snap_pending: set[str] = set()  # asked for, answer not yet applied (it may sit in the queue)
        self._snap_failures: dict[str, int] = {}
        #: Beyond ``shed_after`` waiting items depth diffs and book tickers are merged per stream (counted);
        #: at ``max_backlog`` the websocket readers wait (only klines, trades and mark prices can get there).
        self._inbox = _Inbox(shed_after, max_backlog, self.stats, metrics.ws_coalesced)
        # Metric children bound once: ``labels()`` per message was a measurable share of the per-message cost.
        wm = metrics.ws_messages
        self._count = {k: wm.labels(stream=k) for k in ("kline", "markPrice", "bookTicker", "depth")}
        self._count_trade = wm.labels(stream=self._b.trade_stream)
        self._pool: StreamPool | None = None
        self._kline_conns: set[str] = set()
        #: The kline connection carrying each (symbol, timeframe), and the kline connections up as the consumer last
        #: saw them (from the WsStatus items it handled, in queue order, so a refill decision depends on the queue
        #: alone).  A reconnect refills only pairs whose connection is not in ``_kline_up``.
        self._conn_of: dict[tuple[str, str], str] = {}
        self._kline_up: set[str] = set()
        self._closed = False
        self._opened = False

    # -- MarketSource -----------------------------------------------------------------------------------
    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def run_start_ms(self) -> int:
        return self._run_start

    @property
    def run_end_ms(self) -> int | None:
        return self._run_end

    def stream_kinds(self) -> list[str]:
        """Which stream kinds each symbol subscribes (``binance.streams``): all, or only what is read.

        With "needed": klines always (every feature and decision); book ticker, trades and mark price when an
        executor quotes, fills or settles funding from them (``execution.broker`` not ``none``) or when the
        spread / funding filter reads them; depth only for the min-depth filter.  Nothing read is left out, so
        decisions and fills are the same as with "all".
        """
        if self._b.streams == "all":
            return ["kline", "trade", "markPrice", "bookTicker", "depth"]
        f = self._s.filters
        broker = self._s.execution.broker != "none"
        kinds = ["kline"]
        if broker:
            kinds.append("trade")
        if broker or f.funding_blackout_min is not None:
            kinds.append("markPrice")
        if broker or f.max_spread_bps is not None:
            kinds.append("bookTicker")
        if f.min_depth_usdt is not None:
            kinds.append("depth")
        return kinds

    def streams(self) -> list[str]:
        """Stream names subscribed, lower-case as Binance requires."""
        kinds = set(self.stream_kinds())
        out = []
        for s in self._symbols:
            sym = s.lower()
            out += [f"{sym}@kline_{tf}" for tf in self._tfs]
            if "trade" in kinds:
                out.append(f"{sym}@{self._b.trade_stream}")
            if "markPrice" in kinds:
                out.append(f"{sym}@markPrice@1s")
            if "bookTicker" in kinds:
                out.append(f"{sym}@bookTicker")
            if "depth" in kinds:
                out.append(f"{sym}@depth@{self._b.depth_speed}")
        return out

    async def open(self) -> None:
        """Check the symbols against exchangeInfo and measure the exchange's clock; the run window moves onto it."""
        if not self._opened:
            await self._check_exchange()
            self._opened = True

    async def events(self) -> AsyncIterator[MarketEvent]:
        await self.open()
        b = self._b
        urls = build_urls(self.ws_url, self.streams(), b.ws_routing, b.max_streams_per_connection)
        opts = WsOptions(
            silence_timeout_s=b.silence_timeout_s,
            backoff_base_s=b.reconnect_backoff_base_s,
            backoff_max_s=b.reconnect_backoff_max_s,
            planned_reconnect_s=b.planned_reconnect_h * 3600.0,
            open_timeout_s=b.open_timeout_s,
        )
        opts.raw_bytes = True  # the JSON parser reads the frame's bytes; no str decode per message
        self._pool = StreamPool(
            urls, self._inbox.push, self._m, opts, self._rng, connect_limiter(self._s.runtime.shard)
        )
        self._track_kline_conns(urls)
        self._pool.start()  # connect first: everything from now on is buffered while warm-up loads
        for k in await self._warmup_bars():
            self.stats.warmup_bars += 1
            self.received_at = time.time()
            yield k
        idle = 0.0
        inbox = self._inbox
        loop = asyncio.get_running_loop()
        while not self._closed:
            if self._run_end is not None and self._now() >= self._run_end + int(b.close_grace_s * 1000):
                for ev in await self._flush(list(self._groups.values()), []):
                    self._stamp(ev, None)
                    yield ev
                return
            if not inbox:
                timeout = 1.0
                if self._groups:
                    timeout = max(0.0, min(timeout, min(g.deadline for g in self._groups.values()) - loop.time()))
                if not await inbox.wait(timeout):
                    idle += timeout
                    if idle >= 1.0:
                        self._report_idle_age()
                        idle = 0.0
            idle = 0.0 if inbox else idle
            # A slice of the backlog (≤ 256 items and ~1 ms, the runner's work on its events included), then one
            # turn of the event loop: sockets are read (and stamped) and pings answered at least every ~1 ms plus
            # one item, so time spent in the kernel's socket buffer, which no stamp can count, stays that short.
            slice_end = loop.time() + 0.001
            for _ in range(min(len(inbox), 256)):
                item = inbox.pop()
                if type(item) is WsMessage:
                    recv: float | None = item.recv_s
                elif type(item) is _Merged:
                    recv = item.msgs[0].recv_s  # the oldest: its wait counts
                else:
                    recv = None
                for ev in await self._handle(item):
                    self._stamp(ev, recv)
                    yield ev
                if self._closed:
                    return
                if loop.time() >= slice_end:
                    break
            if self._groups:
                for ev in await self._flush_due(loop.time()):
                    self._stamp(ev, None)
                    yield ev
            if inbox:
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()
        for t in self._snap_tasks.values():
            t.cancel()
        await asyncio.gather(*self._snap_tasks.values(), return_exceptions=True)
        await self._rest.aclose()

    def _stamp(self, ev: MarketEvent, recv: float | None) -> None:
        """Set :attr:`received_at` for ``ev``: its own message's socket read when it waited in a close group."""
        if isinstance(ev, Kline):
            recv = self._recv_at.pop(ev.key, recv)
        self.received_at = recv if recv is not None else time.time()

    # -- start ------------------------------------------------------------------------------------------
    def _now(self) -> int:
        """The exchange's clock as best we know it: ours plus the offset measured at start."""
        return self._clock.now_ms() + self.server_offset_ms

    def exchange_now_ms(self) -> int:
        """The exchange's clock, for the engine's wall-clock freshness check (stale REST backfill after a drop)."""
        return self._now()

    async def _check_exchange(self) -> None:
        t0 = self._clock.now_ms()
        try:
            info = await self._rest.exchange_info()
        except RestError as e:
            raise SourceError(f"binance: exchangeInfo from {self.rest_url} failed: {e}") from None
        t1 = self._clock.now_ms()
        try:
            self.symbol_filters = parse_exchange_info(info)
        except ValueError as e:
            raise SourceError(f"binance: {e}") from None
        unknown = [s for s in self._symbols if s not in self.symbol_filters]
        halted = [
            f"{s} (status {self.symbol_filters[s].status})"
            for s in self._symbols
            if s in self.symbol_filters and not self.symbol_filters[s].trading
        ]
        if unknown or halted:
            parts = []
            if unknown:
                parts.append(f"unknown on Binance USDⓈ-M: {', '.join(unknown)}")
            if halted:
                parts.append(f"not trading: {', '.join(halted)}")
            raise SourceError(f"binance: runtime.symbols: {'; '.join(parts)}")
        for s in self._symbols:
            ct = self.symbol_filters[s].contract_type
            if ct != "PERPETUAL":
                self._info.notices.append(f"{s} is {ct or 'not a perpetual'}, not a perpetual contract")
        server = info.get("serverTime") if isinstance(info, dict) else None
        if isinstance(server, int):
            self.server_offset_ms = server - (t0 + t1) // 2
            if abs(self.server_offset_ms) > 1000:
                log.warning("binance: local clock is %d ms off the exchange's; using its time", self.server_offset_ms)
            self._run_start += self.server_offset_ms
            if self._run_end is not None:
                self._run_end += self.server_offset_ms

    async def _warmup_bars(self) -> list[Kline]:
        if self._warmup <= 0:
            return []
        now = self._now()
        sem = asyncio.Semaphore(4)

        async def one(sym: str, tf: str) -> list[Kline]:
            length = tf_ms(tf)
            start = now - now % length - (self._warmup + 1) * length
            async with sem:
                try:
                    bars = await self._rest.closed_klines(sym, tf, start, now)
                except RestError as e:
                    raise SourceError(f"binance: warm-up klines {sym} {tf} failed: {e}") from None
            return bars[-self._warmup :]

        batches = await asyncio.gather(*(one(s, tf) for s in self._symbols for tf in self._tfs))
        bars = sorted((k for batch in batches for k in batch), key=_order)
        for k in bars:
            self._last_open[(k.symbol, k.timeframe)] = k.open_time
        return bars

    # -- consumer ---------------------------------------------------------------------------------------
    async def _handle(self, item: WsMessage | WsStatus | _SnapshotResult | _Merged) -> list[MarketEvent]:
        if type(item) is not WsMessage:
            if isinstance(item, _Merged):
                return await self._handle_merged(item)
            if isinstance(item, WsStatus):
                if item.conn not in self._kline_conns:
                    return []
                # Down, or (re)connected: either way its stream has not delivered since, so its pairs are refilled
                # now (by this reconnect) or by the next reconnect of any kline connection while it stays down.
                self._kline_up.discard(item.conn)
                if not item.connected:
                    return []
                out = list(await self._fill_all_gaps())
                self._kline_up.add(item.conn)
                return out
            assert isinstance(item, _SnapshotResult)
            return self._on_snapshot(item)
        self.stats.messages += 1
        try:
            msg = parse_message(item.raw)
        except ParseError as e:
            self._error(e.kind, str(e))
            return []
        return await self._on_message(msg, item)

    async def _on_message(self, msg: Any, item: WsMessage) -> list[MarketEvent]:
        t = type(msg)
        if t is DepthDiff:
            self._count["depth"].inc()
            return self._on_depth(msg)
        if t is BookTickerMsg:
            self._count["bookTicker"].inc()
            bt = msg.ticker
            if not self._known(bt.symbol) or not self._newer(self._last_ticker, bt.symbol, msg.update_id):
                return []
            self._seen(bt.symbol, bt.ts)
            return [bt]
        if t is Kline:
            self._count["kline"].inc()
            if msg.closed:
                if len(self._recv_at) > 10_000:  # duplicates never emitted: keep the map bounded
                    self._recv_at.clear()
                self._recv_at.setdefault(msg.key, item.recv_s or item.recv_ms / 1000.0)
            return await self._on_kline(msg)
        if t is TradeMsg:
            self._count_trade.inc()
            tr = msg.trade
            if not self._known(tr.symbol) or not self._newer(self._last_trade, tr.symbol, msg.trade_id):
                return []
            self.flow.add(tr)
            self._seen(tr.symbol, tr.ts)
            return [tr]
        assert t is Funding
        self._count["markPrice"].inc()
        if not self._known(msg.symbol) or not self._newer(self._last_mark, msg.symbol, msg.ts):
            return []
        self._seen(msg.symbol, msg.ts)
        return [msg]

    async def _handle_merged(self, m: _Merged) -> list[MarketEvent]:
        """Messages merged under backlog: every one is parsed (a malformed one is counted); depth diffs that
        continue each other on a live book are applied as one, anything else one by one (a break resyncs)."""
        self.stats.messages += len(m.msgs)
        parsed: list[tuple[Any, WsMessage]] = []
        for item in m.msgs:
            try:
                parsed.append((parse_message(item.raw), item))
            except ParseError as e:
                self._error(e.kind, str(e))
        diffs = [d for d, _ in parsed if type(d) is DepthDiff]
        if m.kind != "depth" or len(diffs) != len(parsed) or len({d.symbol for d in diffs}) != 1:
            out: list[MarketEvent] = []
            for msg, item in parsed:
                out += await self._on_message(msg, item)
            return out
        book = self.books.get(diffs[0].symbol)
        if book is None or book.state is not BookState.LIVE or len(diffs) == 1:
            out = []
            for d in diffs:
                self._count["depth"].inc()
                out += self._on_depth(d)
            return out
        last = book.last_update_id
        assert last is not None
        # Older ones were applied already, and a repeat (both connections of a planned swap deliver the stream
        # into the same slot) adds nothing: one by one both would be STALE, so they must not split the chain here.
        fresh: list[DepthDiff] = []
        top = last
        for d in diffs:
            if d.final_id > top:
                fresh.append(d)
                top = d.final_id
        self._count["depth"].inc(len(diffs))
        out = []
        for d in coalesce(fresh):
            out += self._on_depth(d)
        return out

    def _known(self, symbol: str) -> bool:
        if symbol in self.books:
            return True
        self._error("unexpected", f"message for unsubscribed symbol {symbol!r}")
        return False

    def _newer(self, last: dict[str, int], symbol: str, ident: int) -> bool:
        """Ids/times grow per symbol; a repeat (e.g. the overlap of a planned reconnect) is dropped."""
        prev = last.get(symbol)
        if prev is not None and ident <= prev:
            self.stats.duplicate_ticks_dropped += 1
            return False
        last[symbol] = ident
        return True

    def _seen(self, symbol: str, ts: int) -> None:
        if ts > self._last_event_ms.get(symbol, 0):
            self._last_event_ms[symbol] = ts

    def _error(self, kind: str, detail: str) -> None:
        self._m.ws_message_errors.labels(kind=kind).inc()
        self.stats.message_errors[kind] = self.stats.message_errors.get(kind, 0) + 1
        log.warning("binance: skipped a %s message: %s", kind, detail[:300])

    def _report_idle_age(self) -> None:
        """While nothing arrives the runner sets no age: report the wall-clock age of each symbol's feed."""
        now = self._now()
        for s in self._symbols:
            last = self._last_event_ms.get(s)
            if last is not None:
                self._m.feed_age.labels(symbol=s).set(max(0.0, (now - last) / 1000.0))

    # -- klines -----------------------------------------------------------------------------------------
    async def _on_kline(self, k: Kline) -> list[MarketEvent]:
        if not self._known(k.symbol):
            return []
        if k.timeframe not in self._tfs:
            self._error("unexpected", f"kline of unsubscribed timeframe {k.timeframe!r}")
            return []
        if not k.closed:
            self.stats.open_klines_ignored += 1
            self._seen(k.symbol, k.open_time)
            return []
        key = (k.symbol, k.timeframe)
        boundary = k.close_time + 1
        group = self._groups.get((k.symbol, boundary))
        last = self._last_open.get(key)
        if (last is not None and k.open_time <= last) or (group is not None and k.timeframe in group.bars):
            self.stats.duplicate_bars_dropped += 1
            return []
        self._seen(k.symbol, boundary)
        out: list[MarketEvent] = []
        length = tf_ms(k.timeframe)
        if last is not None and k.open_time > last + length:
            # A hole (a missed close message, or a drop not yet reported): REST first, then this bar.
            gap = await self._fetch_closed(k.symbol, k.timeframe, last + length, k.open_time)
            out += await self._flush_with(gap)
        if group is None:
            deadline = asyncio.get_running_loop().time() + self._b.close_grace_s
            group = self._groups[(k.symbol, boundary)] = _Group(k.symbol, boundary, {}, deadline)
        group.bars[k.timeframe] = k
        expected = [tf for tf in self._tfs if closes_at(tf, boundary)]
        if all(tf in group.bars for tf in expected):
            out += await self._flush([*self._groups_upto(boundary, strictly=True), group], [])
        return out

    def _groups_upto(self, boundary: int, *, strictly: bool = False) -> list[_Group]:
        return [g for g in self._groups.values() if g.boundary < boundary or (not strictly and g.boundary == boundary)]

    async def _flush_due(self, loop_now: float) -> list[MarketEvent]:
        due = [g.boundary for g in self._groups.values() if g.deadline <= loop_now]
        return await self._flush(self._groups_upto(max(due)), []) if due else []

    async def _flush_with(self, extra: list[Kline]) -> list[MarketEvent]:
        """Emit ``extra`` (REST bars) with every waiting group not later than them, so order holds."""
        cut = max((k.close_time + 1 for k in extra), default=-1)
        return await self._flush(self._groups_upto(cut), extra)

    async def _flush(self, groups: list[_Group], extra: list[Kline]) -> list[MarketEvent]:
        """Emit groups and extra bars in event-time order (coarsest first at a shared close), new keys only.

        A group still missing a timeframe that closes at its boundary asks REST for that bar first: its close
        message was lost, and the bar must not be skipped nor taken from an unclosed message.
        """
        bars: list[Kline] = list(extra)
        for g in groups:
            self._groups.pop((g.symbol, g.boundary), None)
            bars += g.bars.values()
            for tf in self._tfs:
                if closes_at(tf, g.boundary) and tf not in g.bars:
                    got = await self._fetch_closed(g.symbol, tf, g.boundary - tf_ms(tf), g.boundary)
                    self.stats.bars_fetched_after_grace += len(got)
                    bars += got
        out: list[MarketEvent] = []
        for k in sorted(bars, key=_order):
            key = (k.symbol, k.timeframe)
            last = self._last_open.get(key)
            if last is not None and k.open_time <= last:
                self.stats.duplicate_bars_dropped += 1
                continue
            self._last_open[key] = k.open_time
            self.stats.live_bars += 1
            out.append(k)
        return out

    async def _fill_all_gaps(self) -> list[MarketEvent]:
        """After a (re)connect: every closed bar missed since the last one emitted, in order, for the pairs no
        live stream delivers: those of the connection that just came up and of every kline connection still down
        (their bars come through REST as soon as possible).  A pair whose own connection is up is left to its
        stream (counted in ``stats.refills_skipped``): Binance's REST weight is per IP and shared by every runner
        on the host, and after an outage with many connections, asking every pair once per reconnect requested
        pairs already streaming again (bars that had just closed, their close message still on its way).  A close
        that stream does miss is still caught by the hole check in ``_on_kline`` and the close group's grace.

        Four requests at a time (as the warm-up): one at a time, a whole-market runner (500 symbols × 4
        timeframes) kept its consumer waiting on REST for seconds after every reconnect.
        """
        now = self._now()
        due = [
            (sym, tf, last + tf_ms(tf))
            for (sym, tf), last in list(self._last_open.items())
            if last + 2 * tf_ms(tf) - 1 < now  # the next bar has closed: it may be missing
        ]
        up, conn_of = self._kline_up, self._conn_of
        todo = [t for t in due if conn_of.get((t[0], t[1])) not in up]
        self.stats.refills_skipped += len(due) - len(todo)
        sem = asyncio.Semaphore(4)

        async def one(sym: str, tf: str, start: int) -> list[Kline]:
            async with sem:
                return await self._fetch_closed(sym, tf, start, None)

        batches = await asyncio.gather(*(one(*t) for t in todo))
        fetched = [k for batch in batches for k in batch]
        return await self._flush_with(fetched) if fetched else []

    def _track_kline_conns(self, urls: list[tuple[str, str, list[str]]]) -> None:
        """Which connection carries each (symbol, timeframe)'s kline stream (``build_urls``' entries); none is up
        until the consumer sees it connect."""
        pair_of = {f"{s.lower()}@kline_{tf}": (s, tf) for s in self._symbols for tf in self._tfs}
        self._kline_conns = {name for name, _, ss in urls if any("@kline_" in s for s in ss)}
        self._conn_of = {pair_of[s]: name for name, _, ss in urls for s in ss if s in pair_of}
        self._kline_up = set()

    async def _fetch_closed(self, sym: str, tf: str, start: int, before_open: int | None) -> list[Kline]:
        try:
            bars = await self._rest.closed_klines(sym, tf, start, self._now())
        except RestError as e:
            self.stats.gaps_unfilled += 1
            log.error("binance: could not fill %s %s bars from %d: %s; continuing with a gap", sym, tf, start, e)
            return []
        if before_open is not None:
            bars = [k for k in bars if k.open_time < before_open]
        self.stats.gap_bars_filled += len(bars)
        if bars:
            log.info("binance: filled %d %s %s bar(s) from REST", len(bars), sym, tf)
        return bars

    # -- order book -------------------------------------------------------------------------------------
    def _on_depth(self, d: DepthDiff) -> list[MarketEvent]:
        if not self._known(d.symbol):
            return []
        book = self.books[d.symbol]
        r = book.on_diff(d)
        if r is Outcome.RESYNC:
            self._resync(d.symbol)
        if book.need_snapshot():
            self._request_snapshot(d.symbol)
            return []
        self._seen(d.symbol, d.event_time)
        return self._maybe_summary(d.symbol, d.event_time) if r is Outcome.APPLIED else []

    def _resync(self, symbol: str) -> None:
        self._m.orderbook_resyncs.labels(symbol=symbol).inc()
        self.stats.resyncs[symbol] = self.stats.resyncs.get(symbol, 0) + 1
        log.warning("binance: %s order book out of sequence; resyncing from a new snapshot", symbol)

    def _maybe_summary(self, symbol: str, ts: int) -> list[MarketEvent]:
        last = self._last_summary.get(symbol)
        if last is not None and ts - last < self._b.book_summary_interval_ms:
            return []
        s: BookDepth | None = self.books[symbol].summary(ts, self._b.depth_within_bps, self._b.depth_levels)
        if s is None:
            return []
        self._last_summary[symbol] = ts
        return [s]

    def _request_snapshot(self, symbol: str) -> None:
        if symbol in self._snap_pending:
            return
        self._snap_pending.add(symbol)
        fails = self._snap_failures.get(symbol, 0)
        delay = (
            0.0
            if fails == 0
            else backoff_delay(fails - 1, self._b.reconnect_backoff_base_s, self._b.reconnect_backoff_max_s, self._rng)
        )
        self._snap_tasks[symbol] = asyncio.create_task(self._fetch_snapshot(symbol, delay))

    async def _fetch_snapshot(self, symbol: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            snap = await self._rest.depth(symbol, self._b.depth_snapshot_limit)
            await self._inbox.put(_SnapshotResult(symbol, snap))
        except Exception as e:  # any failure must come back, or the book would wait for ever
            await self._inbox.put(_SnapshotResult(symbol, None, f"{type(e).__name__}: {e}"))

    def _on_snapshot(self, r: _SnapshotResult) -> list[MarketEvent]:
        self._snap_pending.discard(r.symbol)
        book = self.books[r.symbol]
        if r.snapshot is None:
            self._snap_failures[r.symbol] = self._snap_failures.get(r.symbol, 0) + 1
            log.error("binance: %s depth snapshot failed: %s", r.symbol, r.error)
            self._request_snapshot(r.symbol)
            return []
        out = book.apply_snapshot(r.snapshot)
        if out is Outcome.RESYNC:
            self._snap_failures[r.symbol] = self._snap_failures.get(r.symbol, 0) + 1
            self._resync(r.symbol)
            self._request_snapshot(r.symbol)
            return []
        self._snap_failures[r.symbol] = 0
        ts = r.snapshot.event_time or self._now()
        return self._maybe_summary(r.symbol, ts) if out is Outcome.APPLIED else []
