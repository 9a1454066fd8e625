"""Random-weight diffusion pipelines (calibration/models) against the diffusion catalog.

Big models are built on the meta device (no memory): parameter counts against the catalog, and a
FlopCounterMode forward for shapes. sd-tiny runs end to end on the CPU.
"""

import pytest
import yaml

torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from calibration.diffusion_configs import (  # noqa: E402
    DIFFUSION_YAML,
    catalog_entry,
    diffusion_config,
    diffusion_models,
)
from calibration.models.diffusion import Conditioning, DiffusionPipeline, build_module  # noqa: E402
from calibration.models.dit import CrossDiT, MMDiT  # noqa: E402
from calibration.models.text import TextEncoder  # noqa: E402
from calibration.models.vae import VideoVAEDecoder  # noqa: E402

CATALOG = ["sd-1.5", "sdxl", "sd3-medium", "flux-dev", "flux-schnell", "cogvideox-2b", "wan2.1-1.3b", "sd-tiny"]

# Relative tolerance on parameters per model. Every denoiser and text encoder follows its published
# architecture (within 0.3 %); the video VAEs are approximations (vae.py): Wan's temporal
# upsampling repeats frames instead of running a (3, 1, 1) time convolution (-2 %).
DENOISER_TOL = 0.05
TEXT_TOL = 0.01
VAE_TOL = {"cogvideox-2b": 0.05, "wan2.1-1.3b": 0.05}


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def meta_pipelines():
    return {name: DiffusionPipeline(diffusion_config(name), device="meta") for name in CATALOG}


def test_every_catalog_model_has_a_config():
    assert diffusion_models() == list(yaml.safe_load(DIFFUSION_YAML.read_text())["diffusion_models"]) == CATALOG


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown diffusion model 'dall-e'; allowed: .*flux-dev"):
        diffusion_config("dall-e")


@pytest.mark.parametrize("name", CATALOG)
def test_parameter_counts_match_the_catalog(meta_pipelines, name):
    pipe, entry = meta_pipelines[name], catalog_entry(name)
    assert _params(pipe.denoiser) == pytest.approx(entry["denoiser_params"], rel=DENOISER_TOL)
    assert len(pipe.text_encoders) == len(entry["text_encoders"])
    for encoder, spec in zip(pipe.text_encoders, entry["text_encoders"]):
        assert _params(encoder) == pytest.approx(spec["params"], rel=TEXT_TOL), spec["name"]
    assert _params(pipe.vae) == pytest.approx(entry["vae"]["params"], rel=VAE_TOL.get(name, 0.01))


