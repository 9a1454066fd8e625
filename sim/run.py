"""Run a scenario: K seeded replications, tables, a summary, and files on disk.

The Python API::

    from sim.run import run_scenario
    result = run_scenario("scenarios/quickstart.yaml")
    result.requests      # one row per request (pandas), all replications
    result.summary       # per class: throughput, goodput, percentiles with 95 % CIs, cost

Randomness: one seed per run, laid out over replications, classes and faults as
``sim.seeds`` says. Same seed, same numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim import catalog
from sim.config import Scenario, apply_overrides, load_scenario, parse_scenario
from sim.costs.factory import check_cost_models
from sim.errors import ConfigError
from sim.fleet.cluster import ReplicationResult, simulate
from sim.fleet.pools import check_pool_fits, price_per_gpu_hour
from sim.metrics.summary import summarize
from sim.seeds import replication_seeds
from sim.workload.stream import check_trace_files


@dataclass
class RunResult:
    scenario: Scenario
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame
    summary: dict
    replications: list[ReplicationResult] = field(repr=False, default_factory=list)
    base_dir: Path | None = None
    """Where the scenario's relative paths (profiles, traces) were read from."""

    @property
    def wall_s(self) -> float:
        return sum(r.wall_s for r in self.replications)


def expected_arrivals(scenario: Scenario) -> int | None:
    """Rough arrival count for a progress bar (None if unknown)."""
    total = 0
    for cls in scenario.classes:
        if cls.arrival is None:
            return None
        rate = getattr(cls.arrival, "rate", None)
        if rate is None:
            pts = getattr(cls.arrival, "points", [])
            rate = float(np.mean([r for _, r in pts])) if pts else None
        n = None
        if scenario.duration_s is not None and rate:
            n = rate * scenario.duration_s
        if scenario.num_requests is not None:
            n = min(n, scenario.num_requests) if n is not None else scenario.num_requests
        if n is None or not math.isfinite(n):
            return None
        total += int(n)
    return total * scenario.replications


def run_scenario(
    scenario: Scenario | str | os.PathLike,
    base_dir: Path | None = None,
    *,
    overrides: tuple[str, ...] = (),
    on_arrival: Callable[[], None] | None = None,
    decode_spans: bool = True,
) -> RunResult:
    """Simulate every replication of a scenario and summarise."""
    if not isinstance(scenario, Scenario):
        scenario, base_dir = load_scenario(scenario, overrides)
    elif overrides:
        scenario = parse_scenario(apply_overrides(scenario.model_dump(), overrides))
    base_dir = base_dir or Path(".")
    preflight(scenario, base_dir)
    reps: list[ReplicationResult] = []
    for child in replication_seeds(scenario.seed, scenario.replications):
        reps.append(simulate(scenario, base_dir, child, on_arrival, decode_spans=decode_spans))
        check_warmup(scenario, reps[-1].arrivals_end_s)  # fail after one replication, not all
    result = collect(scenario, reps)
    result.base_dir = base_dir
    return result


def preflight(scenario: Scenario, base_dir: Path, read_traces: bool = False) -> None:
    """Every check a run makes before it simulates (``validate-scenario`` makes the same): a
    model that does not fit its GPU, a trace or a profile missing or not matching its pool, an
    image shape its model cannot generate. ``read_traces`` also reads every trace as the run
    will (a run reads them anyway, and fails there with the same message)."""
    from sim.workload.images import check_image_shapes
    from sim.workload.stream import read_trace_files

    for pool in scenario.pools:
        check_pool_fits(pool)
    check_trace_files(scenario, base_dir)
    if read_traces:
        read_trace_files(scenario, base_dir)
    check_cost_models(scenario, base_dir)
    check_image_shapes(scenario)


def check_warmup(scenario: Scenario, last_arrival_s: float) -> None:
    if scenario.warmup_s == 0 and last_arrival_s <= 0:
        raise ConfigError(
            "every request arrived at time 0, so there is no measurement window; lengthen the run "
            "(duration_s, num_requests) or spread the arrivals (a trace with distinct times, an arrival rate)"
        )
    if scenario.warmup_s >= last_arrival_s:
        raise ConfigError(
            f"warmup_s ({scenario.warmup_s:g} s) is at or after the last arrival ({last_arrival_s!r} s): nothing "
            f"is left to measure; lower warmup_s or lengthen the run"
        )


