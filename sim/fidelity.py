"""``servesim fidelity``: the simulator against published real measurements.

Each point of ``fidelity/points.yaml`` (format: ``fidelity/README.md``) is a figure somebody
else measured on real hardware — a batch-1 first-token latency, a saturated throughput, the
mean TTFT at a request rate, a diffusion pipeline's latency — with every condition its source
states. ``run_points`` turns each expressible point into the scenario its ``servesim`` block
describes, runs it with the pool's default cost model (the roofline with the catalog's
efficiencies and overheads) and returns the signed error per point; ``summarise`` gives the
median and worst |error| per split (calibrate / held out), per shape, and for batch-1 latencies.
A point servesim cannot express stays in the table with the reason. This module parses no
arguments and prints nothing: ``servesim fidelity`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.errors import ConfigError, ServesimError

DEFAULT_POINTS = Path(__file__).resolve().parents[1] / "fidelity" / "points.yaml"
SPLITS = ("calibrate", "held_out")
RUNS = ("llm_single", "llm_burst", "llm_static_batch", "llm_poisson", "image_single", "image_batch", "image_step")
BURST_RATE = 1e6
"""Arrivals per second of a burst: every request there within a millisecond."""
POISSON_REPLICATIONS = 5
"""Seeded replications of a point at a request rate (its figure is their mean)."""


# --------------------------------------------------------------------------- the data


def load_points(path: Path = DEFAULT_POINTS) -> list[dict]:
    """The points of ``path``, checked: one line naming the point and field on a bad one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such points file")
    try:
        points = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(points, list) or not points:
        raise ConfigError(f"{path}: expected a non-empty list of points")
    seen = set()
    for i, p in enumerate(points):
        where = f"{path.name}: point {i}"
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            raise ConfigError(f"{where}: needs an 'id'")
        where = f"{path.name}: {p['id']}"
        if p["id"] in seen:
            raise ConfigError(f"{where}: duplicate id")
        seen.add(p["id"])
        for field in ("split", "shape", "kind", "metric", "value", "source", "servesim"):
            if field not in p:
                raise ConfigError(f"{where}: missing field '{field}'")
        if p["split"] not in SPLITS:
            raise ConfigError(f"{where}.split: {p['split']!r}; allowed: {', '.join(SPLITS)}")
        if p["shape"] not in ("llm", "diffusion"):
            raise ConfigError(f"{where}.shape: {p['shape']!r}; allowed: llm, diffusion")
        if not isinstance(p["value"], (int, float)) or not p["value"] > 0:
            raise ConfigError(f"{where}.value: expected a positive number, got {p['value']!r}")
        spec = p["servesim"]
        if not isinstance(spec, dict) or not isinstance(spec.get("expressible"), bool):
            raise ConfigError(f"{where}.servesim.expressible: expected true or false")
        if spec["expressible"] and spec.get("run") not in RUNS:
            raise ConfigError(f"{where}.servesim.run: {spec.get('run')!r}; allowed: {', '.join(RUNS)}")
        if not spec["expressible"] and not spec.get("why"):
            raise ConfigError(f"{where}.servesim.why: say why servesim cannot express the point")
    return points


def is_batch1_latency(point: dict) -> bool:
    """A single request's latency: batch or concurrency 1, nothing else on the GPU."""
    c = point.get("conditions") or {}
    one = c.get("batch_size", c.get("concurrency"))
    return point["kind"] == "latency" and one == 1


# --------------------------------------------------------------------------- scenarios


TRTLLM_CAPACITY_POLICY = "guaranteed_no_evict"
"""TensorRT-LLM's default capacity scheduler policy ("GUARANTEED_NO_EVICT (default)", TensorRT-LLM
docs, performance tuning guide, "Useful Runtime Options"; ``SchedulerConfig.capacity_scheduler_policy``
in the LLM API reference): a point measured on TensorRT-LLM runs with it unless it says otherwise."""


def _llm_pool(point: dict, spec: dict) -> dict:
    engine = {"enable_prefix_caching": False, **spec.get("engine", {})}
    if str(point.get("engine", "")).startswith("TensorRT-LLM"):
        engine.setdefault("capacity_scheduler_policy", TRTLLM_CAPACITY_POLICY)
    return {
        "name": "p",
        "model": point["model"],
        "gpu": point["gpu"],
        "tensor_parallel_size": int(point.get("tp") or 1),
        "engine": engine,
    }


