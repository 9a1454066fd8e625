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
    return {
        "ttft_s_p99": {"mean": p99_ttft},
        "tpot_s_p99": {"mean": 0.01},
        "e2e_s_p99": {"mean": 1.0},
        "rejected_fraction": {"mean": rejected},
        "ttft_s_p97.5": {"mean": p99_ttft},
    }


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
    result = run_scenario(
        root / "scenarios" / "mooncake_prefix_cache.yaml", overrides=("num_requests=300", "replications=1")
    )
    df = result.requests
    window = df[df["arrival_s"] >= result.summary["warmup_s"]]
    admitted = window[window["status"] != "rejected"]
    assert (window["status"] == "rejected").any() and admitted["cached_tokens"].sum() > 0
    want = admitted["cached_tokens"].sum() / admitted["prompt_tokens"].sum()
    assert result.summary["classes"]["conv"]["prefix_hit_rate"]["mean"] == pytest.approx(want)
    assert want > window["cached_tokens"].sum() / window["prompt_tokens"].sum()


def waits(arrivals, queue, status="finished"):
    arrivals = np.asarray(arrivals, dtype=float)
    queue = np.asarray(queue, dtype=float)
    return pd.DataFrame({"arrival_s": arrivals, "queue_s": queue, "finish_s": arrivals + queue + 1.0, "status": status})


def test_queue_growth_reads_the_fluid_rate_of_an_overloaded_queue():
    from sim.metrics.summary import OVERLOAD_GROWTH, queue_growth

    t = np.linspace(10, 110, 2001)
    # 10 % more arrivals than service: the wait rises by 0.1 s per second of arrivals
    rate = 0.1
    got = queue_growth(waits(t, rate * (t - 0)), (10, 110))
    assert got == pytest.approx(rate, rel=0.02) and got > OVERLOAD_GROWTH
    # a stable queue: waits that come and go without a trend
    rng = np.random.default_rng(3)
    assert queue_growth(waits(t, rng.exponential(0.5, len(t))), (10, 110)) < OVERLOAD_GROWTH
    # a busy period in the middle that clears: the medians fall again, no growth
    bump = np.where((t > 50) & (t < 80), 5.0, 0.01)
    assert queue_growth(waits(t, bump), (10, 110)) == 0.0
    # most of the last span never scheduled before the run stopped: the queue never drained
    never = waits(t, np.where(t > 60, np.nan, 0.01))
    never.loc[t > 60, "finish_s"] = -1.0
    assert queue_growth(never, (10, 110)) == math.inf


def test_long_requests_are_not_overload_and_count_in_the_throughput():
    """Requests far longer than their spacing keep many in flight when the window closes: they
    are not overload (the queue stays empty), and the throughput counts them (it used to count
    only completions inside the window, 0.4 req/s for 0.5 arriving)."""
    from sim.config import parse_scenario
    from sim.run import run_scenario

    raw = dict(
        name="long",
        seed=5,
        replications=2,
        duration_s=120,
        warmup_s=10,
        pools=[dict(name="p", model="llama-3.2-1b", gpu="h100-sxm", replicas=1)],
        classes=[
            dict(
                name="chat",
                pool="p",
                arrival=dict(process="poisson", rate=0.5),
                prompt_tokens=dict(dist="fixed", value=100),
                output_tokens=dict(dist="fixed", value=4096),
            )
        ],
    )
    st = run_scenario(parse_scenario(raw), None).summary["classes"]["chat"]
    assert not st["overloaded"]
    assert st["throughput_rps"]["mean"] == pytest.approx(st["arrival_rate"]["mean"])
    assert st["output_tokens_per_s"]["mean"] == pytest.approx(4096 * st["arrival_rate"]["mean"])
    # the same fleet at 240x the rate cannot keep up
    raw["classes"][0]["arrival"]["rate"] = 120
    raw["classes"][0]["output_tokens"]["value"] = 1024
    st = run_scenario(parse_scenario(raw), None).summary["classes"]["chat"]
    assert st["overloaded"] and st["queue_growth"]["mean"] > 0.05
    assert st["throughput_rps"]["mean"] < 0.95 * st["arrival_rate"]["mean"]
