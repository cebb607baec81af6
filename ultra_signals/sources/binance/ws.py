"""Combined-stream websocket connections that stay up: backoff with jitter, silence detection, planned swaps.

What the peers' users kept reporting, and the answer here:

- *reconnect storms*: exponential backoff with equal jitter; the attempt counter resets only once a new
  connection has delivered a message (a server that accepts and drops at once still backs off);
- *streams that never recover*: a connection silent for ``silence_timeout_s`` is dead even if TCP and
  pings are fine (a stalled stream, or Binance's retired ``/stream`` URL, which still completes the handshake
  but sends nothing);
- *24 h limit*: before ``planned_reconnect_h`` the successor is opened first and the old connection is closed
  only once the new one delivers (or after a timeout); the consumer de-duplicates the overlap.

Ping/pong: Binance pings every few minutes and drops a client that does not answer; ``websockets`` answers
every ping frame with a pong carrying the same payload by itself (``tests/test_binance_ws.py`` checks it),
and its own keepalive pings detect a dead TCP path.

Connections put :class:`WsMessage` and :class:`WsStatus` items on one queue, in arrival order, so the
consumer sees a reconnect exactly between the last message of the old connection and the first of the new.

Per message the reader does as little as it can (issue 13: two ``asyncio.wait_for`` per message, each a task
and a timer, were a third of the cost): it awaits ``recv()`` directly, and *one* watchdog task per connection
wakes when the connection could have gone silent (``silence_timeout_s`` after the last message it saw) and aborts
it if it has.  The output callback may be synchronous (the source's inbox: no await, no task switch) or a
coroutine function (an ``asyncio.Queue.put``).  Because the reader never waits on the consumer (the inbox sheds
instead, see ``source.py``), ``websockets`` keeps reading the socket under backlog, so ping frames are answered
with pongs and the keepalive never times out behind unread data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from ultra_signals.core.backoff import backoff_delay
from ultra_signals.observability.metrics import Metrics
from ultra_signals.venues.binance.endpoints import Endpoints, Route

log = logging.getLogger(__name__)

StreamClass = Literal["market", "public"]
PUBLIC_KINDS = ("bookTicker", "depth")  # Binance's /public route: high-frequency book data


def stream_class(stream: str) -> StreamClass:
    kind = stream.split("@", 1)[1] if "@" in stream else stream
    return "public" if kind.startswith(PUBLIC_KINDS) else "market"


def build_urls(
    ws_base: str, streams: list[str], routing: Literal["split", "legacy"], max_per_conn: int
) -> list[tuple[str, str, list[str]]]:
    """(name, url, streams) per connection: ≤ ``max_per_conn`` streams each, routed as Binance requires."""
    base = ws_base.rstrip("/")
    groups: dict[str, list[str]] = {}
    for s in streams:
        route: str = stream_class(s) if routing == "split" else "stream"
        groups.setdefault(route, []).append(s)
    out = []
    ends = Endpoints("", base)
    for route, ss in groups.items():
        prefix = f"{ends.route(cast(Route, route))}/stream" if routing == "split" else f"{base}/stream"
        for i in range(0, len(ss), max_per_conn):
            chunk = ss[i : i + max_per_conn]
            out.append((f"{route}-{i // max_per_conn}", f"{prefix}?streams={'/'.join(chunk)}", chunk))
    return out


@dataclass(slots=True)
class WsMessage:
    """One data frame as received (not frozen: a frozen dataclass's ``__init__`` costs twice as much)."""

    conn: str
    raw: str | bytes
    recv_ms: int
    #: Wall time (s) of the socket read that completed this message: the start of tick-to-decision.
    recv_s: float = 0.0


_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class StampedConnection(ClientConnection):
    """A client connection that remembers when the socket read completing each data message happened.

    ``recv()`` hands messages over later, whenever our reader task gets the event loop; under load that can be
    long after the bytes arrived.  The stamps (one per data message, in ``recv()`` order) keep the true
    arrival, so the time a message waits behind a busy runner counts in its tick-to-decision latency.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_at: deque[float] = deque()
        self._read_now = time.time()

    def data_received(self, data: bytes) -> None:
        self._read_now = time.time()
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.fin and event.opcode in _DATA_OPCODES:
            self.read_at.append(self._read_now)
        super().process_event(event)


@dataclass(slots=True, frozen=True)
class WsStatus:
    """A connection came up (``connected``) or went down; ``reason`` says why (start, dropped, silent,
    planned, connect_failed, closed)."""

    conn: str
    connected: bool
    reason: str


class ConnectLimiter:
    """At most ``max_attempts`` connection attempts in any ``window_s`` (Binance USDⓈ-M: 300 per 5 minutes per IP).

    Shared by every connection of a pool, so a reconnect storm across many connections cannot exceed it: an
    attempt over the budget waits until the oldest attempt in the window has aged out.  With several processes
    on one IP, give each ``300 // processes``.
    """

    def __init__(self, max_attempts: int = 300, window_s: float = 300.0) -> None:
        self.max_attempts, self.window_s = max_attempts, window_s
        self._times: deque[float] = deque()
        self.waited = 0

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            while self._times and now - self._times[0] >= self.window_s:
                self._times.popleft()
            if len(self._times) < self.max_attempts:
                self._times.append(now)
                return
            self.waited += 1
            await asyncio.sleep(self._times[0] + self.window_s - now)


@dataclass(slots=True)
class WsOptions:
    silence_timeout_s: float = 15.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    planned_reconnect_s: float = 23.5 * 3600
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 2.0
    max_size: int = 2**23
    #: Hand text frames over as the bytes received (``recv(decode=False)``): the JSON parser reads UTF-8 bytes
    #: directly, so decoding to ``str`` first is wasted work.  False keeps ``str`` (tests comparing text).
    raw_bytes: bool = False


@dataclass(slots=True)
class _Link:
    ws: ClientConnection
    first_message: asyncio.Event = field(default_factory=asyncio.Event)
    retiring: bool = False
    task: asyncio.Task[str] | None = None
    #: Wall time (s) of the last message; the watchdog compares it with the silence timeout.
    last: float = 0.0
    silent: bool = False


class StreamConnection:
    """One combined-stream URL kept connected until :meth:`aclose`."""

    def __init__(
        self,
        name: str,
        url: str,
        out: Callable[[WsMessage | WsStatus], Awaitable[None] | None],
        metrics: Metrics,
        opts: WsOptions,
        *,
        rng: random.Random | None = None,
        on_state: Callable[[], None] | None = None,
        limiter: ConnectLimiter | None = None,
    ) -> None:
        self.name, self.url = name, url
        self._limiter = limiter or ConnectLimiter()
        self._out, self._m, self._o = out, metrics, opts
        self._rng = rng or random.Random()
        self._on_state = on_state
        self._closing = False
        self._attempt = 0
        self.connected = False
        self.reconnects: dict[str, int] = {}
        self._link: _Link | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    async def run(self) -> None:
        link = await self._open("start")
        wait = self._o.planned_reconnect_s
        try:
            while link is not None and not self._closing:
                assert link.task is not None
                self._link = link
                done, _ = await asyncio.wait({link.task}, timeout=wait)
                if link.task in done:
                    reason = link.task.result()
                    self._set_connected(False)
                    await self._put(WsStatus(self.name, False, reason))
                    if self._closing:
                        return
                    self._count(reason)
                    link = await self._open(reason)
                    wait = self._o.planned_reconnect_s
                    continue
                new = await self._swap(link)
                if new is None:  # the successor did not open: keep the old one, try again soon
                    wait = backoff_delay(self._attempt, self._o.backoff_base_s, self._o.backoff_max_s, self._rng)
                    self._attempt += 1
                else:
                    link, wait = new, self._o.planned_reconnect_s
        finally:
            cur = self._link
            if cur is not None and cur.task is not None and not cur.task.done():
                cur.task.cancel()
                await asyncio.gather(cur.task, return_exceptions=True)

    async def aclose(self) -> None:
        self._closing = True

    async def _open(self, reason: str) -> _Link | None:
        """Connect, retrying with backoff until it works or we are closing."""
        if reason != "start":
            delay = backoff_delay(self._attempt, self._o.backoff_base_s, self._o.backoff_max_s, self._rng)
            self._attempt += 1
            log.warning("binance ws %s: %s; reconnecting in %.2fs", self.name, reason, delay)
            await asyncio.sleep(delay)
        while not self._closing:
            link = await self._try_open()
            if link is not None:
                self._set_connected(True)
                await self._put(WsStatus(self.name, True, reason))
                return link
            self._count("connect_failed")
            delay = backoff_delay(self._attempt, self._o.backoff_base_s, self._o.backoff_max_s, self._rng)
            self._attempt += 1
            await asyncio.sleep(delay)
        return None

    async def _try_open(self) -> _Link | None:
        await self._limiter.acquire()
        try:
            ws = await connect(
                self.url,
                open_timeout=self._o.open_timeout_s,
                ping_interval=self._o.ping_interval_s,
                ping_timeout=self._o.ping_timeout_s,
                close_timeout=self._o.close_timeout_s,
                max_size=self._o.max_size,
                # Frames ``websockets`` buffers before it stops reading the socket; stopped, it would not read the
                # pong behind them either and the keepalive would time out.  The reader drains it every event-loop
                # turn and the source sheds beyond its own mark, so this only absorbs a busy turn.
                max_queue=8192,
                proxy=None,
                create_connection=StampedConnection,
            )
        except (OSError, TimeoutError, ConnectionClosed, ValueError) as e:
            log.warning("binance ws %s: connect failed: %s: %s", self.name, type(e).__name__, e)
            return None
        except Exception as e:  # InvalidHandshake, InvalidStatus, InvalidURI...: retried the same way
            log.warning("binance ws %s: connect failed: %s: %s", self.name, type(e).__name__, e)
            return None
        link = _Link(ws)
        link.task = asyncio.create_task(self._pump(link), name=f"binance-ws-{self.name}")
        return link

    async def _swap(self, old: _Link) -> _Link | None:
        """Planned reconnect: open the successor first, close the old one once the new one delivers."""
        new = await self._try_open()
        if new is None:
            self._count("connect_failed")
            return None
        await self._put(WsStatus(self.name, True, "planned"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(new.first_message.wait(), timeout=self._o.silence_timeout_s)
        old.retiring = True
        await old.ws.close()
        if old.task is not None:
            await asyncio.gather(old.task, return_exceptions=True)
        self._count("planned")
        self._link = new
        return new

    async def _pump(self, link: _Link) -> str:
        ws = link.ws
        stamps: deque[float] | None = getattr(ws, "read_at", None)
        out = self._out
        name = self.name
        decode = False if self._o.raw_bytes else None
        link.last = time.time()
        watchdog = asyncio.create_task(self._watch(link), name=f"binance-ws-watch-{name}")
        try:
            while True:
                raw = await ws.recv(decode=decode)
                recv = stamps.popleft() if stamps else time.time()
                link.last = recv
                if link.retiring:
                    return "closed"
                if not link.first_message.is_set():
                    link.first_message.set()
                    self._attempt = 0
                r = out(WsMessage(name, raw, int(recv * 1000), recv))
                if r is not None:
                    await r
        except ConnectionClosed:
            if link.silent:
                return "silent"
            return "closed" if link.retiring or self._closing else "dropped"
        except asyncio.CancelledError:
            ws.transport.abort()
            raise
        finally:
            watchdog.cancel()

    async def _watch(self, link: _Link) -> None:
        """The connection's one silence watchdog: sleeps until the timeout could have passed, checks, repeats."""
        timeout = self._o.silence_timeout_s
        while True:
            await asyncio.sleep(max(0.0, link.last + timeout - time.time()) + 0.001)
            if time.time() - link.last >= timeout:
                link.silent = True
                link.ws.transport.abort()  # the reader sees ConnectionClosed and reports "silent"
                return

    # -- helpers ----------------------------------------------------------------------------------------
    async def _put(self, item: WsMessage | WsStatus) -> None:
        r = self._out(item)
        if r is not None:
            await r

    def _count(self, reason: str) -> None:
        self._m.ws_reconnects.labels(reason=reason).inc()
        self.reconnects[reason] = self.reconnects.get(reason, 0) + 1

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if self._on_state is not None:
            self._on_state()


class StreamPool:
    """Every connection a source needs, one task each; ``ws_connected`` is 1 only while all are up."""

    def __init__(
        self,
        urls: list[tuple[str, str, list[str]]],
        out: Callable[[WsMessage | WsStatus], Awaitable[None] | None],
        metrics: Metrics,
        opts: WsOptions,
        rng: random.Random | None = None,
        limiter: ConnectLimiter | None = None,
    ) -> None:
        self._m = metrics
        self.limiter = limiter or ConnectLimiter()
        self.connections = [
            StreamConnection(name, url, out, metrics, opts, rng=rng, on_state=self._update_gauge, limiter=self.limiter)
            for name, url, _ in urls
        ]
        self.streams = {name: streams for name, _, streams in urls}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for c in self.connections:
            self._tasks.append(asyncio.create_task(c.run(), name=f"binance-ws-run-{c.name}"))

    def _update_gauge(self) -> None:
        self._m.ws_connected.set(1 if self.connections and all(c.connected for c in self.connections) else 0)

    async def aclose(self) -> None:
        for c in self.connections:
            await c.aclose()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.connections:
            c.connected = False
        self._update_gauge()
