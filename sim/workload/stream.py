"""A request class's stream for one replication: arrival times and lengths as arrays.

Synthetic classes draw arrivals and lengths from their own generators; trace classes replay a
published trace (optionally rescaled), or, when an arrival process is also given, resample the
trace's (prompt, output) pairs jointly under synthetic arrivals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config import EmpiricalLength, RequestClass, Scenario, TraceSource
from sim.errors import ConfigError
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


def resolve_path(path: str, base_dir: Path) -> Path:
    if path.startswith("builtin:"):
        return sample_path(path.removeprefix("builtin:"))
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def load_trace(src: TraceSource, base_dir: Path) -> Trace:
    trace = read_trace(resolve_path(src.path, base_dir), src.format, src.max_requests, src.hash_block_tokens)
    if src.time_scale is not None or src.target_rate is not None:
        trace = rescale(trace, time_scale=src.time_scale, target_rate=src.target_rate)
    return trace


def _empirical_column(spec, base_dir: Path, column: int) -> np.ndarray | None:
    if isinstance(spec, EmpiricalLength) and spec.trace is not None:
        src = spec.trace
        return read_lengths(resolve_path(src.path, base_dir), src.format)[column]
    return None


def build_stream(scenario: Scenario, cls: RequestClass, rng: np.random.Generator, base_dir: Path) -> Stream:
    duration, limit = scenario.duration_s, scenario.num_requests
    if cls.trace is not None:
        trace = load_trace(cls.trace, base_dir)
        if cls.arrival is None:
            keep = np.ones(len(trace), dtype=bool)
            if duration is not None:
                keep &= trace.arrival_s < duration
            idx = np.flatnonzero(keep)
            if limit is not None:
                idx = idx[:limit]
            hashes = None
            if trace.prefix_hashes is not None:
                hashes = tuple(trace.prefix_hashes[i] for i in idx)
            return Stream(trace.arrival_s[idx], trace.prompt_tokens[idx], trace.output_tokens[idx], hashes, trace.hash_block_tokens)
        times = arrival_times(cls.arrival, rng, duration, limit)
        pick = rng.integers(0, len(trace), len(times))
        hashes = None
        if trace.prefix_hashes is not None:
            hashes = tuple(trace.prefix_hashes[i] for i in pick)
        return Stream(times, trace.prompt_tokens[pick], trace.output_tokens[pick], hashes, trace.hash_block_tokens)
    times = arrival_times(cls.arrival, rng, duration, limit)
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
