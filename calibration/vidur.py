"""Vidur importer: ``servesim-profile/1`` files from Vidur's published per-layer GPU timings.

Vidur (microsoft/vidur, MIT) profiled the token-level ops of one transformer layer (QKV, O,
gate-up and down GEMMs, norms, RoPE, activation, residual add) on H100 and A100, per
tensor-parallel shard, over 1..4096 (Llama-3: 32768) tokens, and NCCL all-reduces on DGX nodes.
This module turns the copy of those files in ``calibration/data/vidur`` into profiles:

* ``lin_layer``: the table of the summed per-layer op medians over ``num_tokens``;
* ``allreduce`` (TP > 1): two all-reduces per layer of num_tokens x hidden x 2 bytes, fitted
  const + per token to the DGX all-reduce timings of ``tp`` GPUs in one node;
* ``attn_decode``, ``attn_prefill``, ``lm_head`` and ``step``: the attention timings are not in
  the copied data and Vidur does not time the LM head, so these come from the roofline of
  ``sim/costs/roofline.py`` (catalog peaks x efficiencies, catalog overheads) as linear forms
  (``lm_head`` too: the format's table form for it is for measured heads).

    python -m calibration.vidur --out profiles/vidur
    python -m calibration.vidur --copy-from ../shared/data/vidur   # re-make the trimmed copy

It needs only numpy, pandas, pyyaml and the standard library (the calibration package runs on
GPU machines without the simulator's dependencies): catalog facts are read from the YAML files
in ``sim/catalog/data`` directly.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "sim" / "catalog" / "data"
DATA = Path(__file__).resolve().parent / "data" / "vidur"
FORMAT = "servesim-profile/1"
VIDUR_REPO = "microsoft/vidur"
VIDUR_COMMIT = "7d47513363ec447a741ac5e47241580b47724fbf"
EXTRAPOLATION_LIMIT = 2.0
DTYPE_BYTES = 2  # Vidur timed fp16: weights, KV and activations are 2 bytes

#: The per-layer token-level ops summed into ``lin_layer``: the ops Vidur's own simulator adds up
#: per transformer block (vidur/entities/execution_time.py). ``emb`` (the embedding gather, once
#: per step, not per layer) is in Vidur's file but left out, as Vidur's simulator leaves it out.
LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
#: Model-shape columns kept with the timings, checked against the catalog on import. (Vidur's
#: vocab_size is left out: it pads Llama-2's 32000 to 32768, and no op here depends on it.)
SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd")
MLP_COLUMNS = (
    *(f"time_stats.{op}.median" for op in LAYER_OPS),
    *SHAPE_COLUMNS,
    "num_tokens",
    "num_tensor_parallel_workers",
)
ALLREDUCE_COLUMNS = ("time_stats.all_reduce.median", "num_workers", "size", "devices_per_node")


@dataclass(frozen=True)
class Node:
    """Where Vidur measured a catalog GPU: its compute SKU folder and its DGX network folder."""

    gpu: str
    """Catalog GPU key."""
    sku: str
    network: str
    device_name: str


NODES = (
    Node("h100-sxm", "h100", "h100_dgx", "NVIDIA H100 80GB HBM3 (Vidur profile)"),
    Node("a100-80gb", "a100", "a100_dgx", "NVIDIA A100-SXM4-80GB (Vidur profile)"),
)


def catalog() -> tuple[dict, dict]:
    """(models, gpus) of the simulator's catalog, as plain dicts."""
    models = yaml.safe_load((CATALOG / "models.yaml").read_text())["models"]
    gpus = yaml.safe_load((CATALOG / "gpus.yaml").read_text())["gpus"]
    return models, gpus


def mlp_path(data: Path, node: Node, hf_id: str) -> Path:
    return data / "profiling" / "compute" / node.sku / hf_id / "mlp.csv"


def allreduce_path(data: Path, node: Node) -> Path:
    return data / "profiling" / "network" / node.network / "all_reduce.csv"


