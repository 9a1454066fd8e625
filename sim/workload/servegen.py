"""ServeGen workloads (Xiang et al., "ServeGen: Workload Characterization and Generation of
Large Language Model Serving in Production", arXiv:2505.09999, 2025; data: GitHub
``alibaba/ServeGen``, Apache-2.0).

ServeGen does not publish requests; it publishes, per client of Alibaba Cloud Model Studio, a
day of 10-minute windows (``chunk-<i>-trace.csv``: window start, mean rate, coefficient of
variation of inter-arrival times, fitted distribution family and its parameters) and token
length distributions per 6-hour window (``chunk-<i>-dataset.json``: ``{value: probability}``
dictionaries written as Python literals). A request stream is therefore *generated*, seeded,
from these:

* arrivals: in each window, a renewal process with the window's mean rate and coefficient of
  variation, in its fitted family (``Gamma``, ``Weibull``; ``Exponential`` or no family is
  Poisson). The family's parameters are re-derived from the rate and CV rather than taken from
  the stored fit, so that each window carries exactly its recorded mean rate (the stored fit
  parameters describe the gaps and do not always reproduce it);
* lengths: drawn from the length distributions of the 6-hour window the arrival falls in,
  prompt and output independently (the data gives marginals, not a joint distribution). For
  multimodal clients the prompt is the sum of text, image, audio and video tokens.

The path names one client's ``chunk-<i>-trace.csv`` (its ``chunk-<i>-dataset.json`` beside it)
or a folder, whose clients' streams are merged.
"""

from __future__ import annotations

import ast
import math
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from sim.errors import TraceError

WINDOW_S = 600.0
DAY_S = 86_400.0
_PROMPT_FIELDS = ("input_tokens", "text_tokens", "image_tokens", "audio_tokens", "video_tokens")


@dataclass(frozen=True)
class _Window:
    start_s: float
    rate: float
    cv: float
    family: str


@dataclass(frozen=True)
class _Client:
    name: str
    windows: list[_Window]
    lengths: list[tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]]
    """(window start, {field: (values, probabilities)}), by start."""


