"""A diffusion pipeline's text encoders, denoiser and VAE decoder with random weights, for timing.

Mirrors the three stages of a diffusers pipeline call (``encode_prompt``, the denoising loop's
transformer/UNet forward, ``vae.decode``) without a scheduler or tokenizer: token ids and latents
are random, and kernel shapes, not values, are what calibration measures. Modules are declared on
the meta device, cast, then allocated once on the target device and filled with N(0, 0.02)
weights (zero biases, unit norm gains), so a 12 B-parameter denoiser never passes through host
memory or float32. On ``device="meta"`` nothing is allocated: parameter counts and
FlopCounterMode forwards cost no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from calibration.diffusion_configs import DiffusionConfig
from calibration.models.dit import CrossDiT, MMDiT
from calibration.models.text import TextEncoder
from calibration.models.unet import UNet
from calibration.models.vae import ImageVAEDecoder, VideoVAEDecoder

INIT_STD = 0.02
COMPONENTS = ("text", "denoiser", "vae")
DENOISERS: dict[str, type[nn.Module]] = {"unet": UNet, "mmdit": MMDiT, "dit": CrossDiT}
_ROLE_KEYS = ("name", "states", "pooled")


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser reads from the text encoders, one row per denoiser row."""

    states: torch.Tensor
    """Text states [rows, text_tokens, text_dim] (cross-attended, or joined to the image tokens)."""
    pooled: torch.Tensor | None
    """Pooled text vector [rows, pooled_dim] (SDXL, SD3, Flux), else None."""

    @property
    def rows(self) -> int:
        return self.states.shape[0]

    def repeat_rows(self, k: int) -> Conditioning:
        """The batch tiled ``k`` times along rows (CFG with k = 2: [uncond; cond] share shapes)."""
        if k == 1:
            return self
        pooled = None if self.pooled is None else self.pooled.repeat(k, 1)
        return Conditioning(self.states.repeat(k, 1, 1), pooled)