def _lengths(point: dict) -> tuple[int, int]:
    c = point["conditions"]
    return int(c["input_tokens"]), int(c["output_tokens"])


def _text_scenario(point: dict, spec: dict, n: int, arrival: dict, replications: int = 1) -> dict:
    prompt, output = _lengths(point)
    return {
        "name": f"fidelity-{point['id']}",
        "seed": 0,
        "replications": replications,
        "num_requests": n,
        "pools": [_llm_pool(point, spec)],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": arrival,
                "prompt_tokens": {"dist": "fixed", "value": prompt},
                "output_tokens": {"dist": "fixed", "value": output},
            }
        ],
    }


def _run(raw: dict) -> pd.DataFrame:
    from sim.config import parse_scenario
    from sim.run import run_scenario

    return run_scenario(parse_scenario(raw)).requests


def _finished(requests: pd.DataFrame, expected: int) -> pd.DataFrame:
    done = requests[requests["status"] == "finished"]
    if len(done) != expected:
        raise ValueError(f"{expected - len(done)} of {expected} requests did not finish (rejected or dropped)")
    return done


def _text_metric(point: dict, done: pd.DataFrame) -> float:
    metric = point["metric"]
    if metric == "ttft_s":
        return float(done["ttft_s"].mean())
    if metric in ("tpot_s", "itl_s"):
        return float(done["tpot_s"].mean())
    if metric == "e2e_s":
        return float(done["e2e_s"].mean())
    if metric == "output_tokens_per_s_per_user":
        return float(1.0 / done["tpot_s"].mean())
    if metric == "output_tokens_per_s":
        per_rep = [
            g["generated_tokens"].sum() / (g["finish_s"].max() - g["arrival_s"].min())
            for _, g in done.groupby("replication")
        ]
        return float(np.mean(per_rep))
    raise ValueError(f"metric {metric!r} is not one an LLM point can be scored on")


def _llm_single(point: dict, spec: dict) -> float:
    c = point["conditions"]
    n = int(c.get("batch_size") or c.get("concurrency") or 1)
    done = _finished(_run(_text_scenario(point, spec, n, {"process": "constant", "rate": BURST_RATE})), n)
    return _text_metric(point, done)


def _llm_burst(point: dict, spec: dict) -> float:
    n = int(point["conditions"]["num_requests"])
    done = _finished(_run(_text_scenario(point, spec, n, {"process": "constant", "rate": BURST_RATE})), n)
    return _text_metric(point, done)


def _llm_static_batch(point: dict, spec: dict) -> float:
    """One static batch of ``max_batch_size`` requests, its whole KV cache held as the
    published run held it (the override is the blocks the batch needs, no more)."""
    n = int(point["conditions"]["max_batch_size"])
    prompt, output = _lengths(point)
    block = 16
    spec = {
        **spec,
        "engine": {
            "scheduler": "static",
            "max_num_seqs": n,
            "max_num_batched_tokens": n * prompt,
            "block_size": block,
            "num_gpu_blocks": n * math.ceil((prompt + output) / block),
            **spec.get("engine", {}),
        },
    }
    # A static engine starts a batch with whatever waits when it is free, so the first of a
    # burst's requests starts alone; the benchmark ran n together. Send n + 1: the scored batch
    # is the second, the n requests that all waited while the first ran, timed from its start.
    total = n + 1 if n > 1 else n
    done = _finished(_run(_text_scenario(point, spec, total, {"process": "constant", "rate": BURST_RATE})), total)
    batch = done[done["first_scheduled_s"] == done["first_scheduled_s"].max()].copy()
    if len(batch) != n:
        raise ValueError(f"the scored static batch has {len(batch)} requests, not {n}")
    batch["ttft_s"] -= batch["first_scheduled_s"] - batch["arrival_s"]
    batch["e2e_s"] -= batch["first_scheduled_s"] - batch["arrival_s"]
    batch["arrival_s"] = batch["first_scheduled_s"]
    return _text_metric(point, batch)


