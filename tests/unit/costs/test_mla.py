"""DeepSeek-V3: multi-head latent attention (MLA) and dense first layers in a mixture of experts.
Checked against the published counts and forms (DeepSeek-V2 and V3 technical reports): total and
active parameters; a token's KV cache is one latent and one rotary key per layer, held whole by
every tensor-parallel rank; only the MoE layers' experts are streamed by routing; decode attention
on the latent is compute-bound where a grouped-query model's is bound by reading its cache."""

from __future__ import annotations

import pytest

from sim import catalog
from sim.config import EngineConfig
from sim.costs.base import StepShape
from sim.costs.roofline import RooflineCostModel
from sim.errors import CapacityError
from sim.llm.memory import kv_budget

DS = "deepseek-v3"


def test_parameters_match_the_published_counts():
    m = catalog.get_model(DS)
    assert m.params_total == pytest.approx(671e9, rel=1e-3)  # without the 14B MTP module
    assert m.params_active == pytest.approx(37e9, rel=0.02)
    assert m.moe_layers == 58 and m.first_k_dense_replace == 3
    # Per layer: MLA attention and norms; three dense layers, 58 with 256 + 1 experts and a router.
    d = m.hidden_size
    dense = m.attention_params_per_layer + 3 * d * m.intermediate_size
    moe = m.attention_params_per_layer + 257 * m.expert_params + d * 256
    assert m.block_params == 3 * dense + 58 * moe


def test_a_token_keeps_one_latent_and_one_rotary_key_per_layer_on_every_rank():
    m = catalog.get_model(DS)
    per_token = 61 * (512 + 64)
    for tp in (1, 4, 8):
        assert m.kv_bytes_per_token(2.0, tp) == 2 * per_token
    # Against the heads it stands for (128 keys and values of 128 + 64 and 128 wide):
    mha = 61 * 128 * ((128 + 64) + 128)
    assert per_token / mha == pytest.approx(576 / 40960)


def test_only_the_moe_layers_experts_are_streamed_by_routing():
    m = catalog.get_model(DS)
    gpu = catalog.get_gpu("h200")
    rf = RooflineCostModel(m, gpu, tp=8, weight_bytes=1.0, kv_bytes=1.0)
    one_expert_s = 58 * m.expert_params / 8 / (gpu.hbm_tb_s * 1e12 * gpu.efficiency.bandwidth)
    for tokens in (1, 16, 256):
        extra = rf.weights_s(tokens) - rf.weights_s(0)
        assert extra == pytest.approx(m.distinct_experts(tokens) * one_expert_s, rel=1e-12)


def test_latent_decode_attention_is_compute_bound_on_one_rank_and_memory_bound_when_split():
    """On one GPU the latent serves all 128 heads: decode attention is compute-bound (FlashMLA's
    regime). Tensor parallelism splits the heads but every rank still reads the whole latent, so
    at TP8 it reads as much as one GPU did for an eighth of the work: memory-bound. A
    grouped-query model's decode attention reads its cache at any TP degree."""
    gpu = catalog.get_gpu("h200")
    ds = catalog.get_model(DS)
    assert ds.attention_flops_per_pair(decode=True) == 128 * (4 * 512 + 2 * 64)
    assert ds.attention_flops_per_pair(decode=False) == 2 * 128 * (128 + 64 + 128)
    eff = gpu.efficiency.attention_compute or gpu.efficiency.compute
    for name, tp, bound in (
        (DS, 1, "compute"),
        (DS, 8, "memory"),
        ("llama-3-70b", 1, "memory"),
        ("llama-3-70b", 8, "memory"),
    ):
        rf = RooflineCostModel(catalog.get_model(name), gpu, tp=tp, weight_bytes=1.0, kv_bytes=1.0)
        flops_s = (
            rf.model.num_layers * rf.model.attention_flops_per_pair(decode=True) / tp / (gpu.bf16_tflops * 1e12 * eff)
        )
        assert (flops_s > rf._kv_s_per_token) == (bound == "compute"), (name, tp)
        assert rf._dec_attn_s_per_pair == pytest.approx(max(flops_s, rf._kv_s_per_token), rel=1e-12)
    # A decode step at a long context costs more attention than the short one, all else equal.
    rf = RooflineCostModel(ds, gpu, tp=8, weight_bytes=1.0, kv_bytes=1.0)
    short, long = StepShape(), StepShape()
    short.add_decode(1000)
    long.add_decode(64_000)
    assert rf.step_s(long) - rf.step_s(short) == pytest.approx(63_000 * rf._dec_attn_s_per_pair, rel=1e-9)


def test_fp8_deepseek_v3_fits_eight_h200s_not_eight_h100s():
    m = catalog.get_model(DS)
    engine = EngineConfig(dtype="fp8")
    budget = kv_budget(m, catalog.get_gpu("h200"), engine, 8)
    assert budget.weight_bytes == pytest.approx(m.block_params / 8 + 2 * m.vocab_size * m.hidden_size / 8)
    assert budget.num_gpu_blocks > 0
    with pytest.raises(CapacityError):
        kv_budget(m, catalog.get_gpu("h100-sxm"), engine, 8)
