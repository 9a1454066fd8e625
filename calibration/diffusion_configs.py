"""Shapes of the diffusion pipelines calibration builds random-weight replicas of.

Pipeline facts (latent channels, VAE factors, patch size, text tokens, CFG, default sizes and the
text encoders' layer shapes) come from the simulator's catalog,
``sim/catalog/data/diffusion_models.yaml``, read with pyyaml because calibration runs where
pydantic is not installed. What the catalog does not record (module widths per level, head
counts, vocabularies, how text states are joined) is here, from the published configs collected in
the calibration notes (shared/reference/calibration.md section 3.2).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The simulator's diffusion catalog (``sim`` and ``calibration`` are sibling top-level packages).
DIFFUSION_YAML = Path(__file__).resolve().parents[1] / "sim" / "catalog" / "data" / "diffusion_models.yaml"


@dataclass(frozen=True)
class DiffusionConfig:
    """One pipeline: catalog facts plus the kwargs of its modules (calibration/models)."""

    name: str
    architecture: str
    """unet | mmdit (joint attention over image and text tokens) | dit (cross-attention to text)."""
    latent_channels: int
    vae_spatial_factor: int
    vae_temporal_factor: int
    patch_size: int
    """Latent pixels per token side (UNet 1)."""
    text_tokens: int
    """Text tokens the denoiser attends to (all encoders whose states it sees, joined)."""
    cfg: bool
    default_width: int
    default_height: int
    default_frames: int
    default_steps: int
    denoiser: dict
    """kwargs of ``UNet`` (unet), ``MMDiT`` (mmdit) or ``CrossDiT`` (dit)."""
    text_encoders: tuple[dict, ...]
    """Per encoder: ``TextEncoder`` kwargs plus ``name``, ``states`` (how its final states join the
    denoiser's text input: ``"channel"``, ``"sequence"`` or None) and ``pooled`` (whether its
    pooled vector feeds the denoiser)."""
    vae: dict
    """``kind`` ("image" or "video") plus the kwargs of ``ImageVAEDecoder`` or ``VideoVAEDecoder``."""

    @property
    def is_video(self) -> bool:
        return self.vae_temporal_factor > 1

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (VAE downsampling x patch)."""
        return self.vae_spatial_factor * self.patch_size

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal_factor + 1 if self.is_video else 1


# Denoiser kwargs not in the catalog; in_channels and (DiTs) patch_size are added from it.
_DENOISERS: dict[str, dict[str, Any]] = {
    # UNet2DConditionModel (320, 640, 1280, 1280); "attention_head_dim=8" there is 8 heads per level
    "sd-1.5": {
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "transformer_layers": (1, 1, 1, 0),
        "attention_heads": (8, 8, 8, 8),
        "mid_transformer_layers": 1,
        "text_dim": 768,
    },
    # sd_xl_base.yaml: channel_mult (1, 2, 4), transformer_depth (0, 2, 10), head dim 64, context 2048,
    # adm_in_channels 2816 = 1280 pooled + 6 x 256
    "sdxl": {
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "transformer_layers": (0, 2, 10),
        "attention_heads": (5, 10, 20),
        "mid_transformer_layers": 10,
        "text_dim": 2048,
        "pooled_dim": 1280,
    },
    # SD3Transformer2DModel: depth 24, 24 x 64, joint dim 4096, pooled 2048 (CLIP-L 768 + bigG 1280)
    "sd3-medium": {
        "dim": 1536,
        "num_heads": 24,
        "depth": 24,
        "text_dim": 4096,
        "pooled_dim": 2048,
        "context_pre_only_last": True,
    },
    # FluxTransformer2DModel: 19 double + 38 single blocks, 24 x 128, RoPE axes (16, 56, 56)
    "flux-dev": {
        "dim": 3072,
        "num_heads": 24,
        "depth": 19,
        "single_depth": 38,
        "text_dim": 4096,
        "pooled_dim": 768,
        "guidance": True,
        "qk_norm": "rms",
        "rope_axes": (16, 56, 56),
    },
    "flux-schnell": {
        "dim": 3072,
        "num_heads": 24,
        "depth": 19,
        "single_depth": 38,
        "text_dim": 4096,
        "pooled_dim": 768,
        "qk_norm": "rms",
        "rope_axes": (16, 56, 56),
    },
    # CogVideoXTransformer3DModel defaults: 30 layers, 30 x 64, time_embed_dim 512, text 4096
    "cogvideox-2b": {
        "dim": 1920,
        "num_heads": 30,
        "depth": 30,
        "text_dim": 4096,
        "cond_dim": 512,
        "time_freq_dim": 1920,
        "qk_norm": "layer",
        "shared_weights": True,
    },
    # WanTransformer3DModel, Wan-T2V-1.3B: 30 layers, 12 x 128, FFN 8960; 3D RoPE split 44/42/42
    "wan2.1-1.3b": {
        "dim": 1536,
        "num_heads": 12,
        "depth": 30,
        "ffn_dim": 8960,
        "text_dim": 4096,
        "rope_axes": (44, 42, 42),
    },
    # servesim's CPU test model: SD-1.5's layout at 1/20 of the width, one ResNet per level
    # (sized for ~50 ms per CFG step on one CPU thread in float32)
    "sd-tiny": {
        "block_out_channels": (16, 32, 64, 64),
        "layers_per_block": 1,
        "transformer_layers": (1, 1, 1, 0),
        "attention_heads": (1, 1, 2, 2),
        "mid_transformer_layers": 1,
        "text_dim": 128,
        "norm_num_groups": 8,
    },
}

