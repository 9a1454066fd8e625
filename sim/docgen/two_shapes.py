"""The "two shapes" page: the seed article's autoregressive-vs-iterative-refinement table, measured.

``python -m sim.docgen.two_shapes [--out docs/explanation] [--quick]`` builds scenarios in code (a
Llama-3-8B chat service and an SDXL image service on the same GPU, an H100 SXM), runs them and
writes ``<out>/two-shapes.md`` with its plots in ``<out>/img/two-shapes/``. Every number on the
page is read from these runs; the text only says what was measured. Sections: state over time,
cost against request size, streaming, retry after a replica failure, batching, and the table.

All runs share one seed, so variants of a service (previews on or off, a failure or none, a
scheduler or another) see the same arrivals and the same request sizes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from sim import catalog
from sim.config import Scenario, parse_scenario
from sim.run import RunResult, run_scenario

COMMAND = "python -m sim.docgen.two_shapes"
LLM_MODEL, IMAGE_MODEL, GPU = "llama-3-8b", "sdxl", "h100-sxm"
SEED = 11
AR, IR = "C0", "C1"  # plot colours: autoregressive, iterative refinement

# The two services. Rates sit near half of one replica's capacity (found by the batching sweep).
CHAT_RATE = 8.0
CHAT_PROMPT = {"dist": "lognormal", "mean": 1000, "cv": 1.0, "max": 6000}
CHAT_OUTPUT = {"dist": "lognormal", "mean": 250, "cv": 0.8, "max": 1500}
IMAGE_RATE = 0.5
IMAGE = {"width": 1024, "height": 1024, "steps": 30, "sampler": "dpmpp_2m"}
STATIC_BATCH = {"max_batch_size": 4, "max_wait_s": 0.5}
# Spread-out sizes for the cost section, and the knobs of the streaming and retry sections.
SPREAD_PROMPT = {"dist": "uniform", "low": 100, "high": 4000}
SPREAD_OUTPUT = {"dist": "uniform", "low": 20, "high": 1000}
SPREAD_STEPS = [10, 20, 30, 40, 50]
SWEEP_STEPS = [20, 30, 50]  # the batching sweep's mix: static batches must bucket or pad them
SOLO_PROMPT, SOLO_OUTPUT = 2000, 2000
PREVIEW_EVERY = 5
CHECKPOINT_EVERY = 5
FAULT_REPLICAS, MTTR_S = 4, 5.0


@dataclass(frozen=True)
class Budget:
    """How much to simulate: the full page, or a quick, rougher one (tests)."""

    duration_s: float
    """Arrivals per service run (sections 1 to 3, and each load level of section 5)."""
    retry_duration_s: float
    faults: int
    """Scheduled replica failures per retry run, spread over its arrivals (replicas in turn)."""
    replications: int
    llm_rates: tuple[float, ...]
    image_rates: tuple[float, ...]

    @property
    def fault_times_s(self) -> tuple[float, ...]:
        d = self.retry_duration_s
        return tuple(float(t) for t in np.linspace(0.1 * d, 0.9 * d, self.faults).round(1))


FULL = Budget(240.0, 120.0, 12, 2, (4.0, 8.0, 16.0, 24.0), (0.3, 0.6, 0.9, 1.2))
QUICK = Budget(60.0, 30.0, 6, 1, (4.0, 16.0), (0.4, 1.0))


# --------------------------------------------------------------------------- scenarios


def llm_pool(*, replicas: int = 1, scheduler: str = "continuous", faults: dict | None = None) -> dict:
    pool = {
        "name": "llm",
        "model": LLM_MODEL,
        "gpu": GPU,
        "replicas": replicas,
        "router": "least_outstanding",
        "engine": {"scheduler": scheduler},
    }
    return pool | ({"faults": faults} if faults else {})


def image_pool(*, replicas: int = 1, faults: dict | None = None, **batching) -> dict:
    pool = {
        "name": "sdxl",
        "model": IMAGE_MODEL,
        "gpu": GPU,
        "replicas": replicas,
        "router": "least_outstanding",
        "batching": {"policy": "static", **STATIC_BATCH, **batching},
    }
    return pool | ({"faults": faults} if faults else {})


def chat_class(rate: float, prompt=CHAT_PROMPT, output=CHAT_OUTPUT, max_retries: int = 3) -> dict:
    return {
        "name": "chat",
        "pool": "llm",
        "arrival": {"process": "poisson", "rate": rate},
        "prompt_tokens": prompt,
        "output_tokens": output,
        "retry": {"max_retries": max_retries},
    }


def image_class(rate: float, **image) -> dict:
    return {
        "name": "image",
        "pool": "sdxl",
        "arrival": {"process": "poisson", "rate": rate},
        "image": IMAGE | image,
        "retry": {"max_retries": 3},
    }


def scenario(name: str, pool: dict, cls: dict, duration_s: float, replications: int) -> Scenario:
    return parse_scenario(
        {
            "name": name,
            "seed": SEED,
            "replications": replications,
            "duration_s": duration_s,
            "warmup_s": duration_s / 10,
            "pools": [pool],
            "classes": [cls],
        },
        source=name,
    )


def solo(name: str, pool: dict, cls: dict) -> Scenario:
    """One request alone on one replica (arrives at t = 1 s)."""
    cls = cls | {"arrival": {"process": "constant", "rate": 1.0}}
    return parse_scenario(
        {"name": name, "seed": SEED, "num_requests": 1, "pools": [pool], "classes": [cls]}, source=name
    )


def finished(result: RunResult) -> pd.DataFrame:
    """Requests that arrived after warm-up and finished."""
    df = result.requests
    return df[(df["arrival_s"] >= result.scenario.warmup_s) & (df["status"] == "finished")]


def fit(x: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares ``y ~ c0 + c1 x1 + ...``: the coefficients and R^2."""
    a = np.column_stack([np.ones_like(y), *x])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    return coef, 1.0 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())


# --------------------------------------------------------------------------- 1. state


