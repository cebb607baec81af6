"""Sniper cap counters in Redis, shared by every runner of a deployment.

One Lua script call per decision (``reserve.lua``) checks and reserves atomically, so two runners can never
both take the last slot of a window.  The script applies the same rule as :func:`max_window_count` (every
sliding window containing the new point), trims as the windows slide and refreshes TTLs.  Everything a call
touches shares one hash tag, ``{<namespace>:<profile>}``, so the script also runs on Redis Cluster.

This module only talks to Redis and turns every failure into :class:`CounterBackendError`; deciding what to
do when Redis is away is :mod:`ultra_signals.counters.failover`' job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ultra_signals.core.caps import BudgetRule, CapPolicy, CapResult, CapRule, CounterBackendError, Reservation
from ultra_signals.core.config import RedisSettings
from ultra_signals.core.redaction import redact, redact_url
from ultra_signals.counters.fleet import KEY_ROOT
from ultra_signals.counters.lua import load_script

if TYPE_CHECKING:
    from ultra_signals.counters.threshold_redis import RedisThreshold

SCRIPT = load_script("reserve.lua")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode("utf-8")).hexdigest()
#: Reservations written per pipelined round trip when seeding or reconciling.
RECORD_BATCH = 500


def connect(settings: RedisSettings) -> redis.Redis:
    """A client whose every call gives up after ``timeout_ms``.

    No retries: a broken connection must surface as an error (and a failover) rather than be silently
    re-opened, because a silently re-opened connection may point at a Redis that restarted empty.
    """
    timeout = settings.timeout_ms / 1000.0
    password = settings.password.get_secret_value() if settings.password is not None else None
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "driver_info": None,  # skip CLIENT SETINFO: one round trip less on every (re)connect
    }
    if settings.username is not None:
        kwargs["username"] = settings.username
    if password is not None:
        kwargs["password"] = password
    if settings.tls_ca_file is not None:
        kwargs["ssl_ca_certs"] = settings.tls_ca_file
    if settings.sentinels:
        from redis.sentinel import Sentinel

        addrs = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in settings.sentinels)]
        sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinel = Sentinel(addrs, sentinel_kwargs=sentinel_kwargs, ssl=settings.tls, **kwargs)  # type: ignore[no-untyped-call]
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.sentinel_master, redis_class=redis.Redis, **kwargs
        )
        return client
    if settings.url:
        if settings.tls and settings.url.startswith("redis://"):
            raise CounterBackendError(
                f"redis.tls is true but redis.url {redact_url(settings.url)} uses redis://; use rediss://"
            )
        return redis.Redis.from_url(settings.url, **kwargs)
    return redis.Redis(host=settings.host, port=settings.port, db=settings.db, ssl=settings.tls, **kwargs)


def describe_target(settings: RedisSettings) -> str:
    """Where the counters live, safe to print: never the password."""
    if settings.sentinels:
        return f"sentinel://{','.join(settings.sentinels)}/{settings.sentinel_master}"
    if settings.url:
        return redact_url(settings.url)
    scheme = "rediss" if settings.tls else "redis"
    return f"{scheme}://{settings.host}:{settings.port}/{settings.db}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything Redis holds for the deployment, and its trim state (see :meth:`RedisCounters.snapshot`)."""

    reservations: tuple[Reservation, ...]
    latest_ms: int  # latest reserved event time (0 when empty)


