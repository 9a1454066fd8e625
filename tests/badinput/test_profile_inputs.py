"""Bad profiles for ``cost_model: {kind: profile}`` through the real CLI: one line, exit code 2.

Each case writes a small valid scenario and profile to ``tmp_path``, breaks one thing, runs
``servesim run`` in-process and checks for exit code 2, exactly one stderr line, no traceback,
and a message naming the file or field and what is wrong. (``validate-scenario`` does not read
cost-model files yet; ``run`` checks the profile before simulating.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cli import main

FIT = {"median_rel": None, "max_rel": None, "points": 0, "held_out": 0}


def linear(features: list[str], coef: list[float], ranges: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "form": "linear",
        "features": features,
        "coef": coef,
        "range": ranges,
        "source": "measured",
        "fit_error": FIT,
    }


PROFILE: dict[str, Any] = {
    "format": "servesim-profile/1",
    "kind": "llm",
    "model": "llama-3-8b",
    "dtype": "bfloat16",
    "tp": 1,
    "layers": 32,
    "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "gpu": "h100-sxm"},
    "source": {"tool": "servesim calibrate", "created": "2026-11-23T10:00:00Z", "raw": None},
    "extrapolation_limit": 2.0,
    "ops": {
        "lin_layer": {
            "form": "table",
            "x": [1, 512],
            "y_s": [1.5e-4, 4e-4],
            "slope_s": 6e-7,
            "source": "measured",
            "fit_error": FIT,
        },
        "attn_decode": linear(
            ["const", "num_decode", "decode_ctx_sum"],
            [0.0, 1e-9, 1e-9],
            {"num_decode": [1, 64], "decode_ctx_sum": [0, 1e5]},
        ),
        "attn_prefill": linear(
            ["const", "prefill_attn_pairs", "prefill_ctx_sum", "num_prefill_seqs", "num_prefill_tokens"],
            [0.0, 1e-11, 1e-9, 0.0, 2e-9],
            {
                "prefill_attn_pairs": [0, 1e6],
                "prefill_ctx_sum": [0, 1e5],
                "num_prefill_seqs": [1, 16],
                "num_prefill_tokens": [1, 512],
            },
        ),
        "lm_head": linear(["const", "num_seqs"], [2e-4, 4e-7], {"num_seqs": [1, 64]}),
        "step": linear(
            ["ops_sum", "const", "num_seqs"], [1.0, 1.2e-3, 4e-6], {"ops_sum": [0, 1.0], "num_seqs": [1, 64]}
        ),
    },
}

SCENARIO: dict[str, Any] = {
    "name": "badinput-profile",
    "seed": 7,
    "duration_s": 1.0,
    "pools": [
        {
            "name": "chat",
            "model": "llama-3-8b",
            "gpu": "h100-sxm",
            "engine": {"max_num_seqs": 16, "max_num_batched_tokens": 512},
            "cost_model": {"kind": "profile", "path": "profiles/p.yaml"},
        }
    ],
    "classes": [
        {
            "name": "chat",
            "pool": "chat",
            "arrival": {"process": "poisson", "rate": 20.0},
            "prompt_tokens": {"dist": "fixed", "value": 32},
            "output_tokens": {"dist": "fixed", "value": 8},
        }
    ],
}

Mutate = Callable[[dict[str, Any], dict[str, Any]], Any]
"""Edits (profile, scenario) in place."""


def setup(tmp_path: Path, mutate: Mutate | None = None, profile_text: str | None = None) -> list[str]:
    profile, scenario = copy.deepcopy(PROFILE), copy.deepcopy(SCENARIO)
    if mutate is not None:
        mutate(profile, scenario)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text(profile_text or yaml.safe_dump(profile, sort_keys=False))
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return ["run", str(path), "--quiet", "--no-plots"]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # a traceback would reach the user
        pytest.fail(f"uncaught {type(exc).__name__} (the user would see a traceback): {exc}")
    _, err = capsys.readouterr()
    return code, err


def pool(scenario: dict[str, Any]) -> dict[str, Any]:
    return scenario["pools"][0]


def diffusion(profile: dict[str, Any]) -> None:
    """A diffusion profile (of sdxl), valid as a file: the LLM pool must refuse it."""
    del profile["layers"]
    linear_op = linear(["const", "prompts"], [1e-3, 1e-3], {"prompts": [1, 8]})
    profile.update(kind="diffusion", model="sdxl")
    profile["ops"] = {
        "denoise_step": linear(
            ["const", "rows", "row_tokens", "row_tokens_sq"],
            [1e-2, 0, 0, 0],
            {"rows": [1, 8], "row_tokens": [1, 1e5], "row_tokens_sq": [1, 1e9]},
        ),
        "text_encode": linear_op,
        "vae_decode": linear(["const", "images", "pixels"], [1e-2, 0, 0], {"images": [1, 8], "pixels": [1, 1e7]}),
    }


def head_table(profile: dict[str, Any], x: list[int]) -> None:
    """lm_head as a table over num_seqs (x as given, one value per point)."""
    profile["ops"]["lm_head"] = {
        "form": "table",
        "x": x,
        "y_s": [2e-4 + 1e-5 * i for i in range(len(x))],
        "slope_s": 4e-7,
        "source": "measured",
        "fit_error": FIT,
    }


def without_prefill_tokens(profile: dict[str, Any]) -> None:
    """attn_prefill as written before num_prefill_tokens was a feature."""
    op = profile["ops"]["attn_prefill"]
    op["features"], op["coef"] = op["features"][:4], op["coef"][:4]
    op["range"].pop("num_prefill_tokens")


def busy(scenario: dict[str, Any]) -> None:
    """Many requests at once: steps of up to max_num_seqs = 16 sequences."""
    scenario["classes"][0]["arrival"]["rate"] = 500.0
    scenario["classes"][0]["output_tokens"]["value"] = 64


def long_prompts(scenario: dict[str, Any]) -> None:
    """Steps of 1100 tokens: beyond 2 x the profile's 512-token table."""
    pool(scenario)["engine"]["max_num_batched_tokens"] = 2048
    scenario["classes"][0]["prompt_tokens"]["value"] = 1100


