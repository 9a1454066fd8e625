"""A request class's stream for one replication: arrival times and lengths as arrays.

Synthetic classes draw arrivals and lengths from their own generators; trace classes replay a
published trace (optionally rescaled), or, when an arrival process is also given, resample the
trace's (prompt, output) pairs jointly under synthetic arrivals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config import EmpiricalLength, RequestClass, Scenario, TraceSource
from sim.errors import ConfigError, TraceError
from sim.workload.arrivals import arrival_times
from sim.workload.lengths import sample_lengths
from sim.workload.traces import Trace, read_lengths, read_trace, rescale, sample_path


@dataclass(frozen=True)
class Stream:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: tuple | None = None
    hash_block_tokens: int | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)


SHARED_ENV = "SERVESIM_SHARED"
"""Environment variable naming the shared data folder that ``shared:`` trace paths live in."""


def resolve_path(path: str, base_dir: Path) -> Path:
    """A trace path: ``builtin:NAME`` (a sample shipped with servesim), ``shared:REL`` (REL
    inside the shared data folder: ``$SERVESIM_SHARED``, else the first folder named ``shared``
    beside the scenario's folder or one of its parents), or a path (relative to the scenario)."""
    if path.startswith("builtin:"):
        return sample_path(path.removeprefix("builtin:"))
    if path.startswith("shared:"):
        rel = path.removeprefix("shared:").lstrip("/")
        roots = [Path(os.environ[SHARED_ENV])] if os.environ.get(SHARED_ENV) else []
        here = Path(base_dir).resolve()
        roots += [d / "shared" for d in (here, *here.parents)]
        for root in roots:
            if (root / rel).exists():
                return root / rel
        return roots[0] / rel if os.environ.get(SHARED_ENV) else here / "shared" / rel
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def trace_sources(scenario: Scenario) -> list[tuple[str, TraceSource]]:
    """Every trace file a scenario reads, with the field path that names it."""
    found = []
    for i, cls in enumerate(scenario.classes):
        if cls.trace is not None:
            found.append((f"classes.{i}.trace", cls.trace))
        for name in ("prompt_tokens", "output_tokens"):
            spec = getattr(cls, name)
            if isinstance(spec, EmpiricalLength) and spec.trace is not None:
                found.append((f"classes.{i}.{name}.trace", spec.trace))
    return found


def check_trace_files(scenario: Scenario, base_dir: Path) -> None:
    """Raise ConfigError (one line, naming the field) if a trace file of the scenario does not
    exist or is not a regular file. Contents are checked when the trace is read."""
    for where, src in trace_sources(scenario):
        try:
            path = resolve_path(src.path, base_dir)
        except TraceError as exc:  # builtin:NAME that is not shipped
            raise ConfigError(f"{where}.path: {exc}") from None
        if not path.exists():
            raise ConfigError(f"{where}.path: trace file not found: {path}")
        if not path.is_file():
            raise ConfigError(f"{where}.path: not a regular file (a trace file is expected): {path}")


def read_trace_files(scenario: Scenario, base_dir: Path) -> None:
    """Read every trace the scenario names the way a run reads it (the whole trace, its
    lengths only under a synthetic arrival process, or an image trace), so that a file with the
    wrong columns or values fails now, with the run's message (``validate-scenario``)."""
    from sim.workload.traces import DIFFUSION_TRACE_FORMATS, read_diffusion_trace

    for cls in scenario.classes:
        src = cls.trace
        if src is not None:
            if src.format in DIFFUSION_TRACE_FORMATS:
                read_diffusion_trace(resolve_path(src.path, base_dir), src.format, src.max_requests)
            elif cls.arrival is not None:
                load_pairs(src, base_dir)
            else:
                load_trace(src, base_dir)
        for name in ("prompt_tokens", "output_tokens"):
            spec = getattr(cls, name)
            if isinstance(spec, EmpiricalLength) and spec.trace is not None:
                load_pairs(spec.trace, base_dir)


def load_trace(src: TraceSource, base_dir: Path, window_s: float | None = None, limit: int | None = None) -> Trace:
    path = resolve_path(src.path, base_dir)
    trace = read_trace(path, src.format, src.max_requests, src.hash_block_tokens)
    if src.target_rate is not None and len(trace) and trace.duration_s <= 0:
        raise TraceError(
            f"{path}: cannot rescale to target_rate {src.target_rate:g}: the mean rate is undefined because all "
            f"{len(trace)} request(s) arrive at the same time (span 0 s); use time_scale, or a trace with at "
            f"least two distinct arrival times"
        )
    if src.time_scale is not None or src.target_rate is not None:
        trace = rescale(trace, time_scale=src.time_scale, target_rate=src.target_rate, window_s=window_s, limit=limit)
    return trace


def load_pairs(src: TraceSource, base_dir: Path) -> tuple[np.ndarray, np.ndarray, tuple | None, int | None]:
    """A trace's (prompt, output) pairs for resampling under a synthetic arrival process:
    (prompt, output, prefix hashes or None, tokens per hash id or None).

    Arrival times are not needed, so they are not read (lengths-only Vidur files work), except
    for Mooncake, whose prefix hash ids are only read with the whole trace (read_trace) and are
    resampled together with their lengths. ``max_requests`` keeps the first N rows in file order
    (Mooncake: the first N by arrival time)."""
    path = resolve_path(src.path, base_dir)
    if src.format == "mooncake":
        trace = read_trace(path, src.format, src.max_requests, src.hash_block_tokens)
        return trace.prompt_tokens, trace.output_tokens, trace.prefix_hashes, trace.hash_block_tokens
    prompt, output = read_lengths(path, src.format)
    if src.max_requests is not None:
        prompt, output = prompt[: src.max_requests], output[: src.max_requests]
    return prompt, output, None, None


def _empirical_column(spec, base_dir: Path, column: int) -> np.ndarray | None:
    if isinstance(spec, EmpiricalLength) and spec.trace is not None:
        return load_pairs(spec.trace, base_dir)[column]
    return None


def class_arrivals(
    cls: RequestClass, rng: np.random.Generator, duration: float | None, limit: int | None
) -> np.ndarray:
    times = arrival_times(cls.arrival, rng, duration, limit)
    if len(times) and not np.isfinite(times[-1]):
        raise ConfigError(
            f"classes.{cls.name}: arrival times overflow (the arrival rate is too small for num_requests arrivals)"
        )
    return times


def build_stream(scenario: Scenario, cls: RequestClass, rng: np.random.Generator, base_dir: Path) -> Stream:
    duration, limit = scenario.duration_s, scenario.num_requests
    if cls.trace is not None:
        if cls.arrival is None:
            trace = load_trace(cls.trace, base_dir, duration, limit)
            keep = np.ones(len(trace), dtype=bool)
            if duration is not None:
                keep &= trace.arrival_s < duration
            idx = np.flatnonzero(keep)
            if limit is not None:
                idx = idx[:limit]
            hashes = None
            if trace.prefix_hashes is not None:
                hashes = tuple(trace.prefix_hashes[i] for i in idx)
            return Stream(
                trace.arrival_s[idx],
                trace.prompt_tokens[idx],
                trace.output_tokens[idx],
                hashes,
                trace.hash_block_tokens,
            )
        # With an arrival process, the trace only supplies (prompt, output) pairs, resampled jointly.
        prompt, output, prefix, block_tokens = load_pairs(cls.trace, base_dir)
        times = class_arrivals(cls, rng, duration, limit)
        pick = rng.integers(0, len(prompt), len(times))
        hashes = None
        if prefix is not None:
            hashes = tuple(prefix[i] for i in pick)
        return Stream(times, prompt[pick], output[pick], hashes, block_tokens)
    times = class_arrivals(cls, rng, duration, limit)
    n = len(times)
    prompt = sample_lengths(cls.prompt_tokens, rng, n, _empirical_column(cls.prompt_tokens, base_dir, 0))
    output = sample_lengths(cls.output_tokens, rng, n, _empirical_column(cls.output_tokens, base_dir, 1))
    if n == 0:
        raise ConfigError(f"classes.{cls.name}: the arrival process produced no requests in the run's duration")
    return Stream(times, prompt, output)


def block_keys(hash_ids, num_prompt_tokens: int, block_size: int, hash_block_tokens: int) -> tuple[int, ...]:
    """Content keys of a prompt's full KV blocks from a trace's prefix hash ids.

    A block's content is fixed by the prefix up to its last token; the hash id of the trace
    chunk holding that token covers that whole prefix, so (that id, block index) identifies it.
    """
    n_full = num_prompt_tokens // block_size
    keys = []
    for j in range(n_full):
        chunk = ((j + 1) * block_size - 1) // hash_block_tokens
        if chunk >= len(hash_ids):
            break
        keys.append((hash_ids[chunk] << 20) | j)
    return tuple(keys)