@pytest.mark.parametrize("name", CATALOG)
def test_latent_tokens_follow_the_catalog_formula(meta_pipelines, name):
    pipe, cfg = meta_pipelines[name], diffusion_config(name)
    w, h, f = cfg.default_width, cfg.default_height, cfg.default_frames
    frames = (f - 1) // cfg.vae_temporal_factor + 1
    m = cfg.vae_spatial_factor * cfg.patch_size
    assert pipe.latent_tokens(w, h, f) == (w // m) * (h // m) * frames
    assert pipe.make_latents(2, w, h, f).shape == (2, *pipe.latent_shape(w, h, f))


@pytest.mark.parametrize("name", CATALOG)
def test_text_states_have_the_catalog_token_count(meta_pipelines, name):
    pipe, cfg = meta_pipelines[name], diffusion_config(name)
    cond = pipe.encode_text(2)
    assert cond.states.shape == (2, cfg.text_tokens, cfg.denoiser["text_dim"])
    expected = pipe.random_conditioning(2)
    assert (cond.pooled is None) == (expected.pooled is None)
    if cond.pooled is not None:
        assert cond.pooled.shape == expected.pooled.shape


def test_video_latents_decode_to_the_requested_frames(meta_pipelines):
    pipe = meta_pipelines["cogvideox-2b"]
    assert pipe.vae.chunk_sizes(13) == [3, 2, 2, 2, 2, 2]  # as diffusers: 2 latent frames a chunk
    pixels = pipe.decode(pipe.make_latents(1, 64, 48, 9))
    assert pixels.shape == (1, 3, 9, 48, 64)


def test_dit_forward_on_meta_keeps_the_latent_shape(meta_pipelines):
    pipe, cfg = meta_pipelines["cogvideox-2b"], diffusion_config("cogvideox-2b")
    latents = pipe.make_latents(2, cfg.default_width, cfg.default_height, cfg.default_frames)
    out = pipe.denoise(latents, pipe.conditioning_for(pipe.random_conditioning(1), 2), 500.0)
    assert out.shape == latents.shape == (2, 16, 13, 60, 90)


def test_bad_sizes_and_rows_are_rejected(meta_pipelines):
    flux, cog = meta_pipelines["flux-dev"], meta_pipelines["cogvideox-2b"]
    with pytest.raises(ValueError, match="multiples of 16"):
        flux.latent_shape(1000, 1024)
    with pytest.raises(ValueError, match="frames must be 1"):
        flux.latent_shape(1024, 1024, 5)
    with pytest.raises(ValueError, match="4k\\+1"):
        cog.latent_shape(720, 480, 50)
    cond = flux.random_conditioning(2)
    with pytest.raises(ValueError, match="multiple"):
        flux.conditioning_for(cond, 3)
    with pytest.raises(ValueError, match="rows"):
        flux.denoise(flux.make_latents(4, 256, 256), cond, 1.0)


def test_only_requested_components_are_built():
    pipe = DiffusionPipeline(diffusion_config("flux-dev"), device="meta", components=("denoiser",))
    assert pipe.text_encoders == [] and pipe.vae is None and pipe.denoiser is not None
    with pytest.raises(RuntimeError, match="random_conditioning"):
        pipe.encode_text(1)
    with pytest.raises(ValueError, match="unknown components"):
        DiffusionPipeline(diffusion_config("flux-dev"), device="meta", components=("unet",))


# Narrow versions of every denoiser variant, run for real in bfloat16 (what calibration uses on a
# GPU): meta forwards check shapes only, these check that dtypes and values work out.
SMALL_DENOISERS = [
    (MMDiT, {"depth": 2, "pooled_dim": 24, "context_pre_only_last": True}, (2, 16, 16, 16), 24),  # SD3
    (
        MMDiT,
        {"depth": 1, "single_depth": 2, "pooled_dim": 24, "guidance": True, "qk_norm": "rms", "rope_axes": (8, 12, 12)},
        (2, 16, 16, 16),
        24,
    ),  # Flux
    (
        MMDiT,
        {"depth": 2, "cond_dim": 32, "time_freq_dim": 64, "qk_norm": "layer", "shared_weights": True},
        (2, 16, 3, 8, 12),
        0,
    ),
    (CrossDiT, {"depth": 2, "ffn_dim": 100, "rope_axes": (12, 10, 10)}, (2, 16, 3, 8, 12), 0),  # Wan
]


@pytest.mark.parametrize(("cls", "kwargs", "shape", "pooled_dim"), SMALL_DENOISERS)
def test_small_denoisers_run_in_bfloat16(cls, kwargs, shape, pooled_dim):
    common = {"in_channels": 16, "patch_size": 2, "dim": 64, "num_heads": 2, "text_dim": 48}
    model = build_module(cls, {**common, **kwargs}, dtype=torch.bfloat16, device=torch.device("cpu"))
    latents = torch.randn(shape, dtype=torch.bfloat16)
    pooled = torch.randn(2, pooled_dim, dtype=torch.bfloat16) if pooled_dim else None
    with torch.inference_mode():
        out = model(latents, torch.full((2,), 500.0), torch.randn(2, 10, 48, dtype=torch.bfloat16), pooled)
    assert out.shape == latents.shape and out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_small_t5_and_video_vae_run_in_bfloat16():
    t5 = {"style": "t5", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "ffn_size": 96, "gated_ffn": True}
    encoder = build_module(
        TextEncoder, {**t5, "vocab_size": 100, "tokens": 40}, dtype=torch.bfloat16, device=torch.device("cpu")
    )
    vae = {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "temporal_upsample": (True, True, False)}
    wan_like = {"mid_attention": True, "norm": "rms", "halve_on_upsample": True, "chunk_latent_frames": 1}
    decoder = build_module(
        VideoVAEDecoder, {"latent_channels": 16, **vae, **wan_like}, dtype=torch.bfloat16, device=torch.device("cpu")
    )
    with torch.inference_mode():
        states, pooled = encoder(torch.randint(0, 100, (2, 40)))
        pixels = decoder(torch.randn(1, 16, 3, 4, 4, dtype=torch.bfloat16))
    assert states.shape == (2, 40, 64) and pooled is None and torch.isfinite(states).all()
    assert pixels.shape == (1, 3, 9, 32, 32) and torch.isfinite(pixels).all()


def test_sd_tiny_end_to_end_on_cpu():
    torch.manual_seed(0)
    pipe = DiffusionPipeline(diffusion_config("sd-tiny"))
    cond = pipe.encode_text(2)
    assert isinstance(cond, Conditioning) and cond.states.shape == (2, 77, 128)
    latents = pipe.make_latents(4, 256, 256)  # CFG: 2 images x (uncond, cond)
    noise = pipe.denoise(latents, pipe.conditioning_for(cond, 4), 500.0)
    assert noise.shape == (4, 4, 32, 32) and torch.isfinite(noise).all()
    pixels = pipe.decode(noise[:2])
    assert pixels.shape == (2, 3, 256, 256) and torch.isfinite(pixels).all()


def test_sd_tiny_flops_match_the_catalog_fit_at_a_third_size(meta_pipelines):
    pipe, fit = meta_pipelines["sd-tiny"], catalog_entry("sd-tiny")["unet_flops"]
    latents = pipe.make_latents(1, 384, 384)  # the fit used 256^2 and 512^2
    counted = _flops(lambda: pipe.denoise(latents, pipe.random_conditioning(1), 1.0))
    n = pipe.latent_tokens(384, 384)
    assert counted == pytest.approx(fit["linear"] * n + fit["quadratic"] * n * n, rel=0.02)


def test_sd_tiny_text_and_vae_flops_match_the_catalog(meta_pipelines):
    pipe, entry = meta_pipelines["sd-tiny"], catalog_entry("sd-tiny")
    enc = entry["text_encoders"][0]
    L, d, T = enc["num_layers"], enc["hidden_size"], enc["tokens"]
    per_prompt = 2 * L * (4 * d * d + 2 * d * enc["ffn_size"]) * T + 4 * L * d * T * T
    assert _flops(lambda: pipe.encode_text(1)) == pytest.approx(per_prompt, rel=0.01)
    vae, n_lat = entry["vae"], (384 // 8) ** 2
    expected = 384 * 384 * vae["flops_per_pixel"] + 4 * vae["mid_attention_channels"] * n_lat * n_lat
    assert _flops(lambda: pipe.decode(pipe.make_latents(1, 384, 384))) == pytest.approx(expected, rel=0.02)
