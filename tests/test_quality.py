"""The quality model: recovers a real signal, claims none where there is none, and is calibrated in-sample."""

from __future__ import annotations

import numpy as np

from ultra_signals.research.quality import FEATURES, brier, calibration, feature_row, fit


def test_learns_a_planted_signal_and_beats_the_base_rate() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = (rng.random(2000) < 1 / (1 + np.exp(-1.5 * x[:, 0]))).astype(float)
    m = fit(x[:1000], y[:1000])
    assert m.weights[0] > 0.8 and max(abs(w) for w in m.weights[1:]) < 0.3
    p = m.predict(x[1000:])
    assert brier(p, y[1000:]) < brier(np.full(1000, y[:1000].mean()), y[1000:])
    buckets = calibration(p, y[1000:])
    assert [b["hit_rate"] for b in buckets] == sorted(b["hit_rate"] for b in buckets)


def test_too_few_examples_or_one_class_give_the_base_rate() -> None:
    x = np.ones((10, len(FEATURES)))
    m = fit(x, np.array([1.0] * 3 + [0.0] * 7))
    assert m.weights == (0.0,) * len(FEATURES)
    assert np.allclose(m.predict(x), 0.3)
    m1 = fit(np.ones((50, len(FEATURES))), np.zeros(50))
    assert all(w == 0.0 for w in m1.weights)


def test_features_are_side_signed_and_finite() -> None:
    comps = {"trend": 0.5, "momentum": -0.2, "volatility": 0.1, "volume": 0.3}
    feats = {"close": 100.0, "atr": 2.0, "adx": 30.0, "htf_trend": 1.0, "volume_z": float("nan")}
    lo = feature_row(True, 0.4, 0.8, comps, feats)
    sh = feature_row(False, -0.4, 0.8, comps, feats)
    assert lo[0] == -sh[0] == 0.5 and lo[7] == sh[7] == 2.0 and lo[9] == 0.0
    assert len(lo) == len(FEATURES)
