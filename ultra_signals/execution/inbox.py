"""One executor per account across shards: allowed decisions delivered through a Redis Stream to the lease holder.

Why: shards that trade one account must share its limits (open positions, notional, the daily-loss breaker, the
venue's order-count budget).  Each shard's own risk gateway sees only its own positions, so three shards with
``max_open_positions: 3`` could open nine.  Instead, every shard hands its allowed decisions to the account's
*inbox* (a Redis Stream), and only the holder of the account's lease (:mod:`ultra_signals.execution.lease`) reads
it and runs them through its executor: the one risk engine, gateway and portfolio of the account decide, and one
process talks to the trading API.  Non-holders never place orders.

The protocol, all keys in the namespace's hash slot beside the lease:

* **deliver** (every shard, on the decision path, one round trip): a Lua script ``SET <ids>:<key> NX`` +
  ``XADD``; the decision's run-independent order key (``<namespace>:<symbol>:<tf>:<bar>``) is the idempotency
  key, so a shard that restarts and decides the same bar again does not deliver it twice.  A delivery that fails
  (Redis away) is kept in a bounded local backlog and retried.
* **read** (the holder): ``XREADGROUP`` in the consumer group ``executors`` with the holder's run id as consumer.
* **begin** (the holder, fenced): one script checks that the lease is still ``<holder>|<token>`` and sets the
  decision's state key ``started|<holder>|<token>`` only if it has none.  A fenced-out holder executes nothing;
  a decision that already has a state is never executed again.
* **execute**: the executor's ``on_signal`` — gate, portfolio, sizing, journal row *before* the broker sees it.
* **finish**: ``SET state done|<outcome>`` + ``XACK`` + ``XDEL`` in one script, after the outcome is journaled.
* **after a lease change**: the new holder re-claims every pending entry (``XAUTOCLAIM`` from ``0-0``, idle 0:
  the lease already proves the old consumer is gone) before reading new ones.

What a crash can leave: a decision read but not begun is simply re-claimed and executed by the next holder.  A
decision begun but not finished (the holder died inside ``on_signal``, a window of one synchronous call) is *in
doubt*: if the next holder's journal has its trade row it was executed and is acknowledged as such; otherwise it
is not executed again — it is journaled as an incident (``delivery_in_doubt``) and alerted, because the exchange
reconcile the new holder ran at takeover is what says whether an order went out.  So: at most once, and never
silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from ultra_signals.core.decision import Candidate, Decision, Side
from ultra_signals.core.events import MarketEvent
from ultra_signals.core.notices import Notice, Notifier
from ultra_signals.execution.base import Executor
from ultra_signals.execution.breakers import RunnerHealth
from ultra_signals.execution.lease import ExecutorLease
from ultra_signals.observability.metrics import Metrics

log = logging.getLogger(__name__)

GROUP = "executors"
#: Idempotency and state keys live this long (a week): longer than any restart that could re-decide a bar.
KEY_TTL_MS = 7 * 86_400_000
#: Deliveries kept locally while Redis is away, at most (the oldest is dropped, logged and counted beyond it).
MAX_BACKLOG = 10_000
#: How often each shard's pump samples the inbox length for ``inbox_pending`` (one XLEN; monotonic seconds).
PENDING_SAMPLE_S = 1.0

# KEYS[1] stream, KEYS[2] idempotency key.  ARGV decision json, ttl ms.  → {1, id} added, {0, id} already there.
_DELIVER = """
local have = redis.call('GET', KEYS[2])
if have then return {0, have} end
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return {1, id}
"""

# KEYS[1] lease, KEYS[2] decision state.  ARGV "<holder>|<token>", ttl ms.
# → "fenced" (not the holder), the existing state, or "ok" (state set to started|<holder>|<token>).
_BEGIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
local cur = redis.call('GET', KEYS[2])
if cur then return cur end
redis.call('SET', KEYS[2], 'started|' .. ARGV[1], 'PX', ARGV[2])
return 'ok'
"""