# --------------------------------------------------------------------------- fits


def _sig(value: float, digits: int = 12) -> float:
    """Round to ``digits`` significant digits (keeps the YAML readable, far below the noise)."""
    return float(f"{value:.{digits}g}")


def _num(value: float) -> int | float:
    """An integral value as an int, anything else to 12 significant digits."""
    value = _sig(float(value))
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def layer_table(mlp: pd.DataFrame, tp: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_tokens, seconds per layer) for one TP shard: the summed op medians (ms -> s), rows
    that repeat a token count averaged."""
    rows = mlp[mlp["num_tensor_parallel_workers"] == tp]
    seconds = rows[[f"time_stats.{op}.median" for op in LAYER_OPS]].sum(axis=1) * 1e-3
    table = seconds.groupby(rows["num_tokens"]).mean().sort_index()
    return table.index.to_numpy(dtype=float), table.to_numpy(dtype=float)


def table_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Seconds per token beyond the table: the slope of a least-squares line through its upper
    half (the GEMMs are compute-bound there; the last segment alone is noise)."""
    upper = x >= x[-1] / 2
    if upper.sum() < 2:
        return 0.0
    slope = np.polyfit(x[upper], y[upper], 1)[0]
    return max(0.0, float(slope))


def loo_table_error(x: np.ndarray, y: np.ndarray) -> dict:
    """Leave-one-out error of linear interpolation: each interior point predicted from its two
    neighbours, relative to its value. Says how smooth the measured curve is."""
    if len(x) < 3:
        return {"median_rel": None, "max_rel": None, "points": int(len(x)), "held_out": 0}
    x0, x1, xm = x[:-2], x[2:], x[1:-1]
    pred = y[:-2] + (y[2:] - y[:-2]) * (xm - x0) / (x1 - x0)
    rel = np.abs(pred - y[1:-1]) / y[1:-1]
    return {
        "median_rel": _sig(float(np.median(rel)), 4),
        "max_rel": _sig(float(rel.max()), 4),
        "points": int(len(x)),
        "held_out": int(len(rel)),
    }


def _affine_nonneg(s, sx, sxx, sy, sxy):
    """Minimise sum w (a + b x - y)^2 over a, b >= 0 from the weighted sums (arrays allowed)."""
    det = s * sxx - sx * sx
    a = (sxx * sy - sx * sxy) / det
    b = (s * sxy - sx * sy) / det
    a_only, b_only = sy / s, sxy / sxx  # the fits with the other coefficient held at 0
    a_out = np.where(b < 0, a_only, np.where(a < 0, 0.0, a))
    b_out = np.where(b < 0, 0.0, np.where(a < 0, b_only, b))
    return np.maximum(a_out, 0.0), np.maximum(b_out, 0.0)


def fit_affine(x: np.ndarray, y: np.ndarray, iterations: int = 20) -> tuple[float, float, dict]:
    """y ~ a + b x with a, b >= 0, minimising the relative error against the fit, sum((y - f)/f)^2,
    by reweighting (weights 1/f^2 from the previous fit; the first uses 1/y^2). Relative error
    makes small messages count as much as large ones; dividing by the fit rather than by y keeps
    the few unusually fast small messages in Vidur's data from dragging the latency floor down.
    Returns a, b and the leave-one-out relative error at every point (final weights held)."""
    cols = (np.ones_like(x), x, x * x, y, x * y)
    w = 1.0 / y**2
    for _ in range(iterations):
        a, b = (float(v) for v in _affine_nonneg(*[(w * v).sum() for v in cols]))
        w = 1.0 / (a + b * x) ** 2
    w = 1.0 / (a + b * x) ** 2
    sums = [(w * v).sum() for v in cols]
    # Leave-one-out: the same fit without point i, vectorised over i.
    a_i, b_i = _affine_nonneg(*[total - w * v for total, v in zip(sums, cols)])
    rel = np.abs(a_i + b_i * x - y) / y
    err = {
        "median_rel": _sig(float(np.median(rel)), 4),
        "max_rel": _sig(float(rel.max()), 4),
        "points": int(len(x)),
        "held_out": int(len(x)),
    }
    return a, b, err


