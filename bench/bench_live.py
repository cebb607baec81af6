"""Live ingest benchmark: the real ``BinanceSource`` and runner, fed by a local fake exchange at rising rates.

    python bench/bench_live.py                          # 100 symbols, 1m/5m/15m/1h, rates 5k … 40k msgs/s
    python bench/bench_live.py --rates 5000,20000 --seconds 6 --symbols 50 --close-spread trade
    python bench/bench_live.py --rates 10000,20000 --seconds 3 --symbols 100 --profile var/live.html
    python bench/bench_live.py --rates 5000 --symbols 100 --close-spread trade --outage 30   # and a 30 s outage

The fake (``tests/fakes/binance_stream_server.py``) runs in a child process so its CPU is not charged to the
client; it serves REST (exchangeInfo, warm-up klines, depth snapshots) and combined streams on ``/market`` and
``/public`` with the recorded per-symbol mix (depth diffs, book tickers, trades, kline updates, mark price), and
closes bars on each minute of a market clock running ``--speed`` times the wall clock.  *When* it sends the closed
bars is ``--close-spread``, and by default the rates run twice, once each way, so both figures are printed:

- ``none``: every symbol's closed bars in one write at the boundary, the worst case for decisions (they queue
  behind each other);
- ``trade``: as Binance does in the recording ``../shared/data/ws/binance-futures-ws-20210722.txt``: a symbol's
  closed bars go out just before its first trade of the new bar, or 2 s (wall) after the boundary if it has none
  (the fake's docstring gives the recorded times and the Binance page).  The spread then follows the fake's
  per-symbol trade rate, which grows with the rate asked: at 20,000 msgs/s over 100 symbols (~10 trades a second
  each) half the symbols close within ~70 ms of the boundary, so this is not a gentle case for liquid markets;
  the ``closes`` note on each ``trade`` row prints the spread the fake actually produced (p50/p90/max).

During a step the fake writes what is due every ``--write-ms`` (5 ms by default: at 20,000 msgs/s a burst of 100
messages, and a bar in it waits for those ahead, ~2 ms of the decision p50 at that rate; ``--write-ms 1`` for finer
arrivals).  A step's ``dec p99`` is over some 50–700 decisions, i.e. its few worst: compare ranges over runs.
The client is the whole pipeline as ``ultra-signals shadow --source binance`` builds it (features, scoring,
filters, sniper, SQLite journal, metrics, paper executor), with ``scoring.entry_threshold`` lowered so that most
closed bars make a candidate that is journaled.

Per rate it prints:

- ``msgs/s``: messages the client handled during the step (target: the rate asked for);
- ``CPU µs/msg``: the client process's CPU time (``process_time``) over the step / messages handled; the
  machine is shared, so CPU per message is the figure to compare, wall rates only say whether it kept up;
- ``lag p50/p99``: exchange send (the message's event time on the market clock) → the runner handing the event
  to the engine, over every event but closed bars (book tickers, trades, mark prices, depth summaries); includes
  the kernel's socket buffers and the source's queue (a closed bar carries its close time, not its send time:
  its figure is the next one);
- ``dec p50/p99``: the runner's own tick-to-decision (socket read → decision journaled) at bar closes, over the
  step and its drain period (the histogram starts afresh at the step's start);
- ``wait p99``: of that, the part before the engine for closed bars (kernel, inbox, source, and every event
  ahead of it, other symbols' decisions included): queueing, not this bar's own work;
- ``coalesced``: depth diffs and book tickers merged under backlog (not lost: a merged diff's levels are
  applied with the ``U``/``u``/``pu`` chain kept; a book ticker is replaced by a newer one);
- ``recon``: reconnects during the step (a dropped connection loses what was in flight);
- ``behind``: messages of the step still unhandled one drain period after it ended;
- ``CPU``: the client's CPU time over the step's wall time (100 % = one core): a step that falls behind with
  well under 100 % was starved by the other jobs on the machine, not limited by its own cost.

then ``total``: every message the server wrote against every message the client handled, merged or replaced
(``lost`` is the difference, counted after the server stopped and the client drained), and ``sustained: N
msgs/s``: the highest rate whose step was kept up with (≥ 97 % of the rate handled within
the step and its drain period, no loss, no reconnect, lag p99 ≤ 100 ms).  A step the fake itself could not produce
(it sent < 97 % of the rate: one Python process generating frames, on a shared machine) says so and does not count.

``--outage SECONDS`` (off by default) adds an outage after the steps, for "no silent loss" (issue 13, target 3):
1 s into traffic at the last step's rate, the fake resets every websocket connection (RST, no close frame) and
answers every new handshake 503 for SECONDS of wall time while its market clock runs on (at ``--speed`` 20, 30 s
is 10 market minutes of bars nobody receives), then accepts again and sends at that rate until the client is current
(at most ``--outage-after`` seconds).  REST keeps answering.  It prints, from the fake accepting again: when the
first connection, every connection and the first live message were back (the client's reconnect backoff); the
gap fill (``_fill_all_gaps``: fills, REST kline requests, the wall time the consumer was blocked on them); when lag
p99 was back under 100 ms over 0.5 s with every connection back (``current``); bars filled by REST, gaps left
unfilled, and the continuity of every (symbol, timeframe) the engine got over the whole run (holes, out of order);
the messages the fake had written at the cut against those the client handled before its first message after the
reconnect (lost in flight, also in the total's ``lost``); and the decisions since the cut, on REST-filled and on
websocket bars, by outcome (``stale_data`` is the engine's freshness check, ``filters.max_data_age_s`` on the market
clock, so at ``--speed`` 20 its 120 s are 6 s of wall time).  Its probes wrap the source's per-message call: take
the steps' CPU figures from a run without ``--outage``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe

RATES = [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000]
LAG_BOUND_MS = 100.0


def _symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


# -- the fake exchange, in its own process --------------------------------------------------------------------
def _server_main(pipe: Connection, n_symbols: int, market0_ms: int, wall0: float, speed: float) -> None:
    from tests.fakes.binance_stream_server import MarketClock, StreamLoad

    async def main() -> None:
        srv = StreamLoad(_symbols(n_symbols), MarketClock(market0_ms, wall0, speed))
        await srv.start()
        pipe.send((srv.rest_url, srv.ws_url))
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, pipe.recv)
            if cmd[0] == "stop":
                break
            if cmd[0] == "conns":
                pipe.send((len(srv.conns), srv.connects, list(srv.misrouted), srv.rejected))
                continue
            _, start_at, plan, seconds, gap, write_s, outage = cmd
            await asyncio.sleep(max(0.0, start_at - time.time()))
            steps = []
            for spread, r in plan:
                srv.close_spread = spread
                srv.close_delays_s.clear()
                step = asdict(await srv.run_step(r, seconds, write_s))
                await srv.idle(gap)
                step["close_delays_s"] = sorted(srv.close_delays_s)  # "trade": boundary → closed bars sent, per symbol
                steps.append(step)
            if outage is not None:
                await _outage(srv, pipe, plan[-1], write_s, *outage)
            srv.paused = True  # nothing more is written: the client's count can be compared with sent_total
            await asyncio.sleep(0.1)
            pipe.send((steps, dict(srv.rest_calls), srv.connects, srv.sent_total))
        await srv.stop()

    asyncio.run(main())


async def _outage(srv: Any, pipe: Connection, last: tuple[str, float], write_s: float, seconds: float,
                  max_after_s: float) -> None:  # fmt: skip
    """The outage step (``--outage``): 1 s into traffic at the last step's rate (so messages are in flight), drop
    every connection, refuse new ones for ``seconds``, accept again, then send at that rate until the client says it
    is current (or ``max_after_s``)."""
    spread, rate = last
    srv.close_spread = spread
    loop = asyncio.get_running_loop()
    burst = asyncio.create_task(srv.run_step(rate, 1.5, write_s))
    await asyncio.sleep(1.0)
    t_drop, unsent0 = time.time(), srv.unsent
    dropped, lost_bytes = srv.drop_all()
    await burst  # its last 0.5 s finds no client: counted as not written (``unsent``), not as sent
    calls = {**srv.rest_calls, "weight": srv.weight_total}  # REST calls per endpoint, and the weight Binance charges
    pipe.send(("dropped", t_drop, srv.sent_total, unsent0, dropped, lost_bytes, calls))
    await asyncio.sleep(max(0.0, t_drop + seconds - time.time()))
    srv.accept()
    t_accept = time.time()
    pipe.send(("accepted", t_accept, srv.refused, srv.sent_total))
    done = loop.run_in_executor(None, pipe.recv)  # the client's ("done",): it is current, or gave up
    sent = 0
    for _ in range(int(max_after_s / 0.5) + 1):  # bounded: 0.5 s slices until the client is done or max_after_s
        if done.done() or time.time() >= t_accept + max_after_s:
            break
        sent += (await srv.run_step(rate, 0.5, write_s)).sent
    await done
    pipe.send(("after", sent, srv.unsent, srv.refused, {**srv.rest_calls, "weight": srv.weight_total}))


def _q(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))]


# -- the client ------------------------------------------------------------------------------------------------
def _sum_metric(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


@dataclass
class Sample:
    wall: float
    cpu: float
    handled: float
    coalesced: float
    reconnects: float


class _OutageProbe:
    """``--outage``: what a long outage costs, watched from inside the client.  It wraps the source's consumer
    (``_handle``: connection statuses, the first live message after them), its gap fill (``_fill_all_gaps``: wall
    time the consumer waits on it, REST kline requests made), every REST bar fetch (``_fetch_closed``: which bars
    came from REST), and sees every closed bar the engine gets (continuity per symbol and timeframe, over the whole
    run) and every decision (on a REST bar or a websocket bar; allowed, ``stale_data`` or another reason)."""

    def __init__(self, src: Any, runner: Any, tfs: list[str]) -> None:
        from ultra_signals.core.timeframes import tf_ms
        from ultra_signals.sources.binance.source import _Merged
        from ultra_signals.sources.binance.ws import WsMessage, WsStatus

        self.src, self.runner = src, runner
        self.length = {tf: tf_ms(tf) for tf in tfs}
        self.armed = False  # from the cut on
        self.statuses: list[tuple[float, bool, str, str]] = []  # handled: wall, connected, connection, reason
        self.first_msg: tuple[float, int] | None = None  # first message handled after a reconnect: wall, count before
        self.fills: list[tuple[float, float, int, int]] = []  # start, wall seconds, REST kline requests, bars
        self.fetches: list[tuple[float, float, int]] = []  # REST bar fetches outside a fill (a hole, a late close)
        self.in_fill = False
        self.kline_gets = 0
        self.rest_keys: set[tuple[str, str, int]] = set()
        self.decisions: dict[tuple[str, str], int] = {}
        self.last_open: dict[tuple[str, str], int] = {}
        self.holes: list[str] = []
        self.out_of_order: list[str] = []
        self.bars = {"REST": 0, "ws": 0}

        handle, fill, fetch, get = src._handle, src._fill_all_gaps, src._fetch_closed, src._rest.get

        async def probe_handle(item: Any) -> Any:
            if self.armed:
                t = type(item)
                if t is WsStatus:
                    self.statuses.append((time.time(), item.connected, item.conn, item.reason))
                elif self.first_msg is None and (t is WsMessage or t is _Merged) and self.statuses_up():
                    self.first_msg = (time.time(), src.stats.messages)
            return await handle(item)

        async def probe_fill() -> Any:
            t0, n0 = time.time(), self.kline_gets
            self.in_fill = True
            try:
                out = await fill()
            finally:
                self.in_fill = False
            if self.armed:
                self.fills.append((t0, time.time() - t0, self.kline_gets - n0, len(out)))
            return out

        async def probe_fetch(sym: str, tf: str, start: int, before_open: int | None) -> Any:
            t0 = time.time()
            bars = await fetch(sym, tf, start, before_open)
            self.rest_keys.update(k.key for k in bars)
            if self.armed and not self.in_fill:
                self.fetches.append((t0, time.time() - t0, len(bars)))
            return bars

        async def probe_get(endpoint: str, params: Any = None, **kw: Any) -> Any:
            if endpoint.endswith("/klines"):
                self.kline_gets += 1
            return await get(endpoint, params, **kw)

        src._handle = probe_handle
        src._fill_all_gaps = probe_fill
        src._fetch_closed = probe_fetch
        src._rest.get = probe_get

    def statuses_up(self) -> bool:
        return any(c for _, c, _, _ in self.statuses)

    def bar(self, k: Any) -> None:
        """Every closed bar the engine gets, warm-up included: per (symbol, timeframe) each must follow the last."""
        key = (k.symbol, k.timeframe)
        last = self.last_open.get(key)
        if last is not None:
            if k.open_time <= last:
                self.out_of_order.append(f"{k.symbol} {k.timeframe} {k.open_time} after {last}")
            elif k.open_time != last + self.length[k.timeframe]:
                self.holes.append(f"{k.symbol} {k.timeframe} {last} → {k.open_time}")
        if last is None or k.open_time > last:
            self.last_open[key] = k.open_time
        if self.armed:
            self.bars["REST" if k.key in self.rest_keys else "ws"] += 1

    def decision(self, d: Any) -> None:
        if not self.armed:
            return
        c = d.candidate
        origin = "REST" if (c.symbol, c.timeframe, c.bar_open_time) in self.rest_keys else "ws"
        outcome = "allowed" if d.allowed else (d.reason or "unknown")
        self.decisions[(origin, outcome)] = self.decisions.get((origin, outcome), 0) + 1

    async def measure(
        self, pipe: Connection, args: argparse.Namespace, lags: list[tuple[float, float]], handled: Any
    ) -> list[str]:
        """Follow the outage the fake runs after the steps; the lines to print."""
        loop = asyncio.get_running_loop()
        src, runner = self.src, self.runner
        tag, _t_drop, sent_at_cut, unsent_at_cut, dropped, lost_bytes, rest0 = await loop.run_in_executor(
            None, pipe.recv
        )
        assert tag == "dropped", tag
        self.armed = True
        gap0, unfilled0, dup0 = src.stats.gap_bars_filled, src.stats.gaps_unfilled, src.stats.duplicate_bars_dropped
        tag, t_accept, _refused, _ = await loop.run_in_executor(None, pipe.recv)
        assert tag == "accepted", tag
        n_conns = len(src._pool.connections)
        deadline = t_accept + args.outage_after
        current = False
        for _ in range(int(args.outage_after / 0.1) + 1):  # bounded by --outage-after
            await asyncio.sleep(0.1)
            now = time.time()
            if now >= deadline:
                break
            back = {conn for _, up, conn, _ in self.statuses if up}
            if self.first_msg is None or len(back) < n_conns or self.in_fill:
                continue
            window = []
            for w, lag in reversed(lags):  # the last 0.5 s (lags are appended in time order)
                if w < now - 0.5:
                    break
                window.append(lag)
            if len(window) >= 20 and _q(sorted(window), 0.99) <= LAG_BOUND_MS:
                current = True
                break
        t_stop = time.time()
        await asyncio.sleep(60.0 / args.speed + 1.0)  # one more 1m close, from the websocket, after recovery
        pipe.send(("done",))
        tag, sent_after, unsent, refused, rest1 = await loop.run_in_executor(None, pipe.recv)
        assert tag == "after", tag

        ups = [(t, conn) for t, up, conn, _ in self.statuses if up]
        t_first = min((t for t, _ in ups), default=math.nan)
        per_conn: dict[str, float] = {}
        for t, conn in ups:
            per_conn.setdefault(conn, t)
        t_all = max(per_conn.values()) if len(per_conn) >= n_conns else math.nan
        # Current: the first 0.5 s window (0.1 s steps) after every connection was back with lag p99 ≤ the bound.
        t_current = math.nan
        post = [(w, lag) for w, lag in lags if w >= t_accept]
        if current and not math.isnan(t_all):
            t = t_all
            while t < t_stop + 0.1:
                win = sorted(lag for w, lag in post if t <= w < t + 0.5)
                if len(win) >= 20 and _q(win, 0.99) <= LAG_BOUND_MS:
                    t_current = t + 0.5
                    break
                t += 0.1
        recovering = sorted(lag for w, lag in post if w < (t_current if not math.isnan(t_current) else t_stop))
        pre = self.first_msg[1] if self.first_msg is not None else int(handled())
        fill_s = sum(f[1] for f in self.fills)
        kl = rest1.get("klines", 0) - rest0.get("klines", 0)
        extra = {k: v - rest0.get(k, 0) for k, v in rest1.items() if v != rest0.get(k, 0)}

        def dec(origin: str) -> str:
            got = {o: n for (orig, o), n in sorted(self.decisions.items()) if orig == origin}
            return f"{sum(got.values()):,} ({', '.join(f'{o} {n:,}' for o, n in got.items()) or '-'})"

        def since(t: float) -> str:
            return f"{t - t_accept:.1f} s" if not math.isnan(t) else "never"

        age_s = runner.settings.filters.max_data_age_s if hasattr(runner, "settings") else math.nan
        lines = [
            f"outage: {args.outage:g} s wall ({args.outage * args.speed / 60:g} market minutes at ×{args.speed:g}), "
            f"then {args.close_spread.split(',')[-1]} closes at {float(args.rates.split(',')[-1]):,.0f} msgs/s; "
            f"the fake cut {dropped} connections ({lost_bytes:,} bytes still in its write buffers, discarded) and "
            f"refused {refused} handshakes (503)",
            f"  reconnect (from the fake accepting again): first connection back {since(t_first)}, all {n_conns} "
            f"{since(t_all)}, first live message handled "
            f"{since(self.first_msg[0]) if self.first_msg else 'never'}",
            f"  gap fill: {len(self.fills)} fill(s) (one per kline connection back), {sum(f[2] for f in self.fills):,} "
            f"REST kline requests ({kl:,} seen by the fake, all REST calls since the cut: {extra}), consumer blocked "
            f"{fill_s:.2f} s wall (longest {max((f[1] for f in self.fills), default=0.0):.2f} s, "
            f"{sum(f[3] for f in self.fills):,} bars); other REST bar fetches: {len(self.fetches)} "
            f"({sum(f[1] for f in self.fetches):.2f} s)",
            f"  current (lag p99 ≤ {LAG_BOUND_MS:.0f} ms over 0.5 s, every connection back): {since(t_current)} after "
            f"accepting; lag until then p50/p99/max "
            + (
                f"{_q(recovering, 0.5):,.0f}/{_q(recovering, 0.99):,.0f}/{recovering[-1]:,.0f} ms"
                if recovering
                else "-"
            ),
            f"  bars: {src.stats.gap_bars_filled - gap0:,} filled by REST (gaps unfilled "
            f"{src.stats.gaps_unfilled - unfilled0}, duplicates dropped {src.stats.duplicate_bars_dropped - dup0:,}); "
            f"closed bars to the engine since the cut: REST {self.bars['REST']:,}, "
            f"websocket {self.bars['ws']:,}; over the whole run: holes {len(self.holes)}, out of order "
            f"{len(self.out_of_order)} {(self.holes + self.out_of_order)[:3]}",
            f"  messages: the fake had written {sent_at_cut:,} at the cut, the client handled {pre:,} of them: "
            f'{sent_at_cut - pre:,} lost in flight (part of the total\'s "lost"); '
            f"{sent_after:,} sent after accepting; {unsent - unsent_at_cut:,} not written (client gone)",
            f"  decisions since the cut: on REST-filled bars {dec('REST')}; on websocket bars {dec('ws')}"
            f"  [stale_data: bar older than filters.max_data_age_s = {age_s:g} s market = {age_s / args.speed:g} s "
            f"wall at ×{args.speed:g}]",
        ]
        return lines


async def _client(args: argparse.Namespace, rest_url: str, ws_url: str, pipe: Connection, clock: Any) -> None:
    from ultra_signals.apps.report import latency_percentiles
    from ultra_signals.bootstrap import build_runner
    from ultra_signals.core.config import load_settings
    from ultra_signals.core.events import Kline, event_time
    from ultra_signals.journal.writer import Journal
    from ultra_signals.observability.latency import LatencyHistogram
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.sources.binance.source import BinanceSource
    from ultra_signals.transport.notifier import NullNotifier

    symbols = _symbols(args.symbols)
    tfs = args.timeframes.split(",")
    settings = load_settings(
        environ={},
        overrides={
            "runtime.source": "binance",
            "runtime.symbols": symbols,
            "runtime.timeframes": tfs,
            "runtime.primary_timeframe": tfs[0],  # decisions on every 1m close: several per step
            "runtime.warmup_bars": args.warmup,
            "scoring.entry_threshold": 0.05,
            "binance.rest_url": rest_url,
            "binance.ws_url": ws_url,
            "binance.ws_routing": "split",
            "execution.broker": args.broker,
            "binance.close_grace_s": 1.0,
            "binance.silence_timeout_s": 10.0,
            # Summaries are paced on market time: keep the real once-a-second-per-symbol cadence in wall time.
            "binance.book_summary_interval_ms": int(1000 * args.speed),
            # (only when asked: the release before this setting refuses the key, and "all" was its behaviour)
            **({"binance.streams": args.streams} if args.streams != "all" else {}),
        },
    )
    spreads = args.close_spread.split(",")
    plan = [(spread, float(r)) for spread in spreads for r in args.rates.split(",")]
    rates = [r for _, r in plan]
    plan_s = len(rates) * (args.seconds + args.gap) + 600.0  # and warm-up: the run is ended by the bench
    duration_min = int(plan_s * args.speed / 60.0) + 2
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(f"sqlite:///{tmp}/journal.db", settings.journal.batch_size)
        src = BinanceSource(settings, metrics, duration_minutes=duration_min, clock=clock)
        runner = build_runner(
            settings, source=src, journal=journal, notifier=NullNotifier(), metrics=metrics, serve_metrics=False
        )
        engine = runner.engine
        probe: _OutageProbe | None = None
        lags: list[tuple[float, float]] = []
        waits: list[tuple[float, float]] = []
        live = [False]
        on_event = engine.on_event
        now = time.time

        perf = time.perf_counter
        # Wall time spent per stage while live (the runner's work at bar closes, for the sizing): [seconds, calls].
        cost: dict[str, list[float]] = {"engine per closed bar": [0.0, 0], "runner._handle per candidate": [0.0, 0]}

        def timed(ev: Any) -> Any:  # the bench's probe: exchange send → engine, for every live event but closes
            if not live[0]:
                if probe is not None and type(ev) is Kline and ev.closed:
                    probe.bar(ev)
                return on_event(ev)
            if type(ev) is Kline and ev.closed:
                if probe is not None:
                    probe.bar(ev)
                # A closed bar carries its close time, not when the exchange sent it (the fake may hold it, as
                # Binance does, until the symbol's next trade): its socket read → decision is the `dec` figure,
                # and the part of it spent before the engine (kernel, inbox, source, bars ahead) is `waits`.
                recv = src.received_at
                if recv is not None:
                    waits.append((now(), (now() - recv) * 1000.0))
                t = perf()
                r = on_event(ev)
                c = cost["engine per closed bar"]
                c[0] += perf() - t
                c[1] += 1
                return r
            lags.append((now(), (now() - clock.wall_of(event_time(ev))) * 1000.0))
            return on_event(ev)

        engine.on_event = timed  # type: ignore[method-assign]
        handle = runner._handle

        def timed_handle(d: Any, t0: float) -> None:
            if probe is not None:
                probe.decision(d)
            t = perf()
            handle(d, t0)
            if live[0]:
                c = cost["runner._handle per candidate"]
                c[0] += perf() - t
                c[1] += 1

        runner._handle = timed_handle  # type: ignore[method-assign]
        probe = _OutageProbe(src, runner, tfs) if args.outage > 0 else None
        run = asyncio.create_task(runner.run())

        def handled() -> float:
            if hasattr(src.stats, "messages"):  # every message handled, merged or replaced (this tree)
                return float(src.stats.messages)
            return _sum_metric(metrics.ws_messages) + _sum_metric(metrics.ws_message_errors)

        def coalesced() -> float:
            c = getattr(metrics, "ws_depth_coalesced", None)
            return _sum_metric(c) if c is not None else 0.0

        def sample() -> Sample:
            return Sample(time.time(), time.process_time(), handled(), coalesced(), _sum_metric(metrics.ws_reconnects))

        # Warm-up: REST bars for every symbol and timeframe, and every connection up.
        expected = len(symbols) * len(tfs) * args.warmup
        t_wait = time.time()
        while (src.stats.warmup_bars < expected or metrics.ws_connected._value.get() != 1.0) and not run.done():
            if time.time() - t_wait > 120:
                raise SystemExit(f"warm-up did not finish: {src.stats.warmup_bars}/{expected} bars")
            await asyncio.sleep(0.1)
        # Then the connection statuses queued during warm-up (each asks REST for bars closed meanwhile) and the
        # messages buffered behind them: start measuring once the source has caught up.
        quiet = 0
        while quiet < 15 and not run.done():
            filled = src.stats.gap_bars_filled
            await asyncio.sleep(0.1)
            kinds = src.stream_kinds() if hasattr(src, "stream_kinds") else ["depth"]
            syncing = "depth" in kinds and any(b.need_snapshot() for b in src.books.values())
            inbox = getattr(src, "_inbox", None)  # (the release before used an asyncio.Queue)
            backlog = len(inbox) if inbox is not None else src._queue.qsize()  # type: ignore[attr-defined]
            busy = syncing or backlog > 10 or src.stats.gap_bars_filled != filled
            quiet = 0 if busy else quiet + 1
        live[0] = True
        start_at = time.time() + 0.3
        outage = (args.outage, args.outage_after) if args.outage > 0 else None
        pipe.send(("run", start_at, plan, args.seconds, args.gap, args.write_ms / 1000.0, outage))
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
        marks: list[tuple[Sample, Sample, Sample]] = []
        marks_lat: list[Any] = []
        for i, _ in enumerate(rates):
            t_start = start_at + i * (args.seconds + args.gap)
            await asyncio.sleep(max(0.0, t_start - time.time()))
            s0 = sample()
            # The runner's own tick-to-decision, per step: a fresh histogram each step (from its start: the
            # decisions of the warm-up's catch-up, REST bars closed during start-up, are not the step's).
            runner.stats.latencies_ms = LatencyHistogram()
            await asyncio.sleep(max(0.0, t_start + args.seconds - time.time()))
            s1 = sample()
            await asyncio.sleep(max(0.0, t_start + args.seconds + args.gap - 0.05 - time.time()))
            s2 = sample()
            marks.append((s0, s1, s2))
            marks_lat.append(runner.stats.latencies_ms)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
            Path(args.profile).write_text(profiler.output_html())
            Path(args.profile).with_suffix(".txt").write_text(profiler.output_text(unicode=True, color=False))
            print(profiler.output_text(unicode=True, color=False, show_all=False)[:12000])
        outage_report: list[str] = []
        if probe is not None:
            outage_report = await probe.measure(pipe, args, lags, handled)
        if run.done():
            print(f"the runner stopped early: crash={runner.stats.crash!r} result={run.result()!r}"[:500])
        steps, rest_calls, connects, sent_total = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        # The server has stopped sending: whatever it wrote is handled now, or lost.  Wait while the count moves.
        total_handled, t_end = handled(), time.time() + 30
        while time.time() < t_end:
            await asyncio.sleep(1.0)
            if handled() == total_handled:
                break
            total_handled = handled()
        src._closed = True  # end the run now (the bench's duration is generous)
        await src.aclose()
        try:
            await asyncio.wait_for(run, 30)
        except TimeoutError:
            run.cancel()
        journal.close()

    print(f"client: {len(symbols)} symbols × {len(tfs)} timeframes ({','.join(tfs)}), warm-up {args.warmup} bars, "
          f"stream set {args.streams} ({'/'.join(getattr(src, 'stream_kinds', lambda: ['all'])())}), "
          f"broker {args.broker}; "
          f"market clock ×{args.speed:g} (a 1m close every {60 / args.speed:.1f} s wall); "
          f"the fake writes every {args.write_ms:g} ms; "
          f"streams: {len(src.streams())} over {len(src._pool.connections) if src._pool else 0} connections; "
          f"server connects {connects}")  # fmt: skip
    print(
        "closes: none = every symbol's closed bars in one write at the boundary (worst case); trade = each "
        "symbol's at its first trade of the new bar, else 2 s after the boundary (the recorded behaviour)"
    )
    print(
        f"{'closes':>6} {'rate':>8} {'msgs/s':>8} {'CPU µs/msg':>10} {'CPU':>6} {'lag p50':>8} {'lag p99':>8} {'dec p50':>8} {'dec p99':>8} {'wait p99':>8} "
        f"{'decisions':>9} {'coalesced':>9} {'behind':>7} {'recon':>5}  kept up  (closes sent after the boundary: p50/p90/max)"
    )
    sustained = 0.0
    total_sent = 0
    for i, ((spread, rate), (s0, s1, s2), st) in enumerate(zip(plan, marks, steps, strict=True)):
        sent = st["sent"]
        total_sent += sent
        got_step = s1.handled - s0.handled
        got_all = s2.handled - s0.handled
        wall = s1.wall - s0.wall
        cpu = s2.cpu - s0.cpu
        cpu_pct = (s1.cpu - s0.cpu) / wall * 100.0  # of one core, during the step: < 100 % and behind = starved
        t_start = start_at + i * (args.seconds + args.gap)
        step_lags = sorted(lag for w, lag in lags if t_start <= w < t_start + args.seconds + args.gap)
        p50 = step_lags[len(step_lags) // 2] if step_lags else math.nan
        p99 = step_lags[min(len(step_lags) - 1, int(len(step_lags) * 0.99))] if step_lags else math.nan
        dec = latency_percentiles(marks_lat[i])
        step_waits = sorted(ms for w, ms in waits if t_start <= w < t_start + args.seconds + args.gap)
        wait99 = _q(step_waits, 0.99) if step_waits else math.nan
        coal = s2.coalesced - s0.coalesced
        behind = max(0, int(sent - got_all))
        recon = int(s2.reconnects - s0.reconnects)
        sent_rate = st["sent"] / args.seconds
        fake_ok = sent_rate >= 0.97 * rate  # else the generator (one Python process) could not produce the rate
        kept = got_all >= 0.97 * sent and behind <= 0.03 * sent and recon == 0 and p99 <= LAG_BOUND_MS
        kept = kept and got_step / wall >= 0.97 * min(rate, sent_rate)
        if kept and fake_ok:
            sustained = max(sustained, rate)
        delays = st["close_delays_s"]
        spread_note = (
            f"  ({_q(delays, 0.5) * 1e3:,.0f}/{_q(delays, 0.9) * 1e3:,.0f}/{delays[-1] * 1e3:,.0f} ms, {len(delays)} closes)"
            if delays
            else ""
        )
        print(
            f"{spread:>6} {rate:>8,.0f} {got_step / wall:>8,.0f} {cpu / max(got_all, 1) * 1e6:>10.1f} {cpu_pct:>5.0f}% {p50:>7.1f}ms {p99:>7.1f}ms "
            f"{dec['p50']:>7.2f}ms {dec['p99']:>7.2f}ms {wait99:>6.2f}ms {int(dec['n']):>9,} {int(coal):>9,} {behind:>7,} {recon:>5}  "
            f"{'yes' if kept else 'no'}{'' if fake_ok else f' (the fake sent only {sent_rate:,.0f}/s)'}{spread_note}"
        )
    lost = max(0, int(sent_total - total_handled))
    print(f"total: the server wrote {sent_total:,} messages since start (steps, quiet trickle, bar closes); "
          f"handled, merged or replaced {int(total_handled):,}; lost {lost:,}; REST calls {rest_calls}")  # fmt: skip
    print(f"source stats: {src.stats}"[:1500])
    parts = ", ".join(f"{k} {v[0] / v[1] * 1e6:,.0f} µs ({int(v[1]):,})" for k, v in cost.items() if v[1])
    print(f"decision work (wall, while live): {parts}")

    print(f"sustained: {sustained:,.0f} msgs/s")
    for line in outage_report:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default=",".join(str(r) for r in RATES))
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per rate step")
    ap.add_argument("--gap", type=float, default=2.0, help="quiet seconds after each step (drain, bars still close)")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--timeframes", default="1m,5m,15m,1h")
    ap.add_argument("--warmup", type=int, default=210)
    ap.add_argument("--speed", type=float, default=20.0, help="market clock speed (× wall)")
    ap.add_argument("--streams", default="all", choices=["all", "needed"], help="binance.streams (the stream set)")
    ap.add_argument("--broker", default="paper", choices=["paper", "none"], help="execution.broker (what-if fills)")
    ap.add_argument(
        "--close-spread",
        default="none,trade",
        help="when the fake sends closed bars, one pass over the rates per value: none (all symbols in one write at "
        "the boundary: the worst case), trade (each symbol's at its first trade of the new bar, else 2 s after: "
        "as recorded from Binance)",
    )
    ap.add_argument(
        "--write-ms",
        type=float,
        default=5.0,
        help="the fake writes what is due every this many ms during a step (5: at 20,000 msgs/s, 100 messages land "
        "together, and the last waits behind the 99 before it)",
    )
    ap.add_argument(
        "--outage",
        type=float,
        default=0.0,
        help="after the steps, an outage of this many wall seconds: the fake drops every websocket connection and "
        "refuses new ones (503), then accepts again and sends at the last step's rate (0: no outage)",
    )
    ap.add_argument(
        "--outage-after",
        type=float,
        default=90.0,
        help="at most this many seconds after the fake accepts again for the client to be current (the reconnect "
        "backoff alone may be half of reconnect_backoff_max_s)",
    )
    ap.add_argument("--profile", default="", help="write a pyinstrument HTML profile of the steps here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from tests.fakes.binance_stream_server import CLOSE_SPREADS, MarketClock

    if not set(args.close_spread.split(",")) <= set(CLOSE_SPREADS):
        ap.error(f"--close-spread: values are {', '.join(CLOSE_SPREADS)}")

    wall0 = time.time()
    market0 = int(wall0 * 1000) // 60_000 * 60_000 + 30_000  # mid-minute, so the first close comes soon
    clock = MarketClock(market0, wall0, args.speed)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(child, args.symbols, market0, wall0, args.speed), daemon=True)
    proc.start()
    rest_url, ws_url = parent.recv()
    print(f"machine: {describe()}")
    print("(shared machine: other jobs run beside this one; CPU µs/msg is the comparable figure)")
    try:
        asyncio.run(_client(args, rest_url, ws_url, parent, clock))
    finally:
        parent.send(("stop",))
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


if __name__ == "__main__":
    main()
