"""Summaries: throughput, goodput, latency percentiles with confidence intervals, cost.

The measurement window of a replication is [warmup_s, last arrival]. Throughput counts the
requests that arrived inside it and finished, however long after (an overloaded replication,
whose queue keeps growing, counts the completions inside it instead); latency percentiles cover
requests that arrived inside it and finished.
With K seeded replications each statistic is computed per replication, and the summary gives
the mean and a two-sided 95 % Student-t confidence interval across them (none for K = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sim.config import FIRST_OUTPUT_KINDS, PARENT_KINDS, SLO, Scenario

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s", "queue_s", "max_itl_s")
"""Text classes."""
IMAGE_METRICS = ("e2e_s", "queue_s", "forming_s", "preview_s")
"""Image and video classes: end to end, waiting while replicas were busy, waiting for a batch
to fill while a replica was free, and the first preview (when previews are on)."""
PIPELINE_METRICS = ("e2e_s", "queue_s")
METRICS = {
    "text": LATENCY_METRICS,
    "image": IMAGE_METRICS,
    "pipeline": PIPELINE_METRICS,
    # time to the first block, end to end, queue, and each request's tokens per second of generation
    "dllm": ("ttft_s", "e2e_s", "queue_s", "tokens_per_s"),
    # end to end, queue, and when the first row of the image is decoded
    "ar_image": ("e2e_s", "queue_s", "first_chunk_s"),
    # time to first audio, real-time factor (generation time over audio length), end to end, queue
    "audio": ("ttft_s", "rtf", "e2e_s", "queue_s"),
    "hybrid": ("e2e_s", "queue_s"),
}


def t_half_width(values: np.ndarray) -> float:
    """Half-width of the two-sided 95 % Student-t confidence interval of the mean of ``values``
    (replications: independent, roughly normal means); NaN with fewer than two. The one formula
    the summary, the planner and pricing use; each says what NaN means to it."""
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


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
        return cls(float(arr.mean()), t_half_width(arr), len(arr))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def fold_prefill_legs(top: pd.DataFrame, rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``top`` (requests without a parent) with each disaggregated request's prefill leg (a text
    child row of a text request, in ``rows``) added into its ``columns``: the request's whole
    cost. The legs' own rows stay as they are, by pool, for the pools' books."""
    if "parent_id" not in rows or "kind" not in rows:
        return top
    legs = rows[(rows["kind"] == "text") & (rows["parent_id"] >= 0)]
    if not len(legs):
        return top
    parents = (top["kind"] == "text").to_numpy()
    sums = legs.groupby(["replication", "parent_id"])[columns].sum()
    keys = pd.MultiIndex.from_arrays([top.loc[parents, "replication"], top.loc[parents, "request_id"]])
    add = sums.reindex(keys)
    has = add[columns[0]].notna().to_numpy()
    if not has.any():
        return top
    top = top.copy()
    idx = top.index[parents][has]
    top.loc[idx, columns] = top.loc[idx, columns].to_numpy() + add[has].to_numpy()
    return top


def meets_slo(df: pd.DataFrame, slo: SLO | None) -> pd.Series:
    """Per request: finished and within every per-request target of the SLO. TTFT and TPOT
    targets apply to text requests only (an image or a pipeline has no token stream)."""
    ok = df["finish_s"] >= 0
    if slo is None:
        return ok
    text = df["kind"] == "text" if "kind" in df else pd.Series(True, index=df.index)
    first = df["kind"].isin(FIRST_OUTPUT_KINDS) if "kind" in df else text
    if slo.ttft_s is not None and "ttft_s" in df:
        ok &= ~first | (df["ttft_s"] <= slo.ttft_s)
    if slo.tpot_s is not None and "tpot_s" in df:
        ok &= ~text | (df["tpot_s"].fillna(0) <= slo.tpot_s)
    if slo.e2e_s is not None:
        ok &= df["e2e_s"] <= slo.e2e_s
    return ok


