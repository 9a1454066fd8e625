"""Unit tests for sim.workload.traces: the three trace readers, rescale and shipped samples.

Uses only the samples shipped in sim/data/traces and small files written to tmp_path.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib

import numpy as np
import pytest

from sim.errors import ServesimError, TraceError
from sim.workload.traces import (
    TRACE_FORMATS,
    Trace,
    read_lengths,
    read_trace,
    rescale,
    sample_path,
)

AZURE_CONV = "azure_conv_2023.csv"
AZURE_CODE = "azure_code_2023_sample.csv"
MOONCAKE = "mooncake_conversation_sample.jsonl"
VIDUR = "vidur_splitwise_conv_sample.csv"


def _csv_rows(name: str) -> list[dict[str, str]]:
    with open(sample_path(name), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _jsonl_rows(name: str) -> list[dict]:
    with open(sample_path(name), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write(tmp_path: pathlib.Path, name: str, content: str | bytes) -> pathlib.Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _assert_invariants(trace: Trace) -> None:
    assert trace.arrival_s.dtype == np.float64
    assert trace.prompt_tokens.dtype == np.int64
    assert trace.output_tokens.dtype == np.int64
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0.0)
    assert trace.prompt_tokens.min() >= 1
    assert trace.output_tokens.min() >= 1
    assert len(trace.prompt_tokens) == len(trace.output_tokens) == len(trace)


# ----------------------------------------------------------------------------- samples


def test_sample_path_finds_shipped_files() -> None:
    for name in (AZURE_CONV, AZURE_CODE, MOONCAKE, VIDUR):
        path = sample_path(name)
        assert isinstance(path, pathlib.Path)
        assert path.is_file()


def test_sample_path_unknown_name_lists_available() -> None:
    with pytest.raises(TraceError) as info:
        sample_path("alibaba_lora.csv")
    message = str(info.value)
    assert "\n" not in message
    assert "alibaba_lora.csv" in message
    assert AZURE_CONV in message
    assert MOONCAKE in message
    assert "README.md" not in message


def test_trace_error_is_a_servesim_error() -> None:
    assert issubclass(TraceError, ServesimError)
    assert TRACE_FORMATS == ("azure", "mooncake", "vidur", "burstgpt", "csv", "vllm-bench", "sharegpt", "servegen")


# ----------------------------------------------------------------------------- azure


def test_azure_conv_full_file() -> None:
    trace = read_trace(sample_path(AZURE_CONV), "azure")
    rows = _csv_rows(AZURE_CONV)
    assert len(trace) == len(rows) == 19_366
    _assert_invariants(trace)
    assert trace.source == AZURE_CONV
    assert trace.prefix_hashes is None
    assert trace.hash_block_tokens is None
    # First rows as shipped: 18:15:46.6805900 (374, 44), 18:15:50.9951690 (396, 109), ...
    assert rows[0]["ContextTokens"] == "374"
    assert rows[0]["GeneratedTokens"] == "44"
    np.testing.assert_array_equal(trace.prompt_tokens[:3], [374, 396, 879])
    np.testing.assert_array_equal(trace.prompt_tokens[:5], [int(r["ContextTokens"]) for r in rows[:5]])
    np.testing.assert_array_equal(trace.output_tokens[:5], [int(r["GeneratedTokens"]) for r in rows[:5]])
    # 18:15:50.9951690 - 18:15:46.6805900 = 4.3145790 s, to the 100 ns of the published stamps.
    assert trace.arrival_s[1] == pytest.approx(4.314579, abs=1e-7)
    assert trace.arrival_s[2] == pytest.approx(4.541877, abs=1e-7)
    # Last stamp 19:14:08.4025270 -> 58 min 21.7219370 s after the first.
    assert trace.duration_s == pytest.approx(3501.721937, abs=1e-6)
    assert trace.mean_rate == pytest.approx((19_366 - 1) / 3501.721937)


def test_azure_code_sample() -> None:
    trace = read_trace(str(sample_path(AZURE_CODE)), "azure")
    rows = _csv_rows(AZURE_CODE)
    assert len(trace) == len(rows) == 2_000
    _assert_invariants(trace)
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (4808, 10)
    assert (trace.prompt_tokens[1], trace.output_tokens[1]) == (3180, 8)
    assert trace.arrival_s[1] == pytest.approx(0.052, abs=1e-7)  # 18:17:04.03196 - 18:17:03.97996
    assert trace.prompt_tokens.sum() == sum(int(r["ContextTokens"]) for r in rows)
    assert trace.output_tokens.sum() == sum(max(1, int(r["GeneratedTokens"])) for r in rows)


def test_azure_sorts_by_time_and_keeps_rows_together(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "unsorted.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:02.5000000,30,3\n"
        "2023-11-16 18:00:00.2500000,10,1\n"
        "2023-11-16 18:00:01,20,2\n",
    )
    trace = read_trace(path, "azure")
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.75, 2.25])
    np.testing.assert_array_equal(trace.prompt_tokens, [10, 20, 30])
    np.testing.assert_array_equal(trace.output_tokens, [1, 2, 3])
    first = read_trace(path, "azure", max_requests=2)
    np.testing.assert_array_equal(first.prompt_tokens, [10, 20])


def test_zero_token_counts_are_clamped_to_one(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "zeros.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,0,5\n2023-11-16 18:00:01.0000000,7,0\n",
    )
    trace = read_trace(path, "azure")
    np.testing.assert_array_equal(trace.prompt_tokens, [1, 7])
    np.testing.assert_array_equal(trace.output_tokens, [5, 1])
    prompt, output = read_lengths(path, "azure")
    np.testing.assert_array_equal(prompt, [1, 7])
    np.testing.assert_array_equal(output, [5, 1])


def test_csv_blank_lines_are_skipped_and_rows_numbered_by_file(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "blanks.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,6\n\n1.5,7,8\n\n",
    )
    trace = read_trace(path, "vidur")
    assert len(trace) == 2
    bad = _write(
        tmp_path,
        "blanks_bad.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,6\n\n1.5,x,8\n",
    )
    with pytest.raises(TraceError, match=r"data row 3 \(line 4\), column num_prefill_tokens"):
        read_trace(bad, "vidur")


# ----------------------------------------------------------------------------- mooncake


def test_mooncake_sample() -> None:
    trace = read_trace(sample_path(MOONCAKE), "mooncake")
    rows = _jsonl_rows(MOONCAKE)
    assert len(trace) == len(rows) == 1_000
    _assert_invariants(trace)
    assert trace.source == MOONCAKE
    assert trace.hash_block_tokens == 512
    assert trace.prefix_hashes is not None
    assert len(trace.prefix_hashes) == 1_000
    # The file is already in time order, so the stable sort keeps file order.
    np.testing.assert_array_equal(trace.prompt_tokens, [r["input_length"] for r in rows])
    np.testing.assert_array_equal(trace.output_tokens, [max(1, r["output_length"]) for r in rows])
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (6758, 500)
    assert trace.prefix_hashes[0] == tuple(range(14))
    assert trace.prefix_hashes[1][:3] == (0, 14, 15)
    for ids, row in zip(trace.prefix_hashes, rows, strict=True):
        assert ids == tuple(row["hash_ids"])
        assert all(isinstance(h, int) for h in ids)
    # Timestamps are milliseconds: the last shipped line is at 330000 ms.
    assert rows[-1]["timestamp"] == 330_000
    assert trace.duration_s == pytest.approx(330.0)
    np.testing.assert_allclose(trace.arrival_s, [r["timestamp"] / 1000.0 for r in rows])


def test_mooncake_hashes_follow_their_request_when_sorted(tmp_path: pathlib.Path) -> None:
    lines = [
        {"timestamp": 2500, "input_length": 1024, "output_length": 3, "hash_ids": [7, 8]},
        {"timestamp": 1000, "input_length": 100, "output_length": 0, "hash_ids": [1]},
        {"timestamp": 1000, "input_length": 600, "output_length": 2, "hash_ids": [1, 2]},
    ]
    path = _write(tmp_path, "moon.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    trace = read_trace(path, "mooncake", hash_block_tokens=256)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.0, 1.5])
    np.testing.assert_array_equal(trace.prompt_tokens, [100, 600, 1024])  # tie keeps file order
    np.testing.assert_array_equal(trace.output_tokens, [1, 2, 3])
    assert trace.prefix_hashes == ((1,), (1, 2), (7, 8))
    assert trace.hash_block_tokens == 256
    first = read_trace(path, "mooncake", max_requests=1)
    assert first.prefix_hashes == ((1,),)


def test_mooncake_without_hash_ids(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "nohash.jsonl",
        '{"timestamp": 0, "input_length": 10, "output_length": 2}\n'
        "\n"
        '{"timestamp": 500.5, "input_length": 20, "output_length": 4}\n',
    )
    trace = read_trace(path, "mooncake")
    assert trace.prefix_hashes is None
    assert trace.hash_block_tokens is None
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.5005])


# ----------------------------------------------------------------------------- vidur


def test_vidur_sample_matches_azure_conv() -> None:
    trace = read_trace(sample_path(VIDUR), "vidur")
    rows = _csv_rows(VIDUR)
    assert len(trace) == len(rows) == 1_000
    _assert_invariants(trace)
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (374, 44)
    np.testing.assert_array_equal(trace.arrival_s[:5], [float(r["arrived_at"]) for r in rows[:5]])
    assert trace.duration_s == pytest.approx(float(rows[-1]["arrived_at"]))
    # Vidur's splitwise_conv is the Azure conversation trace re-timed in seconds.
    azure = read_trace(sample_path(AZURE_CONV), "azure", max_requests=1_000)
    np.testing.assert_array_equal(trace.prompt_tokens, azure.prompt_tokens)
    np.testing.assert_array_equal(trace.output_tokens, azure.output_tokens)
    np.testing.assert_allclose(trace.arrival_s, azure.arrival_s, atol=1e-6)


def test_vidur_lengths_only_file(tmp_path: pathlib.Path) -> None:
    path = _write(
        tmp_path,
        "arxiv_like.csv",
        "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
        "3772,54,3826,69.85185185185185\n"
        "2015,0,2015,inf\n",
    )
    with pytest.raises(TraceError) as info:
        read_trace(path, "vidur")
    message = str(info.value)
    assert "\n" not in message
    assert "arxiv_like.csv" in message
    assert "no arrival times" in message
    assert "read_lengths" in message
    prompt, output = read_lengths(path, "vidur")
    np.testing.assert_array_equal(prompt, [3772, 2015])
    np.testing.assert_array_equal(output, [54, 1])
    assert prompt.dtype == output.dtype == np.int64


@pytest.mark.parametrize(("name", "fmt"), [(AZURE_CODE, "azure"), (MOONCAKE, "mooncake"), (VIDUR, "vidur")])
def test_read_lengths_matches_read_trace(name: str, fmt: str) -> None:
    # All three samples are in time order, so file order == trace order.
    trace = read_trace(sample_path(name), fmt)
    prompt, output = read_lengths(sample_path(name), fmt)
    np.testing.assert_array_equal(prompt, trace.prompt_tokens)
    np.testing.assert_array_equal(output, trace.output_tokens)


# ----------------------------------------------------------------------------- max_requests


def test_max_requests_keeps_first_n() -> None:
    full = read_trace(sample_path(VIDUR), "vidur")
    head = read_trace(sample_path(VIDUR), "vidur", max_requests=25)
    assert len(head) == 25
    np.testing.assert_array_equal(head.arrival_s, full.arrival_s[:25])
    np.testing.assert_array_equal(head.prompt_tokens, full.prompt_tokens[:25])
    assert len(read_trace(sample_path(VIDUR), "vidur", max_requests=10**6)) == 1_000


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_max_requests_must_be_positive_int(bad: object) -> None:
    with pytest.raises(TraceError, match="max_requests"):
        read_trace(sample_path(VIDUR), "vidur", max_requests=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- rescale


def test_rescale_target_rate() -> None:
    trace = read_trace(sample_path(AZURE_CODE), "azure")
    for rate in (0.5, 2.6, 40.0):
        fast = rescale(trace, target_rate=rate)
        assert fast.mean_rate == pytest.approx(rate, rel=1e-12)
        assert len(fast) == len(trace)
        np.testing.assert_array_equal(fast.prompt_tokens, trace.prompt_tokens)
        _assert_invariants(fast)
    # Relative spacing is preserved.
    fast = rescale(trace, target_rate=40.0)
    np.testing.assert_allclose(fast.arrival_s * (trace.duration_s / fast.duration_s), trace.arrival_s, rtol=1e-12)


def test_rescale_time_scale_doubles_span() -> None:
    trace = read_trace(sample_path(MOONCAKE), "mooncake")
    slow = rescale(trace, time_scale=2.0)
    assert slow.duration_s == pytest.approx(2.0 * trace.duration_s)
    assert slow.mean_rate == pytest.approx(trace.mean_rate / 2.0)
    np.testing.assert_allclose(slow.arrival_s, 2.0 * trace.arrival_s)
    assert slow.prefix_hashes == trace.prefix_hashes
    assert slow.hash_block_tokens == 512
    # The original is untouched and its arrays are read-only.
    assert trace.duration_s == pytest.approx(330.0)
    assert not trace.arrival_s.flags.writeable


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"time_scale": 2.0, "target_rate": 3.0},
        {"time_scale": 0.0},
        {"time_scale": -1.0},
        {"time_scale": math.inf},
        {"target_rate": 0.0},
        {"target_rate": math.nan},
        {"target_rate": "fast"},
    ],
)
def test_rescale_rejects_bad_arguments(kwargs: dict) -> None:
    trace = read_trace(sample_path(VIDUR), "vidur", max_requests=5)
    with pytest.raises((TraceError, ValueError)) as info:
        rescale(trace, **kwargs)
    assert "\n" not in str(info.value)


def test_mean_rate_needs_a_nonzero_span(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "single.jsonl", '{"timestamp": 5, "input_length": 3, "output_length": 1}\n')
    trace = read_trace(path, "mooncake")
    assert len(trace) == 1
    assert trace.duration_s == 0.0
    with pytest.raises(TraceError, match=r"single\.jsonl"):
        _ = trace.mean_rate
    with pytest.raises(TraceError):
        rescale(trace, target_rate=1.0)
    assert rescale(trace, time_scale=3.0).duration_s == 0.0


# ----------------------------------------------------------------------------- errors


def test_unknown_format_lists_allowed() -> None:
    with pytest.raises(TraceError) as info:
        read_trace(sample_path(AZURE_CODE), "splitwise")
    message = str(info.value)
    assert "splitwise" in message
    assert all(fmt in message for fmt in TRACE_FORMATS)
    with pytest.raises(TraceError):
        read_lengths(sample_path(AZURE_CODE), "csv")


def test_missing_file(tmp_path: pathlib.Path) -> None:
    for reader in (lambda p: read_trace(p, "azure"), lambda p: read_lengths(p, "mooncake")):
        with pytest.raises(TraceError) as info:
            reader(tmp_path / "nowhere.csv")
        assert "nowhere.csv" in str(info.value)
        assert "not found" in str(info.value)
    with pytest.raises(TraceError, match="not a regular file"):
        read_trace(tmp_path, "vidur")


AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
VIDUR_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
GOOD_STAMP = "2023-11-16 18:17:03.9799600"

# (id, format, file name, content, fragments the message must contain)
MALFORMED: list[tuple[str, str, str, str | bytes, tuple[str, ...]]] = [
    ("azure-empty", "azure", "empty.csv", "", ("empty",)),
    ("azure-header-only", "azure", "header_only.csv", AZURE_HEADER, ("no data rows",)),
    (
        "azure-missing-column",
        "azure",
        "two_cols.csv",
        "TIMESTAMP,ContextTokens\n" + GOOD_STAMP + ",5\n",
        ("GeneratedTokens", "TIMESTAMP, ContextTokens, GeneratedTokens"),
    ),
    (
        "azure-non-numeric",
        "azure",
        "letters.csv",
        AZURE_HEADER + GOOD_STAMP + ",5,6\n" + GOOD_STAMP + ",abc,6\n",
        ("data row 2", "line 3", "ContextTokens", "'abc'", ">= 0"),
    ),
    (
        "azure-negative",
        "azure",
        "negative.csv",
        AZURE_HEADER + GOOD_STAMP + ",5,-6\n",
        ("data row 1", "GeneratedTokens", "negative"),
    ),
    (
        "azure-fractional",
        "azure",
        "fraction.csv",
        AZURE_HEADER + GOOD_STAMP + ",5.5,6\n",
        ("data row 1", "ContextTokens", "whole number"),
    ),
    (
        "azure-missing-value",
        "azure",
        "short_row.csv",
        AZURE_HEADER + GOOD_STAMP + ",5,6\n" + GOOD_STAMP + ",5\n",
        ("data row 2", "GeneratedTokens", "missing value"),
    ),
    (
        "azure-bad-timestamp",
        "azure",
        "bad_time.csv",
        AZURE_HEADER + GOOD_STAMP + ",5,6\n" + "16/11/2023 at noon,5,6\n",
        ("data row 2", "TIMESTAMP", "timestamp"),
    ),
    (
        "azure-extra-field",
        "azure",
        "extra_field.csv",
        AZURE_HEADER + GOOD_STAMP + ",5,6\n" + GOOD_STAMP + ",5,6,7\n",
        ("line 3", "fields"),
    ),
    (
        "azure-not-utf8",
        "azure",
        "binary.csv",
        AZURE_HEADER.encode() + b"\xff\xfe\x00\x81,5,6\n",
        ("UTF-8",),
    ),
    (
        "azure-duplicate-column",
        "azure",
        "dup_cols.csv",
        "TIMESTAMP,ContextTokens, ContextTokens,GeneratedTokens\n" + GOOD_STAMP + ",5,5,6\n",
        ("ContextTokens", "more than once"),
    ),
    (
        "vidur-wrong-columns",
        "vidur",
        "wrong_cols.csv",
        "time,prompt,output\n0.0,5,6\n",
        ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    ),
    (
        "vidur-lengths-only",
        "vidur",
        "lengths_only.csv",
        "num_prefill_tokens,num_decode_tokens\n5,6\n",
        ("no arrival times", "read_lengths"),
    ),
    (
        "vidur-bad-arrival",
        "vidur",
        "bad_arrival.csv",
        VIDUR_HEADER + "0.0,5,6\nsoon,5,6\n",
        ("data row 2", "arrived_at", "'soon'"),
    ),
    (
        "vidur-all-rows-too-wide",
        "vidur",
        "too_wide.csv",
        VIDUR_HEADER + "0.0,5,6,9\n1.0,5,6,9\n",
        ("more fields",),
    ),
    ("mooncake-empty", "mooncake", "empty.jsonl", "\n\n", ("no data lines",)),
    (
        "mooncake-bad-json",
        "mooncake",
        "bad_json.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 6}\n{"timestamp": 1, "input_\n',
        ("line 2", "malformed JSON"),
    ),
    (
        "mooncake-not-object",
        "mooncake",
        "array.jsonl",
        "[0, 5, 6]\n",
        ("line 1", "JSON object"),
    ),
    (
        "mooncake-missing-field",
        "mooncake",
        "no_output.jsonl",
        '{"timestamp": 0, "input_length": 5}\n',
        ("line 1", "output_length", "timestamp, input_length, output_length"),
    ),
    (
        "mooncake-string-count",
        "mooncake",
        "string_count.jsonl",
        '{"timestamp": 0, "input_length": "5", "output_length": 6}\n',
        ("line 1", "input_length", "not a number"),
    ),
    (
        "mooncake-bool-count",
        "mooncake",
        "bool_count.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": true}\n',
        ("line 1", "output_length"),
    ),
    (
        "mooncake-negative",
        "mooncake",
        "negative.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": -2}\n',
        ("line 1", "output_length", "negative"),
    ),
    (
        "mooncake-bad-timestamp",
        "mooncake",
        "bad_ts.jsonl",
        '{"timestamp": "noon", "input_length": 5, "output_length": 2}\n',
        ("line 1", "timestamp"),
    ),
    (
        "mooncake-hash-not-list",
        "mooncake",
        "hash_scalar.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": 7}\n',
        ("line 1", "hash_ids", "list of integers"),
    ),
    (
        "mooncake-hash-not-ints",
        "mooncake",
        "hash_strings.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1, "a"]}\n',
        ("line 1", "hash_ids", "list of integers"),
    ),
    (
        "mooncake-hash-partial",
        "mooncake",
        "hash_partial.jsonl",
        (
            '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1]}\n'
            '{"timestamp": 1, "input_length": 5, "output_length": 2}\n'
        ),
        ("line 2", "hash_ids"),
    ),
]


@pytest.mark.parametrize(
    ("fmt", "file_name", "content", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_file_raises_one_line_trace_error(
    tmp_path: pathlib.Path,
    fmt: str,
    file_name: str,
    content: str | bytes,
    fragments: tuple[str, ...],
) -> None:
    path = _write(tmp_path, file_name, content)
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    message = str(info.value)
    assert "\n" not in message
    assert file_name in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
