"""Redis counters that keep deciding (or safely refuse) while Redis is away, then put the windows right.

Why a wrapper and not retries: a runner must decide within its latency budget whatever Redis does, so every
Redis call has a short timeout and the first failure switches to local counts (``on_failure: memory``) or to
refusing everything (``on_failure: block``).  A background thread pings Redis; when it answers, the wrapper
RECONCILES (writes every reservation it knows, by id, so nothing counts twice) and only then switches back.

The local :class:`MemoryCounters` is kept warm all the time: it holds the journal seed, every reservation this
runner made, and (refreshed by the health thread) every reservation Redis holds for the deployment, so the
switch happens with the best counts available.  The same refresh writes back anything Redis lost (a Redis
restarted empty between two of our calls) — the "anti-entropy" half of the reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Literal, TypeVar

from ultra_signals.core.caps import BudgetRule, CapPolicy, CapResult, CounterBackendError, QualityPoint, Reservation
from ultra_signals.core.quality_window import OnlineThreshold
from ultra_signals.counters.redis_backend import RedisCounters
from ultra_signals.counters.threshold_redis import RedisThreshold
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics

log = logging.getLogger(__name__)

OnFailure = Literal["memory", "block"]
#: ``on_event(kind, message)``: kind is "start", "failover", "recovered" or "error"; message is for humans.
EventCallback = Callable[[str, str], None]
BACKENDS = ("memory", "redis", "blocked")
T = TypeVar("T")


class _Away(Enum):
    """What :meth:`FailoverCounters._on_primary` answers when Redis did not: decide from the local mirror."""

    AWAY = "away"


class FailoverCounters:
    """:class:`SniperCounters` on Redis with a local fallback; see the module docstring for the why.

    ``backend`` is "redis" while Redis decides, "memory" while local counts decide (``on_failure=memory``)
    and "blocked" while every reservation is refused (``on_failure=block``).
    """

    def __init__(
        self,
        primary: RedisCounters,
        policy: CapPolicy,
        on_failure: OnFailure,
        metrics: Metrics,
        *,
        health_check_interval_s: float = 1.0,
        failover_after: int = 3,
        on_event: EventCallback | None = None,
        seed: Iterable[Reservation] = (),
    ) -> None:
        if on_failure not in ("memory", "block"):
            raise ValueError(f"redis.on_failure must be 'memory' or 'block', not {on_failure!r}")
        self.primary = primary
        self.policy = policy
        self.on_failure = on_failure
        self.metrics = metrics
        self.interval_s = health_check_interval_s
        if failover_after < 1:
            raise ValueError(f"redis.failover_after_failures must be at least 1, not {failover_after}")
        self.failover_after = failover_after
        self._consecutive = 0  # failed calls in a row on the decision path (reset by any success)
        self.slow_answers = 0
        self._on_event = on_event
        self._lock = threading.RLock()
        self._local = MemoryCounters(policy)
        self._local.seed(seed)
        self._on_redis = True
        self._outage_made = 0  # reservations allowed locally during the current outage
        self._last_cached: dict[str, int] = {}
        self._thresholds: list[FailoverThreshold] = []  # the ranked budget's histories (quality_threshold)
        self._stop = threading.Event()
        start = self.describe()
        try:
            self.primary.ping()
            self._sync()  # also writes the journal seed back, should Redis have lost it
        except CounterBackendError as e:
            self._on_redis = False
            self.metrics.redis_errors.labels(op="start").inc()
            start = f"{self.describe()}; Redis unreachable at start ({e}), health-checking every {self.interval_s:g}s"
        self.metrics.set_backend(self.backend, BACKENDS)
        log.info("%s", start)
        self._emit("start", start)
        self._thread = threading.Thread(target=self._health_loop, name="sniper-counters-health", daemon=True)
        self._thread.start()

    # -- SniperCounters -------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        if self._on_redis:
            return "redis"
        return "memory" if self.on_failure == "memory" else "blocked"

    def check_and_reserve(self, res: Reservation) -> CapResult:
        t0 = time.perf_counter()
        try:
            with self._lock:
                result = self._on_primary(lambda: self.primary.check_and_reserve(res), op="reserve")
                if result is _Away.AWAY:
                    return self._decide_locally(res)
                if result.allowed:
                    self._local.seed([res])
                return result
        finally:
            self.metrics.counter_op_ms.observe((time.perf_counter() - t0) * 1000.0)

    def window_counts(self, ts_ms: int, symbol: str | None = None) -> dict[str, int]:
        with self._lock:
            counts = self._on_primary(lambda: self.primary.window_counts(ts_ms, symbol), op="window_counts")
            return self._local.window_counts(ts_ms, symbol) if counts is _Away.AWAY else counts

    def cached_window_counts(self, ts_ms: int) -> dict[str, int]:
        """Window counts for gauges, without a Redis call: the local mirror (synced with Redis every health check).

        The runner's periodic refresh runs on the event loop; a Redis call there would stall every decision
        behind it.  This never calls Redis and waits for the lock at most ``redis.timeout_ms`` (the health check
        may hold it while reconciling); past that it answers the previous counts.
        """
        if not self._lock.acquire(timeout=self._timeout_s()):
            return dict(self._last_cached)
        try:
            self._last_cached = self._local.window_counts(ts_ms)
        finally:
            self._lock.release()
        return dict(self._last_cached)

    def seed(self, reservations: Iterable[Reservation]) -> None:
        items = list(reservations)
        with self._lock:
            self._local.seed(items)
            if self._on_redis:
                try:
                    self.primary.record(items)
                except CounterBackendError as e:
                    self._fail(str(e), op="seed")

    def quality_threshold(self, rule: BudgetRule) -> FailoverThreshold:
        """The ranked budget's threshold history in Redis, falling back with the caps (see :class:`FailoverThreshold`)."""
        th = FailoverThreshold(self, self.primary.quality_threshold(rule), rule)
        with self._lock:
            self._thresholds.append(th)
            if self._on_redis:
                try:
                    th.sync()
                except CounterBackendError as e:
                    self._fail(str(e), op="budget sync")
        return th

    def reservations(self) -> list[Reservation]:
        """Every reservation known locally (this runner's, the journal's, and Redis's as last refreshed)."""
        with self._lock:
            return self._local.reservations()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5 * self._timeout_s() + 1.0)
        self.primary.close()

    def describe(self) -> str:
        """The active policy in one line, for the operator at start."""
        risk = (
            "keeps deciding on local counts while Redis is away (runners may together exceed the caps)"
            if self.on_failure == "memory"
            else "treats every cap as reached while Redis is away (no signal until it is back)"
        )
        return (
            f"counter backend: {self.backend} at {self.primary.where} ({self.primary.prefix}); "
            f"redis.on_failure={self.on_failure}: {risk}"
        )

    # -- while Redis is away ---------------------------------------------------------------------------
    def _decide_locally(self, res: Reservation) -> CapResult:
        if self._local.holds(res.id):
            return CapResult(
                True, None, self._local.window_counts(res.ts_ms), duplicate=True, owner=self._local.owner_of(res.id)
            )
        if self.on_failure == "block":
            return CapResult(False, self.policy.rules[0].reason, self._local.window_counts(res.ts_ms))
        result = self._local.check_and_reserve(res)
        if result.allowed and not result.duplicate:
            self._outage_made += 1
        return result

    def _suspect(self, e: CounterBackendError, op: str) -> None:
        """A call failed.  A timeout is often just a slow answer under CPU load: count it, and fail over only
        after ``failover_after`` in a row (or a failed health check).  Any other error (refused connection,
        foreign data) is evidence at once.

        This one call is still answered locally (memory) or refused (block) while Redis stays the backend.
        """
        reason = str(e)
        self._consecutive += 1
        if not e.timeout or self._consecutive >= self.failover_after:
            if e.timeout:
                reason = f"{reason}; {self._consecutive} consecutive timeouts"
            self._fail(reason, op=op)
            return
        self.slow_answers += 1
        self.metrics.redis_errors.labels(op=op).inc()
        self.metrics.counter_slow.labels(op=op).inc()
        log.info("counter backend: redis call %s failed once (%s); staying on redis", op, reason)

    def _on_primary(self, call: Callable[[], T], op: str) -> T | Literal[_Away.AWAY]:
        """Redis' answer to ``call`` on the decision path, or ``AWAY`` when Redis is not the backend or the call
        failed (:meth:`_suspect` has then counted it); any answer resets the failures in a row.  The caller holds
        the lock and answers ``AWAY`` from the local mirror."""
        if not self._on_redis:
            return _Away.AWAY
        try:
            result = call()
        except CounterBackendError as e:
            self._suspect(e, op=op)
            return _Away.AWAY
        self._consecutive = 0
        return result

    def _fail(self, reason: str, op: str) -> None:
        """Count the error and, if Redis was active, switch away from it (the caller holds the lock)."""
        self.metrics.redis_errors.labels(op=op).inc()
        self._consecutive = 0
        if not self._on_redis:
            return
        self._on_redis = False
        self._outage_made = 0
        self.metrics.failovers.inc()
        self.metrics.set_backend(self.backend, BACKENDS)
        log.warning("counter backend: redis -> %s (%s)", self.backend, reason)
        self._emit("failover", f"counter backend: redis -> {self.backend} ({reason})")

    # -- health check and reconcile --------------------------------------------------------------------
    def _health_loop(self) -> None:
        reported = False  # an unexpected error is announced once, not every interval
        while not self._stop.wait(self.interval_s):
            try:
                if self._on_redis:
                    self._sync()
                else:
                    self.primary.ping()
                    self._recover()
                reported = False
            except CounterBackendError as e:
                with self._lock:
                    self._fail(str(e), op="health" if self._on_redis else "ping")
            except Exception as e:  # never let the thread die: a dead health check would never switch back
                if not reported:
                    log.exception("counter health check failed")
                    self._emit("error", f"counter health check failed: {type(e).__name__}: {e}")
                    reported = True

    def _recover(self) -> None:
        """Reconcile, then switch back, under the lock so no local decision slips between the two."""
        with self._lock:
            written = self._sync()
            made = self._outage_made
            self._on_redis = True
            self.metrics.set_backend(self.backend, BACKENDS)
        msg = (
            f"counter backend: {'memory' if self.on_failure == 'memory' else 'blocked'} -> redis "
            f"(reconciled: {made} reservations made during the outage, {written} written to Redis)"
        )
        log.warning("%s", msg)
        self._emit("recovered", msg)

    def _sync(self) -> int:
        """Two-way refresh: learn what Redis holds, write what it lacks.  Returns how many were written."""
        snap = self.primary.snapshot()
        held = {(r.symbol, r.id) for r in snap.reservations}
        floor = snap.latest_ms - self.primary.keep_ms  # older ones Redis has trimmed on purpose
        with self._lock:
            self._local.seed(snap.reservations)
            known = self._local.reservations()
            missing = [r for r in known if (r.symbol, r.id) not in held and r.ts_ms >= floor]
        written = self.primary.record(missing) if missing else 0
        for th in list(self._thresholds):
            written += th.sync()
        return written

    def _emit(self, kind: str, message: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, message)
        except Exception:  # an alerting failure must not break counting
            log.exception("counter event callback failed")

    def _timeout_s(self) -> float:
        pool = self.primary.client.connection_pool
        timeout = pool.connection_kwargs.get("socket_timeout") or 1.0
        return float(timeout)