OVERLOAD_GROWTH = 0.05
"""Queue growth (seconds of extra wait per second of arrivals) above which a replication is
overloaded. A fleet that serves ``mu`` requests per second while ``lambda > mu`` arrive holds
``(lambda - mu) t`` requests in its queue at time ``t``, and the request arriving then waits
``(lambda - mu) t / mu``: the wait grows at ``lambda/mu - 1`` seconds per second (the fluid
limit of any queue). 0.05 means arrivals exceed what the fleet serves by about 5 %. A stable
queue's wait fluctuates but does not trend, so its growth stays near zero however long its
requests run."""


def queue_growth(df: pd.DataFrame, window: tuple[float, float]) -> float:
    """How fast the wait for service grows over the window, in seconds per second.

    The window is cut into four equal spans of arrival time; each span's median wait is the
    time its admitted requests spent queued before their first scheduling. The growth is the
    rise from the first span's median to the last's, over the 3/4 of the window between their
    middles, and counts only when the medians never fall from one span to the next: a queue
    that builds up rises throughout, while a stable queue's busy periods come and go. Zero when
    a span has no arrivals (too few to tell); infinite when most of the last span was never
    scheduled before the run stopped (a drain timeout). Requests that gave up waiting (a
    deadline) are counted as failed, not here."""
    t0, t1 = window
    if t1 <= t0:
        return 0.0
    status = df["status"].astype(str)
    arrived = df[(df["arrival_s"] >= t0) & (df["arrival_s"] <= t1) & (status != "rejected")]
    if not len(arrived) or "queue_s" not in arrived:
        return 0.0
    wait = arrived["queue_s"].to_numpy(dtype=float)
    # never scheduled: still waiting when the run stopped (wait unbounded), or gave up (a
    # deadline; counted as failed, not here)
    gave_up = (arrived["status"].astype(str) == "failed").to_numpy()
    wait = np.where(np.isnan(wait) & ~gave_up, np.inf, wait)
    keep = ~np.isnan(wait)
    arrived, wait = arrived[keep], wait[keep]
    quarter = np.minimum(((arrived["arrival_s"].to_numpy(dtype=float) - t0) / (t1 - t0) * 4).astype(int), 3)
    medians = []
    for q in range(4):
        w = wait[quarter == q]
        if not len(w):
            return 0.0
        medians.append(float(np.median(w)))
    if any(b < a for a, b in zip(medians, medians[1:], strict=False)):
        return 0.0
    if math.isinf(medians[3]):
        return math.inf  # most of the last span was never served: the queue never drained
    return (medians[3] - medians[0]) / (0.75 * (t1 - t0))


