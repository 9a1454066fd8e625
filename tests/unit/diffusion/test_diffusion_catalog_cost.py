"""The diffusion catalog against the counted FLOPs, and the roofline against published latencies.

FLOP references are the FlopCounterMode counts of the calibration notes (Appendix A); latency
anchors are the published pipeline times of its section 2.4.
"""

import pytest

from sim import catalog
from sim.diffusion.cost import (
    DiffusionConstantCost,
    DiffusionRooflineCost,
    diffusion_memory_budget,
    request_bytes,
)
from sim.errors import ConfigError

REQUIRED = {"sd-1.5", "sdxl", "sd3-medium", "flux-dev", "flux-schnell", "cogvideox-2b", "wan2.1-1.3b"}


def test_required_entries_load_and_are_sourced():
    models = catalog.diffusion_models()
    assert REQUIRED <= set(models)
    for m in models.values():
        assert m.source and m.efficiency.source and m.vae.source and m.vae.efficiency.source
        assert all(e.source and e.efficiency.source for e in m.text_encoders)
        assert m.check_size(m.default_width, m.default_height, m.default_frames) == ""


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown diffusion model 'dall-e'; allowed: .*flux-dev"):
        catalog.get_diffusion_model("dall-e")


@pytest.mark.parametrize(
    ("name", "width", "height", "frames", "tokens"),
    [
        ("flux-dev", 1024, 1024, 1, 4096),
        ("sd3-medium", 1024, 1024, 1, 4096),
        ("sdxl", 1024, 1024, 1, 16384),  # UNet: latent pixels
        ("sd-1.5", 512, 512, 1, 4096),
        ("cogvideox-2b", 720, 480, 49, 17550),
        ("wan2.1-1.3b", 832, 480, 81, 32760),
    ],
)
def test_latent_tokens(name, width, height, frames, tokens):
    assert catalog.get_diffusion_model(name).latent_tokens(width, height, frames) == tokens


def test_latent_frames_and_video_length():
    cog, wan, flux = (catalog.get_diffusion_model(n) for n in ("cogvideox-2b", "wan2.1-1.3b", "flux-dev"))
    assert (cog.latent_frames(49), wan.latent_frames(81), flux.latent_frames(1)) == (13, 21, 1)
    assert cog.video_seconds(49) == pytest.approx(49 / 8)
    assert wan.video_seconds(81) == pytest.approx(81 / 16)
    assert flux.video_seconds(1) == 0.0 and flux.default_frames == 1


# (model, width, height, frames, TFLOP per forward at one row), Appendix A. The closed forms
# land within 1 %; the tolerance leaves room for rounding of the published counts.
DENOISER_TFLOP = [
    ("sd-1.5", 512, 512, 1, 0.803),
    ("sd-1.5", 768, 768, 1, 2.148),
    ("sdxl", 1024, 1024, 1, 6.761),
    ("sdxl", 512, 512, 1, 1.589),
    ("flux-dev", 1024, 1024, 1, 74.38),
    ("flux-dev", 512, 512, 1, 21.50),
    ("flux-schnell", 1024, 1024, 1, 69.47),
    ("sd3-medium", 1024, 1024, 1, 8.904),
    ("cogvideox-2b", 720, 480, 49, 120.0),
    ("wan2.1-1.3b", 832, 480, 81, 283.0),
]


@pytest.mark.parametrize(("name", "width", "height", "frames", "tflop"), DENOISER_TFLOP)
def test_denoiser_flops_match_counted(name, width, height, frames, tflop):
    m = catalog.get_diffusion_model(name)
    assert m.denoiser_flops(m.latent_tokens(width, height, frames)) / 1e12 == pytest.approx(tflop, rel=0.02)


@pytest.mark.parametrize(
    ("name", "tflop"),
    [
        ("sd-1.5", 0.0133),
        ("sdxl", 0.0133 + 0.0979),
        ("sd3-medium", 0.0133 + 0.0979 + 2.397),
        ("flux-dev", 0.0133 + 4.845),
        ("flux-schnell", 0.0133 + 2.397),
    ],
)
def test_text_encoder_flops_match_counted(name, tflop):
    assert catalog.get_diffusion_model(name).text_encoder_flops() / 1e12 == pytest.approx(tflop, rel=0.02)


@pytest.mark.parametrize(
    ("name", "width", "height", "frames", "tflop"),
    [
        ("sd-1.5", 512, 512, 1, 2.51),
        ("sdxl", 1024, 1024, 1, 10.47),
        ("flux-dev", 1024, 1024, 1, 10.47),
        ("cogvideox-2b", 720, 480, 49, 315.0),
        ("wan2.1-1.3b", 832, 480, 81, 275.4),
    ],
)
def test_vae_decode_flops_match_counted(name, width, height, frames, tflop):
    assert catalog.get_diffusion_model(name).vae_decode_flops(width, height, frames) / 1e12 == pytest.approx(
        tflop, rel=0.02
    )


def test_weights_bytes_sum_the_components():
    flux = catalog.get_diffusion_model("flux-dev")
    params = 11.9e9 + 123.1e6 + 4.762e9 + 49.49e6  # denoiser, CLIP-L, T5-XXL, VAE decoder
    assert flux.weights_bytes() == pytest.approx(2 * params)
    assert flux.weights_bytes(1) == pytest.approx(params)


