"""``servesim profile show``: a profile's fit table, and its measured points against the fit
and against the roofline floor of the same shapes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from calibration.fit import eval_linear, eval_table, llm_features, ops_sum, peaks_for  # noqa: E402


def load(path: Path) -> tuple[dict, pd.DataFrame | None]:
    profile = yaml.safe_load(Path(path).read_text())
    raw_name = (profile.get("source") or {}).get("raw")
    raw_path = Path(path).parent / raw_name if raw_name else None
    raw = pd.read_csv(raw_path) if raw_path and raw_path.is_file() else None
    return profile, raw


def fit_table_rows(profile: dict) -> list[dict]:
    """One row per op: form, source, points, fit error and roofline efficiency."""
    rows = []
    for name, op in profile["ops"].items():
        err = op.get("fit_error") or {}
        eff = op.get("roofline_efficiency") or {}
        rows.append(
            {
                "op": name,
                "form": op["form"],
                "source": op.get("source", ""),
                "points": err.get("points", ""),
                "held out": err.get("held_out", ""),
                "median err": _pct(err.get("median_rel")),
                "max err": _pct(err.get("max_rel")),
                "roofline eff": _pct(eff.get("median"), 0),
            }
        )
    return rows


def _pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage; blank where the profile has none (e.g. roofline-made ops)."""
    return "" if x is None else f"{x:.{digits}%}"


def header_lines(profile: dict) -> list[str]:
    dev, src = profile.get("device") or {}, profile.get("source") or {}
    lines = [
        f"{profile['model']} ({profile['kind']}), {profile['dtype']}, TP {profile.get('tp', 1)}",
        f"device: {dev.get('name')}; torch {dev.get('torch')}; driver {dev.get('driver')}",
        f"made by {src.get('tool')} on {src.get('created')} (git {src.get('git_sha')}){' quick grid' if src.get('quick') else ''}",
    ]
    lines += [f"note: {n}" for n in src.get("notes") or []]
    if "step" in profile["ops"] and "ops_sum_error" in profile["ops"]["step"]:
        e = profile["ops"]["step"]["ops_sum_error"]
        lines.append(
            f"whole steps vs plain sum of ops: median {e['median_rel']:.1%}, max {e['max_rel']:.1%} "
            "(the step fit corrects for this)"
        )
    return lines


def _predict(profile: dict, name: str, rows: pd.DataFrame) -> np.ndarray:
    op = profile["ops"][name]
    if op["form"] == "table":
        return eval_table(op, rows["tokens"] if name == "lin_layer" else rows["num_seqs"])
    if profile["kind"] == "llm" and name == "step":
        rows = rows.assign(ops_sum=ops_sum(profile["ops"], profile["layers"], rows))
    if name == "denoise_step":
        rows = rows.assign(
            row_tokens=rows["rows"] * rows["tokens"], row_tokens_sq=rows["rows"] * rows["tokens"].astype(float) ** 2
        )
    if name == "vae_decode":
        rows = rows.assign(pixels=rows["images"] * rows["width"] * rows["height"] * rows["frames"])
    return eval_linear(op, rows)


def plot(profile: dict, raw: pd.DataFrame, out: Path) -> Path:
    """One panel per measured op: measured (p10-p90 bars) vs fitted vs roofline floor."""
    names = [n for n in profile["ops"] if n in set(raw["op"])]
    ncols = 3
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    src = profile.get("source") or {}
    meta = {"device": profile.get("device") or {}, "dtype": profile["dtype"], "peaks": src.get("peaks")}
    has_roof = {"flops", "bytes"} <= set(raw.columns) and (meta["peaks"] or meta["device"].get("gpu"))
    flops_s, bytes_s, against = peaks_for(meta) if has_roof else (None, None, "")
    for ax, name in zip(axes.flat, names):
        rows = raw[raw["op"] == name].reset_index(drop=True)
        if profile["kind"] == "llm":
            rows = llm_features(raw, name)
        y = rows["median_s"].to_numpy(float) * 1e3
        pred = _predict(profile, name, rows) * 1e3
        floor = None
        if has_roof:
            floor = np.maximum(rows["flops"] / flops_s, rows["bytes"] / bytes_s).to_numpy(float) * 1e3
        if profile["ops"][name]["form"] == "table":
            x = rows["tokens" if name == "lin_layer" else "num_seqs"].to_numpy(float)
            order = np.argsort(x)
            ax.errorbar(x, y, yerr=_bars(rows), fmt="o", ms=3, label="measured")
            ax.plot(x[order], pred[order], "-", label="profile")
            if floor is not None:
                ax.plot(x[order], floor[order], "--", color="grey", label="roofline floor")
            ax.set_xscale("log")
            ax.set_xlabel("tokens in step" if name == "lin_layer" else "rows")
        else:
            ax.errorbar(pred, y, yerr=_bars(rows), fmt="o", ms=3, label="measured vs profile")
            if floor is not None:
                ax.plot(pred, floor, "x", color="grey", ms=4, label="roofline floor")
            lo, hi = min(y.min(), pred.min()), max(y.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], "-", color="black", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("profile (ms)")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        err = profile["ops"][name].get("fit_error") or {}
        ax.set_title(f"{name}  (held-out median error {_pct(err.get('median_rel')) or 'n/a'})", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"{profile['model']} on {(profile.get('device') or {}).get('name')}"
        + (f"; roofline: {against}" if against else ""),
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _bars(rows: pd.DataFrame):
    if {"p10_s", "p90_s"} <= set(rows.columns):
        med = rows["median_s"].to_numpy(float)
        return np.vstack([med - rows["p10_s"].to_numpy(float), rows["p90_s"].to_numpy(float) - med]).clip(min=0) * 1e3
    return None
