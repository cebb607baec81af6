"""Every Prometheus metric the service exports, in one registry, and the HTTP exporter on loopback.

All names live here so the Grafana dashboard and alert rules can be checked against one list, and so no
module invents a metric the dashboard does not know.  Each runner owns a :class:`Metrics` with its own
registry (tests run several in one process).
"""

from __future__ import annotations

import errno
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

#: User-Agent of the runner's own scrape of its exporter (``Runner`` self-scrape); any other agent is external.
SELF_SCRAPE_AGENT = "ultra-signals-self-scrape"
#: Series the report quotes from the last served scrape.
SCRAPE_VALUE_NAMES = ("sniper_window_count", "sniper_window_cap", "signals_allowed_total", "market_time_seconds")

LATENCY_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
OP_BUCKETS_MS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 25, 50, 100, 250)
#: Wider buckets for latencies that cross the network or a queue (bar close -> decision, decision -> ack).
WIDE_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class ScrapeLog:
    """Every ``/metrics`` request the exporter actually answered: wall times, and who asked (self or external).

    This is the evidence behind the report's metrics criterion: the runner's internal refresh loop proves
    nothing about the exporter; a served scrape does.
    """

    times: list[float] = field(default_factory=list)
    external: int = 0
    self_scrapes: int = 0
    last_body: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, agent: str, body: bytes = b"") -> None:
        with self.lock:
            self.times.append(time.time())
            self.last_body = body
            if agent.startswith(SELF_SCRAPE_AGENT):
                self.self_scrapes += 1
            else:
                self.external += 1

    @property
    def count(self) -> int:
        return len(self.times)

    def last_values(self, names: Iterable[str] = SCRAPE_VALUE_NAMES) -> dict[str, float]:
        """A few values as the last served scrape showed them (``name{labels}`` -> value)."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = set(names)
        out: dict[str, float] = {}
        with self.lock:
            body = self.last_body
        if body[:2] == b"\x1f\x8b":  # a scraper that accepts gzip (Prometheus, httpx) got a compressed body
            import gzip

            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return out
        try:
            for fam in text_string_to_metric_families(body.decode("utf-8", "replace")):
                for smp in fam.samples:
                    if smp.name in wanted:
                        labels = ",".join(f"{k}={v}" for k, v in sorted(smp.labels.items()))
                        out[f"{smp.name}{{{labels}}}" if labels else smp.name] = float(smp.value)
        except ValueError:  # evidence for the report only: an unreadable body never fails the run
            return {}
        return out

    def max_gap_s(self, start: float, end: float) -> float:
        """Longest wall-clock stretch in ``[start, end]`` without a served scrape (the whole span when none)."""
        with self.lock:
            pts = [start, *sorted(t for t in self.times if start <= t <= end), end]
        return max((b - a for a, b in itertools.pairwise(pts)), default=0.0)


class MetricsServeError(OSError):
    """The exporter could not bind (the port is taken, or the host is not an address of this machine)."""


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # -- pipeline (signal path) --
        self.candidates = Counter("signals_candidates", "Candidates proposed by scoring", ["symbol"], registry=r)
        self.allowed = Counter("signals_allowed", "Signals allowed by every filter", ["symbol", "side"], registry=r)
        self.blocked = Counter("signals_blocked", "Candidates blocked, by reason code", ["reason"], registry=r)
        self.sniper_rejections = Counter(
            "sniper_rejections", "Candidates blocked by sniper mode, by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "latency_tick_to_decision_ms",
            "Wall time from the moment the source received the message (socket read; for sim/replay the moment the"
            " source produced it) to its decision, queue time included (ms)",
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.bar_close_to_decision = Histogram(
            "latency_bar_close_to_decision_ms",
            "Live only: exchange bar close (server time, offset-corrected) to its decision (ms)",
            buckets=WIDE_BUCKETS_MS,
            registry=r,
        )
        self.decision_to_ack = Histogram(
            "latency_decision_to_ack_ms",
            "Decision to the exchange's acknowledgement of its entry order (ms); observed by the executor",
            buckets=WIDE_BUCKETS_MS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "event_loop_lag_seconds",
            "How late the runner's heartbeat task woke up: time the event loop was blocked (s)",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=r,
        )
        self.gc_pause = Histogram(
            "gc_pause_ms",
            "Python's cyclic garbage collector: each collection's pause, by generation (2 = full; ms). Live runs "
            "take full ones only in the quiet middle of a minute (observability/gc_pauses.py)",
            ["generation"],
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0),
            registry=r,
        )
        self.loop_lag_last = Gauge("event_loop_lag_last_seconds", "The latest heartbeat's lateness (s)", registry=r)
        self.loop_heartbeat = Gauge(
            "event_loop_heartbeat_timestamp_seconds", "Wall time of the latest event-loop heartbeat", registry=r
        )
        self.feed_age = Gauge(
            "feed_last_event_age_seconds", "Market-time age of the latest event per symbol", ["symbol"], registry=r
        )
        self.window_count = Gauge(
            "sniper_window_count", "Allowed signals in the trailing cap window", ["window"], registry=r
        )
        self.window_cap = Gauge("sniper_window_cap", "Configured cap of each window", ["window"], registry=r)
        self.counter_backend = Gauge(
            "sniper_counter_backend", "1 for the active counter backend", ["backend"], registry=r
        )
        self.market_time = Gauge("market_time_seconds", "Market clock (event time) of the runner", registry=r)
        self.run_info = Gauge(
            "run_info", "Run identity; value 1", ["run_id", "mode", "source", "simulated"], registry=r
        )
        self.errors = Counter("runner_errors", "Errors caught by the runner, by kind", ["kind"], registry=r)
        self.heartbeat = Gauge(
            "runner_heartbeat_timestamp_seconds",
            "Wall time the runner's loop last proved alive (every second); alerts route around Telegram on it",
            registry=r,
        )
        self.last_update = Gauge(
            "metrics_last_update_timestamp_seconds", "Wall time of the runner's latest metrics refresh", registry=r
        )
        # -- counters backend (Redis) --
        self.redis_errors = Counter("redis_errors", "Redis call errors and timeouts", ["op"], registry=r)
        self.failovers = Counter("sniper_failovers", "Switches from Redis to the memory counters", registry=r)
        self.counter_slow = Counter(
            "sniper_counter_slow_answers",
            "Redis counter calls that timed out or failed once without (yet) causing a failover",
            ["op"],
            registry=r,
        )
        self.counter_op_ms = Histogram(
            "sniper_counter_op_ms", "Check-and-reserve time (ms)", buckets=OP_BUCKETS_MS, registry=r
        )
        # -- market data (Binance) --
        self.ws_connected = Gauge("ws_connected", "1 while the market websocket is connected", registry=r)
        self.ws_reconnects = Counter("ws_reconnects", "Websocket reconnects, by reason", ["reason"], registry=r)
        self.ws_messages = Counter("ws_messages", "Websocket messages, by stream type", ["stream"], registry=r)
        self.ws_message_errors = Counter(
            "ws_message_errors", "Malformed or unexpected messages skipped", ["kind"], registry=r
        )
        self.orderbook_resyncs = Counter("orderbook_resyncs", "Order book resyncs", ["symbol"], registry=r)
        self.ws_coalesced = Counter(
            "ws_messages_coalesced",
            "Messages merged into a later one under backlog (depth diffs: levels kept, U/u/pu chain kept; "
            "book tickers: only the latest kept), by stream type",
            ["stream"],
            registry=r,
        )
        self.rest_requests = Counter("rest_requests", "REST requests", ["endpoint", "status"], registry=r)
        # -- Binance venue client (market data and trading: one IP, separate connections) --
        self.venue_used_weight = Gauge(
            "binance_used_weight",
            "Request weight used in the window, from the latest X-MBX-USED-WEIGHT-* header (per IP; 2400/1m today)",
            ["role", "window"],
            registry=r,
        )
        self.venue_order_count = Gauge(
            "binance_order_count",
            "Orders placed in the window, from the latest X-MBX-ORDER-COUNT-* header (per account)",
            ["role", "window"],
            registry=r,
        )
        self.venue_rate_limited = Counter(
            "binance_rate_limited",
            "Binance answers 429 (rate limited) and 418 (IP banned), by client role",
            ["role", "status"],
            registry=r,
        )
        # -- Telegram --
        self.telegram_messages = Counter("telegram_messages", "Telegram messages", ["kind", "status"], registry=r)
        self.telegram_pending = Gauge("telegram_outbox_pending", "Messages waiting in the outbox", registry=r)
        self.telegram_send_ms = Histogram(
            "telegram_send_ms", "Bot API sendMessage time (ms)", buckets=LATENCY_BUCKETS_MS, registry=r
        )
        self.telegram_ignored = Counter(
            "telegram_updates_ignored", "Updates from chats not allowed to command", registry=r
        )
        # -- execution --
        self.orders = Counter("orders", "Orders, by status", ["status"], registry=r)
        self.trading_state = Gauge("trading_state", "0 ACTIVE, 1 REDUCING, 2 HALTED", registry=r)
        self.entries_refused = Counter(
            "entries_refused",
            "Entries refused before the broker, by reason code (throttle_*, portfolio_*, daily_loss, sizing, ...)",
            ["reason"],
            registry=r,
        )
        self.breaker_trips = Counter("breaker_trips", "Circuit breaker trips", ["breaker"], registry=r)
        self.position_notional = Gauge("position_notional", "Open position notional (USDT)", ["symbol"], registry=r)
        self.pnl_realized = Gauge("pnl_realized_usdt", "Realized PnL (USDT)", registry=r)
        self.fill_slippage = Histogram(
            "fill_slippage_bps",
            "Fill slippage versus arrival price (bps)",
            buckets=(-50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100),
            registry=r,
        )
        self.naked_window = Histogram(
            "bracket_naked_window_ms",
            "Entry fill to both algo brackets acknowledged by the exchange (ms): time the position had no stop",
            buckets=(10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        # -- decision inbox (execution.delivery: stream; execution/inbox.py) --
        self.inbox_pending = Gauge(
            "inbox_pending",
            "Decisions in the account's inbox not yet finished (stream length), sampled by every shard once a second",
            registry=r,
        )
        self.inbox_undelivered = Gauge(
            "inbox_undelivered",
            "This shard's allowed decisions kept locally because Redis refused the delivery",
            registry=r,
        )
        self.inbox_in_doubt = Counter(
            "inbox_in_doubt",
            "Decisions begun by a holder that stopped before finishing them: not executed again, check the exchange",
            registry=r,
        )
        self.inbox_delivery_to_execution = Histogram(
            "inbox_delivery_to_execution_ms",
            "Inbox delivery (the stream entry's Redis time) to the lease holder starting to execute it (ms); the two"
            " clocks are Redis' and the holder's, so host clock skew adds to it",
            buckets=WIDE_BUCKETS_MS,
            registry=r,
        )
        self.scrapes = ScrapeLog()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def set_backend(self, active: str, known: Iterable[str] = ("memory", "redis")) -> None:
        for b in known:
            self.counter_backend.labels(backend=b).set(1 if b == active else 0)

    # -- exporter -------------------------------------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        """Start the exporter; returns the bound port (``port=0`` picks a free one, for tests).

        Each ``/metrics`` request answered is recorded in :attr:`scrapes` (the served-scrape evidence).
        """
        inner = make_wsgi_app(self.registry)
        log = self.scrapes

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            body = inner(environ, start_response)
            if environ.get("PATH_INFO", "/") in ("/metrics", "/"):
                log.record(str(environ.get("HTTP_USER_AGENT", "")), b"".join(body))
            return body

        try:
            server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
        except OSError as e:
            why = "already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise MetricsServeError(
                f"metrics.port {port}: cannot serve /metrics on {host}:{port}: {why} "
                "(set metrics.port, ULTRA_SIGNALS_METRICS__PORT or --metrics-port; 0 picks a free port)"
            ) from None
        # shutdown() waits for serve_forever's next poll: 0.1 s instead of the default 0.5 s, which was half a
        # second of wall time at the end of every run (ten idle wake-ups a second cost nothing measurable).
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-exporter", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
