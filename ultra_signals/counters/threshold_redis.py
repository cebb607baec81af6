"""The ranked budget's threshold history in Redis, next to the caps, shared by every runner of a namespace.

Why: with ``sniper.selection: ranked`` each candidate is measured against the quality quantile of the recent
candidates.  Per process, every runner (shard) would size its threshold on its own share of the candidates while
the caps it spends are the deployment's; here all runners of a namespace add their candidates to one history per
timeframe and read the threshold from it, so the threshold is sized on the deployment's candidate rate.

One Lua call (``budget.lua``) computes the threshold from the points held and adds the new one atomically; it
applies exactly :class:`~ultra_signals.engine.budget.OnlineThreshold`'s rule (same window, same rank, same IEEE
doubles), which a property test checks.  Keys share the counters' hash tag ``{<namespace>:<profile>}``.

Like :mod:`ultra_signals.counters.redis_backend`, this module only talks to Redis and turns every failure into
:class:`CounterBackendError`; the failover (:mod:`ultra_signals.counters.failover`) decides what happens then.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis

from ultra_signals.core.caps import BudgetRule, CounterBackendError, QualityPoint
from ultra_signals.counters.lua import load_script

if TYPE_CHECKING:
    from ultra_signals.counters.redis_backend import RedisCounters

SCRIPT = load_script("budget.lua")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode("utf-8")).hexdigest()
#: Points written per pipelined round trip when seeding or reconciling.
RECORD_BATCH = 500
#: Default :attr:`RedisThreshold.late_limit`.
LATE_LIMIT = 2000
#: Points pulled per round trip by a fallback mirror.
PULL_BATCH = 2000


class RedisThreshold:
    """:class:`~ultra_signals.core.caps.QualityThreshold` in Redis (see the module doc).

    Built by :meth:`RedisCounters.quality_threshold`, so it uses the counters' client, prefix and error words.
    """

    backend = "redis"

    def __init__(self, counters: RedisCounters, rule: BudgetRule) -> None:
        self.counters = counters
        self.rule = rule
        self.prefix = f"{counters.prefix}:budget"
        #: Points older than this behind the latest are dropped (OnlineThreshold keeps two windows too).
        self.keep_ms = 2 * rule.window_ms
        self.ttl_ms = max(2 * self.keep_ms, counters.ttl_ms)
        #: A late call (a runner behind the namespace's latest candidate) is exact while at most this many points
        #: lie between its window and the latest one; beyond, it is measured on the latest window (bounded time).
        self.late_limit = LATE_LIMIT

    def keys(self, timeframe: str) -> list[str]:
        if not timeframe or any(c in timeframe for c in "{}| \t\r\n:"):
            raise ValueError(f"timeframe {timeframe!r} must be non-empty without braces, ':', '|' or spaces")
        base = f"{self.prefix}:{timeframe}"
        return [f"{base}:t", f"{base}:q", f"{base}:v", f"{base}:th", f"{base}:meta", f"{base}:log"]

    # -- QualityThreshold ----------------------------------------------------------------------------------
    def threshold_and_observe(self, point: QualityPoint) -> float | None:
        mode = "observe" if point.quality == point.quality else "peek"
        _status, used = self._run(mode, point)
        return used

    def seed_points(self, points: Iterable[QualityPoint]) -> None:
        self.record(points)

    def record(self, points: Iterable[QualityPoint]) -> int:
        """Write points decided elsewhere without computing; returns how many were new (idempotent by key).

        Of a long history only what the window can still use is sent (each timeframe's points within two
        windows of its latest) plus its earliest point, which sets the span the rate is measured over: Redis
        ends in the state it would reach from every point, in fewer calls.
        """
        by_tf: dict[str, list[QualityPoint]] = {}
        for p in points:
            if p.quality == p.quality:
                by_tf.setdefault(p.timeframe, []).append(p)
        todo: list[QualityPoint] = []
        for pts in by_tf.values():
            latest = max(p.ts_ms for p in pts)
            earliest = min(pts, key=lambda p: p.ts_ms)
            recent = [p for p in pts if p.ts_ms >= latest - self.keep_ms]
            todo += ([earliest] if earliest not in recent else []) + recent
        added = 0
        for i in range(0, len(todo), RECORD_BATCH):
            added += self._record_batch(todo[i : i + RECORD_BATCH])
        return added

    # -- what a fallback mirror needs -----------------------------------------------------------------------
    def pull(self, timeframe: str, after_seq: int) -> tuple[list[QualityPoint], int]:
        """Points added after ``after_seq`` (any runner's), and the sequence number to ask from next time.

        A sequence lower than ``after_seq`` means Redis restarted empty: everything it holds is returned.
        """
        tkey, _q, vkey, _th, meta, log = self.keys(timeframe)
        try:
            seq_raw = self.counters.client.hget(meta, "seq")
            seq = int(seq_raw) if seq_raw is not None else 0
            if seq < after_seq:
                after_seq = 0
            out: list[QualityPoint] = []
            cursor = after_seq
            while cursor < seq:
                members = cast(
                    list[tuple[Any, float]],
                    self.counters.client.zrangebyscore(
                        log, f"({cursor}", "+inf", start=0, num=PULL_BATCH, withscores=True
                    ),
                )
                if not members:
                    break
                keys = [_text(m) for m, _ in members]
                pipe = self.counters.client.pipeline(transaction=False)
                pipe.hmget(vkey, keys)
                pipe.zmscore(tkey, keys)
                replies: list[Any] = pipe.execute()
                values, times = replies[0], replies[1]
                for (member, s), v, t in zip(members, values, times, strict=True):
                    if v is not None and t is not None:
                        out.append(QualityPoint(_text(member), timeframe, int(t), float(v)))
                    cursor = max(cursor, int(s))
                if len(members) < PULL_BATCH:
                    break
            return out, max(cursor, seq)
        except (redis.RedisError, ValueError) as e:
            raise self._error("pull", e) from None

    def missing(self, timeframes: Iterable[str]) -> list[str]:
        """Timeframes Redis holds no history for (it restarted empty, or the keys expired)."""
        tfs = sorted(set(timeframes))
        if not tfs:
            return []
        try:
            pipe = self.counters.client.pipeline(transaction=False)
            for tf in tfs:
                pipe.exists(self.keys(tf)[4])
            return [tf for tf, n in zip(tfs, pipe.execute(), strict=True) if not int(n)]
        except redis.RedisError as e:
            raise self._error("missing", e) from None

    # -- plumbing -------------------------------------------------------------------------------------------
    def _args(self, mode: str, p: QualityPoint) -> tuple[list[str], list[str | int]]:
        ts = int(p.ts_ms)
        if ts != p.ts_ms or not p.key or "|" in p.key:
            raise ValueError(f"quality point {p!r}: ts_ms must be whole milliseconds, key non-empty without '|'")
        if mode != "peek" and not math.isfinite(p.quality):
            raise ValueError(f"quality point {p!r}: quality must be finite")
        args: list[str | int] = [
            mode,
            p.key,
            ts,
            repr(float(p.quality)),
            self.rule.window_ms,
            repr(float(self.rule.target_per_day)),
            self.rule.min_history,
            self.keep_ms,
            self.ttl_ms,
            self.late_limit,
        ]
        return self.keys(p.timeframe), args

    def _run(self, mode: str, p: QualityPoint) -> tuple[str, float | None]:
        keys, args = self._args(mode, p)
        client = self.counters.client
        try:
            try:
                reply = client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = client.eval(SCRIPT, len(keys), *keys, *args)
        except redis.RedisError as e:
            raise self._error(mode, e) from None
        try:
            status, used = reply
            text = _text(used)
            return _text(status), (float(text) if text else None)
        except (ValueError, TypeError) as e:
            raise CounterBackendError(
                f"redis budget {mode} at {self.counters.where}: unexpected reply {reply!r:.200}: {e}"
            ) from None

    def _record_batch(self, batch: Sequence[QualityPoint]) -> int:
        client = self.counters.client
        for attempt in (1, 2):
            try:
                pipe = client.pipeline(transaction=False)
                for p in batch:
                    keys, args = self._args("record", p)
                    pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
                replies = pipe.execute(raise_on_error=False)
                if attempt == 1 and any(isinstance(x, redis.exceptions.NoScriptError) for x in replies):
                    client.script_load(SCRIPT)
                    continue
                for x in replies:
                    if isinstance(x, Exception):
                        raise x
                return sum(1 for x in replies if _text(x[0]) == "new")
            except redis.RedisError as e:
                raise self._error("budget record", e) from None
        raise CounterBackendError(f"redis budget record at {self.counters.where}: the script could not be loaded")

    def _error(self, op: str, e: Exception) -> CounterBackendError:
        return self.counters.error(f"budget {op}", e)


def _text(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
