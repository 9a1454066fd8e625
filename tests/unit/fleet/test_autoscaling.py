"""Autoscaling with cold starts (issue 22, item 1): a new replica serves only after its cold
start (engine start + weight bytes over the storage's bandwidth + compile), a pool at zero
makes its first request wait that long, GPU-hours are the time replicas are held, and the
autoscaler follows Kubernetes' HPA rules (replicas = ceil(metric / target), a 10 % tolerance,
scale-down only to the highest wish of the stabilisation window)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from sim import catalog
from sim.config import PoolConfig, parse_scenario
from sim.fleet.autoscale import (
    DIFFUSION_ENGINE_START_S,
    LLM_COMPILE_S,
    LLM_ENGINE_START_S,
    Autoscaler,
    cold_start_parts,
    cold_start_s,
)
from sim.fleet.timers import Environment
from sim.llm.memory import weight_bytes
from sim.metrics.recorder import Recorder
from sim.run import run_scenario


def _pool(**scaling) -> PoolConfig:
    return PoolConfig(
        name="p",
        model="llama-3-70b",
        gpu="h100-sxm",
        tensor_parallel_size=4,
        replicas=scaling.pop("replicas", 1),
        autoscaling={"min_replicas": 0, "max_replicas": 4, "metric": "in_flight", "target": 8, **scaling},
    )


def test_cold_start_is_engine_start_weights_over_storage_and_compile():
    model = catalog.get_model("llama-3-70b")
    for storage in ("local-nvme", "network", "host-cache"):
        pool = _pool(cold_start={"storage": storage})
        read = weight_bytes(model, pool.engine) / (catalog.get_storage(storage).gb_s * 1e9)
        assert cold_start_s(pool) == pytest.approx(LLM_ENGINE_START_S + read + LLM_COMPILE_S, rel=1e-12)
    slow = cold_start_parts(_pool(cold_start={"storage": "network-volume"}))["weights"]
    assert slow == pytest.approx(weight_bytes(model, _pool().engine) / 0.33e9)  # 141 GB at 0.33 GB/s: 7 min
    assert cold_start_s(_pool(cold_start={"cold_start_s": 12.5, "storage": "network"})) == 12.5
    image = PoolConfig(
        name="i",
        model="sdxl",
        gpu="h100-sxm",
        autoscaling={"max_replicas": 2, "target": 4, "cold_start": {"provision_s": 5}},
    )
    parts = cold_start_parts(image)
    assert parts["engine_start"] == DIFFUSION_ENGINE_START_S and parts["compile"] == 0 and parts["provision"] == 5
    assert parts["weights"] > 0


def _scenario(pool: dict, arrival: dict, duration_s: float = 1200, **cls) -> dict:
    return {
        "name": "t",
        "seed": 3,
        "duration_s": duration_s,
        "warmup_s": 0,
        "replications": 1,
        "pools": [{"name": "p", "model": "llama-3-8b", "gpu": "h100-sxm", **pool}],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": arrival,
                "prompt_tokens": {"dist": "fixed", "value": 500},
                "output_tokens": {"dist": "fixed", "value": 50},
                **cls,
            }
        ],
    }


def test_a_pool_at_zero_makes_each_request_wait_one_cold_start(tmp_path):
    """One request every 200 s on a pool that scales to zero (no stabilisation delay): each
    arrives to no replica, wakes the autoscaler, and waits one cold start before its prefill,
    so every TTFT lies between the cold start and the cold start plus a second."""
    raw = _scenario(
        {
            "replicas": 1,  # let go while idle, before the first request
            "autoscaling": {
                "min_replicas": 0,
                "max_replicas": 2,
                "metric": "in_flight",
                "target": 4,
                "scale_down_delay_s": 0,
            },
        },
        {"process": "constant", "rate": 0.005},
    )
    sc = parse_scenario(raw)
    res = run_scenario(sc, tmp_path)
    cold = cold_start_s(sc.pools[0])
    ttft = (res.requests["first_token_s"] - res.requests["arrival_s"]).to_numpy()
    assert len(ttft) >= 5
    assert np.all(ttft >= cold) and np.all(ttft < cold + 1.0), (cold, ttft)
    stats = res.summary["pools"]["p"]["autoscaling"]
    assert stats["scale_ups"] == len(ttft)  # one cold start per request
    # Each replica is held from its request's arrival until the metric, averaged over the
    # 60 s window, reads zero at a decision: the cold start and the request, plus at most the
    # window and one interval; four such spans lie in the window [0, 1000 s].
    service = float(np.mean(res.requests["finish_s"] - res.requests["arrival_s"]))
    assert 4 * service / 1000 <= stats["mean_replicas_held"] <= 4 * (service + 60 + 15) / 1000


def test_gpu_hours_are_the_time_replicas_are_held(tmp_path):
    """A schedule of 1 replica, then 3 from 600 s: the pool holds 1 replica for the whole
    window and 2 more from 600 s, whatever the load; fixed pools pay for all their replicas."""
    raw = _scenario(
        {
            "replicas": 1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 3, "metric": "schedule", "schedule": [[0, 1], [600, 3]]},
        },
        {"process": "poisson", "rate": 1.0},
    )
    res = run_scenario(parse_scenario(raw), tmp_path)
    t1 = res.replications[0].arrivals_end_s
    stats = res.summary["pools"]["p"]["autoscaling"]
    assert stats["gpu_hours"] == pytest.approx((t1 + 2 * (t1 - 600)) / 3600, rel=1e-9)
    assert stats["mean_replicas_held"] == pytest.approx((t1 + 2 * (t1 - 600)) / t1, rel=1e-9)
    assert res.summary["classes"]["c"]["gpu_hours"]["mean"] == pytest.approx(stats["gpu_hours"], rel=1e-9)
    again = run_scenario(parse_scenario(raw), tmp_path / "again")
    assert again.requests.equals(res.requests)  # deterministic


class _Replica:
    def __init__(self, index: int):
        self.index, self.up, self.num_outstanding, self.num_running = index, True, 0, 0

    def recover(self) -> None:
        self.up = True

    def fail(self) -> None:
        self.up = False


class _Pool:
    """What the autoscaler reads of a pool: its replicas, the requests in flight and waiting."""

    def __init__(self, cfg: PoolConfig, recorder: Recorder):
        self.cfg = cfg
        self.replicas = [_Replica(recorder.add_replica("p", 1, 4)) for _ in range(cfg.replicas_built)]
        self.up = list(self.replicas)
        self.pending: list = []
        self.in_flight = 0

    @property
    def num_outstanding(self) -> int:
        return self.in_flight

    def route(self, req) -> None:
        pass


def _drive(cfg: PoolConfig, load, until: float) -> list[tuple[float, int, int]]:
    """Run the autoscaler alone against ``load(t)`` requests in flight; its change log."""
    env, rec = Environment(), Recorder(["c"])
    pool = _Pool(cfg, rec)
    scaler = Autoscaler(env, pool, rec)

    class Feed:
        def tick(self, _t: int) -> None:
            pool.in_flight = load(env.now)
            env.call_later(1.0, self.tick)

    Feed().tick(0)
    env.run(until=until)
    return scaler.events


def test_replicas_wanted_follow_in_flight_over_target_within_a_tolerance():
    """ceil(in flight / target): 30 in flight at a target of 8 wants 4 replicas; 17 on 2
    replicas (ratio 1.06, inside HPA's 10 % tolerance) changes nothing, 19 (1.19) adds one."""
    cfg = _pool(replicas=1, scale_down_delay_s=0, window_s=1)
    assert _drive(cfg, lambda t: 30, 100)[0][1] == 4
    two = _pool(replicas=2, scale_down_delay_s=0, window_s=1)
    assert _drive(two, lambda t: 17, 100) == []
    assert _drive(two, lambda t: 19, 100)[0][1:] == (3, 2)  # 3 held, 2 serving while one starts


def test_scale_down_waits_for_the_stabilisation_window():
    """A burst wanting 4 replicas for its first 100 s, then nothing: the replicas stay until
    every wish of the last 300 s is lower, so the first scale-down comes 300 s after the last
    wish for 4 (the last decision of the burst, at 90 s), not before."""
    cfg = _pool(replicas=1, window_s=15, scale_down_delay_s=300)
    events = _drive(cfg, lambda t: 30 if t < 100 else 0, 1000)
    downs = [t for (t, held, _), (_, before, _) in zip(events[1:], events) if held < before]
    assert downs and downs[0] >= 90 + 300 - 1e-9 and downs[0] <= 90 + 300 + 15
    assert events[-1][1] == 0  # min_replicas 0: at rest it lets every replica go


def test_utilisation_and_queue_metrics():
    """utilisation: replicas wanted = busy seconds per second over the window / target;
    queue: waiting requests / target (replicas with 4 in flight and none running queue 4)."""
    cfg = _pool(replicas=2, metric="utilisation", target=0.5, window_s=30, scale_down_delay_s=0)
    env, rec = Environment(), Recorder(["c"])
    pool = _Pool(cfg, rec)
    scaler = Autoscaler(env, pool, rec)

    class Busy:
        def tick(self, _t: int) -> None:  # both replicas busy all the time: 2 replicas' worth
            for r in pool.replicas[:2]:
                rec.busy(r.index, env.now, 1.0, 1, 0, 0, 1)
            env.call_later(1.0, self.tick)

    Busy().tick(0)
    env.run(until=40)
    assert scaler.events[0][1] == 4  # 2 busy / 0.5 target
    q = _pool(replicas=1, metric="queue", target=2, window_s=1, scale_down_delay_s=0)
    env, rec = Environment(), Recorder(["c"])
    pool = _Pool(q, rec)
    pool.replicas[0].num_outstanding, pool.replicas[0].num_running = 10, 4
    scaler = Autoscaler(env, pool, rec)
    env.run(until=20)
    assert scaler.events[0][1] == math.ceil(6 / 2)


@pytest.mark.parametrize(
    "scaling,extra,message",
    [
        ({"min_replicas": 2, "max_replicas": 4, "target": 4}, {"replicas": 1}, "must lie between"),
        ({"max_replicas": 4}, {}, "needs a target"),
        ({"max_replicas": 4, "metric": "schedule"}, {}, "go together"),
        ({"max_replicas": 4, "target": 4}, {"faults": {"mtbf_s": 100, "mttr_s": 10}}, "not modelled"),
        ({"max_replicas": 4, "target": 4, "cold_start": {"storage": "floppy"}}, {}, "storage catalog"),
    ],
)
def test_autoscaling_settings_that_cannot_work_are_refused(scaling, extra, message):
    with pytest.raises(ValidationError, match=message):
        PoolConfig(name="p", model="llama-3-8b", gpu="h100-sxm", autoscaling=scaling, **extra)


def test_plan_chooses_the_most_replicas_and_bills_the_replicas_held(tmp_path):
    """A plan over an autoscaled pool searches its max_replicas and prices each count at the
    replicas the simulation held on average (GPU-hours actually held), beside the same pool
    fixed (a variant without autoscaling): the answer is the cheaper of the two by that
    measure, and its fleet file keeps the bounds."""
    from sim.plan import fleet_scenario, plan_fleet

    raw = _scenario(
        {
            "replicas": 1,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 8,
                "target": 16,
                "window_s": 30,
                "scale_down_delay_s": 60,
                "cold_start": {"cold_start_s": 20},
            },
        },
        {"process": "piecewise", "interpolation": "linear", "points": [[0, 2], [450, 100], [900, 2]]},
        duration_s=900,
        slo={"ttft_s": 2.0, "percentile": 95},
    )
    raw["classes"][0]["output_tokens"] = {"dist": "fixed", "value": 200}
    raw["plan"] = {
        "replications": 2,
        "max_replications": 3,
        "max_replicas": 6,
        "pools": {"p": {"variants": [{}, {"autoscaling": None}]}},
    }
    sc = parse_scenario(raw)
    result = plan_fleet(sc, tmp_path, out_dir=tmp_path, workers=1)
    scaled, fixed = result.candidates[next(iter(result.candidates))]
    assert scaled.pool.autoscaling is not None and fixed.pool.autoscaling is None
    assert scaled.status == "chosen"
    for e in scaled.evaluations:
        assert 1 <= e["replicas_held"] <= e["replicas"]
        assert scaled.cost(e["replicas"]) == pytest.approx(e["replicas_held"] * scaled.usd_per_replica_hour)
    assert scaled.cost(scaled.replicas) < scaled.replicas * scaled.usd_per_replica_hour  # not billed at its most
    # The fixed pool needs as many replicas all the time; the search stops once it cannot be cheaper.
    if fixed.status == "feasible":
        assert fixed.cost(fixed.replicas) >= scaled.cost(scaled.replicas)
    else:
        assert "cheapest found so far" in fixed.reason
    a = result.answer
    assert a["cost_per_hour"] == pytest.approx(scaled.cost(scaled.replicas))
    assert a["pools"][0]["autoscaling"]["replicas_held"] == pytest.approx(
        scaled.cost(scaled.replicas) / scaled.usd_per_replica_hour
    )
    pool = parse_scenario(fleet_scenario(result)).pools[0]
    assert pool.autoscaling.max_replicas == a["pools"][0]["replicas"] == scaled.replicas


def test_an_autoscaled_prefill_pool_is_refused():
    import yaml

    from sim.errors import ConfigError

    raw = yaml.safe_load((Path(__file__).resolve().parents[3] / "scenarios/pd_disaggregation.yaml").read_text())
    prefill = {p["disaggregation"]["prefill_pool"] for p in raw["pools"] if p.get("disaggregation")}
    for p in raw["pools"]:
        if p["name"] in prefill:
            p["autoscaling"] = {"min_replicas": 1, "max_replicas": 8, "target": 8}
    with pytest.raises(ConfigError, match="autoscaling the prefill pool"):
        parse_scenario(raw)
