"""Diffusion transformers with random weights: MMDiT (joint attention) and a cross-attention DiT.

``MMDiT`` covers three published designs that differ in a few switches:

* SD3 (arXiv 2403.03206; Stability-AI's reference ``mmdit.py``): one weight set per stream
  (image, text), adaLN-zero modulation from the timestep plus the pooled text vector, 2D sin-cos
  positions, and a last block whose text stream stops after attention (``context_pre_only_last``).
* Flux.1 (black-forest-labs/flux ``model.py``, ``layers.py``): as SD3 plus q/k RMSNorm, rotary
  positions over (index, row, column), a guidance embedding (dev), then single-stream blocks that
  run attention and the MLP in parallel over the joined text + image sequence.
* CogVideoX (arXiv 2408.06072; THUDM/CogVideo ``sat/dit_video_concat.py``): text and video
  tokens share every weight (``shared_weights``) and only the adaLN modulation differs per stream
  ("expert adaLN"); 3D sin-cos positions; q/k LayerNorm; a 512-wide conditioning vector.

``CrossDiT`` is Wan2.1 (Wan-Video/Wan2.1 ``wan/modules/model.py``): self-attention over video
tokens with 3D rotary positions and q/k RMSNorm across heads, cross-attention to the text, a GELU
FFN, and modulation from one projected timestep vector plus a learned table per block.

Both take latents [rows, C, H, W] (image) or [rows, C, F, H, W] (video) and cut them into
``patch_size`` x ``patch_size`` patches per latent frame. q, k and v (and cross-attention k, v)
are one fused linear each, as in the Flux, SD3 and CogVideoX reference code (diffusers and Wan
split them: same FLOPs and parameters, three narrower GEMMs). Attention is torch SDPA.

This file also holds the primitives the UNet shares (timestep embedding, head split/merge).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# -- shared primitives ----------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [n, dim] of t [n] (cosines first), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # [n, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedding(nn.Module):
    """Linear -> activation -> linear: the timestep, guidance and pooled-text embedders
    (diffusers ``TimestepEmbedding``, ``PixArtAlphaTextProjection``)."""

    def __init__(self, in_dim: int, out_dim: int, gelu: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU(approximate="tanh") if gelu else nn.SiLU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, heads * D] -> [B, heads, L, D]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, D] -> [B, L, heads * D]."""
    return x.transpose(1, 2).flatten(2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, L, d] with per-row shift and scale [B, 1, d]."""
    return x * (1 + scale) + shift


def patchify(latents: torch.Tensor, p: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Latents [B, C, H, W] or [B, C, F, H, W] -> tokens [B, F (H/p) (W/p), C p p] and the grid (F, H/p, W/p)."""
    x = latents if latents.dim() == 5 else latents.unsqueeze(2)
    b, c, f, hh, ww = x.shape
    h, w = hh // p, ww // p
    x = x.reshape(b, c, f, h, p, w, p).permute(0, 2, 3, 5, 1, 4, 6)  # [B, F, h, w, C, p, p]
    return x.reshape(b, f * h * w, c * p * p), (f, h, w)


def unpatchify(x: torch.Tensor, p: int, grid: tuple[int, int, int], video: bool) -> torch.Tensor:
    """Inverse of ``patchify``: tokens [B, N, C p p] -> latents."""
    f, h, w = grid
    b = x.shape[0]
    x = x.reshape(b, f, h, w, -1, p, p).permute(0, 4, 1, 2, 5, 3, 6)  # [B, C, F, h, p, w, p]
    x = x.reshape(b, -1, f, h * p, w * p)
    return x if video else x.squeeze(2)


