"""The diffusion replica: batch forming, CFG doubling, shape buckets vs padding, step-level
batching, previews, memory limits, and the cluster wiring for image classes."""

from pathlib import Path

import numpy as np
import pytest

from sim.config import DiffusionBatching, parse_scenario
from sim.diffusion.batcher import DiffusionBatcher
from sim.diffusion.request import ImageRequest
from sim.run import run_scenario

STEP, ROW, TEXT, VAE = 0.01, 0.002, 0.05, 0.1


def img(i, t=0.0, w=1024, h=1024, steps=30, images=1, cfg=True, tokens=None, mem=1.0):
    tokens = tokens or (w // 8) * (h // 8)
    return ImageRequest(i, 0, t, w, h, 1, steps, images, cfg, True, tokens, mem * tokens)


def batcher(**kw):
    return DiffusionBatcher(DiffusionBatching(**kw), kw.pop("mem", 1e12) if "mem" in kw else 1e12)


# --------------------------------------------------------------------------- batch forming rules


def test_bucket_batches_share_resolution_and_steps_in_arrival_order():
    b = batcher(max_batch_size=4, shapes="bucket")
    b.waiting.extend([img(0), img(1, w=512, h=512), img(2), img(3, steps=20), img(4)])
    batch, wait = b.form(now=0.0)
    assert wait is None and [r.request_id for r in batch] == [0, 2, 4]
    assert [r.request_id for r in b.waiting] == [1, 3]


def test_pad_batches_take_any_shape_in_arrival_order():
    b = batcher(max_batch_size=3, shapes="pad")
    b.waiting.extend([img(0), img(1, w=512, h=512), img(2, steps=20), img(3)])
    batch, _ = b.form(now=0.0)
    assert [r.request_id for r in batch] == [0, 1, 2]


def test_batch_counts_images_and_a_large_request_runs_alone():
    b = batcher(max_batch_size=4)
    b.waiting.extend([img(0, images=3), img(1, images=2), img(2, images=1)])
    batch, _ = b.form(0.0)
    assert [r.request_id for r in batch] == [0]  # 3 + 2 > 4: full, FIFO keeps order
    b = batcher(max_batch_size=4)
    b.waiting.extend([img(0, images=8), img(1)])
    batch, _ = b.form(0.0)
    assert [r.request_id for r in batch] == [0]


def test_memory_bounds_the_batch_and_an_oversized_request_is_rejected():
    tokens = 128 * 128
    b = DiffusionBatcher(DiffusionBatching(max_batch_size=16), mem_budget_bytes=2.5 * tokens)
    b.waiting.extend([img(i, mem=1.0) for i in range(5)])
    batch, _ = b.form(0.0)
    assert len(batch) == 2
    assert b.reject_reason(img(9, mem=3.0)).startswith("needs")
    assert b.reject_reason(img(9, mem=1.0)) == ""


def test_max_wait_holds_a_batch_until_its_oldest_request_waited_long_enough():
    b = batcher(max_batch_size=4, max_wait_s=0.5)
    b.waiting.extend([img(0, t=1.0), img(1, t=1.2)])
    batch, wait = b.form(now=1.3)
    assert batch == [] and wait == pytest.approx(1.5)
    batch, wait = b.form(now=1.5)
    assert [r.request_id for r in batch] == [0, 1] and wait is None
    # A full batch goes at once, whatever the window.
    b.waiting.extend([img(i, t=2.0) for i in range(2, 6)])
    batch, wait = b.form(now=2.0)
    assert len(batch) == 4 and wait is None


def test_step_level_joiners_share_resolution_but_not_steps():
    b = batcher(max_batch_size=4, policy="step")
    running = [img(0, steps=30)]
    b.waiting.extend([img(1, steps=10), img(2, w=512, h=512), img(3, steps=50)])
    joiners, _ = b.take(running, step_level=True)
    assert [r.request_id for r in joiners] == [1, 3]


# --------------------------------------------------------------------------- whole runs (constant costs)


def scenario(batching=None, image=None, rate=2.0, n=200, cost=None, **over):
    raw = dict(
        name="d",
        seed=1,
        num_requests=n,
        pools=[
            dict(
                name="p",
                model="sdxl",
                gpu="h100-sxm",
                replicas=1,
                batching=batching or {},
                cost_model=cost
                or dict(kind="constant", step_s=STEP, per_row_s=ROW, text_encode_s=TEXT, vae_decode_s=VAE),
            )
        ],
        classes=[dict(name="c", pool="p", arrival=dict(process="poisson", rate=rate), image=image or dict(steps=10))],
    )
    raw.update(over)
    return parse_scenario(raw)


def test_a_lone_request_takes_text_encode_plus_steps_plus_vae_and_cfg_doubles_rows():
    for cfg, rows in ((True, 2), (False, 1)):
        res = run_scenario(scenario(dict(max_batch_size=1), dict(steps=10, cfg=cfg), rate=0.01, n=5), Path("."))
        service = TEXT + 10 * (STEP + ROW * rows) + VAE
        np.testing.assert_allclose(res.requests["e2e_s"], service, rtol=1e-9)
        np.testing.assert_allclose(res.requests["gpu_s"], service, rtol=1e-9)


def test_static_batch_members_finish_together_and_the_slowest_sets_the_pace():
    sc = scenario(
        dict(max_batch_size=4, max_wait_s=10.0, shapes="pad"),
        dict(steps={"dist": "empirical", "values": [5, 20]}),
        rate=50.0,
        n=4,
    )
    df = run_scenario(sc, Path(".")).requests
    assert df["finish_s"].nunique() == 1  # one batch, everyone ends with it
    rows = 2 * 4
    service = TEXT + 20 * (STEP + ROW * rows) + 4 * VAE  # padded to the most steps
    assert df["finish_s"].iloc[0] - df["first_scheduled_s"].iloc[0] == pytest.approx(service)
    assert (df["steps_computed"] == 20).all()


def test_step_level_lets_short_requests_leave_early():
    # Mixed step counts in one batch: static (padded) holds a 5-step request for 40 steps.
    image = dict(steps={"dist": "empirical", "values": [5, 40]})
    static = run_scenario(
        scenario(dict(max_batch_size=8, policy="static", shapes="pad"), image, rate=4.0, n=300), Path(".")
    ).requests
    step = run_scenario(scenario(dict(max_batch_size=8, policy="step"), image, rate=4.0, n=300), Path(".")).requests
    short_static = static.loc[static["steps"] == 5, "e2e_s"].mean()
    short_step = step.loc[step["steps"] == 5, "e2e_s"].mean()
    assert short_step < 0.6 * short_static
    assert (step["status"] == "finished").all() and (step["steps_computed"] == step["steps"]).all()


def test_previews_cost_one_vae_decode_every_k_steps():
    base = run_scenario(scenario(dict(max_batch_size=1), dict(steps=10), rate=0.01, n=3), Path(".")).requests
    prev = run_scenario(
        scenario(dict(max_batch_size=1, preview_every=3), dict(steps=10), rate=0.01, n=3), Path(".")
    ).requests
    # Previews after steps 3, 6 and 9: three extra decodes.
    np.testing.assert_allclose(prev["e2e_s"] - base["e2e_s"], 3 * VAE, rtol=1e-9)
    np.testing.assert_allclose(prev["preview_s"], TEXT + 3 * (STEP + 2 * ROW) + VAE, rtol=1e-9)


def test_roofline_request_that_cannot_fit_is_rejected_with_a_reason():
    sc = scenario(
        dict(max_batch_size=1),
        dict(width=4096, height=4096, steps=2, images_per_prompt=64),
        rate=1.0,
        n=3,
        cost=dict(kind="roofline"),
    )
    res = run_scenario(sc, Path("."))
    df = res.requests
    assert (df["status"] == "rejected").all()
    assert df["reject_reason"].str.contains("GiB left after the weights").all()


def test_image_classes_report_images_per_second_and_cost_per_image():
    res = run_scenario(
        scenario(dict(max_batch_size=4), dict(steps=10, images_per_prompt=2), rate=1.0, n=200), Path(".")
    )
    st = res.summary["classes"]["c"]
    assert st["images_per_s"]["mean"] == pytest.approx(2 * st["throughput_rps"]["mean"])
    assert st["cost_per_image_usd"]["mean"] > 0
    assert res.summary["conservation"]["finished"] == 200


def test_video_requests_count_video_seconds():
    sc = parse_scenario(
        dict(
            name="v",
            seed=1,
            num_requests=20,
            pools=[dict(name="p", model="cogvideox-2b", gpu="h100-sxm", batching=dict(max_batch_size=1))],
            classes=[
                dict(name="c", pool="p", arrival=dict(process="poisson", rate=0.01), image=dict(frames=49, steps=5))
            ],
        )
    )
    res = run_scenario(sc, Path("."))
    df = res.requests
    np.testing.assert_allclose(df["video_s"], 49 / 8)
    assert res.summary["classes"]["c"]["cost_per_video_second_usd"]["mean"] > 0


def test_frames_on_an_image_model_is_a_config_error():
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="frames"):
        run_scenario(scenario(image=dict(frames=9)), Path("."))


