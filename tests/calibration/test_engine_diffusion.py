"""The real static-batching diffusion server (calibration/engine/diffusion.py).

Its policy replayed on a virtual clock with the constant cost model forms the same batches at
the same times as the simulator's diffusion replica; sd-tiny serves a small schedule for real on
the CPU, and the batching rules hold on the wall clock.
"""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from calibration.engine.diffusion import (  # noqa: E402
    ConstantExecutor,
    DiffusionEngineConfig,
    ImageWorkItem,
    StaticBatcher,
    VirtualClock,
    run_diffusion_engine,
    serve,
)

STEP, ROW, TEXT, VAE = 0.01, 0.002, 0.05, 0.03
SLACK_S = 0.1  # wall-clock lateness allowed for a decision (sleep overshoot, a busy CI machine)


def item(i, t, size=128, steps=2, images=1):
    return ImageWorkItem(i, t, size, size, steps, images=images)


def _members(df, by):
    """The batches as sorted tuples of request ids (a simulated batch's members share a start)."""
    return sorted(tuple(sorted(ids)) for _, ids in df.groupby(by)["request_id"])


# --------------------------------------------------------------------------- the policy alone


def test_batcher_takes_the_heads_bucket_in_arrival_order_and_counts_images():
    b = StaticBatcher(DiffusionEngineConfig(max_batch_size=4, max_wait_s=0.0))
    b.waiting.extend(
        [item(0, 0), item(1, 0, size=256), item(2, 0, images=2), item(3, 0, steps=3), item(4, 0, images=2)]
    )
    batch, wait = b.form(0.0)
    assert wait is None and [r.request_id for r in batch] == [0, 2]  # 1 + 2 + 2 > 4 closes it
    assert [r.request_id for r in b.waiting] == [1, 3, 4]
    b = StaticBatcher(DiffusionEngineConfig(max_batch_size=4))
    b.waiting.extend([item(0, 0, images=8), item(1, 0)])
    assert [r.request_id for r in b.form(0.0)[0]] == [0]  # too big for any batch: runs alone


def test_batcher_holds_a_partial_batch_until_the_oldest_waited_max_wait():
    b = StaticBatcher(DiffusionEngineConfig(max_batch_size=3, max_wait_s=0.5))
    b.waiting.extend([item(0, 1.0), item(1, 1.2), item(2, 1.3, size=256), item(3, 1.3, size=256)])
    assert b.form(1.4) == ([], 1.5)  # another bucket's full batch does not jump the head
    batch, wait = b.form(1.5)
    assert [r.request_id for r in batch] == [0, 1] and wait is None
    b.waiting.extend([item(4, 2.0), item(5, 2.0), item(6, 2.0)])
    assert [r.request_id for r in b.form(2.0)[0]] == [2, 3]  # the head's deadline (1.8) passed
    assert [r.request_id for r in b.form(2.0)[0]] == [4, 5, 6]  # full: at once


def test_bad_items_and_configs_are_refused():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        item(0, 0.0, steps=0)
    with pytest.raises(ValueError, match="arrival_s"):
        item(0, float("nan"))
    with pytest.raises(ValueError, match="max_batch_size"):
        DiffusionEngineConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        serve([item(0, 0.0), item(0, 1.0)], DiffusionEngineConfig(), ConstantExecutor(STEP), VirtualClock())


# --------------------------------------------------------------------------- same decisions as the simulator


def _simulated(max_batch_size: int, max_wait_s: float, rate: float, n: int):
    """Requests of a two-class (two-bucket) sd-tiny pool with constant costs, from the simulator."""
    pytest.importorskip("simpy")
    pytest.importorskip("pydantic")
    from sim.config import parse_scenario
    from sim.run import run_scenario

    cost = dict(kind="constant", step_s=STEP, per_row_s=ROW, text_encode_s=TEXT, vae_decode_s=VAE)
    images = {"dist": "uniform", "low": 1, "high": 3}
    raw = dict(
        name="engine-equivalence",
        seed=7,
        num_requests=n,
        pools=[
            dict(
                name="p",
                model="sd-tiny",
                gpu="h100-sxm",
                batching=dict(policy="static", shapes="bucket", max_batch_size=max_batch_size, max_wait_s=max_wait_s),
                cost_model=cost,
            )
        ],
        classes=[
            dict(name="a", pool="p", arrival=dict(process="poisson", rate=rate),
                 image=dict(width=128, height=128, steps=4, images_per_prompt=images)),
            dict(name="b", pool="p", arrival=dict(process="poisson", rate=rate),
                 image=dict(width=192, height=192, steps=6, images_per_prompt=images)),
        ],
    )  # fmt: skip
    df = run_scenario(parse_scenario(raw), Path(".")).requests
    assert (df["status"] == "finished").all()
    return df.sort_values("request_id", ignore_index=True)


