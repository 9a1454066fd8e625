"""Plots: functions from DataFrames to matplotlib Figures, no pyplot global state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def latency_cdfs(requests: pd.DataFrame, warmup_s: float = 0.0) -> Figure:
    """Empirical CDFs of the latencies the run's requests have (TTFT and TPOT for text, E2E
    for every kind, queueing), one line per class (warm-up and pipeline stages left out)."""
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
        if m in requests and requests[m].notna().any()
    ]
    if not panels:
        panels = [("e2e_s", "E2E latency (s)")]
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (metric, label) in zip(axes, panels):
        for name, grp in requests.groupby("class", observed=True):
            vals = np.sort(grp[metric].dropna().to_numpy()) if metric in grp else np.empty(0)
            if len(vals):
                ax.plot(vals, np.arange(1, len(vals) + 1) / len(vals), label=str(name))
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle("Latency CDFs")
    return fig


def replica_state(timeseries: pd.DataFrame, max_replicas: int = 4) -> Figure:
    """Batch size, waiting queue and memory held over time (first replication): KV cache
    blocks for an LLM replica, latents and activations for a diffusion replica."""
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    ts = timeseries[timeseries["replication"] == 0] if "replication" in timeseries else timeseries
    for replica, grp in list(ts.groupby("replica"))[:max_replicas]:
        t = grp["t_s"].to_numpy()
        axes[0].step(t, grp["running"], where="post", lw=0.8, label=f"replica {replica}")
        axes[1].step(t, grp["waiting"], where="post", lw=0.8)
        mem = grp["state_gib"] if "state_gib" in grp else 100 * grp["kv_util"]
        axes[2].step(t, mem, where="post", lw=0.8)
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
    for name, fig in (
        ("latency_cdf.png", latency_cdfs(result.requests, result.scenario.warmup_s)),
        ("replica_state.png", replica_state(result.timeseries)),
    ):
        from sim.outputs import write_atomic

        path = write_atomic(out_dir / name, lambda p, fig=fig: fig.savefig(p, dpi=110))
        paths.append(path)
    return paths
