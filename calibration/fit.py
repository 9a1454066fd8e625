"""Fit step-cost forms to raw timings and write a ``servesim-profile/1`` profile.

Forms (calibration notes, "Recommendations"; format in ``docs/profile-format.md``):

* token-parallel layer ops: a dense table over tokens (it keeps the tile/wave staircase a
  formula smooths away), extrapolated past its last point by the marginal cost of its top span;
* the LM head (a GEMM over one row per sequence): a dense table over rows, for the same reason;
* decode attention ``a + b*B + c*sum(ctx)``; prefill attention ``a + b*pairs + c*sum(cached)
  + d*chunks + e*tokens`` (pairs = causal query-key pairs, the FLOP term; tokens: the chunks'
  own K/V writes and queries);
* a whole step ``alpha*sum(ops) + h0 + h1*seqs``: measured whole steps calibrate how the ops
  compose (overlap, launch gaps) and the host's per-step and per-sequence work;
* diffusion: denoiser ``a + b*rows + c*rows*N + d*rows*N^2`` (N latent tokens; the square is
  attention), text encoders ``a + b*prompts``, VAE ``a + b*images + c*pixels``.

Linear forms are fitted on relative error with non-negative coefficients (``scipy.optimize.nnls``
on rows scaled by 1/y), so small and large shapes weigh alike and every term keeps its physical
sign. The fit error a profile reports is measured on held-out points (every fourth grid point;
for the table, every third interior point predicted from its neighbours); the coefficients
written are then refitted on all points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import nnls

from calibration.grids import held_out

FORMAT = "servesim-profile/1"
EXTRAPOLATION_LIMIT = 2.0
CATALOG = Path(__file__).resolve().parents[1] / "sim" / "catalog" / "data"

LLM_OPS = {
    "attn_decode": ["const", "num_decode", "decode_ctx_sum"],
    "attn_prefill": ["const", "prefill_attn_pairs", "prefill_ctx_sum", "num_prefill_seqs", "num_prefill_tokens"],
}
DIFFUSION_OPS = {
    "denoise_step": ["const", "rows", "row_tokens", "row_tokens_sq"],
    "text_encode": ["const", "prompts"],
    "vae_decode": ["const", "images", "pixels"],
}
STEP_FEATURES = ["ops_sum", "const", "num_seqs"]


def rel_errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(pred) - np.asarray(y)) / np.asarray(y)


def nnls_relative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the summed squared relative error of X @ c vs y."""
    scale = 1.0 / y
    coef, _ = nnls(X * scale[:, None], np.ones_like(y))
    return coef


def _error_summary(err: np.ndarray, points: int, n_held: int) -> dict:
    return {
        "median_rel": round(float(np.median(err)), 4),
        "max_rel": round(float(np.max(err)), 4),
        "points": int(points),
        "held_out": int(n_held),
    }


def fit_linear(X: pd.DataFrame, y: np.ndarray, features: list[str], source: str = "measured") -> dict:
    """A ``form: linear`` op fitted to the columns ``features`` of X (``const`` is added)."""
    A = np.column_stack([np.ones(len(X)) if f == "const" else X[f].to_numpy(float) for f in features])
    held = held_out(len(y))
    if held.sum() and (~held).sum() > len(features):
        coef_train = nnls_relative(A[~held], y[~held])
        err = rel_errors(A[held] @ coef_train, y[held])
    else:  # too few points to hold any out: report the in-sample error, and say so (held_out 0)
        held[:] = False
        err = rel_errors(A @ nnls_relative(A, y), y)
    coef = nnls_relative(A, y)
    ranges = {f: [float(X[f].min()), float(X[f].max())] for f in features if f != "const"}
    return {
        "form": "linear",
        "features": features,
        "coef": [float(c) for c in coef],
        "range": ranges,
        "source": source,
        "fit_error": _error_summary(err, len(y), int(held.sum())),
    }


def eval_linear(op: dict, feats: dict | pd.DataFrame) -> np.ndarray:
    total = 0.0
    for name, c in zip(op["features"], op["coef"]):
        total = total + c * (1.0 if name == "const" else np.asarray(feats[name], dtype=float))
    return np.asarray(total, dtype=float)


