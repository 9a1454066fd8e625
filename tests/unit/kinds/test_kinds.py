"""The four request kinds beyond text, image and pipeline (issue 22, item 6): each runs end to
end and shows its defining property. A diffusion LM's block costs about the same whatever its
length (a memory-bound forward) and its latency is linear in denoising steps; an AR image's cost
grows with its token grid; audio's real-time factor and time to first audio do not depend on the
clip's length; a hybrid's latency follows its AR steps, not its tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim import catalog
from sim.config import parse_scenario
from sim.costs.base import StepShape
from sim.costs.factory import build_cost_model
from sim.errors import ConfigError
from sim.kinds import codec_decode_s, pixel_decode_s, refiner_s_per_token
from sim.kinds.blocks import BlockReplica, BlockRequest
from sim.price import PriceEntry, PriceList, check_price_list, price_scenario
from sim.run import run_scenario

H100 = catalog.get_gpu("h100-sxm")


def _run(model: str, cls: dict, n: int = 1, rate: float = 0.01, pool: dict | None = None):
    """``n`` requests far apart (each alone on its replica): the requests table."""
    raw = {
        "name": "t",
        "seed": 1,
        "num_requests": n,
        "pools": [{"name": "p", "model": model, "gpu": "h100-sxm", **(pool or {})}],
        "classes": [{"name": "c", "pool": "p", "arrival": {"process": "constant", "rate": rate}, **cls}],
    }
    sc = parse_scenario(raw)
    result = run_scenario(sc)
    return sc, result


def _top(result):
    df = result.requests
    return df[df["parent_id"] < 0].reset_index(drop=True)


def _dllm(block: int, steps: int, output: int = 64, prompt: int = 300, cache: str = "block") -> dict:
    return {
        "prompt_tokens": {"dist": "fixed", "value": prompt},
        "output_tokens": {"dist": "fixed", "value": output},
        "diffusion_lm": {"block_tokens": block, "steps_per_block": steps, "cache": cache},
    }


# --------------------------------------------------------------------------- diffusion LM


def test_dllm_alone_takes_the_sum_of_its_block_steps():
    sc, result = _run("llada-8b", _dllm(32, 4, output=64, prompt=300))
    row = _top(result).iloc[0]
    cost = build_cost_model(sc.pools[0])
    req = BlockRequest(0, 0, 0.0, "dllm", 300, (32, 32), (4, 4))

    def step(q: int, ctx: int, prompt: int = 0) -> float:
        shape = StepShape()
        BlockReplica._add_block(shape, req, q, ctx, prompt)
        return cost.step_s(shape)

    # the prompt's forward runs the first block's first step; then 3 more; then 4 for block 2
    first_block = step(32, 0, 300) + 3 * step(32, 300)
    assert row["ttft_s"] == pytest.approx(first_block, rel=1e-9)
    assert row["e2e_s"] == pytest.approx(first_block + 4 * step(32, 332), rel=1e-9)
    assert row["generated_tokens"] == 64 and row["steps"] == 8 and row["blocks"] == 2
    assert np.isnan(row["tpot_s"])


def test_dllm_block_time_is_flat_in_its_length_and_linear_in_steps():
    ttfb = {L: _top(_run("llada-8b", _dllm(L, 8, output=L, prompt=16))[1]).iloc[0]["ttft_s"] for L in (8, 64)}
    # eight times the tokens in a forward that streams the weights either way: at most a quarter
    # more time (the roofline's partial compute-memory overlap)
    assert 1.0 < ttfb[64] / ttfb[8] < 1.25
    e2e = [_top(_run("llada-8b", _dllm(32, s, output=32))[1]).iloc[0]["e2e_s"] for s in (4, 8, 12)]
    step = (e2e[1] - e2e[0]) / 4
    assert step > 0
    assert e2e[2] - e2e[1] == pytest.approx(4 * step, rel=1e-9)  # every extra step the same time


def test_dllm_prefix_cache_recomputes_the_masked_answer():
    block = _top(_run("llada-8b", _dllm(32, 8, output=512))[1]).iloc[0]
    prefix = _top(_run("llada-8b", _dllm(32, 8, output=512, cache="prefix"))[1]).iloc[0]
    assert prefix["e2e_s"] > 1.2 * block["e2e_s"]  # early blocks recompute up to 512 tokens a step


def test_dllm_under_load_conserves_requests_and_kv():
    cls = _dllm(32, 16, output=400, prompt=2000)
    cls["retry"] = {"timeout_s": 8}
    sc, result = _run("llada-8b", cls, n=300, rate=30, pool={"engine": {"max_num_seqs": 16}})
    status = result.requests["status"].astype(str)
    assert set(status) <= {"finished", "failed"} and (status == "failed").any() and (status == "finished").any()
    assert (result.requests.loc[status == "failed", "fail_reason"] != "").all()
    ts = result.timeseries
    assert ts["running"].max() <= 16
    assert (ts["kv_blocks_used"].astype(int) <= result.replicas["kv_blocks"].iloc[0]).all()


# --------------------------------------------------------------------------- AR image


def test_ar_image_cost_grows_with_its_token_grid():
    gpu_s, e2e = [], []
    for side in (256, 384, 512):
        _, result = _run(
            "janus-pro-7b",
            {"prompt_tokens": {"dist": "fixed", "value": 50}, "ar_image": {"width": side, "height": side}},
        )
        row = _top(result).iloc[0]
        assert row["output_tokens"] == (side // 16) ** 2 and row["sequences"] == 2  # CFG: two sequences
        gpu_s.append(row["gpu_s"])
        e2e.append(row["e2e_s"])
    assert gpu_s[0] < gpu_s[1] < gpu_s[2] and e2e[0] < e2e[1] < e2e[2]
    # 1024 tokens against 256: about four times the work (the decode steps dominate)
    assert 3.0 < gpu_s[2] / gpu_s[0] < 5.0


def test_ar_image_first_row_streams_before_the_image():
    sc, result = _run(
        "janus-pro-7b",
        {"prompt_tokens": {"dist": "fixed", "value": 50}, "ar_image": {"width": 384, "height": 384, "cfg": False}},
    )
    top = _top(result).iloc[0]
    seq = result.requests[result.requests["parent_id"] == top["request_id"]].iloc[0]
    gap = (seq["finish_s"] - seq["first_token_s"]) / (576 - 1)
    strip = pixel_decode_s("llamagen-vq16", H100, 384, 16, 24)
    assert top["first_chunk_s"] == pytest.approx(seq["ttft_s"] + 23 * gap + strip, rel=1e-9)
    assert top["decode_s"] == pytest.approx(pixel_decode_s("llamagen-vq16", H100, 384, 384, 576), rel=1e-12)
    assert top["e2e_s"] == pytest.approx(seq["e2e_s"] + top["decode_s"], rel=1e-9)
    assert top["first_chunk_s"] < top["e2e_s"] / 10


# --------------------------------------------------------------------------- audio


def _audio(seconds: int, **kw) -> dict:
    return {
        "prompt_tokens": {"dist": "fixed", "value": 20},
        "audio": {"seconds": {"dist": "fixed", "value": seconds}, **kw},
    }


def test_audio_steps_follow_the_codec():
    sc = parse_scenario(
        {
            "name": "t",
            "duration_s": 10,
            "pools": [{"name": "p", "model": "orpheus-3b", "gpu": "h100-sxm"}],
            "classes": [
                {"name": "a", "pool": "p", "arrival": {"process": "poisson", "rate": 1}, **_audio(10)},
                {
                    "name": "b",
                    "pool": "p",
                    "arrival": {"process": "poisson", "rate": 1},
                    **_audio(10, frame_rate_hz=11.72, codebooks=7, parallel_codebooks=False),
                },
            ],
        }
    )
    assert sc.classes[0].audio.steps(10) == 500 + 3  # MusicGen's delay pattern: frames + codebooks - 1
    assert sc.classes[1].audio.steps(10) == 117 * 7  # Orpheus: every SNAC token a step


def test_audio_real_time_factor_and_first_audio_do_not_depend_on_length():
    rows = {s: _top(_run("musicgen-medium", _audio(s, cfg=True))[1]).iloc[0] for s in (10, 30)}
    for r in rows.values():
        assert r["rtf"] == pytest.approx((r["e2e_s"] - r["queue_s"]) / r["audio_s"], rel=1e-9)
        assert r["rtf"] < 1  # faster than real time on an H100, alone
    assert rows[30]["rtf"] == pytest.approx(rows[10]["rtf"], rel=0.1)
    assert rows[30]["ttft_s"] == pytest.approx(rows[10]["ttft_s"], rel=0.05)  # time to first audio
    assert rows[30]["e2e_s"] > 2.5 * rows[10]["e2e_s"]
    assert rows[10]["decode_s"] == pytest.approx(codec_decode_s(parse_audio(), H100, 10), rel=1e-12)


def parse_audio():
    from sim.config import ARAudio

    return ARAudio(seconds={"dist": "fixed", "value": 10})


# --------------------------------------------------------------------------- hybrid


def _hybrid(**kw) -> dict:
    return {"prompt_tokens": {"dist": "fixed", "value": 80}, "hybrid": kw}


def test_hybrid_latency_follows_its_ar_steps_not_its_tokens():
    scales = [1, 2, 4, 8]  # 85 tokens in 4 AR steps
    by_scale = _top(_run("hart-0.7b", _hybrid(scales=scales, refine_steps=0))[1]).iloc[0]
    by_token = _top(_run("hart-0.7b", _hybrid(scales=[1] * 85, refine_steps=0))[1]).iloc[0]
    assert by_scale["output_tokens"] == by_token["output_tokens"] == 85
    assert by_scale["decode_s"] == by_token["decode_s"] > 0  # the same image to decode
    ar = {k: r["e2e_s"] - r["decode_s"] for k, r in (("scale", by_scale), ("token", by_token))}
    assert ar["token"] > 10 * ar["scale"]  # 85 steps against 4


def test_hybrid_refiner_steps_add_their_roofline_time():
    base = _top(_run("hart-0.7b", _hybrid(refine_steps=0))[1]).iloc[0]
    refined = _top(_run("hart-0.7b", _hybrid(refine_steps=8))[1]).iloc[0]
    from sim.config import HybridImage

    per_step = refiner_s_per_token(HybridImage(), H100, 1) * 64 * 64 * 2  # last scale's tokens, CFG rows
    assert refined["e2e_s"] - base["e2e_s"] == pytest.approx(8 * per_step, rel=1e-6)
    assert refined["steps"] == 14 + 8 and refined["images"] == 1


# --------------------------------------------------------------------------- billing and input


def test_each_kind_is_priced_in_its_own_unit():
    sc = parse_scenario(
        {
            "name": "t",
            "duration_s": 20,
            "pools": [
                {"name": "d", "model": "llada-8b", "gpu": "h100-sxm"},
                {"name": "j", "model": "janus-pro-7b", "gpu": "h100-sxm"},
                {"name": "m", "model": "musicgen-medium", "gpu": "h100-sxm"},
                {"name": "h", "model": "hart-0.7b", "gpu": "h100-sxm"},
            ],
            "classes": [
                {"name": "dl", "pool": "d", "arrival": {"process": "poisson", "rate": 1}, **_dllm(32, 8)},
                {
                    "name": "im",
                    "pool": "j",
                    "arrival": {"process": "poisson", "rate": 0.3},
                    "prompt_tokens": {"dist": "fixed", "value": 40},
                    "ar_image": {},
                },
                {"name": "au", "pool": "m", "arrival": {"process": "poisson", "rate": 0.3}, **_audio(8)},
                {"name": "hy", "pool": "h", "arrival": {"process": "poisson", "rate": 1}, **_hybrid()},
            ],
        }
    )
    result = run_scenario(sc)
    s = result.summary
    assert s["kinds"] == {"dl": "dllm", "im": "ar_image", "au": "audio", "hy": "hybrid"}
    assert s["classes"]["dl"]["cost_per_1m_output_tokens_usd"]["mean"] > 0
    assert s["classes"]["im"]["cost_per_image_usd"]["mean"] > 0
    assert s["classes"]["au"]["cost_per_audio_minute_usd"]["mean"] > 0
    assert s["classes"]["hy"]["images_per_s"]["mean"] > 0
    rep = price_scenario(result)
    units = rep.classes.set_index("class")
    assert units.loc["dl", "usd_per_1m_output_tokens"] > 0 and units.loc["im", "usd_per_image"] > 0
    assert units.loc["au", "usd_per_audio_minute"] > 0 and units.loc["hy", "usd_per_image"] > 0
    # revenue: a finished clip pays its minutes
    top = rep.requests[(rep.requests["class"] == "au") & (rep.requests["status"] == "finished")]
    rows = result.requests[(result.requests["class"] == "au") & (result.requests["parent_id"] < 0)]
    done = rows[rows["status"].astype(str) == "finished"]
    per_min = rep.prices.classes["au"].per_audio_minute_usd
    assert top["revenue_usd"].sum() == pytest.approx(per_min * done["audio_s"].sum() / 60)
    with pytest.raises(ConfigError, match="per_image_usd: does not apply to an audio class"):
        check_price_list(PriceList({"au": PriceEntry(per_image_usd=1.0)}, "prices.yaml"), sc)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {
                "classes": [
                    {
                        "name": "x",
                        "pool": "p",
                        "arrival": {"process": "poisson", "rate": 1},
                        "prompt_tokens": {"dist": "fixed", "value": 5},
                        "output_tokens": {"dist": "fixed", "value": 5},
                    }
                ]
            },
            "serves dllm classes .a block-step engine. and text ones",
        ),
        (
            {"pool": {"autoscaling": {"min_replicas": 1, "max_replicas": 2, "target": 4}}},
            "not modelled with autoscaling",
        ),
        ({"pool": {"router": "cache_aware"}}, "not modelled with the cache_aware router"),
        (
            {"cls": {"output_tokens": {"dist": "fixed", "value": 5}, "diffusion_lm": None, "ar_image": {}}},
            "generates its own tokens",
        ),
        (
            {"cls": {"diffusion_lm": None, "ar_image": {"decoder": "nope"}, "output_tokens": None}},
            "unknown decoder 'nope'",
        ),
        (
            {"cls": {"diffusion_lm": None, "ar_image": {"width": 100}, "output_tokens": None}},
            "not a multiple of downsample",
        ),
        (
            {
                "cls": {
                    "diffusion_lm": None,
                    "hybrid": {},
                    "output_tokens": None,
                    "prompt_tokens": {"dist": "fixed", "value": 5000},
                }
            },
            "max_model_len",
        ),
    ],
)
def test_bad_kind_configs_are_refused_in_one_line(change, message):
    cls = {"name": "c", "pool": "p", "arrival": {"process": "poisson", "rate": 1}, **_dllm(32, 8)}
    cls.update(change.get("cls", {}))
    cls = {k: v for k, v in cls.items() if v is not None}
    raw = {
        "name": "t",
        "duration_s": 10,
        "pools": [{"name": "p", "model": "llada-8b", "gpu": "h100-sxm", **change.get("pool", {})}],
        "classes": [cls, *change.get("classes", [])],
    }
    with pytest.raises(ConfigError, match=message):
        parse_scenario(raw)


# --------------------------------------------------------------------------- replica failures


def _fault_run(model: str, cls: dict, at_s: float):
    """One request on a two-replica pool whose first replica fails at ``at_s`` (back 5 s later)."""
    raw = {
        "name": "t",
        "seed": 1,
        "num_requests": 1,
        "pools": [
            {
                "name": "p",
                "model": model,
                "gpu": "h100-sxm",
                "replicas": 2,
                "faults": {"at_s": [[0, at_s]], "mttr_s": 5, "distribution": "fixed"},
            }
        ],
        "classes": [{"name": "c", "pool": "p", "arrival": {"process": "constant", "rate": 1}, **cls}],
    }
    return run_scenario(parse_scenario(raw))


def test_a_dllm_request_starts_again_after_its_replica_fails():
    cls = _dllm(32, 8, output=256)
    alone = _top(_run("llada-8b", cls)[1]).iloc[0]
    hit = _top(_fault_run("llada-8b", cls, at_s=1.3)).iloc[0]  # it arrives at 1 s
    assert hit["status"] == "finished" and hit["retries"] == 1 and hit["replica"] == 1
    # everything it had done (its blocks until 0.3 s) is lost: it runs again in full elsewhere
    lost = 1.3 - hit["arrival_s"]
    assert 0 < lost < alone["e2e_s"]
    assert hit["e2e_s"] == pytest.approx(lost + alone["e2e_s"], rel=1e-6)
    assert hit["gpu_s"] == pytest.approx(alone["gpu_s"] + lost, rel=1e-6)
    assert hit["generated_tokens"] == 256


def test_both_sequences_of_an_ar_image_start_again_together():
    cls = {"prompt_tokens": {"dist": "fixed", "value": 50}, "ar_image": {"width": 256, "height": 256}}
    alone = _top(_run("janus-pro-7b", cls)[1]).iloc[0]
    result = _fault_run("janus-pro-7b", cls, at_s=2.0)
    top = _top(result).iloc[0]
    seqs = result.requests[result.requests["parent_id"] == top["request_id"]]
    assert top["status"] == "finished" and top["retries"] == 1  # the pair started again once
    assert set(seqs["replica"]) == {1}  # the twin followed its sequence
    assert top["e2e_s"] == pytest.approx(2.0 - top["arrival_s"] + alone["e2e_s"], rel=1e-6)


# --------------------------------------------------------------------------- regressions


def test_a_step_budget_below_the_cfg_rows_still_makes_progress():
    cls = {"prompt_tokens": {"dist": "fixed", "value": 8}, "hybrid": {"scales": [1, 2]}}
    _, result = _run("hart-0.7b", cls, pool={"engine": {"max_num_seqs": 1, "max_num_batched_tokens": 1}})
    assert _top(result).iloc[0]["status"] == "finished"


def test_the_unconditional_sequence_fails_with_its_image():
    """Its conditional sequence is lost with its replica and may not be retried: the other one,
    preempted to the waiting queue by a tight KV cache, must not run on elsewhere."""
    raw = {
        "name": "t",
        "seed": 1,
        "num_requests": 1,
        "pools": [
            {
                "name": "p",
                "model": "janus-pro-7b",
                "gpu": "h100-sxm",
                "replicas": 2,
                "engine": {"num_gpu_blocks": 24},
                "faults": {"at_s": [[0, 2.0]], "mttr_s": 5, "distribution": "fixed"},
            }
        ],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "constant", "rate": 1},
                "retry": {"max_retries": 0},
                "prompt_tokens": {"dist": "fixed", "value": 50},
                "ar_image": {"width": 256, "height": 256},
            }
        ],
    }
    df = run_scenario(parse_scenario(raw)).requests
    assert (df["status"].astype(str) == "failed").all()
    assert (df["finish_s"] < 0).all()


def test_one_kind_throughout_is_judged_on_that_kinds_targets():
    raw = {
        "name": "t",
        "duration_s": 10,
        "pools": [{"name": "p", "model": "llada-8b", "gpu": "h100-sxm"}],
        "classes": [
            {"name": n, "pool": "p", "arrival": {"process": "poisson", "rate": 1}, **_dllm(32, 8)} for n in ("a", "b")
        ],
        "slo": {"ttft_s": 5, "tpot_s": 0.001, "percentile": 90},  # TPOT does not apply to a diffusion LM
    }
    assert run_scenario(parse_scenario(raw)).summary["slo_met"] == {"a": True, "b": True, "all": True}


def test_a_plan_variant_the_kind_cannot_run_is_a_candidate_that_fails():
    from sim.plan import plan_fleet

    raw = {
        "name": "t",
        "duration_s": 20,
        "pools": [{"name": "p", "model": "llada-8b", "gpu": "h100-sxm"}],
        "classes": [{"name": "a", "pool": "p", "arrival": {"process": "poisson", "rate": 1}, **_dllm(32, 8)}],
        "slo": {"ttft_s": 1},
        "plan": {"pools": {"p": {"max_replicas": 2, "variants": [{}, {"router": "cache_aware"}]}}},
    }
    result = plan_fleet(parse_scenario(raw), Path("."))
    cands = [c for group in result.candidates.values() for c in group]
    refused = [c for c in cands if c.label["knobs"].get("router") == "cache_aware"]
    assert refused and all("not modelled with the cache_aware router" in (c.reason or "") for c in refused)
    assert any(c.status == "chosen" for c in cands)  # the pool as given serves the class
