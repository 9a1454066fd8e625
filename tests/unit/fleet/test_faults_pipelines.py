"""Replica failures, retries and timeouts, and pipeline requests across pools."""

from pathlib import Path

import numpy as np
import pytest

from sim.config import parse_scenario
from sim.run import run_scenario

LLM_COST = dict(kind="constant", step_s=0.01)
IMG_COST = dict(kind="constant", step_s=0.05, text_encode_s=0.02, vae_decode_s=0.1)


def text_pool(name="chat", replicas=2, **kw):
    return dict(
        name=name,
        model="llama-3.2-1b",
        gpu="h100-sxm",
        replicas=replicas,
        engine=dict(max_num_seqs=16, max_num_batched_tokens=512, num_gpu_blocks=2000),
        cost_model=LLM_COST,
        **kw,
    )


def image_pool(name="img", replicas=2, batching=None, **kw):
    return dict(
        name=name,
        model="sdxl",
        gpu="h100-sxm",
        replicas=replicas,
        batching=batching or dict(max_batch_size=2),
        cost_model=IMG_COST,
        **kw,
    )


def text_class(name="chat", pool="chat", rate=20.0, **kw):
    return dict(
        name=name,
        pool=pool,
        arrival=dict(process="poisson", rate=rate),
        prompt_tokens=dict(dist="fixed", value=100),
        output_tokens=dict(dist="fixed", value=50),
        **kw,
    )


def image_class(name="img", pool="img", rate=2.0, sampler="ddim", **kw):
    return dict(
        name=name, pool=pool, arrival=dict(process="poisson", rate=rate), image=dict(steps=20, sampler=sampler), **kw
    )


def run(pools, classes, **over):
    raw = dict(name="f", seed=4, duration_s=60.0, pools=pools, classes=classes)
    raw.update(over)
    return run_scenario(parse_scenario(raw), Path("."))


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_request_is_lost_under_random_failures(seed):
    faults = dict(mtbf_s=8.0, mttr_s=3.0)
    res = run(
        [text_pool(faults=faults), image_pool(faults=faults)],
        [text_class(retry=dict(max_retries=1)), image_class(retry=dict(max_retries=1, timeout_s=30))],
        seed=seed,
    )
    c = res.summary["conservation"]
    assert c["in_flight"] == 0
    assert c["finished"] + c["rejected"] + c["failed"] == c["arrived"]
    df = res.requests
    assert df["retries"].sum() > 0, "the failures should hit requests in flight"
    failed = df[df["status"] == "failed"]
    assert (failed["fail_reason"] != "").all()
    # A finished text request generated all of its tokens in its last attempt.
    done = df[(df["kind"] == "text") & (df["status"] == "finished")]
    assert (done["generated_tokens"] == done["output_tokens"]).all()


def constant(cls, rate):
    return dict(cls, arrival=dict(process="constant", rate=rate))


def test_llm_request_in_flight_restarts_from_scratch_and_pays_twice():
    # Arrivals at 10 s (replica 0) and 20 s; replica 0 fails at 10.3 s. No overlap.
    faults = dict(at_s=[[0, 10.3]], mttr_s=100.0, distribution="fixed")
    cls = dict(constant(text_class(), 0.1), output_tokens=dict(dist="fixed", value=500))
    res = run([text_pool(replicas=2, faults=faults, router="round_robin")], [cls], duration_s=None, num_requests=2)
    hit, clean = res.requests.sort_values("arrival_s").itertuples(index=False)
    assert hit.retries == 1 and clean.retries == 0
    assert hit.status == "finished" and hit.replica == 1 and hit.generated_tokens == 500
    # The 0.3 s of work lost is paid on top of a full run elsewhere.
    assert hit.gpu_s == pytest.approx(clean.gpu_s + 0.3, rel=1e-6)
    assert hit.finish_s == pytest.approx(10.3 + clean.e2e_s)


@pytest.mark.parametrize(
    "sampler,checkpoint,resumes", [("ddim", 5, True), ("ddim", 0, False), ("euler_ancestral", 5, False)]
)
def test_diffusion_retry_resumes_only_deterministic_samplers_with_checkpoints(sampler, checkpoint, resumes):
    faults = dict(at_s=[[0, 0.7]], mttr_s=100.0, distribution="fixed")
    pool = image_pool(
        replicas=2, batching=dict(max_batch_size=1, checkpoint_every=checkpoint), faults=faults, router="round_robin"
    )
    # One request at 1.0 s on replica 0: text 0.02 + 20 x 0.05 + VAE 0.1; it has done 13
    # steps when the replica fails at 1.7 s.
    pool["faults"]["at_s"] = [[0, 1.7]]
    res = run([pool], [constant(image_class(sampler=sampler), 1.0)], duration_s=None, num_requests=1)
    req = res.requests.iloc[0]
    assert req["retries"] == 1 and req["status"] == "finished"
    expected = 20 + (13 if not resumes else 13 - 10)  # resumes from step 10: recomputes 3 steps
    assert req["steps_computed"] == expected


