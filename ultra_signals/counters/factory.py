"""Pick the cap counters from settings: in-process memory, or Redis with failover.

The runner calls :func:`make_counters` once at start and only ever sees the :class:`SniperCounters` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ultra_signals.core.caps import Reservation, SniperCounters, policy_from
from ultra_signals.core.config import Settings
from ultra_signals.core.redaction import url_password
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.observability.metrics import Metrics


def make_counters(
    settings: Settings,
    metrics: Metrics,
    namespace: str,
    seed: Iterable[Reservation],
    on_event: Callable[[str, str], None] | None = None,
) -> SniperCounters:
    """Counters for a runner.

    ``namespace`` names the deployment (normally ``settings.redis.namespace``); the profile is taken from
    ``settings.profile``, so keys are ``ultra_signals:{<namespace>:<profile>}:sniper:...``.  ``seed`` is the
    journal's recent allowed signals: the memory backend is rebuilt from it, and with Redis it fills the
    fallback counts and is written back should Redis have lost it.  With Redis unreachable at start the
    counters start on memory (``on_failure=memory``) or blocked (``block``) and keep health-checking.
    """
    policy = policy_from(settings.sniper)
    rs = settings.redis
    if not rs.enabled:
        memory = MemoryCounters(policy)
        memory.seed(seed)
        metrics.set_backend("memory", ("memory", "redis", "blocked"))
        if on_event is not None:
            on_event("start", "counter backend: memory (redis.enabled is false: caps are per process)")
        return memory
    # Loaded here, not at the top: a run on memory counters (every replay and shadow default) never imports
    # redis-py, a twentieth of such a run's start-up.
    from ultra_signals.counters.failover import FailoverCounters
    from ultra_signals.counters.redis_backend import RedisCounters, connect, describe_target

    # The password may be redis.password or inside redis.url: either is scrubbed from the backend's errors.
    secret = rs.password.get_secret_value() if rs.password is not None else (url_password(rs.url) if rs.url else None)
    primary = RedisCounters(
        connect(rs),
        policy,
        namespace=namespace,
        profile=settings.profile,
        where=describe_target(rs),
        secret=secret,
        min_replicas_acked=rs.min_replicas_acked,
        wait_timeout_ms=rs.wait_timeout_ms,
    )
    return FailoverCounters(
        primary,
        policy,
        rs.on_failure,
        metrics,
        health_check_interval_s=rs.health_check_interval_s,
        failover_after=rs.failover_after_failures,
        on_event=on_event,
        seed=seed,
    )
