"""Prefill/decode disaggregation: a request's prompt runs on the prefill pool, its KV cache
crosses the link, and it decodes on the decode pool. The physics checked here: the transfer's
time is bytes over bandwidth plus latency; TTFT is the prefill, the transfer and one decode
step; the prefill side holds the KV cache until the decode side has read it, and the decode
side from the moment it admits the request; transfers into one replica queue for its links."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.run import conservation

MODEL = "llama-3-8b"
CONSTANT = {"kind": "constant", "step_s": 0.01, "prefill_token_s": 1e-5}


def scenario(prompt=2000, output=50, rate=0.5, n=None, prefill=None, decode=None, disagg=None, **extra) -> dict:
    raw = {
        "name": "pd",
        "seed": 3,
        "duration_s": 60,
        "pools": [
            {"name": "prefill", "model": MODEL, "gpu": "h100-sxm", "replicas": 1, **(prefill or {})},
            {
                "name": "decode",
                "model": MODEL,
                "gpu": "h100-sxm",
                "replicas": 1,
                "disaggregation": {"prefill_pool": "prefill", **(disagg or {})},
                **(decode or {}),
            },
        ],
        "classes": [
            {
                "name": "c",
                "pool": "decode",
                "arrival": {"process": "constant", "rate": rate},
                "prompt_tokens": {"dist": "fixed", "value": prompt} if isinstance(prompt, int) else prompt,
                "output_tokens": {"dist": "fixed", "value": output} if isinstance(output, int) else output,
            }
        ],
    }
    if n is not None:
        raw["num_requests"] = n
    raw.update(extra)
    return raw


def run(raw: dict, seed: int = 0, **kw) -> pd.DataFrame:
    sc = parse_scenario(raw)
    return simulate(sc, None, np.random.SeedSequence(seed), **kw).requests


def split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requests, their prefill legs), legs in their request's order."""
    top = df[df["parent_id"] < 0].set_index("request_id")
    legs = df[df["parent_id"] >= 0].set_index("parent_id").loc[top.index]
    return top, legs


def link_bytes_per_token(tp: int = 1, kv_bytes: float = 2.0) -> float:
    return catalog.get_model(MODEL).kv_bytes_per_token(kv_bytes, tp)


@pytest.mark.parametrize("link", ["infiniband-ndr", "ethernet-100", "nvlink-4"])
@pytest.mark.parametrize("prompt", [1000, 8000])
def test_transfer_time_is_kv_bytes_over_link_bandwidth_plus_latency(link, prompt):
    top, _ = split(run(scenario(prompt=prompt, n=1, disagg={"link": link})))
    spec = catalog.get_link(link)
    expected = spec.latency_s + link_bytes_per_token() * prompt / (spec.gb_s * spec.efficiency * 1e9)
    assert top["kv_transfer_s"].iloc[0] == pytest.approx(expected, rel=1e-9)


def test_transfer_scales_with_prompt_and_inversely_with_bandwidth():
    t = {}
    for prompt in (1000, 4000):
        for bw in (10.0, 40.0):
            raw = scenario(prompt=prompt, n=1, disagg={"bandwidth_gb_s": bw, "latency_s": 0.0})
            t[prompt, bw] = split(run(raw))[0]["kv_transfer_s"].iloc[0]
    assert t[4000, 10.0] / t[1000, 10.0] == pytest.approx(4.0, rel=1e-9)
    assert t[1000, 10.0] / t[1000, 40.0] == pytest.approx(4.0, rel=1e-9)


def test_tensor_parallel_ranks_send_their_shares_in_parallel():
    """TP 2 on both sides: each rank sends half the KV cache on its own link (half the time);
    TP 2 prefill into TP 1 decode: the one decode link takes both shares (the TP 1 time)."""

    def t(tp_p: int, tp_d: int) -> float:
        raw = scenario(
            n=1,
            prefill={"tensor_parallel_size": tp_p},
            decode={"tensor_parallel_size": tp_d},
            disagg={"latency_s": 0.0},
        )
        return split(run(raw))[0]["kv_transfer_s"].iloc[0]

    assert t(2, 2) == pytest.approx(t(1, 1) / 2, rel=1e-9)
    assert t(2, 1) == pytest.approx(t(1, 1), rel=1e-9)
    assert t(1, 2) == pytest.approx(t(1, 1), rel=1e-9)


