"""KV beyond GPU memory: preemption by swap (KV to CPU memory over PCIe and back, nothing
computed again) beside recompute, and a CPU tier for the prefix cache (blocks the GPU cache
evicts are kept in host memory; a later hit loads them over PCIe instead of computing them).
Checked here: every moved token costs its KV bytes over the GPU's host link, added to its
step; a swapped request keeps its computed tokens; a full swap space falls back to recompute;
a CPU-tier hit replaces computing by loading; the fast path equals the slow one."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pandas as pd
import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.llm.kv_cache import KVCacheManager
from sim.llm.request import Request
from sim.llm.scheduler import Scheduler, SchedulerConfig
from sim.run import conservation

STEP = 0.01


def swap_scenario(mode: str = "swap", swap_gib: float = 16.0, tp: int = 1, blocks: int = 600) -> dict:
    return {
        "name": "swap",
        "seed": 4,
        "duration_s": 30,
        "pools": [
            {
                "name": "p",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "tensor_parallel_size": tp,
                "engine": {"num_gpu_blocks": blocks, "preemption_mode": mode, "swap_space_gib": swap_gib},
                "cost_model": {"kind": "constant", "step_s": STEP},
            }
        ],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": 4},
                "prompt_tokens": {"dist": "uniform", "low": 500, "high": 2000},
                "output_tokens": {"dist": "uniform", "low": 100, "high": 600},
            }
        ],
    }


def run(raw: dict, seed: int = 0, **kw):
    return simulate(parse_scenario(raw), None, np.random.SeedSequence(seed), **kw)


def host_s_per_token(gpu: str = "h100-sxm", tp: int = 1) -> float:
    link = catalog.get_link(catalog.get_gpu(gpu).host_link)
    per_gpu = catalog.get_model("llama-3-8b").kv_bytes_per_token(2.0, tp)
    return per_gpu / (link.gb_s * link.efficiency * 1e9)


@pytest.mark.parametrize("tp", [1, 2])
def test_every_swapped_token_costs_its_kv_bytes_over_the_host_link(tp):
    """Constant 10 ms steps: the replica's busy time beyond its steps is exactly the swapped
    tokens' KV bytes (per GPU: each rank moves its share on its own link) over PCIe."""
    res = run(swap_scenario(tp=tp))
    df = res.requests
    moved = int(df["swapped_tokens"].sum())
    assert moved > 0 and (df["preemptions"] > 0).any()
    extra = float(res.replicas["busy_s"].sum()) - res.num_steps * STEP
    assert extra == pytest.approx(moved * host_s_per_token(tp=tp), rel=1e-9)
    # A swapped request goes out and comes back with the same tokens: an even count each.
    swapped = df[df["swapped_tokens"] > 0]
    assert (swapped["preemptions"] > 0).all()
    conservation(df)


def test_a_swapped_request_keeps_its_computed_tokens():
    """Two decoding requests fill the cache; the newer is swapped out with its KV (not reset),
    and swapped back in as soon as blocks are free, resuming with one token."""
    kv = KVCacheManager(num_blocks=9, block_size=16)
    sched = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=512, max_model_len=4096), kv)
    sched.swap_capacity_blocks = 100
    a, b = Request(0, 0, 0.0, 64, 40), Request(1, 0, 0.0, 64, 8)
    sched.add_request(a)
    sched.add_request(b)
    moved, steps = [], 0
    while sched.has_unfinished_requests() and steps < 500:
        out = sched.schedule()
        moved.append((out.host_tokens, [r.request_id for r in out.preempted]))
        sched.update_from_output(out)
        steps += 1
    preempted = [(h, p) for h, p in moved if p]
    assert preempted, "the cache should run short"
    host, victims = preempted[0]
    assert victims == [1]
    assert b.num_preemptions >= 1 and b.num_swapped_tokens > 0
    # Swapped out with its computed tokens and back in with the same: the moves pair up.
    assert sum(h for h, _ in moved) == b.num_swapped_tokens + a.num_swapped_tokens
    assert a.num_output_tokens == 40 and b.num_output_tokens == 8
    assert isinstance(sched.swapped, deque) and not sched.swapped and sched._swap_used == 0


def test_a_full_swap_space_recomputes_as_vllm_v1_does():
    """No swap space: swap mode preempts by recompute, every result as in recompute mode."""
    full = run(swap_scenario("swap", swap_gib=0.0)).requests
    rec = run(swap_scenario("recompute")).requests
    assert (rec["preemptions"] > 0).any()
    pd.testing.assert_frame_equal(full, rec)