def _replication_stats(
    df: pd.DataFrame,
    window: tuple[float, float],
    slo: SLO | None,
    gpu_hours: float,
    fleet_cost_usd: float,
    kind: str = "text",
) -> dict[str, float]:
    """One replication's statistics for a class (or the whole fleet): ``df`` holds its
    top-level requests (a pipeline's stages are not counted separately)."""
    t0, t1 = window
    span = max(t1 - t0, 1e-12)
    arrived = df[(df["arrival_s"] >= t0) & (df["arrival_s"] <= t1)]
    finished = arrived[arrived["finish_s"] >= 0]
    n = len(arrived)
    status = arrived["status"].astype(str)
    growth = queue_growth(df, window)
    overloaded = growth > OVERLOAD_GROWTH
    # Throughput: a stable fleet serves every request that arrives in the window, however long
    # it runs after the window closes, so its rate is the finished arrivals over the window
    # (counting only completions inside the window would miss the requests still running at
    # its end, a bias that grows with request length). An overloaded fleet cannot keep up: what
    # it delivers is the completions inside the window.
    done_in = df[(df["finish_s"] >= t0) & (df["finish_s"] <= t1)] if overloaded else finished
    out: dict[str, float] = {
        "arrivals": float(n),
        "finished": float(len(finished)),
        "rejected": float((status == "rejected").sum()),
        "failed": float((status == "failed").sum()),
        "arrival_rate": n / span,
        "throughput_rps": len(done_in) / span,
        "queue_growth": growth,
        "overloaded": float(overloaded),
        # Goodput: requests that arrived in the window and met every SLO target (DistServe's
        # definition); rejected, failed and unfinished requests count against it.
        "goodput_rps": float(meets_slo(arrived, slo).sum()) / span,
        "slo_attainment": float(meets_slo(arrived, slo).mean()) if n else math.nan,
        "rejected_fraction": float((status == "rejected").mean()) if n else math.nan,
        "failed_fraction": float((status == "failed").mean()) if n else math.nan,
        "admitted_rate": float((status != "rejected").sum()) / span,
        "retries_per_request": float(arrived["retries"].mean()) if n and "retries" in arrived else math.nan,
        "gpu_hours": gpu_hours,
        "cost_usd": fleet_cost_usd,
    }
    out["request_cost_usd_mean"] = (
        float(finished["cost_usd"].mean()) if len(finished) and "cost_usd" in finished else math.nan
    )
    if kind == "text":
        out_tokens = float(done_in["output_tokens"].sum())
        out["output_tokens_per_s"] = out_tokens / span
        out["input_tokens_per_s"] = float(done_in["prompt_tokens"].sum()) / span
        out["preemptions_per_request"] = float(arrived["preemptions"].mean()) if n else math.nan
        # over the prompts that were admitted: a rejected request never reached the cache
        admitted = arrived[status != "rejected"]
        out["prefix_hit_rate"] = float(admitted["cached_tokens"].sum() / max(1, admitted["prompt_tokens"].sum()))
        out["cost_per_1m_output_tokens_usd"] = fleet_cost_usd / out_tokens * 1e6 if out_tokens else math.nan
        in_tokens = float(done_in["prompt_tokens"].sum())
        out["cost_per_1m_input_tokens_usd"] = fleet_cost_usd / in_tokens * 1e6 if in_tokens else math.nan
    elif kind == "dllm":
        out_tokens = float(done_in["output_tokens"].sum())
        out["output_tokens_per_s"] = out_tokens / span
        out["input_tokens_per_s"] = float(done_in["prompt_tokens"].sum()) / span
        out["cost_per_1m_output_tokens_usd"] = fleet_cost_usd / out_tokens * 1e6 if out_tokens else math.nan
    elif kind == "audio":
        audio_s = float(done_in["audio_s"].sum())
        out["audio_seconds_per_s"] = audio_s / span
        out["cost_per_audio_minute_usd"] = fleet_cost_usd / audio_s * 60 if audio_s else math.nan
    elif kind in ("ar_image", "hybrid"):
        images = float(done_in["images"].sum())
        out["images_per_s"] = images / span
        out["cost_per_image_usd"] = fleet_cost_usd / images if images else math.nan
    elif kind == "image":
        images = float(done_in["images"].sum())
        out["images_per_s"] = images / span
        out["cost_per_image_usd"] = fleet_cost_usd / images if images else math.nan
        video_s = float(done_in["video_s"].sum()) if "video_s" in done_in else 0.0
        if video_s > 0:
            out["video_seconds_per_s"] = video_s / span
            out["cost_per_video_second_usd"] = fleet_cost_usd / video_s
        out["steps_computed_per_image"] = float(
            (finished["steps_computed"] * finished["images"]).sum() / max(1, finished["images"].sum())
        )
    slo_p = () if slo is None or slo.percentile in PERCENTILES else (slo.percentile,)
    for metric in METRICS.get(kind, LATENCY_METRICS):
        if metric not in finished:
            continue
        vals = finished[metric].dropna().to_numpy()
        if metric == "preview_s" and not len(vals):
            continue
        for p in (*PERCENTILES, *slo_p):
            out[f"{metric}_p{p:g}"] = float(np.percentile(vals, p)) if len(vals) else math.nan
        out[f"{metric}_mean"] = float(vals.mean()) if len(vals) else math.nan
    return out


