"""Pricing: what each request costs, what a price list earns, and where it breaks even.

    from sim.run import run_scenario
    from sim.price import load_price_list, price_scenario
    report = price_scenario(run_scenario("scenarios/pricing_study.yaml"), load_price_list("scenarios/prices/example.yaml"))
    report.classes      # per class: cost per request percentiles, $ per unit, revenue, margin
    report.overall      # fleet bill, attributed and idle cost, revenue, margin, break-even utilisation

The rules, stated once (the CLI prints them, docs/how-to/price-requests.md derives them):

* **Attributed cost**: a request's GPU-seconds (the engine shares each step's GPU time among
  its rows per token scheduled, or per latent row for diffusion) x its pool's $/GPU-second.
* **Idle allocation**: a pool's GPU bill (simulated time x its GPUs x $/GPU-hour, summed over
  replications, warm-up and drain included, so that costs add up to the bill) minus what its
  requests were attributed, spread over the classes in proportion to their attributed
  GPU-seconds in that pool. Per request: fully loaded = attributed x bill / attributed, per
  pool and replication.
* **Input vs output** (text): a request's cost is split by the GPU time it was attributed in
  steps that computed its prompt (more than one token of it: prefill, or recompute after a
  preemption) vs steps that decoded one token of it. Decode is memory-bound and runs in small
  per-request shares of many steps, so an output token costs many times a prompt token.
* **Margin** = (revenue - fully loaded cost) / revenue; revenue comes from finished requests.
* **Utilisation** = the served requests' work at capacity / the GPU time billed. For a diffusion
  pool the work is the attributed GPU time (a batch's cost per image barely depends on how full it
  is). For an LLM pool it is each request's prompt and output tokens at the pool's cost per token
  at its largest decode batch (``sim.fleet.capacity``): a continuously batched GPU is busy
  whenever a request is in flight, so its busy time says nothing of how much more it could serve.
* **Break-even utilisation** u* = work-at-capacity cost / revenue. The bill per hour B is fixed;
  revenue per GPU-second of work at capacity (R/W) is fixed by the request mix; at utilisation u
  the fleet earns u x B x R/W per hour, which equals B at u = W/R. u* > 1: no load breaks even.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim import catalog
from sim.config import NEW_KINDS, PARENT_KINDS, Scenario, parse_scenario, read_yaml
from sim.errors import ConfigError
from sim.metrics.summary import fold_prefill_legs, t_half_width

IDLE_RULE = "idle GPU time is allocated to classes in proportion to their attributed GPU-seconds within each pool"
SPLIT_RULE = "a text request's cost is split between input and output by the GPU time it was attributed in prefill steps (its prompt, and recompute after a preemption) vs decode steps"
BREAK_EVEN_RULE = (
    "utilisation = served work at capacity / GPU time billed (LLM pools: tokens at the cost per token of the largest decode batch; "
    "diffusion: attributed GPU time); break-even utilisation = that work's cost / revenue (bill per hour fixed, revenue proportional to load)"
)

# Illustrative defaults, derived from the catalog (not market quotes): text $0.02 (input) and
# $0.06 (output) per 1M tokens per billion active parameters; images and video $0.01 per PFLOP
# of denoiser compute the request's shape needs (steps x forward FLOPs, x2 with CFG).
DEFAULT_INPUT_USD_PER_1M_PER_B = 0.02
DEFAULT_OUTPUT_USD_PER_1M_PER_B = 0.06
DEFAULT_USD_PER_DENOISER_PFLOP = 0.01


@dataclass(frozen=True)
class PriceEntry:
    """What one class is charged; components add up (a request pays each that applies)."""

    per_1m_input_usd: float = 0.0
    per_1m_output_usd: float = 0.0
    per_image_usd: float = 0.0
    per_video_second_usd: float = 0.0
    per_audio_minute_usd: float = 0.0
    per_request_usd: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.per_1m_input_usd or self.per_1m_output_usd:
            parts.append(f"${self.per_1m_input_usd:.4g}/${self.per_1m_output_usd:.4g} per 1M in/out tokens")
        if self.per_image_usd:
            parts.append(f"${self.per_image_usd:.4g} per image")
        if self.per_video_second_usd:
            parts.append(f"${self.per_video_second_usd:.4g} per video second")
        if self.per_audio_minute_usd:
            parts.append(f"${self.per_audio_minute_usd:.4g} per audio minute")
        if self.per_request_usd:
            parts.append(f"${self.per_request_usd:.4g} per request")
        return " + ".join(parts) or "free"


FIELDS = tuple(PriceEntry.__dataclass_fields__)
_FOR_KIND = {
    "text": {"per_1m_input_usd", "per_1m_output_usd", "per_request_usd"},
    "image": {"per_image_usd", "per_video_second_usd", "per_request_usd"},
    "pipeline": {"per_request_usd"},
    "dllm": {"per_1m_input_usd", "per_1m_output_usd", "per_request_usd"},
    "ar_image": {"per_image_usd", "per_request_usd"},
    "hybrid": {"per_image_usd", "per_request_usd"},
    "audio": {"per_audio_minute_usd", "per_request_usd"},
}


@dataclass(frozen=True)
class PriceList:
    classes: dict[str, PriceEntry]
    source: str
    """Where the prices came from: a file, or 'default (illustrative)'."""


def load_price_list(path: str | os.PathLike) -> PriceList:
    """A price list YAML: ``classes: {NAME: {per_1m_input_usd: .., per_image_usd: .., ...}}``
    (optional ``name``, ``date``, ``source`` keys for provenance). ConfigError, one line, if bad."""
    path = Path(path)
    raw = read_yaml(path, "price list")
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), dict) or not raw["classes"]:
        raise ConfigError(f"{path}: a price list is a mapping with 'classes: {{NAME: {{per_1m_input_usd: ..., ...}}}}'")
    extra = set(raw) - {"classes", "name", "date", "source"}
    if extra:
        raise ConfigError(f"{path}: unknown key {sorted(extra)[0]!r}; allowed: classes, name, date, source")
    entries = {}
    for name, spec in raw["classes"].items():
        where = f"{path}: classes.{name}"
        if not isinstance(spec, dict) or not spec:
            raise ConfigError(f"{where}: expected a mapping of prices, one or more of {', '.join(FIELDS)}")
        for key, value in spec.items():
            if key not in FIELDS:
                raise ConfigError(f"{where}.{key}: unknown price; allowed: {', '.join(FIELDS)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{key}: expected a non-negative number of dollars, got {value!r}")
        entries[str(name)] = PriceEntry(**{k: float(v) for k, v in spec.items()})
    return PriceList(entries, str(path))


def check_price_list(prices: PriceList, scenario: Scenario) -> None:
    """Every priced class exists, and each is priced in units its kind produces."""
    kinds = {c.name: c.kind for c in scenario.classes}
    for name, entry in prices.classes.items():
        if name not in kinds:
            raise ConfigError(
                f"{prices.source}: classes.{name}: no such class in {scenario.name} (classes: {', '.join(kinds)})"
            )
        used = {k for k, v in asdict(entry).items() if v}
        wrong = sorted(used - _FOR_KIND[kinds[name]])
        if wrong:
            raise ConfigError(
                f"{prices.source}: classes.{name}.{wrong[0]}: does not apply to {'an' if kinds[name][0] in 'aeiou' else 'a'} {kinds[name]} class; "
                f"use {', '.join(sorted(_FOR_KIND[kinds[name]]))}"
            )


def _image_flops(model: str, width: float, height: float, frames: float, steps: float, cfg: bool) -> float:
    spec = catalog.get_diffusion_model(model)
    tokens = spec.latent_tokens(int(width), int(height), int(max(frames, 1)))
    return float(steps) * spec.denoiser_flops(tokens) * (2 if cfg else 1)


def _default_leaf_revenue(rows: pd.DataFrame, models: dict[str, str]) -> np.ndarray:
    """Revenue of leaf rows (text or image) under the illustrative catalog-derived rule."""
    out = np.zeros(len(rows))
    for i, r in enumerate(rows.itertuples(index=False)):
        model = models.get(r.pool)
        if model is None:
            continue
        if r.kind == "text":
            b = catalog.get_model(model).params_active / 1e9
            out[i] = (
                (
                    r.prompt_tokens * DEFAULT_INPUT_USD_PER_1M_PER_B
                    + r.generated_tokens * DEFAULT_OUTPUT_USD_PER_1M_PER_B
                )
                * b
                / 1e6
            )
        else:
            flops = _image_flops(model, r.width, r.height, r.frames, r.steps, bool(r.cfg))
            out[i] = flops / 1e15 * DEFAULT_USD_PER_DENOISER_PFLOP * r.images
    return out


def default_price_list(result) -> PriceList:
    """Illustrative prices derived from the catalog (see the DEFAULT_* constants): per token
    for text, flat per image (or per video second) for image classes at the class's typical
    shape in this run, and for pipelines flat per request at the mean of their stages' prices."""
    sc: Scenario = result.scenario
    models = {p.name: p.model for p in sc.pools}
    req = result.requests
    entries = {}
    for cls in sc.classes:
        rows = req[(req["class"] == cls.name) & (req["status"] == "finished")]
        if cls.kind in NEW_KINDS:
            entries[cls.name] = _default_kind_price(cls, catalog.get_model(models[cls.pool]).params_active / 1e9)
            continue
        if cls.kind == "text":
            b = catalog.get_model(models[cls.pool]).params_active / 1e9
            entries[cls.name] = PriceEntry(
                per_1m_input_usd=round(DEFAULT_INPUT_USD_PER_1M_PER_B * b, 4),
                per_1m_output_usd=round(DEFAULT_OUTPUT_USD_PER_1M_PER_B * b, 4),
            )
            continue
        if cls.kind == "image":
            rows = rows[rows["kind"] == "image"]
            if rows.empty:
                entries[cls.name] = PriceEntry(per_image_usd=0.0)
                continue
            spec = catalog.get_diffusion_model(models[cls.pool])
            shape = rows[["width", "height", "frames", "steps", "cfg"]].mode().iloc[0]
            usd = (
                _image_flops(spec.name, shape.width, shape.height, shape.frames, shape.steps, bool(shape.cfg))
                / 1e15
                * DEFAULT_USD_PER_DENOISER_PFLOP
            )
            if spec.kind == "video":
                entries[cls.name] = PriceEntry(
                    per_video_second_usd=float(f"{usd / spec.video_seconds(int(shape.frames)):.3g}")
                )
            else:
                entries[cls.name] = PriceEntry(per_image_usd=float(f"{usd:.3g}"))
            continue
        stages = req[(req["class"] == cls.name) & (req["parent_id"] >= 0)]
        done = rows.loc[rows["kind"] == "pipeline", ["replication", "request_id"]]
        stages = stages.merge(done.rename(columns={"request_id": "parent_id"}), on=["replication", "parent_id"])
        total = _default_leaf_revenue(stages, models).sum()
        entries[cls.name] = PriceEntry(per_request_usd=float(f"{total / max(len(done), 1):.3g}"))
    return PriceList(entries, "default (illustrative, derived from the catalog)")