class RedisCounters:
    """:class:`~ultra_signals.counters.windows.SniperCounters` in Redis.

    ``namespace`` names the deployment and ``profile`` the profile; runners that must share caps use the same
    pair.  Neither may hold braces (they form the Cluster hash tag).
    """

    backend = "redis"

    def __init__(
        self,
        client: redis.Redis,
        policy: CapPolicy,
        namespace: str,
        profile: str = "default",
        *,
        where: str = "redis",
        secret: str | None = None,
        min_replicas_acked: int = 0,
        wait_timeout_ms: float = 40.0,
    ) -> None:
        for label, value in (("namespace", namespace), ("profile", profile)):
            if not value or any(c in value for c in "{}| \t\r\n"):
                raise ValueError(f"redis {label} {value!r} must be non-empty without braces, '|' or spaces")
        self.client = client
        self.policy = policy
        self.where = where
        self._secret = secret
        self.min_replicas_acked = min_replicas_acked
        self.wait_timeout_ms = max(1, int(wait_timeout_ms))
        self.prefix = f"{KEY_ROOT}:{{{namespace}:{profile}}}:sniper"
        self.key_global = f"{self.prefix}:all"
        self.key_meta = f"{self.prefix}:meta"
        self.key_owners = f"{self.prefix}:owners"
        self.keep_ms = 2 * policy.horizon_ms
        # Wall-clock safety net only: windows run on event time; live, nothing older than `keep` can matter.
        self.ttl_ms = 2 * self.keep_ms
        self._rule_args = [*_rules_args(policy.rules), *_rules_args(policy.symbol_rules)]

    def key_symbol(self, symbol: str) -> str:
        return f"{self.prefix}:sym:{symbol}"

    # -- the atomic step ------------------------------------------------------------------------------------
    def check_and_reserve(self, res: Reservation) -> CapResult:
        result = self._result(self._run("reserve", res))
        if result.allowed and self.min_replicas_acked:
            self._await_replicas(res)
        return result

    def _await_replicas(self, res: Reservation) -> None:
        """Replication is asynchronous: a failover right after the reservation could lose it and let another
        runner take the slot again. ``WAIT`` narrows that window (it does not close it: Redis's own docs say WAIT
        does not make Redis strongly consistent); a reservation too few replicas confirmed is an error, so under
        ``on_failure: block`` the signal is refused rather than announced on an unconfirmed slot."""
        try:
            acked = int(self.client.wait(self.min_replicas_acked, self.wait_timeout_ms))
        except redis.RedisError as e:
            raise self._error("wait", e) from None
        if acked < self.min_replicas_acked:
            raise CounterBackendError(
                f"redis reserve at {self.where}: {res.symbol} {res.id} acknowledged by {acked} of "
                f"{self.min_replicas_acked} replicas within {self.wait_timeout_ms} ms (redis.min_replicas_acked)"
            )

    def record(self, reservations: Iterable[Reservation]) -> int:
        """Write reservations decided elsewhere (journal, outage) with no cap check; returns how many are new.

        Idempotent by id: writing one twice counts it once.
        """
        added = 0
        batch: list[Reservation] = []
        for r in reservations:
            batch.append(r)
            if len(batch) >= RECORD_BATCH:
                added += self._record_batch(batch)
                batch = []
        if batch:
            added += self._record_batch(batch)
        return added

    def seed(self, reservations: Iterable[Reservation]) -> None:
        self.record(reservations)

    # -- queries ------------------------------------------------------------------------------------------
    def window_counts(self, ts_ms: int, symbol: str | None = None) -> dict[str, int]:
        key = self.key_global if symbol is None else self.key_symbol(symbol)
        rules = self.policy.rules if symbol is None else (self.policy.symbol_rules or self.policy.rules)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.type(key)
            for r in rules:
                pipe.zcount(key, f"({ts_ms - r.length_ms}", ts_ms)
            kind, *counts = pipe.execute(raise_on_error=False)
            self._expect_type("window_counts", key, kind, "zset")
            for n in counts:
                if isinstance(n, Exception):
                    raise n
            return {r.window: int(n) for r, n in zip(rules, counts, strict=True)}
        except redis.RedisError as e:
            raise self._error("window_counts", e) from None

    def snapshot(self) -> Snapshot:
        """All reservations Redis holds for the deployment (bounded: the keys are trimmed to two horizons)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.type(self.key_global)
            pipe.type(self.key_meta)
            pipe.zrange(self.key_global, 0, -1, withscores=True)
            pipe.hget(self.key_meta, "latest")
            pipe.type(self.key_owners)
            pipe.hgetall(self.key_owners)
            kind_all, kind_meta, members, latest, kind_owners, owners = pipe.execute(raise_on_error=False)
            self._expect_type("snapshot", self.key_global, kind_all, "zset")
            self._expect_type("snapshot", self.key_meta, kind_meta, "hash")
            self._expect_type("snapshot", self.key_owners, kind_owners, "hash")
            for x in (members, latest, owners):
                if isinstance(x, Exception):
                    raise x
        except redis.RedisError as e:
            raise self._error("snapshot", e) from None
        out = []
        who = {_text(k): _text(v) for k, v in owners.items()}
        for member, score in members:
            text = _text(member)
            symbol, sep, rid = text.partition("|")
            if not sep or not symbol or not rid:
                raise CounterBackendError(
                    f"redis snapshot at {self.where}: {self.key_global} holds member {text[:80]!r}, "
                    "expected '<symbol>|<id>' (a foreign value under our keys)"
                )
            out.append(Reservation(rid, symbol, int(score), owner=who.get(text, "")))
        try:
            latest_ms = int(latest) if latest is not None else 0
        except ValueError:
            raise CounterBackendError(
                f"redis snapshot at {self.where}: {self.key_meta} field latest is not a number: "
                f"{latest[:40]!r} (a foreign value under our keys)"
            ) from None
        return Snapshot(tuple(out), latest_ms)

    def reservations(self) -> list[Reservation]:
        """Everything held, oldest first (mirrors :meth:`MemoryCounters.reservations`)."""
        return sorted(self.snapshot().reservations, key=lambda r: r.ts_ms)

    def quality_threshold(self, rule: BudgetRule) -> RedisThreshold:
        """The ranked budget's threshold history for this namespace and profile (``sniper.selection: ranked``)."""
        from ultra_signals.counters.threshold_redis import RedisThreshold

        return RedisThreshold(self, rule)

    def error(self, op: str, e: Exception) -> CounterBackendError:
        """A Redis failure in this backend's words (the password scrubbed), for the threshold's calls too."""
        return self._error(op, e)

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as e:
            raise self._error("ping", e) from None

    def close(self) -> None:
        self.client.close()

    # -- plumbing -------------------------------------------------------------------------------------------
    def _args(self, mode: str, res: Reservation) -> tuple[list[str], list[str | int]]:
        ts = int(res.ts_ms)
        if ts != res.ts_ms or "|" in res.symbol or not res.symbol:
            raise ValueError(f"reservation {res!r}: ts_ms must be whole milliseconds, symbol non-empty without '|'")
        keys = [self.key_global, self.key_meta, self.key_symbol(res.symbol), self.key_owners]
        args: list[str | int] = [
            mode,
            f"{res.symbol}|{res.id}",
            ts,
            self.keep_ms,
            self.ttl_ms,
            self.policy.horizon_ms,
            *self._rule_args,
            res.owner,
        ]
        return keys, args

    def _run(self, mode: str, res: Reservation) -> Any:
        keys, args = self._args(mode, res)
        try:
            try:
                return self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                # EVAL also caches the script, so the next EVALSHA finds it.
                return self.client.eval(SCRIPT, len(keys), *keys, *args)
        except redis.RedisError as e:
            raise self._error(mode, e) from None

    def _record_batch(self, batch: Sequence[Reservation]) -> int:
        for attempt in (1, 2):
            try:
                pipe = self.client.pipeline(transaction=False)
                for r in batch:
                    keys, args = self._args("record", r)
                    pipe.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
                replies = pipe.execute(raise_on_error=False)
                if attempt == 1 and any(isinstance(x, redis.exceptions.NoScriptError) for x in replies):
                    self.client.script_load(SCRIPT)
                    continue
                for x in replies:
                    if isinstance(x, Exception):
                        raise x
                return sum(1 for x in replies if int(x[2]) == 0)
            except redis.RedisError as e:
                raise self._error("record", e) from None
        raise CounterBackendError(f"redis record at {self.where}: the script could not be loaded")

    def _expect_type(self, op: str, key: str, kind: Any, want: str) -> None:
        """Same words as the script's check, so the operator sees one message whichever call hit it first."""
        if isinstance(kind, Exception):
            raise kind
        text = kind.decode() if isinstance(kind, bytes) else str(kind)
        if text not in ("none", want):
            raise CounterBackendError(
                f"redis {op} at {self.where}: {key} holds a {text}, expected a {want} "
                "(a foreign value under our keys); refusing to use these keys"
            )

    def _result(self, reply: Any) -> CapResult:
        try:
            allowed, reason, duplicate, *rest = reply
            n = len(self.policy.rules)
            counts, tail = rest[:n], rest[n:]
            if len(counts) != n or len(tail) != 1:
                raise ValueError(f"expected {n} counts and an owner")
            return CapResult(
                allowed=int(allowed) == 1,
                reason=_text(reason) or None,
                counts={r.window: int(x) for r, x in zip(self.policy.rules, counts, strict=True)},
                duplicate=int(duplicate) == 1,
                owner=_text(tail[0]),
            )
        except (ValueError, TypeError) as e:
            raise CounterBackendError(f"redis reserve at {self.where}: unexpected reply {reply!r:.200}: {e}") from None

    def _error(self, op: str, e: Exception) -> CounterBackendError:
        text = redact(str(e), [self._secret] if self._secret else [])
        if "ULTRA_SIGNALS_FOREIGN" in text:
            text = text.split("ULTRA_SIGNALS_FOREIGN", 1)[1].split(" script:", 1)[0].strip()
            return CounterBackendError(f"redis {op} at {self.where}: {text}; refusing to use these keys")
        if "WRONGTYPE" in text:
            return CounterBackendError(
                f"redis {op} at {self.where}: a key under {self.prefix} holds a foreign value ({text})"
            )
        return CounterBackendError(
            f"redis {op} at {self.where}: {type(e).__name__}: {text}", timeout=isinstance(e, redis.TimeoutError)
        )


def _text(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _rules_args(rules: Sequence[CapRule]) -> list[str | int]:
    out: list[str | int] = [len(rules)]
    for r in rules:
        out += [r.length_ms, r.cap, r.reason]
    return out
