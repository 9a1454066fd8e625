"""Spot capacity: evictions are replica failures announced ahead. Checked here: from the notice
the router sends the doomed replica nothing; a notice lets in-flight work finish, so fewer
requests are retried; a spot block is exactly its failures spelled out at the spot price; plan
and price bill the spot price; one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import catalog
from sim.config import PlanConfig, parse_scenario
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.plan import gpu_price
from sim.run import run_scenario

ON_DEMAND = catalog.get_gpu("h100-sxm").price.usd_per_gpu_hour


def scenario(pool_extra: dict, rate: float = 4.0, duration: float = 120.0) -> dict:
    return {
        "name": "spot",
        "seed": 3,
        "duration_s": duration,
        "pools": [
            {
                "name": "p",
                "model": "llama-3-8b",
                "gpu": "h100-sxm",
                "replicas": 2,
                "router": "round_robin",
                **pool_extra,
            }
        ],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "poisson", "rate": rate},
                "prompt_tokens": {"dist": "uniform", "low": 200, "high": 1500},
                "output_tokens": {"dist": "uniform", "low": 100, "high": 500},
                "retry": {"max_retries": 3},
            }
        ],
    }


def run(raw: dict):
    return simulate(parse_scenario(raw), None, np.random.SeedSequence(0))


def test_from_the_notice_the_doomed_replica_gets_no_new_requests():
    raw = scenario({"faults": {"at_s": [[0, 60.0]], "notice_s": 20.0, "mttr_s": 1000.0}})
    df = run(raw).requests
    routed_to_0 = df[df["replica"] == 0]
    # Round robin alternates until the notice at 40 s; then everything goes to replica 1.
    assert (routed_to_0["arrival_s"] < 40.0).all()
    assert ((df["arrival_s"] > 40.0) & (df["arrival_s"] < 60.0)).sum() > 10
    # Without a notice the replica keeps taking requests until it fails.
    df0 = run(scenario({"faults": {"at_s": [[0, 60.0]], "mttr_s": 1000.0}})).requests
    late = df0[(df0["arrival_s"] > 40.0) & (df0["arrival_s"] < 60.0)]
    assert (late["retries"] > 0).any() or (late["replica"] == 0).any()


def test_a_notice_lets_in_flight_work_finish_so_fewer_requests_are_retried():
    at = [[0, 50.0], [1, 90.0]]
    retried = {}
    for notice in (0.0, 30.0):
        df = run(scenario({"faults": {"at_s": at, "notice_s": notice, "mttr_s": 20.0}})).requests
        assert (df["status"] == "finished").all()
        retried[notice] = int((df["retries"] > 0).sum())
    assert retried[0.0] > 0
    assert retried[30.0] < retried[0.0]


def test_spot_is_its_evictions_spelled_out_at_the_spot_price():
    spot = {"discount": 0.6, "evictions_per_hour": 20.0, "notice_s": 30.0, "replacement_s": 60.0}
    written = {
        "faults": {"mtbf_s": 180.0, "mttr_s": 60.0, "notice_s": 30.0},
        "price_per_gpu_hour": ON_DEMAND * 0.4,
    }
    a = run_scenario(parse_scenario({**scenario({"spot": spot}), "replications": 2}), None)
    b = run_scenario(parse_scenario({**scenario(written), "replications": 2}), None)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary["pools"]["p"]["price_per_gpu_hour"] == pytest.approx(ON_DEMAND * 0.4)
    assert a.summary["classes"]["c"]["cost_usd"] == b.summary["classes"]["c"]["cost_usd"]
    assert a.summary["pools"]["p"]["outages"]  # evictions happened (a 30 s notice drained them here)
    # A spot price given outright, and the plan's price for a spot candidate.
    pool = parse_scenario(scenario({"spot": {"price_per_gpu_hour": 2.5, "evictions_per_hour": 1}})).pools[0]
    assert gpu_price(PlanConfig(), pool, pool) == 2.5
    pool = parse_scenario(scenario({"spot": spot})).pools[0]
    assert gpu_price(PlanConfig(prices={"h100-sxm": 5.0}), pool, pool) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"spot": {"discount": 0.5, "evictions_per_hour": 1}, "faults": {"mtbf_s": 100}}, "give spot or faults"),
        ({"spot": {"evictions_per_hour": 1}}, "give the spot price_per_gpu_hour or its discount"),
    ],
)
def test_bad_spot_blocks_are_one_line(extra, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_scenario(scenario(extra))
    assert "\n" not in str(exc.value)