@pytest.mark.parametrize(
    ("name", "width", "height", "frames", "message"),
    [
        ("flux-dev", 1000, 1024, 1, "width 1000 must be a positive multiple of 16 for flux-dev"),
        ("sd-1.5", 512, 500, 1, "height 500 must be a positive multiple of 8 for sd-1.5"),
        ("sdxl", 1024, 1024, 5, "frames 5: sdxl generates images (frames must be 1)"),
        ("cogvideox-2b", 720, 480, 50, "frames 50 must be 4k+1 (1, 5, 9, ...) for cogvideox-2b"),
    ],
)
def test_check_size_says_why(name, width, height, frames, message):
    m = catalog.get_diffusion_model(name)
    assert m.check_size(width, height, frames) == message
    assert m.check_size(m.default_width, m.default_height, m.default_frames) == ""


def _cost(name, gpu="h100-sxm"):
    return DiffusionRooflineCost(catalog.get_diffusion_model(name), catalog.get_gpu(gpu))


def test_cfg_doubles_a_compute_bound_step():
    cost = _cost("flux-dev")
    assert cost.denoise_step_s(8, 4096) / cost.denoise_step_s(4, 4096) > 1.8


def test_attention_makes_flux_steps_superlinear_in_pixels():
    cost = _cost("flux-dev")
    ratio = cost.denoise_step_s(1, 4096) / cost.denoise_step_s(1, 1024)  # 1024^2 vs 512^2
    assert 3 < ratio < 4


def test_small_unet_steps_are_overhead_bound():
    cost = _cost("sd-1.5")
    assert cost.denoise_step_s(1, 4096) > 0.8 * cost.denoise_step_s(2, 4096)


def test_empty_stages_cost_nothing():
    cost = _cost("sdxl")
    assert cost.text_encode_s(0) == cost.denoise_step_s(0, 16384) == cost.vae_decode_s(0, 1024, 1024, 1) == 0.0


def _pipeline_s(name, gpu):
    """Text encode (prompt + negative prompt with guidance) + steps x rows + one VAE decode."""
    m = catalog.get_diffusion_model(name)
    cost = _cost(name, gpu)
    rows = 2 if m.cfg else 1
    w, h, f = m.default_width, m.default_height, m.default_frames
    return (
        cost.text_encode_s(rows)
        + m.default_steps * cost.denoise_step_s(rows, m.latent_tokens(w, h, f))
        + cost.vae_decode_s(1, w, h, f)
    )


@pytest.mark.parametrize(
    ("name", "gpu", "published_s"),
    [
        ("sd-1.5", "h100-sxm", 0.572),  # ONNX Runtime, 512^2, 50 steps
        ("sdxl", "a100-80gb", 2.54),  # bf16 + SDPA + torch.compile, 1024^2, 30 steps
        ("flux-dev", "a100-80gb", 13.84),  # eager, 1024^2, 28 steps
        ("cogvideox-2b", "h100-sxm", 45.0),  # 49 f 720x480, 50 steps
    ],
)
def test_published_latencies_within_factor_1_5(name, gpu, published_s):
    ratio = _pipeline_s(name, gpu) / published_s
    assert 1 / 1.5 < ratio < 1.5


def test_efficiency_override_applies_to_the_denoiser():
    m, g = catalog.get_diffusion_model("flux-dev"), catalog.get_gpu("h100-sxm")
    slow = DiffusionRooflineCost(m, g, compute_efficiency=m.efficiency.compute / 2)
    fast = DiffusionRooflineCost(m, g)
    assert slow.denoise_step_s(4, 4096) > 1.9 * fast.denoise_step_s(4, 4096) - 2 * m.efficiency.overhead_s
    assert slow.vae_decode_s(1, 1024, 1024, 1) == fast.vae_decode_s(1, 1024, 1024, 1)


def test_constant_cost():
    cost = DiffusionConstantCost(step_s=0.1, per_row_s=0.01, text_encode_s=0.02, vae_decode_s=0.05)
    assert cost.denoise_step_s(4, 123) == pytest.approx(0.14)
    assert (cost.text_encode_s(0), cost.text_encode_s(7)) == (0.0, 0.02)
    assert cost.vae_decode_s(3, 512, 512, 1) == pytest.approx(0.15)


def test_request_bytes_scale_with_rows_and_frames():
    flux, sdxl, wan = (catalog.get_diffusion_model(n) for n in ("flux-dev", "sdxl", "wan2.1-1.3b"))
    one = request_bytes(flux, 1024, 1024, 1, 1, cfg=False)
    assert 0.5 * 2**30 < one < 8 * 2**30
    assert request_bytes(flux, 1024, 1024, 1, 4, cfg=False) == pytest.approx(4 * one)
    assert request_bytes(sdxl, 1024, 1024, 1, 1, cfg=True) > request_bytes(sdxl, 1024, 1024, 1, 1, cfg=False)
    assert request_bytes(wan, 832, 480, 81, 1, cfg=True) > request_bytes(wan, 832, 480, 5, 1, cfg=True)


def test_memory_budget_and_models_that_do_not_fit():
    flux, h100 = catalog.get_diffusion_model("flux-dev"), catalog.get_gpu("h100-sxm")
    budget = diffusion_memory_budget(flux, h100, 0.9)
    assert budget == pytest.approx(0.9 * 80 * 2**30 - flux.weights_bytes())
    tiny = h100.model_copy(update={"name": "tiny-gpu", "memory_gib": 16})
    with pytest.raises(ConfigError, match=r"flux-dev does not fit tiny-gpu: weights 31\.4 GiB .* 0\.9 x 16 GiB"):
        diffusion_memory_budget(flux, tiny, 0.9)
