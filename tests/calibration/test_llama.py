"""The random-weight Llama-family replica: catalog shapes, KV cache, and a packed step that agrees
with itself however a sequence is split into steps, and with a plain full-attention reference."""

import pytest

torch = pytest.importorskip("torch")

import yaml  # noqa: E402

from calibration.configs import MODELS_YAML, LlamaConfig, llm_config, llm_models  # noqa: E402
from calibration.models.llama import KVCache, LlamaModel, SeqSlice, attend  # noqa: E402

TINY = LlamaConfig(
    name="test-tiny", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
    intermediate_size=128, vocab_size=101, qkv_bias=False, tie_word_embeddings=False, max_position_embeddings=64,
)  # fmt: skip
QWEN_LIKE = LlamaConfig(
    name="test-qwen", num_layers=2, hidden_size=48, num_heads=6, num_kv_heads=2, head_dim=8,
    intermediate_size=96, vocab_size=50, qkv_bias=True, tie_word_embeddings=True, max_position_embeddings=64,
)  # fmt: skip


@pytest.fixture
def model():
    """TINY with weights large enough (std 0.2) that attention is far from uniform: otherwise
    wrong positions or masks would barely move the outputs and the comparisons would prove little."""
    torch.manual_seed(0)
    m = LlamaModel(TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.2)
    return m