def _llm_poisson(point: dict, spec: dict) -> float:
    c = point["conditions"]
    n = int(c["num_requests"])
    raw = _text_scenario(
        point, spec, n, {"process": "poisson", "rate": float(c["request_rate_per_s"])}, POISSON_REPLICATIONS
    )
    done = _finished(_run(raw), n * POISSON_REPLICATIONS)
    if point["metric"] == "output_tokens_per_s":
        return _text_metric(point, done)
    return float(np.mean([_text_metric(point, g) for _, g in done.groupby("replication")]))


def execution(point: dict) -> str:
    """How the point's engine ran its denoiser: ``eager`` where the source says so (its engine
    string reads "eager" or "no compile"; plain PyTorch), else ``compiled`` (torch.compile,
    TensorRT, CUDA graphs). A point's ``servesim.execution`` overrides the rule."""
    given = point["servesim"].get("execution")
    if given:
        return given
    engine = str(point.get("engine", "")).lower()
    return "eager" if "eager" in engine or "no compile" in engine else "compiled"


def denoiser_dtype(point: dict) -> str:
    """The ``batching.dtype`` a diffusion point's denoiser runs in: its stated precision where
    that is 8-bit (``fp8``, ``int8``), else ``bfloat16`` (fp16, bf16 and unstated alike)."""
    from sim.diffusion.cost import EIGHT_BIT

    precision = _precision(point)
    return precision if precision in EIGHT_BIT else "bfloat16"


def _image_pool(point: dict, batching: dict, replicas: int = 1) -> dict:
    """The point's pool: its model and GPU, the denoiser in the point's precision where that is
    8-bit (FP8, INT8; else bf16), compiled or eager as its engine ran."""
    dtype = denoiser_dtype(point)
    if dtype != "bfloat16":
        batching = {**batching, "dtype": dtype}
    return {
        "name": "p",
        "model": point["model"],
        "gpu": point["gpu"],
        "replicas": replicas,
        "batching": batching,
        "cost_model": {"kind": "roofline", "execution": execution(point)},
    }


def _image(point: dict, spec: dict) -> dict:
    c = point["conditions"]
    image = {"steps": int(c["steps"])}
    for key in ("width", "height"):
        if isinstance(c.get(key), int):
            image[key] = c[key]
    if isinstance(c.get("frames"), int):
        image["frames"] = c["frames"]
    if isinstance(c.get("cfg"), bool):
        image["cfg"] = c["cfg"]
    image.update(spec.get("image", {}))
    return image


def _image_single(point: dict, spec: dict) -> float:
    raw = {
        "name": f"fidelity-{point['id']}",
        "seed": 0,
        "num_requests": 1,
        "pools": [_image_pool(point, {"max_batch_size": 1})],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "constant", "rate": BURST_RATE},
                "image": _image(point, spec),
            }
        ],
    }
    done = _finished(_run(raw), 1)
    if point["metric"] in ("e2e_s", "video_s"):
        return float(done["e2e_s"].mean())
    raise ValueError(f"metric {point['metric']!r} is not one a single image can be scored on")


def _image_batch(point: dict, spec: dict) -> float:
    """One static batch of ``batch_size`` images (requests arriving together) on each of the
    spec's ``replicas`` (a multi-GPU system's data-parallel copies, 1 by default): images per
    second over the batches, or their latency."""
    n = int(point["conditions"]["batch_size"])
    replicas = int(spec.get("replicas", 1))
    raw = {
        "name": f"fidelity-{point['id']}",
        "seed": 0,
        "num_requests": n * replicas,
        "pools": [_image_pool(point, {"max_batch_size": n, "max_wait_s": 1.0}, replicas)],
        "classes": [
            {
                "name": "c",
                "pool": "p",
                "arrival": {"process": "constant", "rate": BURST_RATE},
                "image": _image(point, spec),
            }
        ],
    }
    done = _finished(_run(raw), n * replicas)
    span = float(done["finish_s"].max() - done["arrival_s"].min())
    if point["metric"] in ("images_per_s", "samples_per_s"):
        return n * replicas / span
    if point["metric"] in ("e2e_s", "video_s"):
        return span
    raise ValueError(f"metric {point['metric']!r} is not one an image batch can be scored on")


