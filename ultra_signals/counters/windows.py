"""Sniper cap counters: the window rule (pure) and the in-process memory backend.

"Never over the cap" is a statement about *every* sliding window on the time axis, not just the one that ends
at the new signal: reservations can arrive out of event-time order (skewed hosts, a standby catching up, replays
at different speeds), so a new reservation at ``t`` must not overfill any window ``[a, a+L)`` that contains ``t``.
:func:`max_window_count` checks exactly that; the Redis backend's Lua script implements the same rule.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from ultra_signals.core.caps import CapPolicy, CapResult, CapRule, Reservation


def max_window_count(times: Sequence[int], t: int, length_ms: int) -> int:
    """Most points of sorted ``times`` in any window ``[a, a+length)`` that contains ``t``.

    The maximum over such windows is reached at a window starting on one of the points (or on ``t``), so only
    points in ``(t-length, t]`` need to be tried as starts.
    """
    best = 0
    lo = bisect.bisect_right(times, t - length_ms)
    hi = bisect.bisect_right(times, t)
    starts = list(times[lo:hi])
    starts.append(t)
    for a in starts:
        n = bisect.bisect_left(times, a + length_ms) - bisect.bisect_left(times, a)
        if n > best:
            best = n
    return best


def trailing_count(times: Sequence[int], t: int, length_ms: int) -> int:
    """Points in the trailing window ``(t-length, t]``: what an operator calls "this hour's count"."""
    return bisect.bisect_right(times, t) - bisect.bisect_right(times, t - length_ms)


def refusal(times: Sequence[int], t: int, rules: Iterable[CapRule]) -> str | None:
    """The reason code of the first rule that a new point at ``t`` would break, else None.

    Every window ``[a, a+L)`` holding ``t`` lies inside ``(t-L, t+L)``: with fewer points than the cap there, no
    window can overflow, which one pair of bisections proves without trying each start (the common case: a
    budget that is not nearly spent).
    """
    for rule in rules:
        length = rule.length_ms
        if bisect.bisect_left(times, t + length) - bisect.bisect_right(times, t - length) < rule.cap:
            continue
        if max_window_count(times, t, length) + 1 > rule.cap:
            return rule.reason
    return None


class MemoryCounters:
    """Sorted event times per scope, in this process.  Fast and exact; shared by nobody.

    Points further than two horizons behind the latest time seen are trimmed; a reservation so late that the
    trimmed points could matter is refused (as ``daily_cap``) rather than checked against partial data.
    """

    backend = "memory"

    def __init__(self, policy: CapPolicy) -> None:
        self.policy = policy
        self._global: list[int] = []
        self._by_symbol: dict[str, list[int]] = {}
        self._ids: dict[str, Reservation] = {}
        self._latest = 0
        self._trimmed_before = -(2**62)

    # -- queries ------------------------------------------------------------------------------------------
    def window_counts(self, ts_ms: int, symbol: str | None = None) -> dict[str, int]:
        times = self._global if symbol is None else self._by_symbol.get(symbol, [])
        rules = self.policy.rules if symbol is None else (self.policy.symbol_rules or self.policy.rules)
        return {r.window: trailing_count(times, ts_ms, r.length_ms) for r in rules}

    def reservations(self) -> list[Reservation]:
        """Everything held, oldest first (the Redis backend replays these when it reconciles)."""
        return sorted(self._ids.values(), key=lambda r: r.ts_ms)

    def holds(self, reservation_id: str) -> bool:
        """Whether this id is reserved already (a retry of it must not count again)."""
        return reservation_id in self._ids

    def owner_of(self, reservation_id: str) -> str:
        """Run id holding this reservation ("" when unknown or not held)."""
        held = self._ids.get(reservation_id)
        return held.owner if held is not None else ""

    # -- the atomic step ------------------------------------------------------------------------------------
    def check_and_reserve(self, res: Reservation) -> CapResult:
        held = self._ids.get(res.id)
        if held is not None:
            return CapResult(True, None, self.window_counts(res.ts_ms), duplicate=True, owner=held.owner)
        if res.ts_ms - self.policy.horizon_ms < self._trimmed_before:
            return CapResult(False, self.policy.rules[-1].reason, self.window_counts(res.ts_ms))
        reason = refusal(self._global, res.ts_ms, self.policy.rules)
        if reason is None and self.policy.symbol_rules:
            reason = refusal(self._by_symbol.get(res.symbol, []), res.ts_ms, self.policy.symbol_rules)
        if reason is None:
            self._insert(res)
        return CapResult(reason is None, reason, self.window_counts(res.ts_ms))

    def seed(self, reservations: Iterable[Reservation]) -> None:
        for r in reservations:
            held = self._ids.get(r.id)
            if held is None:
                self._insert(r)
            elif not held.owner and r.owner:  # learn the owner (Redis snapshot after a journal seed)
                self._ids[r.id] = r

    def close(self) -> None:
        return None

    def _insert(self, res: Reservation) -> None:
        self._ids[res.id] = res
        bisect.insort(self._global, res.ts_ms)
        bisect.insort(self._by_symbol.setdefault(res.symbol, []), res.ts_ms)
        if res.ts_ms > self._latest:
            self._latest = res.ts_ms
            self._trim()

    def _trim(self) -> None:
        cutoff = self._latest - 2 * self.policy.horizon_ms
        if not self._global or self._global[0] >= cutoff:
            return
        self._trimmed_before = cutoff
        n = bisect.bisect_left(self._global, cutoff)
        del self._global[:n]
        for times in self._by_symbol.values():
            del times[: bisect.bisect_left(times, cutoff)]
        for rid in [rid for rid, r in self._ids.items() if r.ts_ms < cutoff]:
            del self._ids[rid]
