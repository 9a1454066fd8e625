"""Transformer text encoders of diffusion pipelines, random weights: CLIP text towers and T5 encoders.

``style="clip"`` (openai/CLIP ``model.py``, mlfoundations/open_clip ``transformer.py``): learned
positions, pre-LayerNorm blocks with biases, causal self-attention, GELU MLP, final LayerNorm;
the pooled output is the final state at the end-of-text token (the highest id, as in CLIP's
tokenizer), optionally projected (OpenCLIP bigG's ``text_projection``). CLIP-L's quick-GELU is a
plain GELU here (same cost).

``style="t5"`` (T5 v1.1 / umT5 encoder, Hugging Face ``modeling_t5.py``): RMSNorm, no biases,
a bucketed relative-position bias (one table, in the first layer, shared by every layer) added to
the attention logits, no 1/sqrt(d) attention scale, gated-GELU FFN.

q, k and v are one fused linear (same FLOPs and parameters as three).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

T5_BUCKETS = 32
T5_MAX_DISTANCE = 128


def _relative_buckets(tokens: int, device: torch.device) -> torch.Tensor:
    """T5's bidirectional relative-position bucket [tokens, tokens] of (query, key)."""
    pos = torch.arange(tokens, device=device)
    rel = pos[None, :] - pos[:, None]  # key - query
    half = T5_BUCKETS // 2
    exact = half // 2  # distances below this get a bucket each; beyond, log-spaced up to max_distance
    n = rel.abs()
    log_scaled = torch.log(n.float().clamp(min=1) / exact) / math.log(T5_MAX_DISTANCE / exact) * (half - exact)
    far = (exact + log_scaled.long()).clamp(max=half - 1)
    return (rel > 0).long() * half + torch.where(n < exact, n, far)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and FFN (plain GELU, or T5's gated GELU with three matrices)."""

    def __init__(self, dim: int, heads: int, ffn: int, gated: bool, clip: bool):
        super().__init__()
        self.heads, self.gated = heads, gated
        self.norm1 = nn.LayerNorm(dim) if clip else nn.RMSNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim, bias=clip)
        self.out = nn.Linear(dim, dim, bias=clip)
        self.norm2 = nn.LayerNorm(dim) if clip else nn.RMSNorm(dim, eps=1e-6)
        self.ffn_in = nn.Linear(dim, (2 if gated else 1) * ffn, bias=clip)
        self.ffn_out = nn.Linear(ffn, dim, bias=clip)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, causal: bool, scale: float | None) -> torch.Tensor:
        """x [B, T, d], bias [1, heads, T, T] added to the logits -> [B, T, d]."""
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal, scale=scale)
        x = x + self.out(attn.transpose(1, 2).flatten(2))
        h = self.ffn_in(self.norm2(x))
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.gelu(gate, approximate="tanh") * up
        else:
            h = F.gelu(h)
        return x + self.ffn_out(h)


class TextEncoder(nn.Module):
    """A CLIP-style or T5-style transformer encoder over ``tokens`` token ids (see the module docstring)."""

    def __init__(
        self,
        *,
        style: str,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        ffn_size: int,
        gated_ffn: bool,
        vocab_size: int,
        tokens: int,
        projection_dim: int = 0,
    ):
        super().__init__()
        if style not in ("clip", "t5"):
            raise ValueError(f"style must be 'clip' or 't5', got {style!r}")
        clip = style == "clip"
        self.clip, self.vocab_size, self.tokens = clip, vocab_size, tokens
        self.token_embed = nn.Embedding(vocab_size, hidden_size)
        self.pos_embed = nn.Parameter(torch.empty(tokens, hidden_size)) if clip else None
        self.relative_bias = None if clip else nn.Embedding(T5_BUCKETS, num_heads)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_size, num_heads, ffn_size, gated_ffn, clip) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size) if clip else nn.RMSNorm(hidden_size, eps=1e-6)
        self.projection = nn.Linear(hidden_size, projection_dim, bias=False) if projection_dim else None

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids [B, tokens] -> final states [B, tokens, d] and, for CLIP, the pooled vector [B, d or proj]."""
        x = self.token_embed(ids)
        if self.clip:
            x = x + self.pos_embed
            bias, scale = None, None
        else:
            bias = self.relative_bias(_relative_buckets(ids.shape[1], ids.device)).permute(2, 0, 1).unsqueeze(0)
            bias, scale = bias.to(x.dtype), 1.0
        for layer in self.layers:
            x = layer(x, bias, causal=self.clip, scale=scale)
        x = self.final_norm(x)
        if not self.clip:
            return x, None
        pooled = x.gather(1, ids.argmax(dim=1)[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)
        return x, pooled if self.projection is None else self.projection(pooled)
