"""StepLine: closed-form sums and inversions agree with step-by-step evaluation."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.costs.base import StepLine

pieces = st.lists(st.tuples(st.floats(1e-4, 1e-1), st.floats(0, 1e-5)), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(pieces=pieces, ctx0=st.integers(0, 200_000), dctx=st.integers(1, 512), k=st.integers(0, 600))
def test_total_matches_sum_of_steps(pieces, ctx0, dctx, k):
    line = StepLine(pieces)
    expected = math.fsum(line.step_s(ctx0 + j * dctx) for j in range(k))
    assert line.total_s(ctx0, dctx, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    pieces=pieces, ctx0=st.integers(0, 200_000), dctx=st.integers(1, 512), k=st.integers(1, 600), frac=st.floats(0, 1)
)
def test_steps_within_inverts_total(pieces, ctx0, dctx, k, frac):
    line = StepLine(pieces)
    elapsed = frac * line.total_s(ctx0, dctx, k)
    j = line.steps_within(ctx0, dctx, elapsed, k)
    assert 0 <= j <= k
    assert line.total_s(ctx0, dctx, j) <= elapsed
    if j < k:
        assert line.total_s(ctx0, dctx, j + 1) > elapsed


@settings(max_examples=300, deadline=None)
@given(
    pieces=pieces, ctx0=st.integers(0, 200_000), dctx=st.integers(1, 512), k=st.integers(1, 600), frac=st.floats(0, 1)
)
def test_step_end_at_is_the_end_of_the_step_in_flight(pieces, ctx0, dctx, k, frac):
    line = StepLine(pieces)
    elapsed = frac * line.total_s(ctx0, dctx, k)
    done, end = line.step_end_at(ctx0, dctx, elapsed, k)
    assert done == min(line.steps_within(ctx0, dctx, elapsed, k) + 1, k)
    assert end == line.total_s(ctx0, dctx, done)  # the same float, not an approximation
