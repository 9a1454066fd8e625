"""The replica engine loop and the cluster: closed-form decode spans, determinism, routing."""

from pathlib import Path

import numpy as np
import pytest

from sim.config import parse_scenario
from sim.fleet.cluster import simulate
from sim.fleet.router import JoinShortestQueueTokens, LeastOutstanding, RoundRobin
from sim.run import run_scenario


def scenario(**over):
    raw = dict(
        name="t",
        num_requests=400,
        seed=3,
        pools=[
            dict(
                name="p",
                model="llama-3-8b",
                gpu="h100-sxm",
                replicas=2,
                router="least_outstanding",
                engine=dict(max_num_seqs=32, max_num_batched_tokens=2048, num_gpu_blocks=600),
            )
        ],
        classes=[
            dict(
                name="c",
                pool="p",
                arrival=dict(process="gamma", rate=25, cv=2),
                prompt_tokens=dict(dist="lognormal", mean=600, cv=1, max=3000),
                output_tokens=dict(dist="lognormal", mean=150, cv=1, max=1000),
            )
        ],
    )
    raw.update(over)
    return parse_scenario(raw)


@pytest.mark.parametrize("sched", ["continuous", "static"])
def test_decode_spans_give_the_same_timings_as_step_by_step(monkeypatch, sched):
    sc = scenario()
    raw = sc.model_dump()
    raw["pools"][0]["engine"]["scheduler"] = sched
    sc = parse_scenario(raw)
    fast = simulate(sc, Path("."), np.random.SeedSequence(1)).requests
    slow = simulate(sc, Path("."), np.random.SeedSequence(1), decode_spans=False).requests
    assert fast["preemptions"].sum() == slow["preemptions"].sum()
    if sched == "continuous":
        assert slow["preemptions"].sum() > 0, "the test should exercise preemption"
    for col in ("first_token_s", "finish_s", "first_scheduled_s"):
        np.testing.assert_allclose(fast[col], slow[col], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast["gpu_s"], slow["gpu_s"], rtol=1e-6)
    np.testing.assert_allclose(fast["max_itl_s"], slow["max_itl_s"], rtol=1e-6)


@pytest.mark.parametrize("prefix", [False, True])
def test_decode_cohort_matches_the_per_request_reference_path(monkeypatch, prefix):
    from sim.llm.scheduler import Scheduler

    raw = scenario(num_requests=500).model_dump()
    raw["pools"][0]["engine"]["enable_prefix_caching"] = prefix
    raw["pools"][0]["engine"]["num_gpu_blocks"] = 900
    if prefix:
        raw["classes"][0] = dict(
            name="c",
            pool="p",
            arrival=dict(process="poisson", rate=40),
            trace=dict(path="builtin:mooncake_conversation_sample.jsonl", format="mooncake"),
        )
        raw["pools"][0]["model"] = "qwen2.5-0.5b"
        raw["pools"][0]["engine"]["num_gpu_blocks"] = 4000
    sc = parse_scenario(raw)
    fast = simulate(sc, Path("."), np.random.SeedSequence(5)).requests
    monkeypatch.setattr(Scheduler, "use_cohort", False)
    ref = simulate(sc, Path("."), np.random.SeedSequence(5), decode_spans=False).requests
    assert ref["preemptions"].sum() > 0, "the test should exercise preemption"
    if prefix:
        assert ref["cached_tokens"].sum() > 0, "the test should exercise prefix hits"
    for col in ("preemptions", "cached_tokens", "generated_tokens", "replica"):
        np.testing.assert_array_equal(fast[col], ref[col])
    for col in ("first_token_s", "finish_s", "first_scheduled_s", "max_itl_s", "gpu_s"):
        np.testing.assert_allclose(fast[col], ref[col], rtol=1e-7, atol=1e-9)


def test_same_seed_same_summary_and_different_seed_differs():
    a = run_scenario(scenario(replications=2), Path("."))
    b = run_scenario(scenario(replications=2), Path("."))
    assert a.summary["classes"] == b.summary["classes"]
    c = run_scenario(scenario(replications=2, seed=4), Path("."))
    assert a.summary["classes"]["c"]["e2e_s_p50"] != c.summary["classes"]["c"]["e2e_s_p50"]


def test_every_request_is_accounted_for_with_a_drain_timeout():
    res = run_scenario(scenario(drain_timeout_s=0.5, num_requests=300), Path("."))
    c = res.summary["conservation"]
    assert c["in_flight"] > 0  # the drain timeout cut work off
    assert c["finished"] + c["rejected"] + c["in_flight"] == c["arrived"] == 300


def test_tensor_parallel_divides_weights_and_kv_and_adds_allreduce():
    from sim import catalog
    from sim.config import EngineConfig
    from sim.costs import RooflineCostModel, StepShape
    from sim.llm.memory import kv_budget

    m, g = catalog.get_model("llama-3-70b"), catalog.get_gpu("h100-sxm")
    b2, b4 = kv_budget(m, g, EngineConfig(), 2), kv_budget(m, g, EngineConfig(), 4)
    assert b4.weight_bytes == pytest.approx(b2.weight_bytes / 2)
    assert b4.kv_bytes_per_token == pytest.approx(b2.kv_bytes_per_token / 2)
    s = StepShape()
    s.add_decode(1000)
    t2, t4 = RooflineCostModel(m, g, tp=2).step_s(s), RooflineCostModel(m, g, tp=4).step_s(s)
    assert t4 < t2 < 2 * t4  # faster, but less than linearly: the all-reduce floor
    one = RooflineCostModel(catalog.get_model("llama-3-8b"), g, tp=1)
    two = RooflineCostModel(catalog.get_model("llama-3-8b"), g, tp=2)
    assert two._ar_fixed_s > 0 and one._ar_fixed_s == 0


class _R:
    def __init__(self, n, t):
        self.num_outstanding, self.outstanding_tokens = n, t


def test_routers():
    reps = [_R(3, 10), _R(1, 500), _R(2, 5)]
    rr = RoundRobin()
    assert [rr.select(reps) for _ in range(4)] == [0, 1, 2, 0]
    assert LeastOutstanding().select(reps) == 1
    assert JoinShortestQueueTokens().select(reps) == 2
    # Ties rotate so equal replicas share load.
    eq = [_R(0, 0), _R(0, 0)]
    lo = LeastOutstanding()
    assert [lo.select(eq) for _ in range(4)] == [0, 1, 0, 1]


def test_an_arrival_exactly_at_the_end_of_a_decode_span_joins_the_next_step():
    # Constant arrivals and step times make an arrival land on a span's last step end (the
    # engine once woke twice from one span there and crashed).
    raw = scenario().model_dump()
    raw.pop("num_requests")
    raw.update(duration_s=20, seed=11)
    raw["pools"][0].update(
        model="llama-3.2-1b", gpu="l40s", router="round_robin", cost_model={"kind": "constant", "step_s": 0.01}
    )
    raw["pools"][0]["engine"].update(max_num_seqs=48, num_gpu_blocks=1500)
    raw["classes"][0].update(
        arrival={"process": "constant", "rate": 20},
        prompt_tokens={"dist": "fixed", "value": 256},
        output_tokens={"dist": "fixed", "value": 50},
    )
    res = run_scenario(parse_scenario(raw), Path("."))
    c = res.summary["conservation"]
    assert c["finished"] == c["arrived"] == 399
    # Each request waits at most for the step in flight, then runs 50 steps of 10 ms (one
    # prefill, 49 decodes).
    e2e = res.requests["e2e_s"]
    assert e2e.min() >= 0.5 - 1e-9 and e2e.max() <= 0.51 + 1e-9
