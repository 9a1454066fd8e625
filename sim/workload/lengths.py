"""Token-length distributions: fixed, uniform, lognormal, exponential (geometric), empirical."""

from __future__ import annotations

import numpy as np

from sim.config import EmpiricalLength, ExponentialLength, FixedLength, LognormalLength, UniformLength


def sample_lengths(spec, rng: np.random.Generator, n: int, empirical_values: np.ndarray | None = None) -> np.ndarray:
    """n integer lengths >= 1. ``empirical_values`` carries a trace column for trace-backed
    empirical distributions (read by the caller, which knows the scenario's directory)."""
    if isinstance(spec, FixedLength):
        return np.full(n, spec.value, dtype=np.int64)
    if isinstance(spec, UniformLength):
        return rng.integers(spec.low, spec.high + 1, n, dtype=np.int64)
    if isinstance(spec, LognormalLength):
        sigma2 = np.log1p(spec.cv**2)
        mu = np.log(spec.mean) - sigma2 / 2
        x = np.rint(rng.lognormal(mu, np.sqrt(sigma2), n)).astype(np.int64)
        return np.clip(x, spec.min, spec.max if spec.max is not None else None)
    if isinstance(spec, ExponentialLength):
        return rng.geometric(1.0 / spec.mean, n).astype(np.int64)
    if isinstance(spec, EmpiricalLength):
        if empirical_values is not None:
            return rng.choice(empirical_values, n).astype(np.int64)
        values = np.asarray(spec.values, dtype=np.int64)
        p = None
        if spec.weights is not None:
            w = np.asarray(spec.weights, dtype=float)
            p = w / w.sum()
        return rng.choice(values, n, p=p)
    raise TypeError(f"unknown length distribution {spec!r}")
