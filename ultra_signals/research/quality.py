"""Candidate quality: a calibrated probability of reaching the take-profit target before the stop.

Today's ``confidence`` is a heuristic that saturates at 1.0 for many candidates, so ranking on it cannot tell
them apart.  Quality here is an explicit quantity: ``p = P(take-profit target touched before the stop within the
horizon | features at the decision)``, estimated by an L2-regularised logistic regression on a handful of
side-signed, scale-free features (listed in :data:`FEATURES`).  With the executor's exits, the expected R before
costs is roughly ``p·R_tp − (1 − p)``, so ranking on ``p`` ranks on expected R.

Walk-forward only: a model is fitted on candidates whose outcome was *known* before the first decision it scores
(the caller purges every training candidate whose exit bar ends at or after the test window's start), and the
coefficients it learned are plain numbers that can be written into settings.  The model is small and transparent
on purpose: with a few hundred labelled candidates per fold anything cleverer fits noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ultra_signals.engine.budget import QUALITY_FEATURES as FEATURES
from ultra_signals.engine.budget import feature_row

F64 = npt.NDArray[np.float64]

__all__ = ["FEATURES", "QualityModel", "brier", "calibration", "feature_row", "fit"]


@dataclass(frozen=True, slots=True)
class QualityModel:
    """``p = σ(b + Σ w_i · (x_i − μ_i) / σ_i)``; every number is plain and can live in settings."""

    intercept: float
    weights: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    n_train: int
    base_rate: float

    def predict(self, x: F64) -> F64:
        if x.size == 0:
            return np.zeros(0)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(self.intercept + z @ np.asarray(self.weights))

    def as_dict(self) -> dict[str, object]:
        return {
            "intercept": self.intercept,
            "weights": dict(zip(FEATURES, self.weights, strict=True)),
            "mean": dict(zip(FEATURES, self.mean, strict=True)),
            "scale": dict(zip(FEATURES, self.scale, strict=True)),
            "n_train": self.n_train,
            "base_rate": self.base_rate,
        }


def _sigmoid(z: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))
    return out


def fit(x: F64, y: Sequence[float] | F64, *, l2: float = 1.0, iters: int = 50) -> QualityModel:
    """Logistic regression by Newton's method (IRLS) with an L2 penalty on the weights (not the intercept).

    Fewer than 20 examples or a single class gives the base-rate model (all weights 0): no information is
    claimed where there is none.
    """
    yy = np.asarray(y, dtype=np.float64)
    n, d = (x.shape[0], x.shape[1]) if x.ndim == 2 else (0, len(FEATURES))
    base = float(yy.mean()) if n else 0.5
    mean = x.mean(axis=0) if n else np.zeros(d)
    scale = x.std(axis=0) if n else np.ones(d)
    scale = np.where(scale > 1e-12, scale, 1.0)
    b0 = math.log(max(base, 1e-6) / max(1 - base, 1e-6))
    if n < 20 or base <= 0.0 or base >= 1.0:
        return QualityModel(b0, (0.0,) * d, tuple(map(float, mean)), tuple(map(float, scale)), n, base)
    z = np.hstack([np.ones((n, 1)), (x - mean) / scale])
    w = np.zeros(d + 1)
    w[0] = b0
    pen = np.full(d + 1, l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(z @ w)
        g = z.T @ (p - yy) + pen * w
        h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(h, g)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return QualityModel(
        float(w[0]), tuple(map(float, w[1:])), tuple(map(float, mean)), tuple(map(float, scale)), n, base
    )


def brier(p: F64, y: F64) -> float:
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def calibration(p: F64, y: F64, buckets: int = 5) -> list[dict[str, float]]:
    """Predicted vs realised hit rate in equal-count buckets of ``p`` (does a higher p mean more hits?)."""
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(buckets, p.size)):
        if chunk.size:
            out.append({"n": int(chunk.size), "p_mean": float(p[chunk].mean()), "hit_rate": float(y[chunk].mean())})
    return out