def _tail_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Seconds per unit past the table: the least-squares slope over its top quarter (>= 0)."""
    k = max(2, len(x) // 4)
    slope = np.polyfit(x[-k:], y[-k:], 1)[0]
    return float(max(slope, 0.0))


def eval_table(op: dict, x) -> np.ndarray:
    xs, ys = np.asarray(op["x"], float), np.asarray(op["y_s"], float)
    x = np.asarray(x, float)
    inside = np.interp(x, xs, ys)
    return np.where(x > xs[-1], ys[-1] + op["slope_s"] * (x - xs[-1]), inside)


def fit_table(x: np.ndarray, y: np.ndarray, feature: str = "tokens", source: str = "measured") -> dict:
    """A ``form: table`` op; error from predicting every third interior point off its neighbours."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    held = np.zeros(len(x), dtype=bool)
    held[1:-1:3] = True
    train = {"x": x[~held].tolist(), "y_s": y[~held].tolist(), "slope_s": _tail_slope(x[~held], y[~held])}
    err = rel_errors(eval_table(train, x[held]), y[held]) if held.any() else np.zeros(1)
    return {
        "form": "table",
        "x": [int(v) if float(v).is_integer() else float(v) for v in x],
        "y_s": [float(v) for v in y],
        "slope_s": _tail_slope(x, y),
        "range": {feature: [float(x[0]), float(x[-1])]},
        "source": source,
        "fit_error": _error_summary(err, len(x), int(held.sum())),
    }


def peaks_for(meta: dict) -> tuple[float, float, str]:
    """FLOP/s and bytes/s to state roofline efficiency against: the catalog GPU's dense peaks
    (bf16; fp32 runs on tensor cores as tf32 at half that) when the device is one, otherwise
    the matmul and copy rates measured on the device at the start of the run."""
    gpu = (meta.get("device") or {}).get("gpu")
    if gpu:
        spec = yaml.safe_load((CATALOG / "gpus.yaml").read_text())["gpus"].get(gpu)
        if spec:
            tflops = spec["bf16_tflops"] if meta.get("dtype") in ("bfloat16", "float16") else spec["bf16_tflops"] / 2
            return tflops * 1e12, spec["hbm_tb_s"] * 1e12, f"catalog {gpu} peaks"
    p = meta["peaks"]
    return p["matmul_flops_per_s"], p["copy_bytes_per_s"], "peaks measured on the device (matmul, copy)"


def roofline_efficiency(rows: pd.DataFrame, flops_per_s: float, bytes_per_s: float) -> np.ndarray:
    """Roofline floor of each measured shape over its measured time (1 = at the floor)."""
    floor = np.maximum(rows["flops"].to_numpy(float) / flops_per_s, rows["bytes"].to_numpy(float) / bytes_per_s)
    return floor / rows["median_s"].to_numpy(float)


def _with_efficiency(op: dict, rows: pd.DataFrame, peaks: tuple[float, float, str]) -> dict:
    eff = roofline_efficiency(rows, peaks[0], peaks[1])
    op["roofline_efficiency"] = {
        "median": round(float(np.median(eff)), 4),
        "min": round(float(np.min(eff)), 4),
        "max": round(float(np.max(eff)), 4),
    }
    return op


def llm_features(raw: pd.DataFrame, op: str) -> pd.DataFrame:
    rows = raw[raw["op"] == op].reset_index(drop=True)
    if op == "attn_decode":
        return rows.assign(num_decode=rows["num_seqs"], decode_ctx_sum=rows["ctx_sum"])
    if op == "attn_prefill":
        return rows.assign(
            prefill_attn_pairs=rows["attn_pairs"],
            prefill_ctx_sum=rows["ctx_sum"],
            num_prefill_seqs=rows["num_seqs"],
            num_prefill_tokens=rows["num_tokens"],
        )
    return rows


def ops_sum(profile_ops: dict, layers: int, steps: pd.DataFrame) -> np.ndarray:
    """Sum of the fitted per-op times over each whole step (the ``ops_sum`` feature)."""
    per_layer = eval_table(profile_ops["lin_layer"], steps["num_tokens"])
    dec = eval_linear(profile_ops["attn_decode"], steps)
    per_layer = per_layer + np.where(steps["num_decode"] > 0, dec, 0.0)
    pre = eval_linear(profile_ops["attn_prefill"], steps)
    per_layer = per_layer + np.where(steps["num_prefill_tokens"] > 0, pre, 0.0)
    if "allreduce" in profile_ops:
        per_layer = per_layer + eval_linear(profile_ops["allreduce"], steps)
    return layers * per_layer + eval_op(profile_ops["lm_head"], steps["num_seqs"], steps)


def eval_op(op: dict, x, feats) -> np.ndarray:
    """A table op at ``x``, or a linear op on ``feats``."""
    return eval_table(op, x) if op["form"] == "table" else eval_linear(op, feats)