# Text-encoder kwargs not in the catalog, by catalog encoder name (heads and vocabularies from
# calibration.md section 3.2; OpenCLIP bigG's 1280 x 1280 text projection is in its catalog params).
_TEXT_ENCODERS: dict[str, dict[str, Any]] = {
    "clip-l": {"style": "clip", "num_heads": 12, "vocab_size": 49408},
    "openclip-bigg": {"style": "clip", "num_heads": 20, "vocab_size": 49408, "projection_dim": 1280},
    "t5-xxl": {"style": "t5", "num_heads": 64, "vocab_size": 32128},
    "umt5-xxl": {"style": "t5", "num_heads": 64, "vocab_size": 256384},
    "sd-tiny-clip": {"style": "clip", "num_heads": 2, "vocab_size": 49408},
}

# How each pipeline uses its encoders, in catalog order: (states, pooled). CLIP states joined along
# channels come first (SDXL 768 + 1280 = 2048; SD3 pads that to 4096), then T5 states along tokens.
_TEXT_ROLES: dict[str, tuple[tuple[str | None, bool], ...]] = {
    "sd-1.5": (("channel", False),),
    "sdxl": (("channel", False), ("channel", True)),
    "sd3-medium": (("channel", True), ("channel", True), ("sequence", False)),
    "flux-dev": ((None, True), ("sequence", False)),  # CLIP-L only gives the pooled vector
    "flux-schnell": ((None, True), ("sequence", False)),
    "cogvideox-2b": (("sequence", False),),
    "wan2.1-1.3b": (("sequence", False),),
    "sd-tiny": (("channel", False),),
}

# VAE decoder kwargs by catalog VAE name; latent_channels (and chunking) come from the catalog.
_VAES: dict[str, dict[str, Any]] = {
    "sd-vae": {
        "kind": "image",
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "post_quant_conv": True,
    },
    "flux-vae": {
        "kind": "image",
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "post_quant_conv": False,
    },
    # AutoencoderKLCogVideoX defaults: (128, 256, 256, 512), 3 layers per block, time compressed 4x
    "cogvideox-vae": {
        "kind": "video",
        "block_out_channels": (128, 256, 256, 512),
        "layers_per_block": 3,
        "temporal_upsample": (True, True, False),
        "mid_attention": False,
        "norm": "group",
        "halve_on_upsample": False,
    },
    # AutoencoderKLWan defaults: base 96, dim_mult (1, 2, 4, 4), 2 res blocks, temporal (False, True, True) reversed
    "wan-vae": {
        "kind": "video",
        "block_out_channels": (96, 192, 384, 384),
        "layers_per_block": 2,
        "temporal_upsample": (True, True, False),
        "mid_attention": True,
        "norm": "rms",
        "halve_on_upsample": True,
    },
    "sd-tiny-vae": {
        "kind": "image",
        "block_out_channels": (32, 64, 64, 64),
        "layers_per_block": 1,
        "post_quant_conv": True,
    },
}


@functools.cache
def _catalog() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(DIFFUSION_YAML.read_text())["diffusion_models"]


def catalog_entry(name: str) -> dict[str, Any]:
    """A copy of the raw catalog entry of a pipeline (anchors merged), for its published counts."""
    if name not in _catalog():
        raise ValueError(f"unknown diffusion model {name!r}; allowed: {', '.join(_catalog())}")
    return copy.deepcopy(_catalog()[name])


def diffusion_models() -> list[str]:
    """Catalog pipelines that calibration can build, in catalog order."""
    return [name for name in _catalog() if name in _DENOISERS]


def diffusion_config(name: str) -> DiffusionConfig:
    """The config of catalog pipeline ``name`` (ValueError listing the allowed names)."""
    if name not in diffusion_models():
        raise ValueError(f"unknown diffusion model {name!r}; allowed: {', '.join(diffusion_models())}")
    entry = _catalog()[name]
    denoiser = {"in_channels": entry["latent_channels"], **_DENOISERS[name]}
    if entry["architecture"] != "unet":
        denoiser["patch_size"] = entry["patch_size"]
    encoders = tuple(
        {
            "name": enc["name"],
            "states": states,
            "pooled": pooled,
            "num_layers": enc["num_layers"],
            "hidden_size": enc["hidden_size"],
            "ffn_size": enc["ffn_size"],
            "gated_ffn": enc["gated_ffn"],
            "tokens": enc["tokens"],
            **_TEXT_ENCODERS[enc["name"]],
        }
        for enc, (states, pooled) in zip(entry["text_encoders"], _TEXT_ROLES[name], strict=True)
    )
    vae = {"latent_channels": entry["latent_channels"], **_VAES[entry["vae"]["name"]]}
    if vae["kind"] == "video":
        vae["chunk_latent_frames"] = entry["vae"]["decode_chunk_frames"] // entry["vae_temporal_factor"]
    return DiffusionConfig(
        name=name,
        architecture=entry["architecture"],
        latent_channels=entry["latent_channels"],
        vae_spatial_factor=entry["vae_spatial_factor"],
        vae_temporal_factor=entry["vae_temporal_factor"],
        patch_size=entry["patch_size"],
        text_tokens=entry["text_tokens"],
        cfg=entry["cfg"],
        default_width=entry["default_width"],
        default_height=entry["default_height"],
        default_frames=entry.get("default_frames", 1),
        default_steps=entry["default_steps"],
        denoiser=denoiser,
        text_encoders=encoders,
        vae=vae,
    )
