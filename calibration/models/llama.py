"""A lean Llama-family decoder with random weights, run one packed engine step at a time.

Covers every LLM in the catalog: RMSNorm, rotary embeddings (rotate-half, as Hugging Face
``LlamaRotaryEmbedding``), grouped-query attention with optional q/k/v biases (Qwen2), SwiGLU.
The layer mirrors vLLM's ``vllm/model_executor/models/llama.py``: fused q/k/v and gate/up
projections, and a step is a packed batch of token rows (no padding) plus per-sequence KV-cache
metadata, so prefill chunks and decodes share one forward. Weights are drawn from N(0, 0.02)
(the Hugging Face init keeps random activations finite); kernel times do not depend on values.

Calibration times the parts of a layer on their own (``pre_attention``, ``attend``,
``post_attention``, ``head``); the validation engine calls ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from calibration.configs import LlamaConfig

INIT_STD = 0.02


@dataclass
class SeqSlice:
    """One sequence's part of a packed step."""

    seq_id: int
    num_new: int
    """Tokens this step computes for the sequence (1 for a decode)."""
    num_cached: int
    """Tokens already in its KV cache before this step."""


class KVCache:
    """A pooled KV cache: one K and one V tensor per layer of ``num_slots * max_len`` token rows
    [L, num_slots * max_len, n_kv, h], allocated once, as a serving engine reserves its KV memory
    at start-up. A sequence holds one slot, rows [slot * max_len, slot * max_len + capacity).

    Slots make a sequence's keys contiguous and place every sequence at a fixed offset in one
    tensor per layer, so one variable-length attention kernel can read the keys of a whole batch
    in place (``attend_varlen``: per-sequence start offsets and used lengths, nothing copied),
    while ``attend`` reads each sequence's rows as a view."""

    def __init__(
        self,
        cfg: LlamaConfig,
        dtype: torch.dtype,
        device: torch.device | str,
        num_layers: int | None = None,
        *,
        num_slots: int = 8,
        max_len: int | None = None,
    ):
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_slots = num_slots
        self.max_len = cfg.max_position_embeddings if max_len is None else max_len
        if num_slots < 1 or self.max_len < 1:
            raise ValueError(f"a KV cache needs at least one slot of one token, got {num_slots} x {self.max_len}")
        shape = (self.num_layers, num_slots * self.max_len, self.num_kv_heads, self.head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=self.device)
        self.v = torch.empty(shape, dtype=dtype, device=self.device)
        self._slot: dict[int, int] = {}
        self._capacity: dict[int, int] = {}
        self._free_slots = list(range(num_slots - 1, -1, -1))  # pop() takes the lowest

    def allocate(self, seq_id: int, capacity: int) -> None:
        """Reserve room for ``capacity`` tokens of sequence ``seq_id`` in the lowest free slot
        (contents undefined)."""
        if seq_id in self._slot:
            raise ValueError(f"sequence {seq_id} already has a KV cache")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 token, got {capacity}")
        if capacity > self.max_len:
            raise ValueError(f"sequence {seq_id}: capacity {capacity} tokens exceeds a slot's {self.max_len}")
        if not self._free_slots:
            raise ValueError(f"no free KV slot for sequence {seq_id}: all {self.num_slots} are held")
        self._slot[seq_id] = self._free_slots.pop()
        self._capacity[seq_id] = capacity

    def free(self, seq_id: int) -> None:
        self._check(seq_id)
        self._free_slots.append(self._slot.pop(seq_id))
        self._free_slots.sort(reverse=True)
        del self._capacity[seq_id]

    def clear(self) -> None:
        """Free every sequence."""
        for seq_id in list(self._slot):
            self.free(seq_id)

    def has(self, seq_id: int) -> bool:
        return seq_id in self._slot

    def capacity(self, seq_id: int) -> int:
        """Tokens sequence ``seq_id`` has room for."""
        self._check(seq_id)
        return self._capacity[seq_id]

    def offset(self, seq_id: int) -> int:
        """The row of the pool where sequence ``seq_id``'s first token sits."""
        self._check(seq_id)
        return self._slot[seq_id] * self.max_len

    @property
    def bytes_allocated(self) -> int:
        """Bytes of K and V reserved by the sequences held (their capacities, all layers)."""
        per_token = 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.k.element_size()
        return sum(self._capacity.values()) * per_token

    def fill_random(self, seq_id: int, num_tokens: int) -> None:
        """Put random K and V in positions [0, num_tokens) of every layer, standing in for a prefill."""
        self._check_room(seq_id, num_tokens)
        o = self.offset(seq_id)
        self.k[:, o : o + num_tokens].normal_()
        self.v[:, o : o + num_tokens].normal_()

    def write(
        self, seq_id: int, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` [n, n_kv, h] at positions [start, start + n) of ``layer``.

        Returns views of the layer's keys and values at positions [0, start + n).
        """
        end = start + k.shape[0]
        self._check_room(seq_id, end)
        o = self.offset(seq_id)
        keys, values = self.k[layer, o : o + end], self.v[layer, o : o + end]  # [end, n_kv, h]
        keys[start:end] = k
        values[start:end] = v
        return keys, values

    def _check(self, seq_id: int) -> None:
        if seq_id not in self._slot:
            raise KeyError(f"sequence {seq_id} has no KV cache")

    def _check_room(self, seq_id: int, num_tokens: int) -> None:
        if num_tokens > self.capacity(seq_id):
            raise ValueError(f"sequence {seq_id}: {num_tokens} tokens exceed its KV capacity {self.capacity(seq_id)}")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [n, heads, h] with cos, sin [n, h] (rotate-half layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


class LlamaLayer(nn.Module):
    """One decoder layer, split around attention so that the engine owns the KV cache."""

    def __init__(self, cfg: LlamaConfig, *, dtype: torch.dtype, device: torch.device | str):
        super().__init__()
        d, h = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, h
        kw = {"dtype": dtype, "device": device}
        self.input_layernorm = nn.RMSNorm(d, eps=cfg.rms_norm_eps, **kw)
        self.qkv_proj = nn.Linear(d, (cfg.num_heads + 2 * cfg.num_kv_heads) * h, bias=cfg.qkv_bias, **kw)
        self.o_proj = nn.Linear(cfg.num_heads * h, d, bias=False, **kw)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=cfg.rms_norm_eps, **kw)
        self.gate_up_proj = nn.Linear(d, 2 * cfg.intermediate_size, bias=False, **kw)
        self.down_proj = nn.Linear(cfg.intermediate_size, d, bias=False, **kw)

    def pre_attention(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [n, d] -> q [n, nq, h], k [n, nkv, h], v [n, nkv, h], with RoPE applied to q and k."""
        n, h = x.shape[0], self.head_dim
        qkv = self.qkv_proj(self.input_layernorm(x))  # [n, (nq + 2 nkv) h]
        q, k, v = qkv.split([self.num_heads * h, self.num_kv_heads * h, self.num_kv_heads * h], dim=-1)
        q = _rotate(q.view(n, self.num_heads, h), cos, sin)
        k = _rotate(k.view(n, self.num_kv_heads, h), cos, sin)
        return q, k, v.view(n, self.num_kv_heads, h)

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Residual stream x [n, d] plus attention output [n, nq h] -> the layer's output [n, d]."""
        x = x + self.o_proj(attn_out)
        gate, up = self.gate_up_proj(self.post_attention_layernorm(x)).chunk(2, dim=-1)  # [n, ffn] each
        return x + self.down_proj(F.silu(gate) * up)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqs: list[SeqSlice], cache: KVCache, layer: int
) -> torch.Tensor:
    """Attention for a packed step: q [n, nq, h], k and v [n, nkv, h] -> [n, nq h].

    Rows are packed in the order of ``seqs``. Each sequence's new K/V go into its cache at
    [num_cached, num_cached + num_new); its queries then attend over keys [0, num_cached + num_new),
    causally within the new block. One SDPA call per sequence, so the cost follows the summed
    context rather than the batch's longest one.
    """
    outs = []
    start = 0
    for s in seqs:
        end = start + s.num_new
        keys, values = cache.write(s.seq_id, layer, s.num_cached, k[start:end], v[start:end])  # [ctx, nkv, h]
        if s.num_new == 1:
            # A decode: fold the query heads that share a KV head into one query block per KV
            # head, so SDPA runs plain multi-head attention ([nkv, group, h] over [nkv, ctx, h]).
            # Same result as enable_gqa, which on CPU takes a slow path that copies K/V per head.
            qg = q[start:end].reshape(cache.num_kv_heads, -1, q.shape[-1])
            o = F.scaled_dot_product_attention(qg, keys.transpose(0, 1), values.transpose(0, 1))
            outs.append(o.reshape(1, -1))
            start = end
            continue
        mask, causal = None, False
        if s.num_cached == 0:
            causal = True
        else:
            # query i sits at position num_cached + i and sees keys up to there (torch's
            # causal_lower_right says the same without a tensor, but it is a Tensor subclass
            # that cannot be created under FlopCounterMode, which calibration counts with)
            ctx = s.num_cached + s.num_new
            mask = torch.ones(s.num_new, ctx, dtype=torch.bool, device=q.device).tril(diagonal=s.num_cached)
        o = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1),  # [nq, new, h]
            keys.transpose(0, 1),  # [nkv, ctx, h]
            values.transpose(0, 1),
            attn_mask=mask,
            is_causal=causal,
            enable_gqa=True,
        )  # [nq, new, h]
        outs.append(o.transpose(0, 1).reshape(s.num_new, -1))
        start = end
    return torch.cat(outs)


@dataclass
class VarlenPlan:
    """One step's index tensors for ``attend_varlen``, built once and shared by every layer."""

    write_rows: torch.Tensor
    """[n] int64: the pool row each new token's K/V goes to (slot offset + position)."""
    order: torch.Tensor | None
    """[n] int64: packed rows in slot order (None when they already are)."""
    inverse: torch.Tensor | None
    cu_q: torch.Tensor
    """[S + 1] int32: query row offsets per sequence, in slot order."""
    cu_k: torch.Tensor
    """[S + 1] int32: each sequence's first pool row, then the end of the last one's slot."""
    used_k: torch.Tensor
    """[S] int32: keys each sequence attends over (cached + new)."""
    max_q: int
    max_k: int


def varlen_plan(seqs: list[SeqSlice], cache: KVCache) -> VarlenPlan:
    """The index tensors of a packed step (rows in the order of ``seqs``) over ``cache``'s pool."""
    dev = cache.device
    starts = list(accumulate((s.num_new for s in seqs), initial=0))
    rows = []
    for s in seqs:
        cache._check_room(s.seq_id, s.num_cached + s.num_new)
        o = cache.offset(s.seq_id) + s.num_cached
        rows.append(torch.arange(o, o + s.num_new))
    by_slot = sorted(range(len(seqs)), key=lambda j: cache.offset(seqs[j].seq_id))
    order = None
    if by_slot != list(range(len(seqs))):
        order = torch.cat([torch.arange(starts[j], starts[j + 1]) for j in by_slot])
    cu_q = list(accumulate((seqs[j].num_new for j in by_slot), initial=0))
    offsets = [cache.offset(seqs[j].seq_id) for j in by_slot]
    cu_k = [*offsets, offsets[-1] + cache.max_len]
    used = [seqs[j].num_cached + seqs[j].num_new for j in by_slot]

    def i32(x):
        return torch.tensor(x, dtype=torch.int32, device=dev)

    return VarlenPlan(
        write_rows=torch.cat(rows).to(dev),
        order=None if order is None else order.to(dev),
        inverse=None if order is None else torch.argsort(order).to(dev),
        cu_q=i32(cu_q),
        cu_k=i32(cu_k),
        used_k=i32(used),
        max_q=max(s.num_new for s in seqs),
        max_k=max(used),
    )


def flash_varlen(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: VarlenPlan) -> torch.Tensor:
    """FlashAttention-2's variable-length forward (as torch ships it): queries [n, nq, h] packed
    by ``plan.cu_q``; keys and values [rows, nkv, h], sequence b's at rows cu_k[b] ..
    cu_k[b] + used_k[b]; causal, aligned to the end of each sequence's keys. -> [n, nq, h]."""
    return torch.ops.aten._flash_attention_forward(
        q, keys, values, plan.cu_q, plan.cu_k, plan.max_q, plan.max_k, 0.0, True, False, seqused_k=plan.used_k
    )[0]


def attend_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: VarlenPlan, cache: KVCache, layer: int
) -> torch.Tensor:
    """``attend``'s result in one attention kernel for the whole step, as vLLM's FlashAttention
    backend runs it: the new K/V rows scattered into the pool (one copy each), then FlashAttention's
    variable-length forward over the packed queries and the pool's keys in place, each sequence's
    keys found by its start offset and used length (``seqused_k``), causal aligned to the end of
    the keys (so a decode sees its whole context and a chunk on top of a cache sees the cache).
    CUDA only (bf16/fp16); ``ModelRunner`` checks it against ``attend`` before serving."""
    kp, vp = cache.k[layer], cache.v[layer]
    kp.index_copy_(0, plan.write_rows, k)
    vp.index_copy_(0, plan.write_rows, v)
    qs = q if plan.order is None else q.index_select(0, plan.order)
    out = flash_varlen(qs, kp, vp, plan)  # [n, nq, h] in slot order
    if plan.inverse is not None:
        out = out.index_select(0, plan.inverse)
    return out.reshape(q.shape[0], -1)


class LlamaModel(nn.Module):
    """Embedding, decoder layers, final norm and LM head, built directly on ``device`` in ``dtype``."""

    def __init__(
        self,
        cfg: LlamaConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        num_layers: int | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        """Layers built: ``cfg.num_layers`` unless overridden (calibration times a short stack)."""
        self.device = torch.device(device)
        kw = {"dtype": dtype, "device": device}
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, **kw)
        self.layers = nn.ModuleList(LlamaLayer(cfg, **kw) for _ in range(self.num_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, **kw)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        # RoPE table, computed in float32 and stored in the model's dtype (as HF does before use)
        inv_freq = 1.0 / cfg.rope_theta ** (
            torch.arange(0, cfg.head_dim, 2, device=device, dtype=torch.float32) / cfg.head_dim
        )
        pos = torch.arange(cfg.max_position_embeddings, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)  # [max_pos, h/2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [max_pos, h]
        self.register_buffer("cos_table", angles.cos().to(dtype), persistent=False)
        self.register_buffer("sin_table", angles.sin().to(dtype), persistent=False)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [n, h] for int64 positions [n]."""
        return self.cos_table[positions], self.sin_table[positions]

    def positions(self, seqs: list[SeqSlice]) -> torch.Tensor:
        """Packed positions [n]: num_cached .. num_cached + num_new - 1 for each sequence in turn."""
        pos = torch.cat([torch.arange(s.num_cached, s.num_cached + s.num_new) for s in seqs])
        return pos.to(self.device)

    def last_rows(self, seqs: list[SeqSlice]) -> torch.Tensor:
        """Index of each sequence's last packed row [len(seqs)] (the rows the LM head samples from)."""
        return torch.tensor([end - 1 for end in accumulate(s.num_new for s in seqs)], device=self.device)

    def head(self, x_rows: torch.Tensor) -> torch.Tensor:
        """Hidden rows [rows, d] -> greedy next-token ids [rows] (final norm, LM head, argmax)."""
        return self.lm_head(self.norm(x_rows)).argmax(dim=-1)

    def forward(
        self, token_ids: torch.Tensor, seqs: list[SeqSlice], cache: KVCache, attention: str = "per_sequence"
    ) -> torch.Tensor:
        """Packed token ids [n] -> hidden states [n, d] after the last layer (before the final norm).

        Writes every layer's K/V for the new tokens into ``cache`` and changes nothing else.
        ``attention``: "per_sequence" (``attend``, any device) or "varlen" (``attend_varlen``, CUDA).
        """
        if token_ids.shape[0] != sum(s.num_new for s in seqs):
            raise ValueError(f"{token_ids.shape[0]} token ids for {sum(s.num_new for s in seqs)} new tokens")
        if cache.num_layers < self.num_layers:
            raise ValueError(f"KV cache has {cache.num_layers} layers, the model {self.num_layers}")
        x = self.embed_tokens(token_ids)  # [n, d]
        cos, sin = self.rope(self.positions(seqs))  # [n, h] each
        plan = varlen_plan(seqs, cache) if attention == "varlen" else None
        for i, layer in enumerate(self.layers):
            q, k, v = layer.pre_attention(x, cos, sin)
            a = attend(q, k, v, seqs, cache, i) if plan is None else attend_varlen(q, k, v, plan, cache, i)
            x = layer.post_attention(x, a)
        return x

    @torch.inference_mode()
    def step(
        self, token_ids: torch.Tensor, seqs: list[SeqSlice], cache: KVCache, attention: str = "per_sequence"
    ) -> torch.Tensor:
        """One engine step: packed token ids [n] -> each sequence's next-token id [len(seqs)] (int64).

        Only each sequence's last row goes through the LM head. The caller owns sequence lengths;
        this writes K/V and advances nothing.
        """
        x = self.forward(token_ids, seqs, cache, attention)
        return self.head(x[self.last_rows(seqs)])
