"""Malformed inputs through the real CLI entry point: one line on stderr, exit code 2.

Every case calls ``sim.cli.main([...])`` in-process and checks that the user gets exit code 2,
exactly one non-empty line on stderr, no traceback, and a message naming the problem (field
path, file name and/or allowed values). Scenarios are built from one small valid base (a
deep copy, mutated) written to ``tmp_path``; trace files are written next to them and
referenced by relative path.

Cases marked ``xfail(strict=True)`` document inputs the product currently mishandles
(traceback, wrong exit code, misleading message); they assert the correct behaviour, so
fixing the product turns them into XPASS failures and the mark must then be removed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cli import main

# --------------------------------------------------------------------------- the valid base

# Small and fast: about 20 requests of 32 + 8 tokens on one H100 replica.
BASE: dict[str, Any] = {
    "name": "badinput-base",
    "seed": 7,
    "replications": 1,
    "duration_s": 1.0,
    "pools": [
        {
            "name": "chat",
            "model": "llama-3-8b",
            "gpu": "h100-sxm",
            "replicas": 1,
            "tensor_parallel_size": 1,
            "router": "round_robin",
            "engine": {"max_num_seqs": 16, "max_num_batched_tokens": 512},
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

DELETE = object()
"""Value for ``edit`` meaning: remove the key."""

GOOD_AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:46.9951690,396,109\n"
    "2023-11-16 18:15:47.1000000,120,12\n"
)

Build = Callable[[Path], list[str]]


def edit(scenario: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with DELETE remove) ``a.0.b`` style paths in a scenario dict."""
    parts = path.split(".")
    node: Any = scenario
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value


def trace_class(path: str, fmt: str, **extra: Any) -> dict[str, Any]:
    """Edits turning the base class into a trace-replay class."""
    return {
        "classes.0.arrival": DELETE,
        "classes.0.prompt_tokens": DELETE,
        "classes.0.output_tokens": DELETE,
        "classes.0.trace": {"path": path, "format": fmt, **extra},
    }


def write_scenario(
    tmp_path: Path,
    edits: dict[str, Any] | None = None,
    *,
    mutate: Callable[[dict], None] | None = None,
    name: str = "scenario.yaml",
) -> Path:
    scenario = copy.deepcopy(BASE)
    for path, value in (edits or {}).items():
        edit(scenario, path, value)
    if mutate is not None:
        mutate(scenario)
    target = tmp_path / name
    target.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return target


