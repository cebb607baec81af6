"""One executor per account: a lease in Redis with a fencing token.

Why: exactly-once reservations stop two runners from *deciding* the same bar twice, but an HA pair (or a
supervisor that restarts a runner that is still alive) would still have two executors trading one account.
Only the lease holder may place orders.  The lease is a Redis key that expires (``ttl_ms``) unless its holder
renews it; a standby that finds it free takes it with a NEW fencing token (a counter that only grows), so an
old holder that wakes up after a pause cannot pass for the current one: :meth:`ExecutorLease.valid` compares
its token with Redis's before every order.

A new holder must reconcile with the exchange before its first order (the previous holder may have left orders
or positions): :meth:`ExecutorLease.tick` calls ``on_acquired(token)`` once per acquisition (or, without a
callback, the caller reconciles and calls :meth:`mark_reconciled`), and :meth:`may_trade` stays False until then.

Redis unreachable means "not valid": an executor that cannot prove it holds the lease does not trade.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

# KEYS[1] lease key (value "<holder>|<token>"), KEYS[2] fencing counter.  ARGV holder, ttl_ms.
# Returns the token held by ``holder`` after the call, 0 when someone else holds the lease.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, sep + 1))
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""

# KEYS[1] lease key.  ARGV "<holder>|<token>", ttl_ms (0: only check).  1 when that exact lease is held.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class LeaseState:
    holder: str | None  # who holds it now (None: free)
    token: int  # that holder's fencing token (0: free)


class ExecutorLease:
    """The lease of one account, for one would-be holder (``holder`` is the run id)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str,
        account: str,
        holder: str,
        ttl_ms: int = 10_000,
        on_acquired: Callable[[int], None] | None = None,
    ) -> None:
        if "|" in holder or not holder:
            raise ValueError(f"lease holder {holder!r} must be non-empty without '|'")
        if ttl_ms < 100:
            raise ValueError(f"lease ttl_ms {ttl_ms} is too short (at least 100 ms)")
        self.client = client
        self.holder = holder
        self.ttl_ms = ttl_ms
        base = f"ultra_signals:{{{namespace}}}:executor:{account}"
        self.key = f"{base}:lease"
        self.fence_key = f"{base}:fence"
        self.on_acquired = on_acquired
        self.token = 0  # our fencing token while we hold the lease, else 0
        self.reconciled = False  # on_acquired has run for the current token
        self.handovers = 0
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def renew_every_s(self) -> float:
        """How often :meth:`tick` should run: three renewals per lease time."""
        return self.ttl_ms / 3000.0

    def tick(self) -> bool:
        """Acquire or renew; on a new acquisition reconcile first.  True while we hold the lease.

        Call every :attr:`renew_every_s` seconds.  Any Redis error drops the lease locally (never trade on a
        lease we cannot prove).
        """
        try:
            token = int(self._acquire(keys=[self.key, self.fence_key], args=[self.holder, self.ttl_ms]))
        except redis.RedisError as e:
            if self.token:
                log.warning("executor lease %s: lost (redis: %s)", self.key, e)
            self.token = 0
            self.reconciled = False
            return False
        if token == 0:
            if self.token:
                log.warning("executor lease %s: taken over by another executor", self.key)
            self.token = 0
            self.reconciled = False
            return False
        if token != self.token:
            self.token = token
            self.reconciled = False
            self.handovers += 1
            log.warning("executor lease %s: acquired by %s with fencing token %d", self.key, self.holder, token)
        if not self.reconciled and self.on_acquired is not None:
            self.on_acquired(token)  # reconcile with the exchange before the first order
            self.reconciled = True
        return True

    def mark_reconciled(self) -> None:
        """For an asynchronous reconcile (the runner awaits the executor's): trading may start now."""
        if self.token:
            self.reconciled = True

    def valid(self) -> bool:
        """Whether we hold the lease *now* with our token (one Redis round trip): ask before every order."""
        if not self.token:
            return False
        try:
            return int(self._renew(keys=[self.key], args=[f"{self.holder}|{self.token}", 0])) == 1
        except redis.RedisError:
            return False

    def may_trade(self) -> bool:
        """Held, proven in Redis, and reconciled since it was acquired."""
        return self.reconciled and self.valid()

    def blocking_reason(self) -> str | None:
        """The executor's hook: None when this executor may place orders, else the reason code."""
        return None if self.may_trade() else "no_executor_lease"

    def state(self) -> LeaseState:
        raw = self.client.get(self.key)
        if raw is None:
            return LeaseState(None, 0)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        who, _, tok = text.rpartition("|")
        return LeaseState(who, int(tok))

    def release(self) -> None:
        """Give the lease up at a clean stop, so the standby need not wait for it to lapse."""
        if self.token:
            try:
                self._release(keys=[self.key], args=[f"{self.holder}|{self.token}"])
            except redis.RedisError as e:
                log.warning("executor lease %s: release failed (%s); it lapses in %d ms", self.key, e, self.ttl_ms)
        self.token = 0
        self.reconciled = False


def wait_for_lease(lease: ExecutorLease, timeout_s: float) -> bool:
    """Tick until the lease is ours or ``timeout_s`` passes (a standby at start); bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        if lease.tick():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(lease.renew_every_s, max(0.0, deadline - time.monotonic())))