def test_a_static_batch_decodes_its_latents_in_one_vae_call_per_shape():
    """A pipeline decodes a batch's latents together: the batch pays the VAE's fixed cost and
    weight traffic once per shape, not once per request (calibration/engine/diffusion.py runs
    it that way too)."""
    from sim import catalog
    from sim.diffusion.cost import DiffusionRooflineCost

    sc = scenario(dict(max_batch_size=4, max_wait_s=10.0), dict(steps=10, width=1024, height=1024), rate=50.0, n=4,
                  pools=[dict(name="p", model="sdxl", gpu="h100-sxm", batching=dict(max_batch_size=4, max_wait_s=10.0))])  # fmt: skip
    df = run_scenario(sc, Path(".")).requests
    cost = DiffusionRooflineCost(catalog.get_diffusion_model("sdxl"), catalog.get_gpu("h100-sxm"))
    tokens = catalog.get_diffusion_model("sdxl").latent_tokens(1024, 1024)
    service = cost.text_encode_s(8) + 10 * cost.denoise_step_s(8, tokens) + cost.vae_decode_s(4, 1024, 1024, 1)
    assert df["finish_s"].nunique() == 1
    assert df["finish_s"].iloc[0] - df["first_scheduled_s"].iloc[0] == pytest.approx(service, rel=1e-12)
    assert cost.vae_decode_s(4, 1024, 1024, 1) < 4 * cost.vae_decode_s(1, 1024, 1024, 1)


def test_a_diffusion_replica_reports_memory_not_kv_blocks():
    """Its time series used to put MiB of activations in ``kv_blocks_used``."""
    res = run_scenario(
        scenario(dict(max_batch_size=4), dict(steps=10), rate=1.0, n=50, cost=dict(kind="roofline")), Path(".")
    )
    ts = res.timeseries
    busy = ts[ts["running"] > 0]
    assert len(busy) and ts["kv_blocks_used"].isna().all() and ts["kv_util"].isna().all()
    assert (busy["state_gib"] > 0).all() and busy["memory_util"].between(0, 1, inclusive="right").all()
    assert res.summary["pools"]["p"]["mean_memory_util"] > 0
