"""servesim fidelity: the published points file is well formed and its split follows the rule
fixed before any fitting; each kind of run turns a point into the scenario it describes; the
summary is computed from the table; bad files are one-line errors."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml

from sim import catalog
from sim.cli import main
from sim.errors import ConfigError
from sim.fidelity import DEFAULT_POINTS, load_points, predict, run_points, summarise

POINTS = load_points(DEFAULT_POINTS)


def test_every_points_split_is_the_rule_decided_before_fitting():
    for p in POINTS:
        rule = "calibrate" if hashlib.sha256(p["id"].encode()).hexdigest()[0] in "012345" else "held_out"
        assert p["split"] == rule, p["id"]


def test_the_suite_has_at_least_thirty_scoreable_points_of_both_shapes_with_sources():
    scored = [p for p in POINTS if p["servesim"]["expressible"]]
    assert len(scored) >= 30
    assert {p["shape"] for p in scored} == {"llm", "diffusion"}
    assert {p["split"] for p in scored} == {"calibrate", "held_out"}
    assert len({p["gpu"] for p in scored}) >= 3
    for p in POINTS:
        src = p["source"]
        assert src.get("url") and src.get("quote") and src.get("where"), p["id"]
    for p in scored:
        # an expressible point names catalog entries
        if p["shape"] == "llm":
            assert p["model"] in catalog.models(), p["id"]
        else:
            assert p["model"] in catalog.diffusion_models(), p["id"]
        assert p["gpu"] in catalog.gpus(), p["id"]


def _point(**over):
    base = {
        "id": "t",
        "split": "held_out",
        "shape": "llm",
        "kind": "latency",
        "model": "llama-3-8b",
        "gpu": "h100-sxm",
        "tp": 1,
        "num_gpus": 1,
        "conditions": {"input_tokens": 512, "output_tokens": 64, "batch_size": 1},
        "metric": "ttft_s",
        "value": 0.05,
        "source": {"url": "u", "quote": "q", "where": "w"},
        "servesim": {"expressible": True, "run": "llm_single"},
    }
    base.update(over)
    return base


def test_a_single_requests_figures_are_the_simulators_for_that_request():
    """One request alone: its TTFT is the prefill step, its E2E adds a decode step per further
    token, its tokens per second per user are 1 / TPOT."""
    from sim.costs.base import StepShape
    from sim.costs.roofline import RooflineCostModel

    cost = RooflineCostModel(catalog.get_model("llama-3-8b"), catalog.get_gpu("h100-sxm"))
    prefill = cost.step_s(
        StepShape(num_seqs=1, num_tokens=512, num_prefill_tokens=512, prefill_attn_pairs=512 * 513 / 2)
    )
    assert predict(_point()) == pytest.approx(prefill, rel=1e-9)
    decode = [cost.step_s(StepShape(num_seqs=1, num_tokens=1, num_decode=1, decode_ctx_sum=512 + k)) for k in range(63)]
    assert predict(_point(metric="e2e_s")) == pytest.approx(prefill + sum(decode), rel=1e-9)
    assert predict(_point(metric="output_tokens_per_s_per_user")) == pytest.approx(63 / sum(decode), rel=1e-9)


def test_throughput_per_gpu_divides_the_systems_figure():
    burst = _point(kind="throughput", metric="output_tokens_per_s", tp=2, num_gpus=2,
                   conditions={"input_tokens": 128, "output_tokens": 32, "num_requests": 64},
                   servesim={"expressible": True, "run": "llm_burst"})  # fmt: skip
    system = predict(burst)
    assert predict({**burst, "per": "gpu"}) == pytest.approx(system / 2)
    assert predict({**burst, "per": "system"}) == system


def test_a_static_batch_finishes_together_and_a_bigger_one_has_more_throughput():
    static = _point(kind="throughput", metric="output_tokens_per_s",
                    conditions={"input_tokens": 128, "output_tokens": 128, "max_batch_size": 8},
                    servesim={"expressible": True, "run": "llm_static_batch", "engine": {}})  # fmt: skip
    small = predict(static)
    big = predict({**static, "conditions": {**static["conditions"], "max_batch_size": 64}})
    assert small > 0 and 1 < big / small < 8


def test_images_single_and_step():
    from sim.diffusion.cost import DiffusionRooflineCost

    model = catalog.get_diffusion_model("sdxl")
    image = _point(shape="diffusion", model="sdxl", metric="e2e_s",
                   conditions={"width": 1024, "height": 1024, "steps": 30, "cfg": True, "batch_size": 1},
                   servesim={"expressible": True, "run": "image_single"})  # fmt: skip
    cost = DiffusionRooflineCost(model, catalog.get_gpu("h100-sxm"))
    tokens = model.latent_tokens(1024, 1024)
    want = cost.text_encode_s(2) + 30 * cost.denoise_step_s(2, tokens) + cost.vae_decode_s(1, 1024, 1024, 1)
    assert predict(image) == pytest.approx(want, rel=1e-9)
    step = {**image, "metric": "step_s", "servesim": {"expressible": True, "run": "image_step"}}
    assert predict(step) == pytest.approx(cost.denoise_step_s(2, tokens), rel=1e-12)


def test_an_image_batch_is_one_static_batch():
    from sim.diffusion.cost import DiffusionRooflineCost

    model = catalog.get_diffusion_model("sdxl")
    batch = _point(shape="diffusion", kind="throughput", model="sdxl", metric="images_per_s",
                   conditions={"width": 1024, "height": 1024, "steps": 20, "cfg": True, "batch_size": 4},
                   servesim={"expressible": True, "run": "image_batch"})  # fmt: skip
    cost = DiffusionRooflineCost(model, catalog.get_gpu("h100-sxm"))
    tokens = model.latent_tokens(1024, 1024)
    span = cost.text_encode_s(8) + 20 * cost.denoise_step_s(8, tokens) + cost.vae_decode_s(4, 1024, 1024, 1)
    assert predict(batch) == pytest.approx(4 / span, rel=1e-5)  # the four arrive within microseconds
    assert predict({**batch, "metric": "e2e_s"}) == pytest.approx(span, rel=1e-5)
    # a multi-GPU system's data-parallel copies: one batch on each, side by side
    eight = {**batch, "servesim": {"expressible": True, "run": "image_batch", "replicas": 8}}
    assert predict(eight) == pytest.approx(8 * 4 / span, rel=1e-4)  # 32 arrivals within 32 µs
    # an 8-bit point's denoiser runs in its precision; a 16-bit one in bf16
    for precision in ("fp8", "int8"):
        q = DiffusionRooflineCost(model, catalog.get_gpu("h100-sxm"), dtype=precision)
        span_q = q.text_encode_s(8) + 20 * q.denoise_step_s(8, tokens) + q.vae_decode_s(4, 1024, 1024, 1)
        assert span_q < span
        assert predict({**batch, "precision": precision}) == pytest.approx(4 / span_q, rel=1e-5)
    assert predict({**batch, "precision": "fp16"}) == pytest.approx(4 / span, rel=1e-5)


def test_the_table_and_summary_of_a_small_file():
    good = _point(id="a", split="calibrate")
    off = _point(id="b", value=0.5)
    nx = _point(id="c", servesim={"expressible": False, "why": "FP4 weights"})
    broken = _point(
        id="d", conditions={"input_tokens": 100_000, "output_tokens": 10, "batch_size": 1}
    )  # longer than the model
    table = run_points([good, off, nx, broken])
    assert list(table["status"]) == ["ok", "ok", "not expressible", "failed"]
    assert table.loc[2, "why"] == "FP4 weights" and np.isnan(table.loc[2, "error"])
    assert table.loc[1, "error"] == pytest.approx((table.loc[1, "predicted"] - 0.5) / 0.5)
    summary = summarise(table).set_index(["split", "points"])
    assert summary.loc[("calibrate", "all"), "n"] == 1 and summary.loc[("held_out", "all"), "n"] == 1
    assert summary.loc[("both", "all"), "worst_abs_error"] == pytest.approx(table["error"].abs().max())
    assert summary.loc[("held_out", "batch-1 latency"), "worst_id"] == "b"


def test_bad_points_files_are_one_line_errors(tmp_path):
    path = tmp_path / "p.yaml"
    cases = [
        ("[]", "non-empty list"),
        ("- {split: held_out}", "needs an 'id'"),
        (yaml.safe_dump([_point(), _point()]), "duplicate id"),
        (yaml.safe_dump([_point(split="train")]), "t.split"),
        (yaml.safe_dump([_point(value=-1)]), "t.value"),
        (yaml.safe_dump([_point(servesim={"expressible": True, "run": "llm_magic"})]), "t.servesim.run"),
        (yaml.safe_dump([_point(servesim={"expressible": False})]), "t.servesim.why"),
        (yaml.safe_dump([{k: v for k, v in _point().items() if k != "source"}]), "missing field 'source'"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_points(path)
    assert main(["fidelity", "--points", str(tmp_path / "absent.yaml")]) == 2


def test_the_command_writes_the_table_and_summary(tmp_path, capsys):
    pts = [copy.deepcopy(p) for p in POINTS if p["split"] == "calibrate"][:6]
    pts.append(_point(id="x", servesim={"expressible": False, "why": "a reason"}))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pts))
    assert main(["fidelity", "--points", str(path), "-o", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "summary" in text and "not expressible: x: a reason" in text
    table = pd.read_csv(tmp_path / "out" / "fidelity.csv")
    assert list(table["id"]) == [p["id"] for p in pts]
    assert (tmp_path / "out" / "summary.csv").is_file()


def test_every_expressible_shipped_point_runs():
    """The whole shipped suite (about 25 s here): every expressible point gives a figure."""
    table = run_points(POINTS)
    failed = table[table["status"] == "failed"]
    assert failed.empty, failed[["id", "why"]].to_string()
    assert (table["status"] == "ok").sum() == sum(p["servesim"]["expressible"] for p in POINTS)
    assert (table.loc[table["status"] == "ok", "predicted"] > 0).all()


def test_static_batch_points_score_one_batch_of_their_size(monkeypatch):
    """A static engine starts its first batch with the first request alone; the runner scores
    the next batch, the published batch size all together, timed from its start."""
    import sim.fidelity as fidelity

    point = next(p for p in fidelity.load_points() if p["id"] == "trtllm061-llama2-7b-fp16-a100-bs60-isl128-osl2048")
    seen = {}
    run = fidelity._run

    def spy(raw):
        seen["requests"] = out = run(raw)
        return out

    monkeypatch.setattr(fidelity, "_run", spy)
    value = fidelity.predict(point)
    reqs = seen["requests"]
    starts = reqs["first_scheduled_s"]
    scored = reqs[starts == starts.max()]
    assert len(reqs) == 61 and len(scored) == 60
    span = scored["finish_s"].max() - scored["first_scheduled_s"].min()
    assert value == pytest.approx(scored["generated_tokens"].sum() / span)
