"""How a transformer layer's GEMMs use a GPU, fitted on Vidur's measured per-operator timings.

The roofline times the token-parallel GEMMs of a step (QKV, O, gate-up and down projections)
from two floors: compute, ``C = 2 * weights * tokens / (peak * eff_c)``, and weight streaming,
``M = weight_bytes / (bandwidth * eff_b)``. Taking ``max(C, M)`` assumes the two overlap
completely. Vidur's H100 and A100 timings (``calibration/data/vidur``, MIT; 1 to 32,768 tokens,
TP 1 to 8) say otherwise: around the ridge point (128-256 tokens on an A100, 256-512 on an H100)
a layer's GEMMs take up to twice ``max(C, M)`` at peak, close to ``C + M``, because a GEMM tile
cannot compute before its weights arrive and the last wave of tiles runs a partly idle GPU. So
the roofline combines them as a p-norm,

    t = (C ** p + M ** p) ** (1 / p)          p = 1: no overlap; p -> infinity: max(C, M)

and ``fit`` finds one overlap exponent ``p`` for all GPUs and ``eff_c``, ``eff_b`` per GPU, by
least squares on log(predicted / measured), each power-of-two band of token counts weighing
the same in each (model, TP) table, so that decode-sized GEMMs count as much as prefill-sized
ones. ``python -m calibration.gemm_efficiency`` prints the fit and its error per band; the
catalog (``sim/catalog/data/gpus.yaml``) carries its figures, and a test holds them equal.

It runs where servesim is installed (scipy; the byte count of the elementwise kernels is the
roofline's own, ``sim.costs.roofline.elementwise_bytes_per_token``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.vidur import DATA, NODES, catalog, mlp_path
from sim.costs.roofline import ELEMENTWISE_PER_LAYER, GEMMS_PER_LAYER, elementwise_bytes_per_token

#: Vidur's op names for the four token-parallel GEMMs of a Llama layer.
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
#: ... and for its elementwise kernels (two RMSNorms, RoPE, the SiLU-and-multiply, the residual add).
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
DTYPE_BYTES = 2  # Vidur timed fp16


@dataclass(frozen=True)
class Table:
    """One (GPU, model, TP) table of measured GEMM time per layer over token counts."""

    gpu: str
    model: str
    tp: int
    tokens: np.ndarray
    seconds: np.ndarray
    weights: float
    """GEMM weights per layer on one TP shard."""
    elementwise_seconds: np.ndarray
    elementwise_bytes: float
    """``elementwise_bytes_per_token`` of this model and TP."""


@dataclass(frozen=True)
class Fit:
    overlap: float
    efficiency: dict[str, tuple[float, float, float]]
    """Catalog GPU -> (compute efficiency, bandwidth efficiency, seconds per GEMM kernel)."""
    elementwise: dict[str, tuple[float, float]]
    """Catalog GPU -> (bandwidth efficiency of the elementwise kernels, seconds per kernel)."""
    errors: pd.DataFrame
    """Relative error of every point: gpu, model, tp, tokens, error (GEMMs), elementwise_error."""


def tables(data: Path = DATA) -> list[Table]:
    """Every Vidur GEMM table for a catalog model and GPU in ``data``."""
    models, _ = catalog()
    out = []
    for node in NODES:
        for name, m in models.items():
            path = mlp_path(data, node, m.get("hf_id", ""))
            if not m.get("hf_id") or not path.is_file():
                continue
            mlp = pd.read_csv(path)
            d, f, h, kv = m["hidden_size"], m["intermediate_size"], m["num_attention_heads"], m["num_key_value_heads"]
            hd = m["head_dim"]
            per_layer = d * (h + 2 * kv) * hd + h * hd * d + 3 * d * f  # QKV, O, gate+up, down
            for tp, rows in mlp.groupby("num_tensor_parallel_workers"):
                seconds = rows[[f"time_stats.{op}.median" for op in GEMM_OPS]].sum(axis=1) * 1e-3
                table = seconds.groupby(rows["num_tokens"]).mean().sort_index()
                elem = rows[[f"time_stats.{op}.median" for op in ELEMENTWISE_OPS]].sum(axis=1) * 1e-3
                elem = elem.groupby(rows["num_tokens"]).mean().sort_index()
                out.append(
                    Table(
                        node.gpu, name, int(tp), table.index.to_numpy(float), table.to_numpy(float), per_layer / tp,
                        elem.to_numpy(float), elementwise_bytes_per_token(d, f, h, kv, hd, int(tp)),
                    )
                )  # fmt: skip
    return out


def predict(t: Table, peaks: dict, overlap: float, eff_c: float, eff_b: float, kernel_s: float) -> np.ndarray:
    """The roofline's GEMM time per layer for ``t``'s token counts."""
    compute = 2 * t.weights * t.tokens / (peaks["bf16_tflops"] * 1e12 * eff_c)
    memory = DTYPE_BYTES * t.weights / (peaks["hbm_tb_s"] * 1e12 * eff_b)
    top = np.maximum(compute, memory)  # the p-norm computed stably for any p (as roofline.overlapped)
    return top * ((compute / top) ** overlap + (memory / top) ** overlap) ** (1 / overlap) + GEMMS_PER_LAYER * kernel_s


def _band_weights(tokens: np.ndarray) -> np.ndarray:
    band = np.floor(np.log2(tokens)).astype(int)
    counts = pd.Series(band).map(pd.Series(band).value_counts()).to_numpy()
    return 1.0 / counts


def fit(data: Path = DATA) -> Fit:
    from scipy.optimize import least_squares

    _, gpus = catalog()
    found = tables(data)
    names = sorted({t.gpu for t in found})
    weights = [np.sqrt(_band_weights(t.tokens) / len(t.tokens)) for t in found]

    def unpack(x):
        return x[0], {g: (x[1 + 3 * i], x[2 + 3 * i], x[3 + 3 * i] * 1e-6) for i, g in enumerate(names)}

    def residuals(x):
        p, eff = unpack(x)
        return np.concatenate(
            [w * np.log(predict(t, gpus[t.gpu], p, *eff[t.gpu]) / t.seconds) for t, w in zip(found, weights)]
        )

    x0 = [2.0] + [0.7, 0.7, 3.0] * len(names)  # the kernel time in microseconds while fitting
    lower = [1.0] + [0.1, 0.1, 0.0] * len(names)
    upper = [20.0] + [1.0, 1.0, 100.0] * len(names)
    sol = least_squares(residuals, x0, bounds=(lower, upper))
    p, eff = unpack(sol.x)
    elementwise = {g: _fit_elementwise([t for t in found if t.gpu == g], gpus[g]) for g in names}
    rows = []
    for t in found:
        err = predict(t, gpus[t.gpu], p, *eff[t.gpu]) / t.seconds - 1
        elem = predict_elementwise(t, gpus[t.gpu], *elementwise[t.gpu]) / t.elementwise_seconds - 1
        rows += [
            {"gpu": t.gpu, "model": t.model, "tp": t.tp, "tokens": n, "error": e, "elementwise_error": x}
            for n, e, x in zip(t.tokens, err, elem)
        ]
    return Fit(float(p), {g: tuple(float(v) for v in e) for g, e in eff.items()}, elementwise, pd.DataFrame(rows))


def predict_elementwise(t: Table, peaks: dict, eff: float, kernel_s: float) -> np.ndarray:
    """The roofline's elementwise time per layer: each kernel's minimum plus the activation
    bytes streamed at ``eff`` of the HBM bandwidth."""
    return ELEMENTWISE_PER_LAYER * kernel_s + t.tokens * t.elementwise_bytes / (peaks["hbm_tb_s"] * 1e12 * eff)


def _fit_elementwise(found: list[Table], peaks: dict) -> tuple[float, float]:
    from scipy.optimize import least_squares

    weights = [np.sqrt(_band_weights(t.tokens) / len(t.tokens)) for t in found]

    def residuals(x):
        return np.concatenate(
            [
                w * np.log(predict_elementwise(t, peaks, x[0], x[1] * 1e-6) / t.elementwise_seconds)
                for t, w in zip(found, weights)
            ]
        )

    sol = least_squares(residuals, [0.5, 3.0], bounds=([0.05, 0.0], [1.0, 100.0]))
    return float(sol.x[0]), float(sol.x[1] * 1e-6)


def error_by_band(errors: pd.DataFrame) -> pd.DataFrame:
    """Median signed and absolute error per GPU and band of token counts."""
    bands = [1, 8, 64, 256, 1024, 4096, np.inf]
    labels = [f"{a:g}-{b - 1:g}" for a, b in zip(bands[:-1], bands[1:])]
    e = errors.assign(band=pd.cut(errors["tokens"], bands, right=False, labels=labels))
    return (
        e.groupby(["gpu", "band"], observed=True)["error"]
        .agg(points="size", median="median", median_abs=lambda s: s.abs().median())
        .reset_index()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a Vidur data/ folder (default: the shipped copy)")
    args = parser.parse_args(argv)
    result = fit(args.data)
    print(f"overlap p = {result.overlap:.3f}")
    for gpu, (c, b, k) in result.efficiency.items():
        print(f"{gpu}: compute {c:.3f}, bandwidth {b:.3f}, {k * 1e6:.2f} us per GEMM kernel")
    for gpu, (e, k) in result.elementwise.items():
        print(f"{gpu}: elementwise bandwidth {e:.3f}, {k * 1e6:.2f} us per elementwise kernel")
    err = result.errors["error"].abs()
    print(f"{len(err)} points: GEMMs median |error| {err.median():.1%}, p90 {err.quantile(0.9):.1%}")
    err = result.errors["elementwise_error"].abs()
    print(f"elementwise median |error| {err.median():.1%}, p90 {err.quantile(0.9):.1%}")
    with pd.option_context("display.width", 160):
        print(error_by_band(result.errors).to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
