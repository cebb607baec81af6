"""The cap rule (pure) and the memory backend: never over a cap in ANY sliding window, and saturated.

The property tests check the results with an independent brute force (count points in every window that
starts at a point), not with the functions under test.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import full_window_containing, window_count, worst_window
from ultra_signals.core.caps import DAY_MS, HOUR_MS, CapPolicy, CapRule, Reservation
from ultra_signals.counters.windows import MemoryCounters, max_window_count, refusal, trailing_count

MIN = 60_000
T0 = 1_700_000_000_000  # an arbitrary epoch-ms origin, far from zero like real event times


# -- the pure rule -------------------------------------------------------------------------------------------
def test_max_window_count_sees_windows_after_t_not_only_the_trailing_one() -> None:
    # Two signals at 10:30 and 10:50 already exist; a late one at 10:00 has nothing in its trailing hour,
    # but the hour [10:00, 11:00) would then hold three.
    times = [T0 + 30 * MIN, T0 + 50 * MIN]
    assert trailing_count(times, T0, HOUR_MS) == 0
    assert max_window_count(times, T0, HOUR_MS) == 2
    policy = CapPolicy.from_limits(2, 6)
    assert refusal(times, T0, policy.rules) == "hourly_cap"


def test_windows_are_half_open_one_length_apart_do_not_share_a_window() -> None:
    times = [T0]
    assert max_window_count(times, T0 + HOUR_MS, HOUR_MS) == 0
    assert max_window_count(times, T0 + HOUR_MS - 1, HOUR_MS) == 1
    assert max_window_count(times, T0 - HOUR_MS + 1, HOUR_MS) == 1
    assert max_window_count(times, T0 - HOUR_MS, HOUR_MS) == 0


def test_refusal_reports_hourly_before_daily() -> None:
    policy = CapPolicy.from_limits(1, 1)
    assert refusal([T0], T0 + MIN, policy.rules) == "hourly_cap"
    assert refusal([T0], T0 + 2 * HOUR_MS, policy.rules) == "daily_cap"
    assert refusal([T0], T0 + DAY_MS, policy.rules) is None


def test_policy_from_limits_and_horizon() -> None:
    p = CapPolicy.from_limits(2, 6)
    assert [(r.window, r.length_ms, r.cap, r.reason) for r in p.rules] == [
        ("hour", HOUR_MS, 2, "hourly_cap"),
        ("day", DAY_MS, 6, "daily_cap"),
    ]
    assert p.symbol_rules == ()
    assert p.horizon_ms == DAY_MS
    q = CapPolicy.from_limits(2, 6, symbol_per_hour=1)
    assert [(r.window, r.cap) for r in q.symbol_rules] == [("hour", 1)]


# -- the memory backend --------------------------------------------------------------------------------------
def test_memory_reserves_until_the_cap_then_refuses_with_counts() -> None:
    m = MemoryCounters(CapPolicy.from_limits(2, 3))
    r1 = m.check_and_reserve(Reservation("a", "BTCUSDT", T0))
    r2 = m.check_and_reserve(Reservation("b", "ETHUSDT", T0 + 10 * MIN))
    r3 = m.check_and_reserve(Reservation("c", "BTCUSDT", T0 + 20 * MIN))
    assert (r1.allowed, r2.allowed, r3.allowed) == (True, True, False)
    assert r3.reason == "hourly_cap"
    assert r3.counts == {"hour": 2, "day": 2}
    r4 = m.check_and_reserve(Reservation("d", "BTCUSDT", T0 + 2 * HOUR_MS))
    r5 = m.check_and_reserve(Reservation("e", "BTCUSDT", T0 + 4 * HOUR_MS))
    assert r4.allowed and not r5.allowed and r5.reason == "daily_cap"
    assert m.window_counts(T0 + 4 * HOUR_MS) == {"hour": 0, "day": 3}
    assert [r.id for r in m.reservations()] == ["a", "b", "d"]


def test_memory_retry_with_the_same_id_never_counts_twice() -> None:
    m = MemoryCounters(CapPolicy.from_limits(1, 6))
    first = m.check_and_reserve(Reservation("run1:BTCUSDT:5m:1", "BTCUSDT", T0))
    again = m.check_and_reserve(Reservation("run1:BTCUSDT:5m:1", "BTCUSDT", T0))
    assert first.allowed and not first.duplicate
    assert again.allowed and again.duplicate
    assert m.window_counts(T0) == {"hour": 1, "day": 1}
    assert m.holds("run1:BTCUSDT:5m:1") and not m.holds("other")


def test_memory_symbol_caps_apply_on_top_of_the_global_ones() -> None:
    m = MemoryCounters(CapPolicy.from_limits(3, 6, symbol_per_hour=1))
    assert m.check_and_reserve(Reservation("a", "BTCUSDT", T0)).allowed
    refused = m.check_and_reserve(Reservation("b", "BTCUSDT", T0 + MIN))
    assert not refused.allowed and refused.reason == "hourly_cap"
    assert m.check_and_reserve(Reservation("c", "ETHUSDT", T0 + MIN)).allowed
    assert m.window_counts(T0 + MIN, "BTCUSDT") == {"hour": 1}
    assert m.window_counts(T0 + MIN) == {"hour": 2, "day": 2}


def test_memory_seed_rebuilds_counts_and_ignores_known_ids() -> None:
    m = MemoryCounters(CapPolicy.from_limits(2, 6))
    journal = [Reservation("a", "BTCUSDT", T0), Reservation("b", "ETHUSDT", T0 + MIN)]
    m.seed(journal)
    m.seed(journal)
    assert m.window_counts(T0 + MIN) == {"hour": 2, "day": 2}
    assert not m.check_and_reserve(Reservation("c", "SOLUSDT", T0 + 2 * MIN)).allowed


def test_memory_trims_two_horizons_behind_and_refuses_what_it_can_no_longer_check() -> None:
    m = MemoryCounters(CapPolicy.from_limits(2, 6))
    assert m.check_and_reserve(Reservation("old", "BTCUSDT", T0)).allowed
    assert m.check_and_reserve(Reservation("new", "BTCUSDT", T0 + 3 * DAY_MS)).allowed
    assert [r.id for r in m.reservations()] == ["new"]  # "old" fell more than 2 days behind and was trimmed
    late = m.check_and_reserve(Reservation("late", "BTCUSDT", T0 + 3 * DAY_MS - int(1.5 * DAY_MS)))
    assert not late.allowed and late.reason == "daily_cap"
    # Within one horizon behind the latest, every point a window needs is still held: checked normally.
    assert m.check_and_reserve(Reservation("recent", "BTCUSDT", T0 + 3 * DAY_MS - 12 * HOUR_MS)).allowed


# -- properties ----------------------------------------------------------------------------------------------
policies = st.builds(
    lambda h, extra_day, sym_h, sym_d: CapPolicy.from_limits(h, h + extra_day, sym_h, sym_d),
    st.integers(1, 4),
    st.integers(0, 6),
    st.one_of(st.none(), st.integers(1, 3)),
    st.one_of(st.none(), st.integers(2, 6)),
)
attempt = st.tuples(st.integers(0, 47 * 60), st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]))


def run(policy: CapPolicy, attempts: Sequence[tuple[int, str]]) -> tuple[list[Reservation], list[Reservation]]:
    m = MemoryCounters(policy)
    allowed: list[Reservation] = []
    refused: list[Reservation] = []
    for i, (minute, symbol) in enumerate(attempts):
        res = Reservation(f"r{i}", symbol, T0 + minute * MIN)
        (allowed if m.check_and_reserve(res).allowed else refused).append(res)
    return allowed, refused


def assert_never_over(policy: CapPolicy, allowed: Sequence[Reservation]) -> None:
    times = [r.ts_ms for r in allowed]
    for rule in policy.rules:
        assert worst_window(times, rule.length_ms) <= rule.cap, rule
    for symbol in {r.symbol for r in allowed}:
        own = [r.ts_ms for r in allowed if r.symbol == symbol]
        for rule in policy.symbol_rules:
            assert worst_window(own, rule.length_ms) <= rule.cap, (symbol, rule)


def saturated(policy: CapPolicy, allowed: Sequence[Reservation], res: Reservation) -> bool:
    """Adding ``res`` to the final allowed set would break some cap (global, or its symbol's own)."""
    times = [r.ts_ms for r in allowed]
    own = [r.ts_ms for r in allowed if r.symbol == res.symbol]
    return any(full_window_containing(times, res.ts_ms, rule) for rule in policy.rules) or any(
        full_window_containing(own, res.ts_ms, rule) for rule in policy.symbol_rules
    )


@settings(max_examples=300, deadline=None)
@given(policy=policies, attempts=st.lists(attempt, max_size=60))
def test_any_order_never_over_any_cap_and_every_refusal_meets_a_full_window(
    policy: CapPolicy, attempts: list[tuple[int, str]]
) -> None:
    """Whatever the order of event times (a span under two days, so nothing is trimmed):

    * no sliding hour or day, anywhere, holds more than its cap (global and per symbol);
    * the result is maximal: every refused attempt lies in a window that is exactly at its cap in the final
      allowed set — where demand exceeded a cap, the greedy allocator filled it.
    """
    allowed, refused = run(policy, attempts)
    assert_never_over(policy, allowed)
    for res in refused:
        assert saturated(policy, allowed, res), res


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempts=st.lists(attempt, max_size=60))
def test_in_order_refusals_see_a_full_trailing_window(policy: CapPolicy, attempts: list[tuple[int, str]]) -> None:
    """In event-time order the rule reduces to the familiar one: a refusal means the trailing window is full."""
    ordered = sorted(attempts)
    allowed, refused = run(policy, ordered)
    assert_never_over(policy, allowed)
    for res in refused:
        times = [r.ts_ms for r in allowed]
        own = [r.ts_ms for r in allowed if r.symbol == res.symbol]
        assert any(trailing_count(sorted(times), res.ts_ms, r.length_ms) == r.cap for r in policy.rules) or any(
            trailing_count(sorted(own), res.ts_ms, r.length_ms) == r.cap for r in policy.symbol_rules
        )


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    attempts=st.lists(st.tuples(st.integers(0, 6 * 24 * 60), st.sampled_from(["BTCUSDT", "ETHUSDT"])), max_size=60),
)
def test_long_spans_with_trimming_stay_under_the_caps(policy: CapPolicy, attempts: list[tuple[int, str]]) -> None:
    """Over six days, trimming kicks in; a refusal is then either a full window, or a reservation more than a
    horizon behind the latest allowed one (the only case the trimmed counter refuses without a full window)."""
    allowed, refused = run(policy, attempts)
    assert_never_over(policy, allowed)
    latest = max((r.ts_ms for r in allowed), default=0)
    for res in refused:
        assert saturated(policy, allowed, res) or res.ts_ms < latest - policy.horizon_ms, res


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), max_size=40).map(sorted),
    t=st.integers(0, 10_000),
    length=st.integers(1, 3_000),
)
def test_max_window_count_matches_brute_force(times: list[int], t: int, length: int) -> None:
    starts = range(t - length + 1, t + 1)
    assert max_window_count(times, t, length) == max(window_count(times, a, length) for a in starts)


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), max_size=40).map(sorted),
    t=st.integers(0, 10_000),
    rules=st.lists(st.tuples(st.integers(1, 3_000), st.integers(1, 12)), min_size=1, max_size=3),
)
def test_refusal_is_the_brute_force_rule_whatever_the_shortcut(
    times: list[int], t: int, rules: list[tuple[int, int]]
) -> None:
    """``refusal`` skips the per-start search when the points near ``t`` cannot fill a cap; the verdict is still
    the first rule that some window holding ``t`` would exceed, counted by brute force."""
    caps = [CapRule(f"w{i}", length, cap, f"cap{i}") for i, (length, cap) in enumerate(rules)]
    want = next(
        (
            r.reason
            for r in caps
            if max(window_count(times, a, r.length_ms) for a in range(t - r.length_ms + 1, t + 1)) + 1 > r.cap
        ),
        None,
    )
    assert refusal(times, t, caps) == want
