"""Inter-token latency (ITL) as vLLM's serving benchmark defines it: every gap between two
consecutive output tokens of a request, pooled over all requests of a class, and its mean and
percentiles over that pool (``vllm bench serve``'s mean/median/p99 ITL). A request's first
token has no gap (it is TTFT); a gap after a preemption includes the time spent waiting and
recomputing.

An engine produces billions of tokens in a long run, so the gaps are not kept one by one. They
go into a histogram per class whose bins are 0.1 % wide on a log scale from 1 µs to 10,000 s
(a percentile read from it is within 0.05 % of the exact one), plus an exact running sum for
the mean. A decode span adds its steps in closed form: their durations are affine in the step
index (piece by piece for a roofline's envelope), so the steps falling in each bin are counted
without visiting them.
"""

from __future__ import annotations

import math
import struct

import numpy as np

LOW_S = 1e-6
"""Lower edge of the first bin; shorter gaps count in it."""
RATIO = 1.001
"""Each bin's upper edge over its lower edge."""
NUM_BINS = math.ceil(math.log(1e4 / LOW_S) / math.log(RATIO))
"""Up to 10,000 s; longer gaps count in the last bin."""
_INV_LOG = 1.0 / math.log(RATIO)
_LOG_LOW = math.log(LOW_S)
_LAST = NUM_BINS - 1


def bin_of(gap_s: float) -> int:
    """The bin a gap of ``gap_s`` seconds falls in."""
    if gap_s <= LOW_S:
        return 0
    b = int((math.log(gap_s) - _LOG_LOW) * _INV_LOG)
    return b if b < _LAST else _LAST


def edge(b: int) -> float:
    """Lower edge of bin ``b``, in seconds."""
    return math.exp(_LOG_LOW + b / _INV_LOG)


class ITLHistogram:
    """Gaps of each class: ``counts[class, bin]`` and the exact ``total_s[class]``."""

    def __init__(self, num_classes: int):
        self.counts = np.zeros((num_classes, NUM_BINS))
        self.total_s = np.zeros(num_classes)

    def add(self, key: int, gap_s: float, weight: float = 1.0) -> None:
        self.counts[key, bin_of(gap_s)] += weight
        self.total_s[key] += gap_s * weight

    def add_steps(self, key: int, first_s: float, slope_s: float, n: int, weight: float) -> None:
        """``weight`` gaps of each of ``n`` steps lasting ``first_s + j * slope_s`` (j = 0..n-1)."""
        if n <= 0 or weight <= 0:
            return
        counts = self.counts[key]
        self.total_s[key] += weight * (n * first_s + slope_s * n * (n - 1) / 2)
        last_s = first_s + slope_s * (n - 1)
        b0, b1 = bin_of(first_s), bin_of(last_s)
        if b0 == b1 or slope_s == 0.0:
            counts[b0] += weight * n
            return
        if b0 > b1:  # a falling sequence: count it from its short end
            b0, b1 = b1, b0
            first_s, slope_s = last_s, -slope_s
        # Steps j with a duration below bin b's upper edge: those with j < (edge - first) / slope.
        below = 0
        for b in range(b0, b1):
            k = min(n, max(below, math.ceil((edge(b + 1) - first_s) / slope_s)))
            counts[b] += weight * (k - below)
            below = k
        counts[b1] += weight * (n - below)

    def add_log(self, log: bytes | bytearray) -> None:
        """Add runs of steps packed as ``RUN`` records (the engine logs them as it goes, and
        they are binned here at once, off its hot path)."""
        runs = np.frombuffer(log, RUN)
        if not len(runs):
            return
        key, first, slope, n, w = (runs[f] for f in RUN.names)
        last = first + slope * (n - 1)
        with np.errstate(divide="ignore"):
            b0 = np.clip(((np.log(np.maximum(first, LOW_S)) - _LOG_LOW) * _INV_LOG).astype(np.int64), 0, _LAST)
            b1 = np.clip(((np.log(np.maximum(last, LOW_S)) - _LOG_LOW) * _INV_LOG).astype(np.int64), 0, _LAST)
        one = (b0 == b1) | (slope == 0.0)
        np.add.at(self.counts, (key[one], b0[one]), w[one] * n[one])
        k1, f1, s1, n1, w1 = key[one], first[one], slope[one], n[one], w[one]
        np.add.at(self.total_s, k1, w1 * (n1 * f1 + s1 * n1 * (n1 - 1) / 2))
        # Runs across one bin edge (a span whose steps lengthen a little): the steps below the
        # edge are those j < (edge - first) / slope, counted at once.
        two = ~one & (np.abs(b1 - b0) == 1)
        if two.any():
            k2, f2, s2, n2, w2, lo, hi = key[two], first[two], slope[two], n[two], w[two], b0[two], b1[two]
            np.add.at(self.total_s, k2, w2 * (n2 * f2 + s2 * n2 * (n2 - 1) / 2))
            low = np.minimum(lo, hi)
            cut = np.exp(_LOG_LOW + (low + 1) / _INV_LOG)  # the edge between the two bins
            below = np.clip(np.ceil((cut - f2) / s2), 0, n2)  # steps under the edge, rising
            below = np.where(s2 > 0, below, n2 - below)  # falling: those past it are under it
            np.add.at(self.counts, (k2, low), w2 * below)
            np.add.at(self.counts, (k2, low + 1), w2 * (n2 - below))
        for i in np.flatnonzero(~one & ~two).tolist():  # across several edges: one by one
            self.add_steps(int(key[i]), float(first[i]), float(slope[i]), int(n[i]), float(w[i]))


RUN = np.dtype([("key", "=i4"), ("first_s", "=f8"), ("slope_s", "=f8"), ("n", "=i4"), ("weight", "=f8")])
"""A run of steps as the engine logs it: class, first step's seconds, seconds added per step,
steps, gaps per step (cohort members)."""
pack_run = struct.Struct("=iddid").pack


def summary(counts: np.ndarray, total_s: float, percentiles: tuple[float, ...]) -> dict[str, float]:
    """Mean and percentiles (seconds) of one class's gaps; NaN when it has none. A percentile
    is the geometric middle of the bin where the pooled count reaches it."""
    n = float(counts.sum())
    out = {f"itl_s_p{p:g}": math.nan for p in percentiles}
    out["itl_s_mean"] = math.nan
    if n <= 0:
        return out
    cum = np.cumsum(counts)
    for p in percentiles:
        b = int(np.searchsorted(cum, n * p / 100.0, side="left"))
        b = min(b, NUM_BINS - 1)
        out[f"itl_s_p{p:g}"] = math.sqrt(edge(b) * edge(b + 1))
    out["itl_s_mean"] = total_s / n
    return out
