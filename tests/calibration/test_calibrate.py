"""Calibration end to end on this CPU, on small grids: measure real kernels, resume a cut-off
sweep, fit, write a profile, load it in the simulator, run a scenario on it, show it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from calibration.fit import build_profile, write_profile  # noqa: E402
from calibration.grids import DiffusionGrid, LLMGrid  # noqa: E402
from calibration.measure import RAW, load_raw, measure  # noqa: E402
from sim.cli import main  # noqa: E402

LLM_GRID = LLMGrid(
    lin_tokens=(1, 4, 8, 16, 32, 64),
    decode=((64,), (64, 64), (128, 32, 256), (256,) * 4, (32,) * 4, (512,)),
    prefill=(((16, 0),), ((32, 0),), ((16, 64),), ((32, 128),), ((8, 0), (8, 32)), ((64, 0),)),
    # dense at the small end like the real CPU grid: BLAS switches kernels at 4 rows, so a
    # sparse table (1, 2, 4, ...) would be judged on interpolating across that jump
    head_rows=(1, 2, 3, 4, 5, 6, 7, 8),
    steps=(
        ((1, 64),),
        ((1, 64), (1, 128)),
        ((16, 0),),
        ((1, 32), (8, 0)),
        ((1, 100),) * 3,
        ((32, 0), (1, 16)),
        ((4, 12),),
        ((1, 200), (1, 20)),
    ),
)
DIFFUSION_GRID = DiffusionGrid(
    denoise=((1, 128, 128, 1), (2, 128, 128, 1), (1, 192, 192, 1), (2, 192, 192, 1), (4, 128, 128, 1)),
    text_prompts=(1, 2, 4),
    vae=((1, 128, 128, 1), (2, 128, 128, 1), (1, 192, 192, 1)),
)


def _labels():
    seen: list[str] = []

    def progress(label: str, done: int, total: int) -> None:
        if label not in seen:
            seen.append(label)

    return seen, progress


@pytest.fixture(scope="module")
def llm_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "llama-tiny"
    seen, progress = _labels()
    measure("llama-tiny", "cpu", out, quick=True, progress=progress, grid=LLM_GRID)
    assert seen == ["lin_layer", "attn_decode", "attn_prefill", "lm_head", "step"]
    return out


def test_measurement_records_every_point_with_its_device(llm_raw):
    raw, meta = load_raw(llm_raw)
    counts = raw["op"].value_counts().to_dict()
    assert counts == {"lin_layer": 6, "attn_decode": 6, "attn_prefill": 6, "lm_head": 8, "step": 8}
    assert (
        (raw["median_s"] > 0).all()
        and (raw["p10_s"] <= raw["median_s"]).all()
        and (raw["median_s"] <= raw["p90_s"]).all()
    )
    assert (raw["flops"] > 0).all()
    dev = meta["device"]
    assert dev["type"] == "cpu" and dev["torch"] == torch.__version__ and dev["threads"] == 1
    assert meta["dtype"] == "float32" and meta["model"] == "llama-tiny" and meta["complete"]
    assert meta["peaks"]["matmul_flops_per_s"] > 1e8
    # the step's counted FLOPs cover the layers: at least 2 x weights x tokens per step
    steps = raw[raw["op"] == "step"]
    assert (steps["flops"] >= 2 * 8 * meta["model_facts"]["params_per_layer"] * steps["num_tokens"]).all()


def test_a_cut_off_sweep_resumes_where_it_stopped(llm_raw, tmp_path):
    out = tmp_path / "resume"
    out.mkdir()
    lines = (llm_raw / RAW).read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln)["op"] in ("lin_layer", "attn_decode")]
    (out / RAW).write_text("\n".join(kept) + "\n")
    meta = json.loads((llm_raw / "meta.json").read_text())
    meta.pop("complete")
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="did not finish"):
        load_raw(out)
    seen, progress = _labels()
    measure("llama-tiny", "cpu", out, quick=True, progress=progress, grid=LLM_GRID)
    assert seen == ["attn_prefill", "lm_head", "step"]
    raw, _ = load_raw(out)
    assert raw["op"].value_counts().to_dict() == {
        "lin_layer": 6,
        "attn_decode": 6,
        "attn_prefill": 6,
        "lm_head": 8,
        "step": 8,
    }


def test_a_folder_of_another_measurement_is_refused(llm_raw):
    with pytest.raises(ValueError, match="another output folder"):
        measure("qwen2.5-0.5b", "cpu", llm_raw, quick=True, grid=LLM_GRID)


def test_profile_from_cli_runs_a_scenario_and_shows(llm_raw, tmp_path, capsys):
    prof = tmp_path / "profiles" / "tiny.yaml"
    assert main(["calibrate", "--from-raw", str(llm_raw), "-o", str(prof)]) == 0
    out = capsys.readouterr().out
    assert "lin_layer" in out and "attn_decode" in out and prof.is_file() and prof.with_suffix(".csv").is_file()

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"""
name: tiny-on-profile
duration_s: 20
seed: 3
pools:
  - name: chat
    model: llama-tiny
    gpu: l4
    cost_model: {{kind: profile, path: profiles/{prof.name}}}
    engine: {{max_num_seqs: 8, max_num_batched_tokens: 256}}
classes:
  - name: chat
    pool: chat
    arrival: {{process: poisson, rate: 0.5}}
    prompt_tokens: {{dist: uniform, low: 16, high: 48}}
    output_tokens: {{dist: uniform, low: 4, high: 12}}
"""
    )
    assert main(["run", str(scenario), "--quiet"]) == 0
    assert "tiny-on-profile" in capsys.readouterr().out

    assert main(["profile", "show", str(prof)]) == 0
    assert prof.with_suffix(".png").stat().st_size > 10_000


def test_fits_of_measured_kernels_are_close_on_held_out_points(llm_raw):
    """A weak bound on a tiny grid (the figure that matters comes from the quick grid and is
    in docs/explanation/calibration.md); it still fails if a form cannot describe the kernels at all."""
    raw, meta = load_raw(llm_raw)
    ops = build_profile(raw, meta, None)["ops"]
    for name in ("attn_decode", "lm_head", "step"):
        assert ops[name]["fit_error"]["median_rel"] < 0.35, (name, ops[name]["fit_error"])


def test_diffusion_measurement_and_profile(tmp_path):
    out = tmp_path / "sd-tiny"
    measure("sd-tiny", "cpu", out, quick=True, grid=DIFFUSION_GRID)
    raw, meta = load_raw(out)
    assert raw["op"].value_counts().to_dict() == {"text_encode": 3, "denoise_step": 5, "vae_decode": 3}
    profile = build_profile(raw, meta, None)
    assert profile["kind"] == "diffusion" and profile["text_tokens"] > 0
    path = write_profile(profile, raw, tmp_path / "sd.yaml")
    from sim.costs.profile import DiffusionProfileCost, load_profile

    cost = DiffusionProfileCost(load_profile(path))
    den = raw[raw["op"] == "denoise_step"]
    # the profile answers the measured shapes close to what was measured (five points, four terms)
    for _, r in den.iterrows():
        assert cost.denoise_step_s(int(r["rows"]), int(r["tokens"])) == pytest.approx(r["median_s"], rel=0.5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["calibrate", "--model", "gpt-5", "--device", "cpu"], "unknown model 'gpt-5'"),
        (["calibrate", "--from-raw", "no/such/folder"], "no meta.json and raw.jsonl"),
    ],
)
def test_bad_calibrate_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