def write_file(tmp_path: Path, name: str, content: str | bytes) -> Path:
    target = tmp_path / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    return target


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    """Run the CLI in-process; return (exit code, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # a traceback would reach the user
        _, err = capsys.readouterr()
        pytest.fail(f"uncaught {type(exc).__name__} (the user would see a traceback): {exc}; stderr={err!r}")
    _, err = capsys.readouterr()
    return code, err


# --------------------------------------------------------------------------- case builders


def validate(edits: dict[str, Any] | None = None, *extra: str, mutate: Callable[[dict], None] | None = None) -> Build:
    def build(tmp_path: Path) -> list[str]:
        return ["validate-scenario", str(write_scenario(tmp_path, edits, mutate=mutate)), *extra]

    return build


def validate_raw(text: str | bytes, name: str = "broken.yaml") -> Build:
    def build(tmp_path: Path) -> list[str]:
        return ["validate-scenario", str(write_file(tmp_path, name, text))]

    return build


def run(edits: dict[str, Any] | None = None, *extra: str, files: dict[str, str | bytes] | None = None) -> Build:
    """``servesim run`` on a scenario in tmp_path, with side files (traces) next to it.
    ``{tmp}`` in an extra argument becomes tmp_path (so nothing is written outside it)."""

    def build(tmp_path: Path) -> list[str]:
        for name, content in (files or {}).items():
            write_file(tmp_path, name, content)
        scenario = write_scenario(tmp_path, edits)
        args = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
        return ["run", str(scenario), "--set", "duration_s=1", "--quiet", "--no-plots", *args]

    return build


def argv_only(*argv: str) -> Build:
    def build(tmp_path: Path) -> list[str]:
        return list(argv)

    return build


def base_with(*extra: str, command: str = "validate-scenario") -> Build:
    def build(tmp_path: Path) -> list[str]:
        return [command, str(write_scenario(tmp_path)), *extra]

    return build


def two_pools(scenario: dict[str, Any]) -> None:
    scenario["pools"].append(copy.deepcopy(scenario["pools"][0]))


def two_classes(scenario: dict[str, Any]) -> None:
    scenario["classes"].append(copy.deepcopy(scenario["classes"][0]))


def case(case_id: str, build: Build, *expect: str, xfail: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(build, expect, id=case_id, marks=marks)


# --------------------------------------------------------------------------- the cases

CASES = [
    # ---- the file itself
    case(
        "yaml-syntax-error",
        validate_raw("name: x\npools: [\n  - {name: a\n", "syntax.yaml"),
        "syntax.yaml:3:3",
        "YAML syntax error",
    ),
    case("yaml-tab-indent", validate_raw("name: x\n\tpools: 1\n", "tabs.yaml"), "tabs.yaml:2:1", "YAML syntax error"),
    case(
        "top-level-list",
        validate_raw("- name: x\n- pools: []\n", "list.yaml"),
        "list.yaml",
        "must be a YAML mapping",
        "got list",
    ),
    case("top-level-empty-file", validate_raw("", "empty.yaml"), "empty.yaml", "must be a YAML mapping"),
    case("top-level-scalar", validate_raw("just a string\n", "scalar.yaml"), "scalar.yaml", "got str"),
    case("not-utf8", validate_raw(b"\xff\xfe\x00name: x\n", "binary.yaml"), "binary.yaml", "not a text (UTF-8) file"),
    case(
        "scenario-file-missing",
        lambda tmp: ["validate-scenario", str(tmp / "missing.yaml")],
        "missing.yaml",
        "scenario file not found",
    ),
    # ---- unknown keys
    case(
        "unknown-top-level-key",
        validate({"colour": "red"}),
        "colour: unknown field",
        "allowed: name, description, seed",
    ),
    case(
        "unknown-engine-key",
        validate({"pools.0.engine.max_seqs": 8}),
        "pools.0.engine.max_seqs: unknown field",
        "max_num_seqs",
    ),
    case(
        "unknown-arrival-key",
        validate({"classes.0.arrival.burst": 3}),
        "burst: unknown field",
        "allowed: process, rate",
    ),
    case("unknown-pool-key", validate({"pools.0.replica": 2}), "pools.0.replica: unknown field", "replicas"),
    case("missing-required-field", validate({"pools.0.model": DELETE}), "pools.0.model: required field is missing"),
    # ---- wrong types
    case("string-for-int", validate({"pools.0.replicas": "two"}), "pools.0.replicas", "valid integer", "'two'"),
    case(
        "fraction-for-int",
        validate({"pools.0.engine.max_num_seqs": 1.5}),
        "pools.0.engine.max_num_seqs",
        "fractional part",
    ),
    case("list-for-mapping", validate({"pools.0.engine": [1, 2]}), "pools.0.engine", "valid dictionary"),
    case("mapping-for-list", validate({"classes": {"chat": 1}}), "classes: Input should be a valid list"),
    case(
        "string-for-bool",
        validate({"pools.0.engine.enable_chunked_prefill": "maybe"}),
        "pools.0.engine.enable_chunked_prefill",
        "valid boolean",
    ),
    # ---- out of range
    case("negative-rate", validate({"classes.0.arrival.rate": -1}), "classes.0.arrival", "rate", "greater than 0"),
    case(
        "gpu-memory-utilization-1.5",
        validate({"pools.0.engine.gpu_memory_utilization": 1.5}),
        "pools.0.engine.gpu_memory_utilization",
        "less than or equal to 1",
    ),
    case(
        "max-num-seqs-0",
        validate({"pools.0.engine.max_num_seqs": 0}),
        "pools.0.engine.max_num_seqs",
        "greater than or equal to 1",
    ),
    case("replications-0", validate({"replications": 0}), "replications: Input should be greater than or equal to 1"),
    case(
        "slo-percentile-100", validate({"slo": {"ttft_s": 0.5, "percentile": 100}}), "slo.percentile", "less than 100"
    ),
    case("pools-empty", validate({"pools": []}), "pools: List should have at least 1 item"),
    # ---- unknown names / choices
    case(
        "unknown-model",
        validate({"pools.0.model": "gpt-5"}),
        "pools.0.model",
        "unknown model 'gpt-5'",
        "allowed: llama-2-7b",
    ),
    case("unknown-gpu", validate({"pools.0.gpu": "v100"}), "pools.0.gpu", "unknown gpu 'v100'", "h100-sxm"),
    case(
        "unknown-router",
        validate({"pools.0.router": "random"}),
        "pools.0.router",
        "'round_robin', 'least_outstanding', 'jsq_tokens' or 'cache_aware'",
    ),
    case(
        "unknown-arrival-process",
        validate({"classes.0.arrival.process": "hawkes"}),
        "classes.0.arrival",
        "'hawkes'",
        "'poisson', 'gamma', 'constant', 'piecewise'",
    ),
    case(
        "unknown-length-dist",
        validate({"classes.0.prompt_tokens.dist": "zipf"}),
        "classes.0.prompt_tokens",
        "'zipf'",
        "'fixed', 'uniform', 'lognormal'",
    ),
    case(
        "unknown-trace-format",
        validate(trace_class("x.parquet", "parquet")),
        "classes.0.trace.format",
        "'vllm-bench', 'sharegpt', 'servegen' or 'alibaba'",
    ),
    # ---- cross-field rules
    case(
        "uniform-low-above-high",
        validate({"classes.0.prompt_tokens": {"dist": "uniform", "low": 10, "high": 5}}),
        "classes.0.prompt_tokens",
        "low (10) must be <= high (5)",
    ),
    case("class-to-missing-pool", validate({"classes.0.pool": "nope"}), "routes to unknown pool 'nope'", "pools: chat"),
    case("duplicate-pool-names", validate(mutate=two_pools), "pool names must be unique"),
    case("duplicate-class-names", validate(mutate=two_classes), "class names must be unique"),
    case(
        "tp-not-dividing-heads",
        validate({"pools.0.tensor_parallel_size": 3}),
        "pools.0",
        "tensor_parallel_size 3 must divide num_attention_heads (32)",
    ),
    case(
        "batched-tokens-below-seqs",
        validate({"pools.0.engine.max_num_batched_tokens": 8}),
        "pools.0.engine",
        "max_num_batched_tokens (8) must be >= max_num_seqs (16)",
    ),
    case(
        "fp8-on-a100",
        validate({"pools.0.gpu": "a100-80gb", "pools.0.engine.dtype": "fp8"}),
        "gpu a100-80gb has no FP8 support",
    ),
    case(
        "synthetic-without-duration",
        validate({"duration_s": DELETE}),
        "class 'chat' has a synthetic arrival process",
        "give duration_s or num_requests",
    ),
    case(
        "synthetic-without-arrival",
        validate({"classes.0.arrival": DELETE}),
        "classes.0",
        "give 'arrival', 'prompt_tokens' and 'output_tokens'",
    ),
    case(
        "trace-with-lengths",
        validate({"classes.0.trace": {"path": "builtin:azure_conv_2023.csv", "format": "azure"}}),
        "classes.0",
        "lengths come from the trace",
    ),
    case(
        "trace-time-scale-and-target-rate",
        validate(trace_class("builtin:azure_conv_2023.csv", "azure", time_scale=2.0, target_rate=3.0)),
        "classes.0.trace",
        "give at most one of 'time_scale' or 'target_rate'",
    ),
    case(
        "model-does-not-fit-validate",
        validate({"pools.0.model": "llama-3-70b", "pools.0.gpu": "l4"}),
        "llama-3-70b does not fit l4 at tensor_parallel_size 1",
    ),
    # ---- --set overrides
    case("set-without-equals", base_with("--set", "replications"), "--set 'replications'", "expected KEY.PATH=VALUE"),
    case("set-empty-key", base_with("--set", "=3"), "expected KEY.PATH=VALUE"),
    case(
        "set-index-out-of-range",
        base_with("--set", "pools.5.replicas=2"),
        "--set pools.5.replicas",
        "no item '5' in list pools",
    ),
    case("set-unknown-list-name", base_with("--set", "pools.nope.replicas=2"), "no item 'nope' in list pools"),
    case("set-through-scalar", base_with("--set", "name.x=1"), "name.x is not a mapping or list"),
    case("set-value-not-yaml", base_with("--set", "name=[1"), "--set 'name=[1'", "value is not valid YAML"),
    case(
        "set-value-out-of-range",
        base_with("--set", "pools.chat.replicas=0"),
        "pools.0.replicas",
        "greater than or equal to 1",
    ),
    # ---- CLI flags
    case(
        "flag-replications-0",
        base_with("--replications", "0", command="run"),
        "argument --replications",
        "expected a positive integer, got '0'",
    ),
    case(
        "flag-seed-negative",
        base_with("--seed", "-1", command="run"),
        "argument --seed",
        "expected a non-negative integer, got '-1'",
    ),
    case("flag-seed-not-int", base_with("--seed", "abc", command="run"), "argument --seed", "got 'abc'"),
    case("flag-seed-without-value", base_with("--seed", command="run"), "argument --seed: expected one argument"),
    case("flag-unknown", base_with("--frobnicate"), "unrecognized arguments: --frobnicate"),
    case(
        "unknown-subcommand",
        argv_only("simulate", "x.yaml"),
        "invalid choice: 'simulate'",
        "'run', 'validate-scenario'",
    ),
    case("no-subcommand", argv_only(), "required: command"),
    case("validate-without-scenario", argv_only("validate-scenario"), "required: scenario"),
    # ---- run-time: traces and capacity
    case(
        "trace-empty-file",
        run(trace_class("empty.csv", "azure"), files={"empty.csv": ""}),
        "empty.csv",
        "file is empty",
    ),
    case(
        "trace-missing-column",
        run(
            trace_class("nocol.csv", "azure"),
            files={"nocol.csv": "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n"},
        ),
        "nocol.csv",
        "missing column(s) GeneratedTokens",
    ),
    case(
        "trace-non-numeric-tokens",
        run(
            trace_class("nonnum.csv", "azure"),
            files={"nonnum.csv": GOOD_AZURE + "2023-11-16 18:15:48.0000000,abc,44\n"},
        ),
        "nonnum.csv",
        "column ContextTokens",
        "'abc' is not a whole number",
    ),
    case(
        "trace-bad-timestamp",
        run(trace_class("stamp.csv", "azure"), files={"stamp.csv": GOOD_AZURE + "yesterday,10,10\n"}),
        "stamp.csv",
        "column TIMESTAMP",
        "cannot parse timestamp 'yesterday'",
    ),
    case(
        "trace-mooncake-bad-json",
        run(
            trace_class("bad.jsonl", "mooncake"),
            files={
                "bad.jsonl": '{"timestamp": 0, "input_length": 10, "output_length": 5}\n'
                '{"timestamp": 5, "input_length": 10,\n'
            },
        ),
        "bad.jsonl",
        "line 2: malformed JSON",
    ),
    case(
        "trace-mooncake-missing-field",
        run(trace_class("short.jsonl", "mooncake"), files={"short.jsonl": '{"timestamp": 0, "input_length": 10}\n'}),
        "short.jsonl",
        "line 1: missing field(s) output_length",
    ),
    case("trace-path-missing", run(trace_class("nope.csv", "azure")), "nope.csv", "trace file not found"),
    case(
        "trace-builtin-unknown",
        run(trace_class("builtin:nope.csv", "azure")),
        "unknown trace sample 'nope.csv'",
        "available: azure_code_2023_sample.csv",
    ),
    case(
        "trace-target-rate-zero-span",
        run(
            trace_class("same.csv", "vidur", target_rate=2.0),
            files={"same.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n0,12,6\n"},
        ),
        "same.csv",
        "mean rate is undefined",
    ),
    case(
        "empirical-length-trace-missing",
        run({"classes.0.prompt_tokens": {"dist": "empirical", "trace": {"path": "gone.csv", "format": "vidur"}}}),
        "gone.csv",
        "trace file not found",
    ),
    case(
        "model-does-not-fit-run",
        run({"pools.0.model": "llama-3-70b", "pools.0.gpu": "l4", "classes.0.arrival.rate": 0.5}),
        "llama-3-70b does not fit l4 at tensor_parallel_size 1",
    ),
    # ---- formerly mishandled (tracebacks, silent acceptance, misleading paths)
    case(
        "output-dir-is-a-file",
        run(None, "-o", "{tmp}/out.txt", files={"out.txt": "not a directory\n"}),
        "out.txt",
        "output path exists and is not a directory",
    ),
    case(
        "output-dir-under-a-file",
        run(None, "-o", "{tmp}/out.txt/results", files={"out.txt": "not a directory\n"}),
        "out.txt",
        "is not a directory",
    ),
    case(
        "infinite-rate", validate({"classes.0.arrival.rate": float("inf")}), "classes.0.arrival.rate", "finite number"
    ),
    case("infinite-duration", validate({"duration_s": float("inf")}), "duration_s", "finite number"),
    case(
        "infinite-activation-reserve",
        validate({"pools.0.engine.activation_reserve_gib": float("inf")}),
        "pools.0.engine.activation_reserve_gib",
        "finite number",
    ),
    case(
        "infinite-exponential-mean",
        run({"classes.0.prompt_tokens": {"dist": "exponential", "mean": float("inf")}}),
        "classes.0.prompt_tokens.mean",
        "finite number",
    ),
    case(
        "huge-fixed-length",
        run({"classes.0.prompt_tokens.value": 10**30}),
        "classes.0.prompt_tokens.value",
        "less than or equal to 10000000",
    ),
    case(
        "lognormal-min-above-max",
        validate({"classes.0.prompt_tokens": {"dist": "lognormal", "mean": 10, "cv": 1, "min": 100, "max": 5}}),
        "classes.0.prompt_tokens",
        "min (100) must be <= max (5)",
    ),
    case(
        "piecewise-nan-time",
        validate({"classes.0.arrival": {"process": "piecewise", "points": [[0, 1], [float("nan"), 2]]}}),
        "classes.0.arrival.points.1.0",
        "finite number",
    ),
    case(
        "error-path-is-yaml-path",
        validate({"classes.0.arrival.burst": 3}),
        "classes.0.arrival.burst: unknown field",
    ),
    case(
        "validate-checks-trace-file",
        validate(trace_class("nope.csv", "azure")),
        "classes.0.trace.path",
        "nope.csv",
        "trace file not found",
    ),
    # ---- more of the same kinds
    case(
        "nan-lognormal-mean",
        validate({"classes.0.prompt_tokens": {"dist": "lognormal", "mean": float("nan"), "cv": 1}}),
        "classes.0.prompt_tokens.mean",
        "finite number",
    ),
    case("infinite-slo", validate({"slo": {"ttft_s": float("inf")}}), "slo.ttft_s", "finite number"),
    case(
        "infinite-price",
        validate({"pools.0.price_per_gpu_hour": float("inf")}),
        "pools.0.price_per_gpu_hour",
        "finite number",
    ),
    case(
        "infinite-constant-cost-step",
        validate({"pools.0.cost_model": {"kind": "constant", "step_s": float("inf")}}),
        "pools.0.cost_model.step_s",
        "finite number",
    ),
    case(
        "infinite-piecewise-rate",
        validate({"classes.0.arrival": {"process": "piecewise", "points": [[0, float("inf")]]}}),
        "classes.0.arrival.points.0.1",
        "finite number",
    ),
    case(
        "huge-rate-times-duration",
        validate({"classes.0.arrival.rate": 1e300}),
        "class 'chat' would generate about",
        "set num_requests",
    ),
    case(
        "huge-empirical-value",
        validate({"classes.0.prompt_tokens": {"dist": "empirical", "values": [5, 10**8]}}),
        "classes.0.prompt_tokens.values.1",
        "less than or equal to 10000000",
    ),
    case(
        "huge-max-num-batched-tokens",
        validate({"pools.0.engine.max_num_batched_tokens": 10**12}),
        "pools.0.engine.max_num_batched_tokens",
        "less than or equal to 10000000",
    ),
    case(
        "error-path-drops-length-tag",
        validate({"classes.0.prompt_tokens": {"dist": "uniform", "low": 10, "high": 5}}),
        "classes.0.prompt_tokens: low (10) must be <= high (5)",
    ),
    case("bool-for-int", validate({"pools.0.replicas": True}), "pools.0.replicas", "not a boolean"),
    case("bool-for-float", validate({"classes.0.arrival.rate": True}), "classes.0.arrival.rate", "not a boolean"),
    case("list-for-mapping-says-mapping", validate({"pools.0.engine": [1, 2]}), "pools.0.engine", "expected a mapping"),
    case(
        "comment-only-file", validate_raw("# nothing here\n", "comment.yaml"), "comment.yaml", "scenario file is empty"
    ),
    case(
        "scenario-is-a-directory",
        lambda tmp: ["validate-scenario", str(tmp)],
        "is a directory, not a scenario file",
    ),
    case(
        "validate-checks-empirical-trace-file",
        validate({"classes.0.prompt_tokens": {"dist": "empirical", "trace": {"path": "gone.csv", "format": "vidur"}}}),
        "classes.0.prompt_tokens.trace.path",
        "gone.csv",
        "trace file not found",
    ),
    case(
        "validate-checks-builtin-trace",
        validate(trace_class("builtin:nope.csv", "azure")),
        "classes.0.trace.path",
        "unknown trace sample 'nope.csv'",
    ),
    case(
        "trace-with-arrival-and-target-rate",
        validate(
            {
                "classes.0.prompt_tokens": DELETE,
                "classes.0.output_tokens": DELETE,
                "classes.0.trace": {"path": "builtin:azure_conv_2023.csv", "format": "azure", "target_rate": 2.0},
            }
        ),
        "classes.0",
        "drop 'trace.time_scale'/'trace.target_rate'",
    ),
    case(
        "lengths-only-trace-without-arrival",
        run(
            trace_class("lengths.csv", "vidur"),
            files={"lengths.csv": "num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n"},
        ),
        "lengths.csv",
        "no arrival times",
        "'arrival' process",
    ),
    case(
        "gamma-rate-underflow",
        run({"classes.0.arrival": {"process": "gamma", "rate": 5e-324, "cv": 50}}),
        "produced no requests",
    ),
]


@pytest.mark.parametrize(("build", "expect"), CASES)
def test_bad_input_is_one_line_exit_2(
    build: Build, expect: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = build(tmp_path)
    code, err = invoke(argv, capsys)
    assert code == 2, f"exit code {code!r} (expected 2); stderr={err!r}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one non-empty stderr line, got {err!r}"
    assert lines[0].startswith("servesim: error: "), err
    for needle in expect:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# --------------------------------------------------------------------------- controls


def test_cases_are_many_and_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


def test_base_scenario_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = invoke(["validate-scenario", str(write_scenario(tmp_path))], capsys)
    assert code == 0, err
    assert err == ""


def test_base_scenario_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = run()(tmp_path)
    code, err = invoke(argv, capsys)
    assert code == 0, err


def test_well_formed_relative_trace_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The malformed-trace cases fail because of the file, not because of the set-up."""
    argv = run(trace_class("good.csv", "azure"), files={"good.csv": GOOD_AZURE})(tmp_path)
    code, err = invoke(argv, capsys)
    assert code == 0, err


