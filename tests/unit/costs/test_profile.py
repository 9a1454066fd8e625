"""The ``profile`` cost model against hand-built profiles (docs/profile-format.md).

Profiles are small YAML dicts written to ``tmp_path``. Step times are checked against the
documented formula evaluated independently here (numpy interpolation, the per-op sums spelled
out), not against pinned numbers.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import catalog
from sim.config import parse_scenario
from sim.costs import DiffusionProfileCost, ProfileCostModel, ProfileRangeError, StepShape, load_profile
from sim.costs.profile import check_profile_for_pool
from sim.errors import ConfigError
from sim.fleet.cluster import simulate
from sim.run import run_scenario

FIT = {"median_rel": 0.01, "max_rel": 0.05, "points": 4, "held_out": 2}


def linear(features: list[str], coef: list[float], ranges: dict, source: str = "measured") -> dict:
    return {"form": "linear", "features": features, "coef": coef, "range": ranges, "source": source, "fit_error": FIT}


#: A table lm_head over num_seqs, not monotonic (a CPU BLAS picks other kernels by row count).
#: It starts at 2 rows and ends at 128, so one sequence and 129..256 sequences are off the table.
HEAD_TABLE = {
    "form": "table",
    "x": [2, 4, 8, 16, 64, 128],
    "y_s": [4.0e-4, 9.0e-4, 8.5e-4, 6.0e-4, 1.6e-3, 2.9e-3],
    "slope_s": 2.5e-5,
    "range": {"num_seqs": [2, 128]},  # a writer's metadata: the reader takes the range from x
    "source": "measured",
    "fit_error": FIT,
}


def llm_profile(tp: int = 1, model: str = "llama-2-7b", gpu: str | None = "h100-sxm", head_table: bool = False) -> dict:
    """A small LLM profile: a 4-point table and every linear op with all coefficients > 0
    (``head_table``: lm_head as a table over num_seqs)."""
    ops = {
        "lin_layer": {
            "form": "table",
            "x": [1, 64, 512, 4096],
            "y_s": [1.0e-4, 1.2e-4, 3.5e-4, 2.4e-3],
            "slope_s": 5.5e-7,
            "source": "measured",
            "fit_error": FIT,
        },
        "attn_decode": linear(
            ["const", "num_decode", "decode_ctx_sum"],
            [2e-6, 3e-8, 3e-9],
            {"num_decode": [1, 256], "decode_ctx_sum": [0, 200_000]},
        ),
        # Features in another order than the doc's table: coefficients follow `features`.
        "attn_prefill": linear(
            ["prefill_ctx_sum", "num_prefill_tokens", "const", "prefill_attn_pairs", "num_prefill_seqs"],
            [3e-9, 4e-9, 1e-6, 1.3e-11, 2e-7],
            {
                "prefill_ctx_sum": [0, 200_000],
                "num_prefill_tokens": [1, 4096],
                "prefill_attn_pairs": [0, 1.6e7],
                "num_prefill_seqs": [1, 64],
            },
        ),
        "lm_head": copy.deepcopy(HEAD_TABLE)
        if head_table
        else linear(["const", "num_seqs"], [5e-5, 2e-7], {"num_seqs": [1, 256]}),
        "step": linear(
            ["ops_sum", "const", "num_seqs"], [1.05, 1.3e-3, 4e-6], {"ops_sum": [0, 1.0], "num_seqs": [1, 256]}
        ),
    }
    if tp > 1:
        ops["allreduce"] = linear(["const", "num_tokens"], [3e-5, 6e-8], {"num_tokens": [1, 8192]})
    return {
        "format": "servesim-profile/1",
        "kind": "llm",
        "model": model,
        "dtype": "bfloat16",
        "tp": tp,
        "layers": catalog.get_model(model).num_layers,
        "device": {
            "type": "cuda" if gpu else "cpu",
            "name": "test device",
            "gpu": gpu,
            "torch": "2.13.0",
            "cuda": None,
            "driver": None,
            "threads": 1,
        },
        "source": {
            "tool": "servesim calibrate",
            "created": "2026-11-23T10:00:00Z",
            "raw": None,
            "git_sha": "abc1234",
            "quick": True,
            "notes": ["hand-built for tests"],
        },
        "extrapolation_limit": 2.0,
        "ops": ops,
    }


def diffusion_profile(model: str = "sdxl", gpu: str | None = "h100-sxm") -> dict:
    raw = llm_profile(gpu=gpu)
    del raw["layers"]
    raw.update(kind="diffusion", model=model)
    raw["ops"] = {
        "denoise_step": linear(
            ["const", "rows", "row_tokens", "row_tokens_sq"],
            [8e-3, 1e-3, 4e-6, 1e-10],
            {"rows": [1, 16], "row_tokens": [4096, 262144], "row_tokens_sq": [1.6e7, 4.3e9]},
        ),
        "text_encode": linear(["const", "prompts"], [4e-3, 1e-3], {"prompts": [1, 16]}),
        "vae_decode": linear(
            ["const", "images", "pixels"], [2e-3, 1e-2, 1e-7], {"images": [1, 8], "pixels": [262144, 8388608]}
        ),
    }
    return raw


def write(tmp_path: Path, raw: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def shape(decodes=(), prefills=()) -> StepShape:
    s = StepShape()
    for ctx in decodes:
        s.add_decode(ctx)
    for new, cached in prefills:
        s.add_prefill(new, cached)
    return s


# --------------------------------------------------------------------------- the documented formula


def op_s(op: dict, **values: float) -> float:
    """A linear op from the raw dict: sum(coef[i] * feature[i]), const = 1."""
    return sum(c * (1.0 if f == "const" else values[f]) for f, c in zip(op["features"], op["coef"]))


def table_s(op: dict, x: float) -> float:
    """A table op from the raw dict: flat below x[0], linear in between, slope_s past x[-1]."""
    xs, ys = op["x"], op["y_s"]
    if x > xs[-1]:
        return ys[-1] + op["slope_s"] * (x - xs[-1])
    return float(np.interp(x, xs, ys))  # flat below x[0], linear in between


def reference_step_s(raw: dict, s: StepShape) -> float:
    """docs/profile-format.md: ops_sum = layers x (lin_layer + attn_decode + attn_prefill +
    allreduce) + lm_head; step = step.coef . [ops_sum, 1, num_seqs]."""
    if s.num_tokens == 0:
        return 0.0
    ops = raw["ops"]
    per_layer = table_s(ops["lin_layer"], s.num_tokens)
    if s.num_decode:
        per_layer += op_s(ops["attn_decode"], num_decode=s.num_decode, decode_ctx_sum=s.decode_ctx_sum)
    if s.num_prefill_tokens:
        per_layer += op_s(
            ops["attn_prefill"],
            prefill_attn_pairs=s.prefill_attn_pairs,
            prefill_ctx_sum=s.prefill_ctx_sum,
            num_prefill_seqs=s.num_seqs - s.num_decode,
            num_prefill_tokens=s.num_prefill_tokens,
        )
    if raw["tp"] > 1:
        per_layer += op_s(ops["allreduce"], num_tokens=s.num_tokens)
    head = ops["lm_head"]
    head_s = table_s(head, s.num_seqs) if head["form"] == "table" else op_s(head, num_seqs=s.num_seqs)
    ops_sum = raw["layers"] * per_layer + head_s
    return op_s(ops["step"], ops_sum=ops_sum, num_seqs=s.num_seqs)


decodes_st = st.lists(st.integers(0, 1500), max_size=48)
prefills_st = st.lists(st.tuples(st.integers(1, 600), st.integers(0, 1500)), max_size=4)


#: (tp, lm_head form) of the models fixture.
VARIANTS = [(1, "linear"), (2, "linear"), (1, "table"), (2, "table")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """ProfileCostModel per (tp, lm_head form), with the raw dicts they were built from."""
    tmp = tmp_path_factory.mktemp("profiles")
    out = {}
    for tp, head in VARIANTS:
        raw = llm_profile(tp=tp, head_table=head == "table")
        out[tp, head] = (raw, ProfileCostModel(load_profile(write(tmp, raw, f"tp{tp}-{head}.yaml"))))
    return out


@settings(max_examples=200, deadline=None)
@given(decodes=decodes_st, prefills=prefills_st, variant=st.sampled_from(VARIANTS))
def test_step_s_is_the_documented_formula(models, decodes, prefills, variant):
    raw, cm = models[variant]
    s = shape(decodes, prefills)
    assert cm.step_s(s) == pytest.approx(reference_step_s(raw, s), rel=1e-12, abs=0)


@settings(max_examples=200, deadline=None)
@given(
    decodes=st.lists(st.integers(0, 1500), min_size=1, max_size=200),
    variant=st.sampled_from(VARIANTS),
    steps=st.integers(1, 40),
)
def test_decode_line_agrees_with_step_s(models, decodes, variant, steps):
    raw, cm = models[variant]
    line = cm.decode_line(len(decodes))
    ctx = sum(decodes)
    # step_s answers decode-only shapes from the line itself: equal, not just close.
    assert line.step_s(ctx) == cm.step_s(shape(decodes))
    assert line.step_s(ctx) == pytest.approx(reference_step_s(raw, shape(decodes)), rel=1e-12)
    assert len(line.pieces) == 1  # one affine piece in decode_ctx_sum
    # A span of k steps: every member's context grows by one per step.
    walked = sum(cm.step_s(shape([c + j for c in decodes])) for j in range(steps))
    assert line.total_s(ctx, len(decodes), steps) == pytest.approx(walked, rel=1e-12)


def test_table_interpolates_clamps_below_and_extrapolates_with_its_slope(tmp_path):
    # Every op but the table at zero and step = ops_sum: a prefill-only step costs layers x table.
    raw = llm_profile()
    for op in raw["ops"].values():
        if op["form"] == "linear":
            op["coef"] = [1.0 if f == "ops_sum" else 0.0 for f in op["features"]]
    profile = load_profile(write(tmp_path, raw))
    cm = ProfileCostModel(profile)
    L, lin = raw["layers"], raw["ops"]["lin_layer"]
    xs, ys = lin["x"], lin["y_s"]

    def table(n: int) -> float:
        return cm.step_s(shape(prefills=[(n, 0)])) / L

    for x, y in zip(xs, ys):
        assert table(x) == pytest.approx(y, rel=1e-12)
    mid = (xs[1] + xs[2]) // 2
    assert table(mid) == pytest.approx(ys[1] + (mid - xs[1]) / (xs[2] - xs[1]) * (ys[2] - ys[1]), rel=1e-12)
    assert table(xs[-1] + 1000) == pytest.approx(ys[-1] + lin["slope_s"] * 1000, rel=1e-12)
    # Below the first point: the first value (the table starts at one token, so ask the op).
    op = profile.ops["lin_layer"]
    assert op.seconds(0.25) == ys[0] and op.seconds(xs[0]) == ys[0]


def test_a_table_lm_head_is_its_documented_interpolation_on_both_paths(tmp_path):
    # Every op but lm_head at zero and step = ops_sum: a step costs lm_head(num_seqs) alone.
    raw = llm_profile(head_table=True)
    for name, op in raw["ops"].items():
        if op["form"] == "linear":
            op["coef"] = [1.0 if f == "ops_sum" else 0.0 for f in op["features"]]
        elif name == "lin_layer":
            op["y_s"], op["slope_s"] = [0.0] * len(op["y_s"]), 0.0
    profile = load_profile(write(tmp_path, raw))
    assert profile.ops["lm_head"].feature == "num_seqs"
    cm = ProfileCostModel(profile)
    head = raw["ops"]["lm_head"]
    xs, ys, slope = head["x"], head["y_s"], head["slope_s"]

    def decode_only(n: int) -> float:
        return cm.step_s(shape([7] * n))

    def mixed(n: int) -> float:  # n - 1 decodes and one prefill chunk: the general path
        return cm.step_s(shape([7] * (n - 1), [(3, 5)]))

    want = {1: ys[0], **dict(zip(xs, ys))}  # below x[0]: the first value
    want[40] = ys[3] + (40 - xs[3]) / (xs[4] - xs[3]) * (ys[4] - ys[3])
    want[xs[-1] + 50] = ys[-1] + slope * 50
    for n, seconds in want.items():
        assert decode_only(n) == pytest.approx(seconds, rel=1e-12), n
        assert mixed(n) == pytest.approx(seconds, rel=1e-12), n
        assert cm.decode_line(n).step_s(7 * n) == decode_only(n)
    # Not monotonic in rows: kept as measured (4 and 8 rows slower than 16).
    assert decode_only(4) > decode_only(8) > decode_only(16)
    # Past 2 x x[-1] on num_seqs: a range error naming lm_head and its table's range.
    limit = 2 * xs[-1]
    decode_only(limit)
    for ask in (lambda: cm.decode_line(limit + 1), lambda: mixed(limit + 1)):
        with pytest.raises(ProfileRangeError, match=rf"op lm_head: num_seqs = {limit + 1} .*\[2, 128\]"):
            ask()


def test_prefill_attention_counts_the_chunks_own_tokens(tmp_path):
    # Only attn_prefill's num_prefill_tokens term: a step costs layers x coef x prefill tokens.
    raw = llm_profile()
    c = 1e-6
    for op in raw["ops"].values():
        if op["form"] == "linear":
            op["coef"] = [{"ops_sum": 1.0, "num_prefill_tokens": c}.get(f, 0.0) for f in op["features"]]
        else:
            op["y_s"], op["slope_s"] = [0.0] * len(op["y_s"]), 0.0
    raw["ops"]["attn_prefill"]["range"]["num_prefill_tokens"] = [1, 2048]
    cm = ProfileCostModel(load_profile(write(tmp_path, raw)))
    L = raw["layers"]
    assert cm.step_s(shape([100] * 3, [(300, 1000), (20, 0)])) == pytest.approx(L * c * 320, rel=1e-12)
    assert cm.step_s(shape([100] * 3)) == 0.0
    cm.step_s(shape(prefills=[(2048, 0), (2048, 0)]))  # at the limit: answered
    with pytest.raises(ProfileRangeError, match=r"op attn_prefill: num_prefill_tokens = 4097 .*\[1, 2048\]"):
        cm.step_s(shape(prefills=[(2048, 0), (2049, 0)]))


def test_range_error_names_op_feature_value_and_range(tmp_path):
    raw = llm_profile()
    path = write(tmp_path, raw)
    cm = ProfileCostModel(load_profile(path))
    limit = 2.0 * raw["ops"]["lin_layer"]["x"][-1]
    chunks = [(int(limit) // 8, 0)] * 8
    cm.step_s(shape(prefills=chunks))  # at the limit: answered
    with pytest.raises(ProfileRangeError) as err:
        cm.step_s(shape([10], prefills=chunks))
    msg = str(err.value)
    assert "\n" not in msg
    for part in (str(path), "lin_layer", "num_tokens", str(int(limit) + 1), "[1, 4096]"):
        assert part in msg
    # Decode-only steps go through the line: the summed context is still checked.
    ctx_limit = 2.0 * raw["ops"]["attn_decode"]["range"]["decode_ctx_sum"][1]
    n = 200
    cm.step_s(shape([int(ctx_limit) // n] * n))
    with pytest.raises(ProfileRangeError, match=r"attn_decode: decode_ctx_sum = 400200 .*\[0, 200000\]"):
        cm.step_s(shape([int(ctx_limit) // n + 1] * n))
    with pytest.raises(ProfileRangeError, match="attn_decode: num_decode = 513"):
        cm.decode_line(513)
    # Values below the measured range are answered.
    assert cm.step_s(shape([0])) > 0


def test_step_ops_sum_range_is_checked(tmp_path):
    raw = llm_profile()
    raw["ops"]["step"]["range"]["ops_sum"] = [0, 0.01]  # 10 ms of ops at most, x 2
    cm = ProfileCostModel(load_profile(write(tmp_path, raw)))
    cm.step_s(shape([100] * 8))
    with pytest.raises(ProfileRangeError, match="op step: ops_sum"):
        cm.step_s(shape(prefills=[(4096, 0)]))
    with pytest.raises(ProfileRangeError, match="op step: ops_sum"):
        cm.step_s(shape([150_000 // 200] * 200))  # a decode line crossing ops_sum's limit


def test_diffusion_profile_is_the_documented_formula(tmp_path):
    raw = diffusion_profile()
    cost = DiffusionProfileCost(load_profile(write(tmp_path, raw)))
    ops = raw["ops"]
    spec = catalog.get_diffusion_model("sdxl")
    tokens = spec.latent_tokens(1024, 1024)
    for rows in (1, 2, 8):
        want = op_s(ops["denoise_step"], rows=rows, row_tokens=rows * tokens, row_tokens_sq=rows * tokens**2)
        assert cost.denoise_step_s(rows, tokens) == pytest.approx(want, rel=1e-12)
    assert cost.text_encode_s(3) == pytest.approx(op_s(ops["text_encode"], prompts=3), rel=1e-12)
    assert cost.vae_decode_s(2, 1024, 1024, 1) == pytest.approx(
        op_s(ops["vae_decode"], images=2, pixels=2 * 1024 * 1024), rel=1e-12
    )
    assert cost.text_encode_s(0) == cost.denoise_step_s(0, tokens) == cost.vae_decode_s(0, 1024, 1024, 1) == 0.0
    with pytest.raises(ProfileRangeError, match="op denoise_step: rows = 33"):
        cost.denoise_step_s(33, tokens)


# --------------------------------------------------------------------------- loading and matching


def drop_feature(op: dict, feature: str) -> None:
    """A linear op without one feature: its coefficient and range go with it (a consistent op
    of an older format)."""
    i = op["features"].index(feature)
    del op["features"][i], op["coef"][i]
    op["range"].pop(feature)


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda r: r.update(format="servesim-profile/2"), "format: expected 'servesim-profile/1'"),
        (lambda r: r["ops"].pop("attn_decode"), "ops.attn_decode: required field is missing"),
        (
            lambda r: r["ops"]["lm_head"]["coef"].__setitem__(1, -1e-7),
            "ops.lm_head.coef[1]: expected a finite number >= 0",
        ),
        (
            lambda r: r["ops"]["lin_layer"]["x"].__setitem__(2, 64),
            "ops.lin_layer.x: points must be strictly increasing",
        ),
        (lambda r: r["ops"]["lin_layer"]["y_s"].pop(), "ops.lin_layer.y_s: expected 4 values"),
        (lambda r: r["ops"]["attn_decode"]["features"].pop(), "ops.attn_decode.features: expected the features"),
        (lambda r: drop_feature(r["ops"]["attn_prefill"], "num_prefill_tokens"), "missing: num_prefill_tokens"),
        (
            lambda r: r["ops"]["attn_prefill"]["range"].pop("num_prefill_tokens"),
            "ops.attn_prefill.range.num_prefill_tokens: required",
        ),
        (
            lambda r: r["ops"].update(lm_head=dict(copy.deepcopy(HEAD_TABLE), x=[2, 8, 4, 16, 64, 128])),
            "ops.lm_head.x: points must be strictly increasing",
        ),
        (
            lambda r: r["ops"].update(lm_head=dict(copy.deepcopy(HEAD_TABLE), y_s=[1e-3] * 5)),
            "ops.lm_head.y_s: expected 6 values",
        ),
        (
            lambda r: r["ops"]["lm_head"].update(form="quadratic"),
            "ops.lm_head.form: lm_head must be form 'linear' or 'table'",
        ),
        (
            lambda r: r["ops"]["lm_head"].update(form=["table"]),
            "ops.lm_head.form: lm_head must be form 'linear' or 'table' (got ['table'])",
        ),
        (
            lambda r: r["ops"]["attn_decode"].update(form="table"),
            "ops.attn_decode.form: attn_decode must be form 'linear'",
        ),
        (
            lambda r: r["ops"]["attn_decode"]["range"].pop("decode_ctx_sum"),
            "ops.attn_decode.range.decode_ctx_sum: required",
        ),
        (lambda r: r["ops"]["step"].update(form="table"), "ops.step.form: step must be form 'linear'"),
        (
            lambda r: r["ops"]["step"].update(source="guess"),
            "ops.step.source: expected one of measured, roofline, vidur",
        ),
        (lambda r: r["ops"].update(allreduce=r["ops"]["lm_head"]), "ops.allreduce: only a profile with tp > 1"),
        (lambda r: r.update(tp=2), "ops.allreduce: required field is missing"),
        (lambda r: r.update(model="llama-9"), "model: unknown llm model 'llama-9'"),
        (lambda r: r["device"].update(gpu="h900"), "device.gpu: unknown gpu 'h900'"),
        (lambda r: r["ops"].update(lm_haed={}), "ops.lm_haed: unknown field; allowed: lin_layer, attn_decode"),
        (lambda r: r.pop("layers"), "layers: required field is missing"),
        (lambda r: r.update(extrapolation_limit=0.5), "extrapolation_limit: expected a finite number >= 1"),
    ],
)
def test_a_bad_profile_is_one_line_naming_file_and_field(tmp_path, edit, where):
    raw = copy.deepcopy(llm_profile())
    edit(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and where in msg, msg


def test_range_may_be_a_list_in_feature_order_and_created_a_timestamp(tmp_path):
    raw = llm_profile()
    raw["ops"]["attn_decode"]["range"] = [[1, 256], [0, 200_000]]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False).replace("'2026-11-23T10:00:00Z'", "2026-11-23T10:00:00Z"))
    profile = load_profile(path)
    assert profile.ops["attn_decode"].range["decode_ctx_sum"] == (0, 200_000)
    assert profile.source["created"].startswith("2026-11-23")


def test_keys_outside_the_format_are_a_writers_metadata_and_ignored(tmp_path):
    raw = llm_profile()
    raw["source"]["peaks"] = {"matmul_flops_per_s": 1e12}
    raw["ops"]["lin_layer"]["range"] = {"tokens": [1, 4096]}
    raw["ops"]["step"]["roofline_efficiency"] = {"median": 0.5}
    raw["device"]["hostname"] = "box"
    plain = ProfileCostModel(load_profile(write(tmp_path, llm_profile(), "plain.yaml")))
    extended = ProfileCostModel(load_profile(write(tmp_path, raw, "extended.yaml")))
    s = shape([300] * 4, [(100, 50)])
    assert extended.step_s(s) == plain.step_s(s)


def test_profile_must_match_the_pool(tmp_path):
    p = load_profile(write(tmp_path, llm_profile(tp=2)))
    check_profile_for_pool(p, "chat", "llama-2-7b", "h100-sxm", 2, diffusion=False)
    cases = [
        (("llama-3-8b", "h100-sxm", 2, False), "profile is for model llama-2-7b, the pool runs llama-3-8b"),
        (("llama-2-7b", "h100-sxm", 4, False), "profile has tp 2, the pool's tensor_parallel_size is 4"),
        (("llama-2-7b", "a100-80gb", 2, False), "profile was measured on h100-sxm, the pool runs on a100-80gb"),
        (("sdxl", "h100-sxm", 1, True), "profile is kind 'llm'"),
    ]
    for args, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            check_profile_for_pool(p, "chat", *args)
    # A CPU profile (device.gpu null) prices any GPU's pool.
    cpu = load_profile(write(tmp_path, llm_profile(gpu=None), "cpu.yaml"))
    check_profile_for_pool(cpu, "chat", "llama-2-7b", "a100-80gb", 1, diffusion=False)


# --------------------------------------------------------------------------- whole runs


def llm_scenario(profile_path: str, **over) -> dict:
    raw = dict(
        name="profile-run",
        seed=3,
        num_requests=300,
        pools=[
            dict(
                name="p",
                model="llama-2-7b",
                gpu="h100-sxm",
                replicas=2,
                router="least_outstanding",
                engine=dict(max_num_seqs=32, max_num_batched_tokens=2048, num_gpu_blocks=600),
                cost_model=dict(kind="profile", path=profile_path),
            )
        ],
        classes=[
            dict(
                name="c",
                pool="p",
                arrival=dict(process="gamma", rate=20, cv=2),
                prompt_tokens=dict(dist="lognormal", mean=600, cv=1, max=3000),
                output_tokens=dict(dist="lognormal", mean=150, cv=1, max=1000),
            )
        ],
    )
    raw.update(over)
    return raw


def test_an_llm_scenario_runs_on_a_profile_with_the_path_relative_to_the_scenario(tmp_path):
    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles", llm_profile())
    scenario_path = tmp_path / "s.yaml"
    scenario_path.write_text(yaml.safe_dump(llm_scenario("profiles/p.yaml")))
    result = run_scenario(scenario_path)
    df = result.requests
    assert (df["status"] == "finished").all() and len(df) == 300
    assert result.summary["conservation"]["finished"] == 300


def test_profile_decode_spans_give_the_same_timings_as_step_by_step(tmp_path, monkeypatch):
    write(tmp_path, llm_profile())
    sc = parse_scenario(llm_scenario("p.yaml"))
    fast = simulate(sc, tmp_path, np.random.SeedSequence(1)).requests
    slow = simulate(sc, tmp_path, np.random.SeedSequence(1), decode_spans=False).requests
    assert slow["preemptions"].sum() > 0, "the test should exercise preemption"
    for col in ("first_token_s", "finish_s", "first_scheduled_s"):
        np.testing.assert_allclose(fast[col], slow[col], rtol=1e-9, atol=1e-9)


def test_a_diffusion_scenario_runs_on_a_profile(tmp_path):
    raw = diffusion_profile()
    write(tmp_path, raw)
    sc = parse_scenario(
        dict(
            name="d",
            seed=1,
            num_requests=5,
            pools=[
                dict(
                    name="p",
                    model="sdxl",
                    gpu="h100-sxm",
                    replicas=1,
                    batching=dict(max_batch_size=1),
                    cost_model=dict(kind="profile", path="p.yaml"),
                )
            ],
            classes=[
                dict(name="c", pool="p", arrival=dict(process="poisson", rate=0.01), image=dict(steps=10, cfg=True))
            ],
        )
    )
    df = run_scenario(sc, tmp_path).requests
    ops = raw["ops"]
    tokens = catalog.get_diffusion_model("sdxl").latent_tokens(1024, 1024)
    rows = 2  # one image with classifier-free guidance
    service = (
        op_s(ops["text_encode"], prompts=2)
        + 10 * op_s(ops["denoise_step"], rows=rows, row_tokens=rows * tokens, row_tokens_sq=rows * tokens**2)
        + op_s(ops["vae_decode"], images=1, pixels=1024 * 1024)
    )
    assert (df["status"] == "finished").all()
    np.testing.assert_allclose(df["e2e_s"], service, rtol=1e-9)
    assert math.isfinite(service)