def _default_kind_price(cls, b: float) -> PriceEntry:
    """The illustrative price of a class of a new kind, from the text rule (per token, per
    billion active parameters): a diffusion LM per token as text; an image (AR or hybrid) flat,
    at the output rate for the tokens its rows generate; audio per minute, at the output rate
    for the decoder steps a minute of audio takes."""
    out = DEFAULT_OUTPUT_USD_PER_1M_PER_B * b / 1e6
    shape = cls.shape
    if cls.kind == "dllm":
        return PriceEntry(
            per_1m_input_usd=round(DEFAULT_INPUT_USD_PER_1M_PER_B * b, 4), per_1m_output_usd=round(out * 1e6, 4)
        )
    if cls.kind == "audio":
        rows = 2 if shape.cfg else 1
        return PriceEntry(per_audio_minute_usd=float(f"{out * shape.steps_per_audio_s * 60 * rows:.3g}"))
    tokens = shape.image_tokens if cls.kind == "ar_image" else sum(shape.blocks)
    rows = 2 if shape.cfg else 1
    return PriceEntry(per_image_usd=float(f"{out * tokens * rows:.3g}"))


# --------------------------------------------------------------------------- the report


@dataclass
class PriceReport:
    scenario: str
    prices: PriceList
    overall: dict[str, Any]
    """Fleet: bill, attributed, idle, revenue, margin (with 95 % CI over replications),
    utilisation (served work at capacity / GPU time billed), busy fraction, break-even utilisation."""
    pools: pd.DataFrame
    """Per pool: GPUs, bill, attributed and idle $, utilisation, loaded factor (bill / attributed)."""
    classes: pd.DataFrame
    """Per class: cost per request percentiles (attributed and loaded), $ per unit, revenue, margin."""
    comparison: pd.DataFrame
    """Per class: the price list vs one flat price per request earning the same revenue."""
    requests: pd.DataFrame = field(repr=False)
    """One row per top-level request (pipelines, not their stages): cost, loaded cost, revenue."""
    sensitivity: pd.DataFrame | None = None
    """Margin and cost per unit vs load and vs denoising steps (``price_sensitivity``)."""
    notes: list[str] = field(default_factory=list)
    rules: tuple[str, ...] = (IDLE_RULE, SPLIT_RULE, BREAK_EVEN_RULE)


