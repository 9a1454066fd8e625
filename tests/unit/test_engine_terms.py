"""The terms the roofline fits on whole-engine measurements (host time per LLM step and per eager
op, the 8-bit denoiser's efficiency): the catalog holds the fit of the fidelity suite's
calibration split, and the eager diffusion step is what its form says."""

import json
from pathlib import Path

import numpy as np
import pytest

from sim import catalog
from sim.diffusion.cost import DiffusionRooflineCost
from sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIT = json.loads((ROOT / "fidelity" / "fits" / "engine_terms.json").read_text())


def test_catalog_holds_the_calibration_split_fit():
    for gpu in catalog.gpus().values():
        assert gpu.overheads.step_s == FIT["step_s"]["value"]
        assert gpu.overheads.eager_op_s == FIT["eager_op_s"]["value"]
        assert gpu.efficiency.denoiser_8bit == FIT["denoiser_8bit"]["value"]


@pytest.mark.parametrize("term", ["step_s", "eager_op_s", "denoiser_8bit"])
def test_fit_was_made_on_calibration_points_only_and_reproduces(term):
    from calibration.engine_terms import calibration_points, log_errors
    from sim.fidelity import load_points

    split = {p["id"]: p["split"] for p in load_points()}
    points = calibration_points(term)
    assert [p["id"] for p in points] == FIT[term]["points"]
    assert all(split[i] == "calibrate" for i in FIT[term]["points"])
    # the catalog's value gives the errors the fit recorded (the fit is not stale)
    got = np.expm1(log_errors(points))
    np.testing.assert_allclose(got, FIT[term]["errors"], atol=5e-4)


def test_eager_step_is_the_longer_of_gpu_plus_traffic_and_host():
    spec, gpu = catalog.get_diffusion_model("flux-dev"), catalog.get_gpu("a100-80gb")
    compiled = DiffusionRooflineCost(spec, gpu)
    eager = DiffusionRooflineCost(spec, gpu, execution="eager")
    e, eff = spec.eager, gpu.efficiency.elementwise_bandwidth
    for rows, tokens in ((1, 4096), (2, 1024), (4, 256)):
        traffic = (
            rows
            * (e.elementwise_bytes_per_row + e.elementwise_bytes_per_row_token * tokens)
            / (gpu.hbm_tb_s * 1e12 * eff)
        )
        host = e.ops_per_forward * gpu.overheads.eager_op_s
        want = max(compiled.denoise_step_s(rows, tokens) + traffic, host)
        assert eager.denoise_step_s(rows, tokens) == pytest.approx(want, rel=1e-12)
        assert eager.denoise_step_s(rows, tokens) > compiled.denoise_step_s(rows, tokens)
    # a small UNet step is bound by the host's dispatch, not the GPU
    sd = DiffusionRooflineCost(catalog.get_diffusion_model("sd-1.5"), gpu, execution="eager")
    host = catalog.get_diffusion_model("sd-1.5").eager.ops_per_forward * gpu.overheads.eager_op_s
    assert sd.denoise_step_s(2, 256) == pytest.approx(host)
    with pytest.raises(ConfigError, match="execution"):
        DiffusionRooflineCost(spec, gpu, execution="jit")


def test_fidelity_reads_execution_from_the_engine():
    from sim.fidelity import execution

    def point(engine, **servesim):
        return {"engine": engine, "servesim": servesim}

    assert execution(point("diffusers (torch 2.1, SDPA), eager")) == "eager"
    assert execution(point("xDiT (PyTorch, no compile)")) == "eager"
    assert execution(point("xDiT + torch.compile")) == "compiled"
    assert execution(point("TensorRT 9.0 (cuda graphs, static shapes)")) == "compiled"
    assert execution(point("diffusers, eager", execution="compiled")) == "compiled"