def build_module(cls: type[nn.Module], kwargs: dict, *, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """``cls(**kwargs)`` in eval mode with random weights, allocated directly on ``device`` in ``dtype``."""
    with torch.device("meta"):
        module = cls(**kwargs)
    module = module.to(dtype)
    if device.type != "meta":
        module = module.to_empty(device=device)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if p.dim() > 1:
                    p.normal_(0.0, INIT_STD)
                elif name.endswith("bias"):
                    p.zero_()
                else:  # norm gains
                    p.fill_(1.0)
    return module.eval().requires_grad_(False)


class DiffusionPipeline:
    """Text encoders + denoiser + VAE decoder of one model, random weights, on one device/dtype.

    ``components`` selects what to build (a Flux denoiser alone is 24 GB in bf16); a stage that was
    not built raises when called, and ``random_conditioning`` stands in for the text encoders.
    """

    def __init__(
        self,
        cfg: DiffusionConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        components: tuple[str, ...] = COMPONENTS,
    ):
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; allowed: {', '.join(COMPONENTS)}")
        self.cfg = cfg
        self.dtype = dtype
        self.device = torch.device(device)
        build = {"dtype": dtype, "device": self.device}
        self._roles = [(enc["states"], enc["pooled"]) for enc in cfg.text_encoders]
        self.text_encoders: list[TextEncoder] = []
        """Built text encoders, in catalog order (empty without "text")."""
        if "text" in components:
            for enc in cfg.text_encoders:
                kwargs = {k: v for k, v in enc.items() if k not in _ROLE_KEYS}
                self.text_encoders.append(build_module(TextEncoder, kwargs, **build))
        self.denoiser: nn.Module | None = (
            build_module(DENOISERS[cfg.architecture], cfg.denoiser, **build) if "denoiser" in components else None
        )
        self.vae: nn.Module | None = None
        if "vae" in components:
            kind, kwargs = cfg.vae["kind"], {k: v for k, v in cfg.vae.items() if k != "kind"}
            self.vae = build_module(VideoVAEDecoder if kind == "video" else ImageVAEDecoder, kwargs, **build)

    # -- shapes -----------------------------------------------------------------------------------

    def latent_shape(self, width: int, height: int, frames: int = 1) -> tuple[int, ...]:
        """One row's latent: (C, h, w) for images, (C, latent frames, h, w) for video."""
        cfg, f = self.cfg, self.cfg.vae_spatial_factor
        m = cfg.size_multiple
        if width < m or height < m or width % m or height % m:
            raise ValueError(f"{cfg.name}: width and height must be positive multiples of {m}, got {width}x{height}")
        if not cfg.is_video:
            if frames != 1:
                raise ValueError(f"{cfg.name} generates images: frames must be 1, got {frames}")
            return (cfg.latent_channels, height // f, width // f)
        t = cfg.vae_temporal_factor
        if frames < 1 or (frames - 1) % t:
            raise ValueError(f"{cfg.name}: frames must be {t}k+1, got {frames}")
        return (cfg.latent_channels, cfg.latent_frames(frames), height // f, width // f)

    def latent_tokens(self, width: int, height: int, frames: int = 1) -> int:
        """Denoiser tokens per row: (H/f)(W/f)/patch^2 per latent frame (UNet: latent pixels)."""
        *_, h, w = self.latent_shape(width, height, frames)
        p = self.cfg.patch_size
        return (h // p) * (w // p) * self.cfg.latent_frames(frames)

    def make_latents(self, rows: int, width: int, height: int, frames: int = 1) -> torch.Tensor:
        """Random latents [rows, *latent_shape]."""
        return torch.randn(rows, *self.latent_shape(width, height, frames), dtype=self.dtype, device=self.device)

    # -- stages -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_text(self, num_prompts: int) -> Conditioning:
        """Run every text encoder on random token ids of ``num_prompts`` prompts."""
        if not self.text_encoders:
            raise RuntimeError(f"{self.cfg.name}: built without 'text'; use random_conditioning()")
        channel, sequence, pooled = [], [], []
        for enc, (states_role, pooled_role) in zip(self.text_encoders, self._roles):
            ids = torch.randint(0, enc.vocab_size, (num_prompts, enc.tokens), device=self.device)
            states, pool = enc(ids)
            if states_role == "channel":
                channel.append(states)
            elif states_role == "sequence":
                sequence.append(states)
            if pooled_role:
                pooled.append(pool)
        width = self.cfg.denoiser["text_dim"]
        parts = ([torch.cat(channel, dim=-1)] if channel else []) + sequence
        states = torch.cat([F.pad(s, (0, width - s.shape[-1])) for s in parts], dim=1)
        return Conditioning(states, torch.cat(pooled, dim=-1) if pooled else None)

    def random_conditioning(self, num_prompts: int) -> Conditioning:
        """Random conditioning of the shapes ``encode_text`` returns, without the text encoders."""
        kw = {"dtype": self.dtype, "device": self.device}
        states = torch.randn(num_prompts, self.cfg.text_tokens, self.cfg.denoiser["text_dim"], **kw)
        pooled_dim = self.cfg.denoiser.get("pooled_dim", 0)
        return Conditioning(states, torch.randn(num_prompts, pooled_dim, **kw) if pooled_dim else None)

    def conditioning_for(self, cond: Conditioning, rows: int) -> Conditioning:
        """Tile a batch's conditioning to ``rows`` rows (CFG: 2 x images), a multiple of its rows."""
        if rows < 1 or rows % cond.rows:
            raise ValueError(f"rows {rows} must be a positive multiple of the conditioning's {cond.rows}")
        return cond.repeat_rows(rows // cond.rows)

    @torch.inference_mode()
    def denoise(self, latents: torch.Tensor, cond: Conditioning, timestep: float) -> torch.Tensor:
        """One denoiser forward over latents [rows, ...] (CFG: the caller concatenates both halves)."""
        if self.denoiser is None:
            raise RuntimeError(f"{self.cfg.name}: built without 'denoiser'")
        if cond.rows != latents.shape[0]:
            raise ValueError(f"conditioning has {cond.rows} rows, latents {latents.shape[0]}; use conditioning_for()")
        t = torch.full((latents.shape[0],), float(timestep), device=latents.device)
        return self.denoiser(latents, t, cond.states, cond.pooled)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode of [images, ...] latents -> pixels [images, 3, H, W] or [videos, 3, frames, H, W]."""
        if self.vae is None:
            raise RuntimeError(f"{self.cfg.name}: built without 'vae'")
        return self.vae(latents)