CASES = [
    pytest.param(
        lambda p, s: pool(s)["cost_model"].update(path="profiles/missing.yaml"),
        ("pools.0.cost_model.path", "profile file not found", "missing.yaml"),
        id="missing-file",
    ),
    pytest.param(
        lambda p, s: pool(s)["cost_model"].update(path="profiles"),
        ("pools.0.cost_model.path", "is a directory"),
        id="path-is-a-directory",
    ),
    pytest.param(lambda p, s: pool(s)["cost_model"].pop("path"), ("pools.0.cost_model.path", "required"), id="no-path"),
    pytest.param(
        lambda p, s: p.update(format="servesim-profile/0"),
        ("p.yaml", "format: expected 'servesim-profile/1'", "servesim-profile/0"),
        id="wrong-format-string",
    ),
    pytest.param(
        lambda p, s: p["ops"].pop("attn_prefill"),
        ("p.yaml", "ops.attn_prefill: required field is missing"),
        id="missing-op",
    ),
    pytest.param(
        lambda p, s: p["ops"]["lm_head"]["coef"].__setitem__(0, -2e-4),
        ("p.yaml", "ops.lm_head.coef[0]", ">= 0", "-0.0002"),
        id="negative-coef",
    ),
    pytest.param(
        lambda p, s: p["ops"]["attn_decode"].update(features=["const", "num_decode"]),
        ("ops.attn_decode.features", "decode_ctx_sum"),
        id="missing-feature",
    ),
    pytest.param(
        lambda p, s: without_prefill_tokens(p),
        ("p.yaml", "ops.attn_prefill.features", "missing: num_prefill_tokens"),
        id="attn-prefill-without-num-prefill-tokens",
    ),
    pytest.param(
        lambda p, s: head_table(p, [1, 8, 4, 16]),
        ("p.yaml", "ops.lm_head.x", "strictly increasing"),
        id="lm-head-table-not-increasing",
    ),
    pytest.param(
        lambda p, s: head_table(p, [1, 4, 4, 16]),
        ("p.yaml", "ops.lm_head.x", "strictly increasing"),
        id="lm-head-table-repeated-point",
    ),
    pytest.param(
        lambda p, s: (head_table(p, [1, 2, 4]), busy(s)),
        ("p.yaml", "op lm_head: num_seqs = ", "beyond the profile's extrapolation limit", "[1, 4]", "max_num_seqs"),
        id="lm-head-table-beyond-extrapolation-limit",
    ),
    pytest.param(
        lambda p, s: pool(s).update(model="llama-2-7b"),
        ("p.yaml", "pool 'chat'", "profile is for model llama-3-8b, the pool runs llama-2-7b"),
        id="model-mismatch",
    ),
    pytest.param(
        lambda p, s: pool(s).update(tensor_parallel_size=2),
        ("p.yaml", "profile has tp 1", "tensor_parallel_size is 2"),
        id="tp-mismatch",
    ),
    pytest.param(
        lambda p, s: pool(s).update(gpu="a100-80gb"),
        ("p.yaml", "profile was measured on h100-sxm, the pool runs on a100-80gb"),
        id="gpu-mismatch",
    ),
    pytest.param(
        lambda p, s: diffusion(p),
        ("p.yaml", "profile is kind 'diffusion'", "llm"),
        id="kind-mismatch",
    ),
    pytest.param(
        lambda p, s: long_prompts(s),
        ("p.yaml", "op lin_layer: num_tokens = 1100", "[1, 512]", "max_num_batched_tokens"),
        id="beyond-extrapolation-limit",
    ),
]


@pytest.mark.parametrize(("mutate", "expect"), CASES)
def test_bad_profile_is_one_line_exit_2(
    mutate: Mutate, expect: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = invoke(setup(tmp_path, mutate), capsys)
    assert code == 2, f"exit code {code!r} (expected 2); stderr={err!r}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servesim: error: "), err
    for needle in expect:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("ops: [unclosed\n", "YAML syntax error"),
        ("", "profile file is empty"),
        ("- 1\n- 2\n", "must be a YAML mapping"),
    ],
    ids=["yaml-syntax", "empty", "not-a-mapping"],
)
def test_unreadable_profile_is_one_line_exit_2(
    text: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = invoke(setup(tmp_path, profile_text=text or "\n"), capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "p.yaml" in lines[0] and expect in lines[0], err


def test_the_valid_profile_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cases fail because of what they break, not because of the set-up."""
    code, err = invoke(setup(tmp_path), capsys)
    assert code == 0, err


def test_a_table_lm_head_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = invoke(setup(tmp_path, lambda p, s: head_table(p, [1, 4, 8, 16, 64])), capsys)
    assert code == 0, err


def test_a_cpu_profile_prices_any_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def cpu(p: dict[str, Any], s: dict[str, Any]) -> None:
        p["device"] = {"type": "cpu", "name": "AMD EPYC 9R14 (2 threads)", "gpu": None, "threads": 2}
        pool(s)["gpu"] = "a100-80gb"

    code, err = invoke(setup(tmp_path, cpu), capsys)
    assert code == 0, err
