"""Arrival processes and length distributions: their statistics, checked with tolerances
derived from the sample size (not pinned seeded numbers)."""

import math

import numpy as np
import pytest

from sim.config import (
    ConstantArrival,
    ExponentialLength,
    FixedLength,
    GammaArrival,
    LognormalLength,
    PiecewiseArrival,
    PoissonArrival,
    UniformLength,
)
from sim.workload.arrivals import arrival_times, rate_at
from sim.workload.lengths import sample_lengths

RNG = np.random.default_rng


def test_poisson_rate_and_exponential_gaps():
    t = arrival_times(PoissonArrival(process="poisson", rate=5.0), RNG(1), 4000.0, None)
    n = len(t)
    assert abs(n - 20000) < 5 * math.sqrt(20000)  # Poisson count: sd = sqrt(mean)
    gaps = np.diff(t)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.03)
    assert np.all(np.diff(t) >= 0) and t[-1] < 4000.0


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_has_the_requested_rate_and_cv(cv):
    t = arrival_times(GammaArrival(process="gamma", rate=10.0, cv=cv), RNG(2), None, 50_000)
    gaps = np.diff(t)
    assert 1 / np.mean(gaps) == pytest.approx(10.0, rel=5 * cv / math.sqrt(len(gaps)))
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(cv, rel=0.1)


def test_constant_and_num_requests_cut():
    t = arrival_times(ConstantArrival(process="constant", rate=4.0), RNG(0), 10.0, None)
    np.testing.assert_allclose(np.diff(t), 0.25)
    assert len(arrival_times(PoissonArrival(process="poisson", rate=4.0), RNG(0), None, 123)) == 123


def test_piecewise_rate_curve_is_followed():
    spec = PiecewiseArrival(process="piecewise", points=[(0, 2.0), (100, 10.0), (200, 0.0)], period_s=300)
    t = arrival_times(spec, RNG(3), 3000.0, None)
    counts, _ = np.histogram(np.mod(t, 300), bins=[0, 100, 200, 300])
    expected = np.array([2.0, 10.0, 0.0]) * 100 * 10  # ten periods
    assert counts[2] == 0
    assert np.all(np.abs(counts[:2] - expected[:2]) < 5 * np.sqrt(expected[:2]))
    lin = PiecewiseArrival(process="piecewise", points=[(0, 0.0), (10, 10.0)], interpolation="linear")
    assert rate_at(lin, np.array([5.0]))[0] == pytest.approx(5.0)


def test_length_distributions():
    n = 100_000
    assert np.all(sample_lengths(FixedLength(dist="fixed", value=7), RNG(0), n) == 7)
    u = sample_lengths(UniformLength(dist="uniform", low=3, high=9), RNG(0), n)
    assert u.min() == 3 and u.max() == 9
    ln = sample_lengths(LognormalLength(dist="lognormal", mean=500, cv=1.0), RNG(0), n)
    assert ln.mean() == pytest.approx(500, rel=0.03) and ln.std() / ln.mean() == pytest.approx(1.0, rel=0.1)
    clipped = sample_lengths(LognormalLength(dist="lognormal", mean=500, cv=1.0, min=100, max=800), RNG(0), n)
    assert clipped.min() >= 100 and clipped.max() <= 800
    ex = sample_lengths(ExponentialLength(dist="exponential", mean=200), RNG(0), n)
    assert ex.min() >= 1 and ex.mean() == pytest.approx(200, rel=0.02)
