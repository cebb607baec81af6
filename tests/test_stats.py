"""Evaluation statistics on hand-checked sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.research.stats import (
    _resample_means,
    lift,
    max_drawdown,
    profit_factor,
    random_baseline,
    summarize,
)


def test_drawdown_profit_factor_and_win_rate() -> None:
    r = np.array([1.0, -1.0, -1.0, 2.0, -0.5])
    assert max_drawdown(r) == 2.0
    assert max_drawdown([1.0, 2.0]) == 0.0
    assert max_drawdown([-1.0]) == 1.0
    assert profit_factor(r) == 3.0 / 2.5
    s = summarize(r, draws=500, seed=1)
    assert s.count == 5 and s.win_rate == 0.4 and math.isclose(s.mean_r, 0.1)
    assert s.mean_ci[0] <= s.mean_r <= s.mean_ci[1]
    assert summarize([], draws=10, seed=1).count == 0


def test_random_baseline_is_seeded_and_counts_draws_at_or_above() -> None:
    pool = np.arange(100, dtype=float)
    a = random_baseline(pool, 10, 90.0, draws=300, seed=3)
    assert a == random_baseline(pool, 10, 90.0, draws=300, seed=3)
    assert a.p_at_least == 0.0 and 40 < a.mean_r < 60
    assert random_baseline(pool, 10, -1.0, draws=50, seed=3).p_at_least == 1.0


def test_lift_interval_brackets_a_clear_difference() -> None:
    rng = np.random.default_rng(0)
    d, ci = lift(rng.normal(1.0, 0.1, 200), rng.normal(0.0, 0.1, 200), draws=500, seed=1)
    assert 0.9 < ci[0] < d < ci[1] < 1.1


def test_paired_block_lift_is_zero_for_identical_selections_and_finds_a_real_one() -> None:
    from ultra_signals.research.stats import paired_block_lift

    rng = np.random.default_rng(2)
    r = rng.normal(0.0, 1.0, 600)
    days = np.repeat(np.arange(60), 10)
    pick = rng.random(600) < 0.2
    assert paired_block_lift(r, pick, pick, days, draws=300, seed=1) == (0.0, (0.0, 0.0))
    good = pick.copy()
    r2 = np.where(good, r + 1.0, r)
    other = rng.random(600) < 0.2
    d, ci = paired_block_lift(r2, good, other & ~good, days, draws=300, seed=1)
    assert ci[0] > 0.3 and ci[0] < d < ci[1]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), draws=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
def test_resampled_means_are_bit_identical_to_the_one_matrix_formula(n: int, draws: int, seed: int) -> None:
    # The block-wise, int32-index version must give exactly what the plain formula gives (the report's figures
    # and the evaluate tables must not move): same index stream, same per-row reduction.
    x = np.random.default_rng(seed).normal(size=n)
    plain = x[np.random.default_rng(seed + 1).integers(0, n, size=(draws, n))].mean(axis=1)
    got = _resample_means(np.random.default_rng(seed + 1), x, draws)
    assert got.dtype == plain.dtype and np.array_equal(got, plain)


@pytest.mark.parametrize(
    ("n", "draws"), [(1, 3), (2, 2000), (3, 2000), (4097, 301), (10_193, 2000), (2**17 - 1, 4), (2**17 + 3, 3)]
)
def test_resampled_means_in_blocks_are_the_one_liner_at_every_block_edge(n: int, draws: int) -> None:
    # Blocks of rows that do not divide ``draws``, blocks with an odd count of values (the generator's 64-bit
    # word split across two calls), one row per block (n above the block size): the same means, bit for bit.
    x = np.random.default_rng(n).normal(size=n)
    plain = x[np.random.default_rng(7).integers(0, n, size=(draws, n))].mean(axis=1)
    got = _resample_means(np.random.default_rng(7), x, draws)
    assert got.tobytes() == plain.tobytes()
