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

from sim.config import ClosedArrival, EmpiricalLength, RequestClass, Scenario, TraceSource
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


def load_trace(
    src: TraceSource,
    base_dir: Path,
    window_s: float | None = None,
    limit: int | None = None,
    rng: np.random.Generator | None = None,
) -> Trace:
    """A class's trace, read (or, for servegen, generated from ``rng``) and rescaled."""
    path = resolve_path(src.path, base_dir)
    span = None
    if src.format == "servegen" and window_s is not None:
        # Generate what the run keeps: its window in the trace's own time (time_scale multiplies
        # the gaps, so the run's window holds window_s / time_scale seconds of the trace).
        span = window_s / (src.time_scale or 1.0) if src.target_rate is None else None
    trace = read_trace(
        path,
        src.format,
        src.max_requests,
        src.hash_block_tokens,
        src.read_options(),
        start_s=src.start_s,
        rng=rng,
        duration_s=span,
        rate_scale=src.rate_scale or 1.0,
    )
    if src.target_rate is not None and len(trace) and trace.duration_s <= 0:
        raise TraceError(
            f"{path}: cannot rescale to target_rate {src.target_rate:g}: the mean rate is undefined because all "
            f"{len(trace)} request(s) arrive at the same time (span 0 s); use time_scale, or a trace with at "
            f"least two distinct arrival times"
        )
    if src.time_scale is not None or src.target_rate is not None:
        trace = rescale(trace, time_scale=src.time_scale, target_rate=src.target_rate, window_s=window_s, limit=limit)
    return trace


@dataclass(frozen=True)
class Pairs:
    """A trace's requests without their arrival times: lengths, prefix hash ids (or None) and
    the conversation each request is a turn of (or None), in file order."""

    prompt: np.ndarray
    output: np.ndarray
    prefix: tuple | list | None = None
    block_tokens: int | None = None
    session: np.ndarray | None = None


def load_pairs(src: TraceSource, base_dir: Path, rng: np.random.Generator | None = None) -> Pairs:
    """A trace's (prompt, output) pairs for resampling under a synthetic arrival process.

    Arrival times are not needed, so they are not read (lengths-only Vidur files work), except
    for Mooncake, whose prefix hash ids are only read with the whole trace (read_trace) and are
    resampled together with their lengths, and ServeGen, whose lengths are generated with its
    arrivals. A conversation file (sharegpt) gives its turns with their sessions and prefix hash
    ids. ``max_requests`` keeps the first N rows in file order (Mooncake: the first N by arrival
    time)."""
    from sim.workload.readers import read_records

    path = resolve_path(src.path, base_dir)
    if src.format in ("mooncake", "servegen"):
        trace = read_trace(path, src.format, src.max_requests, src.hash_block_tokens, start_s=src.start_s, rng=rng)
        return Pairs(trace.prompt_tokens, trace.output_tokens, trace.prefix_hashes, trace.hash_block_tokens)
    if src.format in ("azure", "vidur"):
        prompt, output = read_lengths(path, src.format)
        prefix = block = session = None
    else:
        rec = read_records(path, src.format, src.read_options(), with_times=False)
        prompt, output = rec.prompt_tokens, rec.output_tokens
        prefix, block, session = rec.prefix_hashes, rec.hash_block_tokens, rec.session
    if src.max_requests is not None:
        k = src.max_requests
        prompt, output = prompt[:k], output[:k]
        prefix = prefix[:k] if prefix is not None else None
        session = session[:k] if session is not None else None
    return Pairs(prompt, output, prefix, block, session)


def _empirical_column(spec, base_dir: Path, column: int) -> np.ndarray | None:
    if isinstance(spec, EmpiricalLength) and spec.trace is not None:
        pairs = load_pairs(spec.trace, base_dir)
        return pairs.prompt if column == 0 else pairs.output
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


class ClosedStream:
    """A closed-loop class's requests: drawn as its users ask for them (sessions of turns), with
    their think times. Arrival times are not known before the run: each follows an answer."""

    def __init__(self, cls: RequestClass, rng: np.random.Generator, base_dir: Path, limit: int | None):
        spec = cls.arrival
        assert isinstance(spec, ClosedArrival)
        self.spec = spec
        self.limit = limit
        self.hash_block_tokens: int | None = None
        self._rng = rng
        self._think_rng = rng.spawn(1)[0]
        self._queue: list = []  # drawn requests not yet handed out: (prompt, output, hashes)
        self._sessions: list[np.ndarray] | None = None
        self._pairs: Pairs | None = None
        self._cls = cls
        self._base_dir = base_dir
        if cls.trace is not None:
            pairs = load_pairs(cls.trace, base_dir, rng)
            self._pairs = pairs
            self.hash_block_tokens = pairs.block_tokens
            if pairs.session is not None:
                # Conversations in file order, each a list of its turns in order.
                order = np.argsort(pairs.session, kind="stable")
                cuts = np.flatnonzero(np.diff(pairs.session[order])) + 1
                self._sessions = np.split(order, cuts)[::-1]  # popped from the end
        self.arrival_s = np.empty(0)  # not known before the run

    def __len__(self) -> int:
        return 0

    @property
    def prefix_hashes(self):
        return self._pairs.prefix if self._pairs is not None else None

    def next_session(self) -> list[tuple[int, int, tuple | None]] | None:
        """The next user session's turns: (prompt, output, prefix hash ids); None when a finite
        conversation file has no conversation left."""
        pairs = self._pairs
        if self._sessions is not None:
            if not self._sessions:
                return None
            idx = self._sessions.pop()
            prefix = pairs.prefix
            return [
                (int(pairs.prompt[i]), int(pairs.output[i]), prefix[i] if prefix is not None else None)
                for i in idx.tolist()
            ]
        if not self._queue:
            self._draw(256)
        return [self._queue.pop()]

    def _draw(self, n: int) -> None:
        rng = self._rng
        pairs = self._pairs
        if pairs is not None:
            pick = rng.integers(0, len(pairs.prompt), n).tolist()
            prefix = pairs.prefix
            batch = [
                (int(pairs.prompt[i]), int(pairs.output[i]), prefix[i] if prefix is not None else None) for i in pick
            ]
        else:
            cls, base = self._cls, self._base_dir
            prompt = sample_lengths(cls.prompt_tokens, rng, n, _empirical_column(cls.prompt_tokens, base, 0))
            output = sample_lengths(cls.output_tokens, rng, n, _empirical_column(cls.output_tokens, base, 1))
            batch = [(int(p), int(o), None) for p, o in zip(prompt.tolist(), output.tolist())]
        self._queue = batch[::-1]

    def think_s(self) -> float:
        mean = self.spec.think_time_s
        if mean <= 0 or self.spec.think == "fixed":
            return mean
        return float(self._think_rng.exponential(mean))


def build_stream(scenario: Scenario, cls: RequestClass, rng: np.random.Generator, base_dir: Path) -> Stream:
    duration, limit = scenario.duration_s, scenario.num_requests
    if isinstance(cls.arrival, ClosedArrival):
        return ClosedStream(cls, rng, base_dir, limit)
    if cls.trace is not None:
        if cls.arrival is None:
            trace = load_trace(cls.trace, base_dir, duration, limit, rng)
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
        pairs = load_pairs(cls.trace, base_dir, rng)
        times = class_arrivals(cls, rng, duration, limit)
        pick = rng.integers(0, len(pairs.prompt), len(times))
        hashes = None
        if pairs.prefix is not None:
            hashes = tuple(pairs.prefix[i] for i in pick)
        return Stream(times, pairs.prompt[pick], pairs.output[pick], hashes, pairs.block_tokens)
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