def collect(scenario: Scenario, reps: list[ReplicationResult]) -> RunResult:
    frames, series, replicas, windows = [], [], [], []
    for i, r in enumerate(reps):
        frames.append(r.requests.assign(replication=i))
        series.append(r.timeseries.assign(replication=i))
        replicas.append(r.replicas.assign(replication=i))
        check_warmup(scenario, r.arrivals_end_s)
        windows.append((scenario.warmup_s, r.arrivals_end_s))
    requests = pd.concat(frames, ignore_index=True)
    add_costs(scenario, requests)
    requests["class"] = pd.Categorical(requests["class"], categories=[c.name for c in scenario.classes])
    requests["status"] = requests["status"].astype("category")
    replicas_df = pd.concat(replicas, ignore_index=True)
    prices = {p.name: price_per_gpu_hour(p) for p in scenario.pools}
    summary = summarize(scenario, requests, replicas_df, windows, prices)
    summary["scenario"] = scenario.name
    summary["seed"] = scenario.seed
    summary["warmup_s"] = scenario.warmup_s
    summary["pools"] = {p.name: _pool_stats(p, replicas_df, series, reps, prices[p.name]) for p in scenario.pools}
    summary["conservation"] = conservation(requests)
    summary["simulation"] = {
        "wall_s": sum(r.wall_s for r in reps),
        "simulated_s": sum(r.end_s for r in reps),
        "engine_steps": sum(r.num_steps for r in reps),
        "requests": int(len(requests)),
    }
    return RunResult(scenario, requests, pd.concat(series, ignore_index=True), replicas_df, summary, reps)


def add_costs(scenario: Scenario, requests: pd.DataFrame) -> None:
    """Per-request attributed cost (its GPU time at its pool's price; a pipeline: the sum of
    its stages), and for image requests the preview latency and video seconds."""
    price = {p.name: price_per_gpu_hour(p) for p in scenario.pools}
    requests["cost_usd"] = requests["gpu_s"] / 3600 * requests["pool"].map(price).astype(float).fillna(0.0)
    if "kind" in requests and (requests["kind"] == "pipeline").any():
        stage_cost = requests[requests["parent_id"] >= 0].groupby(["replication", "parent_id"])["cost_usd"].sum()
        pipes = requests["kind"] == "pipeline"
        keys = pd.MultiIndex.from_arrays([requests.loc[pipes, "replication"], requests.loc[pipes, "request_id"]])
        requests.loc[pipes, "cost_usd"] = stage_cost.reindex(keys).fillna(0.0).to_numpy()
    if "first_preview_s" in requests:
        has = requests["first_preview_s"] >= 0
        requests["preview_s"] = np.where(has, requests["first_preview_s"] - requests["arrival_s"], np.nan)
    if "frames" in requests:
        fps = {p.name: catalog.get_diffusion_model(p.model).fps for p in scenario.pools if p.is_diffusion}
        rate = requests["pool"].map(fps).astype(float)
        video = requests["frames"].fillna(1) > 1
        requests["video_s"] = np.where(video, requests["frames"] / rate * requests["images"], 0.0)


def _pool_stats(p, replicas_df: pd.DataFrame, series: list[pd.DataFrame], reps, price: float) -> dict:
    stats_ = {
        "model": p.model,
        "gpu": p.gpu,
        "cost_model": p.cost_model.kind,
        "efficiency_assumed": p.cost_model.kind == "roofline" and not catalog.get_gpu(p.gpu).efficiency.fitted,
        "replicas": p.replicas,
        "tensor_parallel_size": p.tensor_parallel_size,
        "price_per_gpu_hour": price,
        "busy_fraction": _busy_fraction(replicas_df, p.name, reps),
        "mean_batch": _mean_over_time(series, p.name, "running"),
    }
    if p.is_diffusion:
        b = p.diffusion
        stats_.update(
            {
                "batching": b.policy,
                "max_batch_size": b.max_batch_size,
                "memory_budget_gib": _kv_blocks(replicas_df, p.name) / 1024,
                "mean_memory_util": _mean_over_time(series, p.name, "memory_util"),
            }
        )
    else:
        blocks = _kv_blocks(replicas_df, p.name)
        stats_.update(
            {
                "scheduler": p.engine.scheduler,
                "num_gpu_blocks": blocks,
                "kv_capacity_tokens": blocks * p.engine.block_size,
                "mean_kv_util": _mean_over_time(series, p.name, "kv_util"),
            }
        )
    return stats_


