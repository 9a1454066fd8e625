"""Expert parallelism, data-parallel attention, sliding-window layers and MXFP4 experts (issue
21, item 2): each GPU holds whole experts and a step waits for the busiest; attention groups
keep their own requests' KV, so an MLA model's cache grows with the groups while a GQA
model's does not; tokens cross to their experts and back by all-to-alls; windowed layers read
a window, not the context; gpt-oss's experts are 4.25-bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sim import catalog
from sim.config import EngineConfig, PoolConfig
from sim.costs.base import StepShape
from sim.costs.factory import build_cost_model
from sim.costs.roofline import EP_ALLTOALL_EFFICIENCY, RooflineCostModel
from sim.fleet.pools import pool_kv_budget
from sim.llm.memory import kv_budget, weight_bytes

H200 = catalog.get_gpu("h200")
H100 = catalog.get_gpu("h100-sxm")


def _pool(model: str, gpu: str, tp: int, **engine) -> PoolConfig:
    return PoolConfig(
        name="p", model=model, gpu=gpu, tensor_parallel_size=tp, engine={"max_model_len": 16384, **engine}
    )


def _decode(cost, batch: int, ctx: int) -> float:
    shape = StepShape()
    for _ in range(batch):
        shape.add_decode(ctx)
    return cost.step_s(shape)


@pytest.mark.parametrize("experts,k,gpus", [(256, 8, 8), (128, 4, 4), (16, 1, 8), (256, 8, 32)])
def test_busiest_gpu_load_matches_sampled_routing(experts, k, gpus):
    """Theory against sampling: T tokens each route to k distinct experts of E uniformly, the
    experts laid out E/N per GPU; the mean over 400 draws (60 for large batches) of (largest GPU load / mean load)
    agrees with the cost model's factor within 6 % for every batch from 8 to 2,048 tokens."""
    model = catalog.get_model("deepseek-v3").model_copy(update={"num_experts": experts, "num_experts_per_tok": k})
    cost = RooflineCostModel(model, H200, tp=gpus, weight_bytes=1.0, expert_parallel=True)
    rng = np.random.default_rng(1)
    owner = np.arange(experts) * gpus // experts
    for tokens in (8, 64, 512, 2048):
        ratios = []
        for _ in range(400 if tokens <= 64 else 60):
            top = np.argpartition(rng.random((tokens, experts)), k, axis=1)[:, :k]  # k distinct each
            ratios.append(np.bincount(owner[top].ravel(), minlength=gpus).max() / (tokens * k / gpus))
        sampled = float(np.mean(ratios))
        assert cost.expert_load_factor(tokens) == pytest.approx(sampled, rel=0.06), (tokens, sampled)


def test_expert_parallel_changes_only_the_routed_compute():
    """Whole experts per GPU hold and stream the same bytes as slices of every expert; only the
    routed matrix products wait for the busiest GPU, so a compute-bound prefill is slower by
    about the imbalance and a weight-bound decode of one token barely changes."""
    tp, ep = (
        _pool("deepseek-v3", "h200", 8, dtype="fp8"),
        _pool("deepseek-v3", "h200", 8, dtype="fp8", expert_parallel=True),
    )
    assert pool_kv_budget(tp) == pool_kv_budget(ep)
    c_tp, c_ep = build_cost_model(tp), build_cost_model(ep)
    assert _decode(c_ep, 1, 1000) == pytest.approx(_decode(c_tp, 1, 1000), rel=1e-3)
    pre = StepShape()
    pre.add_prefill(4096, 0)
    assert c_ep.step_s(pre) > c_tp.step_s(pre)
    skewed = build_cost_model(
        _pool("deepseek-v3", "h200", 8, dtype="fp8", expert_parallel=True, expert_load_imbalance=2)
    )
    assert skewed.step_s(pre) > c_ep.step_s(pre)


