"""The bounded latency histogram: percentiles within 1 % of numpy's on the same samples, memory bounded."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.observability.latency import PRECISION, LatencyHistogram


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.002, max_value=5_000.0, allow_nan=False), min_size=1, max_size=400))
def test_percentiles_match_numpy_within_the_precision(xs: list[float]) -> None:
    h = LatencyHistogram()
    for x in xs:
        h.append(x)
    got = h.percentiles()
    arr = np.asarray(xs)
    assert got["n"] == len(xs) and got["max"] == arr.max()
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        # numpy interpolates between two order statistics; each is known to PRECISION, so is the blend.
        want = float(np.percentile(arr, q))
        assert math.isclose(got[name], want, rel_tol=PRECISION, abs_tol=1e-9), (name, got[name], want)


def test_memory_is_bounded_by_the_value_range_not_the_sample_count() -> None:
    h = LatencyHistogram(recent=100)
    rng = np.random.default_rng(7)
    for x in rng.lognormal(mean=0.0, sigma=1.5, size=200_000):
        h.append(float(x))
    assert len(h) == 200_000
    assert h.buckets < 2_500  # 1 % buckets over the values seen: a fixed ceiling however long the run
    assert len(h.recent()) == 100


def test_empty_and_non_finite() -> None:
    h = LatencyHistogram()
    assert math.isnan(h.percentiles()["p50"]) and not h
    h.append(math.inf)
    h.append(math.nan)
    assert len(h) == 0
    h.append(-1.0)  # clock went backwards: clamped to zero, still counted
    assert h.percentiles()["max"] == 0.0 and len(h) == 1