@dataclass
class State:
    """Memory a replica holds while it generates: one request alone, and one replica under load."""

    llm_solo: pd.DataFrame
    image_solo: pd.DataFrame
    llm_load: pd.DataFrame
    image_load: pd.DataFrame
    kv_after_prompt_gib: float
    kv_at_end_gib: float
    kv_mib_per_token: float
    image_first_gib: float
    image_last_gib: float
    image_steps: int
    llm_load_mean_gib: float
    llm_load_max_gib: float
    image_gib_per_image: tuple[float, float]
    """(min, max) over busy samples of memory held / images in the batch."""
    image_load_max_gib: float


def measure_state(llm_base: RunResult, image_base: RunResult) -> State:
    # One sample per decode step (not per decode span): the KV cache growing token by token.
    llm = run_scenario(
        solo(
            "solo-llm",
            llm_pool(),
            chat_class(1.0, {"dist": "fixed", "value": SOLO_PROMPT}, {"dist": "fixed", "value": SOLO_OUTPUT}),
        ),
        decode_spans=False,
    )
    # Step-level batching records one sample per denoising step.
    img = run_scenario(solo("solo-image", image_pool(policy="step", max_wait_s=0.0), image_class(1.0)))
    lt, it = llm.timeseries, img.timeseries
    lt = lt[lt["duration_s"] > 0].assign(t_s=lambda d: d["t_s"] - llm.requests["arrival_s"].iloc[0])
    it = it[it["duration_s"] > 0].assign(t_s=lambda d: d["t_s"] - img.requests["arrival_s"].iloc[0])
    kv = lt["state_gib"].to_numpy()
    llm_load = first_replica(llm_base.timeseries)
    image_load = first_replica(image_base.timeseries)
    busy = image_load[image_load["running"] > 0]
    per_image = busy["state_gib"] / busy["running"]  # one image per request in this service
    return State(
        lt,
        it,
        llm_load,
        image_load,
        kv_after_prompt_gib=float(kv[0]),
        kv_at_end_gib=float(kv[-1]),
        kv_mib_per_token=float((kv[-1] - kv[0]) * 1024 / (len(kv) - 1)),
        image_first_gib=float(it["state_gib"].iloc[0]),
        image_last_gib=float(it["state_gib"].iloc[-1]),
        image_steps=len(it),
        llm_load_mean_gib=time_mean(llm_load, "state_gib"),
        llm_load_max_gib=float(llm_load["state_gib"].max()),
        image_gib_per_image=(float(per_image.min()), float(per_image.max())),
        image_load_max_gib=float(image_load["state_gib"].max()),
    )


def first_replica(ts: pd.DataFrame) -> pd.DataFrame:
    return ts[(ts["replication"] == 0) & (ts["replica"] == 0)].sort_values("t_s", kind="stable")


def time_mean(ts: pd.DataFrame, column: str) -> float:
    """Mean of a replica state column over busy time."""
    return float((ts[column] * ts["duration_s"]).sum() / ts["duration_s"].sum())


def held(ts: pd.DataFrame, column: str = "state_gib") -> tuple[np.ndarray, np.ndarray]:
    """A step line of a state column: each sample holds for its duration, idle time reads 0."""
    t = ts["t_s"].to_numpy()
    end = t + ts["duration_s"].to_numpy()
    v = ts[column].to_numpy()
    gap = np.append(t[1:] > end[:-1] + 1e-9, True)  # idle after this sample
    xs, ys = [], []
    for i in range(len(t)):
        xs += [t[i], end[i]]
        ys += [v[i], v[i]]
        if gap[i]:
            xs += [end[i], t[i + 1] if i + 1 < len(t) else end[i]]
            ys += [0.0, 0.0]
    return np.asarray(xs), np.asarray(ys)


def state_figure(s: State, window_s: float = 60.0) -> Figure:
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    a.plot(*held(s.llm_solo), color=AR)
    a.set_title(
        f"{LLM_MODEL}: one request ({SOLO_PROMPT}-token prompt, {SOLO_OUTPUT} output tokens)", fontsize="medium"
    )
    a.set_ylabel("KV cache held (GiB)")
    b.plot(*held(s.image_solo), color=IR)
    b.set_title(
        f"{IMAGE_MODEL}: one {IMAGE['width']}x{IMAGE['height']} image, {s.image_steps} steps", fontsize="medium"
    )
    b.set_ylabel("latents + activations held (GiB)")
    for ax in (a, b):
        ax.set_xlabel("time since arrival (s)")
        ax.set_ylim(bottom=0)
    for ax, ts, colour, what in ((c, s.llm_load, AR, "KV cache"), (d, s.image_load, IR, "latents + activations")):
        t0 = float(ts["t_s"].iloc[0])
        x, y = held(ts[ts["t_s"] < t0 + window_s])
        ax.plot(x, y, color=colour, lw=0.8)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel(f"{what} held (GiB)")
        ax.set_title("one replica under load (first minute)", fontsize="medium")
        ax.set_ylim(bottom=0)
    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
    fig.suptitle(f"State during generation on one {GPU}: growing KV cache vs fixed-size latent")
    return fig


# --------------------------------------------------------------------------- 2. cost


@dataclass
class Cost:
    """Per-request cost against request size (LLM: prompt and output tokens; diffusion: steps)."""

    llm: pd.DataFrame
    image: pd.DataFrame
    llm_price: float
    image_price: float
    gpu_ms_per_1k_prompt: float
    gpu_ms_per_1k_output: float
    llm_r2: float
    output_bins: pd.DataFrame
    prompt_bins: pd.DataFrame
    steps_means: pd.DataFrame
    gpu_ms_per_step: float
    image_fixed_gpu_ms: float
    image_r2: float
    e2e_ms_per_output_token: float
    e2e_r2_output: float
    e2e_r2_prompt: float
    e2e_ms_per_step: float
    e2e_r2_steps: float
    forming_share: float
    waiting_share: float
    """Of image E2E: time before the first step (queue and batch forming)."""
    text_tokens: int