def test_lengths_only_trace_with_arrival_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lengths = "num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n"
    argv = run(
        {
            "classes.0.prompt_tokens": DELETE,
            "classes.0.output_tokens": DELETE,
            "classes.0.trace": {"path": "lengths.csv", "format": "vidur"},
        },
        files={"lengths.csv": lengths},
    )(tmp_path)
    code, err = invoke(argv, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("edits", "absent"),
    [
        ({"pools.0.model": "gpt-5"}, "(got 'gpt-5')"),
        ({"pools.0.gpu": "v100"}, "(got 'v100')"),
        ({"pools.0.engine": [1, 2]}, "EngineConfig"),
        ({"classes.0.arrival.burst": 3}, "poisson"),
        ({"classes.0.prompt_tokens": {"dist": "uniform", "low": 10, "high": 5}}, "uniform"),
    ],
    ids=["model-value-once", "gpu-value-once", "no-internal-class-name", "no-arrival-tag", "no-length-tag"],
)
def test_message_has_no_noise(
    edits: dict[str, Any], absent: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = invoke(validate(edits)(tmp_path), capsys)
    assert code == 2, err
    assert absent not in err, err


def test_output_checked_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad -o fails before any simulation time is spent."""
    import sim.run

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("simulated although -o is unusable")

    monkeypatch.setattr(sim.run, "run_scenario", boom)
    argv = run(None, "-o", "{tmp}/out.txt", files={"out.txt": "x\n"})(tmp_path)
    code, err = invoke(argv, capsys)
    assert code == 2 and "output path exists and is not a directory" in err, err


@pytest.mark.parametrize("fmt", ["vidur", "azure", "mooncake"])
def test_trace_with_arrival_resamples_pairs(fmt: str, tmp_path: Path) -> None:
    """With `arrival`, a trace supplies (prompt, output) pairs only, kept together."""
    import numpy as np

    from sim.config import parse_scenario
    from sim.workload.stream import build_stream

    if fmt == "vidur":
        name, text = "pairs.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n30,7\n"
    elif fmt == "azure":
        name, text = "pairs.csv", GOOD_AZURE
    else:
        name = "pairs.jsonl"
        text = (
            '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
            '{"timestamp": 9, "input_length": 20, "output_length": 6, "hash_ids": [2]}\n'
        )
    write_file(tmp_path, name, text)
    raw = copy.deepcopy(BASE)
    for key in ("prompt_tokens", "output_tokens"):
        del raw["classes"][0][key]
    raw["classes"][0]["trace"] = {"path": name, "format": fmt}
    scenario = parse_scenario(raw)
    stream = build_stream(scenario, scenario.classes[0], np.random.default_rng(1), tmp_path)
    assert len(stream) > 0
    pairs = set(zip(stream.prompt_tokens.tolist(), stream.output_tokens.tolist()))
    allowed = {
        "vidur": {(10, 5), (20, 6), (30, 7)},
        "azure": {(374, 44), (396, 109), (120, 12)},
        "mooncake": {(10, 5), (20, 6)},
    }
    assert pairs <= allowed[fmt]
    if fmt == "mooncake":
        assert stream.prefix_hashes is not None
        assert all(
            h == ((1,) if p == 10 else (2,)) for h, p in zip(stream.prefix_hashes, stream.prompt_tokens.tolist())
        )
    else:
        assert stream.prefix_hashes is None
