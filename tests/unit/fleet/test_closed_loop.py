"""Closed-loop load: N users, each waiting for its answer and thinking before the next request;
conversations played turn by turn."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import parse_scenario
from sim.errors import ConfigError
from sim.fleet.cluster import simulate


def scenario(arrival: dict, **extra) -> dict:
    raw = {
        "name": "closed",
        "seed": 4,
        "duration_s": 120,
        "pools": [{"name": "p", "model": "llama-3.2-1b", "gpu": "l40s", "replicas": 1}],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": arrival,
                "prompt_tokens": {"dist": "lognormal", "mean": 600, "cv": 1.0, "max": 4000},
                "output_tokens": {"dist": "uniform", "low": 20, "high": 300},
            }
        ],
    }
    raw.update(extra)
    return raw


def run(raw: dict, seed: int = 0):
    sc = parse_scenario(raw)
    return sc, simulate(sc, None, np.random.SeedSequence(seed)).requests


def in_flight_max(df) -> int:
    """Most requests in the system at once (arrival to finish)."""
    events = sorted([(t, 1) for t in df["arrival_s"]] + [(t, -1) for t in df["finish_s"]], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def test_users_never_exceed_their_number_and_each_waits_for_its_answer():
    users = 12
    sc, df = run(scenario({"process": "closed", "users": users, "think_time_s": 0.0}))
    assert (df["status"] == "finished").all()
    assert in_flight_max(df) == users
    # With no think time each request after the first wave arrives exactly when one ends.
    later = df.sort_values("arrival_s").iloc[users:]
    ends = set(df["finish_s"].tolist())
    assert all(t in ends for t in later["arrival_s"])
    assert df["arrival_s"].max() < sc.duration_s


def test_throughput_follows_littles_law_for_the_loop():
    """X = N / (R + Z): the users' request rate equals their number over one cycle (answer time
    R plus think time Z); over a long run the two agree to within the edge effects."""
    users, think = 16, 2.0
    raw = scenario({"process": "closed", "users": users, "think_time_s": think}, duration_s=600)
    _, df = run(raw)
    done = df[df["finish_s"] >= 0]
    x = len(df) / raw["duration_s"]
    r = float(done["e2e_s"].mean())
    assert x == pytest.approx(users / (r + think), rel=0.03)


def test_fixed_think_time_and_request_limit():
    raw = scenario({"process": "closed", "users": 3, "think_time_s": 0.5, "think": "fixed"}, num_requests=30)
    raw.pop("duration_s")
    _, df = run(raw)
    assert len(df) == 30
    starts = df.sort_values("arrival_s")["arrival_s"].to_numpy()[3:]
    ends = np.sort(df["finish_s"].to_numpy() + 0.5)
    assert np.all(np.isclose(starts[:, None], ends[None, :], atol=1e-9).any(axis=1))


def test_ramp_spreads_the_first_requests():
    _, df = run(scenario({"process": "closed", "users": 4, "ramp_s": 8.0, "think_time_s": 1000, "think": "fixed"}))
    first = np.sort(df["arrival_s"].to_numpy())[:4]
    assert first.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_conversations_are_played_turn_by_turn_with_prefix_hits():
    raw = scenario({"process": "closed", "users": 2, "think_time_s": 1.0})
    cls = raw["classes"][0]
    del cls["prompt_tokens"], cls["output_tokens"]
    cls["trace"] = {"path": "builtin:sharegpt_example.json", "format": "sharegpt"}
    raw["pools"][0]["engine"] = {"enable_prefix_caching": True, "block_size": 16}
    raw["duration_s"] = 3600
    sc, df = run(raw)
    from sim.workload.readers import ReadOptions, read_records
    from sim.workload.traces import sample_path

    rec = read_records(sample_path("sharegpt_example.json"), "sharegpt", ReadOptions(), with_times=False)
    assert len(df) == len(rec.prompt_tokens)  # every turn once, then the users stop
    assert sorted(df["prompt_tokens"].tolist()) == sorted(rec.prompt_tokens.tolist())
    # A later turn reuses the KV blocks of the turn before it.
    assert df["cached_tokens"].sum() > 0
    by_prompt = df.set_index("prompt_tokens")
    first, second = (int(p) for p in rec.prompt_tokens[:2])
    assert by_prompt.loc[second, "arrival_s"] >= by_prompt.loc[first, "finish_s"] + 0.0
    assert by_prompt.loc[second, "cached_tokens"] >= (first // 16) * 16 - 16


def test_closed_arrivals_are_for_text_classes():
    raw = scenario({"process": "closed", "users": 2})
    raw["pools"] = [{"name": "img", "model": "sdxl", "gpu": "h100-sxm"}]
    cls = raw["classes"][0]
    del cls["prompt_tokens"], cls["output_tokens"]
    cls.update(pool="img", image={"width": 512, "height": 512})
    with pytest.raises(ConfigError, match="closed-loop arrivals"):
        parse_scenario(raw)
