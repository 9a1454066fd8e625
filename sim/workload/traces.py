"""Readers for published request traces, and shipped samples of them.

Three published text-request formats are read here (the formats of users' own files —
burstgpt, csv, vllm-bench, sharegpt — are read in :mod:`sim.workload.readers`, and ServeGen's
client fits are generated from in :mod:`sim.workload.servegen`; :func:`read_trace` and
:func:`read_lengths` read them all):

* ``azure`` — Azure LLM inference trace 2023 (Splitwise, ISCA'24) CSVs:
  ``TIMESTAMP,ContextTokens,GeneratedTokens`` with wall-clock timestamps.
* ``mooncake`` — Mooncake (FAST'25) JSON Lines: ``timestamp`` in milliseconds,
  ``input_length``, ``output_length`` and optionally ``hash_ids`` (prefix-block hashes).
* ``vidur`` — Vidur's processed CSVs: ``arrived_at`` (seconds), ``num_prefill_tokens``,
  ``num_decode_tokens``. Lengths-only Vidur files (no ``arrived_at``) are read with
  :func:`read_lengths` as an empirical length distribution.

and one image-request (diffusion) format:

* ``alibaba`` — Alibaba GenTD26 (cluster-trace-v2026-GenAI ``lora_request_trace.csv``, SoCC'25)
  CSVs: ``gmt_create`` (``YYYY-MM-DD HH:MM:SS``, 1-second resolution), ``predict_type``,
  ``predict_status``, ``num_inference_steps`` and ``num_images_per_prompt`` (written as floats,
  ``30.0``), among other columns that are not read.

:func:`read_trace` returns a :class:`Trace` (arrivals in seconds from the first request) and
:func:`read_diffusion_trace` a :class:`DiffusionTrace`; :func:`rescale` stretches or compresses
the arrivals of either; :func:`sample_path` locates the trace samples shipped in
``sim/data/traces``. Every problem with a file raises
:class:`~sim.errors.TraceError` with a one-line message naming the file and, where there is
one, the data row and column.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from sim.errors import TraceError

__all__ = [
    "DIFFUSION_TRACE_FORMATS",
    "TRACE_FORMATS",
    "DiffusionTrace",
    "Trace",
    "read_diffusion_trace",
    "read_lengths",
    "read_trace",
    "rescale",
    "rescale_diffusion",
    "sample_path",
]

TRACE_FORMATS = ("azure", "mooncake", "vidur", "burstgpt", "csv", "vllm-bench", "sharegpt", "servegen")
"""Formats of text-request traces, read by :func:`read_trace` and :func:`read_lengths`."""
DIFFUSION_TRACE_FORMATS = ("alibaba",)
"""Formats of image-request (diffusion) traces, read by :func:`read_diffusion_trace`."""

# Column names per format: (arrival column, prompt column, output column).
_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_VIDUR_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
_MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
_MOONCAKE_HASHES = "hash_ids"
# The Alibaba GenTD26 columns read here (the file has six more, unused).
_ALIBABA_TIME = "gmt_create"
_ALIBABA_KIND = "predict_type"
_ALIBABA_STATUS = "predict_status"
_ALIBABA_STEPS = "num_inference_steps"
_ALIBABA_IMAGES = "num_images_per_prompt"
_ALIBABA_COLUMNS = (_ALIBABA_TIME, _ALIBABA_KIND, _ALIBABA_STATUS, _ALIBABA_STEPS, _ALIBABA_IMAGES)

# Far beyond any real count, and safely inside int64 (float64 rounding included).
_MAX_TOKENS = 2**53

# Files in sim/data/traces that are documentation, not samples.
_NOT_SAMPLES = frozenset({"README.md"})


class _Arrivals:
    """Span and rate of a trace's ``arrival_s`` (sorted seconds from 0.0), for both kinds."""

    arrival_s: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival, in seconds."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Requests per second over the span: (n - 1) / duration."""
        duration = self.duration_s
        if duration <= 0.0:
            raise TraceError(
                f"{self.source}: mean rate is undefined because all {len(self)} request(s) "
                f"arrive at the same time (span 0 s); a rate needs at least two distinct arrivals"
            )
        return (len(self) - 1) / duration