def _ci95(values: np.ndarray) -> float:
    """The 95 % half-width over replications of their finite values (NaN with fewer than two)."""
    values = np.asarray(values, float)
    return t_half_width(values[np.isfinite(values)])


def capacity_gpu_s(result) -> np.ndarray:
    """Per leaf request (rows of ``result.requests`` that are not pipelines, in order): the
    GPU-seconds its work takes at capacity. An LLM request's computed prompt tokens (prefix-cache
    hits excluded) and generated tokens at its pool's cost per token at the full decode batch
    (``sim.fleet.capacity``); an image request's attributed GPU-seconds."""
    from sim.costs.factory import build_cost_model
    from sim.fleet.capacity import text_capacity

    req = result.requests
    leaf = req[~req["kind"].isin(PARENT_KINDS)]
    out = leaf["gpu_s"].to_numpy(float).copy()
    pools = {p.name: p for p in result.scenario.pools}
    text = (leaf["kind"] == "text").to_numpy()
    if not text.any():
        return out
    pool_of = leaf["pool"].astype(str).to_numpy()
    from sim import catalog
    from sim.fleet.sharing import shared_gpu, shares

    gpu_shares = shares(result.scenario.pools)
    for name in dict.fromkeys(pool_of[text]):
        pool = pools[name]
        share = gpu_shares.get(name)  # a pool sharing its GPUs: its side of them
        mine = text & (pool_of == name)
        rows = leaf[mine]
        prompt = rows["prompt_tokens"].to_numpy(float)
        output = rows["output_tokens"].to_numpy(float)
        full = text_capacity(
            pool,
            build_cost_model(pool, result.base_dir, shared_gpu(catalog.get_gpu(pool.gpu), share) if share else None),
            float(np.mean(prompt + output)),
            float(np.mean(prompt + output / 2)),
            share,
        )
        computed = np.clip(prompt - rows["cached_tokens"].to_numpy(float), 0, None)
        generated = rows["generated_tokens"].to_numpy(float)
        gpus = pool.tensor_parallel_size if share is None else pool.tensor_parallel_size * share.billed
        out[mine] = full.request_s(computed, generated) * gpus
    return out