def _percentiles(slo: SLO | None) -> tuple[float, ...]:
    """The summary's percentiles, and the SLO's when it is another."""
    return PERCENTILES if slo is None or slo.percentile in PERCENTILES else (*PERCENTILES, slo.percentile)


def _stage_shares(
    children: pd.DataFrame, parents: pd.DataFrame, window: tuple[float, float], stages: list[str]
) -> dict[str, float]:
    """Each pipeline stage's mean latency and its share of the pipelines' latency and cost
    (pipelines that arrived in the window and finished)."""
    t0, t1 = window
    done = parents[(parents["arrival_s"] >= t0) & (parents["arrival_s"] <= t1) & (parents["finish_s"] >= 0)]
    kids = children[children["parent_id"].isin(done["request_id"])]
    out: dict[str, float] = {}
    total_e2e = float(done["e2e_s"].sum())
    total_cost = float(kids["cost_usd"].sum()) if "cost_usd" in kids else 0.0
    for i, name in enumerate(stages):
        st = kids[kids["stage"] == i]
        out[f"stage_{name}_e2e_s_mean"] = float(st["e2e_s"].mean()) if len(st) else math.nan
        out[f"stage_{name}_latency_share"] = float(st["e2e_s"].sum() / total_e2e) if total_e2e > 0 else math.nan
        if "cost_usd" in st:
            out[f"stage_{name}_cost_share"] = float(st["cost_usd"].sum() / total_cost) if total_cost > 0 else math.nan
    return out