def _checked_arrivals(source: str, arrival_s: Any) -> np.ndarray:
    arrival = np.array(arrival_s, dtype=np.float64)
    if arrival.ndim != 1:
        raise ValueError(f"{source}: trace arrays must be 1-D and of equal length")
    if len(arrival):
        if arrival[0] != 0.0 or not np.all(np.diff(arrival) >= 0.0):
            raise ValueError(f"{source}: arrivals must be sorted and start at 0.0")
        if not np.isfinite(arrival[-1]):
            raise ValueError(f"{source}: arrivals must be finite")
    return arrival


def _freeze(obj: object, **arrays: np.ndarray) -> None:
    # Copies made read-only so that a frozen trace really is immutable and traces derived
    # by rescale() share nothing mutable with their parent.
    for name, arr in arrays.items():
        arr.flags.writeable = False
        object.__setattr__(obj, name, arr)


@dataclass(frozen=True, eq=False)
class Trace(_Arrivals):
    """Requests read from a published trace, arrivals relative to the first request."""

    # eq=False: the generated __eq__/__hash__ would compare/hash numpy arrays, which raises;
    # traces are compared by identity.
    arrival_s: np.ndarray  # float64, sorted ascending, first element 0.0
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1
    prefix_hashes: tuple[tuple[int, ...], ...] | None  # Mooncake hash_ids per request, else None
    hash_block_tokens: int | None  # tokens per hash id (512 for Mooncake), else None
    source: str  # file name, for messages

    def __post_init__(self) -> None:
        arrival = _checked_arrivals(self.source, self.arrival_s)
        prompt = np.array(self.prompt_tokens, dtype=np.int64)
        output = np.array(self.output_tokens, dtype=np.int64)
        n = len(arrival)
        if prompt.shape != (n,) or output.shape != (n,):
            raise ValueError(f"{self.source}: trace arrays must be 1-D and of equal length")
        if self.prefix_hashes is not None and len(self.prefix_hashes) != n:
            raise ValueError(f"{self.source}: prefix_hashes must have one entry per request")
        if n and (prompt.min() < 1 or output.min() < 1):
            raise ValueError(f"{self.source}: token counts must be >= 1")
        _freeze(self, arrival_s=arrival, prompt_tokens=prompt, output_tokens=output)

    def __repr__(self) -> str:
        return (
            f"Trace(source={self.source!r}, requests={len(self)}, "
            f"duration_s={self.duration_s:.3f}, hashes={self.prefix_hashes is not None})"
        )


@dataclass(frozen=True, eq=False)
class DiffusionTrace(_Arrivals):
    """Image requests read from a published diffusion trace, arrivals relative to the first."""

    # eq=False for the same reason as Trace.
    arrival_s: np.ndarray  # float64, sorted ascending, first element 0.0
    steps: np.ndarray  # int64 >= 1: denoising steps (num_inference_steps)
    images: np.ndarray  # int64 >= 1: images generated per request (num_images_per_prompt)
    kind: np.ndarray  # str: request type as recorded (Alibaba: TXT_2_IMG, IMG_2_IMG, INPAINTING)
    source: str  # file name, for messages

    def __post_init__(self) -> None:
        arrival = _checked_arrivals(self.source, self.arrival_s)
        steps = np.array(self.steps, dtype=np.int64)
        images = np.array(self.images, dtype=np.int64)
        kind = np.array(self.kind, dtype=np.str_)
        n = len(arrival)
        if steps.shape != (n,) or images.shape != (n,) or kind.shape != (n,):
            raise ValueError(f"{self.source}: trace arrays must be 1-D and of equal length")
        if n and (steps.min() < 1 or images.min() < 1):
            raise ValueError(f"{self.source}: steps and images must be >= 1")
        _freeze(self, arrival_s=arrival, steps=steps, images=images, kind=kind)

    def __repr__(self) -> str:
        return f"DiffusionTrace(source={self.source!r}, requests={len(self)}, duration_s={self.duration_s:.3f})"


_AnyTrace = TypeVar("_AnyTrace", Trace, DiffusionTrace)


# --------------------------------------------------------------------------------------------
# Public functions


