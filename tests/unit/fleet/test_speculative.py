"""Speculative decoding: a proposer suggests k tokens per decoding request and step, the target
verifies them in one pass (k + 1 queries), and the accepted prefix plus one token are emitted.
Checked here: tokens per step follow (1 - a^(k+1)) / (1 - a); with every proposal accepted the
speed-up is the cost ratio (k + 1) x decode step / (verify step + k x proposer pass); the gain
vanishes at large batches, where the verify step is compute-bound; a draft model's weights and
KV cache come out of the KV budget; per-class acceptance rates; one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.costs.base import StepShape
from sim.costs.factory import build_cost_model, build_draft_cost
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.fleet.pools import pool_kv_budget
from sim.llm.memory import weight_bytes
from sim.run import conservation

PROMPT = 200


def scenario(spec: dict | None, output: int = 400, n: int = 1, rate: float = 0.5, engine=None, **pool) -> dict:
    eng = {**(engine or {})}
    if spec is not None:
        eng["speculative"] = spec
    return {
        "name": "spec",
        "seed": 2,
        "num_requests": n,
        "pools": [{"name": "p", "model": "llama-3-8b", "gpu": "h100-sxm", "engine": eng, **pool}],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "constant", "rate": rate},
                "prompt_tokens": {"dist": "fixed", "value": PROMPT},
                "output_tokens": {"dist": "fixed", "value": output},
            }
        ],
    }


def run(raw: dict, seed: int = 0, **kw):
    sc = parse_scenario(raw)
    return sc, simulate(sc, None, np.random.SeedSequence(seed), **kw)


def truncated_geometric(alpha: float, k: int) -> tuple[float, float]:
    """Mean and variance of the tokens one step emits: 1 + the accepted prefix of k proposals."""
    p = np.array([alpha**j * (1 - alpha) for j in range(k)] + [alpha**k])
    tokens = np.arange(k + 1) + 1
    mean = float((p * tokens).sum())
    return mean, float((p * tokens**2).sum() - mean**2)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.0])
def test_tokens_per_step_follow_the_acceptance_rate(alpha):
    """n-gram proposals (no proposer cost) and a constant step: decode steps are time / step."""
    k, out = 4, 3001
    spec = {"method": "ngram", "num_speculative_tokens": k, "acceptance": {"mean": alpha}}
    raw = scenario(spec, output=out, cost_model={"kind": "constant", "step_s": 0.01})
    _, res = run(raw)
    r = res.requests.iloc[0]
    steps = round((r["finish_s"] - r["first_token_s"]) / 0.01)
    mean, var = truncated_geometric(alpha, k)
    if alpha == 1.0:
        assert steps == math.ceil((out - 1) / (k + 1))
        return
    per_step = (out - 1) / steps
    se = math.sqrt(var / steps)
    assert abs(per_step - mean) < 4 * se + 0.02  # + the last steps, whose proposals are cut short
    assert mean == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha))


def test_with_every_proposal_accepted_the_speed_up_is_the_cost_ratio():
    """One request alone, a draft model, every proposal accepted: each step emits k + 1 tokens
    for a verify pass (k + 1 queries) and k draft passes; the speed-up over plain decoding is
    (k + 1) x decode step / (verify + k x draft)."""
    k, out = 4, 801
    spec = {
        "method": "draft_model",
        "draft_model": "llama-3.2-1b",
        "num_speculative_tokens": k,
        "acceptance": {"mean": 1.0},
    }
    sc, res = run(scenario(spec, output=out))
    _, base = run(scenario(None, output=out))
    tpot_spec = float(res.requests["tpot_s"].iloc[0])
    tpot_base = float(base.requests["tpot_s"].iloc[0])
    pool = sc.pools[0]
    target, draft = build_cost_model(pool), build_draft_cost(pool)
    ctx = PROMPT + out // 2
    one, verify, proposal = StepShape(), StepShape(), StepShape()
    one.add_decode(ctx)
    verify.add_prefill(k + 1, ctx)
    proposal.add_decode(ctx)
    expected = (k + 1) * target.step_s(one) / (target.step_s(verify) + k * draft.step_s(proposal))
    assert tpot_base / tpot_spec == pytest.approx(expected, rel=0.01)
    assert expected > 2  # at batch 1 the verify pass costs little more than one decode


def batch_tpot(spec, batch: int) -> float:
    """Mean TPOT of ``batch`` requests that arrive together and decode side by side."""
    raw = scenario(spec, output=300, n=batch, rate=1e5, engine={"max_num_seqs": 256, "max_num_batched_tokens": 8192})
    return float(run(raw)[1].requests["tpot_s"].mean())


def test_the_gain_vanishes_as_the_batch_grows():
    """At batch 1 a decode step is bound by reading the weights, and verifying k + 1 tokens
    costs about as much as one; at batch 256 the step is bound by compute, verifying costs
    k + 1 times as much, and speculation no longer pays."""
    base = {b: batch_tpot(None, b) for b in (1, 16, 256)}
    eagle = {"method": "eagle", "num_speculative_tokens": 4, "acceptance": {"mean": 0.7}}
    gain = {b: base[b] / batch_tpot(eagle, b) for b in base}
    assert gain[1] > 1.8
    assert gain[1] > gain[16] > gain[256]
    assert gain[256] < 1.1  # an EAGLE head costs little: about break-even
    # A draft model's own passes cost more at a large batch: slower than not speculating.
    draft = {**eagle, "method": "draft_model", "draft_model": "llama-3.2-1b"}
    assert base[256] / batch_tpot(draft, 256) < 1.0


def test_a_draft_models_weights_and_kv_come_out_of_the_kv_budget():
    spec = {
        "method": "draft_model",
        "draft_model": "llama-3.2-1b",
        "num_speculative_tokens": 3,
        "acceptance": {"mean": 0.7},
    }
    base = pool_kv_budget(parse_scenario(scenario(None)).pools[0])
    pool = parse_scenario(scenario(spec)).pools[0]
    with_draft = pool_kv_budget(pool)
    draft = catalog.get_model("llama-3.2-1b")
    target_kv = catalog.get_model("llama-3-8b").kv_bytes_per_token(2.0, 1)
    assert with_draft.kv_bytes_per_token == target_kv + draft.kv_bytes_per_token(2.0, 1)
    usable = base.usable_bytes - weight_bytes(draft, pool.engine)
    assert with_draft.num_gpu_blocks == int(usable // (16 * with_draft.kv_bytes_per_token))
    # n-gram proposals take no memory.
    ngram = {"method": "ngram", "num_speculative_tokens": 3, "acceptance": {"mean": 0.7}}
    assert pool_kv_budget(parse_scenario(scenario(ngram)).pools[0]).num_gpu_blocks == base.num_gpu_blocks


def test_each_class_accepts_at_its_own_rate_and_runs_reproduce():
    spec = {"method": "eagle", "num_speculative_tokens": 4, "acceptance": {"mean": 0.5, "cv": 0.3}}
    raw = scenario(spec, output=200, n=120, rate=4.0)
    code = {**raw["classes"][0], "name": "code", "speculative_acceptance": {"mean": 0.9, "cv": 0.05}}
    raw["classes"].append(code)
    _, a = run(raw, seed=4)
    _, b = run(raw, seed=4)
    _, slow = run(raw, seed=4, decode_spans=False)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.requests, slow.requests)
    df = a.requests
    conservation(df)
    assert (df["generated_tokens"] == df["output_tokens"]).all()
    tpot = df.groupby("class", observed=True)["tpot_s"].mean()
    assert tpot["code"] < 0.8 * tpot["c"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "draft_model", "num_speculative_tokens": 3, "acceptance": {"mean": 0.7}}, "draft_model is needed"),
        (
            {
                "method": "draft_model",
                "draft_model": "llama-2-7b",
                "num_speculative_tokens": 3,
                "acceptance": {"mean": 0.7},
            },
            "a draft must share the target's tokenizer",
        ),
        ({"method": "eagle", "num_speculative_tokens": 3, "acceptance": {"mean": 0.9, "cv": 1.0}}, "too wide"),
        ({"method": "eagle", "num_speculative_tokens": 0, "acceptance": {"mean": 0.9}}, "num_speculative_tokens"),
    ],
)
def test_bad_speculative_configs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_scenario(scenario(spec))
    assert "\n" not in str(exc.value)


def test_static_batching_refuses_speculation():
    spec = {"method": "ngram", "num_speculative_tokens": 3, "acceptance": {"mean": 0.7}}
    with pytest.raises(ConfigError, match="speculative decoding needs the continuous scheduler"):
        parse_scenario(scenario(spec, engine={"scheduler": "static"}))


def test_plan_takes_speculation_when_plain_decoding_cannot_meet_the_tpot():
    """A TPOT target below a plain decode step: only the speculative variant can meet it, and
    its TPOT floor (a step may emit k + 1 tokens) must not prune it."""
    from sim.plan import plan_fleet

    raw = scenario(None, output=300, n=None, rate=1.0)
    raw.update({"num_requests": None, "duration_s": 120, "warmup_s": 10})
    raw["classes"][0]["slo"] = {"tpot_s": 0.006, "percentile": 50}
    eagle = {"method": "eagle", "num_speculative_tokens": 4, "acceptance": {"mean": 0.7, "cv": 0.15}}
    raw["plan"] = {"replications": 3, "pools": {"p": {"variants": [{}, {"engine.speculative": eagle}]}}}
    result = plan_fleet(parse_scenario(raw), None, workers=1)
    (pick,) = result.answer["pools"]
    assert pick["knobs"] == {"engine.speculative": eagle}
    plain = next(c for cs in result.candidates.values() for c in cs if not c.label["knobs"])
    assert plain.status == "rejected" and "TPOT is at least" in plain.reason