def grid_positions(grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """(frame, row, column) of each token in ``patchify`` order: [F h w, 3] float32."""
    f, h, w = grid
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in (f, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def sincos_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin-cos embedding [L, dim] of positions [L, A], dim split evenly over the A axes
    (zero-padded where dim is not a multiple of 2A)."""
    axes = positions.shape[1]
    per_axis = 2 * (dim // (2 * axes))
    emb = torch.cat([timestep_embedding(positions[:, a], per_axis) for a in range(axes)], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


def rope_angles(positions: torch.Tensor, axes_dims: tuple[int, ...], theta: float = 10000.0) -> torch.Tensor:
    """Rotary angles [L, head_dim / 2] for positions [L, A]; axis a rotates ``axes_dims[a]`` channels."""
    out = []
    for a, d in enumerate(axes_dims):
        freqs = theta ** (-torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)
        out.append(positions[:, a, None] * freqs[None])
    return torch.cat(out, dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [B, heads, L, D] by angles [L, D/2]."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def _head_norm(kind: str | None, head_dim: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "rms":
        return nn.RMSNorm(head_dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(head_dim, eps=1e-6)
    raise ValueError(f"qk_norm must be None, 'rms' or 'layer', got {kind!r}")


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


# -- MMDiT ----------------------------------------------------------------------------------------


class _Stream(nn.Module):
    """One token stream's weights in a joint block: fused q/k/v, q/k norms, output projection, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: str | None, full: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = _head_norm(qk_norm, dim // heads), _head_norm(qk_norm, dim // heads)
        mlp_dim = int(dim * mlp_ratio)
        # A pre-only stream (SD3's last text stream) only feeds keys and values to the image.
        self.out = nn.Linear(dim, dim) if full else None
        self.mlp = (
            nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_dim, dim))
            if full
            else None
        )

    def qkv_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [B, L, d] -> normalised q, k and v [B, heads, L, D]."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        return self.q_norm(q), self.k_norm(k), v


