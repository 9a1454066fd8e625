"""Weight-only int8/int4 quantisation (AWQ/GPTQ, W8A16/W4A16): the bytes a weight takes, the
memory it frees for the KV cache, the weight streaming it shortens, and the compute it leaves
alone. Each test would fail if the physics were wrong."""

from __future__ import annotations

import pytest

from sim import catalog
from sim.config import EngineConfig, parse_scenario
from sim.costs.base import StepShape
from sim.costs.factory import build_cost_model
from sim.errors import CapacityError
from sim.llm.memory import kv_budget

MODEL, GPU = catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm")
BLOCKS = MODEL.num_layers * MODEL.params_per_layer


@pytest.mark.parametrize(
    "dtype,group,expected",
    [("bfloat16", 128, 2.0), ("fp8", 128, 1.0), ("int8", 128, (8 + 24 / 128) / 8), ("int4", 128, (4 + 20 / 128) / 8)],
)
def test_bytes_per_weight_count_the_group_scale_and_zero(dtype, group, expected):
    e = EngineConfig(dtype=dtype, quantization_group_size=group)
    assert e.weight_bytes_per_elem == pytest.approx(expected, rel=1e-12)
    # Larger groups: the scale's share shrinks towards the bare 4 or 8 bits.
    if dtype.startswith("int"):
        bits = 8 if dtype == "int8" else 4
        assert EngineConfig(dtype=dtype, quantization_group_size=65536).weight_bytes_per_elem == pytest.approx(
            bits / 8, rel=1e-3
        )
        assert e.head_bytes_per_elem == 2.0  # embeddings and LM head stay bf16
    else:
        assert e.head_bytes_per_elem == e.weight_bytes_per_elem


def test_quantised_blocks_free_memory_for_the_kv_cache():
    bf16 = kv_budget(MODEL, GPU, EngineConfig(), 1)
    int4 = kv_budget(MODEL, GPU, EngineConfig(dtype="int4"), 1)
    freed = (2.0 - EngineConfig(dtype="int4").weight_bytes_per_elem) * BLOCKS
    assert bf16.weight_bytes - int4.weight_bytes == pytest.approx(freed, rel=1e-12)
    assert int4.usable_bytes - bf16.usable_bytes == pytest.approx(freed, rel=1e-12)
    per_block = bf16.block_size * bf16.kv_bytes_per_token
    assert int4.num_gpu_blocks == int(int4.usable_bytes // per_block)
    assert int4.num_gpu_blocks - bf16.num_gpu_blocks == pytest.approx(freed / per_block, abs=1)


def test_a_70b_model_fits_one_h100_only_in_int4():
    m = catalog.get_model("llama-3-70b")
    with pytest.raises(CapacityError):
        kv_budget(m, GPU, EngineConfig(), 1)
    with pytest.raises(CapacityError):
        kv_budget(m, GPU, EngineConfig(dtype="int8"), 1)
    assert kv_budget(m, GPU, EngineConfig(dtype="int4"), 1).capacity_tokens > 50_000


def _cost(dtype: str, model: str = "llama-3-8b"):
    raw = {
        "name": "q",
        "num_requests": 1,
        "pools": [{"name": "p", "model": model, "gpu": "h100-sxm", "engine": {"dtype": dtype}}],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": 1},
                "prompt_tokens": {"dist": "fixed", "value": 10},
                "output_tokens": {"dist": "fixed", "value": 10},
            }
        ],
    }
    return build_cost_model(parse_scenario(raw).pools[0])


def _decode(batch: int, ctx: int) -> StepShape:
    s = StepShape()
    for _ in range(batch):
        s.add_decode(ctx)
    return s


def _prefill(tokens: int) -> StepShape:
    s = StepShape()
    s.add_prefill(tokens, 0)
    return s


def test_small_batch_decode_streams_fewer_bytes_large_prefill_computes_the_same():
    """Batch-1 decode is bound by reading the weights: int4 reads about a quarter of the block
    weights (the bf16 LM head unchanged), so the step time falls by most of the weights' share.
    An 8,192-token prefill is bound by the matrix products, which run at the bf16 peak either
    way, so it barely moves."""
    bf16, int4, int8 = _cost("bfloat16"), _cost("int4"), _cost("int8")
    q4 = EngineConfig(dtype="int4").weight_bytes_per_elem
    head = MODEL.params_active - BLOCKS
    ratio = (q4 * BLOCKS + 2 * head) / (2 * BLOCKS + 2 * head)
    assert int4._weights_s / bf16._weights_s == pytest.approx(ratio, rel=1e-12)
    d_bf16, d_int4, d_int8 = (c.step_s(_decode(1, 512)) for c in (bf16, int4, int8))
    assert d_int4 < d_int8 < d_bf16
    # What the weights' reading cost at bf16, int4 saves (1 - ratio) of, up to the fixed costs.
    assert d_bf16 - d_int4 == pytest.approx(bf16._weights_s * (1 - ratio), rel=0.05)
    p_bf16, p_int4 = bf16.step_s(_prefill(8192)), int4.step_s(_prefill(8192))
    assert p_int4 <= p_bf16 and p_int4 == pytest.approx(p_bf16, rel=0.02)


def test_int8_is_weight_only_not_fp8():
    """int8 weights are about one byte, like FP8, but W8A16 multiplies at the bf16 peak: its
    compute-bound prefill is slower than FP8's."""
    fp8, int8 = _cost("fp8"), _cost("int8")
    assert int8.step_s(_prefill(8192)) > 1.3 * fp8.step_s(_prefill(8192))
