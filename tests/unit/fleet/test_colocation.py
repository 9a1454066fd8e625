"""Two pools on the same GPUs (issue 22, item 2): memory is partitioned, MIG slices are smaller
GPUs that never wait for each other, time-slicing slows each side by the other's load, and
the GPUs are paid once."""

from __future__ import annotations

import numpy as np
import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.costs.base import StepShape
from sim.costs.factory import build_cost_model
from sim.diffusion.cost import diffusion_memory_budget
from sim.errors import ConfigError
from sim.fleet.pools import pool_kv_budget
from sim.fleet.sharing import Share, TimeSliced, shared_gpu, shares
from sim.llm.memory import kv_budget
from sim.metrics.recorder import Recorder
from sim.run import run_scenario

H100 = catalog.get_gpu("h100-sxm")
CHAT = {
    "prompt_tokens": {"dist": "lognormal", "mean": 800, "cv": 1.0},
    "output_tokens": {"dist": "lognormal", "mean": 200, "cv": 1.0},
}


def _scenario(colocation: dict, chat_rate: float = 2.0, image_rate: float | None = 0.3) -> dict:
    classes = [{"name": "chat", "pool": "chat", "arrival": {"process": "poisson", "rate": chat_rate}, **CHAT}]
    if image_rate is not None:
        classes.append(
            {
                "name": "img",
                "pool": "img",
                "arrival": {"process": "poisson", "rate": image_rate},
                "image": {"width": 1024, "height": 1024, "steps": 30},
            }
        )
    return {
        "name": "t",
        "seed": 5,
        "duration_s": 300,
        "warmup_s": 20,
        "replications": 1,
        "pools": [
            {"name": "chat", "model": "llama-3-8b", "gpu": "h100-sxm"},
            {"name": "img", "model": "sdxl", "gpu": "h100-sxm", "colocation": {"pool": "chat", **colocation}},
        ],
        "classes": classes,
    }


def test_memory_is_partitioned_between_the_two_models():
    sc = parse_scenario(_scenario({"memory_fraction": 0.3}))
    s = shares(sc.pools)
    assert s["img"].memory == 0.3 and s["chat"].memory == pytest.approx(0.7)
    chat = pool_kv_budget(sc.pools[0], s["chat"])
    assert chat == kv_budget(
        catalog.get_model("llama-3-8b"),
        H100.model_copy(update={"memory_gib": H100.memory_gib * 0.7}),
        sc.pools[0].engine,
        1,
    )
    assert chat.num_gpu_blocks < pool_kv_budget(sc.pools[0]).num_gpu_blocks
    img = diffusion_memory_budget(catalog.get_diffusion_model("sdxl"), shared_gpu(H100, s["img"]), 0.9)
    assert img == pytest.approx(H100.memory_bytes * 0.3 * 0.9 - catalog.get_diffusion_model("sdxl").weights_bytes(2))
    with pytest.raises(ConfigError, match="does not fit"):
        run_scenario(parse_scenario(_scenario({"memory_fraction": 0.04})))  # SDXL's 7 GB in 3 GiB


def test_a_mig_slice_is_a_smaller_gpu_and_never_waits():
    """With MIG a large prefill (compute-bound) takes about 1/f as long on a slice of fraction
    f; and the chat side's requests are the same whether the image side is busy or idle."""
    sc = parse_scenario(_scenario({"mode": "mig", "memory_fraction": 0.5, "compute_fraction": 3 / 7}))
    s = shares(sc.pools)
    full = build_cost_model(sc.pools[0])
    part = build_cost_model(sc.pools[0], gpu=shared_gpu(H100, s["chat"]))
    shape = StepShape()
    shape.add_prefill(8192, 0)
    assert part.step_s(shape) / full.step_s(shape) == pytest.approx(7 / 4, rel=0.05)
    busy = run_scenario(sc).requests
    idle = run_scenario(
        parse_scenario(_scenario({"mode": "mig", "memory_fraction": 0.5, "compute_fraction": 3 / 7}, image_rate=None))
    ).requests
    a, b = busy[busy["class"] == "chat"], idle[idle["class"] == "chat"]
    assert np.array_equal(a["first_token_s"].to_numpy(), b["first_token_s"].to_numpy())