def read_trace(
    path: str | os.PathLike[str],
    format: str,
    max_requests: int | None = None,
    hash_block_tokens: int = 512,
    options=None,
    *,
    start_s: float = 0.0,
    rng: np.random.Generator | None = None,
    duration_s: float | None = None,
    rate_scale: float = 1.0,
) -> Trace:
    """Read a trace file of the given format.

    Requests are sorted by arrival time (stably, so ties keep file order) and arrivals are
    shifted to start at 0.0. ``start_s`` first drops the requests of the trace's first
    ``start_s`` seconds. ``max_requests`` keeps the first N by arrival time.
    ``hash_block_tokens`` is the number of prompt tokens each Mooncake hash id covers.
    ``options`` (:class:`sim.workload.readers.ReadOptions`) says how to read the user formats
    (burstgpt, csv, vllm-bench). A ``servegen`` stream is generated: from ``rng`` (default seed
    0), ``start_s`` into the clients' day, for ``duration_s`` seconds (default: the rest of it),
    each window's rate times ``rate_scale``.
    """
    from sim.workload.readers import ReadOptions, read_records

    fmt = _check_format(format)
    shown = os.fspath(path)
    _check_max_requests(shown, max_requests)
    if isinstance(hash_block_tokens, bool) or not isinstance(hash_block_tokens, int) or hash_block_tokens < 1:
        raise TraceError(f"{shown}: hash_block_tokens must be a whole number >= 1, got {hash_block_tokens!r}")
    if fmt == "servegen":
        if not pathlib.Path(path).exists():
            raise TraceError(f"{shown}: trace file not found")
        from sim.workload.servegen import generate

        rng = rng if rng is not None else np.random.default_rng(0)
        arrival, prompt, output = generate(path, rng, start_s, duration_s, max_requests, rate_scale)
        return Trace(arrival - arrival[0], prompt, output, None, None, pathlib.Path(path).name)
    _check_file(path)

    hashes: list[tuple[int, ...]] | None = None
    if fmt == "azure":
        arrival, prompt, output = _read_azure(path, with_times=True)
    elif fmt == "vidur":
        arrival, prompt, output = _read_vidur(path, with_times=True)
    elif fmt == "mooncake":
        arrival, prompt, output, hashes = _read_mooncake(path, with_times=True)
    else:
        rec = read_records(path, fmt, options or ReadOptions(), with_times=True)
        arrival, prompt, output, hashes = rec.arrival_s, rec.prompt_tokens, rec.output_tokens, rec.prefix_hashes
        if rec.hash_block_tokens is not None:
            hash_block_tokens = rec.hash_block_tokens
    assert arrival is not None

    # Stable sort: Mooncake has many requests sharing a millisecond, and their file order is
    # the only order information there is.
    order = np.argsort(arrival, kind="stable")
    if start_s:
        order = order[arrival[order] - arrival[order[0]] >= start_s]
        if not len(order):
            raise TraceError(f"{shown}: no request arrives {start_s:g} s or more after the first (start_s)")
    if max_requests is not None:
        order = order[:max_requests]
    arrival = arrival[order]
    arrival = arrival - arrival[0]
    prefix: tuple[tuple[int, ...], ...] | None = None
    if hashes is not None:
        prefix = tuple(hashes[i] for i in order.tolist())
    return Trace(
        arrival_s=arrival,
        prompt_tokens=prompt[order],
        output_tokens=output[order],
        prefix_hashes=prefix,
        hash_block_tokens=hash_block_tokens if prefix is not None else None,
        source=pathlib.Path(path).name,
    )