def build_llm_ops(raw: pd.DataFrame, meta: dict) -> dict:
    peaks = peaks_for(meta)
    ops: dict = {}
    lin = raw[raw["op"] == "lin_layer"]
    ops["lin_layer"] = _with_efficiency(fit_table(lin["tokens"].to_numpy(), lin["median_s"].to_numpy()), lin, peaks)
    head = raw[raw["op"] == "lm_head"]
    ops["lm_head"] = _with_efficiency(
        fit_table(head["num_seqs"].to_numpy(), head["median_s"].to_numpy(), "num_seqs"), head, peaks
    )
    for name, feats in LLM_OPS.items():
        rows = llm_features(raw, name)
        ops[name] = _with_efficiency(fit_linear(rows, rows["median_s"].to_numpy(float), feats), rows, peaks)
    steps = raw[raw["op"] == "step"].reset_index(drop=True)
    steps = steps.assign(ops_sum=ops_sum(ops, meta["model_facts"]["layers"], steps))
    ops["step"] = _with_efficiency(fit_linear(steps, steps["median_s"].to_numpy(float), STEP_FEATURES), steps, peaks)
    # How far the plain sum of ops is from whole steps, before the composition fit corrects it.
    raw_err = rel_errors(steps["ops_sum"].to_numpy(), steps["median_s"].to_numpy())
    ops["step"]["ops_sum_error"] = {
        "median_rel": round(float(np.median(raw_err)), 4),
        "max_rel": round(float(raw_err.max()), 4),
    }
    return ops


def build_diffusion_ops(raw: pd.DataFrame, meta: dict) -> dict:
    peaks = peaks_for(meta)
    ops: dict = {}
    den = raw[raw["op"] == "denoise_step"].reset_index(drop=True)
    den = den.assign(
        row_tokens=den["rows"] * den["tokens"], row_tokens_sq=den["rows"] * den["tokens"].astype(float) ** 2
    )
    txt = raw[raw["op"] == "text_encode"].reset_index(drop=True)
    vae = raw[raw["op"] == "vae_decode"].reset_index(drop=True)
    vae = vae.assign(pixels=vae["images"] * vae["width"] * vae["height"] * vae["frames"])
    for name, rows in (("denoise_step", den), ("text_encode", txt), ("vae_decode", vae)):
        ops[name] = _with_efficiency(
            fit_linear(rows, rows["median_s"].to_numpy(float), DIFFUSION_OPS[name]), rows, peaks
        )
    return ops


def build_profile(raw: pd.DataFrame, meta: dict, raw_name: str | None) -> dict:
    kind = meta["kind"]
    ops = build_llm_ops(raw, meta) if kind == "llm" else build_diffusion_ops(raw, meta)
    device = dict(meta["device"])
    flops, bw, against = peaks_for(meta)
    notes = [
        f"{len(raw)} measured points; fit errors are relative errors on held-out grid points",
        f"roofline efficiency is stated against {against}: {flops / 1e12:.3g} TFLOP/s, {bw / 1e9:.4g} GB/s",
    ]
    if kind == "llm":
        path = meta["model_facts"].get("step_path") or {}
        if path.get("attention") == "varlen":
            notes.append("attention is one FlashAttention varlen kernel per layer per step (cost ~ summed context)")
        else:
            notes.append("attention is a per-sequence SDPA loop (cost ~ summed context, not batch x max context)")
        if path.get("cuda_graphs"):
            notes.append("whole steps ran through piecewise CUDA graphs (attention eager), as the engine serves")
        cut = meta.get("cut_short") or {}
        if cut:
            notes.append(
                "stopped at the budget's deadline: " + ", ".join(f"{op} {a}/{b} points" for op, (a, b) in cut.items())
            )
    profile = {
        "format": FORMAT,
        "kind": kind,
        "model": meta["model"],
        "dtype": meta["dtype"],
        "tp": 1,
        "device": device,
        "source": {
            "tool": "servesim calibrate",
            "created": meta["created"],
            "raw": raw_name,
            "git_sha": meta.get("git_sha"),
            "quick": meta["quick"],
            "peaks": {k: float(v) for k, v in meta["peaks"].items()},
            "notes": notes,
        },
        "extrapolation_limit": EXTRAPOLATION_LIMIT,
    }
    if kind == "llm":
        profile["layers"] = int(meta["model_facts"]["layers"])
    else:
        profile["text_tokens"] = int(meta["model_facts"]["text_tokens"])
    profile["ops"] = ops
    return profile


def write_profile(profile: dict, raw: pd.DataFrame, path: Path) -> Path:
    """Write ``path`` (.yaml) and its raw timings beside it (same stem, .csv)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):  # a folder: name the file after what it profiles
        path = path / f"{profile['model']}-{profile['dtype']}-tp{profile['tp']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw_path = path.with_suffix(".csv")
    profile = {**profile, "source": {**profile["source"], "raw": raw_path.name}}
    raw.to_csv(raw_path, index=False)
    path.write_text(yaml.safe_dump(profile, sort_keys=False, width=120))
    return path


def fit_folder(folder: Path, output: Path) -> Path:
    """Fit the raw timings in ``folder`` (from calibration.measure) and write the profile."""
    from calibration.measure import load_raw

    raw, meta = load_raw(Path(folder))
    return write_profile(build_profile(raw, meta, None), raw, output)