def measure_cost(b: Budget) -> Cost:
    llm = run_scenario(
        scenario(
            "cost-llm",
            llm_pool(),
            chat_class(CHAT_RATE / 2, SPREAD_PROMPT, SPREAD_OUTPUT),
            b.duration_s,
            b.replications,
        )
    )
    steps = {"dist": "empirical", "values": SPREAD_STEPS}
    img = run_scenario(
        scenario("cost-image", image_pool(), image_class(IMAGE_RATE, steps=steps), b.duration_s, b.replications)
    )
    ld, idf = finished(llm), finished(img)
    idf = idf.astype({"steps": int, "images": int})  # an image-only table still has float columns
    p, o = ld["prompt_tokens"].to_numpy(float), ld["output_tokens"].to_numpy(float)
    coef, r2 = fit([p / 1000, o / 1000], ld["gpu_s"].to_numpy() * 1000)
    e2e_o, r2_o = fit([o], ld["e2e_s"].to_numpy() * 1000)
    _, r2_p = fit([p], ld["e2e_s"].to_numpy())
    st = idf["steps"].to_numpy(float)
    icoef, ir2 = fit([st], idf["gpu_s"].to_numpy() * 1000)
    e2e_s, r2_s = fit([st], idf["e2e_s"].to_numpy() * 1000)
    steps_means = idf.groupby("steps").agg(
        cost_usd=("cost_usd", "mean"), cost_std=("cost_usd", "std"), gpu_s=("gpu_s", "mean"), n=("gpu_s", "size")
    )
    spec = catalog.get_diffusion_model(IMAGE_MODEL)
    return Cost(
        ld,
        idf,
        llm.summary["pools"]["llm"]["price_per_gpu_hour"],
        img.summary["pools"]["sdxl"]["price_per_gpu_hour"],
        gpu_ms_per_1k_prompt=float(coef[1]),
        gpu_ms_per_1k_output=float(coef[2]),
        llm_r2=r2,
        output_bins=binned(ld, "output_tokens"),
        prompt_bins=binned(ld, "prompt_tokens"),
        steps_means=steps_means,
        gpu_ms_per_step=float(icoef[1]),
        image_fixed_gpu_ms=float(icoef[0]),
        image_r2=ir2,
        e2e_ms_per_output_token=float(e2e_o[1]),
        e2e_r2_output=r2_o,
        e2e_r2_prompt=r2_p,
        e2e_ms_per_step=float(e2e_s[1]),
        e2e_r2_steps=r2_s,
        forming_share=float(idf["forming_s"].sum() / idf["e2e_s"].sum()),
        waiting_share=float(idf["queue_s"].sum() / idf["e2e_s"].sum()),
        text_tokens=max(e.tokens for e in spec.text_encoders),
    )


def binned(df: pd.DataFrame, column: str, bins: int = 8) -> pd.DataFrame:
    """Mean cost per request in equal-width bins of a length column."""
    cut = pd.cut(df[column], bins)
    out = df.groupby(cut, observed=True).agg(
        cost_usd=("cost_usd", "mean"), gpu_s=("gpu_s", "mean"), n=("gpu_s", "size")
    )
    out["mid"] = [iv.mid for iv in out.index]
    return out.reset_index(drop=True)


