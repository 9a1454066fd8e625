"""Step caching (TeaCache, First-Block Cache, DeepCache) and FP8 denoisers. Checked here: after
the warm-up steps the given share of steps is cached, evenly; a lone request's time is its text
encoding, its full steps, its cached steps at their fraction of a step, and its VAE decode; a
batch step is cached only when it is for every member; an 8-bit (FP8, INT8) denoiser halves the
weights and runs at the catalog's share of the 8-bit peak; GPUs without FP8 refuse it."""

from __future__ import annotations

import math

import pytest

from sim import catalog
from sim.config import StepCache, parse_scenario
from sim.diffusion.cost import DiffusionRooflineCost, diffusion_memory_budget
from sim.errors import ConfigError
from sim.run import run_scenario

STEP, TEXT, VAE = 0.1, 0.05, 0.2


def scenario(step_cache=None, steps=20, rate=0.05, n=6, policy="static", **batching) -> dict:
    return {
        "name": "cache",
        "seed": 1,
        "num_requests": n,
        "pools": [
            {
                "name": "p",
                "model": "flux-dev",
                "gpu": "h100-sxm",
                "batching": {"policy": policy, "step_cache": step_cache, **batching},
                "cost_model": {"kind": "constant", "step_s": STEP, "text_encode_s": TEXT, "vae_decode_s": VAE},
            }
        ],
        "classes": [
            {"name": "c", "pool": "p", "arrival": {"process": "constant", "rate": rate}, "image": {"steps": steps}}
        ],
    }


@pytest.mark.parametrize(("fraction", "warmup", "steps"), [(0.5, 2, 28), (0.3, 0, 50), (0.75, 5, 9)])
def test_the_given_share_of_steps_after_the_warmup_is_cached_evenly(fraction, warmup, steps):
    cache = StepCache(method="teacache", cached_fraction=fraction, warmup_steps=warmup)
    flags = [cache.is_cached(i) for i in range(steps)]
    assert not any(flags[:warmup])
    assert sum(flags) == math.floor((steps - warmup) * fraction)
    # Evenly: no window of the rest holds more cached steps than its share rounded up.
    for w in (4, 10):
        for start in range(warmup, steps - w):
            assert sum(flags[start : start + w]) <= math.ceil(w * fraction)


@pytest.mark.parametrize(
    ("method", "extra", "fraction_cost"),
    [("teacache", {}, 0.0), ("fbcache", {}, None), ("deepcache", {"cached_step_cost": 0.3}, 0.3)],
)
def test_a_lone_request_pays_full_steps_and_cached_steps_at_their_fraction(method, extra, fraction_cost):
    steps, fraction = 20, 0.5
    cache = {"method": method, "cached_fraction": fraction, **extra}
    result = run_scenario(parse_scenario(scenario(cache, steps=steps)), None)
    plain = run_scenario(parse_scenario(scenario(None, steps=steps)), None)
    if fraction_cost is None:
        fraction_cost = 1 / catalog.get_diffusion_model("flux-dev").num_layers  # one block of the denoiser
    cached = math.floor((steps - 2) * fraction)
    expected = TEXT + (steps - cached + cached * fraction_cost) * STEP + VAE
    assert result.requests["e2e_s"].to_numpy() == pytest.approx(expected, rel=1e-9)
    assert plain.requests["e2e_s"].to_numpy() == pytest.approx(TEXT + steps * STEP + VAE, rel=1e-9)


def test_a_batch_step_is_cached_only_when_every_member_is():
    """Step-level batching, two requests one step apart with every other step cached: their
    cached steps never coincide, so while they share the batch every step is computed."""
    cache = {"method": "teacache", "cached_fraction": 0.5, "warmup_steps": 0}
    steps = 20
    # The second arrives one step after the first (arrivals 1/rate apart: rate = 1/step).
    raw = scenario(cache, steps=steps, rate=1 / (TEXT + STEP), n=2, policy="step")
    df = run_scenario(parse_scenario(raw), None).requests.sort_values("arrival_s")
    first, second = df.iloc[0], df.iloc[1]
    alone = TEXT + (steps - steps // 2) * STEP + VAE
    assert first["e2e_s"] > alone + 5 * STEP  # it lost its cached steps while they overlapped
    assert second["finish_s"] > first["finish_s"]


@pytest.mark.parametrize(("gpu_name", "dtype"), [("h100-sxm", "fp8"), ("h100-sxm", "int8"), ("a100-80gb", "int8")])
def test_an_8bit_denoiser_halves_its_weights_and_runs_at_its_share_of_the_8bit_peak(gpu_name, dtype):
    spec, gpu = catalog.get_diffusion_model("flux-dev"), catalog.get_gpu(gpu_name)
    bf16 = diffusion_memory_budget(spec, gpu, 0.9)
    eight = diffusion_memory_budget(spec, gpu, 0.9, dtype)
    assert eight - bf16 == pytest.approx(spec.denoiser_params)  # one byte a weight less
    a, b = DiffusionRooflineCost(spec, gpu), DiffusionRooflineCost(spec, gpu, dtype=dtype)
    st = a._denoiser
    peak = gpu.fp8_tflops if dtype == "fp8" else gpu.int8_tops
    ratio = gpu.bf16_tflops / (peak * gpu.efficiency.denoiser_8bit)
    assert 0 < gpu.efficiency.denoiser_8bit < 1  # the fitted share, not the old "as fast as bf16" assumption
    for rows, tokens in ((1, 256), (1, 4096), (8, 4096)):
        flops = rows * spec.denoiser_flops(tokens)
        act = rows * spec.denoiser_act_io_bytes(tokens)
        compute, memory = flops * st.s_per_flop, (2 * spec.denoiser_params + act) * st.s_per_byte
        expected = st.overhead_s + max(compute * ratio, (spec.denoiser_params + act) * st.s_per_byte)
        assert b.denoise_step_s(rows, tokens) == pytest.approx(expected, rel=1e-12)
        assert a.denoise_step_s(rows, tokens) == pytest.approx(st.overhead_s + max(compute, memory), rel=1e-12)
    assert b.text_encode_s(1) == a.text_encode_s(1) and b.vae_decode_s(1, 1024, 1024, 1) == a.vae_decode_s(
        1, 1024, 1024, 1
    )


def test_fp8_on_a_gpu_without_it_and_deepcache_without_its_cost_are_one_line():
    raw = scenario(None, dtype="fp8")
    raw["pools"][0]["gpu"] = "a100-80gb"
    with pytest.raises(ConfigError, match="no FP8 support") as exc:
        parse_scenario(raw)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="deepcache needs cached_step_cost"):
        parse_scenario(scenario({"method": "deepcache", "cached_fraction": 0.5}))
