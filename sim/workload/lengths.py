"""Token-length distributions: fixed, uniform, lognormal, exponential (geometric), empirical."""

from __future__ import annotations

import numpy as np

from sim.config import MAX_TOKENS, EmpiricalLength, ExponentialLength, FixedLength, LognormalLength, UniformLength


def sample_lengths(spec, rng: np.random.Generator, n: int, empirical_values: np.ndarray | None = None) -> np.ndarray:
    """n integer lengths >= 1. ``empirical_values`` carries a trace column for trace-backed
    empirical distributions (read by the caller, which knows the scenario's directory).

    Unbounded distributions (lognormal without ``max``, exponential) are clipped to
    ``MAX_TOKENS``, in floating point before the conversion to int64, so a far tail can
    neither overflow nor wrap around."""
    if isinstance(spec, FixedLength):
        return np.full(n, spec.value, dtype=np.int64)
    if isinstance(spec, UniformLength):
        return rng.integers(spec.low, spec.high + 1, n, dtype=np.int64)
    if isinstance(spec, LognormalLength):
        sigma2 = np.log1p(spec.cv**2)
        mu = np.log(spec.mean) - sigma2 / 2
        x = rng.lognormal(mu, np.sqrt(sigma2), n)
        upper = spec.max if spec.max is not None else MAX_TOKENS
        return np.clip(np.rint(np.minimum(x, MAX_TOKENS)), spec.min, upper).astype(np.int64)
    if isinstance(spec, ExponentialLength):
        return np.minimum(rng.geometric(1.0 / spec.mean, n), MAX_TOKENS).astype(np.int64)
    if isinstance(spec, EmpiricalLength):
        if empirical_values is not None:
            return rng.choice(empirical_values, n).astype(np.int64)
        values = np.asarray(spec.values, dtype=np.int64)
        p = None
        if spec.weights is not None:
            w = np.asarray(spec.weights, dtype=float)
            if not np.isfinite(w.sum()):  # huge (finite) weights: normalise by the largest first
                w = w / w.max()
            p = w / w.sum()
        return rng.choice(values, n, p=p)
    raise TypeError(f"unknown length distribution {spec!r}")