class JointBlock(nn.Module):
    """Joint attention over [text, image] tokens, then an MLP per stream; adaLN-zero modulation."""

    def __init__(
        self,
        dim: int,
        heads: int,
        cond_dim: int,
        *,
        qk_norm: str | None,
        shared: bool,
        text_out: bool,
        mlp_ratio: float,
    ):
        super().__init__()
        if shared and not text_out:
            raise ValueError("a shared-weight block cannot stop its text stream early")
        self.shared, self.text_out = shared, text_out
        self.norm = _layer_norm(dim)
        self.image = _Stream(dim, heads, mlp_ratio, qk_norm, full=True)
        self.text = self.image if shared else _Stream(dim, heads, mlp_ratio, qk_norm, full=text_out)
        # shift, scale, gate for attention and for the MLP, per stream (2 for a pre-only text stream)
        self.image_mod = nn.Linear(cond_dim, 6 * dim)
        self.text_mod = nn.Linear(cond_dim, (6 if text_out else 2) * dim)

    def forward(
        self, x: torch.Tensor, txt: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, d] image tokens, txt [B, T, d] text tokens, c [B, cond] (after SiLU) -> new x, txt."""
        n_txt = txt.shape[1]
        mi = self.image_mod(c).unsqueeze(1).chunk(6, dim=-1)
        mt = self.text_mod(c).unsqueeze(1).chunk(6 if self.text_out else 2, dim=-1)
        hi, ht = modulate(self.norm(x), mi[0], mi[1]), modulate(self.norm(txt), mt[0], mt[1])
        if self.shared:  # one GEMM over the joined sequence
            q, k, v = self.image.qkv_heads(torch.cat([ht, hi], dim=1))
        else:
            (qt, kt, vt), (qi, ki, vi) = self.text.qkv_heads(ht), self.image.qkv_heads(hi)
            q, k, v = torch.cat([qt, qi], dim=2), torch.cat([kt, ki], dim=2), torch.cat([vt, vi], dim=2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        attn = merge_heads(F.scaled_dot_product_attention(q, k, v))  # [B, T + N, d]

        if self.shared:
            o = self.image.out(attn)
            ot, oi = o[:, :n_txt], o[:, n_txt:]
        else:
            oi = self.image.out(attn[:, n_txt:])
            ot = self.text.out(attn[:, :n_txt]) if self.text_out else None
        x = x + mi[2] * oi
        hi = modulate(self.norm(x), mi[3], mi[4])
        if not self.text_out:
            return x + mi[5] * self.image.mlp(hi), txt
        txt = txt + mt[2] * ot
        ht = modulate(self.norm(txt), mt[3], mt[4])
        if self.shared:
            m = self.image.mlp(torch.cat([ht, hi], dim=1))
            mlp_t, mlp_i = m[:, :n_txt], m[:, n_txt:]
        else:
            mlp_t, mlp_i = self.text.mlp(ht), self.image.mlp(hi)
        return x + mi[5] * mlp_i, txt + mt[5] * mlp_t


class SingleBlock(nn.Module):
    """Flux single-stream block: attention and MLP in parallel over the joined sequence."""

    def __init__(self, dim: int, heads: int, cond_dim: int, *, qk_norm: str | None, mlp_ratio: float):
        super().__init__()
        self.heads, self.dim, self.mlp_dim = heads, dim, int(dim * mlp_ratio)
        self.norm = _layer_norm(dim)
        self.mod = nn.Linear(cond_dim, 3 * dim)
        self.fused_in = nn.Linear(dim, 3 * dim + self.mlp_dim)  # q, k, v and the MLP's first layer
        self.q_norm, self.k_norm = _head_norm(qk_norm, dim // heads), _head_norm(qk_norm, dim // heads)
        self.fused_out = nn.Linear(dim + self.mlp_dim, dim)  # attention output and MLP's second layer

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        """x [B, T + N, d], c [B, cond] (after SiLU) -> [B, T + N, d]."""
        shift, scale, gate = self.mod(c).unsqueeze(1).chunk(3, dim=-1)
        qkv, mlp = self.fused_in(modulate(self.norm(x), shift, scale)).split([3 * self.dim, self.mlp_dim], dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in qkv.chunk(3, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        attn = merge_heads(F.scaled_dot_product_attention(q, k, v))
        return x + gate * self.fused_out(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))


class MMDiT(nn.Module):
    """Joint-attention diffusion transformer (SD3, Flux, CogVideoX; see the module docstring)."""

    def __init__(
        self,
        *,
        in_channels: int,
        patch_size: int,
        dim: int,
        num_heads: int,
        depth: int,
        text_dim: int,
        single_depth: int = 0,
        pooled_dim: int = 0,
        cond_dim: int | None = None,
        time_freq_dim: int = 256,
        guidance: bool = False,
        qk_norm: str | None = None,
        rope_axes: tuple[int, ...] | None = None,
        shared_weights: bool = False,
        context_pre_only_last: bool = False,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if rope_axes is not None and sum(rope_axes) != dim // num_heads:
            raise ValueError(f"rope_axes {rope_axes} must sum to the head dim {dim // num_heads}")
        cond_dim = cond_dim or dim
        self.patch_size, self.time_freq_dim, self.rope_axes = patch_size, time_freq_dim, rope_axes
        self.x_embed = nn.Linear(in_channels * patch_size**2, dim)  # a stride-p conv over the latent
        self.text_embed = nn.Linear(text_dim, dim)
        self.time_embed = MLPEmbedding(time_freq_dim, cond_dim)
        self.guidance_embed = MLPEmbedding(time_freq_dim, cond_dim) if guidance else None
        self.pooled_embed = MLPEmbedding(pooled_dim, cond_dim) if pooled_dim else None
        self.joint_blocks = nn.ModuleList(
            JointBlock(
                dim,
                num_heads,
                cond_dim,
                qk_norm=qk_norm,
                shared=shared_weights,
                text_out=not (context_pre_only_last and i == depth - 1),
                mlp_ratio=mlp_ratio,
            )
            for i in range(depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleBlock(dim, num_heads, cond_dim, qk_norm=qk_norm, mlp_ratio=mlp_ratio) for _ in range(single_depth)
        )
        self.norm_out = _layer_norm(dim)
        self.out_mod = nn.Linear(cond_dim, 2 * dim)
        self.proj_out = nn.Linear(dim, in_channels * patch_size**2)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B, C, (F,) H, W], timestep [B], text_states [B, T, text_dim], pooled [B, P] -> like latents."""
        p, dtype = self.patch_size, latents.dtype
        tokens, grid = patchify(latents, p)
        x = self.x_embed(tokens)  # [B, N, d]
        txt = self.text_embed(text_states)  # [B, T, d]
        positions = grid_positions(grid, latents.device)
        if self.rope_axes is None:
            x = x + sincos_positions(positions, x.shape[-1]).to(dtype)
            rope = None
        else:  # text tokens sit at position 0 on every axis, image tokens at (frame, row, column)
            txt_pos = torch.zeros(txt.shape[1], 3, device=latents.device)
            rope = rope_angles(torch.cat([txt_pos, positions]), self.rope_axes)

        c = self.time_embed(timestep_embedding(timestep, self.time_freq_dim).to(dtype))
        if self.guidance_embed is not None:  # Flux-dev's distilled guidance scale (3.5 by default)
            c = c + self.guidance_embed(
                timestep_embedding(torch.full_like(timestep, 3.5), self.time_freq_dim).to(dtype)
            )
        if self.pooled_embed is not None:
            c = c + self.pooled_embed(pooled)
        c = F.silu(c)

        for block in self.joint_blocks:
            x, txt = block(x, txt, c, rope)
        if self.single_blocks:
            y = torch.cat([txt, x], dim=1)
            for block in self.single_blocks:
                y = block(y, c, rope)
            x = y[:, txt.shape[1] :]
        shift, scale = self.out_mod(c).unsqueeze(1).chunk(2, dim=-1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))
        return unpatchify(x, p, grid, video=latents.dim() == 5)


