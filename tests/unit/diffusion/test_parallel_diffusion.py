"""Multi-GPU diffusion as xDiT runs it: classifier-free guidance's two rows on two GPUs and the
image's tokens over the rest (Ulysses sequence parallelism), every GPU holding the whole
denoiser. Checked here: a step's time is its share of the work, the whole weights, and the
all-to-alls (four per block) or the CFG gather; long videos scale and small images do not; a
replica's GPUs are all billed; the planner chooses the degree; UNets and odd CFG degrees are
refused."""

from __future__ import annotations

import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.diffusion.cost import ACT_BYTES, ALLTOALL_EFFICIENCY, LATENT_BYTES, DiffusionRooflineCost
from sim.errors import ConfigError
from sim.run import run_scenario

H100 = catalog.get_gpu("h100-sxm")


def test_a_sequence_parallel_step_is_its_share_the_whole_weights_and_four_all_to_alls_a_block():
    spec = catalog.get_diffusion_model("wan2.1-1.3b")
    tokens, rows, sp = spec.latent_tokens(832, 480, 81), 2, 4
    cost = DiffusionRooflineCost(spec, H100, gpus=sp)
    st = cost._denoiser
    flops, act = spec.denoiser_flops(tokens), spec.denoiser_act_io_bytes(tokens)
    link = H100.interconnect_gb_s / 2 * 1e9 * ALLTOALL_EFFICIENCY
    moved = rows * tokens / sp * spec.hidden_size * ACT_BYTES * (sp - 1) / sp
    expected = st.time_s(rows * flops / sp, 2 * spec.denoiser_params + rows * act / sp)
    expected += spec.num_layers * 4 * (H100.allreduce_latency_s + moved / link)
    assert cost.denoise_step_s(rows, tokens) == pytest.approx(expected, rel=1e-12)
    # CFG parallel: each GPU of the pair takes one of the two rows, then the predictions meet.
    cfg = DiffusionRooflineCost(spec, H100, gpus=2, cfg_parallel=True)
    expected = st.time_s(flops, 2 * spec.denoiser_params + act)
    expected += H100.allreduce_latency_s + tokens * spec.latent_channels * LATENT_BYTES / link
    assert cfg.denoise_step_s(2, tokens) == pytest.approx(expected, rel=1e-12)


def test_long_videos_scale_over_gpus_and_small_images_do_not():
    """Splitting the tokens divides the compute, not the weights every GPU reads nor the
    all-to-alls' latency: a long video's step stays compute-bound and scales nearly
    perfectly; a small model's 512 x 512 image soon waits on weights and latency."""
    video = catalog.get_diffusion_model("wan2.1-1.3b")
    small = catalog.get_diffusion_model("sd3-medium")

    def efficiency(spec, tokens, gpus):
        one = DiffusionRooflineCost(spec, H100).denoise_step_s(2, tokens)
        return one / DiffusionRooflineCost(spec, H100, gpus=gpus).denoise_step_s(2, tokens) / gpus

    v_tokens, i_tokens = video.latent_tokens(832, 480, 81), small.latent_tokens(512, 512, 1)
    assert efficiency(video, v_tokens, 8) > 0.9
    assert efficiency(small, i_tokens, 4) < 0.5
    assert efficiency(small, i_tokens, 2) > efficiency(small, i_tokens, 4) > efficiency(small, i_tokens, 8)


def video_scenario(tp: int, cfg_parallel: bool = False, plan: dict | None = None) -> dict:
    raw = {
        "name": "video",
        "seed": 1,
        "num_requests": 3,
        "pools": [
            {
                "name": "v",
                "model": "wan2.1-1.3b",
                "gpu": "h100-sxm",
                "tensor_parallel_size": tp,
                "batching": {"cfg_parallel": cfg_parallel},
            }
        ],
        "classes": [{"name": "c", "pool": "v", "arrival": {"process": "constant", "rate": 0.005}, "image": {}}],
    }
    if plan is not None:
        raw.update(plan)
    return raw


def test_a_replica_bills_all_its_gpus_and_a_request_their_time():
    for tp in (1, 4):
        result = run_scenario(parse_scenario(video_scenario(tp)), None)
        req = result.requests
        assert result.replicas["num_gpus"].unique().tolist() == [tp]
        alone = req["e2e_s"] - req["queue_s"]  # arrivals far apart: each runs alone
        assert req["gpu_s"].to_numpy() == pytest.approx((tp * alone).to_numpy(), rel=1e-9)


def test_the_plan_chooses_the_degree_an_e2e_target_needs():
    """One GPU takes 74 s for a Wan2.1 video: a 40 s target needs four."""
    from sim.plan import plan_fleet

    raw = video_scenario(1)
    raw.update({"num_requests": None, "duration_s": 600})
    raw["classes"][0]["slo"] = {"e2e_s": 40.0, "percentile": 50}
    raw["plan"] = {"replications": 2, "pools": {"v": {"tensor_parallel_size": [1, 4]}}}
    result = plan_fleet(parse_scenario(raw), None, workers=1)
    (pick,) = result.answer["pools"]
    assert pick["tensor_parallel_size"] == 4 and pick["gpus"] == 4 * pick["replicas"]
    one = next(c for cs in result.candidates.values() for c in cs if c.label["tensor_parallel_size"] == 1)
    assert one.status == "rejected" and "E2E is at least" in one.reason


def test_unets_and_odd_cfg_degrees_are_refused_in_one_line():
    raw = video_scenario(2)
    raw["pools"][0]["model"] = "sdxl"
    with pytest.raises(ConfigError, match="is a UNet") as exc:
        parse_scenario(raw)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="must be even with batching.cfg_parallel"):
        parse_scenario(video_scenario(3, cfg_parallel=True))
