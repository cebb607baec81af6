"""The runner: one loop that takes market events through the signal engine and out to the adapters.

It owns every side effect of a run (journal, metrics, notifier, executor, ``--decisions-out``) and measures the
run as it goes, so the shadow report states only what was observed here: latencies, memory, CPU, freshness,
metric refresh gaps, errors and counter fallbacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Container, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ultra_signals.control.state import is_paused
from ultra_signals.core.caps import Reservation, SniperCounters, policy_from
from ultra_signals.core.clock import EventClock
from ultra_signals.core.config import Settings, redacted_dict
from ultra_signals.core.decision import Decision
from ultra_signals.core.events import Kline, MarketEvent, event_time
from ultra_signals.core.notices import DailySummary, Notice, Notifier, RunStarted, RunStopped
from ultra_signals.counters.fleet import BEAT_INTERVAL_S, FleetBeacon, RunnerBeat
from ultra_signals.engine.pipeline import SignalEngine
from ultra_signals.engine.risk_filters import SNIPER_REASONS
from ultra_signals.execution.base import Executor
from ultra_signals.execution.breakers import RunnerHealth
from ultra_signals.execution.brokers.base import BrokerError
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.latency import LatencyHistogram
from ultra_signals.observability.metrics import SELF_SCRAPE_AGENT, Metrics
from ultra_signals.observability.release import release
from ultra_signals.sources.base import EventLists, MarketSource

if TYPE_CHECKING:  # types only: the lease is Redis-backed (redis-py loads only where bootstrap builds one)
    from ultra_signals.execution.lease import ExecutorLease
    from ultra_signals.observability.gc_pauses import GcControl

log = logging.getLogger(__name__)
#: The executor's blocking reason → the trading state the fleet view shows.
TRADING_OF_REASON = {"": "ACTIVE", "trading_halted": "HALTED", "trading_reducing": "REDUCING"}
BACKENDS = ("memory", "redis", "blocked")  # values of sniper_counter_backend{backend}
#: How often the journal hears that this run's process is alive (see Journal.mark_crashed_runs).
HEARTBEAT_S = 5.0


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _exchange_clock(source: MarketSource) -> Callable[[], int]:
    """The live source's view of the exchange's clock (wall clock + measured server offset), else the wall clock."""
    now = getattr(source, "exchange_now_ms", None)
    if callable(now):
        return lambda: int(now())
    return lambda: int(time.time() * 1000)


async def _one_by_one(events: AsyncIterator[MarketEvent]) -> AsyncIterator[tuple[MarketEvent]]:
    """A source's events as lists of one, for the runner's loop over lists (a stream without ``lists()``)."""
    async for ev in events:
        yield (ev,)


#: Chart points kept per symbol (a week of 1m bars is 10,080): bounded whatever the run length.
PRICE_POINTS = 4_000


def add_price(st: RunStats, sym: str, ts: int, close: float) -> None:
    """Append a close to the symbol's chart series, thinning it 2:1 (and doubling the step) when full."""
    stride = st.price_stride.get(sym, 1)
    series = st.prices.setdefault(sym, [])
    n = st.price_seen.get(sym, 0)
    st.price_seen[sym] = n + 1
    if n % stride:
        return
    series.append((ts, close))
    if len(series) >= PRICE_POINTS:
        del series[1::2]
        st.price_stride[sym] = stride * 2