def test_data_parallel_attention_multiplies_an_mla_cache_but_not_a_gqa_one():
    """MLA keeps one latent per token that tensor-parallel ranks all hold, so eight attention
    groups of one GPU hold eight times the tokens per GPU of memory left; GQA's KV heads are
    split by TP anyway, so groups hold no more per byte (fewer: attention weights are
    replicated)."""
    mla_tp = pool_kv_budget(_pool("deepseek-v3", "h200", 8, dtype="fp8"))
    mla_dp = pool_kv_budget(
        _pool("deepseek-v3", "h200", 8, dtype="fp8", expert_parallel=True, attention_data_parallel=8)
    )
    assert mla_dp.kv_bytes_per_token == mla_tp.kv_bytes_per_token  # the latent is whole on every GPU either way
    per_token_block = mla_dp.block_size * mla_dp.kv_bytes_per_token
    assert mla_dp.num_gpu_blocks == 8 * int(mla_dp.usable_bytes // per_token_block)
    assert mla_dp.capacity_tokens > 5 * mla_tp.capacity_tokens
    assert mla_dp.weight_bytes > mla_tp.weight_bytes  # attention weights on every GPU

    gqa_tp = pool_kv_budget(_pool("qwen3-30b-a3b", "h100-sxm", 4))
    gqa_dp = pool_kv_budget(_pool("qwen3-30b-a3b", "h100-sxm", 4, expert_parallel=True, attention_data_parallel=4))
    assert gqa_dp.kv_bytes_per_token == 4 * gqa_tp.kv_bytes_per_token  # 4 KV heads on a GPU, not 1
    assert gqa_dp.capacity_tokens < gqa_tp.capacity_tokens


def test_data_parallel_attention_reads_each_latent_on_one_gpu():
    """A decode's KV read per context token falls by the group count for MLA (each latent is
    read by its own group's GPU, not by all eight), while its attention FLOPs stay split over
    the eight GPUs either way: the time a step adds per context token becomes
    max(the tensor-parallel read / 8, the FLOPs' time), here compute-bound."""
    tp = build_cost_model(_pool("deepseek-v3", "h200", 8, dtype="fp8"))
    dp = build_cost_model(_pool("deepseek-v3", "h200", 8, dtype="fp8", expert_parallel=True, attention_data_parallel=8))

    def per_ctx(cost):
        return (_decode(cost, 64, 9000) - _decode(cost, 64, 1000)) / (64 * 8000)

    model, eff = catalog.get_model("deepseek-v3"), H200.efficiency
    flops_s = model.num_layers * model.attention_flops_per_pair(decode=True) / 8
    flops_s /= H200.bf16_tflops * 1e12 * (eff.attention_compute or eff.compute)
    assert per_ctx(tp) > flops_s  # memory-bound when every GPU reads every latent
    assert per_ctx(dp) == pytest.approx(max(per_ctx(tp) / 8, flops_s), rel=1e-6)
    assert per_ctx(tp) / per_ctx(dp) > 4


def test_all_to_all_time_follows_tokens_experts_and_link():
    """With eight one-GPU attention groups the only traffic between GPUs is the dispatch and
    combine of each expert layer: per step, each GPU sends T/8 tokens to k experts, 7/8 of them
    elsewhere, d bf16 values each way. Halving the link's bandwidth adds exactly that traffic
    at the slower speed."""
    model = catalog.get_model("deepseek-v3")
    slow = H200.model_copy(update={"interconnect_gb_s": H200.interconnect_gb_s / 2})
    kw = dict(tp=8, weight_bytes=1.0, expert_parallel=True, attention_dp=8)
    fast_c, slow_c = RooflineCostModel(model, H200, **kw), RooflineCostModel(model, slow, **kw)
    for tokens in (64, 512):
        per_gpu_bytes = tokens / 8 * model.num_experts_per_tok * 7 / 8 * model.hidden_size * 2
        one_dir = H200.interconnect_gb_s / 2 * 1e9 * EP_ALLTOALL_EFFICIENCY
        extra = 2 * model.moe_layers * per_gpu_bytes * (2 / one_dir - 1 / one_dir)
        assert _decode(slow_c, tokens, 500) - _decode(fast_c, tokens, 500) == pytest.approx(extra, rel=1e-6)


def test_a_prefill_chunk_runs_on_one_attention_group():
    """Requests spread over the groups, but one prompt's chunk is one group's work: a lone
    4,096-token prompt takes longer than eight 512-token prompts in one step, though the
    eight together compute the same tokens and the lone prompt's experts see the same load."""
    dp = build_cost_model(_pool("deepseek-v3", "h200", 8, dtype="fp8", expert_parallel=True, attention_data_parallel=8))
    lone, eight = StepShape(), StepShape()
    lone.add_prefill(4096, 0)
    for _ in range(8):
        eight.add_prefill(512, 0)
    lone_s, eight_s = dp.step_s(lone), dp.step_s(eight)
    assert lone_s > 2 * eight_s


def test_sliding_window_layers_hold_and_read_a_window():
    """gpt-oss alternates 128-token windowed layers with full ones: a token's growing KV is the
    full layers' only (half of a same-shape model without windows), the decode time per context
    token is half, and each running sequence's window is set aside from the cache."""
    oss = catalog.get_model("gpt-oss-120b")
    full = oss.model_copy(update={"sliding_window": 0, "sliding_window_layers": 0})
    assert oss.kv_bytes_per_token(2) == full.kv_bytes_per_token(2) / 2
    c_oss = RooflineCostModel(oss, H100, weight_bytes=2.0, expert_bytes=0.53125)
    c_full = RooflineCostModel(full, H100, weight_bytes=2.0, expert_bytes=0.53125)

    def per_ctx(cost):
        return (_decode(cost, 32, 20000) - _decode(cost, 32, 4000)) / (32 * 16000)

    assert per_ctx(c_oss) == pytest.approx(per_ctx(c_full) / 2, rel=1e-9)
    engine = EngineConfig(dtype="mxfp4", max_num_seqs=64, max_num_batched_tokens=4096)
    b_oss, b_full = kv_budget(oss, H100, engine, 1), kv_budget(full, H100, engine, 1)
    window = 64 * oss.window_kv_bytes_per_seq(2.0, 1, 16)
    assert window == 64 * 18 * 2 * 8 * 64 * 2 * (128 + 16)
    assert b_oss.usable_bytes == pytest.approx(b_full.usable_bytes - window, rel=1e-12)


def test_mxfp4_experts_take_four_and_a_quarter_bits():
    """gpt-oss as shipped: experts in MXFP4 (4-bit values, an 8-bit scale per 32), the rest in
    bf16, which puts the 117B-parameter model on one 80 GB GPU (the model card's claim)."""
    oss = catalog.get_model("gpt-oss-120b")
    bf16, mx = EngineConfig(), EngineConfig(dtype="mxfp4")
    saved = weight_bytes(oss, bf16) - weight_bytes(oss, mx)
    assert saved == pytest.approx((2 - 4.25 / 8) * oss.routed_expert_params, rel=1e-12)
    assert weight_bytes(oss, mx) / 2**30 < 64
    kv_budget(oss, H100, mx, 1)  # fits, with room for KV


@pytest.mark.parametrize(
    "engine,tp,model,message",
    [
        ({"attention_data_parallel": 2}, 2, "deepseek-v3", "needs expert_parallel"),
        ({"expert_parallel": True, "attention_data_parallel": 3}, 8, "deepseek-v3", "must divide"),
        ({"expert_parallel": True}, 2, "llama-3-8b", "is dense"),
        ({"dtype": "mxfp4"}, 1, "llama-3-8b", "is dense"),
        ({"expert_parallel": True}, 16, "deepseek-v3", "across nodes"),
        (
            {"expert_parallel": True, "attention_data_parallel": 2, "preemption_mode": "swap"},
            2,
            "qwen3-30b-a3b",
            "not modelled",
        ),
    ],
)
def test_layouts_that_cannot_be_served_are_refused(engine, tp, model, message):
    with pytest.raises(ValidationError, match=message):
        PoolConfig(name="p", model=model, gpu="h200", tensor_parallel_size=tp, engine=engine)


def test_plan_weighs_the_layouts_as_variants():
    """The plan tries data-parallel attention as a knob variant: on the shipped reasoning
    load its throughput bound (GPU-seconds per request at the largest batch memory allows) is
    lower than tensor-parallel attention's, whose whole-latent-per-rank cache holds fewer
    answers."""
    import yaml

    from sim.config import parse_scenario
    from sim.plan import Settings, bounds, candidates, layouts

    root = Path(__file__).resolve().parents[3]
    raw = yaml.safe_load((root / "scenarios/moe_expert_parallel.yaml").read_text())
    raw["pools"], raw["classes"] = raw["pools"][:1], raw["classes"][:1]
    dp8 = {"engine.expert_parallel": True, "engine.attention_data_parallel": 8}
    raw["plan"] = {"pools": {"tp8": {"variants": [{}, dp8]}}}
    sc = parse_scenario(raw)
    prob = layouts(sc)[0].problems[0]
    tp_c, dp_c = candidates(sc, prob)
    assert dp_c.label["knobs"] == dp8 and dp_c.pool.engine.attention_data_parallel == 8
    for c in (tp_c, dp_c):
        assert bounds(sc, c, prob.classes, Settings.of(sc), root) is None
    assert dp_c.bounds["tp8/gpu_s_per_request"] < tp_c.bounds["tp8/gpu_s_per_request"]
