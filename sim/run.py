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
from sim.config import NEW_KINDS, PARENT_KINDS, Scenario, apply_overrides, load_scenario, parse_scenario
from sim.costs.factory import check_cost_models
from sim.errors import ConfigError
from sim.fleet.cluster import ReplicationResult, block_kind, simulate
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
    if scenario.catalog is not None:
        scenario.catalog.add()  # in a worker process too (sweep points)
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
    from sim.fleet.sharing import shares
    from sim.workload.images import check_image_shapes
    from sim.workload.stream import read_trace_files

    gpu_shares = shares(scenario.pools)
    for pool in scenario.pools:
        check_pool_fits(pool, gpu_shares.get(pool.name))
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
        check_warmup(scenario, r.arrivals_end_s)
        windows.append((scenario.warmup_s, r.arrivals_end_s))
        replicas.append(_held_in_window(r, windows[-1]).assign(replication=i))
    requests = pd.concat(frames, ignore_index=True)
    requests["warmup"] = requests["arrival_s"] < scenario.warmup_s  # left out of every statistic
    add_costs(scenario, requests)
    requests["class"] = pd.Categorical(requests["class"], categories=[c.name for c in scenario.classes])
    requests["status"] = requests["status"].astype("category")
    replicas_df = pd.concat(replicas, ignore_index=True)
    prices = {p.name: price_per_gpu_hour(p) for p in scenario.pools}
    itl = [(r.itl_counts, r.itl_total_s) for r in reps] if all(r.itl_counts is not None for r in reps) else None
    summary = summarize(scenario, requests, replicas_df, windows, prices, itl)
    summary["scenario"] = scenario.name
    if any(c.kind in NEW_KINDS for c in scenario.classes):
        summary["kinds"] = {c.name: c.kind for c in scenario.classes}
    summary["seed"] = scenario.seed
    summary["warmup_s"] = scenario.warmup_s
    summary["pools"] = {
        p.name: _pool_stats(p, replicas_df, series, reps, prices[p.name], block_kind(scenario, p.name))
        for p in scenario.pools
    }
    for p in scenario.pools:
        if p.disaggregation is not None:
            summary["pools"][p.name]["disaggregation"] = _transfer_stats(p, requests, scenario.warmup_s)
        if p.autoscaling is not None:
            summary["pools"][p.name]["autoscaling"] = _scaling_stats(p, replicas_df, reps, windows)
    for guest in scenario.pools:
        c = guest.colocation
        if c is not None:
            for name, mem, comp in (
                (guest.name, c.memory_fraction, c.compute_share),
                (c.pool, 1 - c.memory_fraction, 1 - c.compute_share),
            ):
                summary["pools"][name]["colocation"] = {
                    "with": c.pool if name == guest.name else guest.name,
                    "mode": c.mode,
                    "memory_fraction": mem,
                    "compute_fraction": comp if c.mode == "mig" else None,
                }
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
    if "kind" in requests and requests["kind"].isin(PARENT_KINDS).any():
        stage_cost = requests[requests["parent_id"] >= 0].groupby(["replication", "parent_id"])["cost_usd"].sum()
        pipes = requests["kind"].isin(PARENT_KINDS)
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


def _pool_stats(
    p, replicas_df: pd.DataFrame, series: list[pd.DataFrame], reps, price: float, block: bool = False
) -> dict:
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
        # Replica failures: [replication, replica, down at, back up at (None: still down)].
        "outages": [
            [rep, o[0], o[1], o[2]]
            for rep, r in enumerate(reps)
            for o in r.outages
            if o[0] < len(r.replicas) and r.replicas["pool"].iloc[o[0]] == p.name
        ],
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
                # a diffusion LM's or a hybrid's pool runs the block-step engine (sim.kinds.blocks)
                "scheduler": "block steps" if block else p.engine.scheduler,
                "max_num_seqs": p.engine.max_num_seqs * p.engine.attention_data_parallel,
                "num_gpu_blocks": blocks,
                "kv_capacity_tokens": blocks * p.engine.block_size,
                "mean_kv_util": _mean_over_time(series, p.name, "kv_util"),
            }
        )
    return stats_