def _image_step(point: dict, spec: dict) -> float:
    """One denoising step of the request's shape, from the pool's cost model directly."""
    from sim import catalog
    from sim.diffusion.cost import DiffusionRooflineCost

    model = catalog.get_diffusion_model(point["model"])
    image = _image(point, spec)
    cfg = image.get("cfg", model.cfg)
    tokens = model.latent_tokens(
        image.get("width", model.default_width), image.get("height", model.default_height), image.get("frames", 1)
    )
    gpu = catalog.get_gpu(point["gpu"])
    cost = DiffusionRooflineCost(model, gpu, execution=execution(point), dtype=denoiser_dtype(point))
    rows = int(point["conditions"].get("batch_size") or 1) * (2 if cfg else 1)
    return cost.denoise_step_s(rows, tokens)


_RUNNERS: dict[str, Callable[[dict, dict], float]] = {
    "llm_single": _llm_single,
    "llm_burst": _llm_burst,
    "llm_static_batch": _llm_static_batch,
    "llm_poisson": _llm_poisson,
    "image_single": _image_single,
    "image_batch": _image_batch,
    "image_step": _image_step,
}


# --------------------------------------------------------------------------- running


def predict(point: dict) -> float:
    """servesim's figure for one expressible point."""
    spec = point["servesim"]
    value = _RUNNERS[spec["run"]](point, spec)
    if point.get("per") == "gpu":  # the source divides a multi-GPU system's figure by its GPUs
        value /= int(point.get("num_gpus") or 1)
    return value


def run_points(points: Iterable[dict], progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """One row per point: its conditions in brief, the published figure, servesim's and the
    signed error (predicted - measured) / measured; ``status`` is ``ok``, ``not expressible``
    (with ``why``) or ``failed`` (with the error)."""
    points = list(points)
    rows = []
    for i, p in enumerate(points):
        if progress is not None:
            progress(i, len(points), p["id"])
        spec = p["servesim"]
        row: dict[str, Any] = {
            "id": p["id"],
            "split": p["split"],
            "shape": p["shape"],
            "kind": p["kind"],
            "batch1": is_batch1_latency(p),
            "model": p.get("model"),
            "gpu": p.get("gpu"),
            "tp": p.get("tp"),
            "precision": _precision(p),
            "metric": p["metric"],
            "measured": float(p["value"]),
            "predicted": float("nan"),
            "error": float("nan"),
            "status": "ok",
            "why": "",
            "source": (p.get("source") or {}).get("url", ""),
        }
        if not spec["expressible"]:
            row.update(status="not expressible", why=spec["why"])
        else:
            try:
                row["predicted"] = predict(p)
                row["error"] = (row["predicted"] - row["measured"]) / row["measured"]
                row["why"] = "; ".join(spec.get("assumptions", []))
            except (ValueError, KeyError, TypeError, ServesimError) as exc:
                row.update(status="failed", why=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    if progress is not None:
        progress(len(points), len(points), "")
    return pd.DataFrame(rows)


def _precision(point: dict) -> str:
    p = point.get("precision")
    if isinstance(p, dict):
        return str(p.get("weights", "unstated"))
    return str(p or "unstated")


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Median and worst |error| (and the median signed error) of the scored points, per split
    and shape, for batch-1 latencies, and over all."""
    ok = table[table["status"] == "ok"]
    groups: list[tuple[str, str, pd.DataFrame]] = []
    for split in SPLITS:
        part = ok[ok["split"] == split]
        groups.append((split, "all", part))
        for shape in ("llm", "diffusion"):
            groups.append((split, shape, part[part["shape"] == shape]))
        groups.append((split, "batch-1 latency", part[part["batch1"]]))
    groups.append(("both", "all", ok))
    rows = []
    for split, what, part in groups:
        err = part["error"].to_numpy(float)
        rows.append(
            {
                "split": split,
                "points": what,
                "n": len(err),
                "median_abs_error": float(np.median(np.abs(err))) if len(err) else float("nan"),
                "worst_abs_error": float(np.max(np.abs(err))) if len(err) else float("nan"),
                "median_error": float(np.median(err)) if len(err) else float("nan"),
                "worst_id": str(part["id"].iloc[int(np.argmax(np.abs(err)))]) if len(err) else "",
            }
        )
    return pd.DataFrame(rows)