@pytest.mark.parametrize("mode", ["swap", "recompute"])
def test_swapping_runs_equal_the_slow_path_and_reproduce(mode):
    raw = swap_scenario(mode)
    raw["pools"][0]["cost_model"] = {"kind": "roofline"}
    fast = run(raw, seed=2).requests
    pd.testing.assert_frame_equal(fast, run(raw, seed=2).requests)
    pd.testing.assert_frame_equal(fast, run(raw, seed=2, decode_spans=False).requests)


def prefix_trace(tmp_path) -> str:
    """Request 0 has a 4-block (2,048-token) prefix; 30 unrelated prompts follow and push it out
    of a small GPU cache; request 31 repeats the prefix."""
    rows = [{"timestamp": 0, "input_length": 2560, "output_length": 4, "hash_ids": [1, 2, 3, 4, 5]}]
    for i in range(30):
        rows.append(
            {
                "timestamp": 1000 * (i + 1),
                "input_length": 2560,
                "output_length": 4,
                "hash_ids": [100 + 5 * i + j for j in range(5)],
            }
        )
    rows.append({"timestamp": 40_000, "input_length": 2560, "output_length": 4, "hash_ids": [1, 2, 3, 4, 99]})
    path = tmp_path / "prefix.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def tier_scenario(path: str, cpu_gib: float) -> dict:
    return {
        "name": "tier",
        "pools": [
            {
                "name": "p",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "engine": {"num_gpu_blocks": 1000, "kv_offloading_size": cpu_gib},
                "cost_model": {"kind": "constant", "step_s": STEP, "prefill_token_s": 1e-5},
            }
        ],
        "classes": [{"name": "c", "pool": "p", "trace": {"path": path, "format": "mooncake"}}],
    }


def test_a_prefix_the_gpu_evicted_is_loaded_from_the_cpu_tier(tmp_path):
    path = prefix_trace(tmp_path)
    without = run(tier_scenario(path, 0.0)).requests.set_index("request_id")
    with_tier = run(tier_scenario(path, 8.0)).requests.set_index("request_id")
    last = with_tier.index.max()
    shared = 4 * 512
    assert without.loc[last, "cached_tokens"] == 0  # evicted from the GPU: computed again
    assert with_tier.loc[last, "cpu_hit_tokens"] == shared
    assert with_tier.loc[last, "cached_tokens"] == shared
    # Its first step computes the 512 new tokens and loads the 2,048 from host memory.
    load_s = shared * host_s_per_token()
    assert with_tier.loc[last, "ttft_s"] == pytest.approx(STEP + 512 * 1e-5 + load_s, rel=1e-9)
    assert without.loc[last, "ttft_s"] == pytest.approx(STEP + 2560 * 1e-5, rel=1e-9)
    # Everything else is the same.
    others = with_tier.drop(index=last).drop(columns=["swapped_tokens", "cpu_hit_tokens"])
    pd.testing.assert_frame_equal(
        others, without.drop(index=last).drop(columns=["swapped_tokens", "cpu_hit_tokens"], errors="ignore")
    )


def test_cpu_tier_runs_equal_the_slow_path():
    raw = {
        "name": "tier-mooncake",
        "seed": 5,
        "num_requests": 300,
        "pools": [
            {
                "name": "p",
                "model": "qwen2.5-7b",
                "gpu": "h100-sxm",
                "replicas": 2,
                "router": "least_outstanding",
                "engine": {"max_num_seqs": 64, "num_gpu_blocks": 8000, "kv_offloading_size": 16},
            }
        ],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "trace": {"path": "builtin:mooncake_conversation_sample.jsonl", "format": "mooncake"},
            }
        ],
    }
    fast = run(raw).requests
    assert fast["cpu_hit_tokens"].sum() > 0
    pd.testing.assert_frame_equal(fast, run(raw, decode_spans=False).requests)


def test_a_cpu_tier_needs_prefix_caching():
    raw = swap_scenario("recompute")
    raw["pools"][0]["engine"].update(kv_offloading_size=8, enable_prefix_caching=False)
    with pytest.raises(
        ConfigError, match="kv_offloading_size needs the continuous scheduler and enable_prefix_caching"
    ):
        parse_scenario(raw)
