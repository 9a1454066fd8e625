"""Mixture-of-experts LLMs (issue 21, item 2, first slice): memory holds every expert, a token
computes with its top-k, and a step streams the experts its tokens touch, so decode cost rises
with the batch far more than a dense model's."""

from __future__ import annotations

import numpy as np
import pytest

from sim import catalog
from sim.catalog import llm_from_hf_config
from sim.config import EngineConfig
from sim.costs.base import StepShape
from sim.costs.roofline import RooflineCostModel
from sim.errors import ConfigError
from sim.llm.memory import kv_budget

H100 = catalog.get_gpu("h100-sxm")


@pytest.mark.parametrize("name,active_b", [("mixtral-8x7b", 12.9), ("qwen3-30b-a3b", 3.3)])
def test_active_parameters_are_the_published_ones(name, active_b):
    """Published "active" counts include the input embeddings."""
    m = catalog.get_model(name)
    assert (m.params_active + m.vocab_size * m.hidden_size) / 1e9 == pytest.approx(active_b, rel=0.02)
    assert m.params_total == pytest.approx(m.num_parameters, rel=1e-3)


@pytest.mark.parametrize("experts,k", [(8, 2), (128, 8), (64, 6)])
def test_distinct_experts_is_the_expectation_of_top_k_routing(experts, k):
    """Theory against sampling: tokens each choosing k of E experts uniformly without
    replacement touch E (1 - (1 - k/E)^n) distinct experts on average; the sample mean over
    2,000 draws lies within 4 standard errors."""
    m = catalog.get_model("mixtral-8x7b").model_copy(update={"num_experts": experts, "num_experts_per_tok": k})
    rng = np.random.default_rng(0)
    for tokens in (1, 3, 16, 200):
        counts = [
            len({int(e) for _ in range(tokens) for e in rng.choice(experts, size=k, replace=False)})
            for _ in range(2000)
        ]
        mean, se = np.mean(counts), np.std(counts) / np.sqrt(len(counts))
        assert abs(m.distinct_experts(tokens) - mean) <= 4 * se + 1e-6
    assert m.distinct_experts(1) == pytest.approx(k) and m.distinct_experts(10_000) == pytest.approx(experts)


def _decode(batch: int, ctx: int = 1000) -> StepShape:
    s = StepShape()
    for _ in range(batch):
        s.add_decode(ctx)
    return s


def test_decode_cost_grows_with_the_experts_the_batch_touches():
    moe = RooflineCostModel(catalog.get_model("mixtral-8x7b"), H100, tp=2)
    dense = RooflineCostModel(catalog.get_model("llama-3-70b"), H100, tp=2)
    m = catalog.get_model("mixtral-8x7b")
    # The weights a step reads: the always-read part plus the experts touched, exactly.
    for batch in (1, 4, 64):
        assert moe.weights_s(batch) == pytest.approx(
            moe.weights_s(0) + moe._expert_s * m.distinct_experts(batch), rel=1e-12
        )
    assert moe.weights_s(64) / moe.weights_s(1) > 3.0  # 2 of 8 experts at batch 1, all 8 at 64
    assert dense.weights_s(64) == dense.weights_s(1)
    growth_moe = moe.step_s(_decode(64)) / moe.step_s(_decode(1))
    growth_dense = dense.step_s(_decode(64)) / dense.step_s(_decode(1))
    assert growth_moe > 2.0 > 1.5 > growth_dense
    # Compute per token is the active parameters': a long prefill costs about what a dense
    # model of the active size would, far below one of the total size.
    prefill = StepShape()
    prefill.add_prefill(8192, 0)
    assert moe.step_s(prefill) < 0.5 * dense.step_s(prefill)


def test_memory_holds_every_expert():
    m = catalog.get_model("mixtral-8x7b")
    budget = kv_budget(m, H100, EngineConfig(), 2)
    assert budget.weight_bytes == pytest.approx(2.0 * m.params_total / 2, rel=1e-12)
    with pytest.raises(Exception, match="does not fit"):
        kv_budget(m, H100, EngineConfig(), 1)  # 93 GB of bf16 experts on one 80 GB GPU


def test_moe_configs_are_read_deepseek_with_mla_and_sparse_attention_refused():
    mixtral = {
        "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 32000, "max_position_embeddings": 32768,
        "num_local_experts": 8, "num_experts_per_tok": 2,
    }  # fmt: skip
    fields = llm_from_hf_config(mixtral, "m")
    assert (fields["num_experts"], fields["num_experts_per_tok"]) == (8, 2)
    qwen = {
        **mixtral,
        "num_local_experts": None,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
    }
    assert llm_from_hf_config(qwen, "q")["moe_intermediate_size"] == 768
    # DeepSeek-V3's config.json gives the catalog entry's shapes.
    deepseek = {
        "num_hidden_layers": 61, "hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128,
        "intermediate_size": 18432, "vocab_size": 129280, "max_position_embeddings": 163840,
        "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1, "first_k_dense_replace": 3,
        "moe_intermediate_size": 2048, "moe_layer_freq": 1, "kv_lora_rank": 512, "q_lora_rank": 1536,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "tie_word_embeddings": False,
    }  # fmt: skip
    shipped = catalog.get_model("deepseek-v3")
    read = catalog.ModelSpec(
        **{**llm_from_hf_config(deepseek, "d"), "name": "d", "display_name": "d", "hf_id": "", "source": "",
           "qkv_bias": False, "num_parameters": 1.0}
    )  # fmt: skip
    assert (read.params_total, read.params_active, read.kv_bytes_per_token(2.0)) == (
        shipped.params_total,
        shipped.params_active,
        shipped.kv_bytes_per_token(2.0),
    )
    with pytest.raises(ConfigError, match="sparse attention"):
        llm_from_hf_config({**deepseek, "index_topk": 2048}, "d32")
