"""The fitting half of calibration, on synthetic timings whose true form is known.

No torch here: raw tables are generated from chosen coefficients with multiplicative noise, and
the fits must recover the coefficients and report held-out errors of the size of the noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scipy")

from calibration.fit import (  # noqa: E402
    build_profile,
    eval_linear,
    eval_table,
    fit_linear,
    fit_table,
    nnls_relative,
    ops_sum,
    write_profile,
)
from calibration.grids import held_out, llm_grid  # noqa: E402


def test_nnls_relative_recovers_exact_coefficients():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(40), rng.uniform(1, 100, 40), rng.uniform(0, 1e4, 40)])
    true = np.array([2e-3, 5e-5, 1e-7])
    coef = nnls_relative(X, X @ true)
    assert np.allclose(coef, true, rtol=1e-6)


def test_nnls_relative_keeps_coefficients_non_negative():
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 10, 30)
    X = np.column_stack([np.ones(30), x])
    y = 5.0 - 0.3 * x  # a falling line: the best non-negative slope is 0
    coef = nnls_relative(X, y)
    assert coef[1] == 0.0 and coef[0] > 0


def test_fit_linear_reports_held_out_error_near_the_noise():
    rng = np.random.default_rng(2)
    n = 80
    df = pd.DataFrame({"num_decode": rng.integers(1, 64, n), "decode_ctx_sum": rng.integers(64, 200_000, n)})
    truth = 1e-4 + 3e-6 * df["num_decode"] + 2e-9 * df["decode_ctx_sum"]
    noise = 0.03
    y = truth.to_numpy() * rng.lognormal(0, noise, n)
    op = fit_linear(df, y, ["const", "num_decode", "decode_ctx_sum"])
    assert op["fit_error"]["held_out"] == held_out(n).sum() == 20
    assert op["fit_error"]["median_rel"] < 3 * noise
    assert np.allclose(op["coef"], [1e-4, 3e-6, 2e-9], rtol=0.15)
    assert op["range"]["decode_ctx_sum"] == [float(df["decode_ctx_sum"].min()), float(df["decode_ctx_sum"].max())]
    pred = eval_linear(op, df)
    assert np.median(np.abs(pred - truth) / truth) < noise


def test_fit_table_interpolates_and_extrapolates_by_the_tail_slope():
    x = np.array([1, 8, 16, 32, 64, 128, 256, 512], float)
    y = 1e-3 + np.maximum(0, x - 64) * 2e-5  # flat, then linear: a roofline knee
    op = fit_table(x, y)
    assert op["form"] == "table" and op["x"] == [int(v) for v in x]
    assert eval_table(op, [48.0])[0] == pytest.approx(1e-3)
    assert eval_table(op, [0.5])[0] == pytest.approx(1e-3)  # below the table: its first value
    assert op["slope_s"] == pytest.approx(2e-5, rel=1e-6)
    assert eval_table(op, [1024.0])[0] == pytest.approx(1e-3 + (1024 - 64) * 2e-5)
    # x = 8 and 64 are held out: 8 lies on the flat stretch (predicted exactly); 64 sits on the
    # knee, and interpolating between 32 and 128 over-predicts it by (32/96) x 64 x 2e-5 / 1e-3.
    knee_err = (32 / 96) * 64 * 2e-5 / 1e-3
    assert op["fit_error"]["held_out"] == 2
    assert op["fit_error"]["max_rel"] == pytest.approx(knee_err, abs=1e-4)
    assert op["fit_error"]["median_rel"] == pytest.approx(knee_err / 2, abs=1e-4)


def _synthetic_llm_raw(noise: float, seed: int = 3) -> tuple[pd.DataFrame, dict]:
    """Raw timings of a made-up machine whose costs follow the profile forms exactly."""
    rng = np.random.default_rng(seed)
    grid = llm_grid("cpu", quick=True, max_context=4096)
    L = 4
    lin = lambda n: 2e-4 + 3e-6 * np.asarray(n, float)  # noqa: E731
    rows = []

    def add(op, t, **f):
        t = float(t) * rng.lognormal(0, noise)
        rows.append(
            {
                "op": op,
                **f,
                "median_s": t,
                "p10_s": t * 0.97,
                "p90_s": t * 1.03,
                "min_s": t * 0.95,
                "reps": 5,
                "flops": 1e6,
                "bytes": 1e5,
            }
        )

    for n in grid.lin_tokens:
        add("lin_layer", lin(n), tokens=n)
    for ctxs in grid.decode:
        add(
            "attn_decode",
            5e-5 + 2e-6 * len(ctxs) + 1e-8 * sum(ctxs),
            num_seqs=len(ctxs),
            num_tokens=len(ctxs),
            ctx_sum=sum(ctxs),
            ctx_max=max(ctxs),
            attn_pairs=sum(ctxs) + len(ctxs),
        )
    for chunks in grid.prefill:
        pairs = sum(p * k + p * (p + 1) / 2 for p, k in chunks)
        ctx = sum(k for _, k in chunks)
        add(
            "attn_prefill",
            4e-5 + 1e-10 * pairs + 1e-8 * ctx + 1e-5 * len(chunks),
            num_seqs=len(chunks),
            num_tokens=sum(p for p, _ in chunks),
            ctx_sum=ctx,
            ctx_max=max(k for _, k in chunks),
            attn_pairs=pairs,
        )
    for r in grid.head_rows:
        add("lm_head", 1e-3 + 4e-5 * r, num_seqs=r)
    for spec in grid.steps:
        dec = [k for p, k in spec if p == 1 and k > 0]
        pre = [(p, k) for p, k in spec if not (p == 1 and k > 0)]
        n = sum(p for p, _ in spec)
        pairs = sum(p * k + p * (p + 1) / 2 for p, k in pre)
        per_layer = lin(n)
        if dec:
            per_layer += 5e-5 + 2e-6 * len(dec) + 1e-8 * sum(dec)
        if pre:
            per_layer += 4e-5 + 1e-10 * pairs + 1e-8 * sum(k for _, k in pre) + 1e-5 * len(pre)
        ops = L * per_layer + 1e-3 + 4e-5 * len(spec)
        add(
            "step",
            0.9 * ops + 2e-3 + 1e-4 * len(spec),
            num_seqs=len(spec),
            num_tokens=n,
            num_decode=len(dec),
            decode_ctx_sum=sum(dec),
            num_prefill_tokens=sum(p for p, _ in pre),
            prefill_ctx_sum=sum(k for _, k in pre),
            prefill_attn_pairs=pairs,
            num_prefill_seqs=len(pre),
        )
    meta = {
        "model": "llama-tiny",
        "kind": "llm",
        "dtype": "float32",
        "quick": True,
        "created": "2026-11-23T00:00:00Z",
        "git_sha": None,
        "device": {
            "type": "cpu",
            "name": "synthetic",
            "gpu": None,
            "torch": None,
            "cuda": None,
            "driver": None,
            "threads": 1,
        },
        "peaks": {"matmul_flops_per_s": 1e11, "copy_bytes_per_s": 1e10, "matmul_size": 1024},
        "model_facts": {"layers": L},
        "complete": True,
    }
    return pd.DataFrame(rows), meta


def test_llm_profile_from_synthetic_timings_recovers_the_machine(tmp_path):
    raw, meta = _synthetic_llm_raw(noise=0.02)
    profile = build_profile(raw, meta, None)
    ops = profile["ops"]
    assert set(ops) == {"lin_layer", "attn_decode", "attn_prefill", "lm_head", "step"}
    assert np.allclose(ops["attn_decode"]["coef"], [5e-5, 2e-6, 1e-8], rtol=0.2)
    head = ops["lm_head"]
    assert head["form"] == "table" and head["x"] == sorted(head["x"])
    assert np.allclose(head["y_s"], 1e-3 + 4e-5 * np.asarray(head["x"]), rtol=0.08)
    alpha, h0, h1 = ops["step"]["coef"]
    assert alpha == pytest.approx(0.9, rel=0.1) and h0 == pytest.approx(2e-3, rel=0.3)
    for op in ops.values():
        assert op["fit_error"]["median_rel"] < 0.05, op
    steps = raw[raw["op"] == "step"].reset_index(drop=True)
    pred = eval_linear(ops["step"], steps.assign(ops_sum=ops_sum(ops, 4, steps)))
    assert np.median(np.abs(pred - steps["median_s"]) / steps["median_s"]) < 0.04

    path = write_profile(profile, raw, tmp_path)
    assert path.name == "llama-tiny-float32-tp1.yaml" and path.with_suffix(".csv").is_file()


def test_written_profile_loads_in_the_simulator(tmp_path):
    pytest.importorskip("sim.costs.profile")
    from sim.costs.base import StepShape
    from sim.costs.profile import ProfileCostModel, load_profile

    raw, meta = _synthetic_llm_raw(noise=0.0)
    profile = build_profile(raw, meta, None)
    path = write_profile(profile, raw, tmp_path / "p.yaml")
    cost = ProfileCostModel(load_profile(path))
    shape = StepShape()
    for ctx in (100, 300, 700):
        shape.add_decode(ctx)
    shape.add_prefill(64, 128)
    steps = pd.DataFrame(
        [
            {
                "num_tokens": shape.num_tokens,
                "num_seqs": shape.num_seqs,
                "num_decode": 3,
                "decode_ctx_sum": 1100,
                "num_prefill_tokens": 64,
                "prefill_ctx_sum": 128,
                "prefill_attn_pairs": shape.prefill_attn_pairs,
                "num_prefill_seqs": 1,
            }
        ]
    )
    expected = eval_linear(profile["ops"]["step"], steps.assign(ops_sum=ops_sum(profile["ops"], 4, steps)))[0]
    assert cost.step_s(shape) == pytest.approx(expected, rel=1e-9)