# --------------------------------------------------------------------------- one profile


@dataclass
class Imported:
    """A profile and the raw points it was fitted from."""

    name: str
    profile: dict
    raw: list[tuple[str, float, int | None, float]]
    """(op, num_tokens, size_bytes or None, seconds of the op) per point used."""


def _linear(features: list[str], coef: list[float], ranges: dict, source: str, fit_error: dict | None = None) -> dict:
    return {
        "form": "linear",
        "features": features,
        "coef": [_sig(c) for c in coef],
        "range": {k: [_num(lo), _num(hi)] for k, (lo, hi) in ranges.items()},
        "source": source,
        "fit_error": fit_error or {"median_rel": None, "max_rel": None, "points": 0, "held_out": 0},
    }


def import_profile(
    model_key: str, node: Node, tp: int, mlp: pd.DataFrame, allreduce: pd.DataFrame | None, models: dict, gpus: dict
) -> Imported:
    m, g = models[model_key], gpus[node.gpu]
    L, d, h, V = m["num_layers"], m["hidden_size"], m["head_dim"], m["vocab_size"]
    nq, nkv = m["num_attention_heads"], m["num_key_value_heads"]
    name = f"{model_key}-{node.gpu}-float16-tp{tp}"
    mlp_rel = mlp_path(Path("data"), node, m["hf_id"]).as_posix()

    # lin_layer: Vidur's measured table.
    x, y = layer_table(mlp, tp)
    slope = table_slope(x, y)
    x_max = float(x[-1])
    raw: list[tuple[str, float, int | None, float]] = [
        ("lin_layer", float(xi), None, float(yi)) for xi, yi in zip(x, y)
    ]
    ops: dict = {
        "lin_layer": {
            "form": "table",
            "x": [_num(v) for v in x],
            "y_s": [_sig(v) for v in y],
            "slope_s": _sig(slope),
            "source": "vidur",
            "fit_error": loo_table_error(x, y),
        }
    }

    # Roofline terms, per layer and per TP rank, exactly as sim/costs/roofline.py: attention at
    # its own efficiencies, the LM head at the GEMMs'.
    eff = g["efficiency"]
    flops_per_s = g["bf16_tflops"] * 1e12 * eff.get("attention_compute", eff["compute"])
    bytes_per_s = g["hbm_tb_s"] * 1e12 * eff.get("attention_bandwidth", eff["bandwidth"])
    gemm_flops_per_s = g["bf16_tflops"] * 1e12 * eff["compute"]
    gemm_bytes_per_s = g["hbm_tb_s"] * 1e12 * eff["bandwidth"]
    kv_heads = max(1, -(-nkv // tp))
    kv_s_per_token = 2 * kv_heads * h * DTYPE_BYTES / bytes_per_s
    flop_s_per_pair = 4 * nq * h / tp / flops_per_s
    dec_s_per_pair = max(flop_s_per_pair, kv_s_per_token)
    kv_tokens = g["memory_gib"] * 2**30 / (L * kv_s_per_token * bytes_per_s)  # KV that fits in memory
    max_pos = m["max_position_embeddings"]
    ops["attn_decode"] = _linear(
        ["const", "num_decode", "decode_ctx_sum"],
        [0.0, dec_s_per_pair, dec_s_per_pair],
        {"num_decode": (1, x_max), "decode_ctx_sum": (0, math.floor(kv_tokens))},
        "roofline",
    )
    # Prefill: the causal pairs' FLOPs, plus the KV bytes roofline.py charges: reading the cached
    # prefix (prefill_ctx_sum) and writing the chunk's own K/V (num_prefill_tokens).
    ops["attn_prefill"] = _linear(
        ["const", "prefill_attn_pairs", "prefill_ctx_sum", "num_prefill_seqs", "num_prefill_tokens"],
        [0.0, flop_s_per_pair, kv_s_per_token, 0.0, kv_s_per_token],
        {
            "prefill_attn_pairs": (0, x_max * max_pos),
            "prefill_ctx_sum": (0, math.floor(kv_tokens)),
            "num_prefill_seqs": (1, x_max),
            "num_prefill_tokens": (1, x_max),
        },
        "roofline",
    )

    # allreduce: Vidur's DGX measurements for tp GPUs in one node.
    if tp > 1:
        rows = allreduce[(allreduce["num_workers"] == tp) & (allreduce["devices_per_node"] == tp)].sort_values("size")
        if rows.empty:
            raise ValueError(f"{node.network}/all_reduce.csv has no rows for num_workers = devices_per_node = {tp}")
        tokens = rows["size"].to_numpy(dtype=float) / (d * DTYPE_BYTES)
        seconds = rows["time_stats.all_reduce.median"].to_numpy(dtype=float) * 1e-3
        a, b, err = fit_affine(tokens, seconds)
        raw += [("allreduce", float(t), int(s), 2 * float(v)) for t, s, v in zip(tokens, rows["size"], seconds)]
        ops["allreduce"] = _linear(
            ["const", "num_tokens"],
            [2 * a, 2 * b],
            {"num_tokens": (float(tokens.min()), float(tokens.max()))},
            "vidur",
            err,
        )

    ops["lm_head"] = _linear(
        ["const", "num_seqs"],
        [
            d * V * DTYPE_BYTES / tp / gemm_bytes_per_s + eff.get("gemm_kernel_s", 0.0),
            2 * d * V / tp / gemm_flops_per_s,
        ],
        {"num_seqs": (1, x_max)},
        "roofline",
    )

    # step: the catalog's host overheads; ops_sum's range is ops_sum with every other op at the
    # top of its range, so its check never fires before theirs.
    ov = g["overheads"]
    lin_top = max(float(y[-1]), (float(y[-1]) + slope * x_max) / 2)
    per_layer_top = (
        lin_top
        + dec_s_per_pair * (x_max + kv_tokens)
        + flop_s_per_pair * x_max * max_pos
        + kv_s_per_token * (kv_tokens + x_max)
    )
    if tp > 1:
        per_layer_top += (
            ops["allreduce"]["coef"][0] + ops["allreduce"]["coef"][1] * ops["allreduce"]["range"]["num_tokens"][1]
        )
    head = ops["lm_head"]["coef"]
    ops_top = L * per_layer_top + head[0] + head[1] * x_max
    ops["step"] = _linear(
        ["ops_sum", "const", "num_seqs"],
        [1.0, ov["step_s"] + ov["per_layer_s"] * L, ov["per_seq_s"]],
        {"ops_sum": (0, ops_top), "num_seqs": (1, x_max)},
        "roofline",
    )

    net_rel = allreduce_path(Path("data"), node).as_posix()
    notes = [
        f"Vidur data: {VIDUR_REPO} at commit {VIDUR_COMMIT} (MIT, Copyright (c) Microsoft Corporation); "
        "fp16 kernels of Sarathi-Serve's model code, CUDA-event timed, median of 20 iterations after 2 warm-ups.",
        f"lin_layer (Vidur measurement): {mlp_rel}, num_tensor_parallel_workers = {tp}: per layer and TP shard, the sum "
        f"of the medians of {', '.join(LAYER_OPS)} (the ops Vidur's simulator adds per block); rows repeating a "
        "token count averaged; beyond the last point, the slope of a least-squares line through the upper half of "
        "the table. emb (the embedding gather, once per step) is left out, as in Vidur's simulator.",
    ]
    if tp > 1:
        notes.append(
            f"allreduce (Vidur measurement): {net_rel}, num_workers = devices_per_node = {tp}: two all-reduces per "
            f"layer of num_tokens x {d} x 2 bytes; const + per-token fit minimising the error relative to the fit, coefficients >= 0; "
            "fit_error is leave-one-out. Its rows in source.raw are the two all-reduces of one layer (2 x Vidur's median)."
        )
    notes += [
        "attn_decode, attn_prefill (roofline; Vidur's attention profiles are not in the copied data): as "
        "sim/costs/roofline.py, KV bytes read at the catalog HBM bandwidth x attention_bandwidth and attention "
        "FLOPs at the catalog bf16 peak x attention_compute. Decode pays max(FLOPs, KV read) per (query, key) "
        "pair; prefill pays its causal pairs' FLOPs plus the KV bytes of reading its cached prefix "
        "(prefill_ctx_sum) and writing its own tokens' K/V (num_prefill_tokens), as the roofline charges them "
        "(a sum of the compute and KV terms where the roofline takes their max).",
        "lm_head (roofline; Vidur does not time it): streaming the LM head's weights once per step and one GEMM "
        "kernel's least time, plus its FLOPs per scheduled sequence, at the GEMM efficiencies (a sum: overlap 1).",
        "step (catalog): per-step overhead step_s + per_layer_s x layers and per-sequence overhead per_seq_s from "
        f"sim/catalog/data/gpus.yaml ({node.gpu}), as sim/costs/roofline.py (per_layer_s is 0 there: the kernels' "
        "least durations are in Vidur's per-op timings, and in the roofline's fitted kernel terms).",
        "Ranges of roofline ops are bounds, not measurements: tokens and sequences up to the lin_layer table's "
        "last point, contexts up to the KV cache that fits in GPU memory, prefill pairs up to tokens x "
        "max_position_embeddings; step's ops_sum range is ops_sum with every op at the top of its range.",
    ]
    profile = {
        "format": FORMAT,
        "kind": "llm",
        "model": model_key,
        "dtype": "float16",
        "tp": tp,
        "layers": L,
        "device": {
            "type": "cuda",
            "name": node.device_name,
            "gpu": node.gpu,
            "torch": None,
            "cuda": None,
            "driver": None,
            "threads": None,
        },
        "source": {
            "tool": "vidur import",
            "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "raw": f"{name}.csv",
            "git_sha": _git_sha(),
            "quick": False,
            "notes": notes,
        },
        "extrapolation_limit": EXTRAPOLATION_LIMIT,
        "ops": ops,
    }
    return Imported(name, profile, raw)


def _git_sha() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def check_shapes(mlp: pd.DataFrame, model: dict, where: Path) -> None:
    """Vidur's file must describe the catalog model (heads, hidden size, FFN size)."""
    want = {
        "n_head": model["num_attention_heads"],
        "n_kv_head": model["num_key_value_heads"],
        "n_embd": model["hidden_size"],
        "n_expanded_embd": model["intermediate_size"],
    }
    for col, value in want.items():
        got = set(mlp[col].unique().tolist())
        if got != {value}:
            raise ValueError(f"{where}: column {col} is {sorted(got)}, the catalog says {value}")


def import_all(data: Path = DATA) -> list[Imported]:
    """Every (GPU, model, TP) the copied data covers, for catalog GPUs and models. A TP degree
    whose weights alone overflow one GPU is skipped."""
    models, gpus = catalog()
    out = []
    for node in NODES:
        net = allreduce_path(data, node)
        allreduce = pd.read_csv(net) if net.is_file() else None
        for key, m in models.items():
            path = mlp_path(data, node, m["hf_id"])
            if not path.is_file():
                continue
            mlp = pd.read_csv(path)
            check_shapes(mlp, m, path)
            weights_gib = m["num_parameters"] * DTYPE_BYTES / 2**30
            for tp in sorted(mlp["num_tensor_parallel_workers"].unique().tolist()):
                if weights_gib / tp >= gpus[node.gpu]["memory_gib"] or m["num_attention_heads"] % tp:
                    continue
                if tp > 1 and allreduce is None:
                    continue
                out.append(import_profile(key, node, int(tp), mlp, allreduce, models, gpus))
    return out


# --------------------------------------------------------------------------- files


HEADER = (
    "# Generated by `python -m calibration.vidur` from Vidur's published GPU profiles\n"
    "# (calibration/data/vidur); regenerate rather than edit. Format: docs/profile-format.md.\n"
)


class _Flow(list):
    """A list written in YAML flow style ([1, 2, 3]): tables and coefficients stay compact."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def _flow_numbers(node):
    """Lists of numbers (and of short strings, such as features) in flow style, the rest block."""
    if isinstance(node, dict):
        return {k: _flow_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in node) or all(
            isinstance(v, str) and len(v) < 40 for v in node
        ):
            return _Flow(node)
        return [_flow_numbers(v) for v in node]
    return node


def dump_profile(profile: dict) -> str:
    body = yaml.dump(_flow_numbers(profile), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    return HEADER + body


def dump_raw(raw: list[tuple[str, float, int | None, float]]) -> str:
    """The points a profile was made from, in the columns ``servesim profile show`` plots
    (``op``, ``tokens`` for the table, the op's features, ``median_s``): lin_layer rows are
    seconds per layer, allreduce rows the two all-reduces of one layer (2 x Vidur's median for a
    message of ``size_bytes``)."""
    lines = ["op,tokens,num_tokens,size_bytes,median_s"]
    for op, tokens, size, seconds in raw:
        lines.append(f"{op},{tokens:.12g},{tokens:.12g},{'' if size is None else size},{seconds:.12g}")
    return "\n".join(lines) + "\n"


def write_all(out: Path, data: Path = DATA) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for imp in import_all(data):
        for suffix, text in ((".yaml", dump_profile(imp.profile)), (".csv", dump_raw(imp.raw))):
            path = out / f"{imp.name}{suffix}"
            path.write_text(text)
            written.append(path)
    return written


def copy_data(src: Path, dst: Path = DATA) -> list[Path]:
    """Copy, trimmed, the Vidur files the importer reads from a checkout of Vidur's ``data/``
    folder: the columns in ``MLP_COLUMNS`` of each catalog model's mlp.csv on each node, and
    the rows of each node's all_reduce.csv with num_workers = devices_per_node (columns
    ``ALLREDUCE_COLUMNS``). Cell text is copied unchanged, rows keep their order."""
    models, _ = catalog()
    written = []
    for node in NODES:
        for m in models.values():
            path = mlp_path(src, node, m["hf_id"])
            if path.is_file():
                written.append(_copy_csv(path, mlp_path(dst, node, m["hf_id"]), MLP_COLUMNS))
        path = allreduce_path(src, node)
        if path.is_file():
            keep = lambda row: row["num_workers"] == row["devices_per_node"]  # noqa: E731
            written.append(_copy_csv(path, allreduce_path(dst, node), ALLREDUCE_COLUMNS, keep))
    return written


def _copy_csv(src: Path, dst: Path, columns: tuple[str, ...], keep=None) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open(newline="") as fin, dst.open("w", newline="") as fout:
        reader = csv.DictReader(fin)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{src}: no column(s) {missing}")
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(columns)
        for row in reader:
            if keep is None or keep(row):
                writer.writerow([row[c] for c in columns])
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.vidur", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "profiles" / "vidur", help="folder for the profiles")
    parser.add_argument("--data", type=Path, default=DATA, help="the (trimmed) Vidur data folder")
    parser.add_argument("--copy-from", type=Path, help="first re-make --data from a checkout of Vidur's data/ folder")
    args = parser.parse_args(argv)
    if args.copy_from is not None:
        for path in copy_data(args.copy_from, args.data):
            print(f"copied {path} ({path.stat().st_size:,} bytes)")
    for path in write_all(args.out, args.data):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