def tokens(n, seed=1):
    return torch.randint(0, TINY.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def run(model, cache, ids, seqs):
    """Hidden states [n, d] of one step (writes the cache like ``step``)."""
    with torch.inference_mode():
        return model(ids, seqs, cache)


def reference(model, ids, positions):
    """Full causal attention over one sequence, with RoPE as complex rotation of (x_i, x_{i+h/2})
    pairs and K/V heads repeated: written apart from the module's own rotate-half and SDPA path."""
    cfg, h = model.cfg, model.cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, h, 2).float() / h)
    rot = torch.polar(torch.ones(len(ids), h // 2), positions[:, None].float() * inv_freq)  # [n, h/2]

    def rope(t):  # [n, heads, h]
        z = torch.complex(t[..., : h // 2], t[..., h // 2 :]) * rot[:, None, :]
        return torch.cat((z.real, z.imag), dim=-1)

    x = model.embed_tokens(ids)
    n = len(ids)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for layer in model.layers:
        qkv = layer.qkv_proj(layer.input_layernorm(x))
        q, k, v = qkv.split([cfg.num_heads * h, cfg.num_kv_heads * h, cfg.num_kv_heads * h], dim=-1)
        q, k = rope(q.view(n, cfg.num_heads, h)), rope(k.view(n, cfg.num_kv_heads, h))
        group = cfg.num_heads // cfg.num_kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.view(n, cfg.num_kv_heads, h).repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / h**0.5
        probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        x = layer.post_attention(x, torch.einsum("hqk,khd->qhd", probs, v).reshape(n, -1))
    return x


# -- configs --------------------------------------------------------------------------------------


def test_every_catalog_llm_loads_with_its_parameter_count():
    catalog = yaml.safe_load(MODELS_YAML.read_text())["models"]
    dense = [name for name, m in catalog.items() if not m.get("num_experts")]
    assert llm_models() == dense and "llama-tiny" in dense and len(dense) < len(catalog)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        llm_config("mixtral-8x7b")
    for name in llm_models():
        cfg = llm_config(name)
        assert cfg.params_total() == pytest.approx(catalog[name]["num_parameters"], rel=0.02), name
        assert cfg.kv_bytes_per_token(2) == 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama-3-8b"])
def test_module_has_the_parameters_the_formula_counts(name):
    cfg = llm_config(name)
    m = LlamaModel(cfg, device=torch.device("meta"))
    assert sum(p.numel() for p in m.parameters()) == cfg.params_total()
    layer = m.layers[0]
    assert sum(p.numel() for p in layer.parameters()) == cfg.params_per_layer()
    assert (m.lm_head.weight is m.embed_tokens.weight) == cfg.tie_word_embeddings


def test_unknown_model_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: .*llama-tiny"):
        llm_config("gpt-9")


# -- KV cache -------------------------------------------------------------------------------------


def test_kv_cache_allocate_free_and_capacity():
    cache = KVCache(TINY, torch.float32, "cpu")
    cache.allocate(7, 10)
    assert cache.has(7) and cache.capacity(7) == 10
    assert cache.bytes_allocated == 10 * TINY.kv_bytes_per_token(4)
    with pytest.raises(ValueError, match="already"):
        cache.allocate(7, 5)
    with pytest.raises(ValueError, match="capacity"):
        cache.allocate(8, 0)
    with pytest.raises(ValueError, match="exceed"):
        cache.fill_random(7, 11)
    cache.fill_random(7, 10)
    m = LlamaModel(TINY)
    with pytest.raises(ValueError, match="exceed"):
        m.step(tokens(2), [SeqSlice(7, num_new=2, num_cached=9)], cache)
    cache.free(7)
    assert not cache.has(7) and cache.bytes_allocated == 0
    with pytest.raises(KeyError):
        cache.free(7)


def test_short_stack_uses_a_short_cache():
    m = LlamaModel(TINY, num_layers=1)
    assert m.num_layers == len(m.layers) == 1
    cache = KVCache(TINY, torch.float32, "cpu", num_layers=1)
    cache.allocate(0, 4)
    cache.fill_random(0, 3)
    assert m.step(tokens(1), [SeqSlice(0, num_new=1, num_cached=3)], cache).shape == (1,)
    with pytest.raises(ValueError, match="layers"):
        LlamaModel(TINY).step(tokens(1), [SeqSlice(0, num_new=1, num_cached=3)], cache)


# -- one step, however it is split ------------------------------------------------------------------


def test_prefill_matches_full_attention_reference(model):
    ids = tokens(8)
    cache = KVCache(TINY, torch.float32, "cpu")
    cache.allocate(0, 8)
    got = run(model, cache, ids, [SeqSlice(0, num_new=8, num_cached=0)])
    with torch.inference_mode():
        torch.testing.assert_close(got, reference(model, ids, torch.arange(8)), rtol=1e-4, atol=1e-5)
        # the comparison can see a wrong rotary position
        assert not torch.allclose(got, reference(model, ids, torch.zeros(8, dtype=torch.long)), atol=1e-2)


def test_chunked_prefill_equals_one_prefill(model):
    ids = tokens(8)
    whole, chunked = KVCache(TINY, torch.float32, "cpu"), KVCache(TINY, torch.float32, "cpu")
    whole.allocate(0, 8)
    chunked.allocate(0, 8)
    one = run(model, whole, ids, [SeqSlice(0, num_new=8, num_cached=0)])
    run(model, chunked, ids[:5], [SeqSlice(0, num_new=5, num_cached=0)])
    two = run(model, chunked, ids[5:], [SeqSlice(0, num_new=3, num_cached=5)])
    torch.testing.assert_close(two, one[5:], rtol=1e-4, atol=1e-5)
    assert model.positions([SeqSlice(0, num_new=3, num_cached=5)]).tolist() == [5, 6, 7]


def test_decode_equals_prefill_of_the_extended_sequence(model):
    ids = tokens(6)
    cache = KVCache(TINY, torch.float32, "cpu")
    cache.allocate(0, 7)
    cache.allocate(1, 7)
    first = model.step(ids, [SeqSlice(0, num_new=6, num_cached=0)], cache)
    decoded = run(model, cache, first, [SeqSlice(0, num_new=1, num_cached=6)])
    extended = run(model, cache, torch.cat((ids, first)), [SeqSlice(1, num_new=7, num_cached=0)])
    torch.testing.assert_close(decoded, extended[-1:], rtol=1e-4, atol=1e-5)
    assert first.dtype == torch.int64


def test_mixed_batch_equals_each_sequence_alone(model):
    # sequence 0: a fresh 5-token prefill; 1: a decode after 4 tokens; 2: a 4-token chunk after 3
    history = {1: tokens(4, seed=2), 2: tokens(3, seed=3)}
    seqs = [
        SeqSlice(0, num_new=5, num_cached=0),
        SeqSlice(1, num_new=1, num_cached=4),
        SeqSlice(2, num_new=4, num_cached=3),
    ]
    new = [tokens(5, seed=4), tokens(1, seed=5), tokens(4, seed=6)]
    batched, alone = KVCache(TINY, torch.float32, "cpu"), KVCache(TINY, torch.float32, "cpu")
    for cache in (batched, alone):
        for s in seqs:
            cache.allocate(s.seq_id, 8)
        for seq_id, ids in history.items():
            model.step(ids, [SeqSlice(seq_id, num_new=len(ids), num_cached=0)], cache)

    together = model.step(torch.cat(new), seqs, batched)
    one_by_one = torch.cat([model.step(ids, [s], alone) for ids, s in zip(new, seqs)])
    assert together.tolist() == one_by_one.tolist()
    # every row's final hidden state, not just the sampled ids (rerunning rewrites the same K/V)
    hidden = run(model, batched, torch.cat(new), seqs)
    torch.testing.assert_close(
        hidden, torch.cat([run(model, alone, ids, [s]) for ids, s in zip(new, seqs)]), rtol=1e-4, atol=1e-5
    )


def test_gqa_shapes_with_qkv_bias():
    cfg = QWEN_LIKE
    m = LlamaModel(cfg)
    layer = m.layers[0]
    assert layer.qkv_proj.bias is not None and m.lm_head.weight is m.embed_tokens.weight
    n, h = 5, cfg.head_dim
    x = torch.randn(n, cfg.hidden_size)
    seqs = [SeqSlice(3, num_new=2, num_cached=4), SeqSlice(9, num_new=3, num_cached=0)]
    cache = KVCache(cfg, torch.float32, "cpu")
    cache.allocate(3, 6)
    cache.fill_random(3, 4)
    cache.allocate(9, 3)
    with torch.inference_mode():
        q, k, v = layer.pre_attention(x, *m.rope(m.positions(seqs)))
        assert q.shape == (n, cfg.num_heads, h) and k.shape == v.shape == (n, cfg.num_kv_heads, h)
        out = attend(q, k, v, seqs, cache, layer=0)
        assert out.shape == (n, cfg.num_heads * h)
        assert layer.post_attention(x, out).shape == (n, cfg.hidden_size)
    assert m.step(torch.zeros(n, dtype=torch.long), seqs, cache).shape == (2,)