@dataclass
class RunStats:
    """Everything the report needs, measured during the run."""

    run_id: str
    mode: str
    profile: str
    source: str
    simulated: bool
    symbols: list[str]
    timeframes: list[str]
    notices: list[str] = field(default_factory=list)
    primary_timeframe: str = ""
    namespace: str = ""
    market_start_ms: int | None = None
    market_end_ms: int | None = None  # last event time seen in the run window
    planned_end_ms: int | None = None
    wall_start: float = 0.0
    wall_end: float = 0.0
    events: Tally[str] = field(default_factory=Tally)
    warmup_events: int = 0
    run_bars: int = 0  # closed bars of every timeframe inside the run window
    input_bars: int = 0  # closed bars of the finest timeframe, warm-up included (what the source fed in)
    candidates: Tally[str] = field(default_factory=Tally)
    allowed: Tally[str] = field(default_factory=Tally)  # by symbol
    allowed_side: Tally[str] = field(default_factory=Tally)
    blocked: Tally[str] = field(default_factory=Tally)  # by reason
    blocked_by_symbol: Tally[str] = field(default_factory=Tally)
    not_evaluated: Tally[str] = field(default_factory=Tally)  # by filter: passed for want of data
    # Bounded (log-bucket histogram, percentiles to 1 %): a list of every sample grew ~36 KB per symbol-day.
    latencies_ms: LatencyHistogram = field(default_factory=LatencyHistogram)
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    errors: Tally[str] = field(default_factory=Tally)
    crash: str | None = None
    status: str = "running"  # completed | interrupted | failed, once the run has ended
    counter_backend_start: str = ""
    counter_backend_end: str = ""
    counter_events: list[str] = field(default_factory=list)
    metrics_refreshes: int = 0  # the runner's own refresh loop (keeps gauges fresh; not a scrape)
    metrics_max_gap_s: float = 0.0
    metrics_enabled: bool = True
    scrapes_served: int = 0  # /metrics requests the exporter answered during the run
    scrapes_self: int = 0  # of which the runner's own self-scrapes over HTTP
    scrapes_external: int = 0
    scrape_max_gap_s: float = 0.0  # longest wall-clock stretch of the run without a served scrape
    scrape_values: dict[str, float] = field(default_factory=dict)  # what the last served scrape showed
    self_scrape_errors: list[str] = field(default_factory=list)
    loop_lag_max_s: float = 0.0  # longest the event loop was blocked (heartbeat lateness)
    # Garbage-collector collections during the run by generation, and the longest full one (ms); None: not watched.
    gc_collections: list[int] | None = None
    gc_max_full_ms: float = 0.0
    redis_enabled: bool = False
    release: dict[str, str | None] = field(default_factory=dict)
    max_feed_gap_s: dict[str, float] = field(default_factory=dict)  # largest market-time gap between events
    final_feed_age_s: dict[str, float] = field(default_factory=dict)
    # Primary-tf closes in the run window, for the charts: at most PRICE_POINTS per symbol (thinned 2:1 when
    # full, so a chart always spans the whole run at a coarser step).
    prices: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    price_stride: dict[str, int] = field(default_factory=dict)  # keep every n-th close
    price_seen: dict[str, int] = field(default_factory=dict)
    executor_summary: dict[str, Any] = field(default_factory=dict)
    metrics_port: int | None = None
    web_url: str | None = None  # the status page, while the run serves one
    web_error: str | None = None  # why the status page could not start (the run went on without it)
    journal_url: str = ""
    decisions_out: str | None = None

    @property
    def wall_seconds(self) -> float:
        return max(self.wall_end - self.wall_start, 1e-9)

    @property
    def market_seconds(self) -> float:
        """Market time the run covered (first run-window event to the last), as opposed to wall time."""
        if self.market_start_ms is None or self.market_end_ms is None:
            return 0.0
        return max(0.0, (self.market_end_ms - self.market_start_ms) / 1000.0)


class SideService(Protocol):
    """A service that lives exactly as long as the run (the web status page): built by ``bootstrap``."""

    @property
    def url(self) -> str | None: ...

    async def start(self) -> int: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RunNamespace:
    """Where a run's windows live: ``base`` keys the shared counters, ``journal`` (``<base>:<profile>``) its rows."""

    base: str
    journal: str


