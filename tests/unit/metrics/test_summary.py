"""Summary statistics: intervals across replications, SLO judgement, the measurement window."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim.config import SLO
from sim.metrics.summary import Estimate, meets_slo, slo_met


def test_estimate_is_a_student_t_interval():
    vals = [1.0, 2.0, 4.0, 3.0]
    est = Estimate.of(vals)
    half = stats.t.ppf(0.975, 3) * np.std(vals, ddof=1) / 2
    assert est.mean == pytest.approx(2.5) and est.half_width == pytest.approx(half) and est.n == 4
    one = Estimate.of([7.0])
    assert one.mean == 7.0 and math.isnan(one.half_width)
    assert Estimate.of([math.nan, 1.0]).n == 1


def frame(rows):
    return pd.DataFrame(rows, columns=["finish_s", "ttft_s", "tpot_s", "e2e_s"])


def test_meets_slo_needs_every_target_and_a_finish():
    df = frame([[5.0, 0.1, 0.02, 4.0], [5.0, 0.9, 0.02, 4.0], [5.0, 0.1, 0.09, 4.0], [-1.0, np.nan, np.nan, np.nan]])
    slo = SLO(ttft_s=0.5, tpot_s=0.05)
    assert meets_slo(df, slo).tolist() == [True, False, False, False]
    assert meets_slo(df, None).tolist() == [True, True, True, False]


def stats_row(p99_ttft, rejected):
    return {"ttft_s_p99": {"mean": p99_ttft}, "tpot_s_p99": {"mean": 0.01}, "e2e_s_p99": {"mean": 1.0},
            "rejected_fraction": {"mean": rejected}, "ttft_s_p97.5": {"mean": p99_ttft}}


def test_slo_verdict_uses_its_percentile_and_counts_rejections():
    slo = SLO(ttft_s=0.5, percentile=99)
    assert slo_met(stats_row(0.4, 0.0), slo) is True
    assert slo_met(stats_row(0.6, 0.0), slo) is False
    # 2 % rejected breaks a p99 target even when every served request was fast.
    assert slo_met(stats_row(0.1, 0.02), slo) is False
    assert slo_met(stats_row(0.4, 0.0), SLO(ttft_s=0.5, percentile=97.5)) is True
    assert slo_met(stats_row(0.4, 0.0), None) is None


def test_prefix_hit_rate_is_over_the_admitted_prompts():
    """Rejected requests never reach the prefix cache, so their prompts are not in the hit
    rate's denominator (the shipped Mooncake sample has prompts beyond Qwen2.5-7B's context)."""
    from pathlib import Path

    from sim.run import run_scenario

    root = Path(__file__).resolve().parents[3]
    result = run_scenario(root / "scenarios" / "mooncake_prefix_cache.yaml", overrides=("num_requests=300", "replications=1"))
    df = result.requests
    window = df[df["arrival_s"] >= result.summary["warmup_s"]]
    admitted = window[window["status"] != "rejected"]
    assert (window["status"] == "rejected").any() and admitted["cached_tokens"].sum() > 0
    want = admitted["cached_tokens"].sum() / admitted["prompt_tokens"].sum()
    assert result.summary["classes"]["conv"]["prefix_hit_rate"]["mean"] == pytest.approx(want)
    assert want > window["cached_tokens"].sum() / window["prompt_tokens"].sum()