def test_ttft_is_prefill_then_transfer_then_one_decode_step():
    """Constant step costs, requests far apart: TTFT = the prefill leg's step (step + prompt ×
    per-token cost) + the transfer + one decode step; the aggregated pool's TTFT lacks the
    last two; decoding is unchanged."""
    prompt, output = 3000, 40
    raw = scenario(prompt=prompt, output=output, n=5, prefill={"cost_model": CONSTANT}, decode={"cost_model": CONSTANT})
    top, legs = split(run(raw))
    assert (top["status"] == "finished").all() and (legs["status"] == "finished").all()
    prefill_s = 0.01 + prompt * 1e-5
    assert legs["ttft_s"].to_numpy() == pytest.approx(prefill_s, rel=1e-9)
    assert legs["output_tokens"].eq(1).all()
    expected = prefill_s + top["kv_transfer_s"] + 0.01
    assert top["ttft_s"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-9)
    assert top["tpot_s"].to_numpy() == pytest.approx(0.01, rel=1e-9)
    # Aggregated: the same pool without disaggregation, sent the class directly.
    agg = scenario(prompt=prompt, output=output, n=5, decode={"cost_model": CONSTANT})
    del agg["pools"][1]["disaggregation"]
    agg_df = run(agg)
    assert agg_df["ttft_s"].to_numpy() == pytest.approx(prefill_s, rel=1e-9)
    # GPU time: the prefill on the prefill pool, the decode on the decode pool.
    assert legs["pool"].eq("prefill").all() and top["pool"].eq("decode").all()
    assert legs["gpu_s"].to_numpy() == pytest.approx(prefill_s, rel=1e-9)
    assert top["gpu_s"].to_numpy() == pytest.approx(0.01 * output, rel=1e-9)


def test_prefill_side_holds_the_kv_cache_until_the_decode_side_has_read_it():
    """The prefill pool has blocks for one prompt only: the next prompt's prefill starts the
    moment the previous prompt's KV cache has crossed the link, not when its prefill ended."""
    prompt = 4000
    blocks = -(-prompt // 16) + 10  # one prompt (and one token), not two
    raw = scenario(
        prompt=prompt,
        output=20,
        rate=100.0,  # every arrival waits
        n=4,
        prefill={"engine": {"num_gpu_blocks": blocks}, "cost_model": CONSTANT},
        decode={"cost_model": CONSTANT},
        disagg={"bandwidth_gb_s": 1.0},  # a slow link: 0.5 s per prompt, well beyond the prefill
    )
    top, legs = split(run(raw))
    assert (top["status"] == "finished").all()
    transfer_end = (top["first_token_s"] - 0.01).to_numpy()  # the first decode step follows at once
    leg_finish = legs["finish_s"].to_numpy()
    assert (transfer_end[:-1] > leg_finish[:-1] + 0.4).all()
    assert legs["first_scheduled_s"].to_numpy()[1:] == pytest.approx(transfer_end[:-1], rel=1e-12)


def test_decode_side_holds_blocks_from_admission_so_a_full_replica_delays_the_transfer():
    """The decode pool has blocks for one request: the second request's transfer starts (its
    blocks are allocated) only when the first has finished and freed its blocks."""
    prompt, output = 3000, 200
    blocks = -(-(prompt + output) // 16) + 5
    raw = scenario(
        prompt=prompt,
        output=output,
        rate=100.0,
        n=2,
        prefill={"cost_model": CONSTANT, "replicas": 2},
        decode={"engine": {"num_gpu_blocks": blocks}, "cost_model": CONSTANT},
    )
    top, legs = split(run(raw))
    first, second = top.iloc[0], top.iloc[1]
    started = second["first_token_s"] - 0.01 - second["kv_transfer_s"]
    assert started == pytest.approx(first["finish_s"], abs=1e-12)
    assert second["first_token_s"] - legs.iloc[1]["finish_s"] > output * 0.01


def test_transfers_into_one_replica_queue_for_its_links():
    """Two prompts prefilled at the same time on two prefill replicas, both for one decode
    replica: the second transfer waits for the first to leave the link."""
    raw = scenario(
        prompt=4000,
        output=5,
        rate=1000.0,
        n=2,
        prefill={"cost_model": CONSTANT, "replicas": 2, "router": "round_robin"},
        decode={"cost_model": CONSTANT},
        disagg={"bandwidth_gb_s": 2.0, "latency_s": 0.001},
    )
    top, legs = split(run(raw))
    busy = link_bytes_per_token() * 4000 / 2e9
    t = sorted(top["kv_transfer_s"])
    assert t[0] == pytest.approx(busy + 0.001, rel=1e-9)
    # The legs finish 1 ms apart (arrivals 1 ms apart): the second waits for the rest of the first.
    gap = legs["finish_s"].iloc[1] - legs["finish_s"].iloc[0]
    assert t[1] == pytest.approx(2 * busy + 0.001 - gap, rel=1e-9)


@pytest.mark.parametrize("policy", ["max_utilization", "guaranteed_no_evict"])
def test_loaded_run_conserves_requests_reproduces_and_equals_the_slow_path(policy):
    raw = scenario(
        prompt={"dist": "uniform", "low": 500, "high": 6000},
        output={"dist": "uniform", "low": 20, "high": 400},
        rate=12.0,
        prefill={"replicas": 1, "engine": {"num_gpu_blocks": 3000}},
        decode={
            "replicas": 2,
            "router": "least_outstanding",
            "engine": {"num_gpu_blocks": 1200, "capacity_scheduler_policy": policy},
        },
        duration_s=40,
    )
    fast = run(raw, seed=5)
    again = run(raw, seed=5)
    slow = run(raw, seed=5, decode_spans=False)
    pd.testing.assert_frame_equal(fast, again)
    pd.testing.assert_frame_equal(fast, slow)
    counts = conservation(fast)
    top, legs = split(fast)
    assert counts["finished"] == counts["arrived"] == 2 * len(top)
    # The small decode cache preempts (a preempted request recomputes locally), unless its
    # admission reserves every block the request will need.
    assert (top["preemptions"] > 0).any() == (policy == "max_utilization")
    assert (top["ttft_s"] > legs["ttft_s"]).all()


def test_a_prompt_the_prefill_pool_cannot_take_rejects_the_request_with_the_reason():
    raw = scenario(prompt=6000, n=2, prefill={"engine": {"max_model_len": 4096}})
    df = run(raw)
    top, legs = split(df)
    assert (top["status"] == "rejected").all()
    assert top["reject_reason"].str.startswith("prefill pool 'prefill': prompt+output").all()
    conservation(df)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["pools"][1]["disaggregation"].update(prefill_pool="nope"), "is not another pool"),
        (lambda r: r["pools"][1]["disaggregation"].update(prefill_pool="decode"), "is not another pool"),
        (lambda r: r["pools"][0].update(model="llama-3.2-1b"), "they must match"),
        (lambda r: r["pools"][0].update(engine={"block_size": 32}), "engine.block_size"),
        (lambda r: r["pools"][1]["disaggregation"].update(link="carrier-pigeon"), "unknown link 'carrier-pigeon'"),
        (lambda r: r["pools"][0].update(faults={"mtbf_s": 100, "mttr_s": 10}), "not modelled with disaggregated"),
        (lambda r: r["classes"][0].update(retry={"timeout_s": 5}), "deadlines are not modelled"),
    ],
)
def test_bad_disaggregation_is_one_line(change, message):
    raw = scenario(n=1)
    change(raw)
    with pytest.raises(ConfigError, match=message) as exc:
        parse_scenario(raw)
    assert "\n" not in str(exc.value)


