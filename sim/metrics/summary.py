"""Summaries: throughput, goodput, latency percentiles with confidence intervals, cost.

The measurement window of a replication is [warmup_s, last arrival]. Throughput counts the
completions inside it; latency percentiles cover requests that arrived inside it and finished.
With K seeded replications each statistic is computed per replication, and the summary gives
the mean and a two-sided 95 % Student-t confidence interval across them (none for K = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sim.config import SLO, Scenario

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s", "queue_s", "max_itl_s")


@dataclass(frozen=True)
class Estimate:
    """Mean over replications with the 95 % CI half-width (NaN with one replication)."""

    mean: float
    half_width: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Estimate:
        arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
        if len(arr) == 0:
            return cls(math.nan, math.nan, 0)
        if len(arr) == 1:
            return cls(float(arr[0]), math.nan, 1)
        hw = stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr))
        return cls(float(arr.mean()), float(hw), len(arr))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def meets_slo(df: pd.DataFrame, slo: SLO | None) -> pd.Series:
    """Per request: finished and within every per-request target of the SLO."""
    ok = df["finish_s"] >= 0
    if slo is None:
        return ok
    if slo.ttft_s is not None:
        ok &= df["ttft_s"] <= slo.ttft_s
    if slo.tpot_s is not None:
        ok &= df["tpot_s"].fillna(0) <= slo.tpot_s
    if slo.e2e_s is not None:
        ok &= df["e2e_s"] <= slo.e2e_s
    return ok


def _replication_stats(
    df: pd.DataFrame,
    window: tuple[float, float],
    slo: SLO | None,
    gpu_hours: float,
    fleet_cost_usd: float,
    attributed_price: pd.Series,
) -> dict[str, float]:
    t0, t1 = window
    span = max(t1 - t0, 1e-12)
    arrived = df[(df["arrival_s"] >= t0) & (df["arrival_s"] <= t1)]
    done_in = df[(df["finish_s"] >= t0) & (df["finish_s"] <= t1)]
    finished = arrived[arrived["finish_s"] >= 0]
    out: dict[str, float] = {
        "arrivals": float(len(arrived)),
        "finished": float(len(finished)),
        "rejected": float((arrived["status"] == "rejected").sum()),
        "arrival_rate": len(arrived) / span,
        "throughput_rps": len(done_in) / span,
        "output_tokens_per_s": float(done_in["output_tokens"].sum()) / span,
        "input_tokens_per_s": float(done_in["prompt_tokens"].sum()) / span,
        # Goodput: requests that arrived in the window and met every SLO target (DistServe's
        # definition); rejected and unfinished requests count against it.
        "goodput_rps": float(meets_slo(arrived, slo).sum()) / span,
        "slo_attainment": float(meets_slo(arrived, slo).mean()) if len(arrived) else math.nan,
        "rejected_fraction": float((arrived["status"] == "rejected").mean()) if len(arrived) else math.nan,
        "admitted_rate": float((arrived["status"] != "rejected").sum()) / span,
        "preemptions_per_request": float(arrived["preemptions"].mean()) if len(arrived) else math.nan,
        "prefix_hit_rate": float(arrived["cached_tokens"].sum() / max(1, arrived["prompt_tokens"].sum())),
        "gpu_hours": gpu_hours,
        "cost_usd": fleet_cost_usd,
    }
    out_tokens = float(done_in["output_tokens"].sum())
    out["cost_per_1m_output_tokens_usd"] = fleet_cost_usd / out_tokens * 1e6 if out_tokens else math.nan
    price = attributed_price.loc[finished.index] if len(finished) else attributed_price.iloc[:0]
    out["request_cost_usd_mean"] = float((finished["gpu_s"] / 3600 * price).mean()) if len(finished) else math.nan
    percentiles = PERCENTILES if slo is None or slo.percentile in PERCENTILES else (*PERCENTILES, slo.percentile)
    for metric in LATENCY_METRICS:
        vals = finished[metric].dropna().to_numpy()
        for p in percentiles:
            out[f"{metric}_p{p:g}"] = float(np.percentile(vals, p)) if len(vals) else math.nan
        out[f"{metric}_mean"] = float(vals.mean()) if len(vals) else math.nan
    return out


def summarize(
    scenario: Scenario,
    requests: pd.DataFrame,
    replicas: pd.DataFrame,
    windows: list[tuple[float, float]],
    prices: dict[str, float],
) -> dict:
    """Summary dict: per class and overall, each statistic a mean with a 95 % CI.

    ``requests`` and ``replicas`` carry a ``replication`` column; ``windows`` holds each
    replication's measurement window; ``prices`` the $/GPU-hour of each pool.
    """
    class_pool = {c.name: c.pool for c in scenario.classes}
    groups: dict[str, list[dict[str, float]]] = {}
    for rep, (t0, t1) in enumerate(windows):
        rdf = requests[requests["replication"] == rep]
        reps = replicas[replicas["replication"] == rep]
        hours_by_pool = reps.groupby("pool", observed=True)["num_gpus"].sum() * (t1 - t0) / 3600
        price = rdf["class"].map(lambda c: prices[class_pool[c]]).astype(float)
        for cls in scenario.classes:
            cdf = rdf[rdf["class"] == cls.name]
            # A class's fleet cost is its pool's cost shared by the pool's classes' GPU time.
            pool_hours = float(hours_by_pool.get(cls.pool, 0.0))
            pool_gpu_s = rdf.loc[rdf["class"].map(class_pool) == cls.pool, "gpu_s"].sum()
            share = cdf["gpu_s"].sum() / pool_gpu_s if pool_gpu_s > 0 else 0.0
            hours = pool_hours * share
            groups.setdefault(cls.name, []).append(
                _replication_stats(cdf, (t0, t1), scenario.slo_for(cls), hours, hours * prices[cls.pool], price)
            )
        if len(scenario.classes) > 1:
            total_hours = float(hours_by_pool.sum())
            cost = float(sum(hours_by_pool.get(p, 0.0) * prices[p] for p in prices))
            groups.setdefault("all", []).append(
                _replication_stats(rdf, (t0, t1), scenario.slo, total_hours, cost, price)
            )
    result: dict = {"replications": len(windows), "classes": {}}
    for name, rows in groups.items():
        keys = rows[0].keys()
        result["classes"][name] = {k: Estimate.of([r[k] for r in rows]).as_dict() for k in keys}
    # Flag overload: completions falling well short of admitted arrivals in the window
    # (rejected requests are reported separately, not as overload).
    for stats_ in result["classes"].values():
        adm, thr = stats_["admitted_rate"]["mean"], stats_["throughput_rps"]["mean"]
        stats_["overloaded"] = bool(adm > 0 and thr < 0.95 * adm)
    result["slo"] = {
        c.name: (scenario.slo_for(c).model_dump() if scenario.slo_for(c) else None) for c in scenario.classes
    }
    result["slo_met"] = {c.name: slo_met(result["classes"][c.name], scenario.slo_for(c)) for c in scenario.classes}
    if "all" in result["classes"]:
        result["slo"]["all"] = scenario.slo.model_dump() if scenario.slo else None
        result["slo_met"]["all"] = slo_met(result["classes"]["all"], scenario.slo)
    return result


def slo_met(stats_: dict, slo: SLO | None) -> bool | None:
    """Whether the SLO's percentile of every targeted metric is within its target (mean
    over replications; the planner uses the CI to decide close calls)."""
    if slo is None:
        return None
    # Rejected requests never meet a target: more of them than the percentile tolerates
    # breaks the SLO whatever the latencies of the rest.
    if stats_["rejected_fraction"]["mean"] > 1 - slo.percentile / 100:
        return False
    p = f"{slo.percentile:g}"
    for metric, target in (("ttft_s", slo.ttft_s), ("tpot_s", slo.tpot_s), ("e2e_s", slo.e2e_s)):
        if target is None:
            continue
        value = stats_[f"{metric}_p{p}"]["mean"]
        if not (value <= target):
            return False
    return True