def _pool_bills(result, capacity: np.ndarray) -> pd.DataFrame:
    """Per (pool, replication): GPUs, simulated seconds, bill, attributed $ and the work at
    capacity (``capacity``: each leaf request's ``capacity_gpu_s``, in ``result.requests`` order)."""
    sc = result.scenario
    price = {p.name: result.summary["pools"][p.name]["price_per_gpu_hour"] for p in sc.pools}
    end = {i: r.end_s for i, r in enumerate(result.replications)}
    gpus = result.replicas.groupby(["pool", "replication"], observed=True)["num_gpus"].sum().reset_index()
    busy = (
        result.replicas.assign(gpu_busy_s=result.replicas["busy_s"] * result.replicas["num_gpus"])
        .groupby(["pool", "replication"], observed=True)["gpu_busy_s"]
        .sum()
        .reset_index()
    )
    leaf = result.requests[~result.requests["kind"].isin(PARENT_KINDS)].assign(capacity_gpu_s=capacity)
    attributed = (
        leaf.groupby(["pool", "replication"], observed=True)[["gpu_s", "cost_usd", "capacity_gpu_s"]]
        .sum()
        .reset_index()
    )
    df = (
        gpus.merge(busy, on=["pool", "replication"])
        .merge(attributed, on=["pool", "replication"], how="left")
        .fillna({"gpu_s": 0.0, "cost_usd": 0.0, "capacity_gpu_s": 0.0})
    )
    df["price_per_gpu_hour"] = df["pool"].map(price).astype(float)
    df["capacity_usd"] = df["capacity_gpu_s"] / 3600 * df["price_per_gpu_hour"]
    df["sim_s"] = df["replication"].map(end).astype(float)
    df["gpu_time_s"] = df["sim_s"] * df["num_gpus"]
    if "held_run_s" in result.replicas and result.replicas["autoscaled"].any():
        # an autoscaled pool is billed for the time its replicas were held, not for its most
        rows = result.replicas[result.replicas["autoscaled"]]
        held = (rows["held_run_s"] * rows["num_gpus"]).groupby([rows["pool"], rows["replication"]], observed=True).sum()
        keys = pd.MultiIndex.from_arrays([df["pool"], df["replication"]])
        df["gpu_time_s"] = np.where(keys.isin(held.index), held.reindex(keys).to_numpy(), df["gpu_time_s"])
    df["bill_usd"] = df["gpu_time_s"] / 3600 * df["price_per_gpu_hour"]
    df["idle_usd"] = df["bill_usd"] - df["cost_usd"]
    df["loaded_factor"] = np.where(
        df["cost_usd"] > 0, df["bill_usd"] / df["cost_usd"].where(df["cost_usd"] > 0), np.nan
    )
    return df


def _revenue(rows: pd.DataFrame, prices: PriceList) -> np.ndarray:
    """Revenue of top-level rows: finished requests pay every component of their class's entry."""
    rev = np.zeros(len(rows))
    cls = rows["class"].astype(str).to_numpy()
    done = (rows["status"].astype(str) == "finished").to_numpy()

    def col(name: str) -> np.ndarray:
        return rows[name].fillna(0).to_numpy(float) if name in rows else np.zeros(len(rows))

    units = {
        "per_1m_input_usd": col("prompt_tokens") / 1e6,
        "per_1m_output_usd": col("generated_tokens") / 1e6,
        "per_image_usd": np.where(col("video_s") > 0, 0.0, col("images")),
        "per_video_second_usd": col("video_s"),
        "per_audio_minute_usd": col("audio_s") / 60,
        "per_request_usd": np.ones(len(rows)),
    }
    for name, entry in prices.classes.items():
        mask = (cls == name) & done
        for key, unit in units.items():
            usd = getattr(entry, key)
            if usd:
                rev[mask] += usd * unit[mask]
    return rev


def price_scenario(result, price_list: PriceList | None = None) -> PriceReport:
    """Cost per request by class, $ per unit, revenue and margin at ``price_list`` (default:
    the illustrative catalog-derived list; classes a file leaves out take their default too)."""
    sc: Scenario = result.scenario
    notes: list[str] = []
    default = default_price_list(result)
    if price_list is None:
        prices = default
    else:
        check_price_list(price_list, sc)
        missing = [c.name for c in sc.classes if c.name not in price_list.classes]
        if missing:
            notes.append(f"not in {price_list.source}, priced by the illustrative default: {', '.join(missing)}")
        prices = PriceList({**{m: default.classes[m] for m in missing}, **price_list.classes}, price_list.source)
    capacity = capacity_gpu_s(result)
    bills = _pool_bills(result, capacity)
    req = result.requests.copy()
    leaf = ~req["kind"].isin(PARENT_KINDS)
    factor = bills.set_index(["pool", "replication"])["loaded_factor"]
    keys = pd.MultiIndex.from_arrays([req.loc[leaf, "pool"].astype(str), req.loc[leaf, "replication"]])
    req["loaded_usd"] = 0.0
    req.loc[leaf, "loaded_usd"] = req.loc[leaf, "cost_usd"].to_numpy() * factor.reindex(keys).fillna(1.0).to_numpy()
    if "prefill_gpu_s" in req:
        # A disaggregated request's input share counts its prefill leg's GPU time.
        folded = fold_prefill_legs(req, req, ["gpu_s", "prefill_gpu_s"])
        gpu = folded["gpu_s"].where(folded["gpu_s"] > 0)
        req["input_share"] = np.where(
            req["kind"] == "text", (folded["prefill_gpu_s"].fillna(0) / gpu).clip(0, 1), np.nan
        )
    price = {p: result.summary["pools"][p]["price_per_gpu_hour"] for p in result.summary["pools"]}
    req["capacity_usd"] = 0.0
    req.loc[leaf, "capacity_usd"] = (
        capacity / 3600 * req.loc[leaf, "pool"].astype(str).map(price).astype(float).to_numpy()
    )
    pipes = req["kind"].isin(PARENT_KINDS)
    if pipes.any():
        stage = req[req["parent_id"] >= 0].groupby(["replication", "parent_id"])[["loaded_usd", "capacity_usd"]].sum()
        pk = pd.MultiIndex.from_arrays([req.loc[pipes, "replication"], req.loc[pipes, "request_id"]])
        req.loc[pipes, ["loaded_usd", "capacity_usd"]] = stage.reindex(pk).fillna(0.0).to_numpy()
    top = fold_prefill_legs(req[req["parent_id"] < 0].copy(), req, ["cost_usd", "loaded_usd", "capacity_usd"])
    top["revenue_usd"] = _revenue(top, prices)
    reps = range(len(result.replications))
    classes = [_class_row(c, top, prices, reps) for c in sc.classes]
    classes_df = pd.DataFrame(classes)
    pool_df = _pool_table(bills, top, req, sc)
    overall = _overall(bills, top, result, reps)
    unallocated = bills.loc[bills["cost_usd"] <= 0, "bill_usd"].sum()
    if unallocated > 0:
        notes.append(
            f"${unallocated:.4g} of GPU bill is in pools no request used: counted in the overall cost, no class carries it"
        )
    cols = ["class", "replication", "request_id", "kind", "status", "cost_usd", "loaded_usd", "revenue_usd"]
    return PriceReport(
        sc.name,
        prices,
        overall,
        pool_df,
        classes_df,
        _comparison(top, classes_df),
        top[cols].reset_index(drop=True),
        None,
        notes,
    )