def test_books_balance_each_pool_bills_its_own_work_and_a_request_carries_both_legs():
    """Each pool is attributed the GPU time spent on it (prefill legs on the prefill pool,
    decodes on the decode pool): never more than its bill. A request's cost (summary and
    price) is its decode plus its prefill leg."""
    from sim.price import price_scenario
    from sim.run import run_scenario

    raw = scenario(
        prompt={"dist": "uniform", "low": 500, "high": 6000},
        output={"dist": "uniform", "low": 20, "high": 400},
        rate=8.0,
        decode={"replicas": 2},
        duration_s=40,
        replications=2,
    )
    result = run_scenario(parse_scenario(raw), None)
    report = price_scenario(result)
    pools = report.pools.set_index("pool")
    assert (pools["attributed_usd"] <= pools["bill_usd"] * (1 + 1e-9)).all()
    assert report.overall["idle_usd"] >= 0
    req = result.requests
    legs = req[req["parent_id"] >= 0]
    assert legs["pool"].eq("prefill").all() and legs["cost_usd"].gt(0).all()
    top = req[req["parent_id"] < 0]
    whole = top["cost_usd"].sum() + legs["cost_usd"].sum()
    assert report.requests["cost_usd"].sum() == pytest.approx(whole, rel=1e-9)
    # Loaded costs share out every pool's bill among the requests (all of them finished).
    assert report.requests["loaded_usd"].sum() == pytest.approx(report.overall["bill_usd"], rel=1e-6)
    # The summary's attributed cost per request counts the prefill leg too.
    window = top[(top["arrival_s"] >= 0) & (top["status"] == "finished")]
    legs_cost = legs.set_index(["replication", "parent_id"])["cost_usd"]
    per_req = (
        window["cost_usd"].to_numpy() + legs_cost.loc[list(zip(window["replication"], window["request_id"]))].to_numpy()
    )
    means = [per_req[window["replication"].to_numpy() == r].mean() for r in range(2)]
    assert result.summary["classes"]["c"]["request_cost_usd_mean"]["mean"] == pytest.approx(np.mean(means), rel=1e-9)
