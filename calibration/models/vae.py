"""VAE decoders of diffusion pipelines, random weights: the image AutoencoderKL decoder and a
causal 3D video decoder.

``ImageVAEDecoder`` follows diffusers' ``AutoencoderKL`` decoder (CompVis ``model.py``
``Decoder``): conv in, a mid block (ResNet, single-head self-attention over the latent pixels,
ResNet), one up block per width with ``layers_per_block + 1`` ResNets and nearest 2x upsampling +
conv (all but the last), GroupNorm, SiLU, conv out. SD/SDXL apply a 1x1 ``post_quant_conv``
first; Flux/SD3 (16 latent channels) do not.

``VideoVAEDecoder`` approximates the CogVideoX and Wan2.1 decoders (diffusers
``AutoencoderKLCogVideoX``, ``AutoencoderKLWan``): the same layout with 3x3x3 convolutions that are
causal in time, 2x temporal upsampling in the first up blocks (a video's first frame is not
doubled, so F latent frames decode to 1 + 4 (F - 1) frames), and decoding in chunks of latent
frames whose causal convolutions carry the last frames of the previous chunk (GroupNorm
statistics are per chunk, as in CogVideoX). Simplifications, each within 2 % of the published
parameters and 1 % of the counted FLOPs: temporal upsampling repeats frames instead of running
Wan's (3, 1, 1) time convolution, CogVideoX's spatially-conditioned norms are plain GroupNorm, and
the 1x1x1 post-quant convolutions are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calibration.models.unet import GROUPS, ResnetBlock, Upsample


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over the channel axis (dim 1) with a learned gain (Wan's ``RMS_norm``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.scale = channels**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.weight.view(-1, *[1] * (x.dim() - 2))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(GROUPS, channels, eps=1e-6)
    if kind == "rms":
        return ChannelRMSNorm(channels)
    raise ValueError(f"norm must be 'group' or 'rms', got {kind!r}")


class SpatialAttention(nn.Module):
    """Single-head self-attention over the pixels of a map [B, C, H, W] (of each frame of [B, C, F, H, W])."""

    def __init__(self, channels: int, norm: str = "group"):
        super().__init__()
        self.norm = _norm(norm, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # fold frames into the batch
            b, c, f, h, w = x.shape
            y = self.forward(x.transpose(1, 2).reshape(b * f, c, h, w))
            return y.reshape(b, f, c, h, w).transpose(1, 2)
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).flatten(2).transpose(1, 2)).unsqueeze(1).chunk(3, dim=-1)  # [B, 1, HW, C]
        attn = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return x + self.out(attn).transpose(1, 2).reshape(b, c, h, w)


class _UpLevel(nn.Module):
    def __init__(self, resnets: list[nn.Module], upsample: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsample is None else self.upsample(x)


class ImageVAEDecoder(nn.Module):
    """AutoencoderKL decoder: latents [B, C, h, w] -> pixels [B, 3, 2^(levels-1) h, 2^(levels-1) w]."""

    def __init__(
        self, *, latent_channels: int, block_out_channels: tuple[int, ...], layers_per_block: int, post_quant_conv: bool
    ):
        super().__init__()
        chans = list(reversed(block_out_channels))  # deepest first
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if post_quant_conv else None
        self.conv_in = nn.Conv2d(latent_channels, chans[0], 3, padding=1)
        self.mid_res1 = ResnetBlock(chans[0], chans[0])
        self.mid_attn = SpatialAttention(chans[0])
        self.mid_res2 = ResnetBlock(chans[0], chans[0])
        self.up = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            resnets = [ResnetBlock(prev if j == 0 else ch, ch) for j in range(layers_per_block + 1)]
            self.up.append(_UpLevel(resnets, Upsample(ch) if i < len(chans) - 1 else None))
            prev = ch
        self.norm_out = nn.GroupNorm(GROUPS, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        x = self.mid_res2(self.mid_attn(self.mid_res1(self.conv_in(z))))
        for level in self.up:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class CausalConv3d(nn.Conv3d):
    """A k x k x k convolution, causal in time, that carries its last k - 1 input frames from one
    chunk of a decode to the next (the first chunk repeats its first frame instead)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3):
        super().__init__(in_channels, out_channels, kernel, padding=(0, kernel // 2, kernel // 2))
        self.cache: torch.Tensor | None = None

    def reset(self) -> None:
        self.cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        past = self.kernel_size[0] - 1
        if past:
            before = x[:, :, :1].expand(-1, -1, past, -1, -1) if self.cache is None else self.cache
            x = torch.cat([before, x], dim=2)
            self.cache = x[:, :, -past:].clone()  # not a view: it would keep the whole chunk alive
        return super().forward(x)


class ResBlock3d(nn.Module):
    """norm-SiLU-causal conv twice, with a 1x1x1 shortcut if widths differ."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.norm1 = _norm(norm, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = _norm(norm, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class Upsample3d(nn.Module):
    """2x nearest upsampling in space (and in time: every frame but a video's first is doubled),
    then a 3x3 conv per frame."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.started = False
        """Whether an earlier chunk of this decode passed (its first frame was the video's)."""

    def reset(self) -> None:
        self.started = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:
            first = x[:, :, :0] if self.started else x[:, :, :1]
            x = torch.cat([first, x[:, :, first.shape[2] :].repeat_interleave(2, dim=2)], dim=2)
        self.started = True
        b, c, f, h, w = x.shape
        y = self.conv(F.interpolate(x.transpose(1, 2).reshape(b * f, c, h, w), scale_factor=2.0, mode="nearest"))
        return y.reshape(b, f, -1, 2 * h, 2 * w).transpose(1, 2)


class VideoVAEDecoder(nn.Module):
    """Causal 3D decoder (see the module docstring): latents [B, C, F, h, w] -> [B, 3, 1 + t (F - 1), s h, s w].

    ``temporal_upsample`` flags the up blocks (deepest first) that double time; ``halve_on_upsample``
    makes each upsampling conv halve the width (Wan); ``mid_attention`` adds per-frame single-head
    attention to the mid block (Wan). Latent frames are decoded ``chunk_latent_frames`` at a time,
    the first chunk taking the remainder (CogVideoX: 13 = 3 + 2 x 5).
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        temporal_upsample: tuple[bool, ...],
        mid_attention: bool,
        norm: str,
        halve_on_upsample: bool,
        chunk_latent_frames: int,
    ):
        super().__init__()
        chans = list(reversed(block_out_channels))  # deepest first
        if len(temporal_upsample) != len(chans) - 1:
            raise ValueError("temporal_upsample needs one flag per upsampling block")
        self.chunk_latent_frames = chunk_latent_frames
        self.conv_in = CausalConv3d(latent_channels, chans[0])
        self.mid_res1 = ResBlock3d(chans[0], chans[0], norm)
        self.mid_attn = SpatialAttention(chans[0], norm) if mid_attention else nn.Identity()
        self.mid_res2 = ResBlock3d(chans[0], chans[0], norm)
        self.up = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            resnets = [ResBlock3d(prev if j == 0 else ch, ch, norm) for j in range(layers_per_block + 1)]
            prev = ch // 2 if halve_on_upsample else ch
            upsample = Upsample3d(ch, prev, temporal_upsample[i]) if i < len(chans) - 1 else None
            self.up.append(_UpLevel(resnets, upsample))
        self.norm_out = _norm(norm, chans[-1])
        self.conv_out = CausalConv3d(chans[-1], 3)

    def chunk_sizes(self, latent_frames: int) -> list[int]:
        """Latent frames per decode chunk; the first takes the remainder."""
        n = self.chunk_latent_frames
        if latent_frames <= n:
            return [latent_frames]
        return [n + latent_frames % n] + [n] * (latent_frames // n - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self._reset()
        try:
            chunks = [self._decode_chunk(c) for c in z.split(self.chunk_sizes(z.shape[2]), dim=2)]
        finally:
            self._reset()  # drop the carried frames
        return torch.cat(chunks, dim=2)

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_res2(self.mid_attn(self.mid_res1(self.conv_in(z))))
        for level in self.up:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))

    def _reset(self) -> None:
        for m in self.modules():
            if isinstance(m, CausalConv3d | Upsample3d):
                m.reset()