def _transfer_stats(p, requests: pd.DataFrame, warmup_s: float) -> dict:
    """A decode-only pool's link and the KV transfers into it (requests after the warm-up)."""
    d = p.disaggregation
    rows = requests[(requests["pool"] == p.name) & (requests["arrival_s"] >= warmup_s)]
    t = rows["kv_transfer_s"].to_numpy(dtype=float) if "kv_transfer_s" in rows else np.array([])
    t = t[t >= 0]
    return {
        "prefill_pool": d.prefill_pool,
        "link": d.link,
        "link_gb_s": d.gb_s,
        "link_latency_s": d.transfer_latency_s,
        "transfers": int(len(t)),
        "kv_transfer_s_mean": float(t.mean()) if len(t) else math.nan,
        "kv_transfer_s_p99": float(np.percentile(t, 99)) if len(t) else math.nan,
    }


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
    a continuous-batching replica with any work is busy); an autoscaled pool's, of the time
    its replicas were held."""
    rows = replicas[replicas["pool"] == pool]
    if "held_run_s" in rows and rows["autoscaled"].any():
        total = float(rows["held_run_s"].sum())
    else:
        total = sum(r.end_s for r in reps) * rows["replica"].nunique()
    return float(rows["busy_s"].sum() / total) if total > 0 else math.nan


def _held_in_window(r, window: tuple[float, float]) -> pd.DataFrame:
    """The replication's replica table; with autoscaled pools, each replica's held seconds
    within the measurement window (``held_s``) and over the run (``held_run_s``), fixed
    replicas held throughout."""
    if not r.scaling:
        return r.replicas
    from sim.fleet.autoscale import held_s

    t0, t1 = window
    df = r.replicas.copy()
    scaled = df["pool"].isin(list(r.scaling)).to_numpy()
    spans = [r.held.get(i, []) for i in df["replica"]]
    in_window = [held_s(held, t0, t1) if s else t1 - t0 for held, s in zip(spans, scaled)]
    whole = [sum(b - a for a, b in held) if s else r.end_s for held, s in zip(spans, scaled)]
    return df.assign(autoscaled=scaled, held_s=in_window, held_run_s=whole)


def _scaling_stats(p, replicas_df: pd.DataFrame, reps, windows) -> dict:
    """An autoscaled pool's record: its cold start, replicas held (time-averaged over the
    measurement window, and the most at once), changes, and GPU-hours in the window; each a
    mean over replications."""
    mean_held, peak, ups, downs, hours = [], [], [], [], []
    for rep, (r, (t0, t1)) in enumerate(zip(reps, windows)):
        rows = replicas_df[(replicas_df["replication"] == rep) & (replicas_df["pool"] == p.name)]
        mean_held.append(float(rows["held_s"].sum()) / (t1 - t0))
        hours.append(float((rows["held_s"] * rows["num_gpus"]).sum()) / 3600)
        rec = r.scaling[p.name]
        peak.append(max([p.replicas, *(held for _, held, _ in rec["events"])]))
        ups.append(rec["scale_ups"])
        downs.append(rec["scale_downs"])
    rec = reps[0].scaling[p.name]
    return {
        "min_replicas": p.autoscaling.min_replicas,
        "max_replicas": p.autoscaling.max_replicas,
        "metric": p.autoscaling.metric,
        "cold_start_s": rec["cold_start_s"],
        "cold_start_parts_s": rec["cold_start_parts_s"],
        "mean_replicas_held": float(np.mean(mean_held)),
        "peak_replicas_held": float(np.mean(peak)),
        "scale_ups": float(np.mean(ups)),
        "scale_downs": float(np.mean(downs)),
        "gpu_hours": float(np.mean(hours)),
    }


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


# --------------------------------------------------------------------------- the summary as text


def _pool_line(name: str, pool: dict) -> str:
    from sim.console import term

    head = (
        f"  pool {term(name)}: {pool['replicas']} x {pool['model']} on {pool['gpu']} TP{pool['tensor_parallel_size']} "
    )
    tail = f"busy {pool['busy_fraction']:.0%}, mean batch {pool['mean_batch']:.1f}, "
    if "batching" in pool:
        from sim import catalog

        unit = "videos" if catalog.get_diffusion_model(pool["model"]).kind == "video" else "images"
        return (
            head + f"({pool['batching']} batches of <= {pool['max_batch_size']} {unit}), "
            f"{pool['memory_budget_gib']:.0f} GiB for latents/replica, "
            + tail
            + f"mean memory use {pool['mean_memory_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
            + _scaling_line(pool)
        )
    line = (
        head
        + f"({pool['scheduler']}), {pool['kv_capacity_tokens']:,} KV tokens/replica, "
        + tail
        + f"mean KV use {pool['mean_kv_util']:.0%}, ${pool['price_per_gpu_hour']:.2f}/GPU-h"
    )
    d = pool.get("disaggregation")
    if d is not None:
        line += (
            f"; decodes only: prompts prefilled on {term(d['prefill_pool'])}, KV over {d['link']} "
            f"({d['link_gb_s']:.4g} GB/s per GPU), transfer mean {d['kv_transfer_s_mean'] * 1e3:.3g} ms, "
            f"p99 {d['kv_transfer_s_p99'] * 1e3:.3g} ms"
        )
    return line + _scaling_line(pool)


def _scaling_line(pool: dict) -> str:
    """What a pool line adds for an autoscaled pool, or one sharing its GPUs."""
    c = pool.get("colocation")
    if c is not None:
        part = f"{c['memory_fraction']:.0%} of the memory"
        if c["compute_fraction"] is not None:
            part += f" and {c['compute_fraction']:.0%} of the compute"
        mode = "MIG slices" if c["mode"] == "mig" else "time-sliced"
        return f"; shares its GPUs with {c['with']} ({mode}: {part})"
    a = pool.get("autoscaling")
    if a is None:
        return ""
    return (
        f"; autoscaled {a['min_replicas']}-{a['max_replicas']} on {a['metric']}: {a['mean_replicas_held']:.2f} "
        f"replicas held on average (at most {a['peak_replicas_held']:.0f}), {a['scale_ups']:.0f} up and "
        f"{a['scale_downs']:.0f} down, cold start {a['cold_start_s']:.0f} s, {a['gpu_hours']:.3g} GPU-h"
    )


ROWS = {
    "text": (
        ("ttft_s", "TTFT (ms)", 1e3),
        ("tpot_s", "TPOT (ms)", 1e3),
        ("itl_s", "ITL (ms)", 1e3),
        ("max_itl_s", "max ITL (ms)", 1e3),
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue (ms)", 1e3),
    ),
    "image": (
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue + forming (s)", 1.0),
        ("forming_s", "batch forming (s)", 1.0),
        ("preview_s", "first preview (s)", 1.0),
    ),
    "pipeline": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "first-stage queue (s)", 1.0)),
    "dllm": (
        ("ttft_s", "first block (ms)", 1e3),
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue (ms)", 1e3),
        ("tokens_per_s", "tokens/s per request", 1.0),
    ),
    "ar_image": (("e2e_s", "E2E (s)", 1.0), ("first_chunk_s", "first row (s)", 1.0), ("queue_s", "queue (ms)", 1e3)),
    "audio": (
        ("ttft_s", "first audio (ms)", 1e3),
        ("rtf", "real-time factor", 1.0),
        ("e2e_s", "E2E (s)", 1.0),
        ("queue_s", "queue (ms)", 1e3),
    ),
    "hybrid": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue (ms)", 1e3)),
    "mixed": (("e2e_s", "E2E (s)", 1.0), ("queue_s", "queue (s)", 1.0)),
}


def _growth_text(growth: float | None) -> str:
    if growth is None or growth != growth or growth == float("inf"):
        return "requests were still queued when the run stopped"
    return f"the queue wait grows {growth:.2g} s per second, arrivals ~{growth:.0%} above what it serves"


def summary_blocks(summary: dict, scenario: Scenario) -> list:
    """What ``servesim run`` prints of a run (``sim.console`` blocks: the terminal shows them,
    the HTML report shows the same): the pools, a table and lines per class, the conservation
    line, and every warning."""
    from sim.console import WIDE, Line, Table, fmt_estimate, term, thin_percentiles, wide_note

    s = summary
    out: list = []

    def show(block) -> None:
        out.append(block if isinstance(block, Table) else Line(block))

    kinds = {c.name: c.kind for c in scenario.classes}
    uniform = set(kinds.values())
    kinds["all"] = uniform.pop() if len(uniform) == 1 else "mixed"
    out.append(
        Line(
            f"[bold]{term(s['scenario'])}[/bold]: {s['replications']} replication(s), seed {s['seed']}, warm-up {s['warmup_s']:g} s"
        )
    )
    for name, pool in s["pools"].items():
        out.append(Line(_pool_line(name, pool)))
    from sim.catalog import assumed_efficiency_note

    for gpu in dict.fromkeys(pool["gpu"] for pool in s["pools"].values() if pool.get("efficiency_assumed")):
        out.append(Line(f"  [yellow]note:[/yellow] {assumed_efficiency_note(gpu)}", highlight=False))
    # a diffusion class on a video model makes videos: say so in its labels
    from sim import catalog

    videos = set()
    for c in scenario.classes:
        pool = scenario.pool(c.pool) if c.pool else None
        if c.kind == "image" and pool is not None and catalog.get_diffusion_model(pool.model).kind == "video":
            videos.add(c.name)
    for cls, st in s["classes"].items():
        kind = kinds[cls]
        unit = "video" if cls in videos else "image"
        # the title stays short (it wraps at the table's width); why is said under the table
        overloaded = "  [red](overloaded)[/red]" if st["overloaded"] else ""
        table = Table(
            title=f"class {term(cls)} ({'video' if cls in videos else kind}){overloaded}", title_justify="left"
        )
        table.add_column("metric")
        for p in ("p50", "p90", "p99", "p99.9", "mean"):
            table.add_column(p, justify="right")
        for metric, label, scale in ROWS.get(kind, ROWS["text"]):
            if f"{metric}_p50" in st:
                table.add_row(
                    label, *(fmt_estimate(st[f"{metric}_{p}"], scale) for p in ("p50", "p90", "p99", "p99.9", "mean"))
                )
        show(table)
        if st["overloaded"]:
            out.append(Line(f"  [red]overloaded:[/red] {_growth_text(st['queue_growth']['mean'])}", highlight=False))
        per_rep = st["finished"]["mean"]
        thin = thin_percentiles(per_rep) if per_rep is not None and per_rep == per_rep else []
        if thin:
            out.append(
                Line(
                    f"  [yellow]note:[/yellow] {', '.join(thin)} rest{'s' if len(thin) == 1 else ''} on fewer than 10 requests per replication "
                    f"beyond {'it' if len(thin) == 1 else 'them'} ({per_rep:,.0f} finished per replication): lengthen duration_s for the tail",
                    highlight=False,
                )
            )
        slo = s["slo_met"].get(cls)
        if kind == "image":
            rate = f"{fmt_estimate(st['images_per_s'])} {unit}s/s" + (
                f", {fmt_estimate(st['video_seconds_per_s'])} video-s/s" if "video_seconds_per_s" in st else ""
            )
        elif kind in ("text", "dllm"):
            rate = f"{fmt_estimate(st['output_tokens_per_s'])} output tok/s"
        elif kind in ("ar_image", "hybrid"):
            rate = f"{fmt_estimate(st['images_per_s'])} images/s"
        elif kind == "audio":
            rate = f"{fmt_estimate(st['audio_seconds_per_s'])} audio-s/s"
        else:
            rate = "all kinds" if kind == "mixed" else "pipelines"
        show(
            f"  throughput {fmt_estimate(st['throughput_rps'])} req/s, {rate}; "
            + (
                f"goodput {fmt_estimate(st['goodput_rps'])} req/s (SLO attainment {fmt_estimate(st['slo_attainment'], fraction=True)})"
                if slo is not None
                else f"completed {fmt_estimate(st['slo_attainment'], fraction=True)} of arrivals"
            )
            + (
                f", rejected {fmt_estimate(st['rejected_fraction'], 100, fraction=True)} %"
                if st["rejected_fraction"]["mean"]
                else ""
            )
            + (
                f", failed {fmt_estimate(st['failed_fraction'], 100, fraction=True)} %"
                if st["failed_fraction"]["mean"]
                else ""
            )
            + (
                f", retries/request {fmt_estimate(st['retries_per_request'])}"
                if st["retries_per_request"]["mean"]
                else ""
            )
            + ("" if slo is None else f"; SLO {'met' if slo else '[red]missed[/red]'}")
        )
        if kind == "text":
            show(
                f"  cost ${fmt_estimate(st['cost_per_1m_output_tokens_usd'])} per 1M output tokens (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"preemptions/request {fmt_estimate(st['preemptions_per_request'])}; prefix-cache hit {fmt_estimate(st['prefix_hit_rate'], fraction=True)}"
            )
        elif kind == "image":
            show(
                f"  cost ${fmt_estimate(st['cost_per_image_usd'], 1e3)} per 1k {unit}s (fleet GPU-hours x price)"
                + (
                    f", ${fmt_estimate(st['cost_per_video_second_usd'])} per video second"
                    if "cost_per_video_second_usd" in st
                    else ""
                )
                + f"; ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed; "
                f"denoising steps computed per {unit} {fmt_estimate(st['steps_computed_per_image'])}"
            )
        elif kind == "dllm":
            show(
                f"  cost ${fmt_estimate(st['cost_per_1m_output_tokens_usd'])} per 1M output tokens (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed"
            )
        elif kind in ("ar_image", "hybrid"):
            show(
                f"  cost ${fmt_estimate(st['cost_per_image_usd'], 1e3)} per 1k images (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed"
            )
        elif kind == "audio":
            show(
                f"  cost ${fmt_estimate(st['cost_per_audio_minute_usd'], 60)} per hour of audio (fleet GPU-hours x price); "
                f"${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k requests attributed"
            )
        elif kind == "pipeline":
            stages = [
                k.removeprefix("stage_").removesuffix("_latency_share") for k in st if k.endswith("_latency_share")
            ]
            shares = ", ".join(
                f"{term(name)} {fmt_estimate(st[f'stage_{name}_e2e_s_mean'])} s ({fmt_estimate(st[f'stage_{name}_latency_share'], 100, 2, fraction=True)} % of time, "
                f"{fmt_estimate(st[f'stage_{name}_cost_share'], 100, 2, fraction=True)} % of cost)"
                for name in stages
            )
            show(f"  ${fmt_estimate(st['request_cost_usd_mean'], 1e3)} per 1k pipelines attributed; stages: {shares}")
    c = s["conservation"]
    sim = s["simulation"]
    out.append(
        Line(
            f"  requests: {c['arrived']:,} arrived = {c['finished']:,} finished + {c['rejected']:,} rejected + {c['failed']:,} failed + {c['in_flight']:,} in flight; "
            f"simulated {sim['simulated_s']:,.0f} s in {sim['wall_s']:.2f} s wall ({sim['requests'] / max(sim['wall_s'], 1e-9):,.0f} req/s)"
        )
    )
    wide = any(WIDE in (b.markup if isinstance(b, Line) else "".join(c for row in b.rows for c in row)) for b in out)
    if wide:
        out.append(Line(f"  [yellow]{wide_note(s['replications'])}[/yellow]", highlight=False))
    return out
