"""Plots: functions from DataFrames to matplotlib Figures, no pyplot global state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

TAIL_LEVELS = ((1e-2, "p99"), (1e-3, "p99.9"))


def latency_cdfs(requests: pd.DataFrame, warmup_s: float = 0.0) -> Figure:
    """Empirical CDFs of the latencies the run's requests have (TTFT and TPOT for text, E2E
    for every kind, queueing), one line per class (warm-up and pipeline stages left out). The
    top row is the CDF on a log time axis; the bottom row the tail, the fraction of requests
    slower than x on log-log axes, where p99 and p99.9 are the crossings of the dotted lines."""
    requests = requests[requests["arrival_s"] >= warmup_s]
    if "parent_id" in requests:
        requests = requests[requests["parent_id"] < 0]
    panels = [
        (m, label)
        for m, label in (
            ("ttft_s", "TTFT (s)"),
            ("tpot_s", "TPOT (s)"),
            ("e2e_s", "E2E latency (s)"),
            ("queue_s", "queue (s)"),
        )
        if m in requests and (requests[m] > 0).any()
    ]
    if not panels:
        panels = [("e2e_s", "E2E latency (s)")]
    fig = Figure(figsize=(4 * len(panels), 6.4), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    names = [str(n) for n, _ in requests.groupby("class", observed=True)]
    palette = [f"C{i % 10}" for i in range(len(names))]
    colours = dict(zip(names, palette, strict=True))  # one colour per class across panels
    for col, (metric, label) in enumerate(panels):
        cdf, tail = axes[0, col], axes[1, col]
        for name, grp in requests.groupby("class", observed=True):
            vals = np.sort(grp[metric].dropna().to_numpy()) if metric in grp else np.empty(0)
            vals = vals[vals > 0]  # a log axis has no zero (a request that never queued)
            if not len(vals):
                continue
            frac = np.arange(1, len(vals) + 1) / len(vals)
            cdf.plot(vals, frac, label=str(name), color=colours[str(name)])
            tail.plot(vals[:-1], 1 - frac[:-1], color=colours[str(name)], label=str(name))
        cdf.set_xscale("log")
        cdf.set_xlabel(label)
        cdf.set_ylabel("fraction of requests")
        tail.set_xscale("log")
        tail.set_yscale("log")
        tail.set_ylabel("fraction slower")
        tail.set_xlabel(label)
        for level, name in TAIL_LEVELS:
            tail.axhline(level, color="0.5", lw=0.7, ls=":")
            tail.annotate(
                name, (0.01, level), xycoords=("axes fraction", "data"), fontsize="x-small", color="0.4", va="bottom"
            )
        for ax in (cdf, tail):
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow decade's minor labels collide
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside upper right", fontsize="small", title="class")
    fig.suptitle("Latency distributions (log time axis; bottom: the tail)")
    return fig


def replica_state(
    timeseries: pd.DataFrame,
    max_replicas: int = 4,
    warmup_s: float = 0.0,
    batch_limits: dict[str, int] | None = None,
    outages: list | None = None,
) -> Figure:
    """Batch size, waiting queue and memory held over time (first replication, its first
    ``max_replicas`` replicas): KV cache blocks for an LLM replica, latents and activations for
    a diffusion replica, against the replica's memory budget (dashed). ``batch_limits`` (pool ->
    max_num_seqs or max_batch_size) draws each pool's batch limit (dashed); ``outages``
    ([replication, replica, down at, up at or None], as a run's summary lists them) shades each
    shown replica's time down in red with an x where it failed. The warm-up, left out of every
    statistic, is shaded grey."""
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    ts = timeseries[timeseries["replication"] == 0] if "replication" in timeseries else timeseries
    shown = list(ts.groupby("replica"))[:max_replicas]
    colours = {}
    for replica, grp in shown:
        t = grp["t_s"].to_numpy()
        (line,) = axes[0].step(t, grp["running"], where="post", lw=0.8, label=f"replica {replica}")
        colours[replica] = line.get_color()
        axes[1].step(t, grp["waiting"], where="post", lw=0.8)
        mem = grp["state_gib"] if "state_gib" in grp else 100 * grp["kv_util"]
        axes[2].step(t, mem, where="post", lw=0.8)
    above = []
    for pool, limit in (batch_limits or {}).items():
        mine = ts[ts["pool"].astype(str) == pool] if "pool" in ts else ts
        if mine.empty:
            continue
        if limit > 3 * max(1, int(mine["running"].max())):
            above.append(f"{pool}: {limit}")  # a line that far up would flatten the batches
            continue
        axes[0].axhline(limit, color="0.3", lw=0.8, ls="--")
        axes[0].annotate(f"batch limit of pool {pool}: {limit}", (0.005, limit), xycoords=("axes fraction", "data"),
                         fontsize="x-small", color="0.3", va="bottom")  # fmt: skip
        axes[0].set_ylim(bottom=0, top=max(axes[0].get_ylim()[1], 1.15 * limit))
    if above:
        axes[0].annotate("batch limit far above the batches (" + ", ".join(above) + ")", (0.005, 0.97),
                         xycoords="axes fraction", fontsize="x-small", color="0.3", va="top")  # fmt: skip
    end = float(ts["t_s"].max()) if len(ts) else 0.0
    failed = False
    for rep, replica, down, up in outages or ():
        if rep != 0 or replica not in colours:
            continue
        failed = True
        for ax in axes:
            ax.axvspan(down, end if up is None else up, color="tab:red", alpha=0.12, lw=0, zorder=0)
        axes[0].plot([down], [1.0], "x", color=colours[replica], ms=7, mew=2,
                     transform=axes[0].get_xaxis_transform(), clip_on=False)  # fmt: skip
    if failed:
        axes[0].plot([], [], "x", color="tab:red", ms=7, mew=2, label="replica failed (red: down)")
    if "state_gib" in ts and "memory_util" in ts:
        held = ts[ts["memory_util"] > 0]
        top = 0.0
        for pool, grp in held.groupby("pool", observed=True):
            budget = float((grp["state_gib"] / grp["memory_util"]).median())
            top = max(top, budget)
            axes[2].axhline(budget, color="0.3", lw=0.8, ls="--")
            axes[2].annotate(f"budget of pool {pool}: {budget:.3g} GiB", (0.005, budget), xycoords=("axes fraction", "data"),
                             fontsize="x-small", color="0.3", va="bottom")  # fmt: skip
        if top > 0:
            axes[2].set_ylim(bottom=0, top=1.15 * top)  # the budget lines and their labels inside
    if warmup_s > 0:
        for ax in axes:
            ax.axvspan(0, warmup_s, color="0.85", lw=0, zorder=0)
        axes[1].annotate("warm-up", (warmup_s / 2, 1.0), xycoords=("data", "axes fraction"), ha="center", va="top",
                         fontsize="x-small", color="0.4")  # fmt: skip
    axes[0].set_ylabel("running (batch)")
    axes[1].set_ylabel("waiting")
    axes[2].set_ylabel("memory held (GiB)" if "state_gib" in ts else "KV blocks used (%)")
    axes[2].set_xlabel("simulated time (s)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="upper right", fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Replica state over time")
    return fig


def save_run_plots(result, out_dir: Path) -> list[Path]:
    paths = []
    pools = result.summary["pools"]
    for name, fig in (
        ("latency_cdf.png", latency_cdfs(result.requests, result.scenario.warmup_s)),
        (
            "replica_state.png",
            replica_state(
                result.timeseries,
                warmup_s=result.scenario.warmup_s,
                batch_limits=batch_limits(pools),
                outages=[o for p in pools.values() for o in p.get("outages", ())],
            ),
        ),
    ):
        from sim.outputs import write_atomic

        path = write_atomic(out_dir / name, lambda p, fig=fig: fig.savefig(p, dpi=110))
        paths.append(path)
    return paths


def batch_limits(pools: dict) -> dict[str, int]:
    """Each pool's batch limit from a run summary's pools: max_num_seqs (LLM) or
    max_batch_size (diffusion)."""
    out = {}
    for name, p in pools.items():
        limit = p.get("max_num_seqs", p.get("max_batch_size"))
        if isinstance(limit, int):
            out[name] = limit
    return out