def cost_figure(c: Cost) -> Figure:
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=False)
    k = 1000  # $ per 1,000 requests
    for ax, col, bins, label in (
        (axes[0], "output_tokens", c.output_bins, "output tokens"),
        (axes[1], "prompt_tokens", c.prompt_bins, "prompt tokens"),
    ):
        ax.scatter(c.llm[col], c.llm["cost_usd"] * k, s=3, alpha=0.15, color=AR, lw=0)
        ax.plot(bins["mid"], bins["cost_usd"] * k, "o-", color=AR, label="bin mean")
        ax.set_xlabel(f"{label} per request")
        ax.set_title(f"{LLM_MODEL}: cost vs {label}", fontsize="medium")
    axes[0].set_ylabel("cost ($ per 1,000 requests)")
    axes[0].legend(loc="upper left", fontsize="small")
    ax = axes[2]
    ax.scatter(c.image["steps"], c.image["cost_usd"] * k, s=6, alpha=0.2, color=IR, lw=0)
    ax.plot(c.steps_means.index, c.steps_means["cost_usd"] * k, "o-", color=IR, label="mean per step count")
    ax.set_xlabel("denoising steps per image")
    ax.set_ylabel("cost ($ per 1,000 images)")
    ax.set_title(f"{IMAGE_MODEL}: cost vs steps (no prompt-length input)", fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Cost per request on {GPU}: GPU time of each step shared among its requests, at the catalog price")
    return fig


# --------------------------------------------------------------------------- 3. streaming


@dataclass
class Streaming:
    """What a client sees first (token, preview) and when its request is done; preview cost."""

    llm: pd.DataFrame
    image: pd.DataFrame
    image_plain: pd.DataFrame
    ttft_p50: float
    ttft_p99: float
    llm_e2e_p50: float
    llm_e2e_p99: float
    ttft_share_p50: float
    preview_p50: float
    preview_p99: float
    image_e2e_p50: float
    image_e2e_p99: float
    plain_e2e_p50: float
    gpu_s_per_image: float
    plain_gpu_s_per_image: float
    previews_per_image: int

    @property
    def preview_extra(self) -> float:
        return self.gpu_s_per_image / self.plain_gpu_s_per_image - 1


def measure_streaming(b: Budget, llm_base: RunResult, image_base: RunResult) -> Streaming:
    prev = run_scenario(
        scenario(
            "image-previews",
            image_pool(preview_every=PREVIEW_EVERY),
            image_class(IMAGE_RATE),
            b.duration_s,
            b.replications,
        )
    )
    ld, idf, plain = finished(llm_base), finished(prev), finished(image_base)
    q = np.percentile
    return Streaming(
        ld,
        idf,
        plain,
        ttft_p50=q(ld["ttft_s"], 50),
        ttft_p99=q(ld["ttft_s"], 99),
        llm_e2e_p50=q(ld["e2e_s"], 50),
        llm_e2e_p99=q(ld["e2e_s"], 99),
        ttft_share_p50=float((ld["ttft_s"] / ld["e2e_s"]).median()),
        preview_p50=q(idf["preview_s"], 50),
        preview_p99=q(idf["preview_s"], 99),
        image_e2e_p50=q(idf["e2e_s"], 50),
        image_e2e_p99=q(idf["e2e_s"], 99),
        plain_e2e_p50=q(plain["e2e_s"], 50),
        gpu_s_per_image=float(idf["gpu_s"].sum() / idf["images"].sum()),
        plain_gpu_s_per_image=float(plain["gpu_s"].sum() / plain["images"].sum()),
        previews_per_image=(IMAGE["steps"] - 1) // PREVIEW_EVERY,
    )


def cdf(ax, values: pd.Series, **kw) -> None:
    v = np.sort(values.dropna().to_numpy())
    ax.plot(v, np.arange(1, len(v) + 1) / len(v), **kw)


def streaming_figure(s: Streaming) -> Figure:
    fig = Figure(figsize=(12, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    cdf(a, s.llm["ttft_s"], color=AR, ls="--", label="first token (TTFT)")
    cdf(a, s.llm["e2e_s"], color=AR, label="last token (E2E)")
    a.set_xscale("log")
    a.set_title(f"{LLM_MODEL}: tokens stream as they are computed", fontsize="medium")
    cdf(b, s.image["preview_s"], color=IR, ls="--", label=f"first preview (every {PREVIEW_EVERY} steps)")
    cdf(b, s.image["e2e_s"], color=IR, label="final image, previews on")
    cdf(b, s.image_plain["e2e_s"], color="0.5", label="final image, previews off")
    b.set_title(f"{IMAGE_MODEL}: previews are extra VAE decodes", fontsize="medium")
    for ax in (a, b):
        ax.set_xlabel("latency since arrival (s)")
        ax.set_ylabel("fraction of requests")
        ax.legend(loc="lower right", fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle("Streaming: what the user sees first, and when the request is done")
    return fig


# --------------------------------------------------------------------------- 4. retry


@dataclass
class Retry:
    """Work redone after replica failures, per retried request."""

    rows: pd.DataFrame
    """One row per variant: retried requests, extra GPU-s and E2E per retried request, baseline GPU-s."""
    llm_lost_gpu_s: float
    """GPU-seconds an interrupted LLM request had used when its replica failed (thrown away)."""
    llm_lost_n: int
    fault_times_s: tuple[float, ...]
    replicas: int


def fault_plan(b: Budget) -> dict:
    at = [[i % FAULT_REPLICAS, t] for i, t in enumerate(b.fault_times_s)]
    return {"at_s": at, "mttr_s": MTTR_S, "distribution": "fixed"}


def measure_retry(b: Budget) -> Retry:
    n, faults = FAULT_REPLICAS, fault_plan(b)

    def run(name: str, pool: dict, cls: dict) -> pd.DataFrame:
        return run_scenario(scenario(name, pool, cls, b.retry_duration_s, b.replications)).requests

    chat = chat_class(CHAT_RATE * n)
    rows = [
        extra_work(
            "LLM: restart from scratch",
            run("llm-ok", llm_pool(replicas=n), chat),
            run("llm-fault", llm_pool(replicas=n, faults=faults), chat),
        )
    ]
    # Without failures the sampler and checkpoints change nothing (saving latents is free
    # here), so one fault-free run is the baseline of every diffusion variant.
    image_ok = run("image-ok", image_pool(replicas=n), image_class(IMAGE_RATE * n))
    for label, sampler, every in (
        (f"diffusion, deterministic sampler, checkpoint every {CHECKPOINT_EVERY} steps", "dpmpp_2m", CHECKPOINT_EVERY),
        ("diffusion, deterministic sampler, no checkpoints", "dpmpp_2m", 0),
        (
            f"diffusion, stochastic sampler (checkpoint every {CHECKPOINT_EVERY}: unusable)",
            "euler_ancestral",
            CHECKPOINT_EVERY,
        ),
    ):
        pool = image_pool(replicas=n, faults=faults, checkpoint_every=every)
        rows.append(
            extra_work(
                label,
                image_ok,
                run(f"image-fault-{sampler}-{every}", pool, image_class(IMAGE_RATE * n, sampler=sampler)),
            )
        )
    # With no retries allowed an interrupted request fails, keeping the GPU time it had used:
    # exactly the work the failure threw away.
    lost = run("llm-fault-no-retry", llm_pool(replicas=n, faults=faults), chat_class(CHAT_RATE * n, max_retries=0))
    lost = lost[(lost["status"] == "failed") & (lost["retries"] > 0)]
    return Retry(pd.DataFrame(rows), float(lost["gpu_s"].mean()), len(lost), b.fault_times_s, n)


def extra_work(label: str, ok: pd.DataFrame, fault: pd.DataFrame) -> dict:
    """Per retried request: its GPU-seconds and E2E in the run with failures minus the same
    request's in the run without (same seed, same arrivals and sizes)."""
    keys = ["replication", "request_id"]
    m = fault.merge(ok, on=keys, suffixes=("", "_ok"))
    r = m[(m["retries"] > 0) & (m["status"] == "finished")]
    if r.empty:
        raise ValueError(f"two-shapes: no request was retried in {label!r}; schedule more faults or lengthen the run")
    row = {
        "variant": label,
        "retried": len(r),
        "extra_gpu_s": float((r["gpu_s"] - r["gpu_s_ok"]).mean()),
        "base_gpu_s": float(r["gpu_s_ok"].mean()),
        "extra_e2e_s": float((r["e2e_s"] - r["e2e_s_ok"]).mean()),
    }
    if "steps_computed" in r:
        row["extra_steps"] = float((r["steps_computed"] - r["steps"]).mean())
    return row


def retry_figure(r: Retry) -> Figure:
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2)
    rows = r.rows
    colours = [AR] + [IR] * (len(rows) - 1)
    labels = ["LLM\nrestart", "diffusion\ndet. + ckpt", "diffusion\ndet., no ckpt", "diffusion\nstochastic"][
        : len(rows)
    ]
    a.bar(labels, rows["extra_gpu_s"] / rows["base_gpu_s"] * 100, color=colours)
    a.set_ylabel("extra GPU time per retried request\n(% of its fault-free cost)")
    b.bar(labels, rows["extra_e2e_s"], color=colours)
    b.set_ylabel("extra E2E per retried request (s)")
    for ax in (a, b):
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize="small")
    fig.suptitle("Retry after a replica failure: work redone")
    return fig


# --------------------------------------------------------------------------- 5. batching


def measure_batching(b: Budget) -> pd.DataFrame:
    """Throughput and p99 E2E per (service, policy, offered rate): one row each."""
    rows = []
    for sched in ("continuous", "static"):
        for rate in b.llm_rates:
            res = run_scenario(
                scenario(
                    f"llm-{sched}-{rate:g}", llm_pool(scheduler=sched), chat_class(rate), b.duration_s, b.replications
                )
            )
            rows.append(sweep_row("llm", sched, rate, res, "chat"))
    steps = {"dist": "empirical", "values": SWEEP_STEPS}
    for policy, shapes in (("step", "bucket"), ("static", "bucket"), ("static", "pad")):
        for rate in b.image_rates:
            pool = image_pool(policy=policy, shapes=shapes)
            res = run_scenario(
                scenario(
                    f"image-{policy}-{shapes}-{rate:g}",
                    pool,
                    image_class(rate, steps=steps),
                    b.duration_s,
                    b.replications,
                )
            )
            label = "step-level" if policy == "step" else f"static ({shapes})"
            rows.append(sweep_row("image", label, rate, res, "image"))
    return pd.DataFrame(rows)


def sweep_row(service: str, policy: str, rate: float, res: RunResult, cls: str) -> dict:
    s = res.summary["classes"][cls]
    return {
        "service": service,
        "policy": policy,
        "offered": rate,
        "throughput": s["throughput_rps"]["mean"],
        "e2e_p99": s["e2e_s_p99"]["mean"],
        "overloaded": s["overloaded"],
    }


def batching_figure(sweep: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    styles = {"continuous": "o-", "static": "s--", "step-level": "o-", "static (bucket)": "s--", "static (pad)": "^:"}
    for col, (service, title, unit) in enumerate((("llm", LLM_MODEL, "req/s"), ("image", IMAGE_MODEL, "images/s"))):
        df = sweep[sweep["service"] == service]
        for policy, grp in df.groupby("policy", sort=False):
            axes[0, col].plot(grp["offered"], grp["throughput"], styles[policy], label=policy)
            axes[1, col].plot(grp["offered"], grp["e2e_p99"], styles[policy], label=policy)
            over = grp[grp["overloaded"]]
            axes[1, col].plot(over["offered"], over["e2e_p99"], "x", color="k", ms=9)
        lim = df["offered"].max() * 1.05
        axes[0, col].plot([0, lim], [0, lim], color="0.7", lw=0.8, label="served = offered")
        axes[0, col].set_title(f"{title}: throughput", fontsize="medium")
        axes[0, col].set_ylabel(f"completed ({unit})")
        axes[1, col].set_title(f"{title}: p99 E2E latency (x: overloaded)", fontsize="medium")
        axes[1, col].set_yscale("log")
        axes[1, col].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1, col].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        axes[1, col].set_ylabel("p99 E2E (s)")
        for ax in axes[:, col]:
            ax.set_xlabel(f"offered load ({unit})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    fig.suptitle(f"Batching on one {GPU} replica")
    return fig


# --------------------------------------------------------------------------- the page


def fmt(x: float, digits: int = 3) -> str:
    """``digits`` significant figures, thousands separated, never scientific notation."""
    if not math.isfinite(x):
        raise ValueError(f"two-shapes: a figure for the page is not a finite number ({x!r})")
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def pct(x: float) -> str:
    return f"{fmt(100 * x, 2)} %"


def policy_point(sweep: pd.DataFrame, service: str, policy: str) -> pd.DataFrame:
    """One policy's rows of the sweep, indexed by offered load."""
    return sweep[(sweep["service"] == service) & (sweep["policy"] == policy)].set_index("offered")


def best(sweep: pd.DataFrame, service: str, policy: str) -> float:
    """The most requests per second a policy completed at any load of the sweep."""
    return float(policy_point(sweep, service, policy)["throughput"].max())


def highest_stable_load(sweep: pd.DataFrame, service: str, policy: str) -> float:
    """The highest offered load that ``policy`` still serves without overload (else the lowest)."""
    df = policy_point(sweep, service, policy)
    ok = df[~df["overloaded"]]
    return float(ok.index.max() if len(ok) else df.index.min())


@dataclass
class Results:
    """Everything the page quotes."""

    budget: Budget
    llm_base: RunResult
    image_base: RunResult
    state: State
    cost: Cost
    streaming: Streaming
    retry: Retry
    sweep: pd.DataFrame


def render(r: Results) -> str:
    return "\n".join(
        [
            header(r),
            setup(r),
            state_section(r),
            cost_section(r),
            streaming_section(r),
            retry_section(r),
            batching_section(r),
            table(r),
        ]
    )


def header(r: Results) -> str:
    quick = (
        f"\n\n*Quick mode (`{COMMAND} --quick`): short runs, one replication, rougher numbers.*"
        if r.budget is QUICK
        else ""
    )
    return f"""<!-- Generated by `{COMMAND}`: do not edit by hand, run it again. -->
# Two shapes, measured

This page is generated: `{COMMAND}` builds the scenarios described below in code, runs them,
and writes this file and its plots. Every number on it comes out of those runs. It puts
figures on the table of the seed article "Two Shapes, Not One" (autoregressive generation vs
iterative refinement), with an LLM service and a diffusion service on the same GPU.{quick}
"""


def setup(r: Results) -> str:
    b, llm, img = r.budget, r.llm_base.scenario, r.image_base.scenario
    lp, ip, lc, ic = llm.pools[0], img.pools[0], llm.classes[0], img.classes[0]
    e, bt = lp.engine, ip.diffusion
    return f"""## Setup

| | autoregressive | iterative refinement |
|---|---|---|
| model | {catalog.get_model(lp.model).display_name} (`{lp.model}`) | {catalog.get_diffusion_model(ip.model).display_name} (`{ip.model}`) |
| GPU | one {catalog.get_gpu(lp.gpu).display_name} per replica, ${fmt(r.cost.llm_price)}/GPU-hour | one {catalog.get_gpu(ip.gpu).display_name} per replica, ${fmt(r.cost.image_price)}/GPU-hour |
| engine | `scheduler: {e.scheduler}`, `max_num_seqs: {e.max_num_seqs}`, `max_num_batched_tokens: {e.max_num_batched_tokens}`, roofline costs | `policy: {bt.policy}`, `max_batch_size: {bt.max_batch_size}`, `max_wait_s: {bt.max_wait_s:g}`, `shapes: {bt.shapes}`, roofline costs |
| requests | Poisson {fmt(lc.arrival.rate)}/s; prompt lognormal mean {CHAT_PROMPT["mean"]:,}, output lognormal mean {CHAT_OUTPUT["mean"]:,} tokens | Poisson {fmt(ic.arrival.rate)}/s; {ic.image.width}x{ic.image.height}, {ic.image.steps} steps, `{ic.image.sampler}`, 1 image |

Each run generates arrivals for {fmt(b.duration_s)} simulated seconds ({fmt(b.retry_duration_s)} s for the retry runs;
the first 10 % is left out as warm-up) in {b.replications} seeded replication(s), all with seed {SEED}, so that
the variants of a service see the same requests. The sections below change one thing at a time.
The cost of a request is its GPU-seconds at the GPU's price; an engine step's GPU time is shared
among the requests in it (LLM: by tokens; diffusion: by latent rows).
"""


def state_section(r: Results) -> str:
    s = r.state
    lo, hi = s.image_gib_per_image
    per_image = f"{fmt(lo)} GiB" if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)} GiB"
    return f"""## 1. State during generation

![state over time](img/two-shapes/state.png)

One {LLM_MODEL} request alone on a replica ({SOLO_PROMPT:,}-token prompt, {SOLO_OUTPUT:,} output tokens) held
**{fmt(s.kv_after_prompt_gib)} GiB** of KV cache after its prompt and **{fmt(s.kv_at_end_gib)} GiB** at its last token:
**{fmt(s.kv_mib_per_token)} MiB more per generated token** (allocated in blocks of
{r.llm_base.scenario.pools[0].engine.block_size} tokens). One {IMAGE["width"]}x{IMAGE["height"]} {IMAGE_MODEL} image held
**{fmt(s.image_first_gib)} GiB** of latents and activations at step 1 and **{fmt(s.image_last_gib)} GiB** at step
{s.image_steps}: the same block, refined.

Under load (bottom row) the LLM replica's KV cache rises and falls with every token and every
request (time-weighted mean {fmt(s.llm_load_mean_gib)} GiB, peak {fmt(s.llm_load_max_gib)} GiB), while the diffusion
replica holds {per_image} per image in every batch, from its first step to its last (peak {fmt(s.image_load_max_gib)} GiB
with {round(s.image_load_max_gib / hi)} images in a batch).
"""


def cost_section(r: Results) -> str:
    c = r.cost
    ob, pb, sm = c.output_bins, c.prompt_bins, c.steps_means
    k = 1000
    cv = (sm["cost_std"] / sm["cost_usd"]).max()
    return f"""## 2. Cost per request

![cost vs size](img/two-shapes/cost.png)

The LLM run draws prompts uniformly from {SPREAD_PROMPT["low"]:,}-{SPREAD_PROMPT["high"]:,} tokens and outputs from
{SPREAD_OUTPUT["low"]:,}-{SPREAD_OUTPUT["high"]:,} tokens; the diffusion run draws {", ".join(map(str, SPREAD_STEPS))} steps.

* **LLM, output length:** ${fmt(ob["cost_usd"].iloc[0] * k)} per 1,000 requests in the shortest-output bin
  (about {fmt(ob["mid"].iloc[0])} tokens), ${fmt(ob["cost_usd"].iloc[-1] * k)} in the longest (about {fmt(ob["mid"].iloc[-1])} tokens),
  x{fmt(ob["cost_usd"].iloc[-1] / ob["cost_usd"].iloc[0], 2)}.
* **LLM, prompt length:** ${fmt(pb["cost_usd"].iloc[0] * k)} per 1,000 requests in the shortest-prompt bin, ${fmt(pb["cost_usd"].iloc[-1] * k)} in
  the longest, x{fmt(pb["cost_usd"].iloc[-1] / pb["cost_usd"].iloc[0], 2)}. A least-squares fit of GPU time per request on both
  lengths gives {fmt(c.gpu_ms_per_1k_prompt)} GPU-ms per 1,000 prompt tokens and {fmt(c.gpu_ms_per_1k_output)} GPU-ms per 1,000
  output tokens (R² {fmt(c.llm_r2, 2)}): an output token costs {fmt(c.gpu_ms_per_1k_output / c.gpu_ms_per_1k_prompt, 2)}x a prompt
  token, since a prompt is computed many tokens per step and a decode step yields one token per request.
  (A long context makes every decode step of its batch slower; the simulator shares that time
  among the step's tokens, so the requests in the batch pay for it together.)
* **Diffusion:** an image request has no prompt length in the model at all: {IMAGE_MODEL}'s text encoders
  always run their fixed {c.text_tokens}-token context, so what the prompt says cannot change the cost. Steps do:
  ${fmt(sm["cost_usd"].iloc[0] * k)} per 1,000 images at {sm.index[0]} steps, ${fmt(sm["cost_usd"].iloc[-1] * k)} at {sm.index[-1]} steps;
  fit {fmt(c.image_fixed_gpu_ms)} GPU-ms fixed (text encoders, VAE decode) + {fmt(c.gpu_ms_per_step)} GPU-ms per step
  (R² {fmt(c.image_r2, 2)}). At a given step count the cost still varies by up to {pct(cv)} (coefficient of
  variation) with how many images shared the batch.
"""


def streaming_section(r: Results) -> str:
    s = r.streaming
    return f"""## 3. Streaming

![streaming](img/two-shapes/streaming.png)

* **LLM:** the first token arrives after {fmt(s.ttft_p50)} s at the median (p99 {fmt(s.ttft_p99)} s); the last after
  {fmt(s.llm_e2e_p50)} s (p99 {fmt(s.llm_e2e_p99)} s). The median request shows its first token after {pct(s.ttft_share_p50)} of
  its time, at no extra cost: each token is an output as soon as it is computed.
* **Diffusion:** with a preview decoded every {PREVIEW_EVERY} steps ({s.previews_per_image} per {IMAGE["steps"]}-step image), the
  first preview arrives after {fmt(s.preview_p50)} s at the median (p99 {fmt(s.preview_p99)} s) and the image after
  {fmt(s.image_e2e_p50)} s (p99 {fmt(s.image_e2e_p99)} s), against {fmt(s.plain_e2e_p50)} s without previews. The previews cost
  {fmt(s.gpu_s_per_image)} GPU-s per image against {fmt(s.plain_gpu_s_per_image)}: **+{pct(s.preview_extra)}** GPU time for a
  blurry early look.
"""


def retry_section(r: Results) -> str:
    rt = r.retry
    lines = [
        "| variant | retried requests | extra GPU-s per retried request | % of its fault-free GPU-s | extra steps computed | extra E2E (s) |",
        "|---|---|---|---|---|---|",
    ]
    for _, row in rt.rows.iterrows():
        steps = fmt(row["extra_steps"], 2) if not pd.isna(row.get("extra_steps", float("nan"))) else "-"
        lines.append(
            f"| {row['variant']} | {row['retried']} | {fmt(row['extra_gpu_s'], 2)} | "
            f"{pct(row['extra_gpu_s'] / row['base_gpu_s'])} | {steps} | {fmt(row['extra_e2e_s'], 2)} |"
        )
    llm = rt.rows.iloc[0]
    times = rt.fault_times_s
    return f"""## 4. Retry after a fault

![retry](img/two-shapes/retry.png)

Pools of {rt.replicas} replicas at {rt.replicas} times the load above. {len(times)} failures per run, evenly spaced
from t = {fmt(times[0])} s to {fmt(times[-1])} s, take down replicas 0, 1, 2, ... in turn for {fmt(MTTR_S)} s
each. Each run with failures is compared request by request with the same run without them.

{chr(10).join(lines)}

An interrupted LLM request loses its KV cache and starts again on another replica: it had used
**{fmt(rt.llm_lost_gpu_s, 2)} GPU-s** when the failure threw its work away (mean of {rt.llm_lost_n} requests in a run
without retries). Its net extra is smaller ({fmt(llm["extra_gpu_s"], 2)} GPU-s) because the redo ran on
the surviving replicas in fuller batches, where each token's share of a step is cheaper. A
deterministic sampler gives the same image on a retry, but only the checkpoints save compute:
without them it redoes as much as a stochastic sampler, whose fresh noise makes a saved step useless.
"""


def batching_section(r: Results) -> str:
    sw = r.sweep
    lc, ls = best(sw, "llm", "continuous"), best(sw, "llm", "static")
    load = highest_stable_load(sw, "llm", "continuous")
    c, s = policy_point(sw, "llm", "continuous").loc[load], policy_point(sw, "llm", "static").loc[load]
    ist, iss, ipad = (
        best(sw, "image", "step-level"),
        best(sw, "image", "static (bucket)"),
        best(sw, "image", "static (pad)"),
    )
    iload = highest_stable_load(sw, "image", "static (bucket)")
    st_, sb = (
        policy_point(sw, "image", "step-level").loc[iload],
        policy_point(sw, "image", "static (bucket)").loc[iload],
    )
    lines = [
        "| service | policy | offered (/s) | completed (/s) | p99 E2E (s) | overloaded |",
        "|---|---|---|---|---|---|",
    ]
    for _, row in sw.iterrows():
        lines.append(
            f"| {row['service']} | {row['policy']} | {fmt(row['offered'])} | {fmt(row['throughput'])} | "
            f"{fmt(row['e2e_p99'])} | {'yes' if row['overloaded'] else 'no'} |"
        )
    return f"""## 5. Batching

![batching](img/two-shapes/batching.png)

One replica of each service at rising load. The LLM runs the chat traffic above with vLLM's
continuous (iteration-level) scheduler and with request-level static batches; the diffusion
replica serves a mix of {", ".join(map(str, SWEEP_STEPS))} steps with step-level batching (requests join and leave
between steps), static batches of one step count (`bucket`), or static batches padded to their
longest member (`pad`).

* **LLM:** continuous batching completed up to **{fmt(lc)} req/s**, static batching {fmt(ls)} req/s
  (x{fmt(lc / ls, 2)}). At {fmt(load)} req/s offered, p99 E2E was {fmt(c["e2e_p99"])} s continuous against
  {fmt(s["e2e_p99"])} s static.
* **Diffusion:** step-level {fmt(ist)} images/s, static (bucket) {fmt(iss)}, static (pad) {fmt(ipad)}. At
  {fmt(iload)} images/s, p99 E2E was {fmt(st_["e2e_p99"])} s step-level against {fmt(sb["e2e_p99"])} s static. A denoising
  step at this resolution is compute-bound, so batching adds little throughput whatever the policy;
  padding to the slowest member wastes steps.

{chr(10).join(lines)}
"""


def table(r: Results) -> str:
    s, c, st, rt, sw = r.state, r.cost, r.streaming, r.retry.rows, r.sweep
    ob, sm = c.output_bins, c.steps_means
    k = 1000
    ckpt, nockpt, stoch = rt.iloc[1], rt.iloc[2], rt.iloc[3]
    lc, ls = best(sw, "llm", "continuous"), best(sw, "llm", "static")
    ist, iss = best(sw, "image", "step-level"), best(sw, "image", "static (bucket)")
    load, iload = highest_stable_load(sw, "llm", "continuous"), highest_stable_load(sw, "image", "static (bucket)")
    p99 = {
        (svc, pol): policy_point(sw, svc, pol).loc[x, "e2e_p99"]
        for svc, x, pols in (
            ("llm", load, ("continuous", "static")),
            ("image", iload, ("step-level", "static (bucket)")),
        )
        for pol in pols
    }
    rows = [
        (
            "State during generation",
            f"KV cache, grows per token: {fmt(s.kv_after_prompt_gib)} GiB after a {SOLO_PROMPT:,}-token prompt, {fmt(s.kv_at_end_gib)} GiB after {SOLO_OUTPUT:,} output tokens (+{fmt(s.kv_mib_per_token)} MiB/token)",
            f"Fixed-size latent: {fmt(s.image_first_gib)} GiB at step 1, {fmt(s.image_last_gib)} GiB at step {s.image_steps}",
        ),
        (
            "Cost per request",
            f"Variable: ${fmt(ob['cost_usd'].iloc[0] * k)} to ${fmt(ob['cost_usd'].iloc[-1] * k)} per 1,000 requests from the shortest to the longest outputs",
            f"Fixed by step count: ${fmt(sm['cost_usd'].iloc[0] * k)} per 1,000 images at {sm.index[0]} steps, ${fmt(sm['cost_usd'].iloc[-1] * k)} at {sm.index[-1]}; no prompt-length input",
        ),
        (
            "Streaming",
            f"Natural: first token at {fmt(st.ttft_p50)} s, last at {fmt(st.llm_e2e_p50)} s (medians), no extra work",
            f"Faked: first preview at {fmt(st.preview_p50)} s, image at {fmt(st.image_e2e_p50)} s (medians), +{pct(st.preview_extra)} GPU time",
        ),
        (
            "Mid-failure retry",
            f"Restart: {fmt(r.retry.llm_lost_gpu_s, 2)} GPU-s of work lost per interrupted request, +{fmt(rt.iloc[0]['extra_e2e_s'], 2)} s E2E",
            f"Resume: +{fmt(ckpt['extra_gpu_s'], 2)} GPU-s ({fmt(ckpt['extra_steps'], 2)} steps) with checkpoints; +{fmt(nockpt['extra_gpu_s'], 2)} without; stochastic sampler +{fmt(stoch['extra_gpu_s'], 2)} ({fmt(stoch['extra_steps'], 2)} steps)",
        ),
        (
            "Batching",
            f"Continuous: {fmt(lc)} req/s per replica vs {fmt(ls)} static (x{fmt(lc / ls, 2)}); p99 E2E at {fmt(load)} req/s {fmt(p99['llm', 'continuous'])} s vs {fmt(p99['llm', 'static'])} s",
            f"Static: {fmt(iss)} images/s per replica, step-level {fmt(ist)} ({'+' if ist >= iss else ''}{pct(ist / iss - 1)}); p99 E2E at {fmt(iload)} images/s {fmt(p99['image', 'static (bucket)'])} s vs {fmt(p99['image', 'step-level'])} s step-level",
        ),
        (
            "What dominates latency",
            f"Output length x per-token cost: {fmt(c.e2e_ms_per_output_token)} ms per output token, R² {fmt(c.e2e_r2_output, 2)} (prompt alone: R² {fmt(c.e2e_r2_prompt, 2)})",
            f"Step count x per-step cost: {fmt(c.e2e_ms_per_step)} ms per step, R² {fmt(c.e2e_r2_steps, 2)}: waiting for a batch and a free replica is {pct(c.waiting_share)} of E2E (batch forming alone {pct(c.forming_share)})",
        ),
        (
            "What dominates total cost",
            f"Prompt and output tokens: {fmt(c.gpu_ms_per_1k_prompt)} GPU-ms per 1,000 prompt tokens, {fmt(c.gpu_ms_per_1k_output)} per 1,000 output tokens",
            f"Step count x network size: {fmt(c.gpu_ms_per_step)} GPU-ms per step + {fmt(c.image_fixed_gpu_ms)} GPU-ms fixed",
        ),
    ]
    lines = ["| Property | Autoregressive | Iterative refinement |", "|---|---|---|"]
    lines += [f"| {p} | {a} | {i} |" for p, a, i in rows]
    return f"""## The table, measured

The seed article's table, with each cell's claim followed by what the runs above measured
({LLM_MODEL} vs {IMAGE_MODEL}, one {GPU} per replica).

{chr(10).join(lines)}
"""


# --------------------------------------------------------------------------- entry point


def measure(b: Budget) -> Results:
    llm_base = run_scenario(scenario("llm-service", llm_pool(), chat_class(CHAT_RATE), b.duration_s, b.replications))
    image_base = run_scenario(
        scenario("image-service", image_pool(), image_class(IMAGE_RATE), b.duration_s, b.replications)
    )
    return Results(
        b,
        llm_base,
        image_base,
        measure_state(llm_base, image_base),
        measure_cost(b),
        measure_streaming(b, llm_base, image_base),
        measure_retry(b),
        measure_batching(b),
    )


def save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # render with Agg, without touching pyplot's global backend
    fig.savefig(path, dpi=110)
    return path


def main(out_dir: str | Path = "docs/explanation", quick: bool = False) -> Path:
    """Run every scenario and write ``two-shapes.md`` and its plots under ``out_dir``."""
    out = Path(out_dir)
    img = out / "img" / "two-shapes"
    img.mkdir(parents=True, exist_ok=True)
    r = measure(QUICK if quick else FULL)
    save(state_figure(r.state), img / "state.png")
    save(cost_figure(r.cost), img / "cost.png")
    save(streaming_figure(r.streaming), img / "streaming.png")
    save(retry_figure(r.retry), img / "retry.png")
    save(batching_figure(r.sweep), img / "batching.png")
    page = out / "two-shapes.md"
    page.write_text(render(r), encoding="utf-8")
    return page


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="docs/explanation",
        help="directory for two-shapes.md and img/two-shapes/ (default: docs/explanation)",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one replication (seconds; rougher numbers)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    page = main(args.out, args.quick)
    print(f"wrote {page} and its plots in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
