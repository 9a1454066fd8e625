"""Golden runs: small scenarios whose summaries are checked in.

A change in simulated behaviour shows up here as a diff. When a change is intended, rewrite
the files with ``SERVESIM_REGEN_GOLDEN=1 pytest tests/golden`` and review the diff.
"""

import json
import math
import os
from pathlib import Path

import pytest

from sim.config import parse_scenario
from sim.run import run_scenario

DATA = Path(__file__).parent / "data"

BASE = dict(
    seed=11,
    replications=2,
    duration_s=60,
    warmup_s=5,
    pools=[
        dict(
            name="p",
            model="llama-3.2-1b",
            gpu="l40s",
            replicas=2,
            router="jsq_tokens",
            engine=dict(max_num_seqs=48, max_num_batched_tokens=2048, num_gpu_blocks=1500),
        )
    ],
    classes=[
        dict(
            name="chat",
            pool="p",
            arrival=dict(process="gamma", rate=30, cv=1.5),
            prompt_tokens=dict(dist="lognormal", mean=700, cv=1.2, max=4000),
            output_tokens=dict(dist="uniform", low=20, high=400),
        )
    ],
    slo=dict(ttft_s=0.5, tpot_s=0.03, percentile=90),
)

CASES = {
    "continuous": {},
    "static": {"scheduler": "static"},
    "no_chunked_prefill": {"enable_chunked_prefill": False},
}


def summary_for(case: str) -> dict:
    raw = json.loads(json.dumps(BASE))
    raw["name"] = f"golden-{case}"
    raw["pools"][0]["engine"].update(CASES[case])
    res = run_scenario(parse_scenario(raw), Path("."))
    keep = {k: v for k, v in res.summary["classes"]["chat"].items()}
    return json.loads(json.dumps({"classes": keep, "conservation": res.summary["conservation"]}, default=float))


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys differ"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            assert (a is None or math.isnan(a)) and (b is None or math.isnan(b)), f"{path}: {a} != {b}"
        else:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a} != {b}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_summary(case):
    got = summary_for(case)
    path = DATA / f"{case}.json"
    if os.environ.get("SERVESIM_REGEN_GOLDEN") == "1" or not path.exists():
        path.write_text(json.dumps(got, indent=1, sort_keys=True))
        pytest.skip(f"wrote {path.name}")
    _close(got, json.loads(path.read_text()))
