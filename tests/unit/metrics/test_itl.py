"""Inter-token latency pooled over every gap (vLLM's ITL): the histogram, its closed-form
steps, and what a run records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import load_scenario, parse_scenario
from sim.costs.base import StepLine
from sim.fleet.cluster import simulate
from sim.metrics import itl


@settings(max_examples=200, deadline=None)
@given(
    first=st.floats(1e-4, 1.0),
    slope=st.floats(-1e-4, 1e-3),
    n=st.integers(1, 3000),
    weight=st.integers(1, 5),
)
def test_closed_form_steps_equal_adding_each_step(first, slope, n, weight):
    if first + slope * (n - 1) <= 1e-5:
        return  # durations stay positive
    a, b = itl.ITLHistogram(1), itl.ITLHistogram(1)
    a.add_steps(0, first, slope, n, weight)
    for j in range(n):
        b.add(0, first + j * slope, weight)
    assert a.counts.sum() == b.counts.sum() == n * weight
    # Equal bin by bin, up to a step whose duration sits on a bin edge in floating point.
    assert np.abs(np.cumsum(a.counts[0]) - np.cumsum(b.counts[0])).max() <= weight
    assert a.total_s[0] == pytest.approx(b.total_s[0], rel=1e-9)


def test_percentiles_are_within_half_a_bin_of_the_exact_ones():
    rng = np.random.default_rng(1)
    gaps = rng.lognormal(math.log(0.02), 0.6, 20_000)
    h = itl.ITLHistogram(1)
    for g in gaps:
        h.add(0, float(g))
    got = itl.summary(h.counts[0], float(h.total_s[0]), (50.0, 90.0, 99.0))
    for p in (50, 90, 99):
        assert got[f"itl_s_p{p}"] == pytest.approx(np.percentile(gaps, p, method="inverted_cdf"), rel=6e-4)
    assert got["itl_s_mean"] == pytest.approx(gaps.mean(), rel=1e-12)


def test_segments_cover_every_step_of_a_roofline_envelope():
    line = StepLine([(0.010, 1e-7), (0.002, 5e-7)])
    segs = line.segments(10_000.0, 64.0, 500)
    assert sum(n for *_, n in segs) == 500
    durations = [f + s * j for f, s, n in segs for j in range(n)]
    assert durations == pytest.approx([line.step_s(10_000.0 + 64.0 * j) for j in range(500)], rel=1e-12)
    assert sum(durations) == pytest.approx(line.total_s(10_000.0, 64.0, 500), rel=1e-12)


def _gaps_of(df, warmup: float):
    df = df[(df["kind"] == "text") & (df["arrival_s"] >= warmup) & (df["finish_s"] >= 0)]
    return int((df["output_tokens"] - 1).sum()), float((df["finish_s"] - df["first_token_s"]).sum())


@pytest.mark.parametrize("engine", [{}, {"enable_chunked_prefill": False}, {"max_num_seqs": 8}])
def test_a_run_pools_every_gap_of_its_measured_requests(engine):
    """Every finished request after the warm-up contributes output - 1 gaps whose sum is its
    time from first to last token; the closed-form spans give the slow path's histogram."""
    raw = {
        "name": "itl",
        "seed": 2,
        "duration_s": 60,
        "warmup_s": 10,
        "pools": [{"name": "p", "model": "llama-3.2-1b", "gpu": "l40s", "replicas": 2, "engine": engine}],
        "classes": [
            {
                "name": "a",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": 12},
                "prompt_tokens": {"dist": "lognormal", "mean": 800, "cv": 1.0, "max": 6000},
                "output_tokens": {"dist": "uniform", "low": 2, "high": 300},
            },
            {
                "name": "b",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": 3},
                "prompt_tokens": {"dist": "fixed", "value": 100},
                "output_tokens": {"dist": "fixed", "value": 50},
            },
        ],
    }
    sc = parse_scenario(raw)
    fast = simulate(sc, None, np.random.SeedSequence(7))
    slow = simulate(sc, None, np.random.SeedSequence(7), decode_spans=False)
    for cid in (0, 1):
        df = fast.requests[fast.requests["class_id"] == cid]
        count, total = _gaps_of(df, sc.warmup_s)
        assert fast.itl_counts[cid].sum() == count
        assert fast.itl_total_s[cid] == pytest.approx(total, rel=1e-9)
    assert np.array_equal(fast.itl_counts, slow.itl_counts)


def test_summary_reports_itl_like_vllm():
    """vLLM's mean ITL is the token-weighted mean TPOT: both divide the decode time of every
    request by its gaps."""
    from sim.run import run_scenario

    sc, base = load_scenario("scenarios/quickstart.yaml", ["duration_s=90", "replications=1"])
    res = run_scenario(sc, base)
    st_ = res.summary["classes"]["chat"]
    df = res.requests[(~res.requests["warmup"]) & (res.requests["status"] == "finished")]
    weighted = float((df["tpot_s"] * (df["output_tokens"] - 1)).sum() / (df["output_tokens"] - 1).sum())
    assert st_["itl_s_mean"]["mean"] == pytest.approx(weighted, rel=1e-9)
    assert st_["itl_s_p50"]["mean"] <= st_["itl_s_p99"]["mean"] <= st_["max_itl_s_p99.9"]["mean"] * 1.001


def test_the_packed_log_bins_as_the_runs_one_by_one():
    """The engine logs runs of steps and bins them at the end, vectorised: the same histogram
    as adding each run (rising, falling, across one edge or several)."""
    rng = np.random.default_rng(0)
    log, direct = bytearray(), itl.ITLHistogram(2)
    for _ in range(5000):
        key, first, slope = int(rng.integers(2)), float(rng.uniform(0.005, 0.05)), float(rng.normal(0, 3e-5))
        n, weight = int(rng.integers(1, 200)), float(rng.integers(1, 9))
        if first + slope * (n - 1) <= 1e-5:
            continue
        log += itl.pack_run(key, first, slope, n, weight)
        direct.add_steps(key, first, slope, n, weight)
    binned = itl.ITLHistogram(2)
    binned.add_log(log)
    assert np.array_equal(binned.counts, direct.counts)
    assert binned.total_s == pytest.approx(direct.total_s, rel=1e-12)
