"""The latent-diffusion UNet of SD-1.5 and SDXL, random weights.

Shaped like diffusers' ``UNet2DConditionModel`` (and CompVis/Stability-AI ``openaimodel.py``):
a sinusoidal timestep embedding through a 2-layer MLP (4x the first width), ResNet blocks
(GroupNorm, SiLU, 3x3 conv, timestep projection), transformer blocks at the levels that have
them (self-attention, cross-attention to the text states, GEGLU feed-forward), stride-2 conv
downsampling, nearest-neighbour upsampling + conv, and skip connections from every down-path
output into the up path. SDXL adds the "text_time" embedding: the pooled text vector and six
size/crop numbers, embedded and added to the timestep embedding.

Deviations that keep FLOPs and parameters: the transformer's proj_in/proj_out are linears
(SD-1.5's are 1x1 convs), and self-attention q, k, v (and cross-attention k, v) are fused linears.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calibration.models.dit import MLPEmbedding, merge_heads, split_heads, timestep_embedding

GROUPS = 32
"""GroupNorm groups (diffusers' ``norm_num_groups``) unless a model sets its own."""


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus an optional timestep projection; 1x1 conv shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int = 0, groups: int = GROUPS):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, out_channels) if temb_dim else None
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, H, W], temb [B, temb_dim] -> [B, C_out, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_proj is not None:
            h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling (2x, or to ``size`` so odd sizes meet their skip) then a 3x3 conv."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest")
        return self.conv(x)


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text, GEGLU feed-forward; pre-LayerNorm, residuals."""

    def __init__(self, dim: int, heads: int, text_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_q = nn.Linear(dim, dim, bias=False)
        self.cross_kv = nn.Linear(text_dim, 2 * dim, bias=False)
        self.cross_out = nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.geglu = nn.Linear(dim, 8 * dim)  # value and gate of a 4x-wide FFN
        self.ff_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim] pixel tokens, text [B, T, text_dim] -> [B, L, dim]."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + self.out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        q = split_heads(self.cross_q(self.norm2(x)), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.cross_kv(text).chunk(2, dim=-1))
        x = x + self.cross_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        value, gate = self.geglu(self.norm3(x)).chunk(2, dim=-1)
        return x + self.ff_out(value * F.gelu(gate))


class Transformer2D(nn.Module):
    """GroupNorm, projection in, ``depth`` transformer blocks over the pixels, projection out, residual."""

    def __init__(self, channels: int, heads: int, depth: int, text_dim: int, groups: int = GROUPS):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(TransformerBlock(channels, heads, text_dim) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # [B, HW, C]
        for block in self.blocks:
            t = block(t, text)
        return x + self.proj_out(t).transpose(1, 2).reshape(b, c, h, w)


class _Level(nn.Module):
    """One resolution of the down or up path: ResNet blocks, each optionally followed by a transformer."""

    def __init__(self, resnets: list[ResnetBlock], attentions: list[Transformer2D]):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)  # empty, or one per ResNet block

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, text: torch.Tensor, skips: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Every block's output; on the up path (``skips`` given) a block first concatenates a popped skip."""
        outputs = []
        for j, resnet in enumerate(self.resnets):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[j](x, text)
            outputs.append(x)
        return outputs


class UNet(nn.Module):
    """A UNet2DConditionModel-shaped denoiser (see the module docstring).

    ``block_out_channels``, ``transformer_layers`` and ``attention_heads`` are per level, from
    full resolution down; a level with 0 transformer layers has plain ResNet blocks. The mid block
    (ResNet, transformer, ResNet) runs ``mid_transformer_layers`` blocks with the last level's heads.
    ``pooled_dim`` > 0 adds SDXL's text_time embedding.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        transformer_layers: tuple[int, ...],
        attention_heads: tuple[int, ...],
        mid_transformer_layers: int,
        text_dim: int,
        pooled_dim: int = 0,
        addition_time_embed_dim: int = 256,
        norm_num_groups: int = GROUPS,
    ):
        super().__init__()
        chans = block_out_channels
        if not len(chans) == len(transformer_layers) == len(attention_heads):
            raise ValueError("block_out_channels, transformer_layers and attention_heads need one entry per level")
        temb, g = 4 * chans[0], norm_num_groups
        self.time_freq_dim, self.addition_time_embed_dim = chans[0], addition_time_embed_dim
        self.time_embed = MLPEmbedding(chans[0], temb)
        # SDXL "text_time" (pooled_dim > 0): pooled text + embeddings of the six size/crop numbers
        self.add_embed = MLPEmbedding(pooled_dim + 6 * addition_time_embed_dim, temb) if pooled_dim else None
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)

        def transformers(n: int, ch: int, heads: int, depth: int) -> list[Transformer2D]:
            return [Transformer2D(ch, heads, depth, text_dim, g) for _ in range(n)] if depth else []

        skips = [chans[0]]  # widths of the down-path outputs the up path concatenates
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            res = [ResnetBlock(prev if j == 0 else ch, ch, temb, g) for j in range(layers_per_block)]
            self.down.append(_Level(res, transformers(layers_per_block, ch, attention_heads[i], transformer_layers[i])))
            skips += [ch] * layers_per_block
            if i < len(chans) - 1:
                self.downsamplers.append(Downsample(ch))
                skips.append(ch)
            prev = ch

        self.mid_res1 = ResnetBlock(prev, prev, temb, g)
        self.mid_attn = Transformer2D(prev, attention_heads[-1], mid_transformer_layers, text_dim, g)
        self.mid_res2 = ResnetBlock(prev, prev, temb, g)

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            n = layers_per_block + 1
            res = [ResnetBlock((prev if j == 0 else ch) + skips.pop(), ch, temb, g) for j in range(n)]
            self.up.append(_Level(res, transformers(n, ch, attention_heads[i], transformer_layers[i])))
            if i > 0:
                self.upsamplers.append(Upsample(ch))
            prev = ch

        self.norm_out = nn.GroupNorm(g, chans[0])
        self.conv_out = nn.Conv2d(chans[0], in_channels, 3, padding=1)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """latents [B, C, H, W], timestep [B], text_states [B, T, text_dim], pooled [B, P] (SDXL) -> [B, C, H, W]."""
        dtype = latents.dtype
        temb = self.time_embed(timestep_embedding(timestep, self.time_freq_dim).to(dtype))
        if self.add_embed is not None:
            # original size, crop corner, target size: values do not matter, and a fill on the
            # device avoids a host-to-device copy per forward
            b, h = latents.shape[0], latents.shape[2]
            ids = torch.full((6 * b,), 8.0 * h, device=latents.device)
            ids = timestep_embedding(ids, self.addition_time_embed_dim).reshape(b, -1).to(dtype)
            temb = temb + self.add_embed(torch.cat([pooled, ids], dim=-1))

        x = self.conv_in(latents)
        skips = [x]
        for i, level in enumerate(self.down):
            outputs = level(x, temb, text_states)
            skips += outputs
            x = outputs[-1]
            if i < len(self.downsamplers):
                x = self.downsamplers[i](x)
                skips.append(x)

        x = self.mid_res2(self.mid_attn(self.mid_res1(x, temb), text_states), temb)

        for i, level in enumerate(self.up):
            x = level(x, temb, text_states, skips)[-1]
            if i < len(self.upsamplers):
                x = self.upsamplers[i](x, size=skips[-1].shape[-2:])
        return self.conv_out(F.silu(self.norm_out(x)))