def read_lengths(
    path: str | os.PathLike[str],
    format: str,
    options=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read only the token counts of a trace: ``(prompt_tokens, output_tokens)``, int64 >= 1.

    Works for every format and also for Vidur lengths-only files (no ``arrived_at``), which
    serve as an empirical length distribution. Rows are kept in file order; arrival columns
    are neither required nor parsed.
    """
    fmt = _check_format(format)
    if fmt == "servegen":
        raise TraceError(
            f"{os.fspath(path)}: a servegen stream is generated with its arrivals; read it with read_trace"
        )
    _check_file(path)
    if fmt == "azure":
        _, prompt, output = _read_azure(path, with_times=False)
    elif fmt == "vidur":
        _, prompt, output = _read_vidur(path, with_times=False)
    elif fmt == "mooncake":
        _, prompt, output, _ = _read_mooncake(path, with_times=False)
    else:
        from sim.workload.readers import ReadOptions, read_records

        rec = read_records(path, fmt, options or ReadOptions(), with_times=False)
        prompt, output = rec.prompt_tokens.copy(), rec.output_tokens.copy()
    prompt.flags.writeable = False
    output.flags.writeable = False
    return prompt, output


def read_diffusion_trace(
    path: str | os.PathLike[str],
    format: str = "alibaba",
    max_requests: int | None = None,
    statuses: Iterable[str] | None = ("SUCCEED",),
    kinds: Iterable[str] | None = None,
) -> DiffusionTrace:
    """Read an image-request (diffusion) trace file of the given format.

    Keeps the rows whose ``predict_status`` is one of ``statuses`` (default: successful
    requests only; ``None`` keeps every status) and, when ``kinds`` is given, whose
    ``predict_type`` is one of them. Only kept rows are checked: the published file leaves
    steps and images empty on some ``PENDING`` rows. Requests are sorted by arrival time
    (stably: timestamps have 1-second resolution, and ties keep file order) and arrivals
    are shifted to start at 0.0 at the first kept request. ``max_requests`` keeps the first
    N by arrival time.
    """
    if format not in DIFFUSION_TRACE_FORMATS:
        hint = ""
        if format in TRACE_FORMATS:
            hint = f" ({format!r} is a text-request trace: read it with read_trace)"
        allowed = ", ".join(DIFFUSION_TRACE_FORMATS)
        raise TraceError(f"unknown diffusion trace format {format!r}; allowed: {allowed}{hint}")
    shown = os.fspath(path)
    _check_max_requests(shown, max_requests)
    wanted_status = _value_set(shown, "statuses", statuses)
    wanted_kind = _value_set(shown, "kinds", kinds)
    _check_file(path)

    frame = read_csv(path)
    require_columns(frame, path, format, _ALIBABA_COLUMNS, _ALIBABA_COLUMNS, has="needs")
    status = frame[_ALIBABA_STATUS].fillna("").str.strip()
    kind = frame[_ALIBABA_KIND].fillna("").str.strip()
    keep = np.ones(len(frame), dtype=bool)
    if wanted_status is not None:
        keep &= status.isin(wanted_status).to_numpy()
    if wanted_kind is not None:
        keep &= kind.isin(wanted_kind).to_numpy()
    if not keep.any():
        raise TraceError(
            f"{shown}: no requests left: none has {_ALIBABA_STATUS} in {_listing(wanted_status)} "
            f"and {_ALIBABA_KIND} in {_listing(wanted_kind)}; the file has "
            f"{_ALIBABA_STATUS} {_listing(set(status))} and {_ALIBABA_KIND} {_listing(set(kind))}"
        )
    kept = frame[keep]
    steps = _count_column(
        kept,
        path,
        _ALIBABA_STEPS,
        minimum=1,
        rule="denoising steps must be whole numbers >= 1",
        noun="a step count",
    )
    images = _count_column(
        kept,
        path,
        _ALIBABA_IMAGES,
        minimum=1,
        rule="images per prompt must be whole numbers >= 1",
        noun="an image count",
    )
    arrival = timestamp_seconds(kept, path, _ALIBABA_TIME, example="2024-11-15 16:57:50")

    order = np.argsort(arrival, kind="stable")
    if max_requests is not None:
        order = order[:max_requests]
    arrival = arrival[order]
    return DiffusionTrace(
        arrival_s=arrival - arrival[0],
        steps=steps[order],
        images=images[order],
        kind=kind[keep].to_numpy(dtype=str)[order],
        source=pathlib.Path(path).name,
    )


def rescale(
    trace: _AnyTrace,
    *,
    time_scale: float | None = None,
    target_rate: float | None = None,
    window_s: float | None = None,
    limit: int | None = None,
) -> _AnyTrace:
    """Return a copy of ``trace`` (a :class:`Trace` or :class:`DiffusionTrace`) with its
    arrival times stretched or compressed.

    Give exactly one of ``time_scale`` (multiplies every inter-arrival time; > 1 slows the
    trace down) or ``target_rate`` (requests/s). With ``target_rate``, arrivals are scaled so
    that the requests a run keeps arrive at that mean rate: those within ``window_s`` seconds
    (the run's duration), or else the first ``limit``, or else all of them (``mean_rate``). A
    multi-day trace's mean over all its days says little about the hour a run simulates.
    Everything but the arrivals (token counts, prefix hashes, steps, images, kinds) is
    unchanged.
    """
    if (time_scale is None) == (target_rate is None):
        raise TraceError(
            f"{trace.source}: rescale needs exactly one of time_scale or target_rate, "
            f"got time_scale={time_scale!r}, target_rate={target_rate!r}"
        )
    if time_scale is not None:
        factor = _positive_number(trace.source, "time_scale", time_scale)
    else:
        rate = _positive_number(trace.source, "target_rate", target_rate)
        factor = trace.mean_rate / rate
        a = trace.arrival_s  # sorted, from 0
        if window_s is not None:
            k = int(round(rate * window_s))  # requests the window should hold
            if 0 < k < len(a) and a[k] > 0:
                factor = window_s / a[k]  # exactly the first k arrive before window_s
        elif limit is not None and 1 < limit <= len(a) and a[limit - 1] > 0:
            factor = limit / (rate * a[limit - 1])
    # replace() runs __post_init__ again, so the copy is validated and read-only as well.
    return replace(trace, arrival_s=trace.arrival_s * factor)


def rescale_diffusion(
    trace: DiffusionTrace,
    *,
    time_scale: float | None = None,
    target_rate: float | None = None,
    window_s: float | None = None,
    limit: int | None = None,
) -> DiffusionTrace:
    """:func:`rescale` for a :class:`DiffusionTrace`: steps, images and kinds are unchanged."""
    return rescale(trace, time_scale=time_scale, target_rate=target_rate, window_s=window_s, limit=limit)


def sample_path(name: str) -> pathlib.Path:
    """Path of a trace sample shipped in ``sim/data/traces`` (e.g. ``"azure_conv_2023.csv"``)."""
    folder = files("sim").joinpath("data", "traces")
    available = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and entry.name not in _NOT_SAMPLES and not entry.name.startswith(".")
    )
    if name not in available:
        raise TraceError(f"unknown trace sample {name!r}; available: {', '.join(available) or '(none)'}")
    found = folder.joinpath(name)
    if not isinstance(found, pathlib.Path):
        # Only a zip/egg install yields a non-filesystem Traversable; the readers need a file.
        raise TraceError(f"trace sample {name!r} is not on the file system (package is zipped)")
    return found


# --------------------------------------------------------------------------------------------
# Argument and file checks


def _check_format(format: str) -> str:
    if format not in TRACE_FORMATS:
        hint = ""
        if format in DIFFUSION_TRACE_FORMATS:
            hint = f" ({format!r} is an image-request trace: read it with read_diffusion_trace)"
        raise TraceError(f"unknown trace format {format!r}; allowed: {', '.join(TRACE_FORMATS)}{hint}")
    return format


def _check_max_requests(shown: str, max_requests: Any) -> None:
    if max_requests is not None and (
        isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1
    ):
        raise TraceError(f"{shown}: max_requests must be a whole number >= 1 or None, got {max_requests!r}")


def _value_set(shown: str, name: str, values: Any) -> frozenset[str] | None:
    """A filter argument as a set of strings; None means no filter. A lone string is one value."""
    if values is None:
        return None
    if isinstance(values, str):
        values = (values,)
    try:
        items = list(values)
    except TypeError:
        items = None
    if not items or not all(isinstance(v, str) for v in items):
        raise TraceError(f"{shown}: {name} must be a non-empty list of strings or None, got {show_value(values)}")
    return frozenset(v.strip() for v in items)


def _listing(values: Iterable[str] | None, limit: int = 8) -> str:
    """Values for a one-line message: '(any)', or sorted and shown like '(A, B, ... 3 more)'."""
    if values is None:
        return "(any)"
    shown = sorted(show_value(v) for v in values)
    if len(shown) > limit:
        shown = shown[:limit] + [f"... {len(shown) - limit} more"]
    return "(" + ", ".join(shown) + ")"


def _check_file(path: str | os.PathLike[str]) -> None:
    p = pathlib.Path(path)
    if not p.exists():
        raise TraceError(f"{os.fspath(path)}: trace file not found")
    if not p.is_file():
        raise TraceError(f"{os.fspath(path)}: not a regular file (a trace file is expected)")


def _positive_number(source: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TraceError(f"{source}: {name} must be a number > 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise TraceError(f"{source}: {name} must be a finite number > 0, got {value!r}")
    return v


def show_value(value: Any) -> str:
    """A short, single-line rendering of a bad value for error messages."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _one_line(message: str) -> str:
    return " ".join(message.split("\n")).replace("\r", " ")


# --------------------------------------------------------------------------------------------
# CSV formats (azure, vidur)


def read_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV as strings, one DataFrame row per physical data line (blank rows dropped).

    Everything is read as text so that conversion errors can be reported per row and column
    by this module instead of surfacing as pandas exceptions.
    """
    shown = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # pandas only warns (and silently drops data) when every row has more fields than
            # the header; that is a malformed file here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,  # keeps frame index == data row - 1, for messages
                index_col=False,
                encoding="utf-8-sig",
            )
    except pd.errors.EmptyDataError:
        raise TraceError(f"{shown}: file is empty (a header line and data rows are expected)") from None
    except pd.errors.ParserWarning:
        raise TraceError(
            f"{shown}: line 2 onwards: data rows have more fields than the header has columns; "
            f"every row must have one field per header column"
        ) from None
    except pd.errors.ParserError as exc:
        text = _one_line(str(exc)).strip()
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if found:
            want, line, saw = found.groups()
            raise TraceError(
                f"{shown}: line {line}: {saw} fields where the header has {want}; "
                f"every row must have one field per header column"
            ) from None
        raise TraceError(f"{shown}: malformed CSV: {text}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"{shown}: not UTF-8 text (byte {exc.start} cannot be decoded); a CSV file is expected"
        ) from None
    except (OSError, ValueError) as exc:
        raise TraceError(f"{shown}: cannot read as CSV: {_one_line(str(exc))}") from None

    names = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise TraceError(
            f"{shown}: header names column(s) {', '.join(repeated)} more than once; each column must appear once"
        )
    frame.columns = names
    if len(frame.columns):
        # Blank lines (and rows of only commas/whitespace) carry no request; they were kept
        # only so that row numbers in messages match the file.
        blank = np.ones(len(frame), dtype=bool)
        for col in frame.columns:
            blank &= frame[col].fillna("").astype(str).str.strip().eq("").to_numpy()
        frame = frame[~blank]
    if frame.empty:
        raise TraceError(f"{shown}: no data rows (only a header line)")
    return frame


def require_columns(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    fmt: str,
    expected: tuple[str, ...],
    needed: tuple[str, ...],
    has: str = "has",
) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        found = ", ".join(str(c) for c in frame.columns)
        if len(found) > 80:
            found = found[:77] + "..."
        raise TraceError(
            f"{os.fspath(path)}: missing column(s) {', '.join(missing)}; "
            f"the {fmt} format {has} columns {', '.join(expected)} (found: {_one_line(found)})"
        )


def token_column(frame: pd.DataFrame, path: str | os.PathLike[str], column: str) -> np.ndarray:
    """Token counts of one column as int64, clamped to >= 1 (see _clamp_tokens)."""
    return _clamp_tokens(
        _count_column(
            frame,
            path,
            column,
            minimum=0,
            rule="token counts must be whole numbers >= 0",
            noun="a token count",
        )
    )


def _count_column(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    column: str,
    *,
    minimum: int,
    rule: str,
    noun: str,
) -> np.ndarray:
    """Whole numbers >= ``minimum`` of one column as int64; ``"30.0"`` reads as 30.

    ``rule`` ends the message for a bad value, ``noun`` names one value ("a token count").
    """
    raw = frame[column]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values) & (values >= minimum) & (values == np.floor(values))
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        row = int(frame.index[bad]) + 1
        text = raw.iloc[bad]
        v = values[bad]
        if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
            what = "missing value"
        elif np.isfinite(v) and v < 0:
            what = f"negative value {show_value(text)}"
        elif np.isfinite(v) and v < minimum:
            what = f"{show_value(text)} is less than {minimum}"
        else:
            what = f"{show_value(text)} is not a whole number"
        raise TraceError(f"{os.fspath(path)}: data row {row} (line {row + 1}), column {column}: {what}; {rule}")
    if values.max() >= _MAX_TOKENS:
        bad = int(np.argmax(values))
        row = int(frame.index[bad]) + 1
        raise TraceError(
            f"{os.fspath(path)}: data row {row} (line {row + 1}), column {column}: "
            f"{show_value(raw.iloc[bad])} is too large for {noun}"
        )
    return values.astype(np.int64)


def _clamp_tokens(tokens: np.ndarray) -> np.ndarray:
    # Some published traces record 0 output (or prompt) tokens. A request always carries at
    # least one prompt token and produces at least one token (the first token ends prefill),
    # so 0 is treated as 1 rather than rejected or given special cases downstream.
    return np.maximum(tokens, 1)


def _read_azure(
    path: str | os.PathLike[str],
    *,
    with_times: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    frame = read_csv(path)
    time_col, prompt_col, output_col = _AZURE_COLUMNS
    needed = _AZURE_COLUMNS if with_times else (prompt_col, output_col)
    require_columns(frame, path, "azure", _AZURE_COLUMNS, needed)
    prompt = token_column(frame, path, prompt_col)
    output = token_column(frame, path, output_col)
    arrival = timestamp_seconds(frame, path, time_col) if with_times else None
    return arrival, prompt, output


def timestamp_seconds(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    column: str,
    example: str = "2023-11-16 18:17:03.9799600",
) -> np.ndarray:
    """Wall-clock timestamps as seconds since the earliest one."""
    raw = frame[column].str.strip()
    try:
        # ISO8601 accepts the published 7-digit fractions (kept to the nanosecond) and also
        # timestamps without a fraction; utc=True lets naive and offset-carrying stamps mix.
        stamps = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    except (ValueError, TypeError, OverflowError):
        stamps = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    bad_mask = stamps.isna().to_numpy()
    if bad_mask.any():
        bad = int(np.flatnonzero(bad_mask)[0])
        row = int(frame.index[bad]) + 1
        raise TraceError(
            f"{os.fspath(path)}: data row {row} (line {row + 1}), column {column}: "
            f"cannot parse timestamp {show_value(frame[column].iloc[bad])}; "
            f"expected a date-time like {example!r}"
        )
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    # Subtract in integer nanoseconds before converting, so float64 keeps sub-microsecond
    # precision on the (small) offsets instead of on epoch-sized numbers.
    return (ns - ns.min()).astype(np.float64) / 1e9


def _read_vidur(
    path: str | os.PathLike[str],
    *,
    with_times: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    frame = read_csv(path)
    time_col, prompt_col, output_col = _VIDUR_COLUMNS
    if with_times and time_col not in frame.columns and {prompt_col, output_col} <= set(frame.columns):
        raise TraceError(
            f"{os.fspath(path)}: has no arrival times (no {time_col} column); a lengths-only "
            f"file only supplies (prompt, output) pairs: in a scenario, give the class an "
            f"'arrival' process next to 'trace' (or use the file as an empirical length "
            f"distribution); in Python, read it with read_lengths()"
        )
    needed = _VIDUR_COLUMNS if with_times else (prompt_col, output_col)
    require_columns(frame, path, "vidur", _VIDUR_COLUMNS, needed)
    prompt = token_column(frame, path, prompt_col)
    output = token_column(frame, path, output_col)
    arrival = None
    if with_times:
        raw = frame[time_col]
        arrival = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(arrival)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            row = int(frame.index[bad]) + 1
            raise TraceError(
                f"{os.fspath(path)}: data row {row} (line {row + 1}), column {time_col}: "
                f"{show_value(raw.iloc[bad])} is not a number; arrival times must be finite seconds"
            )
    return arrival, prompt, output


# --------------------------------------------------------------------------------------------
# JSON Lines format (mooncake)


def _json_count(
    value: Any,
    path: str | os.PathLike[str],
    line_no: int,
    field: str,
    what: str,
) -> float:
    # bool is an int subclass in Python; true/false in a count field is a broken file.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise TraceError(
            f"{os.fspath(path)}: line {line_no}, field {field}: {show_value(value)} is not a number; {what}"
        )
    if value < 0:
        raise TraceError(
            f"{os.fspath(path)}: line {line_no}, field {field}: negative value {show_value(value)}; {what}"
        )
    if value >= _MAX_TOKENS:
        # Also keeps float() and int64 conversions of arbitrary-precision JSON ints safe.
        raise TraceError(f"{os.fspath(path)}: line {line_no}, field {field}: {show_value(value)} is too large; {what}")
    return value


def _read_mooncake(
    path: str | os.PathLike[str],
    *,
    with_times: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, list[tuple[int, ...]] | None]:
    shown = os.fspath(path)
    time_field, prompt_field, output_field = _MOONCAKE_FIELDS
    needed = _MOONCAKE_FIELDS if with_times else (prompt_field, output_field)
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    hashes: list[tuple[int, ...]] = []
    hash_lines: list[int] = []  # line numbers of rows with / without hash_ids, for messages
    no_hash_lines: list[int] = []
    count_rule = "token counts must be whole numbers >= 0"
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    # ValueError besides JSONDecodeError: integers beyond Python's digit limit.
                    if isinstance(exc, json.JSONDecodeError):
                        msg = f"{exc.msg} at column {exc.colno}"
                    elif isinstance(exc, RecursionError):
                        msg = "nested too deeply"
                    else:
                        msg = "number too long"
                    raise TraceError(
                        f"{shown}: line {line_no}: malformed JSON ({msg}); each line must be one JSON object"
                    ) from None
                if not isinstance(record, dict):
                    raise TraceError(f"{shown}: line {line_no}: expected a JSON object, got {type(record).__name__}")
                missing = [f for f in needed if f not in record]
                if missing:
                    raise TraceError(
                        f"{shown}: line {line_no}: missing field(s) {', '.join(missing)}; "
                        f"a mooncake trace has fields {', '.join(_MOONCAKE_FIELDS)} "
                        f"and optionally {_MOONCAKE_HASHES}"
                    )
                for field, store in ((prompt_field, prompts), (output_field, outputs)):
                    v = _json_count(record[field], path, line_no, field, count_rule)
                    if v != int(v):
                        raise TraceError(
                            f"{shown}: line {line_no}, field {field}: {show_value(v)} is not a whole number; {count_rule}"
                        )
                    store.append(int(v))
                if with_times:
                    times.append(
                        float(
                            _json_count(
                                record[time_field],
                                path,
                                line_no,
                                time_field,
                                "timestamps must be milliseconds >= 0",
                            )
                        )
                    )
                if not with_times:
                    continue
                if _MOONCAKE_HASHES not in record:
                    no_hash_lines.append(line_no)
                    continue
                ids = record[_MOONCAKE_HASHES]
                if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
                    raise TraceError(
                        f"{shown}: line {line_no}, field {_MOONCAKE_HASHES}: {show_value(ids)} is not "
                        f"a list of integers; hash_ids must be a JSON list of integer block ids"
                    )
                hash_lines.append(line_no)
                hashes.append(tuple(ids))
    except UnicodeDecodeError as exc:
        raise TraceError(f"{shown}: not UTF-8 text (byte {exc.start} cannot be decoded); JSON Lines expected") from None
    except OSError as exc:
        raise TraceError(f"{shown}: cannot read: {_one_line(exc.strerror or str(exc))}") from None

    if not prompts:
        raise TraceError(f"{shown}: no data lines (file is empty or blank); one JSON object per line expected")
    prompt = _clamp_tokens(np.array(prompts, dtype=np.int64))
    output = _clamp_tokens(np.array(outputs, dtype=np.int64))
    if not with_times:
        return None, prompt, output, None
    if hash_lines and no_hash_lines:
        # A partial set would silently mix "no prefix information" with "no reuse".
        raise TraceError(
            f"{shown}: line {no_hash_lines[0]}: missing field {_MOONCAKE_HASHES} although line "
            f"{hash_lines[0]} has it; give hash_ids on every line or on none"
        )
    arrival = np.array(times, dtype=np.float64) / 1000.0  # published in milliseconds
    return arrival, prompt, output, (hashes if hash_lines else None)
