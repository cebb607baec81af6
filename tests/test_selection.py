"""Offline selection replay: the budget threshold can never let more than the caps through; it is deterministic."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.core.caps import CapPolicy
from ultra_signals.counters.windows import max_window_count
from ultra_signals.research.selection import DAY_MS, HOUR_MS, Policy, Row, select

M = 60_000
SYMS = ["AAA", "BBB", "CCC"]

rows_st = st.lists(
    st.tuples(
        st.integers(0, 3 * DAY_MS // (5 * M)),  # bar index (5m bars over three days)
        st.sampled_from(SYMS),
        st.booleans(),
        st.one_of(st.floats(0, 1), st.just(math.nan)),
        st.sampled_from([None, None, None, "cooldown", "daily_cap", "trend_strength", "mtf_required"]),
    ),
    max_size=400,
)


def make(raw: list[tuple[int, str, bool, float, str | None]], *, sort: bool) -> list[Row]:
    seen = set()
    out = []
    for i, sym, long, q, reason in raw:
        if (i, sym) in seen:
            continue
        seen.add((i, sym))
        t = i * 5 * M
        out.append(Row(f"{sym}:5m:{t}", t + 5 * M, sym, "5m", t, long, reason, q))
    return sorted(out, key=lambda r: (r.ts, r.symbol)) if sort else out


@settings(max_examples=120, deadline=None)
@given(
    raw=rows_st,
    sort=st.booleans(),
    hourly=st.integers(1, 4),
    daily=st.integers(4, 12),
    reserve=st.floats(0, 0.9),
    same=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.just(6 * HOUR_MS))),
)
def test_never_more_than_the_caps(
    raw: list[tuple[int, str, bool, float, str | None]],
    sort: bool,
    hourly: int,
    daily: int,
    reserve: float,
    same: tuple[int, int] | None,
) -> None:
    rows = make(raw, sort=sort)  # unsorted: any arrival order, as with skewed runners
    for mode in ("first_come", "ranked"):
        pol = Policy(
            CapPolicy.from_limits(hourly, daily),
            cooldown_bars=2,
            mode=mode,
            reserve=reserve,
            min_history=3,
            same_direction=same,
        )
        vs = select(rows, pol, daily)
        allowed = sorted(r.ts for r, v in zip(rows, vs, strict=True) if v.reason is None)
        for t in allowed:
            assert max_window_count(allowed, t, HOUR_MS) <= hourly
            assert max_window_count(allowed, t, DAY_MS) <= daily
        # Earlier verdicts (risk filters, MTF) are kept as the engine gave them.
        for r, v in zip(rows, vs, strict=True):
            if r.engine_reason in ("trend_strength", "mtf_required"):
                assert v.reason == r.engine_reason
            if v.reason == "below_budget_threshold":
                assert mode == "ranked" and v.threshold is not None and r.quality < v.threshold


@settings(max_examples=60, deadline=None)
@given(raw=rows_st, cut=st.integers(0, 400))
def test_deterministic_and_prefix_stable(raw: list[tuple[int, str, bool, float, str | None]], cut: int) -> None:
    """Same input, same verdicts; and a verdict depends on earlier candidates only (a prefix replays the same)."""
    rows = make(raw, sort=True)
    pol = Policy(CapPolicy.from_limits(2, 6), cooldown_bars=10, mode="ranked", min_history=3)
    full = select(rows, pol, 6)
    assert select(rows, pol, 6) == full
    assert select(rows[:cut], pol, 6) == full[:cut]


def test_first_come_matches_the_sniper_rules() -> None:
    """Cooldown (10 bars) and the hourly cap in the engine's order."""
    rows = [
        Row(f"A:{i}", (i + 1) * 5 * M, "A" if i % 2 == 0 else "B", "5m", i * 5 * M, True, None, 0.5) for i in range(6)
    ]
    vs = select(rows, Policy(CapPolicy.from_limits(2, 6), cooldown_bars=10), 6)
    assert [v.reason for v in vs] == [None, None, "cooldown", "cooldown", "cooldown", "cooldown"]
    rows = [Row(f"{s}:0", 5 * M, s, "5m", 0, True, None, 0.5) for s in SYMS]
    vs = select(rows, Policy(CapPolicy.from_limits(2, 6), cooldown_bars=10), 6)
    assert [v.reason for v in vs] == [None, None, "hourly_cap"]