# -- cross-attention DiT (Wan2.1) -----------------------------------------------------------------


class CrossBlock(nn.Module):
    """Wan block: modulated self-attention with 3D RoPE, cross-attention to the text, modulated FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.heads = heads
        self.table = nn.Parameter(torch.empty(6, dim))  # added to the projected timestep per block
        self.norm1 = _layer_norm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)  # across heads
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_q_norm, self.cross_k_norm = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
        self.cross_out = nn.Linear(dim, dim)
        self.norm3 = _layer_norm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))

    def forward(self, x: torch.Tensor, txt: torch.Tensor, mod: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """x [B, N, d] video tokens, txt [B, T, d], mod [B, 6, d] projected timestep, rope [N, D/2]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.table + mod).unsqueeze(2).unbind(1)  # [B, 1, d] each
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).chunk(3, dim=-1)
        q = apply_rope(split_heads(self.q_norm(q), self.heads), rope)
        k = apply_rope(split_heads(self.k_norm(k), self.heads), rope)
        attn = F.scaled_dot_product_attention(q, k, split_heads(v, self.heads))
        x = x + gate1 * self.out(merge_heads(attn))

        q = split_heads(self.cross_q_norm(self.cross_q(self.norm2(x))), self.heads)
        k, v = self.cross_kv(txt).chunk(2, dim=-1)
        k, v = split_heads(self.cross_k_norm(k), self.heads), split_heads(v, self.heads)
        x = x + self.cross_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return x + gate2 * self.ffn(modulate(self.norm3(x), shift2, scale2))


class CrossDiT(nn.Module):
    """Self-attention over video tokens plus cross-attention to text (Wan2.1; see the module docstring)."""

    def __init__(
        self,
        *,
        in_channels: int,
        patch_size: int,
        dim: int,
        num_heads: int,
        depth: int,
        ffn_dim: int,
        text_dim: int,
        rope_axes: tuple[int, ...],
        time_freq_dim: int = 256,
    ):
        super().__init__()
        if sum(rope_axes) != dim // num_heads:
            raise ValueError(f"rope_axes {rope_axes} must sum to the head dim {dim // num_heads}")
        self.patch_size, self.time_freq_dim, self.rope_axes = patch_size, time_freq_dim, rope_axes
        self.x_embed = nn.Linear(in_channels * patch_size**2, dim)  # a (1, p, p) stride-p conv
        self.text_embed = MLPEmbedding(text_dim, dim, gelu=True)
        self.time_embed = MLPEmbedding(time_freq_dim, dim)
        self.time_mod = nn.Linear(dim, 6 * dim)
        self.blocks = nn.ModuleList(CrossBlock(dim, num_heads, ffn_dim) for _ in range(depth))
        self.out_table = nn.Parameter(torch.empty(2, dim))
        self.norm_out = _layer_norm(dim)
        self.proj_out = nn.Linear(dim, in_channels * patch_size**2)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B, C, (F,) H, W], timestep [B], text_states [B, T, text_dim] -> like latents (no pooled text)."""
        p, dtype = self.patch_size, latents.dtype
        tokens, grid = patchify(latents, p)
        x = self.x_embed(tokens)  # [B, N, d]
        txt = self.text_embed(text_states)  # [B, T, d]
        temb = self.time_embed(timestep_embedding(timestep, self.time_freq_dim).to(dtype))  # [B, d]
        mod = self.time_mod(F.silu(temb)).unflatten(1, (6, -1))  # [B, 6, d]
        rope = rope_angles(grid_positions(grid, latents.device), self.rope_axes)
        for block in self.blocks:
            x = block(x, txt, mod, rope)
        shift, scale = (self.out_table + temb.unsqueeze(1)).unsqueeze(2).unbind(1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))
        return unpatchify(x, p, grid, video=latents.dim() == 5)