def test_time_slicing_slows_each_side_by_the_others_busy_fraction():
    """A step costs (1 + rho) times its own time, rho the partner's busy fraction over the
    window: against an idle partner, 1x; against a partner that computes all the time, 2x."""

    class Env:
        now = 0.0

    rec = Recorder(["c"])
    a, b = rec.add_replica("x", 1, 1), rec.add_replica("y", 1, 1)
    rec.track_busy()

    class Base:
        name = "base"

        def step_s(self, shape) -> float:
            return 0.01

    env = Env()
    cost = TimeSliced(Base(), env, rec, b, window_s=5.0)
    assert cost.step_s(None) == pytest.approx(0.01)
    for t in range(1, 11):  # the partner busy half of every second
        env.now = float(t)
        rec.busy(b, env.now, 0.5, 1, 0, 0, 1)
        f = cost.factor()
    assert f == pytest.approx(1.5)
    for t in range(11, 21):  # then all of it
        env.now = float(t)
        rec.busy(b, env.now, 1.0, 1, 0, 0, 1)
        f = cost.factor()
    assert f == pytest.approx(2.0)
    assert a == 0  # this side's own busy time does not slow it


def test_time_sliced_chat_decodes_twice_as_slow_beside_a_saturated_image_model():
    """Chat beside SDXL with images arriving faster than it can serve them (busy all the time):
    its decode steps take twice their time (p50 TPOT within 10 % of 2x the TPOT beside an idle
    image model, which is the unshared TPOT)."""
    busy = run_scenario(parse_scenario(_scenario({"memory_fraction": 0.3}, chat_rate=1.0, image_rate=5.0)))
    idle = run_scenario(parse_scenario(_scenario({"memory_fraction": 0.3}, chat_rate=1.0, image_rate=None)))
    assert busy.summary["pools"]["img"]["busy_fraction"] > 0.95
    tpot_busy = busy.summary["classes"]["chat"]["tpot_s_p50"]["mean"]
    tpot_idle = idle.summary["classes"]["chat"]["tpot_s_p50"]["mean"]
    assert tpot_busy / tpot_idle == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("mode", ["time_slice", "mig"])
def test_the_shared_gpus_are_paid_once(mode):
    """The two sides' GPU-hours add up to the GPUs' hours, split by the memory share
    (time-sliced) or the compute share (MIG)."""
    col = {"mode": mode, "memory_fraction": 0.25} | ({"compute_fraction": 2 / 7} if mode == "mig" else {})
    res = run_scenario(parse_scenario(_scenario(col)))
    t0, t1 = 20.0, res.replications[0].arrivals_end_s
    hours = {c: res.summary["classes"][c]["gpu_hours"]["mean"] for c in ("chat", "img")}
    assert sum(hours.values()) == pytest.approx((t1 - t0) / 3600, rel=1e-9)
    assert hours["img"] / sum(hours.values()) == pytest.approx(2 / 7 if mode == "mig" else 0.25, rel=1e-9)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"replicas": 2}, "must match"),
        ({"gpu": "h200"}, "must match"),
        ({"colocation": {"pool": "img", "memory_fraction": 0.5}}, "not another pool"),
    ],
)
def test_pools_that_cannot_share_are_refused(change, message):
    raw = _scenario({"memory_fraction": 0.3})
    raw["pools"][1].update(change)
    with pytest.raises(ConfigError, match=message):
        parse_scenario(raw)


def test_share_bills_by_compute_under_mig_and_memory_when_time_sliced():
    assert Share(0.3, 0.5, "mig", "x", 5).billed == 0.5
    assert Share(0.3, 0.5, "time_slice", "x", 5).billed == 0.3
