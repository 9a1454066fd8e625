"""Varied configurations end to end: each run conserves requests and its numbers make sense."""

import numpy as np
import pytest

from sim.config import parse_scenario
from sim.run import run_scenario

CHAT = dict(
    name="chat",
    pool="a",
    arrival=dict(process="poisson", rate=8),
    prompt_tokens=dict(dist="lognormal", mean=800, cv=1, max=6000),
    output_tokens=dict(dist="lognormal", mean=150, cv=1, max=1000),
)

CASES = {
    "70b-tp8-fp8": dict(
        pools=[
            dict(
                name="a",
                model="llama-3-70b",
                gpu="h100-sxm",
                tensor_parallel_size=8,
                engine=dict(dtype="fp8", kv_cache_dtype="fp8"),
            )
        ],
        classes=[CHAT],
    ),
    "two-pools-two-classes": dict(
        pools=[
            dict(name="a", model="llama-3.2-1b", gpu="l4", replicas=3, router="jsq_tokens"),
            dict(name="b", model="qwen2.5-7b", gpu="a100-80gb", replicas=2, router="least_outstanding"),
        ],
        classes=[CHAT, dict(CHAT, name="code", pool="b", arrival=dict(process="gamma", rate=4, cv=3))],
        slo=dict(ttft_s=1.0, percentile=90),
    ),
    "diurnal-empirical-trace-lengths": dict(
        pools=[dict(name="a", model="mistral-7b", gpu="h200", replicas=2)],
        classes=[
            dict(
                name="chat",
                pool="a",
                arrival=dict(
                    process="piecewise", points=[[0, 2], [20, 12], [40, 4]], interpolation="linear", period_s=60
                ),
                prompt_tokens=dict(
                    dist="empirical", trace=dict(path="builtin:azure_code_2023_sample.csv", format="azure")
                ),
                output_tokens=dict(dist="empirical", values=[10, 100, 400], weights=[1, 2, 1]),
            )
        ],
    ),
    "static-no-chunking": dict(
        pools=[
            dict(
                name="a",
                model="llama-3-8b",
                gpu="mi300x",
                engine=dict(
                    scheduler="static", enable_chunked_prefill=False, max_num_batched_tokens=16384, max_num_seqs=32
                ),
            )
        ],
        classes=[CHAT],
    ),
    "tight-kv-preemption": dict(
        pools=[
            dict(
                name="a",
                model="llama-3-8b",
                gpu="b200",
                engine=dict(num_gpu_blocks=400, block_size=32, max_num_seqs=64),
            )
        ],
        classes=[CHAT],
    ),
    "mooncake-prefix-jsq": dict(
        pools=[dict(name="a", model="qwen2.5-7b", gpu="h200", replicas=2, router="jsq_tokens")],
        classes=[
            dict(
                name="chat",
                pool="a",
                trace=dict(path="builtin:mooncake_conversation_sample.jsonl", format="mooncake", max_requests=150),
            )
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_configuration_runs_and_makes_sense(case):
    raw = dict(name=case, seed=1, duration_s=60, warmup_s=5, **CASES[case])
    res = run_scenario(parse_scenario(raw))
    df = res.requests
    c = res.summary["conservation"]
    assert c["arrived"] == len(df) > 0 and c["in_flight"] == 0
    done = df[df["status"] == "finished"]
    assert len(done) > 0
    assert (done["generated_tokens"] == done["output_tokens"]).all()
    assert (done["queue_s"] >= 0).all() and (done["ttft_s"] >= done["queue_s"]).all()
    assert (done["e2e_s"] >= done["ttft_s"]).all() and (done["gpu_s"] > 0).all()
    assert np.isclose(done["cost_usd"].sum() > 0, True)
    ts = res.timeseries
    assert (ts["kv_util"] <= 1 + 1e-12).all() and (ts["running"] >= 0).all()
    for name in res.summary["classes"]:
        assert res.summary["classes"][name]["throughput_rps"]["mean"] > 0