def summarize(
    scenario: Scenario,
    requests: pd.DataFrame,
    replicas: pd.DataFrame,
    windows: list[tuple[float, float]],
    prices: dict[str, float],
    itl: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """Summary dict: per class and overall, each statistic a mean with a 95 % CI.

    ``requests`` and ``replicas`` carry a ``replication`` column; ``windows`` holds each
    replication's measurement window; ``prices`` the $/GPU-hour of each pool. A class's fleet
    cost is, for every pool its requests ran on, the pool's GPU-hours in the window times its
    price, shared among classes by the GPU time their requests used there. ``itl`` holds each
    replication's inter-token gap histogram and gap sums per class (sim.metrics.itl): text
    classes get the pooled ITL mean and percentiles from it.
    """
    from sim.metrics import itl as itl_gaps

    groups: dict[str, list[dict[str, float]]] = {}
    for rep, (t0, t1) in enumerate(windows):
        rdf = requests[requests["replication"] == rep]
        reps = replicas[replicas["replication"] == rep]
        hours_by_pool = reps.groupby("pool", observed=True)["num_gpus"].sum() * (t1 - t0) / 3600
        if "autoscaled" in reps and reps["autoscaled"].any():
            # an autoscaled pool pays for the time its replicas were held, not for its most
            held = reps[reps["autoscaled"]]
            hours_by_pool.update((held["num_gpus"] * held["held_s"]).groupby(held["pool"], observed=True).sum() / 3600)
        leaves = rdf[~rdf["kind"].isin(PARENT_KINDS)] if "kind" in rdf else rdf
        pool_gpu_s = (
            leaves.groupby("pool", observed=True)["gpu_s"].sum() if "pool" in leaves else pd.Series(dtype=float)
        )
        top = rdf[rdf["parent_id"] < 0] if "parent_id" in rdf else rdf
        if "cost_usd" in top:
            top = fold_prefill_legs(top, rdf, ["cost_usd"])
        for class_id, cls in enumerate(scenario.classes):
            mine = leaves[leaves["class_id"] == class_id]
            hours = cost = 0.0
            for pool, gpu_s in mine.groupby("pool", observed=True)["gpu_s"].sum().items():
                total = float(pool_gpu_s.get(pool, 0.0))
                if pool in prices and total > 0:
                    share = float(gpu_s) / total
                    hours += float(hours_by_pool.get(pool, 0.0)) * share
                    cost += float(hours_by_pool.get(pool, 0.0)) * share * prices[pool]
            if not len(mine) and cls.pool is not None:  # a class with no GPU time yet
                cost = 0.0
            cdf = top[top["class_id"] == class_id]
            stats_ = _replication_stats(cdf, (t0, t1), scenario.slo_for(cls), hours, cost, cls.kind)
            if cls.kind == "pipeline":
                stats_.update(_stage_shares(mine, cdf, (t0, t1), [s.name for s in cls.stages]))
            if cls.kind == "text" and itl is not None:
                counts, total_s = itl[rep]
                stats_.update(
                    itl_gaps.summary(counts[class_id], total_s[class_id], _percentiles(scenario.slo_for(cls)))
                )
            groups.setdefault(cls.name, []).append(stats_)
        if len(scenario.classes) > 1:
            total_hours = float(hours_by_pool.sum())
            cost = float(sum(hours_by_pool.get(p, 0.0) * prices[p] for p in prices))
            kinds = {c.kind for c in scenario.classes}
            kind = kinds.pop() if len(kinds) == 1 else "mixed"
            stats_ = _replication_stats(top, (t0, t1), scenario.slo, total_hours, cost, kind)
            text = [i for i, c in enumerate(scenario.classes) if c.kind == "text"]
            if kind == "text" and itl is not None:
                counts, total_s = itl[rep]
                stats_.update(
                    itl_gaps.summary(counts[text].sum(axis=0), float(total_s[text].sum()), _percentiles(scenario.slo))
                )
            groups.setdefault("all", []).append(stats_)
    result: dict = {"replications": len(windows), "classes": {}}
    for name, rows in groups.items():
        keys = dict.fromkeys(k for r in rows for k in r)
        result["classes"][name] = {k: Estimate.of([r.get(k, math.nan) for r in rows]).as_dict() for k in keys}
    # Overloaded when any replication's queue kept growing (see ``queue_growth``); rejected
    # requests are reported separately, not as overload.
    for stats_ in result["classes"].values():
        stats_["overloaded"] = bool(stats_["overloaded"]["mean"] > 0)
    result["slo"] = {
        c.name: (scenario.slo_for(c).model_dump() if scenario.slo_for(c) else None) for c in scenario.classes
    }
    result["slo_met"] = {
        c.name: slo_met(result["classes"][c.name], scenario.slo_for(c), c.kind) for c in scenario.classes
    }
    if "all" in result["classes"]:
        result["slo"]["all"] = scenario.slo.model_dump() if scenario.slo else None
        kinds = {c.kind for c in scenario.classes}
        # one kind throughout: the targets that kind has (mixed kinds keep text's, as before)
        kind = kinds.pop() if len(kinds) == 1 else "text"
        result["slo_met"]["all"] = slo_met(result["classes"]["all"], scenario.slo, kind)
    return result


def slo_met(stats_: dict, slo: SLO | None, kind: str = "text") -> bool | None:
    """Whether the SLO's percentile of every targeted metric is within its target (mean
    over replications; the planner uses the CI to decide close calls)."""
    if slo is None:
        return None
    if slo.attainment is not None:
        return bool(stats_["slo_attainment"]["mean"] >= slo.attainment)
    # Rejected requests never meet a target: more of them than the percentile tolerates
    # breaks the SLO whatever the latencies of the rest.
    bad = stats_["rejected_fraction"]["mean"] + stats_.get("failed_fraction", {"mean": 0.0})["mean"]
    if bad > 1 - slo.percentile / 100:
        return False
    p = f"{slo.percentile:g}"
    for metric, target in slo.targets(kind):
        value = stats_[f"{metric}_p{p}"]["mean"]
        if not (value <= target):
            return False
    return True