def test_retry_budget_spent_marks_the_request_failed_with_its_reason():
    faults = dict(at_s=[[0, 0.5]], mttr_s=100.0, distribution="fixed")
    cls = dict(constant(text_class(retry=dict(max_retries=0)), 4.0), output_tokens=dict(dist="fixed", value=500))
    res = run([text_pool(replicas=2, faults=faults)], [cls], duration_s=None, num_requests=1)
    df = res.requests
    assert (df["status"] == "failed").all()
    assert df["fail_reason"].str.contains("retry budget").all()


def test_timeout_fails_slow_requests_and_keeps_conservation():
    res = run([text_pool(replicas=1)], [text_class(rate=200.0, retry=dict(timeout_s=0.5))], duration_s=5.0)
    df = res.requests
    failed = df[df["status"] == "failed"]
    assert len(failed) > 0 and failed["fail_reason"].str.contains("timeout_s 0.5").all()
    assert (df.loc[df["status"] == "finished", "e2e_s"] <= 0.5 + 0.011).all()
    assert res.summary["conservation"]["in_flight"] == 0


def test_requests_wait_while_every_replica_is_down():
    faults = dict(at_s=[[0, 1.0]], mttr_s=2.0, distribution="fixed")
    res = run([image_pool(replicas=1, faults=faults)], [image_class(rate=2.0)], duration_s=6.0)
    df = res.requests
    assert (df["status"] == "finished").all()
    during = df[(df["arrival_s"] > 1.0) & (df["arrival_s"] < 3.0)]
    assert len(during) and (during["first_scheduled_s"] >= 3.0).all()


# --------------------------------------------------------------------------- pipelines


def pipeline_class(rate=0.05, **kw):
    return dict(
        name="pipe",
        arrival=dict(process="poisson", rate=rate),
        stages=[
            dict(
                name="rewrite",
                pool="chat",
                prompt_tokens=dict(dist="fixed", value=50),
                output_tokens=dict(dist="fixed", value=30),
            ),
            dict(name="draw", pool="img", image=dict(steps=10)),
            dict(
                name="caption",
                pool="chat",
                prompt_tokens=dict(dist="fixed", value=300),
                output_tokens=dict(dist="fixed", value=20),
            ),
        ],
        **kw,
    )


def test_pipeline_latency_is_the_sum_of_its_stages_without_contention():
    cls = dict(pipeline_class(), arrival=dict(process="constant", rate=0.2))  # 5 s apart: no overlap
    res = run([text_pool(replicas=1), image_pool(replicas=1)], [cls], duration_s=100.0)
    df = res.requests
    pipes = df[df["kind"] == "pipeline"]
    stages = df[df["parent_id"] >= 0]
    assert len(pipes) > 10 and (pipes["status"] == "finished").all()
    llm_first = 0.01 * 30  # chunk of 50 prompt tokens + 29 decodes: 30 steps of 0.01 s
    img = 0.02 + 10 * 0.05 + 0.1
    llm_last = 0.01 * 20
    np.testing.assert_allclose(pipes["e2e_s"], llm_first + img + llm_last, rtol=1e-9)
    per_pipe = stages.groupby("parent_id")["e2e_s"].sum()
    np.testing.assert_allclose(per_pipe.loc[pipes["request_id"]].to_numpy(), pipes["e2e_s"].to_numpy(), rtol=1e-9)
    costs = stages.groupby("parent_id")["cost_usd"].sum()
    np.testing.assert_allclose(costs.loc[pipes["request_id"]].to_numpy(), pipes["cost_usd"].to_numpy(), rtol=1e-12)
    st = res.summary["classes"]["pipe"]
    shares = sum(st[f"stage_{n}_latency_share"]["mean"] for n in ("rewrite", "draw", "caption"))
    assert shares == pytest.approx(1.0)
    assert st["stage_draw_latency_share"]["mean"] == pytest.approx(img / (llm_first + img + llm_last))


def test_a_rejected_stage_rejects_the_pipeline_with_the_stage_named():
    cls = pipeline_class(rate=0.5)
    cls["stages"][2]["prompt_tokens"] = dict(dist="fixed", value=100_000)  # longer than the model's context
    res = run([text_pool(replicas=1), image_pool(replicas=1)], [cls], duration_s=20.0)
    pipes = res.requests[res.requests["kind"] == "pipeline"]
    assert (pipes["status"] == "rejected").all()
    assert pipes["reject_reason"].str.startswith("stage 'caption'").all()
    assert res.summary["conservation"]["in_flight"] == 0