# KEYS[1] stream, KEYS[2] decision state.  ARGV group, entry id, outcome, ttl ms.
_FINISH = """
redis.call('SET', KEYS[2], 'done|' .. ARGV[3], 'PX', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


def encode(d: Decision) -> str:
    """A decision as the inbox carries it (every field the executor reads; floats round-trip exactly)."""
    c = d.candidate
    return json.dumps(
        {
            "run_id": d.run_id,
            "allowed": d.allowed,
            "reason": d.reason,
            "counts": d.counts,
            "not_evaluated": list(d.not_evaluated),
            "taken_by": d.taken_by,
            "c": {
                "symbol": c.symbol,
                "timeframe": c.timeframe,
                "bar_open_time": c.bar_open_time,
                "ts": c.ts,
                "side": c.side.value,
                "score": c.score,
                "confidence": c.confidence,
                "entry": c.entry,
                "stop": c.stop,
                "targets": list(c.targets),
                "components": c.components,
                "features": c.features,
            },
        },
        separators=(",", ":"),
    )


def decode(text: str | bytes) -> Decision:
    """The inverse of :func:`encode`; a malformed entry raises ``ValueError`` (journaled by the pump, not run)."""
    try:
        o = json.loads(text)
        c = o["c"]
        cand = Candidate(
            symbol=str(c["symbol"]),
            timeframe=str(c["timeframe"]),
            bar_open_time=int(c["bar_open_time"]),
            ts=int(c["ts"]),
            side=Side(c["side"]),
            score=float(c["score"]),
            confidence=float(c["confidence"]),
            entry=float(c["entry"]),
            stop=float(c["stop"]),
            targets=tuple(float(t) for t in c["targets"]),
            components={str(k): float(v) for k, v in c.get("components", {}).items()},
            features={str(k): float(v) for k, v in c.get("features", {}).items()},
        )
        return Decision(
            run_id=str(o["run_id"]),
            candidate=cand,
            allowed=bool(o["allowed"]),
            reason=o.get("reason"),
            counts={str(k): int(v) for k, v in o.get("counts", {}).items()},
            not_evaluated=tuple(str(x) for x in o.get("not_evaluated", [])),
            taken_by=o.get("taken_by"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"inbox entry is not a decision: {type(e).__name__}: {e}") from None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NotReplicated(redis.RedisError):
    """Redis took the write but fewer replicas than ``redis.min_replicas_acked`` confirmed it in time."""


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    raw: str | None  # None: the entry was trimmed or deleted while pending


class DecisionInbox:
    """The account's inbox: the Redis keys and the scripts, no policy."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str,
        account: str,
        reader: redis.Redis | None = None,
        min_replicas_acked: int = 0,
        wait_timeout_ms: float = 40.0,
    ) -> None:
        self.client = client
        #: With Sentinel: a delivery and a begin count only once this many replicas have them (``WAIT``), so a
        #: failover does not forget a decision or let a begun one run twice (narrowed, not closed: see redis.md).
        self.min_replicas_acked = min_replicas_acked
        self.wait_timeout_ms = max(1, int(wait_timeout_ms))
        #: For blocking reads (``XREADGROUP BLOCK``): a connection whose socket timeout outlasts the block.
        self.reader = reader
        self.namespace = namespace
        base = f"ultra_signals:{{{namespace}}}:executor:{account}"
        self.stream = f"{base}:inbox"
        self.ids_prefix = f"{base}:inbox:id:"
        self.state_prefix = f"{base}:inbox:state:"
        self._deliver = client.register_script(_DELIVER)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._group_ready = False

    def key_of(self, d: Decision) -> str:
        """The idempotency key: run-independent, the same as the order's client-id key."""
        return d.order_key(self.namespace)

    def ensure_group(self) -> None:
        """The consumer group, reading from the stream's start (``0``) so nothing added before it is skipped."""
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def deliver(self, d: Decision) -> tuple[bool, str]:
        """XADD unless this decision's key was delivered before: (added, entry id)."""
        self.ensure_group()
        keys = [self.stream, self.ids_prefix + self.key_of(d)]
        added, entry = self._replicated(self._deliver, keys, [encode(d), KEY_TTL_MS])
        return int(added) == 1, _text(entry)

    def _replicated(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run ``script``; with ``min_replicas_acked``, followed by ``WAIT`` on the same connection (a pipeline:
        WAIT counts the writes of its own connection).  Too few acknowledgements raise :class:`NotReplicated`."""
        if not self.min_replicas_acked:
            return script(keys=keys, args=args)
        pipe = self.client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.wait(self.min_replicas_acked, self.wait_timeout_ms)
        result, acked = pipe.execute()
        if int(acked) < self.min_replicas_acked:
            raise NotReplicated(
                f"inbox {self.stream}: acknowledged by {acked} of {self.min_replicas_acked} replicas within "
                f"{self.wait_timeout_ms} ms (redis.min_replicas_acked)"
            )
        return result

    def read(self, consumer: str, count: int = 64, block_ms: int | None = None) -> list[Entry]:
        """New entries for ``consumer`` (they join its pending list until finished)."""
        self.ensure_group()
        client = self.reader if block_ms is not None and self.reader is not None else self.client
        block = block_ms if client is self.reader else None
        got: Any = client.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count, block=block)
        out: list[Entry] = []
        for _stream, rows in got or []:
            for entry_id, fields in rows:
                raw = (fields or {}).get(b"d", (fields or {}).get("d"))
                out.append(Entry(_text(entry_id), None if raw is None else _text(raw)))
        return out

    def claim_pending(self, consumer: str, batch: int = 100, max_batches: int = 1000) -> list[Entry]:
        """Every pending entry of any consumer becomes ``consumer``'s (after a lease change): XAUTOCLAIM loop."""
        self.ensure_group()
        out: list[Entry] = []
        cursor = "0-0"
        for _ in range(max_batches):  # bounded: each batch moves the cursor forward
            res = self.client.xautoclaim(self.stream, GROUP, consumer, 0, start_id=cursor, count=batch)
            cursor = _text(res[0])
            for entry_id, fields in res[1]:
                raw = (fields or {}).get(b"d", (fields or {}).get("d"))
                out.append(Entry(_text(entry_id), None if raw is None else _text(raw)))
            for gone in res[2] if len(res) > 2 else []:  # deleted while pending: nothing to run, nothing to ack
                log.warning("inbox %s: pending entry %s was deleted before it ran", self.stream, _text(gone))
            if cursor == "0-0":
                break
        return out

    def begin(self, key: str, lease: ExecutorLease) -> str:
        """'ok' (run it), 'fenced' (we do not hold the lease), or the state the decision already has."""
        # With min_replicas_acked, an 'ok' too few replicas confirmed raises NotReplicated: the state stays
        # "started" by us, and only we may retry it (InboxExecutor remembers it was not run).
        keys = [lease.key, self.state_prefix + key]
        return _text(self._replicated(self._begin, keys, [f"{lease.holder}|{lease.token}", KEY_TTL_MS]))

    def finish(self, entry_id: str, key: str, outcome: str) -> None:
        self._finish(keys=[self.stream, self.state_prefix + key], args=[GROUP, entry_id, outcome, KEY_TTL_MS])

    def state(self, key: str) -> str | None:
        v = self.client.get(self.state_prefix + key)
        return None if v is None else _text(v)

    def pending(self) -> int:
        """Entries delivered and read but not finished (XPENDING)."""
        self.ensure_group()
        info = self.client.xpending(self.stream, GROUP)
        return int(info["pending"]) if isinstance(info, dict) else int(info[0])

    def backlog(self) -> int:
        """Entries in the stream (finished ones are deleted): delivered and not yet finished."""
        return int(self.client.xlen(self.stream))


def entry_time_ms(entry_id: str) -> int | None:
    """The Redis server time (ms) an auto-generated stream id (``<ms>-<seq>``) was added at; None if not one."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def outcome_of(inner: Executor, d: Decision, refused_before: dict[str, int]) -> str:
    """What the executor did with ``d``: ``submitted``, ``refused:<reason>`` or ``passed`` (no trading executor)."""
    portfolio = getattr(inner, "portfolio", None)
    if portfolio is not None and d.id in portfolio.trades:
        return "submitted"
    router = getattr(inner, "router", None)
    if router is not None:
        for reason, n in router.refused.items():
            if n > refused_before.get(reason, 0):
                return f"refused:{reason}"
    return "passed"


class InboxExecutor:
    """The runner's executor when decisions go through the account's inbox (``execution.delivery: stream``).

    Every shard's runner has one.  ``on_signal`` delivers; while this runner holds the account's lease (and has
    reconciled), its pump reads the inbox and runs each decision through ``inner`` — the local
    :class:`~ultra_signals.execution.executor.TradingExecutor`, whose risk engine, gateway and portfolio thereby
    see the whole account.  Everything else (market events, health, state) goes to ``inner`` as before.
    """

    def __init__(
        self,
        inner: Executor,
        inbox: DecisionInbox,
        lease: ExecutorLease,
        *,
        notifier: Notifier,
        mode: str = "canary",
        batch: int = 64,
        block_ms: int | None = 250,
        idle_s: float = 0.05,
        on_error: Callable[[str], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        #: The inner trading executor's registry unless given: the inbox's gauges live beside its orders.
        self.metrics: Metrics | None = metrics if metrics is not None else getattr(inner, "metrics", None)
        self._pending_sampled_at: float | None = None
        self.inbox = inbox
        self.lease = lease
        self.notifier = notifier
        self.mode = mode
        self.batch = batch
        self.block_ms = block_ms
        self.idle_s = idle_s
        self.on_error = on_error
        self.backlog: deque[Decision] = deque()
        self.delivered = 0
        self.duplicates = 0
        self.dropped = 0
        self.executed: dict[str, str] = {}  # decision key → outcome, for what this process ran or settled
        self.in_doubt: list[str] = []
        self._unconfirmed: set[str] = set()  # begun by us, too few replicas confirmed: not run, ours to retry
        self._claimed_token = 0
        self._reclaim = False  # a round failed half-way: take our own pending entries again next round
        self._tasks: list[asyncio.Task[None]] = []

    # -- the producer side (every shard) ------
    def on_signal(self, decision: Decision) -> None:
        """Deliver now (one Redis round trip); kept for a retry when Redis does not answer."""
        if not decision.allowed:
            return
        if self.backlog:  # keep the order: older undelivered decisions first
            self._queue(decision)
            self.flush_backlog()
            return
        try:
            self._deliver(decision)
        except redis.RedisError as e:
            log.warning("inbox %s: delivery of %s failed (%s); kept for retry", self.inbox.stream, decision.id, e)
            self._error("inbox_deliver")
            self._queue(decision)

    def _deliver(self, d: Decision) -> None:
        added, _ = self.inbox.deliver(d)
        if added:
            self.delivered += 1
        else:
            self.duplicates += 1

    def _queue(self, d: Decision) -> None:
        if len(self.backlog) >= MAX_BACKLOG:
            lost = self.backlog.popleft()
            self.dropped += 1
            log.error("inbox backlog full (%d): decision %s dropped undelivered", MAX_BACKLOG, lost.id)
            self._error("inbox_dropped")
        self.backlog.append(d)
        self._gauge_undelivered()

    def _gauge_undelivered(self) -> None:
        if self.metrics is not None:
            self.metrics.inbox_undelivered.set(len(self.backlog))

    def flush_backlog(self) -> int:
        """Deliver what Redis refused before, oldest first; stops at the first failure.  Returns how many went."""
        sent = 0
        while self.backlog:
            try:
                self._deliver(self.backlog[0])
            except redis.RedisError:
                self._gauge_undelivered()
                return sent
            self.backlog.popleft()
            sent += 1
        self._gauge_undelivered()
        return sent

    def sample_pending(self, now: float | None = None) -> bool:
        """Export the inbox length, at most once per :data:`PENDING_SAMPLE_S` (``now``: monotonic seconds).

        Every shard samples it, holder or not, so a pile-up with no holder at all still shows (and alerts).
        Returns whether it sampled.  A Redis error propagates (the pump counts it)."""
        if self.metrics is None:
            return False
        now = time.monotonic() if now is None else now
        if self._pending_sampled_at is not None and now - self._pending_sampled_at < PENDING_SAMPLE_S:
            return False
        self._pending_sampled_at = now
        self.metrics.inbox_pending.set(self.inbox.backlog())
        return True

    # -- the consumer side (the lease holder) ------
    async def pump_once(self) -> int:
        """One round: when we may trade, re-claim after a lease change, then read and run a batch.  Returns how
        many entries were handled."""
        if self.backlog:
            await asyncio.to_thread(self.flush_backlog)
        await asyncio.to_thread(self.sample_pending)
        if not await asyncio.to_thread(self.lease.may_trade):
            self._claimed_token = 0
            return 0
        entries: list[Entry] = []
        if self._claimed_token != self.lease.token or self._reclaim:
            self._reclaim = False
            entries = await asyncio.to_thread(self.inbox.claim_pending, self.lease.holder)
            self._claimed_token = self.lease.token
            if entries:
                log.warning("inbox %s: re-claimed %d pending decisions", self.inbox.stream, len(entries))
        entries += await asyncio.to_thread(self.inbox.read, self.lease.holder, self.batch, self.block_ms)
        try:
            for e in entries:
                if not await self._handle(e):
                    break  # fenced (or not replicated): the rest stay pending, for us or the next holder
        except Exception:
            self._reclaim = True  # what we read stays pending on us: take it again next round
            raise
        return len(entries)

    async def _handle(self, e: Entry) -> bool:
        """Run one entry at most once.  False when we turned out not to hold the lease (stop reading)."""
        if e.raw is None:
            return True
        try:
            d = decode(e.raw)
        except ValueError as err:
            self._incident("inbox_bad_entry", f"entry {e.entry_id}: {err}", None)
            await asyncio.to_thread(self.inbox.finish, e.entry_id, f"bad:{e.entry_id}", "bad_entry")
            return True
        key = self.inbox.key_of(d)
        outcome = self.executed.get(key)
        if outcome is None:  # (else we settled it before and only the finish failed: finish again)
            try:
                state = await asyncio.to_thread(self.inbox.begin, key, self.lease)
            except NotReplicated as err:
                log.warning("%s; %s not run, retried next round", err, d.id)
                self._unconfirmed.add(key)
                self._reclaim = True
                return False
            if state == "fenced":
                return False
            # Begun by this very process (the holder is its run id, under any of its tokens) and known not run.
            ours = state.startswith(f"started|{self.lease.holder}|") and key in self._unconfirmed
            if state == "ok" or ours:
                self._unconfirmed.discard(key)
                self._observe_delivery_lag(e.entry_id)
                router = getattr(self.inner, "router", None)
                before = dict(router.refused) if router is not None else {}
                self.inner.on_signal(d)  # journals its trade row (before the broker) or its refusal
                outcome = outcome_of(self.inner, d, before)
            elif state.startswith("done|"):
                outcome = state[5:]  # finished before, the ack was lost: just ack again
            else:  # started by a holder that stopped inside on_signal (or before its finish)
                outcome = self._resolve_in_doubt(d, state)
            self.executed[key] = outcome
        await asyncio.to_thread(self.inbox.finish, e.entry_id, key, outcome)
        return True

    def _observe_delivery_lag(self, entry_id: str) -> None:
        """Delivery (the entry id's Redis time) to execution, on the holder's wall clock: a metric only, never a
        decision input (clock skew between the hosts shows up in it; a negative lag counts as 0)."""
        added = entry_time_ms(entry_id)
        if self.metrics is not None and added is not None:
            self.metrics.inbox_delivery_to_execution.observe(max(0.0, time.time() * 1000.0 - added))

    def _resolve_in_doubt(self, d: Decision, state: str) -> str:
        store = getattr(self.inner, "store", None)
        row = store.trade(d.id) if store is not None else None
        if row is not None:  # a shared journal has its trade row: it was executed; nothing to do again
            return "submitted:by_previous_holder"
        self.in_doubt.append(d.id)
        if self.metrics is not None:
            self.metrics.inbox_in_doubt.inc()
        self._incident(
            "delivery_in_doubt",
            f"{d.id}: begun by {state.removeprefix('started|')} which stopped before finishing; not executed again "
            "— check the exchange (the takeover reconcile lists any position it left)",
            d.candidate.ts,
        )
        return "in_doubt"

    def _incident(self, name: str, detail: str, ts: int | None) -> None:
        log.error("inbox %s: %s: %s", self.inbox.stream, name, detail)
        store = getattr(self.inner, "store", None)
        run_id = getattr(self.inner, "run_id", None)
        if store is not None:
            store.event("incident", name, detail, run_id=run_id, ts=ts)
        self.notifier.publish(Notice.plain("breaker", f"{self.mode.upper()} | INBOX INCIDENT | {name}: {detail}"))
        self._error(name)

    def _error(self, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(kind)

    async def _pump_loop(self) -> None:
        while True:
            try:
                n = await self.pump_once()
            except redis.RedisError as e:
                log.warning("inbox %s: pump: %s", self.inbox.stream, e)
                self._error("inbox_pump")
                n = 0
            except Exception:  # a bug on one decision must not stop the account's executor; it stays in doubt
                log.exception("inbox %s: pump round failed", self.inbox.stream)
                self._error("inbox_pump")
                n = 0
            if n == 0:
                await asyncio.sleep(self.idle_s)

    # -- the Executor interface, forwarded ------
    def on_market_event(self, ev: MarketEvent) -> None:
        self.inner.on_market_event(ev)

    def on_health(self, h: RunnerHealth) -> None:
        self.inner.on_health(h)

    def blocking_reason(self) -> str | None:
        return self.inner.blocking_reason()

    def summary(self) -> dict[str, Any]:
        return {
            **self.inner.summary(),
            "inbox": {
                "delivered": self.delivered,
                "duplicates": self.duplicates,
                "undelivered": len(self.backlog),
                "dropped": self.dropped,
                "executed_here": len(self.executed),
                "in_doubt": list(self.in_doubt),
            },
        }

    async def start(self) -> None:
        await self.inner.start()
        self._tasks.append(asyncio.create_task(self._pump_loop(), name="inbox-pump"))

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await asyncio.to_thread(self.flush_backlog)
        if self.backlog:
            log.error("inbox %s: %d decisions undelivered at stop", self.inbox.stream, len(self.backlog))
        await self.inner.aclose()

    async def reconcile(self) -> Any:
        """The runner calls this after taking the lease: the inner executor's reconcile with the exchange."""
        rec = getattr(self.inner, "reconcile", None)
        return await rec() if rec is not None else None

    @property
    def lease_gate(self) -> Callable[[], str | None] | None:
        return getattr(self.inner, "lease_gate", None)

    @lease_gate.setter
    def lease_gate(self, gate: Callable[[], str | None] | None) -> None:
        self.inner.lease_gate = gate  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        """Views (trades, broker, risk …) the report and the control layer read come from the inner executor."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