def _pct(x: pd.Series, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _class_row(cls, top: pd.DataFrame, prices: PriceList, reps) -> dict[str, Any]:
    rows = top[top["class"] == cls.name]
    done = rows[rows["status"].astype(str) == "finished"]
    row: dict[str, Any] = {
        "class": cls.name,
        "kind": cls.kind,
        "price": prices.classes[cls.name].describe(),
        "requests": len(rows),
        "finished": len(done),
    }
    for what, col in (("attributed", "cost_usd"), ("loaded", "loaded_usd")):
        for q in (50, 90, 99):
            row[f"{what}_p{q}_usd"] = _pct(done[col], q)
        row[f"{what}_mean_usd"] = float(done[col].mean()) if len(done) else math.nan
    cost = float(rows["loaded_usd"].sum())  # every request's work, finished or not
    if cls.kind == "text":
        cin = float((rows["loaded_usd"] * rows["input_share"].fillna(0)).sum())
        row["usd_per_1m_input_tokens"] = (
            cin / done["prompt_tokens"].sum() * 1e6 if done["prompt_tokens"].sum() else math.nan
        )
        row["usd_per_1m_output_tokens"] = (
            (cost - cin) / done["generated_tokens"].sum() * 1e6 if done["generated_tokens"].sum() else math.nan
        )
    if cls.kind == "dllm" and done["generated_tokens"].sum():
        row["usd_per_1m_output_tokens"] = cost / done["generated_tokens"].sum() * 1e6
    if cls.kind in ("ar_image", "hybrid") and len(done):
        row["usd_per_image"] = cost / len(done)
    if cls.kind == "audio" and done["audio_s"].sum():
        row["usd_per_audio_minute"] = cost / done["audio_s"].sum() * 60
    if cls.kind == "image":
        video = done["video_s"].fillna(0).sum() if "video_s" in done else 0.0
        if video > 0:
            row["usd_per_video_second"] = cost / video
        elif done["images"].sum():
            row["usd_per_image"] = cost / done["images"].sum()
    row["revenue_mean_usd"] = float(done["revenue_usd"].mean()) if len(done) else math.nan
    per_rep = []
    for i in reps:
        r = rows[rows["replication"] == i]
        rev = r["revenue_usd"].sum()
        per_rep.append(1 - r["loaded_usd"].sum() / rev if rev > 0 else math.nan)
    rev = rows["revenue_usd"].sum()
    row["revenue_usd"] = float(rev)
    row["cost_usd"] = cost
    row["margin"] = 1 - cost / rev if rev > 0 else math.nan
    row["margin_ci95"] = _ci95(np.array(per_rep))
    row["attributed_usd"] = float(rows["cost_usd"].sum())
    row["capacity_usd"] = float(rows["capacity_usd"].sum())
    row["break_even_utilisation"] = row["capacity_usd"] / rev if rev > 0 else math.nan
    return row


def _pool_table(bills: pd.DataFrame, top, req, sc) -> pd.DataFrame:
    g = bills.groupby("pool", observed=True).agg(
        gpus=("num_gpus", "first"),
        gpu_time_s=("gpu_time_s", "sum"),
        gpu_busy_s=("gpu_busy_s", "sum"),
        attributed_gpu_s=("gpu_s", "sum"),
        bill_usd=("bill_usd", "sum"),
        capacity_gpu_s=("capacity_gpu_s", "sum"),
        attributed_usd=("cost_usd", "sum"),
        idle_usd=("idle_usd", "sum"),
        price_per_gpu_hour=("price_per_gpu_hour", "first"),
    )
    g["utilisation"] = g["capacity_gpu_s"] / g["gpu_time_s"]
    g["busy_fraction"] = g["gpu_busy_s"] / g["gpu_time_s"]
    g["loaded_factor"] = g["bill_usd"] / g["attributed_usd"].where(g["attributed_usd"] > 0)
    order = [p.name for p in sc.pools]
    return g.reindex(order).reset_index()


def _overall(bills: pd.DataFrame, top: pd.DataFrame, result, reps) -> dict[str, Any]:
    bill, attributed = float(bills["bill_usd"].sum()), float(bills["cost_usd"].sum())
    revenue = float(top["revenue_usd"].sum())
    margins, breaks = [], []
    for i in reps:
        b = bills[bills["replication"] == i]
        rev = top.loc[top["replication"] == i, "revenue_usd"].sum()
        margins.append(1 - b["bill_usd"].sum() / rev if rev > 0 else math.nan)
        breaks.append(b["capacity_usd"].sum() / rev if rev > 0 else math.nan)
    return {
        "bill_usd": bill,
        "attributed_usd": attributed,
        "idle_usd": bill - attributed,
        "revenue_usd": revenue,
        "gpu_hours": float(bills["gpu_time_s"].sum() / 3600),
        "utilisation": float(bills["capacity_gpu_s"].sum() / bills["gpu_time_s"].sum()),
        "busy_fraction": float(bills["gpu_busy_s"].sum() / bills["gpu_time_s"].sum()),
        "margin": 1 - bill / revenue if revenue > 0 else math.nan,
        "margin_ci95": _ci95(np.array(margins)),
        "break_even_utilisation": float(bills["capacity_usd"].sum()) / revenue if revenue > 0 else math.nan,
        "break_even_utilisation_ci95": _ci95(np.array(breaks)),
        "replications": len(result.replications),
    }


def _comparison(top: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """The price list against one flat price per request that earns the same revenue: the share
    of finished requests sold below their fully loaded cost under each. Per-token prices track
    an LLM request's cost; a flat price does not. Images cost the same whatever the prompt, so
    flat per image loses little (the seeds' argument for per-image billing)."""
    out = []
    for c in classes.itertuples():
        done = top[(top["class"] == c._1) & (top["status"].astype(str) == "finished")]
        if done.empty:
            continue
        flat = done["revenue_usd"].mean()
        out.append(
            {
                "class": c._1,
                "kind": c.kind,
                "list_price": c.price,
                "flat_per_request_usd": float(flat),
                "below_cost_list": float((done["revenue_usd"] < done["loaded_usd"]).mean()),
                "below_cost_flat": float((flat < done["loaded_usd"]).mean()),
                "loaded_cost_cv": float(done["loaded_usd"].std(ddof=0) / done["loaded_usd"].mean())
                if done["loaded_usd"].mean() > 0
                else math.nan,
            }
        )
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- sensitivity


def scale_load(raw: dict[str, Any], factor: float) -> tuple[dict[str, Any], list[str]]:
    """A scenario dict with every class's arrival rate x ``factor`` (rate, piecewise points,
    or a trace's time_scale / target_rate); notes for anything it could not scale."""
    import copy

    raw = copy.deepcopy(raw)
    notes = []
    for cls in raw["classes"]:
        arrival, trace = cls.get("arrival"), cls.get("trace")
        if arrival is not None:
            if arrival.get("rate") is not None:
                arrival["rate"] = arrival["rate"] * factor
            elif arrival.get("points"):
                arrival["points"] = [[t, r * factor] for t, r in arrival["points"]]
            elif arrival.get("users") is not None:
                # A closed loop's load is its users: as many more of them.
                users = max(1, round(arrival["users"] * factor))
                if users != arrival["users"] * factor:
                    notes.append(f"class {cls['name']}: {arrival['users']} users x {factor:g} rounded to {users}")
                arrival["users"] = users
            else:
                notes.append(f"class {cls['name']}: arrival {arrival.get('process')} not scaled")
        elif trace is not None:
            if trace.get("target_rate") is not None:
                trace["target_rate"] = trace["target_rate"] * factor
            else:
                trace["time_scale"] = (trace.get("time_scale") or 1.0) / factor
    return raw, notes


def _sens_rows(axis: str, value: float, rep: PriceReport, base_steps: dict[str, float]) -> list[dict]:
    o = rep.overall
    nan = math.nan
    rows = [
        {
            "axis": axis,
            "value": value,
            "class": "all",
            "utilisation": o["utilisation"],
            "margin": o["margin"],
            "margin_ci95": o["margin_ci95"],
            "attributed_mean_usd": nan,
            "loaded_mean_usd": nan,
            "usd_per_unit": nan,
            "break_even_utilisation": o["break_even_utilisation"],
            "break_even_per_step_pricing": nan,
        }
    ]
    for c in rep.classes.to_dict("records"):
        unit = next(
            (
                c[k]
                for k in ("usd_per_1m_output_tokens", "usd_per_image", "usd_per_video_second", "usd_per_audio_minute")
                if isinstance(c.get(k), float) and not math.isnan(c[k])
            ),
            nan,
        )
        per_step = nan
        if axis == "steps" and c["class"] in base_steps and c["revenue_usd"] > 0:
            # The list price per image at the base step count, charged per step instead: revenue x steps / base steps.
            per_step = c["attributed_usd"] / (c["revenue_usd"] * value / base_steps[c["class"]])
        rows.append(
            {
                "axis": axis,
                "value": value,
                "class": c["class"],
                "utilisation": nan,
                "margin": c["margin"],
                "margin_ci95": c["margin_ci95"],
                "attributed_mean_usd": c["attributed_mean_usd"],
                "loaded_mean_usd": c["loaded_mean_usd"],
                "usd_per_unit": unit,
                "break_even_utilisation": c["break_even_utilisation"],
                "break_even_per_step_pricing": per_step,
            }
        )
    return rows


def price_sensitivity(
    scenario: Scenario, base_dir: Path | None, prices: PriceList, loads=(), steps=(), progress=None
) -> tuple[pd.DataFrame, list[str]]:
    """Re-run the scenario with arrival rates x each of ``loads`` and with every image class's
    ``image.steps`` set to each of ``steps``; price each run at the same ``prices``.
    ``progress(text)`` is called before each re-run."""
    from sim.run import run_scenario

    rows, notes = [], []
    base = scenario.model_dump(exclude_unset=True)
    for k in loads:
        if progress is not None:
            progress(f"re-running at {k:g}x the load")
        raw, n = scale_load(base, k)
        notes += [x for x in n if x not in notes]
        rep = price_scenario(run_scenario(parse_scenario(raw), base_dir), prices)
        rows += _sens_rows("load", k, rep, {})
    image_classes = [c for c in scenario.classes if c.kind == "image" and c.image is not None]
    skipped = [c.name for c in scenario.classes if c.kind == "image" and c.image is None]
    if steps and skipped:
        notes.append(f"--steps: {', '.join(skipped)} take steps from a trace, not changed")
    if steps and not image_classes:
        notes.append("--steps: no image class to change")
        steps = ()
    base_steps = {}
    for c in image_classes:
        s = c.image.steps
        if not isinstance(s, int):
            model = next(p.model for p in scenario.pools if p.name == c.pool)
            s = catalog.get_diffusion_model(model).default_steps if s is None else None
        if s is not None:
            base_steps[c.name] = float(s)
    for s in steps:
        if progress is not None:
            progress(f"re-running at {s} denoising steps")
        raw = scenario.model_dump(exclude_unset=True)
        for cls in raw["classes"]:
            if cls["name"] in {c.name for c in image_classes}:
                cls["image"]["steps"] = int(s)
        rep = price_scenario(run_scenario(parse_scenario(raw), base_dir), prices)
        rows += _sens_rows("steps", s, rep, base_steps)
    return pd.DataFrame(rows), notes


# --------------------------------------------------------------------------- files and the command


def report_json(report: PriceReport) -> dict[str, Any]:
    from sim.outputs import jsonable

    data = {
        "scenario": report.scenario,
        "prices": {"source": report.prices.source, "classes": {k: asdict(v) for k, v in report.prices.classes.items()}},
        "rules": list(report.rules),
        "notes": report.notes,
        "overall": report.overall,
        "pools": report.pools.to_dict("records"),
        "classes": report.classes.to_dict("records"),
        "comparison": report.comparison.to_dict("records"),
    }
    if report.sensitivity is not None:
        data["sensitivity"] = report.sensitivity.to_dict("records")
    return jsonable(data)


def write_price_outputs(report: PriceReport, out_dir: Path) -> list[Path]:
    """price.json, classes.csv, pools.csv, comparison.csv, requests_cost.csv and, with a
    sensitivity study, sensitivity.csv."""
    from sim.outputs import clear_stale, write_atomic, write_text_atomic
    from sim.run import check_output_dir

    check_output_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_text_atomic(out_dir / "price.json", json.dumps(report_json(report), indent=2))]
        frames = {
            "classes": report.classes,
            "pools": report.pools,
            "comparison": report.comparison,
            "requests_cost": report.requests,
        }
        if report.sensitivity is not None:
            frames["sensitivity"] = report.sensitivity
        for name, df in frames.items():
            paths.append(write_atomic(out_dir / f"{name}.csv", lambda p, df=df: df.to_csv(p, index=False)))
        names = (
            "price.json",
            "classes.csv",
            "pools.csv",
            "comparison.csv",
            "requests_cost.csv",
            "sensitivity.csv",
            "report.html",
        )
        clear_stale(out_dir, names, paths)
    except OSError as exc:
        raise ConfigError(f"{exc.filename or out_dir}: cannot write output: {exc.strerror or exc}") from None
    return paths


def _usd(x: float) -> str:
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return "-"
    return f"${x:.3g}" if abs(x) < 1000 else f"${x:,.0f}"


def _pm(x: float, hw: float, scale: float = 100.0) -> str:
    """A percentage (a fraction times ``scale``) with its 95 % CI, as the run summary writes one."""
    from sim.console import with_ci

    if x is None or not math.isfinite(x):
        return "-"
    return with_ci(x * scale, hw * scale if hw is not None and math.isfinite(hw) else None)


PRICE_EXPECTED = "the price.json that servesim price -o writes"


def _records_frame(records: Any, path: Path, key: str) -> pd.DataFrame:
    """Records from JSON as a DataFrame; a column of numbers and nulls (NaN in JSON) is float."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"{path}: {key!r} is not a list of objects; expected {PRICE_EXPECTED}")
    df = pd.DataFrame(records)
    for col in df.columns:
        values = df[col].tolist()
        if None in values and all(v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            df[col] = df[col].astype(float)
    return df


def read_price_json(data: dict, path: Path) -> PriceReport:
    """The PriceReport a price.json was written from (without its per-request table)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object; expected {PRICE_EXPECTED}")
    for key in ("scenario", "prices", "overall", "pools", "classes", "comparison"):
        if key not in data:
            raise ConfigError(f"{path}: no {key!r} key; expected {PRICE_EXPECTED}")
    try:
        entries = {
            k: PriceEntry(**{f: x for f, x in v.items() if f in FIELDS}) for k, v in data["prices"]["classes"].items()
        }
        prices = PriceList(entries, data["prices"]["source"])
        overall = {k: math.nan if v is None else v for k, v in data["overall"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: unexpected prices or overall ({type(exc).__name__}: {exc}); expected {PRICE_EXPECTED}"
        ) from None
    sens = data.get("sensitivity")
    return PriceReport(
        scenario=str(data["scenario"]),
        prices=prices,
        overall=overall,
        pools=_records_frame(data["pools"], path, "pools"),
        classes=_records_frame(data["classes"], path, "classes"),
        comparison=_records_frame(data["comparison"], path, "comparison"),
        requests=pd.DataFrame(),
        sensitivity=_records_frame(sens, path, "sensitivity") if sens else None,
        notes=list(data.get("notes") or []),
        rules=tuple(data.get("rules") or ()),
    )


def report_blocks(report: PriceReport) -> list:
    """What ``servesim price`` shows (and the HTML report's price section): tables and lines."""
    from sim.console import Line, Table, term

    out: list = []
    o = report.overall
    out.append(
        Line(
            f"[bold]{term(report.scenario)}[/bold]: priced at {term(report.prices.source)}; {o['replications']} replication(s), costs over the whole simulated time"
        )
    )
    for c, e in report.prices.classes.items():
        out.append(Line(f"  {term(c)}: {term(e.describe())}", highlight=False))
    t = Table(title="pools (bill = simulated time x GPUs x $/GPU-h)", title_justify="left")
    for col in ("pool", "GPUs", "$/GPU-h", "bill", "attributed", "idle", "utilisation", "busy", "loaded factor"):
        t.add_column(col, justify="left" if col == "pool" else "right")
    for r in report.pools.itertuples():
        t.add_row(
            term(r.pool),
            str(r.gpus),
            f"{r.price_per_gpu_hour:.2f}",
            _usd(r.bill_usd),
            _usd(r.attributed_usd),
            _usd(r.idle_usd),
            f"{r.utilisation:.0%}",
            f"{r.busy_fraction:.0%}",
            f"{r.loaded_factor:.2f}x",
        )
    out.append(t)
    t = Table(
        title="cost per request (finished), attributed -> fully loaded; $ per unit fully loaded", title_justify="left"
    )
    for col in (
        "class",
        "p50",
        "p90",
        "p99",
        "mean",
        "per 1M in",
        "per 1M out",
        "per image",
        "per video s",
        "per audio min",
        "revenue/req",
        "margin %",
    ):
        t.add_column(col, justify="left" if col == "class" else "right")
    for r in report.classes.to_dict("records"):
        t.add_row(
            term(r["class"]),
            *(f"{_usd(r[f'attributed_p{q}_usd'])} -> {_usd(r[f'loaded_p{q}_usd'])}" for q in (50, 90, 99)),
            f"{_usd(r['attributed_mean_usd'])} -> {_usd(r['loaded_mean_usd'])}",
            *(
                _usd(r.get(k, math.nan))
                for k in (
                    "usd_per_1m_input_tokens",
                    "usd_per_1m_output_tokens",
                    "usd_per_image",
                    "usd_per_video_second",
                    "usd_per_audio_minute",
                )
            ),
            _usd(r["revenue_mean_usd"]),
            _pm(r["margin"], r["margin_ci95"]),
        )
    out.append(t)
    be = o["break_even_utilisation"]
    out.append(
        Line(
            f"  fleet: bill {_usd(o['bill_usd'])} for {o['gpu_hours']:.3g} GPU-h = attributed {_usd(o['attributed_usd'])} + idle {_usd(o['idle_usd'])}; "
            f"revenue {_usd(o['revenue_usd'])}; margin {_pm(o['margin'], o['margin_ci95'])} %; utilisation {o['utilisation']:.1%}; "
            f"break-even utilisation {_pm(be, o['break_even_utilisation_ci95'], 100)} %"
            + (" (above 100 %: no load breaks even at these prices)" if math.isfinite(be) and be > 1 else ""),
            highlight=False,
        )
    )
    if not report.comparison.empty:
        t = Table(
            title="price list vs one flat price per request with the same revenue: share of requests sold below their loaded cost",
            title_justify="left",
        )
        for col in ("class", "list price", "flat $/request", "below cost (list)", "below cost (flat)", "cost CV"):
            t.add_column(col, justify="left" if col in ("class", "list price") else "right")
        for r in report.comparison.itertuples():
            t.add_row(
                term(r._1),
                r.list_price,
                _usd(r.flat_per_request_usd),
                f"{r.below_cost_list:.0%}",
                f"{r.below_cost_flat:.0%}",
                f"{r.loaded_cost_cv:.2f}",
            )
        out.append(t)
    if report.sensitivity is not None and len(report.sensitivity):
        s = report.sensitivity
        t = Table(
            title="sensitivity (same price list, same fleet): margin, cost per request (attributed -> loaded), loaded $ per unit "
            "(1M output tokens / image / video s), break-even utilisation (list; and per-step pricing at the same price at the base steps)",
            title_justify="left",
        )
        for col in (
            "axis",
            "value",
            "class",
            "utilisation",
            "margin %",
            "$/request",
            "$/unit",
            "break-even util.",
            "break-even, per-step pricing",
        ):
            t.add_column(col, justify="left" if col in ("axis", "class") else "right")
        for r in s.itertuples():
            t.add_row(
                r.axis,
                f"{r.value:g}",
                r._3,
                "-" if not math.isfinite(r.utilisation) else f"{r.utilisation:.0%}",
                _pm(r.margin, r.margin_ci95),
                "-" if r._3 == "all" else f"{_usd(r.attributed_mean_usd)} -> {_usd(r.loaded_mean_usd)}",
                _usd(r.usd_per_unit),
                _pm(r.break_even_utilisation, math.nan),
                _pm(r.break_even_per_step_pricing, math.nan),
            )
        out.append(t)
    for rule in report.rules:
        out.append(Line(f"  rule: {rule}", highlight=False, style="dim"))
    for note in report.notes:
        out.append(Line(f"  note: {note}", highlight=False))
    return out