def _mean_over_time(series: list[pd.DataFrame], pool: str, column: str) -> float:
    """Time-weighted mean of a replica state column over busy time (steps and spans)."""
    num = den = 0.0
    for ts in series:
        rows = ts[ts["pool"] == pool]
        num += float((rows[column] * rows["duration_s"]).sum())
        den += float(rows["duration_s"].sum())
    return num / den if den > 0 else math.nan


def _kv_blocks(replicas: pd.DataFrame, pool: str) -> int:
    """KV blocks per replica of a pool, as the run used them."""
    return int(replicas.loc[replicas["pool"] == pool, "kv_blocks"].iloc[0])


def _busy_fraction(replicas: pd.DataFrame, pool: str, reps) -> float:
    """Fraction of simulated time the pool's replicas were running a step (not headroom:
    a continuous-batching replica with any work is busy)."""
    rows = replicas[replicas["pool"] == pool]
    total = sum(r.end_s for r in reps) * rows["replica"].nunique()
    return float(rows["busy_s"].sum() / total) if total > 0 else math.nan


def conservation(requests: pd.DataFrame) -> dict[str, int]:
    """Every arrived request (pipeline stages included) is finished, rejected with a reason,
    failed with a reason, or still in flight."""
    status = requests["status"].astype(str)
    counts = {
        "arrived": int(len(requests)),
        "finished": int((status == "finished").sum()),
        "rejected": int((status == "rejected").sum()),
        "failed": int((status == "failed").sum()),
        "in_flight": int(status.isin(["waiting", "running"]).sum()),
    }
    if counts["finished"] + counts["rejected"] + counts["failed"] + counts["in_flight"] != counts["arrived"]:
        raise AssertionError(f"request conservation violated: {counts}")
    if (requests.loc[status == "rejected", "reject_reason"] == "").any():
        raise AssertionError("a request was rejected without a reason")
    if "fail_reason" in requests and (requests.loc[status == "failed", "fail_reason"] == "").any():
        raise AssertionError("a request failed without a reason")
    return counts


def write_outputs(result: RunResult, out_dir: Path, plots: bool = True) -> list[Path]:
    """requests.parquet, timeseries.parquet, summary.json, scenario.json and PNG plots.

    Raises ConfigError (one line) if ``out_dir`` is not a directory that can be written."""
    check_output_dir(out_dir)
    try:
        return _write_outputs(result, out_dir, plots)
    except OSError as exc:
        where = exc.filename or out_dir
        raise ConfigError(f"{where}: cannot write output: {exc.strerror or exc}") from None


def check_output_dir(out_dir: Path) -> None:
    """Raise ConfigError unless ``out_dir`` is a directory, or can be created as one. Cheap:
    the CLI calls it before simulating, so a bad ``-o`` costs no simulation time."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: output path exists and is not a directory")
    parent = out_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{out_dir}: cannot create the output directory: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{out_dir}: cannot create or write the output directory: {parent} is not writable")


RUN_FILES = (
    "summary.json",
    "scenario.json",
    "requests.parquet",
    "timeseries.parquet",
    "latency_cdf.png",
    "replica_state.png",
    "report.html",
)
"""Every file ``run -o`` writes or renders there: what this run does not write is removed."""


def _write_outputs(result: RunResult, out_dir: Path, plots: bool) -> list[Path]:
    from sim.outputs import clear_stale, jsonable, write_atomic, write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_text_atomic(out_dir / "summary.json", json.dumps(jsonable(result.summary), indent=2)),
        write_text_atomic(out_dir / "scenario.json", result.scenario.model_dump_json(indent=2)),
        write_atomic(out_dir / "requests.parquet", lambda p: result.requests.to_parquet(p, index=False)),
        write_atomic(out_dir / "timeseries.parquet", lambda p: result.timeseries.to_parquet(p, index=False)),
    ]
    if plots:
        from sim.plots import save_run_plots

        written += save_run_plots(result, out_dir)
    clear_stale(out_dir, RUN_FILES, written)
    return written
