"""The production-shaped step path: the pooled KV cache, the varlen attention plan, and the
piecewise runner agree with the model's reference step on a CPU (the kernels and the graphs
themselves are CUDA-only; ``ModelRunner.check`` compares them on the device before serving)."""

import pytest

torch = pytest.importorskip("torch")

from calibration.configs import LlamaConfig  # noqa: E402
from calibration.models import llama  # noqa: E402
from calibration.models.llama import KVCache, LlamaModel, SeqSlice  # noqa: E402
from calibration.models.runner import ModelRunner  # noqa: E402

TINY = LlamaConfig(
    name="test-tiny", num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
    intermediate_size=128, vocab_size=101, qkv_bias=False, tie_word_embeddings=False, max_position_embeddings=64,
)  # fmt: skip


def flash_varlen_reference(q, keys, values, plan):
    """FlashAttention's variable-length semantics written plainly: sequence b's queries
    cu_q[b]..cu_q[b+1] attend over key rows cu_k[b] .. cu_k[b] + used_k[b], causal aligned to the
    end of the keys; GQA by repeating K/V heads."""
    out = torch.empty_like(q)
    group = q.shape[1] // keys.shape[1]
    for b in range(len(plan.used_k)):
        q0, q1 = int(plan.cu_q[b]), int(plan.cu_q[b + 1])
        k0, used = int(plan.cu_k[b]), int(plan.used_k[b])
        assert k0 + used <= int(plan.cu_k[b + 1])  # inside its own segment
        kk = keys[k0 : k0 + used].repeat_interleave(group, dim=1).transpose(0, 1)  # [nq, used, h]
        vv = values[k0 : k0 + used].repeat_interleave(group, dim=1).transpose(0, 1)
        nq_rows = q1 - q0
        mask = torch.ones(nq_rows, used, dtype=torch.bool).tril(diagonal=used - nq_rows)
        o = torch.nn.functional.scaled_dot_product_attention(q[q0:q1].transpose(0, 1), kk, vv, attn_mask=mask)
        out[q0:q1] = o.transpose(0, 1)
    return out


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = LlamaModel(TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.2)  # attention far from uniform, so wrong masks or rows would show
    return m


def _cache_with_history(model, seqs, num_slots=8):
    """A cache whose sequences hold ``num_cached`` real tokens each, allocated so that slots are
    NOT in the step's row order (the plan must reorder)."""
    cache = KVCache(TINY, torch.float32, "cpu", num_slots=num_slots, max_len=32)
    for s in reversed(seqs):
        cache.allocate(s.seq_id, 32)
    gen = torch.Generator().manual_seed(3)
    for s in seqs:
        if s.num_cached:
            ids = torch.randint(0, TINY.vocab_size, (s.num_cached,), generator=gen)
            model.step(ids, [SeqSlice(s.seq_id, s.num_cached, 0)], cache)
    return cache


SEQS = [SeqSlice(0, 1, 9), SeqSlice(1, 5, 0), SeqSlice(2, 1, 3), SeqSlice(3, 4, 6), SeqSlice(4, 1, 20)]


def test_varlen_attention_equals_per_sequence(model, monkeypatch):
    monkeypatch.setattr(llama, "flash_varlen", flash_varlen_reference)
    ids = torch.randint(0, TINY.vocab_size, (sum(s.num_new for s in SEQS),), generator=torch.Generator().manual_seed(5))
    a, b = _cache_with_history(model, SEQS), _cache_with_history(model, SEQS)
    plan = llama.varlen_plan(SEQS, a)
    assert plan.order is not None  # slots run against the rows: the reorder is exercised
    with torch.inference_mode():
        want = model(ids, SEQS, a, "per_sequence")
        got = model(ids, SEQS, b, "varlen")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # both wrote the same K/V for the new tokens, where a later step will read them
    for s in SEQS:
        o, end = a.offset(s.seq_id), s.num_cached + s.num_new
        torch.testing.assert_close(b.k[:, b.offset(s.seq_id) : b.offset(s.seq_id) + end], a.k[:, o : o + end])


def test_varlen_plan_of_a_wrong_segment_is_caught(model, monkeypatch):
    """The reference refuses keys outside a sequence's segment, so the test above can fail."""
    cache = _cache_with_history(model, SEQS)
    plan = llama.varlen_plan(SEQS, cache)
    plan.used_k[0] = cache.max_len + 1
    q = torch.zeros(sum(s.num_new for s in SEQS), TINY.num_heads, TINY.head_dim)
    with pytest.raises(AssertionError):
        flash_varlen_reference(q, cache.k[0], cache.v[0], plan)


class _FakeGraph:
    """Stands in for a captured graph on a CPU: replay runs the piece it would have captured."""

    def __init__(self, runner, j, nb):
        self.runner, self.j, self.nb = runner, j, nb

    def replay(self):
        self.runner._piece(self.j, self.nb)


@pytest.mark.parametrize("padded", [False, True])
def test_runner_pieces_equal_the_model_step(model, padded):
    ids = torch.randint(0, TINY.vocab_size, (sum(s.num_new for s in SEQS),), generator=torch.Generator().manual_seed(5))
    a, b = _cache_with_history(model, SEQS), _cache_with_history(model, SEQS)
    runner = ModelRunner(model, b, max_tokens=32, capture_sizes=(4, 16, 32))
    assert runner.attention == "per_sequence" and runner.cuda_graphs is False
    if padded:  # buckets as graphs would run them: 12 tokens padded to 16 rows
        runner._graphs = {nb: [_FakeGraph(runner, j, nb) for j in range(TINY.num_layers + 1)] for nb in (4, 16, 32)}
    want = model.step(ids, SEQS, a).tolist()
    got, times = runner.step(ids.tolist(), SEQS)
    assert got == want
    assert times.bucket == (16 if padded else 0)
    assert min(times.prepare_s, times.launch_s, times.sync_s) >= 0
    with torch.inference_mode():
        torch.testing.assert_close(runner._x[:12], model(ids, SEQS, a), rtol=1e-4, atol=1e-5)


def test_runner_check_compares_and_keeps_the_cache_empty(model):
    cache = KVCache(TINY, torch.float32, "cpu", num_slots=4, max_len=48)
    runner = ModelRunner(model, cache, max_tokens=32)
    got = runner.check()
    assert got["pieces_max_rel_error"] < 1e-5 and got["attention"] == "per_sequence"
    assert cache.bytes_allocated == 0


def test_cache_slots_are_reused_lowest_first():
    cache = KVCache(TINY, torch.float32, "cpu", num_slots=3, max_len=8)
    for sid in (10, 11, 12):
        cache.allocate(sid, 8)
    assert [cache.offset(s) for s in (10, 11, 12)] == [0, 8, 16]
    with pytest.raises(ValueError, match="no free KV slot"):
        cache.allocate(13, 1)
    cache.free(11)
    cache.free(10)
    cache.allocate(14, 2)
    assert cache.offset(14) == 0
    with pytest.raises(ValueError, match="exceeds a slot"):
        cache.allocate(15, 9)