def _read_windows(path: pathlib.Path) -> list[_Window]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            start, rate, cv = float(parts[0]), float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise TraceError(
                f"{path}: line {n}: expected 'window_start_s, rate, cv, family, arg1, arg2' (a ServeGen "
                f"chunk-<i>-trace.csv), got {line[:60]!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(rate) and rate >= 0 and math.isfinite(cv) and cv >= 0):
            raise TraceError(f"{path}: line {n}: window start, rate and cv must be finite numbers >= 0")
        family = parts[3].strip() if len(parts) > 3 else ""
        out.append(_Window(start, rate, cv, family))
    if not out:
        raise TraceError(f"{path}: no windows")
    # The published files repeat some windows; keep the first of each start.
    seen: dict[float, _Window] = {}
    for w in out:
        seen.setdefault(w.start_s, w)
    return [seen[k] for k in sorted(seen)]


def _read_lengths(path: pathlib.Path) -> list[tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraceError(f"{path}: not found (a ServeGen client's dataset file sits beside its trace file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TraceError(f"{path}: cannot read as JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise TraceError(f"{path}: expected an object keyed by window start (seconds)")
    out = []
    for key, fields in data.items():
        try:
            start = float(key)
        except ValueError:
            raise TraceError(f"{path}: key {key!r} is not a window start in seconds") from None
        pmfs = {}
        for name, text in (fields or {}).items():
            if not (name in _PROMPT_FIELDS or name == "output_tokens"):
                continue
            try:
                pmf = ast.literal_eval(text) if isinstance(text, str) else text
                values = np.array([float(v) for v in pmf], np.float64)
                probs = np.array([float(p) for p in pmf.values()], np.float64)
            except (ValueError, SyntaxError, AttributeError, TypeError):
                raise TraceError(
                    f"{path}: window {key}, field {name}: not a {{value: probability}} dictionary"
                ) from None
            if len(values) == 0 or probs.sum() <= 0 or (probs < 0).any():
                continue
            pmfs[name] = (values, probs / probs.sum())
        if "output_tokens" not in pmfs or not any(f in pmfs for f in _PROMPT_FIELDS):
            raise TraceError(f"{path}: window {key} has no output_tokens or prompt token distribution")
        out.append((start, pmfs))
    out.sort(key=lambda item: item[0])
    return out


def _clients(path: pathlib.Path) -> list[_Client]:
    if path.is_dir():
        traces = sorted(path.glob("chunk-*-trace.csv"), key=lambda p: int(p.name.split("-")[1]))
        if not traces:
            raise TraceError(f"{path}: no ServeGen client files (chunk-<i>-trace.csv) in this folder")
    else:
        if not path.name.endswith("-trace.csv"):
            raise TraceError(f"{path}: a servegen path is a client's chunk-<i>-trace.csv file or a folder of them")
        traces = [path]
    out = []
    for t in traces:
        dataset = t.with_name(t.name.removesuffix("-trace.csv") + "-dataset.json")
        out.append(_Client(t.name, _read_windows(t), _read_lengths(dataset)))
    return out


def _weibull_shape(cv: float) -> float:
    """Weibull shape k whose coefficient of variation is ``cv``."""
    from scipy.optimize import brentq
    from scipy.special import gammaln

    def f(k: float) -> float:
        return math.exp(gammaln(1 + 2 / k) - 2 * gammaln(1 + 1 / k)) - 1 - cv * cv

    return brentq(f, 0.05, 200.0) if 0.02 < cv < 20 else (1.0 if cv == 0 else (200.0 if cv <= 0.02 else 0.05))


def _gaps(w: _Window, rng: np.random.Generator, k: int) -> np.ndarray:
    mean = 1.0 / w.rate
    cv = w.cv if w.cv > 0 else 1.0
    if w.family == "Gamma":
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, mean / shape, k)
    if w.family == "Weibull":
        from scipy.special import gamma

        shape = _weibull_shape(cv)
        return rng.weibull(shape, k) * (mean / gamma(1 + 1 / shape))
    return rng.exponential(mean, k)


def _window_arrivals(w: _Window, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
    """Arrivals of one window's renewal process within [t0, t1)."""
    if w.rate <= 0 or t1 <= t0:
        return np.empty(0)
    parts, t = [], t0
    chunk = int(w.rate * (t1 - t0) * 1.2) + 8
    while True:
        times = t + np.cumsum(_gaps(w, rng, chunk))
        parts.append(times[times < t1])
        if not times[-1] < t1:
            return np.concatenate(parts)
        t = times[-1]


def _draw(pmf: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    values, probs = pmf
    return values[rng.choice(len(values), size=n, p=probs)]


def generate(
    path: str | os.PathLike[str],
    rng: np.random.Generator,
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_requests: int | None = None,
    rate_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival seconds from ``start_s``, prompt tokens, output tokens) of the clients at
    ``path`` from ``start_s`` into their day for ``duration_s`` seconds (default: to the end of
    the day; the day repeats if the span runs past it), sorted by arrival. ``rate_scale``
    multiplies every window's rate (as many clients alike), keeping its CV."""
    clients = _clients(pathlib.Path(path))
    end = start_s + (duration_s if duration_s is not None else DAY_S - start_s % DAY_S)
    times, prompts, outputs = [], [], []
    for client in clients:
        starts = np.array([w.start_s for w in client.windows])
        t = start_s
        while t < end:
            day0 = math.floor(t / DAY_S) * DAY_S
            idx = int(np.searchsorted(starts, t - day0, side="right")) - 1
            w = client.windows[max(idx, 0)]
            if rate_scale != 1.0:
                w = _Window(w.start_s, w.rate * rate_scale, w.cv, w.family)
            w_end = day0 + (
                client.windows[idx + 1].start_s if idx + 1 < len(client.windows) else max(DAY_S, w.start_s + WINDOW_S)
            )
            arr = _window_arrivals(w, rng, t, min(w_end, end))
            if len(arr):
                lengths = _lengths_at(client, (t - day0))
                prompt = np.zeros(len(arr))
                for field in _PROMPT_FIELDS:
                    if field in lengths:
                        prompt += _draw(lengths[field], rng, len(arr))
                times.append(arr)
                prompts.append(prompt)
                outputs.append(_draw(lengths["output_tokens"], rng, len(arr)))
            t = min(w_end, end)
    if not times:
        raise TraceError(
            f"{os.fspath(path)}: the clients send no request between {start_s:g} s and {end:g} s of their day"
        )
    arrival = np.concatenate(times)
    order = np.argsort(arrival, kind="stable")
    if max_requests is not None:
        order = order[:max_requests]
    prompt = np.maximum(np.rint(np.concatenate(prompts)[order]), 1).astype(np.int64)
    output = np.maximum(np.rint(np.concatenate(outputs)[order]), 1).astype(np.int64)
    return arrival[order] - start_s, prompt, output


def _lengths_at(client: _Client, t_day: float) -> dict:
    chosen = client.lengths[0][1]
    for start, pmfs in client.lengths:
        if start <= t_day:
            chosen = pmfs
    return chosen