class Runner:
    """The loop. Everything it talks to is built by :mod:`ultra_signals.bootstrap` and handed in ready."""

    def __init__(
        self,
        settings: Settings,
        source: MarketSource,
        *,
        journal: Journal,
        notifier: Notifier,
        metrics: Metrics,
        counters: SniperCounters,
        namespace: RunNamespace,
        restored: Sequence[Reservation] = (),
        counter_events: list[str] | None = None,
        executor: Executor | None = None,
        run_id: str | None = None,
        decisions_out: str | Path | None = None,
        speed: float | None = None,
        serve_metrics: bool = True,
        on_progress: Callable[[RunStats, int], None] | None = None,
        lease: ExecutorLease | None = None,
        pace_from: float | None = None,
        beacon: FleetBeacon | None = None,
        gc_control: GcControl | None = None,
    ) -> None:
        self.settings = settings
        self.lease = lease  # one executor per account: only while held (and reconciled) may it place orders
        self.beacon = beacon  # this runner's heartbeat in Redis for `status --fleet` (None without Redis)
        # The process's garbage collector, kept off the decision path (None: left as Python sets it).
        self.gc_control = gc_control
        self._last_beat = 0.0
        self.source = source
        self.journal = journal
        self.notifier = notifier
        self.metrics = metrics
        self.counters = counters
        self.executor = executor
        self.run_id = run_id or new_run_id()
        info = source.info
        rt = settings.runtime
        self.namespace = namespace.base
        self.journal_ns = namespace.journal
        self.decisions_out = Path(decisions_out) if decisions_out else None
        self.stats = RunStats(
            run_id=self.run_id,
            mode=rt.mode,
            profile=settings.profile,
            source=info.name,
            simulated=info.simulated,
            symbols=list(info.symbols),
            timeframes=list(info.timeframes),
            notices=list(info.notices),
            namespace=self.journal_ns,
            journal_url=journal.url,
            decisions_out=str(self.decisions_out) if self.decisions_out else None,
            counter_events=counter_events if counter_events is not None else [],
            metrics_enabled=serve_metrics and settings.metrics.enabled,
            redis_enabled=settings.redis.enabled,
            release=release(),
            primary_timeframe=rt.primary_timeframe,
        )
        self.clock = EventClock()
        self._paused = is_paused(journal)
        self.engine = SignalEngine(
            settings,
            self.counters,
            self.run_id,
            self.clock,
            paused=lambda: self._paused,
            halted_reason=(executor.blocking_reason if executor is not None else lambda: None),
            wall_now_ms=None if info.historical else _exchange_clock(source),
        )
        for r in restored:  # cooldowns survive a restart too
            sym, tf, open_time = r.id.split(":")[-3:]
            if tf in self.engine.signal_tfs:
                self.engine.sniper.cooldown.record_key(sym, int(open_time))
        sn = settings.sniper
        if sn.selection == "ranked" or sn.max_same_direction is not None:  # so does the budget's state
            self.engine.sniper.restore_budget(journal.budget_history(self.journal_ns))
        self.speed = speed
        #: With ``speed``: the wall-clock instant (epoch s) the run's first bar is paced from, instead of when this
        #: process reaches it.  Replays given the same instant stay in step whatever their start-up took, so a
        #: rehearsal of several runners sharing caps decides as live runners would (who reaches a slot first is
        #: then a matter of the market, not of which process imported faster).
        self.pace_from = pace_from
        self.serve_metrics = serve_metrics
        self.on_progress = on_progress
        #: Extra periodic work started with the loop and cancelled at its end (the universe refresh, wired by
        #: bootstrap): each a coroutine function that runs until cancelled.
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        #: Symbols whose feed may fall silent on purpose (a delisting announced or done: the universe refresh's
        #: gate), left out of the staleness the breakers see — one settled contract must not halt the account.
        self.feed_exempt: Container[str] = ()
        #: The status page and API (``web.enabled``): started with the run, stopped at its end.
        self.web: SideService | None = None
        #: Called once the exporter is up (the CLI writes the run file a monitor finds the run by).
        self.on_started: Callable[[RunStats], None] | None = None
        self.finest_tf = info.timeframes[0] if info.timeframes else rt.timeframes[0]
        self._last_ts: dict[str, int] = {}
        self._out: IO[str] | None = None
        mode_of = getattr(notifier, "mode_of", None)
        # Blocked candidates are announced only to a notifier that asks for them (Telegram's digest).
        self._publish_blocked = callable(mode_of) and mode_of("blocked") != "off"
        self._day: int | None = None  # market day (epoch days) of the daily summary being counted
        self._day_allowed: Tally[str] = Tally()
        self._day_blocked: Tally[str] = Tally()
        self._last_refresh = 0.0
        self._last_pause_poll = 0.0
        self._last_heartbeat = time.monotonic()
        self._cpu0 = 0.0
        self._m_candidates: dict[str, Any] = {}  # metric children by label value (see _handle)
        self._m_blocked: dict[str, Any] = {}
        self._m_sniper: dict[str, Any] = {}
        self._m_window: dict[str, Any] = {}

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self) -> RunStats:
        st = self.stats
        rt = self.settings.runtime
        st.wall_start = time.time()
        self._cpu0 = time.process_time()
        st.counter_backend_start = self.counters.backend
        self.metrics.set_backend(self.counters.backend, BACKENDS)
        self.metrics.run_info.labels(
            run_id=self.run_id, mode=rt.mode, source=st.source, simulated=str(st.simulated).lower()
        ).set(1)
        for rule in policy_from(self.settings.sniper).rules:
            self.metrics.window_cap.labels(window=rule.window).set(rule.cap)
        if self.serve_metrics and self.settings.metrics.enabled:
            st.metrics_port = self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
        self.journal.start_run(
            self.run_id,
            mode=rt.mode,
            profile=self.settings.profile,
            source=st.source,
            simulated=st.simulated,
            namespace=self.journal_ns,
            # The release rides in the settings JSON (key "release") until the journal has a column for it.
            settings={**redacted_dict(self.settings), "release": st.release},
        )
        if self.decisions_out:
            self.decisions_out.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.decisions_out.open("w", encoding="utf-8")
        await self.notifier.start()
        if self.executor is not None:
            try:
                await self.executor.start()
            except BrokerError as e:  # the exchange or the account refused: nothing traded; a clear message
                self.stats.crash = f"trading refused at start: {e}"
                await self._finish("failed")
                raise
        if self.lease is not None:  # take (or stand by for) the account's lease before the first signal
            await self._tick_lease(self.lease)
        self.notifier.publish(
            Notice(
                RunStarted(
                    rt.mode,
                    self.run_id,
                    st.source,
                    st.simulated,
                    tuple(st.symbols),
                    self.counters.backend,
                    self.settings.redis.on_failure,
                )
            )
        )
        await self._start_web()
        refresher = asyncio.create_task(self._refresh_loop(), name="metrics-refresh")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="event-loop-heartbeat")
        background = [asyncio.create_task(work(), name=f"background-{i}") for i, work in enumerate(self.background)]
        if self.on_started is not None:
            self.on_started(st)
        scraper: asyncio.Task[None] | None = None
        if st.metrics_port:
            await self._self_scrape()
            if self.settings.metrics.self_scrape_s > 0:
                scraper = asyncio.create_task(self._self_scrape_loop(), name="metrics-self-scrape")
        status = "completed"
        gcc = self.gc_control
        if gcc is not None:
            gcc.settle()
        try:
            await self.source.open()  # the run window is final from here (live: on the exchange's clock)
            await self._consume()
        except asyncio.CancelledError:
            status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
        except Exception as e:  # the source itself failed: record it, end cleanly, report says so
            status = "failed"
            st.crash = f"{type(e).__name__}: {e}"
            st.errors["crash"] += 1
            self.metrics.errors.labels(kind="crash").inc()
            log.exception("run %s failed: the source stopped with %s", self.run_id, st.crash)
        finally:
            if gcc is not None:
                st.gc_collections = list(gcc.collections)
                st.gc_max_full_ms = gcc.max_full_ms
                gcc.close()
            tasks = [t for t in (refresher, heartbeat, scraper, *background) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if st.metrics_port:
                await self._self_scrape()
            try:
                await self._finish(status)
            finally:
                if self.web is not None:
                    await self.web.aclose()
        return st

    async def _start_web(self) -> None:
        """Serve the status page; a port that cannot be had is reported, not fatal (the page is an aid: a runner
        that trades must not stop for it)."""
        if self.web is None:
            return
        try:
            await self.web.start()
            self.stats.web_url = self.web.url
        except Exception as e:
            self.stats.web_error = str(e)
            log.error("status page not started: %s", e)
            self.web = None

    async def _consume(self) -> None:
        st = self.stats
        src = self.source
        start = src.run_start_ms
        end = src.run_end_ms
        st.market_start_ms, st.planned_end_ms = start, end
        self.engine.decide_from_ms = start
        primary = self.settings.runtime.primary_timeframe
        finest = self.finest_tf
        engine = self.engine
        executor = self.executor
        # Read once (issue 13: every line below runs on each of a replay's events): the engine's entry point, the
        # executor's (bound by it: the router's), the pacing, and the end as a number (no bound: never reached).
        on_event = engine.on_event
        on_market = executor.on_market_event if executor is not None else None
        speed = self.speed
        last_event = end if end is not None else 1 << 62
        perf = time.perf_counter
        n = 0
        wall0 = 0.0
        historical = src.info.historical
        bar_close = self.metrics.bar_close_to_decision
        server_offset = getattr(src, "server_offset_ms", 0)
        signal_tfs = engine.signal_tfs
        last_ts = self._last_ts
        max_gap = st.max_feed_gap_s
        tally = st.events
        latencies = st.latencies_ms
        latency = self.metrics.latency
        t0 = 0.0
        # A stream that hands its events over in lists (the replay's) saves an asynchronous step per event; any
        # other is taken one event at a time, as lists of one.
        events = src.events()
        batched = isinstance(events, EventLists)
        groups = events.lists() if isinstance(events, EventLists) else _one_by_one(events)
        async for group in groups:
            for ev in group:
                n += 1
                # One type test per event, reused below (events are final dataclasses: no subclasses to miss).
                if type(ev) is Kline:
                    bar: Kline | None = ev
                    tf: str | None = ev.timeframe
                    ts = ev.close_time + 1 if ev.closed else ev.open_time
                    kind = "Kline"
                    # Tick-to-decision starts when the source received the message (socket read; sim/replay: when
                    # the source produced it), so time spent queued behind a slow runner is in the figure.  Read
                    # only for the bars of a signal timeframe, the only events the engine decides on (issue 13: no
                    # per-event work no one reads).
                    timed = tf in signal_tfs
                    if timed:
                        if batched:  # taken the moment the source produced it: receipt is now
                            t0 = perf()
                        else:
                            recv = getattr(src, "received_at", None)
                            t0 = perf() - (max(0.0, time.time() - recv) if recv is not None else 0.0)
                else:
                    bar = tf = None
                    ts = event_time(ev)
                    kind = type(ev).__name__
                    timed = False
                if ts > last_event:
                    break
                in_run = ts > start  # a bar is in the run when it closes at or after run start (event time = close + 1)
                if tf == finest:
                    st.input_bars += 1
                if not in_run:
                    st.warmup_events += 1
                elif speed and bar is not None:
                    if wall0 == 0.0:
                        wall0 = time.monotonic()
                        if self.pace_from is not None:  # a runner late for the shared anchor catches up unpaced
                            wall0 -= time.time() - self.pace_from
                    ahead = (ts - start) / 1000.0 / speed - (time.monotonic() - wall0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                        t0 = perf()  # paced: the simulator "produces" the bar now
                try:
                    decision = on_event(ev)
                    if on_market is not None:
                        on_market(ev)
                    if in_run:
                        # Feed bookkeeping for the report and the health checks (inlined: it runs on every event).
                        sym = ev.symbol
                        prev = last_ts.get(sym)
                        if prev is None:
                            last_ts[sym] = ts
                        elif ts > prev:
                            gap = (ts - prev) / 1000.0
                            if gap > max_gap.get(sym, 0.0):
                                max_gap[sym] = gap
                            last_ts[sym] = ts
                        tally[kind] += 1
                        market_end = st.market_end_ms
                        if market_end is None or ts > market_end:
                            st.market_end_ms = ts
                        if bar is not None:
                            st.run_bars += 1
                            if tf == primary:
                                add_price(st, sym, ts, bar.close)
                        if timed:  # a decision point (in the run, of a signal timeframe)
                            if decision is not None:
                                self._handle(decision, t0)
                            else:
                                # A decision point that produced no candidate still counts as tick-to-decision latency.
                                ms = (perf() - t0) * 1000.0
                                latencies.append(ms)
                                latency.observe(ms)
                            if not historical and bar is not None:
                                # Live: the exchange's bar close (its clock, offset-corrected) to our decision.
                                server_now = time.time() * 1000.0 + server_offset
                                bar_close.observe(max(0.0, server_now - (bar.close_time + 1)))
                        elif decision is not None:
                            self._handle(decision, perf())
                    elif decision is not None:
                        self._handle(decision, t0 if timed else perf())
                except Exception as e:  # a bad event or a bug on one bar must not stop the run
                    error = type(e).__name__
                    st.errors[error] += 1
                    self.metrics.errors.labels(kind=error).inc()
                    if st.errors[error] <= 3:  # the first few with their traceback; all of them are counted
                        log.exception("error on %s (%s, %s); the run goes on", type(ev).__name__, ev.symbol, error)
                if n & 255 == 0:
                    self._maybe_refresh()
                    await asyncio.sleep(0)  # let the notifier, metrics and executor tasks run
            else:
                continue
            break  # the run's end: past the last event of the window

    def _handle(self, d: Decision, t0: float) -> None:
        st = self.stats
        m = self.metrics
        c = d.candidate
        sym = c.symbol
        st.candidates[sym] += 1
        # Prometheus children cached per label value: ``labels()`` hashes and locks on every call (issue 13).
        child = self._m_candidates.get(sym)
        if child is None:
            child = self._m_candidates[sym] = m.candidates.labels(symbol=sym)
        child.inc()
        if d.allowed:
            st.allowed[sym] += 1
            st.allowed_side[c.side.value] += 1
            m.allowed.labels(symbol=sym, side=c.side.value).inc()
        else:
            reason = d.reason or "unknown"
            st.blocked[reason] += 1
            st.blocked_by_symbol[sym] += 1
            child = self._m_blocked.get(reason)
            if child is None:
                child = self._m_blocked[reason] = m.blocked.labels(reason=reason)
            child.inc()
            if reason in SNIPER_REASONS:
                child = self._m_sniper.get(reason)
                if child is None:
                    child = self._m_sniper[reason] = m.sniper_rejections.labels(reason=reason)
                child.inc()
        for name in d.not_evaluated:
            st.not_evaluated[name] += 1
        if d.counts:
            for window, count in d.counts.items():
                child = self._m_window.get(window)
                if child is None:
                    child = self._m_window[window] = m.window_count.labels(window=window)
                child.set(count)
        d.latency_ms = (time.perf_counter() - t0) * 1000.0
        # Durability: the journal commits an allowed decision inside record(), so it is in the journal before the
        # executor plans (and places) its order and before the notifier announces it.
        self.journal.record(d, self.journal_ns, st.simulated)
        if self._out is not None:
            self._out.write(json.dumps(d.as_record(), separators=(",", ":")) + "\n")
            if d.allowed:
                self._out.flush()  # an allowed signal is on disk before it is announced
        if d.allowed and self.executor is not None:
            self.executor.on_signal(d)
        self._roll_day(c.ts)
        if d.allowed:
            self._day_allowed[sym] += 1
            self.notifier.publish(Notice.signal(d, self.settings.runtime.mode, st.simulated))
        else:
            self._day_blocked[d.reason or "unknown"] += 1
            if self._publish_blocked:
                self.notifier.publish(Notice.signal(d, self.settings.runtime.mode, st.simulated))
        st.latencies_ms.append(d.latency_ms)
        m.latency.observe(d.latency_ms)

    def _roll_day(self, ts: int, final: bool = False) -> None:
        """Announce the previous market day's summary when a decision falls on a new UTC day (or at the end)."""
        day = ts // 86_400_000
        if self._day is None:
            self._day = day
            return
        if day == self._day and not final:
            return
        if self._day_allowed or self._day_blocked:
            date = datetime.fromtimestamp(self._day * 86_400, UTC).strftime("%Y-%m-%d")
            summary = DailySummary(
                self.settings.runtime.mode,
                date,
                final,
                dict(self._day_allowed),
                dict(self._day_blocked),
                self.stats.simulated,
            )
            self.notifier.publish(Notice(summary, chat_key=f"{self.run_id}:day:{date}:{int(final)}"))
        self._day = day
        self._day_allowed.clear()
        self._day_blocked.clear()

    # -- periodic work -----------------------------------------------------------------------------------
    async def _heartbeat_loop(self, interval_s: float = 0.25) -> None:
        """Event-loop lag: how late a task that asked to wake after ``interval_s`` actually woke.

        Anything that blocks the loop (a slow synchronous call, a long batch of events without a yield) shows
        here, whatever the latency histograms say.
        """
        m = self.metrics
        st = self.stats
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(interval_s)
            lag = max(0.0, time.monotonic() - t0 - interval_s)
            m.loop_lag.observe(lag)
            m.loop_lag_last.set(lag)
            m.loop_heartbeat.set(time.time())
            st.loop_lag_max_s = max(st.loop_lag_max_s, lag)

    async def _self_scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics.self_scrape_s)
            await self._self_scrape()

    async def _self_scrape(self) -> None:
        """GET our own ``/metrics`` over HTTP, as Prometheus would (the exporter counts it as a self-scrape)."""
        import urllib.request

        host = self.settings.metrics.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        url = f"http://{host}:{self.stats.metrics_port}/metrics"

        def get() -> None:
            req = urllib.request.Request(url, headers={"User-Agent": SELF_SCRAPE_AGENT})
            with urllib.request.urlopen(req, timeout=2.0) as r:
                r.read()

        try:
            await asyncio.to_thread(get)
        except Exception as e:  # a failed self-scrape is evidence too: the report counts only served ones
            errs = self.stats.self_scrape_errors
            if len(errs) < 20:
                errs.append(f"{type(e).__name__}: {e}")

    async def _refresh_loop(self) -> None:
        """Keeps metrics fresh while no events arrive (a silent live feed), and polls the pause flag."""
        while True:
            await asyncio.sleep(1.0)
            self._maybe_refresh(force=True)
            if self.lease is not None:
                await self._tick_lease(self.lease)
            if self.beacon is not None and time.monotonic() - self._last_beat >= BEAT_INTERVAL_S:
                self._last_beat = time.monotonic()
                await self._send_beat(self.beacon, "running")

    def _beat(self, status: str) -> RunnerBeat:
        st = self.stats
        market_now = self.clock.now_ms()
        ref = market_now if self.source.info.historical else int(time.time() * 1000)
        windows = getattr(self.counters, "cached_window_counts", self.counters.window_counts)(market_now)
        reason = self.executor.blocking_reason() if self.executor is not None else None
        trading = "-" if self.executor is None else TRADING_OF_REASON.get(reason or "", reason or "ACTIVE")
        return RunnerBeat(
            run_id=self.run_id,
            shard=self.settings.runtime.shard or "-",
            symbols=list(st.symbols),
            backend=self.counters.backend,
            trading_state=trading,
            window_hour=int(windows.get("hour", 0)),
            window_day=int(windows.get("day", 0)),
            allowed_run=sum(st.allowed.values()),
            max_data_age_s=max((ref - t) / 1000.0 for t in self._last_ts.values()) if self._last_ts else None,
            status=status,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    async def _send_beat(self, beacon: FleetBeacon, status: str) -> None:
        """Off the event loop; a failed write is counted (``errors{kind="fleet_beat"}``), never raised."""
        if not await asyncio.to_thread(beacon.beat, self._beat(status)):
            self.stats.errors["fleet_beat"] += 1
            self.metrics.errors.labels(kind="fleet_beat").inc()

    async def _tick_lease(self, lease: ExecutorLease) -> None:
        """Renew (or take over) the account's lease; a new holder reconciles before its first order."""
        held = await asyncio.to_thread(lease.tick)
        if held and not lease.reconciled and self.executor is not None:
            reconcile = getattr(self.executor, "reconcile", None)
            try:
                if reconcile is not None:
                    await reconcile()
                lease.mark_reconciled()
            except Exception as e:  # stay unreconciled: no order until a reconcile succeeds
                self.stats.errors["lease_reconcile"] += 1
                log.error("executor lease: reconcile after takeover failed: %s", e)

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_refresh < 0.5:
            return
        st = self.stats
        if self._last_refresh:
            st.metrics_max_gap_s = max(st.metrics_max_gap_s, now - self._last_refresh)
        self._last_refresh = now
        st.metrics_refreshes += 1
        m = self.metrics
        market_now = self.clock.now_ms()
        ref = market_now if self.source.info.historical else int(time.time() * 1000)
        for sym, last in self._last_ts.items():
            m.feed_age.labels(symbol=sym).set(max(0.0, (ref - last) / 1000.0))
        # Never a Redis call on the event loop here (see FailoverCounters.cached_window_counts).
        counts = getattr(self.counters, "cached_window_counts", self.counters.window_counts)
        for window, count in counts(market_now).items():
            m.window_count.labels(window=window).set(count)
        m.set_backend(self.counters.backend, BACKENDS)
        m.market_time.set(market_now / 1000.0)
        m.last_update.set(time.time())
        m.heartbeat.set(time.time())
        if self.gc_control is not None:
            self.gc_control.maybe_collect(int(time.time() * 1000))
        if self.executor is not None and self._last_ts:
            recent = st.latencies_ms.recent()
            p95 = sorted(recent)[int(0.95 * (len(recent) - 1))] if recent else 0.0
            self.executor.on_health(
                RunnerHealth(
                    ts_ms=market_now,
                    latency_p95_ms=p95,
                    max_feed_age_s=max(
                        ((ref - last) / 1000.0 for s, last in self._last_ts.items() if s not in self.feed_exempt),
                        default=0.0,
                    ),
                    counter_backend=self.counters.backend,
                    counter_policy=self.settings.redis.on_failure if self.settings.redis.enabled else "none",
                )
            )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        st.peak_rss_mb = max(st.peak_rss_mb, rss)
        if self._out is not None:
            self._out.flush()
        try:
            self.journal.flush()  # blocked candidates reach the journal at least once a second
            if now - self._last_heartbeat >= HEARTBEAT_S:
                self._last_heartbeat = now
                self.journal.heartbeat(self.run_id)
        except Exception as e:
            st.errors["journal_flush"] += 1
            m.errors.labels(kind="journal_flush").inc()
            log.error("journal flush failed: %s", e)
        if now - self._last_pause_poll >= 1.0:
            self._last_pause_poll = now
            try:
                self._paused = is_paused(self.journal)
            except Exception as e:
                st.errors["journal_state"] += 1
                m.errors.labels(kind="journal_state").inc()
                log.warning("journal state read failed (pause flag unchanged): %s", e)
        if self.on_progress is not None:
            self.on_progress(st, market_now)

    async def _finish(self, status: str) -> None:
        st = self.stats
        self._maybe_refresh(force=True)
        st.wall_end = time.time()
        st.cpu_seconds = time.process_time() - self._cpu0
        st.peak_rss_mb = max(st.peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        st.counter_backend_end = self.counters.backend
        sc = self.metrics.scrapes
        st.scrapes_served, st.scrapes_self, st.scrapes_external = sc.count, sc.self_scrapes, sc.external
        st.scrape_max_gap_s = sc.max_gap_s(st.wall_start, st.wall_end) if sc.count else st.wall_seconds
        st.scrape_values = sc.last_values()
        end_ref = st.market_end_ms or 0
        for sym in st.symbols:
            last = self._last_ts.get(sym)
            st.final_feed_age_s[sym] = (end_ref - last) / 1000.0 if last is not None else float("inf")
        if self._out is not None:
            self._out.close()
        if self.executor is not None:
            try:
                st.executor_summary = self.executor.summary()
                await self.executor.aclose()
            except Exception as e:
                st.errors["executor"] += 1
                log.error("executor shutdown failed: %s", e, exc_info=True)
        if self.lease is not None:  # after the executor drained: the standby takes over at once, not after a TTL
            await asyncio.to_thread(self.lease.release)
        if self.beacon is not None:  # the fleet view shows how this run ended, not a silent runner
            await self._send_beat(self.beacon, status)
            await asyncio.to_thread(self.beacon.close)
        if self._day is not None:
            self._roll_day(self._day * 86_400_000, final=True)
        allowed = sum(st.allowed.values())
        blocked = sum(st.blocked.values())
        self.notifier.publish(Notice(RunStopped(st.mode, self.run_id, status, allowed, blocked)))
        await self.notifier.aclose()
        self.journal.end_run(
            self.run_id,
            status,
            {
                "allowed": dict(st.allowed),
                "blocked": dict(st.blocked),
                "candidates": dict(st.candidates),
                "errors": dict(st.errors),
                "crash": st.crash,
            },
            st.market_start_ms,
            st.market_end_ms,
        )
        self.counters.close()
        st.status = status
