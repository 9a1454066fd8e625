"""Unit tests for sim.workload.traces: the Alibaba GenTD26 diffusion trace reader and rescale.

The trace itself has no licence, so nothing of it is checked in: every file here is written to
tmp_path from invented rows. One optional test reads the real file from ../shared when present.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from sim.errors import TraceError
from sim.workload.traces import (
    DIFFUSION_TRACE_FORMATS,
    TRACE_FORMATS,
    DiffusionTrace,
    read_diffusion_trace,
    read_trace,
    rescale,
    rescale_diffusion,
)

HEADER = (
    "gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,"
    "negative_prompt_length,num_images_per_prompt,num_inference_steps,"
    "checkpoint_model_version_id,num_lora\n"
)

REAL_TRACE = (
    pathlib.Path(__file__).parents[3].parent
    / "shared"
    / "data"
    / "traces"
    / "alibaba-gentd26-diffusion"
    / "lora_request_trace.csv"
)


def _row(
    stamp: str,
    kind: str = "TXT_2_IMG",
    status: str = "SUCCEED",
    images: str = "1.0",
    steps: str = "30.0",
) -> str:
    """One data line in the column order of HEADER; unused columns get invented values."""
    return f"{stamp},{kind},{status},12.0,G0001,40.0,,{images},{steps},M0001,0\n"


def _write(tmp_path: pathlib.Path, name: str, content: str | bytes) -> pathlib.Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# Invented rows: a tie at 10:00:05 (file order must survive), every status and kind.
MIXED = (
    HEADER
    + _row("2024-01-01 10:00:00", images="4.0", steps="30.0")
    + _row("2024-01-01 10:00:05", kind="IMG_2_IMG", images="1.0", steps="40.0")
    + _row("2024-01-01 10:00:05", images="8.0", steps="20.0")
    + _row("2024-01-01 10:00:07", status="FAILED", images="2.0", steps="30.0")
    + _row("2024-01-01 10:00:09", status="PENDING", images="", steps="")
    + _row("2024-01-01 10:00:10", kind="INPAINTING", images="2.0", steps="50.0")
    + _row("2024-01-01 10:01:00", images="1.0", steps="30.0")
)


def _assert_invariants(trace: DiffusionTrace) -> None:
    assert trace.arrival_s.dtype == np.float64
    assert trace.steps.dtype == np.int64
    assert trace.images.dtype == np.int64
    assert trace.kind.dtype.kind == "U"
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0.0)
    assert trace.steps.min() >= 1
    assert trace.images.min() >= 1
    assert len(trace.steps) == len(trace.images) == len(trace.kind) == len(trace)
    for arr in (trace.arrival_s, trace.steps, trace.images, trace.kind):
        assert not arr.flags.writeable


# ----------------------------------------------------------------------------- parsing


def test_formats_are_separate_from_text_formats() -> None:
    assert DIFFUSION_TRACE_FORMATS == ("alibaba",)
    assert "alibaba" not in TRACE_FORMATS


def test_reads_successful_requests_in_arrival_order(tmp_path: pathlib.Path) -> None:
    trace = read_diffusion_trace(_write(tmp_path, "mixed.csv", MIXED))
    _assert_invariants(trace)
    assert trace.source == "mixed.csv"
    assert len(trace) == 5
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 5.0, 5.0, 10.0, 60.0])
    # The two requests at 10:00:05 keep their file order (IMG_2_IMG first).
    np.testing.assert_array_equal(trace.steps, [30, 40, 20, 50, 30])
    np.testing.assert_array_equal(trace.images, [4, 1, 8, 2, 1])
    assert trace.kind.tolist() == ["TXT_2_IMG", "IMG_2_IMG", "TXT_2_IMG", "INPAINTING", "TXT_2_IMG"]
    assert trace.duration_s == 60.0
    assert trace.mean_rate == pytest.approx(4 / 60.0)
    assert "requests=5" in repr(trace)


def test_unsorted_rows_are_sorted_stably(tmp_path: pathlib.Path) -> None:
    content = (
        HEADER
        + _row("2024-01-01 10:00:09", steps="10.0")
        + _row("2024-01-01 10:00:03", steps="11.0")
        + _row("2024-01-01 10:00:09", steps="12.0")
        + _row("2024-01-01 10:00:03", steps="13.0")
    )
    trace = read_diffusion_trace(_write(tmp_path, "unsorted.csv", content), "alibaba")
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.0, 6.0, 6.0])
    np.testing.assert_array_equal(trace.steps, [11, 13, 10, 12])


def test_arrivals_start_at_first_kept_request(tmp_path: pathlib.Path) -> None:
    content = (
        HEADER
        + _row("2024-01-01 09:00:00", status="FAILED")
        + _row("2024-01-01 10:00:00")
        + _row("2024-01-02 10:00:00")  # across midnight: one day later
    )
    trace = read_diffusion_trace(_write(tmp_path, "days.csv", content))
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 86_400.0])


def test_blank_lines_and_padding_are_ignored(tmp_path: pathlib.Path) -> None:
    content = (
        HEADER
        + _row("2024-01-01 10:00:00")
        + "\n"
        + " 2024-01-01 10:00:02 , TXT_2_IMG , SUCCEED ,1,G,1,,2.0, 25 ,M,0\n"
    )
    trace = read_diffusion_trace(_write(tmp_path, "padded.csv", content))
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 2.0])
    np.testing.assert_array_equal(trace.steps, [30, 25])
    assert trace.kind.tolist() == ["TXT_2_IMG", "TXT_2_IMG"]


# ----------------------------------------------------------------------------- filters


def test_status_filter(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    failed = read_diffusion_trace(path, statuses=("FAILED",))
    assert len(failed) == 1
    np.testing.assert_array_equal(failed.images, [2])
    both = read_diffusion_trace(path, statuses=["SUCCEED", "FAILED"])
    assert len(both) == 6
    np.testing.assert_array_equal(both.arrival_s, [0.0, 5.0, 5.0, 7.0, 10.0, 60.0])
    # A lone string is one status, not a set of letters.
    assert len(read_diffusion_trace(path, statuses="FAILED")) == 1


def test_kind_filter(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    txt = read_diffusion_trace(path, kinds=["TXT_2_IMG"])
    assert txt.kind.tolist() == ["TXT_2_IMG"] * 3
    np.testing.assert_array_equal(txt.arrival_s, [0.0, 5.0, 60.0])
    edits = read_diffusion_trace(path, kinds={"IMG_2_IMG", "INPAINTING"})
    assert edits.kind.tolist() == ["IMG_2_IMG", "INPAINTING"]
    # Arrivals restart at the first kept request.
    np.testing.assert_array_equal(edits.arrival_s, [0.0, 5.0])


def test_all_statuses_still_checks_kept_rows(tmp_path: pathlib.Path) -> None:
    # The PENDING row has no steps; keeping every status keeps it, and it is reported.
    path = _write(tmp_path, "mixed.csv", MIXED)
    with pytest.raises(TraceError) as info:
        read_diffusion_trace(path, statuses=None)
    message = str(info.value)
    assert "\n" not in message
    assert "mixed.csv" in message
    assert "line 6" in message
    assert "missing value" in message


def test_max_requests_keeps_first_by_arrival(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    first = read_diffusion_trace(path, max_requests=3)
    np.testing.assert_array_equal(first.arrival_s, [0.0, 5.0, 5.0])
    np.testing.assert_array_equal(first.steps, [30, 40, 20])
    assert len(read_diffusion_trace(path, max_requests=100)) == 5


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_max_requests_must_be_positive_int(tmp_path: pathlib.Path, bad: object) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    with pytest.raises(TraceError, match="max_requests"):
        read_diffusion_trace(path, max_requests=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"statuses": []}, "statuses"),
        ({"statuses": [1]}, "statuses"),
        ({"kinds": ()}, "kinds"),
        ({"kinds": 7}, "kinds"),
    ],
)
def test_filter_arguments_are_checked(tmp_path: pathlib.Path, kwargs: dict, name: str) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    with pytest.raises(TraceError) as info:
        read_diffusion_trace(path, **kwargs)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- rescale


def test_rescale_to_target_rate(tmp_path: pathlib.Path) -> None:
    trace = read_diffusion_trace(_write(tmp_path, "mixed.csv", MIXED))
    for rate in (0.5, 2.0, 40.0):
        fast = rescale_diffusion(trace, target_rate=rate)
        assert isinstance(fast, DiffusionTrace)
        assert fast.mean_rate == pytest.approx(rate, rel=1e-12)
        _assert_invariants(fast)
        np.testing.assert_array_equal(fast.steps, trace.steps)
        np.testing.assert_array_equal(fast.images, trace.images)
        np.testing.assert_array_equal(fast.kind, trace.kind)
        np.testing.assert_allclose(fast.arrival_s * (trace.duration_s / fast.duration_s), trace.arrival_s)
    # The generic rescale does the same; the original is untouched.
    slow = rescale(trace, time_scale=3.0)
    assert isinstance(slow, DiffusionTrace)
    np.testing.assert_allclose(slow.arrival_s, 3.0 * trace.arrival_s)
    assert trace.duration_s == 60.0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"time_scale": 2.0, "target_rate": 3.0}, {"time_scale": 0.0}, {"target_rate": math.nan}],
)
def test_rescale_rejects_bad_arguments(tmp_path: pathlib.Path, kwargs: dict) -> None:
    trace = read_diffusion_trace(_write(tmp_path, "mixed.csv", MIXED))
    with pytest.raises(TraceError) as info:
        rescale_diffusion(trace, **kwargs)
    assert "\n" not in str(info.value)


def test_rescale_needs_two_distinct_arrivals(tmp_path: pathlib.Path) -> None:
    content = HEADER + _row("2024-01-01 10:00:00") + _row("2024-01-01 10:00:00")
    trace = read_diffusion_trace(_write(tmp_path, "same_second.csv", content))
    assert len(trace) == 2
    assert trace.duration_s == 0.0
    with pytest.raises(TraceError, match=r"same_second\.csv"):
        rescale_diffusion(trace, target_rate=1.0)


# ----------------------------------------------------------------------------- errors


def test_format_mixups_point_at_the_right_reader(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "mixed.csv", MIXED)
    with pytest.raises(TraceError, match="read_diffusion_trace"):
        read_trace(path, "alibaba")
    with pytest.raises(TraceError, match="read_trace"):
        read_diffusion_trace(path, "azure")
    with pytest.raises(TraceError, match="allowed: alibaba"):
        read_diffusion_trace(path, "gentd")


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TraceError, match=r"nowhere\.csv: trace file not found"):
        read_diffusion_trace(tmp_path / "nowhere.csv")
    with pytest.raises(TraceError, match="not a regular file"):
        read_diffusion_trace(tmp_path)


GOOD = _row("2024-01-01 10:00:00")

# (id, file name, content, keyword arguments, fragments the message must contain)
MALFORMED: list[tuple[str, str, str | bytes, dict, tuple[str, ...]]] = [
    ("empty", "empty.csv", "", {}, ("empty.csv", "empty")),
    ("header-only", "header_only.csv", HEADER, {}, ("header_only.csv", "no data rows")),
    (
        "missing-column",
        "no_steps.csv",
        "gmt_create,predict_type,predict_status,num_images_per_prompt\n2024-01-01 10:00:00,TXT_2_IMG,SUCCEED,1.0\n",
        {},
        (
            "no_steps.csv",
            "missing column(s) num_inference_steps",
            "gmt_create, predict_type, predict_status, num_inference_steps, num_images_per_prompt",
        ),
    ),
    (
        "fractional-steps",
        "fraction.csv",
        HEADER + GOOD + _row("2024-01-01 10:00:01", steps="30.5"),
        {},
        ("fraction.csv", "data row 2", "line 3", "num_inference_steps", "'30.5'", "whole number"),
    ),
    (
        "zero-steps",
        "zero_steps.csv",
        HEADER + _row("2024-01-01 10:00:01", steps="0.0"),
        {},
        ("zero_steps.csv", "line 2", "num_inference_steps", "'0.0'", ">= 1"),
    ),
    (
        "negative-images",
        "negative.csv",
        HEADER + GOOD + GOOD + _row("2024-01-01 10:00:01", images="-2.0"),
        {},
        ("negative.csv", "line 4", "num_images_per_prompt", "negative"),
    ),
    (
        "zero-images",
        "zero_images.csv",
        HEADER + _row("2024-01-01 10:00:01", images="0"),
        {},
        ("zero_images.csv", "line 2", "num_images_per_prompt", ">= 1"),
    ),
    (
        "missing-images",
        "no_images.csv",
        HEADER + GOOD + _row("2024-01-01 10:00:01", images=""),
        {},
        ("no_images.csv", "line 3", "num_images_per_prompt", "missing value"),
    ),
    (
        "text-steps",
        "text_steps.csv",
        HEADER + _row("2024-01-01 10:00:01", steps="thirty"),
        {},
        ("text_steps.csv", "line 2", "num_inference_steps", "'thirty'"),
    ),
    (
        "bad-timestamp",
        "bad_time.csv",
        HEADER + GOOD + _row("yesterday at noon"),
        {},
        ("bad_time.csv", "line 3", "gmt_create", "timestamp", "2024-11-15 16:57:50"),
    ),
    (
        "nothing-succeeded",
        "all_failed.csv",
        HEADER + _row("2024-01-01 10:00:00", status="FAILED"),
        {},
        ("all_failed.csv", "no requests", "SUCCEED", "FAILED"),
    ),
    (
        "no-such-kind",
        "mixed.csv",
        MIXED,
        {"kinds": ["VIDEO"]},
        ("mixed.csv", "no requests", "'VIDEO'", "IMG_2_IMG", "INPAINTING", "TXT_2_IMG"),
    ),
    (
        "extra-field",
        "extra_field.csv",
        HEADER + GOOD + GOOD.rstrip("\n") + ",extra\n",
        {},
        ("extra_field.csv", "line 3", "fields"),
    ),
    (
        "not-utf8",
        "binary.csv",
        HEADER.encode() + b"\xff\xfe\x00\x81,TXT_2_IMG,SUCCEED,1,G,1,,1.0,30.0,M,0\n",
        {},
        ("binary.csv", "UTF-8"),
    ),
    (
        "json-lines",
        "mooncake.jsonl",
        '{"timestamp": 0, "input_length": 5, "output_length": 6}\n' * 2,
        {},
        ("mooncake.jsonl", "missing column(s)", "gmt_create"),
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "fragments"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_bad_input_gives_one_line_message(
    tmp_path: pathlib.Path, name: str, content: str | bytes, kwargs: dict, fragments: tuple[str, ...]
) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(TraceError) as info:
        read_diffusion_trace(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_failed_rows_are_not_checked(tmp_path: pathlib.Path) -> None:
    # Rows dropped by the filters may be incomplete (the published file has PENDING rows
    # without steps or images); only kept rows must be valid.
    content = HEADER + GOOD + _row("not a time", status="PENDING", images="", steps="")
    assert len(read_diffusion_trace(_write(tmp_path, "pending.csv", content))) == 1


# ----------------------------------------------------------------------------- real trace


@pytest.mark.skipif(not REAL_TRACE.is_file(), reason="Alibaba GenTD26 trace not present in ../shared")
def test_real_alibaba_trace_matches_its_readme() -> None:
    trace = read_diffusion_trace(REAL_TRACE)
    _assert_invariants(trace)
    assert len(trace) == 26_392  # SUCCEED rows, per the README
    # ~23 days, time-shifted: 2024-11-15 16:57:50 -> 2024-12-08 17:33:57 over all rows.
    assert 22 * 86_400 < trace.duration_s <= 23 * 86_400 + 36 * 60 + 7
    assert trace.mean_rate == pytest.approx(0.0133, abs=0.0005)
    # Steps: 30 for ~91 % of requests, 40 for ~5 %, all within the published range.
    assert np.mean(trace.steps == 30) == pytest.approx(0.91, abs=0.01)
    assert np.mean(trace.steps == 40) == pytest.approx(0.05, abs=0.01)
    # Images per prompt: 1, 2, 4 and 8 (58 %, 8 %, 19 %, 15 %), with a handful of 3 and 5.
    values, counts = np.unique(trace.images, return_counts=True)
    assert set(values.tolist()) <= {1, 2, 3, 4, 5, 8}
    share = dict(zip(values.tolist(), (counts / len(trace)).tolist()))
    for images, expected in ((1, 0.58), (2, 0.08), (4, 0.19), (8, 0.15)):
        assert share[images] == pytest.approx(expected, abs=0.01)
    assert share.get(3, 0.0) + share.get(5, 0.0) < 0.001
    assert set(trace.kind.tolist()) == {"TXT_2_IMG", "IMG_2_IMG", "INPAINTING"}
    # Every row, whatever its status, for the kinds the README counts.
    inpainting = read_diffusion_trace(REAL_TRACE, statuses=None, kinds=["INPAINTING"])
    assert len(inpainting) == 186


def test_target_rate_is_the_rate_over_the_simulated_window():
    """A multi-day trace compressed to 0.5 req/s means 0.5 req/s in the hour the run simulates,
    not over the days it does not (issue 19, item 5)."""
    import numpy as np

    from sim.workload.traces import DiffusionTrace, rescale

    # a quiet first hour, then a busy day: the whole trace's mean is not the first hour's
    first = np.sort(np.random.default_rng(1).uniform(0, 3600, 50))
    later = np.sort(np.random.default_rng(2).uniform(3600, 90_000, 10_000))
    arrival = np.concatenate([[0.0], first, later])
    n = len(arrival)
    trace = DiffusionTrace(arrival, np.full(n, 30), np.ones(n, dtype=np.int64), np.array(["t"] * n), "x")
    whole = rescale(trace, target_rate=0.5)
    windowed = rescale(trace, target_rate=0.5, window_s=3600)
    assert abs((whole.arrival_s < 3600).sum() - 1800) > 200  # the old meaning: the hour gets what it gets
    assert (windowed.arrival_s < 3600).sum() == 1800
    limited = rescale(trace, target_rate=0.5, limit=500)
    assert 500 / limited.arrival_s[499] == pytest.approx(0.5)


def test_shared_paths_resolve_from_the_environment_or_a_parent(tmp_path, monkeypatch):
    from sim.workload.stream import resolve_path

    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "t.csv").write_text("x")
    deep = tmp_path / "repo" / "scenarios"
    deep.mkdir(parents=True)
    monkeypatch.delenv("SERVESIM_SHARED", raising=False)
    assert resolve_path("shared:data/t.csv", deep) == (tmp_path / "shared" / "data" / "t.csv").resolve()
    other = tmp_path / "elsewhere"
    (other / "data").mkdir(parents=True)
    (other / "data" / "t.csv").write_text("y")
    monkeypatch.setenv("SERVESIM_SHARED", str(other))
    assert resolve_path("shared:data/t.csv", deep) == other / "data" / "t.csv"