@pytest.mark.parametrize(("max_batch_size", "max_wait_s"), [(4, 0.3), (4, 0.0), (2, 1.0), (1, 0.2)])
def test_batches_and_start_times_match_the_simulators_diffusion_replica(max_batch_size, max_wait_s):
    sim = _simulated(max_batch_size, max_wait_s, rate=2.0, n=150)
    workload = [
        ImageWorkItem(
            int(r.request_id), float(r.arrival_s), int(r.width), int(r.height), int(r.steps), images=int(r.images)
        )
        for r in sim.itertuples()
    ]
    cfg = DiffusionEngineConfig(max_batch_size=max_batch_size, max_wait_s=max_wait_s)
    req, batches = serve(workload, cfg, ConstantExecutor(STEP, ROW, TEXT, VAE, cfg=True), VirtualClock())

    assert req["request_id"].tolist() == sim["request_id"].tolist()
    np.testing.assert_allclose(req["start_s"], sim["first_scheduled_s"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(req["finish_s"], sim["finish_s"], rtol=0, atol=1e-9)
    assert _members(req, "batch_id") == _members(sim, "first_scheduled_s")

    if (max_batch_size, max_wait_s) == (4, 0.3):  # every way a batch starts was exercised
        head = req.groupby("batch_id")["arrival_s"].min()
        deadline = head + max_wait_s
        start = batches.set_index("batch_id")["start_s"]
        assert (start < deadline - 1e-9).sum() > 5  # filled before its deadline
        assert (abs(start - deadline) < 1e-9).sum() > 5  # went at its deadline, not full
        assert (start > deadline + 1e-9).sum() > 5  # waited for the replica
        assert (batches["images"] < max_batch_size).any() and (batches["images"] == max_batch_size).any()


# --------------------------------------------------------------------------- sd-tiny, for real


CFG = DiffusionEngineConfig(max_batch_size=3, max_wait_s=0.3)
SCHEDULE = [
    item(0, 0.0),  # alone: waits max_wait_s
    item(1, 1.0), item(2, 1.01), item(3, 1.02),  # fills a batch: goes at 1.02
    item(4, 2.0), item(5, 2.01, steps=3), item(6, 2.02, size=192), item(7, 2.03),  # three buckets
    item(8, 4.5, images=2), item(9, 4.55, images=2),  # 2 + 2 > 3: 9 closes 8's batch
]  # fmt: skip
EXPECTED = [(0,), (1, 2, 3), (4, 7), (5,), (6,), (8,), (9,)]


@pytest.fixture(scope="module")
def served():
    calls = []
    req, batches = run_diffusion_engine(
        "sd-tiny", SCHEDULE, CFG, threads=1, progress=lambda done, total: calls.append((done, total))
    )
    return req, batches, calls


def test_every_request_finishes_in_the_expected_batches(served):
    req, batches, calls = served
    assert req["request_id"].tolist() == list(range(len(SCHEDULE)))
    assert _members(req, "batch_id") == EXPECTED
    assert calls[-1] == (len(SCHEDULE), len(SCHEDULE)) and len(calls) == len(batches)
    assert (batches["images"] <= CFG.max_batch_size).all()
    assert (batches["rows"] == 2 * batches["images"]).all()  # sd-tiny uses guidance


def test_a_batch_holds_one_shape(served):
    req, batches, _ = served
    keys = ["width", "height", "frames", "steps"]
    assert (req.groupby("batch_id")[keys].nunique() == 1).all().all()
    merged = req.merge(batches, on="batch_id", suffixes=("", "_batch"))
    for k in keys:
        assert (merged[k] == merged[f"{k}_batch"]).all()
    assert set(batches["tokens"]) == {16 * 16, 24 * 24}


def test_timestamps_are_ordered_and_stages_fill_the_batch(served):
    req, batches, _ = served
    assert (req["arrival_s"] <= req["start_s"]).all() and (req["start_s"] < req["finish_s"]).all()
    np.testing.assert_allclose(req["queue_s"], req["start_s"] - req["arrival_s"])
    np.testing.assert_allclose(req["e2e_s"], req["finish_s"] - req["arrival_s"])
    assert (batches["start_s"].to_numpy()[1:] >= batches["end_s"].to_numpy()[:-1]).all()
    stages = batches[["text_s", "denoise_s", "vae_s"]].sum(axis=1)
    span = batches["end_s"] - batches["start_s"]
    assert (stages <= span + 1e-6).all() and (stages > 0.9 * span).all()
    np.testing.assert_allclose(batches["mean_step_s"], batches["denoise_s"] / batches["steps"])


def test_a_lone_request_waits_max_wait_and_a_full_batch_goes_at_once(served):
    req = served[0].set_index("request_id")
    assert CFG.max_wait_s <= req.loc[0, "queue_s"] < CFG.max_wait_s + SLACK_S
    assert 1.02 <= req.loc[1, "start_s"] < 1.02 + SLACK_S  # filled by request 3's arrival
    assert 4.55 <= req.loc[8, "start_s"] < 4.55 + SLACK_S  # closed by a request that does not fit


def test_a_shape_the_model_cannot_make_fails_before_serving():
    with pytest.raises(ValueError, match="multiples of 8"):
        run_diffusion_engine("sd-tiny", [ImageWorkItem(0, 0.0, 100, 128, 2)], CFG)