class FailoverThreshold:
    """The ranked threshold's history in Redis, with the caps' failover: one state, one switch, one reconcile.

    While the counters decide on Redis, so does the threshold (one history per namespace and timeframe, shared
    by every runner).  When they leave Redis (either ``on_failure``), the threshold is computed from the local
    mirror: this runner's own points, the journal seed, and every other runner's points as pulled at the last
    health check, so it is as close to the shared one as this runner can know.  With ``on_failure: block`` the
    caps refuse every candidate anyway; the threshold still answers (locally) so the refusal is the caps'.
    Back on Redis, the points decided during the outage are written (idempotent by key) before the switch, and
    a Redis that lost the history (restarted empty) gets this runner's window back at the next health check.
    """

    def __init__(self, owner: FailoverCounters, primary: RedisThreshold, rule: BudgetRule) -> None:
        self.owner = owner
        self.primary = primary
        self.local = OnlineThreshold(rule.window_ms, rule.target_per_day, rule.min_history)
        self._cursor: dict[str, int] = {}  # per timeframe: the Redis sequence number pulled up to
        self._outage: list[QualityPoint] = []  # points Redis has not seen yet

    @property
    def backend(self) -> str:
        return "redis" if self.owner.backend == "redis" else "memory"

    def threshold_and_observe(self, point: QualityPoint) -> float | None:
        owner = self.owner
        with owner._lock:
            held = owner._on_primary(lambda: self.primary.threshold_and_observe(point), op="budget")
            if held is not _Away.AWAY:
                self.local.adopt(point, held)
                return held
            used = self.local.threshold_and_observe(point)
            self._outage.append(point)
            return used

    def seed_points(self, points: Iterable[QualityPoint]) -> None:
        pts = list(points)
        owner = self.owner
        with owner._lock:
            self.local.seed_points(pts)
            if owner._on_redis:
                try:
                    self.primary.record(pts)
                    return
                except CounterBackendError as e:
                    owner._fail(str(e), op="budget seed")
            self._outage += pts

    def sync(self) -> int:
        """Write what Redis lacks (outage points; the whole local window for a history Redis lost), then pull
        what the other runners added.  Returns how many points were written.  Raises CounterBackendError."""
        owner = self.owner
        with owner._lock:
            tfs = set(self.local.timeframes()) | set(self._cursor)
        lost = set(self.primary.missing(tfs))
        with owner._lock:
            sent = len(self._outage)  # only appended to meanwhile: these first ones are written below
            pending = self._outage[:sent] + [p for p in self.local.points() if p.timeframe in lost]
        written = self.primary.record(pending) if pending else 0
        with owner._lock:
            del self._outage[:sent]
        for tf in sorted(tfs):
            pts, cursor = self.primary.pull(tf, 0 if tf in lost else self._cursor.get(tf, 0))
            with owner._lock:
                self.local.seed_points(pts)
                self._cursor[tf] = cursor
        return written
