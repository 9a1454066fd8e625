"""Roofline step costs against hand-computed floors from the model config and datasheet."""

import pytest

from sim import catalog
from sim.costs import ConstantCostModel, RooflineCostModel, StepShape


def shape(decodes=(), prefills=()):
    s = StepShape()
    for ctx in decodes:
        s.add_decode(ctx)
    for new, cached in prefills:
        s.add_prefill(new, cached)
    return s


def overheads(gpu, model, seqs):
    """Host overheads plus every kernel's least duration (4 GEMMs and 5 elementwise kernels a
    layer, and the LM head)."""
    o, e = gpu.overheads, gpu.efficiency
    kernels = model.num_layers * (4 * e.gemm_kernel_s + 5 * e.elementwise_kernel_s) + e.gemm_kernel_s
    return o.step_s + o.per_layer_s * model.num_layers + o.per_seq_s * seqs + kernels


def elementwise(gpu, model, tokens):
    d, f, qk = (
        model.hidden_size,
        model.intermediate_size,
        (model.num_attention_heads + model.num_key_value_heads) * model.head_dim,
    )
    per_token = 2 * (7 * d + 2 * qk + 3 * f)  # bytes a token moves through a layer's elementwise kernels
    return model.num_layers * per_token * tokens / (gpu.hbm_tb_s * 1e12 * gpu.efficiency.elementwise_bandwidth)


def test_single_decode_is_weight_streaming_bound():
    """One decode: the weights stream once (its compute, 2 FLOPs a weight, overlaps them only
    partly), then the KV cache is read."""
    m, g = catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm")
    cm = RooflineCostModel(m, g)
    e = g.efficiency
    weights = 2 * m.params_active / (g.hbm_tb_s * 1e12 * e.bandwidth)
    compute = (
        2 * (m.num_layers * m.params_per_layer + m.hidden_size * m.vocab_size) / (g.bf16_tflops * 1e12 * e.compute)
    )
    gemms = (weights**e.overlap + compute**e.overlap) ** (1 / e.overlap)
    assert weights < gemms < 1.01 * weights
    kv = m.kv_bytes_per_token(2) * 1025 / (g.hbm_tb_s * 1e12 * e.attention_bandwidth)
    assert cm.step_s(shape([1024])) == pytest.approx(overheads(g, m, 1) + gemms + elementwise(g, m, 1) + kv, rel=1e-9)


def test_long_prefill_is_compute_bound():
    m, g = catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm")
    cm = RooflineCostModel(m, g)
    e = g.efficiency
    p = 4096
    compute = (2 * p * m.num_layers * m.params_per_layer + 2 * m.hidden_size * m.vocab_size) / (
        g.bf16_tflops * 1e12 * e.compute
    )
    weights = 2 * m.params_active / (g.hbm_tb_s * 1e12 * e.bandwidth)
    gemms = (weights**e.overlap + compute**e.overlap) ** (1 / e.overlap)
    assert compute < gemms < 1.05 * compute
    attn = (
        4
        * m.num_layers
        * m.num_attention_heads
        * m.head_dim
        * (p * (p + 1) / 2)
        / (g.bf16_tflops * 1e12 * e.attention_compute)
    )
    assert cm.step_s(shape(prefills=[(p, 0)])) == pytest.approx(
        overheads(g, m, 1) + gemms + elementwise(g, m, p) + attn, rel=1e-9
    )


def test_overlap_is_the_sum_at_one_and_the_max_when_large():
    from sim.costs.roofline import overlapped

    assert overlapped(2.0, 3.0, 1.0) == pytest.approx(5.0)
    assert overlapped(2.0, 3.0, 1000.0) == pytest.approx(3.0, rel=1e-3)
    assert overlapped(3.0, 3.0, 2.0) == pytest.approx(3.0 * 2**0.5)
    assert overlapped(0.0, 0.0, 1.3) == 0.0 and overlapped(1e-300, 1e-300, 1000.0) > 0


def test_decode_line_agrees_with_step_s_and_costs_grow():
    m, g = catalog.get_model("qwen2.5-7b"), catalog.get_gpu("a100-80gb")
    cm = RooflineCostModel(m, g)
    for b in (1, 7, 64, 256):
        line = cm.decode_line(b)
        ctxs = [300 + 11 * i for i in range(b)]
        assert line.step_s(sum(ctxs)) == pytest.approx(cm.step_s(shape(ctxs)), rel=1e-12)
    assert cm.step_s(shape([1000] * 64)) > cm.step_s(shape([1000] * 8))
    assert cm.step_s(shape([4000] * 8)) > cm.step_s(shape([1000] * 8))
    # Decodes piggyback on a prefill chunk: a mixed step costs less than the two apart.
    mixed = cm.step_s(shape([1000] * 32, [(512, 0)]))
    assert mixed < cm.step_s(shape([1000] * 32)) + cm.step_s(shape(prefills=[(512, 0)]))


def test_faster_gpu_is_faster_and_fp8_halves_weight_time():
    m = catalog.get_model("llama-3-8b")
    s = shape([2000] * 16)
    h100 = RooflineCostModel(m, catalog.get_gpu("h100-sxm")).step_s(s)
    h200 = RooflineCostModel(m, catalog.get_gpu("h200")).step_s(s)
    a100 = RooflineCostModel(m, catalog.get_gpu("a100-80gb")).step_s(s)
    assert h200 < h100 < a100
    g = catalog.get_gpu("h100-sxm")
    bf16 = RooflineCostModel(m, g)
    fp8 = RooflineCostModel(m, g, weight_bytes=1)
    assert fp8._weights_s == pytest.approx(bf16._weights_s / 2)


def test_constant_model():
    cm = ConstantCostModel(0.01, prefill_token_s=1e-5, decode_seq_s=1e-4)
    assert cm.step_s(shape([5, 6], [(100, 0)])) == pytest.approx(0.01 + 1e-3 + 2e-4)
    assert cm.decode_line(3).step_s(12345) == pytest.approx(0.01 + 3e-4)
