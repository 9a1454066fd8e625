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
    o = gpu.overheads
    return o.step_s + o.per_layer_s * model.num_layers + o.per_seq_s * seqs


def test_single_decode_is_weight_streaming_bound():
    m, g = catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm")
    cm = RooflineCostModel(m, g)
    bw = g.hbm_tb_s * 1e12 * g.efficiency.bandwidth
    weights = 2 * m.params_active / bw
    kv = m.kv_bytes_per_token(2) * 1025 / bw
    assert cm.step_s(shape([1024])) == pytest.approx(overheads(g, m, 1) + weights + kv, rel=1e-9)


def test_long_prefill_is_compute_bound():
    m, g = catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm")
    cm = RooflineCostModel(m, g)
    flops = g.bf16_tflops * 1e12 * g.efficiency.compute
    p = 4096
    linear = (2 * p * m.num_layers * m.params_per_layer + 2 * m.hidden_size * m.vocab_size) / flops
    attn = 4 * m.num_layers * m.num_attention_heads * m.head_dim * (p * (p + 1) / 2) / flops
    assert cm.step_s(shape(prefills=[(p, 0)])) == pytest.approx(overheads(g, m, 1) + linear + attn, rel=1e-9)


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
